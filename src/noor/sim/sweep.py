"""Sweeps: one scenario, a grid of overrides (`sites[0].gpus=256,512 x scheduling.policy=fifo,sjf`), each
point run in its own process (local processes by default, Ray when asked), results as one table."""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from noor.sim.scenario import ScenarioError, apply_overrides, parse


class SweepError(ValueError):
    """A sweep that cannot run (bad grid, Ray missing); names the option."""


def split_values(text: str) -> list[str]:
    """`a,b,[1, 2]` -> ["a", "b", "[1, 2]"]: commas inside brackets or quotes do not split."""
    out, depth, quote, cur = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        cur += ch
    out.append(cur.strip())
    return [v for v in out if v]


def grid(axes: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination, the first axis varying slowest."""
    keys = list(axes)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(axes[k] for k in keys))]


def run_point(data: dict[str, Any], point: dict[str, Any], analytic: bool) -> dict[str, Any]:
    """One grid point: the scenario with the overrides, run; a row of headline numbers (picklable)."""
    from noor import sim

    result = sim.run(parse(apply_overrides(data, point)), analytic=analytic)
    f = result["fleet"]
    return {
        **point,
        "gpus": f["gpus"],
        "utilisation": f["utilisation"],
        "videos_per_hour": f["videos_per_hour"],
        "wait_p95_s": f["wait_s"]["p95"],
        "e2e_p95_s": f["e2e_s"]["p95"],
        "slo_attainment": f["slo_attainment"],
        "energy_kwh": f["energy_kwh"],
        "cost_usd": f["cost_usd"],
        "usd_per_video": f["usd_per_video"],
        "classes": {c["name"]: {"e2e_p95_s": c["e2e_s"]["p95"], "slo_attainment": c["slo_attainment"]}
                    for c in result["classes"]},
    }


def require_ray() -> Any:
    """The ray module, or a SweepError saying it is not installed."""
    try:
        import ray as ray_lib  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise SweepError(
            "--ray: Ray is not installed (pip install 'noor[ray]'); without --ray, local processes") from None
    return ray_lib


def sweep(
    data: dict[str, Any],
    axes: dict[str, list[Any]],
    jobs: int = 2,
    analytic: bool = False,
    ray: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every grid point; rows come back in grid order. Every point is checked before any runs."""
    points = grid(axes)
    for point in points:
        try:
            parse(apply_overrides(data, point))
        except ScenarioError as err:
            raise SweepError(f"--set {', '.join(f'{k}={v}' for k, v in point.items())}: {err}") from None
    if jobs < 1:
        raise SweepError(f"--jobs: must be >= 1, got {jobs!r}")
    rows: list[dict[str, Any] | None] = [None] * len(points)
    if ray:
        # Ray tasks, one CPU each: on the cluster at RAY_ADDRESS, else one found or started on this machine
        ray_lib = require_ray()
        if not ray_lib.is_initialized():
            try:
                ray_lib.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
            except (ConnectionError, ValueError, RuntimeError) as err:
                where = os.environ.get("RAY_ADDRESS") or "this machine"
                raise SweepError(f"--ray: cannot reach or start Ray at {where} ({err})") from None
        remote = ray_lib.remote(num_cpus=1, max_retries=2)(run_point)
        refs = {remote.remote(data, p, analytic): i for i, p in enumerate(points)}
        pending = list(refs)
        while pending:
            done, pending = ray_lib.wait(pending, num_returns=1)
            for ref in done:
                rows[refs[ref]] = ray_lib.get(ref)
            if progress:
                progress(len(points) - len(pending), len(points))
    else:
        # spawn: a clean interpreter per worker (no fork of a threaded parent)
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(run_point, data, p, analytic): i for i, p in enumerate(points)}
            for done, future in enumerate(as_completed(futures), 1):
                rows[futures[future]] = future.result()
                if progress:
                    progress(done, len(points))
    return [r for r in rows if r is not None]
