"""Training on several processes (noor.engine.ddp) with checkpoints (noor.engine.checkpoint): noor-tiny and
noor-world-tiny at toy size, gloo on CPU. The multi-process tests spawn ranks (each imports torch and diffusers, a
few seconds), so they are marked slow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from safetensors.torch import load_file

from noor.engine import ddp
from noor.engine.checkpoint import CheckpointMismatch, verify
from noor.engine.tiny import train as tiny
from noor.engine.world_tiny import train as world
from tests.conftest import REPO, TOY

Noor = Callable[..., tuple[int, str, str]]

# both denoiser phases (stage 5 adds the input skip), image batches beside the clips, a pool of two chunks (each
# of 2 ranks encodes one)
SHORT = {"steps": 3, "tune_steps": 2, "save_every": 0, "warmup_steps": 1, "tune_warmup_steps": 1}
TINY = tiny.TrainConfig(**{**TOY, **SHORT, "image_batch": 4, "pool_clips": 40})  # type: ignore[arg-type]
WORLD = replace(world.toy_config(), steps=3, batch_size=4)


def _steps(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (out / "checkpoints" / "steps.jsonl").read_text().splitlines()]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "transformer" / "diffusion_pytorch_model.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("train", "cfg"), [(tiny.train, TINY), (world.train, WORLD)], ids=["noor-tiny", "noor-world-tiny"]
)
def test_two_ranks_follow_the_loss_curve_of_one_process_with_the_same_global_batch(
    train: Callable[..., object], cfg: object, tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    one = train(cfg, tmp_path / "one", checkpoint_every=2)
    run = partial(train, checkpoint_every=2)
    two = ddp.launch(2, ddp.train_on_rank, run, None, cfg, tmp_path / "two", backend="gloo")
    one_losses, two_losses = ([s["loss"] for s in _steps(tmp_path / name)] for name in ("one", "two"))
    assert len(one_losses) == len(two_losses) == (5 if cfg is TINY else 3)
    # the same random streams on every rank: the same batches and noise, only float sums in another order
    np.testing.assert_allclose(two_losses, one_losses, rtol=1e-4)
    assert (two if cfg is TINY else two["denoiser_final_loss_avg100"]) == pytest.approx(  # type: ignore[index]
        one if cfg is TINY else one["denoiser_final_loss_avg100"],
        rel=1e-4,  # type: ignore[index]
    )
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)
    assert json.loads((tmp_path / "two" / "checkpoints" / "runs.jsonl").read_text())["world_size"] == 2


def _rank_processes(parent: psutil.Process) -> list[psutil.Process]:
    """The launcher's spawned ranks (not multiprocessing's resource tracker), oldest first."""
    ranks = [p for p in parent.children(recursive=True) if "spawn_main" in " ".join(p.cmdline())]
    return sorted(ranks, key=lambda p: p.create_time())


@pytest.mark.slow
def test_a_sigkilled_rank_then_resume_reaches_the_planned_steps_each_done_once(noor: Noor, tmp_path: Path) -> None:
    steps, every = 12, 3
    args = ["train", "tiny", "--out", str(tmp_path / "run"), "--steps", str(steps), "--vae-steps", "1"]
    args += ["--decoder-steps", "0", "--pool-clips", "4", "--batch-size", "2", "--image-batch", "2"]
    args += ["--tune-steps", "0", "--nproc", "2", "--checkpoint-every", str(every)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "noor.cli", *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        # 1. once a checkpoint exists, SIGKILL one rank mid-run
        checkpoint = tmp_path / "run" / "checkpoints" / "checkpoint.pt"
        deadline = time.monotonic() + 300
        while not checkpoint.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        ranks = _rank_processes(psutil.Process(proc.pid))
        assert checkpoint.is_file() and len(ranks) == 2, proc.poll()
        os.kill(ranks[-1].pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 1, err
    assert "failed (signal SIGKILL); continue with --resume" in err.decode()
    killed_at = len(_steps(tmp_path / "run"))
    assert killed_at < steps

    # 2. resumed on 2 ranks: it continues from the last checkpoint and stops at the planned step
    code, out, err = noor(*args, "--resume")
    assert code == 0, err
    assert f"{steps} denoiser steps" in out
    runs = [json.loads(line) for line in (tmp_path / "run" / "checkpoints" / "runs.jsonl").read_text().splitlines()]
    assert [r["run"] for r in runs] == [0, 1] and runs[0]["resumed"] is None
    resumed_at = runs[1]["resumed"]["step"]
    assert resumed_at % every == 0 and every <= resumed_at <= killed_at
    assert runs[1]["discarded_steps"] == killed_at - resumed_at
    # every step exactly once: those before the checkpoint by the killed run, the rest by the resumed one
    done = _steps(tmp_path / "run")
    assert [(s["stage"], s["step"]) for s in done] == [("denoiser", i) for i in range(steps)]
    assert [s["run"] for s in done] == [0] * resumed_at + [1] * (steps - resumed_at)
    # and the same losses as a run that was never interrupted (one process: also the same global batch)
    cfg = tiny.TrainConfig(steps=steps, vae_steps=1, decoder_steps=0, pool_clips=4, batch_size=2, image_batch=2)
    cfg = replace(cfg, tune_steps=0)
    torch.set_num_threads(1)
    uninterrupted = tiny.train(cfg, tmp_path / "whole")
    np.testing.assert_allclose([s["loss"] for s in done], uninterrupted, rtol=1e-4)


class Crash(Exception):
    pass


def _crash_at(step: int, stage: str = "denoiser") -> Callable[[str, int, int, float], None]:
    """An `on_step` that raises in `stage`'s step `step`, after its optimiser step and before it is logged."""

    def on_step(at_stage: str, at: int, total: int, loss: float) -> None:
        if (at_stage, at) == (stage, step):
            raise Crash

    return on_step


def test_a_resumed_run_gives_the_uninterrupted_runs_losses_and_weights(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    cfg = replace(WORLD, steps=5)
    whole = world.train(cfg, tmp_path / "whole")
    # steps 0-2 done, a checkpoint after step 1, a crash in step 3 (before it is logged)
    with pytest.raises(Crash):
        world.train(cfg, tmp_path / "run", _crash_at(3), checkpoint_every=2)
    assert [s["step"] for s in _steps(tmp_path / "run")] == [0, 1, 2]
    resumed = world.train(cfg, tmp_path / "run", checkpoint_every=2, resume=True)
    done = _steps(tmp_path / "run")
    assert [(s["step"], s["run"]) for s in done] == [(0, 0), (1, 0), (2, 1), (3, 1), (4, 1)]
    assert json.loads((tmp_path / "run" / "checkpoints" / "runs.jsonl").read_text().splitlines()[1]) == {
        "run": 1,
        "world_size": 1,
        "resumed": {"stage": "denoiser", "step": 2},
        "discarded_steps": 1,
    }
    # the same process, the same random streams restored: the same numbers exactly
    assert resumed["denoiser_final_loss_avg100"] == whole["denoiser_final_loss_avg100"]
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "run")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a checkpoint is resumed only by a run with the same settings
    with pytest.raises(CheckpointMismatch, match="steps 5, this run has 6"):
        verify(tmp_path / "run" / "checkpoints", asdict(replace(cfg, steps=6)))
    # a fresh run (no --resume) in the same folder starts over: the earlier run's checkpoint cannot be resumed as its
    with pytest.raises(Crash):
        world.train(cfg, tmp_path / "run", _crash_at(0), checkpoint_every=2)
    assert not verify(tmp_path / "run" / "checkpoints", asdict(cfg))


def test_noor_tiny_resumes_in_its_second_phase(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    whole = tiny.train(TINY, tmp_path / "whole")
    with pytest.raises(Crash):  # stage 4's 3 steps, then a crash in stage 5's second step
        tiny.train(TINY, tmp_path / "run", _crash_at(1, "tune"), checkpoint_every=1)
    assert [(s["stage"], s["step"]) for s in _steps(tmp_path / "run")][-2:] == [("denoiser", 2), ("tune", 0)]
    resumed = tiny.train(TINY, tmp_path / "run", checkpoint_every=1, resume=True)
    assert resumed == whole
    assert [(s["stage"], s["step"]) for s in _steps(tmp_path / "run")] == [("denoiser", i) for i in range(3)] + [
        ("tune", i) for i in range(2)
    ]


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["train", "tiny", "--nproc", "0"], "--nproc"),
        (["train", "tiny", "--nproc", "3"], "--batch-size: must split evenly over --nproc 3 processes, got 32"),
        (["train", "tiny", "--nproc", "2", "--image-batch", "5"], "--image-batch"),
        (["train", "tiny", "--checkpoint-every", "-1"], "--checkpoint-every"),
        (["train", "world", "--nproc", "0"], "--nproc"),
        (["train", "world", "--nproc", "3", "--batch-size", "8"], "--batch-size"),
    ],
)
def test_bad_process_counts_are_one_line_and_exit_2(noor: Noor, args: list[str], names: str) -> None:
    code, _, err = noor(*args)
    assert code == 2 and names in err and len(err.strip().splitlines()) == 1, err


def test_resuming_another_runs_checkpoint_is_refused_before_any_rank_starts(noor: Noor, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    world.train(WORLD, tmp_path / "w", checkpoint_every=3)
    code, _, err = noor("train", "world", "-o", str(tmp_path / "w"), "--resume", "--nproc", "2")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("noor: error: --resume: the checkpoint was made with batch_size 4, this run has 32"), err
