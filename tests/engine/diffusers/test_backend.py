"""The diffusers backend on toy models: request mapping, keyframes, progress and cancel, options.

Every family's previews and caching A/B/A: test_families.py."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from noor.engine import registry
from noor.engine.backend import Cancelled
from noor.engine.diffusers import families, installed, weights
from noor.engine.diffusers.backend import DiffusersBackend
from noor.engine.diffusers.installed import InstalledModel
from noor.engine.diffusers.options import Options
from noor.engine.task import Task, TaskError

Toy = Callable[[str], Path]


def _add(toy: Toy, family: str, model_id: str | None = None, **kw: object) -> InstalledModel:
    from tests.engine.diffusers.toys import TOYS

    _, width, height, frames = TOYS[family]
    entry = InstalledModel(
        id=model_id or f"toy-{family}",
        family=family,
        path=str(toy(family)),
        dtype="float32",
        width=width,
        height=height,
        frames=frames,
        fps=8,
        steps=2,
        **kw,  # type: ignore[arg-type]
    )
    return installed.add(entry)


def test_models_toml_round_trips_and_feeds_the_registry(toy: Toy, data_dir: Path) -> None:
    added = _add(toy, "wan2.1-t2v", "wan-small", options=Options(cache="first-block", vae_tiling=True))
    assert installed.load() == {"wan-small": added}
    assert 'cache = "first-block"' in (data_dir / "models.toml").read_text()
    spec = registry.get("wan-small")
    assert spec.family == "wan2.1-t2v" and spec.capabilities == {"t2v", "image", "edit"}
    assert "wan-small" in [s.id for s in registry.available()] and "tiny" in [s.id for s in registry.available()]
    with pytest.raises(registry.UnknownModel, match="available: tiny, wan-small"):
        registry.get("nope")


def test_request_mapping_rounds_with_notes_and_refuses_what_the_model_cannot(toy: Toy, data_dir: Path) -> None:
    _add(toy, "wan2.1-t2v", "wan")
    spec = registry.get("wan")
    # Wan (toy): sides in multiples of 16, 4k+1 frames
    notes = spec.check(Task(prompt="a cat", width=540, height=540, num_frames=80, fps=16))
    assert notes == [
        "wan draws sides in multiples of 16: 540x540 rounded to 544x544",
        "wan draws 4k+1 frames: 80 rounded to 81 (5.06 s at 16 fps)",
    ]
    assert spec.check(Task(prompt="a cat", width=32, height=48, num_frames=9)) == []
    with pytest.raises(TaskError, match="model 'wan' cannot do i2v"):
        spec.check(Task(prompt="a cat", start_frame=np.zeros((32, 32, 3), np.uint8)))
    with pytest.raises(TaskError, match="num_frames: must be between 1 and 161, got 200"):
        spec.check(Task(prompt="a cat", width=32, height=32, num_frames=200))
    _add(toy, "wan2.1-flf2v", "flf")
    flf = registry.get("flf")
    with pytest.raises(TaskError, match="loops back to a start frame"):
        flf.check(Task(prompt="a cat", width=32, height=32, num_frames=5, loop=True))
    with pytest.raises(TaskError, match="needs a start frame with an end frame"):
        flf.check(Task(prompt="a cat", width=32, height=32, num_frames=5, end_frame=np.zeros((8, 8, 3), np.uint8)))
    _add(toy, "flux.1-schnell", "flux")
    with pytest.raises(TaskError, match="model 'flux' cannot do t2v"):
        registry.get("flux").check(Task(prompt="a cat", width=32, height=32, num_frames=5))


def test_geometry_is_read_from_the_weights_configs(toy: Toy) -> None:
    # toys: Wan 2.1 VAE 8x and patch 2; Wan 2.2 5B VAE 16x and patch 2; LTX toy VAE 4x/4x; CogVideoX odd latents
    # (Wan's rotary table: the toys' rope_max_seq_len, 128 positions per axis)
    assert families.get("wan2.1-t2v").geometry(toy("wan2.1-t2v")) == families.Geometry(16, 4, max_positions=128)
    assert families.get("wan2.2-ti2v").geometry(toy("wan2.2-ti2v")) == families.Geometry(32, 4, max_positions=128)
    assert families.get("ltx-video").geometry(toy("ltx-video")) == families.Geometry(32, 4)
    assert families.get("cogvideox").geometry(toy("cogvideox")) == families.Geometry(16, 8)
    assert families.get("flux.1-dev").geometry(toy("flux.1-dev")) == families.Geometry(16, 0)
    # the real checkpoints' configs give the published multiples
    assert families.fit_frames(80, 4) == 81 and families.fit_frames(120, 8) == 121 and families.fit_frames(1, 4) == 1
    assert families.fit_frames(4, 8) == 9  # a short video stays a video, not one frame


def test_weights_checks_name_what_is_missing(toy: Toy, tmp_path: Path) -> None:
    wan = families.get("wan2.1-t2v")
    with pytest.raises(weights.WeightsError, match="no such directory"):
        weights.check(tmp_path / "nope", wan)
    with pytest.raises(weights.WeightsError, match=r"has no model_index\.json"):
        weights.check(tmp_path, wan)
    broken = shutil.copytree(toy("wan2.1-t2v"), tmp_path / "broken")
    shutil.rmtree(broken / "vae")
    (broken / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(weights.WeightsError, match=r"incomplete for wan2.1-t2v; missing: transformer/ weights .*vae/"):
        weights.check(broken, wan)
    with pytest.raises(weights.WeightsError, match=r"holds a WanPipeline, not a ltx-video model.*looks like"):
        weights.check(toy("wan2.1-t2v"), families.get("ltx-video"))
    assert weights.detect(toy("wan2.2-ti2v")).name == "wan2.2-ti2v"
    assert weights.detect(toy("wan2.2-t2v-a14b")).name == "wan2.2-t2v-a14b"
    with pytest.raises(weights.WeightsError, match=r"could be wan2\.1-i2v or wan2\.1-flf2v; say which"):
        weights.detect(toy("wan2.1-i2v"))


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("dtype", "float8", "--dtype: must be one of"),
        ("width", 40, "--size: wan2.1-t2v needs width in multiples of 16, got 40"),
        ("frames", 8, "--frames: wan2.1-t2v needs 4k\\+1 frames, got 8"),
        ("options", Options(offload="model"), "--offload: .*device is cpu"),
        ("options", Options(cache="warp"), "--cache: must be none or one of first-block"),
        ("options", Options(attention="flash_hub"), "--attention: Noor downloads nothing"),
        ("device", "cuda", "--device: this machine has no CUDA device"),
        ("id", "Bad Id", "ID: must be lowercase"),
    ],
)
def test_bad_entries_are_refused_at_registration(
    toy: Toy, data_dir: Path, option: str, value: object, message: str
) -> None:
    good = InstalledModel(id="wan", family="wan2.1-t2v", path=str(toy("wan2.1-t2v")), width=32, height=32, frames=5)
    with pytest.raises(ValueError, match=message):
        installed.add(replace(good, **{option: value}))  # type: ignore[arg-type]
    assert not (data_dir / "models.toml").exists()


def test_progress_reports_each_step_and_cancel_stops_between_steps(toy: Toy, data_dir: Path) -> None:
    backend = DiffusersBackend(_add(toy, "ltx-video"))
    seen: list[tuple[int, int]] = []
    task = Task(prompt="a red circle", width=32, height=32, num_frames=9, steps=3)
    backend.generate([task], lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]

    def cancel(done: int, total: int) -> None:
        seen.append((done, total))
        raise Cancelled

    seen.clear()
    with pytest.raises(Cancelled):
        backend.generate([task], cancel)
    assert seen == [(1, 3)]


def test_pipelines_without_step_callbacks_still_report_progress(toy: Toy, data_dir: Path) -> None:
    backend = DiffusersBackend(_add(toy, "hunyuanvideo-1.5"))  # HunyuanVideo15Pipeline has no callback_on_step_end
    seen: list[int] = []
    media = backend.generate(
        [Task(prompt="a cat", width=16, height=16, num_frames=5, steps=2)], lambda d, t: seen.append(d)
    )
    assert seen == [1, 2] and media[0].frames.shape == (5, 16, 16, 3)
    assert "step" not in vars(backend.pipe("t2v").scheduler)  # the wrapper is gone afterwards


@pytest.mark.slow
def test_keyframes_reach_the_pipeline_and_loop_ends_on_the_start(toy: Toy, data_dir: Path) -> None:
    ltx = DiffusersBackend(_add(toy, "ltx-video"))
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 255
    base = Task(prompt="a red square", width=32, height=32, num_frames=9, steps=2, seed=1)
    plain = ltx.generate([base])[0].frames
    looped = ltx.generate([replace(base, start_frame=red, loop=True)])[0].frames
    end_only = ltx.generate([replace(base, end_frame=red)])[0].frames
    assert type(ltx.pipe("i2v")).__name__ == "LTXConditionPipeline"
    assert not np.array_equal(plain, looped) and not np.array_equal(plain, end_only)
    # a loop is the start frame given again as the end frame (a random toy cannot show red; the mapping can)
    both = ltx.generate([replace(base, start_frame=red, end_frame=red)])[0].frames
    assert np.array_equal(looped, both)

    flf = DiffusersBackend(_add(toy, "wan2.1-flf2v"))
    frames = flf.generate(
        [Task(prompt="a cat", width=32, height=32, num_frames=5, steps=2, start_frame=red, loop=True)]
    )
    assert frames[0].frames.shape == (5, 32, 32, 3)


@pytest.mark.slow
def test_mode_switch_shares_components(toy: Toy, data_dir: Path) -> None:
    backend = DiffusersBackend(_add(toy, "wan2.2-ti2v"))
    t2v = backend.generate([Task(prompt="a cat", width=64, height=32, num_frames=5, steps=2)])[0]
    start = np.full((32, 64, 3), 128, np.uint8)
    i2v = backend.generate([Task(prompt="a cat", width=64, height=32, num_frames=5, steps=2, start_frame=start)])[0]
    assert t2v.frames.shape == i2v.frames.shape == (5, 32, 64, 3)
    assert backend.pipe("i2v").transformer is backend.pipe("t2v").transformer


@pytest.mark.slow
def test_other_caches_and_vae_options_switch_on_and_off(toy: Toy, data_dir: Path) -> None:
    backend = DiffusersBackend(_add(toy, "wan2.1-t2v"))
    task = Task(prompt="a cat", width=32, height=32, num_frames=5, steps=2)
    before = backend.generate([task])[0].frames
    for options in (Options(cache="pab"), Options(cache="taylorseer"), Options(vae_tiling=True, vae_slicing=True)):
        backend.configure(options)
        assert backend.generate([task])[0].frames.shape == (5, 32, 32, 3)
    backend.configure(Options())
    assert np.array_equal(backend.generate([task])[0].frames, before)
    with pytest.raises(ValueError, match=r"--offload: .*device is cpu"):
        backend.configure(Options(offload="model"))


def test_wan_sizes_beyond_its_rotary_table_are_refused_at_create_time(toy: Toy, data_dir: Path, tmp_path: Path) -> None:
    short = shutil.copytree(toy("wan2.1-t2v"), tmp_path / "short-rope")
    config = json.loads((short / "transformer" / "config.json").read_text())
    (short / "transformer" / "config.json").write_text(json.dumps(config | {"rope_max_seq_len": 4}))
    entry = installed.add(
        InstalledModel(id="wan-short", family="wan2.1-t2v", path=str(short), dtype="float32", width=32, height=32,
                       frames=5, steps=2)
    )  # fmt: skip
    spec = registry.get("wan-short")
    assert spec.check(Task(prompt="a cat", width=64, height=64, num_frames=13)) == []  # 4 positions on each axis
    with pytest.raises(TaskError, match=r"width: model 'wan-short' has rotary embeddings for 4 positions per axis"
                       r" \(rope_max_seq_len\) and this needs 5, got 80"):  # fmt: skip
        spec.check(Task(prompt="a cat", width=80, height=32, num_frames=5))
    with pytest.raises(TaskError, match=r"num_frames: .* this needs 5, got 17"):
        spec.check(Task(prompt="a cat", width=32, height=32, num_frames=17))
    # the refusal is real: past the table the transformer itself fails, inside the worker
    with pytest.raises(RuntimeError):
        DiffusersBackend(entry).generate([Task(prompt="a cat", width=80, height=32, num_frames=5, steps=1)])


@pytest.mark.slow
def test_hunyuanvideo15_i2v_draws_its_own_bucket_for_the_keyframe(toy: Toy, data_dir: Path) -> None:
    backend = DiffusersBackend(_add(toy, "hunyuanvideo-1.5-i2v"))
    spec = registry.get("toy-hunyuanvideo-1.5-i2v")
    assert spec.capabilities == {"i2v", "extend"}
    start = np.zeros((16, 32, 3), np.uint8)
    task = Task(prompt="a cat", width=32, height=16, num_frames=5, steps=2, start_frame=start)
    # the toy's transformer has target_size 16: about 16x16 pixels at 2:1, in the VAE's multiples of 4
    assert spec.check(task) == [
        "toy-hunyuanvideo-1.5-i2v draws about 16x16 pixels at the request's aspect ratio: 32x16 drawn at 20x12"
    ]
    media = backend.generate([task])[0]
    assert media.frames.shape == (5, 12, 20, 3) and media.notes == [spec.check(task)[0]]
    assert type(backend.pipe("i2v")).__name__ == "HunyuanVideo15ImageToVideoPipeline"
    with pytest.raises(TaskError, match=r"model 'toy-hunyuanvideo-1\.5-i2v' cannot do t2v"):
        spec.check(Task(prompt="a cat", width=16, height=16, num_frames=5))


def test_perf_id_is_matched_from_the_transformer_or_given(toy: Toy, data_dir: Path, tmp_path: Path) -> None:
    # a toy is no catalog architecture: not priced unless told
    assert _add(toy, "wan2.1-t2v").perf_id is None
    assert _add(toy, "wan2.1-t2v", "priced", perf_id="wan2.1-t2v-14b").perf_id == "wan2.1-t2v-14b"
    assert registry.get("priced").perf_id == "wan2.1-t2v-14b"  # type: ignore[attr-defined]
    # the released checkpoints' transformer configs name their catalog entry
    real = shutil.copytree(toy("wan2.1-t2v"), tmp_path / "real-config")
    config = json.loads((real / "transformer" / "config.json").read_text())
    shapes = {"wan2.1-t2v-1.3b": (30, 12), "wan2.1-t2v-14b": (40, 40)}  # layers, heads of 128 (config.json)
    for perf_id, (layers, heads) in shapes.items():
        config |= {"num_layers": layers, "num_attention_heads": heads, "attention_head_dim": 128}
        (real / "transformer" / "config.json").write_text(json.dumps(config))
        assert weights.match_perf_id(real, families.get("wan2.1-t2v")) == perf_id
    entry = installed.add(InstalledModel(id="real", family="", path=str(real), width=32, height=32, frames=5))
    assert entry.perf_id == "wan2.1-t2v-14b" and 'perf_id = "wan2.1-t2v-14b"' in (data_dir / "models.toml").read_text()
    with pytest.raises(ValueError, match=r"--perf-id: not a catalog model, got 'wan-9b'; valid: .*wan2.1-t2v-1.3b"):
        _add(toy, "wan2.1-t2v", perf_id="wan-9b")
    with pytest.raises(ValueError, match=r"wan2\.1-t2v makes videos and flux\.1-dev is a catalog image model"):
        _add(toy, "wan2.1-t2v", perf_id="flux.1-dev")


def test_cogvideox_i2v_with_learnt_positions_draws_its_one_size(toy: Toy, data_dir: Path, tmp_path: Path) -> None:
    # CogVideoX-5B-I2V's config: use_learned_positional_embeddings, a 90x60 latent grid (720x480); the toy's 2x2
    fixed = shutil.copytree(toy("cogvideox-i2v"), tmp_path / "learnt")
    config = json.loads((fixed / "transformer" / "config.json").read_text())
    (fixed / "transformer" / "config.json").write_text(json.dumps(config | {"use_learned_positional_embeddings": True}))
    installed.add(InstalledModel(id="cog", family="cogvideox-i2v", path=str(fixed), width=16, height=16, frames=9))
    spec = registry.get("cog")
    start = np.zeros((32, 32, 3), np.uint8)
    task = Task(prompt="a cat", width=48, height=32, num_frames=9, start_frame=start)
    assert spec.check(task) == ["cog draws only 16x16: 48x32 drawn at that size"]
    assert spec.fit(task)[0].width == 16 and spec.check(replace(task, width=16, height=16)) == []
    with pytest.raises(ValueError, match="--size: these cogvideox-i2v weights draw only 16x16, got 32x32"):
        installed.add(InstalledModel(id="cog2", family="cogvideox-i2v", path=str(fixed), width=32, height=32, frames=9))
