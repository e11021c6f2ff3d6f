"""A training run's checkpoints: the last one, written atomically, and a log of the steps the weights hold.

In `folder` (a trainer's `out/checkpoints`):
- `checkpoint.pt`: what the trainer gives `save` (models, optimiser, random streams, step, losses...), with the
  run's config. Written to a temporary file and renamed over the last one, so a kill during a save leaves the last
  checkpoint whole.
- `steps.jsonl`: one line per optimiser step the current weights hold, `{"run", "stage", "step", "loss"}`. A step
  done after the last checkpoint by a run that then died is lost with it, so `resume` cuts the log back to the
  checkpoint and the step is done again, once, by the next run: a finished run's log has every step exactly once.
- `runs.jsonl`: one line per run (its number, where it resumed, how many logged steps it discarded).

Only rank 0 writes; every rank reads the checkpoint to resume.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from noor.engine.ddp import SINGLE, Group

CHECKPOINT = "checkpoint.pt"


class CheckpointMismatch(ValueError):
    """The checkpoint to resume was made by a run with other settings; names the first field that differs."""

    def __init__(self, field: str, saved: object, given: object):
        super().__init__(f"the checkpoint was made with {field} {saved!r}, this run has {given!r}")
        self.field = field


def vae_config(vae: Any) -> dict[str, Any]:
    """A diffusers model's config to rebuild it with `from_config`: without `_use_default_values`, which would
    reset what `register_to_config` set after construction (a VAE's latent shift and scale) to the defaults."""
    return {key: value for key, value in vae.config.items() if key != "_use_default_values"}


def stage_state(
    stage: str,
    step: int,
    losses: list[float],
    models: Sequence[torch.nn.Module],
    optim: torch.optim.Optimizer,
    rng: np.random.Generator,
    generator: torch.Generator,
) -> dict[str, Any]:
    """A training stage after `step` steps: its models' weights (trained and averaged), optimiser, losses so far and
    random streams (its numpy and torch generators and torch's global one); the learning rate is a function of the
    step, so the step restores it."""
    return {
        "stage": stage,
        "step": step,
        "losses": losses,
        "models": [m.state_dict() for m in models],
        "optim": optim.state_dict(),
        "random": {"numpy": rng.bit_generator.state, "torch": generator.get_state(), "global": torch.get_rng_state()},
    }


def restore_stage(
    state: dict[str, Any],
    models: Sequence[torch.nn.Module],
    optim: torch.optim.Optimizer,
    rng: np.random.Generator,
    generator: torch.Generator,
) -> tuple[int, list[float]]:
    """Load a `stage_state` into the stage's models, optimiser and random streams; the step to continue at and the
    losses so far."""
    for model, weights in zip(models, state["models"], strict=True):
        model.load_state_dict(weights)
    optim.load_state_dict(state["optim"])
    rng.bit_generator.state = state["random"]["numpy"]
    generator.set_state(state["random"]["torch"])
    torch.set_rng_state(state["random"]["global"])
    return state["step"], list(state["losses"])


def verify(folder: Path, config: dict[str, Any]) -> bool:
    """Whether `folder` holds a checkpoint to resume; CheckpointMismatch if it was made with another config."""
    path = folder / CHECKPOINT
    if not path.is_file():
        return False
    before = json.loads(torch.load(path, map_location="cpu", weights_only=True)["config"])
    given = json.loads(json.dumps(config))
    for field in sorted(set(before) | set(given)):
        if before.get(field) != given.get(field):
            raise CheckpointMismatch(field, before.get(field), given.get(field))
    return True


class Checkpoints:
    """Checkpoints every `every` steps of a run with `config` (plain data), in `folder`. `every == 0` and no
    `resume`: inactive, writes nothing (a run is then exactly what it was without checkpoints)."""

    def __init__(self, folder: Path, every: int, config: dict[str, Any], group: Group = SINGLE):
        if every < 0:
            raise ValueError(f"checkpoint every must be 0 or more, got {every}")
        self.folder, self.every, self.group = folder, every, group
        self.config = json.loads(json.dumps(config))  # as JSON reads it back (tuples -> lists)
        self.active = every > 0
        self.context: dict[str, Any] = {}  # saved with every checkpoint (e.g. a frozen VAE the trainer rebuilds from)
        self._run = 0
        self._lines = 0

    @property
    def path(self) -> Path:
        return self.folder / CHECKPOINT

    def start(self, resume: bool) -> dict[str, Any] | None:
        """Begin this run: the checkpoint to continue from (None: none saved, or not `resume`), checked against
        this run's config; the step log cut back to it (rank 0)."""
        saved = None
        if resume and verify(self.folder, self.config):
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        self.active = self.active or resume
        if not (self.active and self.group.is_main):
            return saved
        self.folder.mkdir(parents=True, exist_ok=True)
        if not resume:  # a fresh run: an earlier run's checkpoint must not be resumed as this one's
            self.path.unlink(missing_ok=True)
        runs = self.folder / "runs.jsonl"
        past = runs.read_text().splitlines() if resume and runs.is_file() else []
        self._run = len(past)
        log = self.folder / "steps.jsonl"
        lines = log.read_text().splitlines() if resume and log.is_file() else []
        self._lines = saved["log_lines"] if saved else 0
        log.write_text("".join(line + "\n" for line in lines[: self._lines]))
        where = {"stage": saved["stage"], "step": saved["step"]} if saved else None
        record = {"run": self._run, "world_size": self.group.world_size, "resumed": where}
        record["discarded_steps"] = len(lines) - self._lines
        runs.write_text("".join(line + "\n" for line in past) + json.dumps(record) + "\n")
        return saved

    def record(self, stage: str, step: int, loss: float) -> None:
        """Log a finished optimiser step (rank 0)."""
        if self.active and self.group.is_main:
            with (self.folder / "steps.jsonl").open("a") as log:
                log.write(json.dumps({"run": self._run, "stage": stage, "step": step, "loss": loss}) + "\n")
            self._lines += 1

    def due(self, step: int, steps: int) -> bool:
        """Whether to save after step `step` (0-based) of a stage of `steps`: every `every` steps and at its end."""
        return self.every > 0 and ((step + 1) % self.every == 0 or step + 1 == steps)

    def save(self, state: dict[str, Any]) -> None:
        """Write `state` (with the context, the config and the log's length) atomically (rank 0)."""
        if not self.group.is_main:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        record = {**self.context, **state, "config": json.dumps(self.config), "log_lines": self._lines}
        with tmp.open("wb") as f:
            torch.save(record, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
