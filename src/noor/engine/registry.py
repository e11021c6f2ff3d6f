"""The models Noor can run: an id -> what the model can do, its limits and defaults, and a loader.

The CLI and the API check a task against its `ModelSpec` before any work is queued, so a request a
model cannot do is refused up front with the field and value named. `tiny` and `resample` (the Lanczos
upscaler) are built in, and one interactive world model, `world-tiny` (`WorldSpec`: a stream of frames, not a
batch of tasks, `noor.engine.interactive`); the models in the data dir's `models.toml` (`noor models add`) are
read on every lookup.
Workers load a model through its spec (`ModelSpec.load`), so they need not know any backend class.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from noor.engine.backend import Backend
from noor.engine.interactive import Interactive, UnknownWorldModel, WorldSpec
from noor.engine.resample import ResampleBackend
from noor.engine.sound import AudioSpec
from noor.engine.task import Task, TaskError, nearest_frames
from noor.perf.parallelism import ParallelPlan

CAPABILITIES = ("t2v", "i2v", "end_frame", "extend", "loop", "image")  # what a generating model may declare
UPSCALE = "upscale"  # resizing a finished clip (`Task.source`): nothing is drawn, no prompt
# work on a finished clip (`Task.source`) that a model declares beside CAPABILITIES, never by default: an edit
# redraws it under a new prompt from a noise level (`Task.edit_mode`), a reframe draws a new canvas around it
EDIT = "edit"
REFRAME = "reframe"
# frames pinned at indexes inside the clip (`Task.keyframes`), declared beside CAPABILITIES, never by default: a
# model conditions on each of its frames separately (noor-tiny's per-frame noise levels)
KEYFRAMES = "keyframes"


@dataclass(frozen=True)
class Limits:
    max_side: int = 4096
    min_side: int = 16
    max_frames: int = 64
    max_steps: int = 100
    max_fps: int = 60
    max_prompt_chars: int = 5000


@dataclass(frozen=True)
class ModelSpec:
    id: str
    description: str
    # load(threads=N) -> the backend, loaded once by each worker; with `weights_option`, also load(weights=DIR)
    load: Callable[..., Backend] = field(repr=False)
    capabilities: frozenset[str] = frozenset(CAPABILITIES)
    native_width: int = 64
    native_height: int = 64
    native_frames: int = 16
    default_steps: int = 16
    default_guidance: float = 4.0
    default_fps: int = 8
    limits: Limits = Limits()
    family: str = "noor-tiny"
    source: str = "built in"  # where the weights are
    weights_option: bool = False  # its loader takes `weights=DIR`, another weights dir than the configured one
    on_every_worker: bool = False  # no weights, little memory: every worker runs it, whatever models it was given
    # what the model would tell a user about a prompt before drawing it (words it does not know, what it
    # draws poorly): notes, never refusals
    prompt_notes: Callable[[str], list[str]] | None = field(default=None, repr=False)
    # (width, height) it draws an edit's or a reframe's canvas at, when not the task's size (noted)
    canvas: Callable[[Task], tuple[int, int]] | None = field(default=None, repr=False)
    # what it does poorly when asked for a capability it has (measured, docs/noor-tiny.md): noted, never refused
    caveats: Mapping[str, str] = field(default_factory=dict)
    # the ranks each request runs on (an open model's models.toml `parallel`); None: one. `load(parallel=plan)`
    # then makes one rank of them, in a process group the caller set up (noor.runtime.ranks)
    parallel: ParallelPlan | None = None
    can_split: bool = False  # whether it runs on several ranks at all
    device: str = "cpu"  # "auto": a GPU if there is one

    def splits(self, task: Task, plan: ParallelPlan | None = None) -> list[ParallelPlan]:
        """The concrete splits of `plan` (default: the model's own) this request can run; [] on one rank.
        TaskError naming why when none can. A model that cannot split runs on one rank only."""
        plan = plan or self.parallel
        if plan is None or plan.gpus == 1:
            return []
        raise TaskError("parallel", plan.text(), f"model {self.id!r} runs on one rank only")

    def fit(self, task: Task) -> tuple[Task, list[str]]:
        """The task as this model will draw it, and notes on what differs from the request.

        noor-tiny draws at its native shape and brings it to any size and length, so the task is kept: another
        aspect is never stretched, the square is scaled to the short side and the rest filled with the clip's
        background (`noor.engine.tiny.backend.fit`). A task from a source clip (upscale) is not drawn at all."""
        notes: list[str] = []
        if task.operation == UPSCALE:
            return task, notes
        if task.operation == REFRAME:  # the canvas is drawn at the asked aspect, at the model's scale
            width, height = self.canvas(task) if self.canvas else (task.width, task.height)
            if (width, height) != (task.width, task.height):
                side = min(self.native_width, self.native_height)
                notes.append(
                    f"{self.id} draws the canvas at {width}x{height} (the source's region with a short side of about "
                    f"{side}); resized to {task.width}x{task.height}"
                )
            return task, notes
        native, wanted = (self.native_width, self.native_height), (task.width, task.height)
        if wanted != native and task.width * self.native_height != task.height * self.native_width:
            side = min(wanted)
            notes.append(
                f"{self.id} draws {native[0]}x{native[1]}: scaled to {side}x{side} in the middle of "
                f"{task.width}x{task.height}, the rest filled with its background (not stretched)"
            )
        elif wanted != native:
            notes.append(f"{self.id} draws {native[0]}x{native[1]}; resized to {task.width}x{task.height}")
        if not task.is_image and task.num_frames != self.native_frames:
            notes.append(f"{self.id} draws {self.native_frames} frames; retimed to {task.num_frames}")
            if task.keyframes:
                moved = {i: d for i, d in task.drawn_pins(self.native_frames).items() if i != d}
                listed = ", ".join(f"frame {i} at {d}" for i, d in moved.items())
                notes.append(f"{self.id} pins the clip's frames at its own {self.native_frames} frames: {listed}")
        return task, notes

    def drawn_frames(self, task: Task) -> int:
        """The frames it draws for `task`, whose pins land on them (`Task.drawn_pins`): noor-tiny's native ones."""
        return self.native_frames

    # what one pin holds of the frames it draws (`pin_slots`): two pins in one are refused
    pin_slot: ClassVar[str] = "frame"

    def pin_slots(self, task: Task) -> list[int]:
        """For each of the task's num_frames indexes, the slot a pin there lands in: two pins in one slot are
        refused (field "keyframes"). noor-tiny's slot is the drawn frame the index is retimed to."""
        return [int(d) for d in nearest_frames(self.drawn_frames(task), task.num_frames)]

    def check(self, task: Task) -> list[str]:
        """Raise `TaskError` for what this model cannot do; return notes on what will be adapted."""
        lim = self.limits
        if task.operation in ("generate", EDIT) and not task.prompt.strip():  # an upscale has none, a reframe may not
            raise TaskError("prompt", task.prompt, "must not be empty")
        if len(task.prompt) > lim.max_prompt_chars:
            raise TaskError(
                "prompt", f"<{len(task.prompt)} characters>", f"must be at most {lim.max_prompt_chars} characters"
            )
        for name, value in (("width", task.width), ("height", task.height)):
            if not lim.min_side <= value <= lim.max_side:
                raise TaskError(name, value, f"must be between {lim.min_side} and {lim.max_side}")
            if value % 2:
                raise TaskError(name, value, "must be even (H.264 needs even sides)")
        if not 1 <= task.num_frames <= lim.max_frames:
            raise TaskError("num_frames", task.num_frames, f"must be between 1 and {lim.max_frames}")
        if task.steps is not None and not 1 <= task.steps <= lim.max_steps:
            raise TaskError("steps", task.steps, f"must be between 1 and {lim.max_steps}")
        if not 1 <= task.fps <= lim.max_fps:
            raise TaskError("fps", task.fps, f"must be between 1 and {lim.max_fps}")
        if task.guidance is not None and not 0.0 <= task.guidance <= 30.0:
            raise TaskError("guidance", task.guidance, "must be between 0 and 30")
        if not 0 <= task.seed < 2**63:
            raise TaskError("seed", task.seed, "must be between 0 and 2**63-1")
        wants = {
            "i2v": task.start_frame is not None,
            "end_frame": task.end_frame is not None,
            "loop": task.loop,
            "image": task.is_image,
            "t2v": not task.is_image and task.start_frame is None and task.end_frame is None and task.source is None,
            UPSCALE: task.operation == UPSCALE,
            EDIT: task.operation == EDIT,
            REFRAME: task.operation == REFRAME,
            KEYFRAMES: bool(task.keyframes),
        }
        for capability, wanted in wants.items():
            if wanted and capability not in self.capabilities:
                raise TaskError(capability, True, f"model {self.id!r} cannot do {capability}")
        if task.is_image and (task.end_frame is not None or task.loop):
            raise TaskError("num_frames", 1, "an image has no end frame and cannot loop")
        if task.loop and task.end_frame is not None:  # the API's rule too: "Loop is not supported for end frame"
            raise TaskError("loop", True, "a loop ends on its first frame, so it cannot also be given an end frame")
        if task.keyframes:
            task.drawn_pins(self.drawn_frames(task))  # refuses two pins that land on one drawn frame
        drawn = task.operation != UPSCALE and task.prompt.strip()
        prompt_notes = self.prompt_notes(task.prompt) if self.prompt_notes and drawn else []
        caveats = [self.caveats[c] for c, wanted in wants.items() if wanted and c in self.caveats]
        return prompt_notes + caveats + self.fit(task)[1]


_REGISTRY: dict[str, ModelSpec] = {}

# Dream Machine and OpenAI model names, mapped to Noor models (NOOR_ALIASES merges over these): the API and
# the CLI accept the same names.
DEFAULT_ALIASES = {
    "ray-2": "tiny",
    "ray-flash-2": "tiny",
    "photon-1": "tiny",
    "photon-flash-1": "tiny",
    "sora-2": "tiny",
    "ray-3.2": "tiny",  # the Agents API's models
    "uni-1": "tiny",
    "uni-1-max": "tiny",
}


class UnknownModel(TaskError):
    def __init__(self, model_id: str):
        names = sorted(s.id for s in available())
        super().__init__("model", model_id, f"unknown model; available: {', '.join(names)}")


def register(spec: ModelSpec) -> None:
    _REGISTRY[spec.id] = spec


def installed() -> dict[str, ModelSpec]:
    """The models of the data dir's models.toml, as specs (re-read when the file changes: another process
    may add one)."""
    from noor.engine.diffusers.spec import installed_specs

    return installed_specs()


def get(model_id: str) -> ModelSpec:
    if model_id in _REGISTRY:
        return _REGISTRY[model_id]
    found = installed().get(model_id)
    if found is None:
        raise UnknownModel(model_id)
    return found


def available() -> list[ModelSpec]:
    """The models a generation request may name: built in and installed. Not the ones every worker carries for
    other routes (the resampler, which only `upscale` names): `on_every_worker()`."""
    every = installed() | _REGISTRY
    return [every[k] for k in sorted(every) if not every[k].on_every_worker]


def on_every_worker() -> list[ModelSpec]:
    return [spec for spec in _REGISTRY.values() if spec.on_every_worker]


def worker_models(models: Iterable[str]) -> list[str]:
    """What a worker started for `models` runs: those, and the models every worker carries."""
    return list(dict.fromkeys([*models, *(spec.id for spec in on_every_worker())]))


def built_in() -> list[str]:
    """Ids no installed model may take."""
    return sorted(_REGISTRY)


def _load_tiny(threads: int | None = None, weights: Path | None = None) -> Backend:
    """noor-tiny from `weights`, else NOOR_TINY_WEIGHTS, else the weights that ship in the package."""
    from noor.config import settings
    from noor.engine.tiny.backend import TinyBackend  # torch and diffusers: imported when a worker loads it

    return TinyBackend(weights or settings().tiny_weights, threads=threads)


def _tiny_canvas(task: Task) -> tuple[int, int]:
    from noor.engine.tiny.backend import canvas

    return canvas(task)


def _tiny_prompt_notes(prompt: str) -> list[str]:
    """The words noor-tiny does not know (of the configured weights', else the packaged ones' vocabulary), and
    that it draws one object of two (measured by `noor eval tiny`: docs/noor-tiny.md)."""
    from noor.config import settings
    from noor.engine.tiny.captions import objects_named
    from noor.engine.tiny.tokenizer import vocabulary

    notes = []
    unknown = vocabulary(settings().tiny_weights).unknown_words(prompt)
    if unknown:
        listed = ", ".join(f"'{w}'" for w in unknown)
        notes.append(f"tiny does not know {listed} and ignores {'it' if len(unknown) == 1 else 'them'}")
    if objects_named(prompt) >= 2:
        notes.append("tiny mostly draws one object where two are asked for (both right in 1 of 16 held-out prompts)")
    return notes


_WORLDS: dict[str, WorldSpec] = {}


def register_world(spec: WorldSpec) -> None:
    _WORLDS[spec.id] = spec


def worlds() -> list[WorldSpec]:
    """The interactive world models a session or `noor world run` may name."""
    return [_WORLDS[k] for k in sorted(_WORLDS)]


def get_world(model_id: str) -> WorldSpec:
    if model_id not in _WORLDS:
        raise UnknownWorldModel(model_id, sorted(_WORLDS))
    return _WORLDS[model_id]


# Sound for a clip comes from an installed audio model (`noor.engine.sound`, `noor.engine.diffusers.audio`);
# none is built in. How to add one, for the refusal when there is none:
ADD_AUDIO_MODEL = "noor models add sao --path DIR --family stable-audio-open"
AUDIO_WEIGHTS = "DIR: a diffusers Stable Audio Open weights dir, e.g. a download of stabilityai/stable-audio-open-1.0"


class NoAudioModel(TaskError):
    """A request for sound on a machine with no audio model installed; says how to add one."""

    def __init__(self, model_id: str | None = None):
        super().__init__(
            "model",
            model_id,
            f"no audio model is installed; add one with `{ADD_AUDIO_MODEL}` ({AUDIO_WEIGHTS}; docs/models.md)",
        )


class UnknownAudioModel(TaskError):
    def __init__(self, model_id: str, known: list[str]):
        super().__init__("model", model_id, f"unknown audio model; available: {', '.join(known)}")


def audio_models() -> list[AudioSpec]:
    """The installed audio models (models.toml's `audio` table), by id."""
    from noor.engine.diffusers.audio import installed_specs

    every = installed_specs()
    return [every[k] for k in sorted(every)]


def get_audio(model_id: str | None = None) -> AudioSpec:
    """An installed audio model by id; None: the first installed one. `NoAudioModel` when none is installed."""
    every = {spec.id: spec for spec in audio_models()}
    if not every:
        raise NoAudioModel(model_id)
    if model_id is None:
        return next(iter(every.values()))
    if model_id not in every:
        raise UnknownAudioModel(model_id, list(every))
    return every[model_id]


def _load_world_tiny(threads: int | None = None, weights: Path | None = None) -> Interactive:
    """noor-world-tiny from `weights`, else NOOR_WORLD_TINY_WEIGHTS, else the weights that ship in the package."""
    from noor.config import settings
    from noor.engine.world_tiny.backend import WorldTinyBackend  # torch and diffusers: imported when loaded

    return WorldTinyBackend(weights or settings().world_tiny_weights, threads=threads)


def _register_builtin() -> None:
    register_world(
        WorldSpec(
            id="world-tiny",
            description="noor-world-tiny: the built-in interactive world model (a top-down world in four biomes), CPU",
            load=_load_world_tiny,
            perf_id="noor-world-tiny",
        )
    )
    register(
        ModelSpec(
            id="tiny",
            description="noor-tiny: the built-in 3M-parameter text-to-video model (shapes in motion), CPU",
            load=_load_tiny,
            capabilities=frozenset(CAPABILITIES) | {EDIT, REFRAME, KEYFRAMES},
            weights_option=True,
            prompt_notes=_tiny_prompt_notes,
            canvas=_tiny_canvas,
            caveats={  # `noor eval tiny` on the shipped weights, 2026-12-05
                "end_frame": "tiny does not move toward an end frame: it appears at the last frame (the step into it "
                "is about 20x the clip's median step)",
                "loop": "tiny's loops snap back to the first frame at the end (the seam is about 3x the clip's median "
                "step)",
            },
            # it draws 16 frames and retimes them to any length (noted): every duration the APIs offer (Dream
            # Machine 9 s, OpenAI 12 s) at up to 60 fps fits
            limits=Limits(max_frames=720),
        )
    )
    register(
        ModelSpec(
            id="resample",
            description="Lanczos resampling of a finished video to a new size (upscale); no weights, CPU",
            load=ResampleBackend,
            capabilities=frozenset({UPSCALE}),
            # 4k (2160p) at 9:21 is 2160x5040; frames: a minute at 60 fps
            limits=Limits(max_side=8192, max_frames=3600),
            family="lanczos",
            source="built in (no weights)",
            on_every_worker=True,
        )
    )


_register_builtin()
