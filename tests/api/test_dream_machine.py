from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from noor.api.app import ApiConfig, create_app
from noor.engine import media
from noor.engine.tiny.backend import TinyBackend
from noor.jobs import tenants
from noor.jobs.assets import AssetStore
from noor.jobs.store import Store
from noor.runtime.worker import Worker, WorkerConfig


@contextmanager
def serving(tmp_path: Path, toy_weights: Path) -> Iterator[dict[str, Any]]:
    store = Store(f"sqlite:///{tmp_path / 'noor.db'}")
    assets = AssetStore(str(tmp_path / "assets"))
    tenants.create_tenant(store, "acme", credits_cents=1000)
    tenants.create_tenant(store, "globex", credits_cents=1000)
    app = create_app(store, assets, ApiConfig(secret=b"test-secret"))
    backend = TinyBackend(toy_weights)
    worker = Worker(store, assets, WorkerConfig(name="w1"), load_backend=lambda model: backend)
    with TestClient(app) as client:
        yield {
            "client": client,
            "worker": worker,
            "acme": {"Authorization": f"Bearer {tenants.create_key(store, 'acme')}"},
            "globex": {"Authorization": f"Bearer {tenants.create_key(store, 'globex')}"},
        }
    store.close()


@pytest.fixture
def server(tmp_path: Path, toy_weights: Path) -> Iterator[dict[str, Any]]:
    with serving(tmp_path, toy_weights) as s:
        yield s


@pytest.fixture(scope="module")
def refusing(tmp_path_factory: pytest.TempPathFactory, toy_weights: Path) -> Iterator[dict[str, Any]]:
    """One server for the module's refused requests: a refusal stores nothing, so each test sees it as new."""
    with serving(tmp_path_factory.mktemp("refusing"), toy_weights) as s:
        yield s
        assert s["client"].get("/generations", headers=s["acme"]).json()["count"] == 0, "a refusal stored a job"


def _video(s: dict[str, Any], **body: Any) -> Any:
    return s["client"].post(
        "/dream-machine/v1/generations/video",
        json={"model": "ray-2", "prompt": "a red circle moves to the left", **body},
        headers=s["acme"],
    )


@pytest.mark.slow
def test_video_is_created_run_and_downloadable(server: dict[str, Any], tmp_path: Path) -> None:
    c = server["client"]
    created = _video(server, duration="5s", resolution="540p", aspect_ratio="1:1")
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["state"] == "queued" and body["request"]["generation_type"] == "video"
    assert server["worker"].run_once()
    done = c.get(f"/dream-machine/v1/generations/{body['id']}", headers=server["acme"]).json()
    assert done["state"] == "completed", done
    video = c.get(done["assets"]["video"])  # signed link: no key needed
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    (tmp_path / "v.mp4").write_bytes(video.content)
    assert media.video_info(tmp_path / "v.mp4")[:3] == (40, 540, 540)
    thumb = c.get(done["assets"]["image"])
    assert thumb.headers["content-type"] == "image/jpeg"


@pytest.mark.slow
def test_image_generation_and_extend_from_a_generation(server: dict[str, Any]) -> None:
    c = server["client"]
    image = c.post(
        "/generations/image",
        json={"model": "photon-1", "prompt": "a blue square", "format": "png"},
        headers=server["acme"],
    )
    assert image.status_code == 201, image.text
    first = _video(server)
    assert server["worker"].run_once() and server["worker"].run_once()
    img = c.get(f"/generations/{image.json()['id']}", headers=server["acme"]).json()
    assert img["state"] == "completed" and img["assets"]["video"] is None
    with Image.open(io.BytesIO(c.get(img["assets"]["image"]).content)) as pic:
        assert pic.format == "PNG" and pic.size == (960, 540)
    extended = _video(server, keyframes={"frame0": {"type": "generation", "id": first.json()["id"]}})
    assert extended.status_code == 201, extended.text
    assert server["worker"].run_once()
    assert c.get(f"/generations/{extended.json()['id']}", headers=server["acme"]).json()["state"] == "completed"


@pytest.mark.slow
def test_upload_as_start_keyframe(server: dict[str, Any]) -> None:
    c = server["client"]
    buf = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(buf, format="PNG")
    up = c.post("/v1/uploads", files={"file": ("k.png", buf.getvalue(), "image/png")}, headers=server["acme"])
    assert up.status_code == 201, up.text
    created = _video(server, keyframes={"frame0": {"type": "image", "url": up.json()["url"]}})
    assert created.status_code == 201, created.text
    assert server["worker"].run_once()
    got = c.get(f"/generations/{created.json()['id']}", headers=server["acme"]).json()
    assert got["state"] == "completed"
    bad = c.post("/v1/uploads", files={"file": ("x.txt", b"hello", "text/plain")}, headers=server["acme"])
    assert bad.status_code == 400


def test_tenants_are_isolated_and_keys_checked(server: dict[str, Any]) -> None:
    c = server["client"]
    created = _video(server).json()
    gid = created["id"]
    assert c.get(f"/generations/{gid}", headers=server["globex"]).status_code == 404
    assert c.delete(f"/generations/{gid}", headers=server["globex"]).status_code == 404
    bad = c.get("/generations", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.json() == {"detail": "Invalid API key is provided"}
    assert c.get("/generations").status_code == 401
    credits = {"credit_balance": 1000.0 - created["price_cents"], "metered": True}
    assert c.get("/credits", headers=server["acme"]).json() == credits
    assert c.get("/credits", headers=server["globex"]).json() == {"credit_balance": 1000.0, "metered": True}
    assert c.get("/ping").json() == {"message": "pong"}
    assert c.get("/generations/concepts/list", headers=server["acme"]).json() == []  # no model acts on one


def test_list_pagination_and_delete(server: dict[str, Any]) -> None:
    c = server["client"]
    ids = [_video(server).json()["id"] for _ in range(3)]
    page = c.get("/generations?limit=2&offset=0", headers=server["acme"]).json()
    assert page["count"] == 2 and page["has_more"] and [g["id"] for g in page["generations"]] == ids[::-1][:2]
    rest = c.get("/generations?limit=2&offset=2", headers=server["acme"]).json()
    assert rest["count"] == 1 and not rest["has_more"]
    assert c.delete(f"/generations/{ids[0]}", headers=server["acme"]).status_code == 204
    assert c.get(f"/generations/{ids[0]}", headers=server["acme"]).status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"prompt": ""}, 400, "Prompt is required"),
        ({"prompt": "ab"}, 400, "Prompt is too short, minimum length is 3 characters"),
        ({"prompt": "x" * 5001}, 400, "Prompt is too long, maximum length is 5000 characters"),
        ({"model": "nope"}, 400, "Unknown model 'nope'; available:"),
        ({"aspect_ratio": "2:1"}, 422, None),
        ({"duration": "7s"}, 400, "duration must be one of"),
        ({"resolution": "8k"}, 400, "resolution"),
        ({"keyframes": {}}, 400, "No keyframes provided"),
        ({"keyframes": {"frame0": {"type": "image", "url": "http://169.254.169.254/x"}}}, 400, "reserved"),
        ({"keyframes": {"frame0": {"type": "generation", "id": "nope"}}}, 404, "Generation not found"),
        ({"loop": True, "keyframes": {"frame1": {"type": "generation", "id": "x"}}}, 404, None),
        ({"prompt": 5}, 422, None),
    ],
)
def test_bad_requests_are_4xx_with_detail(
    refusing: dict[str, Any], body: dict[str, Any], status: int, detail: str | None
) -> None:
    r = _video(refusing, **body)
    assert r.status_code == status, r.text
    assert "detail" in r.json()
    if detail:
        assert detail in r.json()["detail"]


@pytest.mark.slow
def test_upscale_resamples_the_video_into_a_new_generation(server: dict[str, Any], tmp_path: Path) -> None:
    c = server["client"]
    source = _video(server, resolution="540p", aspect_ratio="16:9").json()["id"]
    early = c.post(f"/generations/{source}/upscale", json={"resolution": "720p"}, headers=server["acme"])
    assert early.status_code == 400 and "no finished video" in early.json()["detail"]
    assert server["worker"].run_once()
    up = c.post(f"/generations/{source}/upscale", json={"resolution": "720p"}, headers=server["acme"])
    assert up.status_code == 200, up.text
    assert up.json()["id"] != source and up.json()["generation_type"] == "video"
    assert server["worker"].run_once()
    done = c.get(f"/generations/{up.json()['id']}", headers=server["acme"]).json()
    assert done["state"] == "completed", done
    (tmp_path / "up.mp4").write_bytes(c.get(done["assets"]["video"]).content)
    assert media.video_info(tmp_path / "up.mp4") == (40, 1280, 720, 8.0)
    assert c.post("/generations/nope/upscale", json={}, headers=server["acme"]).status_code == 404
    assert (
        c.post(f"/generations/{source}/upscale", json={"resolution": "8k"}, headers=server["acme"]).status_code == 400
    )


def test_limits_answer_429_with_retry_after_before_storing(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'noor.db'}")
    tenants.create_tenant(store, "small", credits_cents=100, max_concurrent=2, max_per_minute=3)
    tenants.create_tenant(store, "quick", credits_cents=100, max_concurrent=10, max_per_minute=2)
    app = create_app(store, AssetStore(str(tmp_path / "a")), ApiConfig(secret=b"s"))
    small = {"Authorization": f"Bearer {tenants.create_key(store, 'small')}"}
    quick = {"Authorization": f"Bearer {tenants.create_key(store, 'quick')}"}
    body = {"model": "ray-2", "prompt": "a red circle"}
    with TestClient(app) as c:
        assert [c.post("/generations", json=body, headers=small).status_code for _ in range(2)] == [201, 201]
        refused = c.post("/generations", json=body, headers=small)
        assert (
            refused.status_code == 429
            and refused.headers["retry-after"] == "5"
            and "concurrent" in refused.json()["detail"]
        )
        assert store.list("small")[1] == 2  # nothing stored for the refused request
        codes = [
            c.post("/generations/image", json=body | {"model": "photon-1"}, headers=quick).status_code for _ in range(3)
        ]
        assert codes == [201, 201, 429]
        late = c.post("/v1/videos", json={"prompt": "a red circle"}, headers=quick)
        assert late.status_code == 429 and 1 <= int(late.headers["retry-after"]) <= 60
    store.close()


def test_metrics_and_health(server: dict[str, Any]) -> None:
    c = server["client"]
    _video(server)
    assert c.get("/healthz").json() == {"status": "ok"}
    text = c.get("/metrics").text
    assert 'noor_generations{model="tiny",state="queued"} 1.0' in text
    assert (
        'noor_http_requests_total{method="POST",route="/dream-machine/v1/generations/video",status="201"} 1.0' in text
    )


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/cb", "http://10.0.0.1/cb", "http://169.254.169.254/latest", "http://localhost/cb"]
)
def test_callback_urls_pointing_inside_are_refused(refusing: dict[str, Any], url: str) -> None:
    r = _video(refusing, callback_url=url)
    assert r.status_code == 400 and r.json()["detail"].startswith("callback_url:")


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (b'{"prompt":"' + b"a" * 10_000_000 + b'"}', 413),
        (b'{"prompt":"\xff\xfe abc"}', 400),
        (b"hello", 422),
        (b"[1,2]", 422),
        (b'{"prompt": 5}', 422),
        (b'{"prompt": "a red circle", "keyframes": {"frame0": {"type": "video"}}}', 422),
    ],
)
def test_malformed_bodies_get_4xx_with_detail(refusing: dict[str, Any], content: bytes, status: int) -> None:
    headers = refusing["acme"] | {"Content-Type": "application/json"}
    r = refusing["client"].post("/dream-machine/v1/generations/video", content=content, headers=headers)
    assert r.status_code == status and "detail" in r.json()


@pytest.mark.slow
def test_each_generation_is_priced_and_paid_from_credits(server: dict[str, Any], tmp_path: Path) -> None:
    """ETA and price come from the perf model for the workers' chip; a failed job gives its price back."""
    from noor.api.pricing import output_s
    from noor.perf import estimate_task

    c = server["client"]
    credits = lambda: c.get("/credits", headers=server["acme"]).json()["credit_balance"]  # noqa: E731
    a = _video(server, aspect_ratio="1:1", resolution="540p").json()
    b = _video(server, aspect_ratio="16:9", resolution="720p").json()
    expected = estimate_task("tiny", 540, 540, 40, None, "cpu-local")
    eta_s = expected.latency_s + output_s(540, 540, 40)  # the model's work, then the 540x540x40 file's
    # ETAs are kept to the millisecond, prices to a millionth of a cent (pricing.quote rounds there)
    assert a["eta_s"] == pytest.approx(eta_s, rel=1e-3, abs=1e-3)
    assert a["price_cents"] == pytest.approx(eta_s * expected.usd_per_hour / 36, rel=1e-3, abs=1e-6)
    assert credits() == pytest.approx(1000.0 - a["price_cents"] - b["price_cents"])
    # deleting a queued job fails it: its price comes back
    assert c.delete(f"/generations/{b['id']}", headers=server["acme"]).status_code == 204
    assert credits() == pytest.approx(1000.0 - a["price_cents"])
    # a completed job keeps its price
    assert server["worker"].run_once()
    assert credits() == pytest.approx(1000.0 - a["price_cents"])


def test_a_tenant_without_credits_is_refused_with_402(tmp_path: Path, toy_weights: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'noor.db'}")
    tenants.create_tenant(store, "broke", credits_cents=0.0)
    app = create_app(store, AssetStore(str(tmp_path / "a")), ApiConfig(secret=b"s"))
    with TestClient(app) as c:
        auth = {"Authorization": f"Bearer {tenants.create_key(store, 'broke')}"}
        r = c.post("/generations/video", json={"prompt": "a red circle"}, headers=auth)
        assert r.status_code == 402 and r.json()["detail"].startswith("Insufficient credits: this generation costs")
        assert c.get("/generations", headers=auth).json()["count"] == 0
    store.close()
