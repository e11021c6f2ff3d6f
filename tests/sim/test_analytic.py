import math

import pytest

from noor.sim.analytic import QueueError, erlang_c, pool_stats, servers_for


def test_mm1_matches_the_closed_form() -> None:
    # M/M/1, ρ = 0.5, E[S] = 1 s: P(wait) = ρ, E[Wq] = ρ / (μ - λ) = 1 s, P(Wq > t) = ρ·exp(-(μ - λ)t)
    s = pool_stats(0.5, 1.0, 1)
    assert s.p_wait == pytest.approx(0.5)
    assert s.wait_mean_s == pytest.approx(1.0)
    assert s.wait_p50_s == 0.0
    assert s.wait_p95_s == pytest.approx(2 * math.log(0.5 / 0.05))


def test_erlang_c_textbook_value() -> None:
    # 10 agents, 8 erlangs offered: P(wait) = 0.409 (standard Erlang C table)
    assert erlang_c(10, 8.0) == pytest.approx(0.4092, abs=5e-4)


def test_deterministic_service_halves_the_wait() -> None:
    # M/D/c: cs² = 0, so Allen-Cunneen's factor (1 + 0) / 2 halves the M/M/c wait (exact for c = 1: Pollaczek-Khinchine)
    assert pool_stats(0.5, 1.0, 1, service_cv2=0.0).wait_mean_s == pytest.approx(0.5)


def test_overloaded_pool_is_unstable() -> None:
    s = pool_stats(2.0, 1.0, 2)
    assert not s.stable and s.wait_p95_s == math.inf


def test_servers_for_is_the_fewest_that_meet_the_slo() -> None:
    c = servers_for(100.0, 1.5, wait_p95_s=0.0)
    assert pool_stats(100.0, 1.5, c).wait_p95_s <= 0.0 < pool_stats(100.0, 1.5, c - 1).wait_p95_s
    assert servers_for(900.0, 10.0, wait_p95_s=60.0, max_utilisation=0.8) == 11250
    assert servers_for(0.0, 10.0, wait_p95_s=1.0) == 0


@pytest.mark.parametrize(
    ("args", "name"), [((-1.0, 1.0, 1), "arrival_per_s"), ((1.0, 0.0, 1), "service_mean_s"), ((1.0, 1.0, 0), "servers")]
)
def test_bad_inputs_name_the_field(args: tuple[float, float, int], name: str) -> None:
    with pytest.raises(QueueError, match=name):
        pool_stats(*args)


@pytest.mark.parametrize(("servers", "rho"), [(2001, 0.9), (3000, 0.99), (2500, 0.5), (4000, 0.999)])
def test_erlang_b_above_the_recursion_is_its_poisson_form(servers: int, rho: float) -> None:
    from noor.sim.analytic import RECURSION_UP_TO, erlang_b

    assert servers > RECURSION_UP_TO
    offered, b = rho * servers, 1.0
    for k in range(1, servers + 1):
        b = offered * b / (k + offered * b)
    assert erlang_b(servers, offered) == pytest.approx(b, rel=1e-7, abs=1e-300)
