"""One denoising step on 2 ranks vs 1, measured on this machine beside the perf model's prediction (#28).

Each rank is one CPU core (one torch thread; gloo over loopback between ranks), which is how `noor generate
--parallel` runs on a machine without GPUs. The transformer is Wan 2.1 1.3B's own block (hidden 1536, 12
heads, ffn 8960, a 512-token prompt of width 4096) with random weights and `--layers` of its 30 blocks; one
step is one forward of both guidance branches (batch 2), split by diffusers' context parallelism as Noor's
`engine.diffusers.parallel` sets it up. The perf model predicts wan2.1-t2v-1.3b with the same number of
blocks on cpu-local (measured at one thread), its scale-up link set to the gloo all-to-all measured here.

    python benchmarks/parallel.py            # about 2 minutes on 2 cores; needs the machine to itself
    python benchmarks/parallel.py --quick    # a smoke run: 1 block, 9 frames, 1 repeat
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from machine import matmul_peak_flops

VAE_SPATIAL, VAE_TEMPORAL, PATCH = 8, 4, 2  # Wan 2.1's VAE and patching


def transformer(layers: int) -> Any:
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    return WanTransformer3DModel(
        patch_size=(1, PATCH, PATCH), num_attention_heads=12, attention_head_dim=128, in_channels=16,
        out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=layers, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6,
    ).eval()  # fmt: skip


def inputs(size: int, frames: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    latent = (2, 16, (frames - 1) // VAE_TEMPORAL + 1, size // VAE_SPATIAL, size // VAE_SPATIAL)
    return {
        "hidden_states": torch.randn(latent, generator=g),
        "timestep": torch.tensor([500, 500]),
        "encoder_hidden_states": torch.randn(2, 512, 4096, generator=g),
    }


def time_forward(model: Any, x: dict[str, torch.Tensor], repeats: int, sync: Any = None) -> float:
    with torch.no_grad():
        model(**x, return_dict=False)  # warm-up (pipelines call it so; the CP hooks expect a tuple)
        times = []
        for _ in range(repeats):
            if sync:
                sync()
            t0 = time.perf_counter()
            model(**x, return_dict=False)
            if sync:
                sync()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _rank(rank: int, port: int, args: argparse.Namespace, out: str) -> None:
    import torch.distributed as dist

    from noor.engine.diffusers import parallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        # 1. the link: one Ulysses all-to-all of a block's activations, and a tiny one for the latency
        tokens = 2 * ((args.frames - 1) // VAE_TEMPORAL + 1) * (args.size // VAE_SPATIAL // PATCH) ** 2
        block = torch.randn(tokens // 2 * 1536)
        link = []
        for numel in (block.numel(), 16):
            x, y = torch.randn(numel), torch.empty(numel)
            for _ in range(3):
                dist.all_to_all_single(y, x)
            dist.barrier()
            t0 = time.perf_counter()
            for _ in range(20):
                dist.all_to_all_single(y, x)
            link.append((time.perf_counter() - t0) / 20)
        # 2. the step on two ranks, Ulysses
        model = transformer(args.layers)
        pipe = type("Pipe", (), {"transformer": model})()
        plan = parallel.parse("ulysses=2")
        parallel.enable(pipe, plan, parallel.family_plan("WanTransformer3DModel"))
        step_s = time_forward(model, inputs(args.size, args.frames), args.repeats, dist.barrier)
        if rank == 0:
            Path(out).write_text(json.dumps({"step_s": step_s, "link": link, "block_bytes": block.numel() * 4}))
    finally:
        dist.destroy_process_group()


def predicted(args: argparse.Namespace, link: list[float], block_bytes: int) -> tuple[float, float]:
    """The perf model's step seconds on 1 and on 2 cpu-local chips (one thread each)."""
    from noor import catalog
    from noor.perf.efficiency import load
    from noor.perf.estimate import estimate
    from noor.perf.parallelism import ParallelPlan
    from noor.perf.shape import Shape

    base = load()
    big_s, small_s = link
    # what the model's link_s must reproduce: half the block crosses to the other rank in big_s - latency
    one_way_bps = (block_bytes / 2) / max(big_s - small_s, 1e-9)
    chip = catalog.chip("cpu-local")
    link_gbps = 2 * one_way_bps / 1e9 / base["link_efficiency"]
    chip = chip.model_copy(update={"scaleup_domain": 2, "scaleup_gbps": link_gbps})
    eff = replace(base, constants=base.constants | {"collective_latency_s": small_s})
    model = catalog.model("wan2.1-t2v-1.3b").model_copy(update={"layers": args.layers})
    shape = Shape(args.size, args.size, args.frames, 1)
    one = estimate(model, shape, chip, ParallelPlan(gpus=1), eff)
    two = estimate(model, shape, chip, ParallelPlan(gpus=2, ulysses=2, ring=1, cfg=1), eff)
    return one.stage("denoise").detail["step_s"], two.stage("denoise").detail["step_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.layers, args.frames, args.repeats = 1, 9, 1
    import torch.multiprocessing as mp

    from noor.runtime.ranks import _free_port

    torch.set_num_threads(2)
    peak2 = matmul_peak_flops()
    torch.set_num_threads(1)
    peak1 = matmul_peak_flops()
    one_s = time_forward(transformer(args.layers), inputs(args.size, args.frames), args.repeats)
    torch.set_num_threads(2)
    both_cores_s = time_forward(transformer(args.layers), inputs(args.size, args.frames), args.repeats)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "two.json")
        mp.spawn(_rank, args=(_free_port(), args, out), nprocs=2)
        two = json.loads(Path(out).read_text())
    pred_one, pred_two = predicted(args, two["link"], two["block_bytes"])
    tokens = 2 * ((args.frames - 1) // VAE_TEMPORAL + 1) * (args.size // VAE_SPATIAL // PATCH) ** 2
    print(f"matmul peak fp32: {peak1 / 1e9:.0f} GFLOP/s on 1 thread, {peak2 / 1e9:.0f} on 2")
    print(
        f"Wan 2.1 1.3B blocks x{args.layers}, {args.size}x{args.size}x{args.frames} ({tokens // 2} tokens a branch), "
        f"both branches per step; gloo all-to-all of a block: {two['link'][0] * 1e3:.1f} ms, "
        f"a 64-byte one: {two['link'][1] * 1e6:.0f} us"
    )
    print(f"{'':28}{'measured':>10}{'perf model':>12}")
    print(f"{'step, 1 rank (1 thread)':28}{one_s:>9.2f}s{pred_one:>11.2f}s")
    print(f"{'step, 2 ranks ulysses=2':28}{two['step_s']:>9.2f}s{pred_two:>11.2f}s")
    print(f"{'speed-up':28}{one_s / two['step_s']:>9.2f}x{pred_one / pred_two:>11.2f}x")
    print(f"{'step, 1 rank, 2 threads':28}{both_cores_s:>9.2f}s{'(the same 2 cores, one process)':>36}")


if __name__ == "__main__":
    main()
