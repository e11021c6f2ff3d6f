"""Where a split's chips sit: scale-up domains of `domain` chips, joined by a scale-out network.

Ranks are numbered the way xDiT and yunchang lay out a (ulysses, ring, cfg) split: Ulysses innermost (consecutive
ranks), then ring, then CFG outermost (xDiT's RankGenerator order "tp-sp-pp-cfg-dp", and yunchang's USP with the
Ulysses group low). Every domain holds the same number of ranks, as torchrun launches them (its --nproc-per-node is
one value for every node): 12 chips in 8-chip servers are 6 + 6, not 8 + 4. A collective whose members sit in
several domains moves its cross-domain share over the scale-out network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Placement:
    domains: int  # scale-up domains the split spans
    ulysses_peers: tuple[int, int]  # (same-domain, other-domain) all-to-all peers of the worst-placed chip
    ring_crosses: bool  # a ring hop leaves its domain (the ring runs at its slowest hop's pace)
    cfg_crosses: bool  # a CFG partner sits in another domain
    gather_share: float  # share of sharded weights a chip gathers from other domains


def place(degrees: tuple[int, int, int], domain: int) -> Placement:
    u, r, c = degrees
    g = u * r * c
    domains = next(m for m in range(math.ceil(g / domain), g + 1) if g % m == 0)  # the fewest equal shares
    per_domain = g // domains

    def dom(ui: int, ri: int, ci: int) -> int:
        return ((ci * r + ri) * u + ui) // per_domain

    peers = (u - 1, 0)
    for ci in range(c):
        for ri in range(r):
            homes = [dom(ui, ri, ci) for ui in range(u)]
            for home in homes:
                away = sum(1 for h in homes if h != home)
                if away > peers[1]:
                    peers = (u - 1 - away, away)
    ring = r > 1 and any(
        dom(ui, ri, ci) != dom(ui, (ri + 1) % r, ci) for ui in range(u) for ri in range(r) for ci in range(c)
    )
    cfg = c > 1 and any(
        dom(ui, ri, ci) != dom(ui, ri, (ci + 1) % c) for ui in range(u) for ri in range(r) for ci in range(c)
    )
    return Placement(domains, peers, ring, cfg, (g - per_domain) / g)
