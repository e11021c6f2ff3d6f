"""Training in the simulator: partitions of whole nodes held for days, pre-empted by serving under a policy."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from noor import scheduling, sim
from noor.scheduling import Nodes, Partition
from noor.sim.core import simulate
from noor.sim.fleet import resolve
from noor.sim.scenario import ScenarioError


def clips_per_h(load: float, gpus: int) -> float:
    """Clips per hour that keep `gpus` H100s busy `load` of the time (the perf model's time for one clip)."""
    latency_s = resolve(sim.parse(train_scenario(rate=1.0))).classes[0].latency_s["h100-sxm"]
    return load * gpus * 3600 / latency_s


def train_scenario(preemption: str = "never", rate: float | None = None, **over: Any) -> dict[str, Any]:
    """One 64-GPU H100 site (8 nodes of 8): a 32-GPU training job, and clips that keep 40% of the other 32 busy,
    four times as many in a burst (more than the 32 can serve)."""
    rate = clips_per_h(0.4, 32) if rate is None else rate
    base: dict[str, Any] = {
        "seed": 4,
        "horizon_h": 6.0,
        "sample_s": 600.0,
        "regions": {"r": {"timezone": "UTC", "diurnal": "flat"}},
        "sites": [{"name": "hall", "region": "r", "chip": "h100-sxm", "gpus": 64}],
        "classes": [{"name": "clip", "model": "wan2.1-t2v-1.3b", "steps": 10, "slo_s": 600.0}],
        "tenants": [{"name": "app", "regions": ["r"], "requests_per_h": rate}],
        "bursts": [{"start_h": 2.0, "duration_h": 1.0, "multiplier": 4.0}],
        "training": [{"name": "pretrain", "site": "hall", "gpus": 32, "work_h": 72.0, "checkpoint_every_h": 0.5,
                      "restart_s": 300.0}],
        "scheduling": {"policy": "priority", "preemption": preemption, "preempt_after_s": 60.0},
    }  # fmt: skip
    base.update(over)
    return base


def test_the_priority_policy_takes_back_the_lowest_ranked_partitions_that_lose_least() -> None:
    parts = [Partition("a", 10, 64, 100.0), Partition("b", 10, 64, 50.0), Partition("c", 20, 32, 900.0),
             Partition("d", 0, 512, 0.0)]  # fmt: skip
    policy = scheduling.preemption_policy("priority")
    assert [p.id for p in policy.victims(parts, 30, priority=5)] == ["c"]  # the lowest rank first
    assert [p.id for p in policy.victims(parts, 90, priority=5)] == ["c", "b"]  # then the least work lost
    assert [p.id for p in policy.victims(parts, 10_000, priority=5)] == ["c", "b", "a"]  # never one that outranks
    assert policy.victims(parts, 0, priority=5) == []
    assert scheduling.preemption_policy("never").victims(parts, 10_000, priority=-100) == []
    with pytest.raises(scheduling.SchedulingError, match="preemption: unknown policy 'lifo'; valid: never, priority"):
        scheduling.preemption_policy("lifo")


def test_a_partition_is_whole_free_nodes_or_nothing() -> None:
    nodes = Nodes([8, 8, 8, 8], 8)
    assert nodes.take(3) == 0  # best fit: node 0 now has 5 free
    assert nodes.take_whole(4) == []  # only 3 are whole: nothing taken
    taken = nodes.take_whole(2)
    assert len(taken) == 2 and 0 not in taken and all(nodes.node_free[n] == 0 for n in taken)
    assert nodes.take(8) not in taken and nodes.take(8) == -1  # the last whole node went; the held ones never do
    nodes.give_back(taken)
    assert sorted(n for n in range(4) if nodes.node_free[n] == 8) == sorted(taken)


def test_a_partition_that_is_never_preempted_holds_its_nodes_for_the_whole_day() -> None:
    s = sim.parse(train_scenario())
    fleet = resolve(s)
    rec = simulate(fleet, record_trace=True)
    (t,) = rec.training
    assert t["progress_h"] == pytest.approx(6.0) and t["held_gpu_h"] == pytest.approx(32 * 6.0)
    assert t["preemptions"] == 0 and t["lost_gpu_h"] == 0 and t["done_at_h"] is None
    assert all(row == [32] for row in rec.training_series)
    # serving never had more than the other 32 GPUs
    busy, most = 0, 0
    for _, kind, jobs, _, _ in sorted(rec.trace, key=lambda e: (e[0], e[1] != "end")):
        busy += {"start": len(jobs), "end": -len(jobs)}.get(kind, 0)
        most = max(most, busy)
    assert most == 32
    result = sim.run(s)
    assert result["training"][0]["site"] == "hall" and result["fleet"]["training_gpu_h"] == pytest.approx(192.0)
    assert result["sites"][0]["training_gpu_h"] == pytest.approx(192.0)
    data = train_scenario()
    data["training"] = [{**data["training"][0], "gpus": None, "share": 0.5}]  # half the site: the same 32 GPUs
    data["training"][0].pop("gpus")
    assert resolve(sim.parse(data)).training[0].gpus == 32
    assert 0 < result["fleet"]["training_cost_usd"] < result["fleet"]["cost_usd"]


def test_serving_that_outranks_training_preempts_it_and_the_partition_loses_work_since_its_checkpoint() -> None:
    never = sim.run(sim.parse(train_scenario("never")))
    rec = simulate(resolve(sim.parse(train_scenario("priority"))), record_trace=True)
    preempted = sim.run(sim.parse(train_scenario("priority")))
    (t,) = rec.training
    assert t["preemptions"] >= 1
    # each pre-emption throws away less than one checkpoint interval of the partition's work
    assert 0 < t["lost_gpu_h"] <= t["preemptions"] * 0.5 * 32 + 1e-9
    # what was held is what was kept, plus what was lost, plus the restarts (none cut by the horizon here)
    assert t["held_gpu_h"] == pytest.approx(t["progress_h"] * 32 + t["lost_gpu_h"] + t["restart_gpu_h"], rel=1e-6)
    assert t["progress_h"] < never["training"][0]["progress_h"] and t["waited_h"] > 0
    # the serving burst waited less for it
    assert preempted["classes"][0]["wait_s"]["p95"] < 0.5 * never["classes"][0]["wait_s"]["p95"]
    first = next(e for e in rec.trace if e[1] == "preempt")
    kinds = [e[1] for e in rec.trace if e[0] == first[0]]
    assert kinds.count("start") >= 1  # the freed nodes went to the waiting clips at once
    # training priority above the clips' (a lower value): never pre-empted, whatever the policy
    above = train_scenario("priority")
    above["training"][0]["priority"] = -1
    assert sim.run(sim.parse(above))["training"][0]["preemptions"] == 0


def test_a_failed_gpu_in_a_partition_rolls_it_back_to_its_checkpoint() -> None:
    data = train_scenario(rate=10.0, bursts=[])
    data["sites"][0].update(mtbf_h=200.0, mttr_h=2.0)  # 64 GPUs: a failure every ~3 h, half of them in training
    rows = []
    for seed in range(1, 4):
        (t,) = simulate(resolve(sim.parse({**data, "seed": seed, "horizon_h": 24.0}))).training
        rows.append(t)
    assert sum(t["failures"] for t in rows) >= 3
    for t in rows:
        assert t["preemptions"] == 0 and t["lost_gpu_h"] <= t["failures"] * 0.5 * 32 + 1e-9
        assert t["restart_gpu_h"] == pytest.approx(t["failures"] * 300 / 3600 * 32)
        assert t["progress_h"] * 32 <= 24 * 32 - t["lost_gpu_h"] - t["restart_gpu_h"] + 1e-6


def test_a_partition_asks_at_its_start_and_waits_for_whole_nodes() -> None:
    data = train_scenario(horizon_h=4.0, bursts=[])
    data["training"][0].update(start_h=1.0, work_h=2.0)
    rec = simulate(resolve(sim.parse(data)))
    (t,) = rec.training
    assert t["done_at_h"] is not None and 3.0 <= t["done_at_h"] < 3.5  # asked at 1 h, two hours of work
    assert t["held_gpu_h"] == pytest.approx(64.0) and t["progress_h"] == pytest.approx(2.0)
    assert rec.training_series[0] == [0] and max(row[0] for row in rec.training_series) == 32
    assert rec.training_series[-1] == [0]


def test_the_analytic_mode_takes_the_partitions_out_of_the_serving_pool() -> None:
    data = train_scenario(horizon_h=12.0, bursts=[], rate=clips_per_h(0.85, 32))
    event = sim.run(sim.parse(data))
    analytic = sim.run(sim.parse(data), analytic=True)
    assert analytic["training"][0]["held_gpu_h"] == pytest.approx(32 * 12.0)
    assert analytic["fleet"]["utilisation"] == pytest.approx(event["fleet"]["utilisation"], rel=0.03)
    # 85% of the 32 GPUs left, and the partition's 32 busy: 92.5% of the site; queues of 32 servers, not of 64
    assert analytic["sites"][0]["utilisation"] == pytest.approx(0.925, abs=0.01)
    assert analytic["fleet"]["wait_s"]["p95"] > 1.0 and event["fleet"]["wait_s"]["p95"] > 1.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"site": "attic"}, "training[0].site: unknown site 'attic'; valid: hall"),
        ({"gpus": 12}, "training[0].gpus: a partition is whole nodes of 8 GPUs (12 GPUs), got 12"),
        ({"gpus": None, "share": 0.1}, "training[0].share: a partition is whole nodes of 8 GPUs (0 GPUs), got 0.1"),
        ({"gpus": None, "share": 1.5}, "training[0].share: input should be less than or equal to 1, got 1.5"),
        ({"share": 0.5}, "training[0]: give gpus or share, one of them, got "),
        ({"gpus": 72}, "training[0].gpus: site 'hall''s partitions add up to 72 GPUs, more than its 64, got 72"),
        ({"work_h": 0}, "training[0].work_h: input should be greater than 0, got 0"),
        ({"checkpoint_every_h": -1}, "training[0].checkpoint_every_h: input should be greater than 0, got -1"),
    ],
)
def test_bad_training_names_the_key(change: dict[str, Any], message: str) -> None:
    data = train_scenario()
    data["training"] = [{k: v for k, v in {**data["training"][0], **change}.items() if v is not None}]
    with pytest.raises(ScenarioError) as err:
        sim.parse(data)
    assert str(err.value).startswith(message)


def test_an_unknown_preemption_policy_is_named() -> None:
    with pytest.raises(ScenarioError, match=r"scheduling.preemption: unknown policy 'always'; valid: never, prio"):
        sim.parse(train_scenario("always"))


def test_serving_alone_runs_as_before_when_no_training_is_given() -> None:
    data = train_scenario()
    del data["training"]
    a = simulate(resolve(sim.parse(data)))
    b = simulate(resolve(sim.parse({**data, "scheduling": {"policy": "priority", "preemption": "priority"}})))
    assert np.array_equal(a.start_s, b.start_s) and a.training == [] and a.training_series == []
