"""Turn a Dream Machine request into an engine task, refusing what the model cannot do up front."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from noor.api import concepts
from noor.api.schemas import GenerationKeyframe, ImageCreate, ImageKeyframe, VideoCreate
from noor.engine import registry
from noor.engine.task import Task, TaskError, size_from_aspect
from noor.jobs.store import NotFound, Store

DEFAULT_ALIASES = registry.DEFAULT_ALIASES  # Dream Machine and OpenAI model names (overridable in settings)
DURATIONS_S = {"5s": 5.0, "9s": 9.0}
DEFAULT_RESOLUTION = "540p"


class RequestError(Exception):
    def __init__(self, status: int, detail: str, field: str | None = None):
        self.status, self.detail, self.field = status, detail, field
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


def _asset_key_of(url: str, keyframes: Keyframes) -> str:
    """A keyframe URL as an asset key: this server's own upload or asset, or an external image fetched once.

    An own link must name an existing file of the tenant's, checked here: a missing file would otherwise be
    charged and fail in a worker, with the store's path in its reason."""
    parts = parse_url(url, "keyframe url")
    marker = "/assets/"
    if parts.netloc in keyframes.own_hosts and marker in parts.path:
        key = unquote(parts.path.split(marker, 1)[1])
        if any(segment in ("", ".", "..") for segment in key.split("/")) or "\\" in key:
            raise RequestError(400, f"keyframe url {url!r} does not name a file (no '.', '..' or empty segments)")
        if key.split("/", 1)[0] != keyframes.tenant:
            raise RequestError(404, "Keyframe not found")
        if keyframes.exists is not None and not _exists(keyframes.exists, key):
            raise RequestError(400, f"keyframe url {url!r}: no such upload (was it deleted?)")
        return key
    fetch = keyframes.fetch
    if fetch is None:
        raise RequestError(
            400, f"keyframe url must be an upload to this server (POST /v1/uploads); external urls are refused: {url!r}"
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
        task["concepts"] = concept_keys  # only a model that declares them gets here (concepts.refusal)
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


REFERENCES = ("image_ref", "style_ref", "character_ref", "modify_image_ref")


def resolve_image(req: ImageCreate, aliases: dict[str, str]) -> Resolved:
    spec = resolve_model(req.model, aliases)
    for name in REFERENCES:
        if getattr(req, name) is not None:  # never accepted and dropped
            raise RequestError(
                400, f"{name}: no model on this server takes reference images yet ({spec.id} draws from the prompt "
                "alone); send the request without it", field=name,
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


def check_task(spec: registry.ModelSpec, task: dict[str, Any]) -> list[str]:
    """The model's own limits and capabilities, on a stand-in task (keyframes are checked as present/absent);
    returns the model's notes on what it will adapt or does not know (the generation's `warnings`).

    Raises RequestError(400); its `field` names the engine field that was refused."""
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
    )
    try:
        notes = spec.check(probe)
    except TaskError as err:
        raise RequestError(400, str(err), field=err.field) from err
    if not task["prompt"] and spec.prompt_notes:  # notes on the stand-in prompt are not the user's
        stand_in = set(spec.prompt_notes(probe.prompt))
        notes = [n for n in notes if n not in stand_in]
    return notes


class _Present:
    """Marks a keyframe as given without reading it."""


_PRESENT: Any = _Present()
