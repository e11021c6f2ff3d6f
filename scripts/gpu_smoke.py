"""One clip per installed diffusers model on this machine's GPU: seconds, peak memory, and the perf model's
prediction side by side. For a machine with GPUs and real weights (`noor models add`); not run in CI.

    python scripts/gpu_smoke.py [--chip h100-sxm] [--steps N] [--models wan-1.3b,ltx] [--catalog ID=CATALOG_ID]

`--catalog` maps a Noor model id to the perf catalog's model id when they differ (default: the entry's
`perf_id`, then the same id, then the family name). The prediction prints "n/a" when noor.perf or the ids are not there.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from noor.engine import registry
from noor.engine.diffusers.backend import DiffusersBackend
from noor.engine.task import Task


def predicted(catalog_ids: list[str], chip: str | None, task: Task, steps: int) -> tuple[str, str]:
    """(seconds, peak GB) from noor.perf, or "n/a" when it cannot say."""
    if chip is None:
        return "n/a", "n/a"
    try:
        from noor.perf.shape import Shape
        from noor.perf.task import predict
    except ImportError:
        return "n/a", "n/a"
    shape = Shape(task.width, task.height, task.num_frames, steps)
    for catalog_id in catalog_ids:
        try:
            e: Any = predict(catalog_id, chip, shape)
        except Exception:  # an id the catalog does not know: try the next
            continue
        return f"{e.latency_s:.1f}", f"{e.peak_memory_gb:.1f}"
    return "n/a", "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chip", help="perf catalog chip id for the prediction, e.g. h100-sxm")
    parser.add_argument("--steps", type=int, help="denoising steps (default: each model's)")
    parser.add_argument("--models", help="comma-separated model ids (default: every installed diffusers model)")
    parser.add_argument("--catalog", action="append", default=[], help="NOOR_ID=CATALOG_ID (repeatable)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: this script measures GPUs (the toy-size CPU path is covered by the tests)")
    catalog = dict(pair.split("=", 1) for pair in args.catalog)
    wanted = set(args.models.split(",")) if args.models else None
    specs = [s for s in registry.available() if getattr(s, "entry", None) is not None]
    specs = [s for s in specs if wanted is None or s.id in wanted]
    print(f"{'model':24} {'family':18} {'shape':22} {'seconds':>9} {'peak GB':>8} {'pred s':>8} {'pred GB':>8}")
    for spec in specs:
        steps = args.steps or spec.default_steps
        is_image = "t2v" not in spec.capabilities and "image" in spec.capabilities
        start = None
        if "t2v" not in spec.capabilities and not is_image:  # image-to-video only: a grey start frame
            import numpy as np

            start = np.full((spec.native_height, spec.native_width, 3), 128, np.uint8)
        task = Task(
            prompt="a red fox runs through fresh snow at dawn, cinematic",
            width=spec.native_width,
            height=spec.native_height,
            num_frames=1 if is_image else spec.native_frames,
            fps=spec.default_fps,
            steps=steps,
            start_frame=start,
            end_frame=start if spec.family == "wan2.1-flf2v" else None,
        )
        shape = f"{task.width}x{task.height}x{task.num_frames}, {steps} st"
        try:
            backend = DiffusersBackend(spec.entry)  # type: ignore[attr-defined]
            if torch.cuda.is_available():
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            backend.generate([task])
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            seconds = f"{time.perf_counter() - t0:.1f}"
            peak = f"{torch.cuda.max_memory_allocated() / 1e9:.1f}" if torch.cuda.is_available() else "n/a"
            del backend
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception as err:  # report and go on to the next model
            seconds, peak = "failed", type(err).__name__
            print(f"  {spec.id}: {err}")
        # the entry's own catalog architecture (`noor models add --perf-id`, or matched from its config) first
        ids = [catalog.get(spec.id) or getattr(spec, "perf_id", None) or spec.id, spec.family]
        pred_s, pred_gb = predicted([i for i in ids if i], args.chip, task, steps)
        print(f"{spec.id:24} {spec.family:18} {shape:22} {seconds:>9} {peak:>8} {pred_s:>8} {pred_gb:>8}")


if __name__ == "__main__":
    main()
