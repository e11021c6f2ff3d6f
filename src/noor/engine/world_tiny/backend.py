"""The `world-tiny` interactive backend: noor-world-tiny's pipeline behind the engine's `Interactive` protocol."""

from __future__ import annotations

import threading
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from diffusers.utils import logging as diffusers_logging

from noor.engine.task import TaskError
from noor.engine.world_tiny.actions import check_actions
from noor.engine.world_tiny.pipeline import NoorWorldPipeline, Rollout
from noor.engine.world_tiny.terrain import draw_player

DEFAULT_STEPS = 4  # noise levels a frame is drawn at (then one cache pass)
OPEN_STEPS = 8  # the opening frame, drawn from the caption alone, gets more
MAX_PROMPT_CHARS = 500


def weights_dir() -> Path:
    """The weights that ship inside the package (Hugging Face layout)."""
    return Path(str(resources.files("noor.engine.world_tiny") / "weights"))


class TinyWorld:
    """One open world of noor-world-tiny (`World`)."""

    def __init__(self, backend: WorldTinyBackend, rollout: Rollout):
        self._backend, self._rollout = backend, rollout
        self._frame = self._render()
        self._steps = 0

    def _render(self) -> np.ndarray:
        assert self._rollout.latents is not None
        return draw_player(self._backend.pipe.decode(self._rollout.latents)[0])

    @property
    def frame(self) -> np.ndarray:
        return self._frame

    @property
    def steps(self) -> int:
        return self._steps

    @property
    def position(self) -> tuple[int, int]:
        """The view's top-left latent pixel on the world's torus (one step moves it by one)."""
        return self._rollout.x, self._rollout.y

    @property
    def remembered(self) -> float:
        """The share of the world's torus its memory holds."""
        return self._rollout.canvas.seen

    def step(self, action: str) -> np.ndarray:
        check_actions([action])
        with self._backend.lock:  # one pipeline (its scheduler is stateful) shared by the worlds of a backend
            self._backend.pipe.step(self._rollout, action, self._backend.steps)
            self._frame = self._render()
        self._steps += 1
        return self._frame

    def close(self) -> None:
        self._rollout.cache.layers.clear()


class WorldTinyBackend:
    """Loads noor-world-tiny once; opens worlds (`Interactive`). `memory=False` is the eval's baseline: the
    model keeps only its context window of frames, not the canvas."""

    def __init__(
        self,
        weights: Path | None = None,
        threads: int | None = None,
        steps: int = DEFAULT_STEPS,
        open_steps: int = OPEN_STEPS,
        memory: bool = True,
    ):
        folder = Path(weights) if weights else weights_dir()
        if not (folder / "model_index.json").is_file():
            raise FileNotFoundError(
                f"no noor-world-tiny weights in {folder} (model_index.json missing): train them with "
                "`noor train world -o DIR` and point NOOR_WORLD_TINY_WEIGHTS at DIR"
            )
        if threads:
            torch.set_num_threads(threads)
        diffusers_logging.disable_progress_bar()  # loading takes well under a second: no bar on the CLI's stderr
        verbosity = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()  # AutoencoderTiny saves a config key it then warns about on load
        try:
            self.pipe = NoorWorldPipeline.from_pretrained(folder)
        finally:
            diffusers_logging.set_verbosity(verbosity)
        self.pipe.set_progress_bar_config(disable=True)
        self.steps, self.open_steps, self.memory = steps, open_steps, memory
        self.lock = threading.Lock()

    def start(self, prompt: str, seed: int = 0, start_image: np.ndarray | None = None) -> TinyWorld:
        if not prompt.strip() and start_image is None:
            raise TaskError("prompt", prompt, "must not be empty (or give a start image)")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise TaskError("prompt", f"{prompt[:20]}…", f"must be at most {MAX_PROMPT_CHARS} characters")
        if seed < 0:
            raise TaskError("seed", seed, "must be 0 or more")
        if start_image is not None and (
            start_image.ndim != 3 or start_image.shape[2] < 3 or min(start_image.shape[:2]) < 16
        ):
            raise TaskError("start_image", tuple(start_image.shape), "must be an RGB image of at least 16x16 pixels")
        with self.lock:
            rollout = self.pipe.open(prompt, seed, start_image, memory=self.memory, steps=self.open_steps)
            return TinyWorld(self, rollout)


def walk(world: TinyWorld, actions: list[str]) -> np.ndarray:
    """The opening frame and one frame per action: (len(actions) + 1, 64, 64, 3) uint8."""
    check_actions(actions)
    return np.stack([world.frame] + [world.step(a) for a in actions])
