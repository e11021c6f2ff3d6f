"""The batch-invariance hook's shared GEMM: used only for shapes checked to give each sample its own bytes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from noor.engine.tiny import invariance


@pytest.fixture(autouse=True)
def fresh_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(invariance, "_SHARED_AGREES", {})


def linear_with_hook(rows_in: int = 16, rows_out: int = 24) -> nn.Linear:
    torch.manual_seed(0)
    layer = nn.Linear(rows_in, rows_out)
    invariance.enable(layer)
    return layer


@torch.no_grad()
def test_each_sample_gets_the_bytes_it_gets_alone() -> None:
    layer = linear_with_hook()
    for rows in (1, 3, invariance.SHARED_MIN_ROWS, 64):
        x = torch.randn(4, rows, 16)
        together = layer(x)
        for i in range(4):
            assert torch.equal(together[i], layer(x[i : i + 1])[0]), rows
    # the many-row shapes were checked once each; a one-row sample never shares a GEMM
    assert {key[:2] for key in invariance._SHARED_AGREES} == {(4, invariance.SHARED_MIN_ROWS), (4, 64)}


@torch.no_grad()
def test_a_shape_whose_shared_gemm_differs_stays_per_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    layer = linear_with_hook()
    x = torch.randn(3, 32, 16)
    alone = torch.cat([layer(x[i : i + 1]) for i in range(3)])
    true_linear = invariance.F.linear
    calls = []

    def skewed(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        calls.append(x.shape)  # a shared GEMM that sums in another order: one ulp off somewhere
        return torch.nextafter(true_linear(x, weight, bias), torch.tensor(float("inf")))

    monkeypatch.setattr(invariance.F, "linear", skewed)
    assert torch.equal(layer(x), alone)  # the check ran both ways and kept the per-sample bytes
    shape = (3, 32, 16, 24, False, torch.float32, torch.get_num_threads())
    assert list(invariance._SHARED_AGREES.items()) == [(shape, False)]
    calls.clear()
    assert torch.equal(layer(x), alone) and calls == []  # decided once: no shared GEMM for this shape again


def test_training_runs_the_plain_linear() -> None:
    layer = linear_with_hook()
    x = torch.randn(2, 32, 16, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None and invariance._SHARED_AGREES == {}
