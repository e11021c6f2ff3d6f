"""The studio's Play page in a real browser: Playwright drives Debian's Chromium against a live `noor serve` that
knows the terrain double (`tests/world_double.py`: the real procedural terrain, no model), so the picture on the
canvas truly scrolls with the world.

Start a session from a suggested prompt, press ArrowRight and D, and read the canvas before and after: the scene
moved left (the camera follows the player) by 4 px for every step the server reports it applied, drawn as crisp
squares. The page in Arabic (right to left, the pad's arrows still physical directions, the session going on
through the switch), End (the session is ended on the server), refusals as readable messages; on a phone, the
on-screen buttons move the scene too.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from noor.engine.world_tiny.actions import STEP_PX
from noor.engine.world_tiny.readers import scene_shift
from noor.engine.world_tiny.terrain import VIEW_SIZE
from tests.conftest import Served, start_serve
from tests.studio.conftest import PHONE, open_page, shoot, sign_in, tenant_key

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
DESERT = "a desert with palm trees"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, toy_weights: Path) -> Iterator[Served]:
    """Overrides tests/studio/conftest.py's server (its `page` fixture then opens this one)."""
    server = start_serve(tmp_path_factory.mktemp("play-data"), toy_weights, module="tests.world_double")
    assert server.key, "noor serve printed no admin key"
    yield server
    server.stop()


class Statuses:
    """Every JSON message the page's WebSockets receive (Playwright sees the frames the page sees)."""

    def __init__(self, pg: Any):
        self.messages: list[dict[str, Any]] = []
        pg.on("websocket", lambda ws: ws.on("framereceived", self._received))

    def _received(self, payload: str | bytes) -> None:
        if isinstance(payload, str):
            self.messages.append(json.loads(payload))

    def steps(self, action: str) -> int:
        """Frames the server drew with `action` applied (a status message per frame)."""
        return sum(1 for m in self.messages if m.get("type") == "status" and m.get("action") == action)


def grab(pg: Any) -> np.ndarray:
    """The canvas's picture at the frame's own size, (H, W, 3) uint8; it must be drawn as crisp squares."""
    url, scale = pg.evaluate(
        """() => { const c = document.querySelector("canvas.screen");
                   return [c.toDataURL("image/png"), Number(c.dataset.scale)]; }"""
    )
    drawn = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))
    h, w = drawn.shape[0] // scale, drawn.shape[1] // scale
    assert (h, w) == (VIEW_SIZE, VIEW_SIZE) and drawn.shape[:2] == (h * scale, w * scale), (drawn.shape, scale)
    blocks = drawn.reshape(h, scale, w, scale, 3).astype(np.int16)
    spread = int((blocks.max(axis=(1, 3)) - blocks.min(axis=(1, 3))).max())
    assert spread == 0, f"a frame pixel is drawn as a {scale}x{scale} square of {spread} levels: smoothed"
    return drawn[scale // 2 :: scale, scale // 2 :: scale]


def settle(pg: Any) -> None:
    """Wait until the page has released every move and the server has drawn a few frames since (the picture is
    still: the last move is on the canvas)."""
    pg.wait_for_function("() => document.querySelector('.play-stage').dataset.sent === 'none'")
    frame = int(pg.locator(".play-stage").get_attribute("data-frame"))
    drawn = int(pg.locator(".play-stage").get_attribute("data-drawn"))
    pg.wait_for_function(
        f"""() => {{ const s = document.querySelector('.play-stage').dataset;
            return s.action === 'none' && Number(s.frame) >= {frame + 3} && Number(s.drawn) >= {drawn + 3}; }}"""
    )


def tap(pg: Any, statuses: Statuses, action: str, press: Any) -> tuple[int, float, float]:
    """`press()` once, released before the next (a human's tap); the steps the server drew with `action` and the
    scene's shift (dx, dy) on the canvas. Read tap by tap: phase correlation reads a shift of a few steps
    surely, not one of half the view (a loaded server may draw a tap's move twice or thrice)."""
    before, steps_before = grab(pg), statuses.steps(action)
    press()
    settle(pg)
    steps = statuses.steps(action) - steps_before
    # the canvas is painted from each frame asynchronously (an image decode): give it a moment to show the last
    # drawn frame before reading it (the shift is asserted by the caller all the same)
    deadline = time.monotonic() + 3.0
    while True:
        dx, dy = scene_shift(before, grab(pg))
        if abs(dx + STEP_PX * steps) <= 1.0 or time.monotonic() > deadline:
            return steps, dx, dy
        pg.wait_for_timeout(100)


def start_session(pg: Any, prompt_button: str) -> str:
    """Pick a suggested prompt, the terrain double, Start; wait for frames. The session's id."""
    pg.get_by_role("button", name=prompt_button, exact=True).click()
    pg.locator("details.play-more summary").click()
    pg.get_by_label("World model").select_option("terrain-double")
    pg.locator("form.play-form button[type=submit]").click()
    pg.wait_for_selector("main[data-view=play][data-state=active]")
    pg.wait_for_function("() => Number(document.querySelector('.play-stage').dataset.drawn) >= 2")
    return str(pg.locator("main").get_attribute("data-id"))


def session_state(served: Served, key: str, sid: str) -> str:
    res = httpx.get(f"{served.base}/v1/worlds/sessions/{sid}", headers={"Authorization": f"Bearer {key}"})
    assert res.status_code == 200, res.text
    return str(res.json()["state"])


def test_keys_scroll_the_scene_arabic_and_end(page: Any, served: Served) -> None:
    statuses = Statuses(page)
    # refusals: no prompt (in the page), then no credits for a second of play (the server's own words)
    sign_in(page, tenant_key(served, "broke", "--credits", "0"))
    page.get_by_role("link", name="Play", exact=True).click()
    page.wait_for_selector("main[data-view=play] h1:text('Play a world')")
    page.get_by_role("button", name="Start", exact=True).click()
    assert page.locator("form.play-form .error").inner_text() == "Describe a world, or pick one of the suggestions."
    page.get_by_role("button", name="a coast", exact=True).click()
    page.get_by_role("button", name="Start", exact=True).click()
    page.wait_for_selector("form.play-form .error[data-status='402']")
    refused = page.locator("form.play-form .error").inner_text()
    assert refused.startswith("Not enough credits (402): Insufficient credits: a second of a world session costs $")
    page.get_by_role("button", name="Sign out").click()

    sign_in(page, served.key)
    page.get_by_role("link", name="Play", exact=True).click()
    sid = start_session(page, DESERT)
    assert page.get_by_label("World", exact=True).input_value() == DESERT
    assert page.locator(".play-state").inner_text() == "Playing"
    settle(page)

    # three taps of ArrowRight and one of D: each moves the player at least one step (the page holds a move until
    # the server has drawn it), and the camera follows the player: the scene goes left, STEP_PX a step
    for key in ("ArrowRight", "ArrowRight", "ArrowRight", "d"):
        steps, dx, dy = tap(page, statuses, "right", lambda key=key: page.keyboard.press(key))
        assert steps >= 1 and dx == pytest.approx(-STEP_PX * steps, abs=1.0) and abs(dy) < 1.0, (key, steps, dx, dy)
    stats = page.get_by_test_id("play-stats")
    assert stats.locator("[data-stat=frame]").inner_text() != "—"
    assert stats.locator("[data-stat=latency]").inner_text().endswith(" ms")
    shoot(page, "play")

    # Arabic: right to left, the session goes on through the switch; the pad keeps its physical directions
    page.get_by_role("button", name="العربية").click()
    html = page.locator("html")
    assert (html.get_attribute("lang"), html.get_attribute("dir")) == ("ar", "rtl")
    assert page.locator("h1").inner_text() == "العب في عالم"
    drawn = int(page.locator(".play-stage").get_attribute("data-drawn"))
    page.wait_for_function(f"() => Number(document.querySelector('.play-stage').dataset.drawn) > {drawn}")
    assert page.locator("main").get_attribute("data-state") == "active"
    assert session_state(served, served.key, sid) == "active"
    assert page.locator(".play-state").inner_text() == "تلعب الآن"
    left = page.get_by_role("button", name="إلى اليسار").bounding_box()
    right = page.get_by_role("button", name="إلى اليمين").bounding_box()
    assert left["x"] + left["width"] <= right["x"], (left, right)  # left at the left, in a right-to-left page
    assert page.get_by_role("button", name="صحراء فيها نخيل").is_visible()
    shoot(page, "play-ar")
    steps, dx, dy = tap(page, statuses, "left", lambda: page.keyboard.press("ArrowLeft"))  # left is left
    assert steps >= 1 and dx == pytest.approx(STEP_PX * steps, abs=1.0) and abs(dy) < 1.0, (dx, dy, steps)
    # the pad from the keyboard: Enter on its focused "right" button is one tap
    page.get_by_role("button", name="إلى اليمين").focus()
    steps, dx, dy = tap(page, statuses, "right", lambda: page.keyboard.press("Enter"))
    assert steps >= 1 and dx == pytest.approx(-STEP_PX * steps, abs=1.0) and abs(dy) < 1.0, (dx, dy, steps)

    # End: the server ends the session and the page says so
    page.get_by_role("button", name="أنهِ الجلسة").click()
    page.wait_for_selector("main[data-view=play][data-state=ended]")
    assert page.locator(".play-message").inner_text() == "انتهت الجلسة: أنهيتها بنفسك."  # reason "client"
    assert session_state(served, served.key, sid) == "ended"
    assert page.get_by_role("button", name="أنهِ الجلسة").is_disabled()
    assert page.get_by_role("button", name="ابدأ").is_enabled()  # another can start


@pytest.fixture
def phone(browser: Any, served: Served) -> Iterator[Any]:
    """A phone: 390x844, touch."""
    yield from open_page(browser, served, viewport=PHONE, has_touch=True, is_mobile=True)


def test_phone_queue_then_buttons_scroll_the_scene(phone: Any, served: Served) -> None:
    statuses = Statuses(phone)
    # the server's one slot is taken (NOOR_WORLD_SLOTS=1): the page's session waits, showing its place
    auth = {"Authorization": f"Bearer {served.key}"}
    body = {"prompt": "a coast", "model": "terrain-double"}
    blocker = httpx.post(f"{served.base}/v1/worlds/sessions", json=body, headers=auth)
    assert blocker.status_code == 201 and blocker.json()["state"] == "active", blocker.text
    # every socket goes through Playwright (unchanged), so the test can cut the page's end of one
    routes: list[Any] = []
    phone.route_web_socket("**/stream", lambda ws: routes.append((ws, ws.connect_to_server())))
    sign_in(phone, served.key)
    phone.goto("/#/play")
    phone.get_by_role("button", name="a city at night", exact=True).click()
    phone.locator("details.play-more summary").click()
    phone.get_by_label("World model").select_option("terrain-double")
    phone.locator("form.play-form button[type=submit]").click()
    phone.wait_for_selector("main[data-view=play][data-state=queued]")
    phone.wait_for_selector(".play-state:text('Queued: position 1')")
    sid = str(phone.locator("main").get_attribute("data-id"))
    assert session_state(served, served.key, sid) == "queued"
    assert httpx.delete(f"{served.base}/v1/worlds/sessions/{blocker.json()['id']}", headers=auth).status_code == 204
    phone.wait_for_selector("main[data-view=play][data-state=active]")
    phone.wait_for_function("() => Number(document.querySelector('.play-stage').dataset.drawn) >= 2")
    assert phone.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth") <= 1
    pad = phone.get_by_role("group", name="Move")
    for button in pad.get_by_role("button").all():
        box = button.bounding_box()
        assert box["width"] >= 44 and box["height"] >= 44, box  # a finger's target
    settle(phone)
    # right: the scene goes left; down: it goes up
    for name, action, (sx, sy) in (("Right", "right", (-1, 0)), ("Right", "right", (-1, 0)), ("Down", "down", (0, -1))):
        button = pad.get_by_role("button", name=name)
        steps, dx, dy = tap(phone, statuses, action, button.tap)
        assert steps >= 1, (name, steps)
        assert (dx, dy) == (pytest.approx(sx * STEP_PX * steps, abs=1.0), pytest.approx(sy * STEP_PX * steps, abs=1.0))
    # a lost connection: the page opens another socket with the same token and plays on
    assert len(routes) == 1
    routes[-1][0].close(code=4000, reason="cut by the test")
    lost = phone.locator(".play-message .error")
    lost.wait_for()
    assert lost.inner_text() == "The connection to the world was lost (code 4000) (cut by the test)."
    lost.wait_for(state="detached")  # gone with the first status on the new socket
    drawn = int(phone.locator(".play-stage").get_attribute("data-drawn"))
    phone.wait_for_function(f"() => Number(document.querySelector('.play-stage').dataset.drawn) > {drawn}")
    assert len(routes) == 2 and phone.locator("main").get_attribute("data-state") == "active"
    assert session_state(served, served.key, sid) == "active"
    # leaving the page ends the session (it would hold a worker until its idle timeout)
    phone.get_by_role("link", name="Create", exact=True).click()
    deadline = time.monotonic() + 10
    while session_state(served, served.key, sid) != "ended":
        assert time.monotonic() < deadline, "leaving the Play page did not end the session"
        time.sleep(0.1)


def test_a_reload_resumes_the_session(page: Any, served: Served) -> None:
    """The tab keeps its session's id (sessionStorage): after a reload the page reads the session, asks for a
    fresh token and plays on: the same id, the picture streaming, the server's session still the one."""
    sign_in(page, served.key)
    page.get_by_role("link", name="Play", exact=True).click()
    sid = start_session(page, DESERT)
    assert page.get_by_test_id("play-session").inner_text() == f"Session {sid}"
    sockets: list[Any] = []
    page.on("websocket", lambda ws: sockets.append(ws))
    page.reload()
    page.wait_for_selector("main[data-view=play][data-state=active]")
    assert page.locator("main").get_attribute("data-id") == sid
    assert page.get_by_test_id("play-session").inner_text() == f"Session {sid}"
    # the picture streams: frames keep coming and being drawn, over a new socket
    page.wait_for_function("() => Number(document.querySelector('.play-stage').dataset.drawn) >= 3")
    frame = int(page.locator(".play-stage").get_attribute("data-frame"))
    page.wait_for_function(f"() => Number(document.querySelector('.play-stage').dataset.frame) >= {frame + 5}")
    grab(page)  # a frame on the canvas, drawn as crisp squares
    assert len(sockets) == 1 and session_state(served, served.key, sid) == "active"
    # End still ends it, and a reload then starts from the form
    page.get_by_role("button", name="End the session").click()
    page.wait_for_selector("main[data-view=play][data-state=ended]")
    assert session_state(served, served.key, sid) == "ended"
    page.reload()
    page.wait_for_selector("main[data-view=play][data-state=idle]")
    page.wait_for_function("() => sessionStorage.getItem('noor.play.session') === null")  # read, found ended
    page.wait_for_timeout(500)
    assert page.locator("main").get_attribute("data-state") == "idle" and len(sockets) == 1
