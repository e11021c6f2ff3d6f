"""Keyframes at indexes on the open families (#29), on toy LTX-Video and Wan 2.1 VACE (random weights): the output
has the task's length, each pin reaches the pipeline at its frame of the model's (LTX: a condition at that frame,
VACE: the context video's frame with a black mask), two pins in one latent frame are refused naming "keyframes", and
a family without the capability is refused by name.

What a random toy can and cannot show: LTX-Video holds a pin at frame 0 in the first latent frame at noise level 0,
so there the drawn latents are measurably the pin's (in the VAE's latent space: the toys' random decoders draw
nearly the same pixels from any latents). A pin elsewhere (LTX's extra keyframe tokens, VACE's context) is learnt
conditioning, which a random transformer does not follow: for those the tests check where the pin is put and that
it changes the output, not that the output resembles it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from noor.engine import registry
from noor.engine.diffusers.backend import DiffusersBackend
from noor.engine.diffusers.keyframes import Pins, spacing
from noor.engine.task import Task, TaskError
from tests.engine.diffusers.test_edits import Toy, _backend, vace  # noqa: F401 (vace: a fixture)


@pytest.fixture
def toys(toy: Toy, vace: Path) -> Toy:  # noqa: F811
    return lambda family: vace if family == "wan2.1-vace" else toy(family)


def _image(colour: tuple[int, int, int], width: int = 32, height: int = 32) -> np.ndarray:
    """A smooth image (a diagonal ramp over a colour): the toy VAEs carry it better than noise."""
    ramp = (np.add.outer(np.arange(height), np.arange(width)) * 2)[:, :, None]
    return np.clip(np.asarray(colour)[None, None] + ramp - 32, 0, 255).astype(np.uint8)


def _spied(backend: DiffusersBackend, task: Task, mode: str, name: str) -> tuple[Any, list[Any], list[Any]]:
    """The task's output, copies of what its pipeline's (`mode`'s) method `name` returned (the pipeline goes on to
    change some in place), and the normalised latents (1, C, T, h, w) LTX decoded (`_denormalize_latents`' input)."""
    pipe = backend.pipe(mode)
    method, returned, final = getattr(pipe, name), [], []

    def spy(*args: Any, **kw: Any) -> Any:
        out = method(*args, **kw)
        returned.append(copy.deepcopy(out))
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipe, name, spy)
        if hasattr(pipe, "_denormalize_latents"):
            denormalize = pipe._denormalize_latents

            def seen(latents: torch.Tensor, *args: Any) -> Any:
                final.append(latents.detach().clone())
                return denormalize(latents, *args)

            mp.setattr(pipe, "_denormalize_latents", seen)
        (media,) = backend.generate([task])
    return media, returned, final


def test_ltx_pins_each_frame_at_its_frame_of_the_models(toys: Toy, data_dir: Path) -> None:
    backend = _backend(toys, "ltx-video")  # 9 frames of 32x32; the toy's VAE puts 4 frames in a latent (real: 8)
    spec = registry.get("toy-ltx-video")
    assert "keyframes" in spec.capabilities
    first, middle = _image((200, 40, 40)), _image((40, 40, 200))
    # 12 frames are drawn as 13 (4k+1) and retimed back: frame 6 of 12 is drawn at round(6 x 12 / 11) = 7, in latent
    # frame 2 (frames 5..8)
    pinned = Task(prompt="a red ball", width=32, height=32, num_frames=12, seed=3, keyframes=((0, first), (6, middle)))
    assert "pinned at the model's 13 frames: frame 6 at 7 (latent frame 2)" in spec.check(pinned)
    media, prepared, final = _spied(backend, pinned, "keyframes", "prepare_latents")
    assert media.frames.shape == (12, 32, 32, 3) and media.frames.dtype == np.uint8
    assert "drawn as 13 frames; retimed to 12 by nearest frame" in media.notes
    latents, mask, coords, extra = prepared[0]  # packed (1, tokens, C): the extra keyframe tokens first
    h = w = 2  # 32 / the toy VAE's 16 pixels a latent
    assert extra == h * w  # frame 6's image, encoded alone: one latent frame of tokens
    assert coords[0, 0, :extra].tolist() == [7] * extra  # at time position 7, in the model's pixel frames
    assert mask[0, :extra].tolist() == [1.0] * extra  # held at noise level 0
    assert mask[0, extra : extra + h * w].tolist() == [1.0] * (h * w)  # frame 0's image: the first latent frame
    assert mask[0, extra + h * w :].max() == 0  # the rest drawn
    # the first latent frame stays the pin's own latents (up to LTX's small image_cond_noise_scale noise); the same
    # seed unpinned draws it elsewhere
    held = latents[0, extra : extra + h * w].T.reshape(1, -1, 1, h, w)  # (1, C, 1, h, w)
    unpinned_task = Task(prompt="a red ball", width=32, height=32, num_frames=12, seed=3)
    free_media, _, free = _spied(backend, unpinned_task, "t2v", "check_inputs")  # LTXPipeline
    kept, unpinned = (float((z[:, :, :1] - held).abs().mean()) for z in (final[0], free[0]))
    # measured (seed 3, 8 steps): 0.019 vs 0.83
    assert kept < 0.1 * unpinned, (kept, unpinned)
    assert free_media.frames.shape[0] == 13  # without pins the clip keeps the model's length, as before


def test_vace_pins_are_its_context_frames_with_a_black_mask(toys: Toy, data_dir: Path) -> None:
    backend = _backend(toys, "wan2.1-vace")  # 5 frames of 32x32; Wan's VAE puts 4 frames in a latent
    spec = registry.get("toy-wan2.1-vace")
    assert "keyframes" in spec.capabilities
    first, last = _image((200, 40, 40)), _image((40, 40, 200), 48, 32)  # the last at another size: resized
    # 8 frames are drawn as 9: frame 7 (the last) is drawn at 8, in latent frame 2
    pinned = Task(prompt="a red ball", width=32, height=32, num_frames=8, seed=3, keyframes=((0, first), (7, last)))
    spec.check(pinned)
    media, conditions, _ = _spied(backend, pinned, "keyframes", "preprocess_conditions")
    assert media.frames.shape == (8, 32, 32, 3)
    assert "keyframe 7: 48x32 resized to the drawn size" in media.notes
    video, mask, _ = conditions[0]  # (1, 3, 9, 32, 32) in [-1, 1]; (1, 3, 9, 32, 32) in [0, 1]
    assert mask[0, :, [0, 8]].max() == 0 and mask[0, :, 1:8].min() == 1  # black (keep) on the pins, white elsewhere
    as_pixels = ((video[0].permute(1, 2, 3, 0) + 1) * 127.5).round().numpy()  # (9, 32, 32, 3)
    assert np.abs(as_pixels[0] - first).max() <= 1
    stretched = np.asarray(Image.fromarray(last).resize((32, 32), Image.Resampling.BILINEAR), dtype=float)
    assert np.abs(as_pixels[8] - stretched).mean() < 3  # resized to the drawn size (as a start frame is), not cropped
    assert np.abs(as_pixels[1:8] - 128).max() <= 1  # VACE's grey: unknown
    (free,) = backend.generate([Task(prompt="a red ball", width=32, height=32, num_frames=8, seed=3)])
    assert free.frames.shape[0] == 9 and not np.array_equal(media.frames, free.frames[[0, 1, 2, 3, 5, 6, 7, 8]])


@pytest.mark.parametrize(("family", "num_frames", "pins", "apart"), [("ltx-video", 12, (5, 6), 4),
                                                                     ("wan2.1-vace", 8, (4, 7), 4)])  # fmt: skip
def test_two_pins_in_one_latent_frame_are_refused(
    toys: Toy, data_dir: Path, family: str, num_frames: int, pins: tuple[int, int], apart: int
) -> None:
    # LTX (toy: 4 frames a latent), 12 frames drawn as 13: index 5 at frame 5, index 6 at 7, both in latent frame 2
    # (frames 5..8). VACE, 8 drawn as 9: index 4 at 5 and 7 at 8, both in latent frame 2. The drawn frames of the
    # indexes are 0,1,2,3,4,5,7,8,9,10,11,12 (LTX) and 0,1,2,3,5,6,7,8 (VACE): 3 apart can share a latent frame
    # (1 and 4: 1 and 4 -> latent 1), 4 apart cannot
    backend = _backend(toys, family)
    task = Task(prompt="a cat", width=32, height=32, num_frames=num_frames,
                keyframes=tuple((i, _image((100, 100, 100))) for i in pins))  # fmt: skip
    assert spacing(num_frames, num_frames + 1, 4) == apart
    for run in (registry.get(f"toy-{family}").check, lambda t: backend.generate([t])):
        with pytest.raises(TaskError) as err:
            run(task)
        assert err.value.field == "keyframes" and f"pin frames at least {apart} apart" in str(err.value), err.value
    spread = Task(prompt="a cat", width=32, height=32, num_frames=num_frames,
                  keyframes=tuple((i, _image((100, 100, 100))) for i in range(0, num_frames, apart)))  # fmt: skip
    registry.get(f"toy-{family}").check(spread)


def test_a_family_without_keyframes_refuses_them_by_name(toy: Toy, data_dir: Path) -> None:
    from tests.engine.diffusers.test_backend import _add

    _add(toy, "wan2.1-t2v", "wan")
    with pytest.raises(TaskError, match="keyframes: model 'wan' cannot do keyframes"):
        registry.get("wan").check(Task(prompt="a cat", width=32, height=32, num_frames=5,
                                       keyframes=((2, _image((9, 9, 9))),)))  # fmt: skip


def test_an_ltx_loop_with_keyframes_ends_on_its_start_frame(toys: Toy, data_dir: Path) -> None:
    backend = _backend(toys, "ltx-video")
    spec = registry.get("toy-ltx-video")
    start, middle = _image((200, 40, 40)), _image((40, 40, 200))
    task = Task(prompt="a cat", width=32, height=32, num_frames=12, start_frame=start, loop=True,
                keyframes=((6, middle),))  # fmt: skip
    spec.check(task)
    pins = Pins.of(task, spec.fit(task)[0], 4)
    assert pins is not None
    conditions = pins.kwargs(backend.pipe("keyframes"))["conditions"]
    assert [c.frame_index for c in conditions] == [0, 7, 12]  # the start again at the last of the 13 drawn
    assert np.array_equal(np.asarray(conditions[2].image), start)
    # frame 10 is drawn at 11, in the last latent frame (9..12), which the loop's end holds
    late = Task(prompt="a cat", width=32, height=32, num_frames=12, start_frame=start, loop=True,
                keyframes=((10, middle),))  # fmt: skip
    with pytest.raises(TaskError, match=r"keyframes: frame 10 .* in its last latent frame, which a loop ends on"):
        spec.check(late)
