"""The analytic mode (Allen-Cunneen per site and hour) against the event simulation: p95 wait and
utilisation within 10% on scenarios where the approximation is known to be good (steady load,
moderate-to-high utilisation, enough jobs for a stable p95)."""

from __future__ import annotations

from typing import Any

import pytest

from noor import perf, sim
from noor.sim.arrivals import profile

L = {m: perf.predict(m, "h100-sxm").latency_s or 0.0 for m in ("flux.1-dev", "ltx-video-2b", "wan2.1-t2v-1.3b")}


def scenario(gpus: int, rho: float, sigma: float, classes: list[tuple[str, float]], horizon_h: float = 12,
             per_node: int = 1, regions: int = 1, **extra: Any) -> sim.Scenario:
    mean_s = sum(w * L[m] for m, w in classes) / sum(w for _, w in classes)
    per_h = rho * gpus * 3600 / mean_s
    zones = ["UTC", "Asia/Riyadh"]
    data: dict[str, Any] = {
        "seed": 1, "horizon_h": horizon_h, "warmup_h": 1, "duration_noise_sigma": sigma,
        "regions": {f"r{i}": {"timezone": zones[i], "diurnal": "flat"} for i in range(regions)},
        "sites": [{"name": f"s{i}", "region": f"r{i}", "chip": "h100-sxm", "gpus": gpus, "gpus_per_node": per_node}
                  for i in range(regions)],
        "classes": [{"name": m, "model": m, "weight": w} for m, w in classes],
        "tenants": [{"name": f"t{i}", "regions": [f"r{i}"], "requests_per_h": per_h} for i in range(regions)],
    }
    data.update(extra)
    return sim.parse(data)


CASES = {
    "8 GPUs, 80%, exponential-like service": lambda: scenario(8, 0.8, 1.0, [("flux.1-dev", 1)], horizon_h=16),
    "32 GPUs, 90%": lambda: scenario(32, 0.9, 0.5, [("flux.1-dev", 1)], horizon_h=8),
    "16 GPUs, 85%, two classes": lambda: scenario(16, 0.85, 0.3, [("flux.1-dev", 2), ("ltx-video-2b", 1)]),
    "two regions, 12 GPUs each": lambda: scenario(12, 0.85, 0.6, [("flux.1-dev", 1)], horizon_h=10, regions=2),
    "16 GPUs on 8-GPU nodes": lambda: scenario(16, 0.85, 0.5, [("flux.1-dev", 1)], per_node=8),
    "16 GPUs, 100 s videos, 3 days": lambda: scenario(16, 0.85, 0.5, [("wan2.1-t2v-1.3b", 1)], horizon_h=72),
}


SEEDS = (1, 2, 3, 4)  # one run's p95 wait moves by +-40% between seeds at high service variance


@pytest.mark.parametrize("name", list(CASES))
def test_analytic_agrees_with_the_event_simulation(name: str) -> None:
    """Against the event simulation's mean over a few seeds: the approximation has no sampling noise."""
    s = CASES[name]()
    events = [sim.run(s.model_copy(update={"seed": seed})) for seed in SEEDS]
    approx = sim.run(s, analytic=True)
    assert all(event["fleet"]["jobs"] > 30_000 for event in events)

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    wait_e, wait_a = mean([e["fleet"]["wait_s"]["p95"] for e in events]), approx["fleet"]["wait_s"]["p95"]
    assert wait_e > 1.0  # a p95 that is not zero, so the comparison means something
    assert wait_a == pytest.approx(wait_e, rel=0.10), (wait_e, wait_a)
    utilisation = mean([e["fleet"]["utilisation"] for e in events])
    assert approx["fleet"]["utilisation"] == pytest.approx(utilisation, rel=0.10)
    for i, ca in enumerate(approx["classes"]):
        assert ca["e2e_s"]["p50"] == pytest.approx(mean([e["classes"][i]["e2e_s"]["p50"] for e in events]), rel=0.10)


def overload(seed: int) -> sim.Scenario:
    """32 H100s (a GPU a node) kept 70% busy with FLUX.1-dev images, then offered 1.6x that (112%) from 2:00 for
    90 minutes: a queue that grows for an hour and a half and drains for about forty minutes after."""
    return scenario(32, 0.7, 0.5, [("flux.1-dev", 1)], horizon_h=6, seed=seed,
                    bursts=[{"start_h": 2.0, "duration_h": 1.5, "multiplier": 1.6}])  # fmt: skip


def test_an_overloaded_pool_queues_as_a_fluid_and_the_analytic_mode_follows_it() -> None:
    """Above capacity there is no steady state: the queue grows at the excess and drains after (fluid.py). On this
    small queue the analytic p95 and mean wait are within 10% of the event simulation's (mean over seeds), and so
    is the utilisation; a steady state per hour has no finite wait here at all."""
    events = [sim.run(overload(seed)) for seed in SEEDS]
    approx = sim.run(overload(1), analytic=True)
    assert [u["hour"] for u in approx["fleet"]["unstable_hours"]] == [2]  # listed (2:00-3:30: hour 3 is 91% on average)

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    # the target: p95 within 10%. The mean is looser: the fluid leaves out the randomness around its line,
    # which in a pool of 32 lengthens waits (measured 2026-12-06: analytic 141 s, event 160 s over four seeds, -12%)
    for key, rel in (("p95", 0.10), ("mean", 0.15)):
        wait_e = mean([e["fleet"]["wait_s"][key] for e in events])
        assert wait_e > 60.0  # a queue that really forms
        assert approx["fleet"]["wait_s"][key] == pytest.approx(wait_e, rel=rel), (key, wait_e)
    utilisation = mean([e["fleet"]["utilisation"] for e in events])
    assert approx["fleet"]["utilisation"] == pytest.approx(utilisation, rel=0.02)


def test_the_analytic_mode_preempts_training_as_the_event_simulation_does() -> None:
    """tests/sim/test_training.py's site: a burst four times what the 32 serving GPUs take, a 32-GPU partition that
    serving outranks. Both modes take it back once, after 60 s of waiting, and give it back after the burst."""
    from tests.sim.test_training import train_scenario

    data = train_scenario("priority")
    event, approx = sim.run(sim.parse(data)), sim.run(sim.parse(data), analytic=True)
    te, ta = event["training"][0], approx["training"][0]
    assert ta["preemptions"] == te["preemptions"] == 1
    assert ta["progress_h"] == pytest.approx(te["progress_h"], abs=0.25)
    assert ta["waited_h"] == pytest.approx(te["waited_h"], abs=0.25)
    # measured 2026-12-06: analytic 74.4%, event 70.8% (+5%): the event partition waits for whole free nodes
    assert approx["fleet"]["utilisation"] == pytest.approx(event["fleet"]["utilisation"], rel=0.06)
    never = sim.run(sim.parse(train_scenario("never")), analytic=True)
    assert never["training"][0]["preemptions"] == 0 and never["fleet"]["wait_s"]["p95"] > 600


def test_analytic_keeps_residency_and_scales_without_drawing_jobs() -> None:
    s = sim.load("examples/sim/three-regions.toml")
    approx = sim.run(s, analytic=True)
    sovereign = next(t for t in approx["tenants"] if t["name"] == "ksa-sovereign")
    riyadh = next(r for r in approx["regions"] if r["name"] == "me-riyadh")
    # 1500/h over the day, plus a burst that doubles the two hours from 20:00 Riyadh time
    weights = profile(s, "me-riyadh")
    assert sovereign["jobs"] == pytest.approx(1500 * (24 + weights[20] + weights[21]), rel=1e-3)
    # only the sovereign tenant may run in Riyadh: the region's jobs are exactly its jobs
    assert riyadh["jobs"] == sovereign["jobs"]


def test_analytic_reads_rates_from_a_replayed_trace(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # a Poisson trace at 85% of 12 GPUs for 10 hours, written as Parquet: both modes read the same file
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(5)
    per_s = 0.85 * 12 / L["flux.1-dev"]
    t = np.cumsum(rng.exponential(1 / per_s, int(per_s * 36000 * 1.1)))
    t = t[t < 36000]
    pq.write_table(pa.table({"time_s": t, "class": ["img"] * len(t)}), tmp_path / "t.parquet")
    s = sim.parse({
        "horizon_h": 10, "warmup_h": 1, "duration_noise_sigma": 0.5,
        "regions": {"r": {"timezone": "UTC"}},
        "sites": [{"name": "s", "region": "r", "chip": "h100-sxm", "gpus": 12, "gpus_per_node": 4}],
        "classes": [{"name": "img", "model": "flux.1-dev"}],
        "tenants": [{"name": "t", "regions": ["r"]}],
        "trace": {"path": str(tmp_path / "t.parquet")},
    })
    event, approx = sim.run(s), sim.run(s, analytic=True)
    assert approx["fleet"]["jobs"] == event["fleet"]["jobs"] == len(t)
    assert approx["fleet"]["utilisation"] == pytest.approx(event["fleet"]["utilisation"], rel=0.02)
    assert approx["fleet"]["wait_s"]["p95"] == pytest.approx(event["fleet"]["wait_s"]["p95"], rel=0.10)
