"""The FastAPI app: Dream Machine routes at /dream-machine/v1 and at the root, uploads, assets, health."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

import httpx
from fastapi import APIRouter, Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from noor.api import concepts, metrics
from noor.api.errors import Error, Unprocessable, error_response, is_openai, responses
from noor.api.gate import RequestGate
from noor.api.idempotency import IDEMPOTENT, IdempotentRoute, conflict
from noor.api.pricing import quote
from noor.api.requests import (
    DEFAULT_ALIASES,
    Keyframes,
    RequestError,
    Resolved,
    parse_url,
    resolve_audio,
    resolve_image,
    resolve_modify,
    resolve_reframe,
    resolve_upscale,
    resolve_video,
)
from noor.api.schemas import (
    AddAudio,
    Credits,
    GenerationList,
    GenerationOut,
    ImageCreate,
    ModifyVideo,
    Ping,
    ReframeImage,
    ReframeVideo,
    Upscale,
    VideoCreate,
)
from noor.api.uploads import file_suffix, image_suffix
from noor.jobs import tenants
from noor.jobs.assets import AssetNotFound, AssetStore, asset_key, generation_of, sign, verify
from noor.jobs.generation import Generation, now_utc
from noor.jobs.limits import InsufficientCredits, LimitExceeded
from noor.jobs.planes import RegionUnavailable
from noor.jobs.store import NotFound, Store
from noor.runtime.ssrf import Busy, FetchError, Guard, SSRFError
from noor.trust import audit, moderation

DM_PREFIX = "/dream-machine/v1"
LINK_TTL_S = 7 * 24 * 3600
T = TypeVar("T")
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_JSON_BYTES = 256 * 1024
WORKER_FILE_BYTES = 2 * 1024**3


@dataclass
class ApiConfig:
    secret: bytes  # signs asset links
    aliases: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ALIASES))
    guard: Guard = field(default_factory=Guard)  # callback and keyframe URLs must not point inside
    # how clients reach this server (NOOR_PUBLIC_URL): the base of signed links. Unset: the address the
    # request's connection arrived on, never the request's Host header (which the client chooses)
    public_url: str | None = None
    chip: str = "cpu-local"  # what the workers run on: the perf model prices each generation for it
    markup: float = 1.0  # price = predicted cost at the chip's $/hour x markup


def signed_link(base_url: str, secret: bytes, key: str, ttl_s: int = 7 * 24 * 3600) -> str:
    expires = int(time.time()) + ttl_s
    return f"{base_url.rstrip('/')}/assets/{key}?expires={expires}&sig={sign(secret, key, expires)}"


def render_payload(base_url: str, secret: bytes, payload: dict[str, Any]) -> dict[str, Any]:
    """An outbox snapshot as the Generation JSON a tenant sees (asset keys become signed links)."""
    assets = payload.get("assets")
    if assets:
        payload = payload | {"assets": {k: signed_link(base_url, secret, v) if v else None for k, v in assets.items()}}
    return payload


def check_callback(ctx: Context, url: str | None) -> None:
    if url is None:
        return
    parse_url(url, "callback_url")
    try:
        ctx.config.guard.resolve(url)
    except SSRFError as err:
        raise HTTPException(400, f"callback_url: {err}") from err


def public_base(request: Request, ctx: Context) -> str:
    """This server's base URL for links: the configured public URL, else the address the connection arrived on."""
    if ctx.config.public_url:
        return ctx.config.public_url.rstrip("/")
    host, port = request.scope.get("server") or ("127.0.0.1", 80)
    host = f"[{host}]" if ":" in host else host
    default = {"http": 80, "https": 443}.get(request.url.scheme)
    return f"{request.url.scheme}://{host}" + ("" if port == default else f":{port}")


def keyframes_for(request: Request, ctx: Context, tenant: tenants.Tenant) -> Keyframes:
    """Keyframe and source URLs on this server are its assets; any other URL is fetched once through the SSRF
    guard (at most MAX_UPLOAD_BYTES): a keyframe must be an image, an edit's or a reframe's source an image or an
    MP4 video."""
    own_hosts = {request.url.netloc, urlsplit(public_base(request, ctx)).netloc}

    def fetch(url: str, what: str = "keyframe url", suffix_of: Callable[[bytes, str], str] = image_suffix) -> str:
        try:
            data = ctx.config.guard.fetch(url, MAX_UPLOAD_BYTES, tenant=tenant.name)
        except Busy as err:  # slow peers may hold only a few of the request threads (runtime/ssrf.py)
            raise RequestError(429, f"{what}: {err}; retry when one has finished") from err
        except SSRFError as err:
            raise RequestError(400, f"{what}: {err}", field=what) from err
        except (FetchError, httpx.HTTPError) as err:
            raise RequestError(
                400, f"{what} {url!r} could not be fetched: {err or type(err).__name__}", field=what
            ) from err
        except ValueError as err:  # a URL the guard could not parse
            raise RequestError(400, f"{what}: {url!r} is not a valid URL: {err}", field=what) from err
        suffix = suffix_of(data, f"{what} {url!r}")
        key = asset_key(tenant.name, "uploads", f"{uuid.uuid4().hex}{suffix}")
        return ctx.assets.put_for(tenant.regions, key, data)

    def fetch_source(url: str) -> str:
        return fetch(url, "media.url", file_suffix)

    return Keyframes(tenant.name, ctx.store, own_hosts, fetch, ctx.assets.exists, fetch_source, ctx.assets.get)


class KeyCache:
    """Recently seen keys -> their tenant, for `ttl_s` seconds, so a poll does not cost a key lookup.

    A revoked key keeps working for at most `ttl_s`; unknown keys are never cached. Credits are not
    read from here (GET /credits asks the store)."""

    def __init__(self, ttl_s: float = 5.0, size: int = 10_000):
        self.ttl_s, self.size = ttl_s, size
        self._seen: dict[str, tuple[float, tenants.Tenant]] = {}

    def cached(self, key: str) -> tenants.Tenant | None:
        hit = self._seen.get(key)
        return hit[1] if hit is not None and time.monotonic() - hit[0] < self.ttl_s else None

    def tenant(self, store: Store, key: str) -> tenants.Tenant | None:
        now = time.monotonic()
        hit = self.cached(key)
        if hit is not None:
            return hit
        tenant = tenants.authenticate(store, key)
        if tenant is not None:
            if len(self._seen) >= self.size:
                self._seen.clear()
            self._seen[key] = (now, tenant)
        return tenant


@dataclass
class Context:
    store: Store
    assets: AssetStore
    config: ApiConfig
    keys: KeyCache = field(default_factory=KeyCache)


def _bearer(request: Request) -> str | None:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" and key.strip() else None


def tenant_of(request: Request) -> tenants.Tenant:
    """The caller's tenant, or 401 (blocking: for sync code)."""
    return _tenant_for(request.app.state.ctx, _bearer(request))


def _tenant_for(ctx: Context, key: str | None) -> tenants.Tenant:
    tenant = ctx.keys.tenant(ctx.store, key) if key else None
    if tenant is None:
        raise HTTPException(401, "Invalid API key is provided")
    return tenant


bearer_scheme = HTTPBearer(auto_error=False, description="an API key: `noor keys create`")


async def current_tenant(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
) -> tenants.Tenant:
    """The dependency. Async, so a poll whose key is cached costs no thread hop: FastAPI runs a sync
    dependency in its thread pool, and on a loaded server each hop costs as much as the DB read.
    (`credentials` declares the bearer scheme in the OpenAPI document.)"""
    ctx: Context = request.app.state.ctx
    key = credentials.credentials.strip() if credentials is not None and credentials.credentials.strip() else None
    tenant = ctx.keys.cached(key) if key else None
    if tenant is None:
        tenant = await run_in_threadpool(_tenant_for, ctx, key)
    return tenant


Tenant = Annotated[tenants.Tenant, Depends(current_tenant)]


async def tenant_or_none(request: Request) -> tenants.Tenant | None:
    """The caller's tenant if its key is valid, else None (for what runs before a route's own 401)."""
    ctx: Context = request.app.state.ctx
    key = _bearer(request)
    if key is None:
        return None
    return ctx.keys.cached(key) or await run_in_threadpool(ctx.keys.tenant, ctx.store, key)


async def read(store: Store, fn: Callable[..., T], *args: Any) -> T:
    """Run a store read from async code: in place where the store says its reads are local and short, else
    in the thread pool."""
    return fn(*args) if store.reads_inline else await run_in_threadpool(fn, *args)


async def ctx_of(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


Ctx = Annotated[Context, Depends(ctx_of)]


def refused(ctx: Context, tenant: str, kind: str, resource_id: str, owner: str | None) -> None:
    """Put a 404 that hid another tenant's resource in the audit log (`access.refused`, filed under the tenant
    that asked). A 404 for what does not exist, or is the caller's own, is no event."""
    if owner is not None and owner != tenant:
        audit.record("access.refused", store=ctx.store, tenant=tenant, owner=owner, kind=kind, id=resource_id)


def generation_owner(store: Store, generation_id: str) -> str | None:
    """Whose generation this is, whoever asks (deleted ones too): only on a 404's path, for `refused`."""
    with store.session() as s:
        return s.scalar(select(Generation.tenant).where(Generation.id == generation_id))


def generation_not_found(ctx: Context, tenant: str, generation_id: str, kind: str = "generation") -> None:
    """Audit a generation's 404 when another tenant has it (a blocking read and maybe a write: for sync code)."""
    refused(ctx, tenant, kind, generation_id, generation_owner(ctx.store, generation_id))


def check_limits(ctx: Context, tenant: tenants.Tenant) -> None:
    """429 with Retry-After before anything is stored (the SDKs retry 429 by themselves)."""
    now = now_utc()
    running, recent, oldest = ctx.store.usage(
        tenant.name, now - timedelta(seconds=60), max_active=tenant.max_concurrent, max_recent=tenant.max_per_minute
    )
    if running >= tenant.max_concurrent:
        raise HTTPException(
            429,
            f"Too many concurrent generations: {running} of {tenant.max_concurrent}; wait for one to finish",
            headers={"Retry-After": "5"},
        )
    if recent >= tenant.max_per_minute:
        wait_s = max(1, math.ceil(60 - (now - oldest).total_seconds())) if oldest else 60
        raise HTTPException(
            429,
            f"Rate limit: {tenant.max_per_minute} generations per minute",
            headers={"Retry-After": str(wait_s)},
        )


def asset_url(request: Request, ctx: Context, key: str | None) -> str | None:
    return None if key is None else signed_link(public_base(request, ctx), ctx.config.secret, key, LINK_TTL_S)


def generation_out(request: Request, ctx: Context, g: Generation) -> GenerationOut:
    assets = None
    if g.assets:
        assets = {k: asset_url(request, ctx, v) for k, v in g.assets.items()}
    timing = ctx.store.timing(g) if g.eta_s is not None or g.state not in ("queued", "dreaming") else None
    return GenerationOut.model_validate(
        {
            "id": g.id,
            "generation_type": g.generation_type,
            "state": g.state,
            "failure_reason": g.failure_reason,
            "created_at": g.created_at,
            "assets": assets,
            "model": g.request.get("model") or g.model,
            "request": g.request,
            "eta_s": g.eta_s,
            "wait_s": timing and round(timing.wait_s, 3),
            "run_s": timing and round(timing.run_s, 3),
            "done_in_s": timing and round(timing.left_s, 3),
            "price_cents": g.price_cents,
            "region": g.region,
            "progress": g.progress,
            "warnings": g.task.get("notes", []),
        }
    )


def store_generation(
    request: Request,
    ctx: Context,
    tenant: tenants.Tenant,
    body: VideoCreate | ImageCreate | Upscale | ModifyVideo | ReframeVideo | ReframeImage | AddAudio,
    resolved: Resolved,
    kind: str,
    extra: dict[str, Any] | None = None,
) -> GenerationOut:
    """Queue a resolved request. The echoed request keeps its generation_type (every body has one with a
    default), which the SDKs need to parse it; `kind` is the record's own type, "video" or "image"."""
    g = create_priced(
        ctx,
        tenant=tenant.name,
        model=resolved.model,
        request=body.model_dump(mode="json", exclude_none=True) | (extra or {}),
        task=resolved.task,
        generation_type=kind,
        callback_url=body.callback_url,
    )
    return generation_out(request, ctx, g)


def screen(ctx: Context, tenant: str, task: dict[str, Any]) -> None:
    """Moderation before anything is charged or stored (docs/trust.md): a refusal is a 400 with Luma's message."""
    decision = moderation.screen_task(task, tenant, ctx.assets.get)
    if not decision.allowed:
        audit.record("moderation.refused", store=ctx.store, tenant=tenant, category=decision.category,
                     rule=decision.matched_rule_id)  # fmt: skip
        raise HTTPException(400, moderation.REFUSAL_MESSAGE)


def create_priced(ctx: Context, *, model: str, task: dict[str, Any], **fields: Any) -> Generation:
    """Store a job with its ETA and price; the price comes out of the tenant's credits (402 if short)."""
    screen(ctx, fields["tenant"], task)
    q = quote(model, task, ctx.config.chip, ctx.config.markup)
    if q.parallel is not None:  # the split its k-rank worker runs, chosen by the perf model, kept with the job
        task = task | {"parallel": q.parallel}
    try:
        return ctx.store.create(model=model, task=task, price_microcents=q.price_microcents, eta_s=q.eta_s, **fields)
    except InsufficientCredits as err:
        raise HTTPException(402, str(err)) from err
    except LimitExceeded as err:  # checked again atomically with the create: check_limits alone can be raced
        raise HTTPException(429, str(err), headers={"Retry-After": str(err.retry_after_s)}) from err


router = APIRouter(responses=responses(Error, 401), route_class=IdempotentRoute)
CREATE_ERRORS = responses(Error, 400, 402, 404, 413, 429) | conflict(Error)
CREATE: dict[str, Any] = {  # a route that queues a new generation
    "status_code": 201,
    "response_model": GenerationOut,
    "responses": CREATE_ERRORS,
    "openapi_extra": IDEMPOTENT,
}
FROM_SOURCE: dict[str, Any] = {  # a route that makes a new generation from one of the tenant's (200, as Luma's)
    "response_model": GenerationOut,
    "responses": CREATE_ERRORS,
    "openapi_extra": IDEMPOTENT,
}


@router.post(
    "/generations/video",
    status_code=201,
    response_model=GenerationOut,
    responses=CREATE_ERRORS,
    openapi_extra=IDEMPOTENT,
)
@router.post(
    "/generations", status_code=201, response_model=GenerationOut, include_in_schema=False, openapi_extra=IDEMPOTENT
)
def create_video(body: VideoCreate, request: Request, tenant: Tenant, ctx: Ctx) -> GenerationOut:
    check_limits(ctx, tenant)
    check_callback(ctx, body.callback_url)
    resolved = resolve_video(body, keyframes_for(request, ctx, tenant), ctx.config.aliases)
    return store_generation(request, ctx, tenant, body, resolved, "video")


SYNC_POLL_S = 0.2


def _create_image(body: ImageCreate, request: Request, tenant: tenants.Tenant, ctx: Context) -> GenerationOut:
    check_limits(ctx, tenant)
    check_callback(ctx, body.callback_url)
    resolved = resolve_image(body, ctx.config.aliases)
    return store_generation(request, ctx, tenant, body, resolved, "image")


@router.post(
    "/generations/image",
    status_code=201,
    response_model=GenerationOut,
    responses=CREATE_ERRORS,
    openapi_extra=IDEMPOTENT,
)
async def create_image(body: ImageCreate, request: Request, tenant: Tenant, ctx: Ctx) -> GenerationOut:
    """With `sync`, the answer waits (on the event loop, holding no thread) until the image is done or
    `sync_timeout` has passed, and is the generation as it then stands."""
    out = await run_in_threadpool(_create_image, body, request, tenant, ctx)
    deadline = time.monotonic() + body.sync_timeout
    while body.sync and out.state in ("queued", "dreaming") and time.monotonic() < deadline:
        await asyncio.sleep(SYNC_POLL_S)
        try:
            g = await read(ctx.store, ctx.store.get, tenant.name, out.id)
        except NotFound:  # deleted meanwhile: the answer is what was created
            break
        out = await run_in_threadpool(generation_out, request, ctx, g)
    return out


@router.get("/generations/concepts/list")
def concept_list(tenant: Tenant) -> list[str]:
    """The installed concept keys (`noor concepts add`; docs/api.md "Concepts")."""
    return list(concepts.installed())


@router.get("/generations/camera_motion/list")
def camera_motions(tenant: Tenant) -> list[str]:
    """The legacy prompt phrases for the same concepts: only moves an installed model acts on."""
    return concepts.camera_motions()


@router.post("/generations/video/modify", **CREATE)
def modify_video(body: ModifyVideo, request: Request, tenant: Tenant, ctx: Ctx) -> GenerationOut:
    """An edit of `media.url` (a completed video of yours, an upload, or an external MP4) under the prompt, from the
    `mode`'s noise level (docs/api.md): a new video generation."""
    check_limits(ctx, tenant)
    check_callback(ctx, body.callback_url)
    resolved = resolve_modify(body, keyframes_for(request, ctx, tenant), ctx.config.aliases)
    return store_generation(request, ctx, tenant, body, resolved, "video")


@router.post("/generations/video/reframe", **CREATE)
def reframe_video(body: ReframeVideo, request: Request, tenant: Tenant, ctx: Ctx) -> GenerationOut:
    """A video (`media.url`) placed on a canvas of `aspect_ratio` and the rest drawn (docs/api.md): a new video."""
    return _reframe(body, request, tenant, ctx, "video")


@router.post("/generations/image/reframe", **CREATE)
def reframe_image(body: ReframeImage, request: Request, tenant: Tenant, ctx: Ctx) -> GenerationOut:
    """An image placed on a canvas of `aspect_ratio` and the rest drawn: a new image."""
    return _reframe(body, request, tenant, ctx, "image")


def _reframe(
    body: ReframeVideo | ReframeImage, request: Request, tenant: tenants.Tenant, ctx: Context, kind: str
) -> GenerationOut:
    check_limits(ctx, tenant)
    check_callback(ctx, body.callback_url)
    resolved = resolve_reframe(body, keyframes_for(request, ctx, tenant), ctx.config.aliases)
    return store_generation(request, ctx, tenant, body, resolved, kind)


def source_generation(ctx: Context, tenant: tenants.Tenant, generation_id: str) -> Generation:
    """The tenant's generation a new one is made from; 404 when it has none of that id."""
    try:
        return ctx.store.get(tenant.name, generation_id)
    except NotFound as err:
        generation_not_found(ctx, tenant.name, generation_id)
        raise HTTPException(404, "Generation not found") from err


@router.post("/generations/{generation_id}/upscale", **FROM_SOURCE)
def upscale(
    generation_id: str, request: Request, tenant: Tenant, ctx: Ctx, body: Upscale | None = None
) -> GenerationOut:
    body = body or Upscale()
    check_callback(ctx, body.callback_url)
    source = source_generation(ctx, tenant, generation_id)
    resolved = resolve_upscale(source, body.resolution)
    # the resampled video keeps the source's frames and rate: recorded so its length can be reported
    resolved.task = {k: source.task[k] for k in ("num_frames", "fps") if k in source.task} | resolved.task
    return store_generation(request, ctx, tenant, body, resolved, "video", {"generation_id": generation_id})


@router.post("/generations/{generation_id}/audio", **FROM_SOURCE)
def add_audio(
    generation_id: str, request: Request, tenant: Tenant, ctx: Ctx, body: AddAudio | None = None
) -> GenerationOut:
    """Sound for a completed video of yours, made by the installed audio model (docs/api.md): a new video
    generation, the clip's frames as they were with an AAC track of its length."""
    body = body or AddAudio()
    check_callback(ctx, body.callback_url)
    source = source_generation(ctx, tenant, generation_id)
    resolved = resolve_audio(source, body, ctx.assets.get)
    return store_generation(request, ctx, tenant, body, resolved, "video", {"generation_id": generation_id})


@router.get("/generations/{generation_id}", response_model=GenerationOut, responses=responses(Error, 404))
async def get_generation(generation_id: str, request: Request, tenant: Tenant, ctx: Ctx) -> GenerationOut:
    # async: no thread hop for the dependencies or the response (a sync endpoint costs three); the read in
    # place on SQLite, in the pool on a networked database (Store.reads_inline)
    try:
        generation = await read(ctx.store, ctx.store.get, tenant.name, generation_id)
    except NotFound as err:
        await run_in_threadpool(generation_not_found, ctx, tenant.name, generation_id)
        raise HTTPException(404, "Generation not found") from err
    return generation_out(request, ctx, generation)


@router.get("/generations", response_model=GenerationList)
def list_generations(
    request: Request,
    tenant: Tenant,
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> GenerationList:
    rows, total = ctx.store.list(tenant.name, limit, offset)
    items = [generation_out(request, ctx, g) for g in rows]
    return GenerationList(
        generations=items, count=len(items), has_more=offset + len(items) < total, limit=limit, offset=offset
    )


@router.delete("/generations/{generation_id}", status_code=204, responses=responses(Error, 404))
def delete_generation(generation_id: str, tenant: Tenant, ctx: Ctx) -> Response:
    try:
        ctx.store.delete(tenant.name, generation_id)
    except NotFound as err:
        generation_not_found(ctx, tenant.name, generation_id)
        raise HTTPException(404, "Generation not found") from err
    ctx.assets.delete_generation(tenant.name, generation_id)
    return Response(status_code=204)


@router.get("/credits", response_model=Credits)
def credits(tenant: Tenant, ctx: Ctx) -> Credits:
    account = tenants.get_tenant(ctx.store, tenant.name)  # not the cached tenant: a balance is read fresh
    return Credits(credit_balance=account.credits_cents, metered=account.metered)


ping_router = APIRouter()  # the one Dream Machine route without a key


@ping_router.get("/ping", response_model=Ping)
def ping() -> Ping:
    return Ping()


def body_limit_bytes(path: str) -> int:
    """The request gate's cap on a body sent to `path`."""
    if path in ("/v1/uploads", "/v1/videos", "/v1/videos/edits", "/v1/videos/extensions"):
        return MAX_UPLOAD_BYTES + 64 * 1024  # the file and its multipart framing
    if path.startswith("/v1/worker/jobs/"):  # finished videos from remote workers
        return WORKER_FILE_BYTES
    return MAX_JSON_BYTES


def create_app(store: Store, assets: AssetStore, config: ApiConfig) -> FastAPI:
    from noor.api import worlds

    app = FastAPI(title="Noor", version="0.1.0", lifespan=worlds.lifespan)  # starts and stops the session host
    ctx = app.state.ctx = Context(store, assets, config)
    worlds.install(app, ctx)  # world sessions: /v1/worlds
    app.include_router(router, prefix=DM_PREFIX)
    app.include_router(router)
    app.include_router(ping_router, prefix=DM_PREFIX)
    app.include_router(ping_router)

    from noor.api.openai_videos import OpenAIError, openai_error_response
    from noor.api.openai_videos import router as openai_router

    app.include_router(openai_router)

    from noor.api import agent_files, agents

    app.include_router(agents.router)  # Luma's Agents API: /agents/v1
    app.include_router(agent_files.router)

    from noor.api.workers import router as workers_router

    app.include_router(workers_router)

    from noor.api.planner import router as plan_router

    app.include_router(plan_router, responses=responses(Error, 400, 401, 413) | responses(Unprocessable, 422))

    from noor.api.studio import install as install_studio

    install_studio(app)  # the web studio at / and /studio/, and its /v1/studio routes

    async def authenticate(kind: str, key: str | None) -> bool:
        if not key:
            return False
        if kind == "worker":
            return await run_in_threadpool(tenants.authenticate, store, key, "worker") is not None
        return ctx.keys.cached(key) is not None or await run_in_threadpool(ctx.keys.tenant, store, key) is not None

    # inside the metrics middleware, so its refusals are counted too (route "unmatched")
    app.add_middleware(
        RequestGate, authenticate=authenticate, limit_for=agent_files.body_limit(body_limit_bytes),
        presigned=agent_files.presigned,
    )  # fmt: skip
    metrics.install(app, store, prefixes=(DM_PREFIX,))

    @app.exception_handler(RequestError)
    def request_error(request: Request, err: RequestError) -> JSONResponse:
        return error_response(request.url.path, err.status, err.detail, param=err.field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> Response:
        """Routing's 404/405, a missing key's 401, a body's 413: in the OpenAI shape on the OpenAI routes."""
        if not is_openai(request.url.path):
            return await http_exception_handler(request, err)
        return error_response(request.url.path, err.status_code, str(err.detail), headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError) -> Response:
        if not is_openai(request.url.path):
            return await request_validation_exception_handler(request, err)
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"][1:]) or str(first["loc"][0])
        return error_response(request.url.path, 400, f"{where}: {first['msg']}", param=where)

    @app.exception_handler(OpenAIError)
    def openai_error(request: Request, err: OpenAIError) -> JSONResponse:
        return openai_error_response(err)

    @app.exception_handler(RegionUnavailable)
    def region_unavailable(request: Request, err: RegionUnavailable) -> JSONResponse:
        """A region-bound tenant's data plane is down: its requests wait for it (nothing is written elsewhere)."""
        return error_response(request.url.path, 503, f"{err}; try again later", headers={"Retry-After": "5"})

    @app.post("/v1/uploads", status_code=201, responses=responses(Error, 400, 401, 413))
    async def upload(request: Request, tenant: Tenant, file: Annotated[UploadFile, File()]) -> dict[str, Any]:
        data = await file.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise HTTPException(413, f"file must be at most {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
        suffix = await run_in_threadpool(file_suffix, data, "file")  # decodes it: CPU, off the event loop
        key = asset_key(tenant.name, "uploads", f"{uuid.uuid4().hex}{suffix}")
        assets.put_for(tenant.regions, key, data)  # in the tenant's region where it is bound to one
        return {"url": asset_url(request, app.state.ctx, key), "size_bytes": len(data)}

    @app.get("/assets/{key:path}", responses=responses(Error, 401, 404))
    def get_asset(key: str, request: Request, expires: int | None = None, sig: str | None = None) -> Response:
        signed = expires is not None and sig is not None and verify(config.secret, key, expires, sig)
        if not signed:
            tenant = tenant_of(request)
            key_tenant = key.split("/", 1)[0]
            if key_tenant != tenant.name:
                refused(app.state.ctx, tenant.name, "asset", key, key_tenant if _stored(assets, key) else None)
                raise HTTPException(404, "Asset not found")
        owner = generation_of(key)
        if owner is not None and not app.state.ctx.store.exists(*owner):  # a deleted generation's files are gone
            raise HTTPException(404, "Asset not found")
        try:
            data = assets.get(key)
        except (AssetNotFound, ValueError) as err:
            raise HTTPException(404, "Asset not found") from err
        return Response(data, media_type=_media_type(key))

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _stored(assets: AssetStore, key: str) -> bool:
    try:
        return assets.exists(key)
    except ValueError:  # not a key the store could hold
        return False


def _media_type(key: str) -> str:
    suffix = key.rsplit(".", 1)[-1].lower()
    return {"mp4": "video/mp4", "png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}.get(
        suffix, "application/octet-stream"
    )
