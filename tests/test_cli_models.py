"""`noor models add|list|show` and `noor generate --model` on every family's toy, in process (exit codes kept)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from noor.engine import media
from tests.engine.diffusers.toys import TOYS, register_args, toy_dir

I2V_ONLY = {"wan2.1-i2v", "wan2.1-flf2v", "wan2.2-i2v-a14b", "cogvideox-i2v", "hunyuanvideo-1.5-i2v"}
IMAGE = {"flux.1-dev", "flux.1-schnell", "sd3.5"}


@pytest.fixture(scope="session")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    return lambda family: toy_dir(tmp_path_factory, family)


@pytest.mark.slow
@pytest.mark.parametrize("family", list(TOYS))
def test_register_and_generate_every_family(family: str, noor: Callable, toy: Callable, tmp_path: Path) -> None:
    code, out, err = noor(*register_args(family, toy(family)))
    assert code == 0, err
    assert out.startswith(f"toy-{family}  {family}, float32")
    _, width, height, frames = TOYS[family]
    args = ["generate", "a red circle moves to the left", "--model", f"toy-{family}", "--seed", "1"]
    if family in I2V_ONLY:
        Image.new("RGB", (width, height), (200, 30, 30)).save(tmp_path / "start.png")
        args += ["--start-image", str(tmp_path / "start.png")]
        if family == "wan2.1-flf2v":
            args += ["--end-image", str(tmp_path / "start.png")]
    output = "out.png" if family in IMAGE else "out.mp4"
    code, out, err = noor(*args, "-o", output)
    assert code == 0, err
    if family in IMAGE:
        with Image.open(tmp_path / output) as image:
            assert image.size == (width, height)
    else:
        assert media.video_info(tmp_path / output)[:3] == (frames, width, height)
        assert f"{frames} frames, 8 fps, {width}x{height}" in out


def test_list_and_show(noor: Callable, toy: Callable) -> None:
    assert noor(*register_args("ltx-video", toy("ltx-video"), "ltx"))[0] == 0
    code, out, _ = noor("models", "list")
    assert code == 0 and "ltx" in out and "ltx-video" in out and "tiny" in out
    code, out, _ = noor("models", "show", "ltx")
    assert code == 0
    assert "sides in multiples of 32" in out and "4k+1, up to 257" in out and "end_frame" in out
    assert noor("models", "show", "nope")[2].strip().startswith("noor: error: ID: unknown model; available: ltx, tiny")


def test_family_is_detected_or_asked_for(noor: Callable, toy: Callable) -> None:
    code, out, _ = noor("models", "add", "wan", "--path", str(toy("wan2.1-t2v")), "--size", "32x32", "--frames", "5")
    assert code == 0 and "wan2.1-t2v" in out
    code, _, err = noor("models", "add", "i2v", "--path", str(toy("wan2.1-i2v")), "--size", "32x32", "--frames", "5")
    assert code == 2 and "could be wan2.1-i2v or wan2.1-flf2v; say which with --family" in err


def test_dtype_defaults_to_the_kind_of_model(noor: Callable, toy: Callable) -> None:
    """Without --dtype an audio model is float32 (InstalledAudio's default) and a video model bfloat16; --dtype
    wins over either."""
    from noor.engine.diffusers import audio, installed

    code, out, err = noor("models", "add", "sao", "--path", str(toy("stable-audio-open")))
    assert code == 0, err
    assert out.startswith("sao  stable-audio-open, float32") and audio.load()["sao"].dtype == "float32"
    code, out, err = noor("models", "add", "sao", "--path", str(toy("stable-audio-open")), "--dtype", "bfloat16")
    assert code == 0, err
    assert out.startswith("sao  stable-audio-open, bfloat16") and audio.load()["sao"].dtype == "bfloat16"
    code, out, err = noor("models", "add", "wan", "--path", str(toy("wan2.1-t2v")))
    assert code == 0, err
    assert out.startswith("wan  wan2.1-t2v, bfloat16") and installed.load()["wan"].dtype == "bfloat16"


def test_bad_weights_dirs_are_one_line_errors(
    noor: Callable, toy: Callable, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wan = toy("wan2.1-t2v")
    broken = shutil.copytree(toy("cogvideox"), tmp_path / "broken")
    capsys.readouterr()  # building a toy the first time prints transformers' "Writing model shards" bar: not noor's
    shutil.rmtree(broken / "text_encoder")
    cases = {
        str(tmp_path / "missing"): "--path: no such directory",
        str(tmp_path): "has no model_index.json",
        str(broken): "incomplete for cogvideox; missing: text_encoder/",
    }
    for path, message in cases.items():
        code, _, err = noor("models", "add", "cog", "--path", path, "--family", "cogvideox")
        assert code == 2 and err.count("\n") == 1 and message in err, err
    code, _, err = noor("models", "add", "cog", "--path", str(wan), "--family", "cogvideox")
    assert code == 2 and "holds a WanPipeline, not a cogvideox model" in err
    code, _, err = noor(*register_args("cogvideox", toy("cogvideox")), "--dtype", "float8")
    assert code == 2 and "--dtype: must be one of bfloat16, float16, float32, got 'float8'" in err


def test_generate_refuses_what_the_model_cannot_before_loading(noor: Callable, toy: Callable, tmp_path: Path) -> None:
    assert noor(*register_args("cogvideox-i2v", toy("cogvideox-i2v"), "cog"))[0] == 0
    code, _, err = noor("generate", "a cat", "--model", "cog")
    assert code == 2 and "model 'cog' cannot do t2v" in err
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "k.png")
    code, _, err = noor("generate", "a cat", "--model", "cog", "--start-image", "k.png", "--loop")
    assert code == 2 and err.startswith("noor: error: --loop: model 'cog' cannot do loop")
    code, _, err = noor("generate", "a cat", "--model", "cog", "--start-image", "k.png", "--frames", "200")
    assert code == 2 and "--frames: must be between 1 and 81, got 200" in err


@pytest.mark.slow
def test_generate_rounds_with_a_note(noor: Callable, toy: Callable) -> None:
    assert noor(*register_args("wan2.1-t2v", toy("wan2.1-t2v"), "wan"))[0] == 0
    code, out, err = noor("generate", "a cat", "--model", "wan", "--size", "42x30", "--frames", "6")
    assert code == 0, err
    assert "42x30 rounded to 48x32" in err and "6 rounded to 5" in err
    assert "5 frames, 8 fps, 48x32" in out


def test_the_registry_rereads_models_toml_only_when_it_changes(
    noor: Callable, toy: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    from noor.engine import registry
    from noor.engine.diffusers import installed

    assert noor(*register_args("ltx-video", toy("ltx-video"), "ltx"))[0] == 0
    reads: list[Path] = []
    real_load = installed.load

    def counting_load(path: Path | None = None) -> dict[str, installed.InstalledModel]:
        reads.append(path or installed.config_path())
        return real_load(path)

    monkeypatch.setattr(installed, "load", counting_load)
    assert registry.get("ltx").family == "ltx-video"
    for _ in range(5):
        registry.get("ltx")
        registry.available()
    assert len(reads) <= 1  # read at most once (not at all if an earlier lookup saw this version)
    assert noor(*register_args("cogvideox", toy("cogvideox"), "cog"))[0] == 0  # another process could do this
    reads.clear()
    for _ in range(5):
        assert registry.get("cog").family == "cogvideox" and registry.get("ltx").family == "ltx-video"
    assert len(reads) == 1  # the changed file, once


def test_add_says_how_the_model_is_priced(noor: Callable, toy: Callable) -> None:
    code, out, _ = noor(*register_args("wan2.1-t2v", toy("wan2.1-t2v"), "wan"))
    assert code == 0
    assert "not priced: no catalog architecture of wan2.1-t2v has its transformer (2 blocks, hidden 24)" in out
    assert "--perf-id (e.g. wan2.1-t2v-1.3b, wan2.1-t2v-14b)" in out
    code, out, _ = noor(*register_args("wan2.1-t2v", toy("wan2.1-t2v"), "wan"), "--perf-id", "wan2.1-t2v-1.3b")
    assert code == 0 and "priced as wan2.1-t2v-1.3b (noor.perf)" in out
    assert "priced as    wan2.1-t2v-1.3b" in noor("models", "show", "wan")[1]
    code, _, err = noor(*register_args("wan2.1-t2v", toy("wan2.1-t2v"), "wan"), "--perf-id", "wan-9b")
    assert code == 2 and err.count("\n") == 1 and "--perf-id: not a catalog model, got 'wan-9b'; valid: " in err
