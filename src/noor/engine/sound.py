"""Sound for a clip: an audio model makes `seconds` of sound for a prompt, which `media.mux_audio` puts into the MP4.

An audio model is not a video model: it takes a prompt, a length in seconds and a seed, and gives a waveform
at its own sample rate. So it has its own spec (`AudioSpec`, beside `ModelSpec` and `WorldSpec`) and its own
lookups in the registry (`registry.audio_models`, `registry.get_audio`). The open ones are installed like the
video families (`noor models add ... --family stable-audio-open`, `noor.engine.diffusers.audio`).

The worker's path, for one clip:

    spec = registry.get_audio(model_id)        # or registry.default_audio(): the first installed one
    request = SoundRequest(prompt, seconds=clip_seconds, seed=seed)
    spec.check(request)                         # TaskError naming the field, before anything is queued
    sound = spec.load(threads=N).generate(request)   # load once per worker, then one call per clip
    media.mux_audio(video_path, sound.waveform, sound.sample_rate, out_path)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from noor.engine.backend import Progress
from noor.engine.task import TaskError

MAX_STEPS = 200  # Stable Audio Open's model card runs 100-200 steps


@dataclass(frozen=True)
class SoundRequest:
    prompt: str
    seconds: float  # the length asked for; the waveform has round(seconds * sample_rate) samples
    seed: int = 0
    negative_prompt: str = ""
    steps: int | None = None  # None: the model's default
    guidance: float | None = None


@dataclass(frozen=True)
class Sound:
    waveform: np.ndarray  # (channels, samples) float32 in [-1, 1]
    sample_rate: int  # Hz
    notes: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.waveform.shape[1] / self.sample_rate


class SoundBackend(Protocol):
    """A loaded audio model: one call per request; `progress(done, total)` after each denoising step (it may raise
    to stop between steps)."""

    def generate(self, request: SoundRequest, progress: Progress | None = None) -> Sound: ...


@dataclass(frozen=True)
class AudioSpec:
    id: str
    description: str
    load: Callable[..., SoundBackend] = field(repr=False)  # load(threads=N), once per worker
    family: str
    sample_rate: int  # Hz, of the waveform it gives
    channels: int  # 1 mono, 2 stereo
    max_seconds: float  # the longest sound it makes in one call (its latent length, read from the weights)
    default_steps: int
    default_guidance: float
    source: str  # where the weights are
    min_seconds: float = 0.0  # the shortest it makes (AudioLDM 2: one latent); 0: any length over 0
    max_steps: int = MAX_STEPS
    max_prompt_chars: int = 5000

    def check(self, request: SoundRequest) -> None:
        """Raise `TaskError` naming the field and value for a request this model cannot take."""
        if not request.prompt.strip():
            raise TaskError("prompt", request.prompt, "must not be empty")
        if len(request.prompt) > self.max_prompt_chars:
            raise TaskError(
                "prompt", f"<{len(request.prompt)} characters>", f"must be at most {self.max_prompt_chars} characters"
            )
        if not 0 < request.seconds <= self.max_seconds:
            raise TaskError(
                "seconds", request.seconds, f"model {self.id!r} makes more than 0 and at most {self.max_seconds:g} s"
            )
        if request.seconds < self.min_seconds:
            raise TaskError("seconds", request.seconds, f"model {self.id!r} makes at least {self.min_seconds:g} s")
        if round(request.seconds * self.sample_rate) < 1:
            raise TaskError("seconds", request.seconds, f"is less than one sample at {self.sample_rate} Hz")
        if request.steps is not None and not 1 <= request.steps <= self.max_steps:
            raise TaskError("steps", request.steps, f"must be between 1 and {self.max_steps}")
        if request.guidance is not None and not 0.0 <= request.guidance <= 30.0:
            raise TaskError("guidance", request.guidance, "must be between 0 and 30")
        if not 0 <= request.seed < 2**63:
            raise TaskError("seed", request.seed, "must be between 0 and 2**63-1")
