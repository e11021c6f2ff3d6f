from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch

from noor.engine.tiny.train import TrainConfig, build_models, build_vae, save_pipeline

# Tests never read or write the user's data dir (keys, jobs, the cached cpu-local measurement): one temporary
# data dir for the session, inherited by the `noor` subprocesses that tests start. Tests that need their own set it.
os.environ["NOOR_DATA_DIR"] = tempfile.mkdtemp(prefix="noor-test-data-")
atexit.register(shutil.rmtree, os.environ["NOOR_DATA_DIR"], ignore_errors=True)

# noor-tiny's real classes at toy size
TOY = {
    "hidden_size": 32,
    "patch_size": 2,  # at 4, a random toy's 2-step output barely depends on the seed (64x64 is 16 tokens)
    "num_layers": 2,
    "num_heads": 2,
    "text_layers": 1,
    "vae_channels": (8, 8, 8),
    "batch_size": 4,
    "vae_batch_size": 4,
    "pool_clips": 12,
    "vae_steps": 2,
    "decoder_steps": 2,
    "image_first": False,  # toy pipelines sample in one stage; tests of the two-stage path ask for it
    "clip_guidance_scale": None,
    "clip_guidance_min_sigma": 0.0,
    "tune_steps": 0,  # tests of the second phase ask for it
}


@pytest.fixture(scope="session")
def toy_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A toy noor-tiny with random weights, saved in Hugging Face layout."""
    torch.manual_seed(0)
    cfg = TrainConfig(**TOY)  # type: ignore[arg-type]
    transformer, text_encoder = build_models(cfg)
    # adaLN-Zero starts at an exact zero output; perturb so toy outputs depend on their inputs
    with torch.no_grad():
        for p in transformer.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    out = tmp_path_factory.mktemp("toy-tiny")
    save_pipeline(transformer, text_encoder, build_vae(cfg), out, cfg)
    return out


@dataclass
class Served:
    """A live `noor serve` subprocess on a free loopback port, with the admin key it printed."""

    proc: subprocess.Popen[str]
    base: str
    key: str
    env: dict[str, str]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_serve(data_dir: Path, toy_weights: Path, *args: str, port: int | None = None) -> Served:
    port = port or free_port()
    env = {
        **os.environ,
        "NOOR_DATA_DIR": str(data_dir),
        "NOOR_TINY_WEIGHTS": str(toy_weights),
        "NOOR_THREADS": "1",
        "NOOR_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "noor.cli", "serve", "--port", str(port), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    key = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            raise AssertionError(f"noor serve exited with {proc.returncode}")
        if "admin API key" in line:
            key = line.rsplit(" ", 1)[-1].strip()
        if "serving on" in line:
            break
    base = f"http://127.0.0.1:{port}"
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    return Served(proc, base, key, env)
