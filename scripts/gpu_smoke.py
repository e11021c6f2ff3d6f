"""One clip per installed diffusers model on this machine's GPU: seconds, peak memory, and the perf model's
prediction side by side. For a machine with GPUs and real weights (`noor models add`); not run in CI.

    python scripts/gpu_smoke.py [--chip h100-sxm] [--steps N] [--models wan-1.3b,ltx] [--catalog ID=CATALOG_ID]
                                [--ranks 1,2,4]

`--ranks`: each model also on k ranks (k <= the GPUs here), one process per GPU (`noor.runtime.ranks`), in
the split the perf model finds fastest among those the engine can run for it (`auto=k`), beside its
prediction for that split.

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
from noor.engine.diffusers.parallel import parse
from noor.engine.task import Task
from noor.runtime.ranks import LocalRanks


def predicted(catalog_ids: list[str], chip: str | None, task: Task, steps: int, plan: Any = None) -> tuple[str, str]:
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
            e: Any = predict(catalog_id, chip, shape, plan)
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
    parser.add_argument("--ranks", default="1", help="rank counts to run each model on, e.g. 1,2,4")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: this script measures GPUs (the toy-size CPU path is covered by the tests)")
    catalog = dict(pair.split("=", 1) for pair in args.catalog)
    wanted = set(args.models.split(",")) if args.models else None
    specs = [s for s in registry.available() if getattr(s, "entry", None) is not None]
    specs = [s for s in specs if wanted is None or s.id in wanted]
    print(
        f"{'model':24} {'family':18} {'shape':22} {'split':>12} {'seconds':>9} {'peak GB':>8} {'pred s':>8}"
        f" {'pred GB':>8}"
    )
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
        # the entry's own catalog architecture (`noor models add --perf-id`, or matched from its config) first
        ids = [i for i in (catalog.get(spec.id) or getattr(spec, "perf_id", None) or spec.id, spec.family) if i]
        for k in (int(r) for r in args.ranks.split(",")):
            if k > 1 and k > torch.cuda.device_count():
                print(f"  {spec.id}: {k} ranks need {k} GPUs, this machine has {torch.cuda.device_count()}")
                continue
            plan, seconds, peak = run(spec, task, k)
            pred_s, pred_gb = predicted(ids, args.chip, task, steps, plan)
            split = plan.text() if plan is not None else "1"
            print(
                f"{spec.id:24} {spec.family:18} {shape:22} {split:>12} {seconds:>9} {peak:>8} {pred_s:>8} {pred_gb:>8}"
            )


def run(spec: Any, task: Task, ranks: int) -> tuple[Any, str, str]:
    """(split, seconds, peak GB of rank 0's process) of one clip on `ranks` ranks."""
    plan = None
    try:
        if ranks > 1:
            plan = spec.splits(task, parse(f"auto={ranks}"))[0]
            backend: Any = LocalRanks(spec, plan)
        else:
            backend = DiffusersBackend(spec.entry)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        backend.generate([task])
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = f"{time.perf_counter() - t0:.1f}"
        # on k ranks the memory is in the rank processes; this process's peak says nothing then
        peak = f"{torch.cuda.max_memory_allocated() / 1e9:.1f}" if torch.cuda.is_available() and ranks == 1 else "n/a"
        if ranks > 1:
            backend.close()
        del backend
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception as err:  # report and go on to the next model
        seconds, peak = "failed", type(err).__name__
        print(f"  {spec.id} on {ranks} ranks: {err}")
    return plan, seconds, peak


if __name__ == "__main__":
    main()
