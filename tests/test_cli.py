from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from noor.engine import media


def noor(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "noor.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def noor_here(
    *args: str, cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """`noor ARGS` through the same entry point, in this process (no interpreter and torch to start again):
    exit code, stdout, stderr."""
    from noor.cli import main

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["noor", *args])
    code = 0
    try:
        main()
    except SystemExit as exit_:
        code = 0 if exit_.code is None else exit_.code if isinstance(exit_.code, int) else 1  # as the shell sees it
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow
def test_generate_writes_a_video_and_a_one_line_summary(toy_weights: Path, tmp_path: Path) -> None:
    run = noor(
        "generate",
        "a red circle moves to the left",
        "-o",
        "out.mp4",
        "--steps",
        "2",
        "--seed",
        "3",
        "--weights",
        str(toy_weights),
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("\n") == 1 and "out.mp4  16 frames, 8 fps, 64x64" in run.stdout
    assert "denoising" in run.stderr  # the progress bar
    assert media.video_info(tmp_path / "out.mp4")[:3] == (16, 64, 64)


@pytest.mark.slow
def test_generate_arabic_image_resized_with_a_note(
    toy_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = noor_here(
        "generate",
        "دائرة حمراء تتحرك إلى اليسار",
        "-o",
        "still.png",
        "--steps",
        "2",
        "--aspect-ratio",
        "16:9",
        "--resolution",
        "540p",
        "--weights",
        str(toy_weights),
        cwd=tmp_path,
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    assert code == 0, err
    assert "scaled to 540x540 in the middle of 960x540" in err
    with Image.open(tmp_path / "still.png") as image:
        assert image.size == (960, 540)


@pytest.mark.slow
def test_extend_and_loop_from_files(
    toy_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """In this process (test_generate_writes_a_video_and_a_one_line_summary runs `noor generate` as the shell does)."""

    def here(*args: str) -> tuple[int, str, str]:
        return noor_here(*args, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)

    code, _, err = here("generate", "a blue square", "-o", "a.mp4", "--steps", "2", "--weights", str(toy_weights))
    assert code == 0, err
    code, _, err = here(
        "generate",
        "a blue square",
        "-o",
        "b.mp4",
        "--steps",
        "2",
        "--start-image",
        "a.mp4",
        "--loop",
        "--frames",
        "12",
        "--fps",
        "12",
        "--weights",
        str(toy_weights),
    )
    assert code == 0, err
    assert media.video_info(tmp_path / "b.mp4") == (12, 64, 64, 12.0)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["   "], "PROMPT"),
        (["a", "--frames", "0"], "--frames"),
        (["a", "--frames", "999"], "--frames"),
        (["a", "--size", "63x64"], "--size"),
        (["a", "--size", "big"], "--size"),
        (["a", "--steps", "0"], "--steps"),
        (["a", "--model", "nope"], "--model"),
        (["a", "--start-image", "missing.png"], "--start-image"),
        (["a", "--start-image", "bogus.png"], "--start-image"),
        (["a", "--aspect-ratio", "2:1"], "--aspect-ratio"),
        (["a", "-o", "x.gif"], "-o"),
        (["a", "-o", "x.png", "--frames", "4"], "--frames"),
        (["a", "--frames", "ten"], "--frames"),
        (["a", "-o", "missing/x.mp4"], "-o"),  # a mistyped folder is not made
        (["a", "--loop", "--end-image", "ok.png"], "--loop"),  # a loop ends on its first frame
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_file(
    tmp_path: Path, args: list[str], named: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """In this process, through `noor`'s entry point (an exception other than the exit fails the test, as a
    traceback would); test_an_image_cannot_loop checks the same as the shell sees it."""
    (tmp_path / "bogus.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "ok.png")
    before = set(tmp_path.iterdir())
    code, out, err = noor_here("generate", *args, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in err, err
    assert set(tmp_path.iterdir()) == before


def test_an_image_cannot_loop(tmp_path: Path) -> None:
    """A bad input as its own process: one line on stderr, exit code 2, no traceback and no file."""
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "ok.png")
    before = set(tmp_path.iterdir())
    run = noor("generate", "a", "--start-image", "ok.png", "--frames", "1", "--loop", cwd=tmp_path)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and "--frames" in lines[0] and "Traceback" not in run.stderr
    assert set(tmp_path.iterdir()) == before


@pytest.mark.slow
def test_train_tiny_runs_all_stages_with_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = "train tiny --out mine --steps 2 --vae-steps 2 --pool-clips 4 --batch-size 2 --decoder-steps 1"
    args += " --tune-steps 1 --image-batch 8"  # image batches at a toy size too (the default is 128)
    run = noor(*args.split(), cwd=tmp_path)  # once as its own process, as a user runs it
    assert run.returncode == 0, run.stderr
    assert "1/5 VAE" in run.stderr and "2/5 decoder" in run.stderr and "4/5 denoiser" in run.stderr
    assert "5/5 second phase" in run.stderr and "2 + 1 denoiser steps" in run.stdout
    assert (tmp_path / "mine" / "model_index.json").is_file()
    # what it wrote generates, and the second phase runs alone from it (the VAE and denoiser reused; the pool
    # encoded again): in this process, no interpreter and torch to start again
    here = functools.partial(noor_here, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    code, _, err = here("generate", "a red circle", "--weights", "mine", "--steps", "1", "-o", "x.mp4")
    assert code == 0, err
    args = "train tiny --out tuned --tune-steps 2 --pool-clips 4 --batch-size 2 --image-batch 8 --init-vae mine"
    args += " --init-denoiser mine"
    code, out, err = here(*args.split())
    assert code == 0, err
    assert "5/5 second phase" in err and "4/5 denoiser" not in err and "1/5 VAE" not in err
    assert "0 + 2 denoiser steps" in out and (tmp_path / "tuned" / "model_index.json").is_file()


@pytest.mark.slow
def test_train_tiny_refuses_a_bad_shift_or_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = noor("train", "tiny", "--out", "x", "--shift", "0", cwd=tmp_path)  # once as its own process
    assert run.returncode == 2 and run.stderr.startswith("noor: error: --shift") and "'0.0'" in run.stderr
    cases = [  # (arguments, what stderr must hold); the same entry point in this process
        ("--attention diagonal", ["--attention", "diagonal"]),
        ("--conv-channels -8", ["--conv-channels", "-8"]),
        ("--shared-noise 1", ["--shared-noise", "1.0"]),
        ("--image-batch -4", ["--image-batch", "-4"]),
        ("--clip-guidance-scale -1", ["--clip-guidance-scale", "-1.0"]),
        ("--clip-guidance-min-sigma 1.5", ["--clip-guidance-min-sigma", "1.5"]),
        ("--tune-steps 5 --init-denoiser nowhere", ["noor: error: --init-denoiser", "nowhere"]),
        (f"--tune-steps 0 --init-denoiser {tmp_path}", ["--init-denoiser", "tune_steps"]),
        ("--init-vae nowhere", ["--init-vae", "holds no VAE"]),
    ]
    for extra, needed in cases:
        args = ("train", "tiny", "--out", "x", *extra.split())
        code, _, err = noor_here(*args, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and all(n in err for n in needed), (extra, err)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"NOOR_SCHEDULER": "lottery"}, "lottery"),
        ({"NOOR_SCHEDULER": "sjf", "NOOR_SCHEDULER_SETTINGS": '{"x": 1}'}, "x"),
    ],
)
def test_serve_refuses_an_unknown_scheduling_policy(tmp_path: Path, env: dict[str, str], named: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "noor.cli", "serve", "--workers", "0", "--port", "1"],
        env={**os.environ, "NOOR_DATA_DIR": str(tmp_path), **env},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and "NOOR_SCHEDULER" in lines[0] and named in lines[0], run.stderr


@pytest.mark.slow
def test_eval_tiny_reads_every_prompt_once_per_seed_and_says_below_target(toy_weights: Path, tmp_path: Path) -> None:
    args = ["--per-language", "2", "--seeds", "2", "--keyframe-checks", "1", "--steps", "2", "--json", "r.json"]
    args += ["--two-object-scenes", "1", "--aspect-prompts", "1", "--batch", "4"]  # 16 clips in all
    run = noor("eval", "tiny", "--weights", str(toy_weights), *args, cwd=tmp_path)
    assert run.returncode == 1 and run.stdout.strip().endswith("below target")  # toy weights draw no shapes
    report = json.loads((tmp_path / "r.json").read_text())
    assert len(report["rows"]) == 8 and set(report["accuracy"]) == {"en", "ar"}  # 2 prompts x 2 languages x 2 seeds
    assert len(report["two_object_rows"]) == 2 and len(report["seam_ratios"]) == 1
    wrong_shapes = sum(row["want"]["shape"] != row["got"]["shape"] for row in report["rows"])
    assert ("most common shape mistakes: " in run.stdout) == (wrong_shapes > 0), run.stdout
    bad = noor("eval", "tiny", "--seeds", "0", cwd=tmp_path)
    assert bad.returncode == 2 and "--seeds" in bad.stderr


def test_train_tiny_defaults_are_train_configs() -> None:
    """`noor train tiny` with no options trains what TrainConfig() says (the shipped weights' recipe)."""
    import typer.main

    from noor.cli import app
    from noor.engine.tiny.train import TrainConfig

    command = typer.main.get_command(app).commands["train"].commands["tiny"]  # type: ignore[attr-defined]
    defaults = TrainConfig()
    run_options = {"out", "nproc", "checkpoint_every", "resume"}  # how the run goes, not what it trains
    options = [p for p in command.params if p.name not in run_options]
    assert len(options) >= 15
    for option in options:
        assert option.default == getattr(defaults, option.name), option.name


def test_help_shows_plain_usage_and_flags_without_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    code, out, _ = noor_here("generate", "--help", cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and "Usage: noor generate [OPTIONS] PROMPT" in out and "{prompt}" not in out, out
    loop = next(line for line in out.splitlines() if "--loop" in line)
    assert "<bool>" not in out and "end where it starts" in loop, out
    assert "<int>" in next(line for line in out.splitlines() if "--seed" in line)  # options with values keep theirs


def test_an_error_names_the_value_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = noor_here(
        "generate", "a", "--start-image", "nonexist.png", cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys
    )
    assert code == 2 and err.count("nonexist.png") == 1, err


def test_the_api_model_names_work_in_the_cli(
    toy_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["a red circle", "--model", "ray-2", "--steps", "1", "--weights", str(toy_weights), "-o", "r.png"]
    code, _, err = noor_here("generate", *args, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and (tmp_path / "r.png").is_file(), err
    assert oct((tmp_path / "r.png").stat().st_mode & 0o777) != oct(0o600)  # mkstemp's mode is not kept
