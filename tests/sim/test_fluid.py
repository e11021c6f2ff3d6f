"""The analytic mode's backlog (noor.sim.fluid): the lagged offered load, the fluid queue, partitions pre-empted."""

from __future__ import annotations

import math

import numpy as np
import pytest

from noor.sim.fleet import TrainingInfo
from noor.sim.fluid import STEP_S, occupancy, run_site


@pytest.mark.parametrize(("dist", "sigma"), [("lognormal", 0.25), ("lognormal", 1.0), ("exponential", 1.0),
                                             ("fixed", 1.0)])  # fmt: skip
def test_a_steady_rate_keeps_rate_x_length_busy(dist: str, sigma: float) -> None:
    rate = np.full(600, 2.0)  # 2 jobs a second for 10 hours, each 300 s on average
    busy = occupancy(rate, 300.0, dist, sigma)
    assert busy[-1] == pytest.approx(600.0, rel=0.01)  # Little: L = λ E[S]
    assert busy[0] < busy[3] < busy[-1]  # it fills from empty


def test_a_step_up_in_sessions_fills_the_pool_at_their_length() -> None:
    """Exponential sessions of 900 s: after a step from 0 to λ the busy GPUs are λ E[S] (1 - exp(-t / E[S]))."""
    rate = np.full(120, 1.0)
    busy = occupancy(rate, 900.0, "exponential", 1.0)
    t = (np.arange(120) + 1) * STEP_S
    assert busy == pytest.approx(900.0 * (1 - np.exp(-t / 900.0)), rel=0.02)


def _info(gpus: int = 40, work_h: float = 100.0, priority: int = 10) -> TrainingInfo:
    return TrainingInfo(name="ft", site=0, gpus=gpus, nodes=gpus // 8, start_s=0.0, work_s=work_h * 3600,
                        checkpoint_s=1800.0, restart_s=600.0, priority=priority)  # fmt: skip


def test_a_queue_grows_at_the_excess_and_drains_after() -> None:
    """100 GPUs offered 110 for an hour, then 80: the queue reaches 10 x 3600 GPU-seconds (a 360 s wait: a job finds
    W / c ahead of it) and drains at 20 a second, in 30 minutes."""
    offered = np.r_[np.full(60, 110.0), np.full(60, 80.0)]
    step_len = np.full(120, STEP_S)
    b = run_site(offered, np.full(120, 100.0), step_len, 100, 1.0, [], "never", 60.0, 0)
    assert b.queued_s[60] == pytest.approx(36_000.0)
    assert b.wait_s(np.array([59]), np.array([1.0]), step_len)[0] == pytest.approx(360.0)
    assert b.carries()[:90].all() and not b.carries()[90:].any()
    assert b.served_s.sum() == pytest.approx(110 * 3600 + 80 * 3600)  # all the work is done by the horizon


def test_serving_takes_back_a_partition_and_gives_it_back_when_it_fits() -> None:
    """100 GPUs, a 40-GPU partition: serving offered 70 (above the 60 left) for an hour from minute 30. Once a job
    has waited 60 s (the one that found 3,600 GPU-seconds over 60 GPUs at minute 36, by minute 37) the partition is
    pre-empted, rolled back to its checkpoint (37 minutes of work, 30 kept), and taken again when the offered load
    (50, at minute 90) fits beside it, holding 600 s without work first."""
    offered = np.r_[np.full(30, 50.0), np.full(60, 70.0), np.full(30, 50.0)]
    step_len = np.full(120, STEP_S)
    b = run_site(offered, np.full(120, 100.0), step_len, 100, 1.0, [_info()], "priority", 60.0, 0)
    (row,) = b.training
    assert row["preemptions"] == 1
    assert b.held[:37].tolist() == [40] * 37 and b.held[37:90].max() == 0 and b.held[90:].min() == 40
    assert row["waited_h"] == pytest.approx(53 / 60)
    assert row["restart_gpu_h"] == pytest.approx(40 * 600 / 3600)
    assert row["lost_gpu_h"] == pytest.approx(40 * 420 / 3600)  # 7 minutes since its checkpoint
    assert b.carries()[30:40].all() and not b.carries()[40:].any()  # 4,200 GPU-s drain at 30 a second
    outranked = run_site(offered, np.full(120, 100.0), step_len, 100, 1.0, [_info(priority=-1)], "priority", 60.0, 0)
    assert outranked.training[0]["preemptions"] == 0 and outranked.carries()[35:90].all()
    assert math.isclose(outranked.held.min(), 40)
