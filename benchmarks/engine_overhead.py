"""What Noor adds on top of diffusers, and what First Block Cache buys on noor-tiny, measured in one run.

1. One toy Wan 2.1 pipeline (the real diffusers classes at toy size, random weights, built here) run three
   ways: called directly through diffusers, through Noor's engine (`DiffusersBackend`), and end to end
   through the API (create -> worker -> MP4 in the asset store). Target: engine <= 1.05x direct.
2. noor-tiny's default clip with and without First Block Cache: speed-up and PSNR of the cached clip
   against the uncached one.

    python benchmarks/engine_overhead.py [--runs 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.engine.diffusers.toys

TARGET_ENGINE_RATIO = 1.05


def medians_s(fns: dict[str, Callable[[], object]], runs: int) -> dict[str, float]:
    """Median seconds of each, timed in turns (A, B, A, B, ...) so a noisy, shared machine hits all alike."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def overhead(runs: int, tmp: Path) -> None:
    from diffusers import WanPipeline
    from fastapi.testclient import TestClient
    from tests.engine.diffusers.toys import build

    from noor.api.app import ApiConfig, create_app
    from noor.engine.diffusers import installed
    from noor.engine.diffusers.backend import DiffusersBackend
    from noor.engine.task import Task
    from noor.jobs import tenants
    from noor.jobs.assets import AssetStore
    from noor.jobs.store import Store
    from noor.runtime.worker import Worker, WorkerConfig

    width, height, frames, steps = 64, 64, 9, 4
    weights = build("wan2.1-t2v", tmp / "wan-toy")
    entry = installed.add(
        installed.InstalledModel(
            id="wan-toy", family="wan2.1-t2v", path=str(weights), dtype="float32", fps=1, steps=steps
        )
    )
    prompt = "a red circle moves to the left"

    # 1. diffusers, directly
    pipe = WanPipeline.from_pretrained(str(weights), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)

    def direct() -> object:
        return pipe(
            prompt=prompt, width=width, height=height, num_frames=frames, num_inference_steps=steps,
            guidance_scale=5.0, generator=torch.Generator().manual_seed(0), output_type="np",
        ).frames  # fmt: skip

    # 2. through the engine
    backend = DiffusersBackend(entry)
    task = Task(prompt=prompt, width=width, height=height, num_frames=frames, fps=8, steps=steps)

    def engine() -> object:
        return backend.generate([task], lambda done, total: None)

    # 3. end to end through the API: create, a worker claims and runs it, the MP4 is stored
    store = Store(f"sqlite:///{tmp / 'noor.db'}")
    assets = AssetStore(str(tmp / "assets"))
    tenants.create_tenant(store, "bench", credits_cents=1e9, max_concurrent=1000, max_per_minute=100000)
    auth = {"Authorization": f"Bearer {tenants.create_key(store, 'bench')}"}
    worker = Worker(store, assets, WorkerConfig(name="bench", models=["wan-toy"]), load_backend=lambda m: backend)
    client = TestClient(create_app(store, assets, ApiConfig(secret=b"bench")))
    # the API sizes clips from aspect ratio + resolution (540p at least): the toy at 544x544, 5 frames
    body = {"model": "wan-toy", "prompt": prompt, "aspect_ratio": "1:1", "resolution": "540p", "duration": "5s"}
    api_task = Task(prompt=prompt, width=544, height=544, num_frames=5, fps=1, steps=steps)  # fps 1: 5 s = 5 frames

    def api() -> object:
        created = client.post("/dream-machine/v1/generations/video", json=body, headers=auth)
        assert created.status_code == 201, created.text
        assert worker.run_once()
        return created

    small = medians_s({"direct": direct, "engine": engine}, runs)
    direct_s, engine_s = small["direct"], small["engine"]
    big = medians_s({"engine": lambda: backend.generate([api_task]), "api": api}, max(1, runs // 2))
    engine_api_size_s, api_s = big["engine"], big["api"]
    store.close()
    ratio = engine_s / direct_s
    threads = torch.get_num_threads()
    print(f"toy Wan 2.1 T2V, {width}x{height}, {frames} frames, {steps} steps, float32, {threads} threads")
    print(f"  diffusers directly         {direct_s * 1000:8.1f} ms")
    target = f"(target <= {TARGET_ENGINE_RATIO})"
    print(f"  Noor engine                {engine_s * 1000:8.1f} ms   {ratio:.3f}x direct {target}")
    print("end to end at the API's smallest clip (1:1 540p -> 544x544, 5 frames):")
    print(f"  Noor engine                {engine_api_size_s * 1000:8.1f} ms")
    print(f"  API create -> completed    {api_s * 1000:8.1f} ms   {api_s / engine_api_size_s:.3f}x engine")


def tiny_cache(runs: int) -> None:
    from diffusers import FirstBlockCacheConfig

    from noor.engine.task import Task
    from noor.engine.tiny.backend import TinyBackend

    backend = TinyBackend()
    task = Task(prompt="a red circle moves to the left", seed=0)
    transformer = backend.pipe.transformer

    def run(threshold: float | None) -> np.ndarray:
        if threshold is not None:
            transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
        try:
            return backend.generate([task])[0].frames
        finally:
            if threshold is not None:
                transformer.disable_cache()

    thresholds = (0.05, 0.1, 0.2)
    plain = run(None)
    outputs = {t: run(t) for t in thresholds}
    seconds = medians_s({str(t): (lambda t=t: run(t)) for t in (None, *thresholds)}, runs)
    plain_s = seconds["None"]
    print("noor-tiny default clip (16 frames, 64x64, 16 steps), First Block Cache:")
    print(f"  off                        {plain_s * 1000:8.1f} ms")
    for t in thresholds:
        cached_s = seconds[str(t)]
        print(
            f"  threshold {t:<5}            {cached_s * 1000:8.1f} ms   {plain_s / cached_s:.2f}x faster,"
            f" PSNR vs off {psnr_db(plain, outputs[t]):.1f} dB"
        )
    again = backend.generate([task])[0].frames
    print(f"  off again: identical to the first run: {np.array_equal(plain, again)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["NOOR_DATA_DIR"] = str(Path(tmp) / "data")  # a throwaway models.toml
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.set_verbosity_error()
        overhead(args.runs, Path(tmp))
    tiny_cache(args.runs)


if __name__ == "__main__":
    main()
