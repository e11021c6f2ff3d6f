"""The open audio models diffusers runs (Stable Audio Open, AudioLDM 2), installed like the video families.

`noor models add ID --path DIR --family stable-audio-open` checks the weights dir (Hugging Face layout, the
family's components, as for a video model) and records it in models.toml's `audio` table:

    [audio."sao"]
    family = "stable-audio-open"
    path = "/weights/stable-audio-open-1.0"
    dtype = "float32"
    steps = 100          # defaults a request falls back to; the family's when absent

Its sample rate, channels and longest sound are read from the weights' own configs, so a toy and the real
checkpoint follow the same code. The registry sees these entries as `AudioSpec`s (`noor.engine.sound`).
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from noor.engine import media
from noor.engine.backend import Progress
from noor.engine.diffusers import installed, weights
from noor.engine.diffusers.families import BaseFamily, read_config
from noor.engine.sound import MAX_STEPS, AudioSpec, Sound, SoundRequest


@dataclass(frozen=True, kw_only=True)
class AudioFamily(BaseFamily):
    kind: str = "audio"
    pipeline: str  # the diffusers pipeline class
    length_kwarg: str  # the pipeline's argument for the sound's length in seconds
    sample_rate: Callable[[Path], int]  # Hz, from the weights' configs
    channels: Callable[[Path], int]
    max_seconds: Callable[[Path], float]
    min_seconds: Callable[[Path], float]


def stable_audio_sample_rate(path: Path) -> int:
    return int(read_config(path, "vae").get("sampling_rate", 44100))


def stable_audio_max_seconds(path: Path) -> float:
    # StableAudioPipeline: the transformer's latent length times the VAE's hop (the product of its downsampling
    # ratios: 2048 in the release) over the sample rate, 1024 * 2048 / 44100 = 47.55 s; and the projection's
    # seconds embedding is learnt up to its max_value (512 s in the release, so the latent length rules)
    vae = read_config(path, "vae")
    hop = math.prod(vae.get("downsampling_ratios", [2, 4, 4, 8, 8]))
    latents = int(read_config(path, "transformer").get("sample_size", 1024))
    longest = latents * hop / stable_audio_sample_rate(path)
    return min(longest, float(read_config(path, "projection_model").get("max_value", longest)))


def audioldm2_sample_rate(path: Path) -> int:
    return int(read_config(path, "vocoder").get("sampling_rate", 16000))


def audioldm2_latent_seconds(path: Path) -> float:
    """The sound one latent row makes: the VAE's scale (2**(blocks - 1)) in mel frames, each the vocoder's hop (the
    product of its upsample rates) of samples: 4 * 160 / 16000 = 0.04 s in the releases. AudioLDM2Pipeline
    refuses less."""
    vae_scale = 2 ** (len(read_config(path, "vae").get("block_out_channels", [128, 256, 512, 512])) - 1)
    hop = math.prod(read_config(path, "vocoder").get("upsample_rates", [5, 4, 2, 2, 2]))
    return vae_scale * hop / audioldm2_sample_rate(path)


def audioldm2_max_seconds(path: Path) -> float:
    # AudioLDM2Pipeline's default length, the one the checkpoints were trained at: the UNet's latent height in
    # latent rows, 256 * 0.04 = 10.24 s in the releases. It takes longer, but was never trained on it.
    return int(read_config(path, "unet").get("sample_size", 256)) * audioldm2_latent_seconds(path)


AUDIO_FAMILIES: dict[str, AudioFamily] = {
    f.name: f
    for f in [
        AudioFamily(
            name="stable-audio-open",
            title="Stable Audio Open 1.0 (text-to-audio, stereo 44.1 kHz, up to 47 s)",
            pipeline="StableAudioPipeline",
            index_classes=("StableAudioPipeline",),
            components=("transformer", "vae", "text_encoder", "tokenizer", "projection_model", "scheduler"),
            length_kwarg="audio_end_in_s",
            sample_rate=stable_audio_sample_rate,
            channels=lambda path: int(read_config(path, "vae").get("audio_channels", 2)),
            max_seconds=stable_audio_max_seconds,
            min_seconds=lambda path: 0.0,
            steps=100,  # the model card's example: 200 steps, guidance 7
            guidance=7.0,
            note="stabilityai/stable-audio-open-1.0: sound effects and music, 44.1 kHz stereo, up to 47.55 s",
        ),
        AudioFamily(
            name="audioldm2",
            title="AudioLDM 2 (text-to-audio and music, mono 16 kHz, 10.24 s)",
            pipeline="AudioLDM2Pipeline",
            index_classes=("AudioLDM2Pipeline",),
            components=(
                "unet",
                "vae",
                "text_encoder",
                "text_encoder_2",
                "tokenizer",
                "tokenizer_2",
                "feature_extractor",
                "language_model",
                "projection_model",
                "vocoder",
                "scheduler",
            ),
            length_kwarg="audio_length_in_s",
            sample_rate=audioldm2_sample_rate,
            channels=lambda path: 1,  # a mel spectrogram through a HiFi-GAN vocoder: one channel
            max_seconds=audioldm2_max_seconds,
            min_seconds=audioldm2_latent_seconds,
            steps=200,  # the model card's example: 200 steps, guidance 3.5
            guidance=3.5,
            note="cvssp/audioldm2 (-large, -music): 16 kHz mono, trained on 10.24 s",
        ),
    ]
}


def detect(path: Path) -> AudioFamily | None:
    """The audio family of a weights dir, from its pipeline class; None for anything else (a video model, no
    model_index.json: the video path then says what is wrong)."""
    index_file = path / "model_index.json"
    try:
        pipeline = json.loads(index_file.read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError):
        return None
    return next((f for f in AUDIO_FAMILIES.values() if pipeline in f.index_classes), None)


def is_audio(family: str | None, path: Path) -> bool:
    """Whether `noor models add` registers an audio model: the family named is one, or none is named and the
    weights are one."""
    if family:
        return family in AUDIO_FAMILIES
    return detect(path.expanduser()) is not None


@dataclass(frozen=True)
class InstalledAudio(installed.Entry):
    noun: ClassVar[str] = "audio model"

    dtype: str = "float32"
    steps: int | None = None
    guidance: float | None = None

    @property
    def audio_family(self) -> AudioFamily:
        return get_family(self.family)


def get_family(name: str) -> AudioFamily:
    if name not in AUDIO_FAMILIES:
        raise ValueError(f"--family: unknown audio family, got {name!r}; known: {', '.join(AUDIO_FAMILIES)}")
    return AUDIO_FAMILIES[name]


def load(path: Path | None = None) -> dict[str, InstalledAudio]:
    return {mid: InstalledAudio.from_toml(mid, e) for mid, e in installed.read_table("audio", path).items()}


def validate(model: InstalledAudio, path: Path | None = None) -> InstalledAudio:
    """Check an entry against its weights and this machine; raise ValueError naming the option and value."""
    model.check_id(installed.load(path), "video model")
    weights_dir = Path(model.path).expanduser().resolve()
    family = get_family(model.family) if model.family else detect(weights_dir)
    if family is None:  # is_audio said it was one; the dir changed under us, or no family was given
        raise ValueError(f"--family: {weights_dir} holds no audio pipeline; known: {', '.join(AUDIO_FAMILIES)}")
    weights.check(weights_dir, family)
    model.checked_device()
    if model.steps is not None and not 1 <= model.steps <= MAX_STEPS:
        raise ValueError(f"--steps: must be between 1 and {MAX_STEPS}, got {model.steps}")
    if model.guidance is not None and not 0.0 <= model.guidance <= 30.0:
        raise ValueError(f"--guidance: must be between 0 and 30, got {model.guidance}")
    rate, (low, high) = family.sample_rate(weights_dir), media.AAC_RATES
    if not low <= rate <= high:  # its sound could not go into an MP4 (media.mux_audio)
        raise ValueError(f"--path: {weights_dir} makes sound at {rate} Hz; an AAC track takes {low} to {high} Hz")
    return replace(model, family=family.name, path=str(weights_dir))


def add(model: InstalledAudio, path: Path | None = None) -> InstalledAudio:
    """Validate and write one audio entry (replacing one with the same id); the video models stay as they are."""
    checked = validate(model, path)
    entries = {mid: m.to_toml() for mid, m in load(path).items()} | {checked.id: checked.to_toml()}
    installed.save(installed.load(path), path, audio=entries)
    return checked


def spec_of(model: InstalledAudio) -> AudioSpec:
    family = model.audio_family
    weights_dir = Path(model.path)
    return AudioSpec(
        id=model.id,
        description=f"{family.title}; {model.dtype}",
        load=partial(AudioPipelineBackend, model),
        family=family.name,
        sample_rate=family.sample_rate(weights_dir),
        channels=family.channels(weights_dir),
        max_seconds=family.max_seconds(weights_dir),
        min_seconds=family.min_seconds(weights_dir),
        default_steps=model.steps or family.steps,
        default_guidance=family.guidance if model.guidance is None else model.guidance,
        source=model.path,
    )


_specs: tuple[tuple[str, int, int, int], dict[str, AudioSpec]] | None = None


def installed_specs() -> dict[str, AudioSpec]:
    """models.toml's audio entries as specs, read again only when the file has changed (as the video ones)."""
    global _specs
    path = installed.config_path()
    version = installed.file_version(path)
    if version is None:
        return {}
    if _specs is None or _specs[0] != version:
        _specs = (version, {mid: spec_of(m) for mid, m in load(path).items()})
    return _specs[1]


@contextlib.contextmanager
def quiet_deprecations() -> Iterator[None]:
    """Deprecations inside diffusers' audio pipelines that a user can do nothing about (diffusers 0.42, torch 2.x,
    transformers 5): the Oobleck VAE builds its convolutions with torch's `weight_norm`, AudioLDM2 calls GPT-2 with
    `past_key_values`."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*torch\.nn\.utils\.weight_norm.* is deprecated", category=FutureWarning
        )
        warnings.filterwarnings("ignore", message=r"`past_key_values` is deprecated", category=FutureWarning)
        yield


class AudioPipelineBackend:
    """One installed audio model: its diffusers pipeline loaded once, one call per request."""

    def __init__(self, model: InstalledAudio, threads: int | None = None):
        import diffusers
        import torch
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()
        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.spec = spec_of(model)
        self.family = model.audio_family
        self.device = installed.resolve_device(model.device)
        cls = getattr(diffusers, self.family.pipeline)
        with quiet_deprecations():
            self.pipe = cls.from_pretrained(model.path, dtype=getattr(torch, model.dtype)).to(self.device)
        self.pipe.set_progress_bar_config(disable=True)

    def generate(self, request: SoundRequest, progress: Progress | None = None) -> Sound:
        # 1. validate (the API checked it already; a direct caller gets the same refusal)
        self.spec.check(request)
        steps = request.steps or self.spec.default_steps
        num_samples = round(request.seconds * self.spec.sample_rate)

        def on_step(step: int, *_: Any) -> None:
            if progress is not None:
                progress(step + 1, steps)  # may raise: the pipeline stops between steps

        # 2. denoise and decode
        with quiet_deprecations():
            out = self.pipe(
                prompt=request.prompt,
                negative_prompt=request.negative_prompt or None,
                num_inference_steps=steps,
                guidance_scale=self.spec.default_guidance if request.guidance is None else request.guidance,
                generator=self.torch.Generator().manual_seed(request.seed),
                output_type="np",
                callback=on_step,
                callback_steps=1,
                **{self.family.length_kwarg: request.seconds},
            )
        # 3. (channels, samples) float32 in [-1, 1], exactly the asked length (the pipeline cuts at whole
        # samples, int(seconds * rate), or its decoder's frames)
        waveform = np.asarray(out.audios[0], dtype=np.float32)
        if waveform.ndim == 1:  # mono pipelines give (samples,)
            waveform = waveform[None]
        notes = []
        peak = float(np.abs(waveform).max()) if waveform.size else 0.0
        if peak > 1.0:
            notes.append(f"{self.spec.id}'s waveform peaked at {peak:.2f}; clipped to [-1, 1]")
        waveform = media.fit_length(np.clip(waveform, -1.0, 1.0), num_samples)
        return Sound(waveform=np.ascontiguousarray(waveform), sample_rate=self.spec.sample_rate, notes=notes)
