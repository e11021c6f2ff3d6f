"""An installed diffusers model as a registry `ModelSpec`: its capabilities, defaults, and request mapping.

The mapping is the same at create time (`check`, for notes and refusals) and in the worker (`fit`, for
the shape the pipeline is asked for), so what a request was told is what it gets.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import ClassVar

from noor.engine.diffusers import installed, keyframes
from noor.engine.diffusers.families import Geometry, fit_frames, round_to
from noor.engine.diffusers.parallel import Denoiser, ParallelError, parse
from noor.engine.registry import CAPABILITIES, EDIT, KEYFRAMES, REFRAME, Limits, ModelSpec
from noor.engine.task import Task, TaskError
from noor.perf.parallelism import ParallelPlan


@dataclass(frozen=True)
class DiffusersSpec(ModelSpec):
    geometry: Geometry = field(default_factory=lambda: Geometry(16, 4))
    end_needs_start: bool = True
    needs_end: bool = False
    perf_id: str | None = None  # the catalog architecture that prices its generations (api.pricing)
    entry: installed.InstalledModel | None = field(default=None, repr=False)

    def splits(self, task: Task, plan: ParallelPlan | None = None) -> list[ParallelPlan]:
        """The concrete splits of `plan` (default: the model's own; auto=K: each K-rank split this request can
        run, see `parallel.Denoiser.splits`); [] on one rank. TaskError naming why when none can."""
        plan = plan or self.parallel
        if plan is None or plan.gpus == 1 or self.source is None:
            return []
        fitted, _ = self.fit(task)
        positions = self.geometry.positions(fitted.width, fitted.height, fitted.num_frames)
        tokens = positions["num_frames"] * positions["height"] * positions["width"]
        guidance = self.default_guidance if task.guidance is None else task.guidance
        try:
            return Denoiser.read(Path(self.source)).splits(plan, tokens, guidance)
        except ParallelError as err:
            raise TaskError("parallel", plan.text(), str(err).split(": ", 1)[1]) from None

    def fit(self, task: Task) -> tuple[Task, list[str]]:
        """Round the size to the model's multiple and the length to its `t*k + 1` frames, saying so."""
        g, notes = self.geometry, []
        width, height = round_to(task.width, g.spatial), round_to(task.height, g.spatial)
        if g.fixed_size is not None:
            width, height = g.fixed_size
            if (width, height) != (task.width, task.height):
                notes.append(f"{self.id} draws only {width}x{height}: {task.width}x{task.height} drawn at that size")
        elif g.target_side and not task.is_image:
            width, height = g.drawn_size(task.width, task.height)
            if (width, height) != (task.width, task.height):
                notes.append(
                    f"{self.id} draws about {g.target_side}x{g.target_side} pixels at the request's aspect ratio:"
                    f" {task.width}x{task.height} drawn at {width}x{height}"
                )
        elif (width, height) != (task.width, task.height):
            notes.append(
                f"{self.id} draws sides in multiples of {g.spatial}:"
                f" {task.width}x{task.height} rounded to {width}x{height}"
            )
        num_frames = fit_frames(task.num_frames, g.temporal) if not task.is_image else 1
        if num_frames != task.num_frames:
            notes.append(
                f"{self.id} draws {g.temporal}k+1 frames: {task.num_frames} rounded to {num_frames}"
                f" ({num_frames / task.fps:.2f} s at {task.fps} fps)"
            )
        return replace(task, width=width, height=height, num_frames=num_frames), notes

    def drawn_frames(self, task: Task) -> int:
        """The frames it draws for `task`: its length rounded to the model's `t*k + 1` (`fit`)."""
        return self.fit(task)[0].num_frames

    pin_slot: ClassVar[str] = "latent frame"

    def pin_slots(self, task: Task) -> list[int]:
        """A pin's slot is the latent frame its drawn frame is encoded into (`keyframes.latent_frame`)."""
        temporal = self.geometry.temporal
        return [keyframes.latent_frame(frame, temporal) for frame in super().pin_slots(task)]

    def check(self, task: Task) -> list[str]:
        if task.loop and "loop" in self.capabilities and task.start_frame is None:
            raise TaskError("loop", True, f"model {self.id!r} loops back to a start frame; give one (frame0)")
        if task.end_frame is not None and task.start_frame is None and self.end_needs_start:
            raise TaskError("end_frame", True, f"model {self.id!r} needs a start frame with an end frame")
        if self.needs_end and task.start_frame is not None and task.end_frame is None and not task.loop:
            raise TaskError("end_frame", None, f"model {self.id!r} draws between a start and an end frame; give both")
        notes = super().check(task)
        if task.operation in (EDIT, REFRAME) and not task.is_image and "t2v" not in self.capabilities:
            raise TaskError(
                "num_frames", task.num_frames, f"model {self.id!r} draws images: it can {task.operation} an image only"
            )
        fitted, _ = self.fit(task)
        if fitted.num_frames > self.limits.max_frames:
            raise TaskError("num_frames", task.num_frames, f"model {self.id!r} makes at most {self.limits.max_frames}")
        if max(fitted.width, fitted.height) > self.limits.max_side:
            raise TaskError("width", task.width, f"model {self.id!r} draws sides up to {self.limits.max_side}")
        if self.geometry.max_positions:
            wanted = self.geometry.positions(fitted.width, fitted.height, fitted.num_frames)
            for name, positions in wanted.items():
                if positions > self.geometry.max_positions:
                    raise TaskError(
                        name,
                        getattr(task, name),
                        f"model {self.id!r} has rotary embeddings for {self.geometry.max_positions} positions per axis"
                        f" (rope_max_seq_len) and this needs {positions}",
                    )
        if task.keyframes:  # two pins in one latent frame are refused; where each is drawn is noted
            note = keyframes.placed(task, fitted.num_frames, self.geometry.temporal)
            notes.extend([note] if note else [])
        self.splits(task)  # a request the model's split cannot run is refused here, with the reason
        return notes


def spec_of(model: installed.InstalledModel) -> DiffusersSpec:
    from noor.engine.diffusers.backend import DiffusersBackend

    family = model.spec_family
    d = model.defaults()
    capabilities = family.capabilities & frozenset((*CAPABILITIES, EDIT, REFRAME, KEYFRAMES))
    geometry = family.geometry(Path(model.path))
    return DiffusersSpec(
        id=model.id,
        description=f"{family.title}; {model.dtype}",
        load=partial(DiffusersBackend, model),
        capabilities=capabilities,
        native_width=d["width"],
        native_height=d["height"],
        native_frames=d["frames"],
        default_steps=d["steps"],
        default_guidance=d["guidance"],
        default_fps=d["fps"],
        # an image model keeps the default frame limit, so a video request is refused as "cannot do t2v"
        limits=Limits(
            max_side=family.max_side,
            min_side=geometry.spatial,
            max_frames=family.max_frames if family.kind == "video" else Limits().max_frames,
        ),
        family=family.name,
        source=model.path,
        geometry=geometry,
        end_needs_start=family.end_needs_start,
        needs_end=family.needs_end,
        perf_id=model.perf_id,
        entry=model,
        parallel=parse(model.parallel) if model.parallel else None,
        can_split=True,
        device=model.device,
    )


_specs: tuple[tuple[str, int, int, int], dict[str, ModelSpec]] | None = None


def installed_specs() -> dict[str, ModelSpec]:
    """models.toml's entries as specs. Every lookup checks the file (another process may add a model),
    but it and the weights' config files are read again only when the file has changed."""
    global _specs
    path = installed.config_path()
    try:
        stat = path.stat()
    except FileNotFoundError:
        return {}
    version = (str(path), stat.st_ino, stat.st_mtime_ns, stat.st_size)  # `save` replaces: a new inode
    if _specs is None or _specs[0] != version:
        _specs = (version, {mid: spec_of(m) for mid, m in installed.load(path).items()})
    return _specs[1]
