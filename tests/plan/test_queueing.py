"""The O(1) Erlang C for big pools agrees with the Erlang B recursion; max_arrival_per_s is the limit."""

from __future__ import annotations

import pytest

from noor.plan import queueing
from noor.sim import analytic


def _erlang_c_by_recursion(servers: int, offered: float) -> float:
    b = 1.0
    for k in range(1, servers + 1):
        b = offered * b / (k + offered * b)
    rho = offered / servers
    return b / (1 - rho + rho * b)


@pytest.mark.parametrize(("servers", "rho"), [(2001, 0.8), (2500, 0.95), (5000, 0.99), (3000, 0.5), (4000, 0.999)])
def test_poisson_form_matches_the_recursion(servers: int, rho: float) -> None:
    offered = rho * servers
    assert queueing.erlang_c(servers, offered) == pytest.approx(_erlang_c_by_recursion(servers, offered), rel=1e-7,
                                                                abs=1e-300)


def test_big_pool_wait_is_allen_cunneen_on_the_recursion() -> None:
    import math

    for servers, service_s in ((2600, 40.0), (4000, 7.0)):
        lam = 0.995 * servers / service_s
        p_wait = _erlang_c_by_recursion(servers, lam * service_s)
        tail_s = (1.0 + 0.1) / 2 / (servers / service_s - lam)  # Allen-Cunneen: E[W | W > 0] x (ca2 + cs2) / 2
        exact = tail_s * math.log(p_wait / 0.05)
        assert queueing.wait_p95_s(lam, service_s, servers, 0.1, 1.0) == pytest.approx(exact, rel=1e-6)


def test_max_arrival_is_the_edge_of_the_slo() -> None:
    servers, service_s, budget = 10, 20.0, 5.0
    lam = queueing.max_arrival_per_s(servers, service_s, 0.95, budget, 0.1, 1.0)
    assert 0 < lam < 0.95 * servers / service_s  # the wait binds before the utilisation cap
    assert analytic.pool_stats(lam, service_s, servers, 0.1, 1.0).wait_p95_s <= budget
    assert analytic.pool_stats(lam * 1.01, service_s, servers, 0.1, 1.0).wait_p95_s > budget
    # with no SLO only the cap binds; no servers, no traffic
    assert queueing.max_arrival_per_s(servers, service_s, 0.8, None, 0.1, 1.0) == pytest.approx(0.8 * 10 / 20)
    assert queueing.max_arrival_per_s(0, service_s, 0.8, None, 0.1, 1.0) == 0
