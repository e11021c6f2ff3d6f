"""Each generation's ETA and price, from the perf model (`noor.perf`) for the chip its workers run on.

The price is what the request's predicted seconds cost at that chip's $/hour (catalog, overridable),
times a markup from settings; it is taken from the tenant's credits when the job is created and given
back if the job fails. Every kind of job is priced, upscales included: the model's work (none for an
upscale) plus making the output file, which grows with its pixels and frames (noor-tiny draws 64x64x16
whatever is asked, so a 4096x4096x64 request is almost all output work).
An edit or a reframe is priced as the generation of its output's size (all of the model's steps, though an
edit runs only those below its level: the price stays an upper bound, like the perf model's other figures).
Sound added to a clip (`kind` "audio") is priced as the audio model's steps over the clip's seconds plus the mux
(`audio_s`): the perf model has no audio models yet, so both are per-second rates given below.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from noor import catalog
from noor.api.requests import RequestError
from noor.engine import registry
from noor.engine.task import Task, TaskError
from noor.jobs import money
from noor.perf import estimate_task
from noor.perf.parallelism import ParallelPlan
from noor.perf.shape import PerfError

log = logging.getLogger("noor.api")


# Making the output file: Lanczos resampling to the requested size, H.264 encoding (libx264, preset medium,
# crf 18) and a thumbnail, per output pixel (width x height x frames). Measured on this repository's 2-thread
# EPYC VM with `noor.engine.tiny.backend.resize` + `media.write_video` on noor-tiny-like content (64x64 frames
# drawn up): 960x544x40 took 7.6 s (364 ns/px), 1920x1088x16 9.7 s (290 ns/px), with its 2 cores shared with
# other work (so rather an upper bound). It runs on the worker's host CPU
# whatever the chip, while the chip waits, so it is billed at the chip's rate; a bigger host encodes faster, so
# on GPU chips this overstates the ETA (left so until measured there).
OUTPUT_S_PER_PIXEL = 330e-9
# The worker holds the output about three times at its peak (the resized frames, the stacked clip, the encoder's
# YUV copy): peak RSS over the clip's bytes measured 2.8x (960x544x40) and 3.0x (1920x1088x16).
OUTPUT_COPIES = 3.0
# H.264's largest level (6.2) frame is 8192x4320; no side of an output may be longer
MAX_OUTPUT_SIDE = 8192

# Sound for a clip (`kind` "audio"). The audio model's work: no perf model covers audio models yet, so it is one rate
# per denoising step and second of sound, whatever the chip. Not measured here: Stable Audio Open 1.0 is taken to
# make 47 s in 100 steps in about 10 s on one data-centre GPU (2.1 ms per step-second), to be replaced by a
# measurement. The file: the mux copies the video stream and encodes the sound to AAC, measured on this
# repository's loaded 2-thread host at 0.36 s for a 10 s 960x544 clip with 44.1 kHz stereo (`media.mux_audio`).
AUDIO_S_PER_STEP_SECOND = 2.1e-3
MUX_S_PER_SECOND = 0.04


@dataclass(frozen=True)
class Quote:
    eta_s: float | None  # predicted seconds of work on one worker, None if the model is unknown to the catalog
    price_microcents: int  # noor.jobs.money
    parallel: str | None = None  # the split the job runs on (`--parallel` text) when its model runs on k ranks

    @property
    def price_cents(self) -> float:
        return money.cents(self.price_microcents)


FREE = Quote(None, 0)
_unpriced: set[str] = set()


def perf_id(model_id: str) -> str | None:
    """The catalog architecture a Noor model id runs: the one its registry entry names (an installed diffusers
    model's `perf_id`, see `noor models add`), else its own id when the catalog has it (`tiny`)."""
    try:
        named = getattr(registry.get(model_id), "perf_id", None)
    except registry.UnknownModel:
        named = None
    if named in catalog.models():
        return str(named)
    return model_id if model_id in catalog.models() else None


def quote(model_id: str, task: dict[str, Any], chip: str | catalog.Chip = "cpu-local", markup: float = 1.0) -> Quote:
    """ETA and price of one job of any kind on one worker of `chip`: the model's work from the perf model, plus
    making the output file at its size. Raises RequestError (400, naming the field) if the output cannot fit in a
    worker's memory."""
    # 1. the chip: its $/hour and its memory
    try:
        spec = chip if isinstance(chip, catalog.Chip) else catalog.chip(chip)
    except catalog.UnknownId as err:
        log.warning("cannot price on %s: %s", chip, err)
        return FREE
    # 2. the model's work (an upscale runs none), and the size of the file it writes
    model_s: float | None = 0.0
    model_memory_gb = 0.0
    plan: ParallelPlan | None = None
    if task.get("kind") == "audio":  # no pixels drawn or encoded: the sound and the mux
        latency_s = audio_s(task)
        cost_cents = latency_s * spec.usd_per_hour / 3600 * 100 * markup
        return Quote(round(latency_s, 3), money.microcents(round(cost_cents, 6), "price"))
    if task.get("kind") == "upscale":
        width, height, num_frames = int(task["width"]), int(task["height"]), int(task.get("source_frames") or 1)
    else:
        width, height, num_frames, steps = drawn_shape(model_id, task)
        splits = model_splits(model_id, task)
        model_s, model_memory_gb, plan = _model_work(model_id, (width, height, num_frames, steps), spec.id, splits)
    # 3. bounded by what a worker holds (before the unpriced return: an unpriced model is bounded too)
    check_memory(task, width, height, num_frames, model_memory_gb, spec)
    parallel = plan.text() if plan is not None else None
    if model_s is None:
        return Quote(None, 0, parallel)
    # 4. seconds, and what they cost at the chip's rate: all k chips of a k-rank worker are held for them
    latency_s = model_s + output_s(width, height, num_frames)
    chips = plan.gpus if plan is not None else 1
    cost_cents = latency_s * chips * spec.usd_per_hour / 3600 * 100 * markup
    return Quote(round(latency_s, 3), money.microcents(round(cost_cents, 6), "price"), parallel)


def audio_s(task: dict[str, Any]) -> float:
    """Seconds of an audio job: its model's steps over the clip's seconds of sound, and the mux."""
    seconds = float(task["seconds"])
    return int(task["steps"]) * seconds * AUDIO_S_PER_STEP_SECOND + seconds * MUX_S_PER_SECOND


def model_splits(model_id: str, task: dict[str, Any]) -> list[ParallelPlan]:
    """The k-rank splits this request can run on, when its model runs on k ranks (models.toml `parallel`)."""
    try:
        spec = registry.get(model_id)
    except registry.UnknownModel:
        return []
    if spec.parallel is None:
        return []
    try:
        return spec.splits(probe(spec, task))
    except TaskError as err:
        raise RequestError(400, str(err), field="parallel") from None


def _model_work(
    model_id: str, drawn: tuple[int, int, int, int | None], chip: str, splits: list[ParallelPlan]
) -> tuple[float | None, float, ParallelPlan | None]:
    """(seconds, peak GB per chip, split) of the model's own work from the perf model: on a k-rank model, the
    fastest of its `splits` that fits (the first of them when it cannot be priced); None seconds if unpriced."""
    first = splits[0] if splits else None
    arch = perf_id(model_id)
    if arch is None:
        if model_id not in _unpriced:  # once per model, not once per request
            _unpriced.add(model_id)
            log.warning("no perf model for %s: its generations carry no ETA and are not billed", model_id)
        return None, 0.0, first
    try:
        plans: list[ParallelPlan | None] = [*splits] or [None]
        estimates = [estimate_task(arch, *drawn, chip, plan) for plan in plans]
    except (catalog.UnknownId, PerfError) as err:
        log.warning("cannot price %s on %s: %s", model_id, chip, err)
        return None, 0.0, first
    fitting = [e for e in estimates if e.fits and e.latency_s is not None]
    if not fitting:
        e = estimates[0]
        log.warning("cannot price %s on %s: %s", model_id, chip, e.why_not or "no latency")
        return None, 0.0, first
    best = min(fitting, key=lambda e: e.latency_s or 0.0)
    return best.latency_s, best.peak_memory_gb, best.plan if splits else None


def output_s(width: int, height: int, num_frames: int) -> float:
    """Seconds to make the output file of that size (resample, encode, thumbnail) on a worker's host."""
    return width * height * num_frames * OUTPUT_S_PER_PIXEL


def check_memory(
    task: dict[str, Any], width: int, height: int, num_frames: int, model_memory_gb: float, chip: catalog.Chip
) -> None:
    field, value = _size_field(task, width, height, num_frames)
    if max(width, height) > MAX_OUTPUT_SIDE:
        raise RequestError(
            400,
            f"{field}: the output would be {width}x{height}, longer than {MAX_OUTPUT_SIDE} on a side, got {value!r}",
            field=field,
        )
    need_gb = model_memory_gb + width * height * num_frames * 3 * OUTPUT_COPIES / 1e9
    if chip.hbm_gb is not None and need_gb > chip.hbm_gb:
        raise RequestError(
            400,
            f"{field}: a {width}x{height} output of {num_frames} frames needs {need_gb:.1f} GB of worker memory, "
            f"a worker ({chip.id}) has {chip.hbm_gb:.1f} GB; ask for fewer pixels or frames, got {value!r}",
            field=field,
        )


def _size_field(task: dict[str, Any], width: int, height: int, num_frames: int) -> tuple[str, str]:
    """The request field that sets the output size, and its value, for error messages."""
    if task.get("kind") == "upscale":
        return "resolution", str(task.get("resolution") or f"{width}x{height}")
    return "size", f"{width}x{height}x{num_frames}"


def drawn_shape(model_id: str, task: dict[str, Any]) -> tuple[int, int, int, int | None]:
    """(width, height, frames, steps) the worker will run: the model's own rounding (an installed model
    draws sides in its multiples and t*k+1 frames) and its default steps when the request names none."""
    try:
        spec = registry.get(model_id)
    except registry.UnknownModel:
        return task["width"], task["height"], task["num_frames"], task.get("steps")
    fitted, _ = spec.fit(probe(spec, task))
    return fitted.width, fitted.height, fitted.num_frames, task.get("steps") or spec.default_steps


def probe(spec: registry.ModelSpec, task: dict[str, Any]) -> Task:
    """A stored task as the engine task the worker will run, as far as its shape and guidance go (no pixels)."""
    return Task(
        prompt="-",
        width=task["width"],
        height=task["height"],
        num_frames=task["num_frames"],
        fps=task.get("fps") or spec.default_fps,
        guidance=task.get("guidance"),
        start_frame=_KEYFRAME if task.get("start") else None,
    )


_KEYFRAME = np.zeros((1, 1, 3), np.uint8)  # keyframes matter to the shape only by being there
