"""A k-rank worker on Ray: two rank actors in one STRICT_PACK placement group (one GPU each: the local cluster's
head counts two pretend GPUs, and the ranks meet over gloo), the same clip as one rank, a killed actor."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from noor.engine.backend import Cancelled
from noor.engine.diffusers import parallel
from noor.engine.diffusers.backend import DiffusersBackend
from noor.engine.diffusers.spec import spec_of
from noor.runtime.ranks import RankFailed, RayRanks
from tests.engine.diffusers.toys import toy_dir
from tests.runtime.test_ranks import entry, task
from tests.runtime.test_ray_cluster import LocalRay, local_ray  # noqa: F401  (the module's cluster)

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    return lambda family: toy_dir(tmp_path_factory, family)


def test_two_rank_actors_in_a_placement_group_equal_one_rank(
    local_ray: LocalRay,  # noqa: F811
    toy: Callable[[str], Path],
) -> None:
    import ray

    model = entry(toy, "ltx-video")
    alone = DiffusersBackend(model, threads=1).generate([task(model, seed=4, steps=3)])[0].frames
    node = local_ray.nodes["me-riyadh"]  # the head: it counts the GPUs
    ranks = RayRanks(spec_of(model), parallel.parse("ulysses=2"), threads=1, gpus=True, node=node, step_timeout_s=120)
    try:
        # 1. the same clip, each step reported, both actors on one node in one STRICT_PACK group of GPU bundles
        steps: list[tuple[int, int]] = []
        media = ranks.generate([task(model, seed=4, steps=3)], lambda d, t: steps.append((d, t)))
        assert np.array_equal(media[0].frames, alone)
        assert steps[-1] == (3, 3) and steps == sorted(set(steps))
        table = ray.util.placement_group_table(ranks.group)
        assert table["strategy"] == "STRICT_PACK" and list(table["bundles"].values()) == [{"GPU": 1.0}] * 2
        assert set(table["bundles_to_node_id"].values()) == {node}
        # 2. cancelled after a step: both stop; the next call runs
        with pytest.raises(Cancelled):
            ranks.generate([task(model, seed=4, steps=3)], lambda d, t: (_ for _ in ()).throw(Cancelled()))
        # 3. an actor killed: the attempt fails; the next call makes a new group
        os.kill(ranks.pids[1], signal.SIGKILL)
        with pytest.raises(RankFailed):
            ranks.generate([task(model, seed=4, steps=3)])
        assert ranks.actors == [] and ranks.group is None
        assert np.array_equal(ranks.generate([task(model, seed=4, steps=3)])[0].frames, alone)
    finally:
        ranks.close()


def test_a_group_no_node_can_hold_fails_the_attempt_after_its_wait(
    local_ray: LocalRay,  # noqa: F811
    toy: Callable[[str], Path],
) -> None:
    model = entry(toy, "ltx-video")  # 3 ranks: the head has 2 GPUs, the other node none
    ranks = RayRanks(spec_of(model), parallel.parse("ring=3"), threads=1, gpus=True, start_timeout_s=3)
    with pytest.raises(RankFailed, match="no node had 3 free GPUs for ring=3 within 3 s"):
        ranks.generate([task(model)])
    assert ranks.actors == [] and ranks.group is None
