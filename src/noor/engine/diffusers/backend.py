"""A diffusers pipeline behind the engine's Backend protocol: load once, then one call per task."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from noor.engine.backend import Preview, Progress
from noor.engine.diffusers import concepts as trained
from noor.engine.diffusers import edits
from noor.engine.diffusers import keyframes as pinned
from noor.engine.diffusers import options as opts
from noor.engine.diffusers import parallel as par
from noor.engine.diffusers.families import Family, mode_of
from noor.engine.diffusers.installed import InstalledModel, resolve_device
from noor.engine.diffusers.preview import decode as decode_preview
from noor.engine.diffusers.preview import preview_steps
from noor.engine.diffusers.spec import spec_of
from noor.engine.task import Media, Task
from noor.perf.parallelism import ParallelPlan


def _pil(frame: np.ndarray | None, width: int, height: int) -> Image.Image | None:
    """A keyframe at the size the clip is drawn at (the pipelines' own preprocessing then keeps it)."""
    if frame is None:
        return None
    image = Image.fromarray(frame)
    return image if image.size == (width, height) else image.resize((width, height), Image.Resampling.LANCZOS)


def keyframe_kwargs(style: str, start: Image.Image | None, end: Image.Image | None, num_frames: int) -> dict[str, Any]:
    """How a start and end frame reach each family's pipeline."""
    if style == "image":
        return {"image": start}
    if style == "image+last_image":  # Wan I2V / FLF2V
        return {"image": start, "last_image": end}
    if style == "ltx_conditions":
        from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition

        conditions = [LTXVideoCondition(image=start, frame_index=0)] if start is not None else []
        if end is not None:
            conditions.append(LTXVideoCondition(image=end, frame_index=num_frames - 1))
        return {"conditions": conditions}
    return {}


def to_uint8(frames: Any) -> np.ndarray:
    """(T, H, W, 3) or (H, W, 3) floats in [0, 1] -> (T, H, W, 3) uint8."""
    array = np.asarray(frames, dtype=np.float32)
    if array.ndim == 3:
        array = array[None]
    return (np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8)


@dataclass(frozen=True)
class _Call:
    """A task as this backend draws it (`DiffusersBackend._call`): at `fitted`'s shape, by `pipe` (the family's
    pipeline for its mode, its operation or its pins), in `steps` steps, of which the pipeline runs `runs`."""

    task: Task
    fitted: Task
    notes: list[str]  # what the mapping changed (`DiffusersSpec.fit`); the drawing adds its own
    mode: str  # the family's mode by the keyframes (`mode_of`): "t2v", "i2v" or "image"
    start: Image.Image | None  # the keyframes at the drawn size
    end: Image.Image | None
    pipe: Any
    steps: int
    work: edits.Work | None  # an edit or a reframe
    pins: pinned.Pins | None  # keyframes at indexes

    @property
    def runs(self) -> int:
        """The denoising steps the pipeline runs: an edit's from its level on (`edits.Work.runs`), else all."""
        return self.work.runs if self.work else self.steps


class DiffusersBackend:
    """One installed model: its pipeline(s) loaded once, with the entry's memory and speed options.

    With a `parallel` plan of k > 1 ranks, this is one rank of k: the process group is initialised (see
    `noor.runtime.ranks`), every rank makes the same calls, and each returns the same media."""

    def __init__(self, model: InstalledModel, threads: int | None = None, parallel: ParallelPlan | None = None):
        import diffusers
        import torch
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()
        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.model = model
        self.spec = spec_of(model)
        self.family: Family = model.spec_family
        self.device = resolve_device(model.device)
        self.options = model.options
        # 1. the pipeline class the checkpoint names (or the family's first), loaded once
        index_class = _index_class(Path(model.path))
        first = next(
            (m for m, c in self.family.pipelines.items() if c == index_class), next(iter(self.family.pipelines))
        )
        cls = getattr(diffusers, self.family.pipelines[first])
        self.pipes: dict[str, Any] = {first: cls.from_pretrained(model.path, dtype=getattr(torch, model.dtype))}
        # 2. placement (offload is a load-time choice), then the switchable options
        opts.load_time(self.pipes[first], self.options, self.device)
        self.pipes[first].set_progress_bar_config(disable=True)
        opts.apply(self.pipes[first], self.options)
        # 3. split across ranks (modes loaded later share this transformer, so they run split too)
        self.parallel = parallel if parallel is not None and parallel.gpus > 1 else None
        self.ranks: par.Ranks | None = None
        if self.parallel is not None:
            self.split = par.family_plan(type(self.pipes[first].transformer).__name__)
            self.ranks = par.enable(self.pipes[first], self.parallel, self.split)

    def pipe(self, mode: str) -> Any:
        """The pipeline for a mode; other modes share the loaded components (`from_pipe`, no copy)."""
        if mode not in self.pipes:
            import diffusers

            cls = getattr(diffusers, self.family.pipelines[mode])
            self.pipes[mode] = cls.from_pipe(next(iter(self.pipes.values())))
            self.pipes[mode].set_progress_bar_config(disable=True)
        return self.pipes[mode]

    def check_concept(self, path: Path) -> None:
        """ValueError with a one-line reason when the adapter at `path` does not fit this model's transformer."""
        trained.check_concept(self.model, path)

    def configure(self, options: opts.Options) -> None:
        """Switch VAE tiling/slicing, attention backend and cache on the loaded model (offload stays)."""
        options.check(self.device)
        if options.offload != self.options.offload:
            raise ValueError(
                f"offload: chosen when the model is loaded ({self.options.offload}), got {options.offload!r}"
            )
        opts.apply(next(iter(self.pipes.values())), options, previous=self.options)
        self.options = options

    def generate(
        self, tasks: Sequence[Task], progress: Progress | None = None, preview: Preview | None = None
    ) -> list[Media]:
        # every task's pipeline and source first: progress counts the steps the pipelines will really run (an edit
        # only those from its level)
        calls = [self._call(task) for task in tasks]
        total = sum(call.runs for call in calls)
        done = 0

        def on_step() -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, total)  # may raise Cancelled: the pipeline stops between steps

        # previews follow the first task's clip, as the engine's Preview contract says
        return [self._one(call, on_step, preview if i == 0 else None) for i, call in enumerate(calls)]

    def _call(self, task: Task) -> _Call:
        """The shape the model draws (the same mapping as at create time), the pipeline, and the task's source
        (an edit or a reframe: `edits.Work`) or pins (keyframes at indexes)."""
        fitted, notes = self.spec.fit(task)
        w, h = fitted.width, fitted.height
        start = _pil(task.start_frame, w, h)
        end = start if task.loop else _pil(task.end_frame, w, h)
        mode = mode_of(self.family, start=start is not None, end=end is not None, image=fitted.is_image)
        pins = pinned.Pins.of(task, fitted, self.spec.geometry.temporal)
        # the pipeline's key in `Family.pipelines`: an edit's and a reframe's by the operation's name
        key = task.operation if task.operation in edits.OPERATIONS else pins.mode if pins else mode
        pipe = self.pipe(key)
        steps = task.steps or self.spec.default_steps
        work = edits.Work.of(pipe, self.family.kind, task, fitted, steps)
        return _Call(task, fitted, notes, mode, start, end, pipe, steps, work, pins)

    def _one(self, call: _Call, on_step: Callable[[], None], preview: Preview | None = None) -> Media:
        torch = self.torch
        # 1. the shape, the pipeline and the source (`_call`)
        task, fitted, notes, pipe, work, pins = call.task, call.fitted, call.notes, call.pipe, call.work, call.pins
        w, h, n = fitted.width, fitted.height, fitted.num_frames
        # 2. the call, with only the arguments this pipeline takes
        kwargs: dict[str, Any] = {
            "prompt": task.prompt,
            "negative_prompt": task.negative_prompt or None,
            "width": w,
            "height": h,
            "num_frames": n,
            "frame_rate": task.fps,  # LTX conditions on it
            "num_inference_steps": call.steps,
            "guidance_scale": self.spec.default_guidance if task.guidance is None else task.guidance,
            "generator": torch.Generator().manual_seed(task.seed),
            "output_type": "np",
        }
        if call.mode == "i2v":
            kwargs |= keyframe_kwargs(self.family.keyframes, call.start, call.end, n)
        if work:
            kwargs |= work.kwargs(pipe, kwargs)
        if pins:
            kwargs |= pins.kwargs(pipe)
        params = inspect.signature(pipe.__call__).parameters
        if self.family.name == "hunyuanvideo" and not pipe.transformer.config.guidance_embeds:
            # a checkpoint not guidance-distilled: the guidance is true CFG, with an empty negative prompt if none
            kwargs |= {"true_cfg_scale": kwargs["guidance_scale"], "negative_prompt": task.negative_prompt}
        kwargs = {k: v for k, v in kwargs.items() if k in params and v is not None}
        # 3. denoise, reporting each step (and stopping between steps when cancelled); now and then offer a
        # preview of the latents so far, which the receiver decodes only if it wants one (engine.backend.Preview)
        offered = preview_steps(call.runs)
        step = 0

        def after_step(latents: Any) -> None:
            nonlocal step
            step += 1
            on_step()
            if preview is not None and step in offered and latents is not None:
                preview(lambda: decode_preview(pipe, latents, w, h, n))

        opts.reset_cache_state(pipe)
        with (
            trained.loaded(pipe, task.concepts),  # this task's adapters, unloaded after it
            _step_reporter(pipe, params, after_step, kwargs),
            self._guidance_split(pipe, task, kwargs),
            work.during(pipe, kwargs, task.seed) if work else contextlib.nullcontext(),
        ):
            out = work.call(pipe, kwargs) if work else pipe(**kwargs)
        # 4. to uint8 frames
        frames = to_uint8(out.images[0] if hasattr(out, "images") else out.frames[0])
        if work:
            frames = work.finish(frames, notes)
        elif pins:
            frames = pins.finish(frames, notes)
        elif frames.shape[1:3] != (h, w):
            notes.append(f"{self.spec.id} drew {frames.shape[2]}x{frames.shape[1]} for {w}x{h}")
        return Media(frames=frames, fps=task.fps, notes=notes)

    @contextlib.contextmanager
    def _guidance_split(self, pipe: Any, task: Task, kwargs: dict[str, Any]) -> Iterator[None]:
        """cfg=2: the call runs without the pipeline's own guidance, both branches' prompts encoded here and each
        rank computing one branch (`parallel.GuidanceSplit`)."""
        if self.ranks is None or self.parallel is None or self.parallel.cfg != 2:
            yield
            return
        scale = kwargs[self.split.guidance_kwarg]
        embeds = par.encode_for_guidance(pipe, self.split, task.prompt, task.negative_prompt)
        for key in ("prompt", "negative_prompt"):
            kwargs.pop(key, None)
        assert self.split.guidance_args is not None
        kwargs.update({pos: embeds[pos] for _, pos, _ in self.split.guidance_args})
        kwargs[self.split.guidance_kwarg] = 1.0
        split = par.GuidanceSplit(pipe.transformer, self.ranks, self.split, embeds, scale)
        try:
            yield
        finally:
            split.remove()


def _index_class(path: Path) -> str:
    import json

    return str(json.loads((path / "model_index.json").read_text()).get("_class_name", ""))


class _step_reporter:
    """Calls `on_step(latents)` after each denoising step: through `callback_on_step_end` where the pipeline has
    it, else by wrapping its scheduler's `step` (one call per denoising step, e.g. HunyuanVideo 1.5)."""

    def __init__(self, pipe: Any, params: Any, on_step: Callable[[Any], None], kwargs: dict[str, Any]):
        self.pipe, self.on_step = pipe, on_step
        self.wrapped = "callback_on_step_end" not in params
        if not self.wrapped:
            kwargs["callback_on_step_end"] = self.callback

    def callback(self, pipe: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        self.on_step(tensors.get("latents"))  # every pipeline's default callback tensors
        return tensors

    def __enter__(self) -> _step_reporter:
        if self.wrapped:
            scheduler = self.pipe.scheduler
            step = scheduler.step

            def counted(*args: Any, **kw: Any) -> Any:
                result = step(*args, **kw)
                self.on_step(result[0] if isinstance(result, tuple) else result.prev_sample)
                return result

            scheduler.step = counted
        return self

    def __exit__(self, *exc: object) -> None:
        if self.wrapped:
            del self.pipe.scheduler.step  # the instance attribute; the class method shows through again
