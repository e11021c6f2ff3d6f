"""The event core: exact traces on micro-scenarios, determinism, residency, failures."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from noor import perf, scheduling, sim
from noor.scheduling import batching
from noor.sim.core import simulate
from noor.sim.fleet import resolve
from tests.sim.conftest import scenario_dict

FLUX_H100 = perf.predict("flux.1-dev", "h100-sxm").latency_s
assert FLUX_H100 is not None


def micro(
    trace: Path, gpus: int = 2, per_node: int = 1, policy: str = "fifo", classes: Any = None, **sched: Any
) -> dict[str, Any]:
    return scenario_dict(
        horizon_h=1.0,
        regions={"r": {"timezone": "UTC", "diurnal": "flat"}},
        sites=[{"name": "s", "region": "r", "chip": "h100-sxm", "gpus": gpus, "gpus_per_node": per_node}],
        classes=classes or [{"name": "img", "model": "flux.1-dev"}],
        tenants=[{"name": "t", "regions": ["r"]}, {"name": "u", "regions": ["r"]}],
        trace={"path": str(trace)},
        scheduling={"policy": policy, **sched},
    )


def starts_and_ends(data: dict[str, Any]) -> list[tuple[float, str, tuple[int, ...]]]:
    fleet = resolve(sim.parse(data))
    rec = simulate(fleet, record_trace=True)
    return [(t, kind, jobs) for t, kind, jobs, _, _ in rec.trace if kind in ("start", "end")]


def test_two_gpus_three_jobs_exact_trace(write_trace) -> None:  # type: ignore[no-untyped-def]
    L = FLUX_H100  # exact: durations are the perf model's seconds (noise off)
    trace = write_trace([(0, "t", "img"), (1, "t", "img"), (2, "t", "img")])
    assert starts_and_ends(micro(trace)) == [
        (0.0, "start", (0,)),
        (1.0, "start", (1,)),
        (L, "end", (0,)),
        (L, "start", (2,)),  # the third waited for the first GPU to free
        (1 + L, "end", (1,)),
        (L + L, "end", (2,)),
    ]


def test_job_overhead_holds_the_gpu_beyond_the_model_time(write_trace) -> None:  # type: ignore[no-untyped-def]
    L, o = FLUX_H100, 0.5  # encoding and storing the result keep the GPU busy after the model's work
    trace = write_trace([(0, "t", "img"), (0, "t", "img")])
    data = micro(trace, gpus=1)
    data["sites"][0]["job_overhead_s"] = o
    assert starts_and_ends(data) == [
        (0.0, "start", (0,)),
        (L + o, "end", (0,)),
        (L + o, "start", (1,)),
        (2 * (L + o), "end", (1,)),
    ]


def test_a_four_gpu_job_waits_for_four_gpus_on_one_node(write_trace) -> None:  # type: ignore[no-untyped-def]
    classes = [{"name": "wide", "model": "flux.1-dev", "gpus": 4}]
    L = perf.predict("flux.1-dev", "h100-sxm", plan=perf.ParallelPlan(gpus=4)).latency_s or 0
    trace = write_trace([(0, "t", "wide"), (0, "t", "wide"), (0, "t", "wide")])
    # two nodes of 3 and 3 GPUs: 6 free, but never 4 on one node -> nothing could start; one node of 8: two at a time
    with pytest.raises(sim.ScenarioError, match=r"tenants\[0\]\.regions.*needs 4 GPUs on one node"):
        resolve(sim.parse(micro(trace, gpus=6, per_node=3, classes=classes)))
    assert starts_and_ends(micro(trace, gpus=8, per_node=8, classes=classes)) == [
        (0.0, "start", (0,)),
        (0.0, "start", (1,)),
        (L, "end", (0,)),
        (L, "start", (2,)),
        (L, "end", (1,)),
        (L + L, "end", (2,)),
    ]


def test_sjf_runs_the_short_job_first_and_batching_groups_small_jobs(write_trace) -> None:  # type: ignore[no-untyped-def]
    classes = [{"name": "img", "model": "flux.1-dev"}, {"name": "vid", "model": "wan2.1-t2v-1.3b"}]
    trace = write_trace([(0, "t", "img"), (1, "t", "vid"), (2, "t", "img"), (3, "t", "img"), (4, "t", "img")])
    fifo = starts_and_ends(micro(trace, gpus=1, classes=classes, policy="fifo"))
    sjf = starts_and_ends(micro(trace, gpus=1, classes=classes, policy="sjf", aging_per_s=0.0))
    assert [jobs for _, kind, jobs in fifo if kind == "start"] == [(0,), (1,), (2,), (3,), (4,)]
    assert [jobs for _, kind, jobs in sjf if kind == "start"] == [(0,), (2,), (3,), (4,), (1,)]
    batched = starts_and_ends(micro(trace, gpus=1, classes=classes, policy="sjf", aging_per_s=0.0, max_batch=4))
    assert [jobs for _, kind, jobs in batched if kind == "start"] == [(0,), (2, 3, 4), (1,)]
    fleet = resolve(sim.parse(micro(trace, gpus=1, classes=classes, max_batch=4)))
    three = fleet.latency_s(0, "h100-sxm", 3)
    assert FLUX_H100 < three < 3 * FLUX_H100  # a batch of 3 is cheaper than 3 one after another
    start_batch = next(t for t, kind, jobs in batched if jobs == (2, 3, 4) and kind == "start")
    assert next(t for t, kind, jobs in batched if jobs == (2, 3, 4) and kind == "end") == pytest.approx(
        start_batch + three
    )


def test_the_core_batches_with_the_live_claims_function(write_trace, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Every batch the core starts is what `scheduling.batching.take` chose, the function the live claim calls
    (through `scheduling.batch`): a core that batched on its own would leave `calls` empty."""
    calls: list[tuple[int, ...]] = []
    shared = batching.take

    def recording(head: Any, candidates: Any, max_batch: int, joins: Any) -> list[Any]:
        out = shared(head, candidates, max_batch, joins)
        calls.append(tuple(out))
        return out

    monkeypatch.setattr(batching, "take", recording)
    classes = [{"name": "img", "model": "flux.1-dev"}, {"name": "vid", "model": "wan2.1-t2v-1.3b"}]
    trace = write_trace([(0, "t", "img"), (1, "t", "vid"), (2, "t", "img"), (3, "t", "img"), (4, "t", "img")])
    data = micro(trace, gpus=1, classes=classes, policy="sjf", aging_per_s=0.0, max_batch=4)
    starts = [jobs for _, kind, jobs in starts_and_ends(data) if kind == "start"]
    assert starts == [(0,), (2, 3, 4), (1,)]
    assert calls == starts[1:]  # job 0 found the GPU free and nothing queued: it started without a dispatch
    calls.clear()
    live = [scheduling.QueuedJob(f"j{i}", "t", "m", float(i), 1.0, batch_key="k") for i in range(3)]
    assert [job.id for job in scheduling.batch(live[0], live[1:], 4)] == ["j0", "j1", "j2"]
    assert calls == [tuple(live)]  # the live claim's batch is the same function


def test_a_job_the_batch_turns_down_keeps_its_place_in_the_queue(write_trace, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`take` reads the core's queue by popping it; a job it reads and turns down goes back with its key."""
    shared = batching.take

    def without_3(head: Any, candidates: Any, max_batch: int, joins: Any) -> list[Any]:
        return shared(head, candidates, max_batch, lambda j: j != 3 and joins(j))

    monkeypatch.setattr(batching, "take", without_3)
    classes = [{"name": "img", "model": "flux.1-dev"}, {"name": "vid", "model": "wan2.1-t2v-1.3b"}]
    trace = write_trace([(0, "t", "img"), (1, "t", "vid"), (2, "t", "img"), (3, "t", "img"), (4, "t", "img")])
    data = micro(trace, gpus=1, classes=classes, policy="sjf", aging_per_s=0.0, max_batch=4)
    starts = [jobs for _, kind, jobs in starts_and_ends(data) if kind == "start"]
    assert starts == [(0,), (2, 4), (3,), (1,)]  # 3 still ahead of the longer job 1, as SJF ranks it


def test_fair_share_serves_the_quiet_tenant_between_the_busy_ones(write_trace) -> None:  # type: ignore[no-untyped-def]
    trace = write_trace([(0, "t", "img"), (0.1, "t", "img"), (0.2, "t", "img"), (0.3, "t", "img"), (0.4, "u", "img")])
    fifo = [jobs for _, kind, jobs in starts_and_ends(micro(trace, gpus=1)) if kind == "start"]
    fair = [jobs for _, kind, jobs in starts_and_ends(micro(trace, gpus=1, policy="fair-share")) if kind == "start"]
    assert fifo == [(0,), (1,), (2,), (3,), (4,)]
    assert fair == [(0,), (4,), (1,), (2,), (3,)]


def test_trace_replay_parquet_matches_csv_and_adds_classes_by_model(tmp_path: Path, write_trace) -> None:  # type: ignore[no-untyped-def]
    csv = write_trace(
        [(0, "t", "flux.1-dev", 1024, 1024), (5, "u", "flux.1-dev", 512, 512)],
        header="time_s,tenant,model,width,height",
    )
    parquet = tmp_path / "trace.parquet"
    pq.write_table(
        pa.table(
            {
                "time_s": [0.0, 5.0],
                "tenant": ["t", "u"],
                "model": ["flux.1-dev"] * 2,
                "width": [1024, 512],
                "height": [1024, 512],
            }
        ),
        parquet,
    )
    a = sim.run(sim.parse(micro(csv)))
    b = sim.run(sim.parse(micro(parquet)))
    assert [c["name"] for c in a["resolved_classes"]] == ["img", "flux.1-dev 1024 1024", "flux.1-dev 512 512"]
    assert a["classes"] == b["classes"] and a["fleet"]["completed"] == 2
    small = a["resolved_classes"][2]["latency_s"]["h100-sxm"]
    assert a["classes"][2]["e2e_s"]["p50"] == pytest.approx(small)


def test_bad_trace_rows_name_the_row_and_value(write_trace) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(sim.ScenarioError, match=r"row 2: time_s must be a number >= 0, got -1"):
        resolve(sim.parse(micro(write_trace([(0, "t", "img"), (-1, "t", "img")]))))
    with pytest.raises(sim.ScenarioError, match=r"row 1: unknown tenant 'zed'"):
        resolve(sim.parse(micro(write_trace([(0, "zed", "img")]))))
    with pytest.raises(sim.ScenarioError, match=r"row 1: unknown class 'movie'"):
        resolve(sim.parse(micro(write_trace([(0, "t", "movie")]))))


def _strip(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "core"}


def test_same_seed_same_result_other_seed_other_result() -> None:
    data = scenario_dict(
        duration_noise_sigma=0.4,
        sites=[
            {"name": "us1", "region": "us-west", "chip": "h100-sxm", "gpus": 16, "mtbf_h": 20, "mttr_h": 0.5},
            {"name": "eu1", "region": "eu-london", "chip": "h100-sxm", "gpus": 8, "mtbf_h": 20},
        ],
    )
    one, two = sim.run(sim.parse(data)), sim.run(sim.parse(data))
    assert _strip(one) == _strip(two)
    assert one["fleet"]["failures"] > 0
    other = sim.run(sim.parse({**data, "seed": 4}))
    assert other["fleet"]["e2e_s"] != one["fleet"]["e2e_s"]


def test_residency_is_never_violated_even_with_failures() -> None:
    data = scenario_dict(
        sites=[
            {"name": "us1", "region": "us-west", "chip": "h100-sxm", "gpus": 8, "mtbf_h": 5, "mttr_h": 0.2},
            {"name": "us2", "region": "us-west", "chip": "a100-80gb", "gpus": 4},
            {"name": "eu1", "region": "eu-london", "chip": "h100-sxm", "gpus": 8, "mtbf_h": 5, "mttr_h": 0.2},
        ]
    )
    for policy in ("fifo", "priority", "sjf", "fair-share"):
        fleet = resolve(sim.parse({**data, "scheduling": {"policy": policy, "max_batch": 3}}))
        rec = simulate(fleet, record_trace=True)
        allowed = [set(t.regions) for t in fleet.scenario.tenants]
        assert (~np.isnan(rec.end_s)).all() and rec.requeued > 0
        for _, kind, jobs, site, _ in rec.trace:
            if kind == "start":
                for j in jobs:
                    assert fleet.sites[site].region in allowed[rec.tenant[j]], (policy, j, site)
        ran = rec.site
        for j in range(len(ran)):
            assert fleet.sites[ran[j]].region in allowed[rec.tenant[j]]


def test_metrics_add_up() -> None:
    r = sim.run(sim.parse(scenario_dict()))
    f = r["fleet"]
    assert f["completed"] == f["jobs"] == sum(c["jobs"] for c in r["classes"]) == sum(t["jobs"] for t in r["tenants"])
    assert 0 < f["utilisation"] < 1
    busy_h = sum(s["busy_gpu_h"] for s in r["sites"])
    assert f["energy_kwh"] == pytest.approx(
        sum(
            ((s["busy_gpu_h"] + (s["gpus"] * 2 - s["busy_gpu_h"]) * 0.15) * 700 + s["gpus"] * 2 * 0.53 * 700)  # + host
            * 1.3
            / 1000
            for s in r["sites"]
        )
    )
    assert busy_h == pytest.approx(f["utilisation"] * 24 * 2)
    assert f["cost_usd"] == pytest.approx(24 * 2 * 2.5)
    for c in r["classes"]:
        w, e = c["wait_s"], c["e2e_s"]
        assert 0 <= w["p50"] <= w["p95"] <= w["p99"] and e["p50"] <= e["p95"] <= e["p99"]
        assert 0 <= c["slo_attainment"] <= 1
    assert len(r["series"]["t_h"]) == 25 and r["series"]["t_h"][-1] == 2.0
    assert max(r["series"]["busy_gpus"]["us-west"]) <= 16
    assert not math.isnan(f["e2e_s"]["p95"])


def test_failures_cost_gpu_hours_and_every_job_still_finishes() -> None:
    # MTBF of 2 h per GPU on 16 busy GPUs for 2 h: about 16 failures; repairs take ~15 min
    data = scenario_dict(
        sites=[
            {"name": "us1", "region": "us-west", "chip": "h100-sxm", "gpus": 16, "mtbf_h": 2, "mttr_h": 0.25},
            {"name": "eu1", "region": "eu-london", "chip": "h100-sxm", "gpus": 8},
        ]
    )
    r = sim.run(sim.parse(data))
    us, eu = r["sites"]
    assert 5 <= us["failures"] <= 35 and eu["failures"] == 0
    assert us["down_gpu_h"] == pytest.approx(us["failures"] * 0.25, rel=0.6)
    assert r["fleet"]["lost_work_gpu_h"] > 0 and r["fleet"]["requeued_jobs"] > 0
    assert r["fleet"]["gpu_hours_lost_to_failures"] == pytest.approx(
        r["fleet"]["lost_work_gpu_h"] + r["fleet"]["down_gpu_h"]
    )
    assert r["fleet"]["completed"] == r["fleet"]["jobs"]
    assert max(r["series"]["down_gpus"]["us-west"]) >= 1


def test_a_blocked_wide_job_keeps_a_node_and_narrow_jobs_do_not_jump_onto_it(write_trace) -> None:  # type: ignore[no-untyped-def]
    classes = [{"name": "narrow", "model": "flux.1-dev"}, {"name": "wide", "model": "flux.1-dev", "gpus": 4}]
    L4 = perf.predict("flux.1-dev", "h100-sxm", plan=perf.ParallelPlan(gpus=4)).latency_s or 0.0
    assert L4 < FLUX_H100
    trace = write_trace(
        [
            (0, "t", "narrow"),
            (0, "t", "narrow"),
            (0, "t", "narrow"),
            (0.1, "t", "wide"),
            (0.2, "t", "wide"),
            (0.3, "t", "narrow"),
        ]
    )
    fleet = resolve(sim.parse(micro(trace, gpus=8, per_node=4, classes=classes)))
    rec = simulate(fleet, record_trace=True)
    starts = [(t, jobs, node) for t, kind, jobs, _, node in rec.trace if kind == "start"]
    # three narrow jobs pack node 0 (best fit), the first wide job takes node 1; the second wide job finds
    # no node with 4 free and keeps node 0 (1 free); the narrow job at 0.3 s may not take that free GPU
    # and waits; when node 1 frees, the wide job starts there and the narrow one on node 0
    assert starts == [
        (0.0, (0,), 0),
        (0.0, (1,), 0),
        (0.0, (2,), 0),
        (0.1, (3,), 1),
        (0.1 + L4, (4,), 1),
        (0.1 + L4, (5,), 0),
    ]


def test_a_trace_with_nothing_before_the_horizon_is_an_error(write_trace) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(sim.ScenarioError, match=r"no arrivals before horizon_h = 1.0 h \(1 rows\)"):
        resolve(sim.parse(micro(write_trace([(7200, "t", "img")]))))
    with pytest.raises(sim.ScenarioError, match=r"\(0 rows\)"):
        resolve(sim.parse(micro(write_trace([]))))
