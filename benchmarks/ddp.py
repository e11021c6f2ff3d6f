"""Training on N processes vs one: the same run (seed, global batch, steps), final losses side by side.

Each rank of a DDP run draws the whole global batch from the run's random streams and trains on its rows
(noor.engine.ddp), so the loss curve should be one process's up to float rounding. Target (issue #28): after 200
denoiser steps the final loss of 2 processes is within 5% of 1 process's. Both runs happen here, one after the
other, on a small noor-tiny (or noor-world-tiny) so the pair takes minutes on 2 cores; the wall time of each is
printed beside it (on a 2-core machine 2 ranks of 1 thread each against 1 process of 2 threads: not a speed test).

    python benchmarks/ddp.py [--model tiny|world] [--steps 200] [--nproc 2] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from noor.engine import ddp
from noor.engine.tiny import train as tiny
from noor.engine.world_tiny import train as world

TARGET_RATIO = 0.05  # |final loss of N processes / final loss of 1 - 1|
AVERAGE = 20  # the final loss: the mean of the last steps (one step's loss is noisy)


def config(model: str, steps: int, batch_size: int) -> object:
    # the shipped recipes at half the width or less, with a short VAE stage and a small pool (the VAE's quality does
    # not matter here: both runs train the denoiser on the latents of the same seed's VAE)
    if model == "tiny":
        return tiny.TrainConfig(
            steps=steps, schedule_steps=steps, batch_size=batch_size, image_batch=batch_size, hidden_size=64,
            num_layers=4, vae_steps=20, vae_batch_size=8, decoder_steps=0, pool_clips=128, tune_steps=0,
            save_every=0,
        )  # fmt: skip
    return replace(
        world.TrainConfig(), steps=steps, batch_size=batch_size, maps_per_biome=1, vae_steps=20, vae_batch_size=8,
        hidden_size=64, num_layers=3, save_every=0,
    )  # fmt: skip


def run(model: str, cfg: object, nproc: int, out: Path) -> tuple[list[float], float]:
    """The run on `nproc` processes: its per-step losses (the global batch's, from the step log) and wall seconds."""
    train = tiny.train if model == "tiny" else world.train
    steps = cfg.steps  # type: ignore[attr-defined]
    started = time.perf_counter()
    ddp.launch(nproc, ddp.train_on_rank, partial(train, checkpoint_every=steps), None, cfg, out, backend="gloo")
    seconds = time.perf_counter() - started
    lines = (out / "checkpoints" / "steps.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("tiny", "world"), default="tiny")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    cfg = config(args.model, args.steps, args.batch_size)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        torch.set_num_threads(cores)  # one process: every core; the launcher gives each rank its share
        one, one_s = run(args.model, cfg, 1, Path(tmp) / "one")
        many, many_s = run(args.model, cfg, args.nproc, Path(tmp) / "many")
    final_one, final_many = float(np.mean(one[-AVERAGE:])), float(np.mean(many[-AVERAGE:]))
    ratio = final_many / final_one
    worst = float(np.max(np.abs(np.array(many) / np.array(one) - 1)))
    print(f"noor-{args.model} denoiser, {args.steps} steps, global batch {args.batch_size}, {cores} cores")
    print(f"{'':<24}{'1 process':>12}{f'{args.nproc} processes':>14}")
    print(f"{'final loss (last step)':<24}{one[-1]:>12.5f}{many[-1]:>14.5f}")
    print(f"{f'final loss (last {AVERAGE})':<24}{final_one:>12.5f}{final_many:>14.5f}")
    print(f"{'wall time (s)':<24}{one_s:>12.1f}{many_s:>14.1f}")
    verdict = "met" if abs(ratio - 1) <= TARGET_RATIO else "NOT met"
    print(f"ratio {ratio:.5f} (target within {TARGET_RATIO:.0%}: {verdict}); largest per-step gap {worst:.2e}")


if __name__ == "__main__":
    main()
