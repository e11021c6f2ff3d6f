"""Idempotency-Key and the SDKs' retries on every create (noor.trust.idempotency, noor.api.idempotency): real
concurrency through the ASGI app on SQLite and PostgreSQL, the official lumaai SDK's own retry, world sessions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import lumaai
import pytest
from sqlalchemy import func, select, update

from noor.api.app import ApiConfig, create_app
from noor.jobs import tenants
from noor.jobs.assets import AssetStore
from noor.jobs.generation import Generation, now_utc
from noor.jobs.store import Store
from noor.trust import idempotency
from noor.trust.idempotency import IdempotencyRecord
from tests.api.toy_server import on_loopback
from tests.api.world_server import world_server
from tests.jobs.conftest import store  # noqa: F401  (SQLite, and PostgreSQL in a schema of its own)

VIDEO = "/dream-machine/v1/generations/video"
BODY = {"model": "ray-2", "prompt": "a red circle moves to the left", "duration": "5s", "resolution": "540p"}


@pytest.fixture
def api(store: Store, tmp_path: Path) -> Iterator[dict[str, Any]]:  # noqa: F811
    tenants.create_tenant(store, "acme", credits_cents=1000, max_per_minute=1000, max_concurrent=1000)
    tenants.create_tenant(store, "globex", credits_cents=1000)
    app = create_app(store, AssetStore(str(tmp_path / "assets")), ApiConfig(secret=b"test-secret"))
    yield {
        "app": app,
        "store": store,
        "acme": {"Authorization": f"Bearer {tenants.create_key(store, 'acme')}"},
        "globex": {"Authorization": f"Bearer {tenants.create_key(store, 'globex')}"},
    }


def jobs_of(db: Store, tenant: str) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(Generation).where(Generation.tenant == tenant)) or 0)


async def _post_all(app: Any, requests: list[tuple[str, dict[str, Any], dict[str, str]]]) -> list[httpx.Response]:
    """All the requests at once through the ASGI app (sync routes in its thread pool, the rest on its loop)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60) as client:
        return list(await asyncio.gather(*(client.post(p, json=b, headers=h) for p, b, h in requests)))


def post_all(app: Any, requests: list[tuple[str, dict[str, Any], dict[str, str]]]) -> list[httpx.Response]:
    return asyncio.run(_post_all(app, requests))


def test_200_concurrent_creates_with_one_key_make_one_job_and_one_charge(api: dict[str, Any]) -> None:
    db, headers = api["store"], api["acme"] | {"Idempotency-Key": "order-42"}
    answers = post_all(api["app"], [(VIDEO, BODY, headers)] * 200)
    assert {a.status_code for a in answers} == {201}, {a.status_code: a.text for a in answers}
    ids = {a.json()["id"] for a in answers}
    assert len(ids) == 1 and jobs_of(db, "acme") == 1
    price = answers[0].json()["price_cents"]
    assert price > 0 and tenants.balance(db, "acme") == pytest.approx(1000 - price)  # one charge
    assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == 199
    assert all(a.content == answers[0].content for a in answers)  # the first answer, byte for byte


def test_another_body_is_a_409_and_keys_are_per_tenant(api: dict[str, Any]) -> None:
    app, db = api["app"], api["store"]
    [first] = post_all(app, [(VIDEO, BODY, api["acme"] | {"Idempotency-Key": "k1"})])
    assert first.status_code == 201
    # the same JSON in another key order and spacing is the same request
    [again] = post_all(app, [(VIDEO, dict(reversed(BODY.items())), api["acme"] | {"Idempotency-Key": "k1"})])
    assert again.status_code == 201 and again.json()["id"] == first.json()["id"]
    [other] = post_all(app, [(VIDEO, BODY | {"prompt": "a blue square"}, api["acme"] | {"Idempotency-Key": "k1"})])
    assert other.status_code == 409 and other.headers["x-should-retry"] == "false"
    assert other.json() == {"detail": "Idempotency-Key 'k1' was used with another request within 24 h: use a new "
                            "key for a new request"}  # fmt: skip
    # another tenant's same key is its own
    [theirs] = post_all(app, [(VIDEO, BODY, api["globex"] | {"Idempotency-Key": "k1"})])
    assert theirs.status_code == 201 and theirs.json()["id"] != first.json()["id"]
    assert jobs_of(db, "acme") == 1 and jobs_of(db, "globex") == 1


def test_a_failed_create_keeps_nothing_and_a_key_expires_after_24_h(api: dict[str, Any]) -> None:
    app, db = api["app"], api["store"]
    key = api["acme"] | {"Idempotency-Key": "k2"}
    [bad] = post_all(app, [(VIDEO, BODY | {"resolution": "8k"}, key)])
    assert bad.status_code == 400  # a refused create made nothing: the key is free for the corrected request
    [good] = post_all(app, [(VIDEO, BODY | {"resolution": "8k"}, key)])
    assert good.status_code == 400
    [good] = post_all(app, [(VIDEO, BODY, key | {"Idempotency-Key": "k3"})])
    assert good.status_code == 201
    with db.session.begin() as s:  # a day later
        s.execute(update(IdempotencyRecord).values(expires_at=now_utc() - timedelta(seconds=1)))
    [later] = post_all(app, [(VIDEO, BODY, key | {"Idempotency-Key": "k3"})])
    assert later.status_code == 201 and later.json()["id"] != good.json()["id"]
    assert "Idempotent-Replayed" not in later.headers and jobs_of(db, "acme") == 2
    assert idempotency.purge(db) == 0  # the expired row was taken over in place, not left behind


@pytest.mark.parametrize(
    ("path", "body"),
    [(VIDEO, BODY), ("/v1/videos", {"prompt": "a red circle", "seconds": "4", "size": "64x64", "model": "sora-2"})],
)
def test_a_key_over_255_characters_is_a_400_in_the_apis_shape(api: dict[str, Any], path: str, body: Any) -> None:
    [answer] = post_all(api["app"], [(path, body, api["acme"] | {"Idempotency-Key": "k" * 256})])
    assert answer.status_code == 400
    message = "Idempotency-Key must be at most 255 characters, got 256: 'kkkkkkkkkkkkkkkkkkkk'..."
    if path == VIDEO:
        assert answer.json() == {"detail": message}
    else:
        assert answer.json()["error"] == {"message": message, "type": "invalid_request_error",
                                          "param": "Idempotency-Key", "code": None}  # fmt: skip
    # the API key is checked first
    [unknown] = post_all(api["app"], [(path, body, {"Authorization": "Bearer nope", "Idempotency-Key": "k" * 256})])
    assert unknown.status_code == 401
    [ok] = post_all(api["app"], [(path, body, api["acme"] | {"Idempotency-Key": "k" * 255})])
    assert ok.status_code in (200, 201), ok.text
    assert jobs_of(api["store"], "acme") == 1


def test_an_sdk_retry_of_the_same_body_is_deduplicated(api: dict[str, Any]) -> None:
    """No key, but the Stainless SDKs' x-stainless-retry-count: a retry (n >= 1) of a body gets the first
    attempt's answer; a new first attempt (0) of the same body is a new request, as the SDK means it."""
    app, db, auth = api["app"], api["store"], api["acme"]
    first, retry = post_all(app, [(VIDEO, BODY, auth | {"x-stainless-retry-count": "0"})])[0], None
    retry = post_all(app, [(VIDEO, BODY, auth | {"x-stainless-retry-count": "1"})])[0]
    assert first.status_code == retry.status_code == 201 and retry.json()["id"] == first.json()["id"]
    assert retry.headers["Idempotent-Replayed"] == "true" and jobs_of(db, "acme") == 1
    anew = post_all(app, [(VIDEO, BODY, auth | {"x-stainless-retry-count": "0"})])[0]
    assert anew.json()["id"] != first.json()["id"] and jobs_of(db, "acme") == 2
    other = post_all(app, [(VIDEO, BODY | {"prompt": "a blue square"}, auth | {"x-stainless-retry-count": "2"})])[0]
    assert other.status_code == 201 and jobs_of(db, "acme") == 3  # a retry of a body never seen: it runs
    # concurrent retries of one body: one job
    answers = post_all(app, [(VIDEO, BODY | {"prompt": "green"}, auth | {"x-stainless-retry-count": "1"})] * 20)
    assert len({a.json()["id"] for a in answers}) == 1 and jobs_of(db, "acme") == 4


def test_openai_multipart_retries_with_new_boundaries_are_one_request(api: dict[str, Any]) -> None:
    transport = httpx.ASGITransport(app=api["app"])

    async def send(n: int, prompt: str = "a red circle") -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.post(
                "/v1/videos",
                data={"prompt": prompt, "seconds": "4", "size": "64x64", "model": "sora-2"},
                files={"input_reference": ("a.png", _png(), "image/png")},
                headers=api["acme"] | {"x-stainless-retry-count": str(n)},
            )

    async def run() -> list[httpx.Response]:
        return [await send(0), await send(1), await send(2), await send(1, "a blue square")]

    first, retry, again, other = asyncio.run(run())
    assert first.status_code == 200, first.text
    assert retry.json()["id"] == again.json()["id"] == first.json()["id"] != other.json()["id"]
    assert jobs_of(api["store"], "acme") == 2


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_the_lumaai_sdks_own_retry_makes_one_job(tmp_path: Path) -> None:
    """The first POST reaches the server and creates, and its answer is lost on the way back (a read timeout): the
    SDK retries by itself, with no key, and gets that job."""
    db = Store(f"sqlite:///{tmp_path / 'noor.db'}")
    tenants.create_tenant(db, "acme", credits_cents=1000)
    app = create_app(db, AssetStore(str(tmp_path / "assets")), ApiConfig(secret=b"test-secret"))
    lost: list[httpx.Response] = []

    def lose_the_first_answer(response: httpx.Response) -> None:
        if response.request.method == "POST" and not lost:
            response.read()
            lost.append(response)
            raise httpx.ReadTimeout("the answer was lost", request=response.request)

    try:
        with on_loopback(app) as port, httpx.Client(event_hooks={"response": [lose_the_first_answer]}) as http:
            client = lumaai.LumaAI(
                auth_token=tenants.create_key(db, "acme"),
                base_url=f"http://127.0.0.1:{port}/dream-machine/v1",
                http_client=http,
                max_retries=2,
            )
            g = client.generations.create(prompt="a red circle moves to the left", model="ray-2")
            assert len(lost) == 1 and lost[0].status_code == 201
            assert lost[0].json()["id"] == g.id
            assert jobs_of(db, "acme") == 1
    finally:
        db.close()


def test_the_openai_sdks_own_retry_of_a_multipart_create_makes_one_job(tmp_path: Path) -> None:
    """The same with the openai SDK, whose create with a reference image is multipart: a new boundary each try."""
    import warnings

    import httpx2
    import openai

    db = Store(f"sqlite:///{tmp_path / 'noor.db'}")
    tenants.create_tenant(db, "acme", credits_cents=1000)
    app = create_app(db, AssetStore(str(tmp_path / "assets")), ApiConfig(secret=b"test-secret"))
    lost: list[httpx2.Response] = []

    def lose_the_first_answer(response: httpx2.Response) -> None:
        if response.request.method == "POST" and not lost:
            response.read()
            lost.append(response)
            raise httpx2.ReadTimeout("the answer was lost", request=response.request)

    try:
        with on_loopback(app) as port, httpx2.Client(event_hooks={"response": [lose_the_first_answer]}) as http:
            client = openai.OpenAI(
                api_key=tenants.create_key(db, "acme"), base_url=f"http://127.0.0.1:{port}/v1", http_client=http
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # the SDK marks the Sora endpoints deprecated
                video = client.videos.create(
                    prompt="a red circle", seconds="4", size="64x64", input_reference=("a.png", _png(), "image/png")
                )
            assert len(lost) == 1 and lost[0].json()["id"] == video.id
            assert lost[0].request.headers["content-type"].startswith("multipart/form-data")
            assert jobs_of(db, "acme") == 1
    finally:
        db.close()


def test_world_sessions_are_idempotent(tmp_path: Path) -> None:
    with world_server(tmp_path) as w:
        body = {"prompt": "a city at night", "model": "terrain-double", "fps": 20, "seed": 1}
        headers = w.auth | {"Idempotency-Key": "play-1"}
        first = w.client.post("/v1/worlds/sessions", json=body, headers=headers)
        again = w.client.post("/v1/worlds/sessions", json=body, headers=headers)
        assert first.status_code == again.status_code == 201 and again.json() == first.json()
        other = w.client.post("/v1/worlds/sessions", json=body | {"seed": 2}, headers=headers)
        assert other.status_code == 409 and "Idempotency-Key 'play-1'" in other.json()["detail"]
        long = w.client.post("/v1/worlds/sessions", json=body, headers=w.auth | {"Idempotency-Key": "x" * 300})
        assert long.status_code == 400 and long.json()["detail"].startswith("Idempotency-Key must be at most 255")
        listed = w.client.get("/v1/worlds/sessions", headers=w.auth).json()["data"]
        assert [s["id"] for s in listed] == [first.json()["id"]]
        # a route of the router that is not a create takes no notice of the header
        token = f"/v1/worlds/sessions/{first.json()['id']}/token"
        assert w.client.post(token, headers=w.auth | {"Idempotency-Key": "x" * 300}).status_code == 200


def test_a_repeat_while_the_first_runs_waits_for_its_answer(store: Store) -> None:  # noqa: F811
    """The claim's states under the HTTP glue: pending (a repeat waits or gets a 409), answered, taken over."""
    fp = idempotency.fingerprint("POST", "/x", b"{}")
    claimed = idempotency.claim(store, "acme", "k", fp)
    assert isinstance(claimed, idempotency.Claimed)
    assert isinstance(idempotency.claim(store, "acme", "k", fp), idempotency.InProgress)
    assert isinstance(idempotency.claim(store, "acme", "k", "other"), idempotency.Mismatch)
    answer = idempotency.Answer(201, "application/json", json.dumps({"id": "g1"}).encode())
    assert idempotency.finish(store, claimed, answer)
    assert idempotency.claim(store, "acme", "k", fp) == idempotency.Replay(answer)
    # a claim whose request died is taken over after PENDING_TIMEOUT, and the dead one can no longer answer
    dead = idempotency.claim(store, "acme", "k2", fp)
    assert isinstance(dead, idempotency.Claimed)
    with store.session.begin() as s:
        s.execute(update(IdempotencyRecord).values(created_at=now_utc() - idempotency.PENDING_TIMEOUT))
    alive = idempotency.claim(store, "acme", "k2", fp)
    assert isinstance(alive, idempotency.Claimed) and alive.owner != dead.owner
    assert not idempotency.finish(store, dead, answer)
