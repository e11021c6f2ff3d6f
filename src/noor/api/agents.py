"""Luma's Agents API (`luma-agents` 0.5.0, strict response mode) at /agents/v1, over the same job store.

`POST /generations` validates the body (docs/reference/luma-agents-api.md §2.1), turns it into an engine task,
screens it, prices it and queues it exactly as the Dream Machine routes do (`create_priced`); `GET
/generations/{id}` answers the SDK's Generation. The types this deployment runs are the keys of `OPERATIONS`;
the others are a 400 naming the type (`PENDING`). The files API is noor.api.agent_files; `GET /usage` (Noor's
addition: the spec has no usage call) sums a tenant's generations per end user (`user_id`).

Errors are `{"detail": "..."}`, one line naming the field and the value; nothing is queued or charged for them.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Callable
from datetime import UTC
from itertools import groupby
from typing import Any, Literal, cast

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from noor.api import agent_files
from noor.api.agent_files import PREFIX, parse_body, rfc3339
from noor.api.app import (
    MAX_UPLOAD_BYTES,
    Context,
    Ctx,
    Tenant,
    check_limits,
    create_priced,
    generation_not_found,
    keyframes_for,
    public_base,
    read,
    signed_link,
)
from noor.api.errors import Error, responses
from noor.api.idempotency import IDEMPOTENT, IdempotentRoute, conflict
from noor.api.requests import (
    Keyframes,
    RequestError,
    Resolved,
    Source,
    check_mode,
    check_task,
    edit_task,
    even,
    generation_source,
    reframe_task,
    resolve_model,
    source_of,
    stored_source,
)
from noor.api.schemas import GenerationKeyframe, ImageKeyframe
from noor.api.uploads import file_suffix
from noor.engine import registry
from noor.engine.task import KEYFRAME_GRID_FPS, Task, TaskError, fit_aspect, frames_from_grid
from noor.jobs import tenants
from noor.jobs.assets import UPLOADS, asset_key
from noor.jobs.generation import Generation
from noor.jobs.money import cents
from noor.jobs.store import NotFound
from noor.trust import moderation

GenerationType = Literal["image", "image_edit", "video", "video_edit", "video_reframe", "layering"]
AspectRatio = Literal["3:1", "2:1", "21:9", "16:9", "4:3", "3:2", "1:1", "3:4", "2:3", "9:16", "1:2", "1:3"]
VIDEO_ASPECTS = ("9:16", "3:4", "1:1", "4:3", "16:9", "21:9")  # the docs' subset for video
MODEL_TYPES = {  # which model does which type (the docs); layering runs on uni-1
    "uni-1": ("image", "image_edit", "layering"),
    "uni-1-max": ("image", "image_edit"),
    "ray-3.2": ("video", "video_edit", "video_reframe"),
}
SHORT_SIDES = {"360p": 360, "540p": 540, "720p": 720, "1080p": 1080}  # a resolution names the short side
DURATIONS_S = {"5s": 5.0, "10s": 10.0}
IMAGE_RESOLUTION, VIDEO_RESOLUTION = "540p", "540p"  # Noor's defaults, as the Dream Machine routes have
STATES = {"queued": "queued", "dreaming": "processing", "completed": "completed", "failed": "failed"}
OUTPUT_TTL_S = 3600  # output links are valid an hour (the spec's presigned output URLs)
MAX_PROMPT_CHARS = 6000
FRAME_MEDIA = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}
SOURCE_MEDIA = {"image": FRAME_MEDIA, "video": {"video/mp4": ".mp4"}}  # what an edit's or a reframe's source may be
SOURCE_LIMIT_S = 18.0  # the longest source video an edit or a reframe takes (the docs)
# An edit that names no strength (an image_edit, or a video_edit with auto_controls): Modify Video's adhere_3, the
# highest of the levels that keep the source's shapes and motion (docs/api.md), as the OpenAI remix has
DEFAULT_EDIT_MODE = "adhere_3"
EDIT_KEYS = ("auto_controls", "strength", "controls", "keyframes", "keyframe_indexes")


class ImageRef(BaseModel):
    model_config = ConfigDict(extra="ignore")

    url: str | None = Field(None, max_length=4096)
    data: str | None = Field(None, max_length=(MAX_UPLOAD_BYTES * 4) // 3 + 4)  # base64 of at most 20 MB
    generation_id: str | None = Field(None, max_length=64)
    file_id: str | None = Field(None, max_length=64)
    media_type: str | None = Field(None, max_length=100)


class SourcePosition(BaseModel):
    x_norm: float
    y_norm: float
    w_norm: float = Field(gt=0, le=2)
    h_norm: float = Field(gt=0, le=2)


class VideoOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    duration: Literal["5s", "10s"] | None = None
    resolution: Literal["360p", "540p", "720p", "1080p"] | None = None
    hdr: bool | None = None
    exr_export: bool | None = None
    loop: bool | None = None
    start_frame: ImageRef | None = None
    end_frame: ImageRef | None = None
    keyframes: list[ImageRef] | None = Field(None, min_length=1, max_length=64)
    keyframe_indexes: list[int] | None = Field(None, max_length=64)
    source_position: SourcePosition | None = None
    edit: dict[str, Any] | None = None  # VideoEditOptions: read by the video_edit operation


class LayeringOptions(BaseModel):
    resolution: Literal["1k", "2k"] | None = None


class GenerationCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(max_length=20000)  # its length is checked with a one-line reason (`_prompt`)
    type: GenerationType = "image"
    model: Literal["uni-1", "uni-1-max", "ray-3.2"] | None = None
    aspect_ratio: AspectRatio | None = None
    image_ref: list[ImageRef] | None = Field(None, max_length=9)
    source: ImageRef | None = None
    output_format: Literal["png", "jpeg"] | None = None
    style: Literal["auto", "manga"] | None = None
    web_search: bool | None = None
    user_id: str | None = Field(None, max_length=256)
    video: VideoOptions | None = None
    layering: LayeringOptions | None = None
    # not an Agents API field (it has none that names a trained concept; image_ref is reference images): read only
    # to refuse it by name, so a client that sends Dream Machine's `concepts` here is told rather than ignored
    concepts: Any = None


# --- what each type runs as -----------------------------------------------------------------------------------


class Refs:
    """How this request's ImageRefs become the engine's keyframes: `{"asset": key}` (or a generation's frame)."""

    def __init__(self, ctx: Context, tenant: tenants.Tenant, keyframes: Keyframes):
        self.ctx, self.tenant, self.keyframes = ctx, tenant, keyframes

    def frame(self, ref: ImageRef | None, field: str, which: str = "frame0") -> dict[str, Any] | None:
        """`which`: frame0 takes a generation's last frame (it extends that video), frame1 its first."""
        if ref is None:
            return None
        _one_of(ref, field)
        if ref.file_id is not None:
            record = agent_files.usable(self.ctx, self.tenant, ref.file_id, f"{field}.file_id")
            if record["mime_type"] not in FRAME_MEDIA:
                raise RequestError(
                    400, f"{field}.file_id: file {ref.file_id!r} is {record['mime_type']}; a frame is an image",
                    field=f"{field}.file_id",
                )  # fmt: skip
            return {"asset": record["key"]}
        if ref.data is not None:
            return {"asset": self._data(ref, field)}
        try:
            if ref.url is not None:
                return dict(self.keyframes.resolve(ImageKeyframe(type="image", url=ref.url), which))
            assert ref.generation_id is not None
            return dict(self.keyframes.resolve(GenerationKeyframe(type="generation", id=ref.generation_id), which))
        except RequestError as err:
            value = ref.url if ref.url is not None else ref.generation_id
            key = "url" if ref.url is not None else "generation_id"
            if err.status == 404:
                raise RequestError(
                    400, f"{field}.{key}: no {key.split('_')[0]} {value!r} of yours", field=field
                ) from err
            raise RequestError(err.status, f"{field}.{key}: {err.detail}", field=field) from err

    def source(self, ref: ImageRef | None, field: str, want: str, default_fps: int) -> Source:
        """The `want`ed media ("video" or "image") an edit or a reframe works from: a completed generation of the
        caller's, a ready file, base64 `data`, or a URL (with `media_type` for a video: the spec's rule), at most
        SOURCE_LIMIT_S long."""
        if ref is None:
            raise RequestError(400, f"{field} is required for type {want}_edit/reframe, got none", field=field)
        _one_of(ref, field)
        limit_s = SOURCE_LIMIT_S if want == "video" else None
        read = self.ctx.assets.get
        if ref.generation_id is not None:
            try:
                g = self.ctx.store.get(self.tenant.name, ref.generation_id)
            except NotFound as err:
                raise RequestError(
                    400, f"{field}.generation_id: no generation {ref.generation_id!r} of yours",
                    field=f"{field}.generation_id",
                ) from err  # fmt: skip
            return generation_source(g, f"{field}.generation_id", want, read, limit_s, default_fps)
        if ref.file_id is not None:
            record = agent_files.usable(self.ctx, self.tenant, ref.file_id, f"{field}.file_id")
            return stored_source(read, record["key"], f"{field}.file_id", want, limit_s, default_fps, ref.file_id)
        media_types = SOURCE_MEDIA[want]
        if ref.data is not None:
            key = self._data(ref, field, media_types)
            return stored_source(read, key, f"{field}.data", want, limit_s, default_fps, "<data>")
        assert ref.url is not None
        if ref.media_type not in media_types and (want == "video" or ref.media_type is not None):
            raise RequestError(
                400, f"{field}.media_type must be one of {', '.join(media_types)} with a {want} url, got "
                f"{ref.media_type!r}", field=f"{field}.media_type",
            )  # fmt: skip
        return source_of(ref.url, self.keyframes, f"{field}.url", want, limit_s, default_fps)

    def _data(self, ref: ImageRef, field: str, media_types: dict[str, str] = FRAME_MEDIA) -> str:
        if ref.media_type not in media_types:
            raise RequestError(
                400, f"{field}.media_type must be one of {', '.join(media_types)} with data, got {ref.media_type!r}",
                field=f"{field}.media_type",
            )  # fmt: skip
        try:
            raw = base64.b64decode(ref.data or "", validate=True)
        except binascii.Error as err:
            raise RequestError(400, f"{field}.data is not base64: {err}", field=f"{field}.data") from err
        suffix = file_suffix(raw, f"{field}.data")
        if suffix != media_types[ref.media_type]:
            raise RequestError(400, f"{field}.data is not {ref.media_type}", field=f"{field}.data")
        key = asset_key(self.tenant.name, UPLOADS, f"{secrets.token_hex(16)}{suffix}")
        return self.ctx.assets.put_for(self.tenant.regions, key, raw)


def _one_of(ref: ImageRef, field: str) -> None:
    given = [k for k in ("url", "data", "generation_id", "file_id") if getattr(ref, k) is not None]
    if len(given) != 1:
        raise RequestError(
            400, f"{field}: give exactly one of url, data, generation_id or file_id, got {given or 'none'}",
            field=field,
        )  # fmt: skip


def _prompt(prompt: str) -> str:
    if not prompt.strip():
        raise RequestError(400, "prompt is required (1 to 6000 characters), got an empty prompt", field="prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise RequestError(
            400, f"prompt must be at most {MAX_PROMPT_CHARS} characters, got {len(prompt)}", field="prompt"
        )
    return prompt


def frame_size(aspect_ratio: str, resolution: str) -> tuple[int, int]:
    """(width, height) for the Agents API's aspect ratios and resolutions (360p and 3:1 too, which Dream Machine's
    do not offer)."""
    return fit_aspect(aspect_ratio, SHORT_SIDES[resolution])


def _not_for(body: GenerationCreate, *fields: str) -> None:
    """Fields the type does not take: a 400 naming the first one sent (never accepted and dropped)."""
    video = body.video or VideoOptions()
    for name in fields:
        owner, _, key = name.rpartition(".")
        value = getattr(video if owner == "video" else body, key)
        if value is not None and value is not False:
            shown = repr(value) if isinstance(value, str | int | float) else "a value"
            raise RequestError(400, f"{name} is not for type {body.type!r}, got {shown}", field=name)


def _no_image_ref(body: GenerationCreate, refs: Refs, spec: registry.ModelSpec) -> None:
    for i, ref in enumerate(body.image_ref or []):
        refs.frame(ref, f"image_ref[{i}]")  # an unknown or unready file is named first
    if body.image_ref:
        raise RequestError(
            400, f"image_ref: no model on this server takes reference images yet ({body.model} runs on {spec.id}, "
            "which draws from the prompt alone); send the request without it", field="image_ref",
        )  # fmt: skip


def image_task(body: GenerationCreate, refs: Refs, spec: registry.ModelSpec) -> dict[str, Any]:
    _not_for(body, "source", "video", "layering")
    _no_image_ref(body, refs, spec)
    width, height = frame_size(body.aspect_ratio or "16:9", IMAGE_RESOLUTION)
    return {
        "prompt": _prompt(body.prompt),
        "width": width,
        "height": height,
        "num_frames": 1,
        "fps": spec.default_fps,
        "seed": secrets.randbelow(2**31),
    }


def video_task(body: GenerationCreate, refs: Refs, spec: registry.ModelSpec) -> dict[str, Any]:
    # 1. what a text/image-to-video takes
    _not_for(body, "source", "image_ref", "layering", "output_format", "video.source_position", "video.edit")
    video = body.video or VideoOptions()
    aspect = body.aspect_ratio or "16:9"
    if aspect not in VIDEO_ASPECTS:
        raise RequestError(
            400, f"aspect_ratio must be one of {', '.join(VIDEO_ASPECTS)} for video, got {aspect!r}",
            field="aspect_ratio",
        )  # fmt: skip
    _no_hdr(video)
    duration = video.duration or "5s"
    if video.loop and duration == "10s":
        raise RequestError(400, "video.loop is not offered with video.duration '10s'", field="video.loop")
    # 2. the frames it is pinned to: its start and end frames, or keyframes at indexes
    num_frames = round(DURATIONS_S[duration] * spec.default_fps)
    at: list[int] = []  # the keyframes' frames of the clip
    if video.keyframes is not None or video.keyframe_indexes is not None:
        if video.start_frame is not None or video.end_frame is not None:
            raise RequestError(400, "video.keyframes cannot be combined with video.start_frame/end_frame",
                               field="video.keyframes")  # fmt: skip
        if video.loop:  # the spec's rule: a loop's last frame is its first, which keyframes would pin apart
            raise RequestError(400, "video.loop cannot be combined with video.keyframes (a loop ends on its first "
                               "frame; pin frames without loop)", field="video.loop")  # fmt: skip
        at = _keyframe_frames(video, duration, num_frames)
        start = end = None
    else:
        start = refs.frame(video.start_frame, "video.start_frame", "frame0")
        end = refs.frame(video.end_frame, "video.end_frame", "frame1")
    # 3. the task
    width, height = frame_size(aspect, video.resolution or VIDEO_RESOLUTION)
    task = {
        "prompt": _prompt(body.prompt),
        "negative_prompt": "",
        "width": width,
        "height": height,
        "num_frames": num_frames,
        "fps": spec.default_fps,
        "seed": secrets.randbelow(2**31),
        "loop": bool(video.loop),
        "start": start,
        "end": end,
    }
    if at:  # checked by their indexes first, so a refused request reads and stores none of its images
        indexes = video.keyframe_indexes or []
        task["notes"] = _pinned_notes(spec, task | {"keyframes": [{"index": frame} for frame in at]}, indexes, duration)
        task["keyframes"] = _keyframes(video.keyframes or [], indexes, at, refs)
    return task


def _no_hdr(video: VideoOptions) -> None:
    if video.hdr or video.exr_export:
        which = "video.hdr" if video.hdr else "video.exr_export"
        raise RequestError(400, f"{which}: HDR output is not available in this deployment", field=which)


# what an edit or a reframe of a video does not take: its frames, timing and length are its source's
SOURCE_TIMED = ("video.start_frame", "video.end_frame", "video.keyframes", "video.keyframe_indexes", "video.loop",
                "video.duration")  # fmt: skip


def image_edit_task(body: GenerationCreate, refs: Refs, spec: registry.ModelSpec) -> dict[str, Any]:
    """The source image redrawn under the prompt from DEFAULT_EDIT_MODE's level, at its own size."""
    _not_for(body, "video", "layering", "aspect_ratio")
    _no_image_ref(body, refs, spec)
    prompt = _prompt(body.prompt)
    source = refs.source(body.source, "source", "image", spec.default_fps)
    return edit_task(spec, source, prompt, DEFAULT_EDIT_MODE)


def video_edit_task(body: GenerationCreate, refs: Refs, spec: registry.ModelSpec) -> dict[str, Any]:
    """The source video redrawn under the prompt from `video.edit.strength`'s level (DEFAULT_EDIT_MODE without one),
    at its aspect and length; `video.resolution` sets its short side (default: the source's size)."""
    _not_for(body, "image_ref", "layering", "output_format", "aspect_ratio", "video.source_position", *SOURCE_TIMED)
    video = body.video or VideoOptions()
    _no_hdr(video)
    mode = _edit_mode(video.edit or {})
    prompt = _prompt(body.prompt)
    source = refs.source(body.source, "source", "video", spec.default_fps)
    size = None
    if video.resolution is not None:  # the source's aspect at that short side
        scale = SHORT_SIDES[video.resolution] / min(source.width, source.height)
        size = even(round(source.width * scale)), even(round(source.height * scale))
    return edit_task(spec, source, prompt, mode, size)


def _edit_mode(edit: dict[str, Any]) -> str:
    """VideoEditOptions as an edit mode: `strength`, or DEFAULT_EDIT_MODE (`auto_controls`, or nothing named). The
    engine has no structure controls and takes no keyframes into an edit: those are a 400 naming them."""
    for key, value in edit.items():
        if key not in EDIT_KEYS:
            raise RequestError(400, f"video.edit.{key} is not a VideoEditOptions field, got {value!r}",
                               field=f"video.edit.{key}")  # fmt: skip
        if key in ("controls", "keyframes", "keyframe_indexes") and value is not None:
            raise RequestError(
                400, f"video.edit.{key}: the edit in this deployment is set by strength alone (noor-tiny has no "
                f"depth, pose or other structure controls, nor keyframes inside an edit), got {value!r}",
                field=f"video.edit.{key}",
            )  # fmt: skip
    strength = edit.get("strength")
    if strength is None:
        return DEFAULT_EDIT_MODE
    check_mode(str(strength), "video.edit.strength")
    return str(strength)


def video_reframe_task(body: GenerationCreate, refs: Refs, spec: registry.ModelSpec) -> dict[str, Any]:
    """The source video placed on a canvas of `aspect_ratio` at `video.resolution` (default VIDEO_RESOLUTION), at
    `video.source_position` (normalised to the canvas; default: centred at its own size, scaled down to fit), the
    rest drawn under the prompt."""
    _not_for(body, "image_ref", "layering", "output_format", "video.edit", *SOURCE_TIMED)
    video = body.video or VideoOptions()
    if video.hdr or video.exr_export:
        which = "video.hdr" if video.hdr else "video.exr_export"
        raise RequestError(400, f"{which} is not offered on a reframe", field=which)
    if body.aspect_ratio is None:
        raise RequestError(400, "aspect_ratio is required for type 'video_reframe' (the new canvas), got none",
                           field="aspect_ratio")  # fmt: skip
    if body.aspect_ratio not in VIDEO_ASPECTS:
        raise RequestError(
            400, f"aspect_ratio must be one of {', '.join(VIDEO_ASPECTS)} for video, got {body.aspect_ratio!r}",
            field="aspect_ratio",
        )  # fmt: skip
    prompt = _prompt(body.prompt)
    source = refs.source(body.source, "source", "video", spec.default_fps)
    width, height = frame_size(body.aspect_ratio, video.resolution or VIDEO_RESOLUTION)
    at = video.source_position
    position = size = None
    if at is not None:
        position = round(at.x_norm * width), round(at.y_norm * height)
        size = max(1, round(at.w_norm * width)), max(1, round(at.h_norm * height))
    try:
        return reframe_task(spec, source, prompt, (width, height), position, size)
    except RequestError as err:
        if err.field != "source_position" or at is None:
            raise
        raise RequestError(
            400, f"video.source_position {at.model_dump()}: {err.detail}", field="video.source_position"
        ) from err


def _keyframe_frames(video: VideoOptions, duration: str, num_frames: int) -> list[int]:
    """The frames of a clip of num_frames that `video.keyframe_indexes` (the 24 fps grid: 0..120 for 5s) pin, in
    order (`frames_from_grid`). A 400 naming `video.keyframe_indexes[i]` and its value for an index out of the
    grid, given twice, or landing on the frame of an earlier one."""
    frames, indexes = video.keyframes or [], video.keyframe_indexes or []
    if len(frames) != len(indexes):
        raise RequestError(
            400, f"video.keyframe_indexes must have one index per keyframe: {len(frames)} keyframes, "
            f"{len(indexes)} indexes", field="video.keyframe_indexes",
        )  # fmt: skip
    seconds, last = DURATIONS_S[duration], round(DURATIONS_S[duration] * KEYFRAME_GRID_FPS)
    first_at: dict[int, int] = {}
    for i, index in enumerate(indexes):
        field = f"video.keyframe_indexes[{i}]"
        if not 0 <= index <= last:
            raise RequestError(400, f"{field} must be within 0..{last} for {duration}, got {index}", field=field)
        if index in first_at:
            raise RequestError(
                400, f"{field}: index {index} is given twice (video.keyframe_indexes[{first_at[index]}] too); the "
                f"indexes must be unique, got {index}", field=field,
            )  # fmt: skip
        first_at[index] = i
    try:
        at = frames_from_grid(indexes, seconds, num_frames)
    except TaskError as err:  # (the range was checked) two on one frame of the clip: `value` is [earlier, later]
        earlier, later = cast(list[int], err.value)
        field = f"video.keyframe_indexes[{first_at[later]}]"
        raise RequestError(
            400, f"{field}: index {later} lands on frame {_frame_of(later, seconds, num_frames)} of the "
            f"{num_frames}-frame clip, as index {earlier} does; keep keyframes at least "
            f"{-(-last // (num_frames - 1))} apart, got {later}", field=field,
        ) from err  # fmt: skip
    return at


def _keyframes(frames: list[ImageRef], indexes: list[int], at: list[int], refs: Refs) -> list[dict[str, Any]]:
    """The task's keyframes, `{"index": frame, "asset": key}` for each ImageRef pinned at that frame (`at`). A
    generation's frame: its last at grid index 0 (the video continues it, as a start frame does), its first at
    any other (as an end frame)."""
    out = []
    for i, (ref, index, frame) in enumerate(zip(frames, indexes, at, strict=True)):
        pinned = refs.frame(ref, f"video.keyframes[{i}]", "frame0" if index == 0 else "frame1")
        out.append({"index": frame, **(pinned or {})})
    return out


def _frame_of(index: int, seconds: float, num_frames: int) -> int:
    """The frame of a clip of num_frames that a keyframe at grid index `index` pins (`frames_from_grid`)."""
    return frames_from_grid([index], seconds, num_frames)[0]


def _pinned_notes(spec: registry.ModelSpec, task: dict[str, Any], indexes: list[int], duration: str) -> list[str]:
    """`check_task` for a task with keyframes, its refusals naming the keyframe (`video.keyframe_indexes[i]`): a
    model without keyframes at indexes, or two keyframes the model would draw on one of its own frames."""
    try:
        return check_task(spec, task)
    except RequestError as err:
        if err.field != "keyframes":
            raise
        if not isinstance(err.value, list):  # the model pins no frames inside a clip
            raise RequestError(400, f"video.keyframes: {spec.id} cannot pin keyframes inside a video ({err.detail})",
                               field="video.keyframes") from err  # fmt: skip
        frames = [k["index"] for k in task["keyframes"]]
        earlier, later = (indexes[frames.index(f)] for f in cast(list[int], err.value))
        i = indexes.index(later)
        probe = Task("keyframes", width=task["width"], height=task["height"], num_frames=task["num_frames"])
        slots, drawn = spec.pin_slots(probe), spec.drawn_frames(probe)
        apart = min_apart(DURATIONS_S[duration], slots)
        raise RequestError(
            400, f"video.keyframe_indexes[{i}]: index {later} and index {earlier} fall in one {spec.pin_slot} of the "
            f"{drawn} frames {spec.id} draws for {duration}; keep keyframes at least {apart} apart, got "
            f"{later}", field=f"video.keyframe_indexes[{i}]",
        ) from err  # fmt: skip


def min_apart(seconds: float, slots: list[int]) -> int:
    """The least distance on the 24 fps grid of a `seconds` clip at which any two keyframes fall in different slots
    of the model (`ModelSpec.pin_slots`: for each of the clip's frames, the drawn frame or the latent frame a pin
    there lands in; grid -> clip frame, to the nearest): the longest run of grid indexes that share a slot."""
    grid = range(round(seconds * KEYFRAME_GRID_FPS) + 1)
    return max(len(list(run)) for _, run in groupby(slots[_frame_of(i, seconds, len(slots))] for i in grid))


# The types this deployment runs: each turns a request into an engine task, and its record's kind. A type without
# one is a 400 naming it (PENDING says why).
Operation = Callable[[GenerationCreate, Refs, registry.ModelSpec], dict[str, Any]]
OPERATIONS: dict[str, tuple[Operation, str]] = {
    "image": (image_task, "image"),
    "image_edit": (image_edit_task, "image"),
    "video": (video_task, "video"),
    "video_edit": (video_edit_task, "video"),
    "video_reframe": (video_reframe_task, "video"),
}
PENDING = {"layering": "no installed model separates an image into layers"}


def resolve(body: GenerationCreate, refs: Refs, aliases: dict[str, str]) -> tuple[str, Resolved, str]:
    """(the Agents model name, the resolved job, its record's kind) or RequestError(400)."""
    model = body.model or ("ray-3.2" if body.type.startswith("video") else "uni-1")
    if body.type not in MODEL_TYPES[model]:
        raise RequestError(
            400, f"model {model!r} does not do type {body.type!r}; it does {', '.join(MODEL_TYPES[model])}",
            field="model",
        )  # fmt: skip
    if body.type not in OPERATIONS:
        raise RequestError(
            400, f"type {body.type!r} is not available yet in this deployment: {PENDING[body.type]}", field="type"
        )
    if body.style == "manga" or body.web_search:
        which = "style" if body.style == "manga" else "web_search"
        value = getattr(body, which)
        raise RequestError(400, f"{which} {value!r} is not available in this deployment", field=which)
    if body.concepts is not None:
        raise RequestError(
            400, "concepts: the Agents API has no field for trained concepts; name them in Dream Machine's "
            "POST /dream-machine/v1/generations/video (concepts: [{\"key\": ...}], keys: GET "
            "/dream-machine/v1/generations/concepts/list)", field="concepts",
        )  # fmt: skip
    spec = resolve_model(model, aliases)
    operation, kind = OPERATIONS[body.type]
    body = body.model_copy(update={"model": model})
    task = operation(body, refs, spec)
    if "notes" not in task:  # an edit's or a reframe's task was checked with its source
        task["notes"] = check_task(spec, task)
    return model, Resolved(spec.id, task), kind


# --- routes -------------------------------------------------------------------------------------------------------

router = APIRouter(prefix=PREFIX, responses=responses(Error, 400, 401), route_class=IdempotentRoute)


def failure_code(reason: str | None) -> str:
    """The SDK's typed code for a failed job's reason (the worker writes reasons; moderation's start with its code)."""
    if reason and (reason.startswith(moderation.FAILURE_CODE) or reason == moderation.REFUSAL_MESSAGE):
        return "content_moderated"
    return "generation_failed"


def generation_out(request: Request, ctx: Context, g: Generation) -> dict[str, Any]:
    """A job as the SDK's Generation, with Noor's fields beside it (the SDK keeps extra keys)."""
    out: dict[str, Any] = {
        "id": g.id,
        "created_at": rfc3339(g.created_at.astimezone(UTC)),
        "model": g.request["model"],
        "state": STATES[g.state],
        "type": g.request["type"],
        "user_id": g.request.get("user_id"),
        "price_cents": g.price_cents,
        "progress": 1.0 if g.state == "completed" else g.progress,
        "warnings": g.task.get("notes", []),
    }
    if g.state == "failed":
        out |= {"failure_code": failure_code(g.failure_reason), "failure_reason": g.failure_reason or "Job failed"}
    if g.state == "completed" and g.assets:
        kind = g.generation_type
        link = signed_link(public_base(request, ctx), ctx.config.secret, g.assets[kind], OUTPUT_TTL_S)
        out["output"] = [{"type": kind, "url": link}]
    return out


@router.post(
    "/generations",
    status_code=201,
    responses=responses(Error, 402, 413, 429) | conflict(Error),
    openapi_extra=IDEMPOTENT,
)
async def create_generation(request: Request, tenant: Tenant, ctx: Ctx) -> dict[str, Any]:
    body = parse_body(GenerationCreate, await request.body())
    return await run_in_threadpool(_create, body, request, tenant, ctx)


def _create(body: GenerationCreate, request: Request, tenant: tenants.Tenant, ctx: Context) -> dict[str, Any]:
    # 1. the request, whole, before anything is stored or charged
    check_limits(ctx, tenant)
    refs = Refs(ctx, tenant, keyframes_for(request, ctx, tenant))
    model, resolved, kind = resolve(body, refs, ctx.config.aliases)
    echoed = _without_data(body.model_dump(mode="json", exclude_none=True)) | {"model": model, "api": "agents"}
    if kind == "image":
        echoed["format"] = "jpg" if body.output_format == "jpeg" else "png"  # what the worker writes
    # 2. moderation, pricing, credits and the queue: the Dream Machine routes' path
    try:
        g = create_priced(
            ctx, tenant=tenant.name, model=resolved.model, request=echoed, task=resolved.task, generation_type=kind
        )
    except HTTPException as err:
        if err.detail == moderation.REFUSAL_MESSAGE:  # refused before it was queued: nothing stored or charged
            raise HTTPException(
                400,
                f"{moderation.REFUSAL_MESSAGE} (failure_code content_moderated)",
                headers={"x-should-retry": "false"},
            ) from err
        raise
    return generation_out(request, ctx, g)


def _without_data(value: Any) -> Any:
    """The request as echoed and stored: an ImageRef's base64 `data` (up to 20 MB) is stored as its asset, not here."""
    if isinstance(value, dict):
        return {k: f"<{len(v)} base64 characters>" if k == "data" else _without_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_data(v) for v in value]
    return value


def _agents_generation(ctx: Context, tenant: str, generation_id: str) -> Generation:
    try:
        g = ctx.store.get(tenant, generation_id)
    except NotFound as err:
        generation_not_found(ctx, tenant, generation_id)
        raise RequestError(404, f"generation_id: no generation {generation_id!r}", field="generation_id") from err
    if g.request.get("api") != "agents":
        raise RequestError(
            404, f"generation {generation_id!r} was made through another API (Dream Machine or OpenAI Videos): "
            "read it there", field="generation_id",
        )  # fmt: skip
    return g


@router.get("/generations/{generation_id}", responses=responses(Error, 404))
async def get_generation(generation_id: str, request: Request, tenant: Tenant, ctx: Ctx) -> dict[str, Any]:
    try:
        g = await read(ctx.store, ctx.store.get, tenant.name, generation_id)
    except NotFound:
        g = None
    if g is None or g.request.get("api") != "agents":  # the slow path: audited, explained
        g = await run_in_threadpool(_agents_generation, ctx, tenant.name, generation_id)
    return generation_out(request, ctx, g)


@router.get("/usage")
def usage(tenant: Tenant, ctx: Ctx, user_id: str | None = None) -> dict[str, Any]:
    """What one end user (`user_id` on their generations) has made and cost: counts by state and type, and the
    price of what was not refunded. Noor's addition: the spec has no usage call (docs/api.md)."""
    if not user_id:
        raise RequestError(400, "user_id is required: GET /usage?user_id=...", field="user_id")
    counts: dict[str, int] = {}
    by_type: dict[str, int] = {}
    cost_microcents = 0
    for state, kind, jobs, kept in ctx.store.tally(tenant.name, api="agents", user_id=user_id):
        counts[STATES[state]] = counts.get(STATES[state], 0) + jobs
        by_type[str(kind)] = by_type.get(str(kind), 0) + jobs
        cost_microcents += kept
    return {
        "object": "usage",
        "user_id": user_id,
        "generations": sum(counts.values()),
        "by_state": counts,
        "by_type": by_type,
        "price_cents": cents(cost_microcents),
    }
