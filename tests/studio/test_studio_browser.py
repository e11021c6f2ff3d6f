"""The studio in a real browser: Playwright drives Debian's Chromium against a live `noor serve` (toy model).

Sign in (a bad key is a readable error), create from an Arabic prompt, watch it complete, play it, extend it,
delete it; API refusals (unknown model, a bad keyframe file, 402, 429) as readable messages; the Arabic
interface (lang="ar" dir="rtl", mirrored) and back; keyboard use; the planner. Screenshots of every page at
desktop and phone width go to artifacts/studio/.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Served
from tests.studio.conftest import shoot, sign_in, tenant_key

pytestmark = pytest.mark.browser

ARABIC_PROMPT = "دائرة حمراء تتحرك إلى اليسار"
DONE_MS = 60_000  # a toy-model generation takes a few seconds; this bounds a stuck one


def wait_completed(pg: Any) -> str:
    """Wait until the detail page the URL names shows its generation completed; its id."""
    pg.wait_for_url("**/#/g/*")
    gid = pg.url.rsplit("/", 1)[-1]
    pg.wait_for_selector(f"main[data-view=g][data-id='{gid}'][data-state=completed]", timeout=DONE_MS)
    return gid


def video_duration_s(pg: Any) -> float:
    return float(
        pg.evaluate(
            """() => new Promise((resolve, reject) => {
                const v = document.querySelector("video.player");
                if (!v) return reject(new Error("no video element"));
                const done = () => resolve(v.duration);
                if (v.readyState >= 1) return done();
                v.addEventListener("loadedmetadata", done, { once: true });
                v.addEventListener("error", () => reject(new Error(`video error ${v.error && v.error.code}`)));
            })"""
        )
    )


def test_sign_in_refuses_a_bad_key_readably(page: Any, served: Served) -> None:
    page.goto("/")
    shoot(page, "signin")
    page.get_by_label("API key").fill("noor_not-a-key")
    page.get_by_role("button", name="Sign in").click()
    error = page.locator("form .error")
    error.wait_for()
    assert error.inner_text() == "Sign-in failed (401): Invalid API key is provided"
    assert page.locator("#credits").is_hidden()


def test_create_from_arabic_play_extend_delete(page: Any, served: Served) -> None:
    sign_in(page, served.key)
    assert page.locator("#credits").inner_text() == "Credits: unmetered"  # noor serve's own tenant (docs/serve.md)
    page.get_by_label("Prompt", exact=True).fill(ARABIC_PROMPT)
    page.get_by_label("Negative prompt").fill("مربع أزرق")
    quote = page.get_by_test_id("quote")
    page.wait_for_function("() => document.querySelector('[data-testid=quote]').dataset.etaS > 0")
    eta_before = float(quote.get_attribute("data-eta-s"))
    assert "960×540, 40 frames at 8 fps" in quote.inner_text()
    shoot(page, "create")
    page.get_by_role("button", name="Create video").click()

    # the detail page: queued/dreaming with a progress bar (a toy job takes seconds), then the player
    page.wait_for_selector("main[data-view=g] progress", timeout=5_000)
    assert page.locator("main").get_attribute("data-state") in ("queued", "dreaming")
    notice = page.locator("#notice").inner_text()
    assert notice.startswith("Queued ") and "ETA" in notice and "price $0.0" in notice  # dollars, as credits are
    first_id = wait_completed(page)
    assert page.locator("h1").inner_text() == ARABIC_PROMPT
    assert page.locator("h1").get_attribute("dir") == "auto"
    assert float(page.get_by_test_id("eta").inner_text().split()[0]) == pytest.approx(eta_before, abs=0.05)
    assert video_duration_s(page) > 0
    page.evaluate("document.querySelector('video.player').play()")
    page.wait_for_function("() => document.querySelector('video.player').currentTime > 0")
    assert '"negative_prompt": "مربع أزرق"' in page.get_by_test_id("request").inner_text()
    download = page.get_by_role("link", name="Download")
    assert "/assets/" in download.get_attribute("href") and download.get_attribute("download") == f"{first_id}.mp4"
    shoot(page, "detail")

    # extend: the create form starts from this generation's last frame
    page.get_by_role("link", name="Extend").click()
    page.wait_for_selector("main[data-view=create] [data-frame=frame0]")
    assert page.locator("[data-frame=frame0] input[value=generation]").is_checked()
    assert page.locator("[data-frame=frame0] select").input_value() == first_id
    page.get_by_label("Prompt", exact=True).fill("a red circle keeps moving to the left")
    page.wait_for_function("() => document.querySelector('[data-testid=quote]').dataset.etaS > 0")
    page.get_by_role("button", name="Create video").click()
    page.wait_for_selector("main[data-view=g]")
    wait_completed(page)
    request = page.get_by_test_id("request").inner_text()
    assert f'"id": "{first_id}"' in request and '"type": "generation"' in request
    assert video_duration_s(page) > 0

    # upscale the extension to 720p: a new generation whose video is 1280x720
    extended_url = page.url
    page.get_by_label("Upscale to").select_option("720p")
    page.get_by_role("button", name="Upscale").click()
    page.wait_for_url(lambda url: url != extended_url)
    upscaled_id = wait_completed(page)
    assert page.locator("#notice").inner_text().startswith(f"Upscale queued as {upscaled_id}.")
    assert video_duration_s(page) > 0
    size = page.evaluate("(v => [v.videoWidth, v.videoHeight])(document.querySelector('video.player'))")
    assert size == [1280, 720]

    # the gallery shows both, newest first; filter by the Arabic prompt
    page.get_by_role("link", name="Gallery", exact=True).click()
    page.wait_for_function("() => document.querySelectorAll('.gallery .tile').length === 3")
    page.get_by_label("Prompt contains").fill("حمراء")
    page.wait_for_function("() => document.querySelectorAll('.gallery .tile').length === 1")
    assert page.locator(".gallery .tile").get_attribute("data-id") == first_id
    page.get_by_label("State").select_option("failed")
    page.wait_for_selector("text=No generations match.")
    page.get_by_label("Prompt contains").fill("")
    page.get_by_label("State").select_option("")
    page.wait_for_function("() => document.querySelectorAll('.gallery .tile').length === 3")
    shoot(page, "gallery")

    # delete the first one through the confirmation dialog
    page.locator(f".tile[data-id='{first_id}'] a").click()
    wait_completed(page)
    page.get_by_role("button", name="Delete").click()
    page.locator("dialog").get_by_role("button", name="Delete").click()
    page.wait_for_selector("main[data-view=gallery]")
    assert page.locator("#notice").inner_text().startswith(f"Generation {first_id} deleted.")
    page.wait_for_function("() => document.querySelectorAll('.gallery .tile').length === 2")
    page.goto(f"/#/g/{first_id}")
    page.wait_for_selector("text=This generation does not exist (or was deleted).")


def test_a_failed_generation_shows_why(page: Any, served: Served) -> None:
    """A real failure: the stored video of a finished generation is lost, then it is upscaled."""
    auth = {"Authorization": f"Bearer {served.key}"}
    body = {"prompt": "a yellow box moves right", "aspect_ratio": "1:1"}
    gid = httpx.post(f"{served.base}/generations/video", json=body, headers=auth).json()["id"]
    deadline = time.monotonic() + DONE_MS / 1000
    while (g := httpx.get(f"{served.base}/generations/{gid}", headers=auth).json())["state"] != "completed":
        assert g["state"] != "failed" and time.monotonic() < deadline, g
        time.sleep(0.1)
    key = g["assets"]["video"].split("/assets/", 1)[1].split("?", 1)[0]
    (Path(served.env["NOOR_DATA_DIR"]) / "assets" / key).unlink()
    sign_in(page, served.key)
    page.goto(f"/#/g/{gid}")
    wait_completed(page)
    source_url = page.url
    page.get_by_role("button", name="Upscale").click()
    page.wait_for_url(lambda url: url != source_url)
    page.wait_for_selector("main[data-view=g][data-state=failed]", timeout=DONE_MS)
    reason = page.locator("main .error[role=alert]")
    assert reason.inner_text() == f"Why it failed: Job failed: AssetNotFound: {key}"
    assert page.locator("main video.player").count() == 0
    page.get_by_role("link", name="Gallery", exact=True).click()
    page.get_by_label("State").select_option("failed")
    page.wait_for_selector(".gallery .tile[data-state=failed]")


def completed_via_api(served: Served, body: dict[str, Any]) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {served.key}"}
    return completed_by_id(served, httpx.post(f"{served.base}/generations/video", json=body, headers=auth).json()["id"])


def completed_by_id(served: Served, gid: str) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {served.key}"}
    deadline = time.monotonic() + DONE_MS / 1000
    while (g := httpx.get(f"{served.base}/generations/{gid}", headers=auth).json())["state"] != "completed":
        assert g["state"] != "failed" and time.monotonic() < deadline, g
        time.sleep(0.1)
    return g


def video_size(pg: Any) -> list[int]:
    video_duration_s(pg)  # its metadata loaded
    return list(pg.evaluate("(v => [v.videoWidth, v.videoHeight])(document.querySelector('video.player'))"))


def made_by(pg: Any, button: Any, said: str) -> tuple[str, str]:
    """Click `button` on a generation's page; the new generation's id and request, once it has completed and the
    notice said `said` with its id."""
    source_url = pg.url
    button.click()
    pg.wait_for_url(lambda url: url != source_url)
    made = wait_completed(pg)
    assert pg.locator("#notice").inner_text().startswith(f"{said} {made}.")
    return made, pg.get_by_test_id("request").inner_text()


def test_edit_and_reframe_from_a_generations_page(page: Any, served: Served) -> None:
    """Edit (Modify Video) under a new prompt in a chosen mode, and Reframe to 9:16: each a new generation made
    from this one's video, through the Dream Machine API the studio calls."""
    source = completed_via_api(served, {"prompt": "a red circle moves to the left", "aspect_ratio": "1:1"})
    sign_in(page, served.key)
    page.goto(f"/#/g/{source['id']}")
    wait_completed(page)
    source_size = video_size(page)
    source_url = page.url

    edit = page.get_by_role("form", name="Edit")
    assert edit.get_by_label("Edit to").input_value() == "a red circle moves to the left"  # starts from its prompt
    edit.get_by_label("Edit to").fill("a blue circle moves to the left")
    edit.get_by_label("Keep of the source").select_option("flex_1")
    _, request = made_by(page, edit.get_by_role("button", name="Edit"), "Edit queued as")
    assert '"mode": "flex_1"' in request and '"generation_type": "modify_video"' in request
    assert source["assets"]["video"].split("?", 1)[0] in request  # made from the source's own file
    assert page.locator("h1").inner_text() == "a blue circle moves to the left"
    assert video_size(page) == source_size  # an edit keeps its source's frame

    page.goto(source_url)
    wait_completed(page)
    reframe = page.get_by_role("form", name="Reframe")
    assert reframe.get_by_label("Reframe to").input_value() == "9:16"  # a square source: offered portrait
    _, request = made_by(page, reframe.get_by_role("button", name="Reframe"), "Reframe queued as")
    width, height = video_size(page)
    assert '"aspect_ratio": "9:16"' in request
    assert abs(width / height - 9 / 16) < 0.1, (width, height)
    shoot(page, "reframed")


def test_refused_requests_are_readable(page: Any, served: Served, tmp_path: Path) -> None:
    sign_in(page, served.key)
    page.get_by_label("Prompt", exact=True).fill("a blue square")
    # a model this server does not have: the quote says so before submitting, the create after
    page.get_by_label("Model").fill("no-such-model")
    quote = page.get_by_test_id("quote")
    page.wait_for_function("() => document.querySelector('[data-testid=quote]').classList.contains('refused')")
    assert quote.inner_text().startswith("This request would be refused: Unknown model 'no-such-model'; available:")
    page.get_by_role("button", name="Create video").click()
    error = page.locator("form .errors .error")
    error.wait_for()
    assert error.inner_text().startswith("Request refused (400): Unknown model 'no-such-model'; available: ")
    page.get_by_label("Model").fill("ray-2")
    # a keyframe that is not an image: the upload is refused with the reason
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    frame = page.locator("[data-frame=frame0]")
    frame.get_by_label("Upload an image").check()
    frame.get_by_label("Image file (PNG, JPEG or WebP)").set_input_files(str(bad))
    frame_error = frame.locator(".error")
    frame_error.wait_for()
    assert frame_error.inner_text() == "Request refused (400): file must be a PNG, JPEG, WebP image or an MP4 video"


def test_credits_and_rate_limit_errors_are_readable(page: Any, served: Served) -> None:
    broke = tenant_key(served, "broke", "--credits", "0")  # metered, with no credits
    sign_in(page, broke)
    page.get_by_label("Prompt", exact=True).fill("a green triangle falls")
    page.get_by_role("button", name="Create video").click()
    error = page.locator("form .errors .error")
    error.wait_for()
    assert error.inner_text().startswith("Not enough credits (402): Insufficient credits")

    limited = tenant_key(served, "limited", "--credits", "1000", "--per-minute", "1")
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, limited)
    page.get_by_label("Prompt", exact=True).fill("a green triangle falls")
    page.get_by_role("button", name="Create video").click()
    page.wait_for_selector("main[data-view=g]")
    page.get_by_role("link", name="Create", exact=True).click()
    page.get_by_label("Prompt", exact=True).fill("a pink ball bounces")
    page.get_by_role("button", name="Create video").click()
    error = page.locator("form .errors .error")
    error.wait_for()
    text = error.inner_text()
    assert text.startswith("Too many requests: Rate limit: 1 generations per minute. Try again in "), text
    assert text.endswith(" s.") and error.get_attribute("data-status") == "429"


def test_arabic_interface_and_back(page: Any, served: Served) -> None:
    sign_in(page, served.key)
    page.get_by_role("button", name="العربية").click()
    html = page.locator("html")
    assert (html.get_attribute("lang"), html.get_attribute("dir")) == ("ar", "rtl")
    assert page.locator("h1").inner_text() == "إنشاء فيديو"
    assert page.get_by_role("navigation").get_by_role("link").all_inner_texts() == ["إنشاء", "المعرض", "المخطِّط", "العب"]
    # mirrored: the brand sits at the right, the account controls at the left
    brand = page.locator(".brand").bounding_box()
    account = page.locator(".account").bounding_box()
    assert brand["x"] > account["x"]
    assert page.get_by_label("الوصف", exact=True).get_attribute("dir") == "auto"
    shoot(page, "create-ar")
    page.get_by_role("link", name="المعرض").click()
    page.wait_for_selector("main[data-view=gallery] h1:text('المعرض')")
    shoot(page, "gallery-ar")
    page.goto("/")  # the choice is remembered
    page.wait_for_selector("main[data-view=create]")
    assert page.locator("html").get_attribute("dir") == "rtl"
    page.get_by_role("button", name="English").click()
    assert (html.get_attribute("lang"), html.get_attribute("dir")) == ("en", "ltr")
    assert page.locator("h1").inner_text() == "Create a video"


def test_keyboard_only(page: Any, served: Served) -> None:
    page.goto("/")
    page.wait_for_selector("main[data-view=signin]")
    page.keyboard.type(served.key)  # the key field has the focus
    page.keyboard.press("Enter")
    page.wait_for_selector("main[data-view=create] textarea")
    assert page.evaluate("document.activeElement.textContent") == "Create a video"  # the new page's heading
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.name") == "prompt"  # then the form, from the top
    for _ in range(6):  # back up to the navigation
        page.keyboard.press("Shift+Tab")
        if page.evaluate("document.activeElement.textContent") == "Gallery":
            break
    page.keyboard.press("Enter")
    page.wait_for_selector("main[data-view=gallery]")
    assert page.evaluate("document.activeElement.tagName") == "H1"  # focus moves to the new page's heading


def test_planner_site_plan_and_chip_comparison(page: Any, served: Served) -> None:
    sign_in(page, served.key)
    page.get_by_role("link", name="Planner", exact=True).click()
    site = page.locator("form", has_text="Site plan")
    site.get_by_label("Facility power (MW)").fill("150")
    site.get_by_label("Chip").select_option("b200")
    page.get_by_role("button", name="Run the site plan").click()
    result = page.get_by_test_id("site-result")
    result.wait_for()
    assert result.locator("figure svg").count() == 3
    assert result.locator("figure svg rect").count() >= 5 + 3  # power parts, cost parts, classes
    assert "150 MW" in result.inner_text()
    page.get_by_role("button", name="Compare chips").click()
    chips = page.get_by_test_id("chips-result")
    chips.wait_for()
    assert chips.locator("figure svg").count() == 2
    assert chips.locator("tbody tr[data-chip=b200]").count() == 1
    shoot(page, "planner")
    site.get_by_label("Facility power (MW)").fill("-5")
    page.get_by_role("button", name="Run the site plan").click()
    error = site.locator(".error")
    error.wait_for()
    assert error.inner_text() == "Request refused (422): power_mw: must be > 0 MW, got -5.0"
    page.get_by_role("button", name="العربية").click()
    page.get_by_role("button", name="شغّل خطة الموقع").click()
    page.wait_for_selector("text=رُفض الطلب (422)")
    site_ar = page.locator("form", has_text="خطة موقع")
    site_ar.get_by_label("قدرة المنشأة (ميغاواط)").fill("35")
    page.get_by_role("button", name="شغّل خطة الموقع").click()
    page.get_by_test_id("site-result").wait_for()
    shoot(page, "planner-ar")
