"""Plans over more chips than one scale-up domain: ranks placed, cross-domain traffic at the scale-out bandwidth."""

from __future__ import annotations

import pytest

from noor import catalog
from noor.perf import ParallelPlan, Shape, efficiency, estimate
from noor.perf.topology import place

COG = "cogvideox-5b"  # 48 heads: Ulysses over 16 chips divides them
SHAPE = Shape(720, 480, 49, 50)


def test_ranks_are_spread_evenly_over_domains_as_torchrun_launches_them() -> None:
    # 12 chips as Ulysses-3 x Ring-2 x CFG-2 in 8-chip servers: torchrun starts 6 on each (one --nproc-per-node),
    # ranks 0-5 and 6-11. Each sequence-parallel group of 6 is one server; only the CFG pair (rank i, i + 6)
    # crosses, and a sharded chip gathers the 6 shards of the other server.
    p = place((3, 2, 2), 8)
    assert p.domains == 2 and p.ulysses_peers == (2, 0) and not p.ring_crosses and p.cfg_crosses
    assert p.gather_share == pytest.approx(6 / 12)
    # 10 chips: 5 + 5. The Ulysses pair {4, 5} straddles (rank 5 has its one peer away); CFG rank 4 -> 6 crosses
    odd = place((2, 1, 5), 8)
    assert odd.domains == 2 and odd.ulysses_peers == (0, 1) and odd.cfg_crosses
    # 11 chips cannot be split evenly over two servers: one a server
    assert place((1, 11, 1), 8).domains == 11
    inside = place((2, 2, 2), 8)
    assert inside.domains == 1 and inside.ulysses_peers == (1, 0) and not inside.ring_crosses
    assert not inside.cfg_crosses and inside.gather_share == 0
    # Ulysses-4 x Ring-4 on 16 chips: each Ulysses group inside a server, the ring hop 4 -> 8 crosses
    split = place((4, 4, 1), 8)
    assert split.ulysses_peers == (3, 0) and split.ring_crosses and not split.cfg_crosses


def test_a_split_over_two_domains_is_slower_by_its_cross_domain_share_at_scale_out_bandwidth() -> None:
    h100 = catalog.chip("h100-sxm")
    one_domain = h100.model_copy(update={"scaleup_domain": 16})  # the same chip, as if 16 shared one NVLink
    model, eff = catalog.model(COG), efficiency.load()
    plan = ParallelPlan(gpus=16, ulysses=16, ring=1, cfg=1)
    across, inside = estimate(model, SHAPE, h100, plan, eff), estimate(model, SHAPE, one_domain, plan, eff)
    assert across.fits and inside.fits and across.latency_s and inside.latency_s
    # independent count: each chip's all-to-all block is rows/16 x hidden x 2 bytes, 1/16 of it to each peer;
    # 7 peers share its server (NVLink), 8 are in the other (400 Gb/s a GPU), both links busy at once
    rows = across.stage("denoise").detail["tokens"] * model.guidance_passes / 16
    block = rows * model.hidden_size * 2
    link = eff["link_efficiency"]
    up, out = h100.scaleup_gbps / 2 * 1e9 * link, h100.scaleout_gbps / 2 * 1e9 * link  # type: ignore[operator]
    latency = 4 * model.layers * eff["collective_latency_s"]
    want_across = 4 * model.layers * max(block * 7 / 16 / up, block * 8 / 16 / out) + latency
    want_inside = 4 * model.layers * block * 15 / 16 / up + latency
    assert across.stage("denoise").detail["ulysses_comm_s"] == pytest.approx(want_across)
    assert inside.stage("denoise").detail["ulysses_comm_s"] == pytest.approx(want_inside)
    assert across.latency_s - inside.latency_s == pytest.approx(50 * (want_across - want_inside))  # 50 steps
    assert across.latency_s > 1.1 * inside.latency_s  # 50 GB/s a way against 450: it shows end to end
    # the estimate says which tier it used
    assert across.stage("denoise").detail["scaleup_domains"] == 2
    assert any("over 2 scale-up domains of 8" in n and h100.scaleout in n for n in across.notes)  # type: ignore[operator]
    assert not any("scale-up domains" in n for n in inside.notes)


def test_a_chip_without_a_scale_out_tier_is_refused_naming_it() -> None:
    chip = catalog.chip("h20")  # no published scale-out figure (docs/plan.md)
    assert chip.scaleout_gbps is None
    e = estimate(catalog.model(COG), SHAPE, chip, ParallelPlan(gpus=16, ulysses=8, ring=1, cfg=2))
    assert not e.fits and e.latency_s is None and e.cost_usd is None
    assert "h20 has no published scale-out tier (scaleout_gbps)" in (e.why_not or "")
    # the breakdown stays finite (priced as one domain) so the JSON report is valid
    assert 0 < e.stage("denoise").detail["ulysses_comm_s"] < 1


def test_within_one_domain_nothing_changes() -> None:
    """A split inside one server never touches the scale-out figure: removing it changes nothing."""
    h100 = catalog.chip("h100-sxm")
    bare = h100.model_copy(update={"scaleout_gbps": None, "scaleout": None})
    plan = ParallelPlan(gpus=8, ulysses=4, ring=1, cfg=2)
    a, b = estimate(catalog.model(COG), SHAPE, h100, plan), estimate(catalog.model(COG), SHAPE, bare, plan)
    assert a.fits and a.latency_s == b.latency_s
