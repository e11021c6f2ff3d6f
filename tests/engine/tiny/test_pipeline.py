from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from noor.engine.backend import Cancelled
from noor.engine.canvas import retime
from noor.engine.task import Task
from noor.engine.tiny.backend import TinyBackend
from noor.engine.tiny.pipeline import NoorTinyPipeline, frame_noise, keyframe_tensor


@pytest.fixture(scope="module")
def backend(toy_weights: Path) -> TinyBackend:
    return TinyBackend(toy_weights)


def test_pipeline_saves_and_loads_in_hugging_face_layout(toy_weights: Path, tmp_path: Path) -> None:
    pipe = NoorTinyPipeline.from_pretrained(str(toy_weights))
    assert (toy_weights / "model_index.json").is_file()
    assert (toy_weights / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    pipe.save_pretrained(tmp_path)
    again = NoorTinyPipeline.from_pretrained(str(tmp_path))
    for a, b in zip(pipe.transformer.parameters(), again.transformer.parameters(), strict=True):
        assert torch.equal(a, b)
    assert again.text_encoder.config.vocab == pipe.text_encoder.config.vocab
    pipe.set_progress_bar_config(disable=True)
    kwargs = {"prompt": "a red circle", "num_inference_steps": 2, "generator": torch.Generator().manual_seed(0)}
    first = pipe(**kwargs).frames
    kwargs["generator"] = torch.Generator().manual_seed(0)
    assert np.array_equal(first, again(**kwargs).frames)


def test_the_shipped_weights_are_safetensors_within_20_mb() -> None:
    """The issue's budget for weights inside the package: every tensor file safetensors, 20 MB in all."""
    from noor.engine.tiny.backend import weights_dir

    files = [f for f in weights_dir().rglob("*") if f.is_file() and f.suffix not in (".json", ".md")]
    assert files and all(f.suffix == ".safetensors" for f in files), files
    assert sum(f.stat().st_size for f in files) <= 20_000_000


def test_frame_noise_shares_the_asked_part_between_frames() -> None:
    shape = (64, 4, 8, 16, 16)  # (B, C, T, h, w)
    plain = frame_noise(shape, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(plain, torch.randn(shape, generator=torch.Generator().manual_seed(0)))  # old seeds, old clips
    mixed = frame_noise(shape, 0.5, torch.Generator().manual_seed(0))
    assert abs(mixed.std().item() - 1.0) < 0.02  # each frame is still unit Gaussian noise
    frames = mixed.transpose(1, 2).reshape(64, 8, -1)  # (B, T, C*h*w)
    corr = torch.corrcoef(frames.transpose(0, 1).reshape(8, -1))
    off_diagonal = corr[~torch.eye(8, dtype=torch.bool)]
    assert torch.all((off_diagonal - 0.5).abs() < 0.02), off_diagonal


def test_a_pipeline_keeps_its_shared_noise_through_save_and_load(toy_weights: Path, tmp_path: Path) -> None:
    pipe = NoorTinyPipeline.from_pretrained(str(toy_weights))
    assert pipe.config.shared_noise == 0.0  # the default (and what pipelines saved without the key load as)
    mixed = NoorTinyPipeline(**pipe.components, shared_noise=0.5)
    mixed.save_pretrained(tmp_path)
    again = NoorTinyPipeline.from_pretrained(str(tmp_path))
    assert again.config.shared_noise == 0.5
    kwargs = {"prompt": "a red circle", "num_inference_steps": 2, "generator": torch.Generator().manual_seed(0)}
    a = again(**kwargs).frames
    kwargs["generator"] = torch.Generator().manual_seed(0)
    assert not np.array_equal(a, pipe(**kwargs).frames)  # the starting noise differs, so the clip does


@pytest.mark.slow
def test_image_first_draws_the_first_frame_as_an_image_then_the_clip_from_it(toy_weights: Path, tmp_path: Path) -> None:
    plain = NoorTinyPipeline.from_pretrained(str(toy_weights))
    assert plain.config.image_first is False  # the default (and what pipelines saved without the key load as)
    NoorTinyPipeline(**plain.components, image_first=True).save_pretrained(tmp_path)
    pipe = NoorTinyPipeline.from_pretrained(str(tmp_path))
    assert pipe.config.image_first is True
    pipe.set_progress_bar_config(disable=True)
    steps: list[int] = []

    def run(pipeline: NoorTinyPipeline, frames: int, **kwargs: object) -> np.ndarray:
        def count(p: object, i: int, t: object, kw: dict[str, object]) -> dict[str, object]:
            steps.append(i)
            return kw

        return pipeline(
            "a red circle moves left",
            num_frames=frames,
            num_inference_steps=3,
            generator=torch.Generator().manual_seed(5),
            callback_on_step_end=count,
            **kwargs,
        ).frames[0]

    image = run(pipe, 1)
    clip = run(pipe, 8)
    assert np.allclose(clip[0], image[0], atol=1e-5)  # stage 1 is the image the same seed gives (to float error)
    assert not np.allclose(clip[0], run(plain, 8)[0], atol=1e-2)  # a one-stage clip draws frame 0 with the rest
    assert steps == [0, 1, 2] * 3  # the callback (progress, previews) sees the clip's steps, not stage 1's
    looped = run(pipe, 8, loop=True)
    assert np.allclose(looped[0], image[0], atol=1e-5) and np.allclose(looped[-1], image[0], atol=1e-5)
    start = np.zeros((64, 64, 3), np.uint8)
    start[20:40, 10:30] = (225, 35, 35)
    given = run(pipe, 8, start_frame=start)  # a given start frame is used as it is, with no stage 1
    assert np.array_equal(given, run(plain, 8, start_frame=start))


def test_clip_guidance_guides_clips_and_guidance_scale_images_and_first_frames(toy_weights: Path) -> None:
    pipe = NoorTinyPipeline.from_pretrained(str(toy_weights))
    pipe.set_progress_bar_config(disable=True)
    assert pipe.config.clip_guidance_scale is None  # the default: clips take the call's guidance_scale

    def run(frames: int, **kwargs: object) -> np.ndarray:
        generator = torch.Generator().manual_seed(3)
        return pipe("a red circle", num_frames=frames, num_inference_steps=2, generator=generator, **kwargs).frames

    unguided_clip = run(8, guidance_scale=1.0)
    assert np.allclose(run(8, guidance_scale=4.0, clip_guidance_scale=1.0), unguided_clip, atol=1e-5)
    assert not np.allclose(run(8, guidance_scale=4.0), unguided_clip, atol=1e-3)
    image = run(1, guidance_scale=4.0)
    assert np.array_equal(run(1, guidance_scale=4.0, clip_guidance_scale=1.0), image)  # an image is no clip
    pipe.register_to_config(clip_guidance_scale=1.0)  # the pipeline's own setting, when the call gives none
    assert np.allclose(run(8, guidance_scale=4.0), unguided_clip, atol=1e-5)
    assert np.allclose(
        run(8, guidance_scale=1.0, clip_guidance_scale=4.0),
        run(8, guidance_scale=4.0, clip_guidance_scale=4.0),
        atol=1e-5,
    )


@pytest.mark.slow
def test_clip_guidance_runs_only_inside_its_noise_interval(toy_weights: Path) -> None:
    """clip_guidance_min_sigma: a clip's steps at noise >= it run the conditional and unconditional passes,
    the steps below one conditional pass (a guidance interval); 0 guides every step."""
    pipe = NoorTinyPipeline.from_pretrained(str(toy_weights))
    pipe.set_progress_bar_config(disable=True)
    assert pipe.config.clip_guidance_min_sigma == 0.0  # the default: every step
    batches: list[int] = []
    pipe.transformer.register_forward_hook(lambda module, args, out: batches.append(args[0].shape[0]))

    def run(guidance_scale: float = 4.0, **kwargs: object) -> np.ndarray:
        batches.clear()
        generator = torch.Generator().manual_seed(3)
        prompt = "a red circle moves left"
        return pipe(
            prompt, num_frames=8, num_inference_steps=6, guidance_scale=guidance_scale, generator=generator, **kwargs
        ).frames

    everywhere = run()
    assert batches == [2] * 6
    sigmas = [float(s) for s in pipe.scheduler.sigmas[:6]]
    middle = (sigmas[2] + sigmas[3]) / 2
    interval = run(clip_guidance_min_sigma=middle)
    assert batches == [2, 2, 2, 1, 1, 1]  # the three noisiest steps guided, the three others not
    unguided = run(guidance_scale=1.0)
    assert batches == [1] * 6
    assert not np.allclose(interval, everywhere, atol=1e-4) and not np.allclose(interval, unguided, atol=1e-4)
    pipe.register_to_config(clip_guidance_min_sigma=middle)  # the pipeline's own setting, when the call gives none
    assert np.array_equal(run(), interval) and batches == [2, 2, 2, 1, 1, 1]
    with pytest.raises(ValueError, match=r"clip_guidance_min_sigma must be between 0 and 1, got 1\.5"):
        run(clip_guidance_min_sigma=1.5)


def test_same_seed_same_clip_other_seed_other_clip(backend: TinyBackend) -> None:
    a, b, c = backend.generate(
        [
            Task("a red circle", seed=1, steps=2),
            Task("a red circle", seed=1, steps=2),
            Task("a red circle", seed=2, steps=2),
        ]
    )
    other = np.abs(a.frames.astype(int) - c.frames.astype(int))
    assert np.array_equal(a.frames, b.frames) and other.mean() > 1.0, other.mean()  # the backend is batch-invariant


def test_batched_equals_alone(backend: TinyBackend) -> None:
    tasks = [Task("a red circle moves left", seed=3, steps=2), Task("مربع أزرق", seed=4, steps=2)]
    together = backend.generate(tasks)
    alone = [backend.generate([t])[0] for t in tasks]
    for x, y in zip(together, alone, strict=True):
        assert np.array_equal(x.frames, y.frames)


def test_batch_invariance_keeps_each_clips_latents_and_comes_off_again(toy_weights: Path) -> None:
    """With the switch on, a clip's float latents are bit-identical alone and in batches of 2 and 8 (guided and
    unguided, videos and images); off again, the pipeline computes exactly what it did before."""
    pipe = NoorTinyPipeline.from_pretrained(str(toy_weights))
    pipe.set_progress_bar_config(disable=True)
    prompts = ["a red circle moves left", "مربع أزرق يسقط", "a green triangle", "دائرة صفراء تكبر"] * 2

    def latents(rows: list[int], **kwargs: object) -> torch.Tensor:
        seen: dict[str, torch.Tensor] = {}

        def keep(p: object, i: int, t: object, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            seen["latents"] = state["latents"]
            return state

        generators = [torch.Generator().manual_seed(50 + b) for b in rows]
        pipe([prompts[b] for b in rows], generator=generators, num_inference_steps=2, callback_on_step_end=keep,
             **kwargs)  # fmt: skip
        return seen["latents"]

    before = latents([0, 1])
    assert not pipe.batch_invariant
    pipe.enable_batch_invariance()
    assert pipe.batch_invariant
    for kwargs in ({"num_frames": 4}, {"guidance_scale": 1.0, "num_frames": 1}):  # a short clip keeps the test fast
        alone = [latents([b], **kwargs)[0] for b in range(8)]
        for size in (2, 8):
            batch = latents(list(range(size)), **kwargs)
            assert all(torch.equal(batch[b], alone[b]) for b in range(size)), (size, kwargs)
    pipe.disable_batch_invariance()
    assert not pipe.batch_invariant and torch.equal(latents([0, 1]), before)


def test_shapes_sizes_frames_and_images(backend: TinyBackend) -> None:
    video, image, wide = backend.generate(
        [Task("a", steps=2), Task("a", steps=2, num_frames=1), Task("a", steps=2, width=160, height=90, num_frames=24)]
    )
    assert video.frames.shape == (16, 64, 64, 3) and video.frames.dtype == np.uint8
    assert image.is_image and image.frames.shape == (1, 64, 64, 3)
    assert wide.frames.shape == (24, 90, 160, 3)


def test_keyframes_are_kept_and_loops_close(backend: TinyBackend) -> None:
    start = np.zeros((64, 64, 3), np.uint8)
    start[20:40, 10:30] = (225, 35, 35)
    end = np.full((64, 64, 3), 240, np.uint8)
    clip, looped, looped_from_start = backend.generate(
        [
            Task("a red square", steps=3, start_frame=start, end_frame=end),
            Task("a red square", steps=3, loop=True),
            Task("a red square", steps=3, loop=True, start_frame=start),
        ]
    )

    def roundtrip(image: np.ndarray) -> np.ndarray:
        """What the VAE makes of a keyframe: a given frame is its clean latent, decoded."""
        pipe = backend.pipe
        with torch.no_grad():
            z = pipe.encode_frames(keyframe_tensor(image, 64, 64)[None])
            frame = pipe.decode_latents(z[:, :, None])[0, :, 0]
        return ((frame.clamp(-1, 1) + 1) / 2 * 255).round().permute(1, 2, 0).numpy().astype(np.uint8)

    def same(a: np.ndarray, b: np.ndarray) -> bool:
        return int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1

    assert same(clip.frames[0], roundtrip(start)) and same(clip.frames[-1], roundtrip(end))
    assert not same(clip.frames[1], clip.frames[0])
    assert same(looped.frames[0], looped.frames[-1]) and not same(looped.frames[0], looped.frames[8])
    assert same(looped_from_start.frames[-1], roundtrip(start))


@pytest.mark.slow
def test_progress_reports_every_step_and_cancel_stops(backend: TinyBackend) -> None:
    seen: list[tuple[int, int]] = []
    backend.generate(
        [Task("a", steps=3), Task("b", steps=3), Task("c", steps=2, num_frames=1)], lambda d, t: seen.append((d, t))
    )
    assert seen == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]

    def cancel(done: int, total: int) -> None:
        if done == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        backend.generate([Task("a", steps=10)], cancel)


def test_retime_keeps_ends() -> None:
    frames = np.arange(16)
    assert list(retime(frames, 4)) == [0, 5, 10, 15]
    assert retime(frames, 31)[[0, -1]].tolist() == [0, 15]


def test_diffusers_first_block_cache_applies_and_comes_off_again(toy_weights: Path) -> None:
    from diffusers.hooks import FirstBlockCacheConfig

    pipe = NoorTinyPipeline.from_pretrained(str(toy_weights))
    pipe.set_progress_bar_config(disable=True)

    def run() -> np.ndarray:
        return pipe("a red circle", num_inference_steps=4, generator=torch.Generator().manual_seed(0)).frames

    calls = {"n": 0}
    last = pipe.transformer.blocks[-1].mlp  # runs only when the block really computes

    def count(module: torch.nn.Module, args: object, output: object) -> None:
        calls["n"] += 1

    handle = last.register_forward_hook(count)
    plain = run()
    plain_calls, calls["n"] = calls["n"], 0
    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=1e9))  # always reuse after the first step
    cached = run()
    cached_calls, calls["n"] = calls["n"], 0
    pipe.transformer.disable_cache()
    again = run()
    handle.remove()
    assert plain_calls == 4 and cached_calls == 1 and calls["n"] == 4
    assert not np.array_equal(plain, cached)
    assert np.array_equal(plain, again)
