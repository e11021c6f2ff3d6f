"""Turn a Dream Machine request into an engine task, refusing what the model cannot do up front."""

from __future__ import annotations

import io
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

import av
import numpy as np
from PIL import Image

from noor.api import concepts
from noor.api.schemas import (
    AddAudio,
    GenerationKeyframe,
    ImageCreate,
    ImageKeyframe,
    ModifyVideo,
    Reframe,
    ReframeImage,
    ReframeVideo,
    VideoCreate,
)
from noor.engine import registry
from noor.engine.task import EDIT_LEVELS, Media, Task, TaskError, size_from_aspect
from noor.jobs.assets import generation_of
from noor.jobs.store import NotFound, Store

DEFAULT_ALIASES = registry.DEFAULT_ALIASES  # Dream Machine and OpenAI model names (overridable in settings)
DURATIONS_S = {"5s": 5.0, "9s": 9.0}
DEFAULT_RESOLUTION = "540p"


class RequestError(Exception):
    """`field`: the field refused; `value`: the engine's refused value, where a model's check refused it
    (`check_task`), for a caller that names it in its own terms."""

    def __init__(self, status: int, detail: str, field: str | None = None, value: Any = None):
        self.status, self.detail, self.field, self.value = status, detail, field, value
        super().__init__(detail)


@dataclass
class Resolved:
    model: str  # the Noor model id
    task: dict[str, Any]  # JSON the worker turns back into an engine Task


def resolve_model(name: str, aliases: dict[str, str]) -> registry.ModelSpec:
    model_id = aliases.get(name, name)
    try:
        return registry.get(model_id)
    except registry.UnknownModel as err:
        names = sorted(set(aliases) | {s.id for s in registry.available()})
        raise RequestError(400, f"Unknown model {name!r}; available: {', '.join(names)}") from err


def _prompt(prompt: str | None, required: bool) -> str:
    if prompt is None or not prompt.strip():
        if required:
            raise RequestError(400, "Prompt is required")
        return ""
    if len(prompt) < 3:
        raise RequestError(400, "Prompt is too short, minimum length is 3 characters")
    if len(prompt) > 5000:
        raise RequestError(400, "Prompt is too long, maximum length is 5000 characters")
    return prompt


# An external keyframe URL -> the asset key of its stored copy (fetched through the SSRF guard).
Fetch = Callable[[str], str]


def parse_url(url: str, what: str) -> SplitResult:
    """An http(s) URL with a host and a valid port, or RequestError(400) naming `what` (urlsplit raises
    ValueError for `http://[::1/`, and its `.port` for `:99999`)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError when out of range or not a number
    except ValueError as err:
        raise RequestError(400, f"{what}: {url!r} is not a valid URL: {err}", field=what) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RequestError(400, f"{what}: {url!r} must be an http or https URL with a host", field=what)
    return parts


def _asset_key_of(url: str, keyframes: Keyframes, what: str = "keyframe url", fetch: Fetch | None = None) -> str:
    """A keyframe (or source) URL as an asset key: this server's own upload or asset, or an external file fetched
    once (by `fetch`; default: the keyframes' image fetch).

    An own link must name an existing file of the tenant's, checked here: a missing file would otherwise be
    charged and fail in a worker, with the store's path in its reason."""
    parts = parse_url(url, what)
    marker = "/assets/"
    if parts.netloc in keyframes.own_hosts and marker in parts.path:
        key = unquote(parts.path.split(marker, 1)[1])
        if any(segment in ("", ".", "..") for segment in key.split("/")) or "\\" in key:
            raise RequestError(400, f"{what} {url!r} does not name a file (no '.', '..' or empty segments)")
        if key.split("/", 1)[0] != keyframes.tenant:
            raise RequestError(404, "Keyframe not found")
        if keyframes.exists is not None and not _exists(keyframes.exists, key):
            raise RequestError(400, f"{what} {url!r}: no such upload (was it deleted?)")
        return key
    fetch = fetch or keyframes.fetch
    if fetch is None:
        raise RequestError(
            400, f"{what} must be an upload to this server (POST /v1/uploads); external urls are refused: {url!r}"
        )
    return fetch(url)


def _exists(exists: Callable[[str], bool], key: str) -> bool:
    try:
        return exists(key)
    except ValueError:  # not a key the asset store could have written (AssetStore refuses odd characters)
        return False


@dataclass
class Keyframes:
    """How keyframe references resolve for one request."""

    tenant: str
    store: Store
    own_hosts: set[str] = field(default_factory=set)
    fetch: Fetch | None = None
    exists: Callable[[str], bool] | None = None  # whether an asset key names a stored file
    # an edit's or a reframe's source: an external URL fetched as an image or an MP4 video; a stored file's bytes
    fetch_source: Fetch | None = None
    read: Callable[[str], bytes] | None = None

    def resolve(self, frame: ImageKeyframe | GenerationKeyframe | None, which: str) -> Any:
        if frame is None:
            return None
        if isinstance(frame, ImageKeyframe):
            return {"asset": _asset_key_of(frame.url, self)}
        try:
            source = self.store.get(self.tenant, frame.id)
        except NotFound as err:
            raise RequestError(404, "Generation not found") from err
        if source.state != "completed" or not source.assets:
            raise RequestError(400, f"keyframe generation {frame.id} is {source.state}, not completed")
        if source.assets.get("video"):
            return {"asset": source.assets["video"], "frame": "last" if which == "frame0" else "first"}
        return {"asset": source.assets["image"]}


def resolve_video(req: VideoCreate, keyframes: Keyframes, aliases: dict[str, str]) -> Resolved:
    spec = resolve_model(req.model, aliases)
    concept_keys = [c.key for c in req.concepts or []]
    refused = concepts.refusal(concept_keys, spec)
    if refused:
        raise RequestError(400, refused, field="concepts")
    frames = req.keyframes or None
    frame0 = keyframes.resolve(frames.frame0, "frame0") if frames else None
    frame1 = keyframes.resolve(frames.frame1, "frame1") if frames else None
    if frames is not None and frame0 is None and frame1 is None:
        raise RequestError(400, "No keyframes provided")
    if req.loop and frame1 is not None:
        raise RequestError(400, "Loop is not supported for end frame")
    prompt = _prompt(req.prompt, required=frame0 is None and frame1 is None)
    negative_prompt = (req.negative_prompt or "").strip()
    if len(negative_prompt) > 5000:
        raise RequestError(400, "negative_prompt is too long, maximum length is 5000 characters")
    resolution = req.resolution or DEFAULT_RESOLUTION
    duration = req.duration or "5s"
    if duration not in DURATIONS_S:
        raise RequestError(400, f"duration must be one of {', '.join(DURATIONS_S)}, got {duration!r}")
    try:
        width, height = size_from_aspect(req.aspect_ratio, resolution)
    except TaskError as err:
        raise RequestError(400, str(err)) from err
    fps = spec.default_fps
    task = {
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "width": width,
        "height": height,
        "num_frames": round(DURATIONS_S[duration] * fps),
        "fps": fps,
        "seed": secrets.randbelow(2**31),
        "loop": req.loop,
        "start": frame0,
        "end": frame1,
    }
    if concept_keys:
        task["concepts"] = concept_keys  # installed for this model (concepts.refusal); the worker loads them
    task["notes"] = check_task(spec, task)
    return Resolved(spec.id, task)


UPSCALE_MODEL = "resample"  # no learnt model: Lanczos resampling, run by every worker


def resolve_upscale(source: Any, resolution: str) -> Resolved:
    """A new job that resamples a completed video to `resolution` (its short side), keeping its aspect."""
    from noor.engine.task import RESOLUTIONS

    if resolution not in RESOLUTIONS:
        raise RequestError(400, f"resolution must be one of {', '.join(RESOLUTIONS)}, got {resolution!r}")
    if source.state != "completed" or not (source.assets or {}).get("video"):
        raise RequestError(400, f"generation {source.id} has no finished video to upscale (state {source.state})")
    width, height = source.task["width"], source.task["height"]
    short = RESOLUTIONS[resolution]
    scale = short / min(width, height)
    new_w, new_h = 2 * round(width * scale / 2), 2 * round(height * scale / 2)
    task = {"kind": "upscale", "source": source.assets["video"], "width": new_w, "height": new_h}
    # what pricing needs: the frames it resamples (its source's) and the field the caller set
    frames = source.task.get("num_frames") or source.task.get("source_frames")  # an upscale of an upscale
    task |= {"resolution": resolution, "source_frames": frames}
    return Resolved(UPSCALE_MODEL, task)


def resolve_audio(source: Any, body: AddAudio, read: Callable[[str], bytes]) -> Resolved:
    """A new job that puts sound into a completed video: the installed audio model makes the clip's length of sound
    for the prompt, muxed in with the video stream copied. RequestError(400) naming the reason: no audio model
    installed (naming the `noor models add` line), not a completed video, a clip longer than the model makes, an
    empty prompt."""
    from noor.engine.sound import SoundRequest

    if source.generation_type != "video":
        raise RequestError(
            400, f"generation_id: generation {source.id} is an image; sound is added to a video", field="generation_id"
        )
    try:
        spec = registry.get_audio()
    except TaskError as err:  # NoAudioModel: says which `noor models add` line installs one
        raise RequestError(400, str(err), field="model") from err
    clip = generation_source(source, "generation_id", "video", read)
    # Luma's prompt is optional: with none, the sound is asked for by the clip's own prompt
    prompt = (body.prompt or "").strip() or str(source.task.get("prompt") or "").strip()
    request = SoundRequest(prompt, seconds=clip.seconds, seed=secrets.randbelow(2**31),
                           negative_prompt=body.negative_prompt or "")  # fmt: skip
    try:
        spec.check(request)
    except TaskError as err:
        if err.field == "seconds":  # the clip's length, not a field of the request
            raise RequestError(
                400, f"generation_id: the video is {clip.seconds:g} s long; audio model {spec.id!r} makes at most "
                f"{spec.max_seconds:g} s (at least {spec.min_seconds:g} s)", field="generation_id",
            ) from err  # fmt: skip
        raise RequestError(400, str(err), field=err.field) from err
    task = {
        "kind": "audio", "source": clip.key, "prompt": request.prompt, "negative_prompt": request.negative_prompt,
        "seed": request.seed, "seconds": clip.seconds, "steps": spec.default_steps,
        # what pricing and the record need: the clip's shape (kept, its frames copied)
        "width": clip.width, "height": clip.height, "num_frames": clip.num_frames, "fps": clip.fps,
    }  # fmt: skip
    return Resolved(spec.id, task)


# The longest source Dream Machine's models take, in seconds (docs/reference/luma-api.md §3.5-3.7); a model name
# not listed is bounded by its Noor model's own limits alone. The Agents API takes sources up to 18 s.
MODIFY_LIMIT_S = {"ray-2": 10.0, "ray-flash-2": 15.0}
REFRAME_LIMIT_S = {"ray-2": 10.0, "ray-flash-2": 30.0, "photon-1": None, "photon-flash-1": None}
# The docs' reframe canvases: `grid_position_*` and `resized_*` are pixels of these. Noor's canvas is smaller (the
# smallest of the aspect that holds the source at its own size: `reframe_canvas`), so they are scaled to it.
REFRAME_GRID = {
    "1:1": (1536, 1536), "4:3": (1792, 1344), "3:4": (1344, 1792), "16:9": (2048, 1152),
    "9:16": (1152, 2048), "21:9": (2432, 1024), "9:21": (1024, 2432),
}  # fmt: skip
CROP_FIELDS = ("x_start", "x_end", "y_start", "y_end")


@dataclass(frozen=True)
class Source:
    """A stored file an edit or a reframe works from: its asset key and shape (read from its header)."""

    key: str
    is_image: bool
    width: int
    height: int
    num_frames: int
    fps: int
    # the prompt it was drawn from, when it is a generation's output (an edit then keeps what the prompts share)
    prompt: str | None = None

    @property
    def seconds(self) -> float:
        return self.num_frames / self.fps

    def stand_in(self, size: tuple[int, int] | None = None) -> Media:
        """Frames of its shape (or `size`) that take no memory, for the model's checks."""
        width, height = size or (self.width, self.height)
        return Media(frames=np.broadcast_to(np.zeros((1, 1, 1, 3), np.uint8), (self.num_frames, height, width, 3)),
                     fps=self.fps)  # fmt: skip


def source_of(
    url: str, keyframes: Keyframes, what: str, want: str, limit_s: float | None = None, default_fps: int = 8
) -> Source:
    """The file an edit or a reframe works from: `url` names a completed generation's output or an upload of the
    tenant's (own asset URL), or an external image or MP4 fetched once through the SSRF guard. `want`: "video" or
    "image". RequestError(400) naming `what` for anything else: another tenant's file, a generation not completed,
    the wrong kind of media, a video longer than `limit_s`."""
    try:
        key = _asset_key_of(url, keyframes, what, keyframes.fetch_source)
    except RequestError as err:
        if err.status != 404:
            raise
        raise RequestError(400, f"{what}: {url!r} is not a file of yours", field=what) from err
    owner, g = generation_of(key), None
    if owner is not None:  # a generation's file: only its finished outputs (not a preview of one still dreaming)
        try:
            g = keyframes.store.get(keyframes.tenant, owner[1])
        except NotFound as err:
            raise RequestError(400, f"{what}: {url!r} is not a file of yours", field=what) from err
        if g.state != "completed" or key not in (g.assets or {}).values():
            raise RequestError(
                400, f"{what}: {url!r} is not a completed generation's output (generation {g.id} is {g.state})",
                field=what,
            )  # fmt: skip
    if keyframes.read is None:
        raise RequestError(400, f"{what}: this server cannot read sources", field=what)
    source = stored_source(keyframes.read, key, what, want, limit_s, default_fps, url)
    return source if g is None else drawn_from(source, g)


def drawn_from(source: Source, g: Any) -> Source:
    """`source` with the prompt generation `g` drew it from (None for one without: an upscale, a reframe's)."""
    return replace(source, prompt=(g.task or {}).get("prompt") or None)


def generation_source(
    g: Any, what: str, want: str, read: Callable[[str], bytes], limit_s: float | None = None, default_fps: int = 8
) -> Source:
    """A generation's output as a Source: its video (`want` "video"), or an image generation's image; RequestError
    (400) naming `what` when it is not a completed one of those."""
    key = (g.assets or {}).get(want)
    if g.state != "completed" or not key or (want == "image" and g.generation_type != "image"):
        raise RequestError(
            400, f"{what}: generation {g.id} is {g.state}, not a completed {want} generation", field=what
        )
    return drawn_from(stored_source(read, key, what, want, limit_s, default_fps), g)


def stored_source(
    read: Callable[[str], bytes],
    key: str,
    what: str,
    want: str,
    limit_s: float | None = None,
    default_fps: int = 8,
    shown: str | None = None,
) -> Source:
    """The stored file `key` as a Source, if it is the `want`ed media ("video" or "image") and, for a video, at
    most `limit_s` long; RequestError(400) naming `what` (and `shown`, default the key) otherwise."""
    url = shown or key
    source = _shape(read(key), key, what, default_fps)
    if want == "video" and source.is_image:
        raise RequestError(400, f"{what}: {url!r} is an image; this operation takes an MP4 video", field=what)
    if want == "image" and not source.is_image:
        raise RequestError(400, f"{what}: {url!r} is a video; this operation takes an image", field=what)
    if limit_s is not None and source.seconds > limit_s:
        raise RequestError(
            400, f"{what}: the source video is {source.seconds:.1f} s long, longer than the {limit_s:g} s this model "
            f"takes, got {url!r}", field=what,
        )  # fmt: skip
    return source


def _shape(data: bytes, key: str, what: str, default_fps: int) -> Source:
    """A stored file's shape from its header (a video's frames are counted from its packets, not decoded)."""
    try:
        if key.lower().endswith(".mp4"):
            with av.open(io.BytesIO(data), format="mp4") as container:
                stream = container.streams.video[0]
                width, height = stream.codec_context.width, stream.codec_context.height
                fps = round(float(stream.average_rate or 0)) or default_fps
                frames = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
            return Source(key, False, width, height, frames, fps)
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
        return Source(key, True, width, height, 1, default_fps)
    except (av.FFmpegError, OSError, IndexError) as err:
        raise RequestError(400, f"{what}: the file is not a readable image or MP4 video: {err}", field=what) from err


def even(value: int) -> int:
    """The nearest even side at or below `value` (H.264 needs even sides), at least 2."""
    return max(2, value - value % 2)


def check_mode(mode: str, field: str = "mode") -> None:
    if mode not in EDIT_LEVELS:
        raise RequestError(400, f"{field} must be one of {', '.join(EDIT_LEVELS)}, got {mode!r}", field=field)


def edit_task(
    spec: registry.ModelSpec, source: Source, prompt: str, mode: str, size: tuple[int, int] | None = None
) -> dict[str, Any]:
    """An edit's stored task: `source` redrawn under `prompt` from `mode`'s level (EDIT_LEVELS), at its own size
    (even sides) or `size`, with its frames and frame rate. RequestError(400) for a mode not in the list."""
    check_mode(mode)
    width, height = size or (even(source.width), even(source.height))
    task: dict[str, Any] = {
        "kind": "edit",
        "source": source.key,
        "prompt": prompt,
        "negative_prompt": "",
        "edit_mode": mode,
        "source_prompt": source.prompt,
        "width": width,
        "height": height,
        "num_frames": source.num_frames,
        "fps": source.fps,
        "seed": secrets.randbelow(2**31),
    }
    task["notes"] = check_task(spec, task, source)
    return task


def reframe_task(
    spec: registry.ModelSpec,
    source: Source,
    prompt: str,
    canvas: tuple[int, int],
    position: tuple[int, int] | None = None,
    size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """A reframe's stored task: `source` (at `size` if given) placed with its top-left corner at `position` (None:
    centred) on a canvas of `canvas` pixels, the rest drawn under `prompt`. RequestError(400) naming
    `source_position` when that puts it outside the canvas."""
    task = {
        "kind": "reframe",
        "source": source.key,
        "prompt": prompt,
        "negative_prompt": "",
        "width": canvas[0],
        "height": canvas[1],
        "num_frames": source.num_frames,
        "fps": source.fps,
        "seed": secrets.randbelow(2**31),
        "source_position": list(position) if position is not None else None,
        "source_size": list(size) if size is not None else None,
    }
    task["notes"] = check_task(spec, task, source)
    return task


def reframe_canvas(aspect_ratio: str, width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height), even sides, of the smallest canvas of `aspect_ratio` that holds a width x height source at
    its own size (the source touches two of its sides), scaled down to `max_side` on its long side if longer."""
    a, b = (int(v) for v in aspect_ratio.split(":"))
    if width * b < height * a:  # the source is narrower than the canvas: its height fills it
        w, h = math.ceil(height * a / b), height
    else:
        w, h = width, math.ceil(width * b / a)
    scale = min(1.0, max_side / max(w, h))
    return even(math.ceil(w * scale) + 1), even(math.ceil(h * scale) + 1)


def resolve_modify(req: ModifyVideo, keyframes: Keyframes, aliases: dict[str, str]) -> Resolved:
    """Dream Machine's Modify Video: an edit of `media.url` under the prompt, from `mode`'s level."""
    spec = resolve_model(req.model, aliases)
    check_mode(req.mode)  # before the source is read or fetched
    _no_first_frame(req.first_frame)
    prompt = _prompt(req.prompt, required=True)
    source = source_of(req.media.url, keyframes, "media.url", "video", MODIFY_LIMIT_S.get(req.model), spec.default_fps)
    return Resolved(spec.id, edit_task(spec, source, prompt, req.mode))


def resolve_reframe(req: ReframeVideo | ReframeImage, keyframes: Keyframes, aliases: dict[str, str]) -> Resolved:
    """Dream Machine's Reframe (video or image): the source on a canvas of `aspect_ratio` (`reframe_canvas`), at
    `grid_position_*` and `resized_*` scaled from the docs' canvas (REFRAME_GRID) to it, the rest drawn."""
    spec = resolve_model(req.model, aliases)
    for name in CROP_FIELDS:
        value = getattr(req, name)
        if value is not None:  # never accepted and dropped
            raise RequestError(
                400, f"{name}: crop bounds are not offered here (the whole source is placed; resized_width/height "
                f"and grid_position_x/y size and place it), got {value!r}", field=name,
            )  # fmt: skip
    video = isinstance(req, ReframeVideo)
    if isinstance(req, ReframeVideo):
        _no_first_frame(req.first_frame)
    prompt = _prompt(req.prompt, required=False)
    want, limit_s = ("video", REFRAME_LIMIT_S.get(req.model)) if video else ("image", None)
    source = source_of(req.media.url, keyframes, "media.url", want, limit_s, spec.default_fps)
    canvas = reframe_canvas(req.aspect_ratio, source.width, source.height, spec.limits.max_side)
    grid = REFRAME_GRID[req.aspect_ratio]
    size = _resized(req, canvas, grid)
    position = _grid_position(req, source, canvas, grid, size)
    return Resolved(spec.id, reframe_task(spec, source, prompt, canvas, position, size))


def _no_first_frame(first_frame: Any) -> None:
    if first_frame is not None:
        raise RequestError(
            400, f"first_frame: an edit or a reframe takes its frames from media.url; a separate first frame is not "
            f"offered, got {first_frame.url!r}", field="first_frame",
        )  # fmt: skip


def _resized(req: Reframe, canvas: tuple[int, int], grid: tuple[int, int]) -> tuple[int, int] | None:
    """`resized_width` x `resized_height` (the docs' canvas pixels) in the canvas's pixels; None when not given."""
    given = {k: getattr(req, k) for k in ("resized_width", "resized_height")}
    if all(v is None for v in given.values()):
        return None
    for name, value in given.items():
        if value is None:
            other = "resized_height" if name == "resized_width" else "resized_width"
            raise RequestError(400, f"{name} is required with {other}", field=name)
        if not 1 <= value <= grid[0 if name == "resized_width" else 1]:
            bound = grid[0 if name == "resized_width" else 1]
            raise RequestError(
                400, f"{name} must be 1..{bound} (pixels of the {grid[0]}x{grid[1]} canvas of aspect_ratio "
                f"{req.aspect_ratio}), got {value}", field=name,
            )  # fmt: skip
    width, height = given["resized_width"], given["resized_height"]
    assert width is not None and height is not None
    return max(1, round(width * canvas[0] / grid[0])), max(1, round(height * canvas[1] / grid[1]))


def _grid_position(
    req: Reframe, source: Source, canvas: tuple[int, int], grid: tuple[int, int], size: tuple[int, int] | None
) -> tuple[int, int] | None:
    """`grid_position_x/y` (the docs' canvas pixels) as the source's top-left corner in the canvas's pixels (an
    axis not given: centred on it); None when neither is given. RequestError(400) naming the one outside."""
    if req.grid_position_x is None and req.grid_position_y is None:
        return None
    probe = Task("-", width=canvas[0], height=canvas[1], num_frames=source.num_frames, source=source.stand_in(size),
                 reframe=True)  # fmt: skip
    _, _, w, h = probe.reframe_box()  # the source's size on the canvas
    position = []
    for name, value, side, room, grid_side in (
        ("grid_position_x", req.grid_position_x, canvas[0], canvas[0] - w, grid[0]),
        ("grid_position_y", req.grid_position_y, canvas[1], canvas[1] - h, grid[1]),
    ):
        if value is None:
            position.append(room // 2)
            continue
        most = room * grid_side // side  # the largest that keeps the source inside, in grid pixels
        if not 0 <= value <= most:
            raise RequestError(
                400, f"{name} must be 0..{most}: a larger one puts the source outside the {grid[0]}x{grid[1]} "
                f"canvas of aspect_ratio {req.aspect_ratio} (the source takes {round(w * grid[0] / canvas[0])}x"
                f"{round(h * grid[1] / canvas[1])} of it), got {value}", field=name,
            )  # fmt: skip
        position.append(min(room, round(value * side / grid_side)))
    return position[0], position[1]


REFERENCES = ("image_ref", "style_ref", "character_ref", "modify_image_ref")


def resolve_image(req: ImageCreate, aliases: dict[str, str]) -> Resolved:
    spec = resolve_model(req.model, aliases)
    for name in REFERENCES:
        if getattr(req, name) is not None:  # never accepted and dropped
            raise RequestError(
                400,
                f"{name}: no model on this server takes reference images yet ({spec.id} draws from the prompt "
                "alone); send the request without it",
                field=name,
            )
    width, height = size_from_aspect(req.aspect_ratio, DEFAULT_RESOLUTION)
    task = {
        "prompt": _prompt(req.prompt, required=True),
        "width": width,
        "height": height,
        "num_frames": 1,
        "fps": spec.default_fps,
        "seed": secrets.randbelow(2**31),
    }
    task["notes"] = check_task(spec, task)
    return Resolved(spec.id, task)


def check_task(spec: registry.ModelSpec, task: dict[str, Any], source: Source | None = None) -> list[str]:
    """The model's own limits and capabilities, on a stand-in task (start and end frames are checked as
    present/absent, keyframes at indexes by their indexes, an edit's or a reframe's `source` by its shape); returns
    the model's notes on what it will adapt or does not know (the generation's `warnings`).

    Raises RequestError(400); its `field` names the engine field that was refused, its `value` the value."""
    size = task.get("source_size")
    position = task.get("source_position")
    try:
        probe = Task(
            prompt=task["prompt"] or "keyframes only",
            width=task["width"],
            height=task["height"],
            num_frames=task["num_frames"],
            fps=task["fps"],
            seed=task["seed"],
            loop=task.get("loop", False),
            start_frame=_PRESENT if task.get("start") else None,
            end_frame=_PRESENT if task.get("end") else None,
            source=source.stand_in(tuple(size) if size else None) if source is not None else None,
            edit_mode=task.get("edit_mode"),
            reframe=task.get("kind") == "reframe",
            source_position=(position[0], position[1]) if position is not None else None,
            keyframes=tuple((ref["index"], _PIXEL) for ref in task.get("keyframes") or ()),
        )
        notes = spec.check(probe)
    except TaskError as err:
        raise RequestError(400, str(err), field=err.field, value=err.value) from err
    if not task["prompt"] and spec.prompt_notes:  # notes on the stand-in prompt are not the user's
        stand_in = set(spec.prompt_notes(probe.prompt))
        notes = [n for n in notes if n not in stand_in]
    return notes


class _Present:
    """Marks a keyframe as given without reading it."""


_PRESENT: Any = _Present()
_PIXEL = np.zeros((1, 1, 3), np.uint8)  # a keyframe's stand-in: its index is checked, not its pixels
