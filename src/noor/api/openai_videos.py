"""OpenAI's Videos API (`client.videos` in the official `openai` SDK) over the same job store.

Errors carry both Noor's `{"detail": ...}` and OpenAI's `{"error": {...}}`, so either client reads them.
A remix is an edit of the video under the new prompt (`REMIX_MODE`). What the SDK can call but this server does
not do (edits, extensions, characters) is a 400 in that shape saying so, never a bare 404 or 405.
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from noor.api.app import Ctx, Tenant, check_limits, create_priced, generation_not_found, read
from noor.api.errors import OPENAI_PREFIX, OpenAIErrorBody, error_body, responses
from noor.api.gate import BadJSON, strict_json
from noor.api.idempotency import IDEMPOTENT, IdempotentRoute, conflict
from noor.api.requests import RequestError, check_task, edit_task, generation_source, resolve_model
from noor.api.uploads import image_suffix
from noor.jobs.assets import AssetNotFound, asset_key
from noor.jobs.generation import Generation
from noor.jobs.store import NotFound

SECONDS = ("4", "8", "12")
# A remix keeps its source's shapes and motion and takes the new prompt's colours and details: Modify Video's
# adhere_3, the highest of the levels that keep the motion (noor-tiny: docs/noor-tiny.md "Edit and reframe")
REMIX_MODE = "adhere_3"
STATUS = {"queued": "queued", "dreaming": "in_progress", "completed": "completed", "failed": "failed"}
MAX_REFERENCE_BYTES = 20 * 1024 * 1024

router = APIRouter(prefix=OPENAI_PREFIX, responses=responses(OpenAIErrorBody, 400, 401), route_class=IdempotentRoute)


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        self.status, self.message, self.param, self.code = status, message, param, code
        super().__init__(message)


def openai_error_response(err: OpenAIError) -> JSONResponse:
    return JSONResponse(error_body(OPENAI_PREFIX, err.status, err.message, err.param, err.code), status_code=err.status)


def video_out(g: Generation) -> dict[str, Any]:
    """A job as OpenAI's Video. Size and length are the video's own (its task's), whichever API created it:
    an upscale or a Dream Machine "5s" job says what it made, not the OpenAI defaults."""
    request, task = g.request, g.task
    seconds = f"{task['num_frames'] / task['fps']:g}" if task.get("num_frames") and task.get("fps") else None
    size = f"{task['width']}x{task['height']}" if task.get("width") and task.get("height") else None
    return {
        "id": g.id,
        "object": "video",
        "model": request.get("model") or g.model,
        "status": STATUS[g.state],
        "progress": 100 if g.state == "completed" else round(100 * g.progress),
        "created_at": int(g.created_at.timestamp()),
        "completed_at": int(g.finished_at.timestamp()) if g.finished_at and g.state == "completed" else None,
        "expires_at": None,
        "prompt": request.get("prompt"),
        "seconds": seconds or request.get("seconds"),
        "size": size or request.get("size"),
        "remixed_from_video_id": request.get("remixed_from_video_id"),
        "eta_s": g.eta_s,  # Noor's additions
        "price_cents": g.price_cents,
        "error": {"code": "generation_failed", "message": g.failure_reason or "Job failed"}
        if g.state == "failed"
        else None,
    }


def _video_of(ctx: Any, tenant: str, video_id: str) -> Generation:
    try:
        g = ctx.store.get(tenant, video_id)
    except NotFound as err:
        generation_not_found(ctx, tenant, video_id, "video")
        raise OpenAIError(404, f"Video with id '{video_id}' not found.", code="video_not_found") from err
    if g.generation_type != "video":
        raise OpenAIError(404, f"Video with id '{video_id}' not found.", code="video_not_found")
    return g


@router.post(
    "", responses=responses(OpenAIErrorBody, 402, 413, 429) | conflict(OpenAIErrorBody), openapi_extra=IDEMPOTENT
)
async def create_video(request: Request, tenant: Tenant, ctx: Ctx) -> JSONResponse:
    check_limits(ctx, tenant)
    # 1. the body: multipart (what the SDK sends) or JSON
    reference: bytes | None = None
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        async with request.form() as form:  # closes the uploads' spooled temp files when read
            fields: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
            upload = form.get("input_reference")
            if upload is not None and not isinstance(upload, str):
                reference = await upload.read(MAX_REFERENCE_BYTES + 1)
    else:
        fields = await _json_fields(request)
    prompt, model_name = _prompt(fields.get("prompt")), str(fields.get("model") or "sora-2")
    seconds, size = str(fields.get("seconds") or "4"), str(fields.get("size") or "720x1280")

    # 2. validation, before anything is stored
    if seconds not in SECONDS:
        raise OpenAIError(400, f"seconds must be one of {', '.join(SECONDS)}, got {seconds!r}", param="seconds")
    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise OpenAIError(400, f"size must be WIDTHxHEIGHT, got {size!r}", param="size") from None
    try:
        spec = resolve_model(model_name, ctx.config.aliases)
    except RequestError as err:
        raise OpenAIError(400, err.detail, param="model") from err
    start = None
    if reference is not None:
        if len(reference) > MAX_REFERENCE_BYTES:
            raise OpenAIError(413, "input_reference must be at most 20 MB", param="input_reference")
        try:
            suffix = await run_in_threadpool(image_suffix, reference, "input_reference")  # decodes it
        except RequestError as err:
            raise OpenAIError(400, err.detail, param="input_reference") from err
        start = {"asset": asset_key(tenant.name, "uploads", f"{secrets.token_hex(16)}{suffix}")}
    task: dict[str, Any] = {
        "prompt": prompt,
        "width": width,
        "height": height,
        "num_frames": int(seconds) * spec.default_fps,
        "fps": spec.default_fps,
        "seed": secrets.randbelow(2**31),
        "start": start,
    }
    try:
        task["notes"] = check_task(spec, task)
    except RequestError as err:
        param = {"width": "size", "height": "size", "num_frames": "seconds"}.get(err.field or "", err.field)
        raise OpenAIError(400, err.detail, param=param) from err

    # 3. store the reference, then the job
    if start is not None and reference is not None:
        ctx.assets.put_for(tenant.regions, start["asset"], reference)
    request_echo = {"model": model_name, "prompt": prompt, "seconds": seconds, "size": size, "generation_type": "video"}
    return JSONResponse(video_out(_queue(ctx, tenant.name, spec.id, request_echo, task)))


async def _json_fields(request: Request) -> dict[str, Any]:
    try:
        fields = strict_json(await request.body())
    except BadJSON as err:
        raise OpenAIError(400, f"body: {err}") from err
    except ValueError as err:
        raise OpenAIError(400, "body must be JSON or multipart/form-data") from err
    if not isinstance(fields, dict):
        raise OpenAIError(400, "body must be a JSON object")
    return fields


def _prompt(prompt: Any) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise OpenAIError(400, f"prompt is required, got {prompt!r}", param="prompt")
    if len(prompt) > 5000:
        raise OpenAIError(400, f"prompt must be at most 5000 characters, got {len(prompt)}", param="prompt")
    return prompt


def _queue(ctx: Any, tenant: str, model: str, request: dict[str, Any], task: dict[str, Any]) -> Generation:
    """Screen, price and queue a job (`create_priced`), its refusals in OpenAI's shape."""
    try:
        return create_priced(ctx, tenant=tenant, model=model, request=request, task=task)
    except RequestError as err:  # pricing: the output would not fit in a worker's memory
        raise OpenAIError(err.status, err.detail, param="size") from err
    except HTTPException as err:
        code = {429: "rate_limit_exceeded", 400: "moderation_blocked"}.get(err.status_code, "insufficient_quota")
        raise OpenAIError(err.status_code, str(err.detail), code=code) from err


def _video_page(ctx: Any, tenant: str, limit: int, after: str | None, ascending: bool) -> tuple[list[Generation], bool]:
    """Up to `limit` videos after `after`, and whether more follow. The store pages every generation, image
    ones too (which `retrieve` answers 404), so those are skipped here, reading on until the page is full."""
    videos: list[Generation] = []
    more = True
    while more and len(videos) <= limit:
        rows, more = ctx.store.page(tenant, limit + 1, after, ascending=ascending)
        videos += [g for g in rows if g.generation_type == "video"]
        after = rows[-1].id if rows else None
    return videos[:limit], len(videos) > limit


@router.get("")
def list_videos(
    tenant: Tenant, ctx: Ctx, after: str | None = None, limit: int = 20, order: str = "desc"
) -> dict[str, Any]:
    if not 1 <= limit <= 100:
        raise OpenAIError(400, f"limit must be between 1 and 100, got {limit}", param="limit")
    if order not in ("asc", "desc"):
        raise OpenAIError(400, f"order must be asc or desc, got {order!r}", param="order")
    try:
        if after is not None:
            _video_of(ctx, tenant.name, after)
        rows, more = _video_page(ctx, tenant.name, limit, after, ascending=order == "asc")
    except (NotFound, OpenAIError) as err:
        raise OpenAIError(400, f"after: no video {after!r}", param="after") from err
    data = [video_out(g) for g in rows]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": more,
    }


def _not_supported(what: str) -> OpenAIError:
    return OpenAIError(
        400, f"{what} is not supported by this server (Noor serves create, retrieve, list, delete and content)",
        code="unsupported_operation",
    )  # fmt: skip


@router.post("/characters", responses=responses(OpenAIErrorBody, 413))
def create_character(tenant: Tenant) -> None:
    raise _not_supported("Characters (videos.create_character)")  # refused before its upload is read


@router.get("/characters/{character_id}")
def get_character(character_id: str, tenant: Tenant) -> None:
    raise _not_supported("Characters (videos.get_character)")


@router.post("/edits", responses=responses(OpenAIErrorBody, 413))
def edit_video(tenant: Tenant) -> None:
    raise _not_supported("Video edits (videos.edit)")


@router.post("/extensions", responses=responses(OpenAIErrorBody, 413))
def extend_video(tenant: Tenant) -> None:
    raise _not_supported("Video extensions (videos.extend)")


@router.post(
    "/{video_id}/remix",
    responses=responses(OpenAIErrorBody, 402, 404, 413, 429) | conflict(OpenAIErrorBody),
    openapi_extra=IDEMPOTENT,
)
async def remix_video(video_id: str, request: Request, tenant: Tenant, ctx: Ctx) -> JSONResponse:
    """An edit of a completed video under the new prompt, from REMIX_MODE's level: a new video whose
    `remixed_from_video_id` is the source's id, of its size and length."""
    fields = await _json_fields(request)
    return JSONResponse(await run_in_threadpool(_remix, ctx, tenant, video_id, _prompt(fields.get("prompt"))))


def _remix(ctx: Any, tenant: Any, video_id: str, prompt: str) -> dict[str, Any]:
    check_limits(ctx, tenant)
    source = _video_of(ctx, tenant.name, video_id)  # an unknown video is a 404, as it is everywhere else
    try:
        clip = generation_source(source, "video_id", "video", ctx.assets.get)
        spec = resolve_model(source.model, ctx.config.aliases)
        task = edit_task(spec, clip, prompt, REMIX_MODE)
    except RequestError as err:  # not completed; or the model cannot edit, or the source is not one it takes
        raise OpenAIError(err.status, err.detail, param=err.field) from err
    request = {
        "model": source.request.get("model") or source.model,
        "prompt": prompt,
        "seconds": f"{clip.seconds:g}",
        "size": f"{task['width']}x{task['height']}",
        "generation_type": "video",
        "remixed_from_video_id": video_id,
    }
    return video_out(_queue(ctx, tenant.name, spec.id, request, task))


@router.get("/{video_id}", responses=responses(OpenAIErrorBody, 404))
async def retrieve_video(video_id: str, tenant: Tenant, ctx: Ctx) -> dict[str, Any]:
    return video_out(await read(ctx.store, _video_of, ctx, tenant.name, video_id))  # the SDK's poll


@router.get("/{video_id}/content", responses=responses(OpenAIErrorBody, 404))
def download_content(video_id: str, tenant: Tenant, ctx: Ctx, variant: str = "video") -> Response:
    g = _video_of(ctx, tenant.name, video_id)
    if variant not in ("video", "thumbnail"):
        raise OpenAIError(400, f"variant must be video or thumbnail, got {variant!r}", param="variant")
    if g.state != "completed" or not g.assets:
        raise OpenAIError(404, f"Video {video_id} is {STATUS[g.state]}; content is ready once it is completed")
    key = g.assets.get("video") if variant == "video" else g.assets.get("image")
    try:
        data = ctx.assets.get(key or "")
    except (AssetNotFound, ValueError) as err:
        raise HTTPException(404, "content not found") from err
    return Response(data, media_type="video/mp4" if variant == "video" else "image/jpeg")


@router.delete("/{video_id}", responses=responses(OpenAIErrorBody, 404))
def delete_video(video_id: str, tenant: Tenant, ctx: Ctx) -> dict[str, Any]:
    _video_of(ctx, tenant.name, video_id)
    try:
        ctx.store.delete(tenant.name, video_id)
    except NotFound as err:  # a delete racing this one won
        raise OpenAIError(404, f"Video with id '{video_id}' not found.", code="video_not_found") from err
    ctx.assets.delete_generation(tenant.name, video_id)
    return {"id": video_id, "object": "video.deleted", "deleted": True}
