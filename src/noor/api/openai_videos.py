"""OpenAI's Videos API (`client.videos` in the official `openai` SDK) over the same job store.

Errors carry both Noor's `{"detail": ...}` and OpenAI's `{"error": {...}}`, so either client reads them.
A remix, and an edit of an uploaded MP4 or a completed video, is an edit of the video under the new prompt
(`REMIX_MODE`); an extension continues the video from its last frame (as Dream Machine's extend does). What the SDK
can call but this server does not do (characters) is a 400 in that shape saying so, never a bare 404 or 405.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from noor.api.app import MAX_UPLOAD_BYTES, Ctx, Tenant, check_limits, create_priced, generation_not_found, read
from noor.api.errors import OPENAI_PREFIX, OpenAIErrorBody, error_body, responses
from noor.api.gate import BadJSON, strict_json
from noor.api.idempotency import IDEMPOTENT, IdempotentRoute, conflict
from noor.api.requests import (
    RequestError,
    Source,
    check_task,
    edit_task,
    even,
    generation_source,
    resolve_model,
    stored_source,
)
from noor.api.uploads import file_suffix, image_suffix
from noor.engine import registry
from noor.jobs.assets import UPLOADS, AssetNotFound, asset_key
from noor.jobs.generation import Generation
from noor.jobs.store import NotFound

SECONDS = ("4", "8", "12")
# A remix keeps its source's shapes and motion and takes the new prompt's colours and details: Modify Video's
# adhere_3, the highest of the levels that keep the motion (noor-tiny: docs/noor-tiny.md "Edit and reframe")
REMIX_MODE = "adhere_3"
STATUS = {"queued": "queued", "dreaming": "in_progress", "completed": "completed", "failed": "failed"}

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
    fields, reference = await _body(request, "input_reference")
    prompt, model_name = _prompt(fields.get("prompt")), str(fields.get("model") or "sora-2")
    seconds, size = _seconds(fields.get("seconds") or "4"), str(fields.get("size") or "720x1280")

    # 2. validation, before anything is stored
    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise OpenAIError(400, f"size must be WIDTHxHEIGHT, got {size!r}", param="size") from None
    spec = _model(ctx, model_name, "model")
    start = None
    if reference is not None:
        if len(reference) > MAX_UPLOAD_BYTES:
            raise OpenAIError(413, "input_reference must be at most 20 MB", param="input_reference")
        try:
            suffix = await run_in_threadpool(image_suffix, reference, "input_reference")  # decodes it
        except RequestError as err:
            raise OpenAIError(400, err.detail, param="input_reference") from err
        start = {"asset": asset_key(tenant.name, UPLOADS, f"{secrets.token_hex(16)}{suffix}")}
    task = _video_task(spec, prompt, (width, height), seconds, start)

    # 3. store the reference, then the job
    if start is not None and reference is not None:
        ctx.assets.put_for(tenant.regions, start["asset"], reference)
    request_echo = {"model": model_name, "prompt": prompt, "seconds": seconds, "size": size, "generation_type": "video"}
    return JSONResponse(video_out(_queue(ctx, tenant.name, spec.id, request_echo, task)))


def _video_task(
    spec: registry.ModelSpec, prompt: str, size: tuple[int, int], seconds: str, start: dict[str, Any] | None
) -> dict[str, Any]:
    """A video's stored task (`start`: the keyframe it starts from), checked against the model: its refusals name
    the OpenAI field (size, seconds)."""
    task: dict[str, Any] = {
        "prompt": prompt,
        "width": size[0],
        "height": size[1],
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
    return task


def _seconds(seconds: Any) -> str:
    if str(seconds) not in SECONDS:
        raise OpenAIError(400, f"seconds must be one of {', '.join(SECONDS)}, got {seconds!r}", param="seconds")
    return str(seconds)


async def _body(request: Request, file_field: str) -> tuple[dict[str, Any], bytes | None]:
    """A body's fields, multipart (what the SDK sends) or JSON, and the bytes of its file `file_field` if it has one
    (at most MAX_UPLOAD_BYTES + 1 read: a longer one is seen, and refused, without reading it all)."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return await _json_fields(request), None
    async with request.form() as form:  # closes the uploads' spooled temp files when read
        fields: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
        upload = form.get(file_field)
        data = None if upload is None or isinstance(upload, str) else await upload.read(MAX_UPLOAD_BYTES + 1)
    return fields, data


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


@dataclass
class SourceVideo:
    """The video an edit, a remix or an extension works from: an upload (`data`, stored once the request is
    checked) or a completed video of the tenant's (`video_id`)."""

    clip: Source  # its asset key and shape
    model: str  # the model name the new video is made with: the source video's, or the body's (default sora-2)
    spec: registry.ModelSpec  # the model it names
    param: str  # the field that named it, which its refusals name
    data: bytes | None = None
    video_id: str | None = None

    def store(self, ctx: Any, tenant: Any) -> None:
        if self.data is not None:
            ctx.assets.put_for(tenant.regions, self.clip.key, self.data)


def _source_video(ctx: Any, tenant: Any, fields: dict[str, Any], data: bytes | None) -> SourceVideo:
    """`video`: an uploaded MP4 (multipart, what the SDK sends) or `{"id": ...}` of a completed video (JSON; the SDK's
    multipart cannot carry it). An unknown video is a 404, a bad file or one not completed a 400 naming `video`."""
    reference = fields.get("video")
    if data is None and isinstance(reference, dict) and set(reference) == {"id"} and isinstance(reference["id"], str):
        return _stored_video(ctx, tenant, reference["id"], "video")
    if data is None:
        raise OpenAIError(
            400, f"video is required: an MP4 file (multipart) or {{\"id\": ...}} of a completed video, got "
            f"{reference!r}", param="video",
        )  # fmt: skip
    if len(data) > MAX_UPLOAD_BYTES:
        raise OpenAIError(413, "video must be at most 20 MB", param="video")
    model = str(fields.get("model") or "sora-2")
    spec = _model(ctx, model, "model")
    try:
        suffix = file_suffix(data, "video")  # decodes it
        key = asset_key(tenant.name, UPLOADS, f"{secrets.token_hex(16)}{suffix}")
        clip = stored_source(lambda _: data, key, "video", "video", default_fps=spec.default_fps)
    except RequestError as err:
        raise OpenAIError(400, err.detail, param="video") from err
    return SourceVideo(clip, model, spec, "video", data=data)


def _model(ctx: Any, name: str, param: str) -> registry.ModelSpec:
    try:
        return resolve_model(name, ctx.config.aliases)
    except RequestError as err:
        raise OpenAIError(400, err.detail, param=param) from err


def _stored_video(ctx: Any, tenant: Any, video_id: str, param: str) -> SourceVideo:
    g = _video_of(ctx, tenant.name, video_id)  # an unknown video is a 404, as it is everywhere else
    try:
        clip = generation_source(g, param, "video", ctx.assets.get)
    except RequestError as err:  # not completed
        raise OpenAIError(err.status, err.detail, param=param) from err
    model = str(g.request.get("model") or g.model)
    return SourceVideo(clip, model, _model(ctx, g.model, param), param, video_id=video_id)


def _edit(ctx: Any, tenant: Any, source: SourceVideo, prompt: str, request: dict[str, Any]) -> dict[str, Any]:
    """An edit of `source` under `prompt` from REMIX_MODE's level, of its size and length, queued."""
    spec = source.spec
    try:
        task = edit_task(spec, source.clip, prompt, REMIX_MODE)
    except RequestError as err:  # the model cannot edit, or the source is not one it takes
        raise OpenAIError(err.status, err.detail, param="prompt" if err.field == "prompt" else source.param) from err
    source.store(ctx, tenant)
    request = {
        "model": source.model,
        "prompt": prompt,
        "seconds": f"{source.clip.seconds:g}",
        "size": f"{task['width']}x{task['height']}",
        "generation_type": "video",
    } | request
    return video_out(_queue(ctx, tenant.name, spec.id, request, task))


CREATE_ROUTE: dict[str, Any] = {  # a route that queues a new video
    "responses": responses(OpenAIErrorBody, 402, 404, 413, 429) | conflict(OpenAIErrorBody),
    "openapi_extra": IDEMPOTENT,
}


@router.post("/edits", **CREATE_ROUTE)
async def edit_video(request: Request, tenant: Tenant, ctx: Ctx) -> JSONResponse:
    """`videos.edit`: an edit of the uploaded MP4 (or of a completed video by id) under the prompt, as a remix is."""
    fields, data = await _body(request, "video")
    prompt = _prompt(fields.get("prompt"))

    def run() -> dict[str, Any]:
        check_limits(ctx, tenant)
        return _edit(ctx, tenant, _source_video(ctx, tenant, fields, data), prompt, {})

    return JSONResponse(await run_in_threadpool(run))


@router.post("/extensions", **CREATE_ROUTE)
async def extend_video(request: Request, tenant: Tenant, ctx: Ctx) -> JSONResponse:
    """`videos.extend`: a new video of `seconds` that continues the uploaded MP4 (or a completed video by id) from
    its last frame, at its size: Dream Machine's extend (a start keyframe on an earlier video's last frame). The
    result is the new segment; the source is not repeated in it."""
    fields, data = await _body(request, "video")
    prompt, seconds = _prompt(fields.get("prompt")), _seconds(fields.get("seconds"))

    def run() -> dict[str, Any]:
        check_limits(ctx, tenant)
        source = _source_video(ctx, tenant, fields, data)
        spec = source.spec
        size = even(source.clip.width), even(source.clip.height)
        task = _video_task(spec, prompt, size, seconds, {"asset": source.clip.key, "frame": "last"})
        source.store(ctx, tenant)
        request = {"model": source.model, "prompt": prompt, "seconds": seconds, "size": f"{size[0]}x{size[1]}",
                   "generation_type": "video", "extended_from_video_id": source.video_id}  # fmt: skip
        return video_out(_queue(ctx, tenant.name, spec.id, request, task))

    return JSONResponse(await run_in_threadpool(run))


@router.post("/{video_id}/remix", **CREATE_ROUTE)
async def remix_video(video_id: str, request: Request, tenant: Tenant, ctx: Ctx) -> JSONResponse:
    """An edit of a completed video under the new prompt, from REMIX_MODE's level: a new video whose
    `remixed_from_video_id` is the source's id, of its size and length."""
    fields = await _json_fields(request)
    prompt = _prompt(fields.get("prompt"))

    def run() -> dict[str, Any]:
        check_limits(ctx, tenant)
        source = _stored_video(ctx, tenant, video_id, "video_id")
        return _edit(ctx, tenant, source, prompt, {"remixed_from_video_id": video_id})

    return JSONResponse(await run_in_threadpool(run))


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
