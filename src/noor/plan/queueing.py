"""How many requests per second a pool of servers takes at a utilisation cap and a p95 wait SLO.

Waits come from `noor.sim.analytic.pool_stats` (Erlang C scaled by Allen-Cunneen). Its Erlang B
recursion costs O(servers); a 2 GW campus has pools of ~10^5-10^6 servers, so above `EXACT_UP_TO`
servers the same Erlang C is computed in O(1) from the Poisson form of Erlang B,
B(c, a) = P(X = c) / P(X <= c) with X ~ Poisson(a) (Erlang 1917; e.g. Kleinrock, Queueing Systems I, §3.4),
with scipy's regularised incomplete gamma. tests/plan/test_queueing.py checks both agree.
"""

from __future__ import annotations

import math

from scipy.special import gammaincc, gammaln

from noor.sim import analytic

EXACT_UP_TO = 2000  # servers: below this, noor.sim.analytic itself


def erlang_c(servers: int, offered_erlangs: float) -> float:
    if offered_erlangs <= 0:
        return 0.0
    if servers <= EXACT_UP_TO:
        return analytic.erlang_c(servers, offered_erlangs)
    log_pmf = servers * math.log(offered_erlangs) - offered_erlangs - gammaln(servers + 1)
    cdf = float(gammaincc(servers + 1, offered_erlangs))  # P(X <= c) for X ~ Poisson(a)
    b = math.exp(log_pmf) / cdf if cdf > 0 else 1.0
    rho = offered_erlangs / servers
    return b / (1 - rho + rho * b)


def wait_p95_s(arrival_per_s: float, service_s: float, servers: int, service_cv2: float, arrival_cv2: float) -> float:
    """p95 queue wait of a G/G/c pool (inf if unstable); noor.sim.analytic's formulas."""
    if servers <= EXACT_UP_TO:
        return analytic.pool_stats(arrival_per_s, service_s, servers, service_cv2, arrival_cv2).wait_p95_s
    offered = arrival_per_s * service_s
    if offered >= servers:
        return math.inf
    p_wait = erlang_c(servers, offered)
    tail_mean_s = (arrival_cv2 + service_cv2) / 2 / (servers / service_s - arrival_per_s) if arrival_per_s > 0 else 0
    if p_wait <= 0.05 or tail_mean_s <= 0:
        return 0.0
    return tail_mean_s * math.log(p_wait / 0.05)


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
    find every slot busy. The recursion below EXACT_UP_TO servers, the Poisson form above."""
    if servers < 0:
        raise ValueError(f"servers must be >= 0, got {servers}")
    if offered_erlangs <= 0:
        return 0.0
    if servers <= EXACT_UP_TO:
        b = 1.0
        for k in range(1, servers + 1):
            b = offered_erlangs * b / (k + offered_erlangs * b)
        return b
    log_pmf = servers * math.log(offered_erlangs) - offered_erlangs - gammaln(servers + 1)
    cdf = float(gammaincc(servers + 1, offered_erlangs))
    return math.exp(log_pmf) / cdf if cdf > 0 else 1.0


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
