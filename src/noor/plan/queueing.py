"""How many requests per second a pool of servers takes at a utilisation cap and a p95 wait SLO.

Waits come from `noor.sim.analytic` (Erlang C scaled by Allen-Cunneen), whose Erlang B is O(1) above
`analytic.RECURSION_UP_TO` servers (its Poisson form): a 2 GW campus has pools of ~10^5-10^6 servers.
tests/plan/test_queueing.py and tests/sim/test_analytic.py check the two forms agree.
"""

from __future__ import annotations

import math

from noor.sim import analytic


def erlang_c(servers: int, offered_erlangs: float) -> float:
    return analytic.erlang_c(servers, offered_erlangs)


def wait_p95_s(arrival_per_s: float, service_s: float, servers: int, service_cv2: float, arrival_cv2: float) -> float:
    """p95 queue wait of a G/G/c pool (inf if unstable): noor.sim.analytic.pool_stats, O(1) in the servers."""
    return analytic.pool_stats(arrival_per_s, service_s, servers, service_cv2, arrival_cv2).wait_p95_s


def max_arrival_per_s(
    servers: int,
    service_s: float,
    max_utilisation: float,
    wait_p95_budget_s: float | None,
    service_cv2: float,
    arrival_cv2: float,
) -> float:
    """The highest arrival rate with utilisation <= the cap and p95 wait <= the budget (None: no wait SLO)."""
    if servers < 1:
        return 0.0
    # a pool at exactly rho = 1 is unstable: stay a hair below a cap of 1
    top = min(max_utilisation, 1 - 1e-9) * servers / service_s
    if wait_p95_budget_s is None:
        return top
    if wait_p95_budget_s < 0:
        return 0.0
    if wait_p95_s(top, service_s, servers, service_cv2, arrival_cv2) <= wait_p95_budget_s:
        return top
    low, high = 0.0, top  # the p95 wait rises with the arrival rate: bisect
    for _ in range(60):
        mid = (low + high) / 2
        if wait_p95_s(mid, service_s, servers, service_cv2, arrival_cv2) <= wait_p95_budget_s:
            low = mid
        else:
            high = mid
        if high - low <= 1e-6 * top:
            break
    return low


def erlang_b(servers: int, offered_erlangs: float) -> float:
    """Blocking probability of an M/G/c/c loss system (Erlang B; insensitive to the service distribution,
    so it holds for sessions of any length distribution with Poisson arrivals): the share of sessions that
    find every slot busy. noor.sim.analytic.erlang_b, O(1) in the servers."""
    if servers < 0:
        raise ValueError(f"servers must be >= 0, got {servers}")
    return analytic.erlang_b(servers, offered_erlangs)


def max_offered_erlangs(servers: int, blocking: float) -> float:
    """The most offered load (Erlangs) `servers` slots carry with Erlang B blocking <= `blocking`."""
    if servers < 1:
        return 0.0
    low, high = 0.0, float(servers)
    while erlang_b(servers, high) <= blocking:  # blocking rises with the load: bracket, then bisect
        low, high = high, high * 2
    for _ in range(100):
        mid = (low + high) / 2
        if erlang_b(servers, mid) <= blocking:
            low = mid
        else:
            high = mid
        if high - low <= 1e-9 * max(high, 1.0):
            break
    return low


def servers_for_blocking(offered_erlangs: float, blocking: float) -> int:
    """The fewest slots that carry `offered_erlangs` with Erlang B blocking <= `blocking`."""
    if offered_erlangs <= 0:
        return 0
    low, high = 0, max(1, math.ceil(offered_erlangs))
    while erlang_b(high, offered_erlangs) > blocking:
        low, high = high, high * 2
    while high - low > 1:  # erlang_b(low) > blocking >= erlang_b(high)
        mid = (low + high) // 2
        if erlang_b(mid, offered_erlangs) <= blocking:
            high = mid
        else:
            low = mid
    return high
