"""Queueing approximations for a pool of identical servers (GPUs): fleets too large to simulate job by job.

A pool of `servers` GPUs fed by arrivals at `arrival_per_s` with mean service `service_mean_s` is an
M/G/c (or G/G/c) queue. Erlang C gives the exact M/M/c probability that a job waits and its mean wait;
Allen-Cunneen scales that by the variability of arrivals and service, (ca² + cs²) / 2
(Allen, "Probability, Statistics, and Queueing Theory", 2nd ed., 1990, §6.5; Whitt, "Approximations for
the GI/G/m queue", Production and Operations Management 2(2), 1993). Wait percentiles assume the M/M/c
shape of the waiting-time tail, P(W > t) = P(wait) · exp(-t / m), with m the scaled conditional mean wait.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.special import gammaincc, gammaln

RECURSION_UP_TO = 2000  # servers: the Erlang B recursion up to here, its closed Poisson form above


class QueueError(ValueError):
    """A pool whose inputs make no sense (negative rate, no servers...)."""


@dataclass(frozen=True)
class PoolStats:
    servers: int
    arrival_per_s: float
    service_mean_s: float
    utilisation: float  # offered load per server, ρ = λ·E[S] / c
    stable: bool  # ρ < 1; otherwise the queue grows without bound and the waits below are inf
    p_wait: float  # probability that an arriving job waits at all
    wait_mean_s: float
    wait_p50_s: float
    wait_p95_s: float
    wait_p99_s: float

    def wait_quantile_s(self, q: float) -> float:
        if not self.stable:
            return math.inf
        return _wait_quantile(self.p_wait, self.wait_mean_s / self.p_wait if self.p_wait > 0 else 0.0, q)


def erlang_b(servers: int, offered_erlangs: float) -> float:
    """Blocking probability of M/G/c/c with `offered_erlangs` = λ/μ (insensitive to the service distribution).

    Up to RECURSION_UP_TO servers through the Erlang B recursion (no factorials); above, in O(1) from its Poisson
    form, B(c, a) = P(X = c) / P(X <= c) with X ~ Poisson(a) (Erlang 1917; Kleinrock, Queueing Systems I, §3.4),
    with scipy's log-gamma and regularised incomplete gamma: a campus hall's pool is ~30,000 servers, and the
    analytic mode evaluates one a minute. tests/sim/test_analytic.py checks the two forms agree.
    """
    if offered_erlangs <= 0:
        return 0.0
    if servers <= RECURSION_UP_TO:
        b = 1.0
        for k in range(1, servers + 1):
            b = offered_erlangs * b / (k + offered_erlangs * b)
        return b
    log_pmf = servers * math.log(offered_erlangs) - offered_erlangs - float(gammaln(servers + 1))
    cdf = float(gammaincc(servers + 1, offered_erlangs))  # P(X <= c) for X ~ Poisson(a)
    return math.exp(log_pmf) / cdf if cdf > 0 else 1.0


def erlang_c(servers: int, offered_erlangs: float) -> float:
    """Probability that a job waits in M/M/c with `offered_erlangs` = λ/μ (< servers), from Erlang B."""
    if offered_erlangs <= 0:
        return 0.0
    b = erlang_b(servers, offered_erlangs)
    rho = offered_erlangs / servers
    return b / (1 - rho + rho * b)


def _wait_quantile(p_wait: float, tail_mean_s: float, q: float) -> float:
    """q-quantile of a wait that is 0 with probability 1 - p_wait, else exponential with mean `tail_mean_s`."""
    if p_wait <= 1 - q or tail_mean_s <= 0:
        return 0.0
    return tail_mean_s * math.log(p_wait / (1 - q))


def pool_stats(
    arrival_per_s: float,
    service_mean_s: float,
    servers: int,
    service_cv2: float = 1.0,
    arrival_cv2: float = 1.0,
) -> PoolStats:
    """Waiting time of a G/G/c pool by Allen-Cunneen. `*_cv2`: squared coefficients of variation (1 = exponential)."""
    for name, value in (("arrival_per_s", arrival_per_s), ("service_cv2", service_cv2), ("arrival_cv2", arrival_cv2)):
        if not value >= 0 or math.isinf(value):
            raise QueueError(f"{name} must be a finite number >= 0, got {value!r}")
    if not service_mean_s > 0 or math.isinf(service_mean_s):
        raise QueueError(f"service_mean_s must be a finite number > 0, got {service_mean_s!r}")
    if servers < 1:
        raise QueueError(f"servers must be >= 1, got {servers!r}")
    offered = arrival_per_s * service_mean_s
    rho = offered / servers
    if rho >= 1:
        inf = math.inf
        return PoolStats(servers, arrival_per_s, service_mean_s, rho, False, 1.0, inf, inf, inf, inf)
    p_wait = erlang_c(servers, offered)
    variability = (arrival_cv2 + service_cv2) / 2
    # M/M/c: E[Wq | wait] = 1 / (cμ - λ); Allen-Cunneen scales it by the variability term
    tail_mean_s = variability / (servers / service_mean_s - arrival_per_s) if arrival_per_s > 0 else 0.0
    return PoolStats(
        servers=servers,
        arrival_per_s=arrival_per_s,
        service_mean_s=service_mean_s,
        utilisation=rho,
        stable=True,
        p_wait=p_wait,
        wait_mean_s=p_wait * tail_mean_s,
        wait_p50_s=_wait_quantile(p_wait, tail_mean_s, 0.50),
        wait_p95_s=_wait_quantile(p_wait, tail_mean_s, 0.95),
        wait_p99_s=_wait_quantile(p_wait, tail_mean_s, 0.99),
    )


def servers_for(
    arrival_per_s: float,
    service_mean_s: float,
    wait_p95_s: float,
    service_cv2: float = 1.0,
    arrival_cv2: float = 1.0,
    max_utilisation: float = 1.0,
) -> int:
    """The fewest servers whose p95 wait is <= `wait_p95_s` and whose utilisation is <= `max_utilisation`."""
    if not wait_p95_s >= 0:
        raise QueueError(f"wait_p95_s must be >= 0, got {wait_p95_s!r}")
    if not 0 < max_utilisation <= 1:
        raise QueueError(f"max_utilisation must be in (0, 1], got {max_utilisation!r}")
    if arrival_per_s <= 0:
        return 0
    lo = max(1, math.ceil(arrival_per_s * service_mean_s / max_utilisation - 1e-9))
    hi = lo
    # the p95 wait falls as servers are added: double until it holds, then bisect
    while True:
        stats = pool_stats(arrival_per_s, service_mean_s, hi, service_cv2, arrival_cv2)
        if stats.stable and stats.utilisation <= max_utilisation and stats.wait_p95_s <= wait_p95_s:
            break
        lo, hi = hi + 1, hi * 2
    while lo < hi:
        mid = (lo + hi) // 2
        stats = pool_stats(arrival_per_s, service_mean_s, mid, service_cv2, arrival_cv2)
        if stats.stable and stats.utilisation <= max_utilisation and stats.wait_p95_s <= wait_p95_s:
            hi = mid
        else:
            lo = mid + 1
    return hi
