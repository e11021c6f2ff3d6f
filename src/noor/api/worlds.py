"""World sessions over HTTP and a WebSocket: /v1/worlds/sessions (the protocol: docs/world.md, "Sessions").

POST opens a session (queued or active at once; 429 with Retry-After when the host's slots and queue are
full) and answers with a short-lived token; the socket at `stream_url` takes that token as its first message,
then the player's actions as JSON text, and sends each frame as one binary message (JPEG, or PNG if asked)
followed by a status message. The session host (`noor.runtime.interactive`) runs the worlds; these routes
only check, record and relay.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from noor.api.app import Context, Ctx, Tenant, keyframes_for, public_base, refused, screen
from noor.api.errors import Error, responses
from noor.api.idempotency import IDEMPOTENT, IdempotentRoute, conflict
from noor.api.requests import RequestError
from noor.api.schemas import ImageKeyframe
from noor.config import settings
from noor.engine import registry
from noor.engine.interactive import UnknownWorldModel, WorldSpec
from noor.jobs import money, sessions, tenants
from noor.jobs.limits import LimitExceeded
from noor.jobs.planes import RegionUnavailable
from noor.jobs.sessions import EndReason, SessionNotFound, WorldSession
from noor.runtime.interactive import HostConfig, LiveSession, QueueFull, SessionHost, Sink, WorldRunner

PREFIX = "/v1/worlds/sessions"
DEFAULT_MODEL = "world-tiny"
MAX_PROMPT_CHARS = 500
MAX_SECONDS = 3600
AUTH_TIMEOUT_S = 5.0  # the socket's first message, the token, must come within this
MAX_MESSAGES_PER_S = 100
IMAGE_FORMATS = ("jpeg", "png")


class WorldSessionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(max_length=100_000, description="what the world is (1..500 characters, not blank)")
    model: str = Field(DEFAULT_MODEL, max_length=64, description="an interactive world model (GET /v1/worlds/models)")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="default: a random one")
    start_image_url: str | None = Field(None, max_length=4096, description="image-to-world: the first frame")
    fps: int | None = Field(None, description="ticks a second, 1..the model's max_fps; default: its default_fps")
    max_seconds: int = Field(300, description=f"the session ends after this many active seconds, 1..{MAX_SECONDS}")


class WorldSessionOut(BaseModel):
    id: str
    object: str = "world.session"
    state: str
    model: str
    prompt: str
    seed: int
    fps: int
    max_seconds: int
    region: str | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    frames: int
    seconds: float
    cost: float = Field(description="cents: the active seconds at the price of a second of a worker slot")
    queue_position: int | None = None
    end_reason: str | None
    failure_reason: str | None
    stream_url: str
    token: str | None = Field(None, description="only in the POST's answer: the socket's first message carries it")
    token_expires_at: datetime


class WorldSessionList(BaseModel):
    object: str = "list"
    data: list[WorldSessionOut]


class WorldModel(BaseModel):
    id: str
    description: str
    actions: list[str]
    width: int
    height: int
    default_fps: int
    max_fps: int


router = APIRouter(prefix="/v1/worlds", responses=responses(Error, 401), route_class=IdempotentRoute)


def host_of(app: FastAPI) -> SessionHost:
    host: SessionHost = app.state.world_host
    return host


def _bad(field: str, value: Any, why: str) -> HTTPException:
    return HTTPException(400, f"{field}: {why}, got {value!r}")


def stream_url(request: Request, ctx: Context, session_id: str) -> str:
    base = public_base(request, ctx)
    scheme, _, rest = base.partition("://")
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}{PREFIX}/{session_id}/stream"


def session_out(request: Request, ctx: Context, row: WorldSession, token: str | None = None) -> WorldSessionOut:
    host = host_of(request.app)
    live = host.live(row.id)
    frames, seconds, cost = row.frames, row.seconds, row.cost_cents
    if live is not None and live.state == "active":  # fresher than the record (written every second)
        frames, seconds = max(frames, live.frames), max(seconds, round(live.seconds, 3))
        cost = max(cost, money.cents(live.cost_microcents))
    return WorldSessionOut(
        id=row.id,
        state=row.state,
        model=row.model,
        prompt=row.prompt,
        seed=row.seed,
        fps=row.fps,
        max_seconds=row.max_seconds,
        region=row.region,
        created_at=row.created_at,
        started_at=row.started_at,
        ended_at=row.ended_at,
        frames=frames,
        seconds=seconds,
        cost=cost,
        queue_position=host.position(row.id) if row.state == "queued" else None,
        end_reason=row.end_reason,
        failure_reason=row.failure_reason,
        stream_url=stream_url(request, ctx, row.id),
        token=token,
        token_expires_at=row.token_expires_at,
    )


def _check(body: WorldSessionCreate) -> tuple[WorldSpec, int]:
    """The model's spec and the fps, or a 400 naming the field and the value."""
    if not body.prompt.strip():
        raise _bad("prompt", body.prompt, "must not be blank")
    if len(body.prompt) > MAX_PROMPT_CHARS:
        raise _bad("prompt", f"{body.prompt[:20]}…", f"must be at most {MAX_PROMPT_CHARS} characters")
    try:
        spec = registry.get_world(body.model)
    except UnknownWorldModel as err:
        raise HTTPException(400, str(err)) from err
    fps = spec.default_fps if body.fps is None else body.fps
    if not 1 <= fps <= spec.max_fps:
        raise _bad("fps", body.fps, f"must be in 1..{spec.max_fps} for {spec.id}")
    if not 1 <= body.max_seconds <= MAX_SECONDS:
        raise _bad("max_seconds", body.max_seconds, f"must be in 1..{MAX_SECONDS}")
    return spec, fps


def _check_region(host: SessionHost, tenant: tenants.Tenant) -> None:
    """403 when the host's runner has no slot in the tenant's regions at all (busy slots there: the queue)."""
    why = host.runner.refuse(tenant.regions)
    if why is not None:
        raise HTTPException(403, f"tenant {tenant.name!r} may run only in {', '.join(tenant.regions or [])}; {why}")


def _check_credits(ctx: Context, host: SessionHost, tenant: tenants.Tenant) -> None:
    account = tenants.get_tenant(ctx.store, tenant.name)  # a balance is read fresh, not from the key cache
    price = host.price_per_s_microcents
    if account.metered and price and account.credits_microcents < price:
        raise HTTPException(
            402,
            f"Insufficient credits: a second of a world session costs {money.usd(price)}, the balance is "
            f"{money.usd(account.credits_microcents)}",
        )


def _start_image(request: Request, ctx: Context, tenant: tenants.Tenant, url: str) -> tuple[str, np.ndarray]:
    """The start image through the keyframe path (this server's asset links, or a fetch through the SSRF guard):
    its asset key and its pixels (H, W, 3) uint8."""
    try:
        key = keyframes_for(request, ctx, tenant).resolve(ImageKeyframe(type="image", url=url), "frame0")["asset"]
        data = ctx.assets.get(key)
        with Image.open(io.BytesIO(data)) as image:
            pixels = np.asarray(image.convert("RGB"))
    except RequestError as err:
        raise HTTPException(err.status, f"start_image_url: {err.detail}") from err
    except (UnidentifiedImageError, OSError) as err:
        raise _bad("start_image_url", url, f"is not an image ({err})") from err
    if min(pixels.shape[:2]) < 16:
        raise _bad("start_image_url", url, f"must be at least 16x16 pixels, is {pixels.shape[1]}x{pixels.shape[0]}")
    return key, pixels


CREATE_ERRORS = responses(Error, 400, 402, 404, 413, 429) | {403: {"model": Error, "description": "Not in this region"}}
CREATE_ERRORS |= conflict(Error)


@router.post(
    "/sessions", status_code=201, response_model=WorldSessionOut, responses=CREATE_ERRORS, openapi_extra=IDEMPOTENT
)
def create_session(body: WorldSessionCreate, request: Request, tenant: Tenant, ctx: Ctx) -> WorldSessionOut:
    host = host_of(request.app)
    # 1. the request, the tenant's region and credits
    spec, fps = _check(body)
    screen(ctx, tenant.name, {"prompt": body.prompt})  # moderation (docs/trust.md)
    _check_region(host, tenant)
    _check_credits(ctx, host, tenant)
    # 2. the start image, fetched once
    key, pixels = _start_image(request, ctx, tenant, body.start_image_url) if body.start_image_url else (None, None)
    seed = secrets.randbelow(2**31) if body.seed is None else body.seed
    # 3. the record, in a slot or in the queue
    created: dict[str, Any] = {}

    def create() -> WorldSession:
        row, created["token"] = sessions.create(
            ctx.store,
            tenant=tenant.name,
            model=spec.id,
            prompt=body.prompt,
            seed=seed,
            fps=fps,
            max_seconds=body.max_seconds,
            region=host.runner.region,  # under Ray: the node's, once it has one (sessions.activate)
            start_image_key=key,
            worker=host.config.name,
        )
        return row

    try:
        live = host.admit(create, spec, pixels, tenant.regions)
    except (QueueFull, LimitExceeded) as err:  # the host's slots and queue, or the tenant's max_concurrent
        raise HTTPException(429, str(err), headers={"Retry-After": str(err.retry_after_s)}) from err
    return session_out(request, ctx, sessions.get(ctx.store, tenant.name, live.id), created["token"])


@router.get("/sessions", response_model=WorldSessionList)
def list_sessions(
    request: Request, tenant: Tenant, ctx: Ctx, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> WorldSessionList:
    """The tenant's sessions, newest first."""
    rows = sessions.list_for(ctx.store, tenant.name, limit)
    return WorldSessionList(data=[session_out(request, ctx, row) for row in rows])


def _own(ctx: Context, tenant: tenants.Tenant, session_id: str) -> WorldSession:
    try:
        return sessions.get(ctx.store, tenant.name, session_id)
    except SessionNotFound as err:
        try:  # whose it is, for the audit log: a plane that is down does not turn this tenant's 404 into a 503
            other = sessions.by_id(ctx.store, session_id)
        except RegionUnavailable:
            other = None
        refused(ctx, tenant.name, "world_session", session_id, other.tenant if other else None)
        raise HTTPException(404, "World session not found") from err


@router.get("/sessions/{session_id}", response_model=WorldSessionOut, responses=responses(Error, 404))
def get_session(session_id: str, request: Request, tenant: Tenant, ctx: Ctx) -> WorldSessionOut:
    return session_out(request, ctx, _own(ctx, tenant, session_id))


TOKEN_ERRORS = responses(Error, 404) | {409: {"model": Error, "description": "The session has ended"}}


@router.post("/sessions/{session_id}/token", response_model=WorldSessionOut, responses=TOKEN_ERRORS)
def new_token(session_id: str, request: Request, tenant: Tenant, ctx: Ctx) -> WorldSessionOut:
    """A fresh socket token for the tenant's own live session (a reloaded page resumes its session after the
    POST's token expired); it replaces the one before. 409 once the session has ended."""
    row = _own(ctx, tenant, session_id)
    try:
        row, token = sessions.new_token(ctx.store, tenant.name, row.id)
    except SessionNotFound as err:  # it is this tenant's (read above): it ended
        raise HTTPException(409, f"World session {session_id} has ended: no socket opens for it") from err
    return session_out(request, ctx, row, token)


@router.delete("/sessions/{session_id}", status_code=204, responses=responses(Error, 404))
def delete_session(session_id: str, request: Request, tenant: Tenant, ctx: Ctx) -> Response:
    """End the session (end_reason "client"); one that has already ended stays as it ended."""
    row = _own(ctx, tenant, session_id)
    if row.is_live:
        host_of(request.app).end(row.id, EndReason.CLIENT)
    return Response(status_code=204)


@router.get("/models", response_model=list[WorldModel])
def world_models(tenant: Tenant) -> list[WorldModel]:
    """The interactive world models a session may name."""
    return [
        WorldModel(
            id=s.id,
            description=s.description,
            actions=list(s.actions),
            width=s.width,
            height=s.height,
            default_fps=s.default_fps,
            max_fps=s.max_fps,
        )
        for s in registry.worlds()
    ]


# --- the socket --------------------------------------------------------------------------------------------


def _reason(text: str) -> str:
    """A close reason fits 123 bytes of UTF-8 (RFC 6455)."""
    data = text.encode()
    return text if len(data) <= 123 else data[:120].decode(errors="ignore") + "..."


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    await websocket.close(code, _reason(reason))


def _auth(text: str | None) -> tuple[str, str]:
    """(token, format) from the socket's first message, or ValueError naming what is wrong."""
    if text is None:
        raise ValueError('the first message must be JSON text {"token": "..."}, got a binary message')
    try:
        message = json.loads(text)
    except ValueError:
        raise ValueError(f'the first message must be JSON {{"token": "..."}}, got {text[:40]!r}') from None
    if not isinstance(message, dict) or not isinstance(message.get("token"), str):
        raise ValueError(f'the first message must be {{"token": "..."}}, got {text[:40]!r}')
    unknown = sorted(set(message) - {"token", "format"})
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} in the first message (token, format)")
    fmt = message.get("format", "jpeg")
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"format must be jpeg or png, got {fmt!r}")
    return message["token"], str(fmt)


def _action(text: str, spec: WorldSpec) -> tuple[str | None, dict[str, Any] | None]:
    """(the action, None) or (None, an error message for the client)."""
    try:
        message = json.loads(text)
    except ValueError:
        return None, {"type": "error", "code": "bad_message", "message": f"message must be JSON, got {text[:60]!r}"}
    if not isinstance(message, dict) or "action" not in message:
        return None, {
            "type": "error",
            "code": "bad_message",
            "message": f'message must be {{"action": "..."}}, got {text[:60]!r}',
        }
    unknown = sorted(set(message) - {"action"})
    if unknown:
        return None, {
            "type": "error",
            "code": "bad_message",
            "message": f"unknown field {unknown[0]!r} in {text[:60]!r}",
        }
    action = message["action"]
    if not isinstance(action, str) or action not in spec.actions:
        return None, {
            "type": "error",
            "code": "bad_action",
            "message": f"action must be one of {', '.join(spec.actions)}, got {action!r}",
        }
    return action, None


async def _send(websocket: WebSocket, sink: Sink) -> None:
    """Everything the session and the reader put in the sink, in order, until a close or the client's going."""
    while True:
        item = await sink.queue.get()
        sink.taken(item)
        kind = item[0]
        if kind == "gone":
            return
        if kind == "close":
            await _close(websocket, item[1], item[2])
            return
        if kind == "bytes":
            await websocket.send_bytes(item[1])
        else:
            await websocket.send_text(json.dumps(item[1], ensure_ascii=False))


async def _read(websocket: WebSocket, live: LiveSession, sink: Sink) -> None:
    """The client's messages: actions into the session, errors and closes into the sink."""
    window: deque[float] = deque()  # arrival times of the last second's messages
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            now = time.monotonic()
            window.append(now)
            while window and now - window[0] >= 1.0:
                window.popleft()
            if len(window) > MAX_MESSAGES_PER_S:
                sink.queue.put_nowait(("close", 1008, f"more than {MAX_MESSAGES_PER_S} messages a second"))
                return
            if message.get("text") is None:
                sink.queue.put_nowait(
                    ("close", 1003, 'binary messages are not accepted: send JSON text {"action": ...}')
                )
                return
            action, error = _action(message["text"], live.spec)
            if action is not None:
                live.set_action(action, now)
            else:
                live.touch()
                sink.queue.put_nowait(("json", error))
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
    sink.queue.put_nowait(("gone",))


@router.websocket("/sessions/{session_id}/stream")
async def stream(websocket: WebSocket, session_id: str) -> None:
    await websocket.accept()
    ctx: Context = websocket.app.state.ctx
    host = host_of(websocket.app)
    # 1. the token, as the first message, within 5 s
    try:
        first = await asyncio.wait_for(websocket.receive(), AUTH_TIMEOUT_S)
    except TimeoutError:
        await _close(websocket, 4401, f'no token within {AUTH_TIMEOUT_S:g} s: send {{"token": ...}} first')
        return
    if first["type"] == "websocket.disconnect":
        return
    try:
        token, fmt = _auth(first.get("text"))
    except ValueError as err:
        await _close(websocket, 4401, str(err))
        return
    try:
        record = await run_in_threadpool(sessions.check_token, ctx.store, session_id, token)
    except RegionUnavailable as err:  # the session's region's database is down: try again later (RFC 6455's 1013)
        await _close(websocket, 1013, str(err))
        return
    if record is None:
        await _close(websocket, 4401, "invalid or expired token for this session")
        return
    # 2. the session, if it is still live here
    live = host.live(session_id)
    if live is None or live.end_reason is not None:
        fresh = await run_in_threadpool(sessions.by_id, ctx.store, session_id)
        reason = fresh.end_reason if fresh is not None and fresh.end_reason else "server_restart"
        await _close(websocket, 4410, f"session ended: {reason}")
        return
    sink = Sink(asyncio.get_running_loop(), fmt)
    host.attach(live, sink)
    # 3. frames out, actions in, until either side ends it
    reader = asyncio.create_task(_read(websocket, live, sink))
    try:
        await _send(websocket, sink)
    except (WebSocketDisconnect, RuntimeError, OSError):  # the client went (uvicorn's ClientDisconnected is an OSError)
        pass
    finally:
        live.detach(sink)
        reader.cancel()


# --- the host in the app's life ---------------------------------------------------------------------------


def host_config(chip: str, markup: float) -> HostConfig:
    cfg = settings()
    config = HostConfig(
        slots=cfg.world_slots,
        queue=cfg.world_queue,
        idle_s=cfg.world_idle_s,
        region=cfg.region,
        chip=chip,
        markup=markup,
        # a world's frames share the CPU with the server's sockets: unless NOOR_THREADS says otherwise, torch gets
        # all cores but one (on 2 cores, 1 thread: p95 action-to-frame 68 ms against 153 ms with 2,
        # benchmarks/world_tiny.py)
        threads=cfg.threads or max(1, (os.cpu_count() or 2) - 1),
    )
    return dataclasses.replace(config, name=cfg.world_host) if cfg.world_host else config


def install(app: FastAPI, ctx: Context, config: HostConfig | None = None) -> None:
    """Mount the routes and make the session host (started and stopped with the app: `lifespan`)."""
    app.include_router(router)
    app.state.world_host = SessionHost(ctx.store, config or host_config(ctx.config.chip, ctx.config.markup))


def run_worlds_on(app: FastAPI, runner: WorldRunner, config: HostConfig | None = None) -> SessionHost:
    """Sessions' worlds run where `runner` puts them (`noor serve --ray`: `RayWorlds`); before the app starts."""
    ctx: Context = app.state.ctx
    host = SessionHost(ctx.store, config or host_config(ctx.config.chip, ctx.config.markup), runner)
    app.state.world_host = host
    return host


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    host = host_of(app)
    await run_in_threadpool(host.start)  # ends what a dead server left live
    try:
        yield
    finally:
        await run_in_threadpool(host.close)
