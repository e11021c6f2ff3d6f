from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from torch.utils._python_dispatch import TorchDispatchMode

from noor.catalog import local

# A fixed cpu-local record, so tests never measure this machine (and do not depend on its load).
RECORD = {
    "linear_tflops": 0.05,
    "attention_tflops": 0.04,
    "attention_half_tokens": 30.0,
    "conv_tflops": 0.03,
    "memory_tbps": 0.02,
    "op_overhead_s": 3e-6,
    "attention_call_s": 1e-4,
    "conv_half_channels": 60.0,
}


@pytest.fixture
def cpu_local_record(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[dict[str, Any]], None]]:
    """`use(record)`: cpu-local is that record from then on (no measurement) until the test ends."""
    from noor.perf import task

    def use(record: dict[str, Any]) -> None:
        monkeypatch.setattr(
            local, "load_or_measure", lambda remeasure=False: {**local._key(), **record, "processor": "test"}
        )
        local._record.cache_clear()
        task.estimate_task.cache_clear()

    yield use
    local._record.cache_clear()
    task.estimate_task.cache_clear()


@pytest.fixture
def fixed_cpu_local(cpu_local_record: Callable[[dict[str, Any]], None]) -> None:
    cpu_local_record(RECORD)


class CountOps(TorchDispatchMode):
    """Counts the operators dispatched inside it (views included): what eager PyTorch costs a CPU, op by op."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.ops += 1
        return func(*args, **(kwargs or {}))


VIEW_OPS = {
    "view", "_unsafe_view", "expand", "permute", "transpose", "t", "unsqueeze", "squeeze", "slice", "select",
    "as_strided", "split", "split_with_sizes", "unbind", "chunk", "detach", "alias", "_reshape_alias", "unflatten",
    "flatten", "reshape",
}  # fmt: skip
MATMUL_OPS = (
    "mm",
    "addmm",
    "bmm",
    "baddbmm",
    "matmul",
    "linear",
    "scaled_dot_product",
    "_efficient_attention",
    "_flash",
)


class CountTraffic(TorchDispatchMode):
    """Operators dispatched, kernels (operators that are not views), and bytes read + written by the kernels
    that are not matmuls or attention: the elementwise traffic the perf model charges as activation passes."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0
        self.kernels = 0
        self.elementwise_bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def,unused-ignore]
        out = func(*args, **(kwargs or {}))
        self.ops += 1
        name = str(func.overloadpacket.__name__)
        if name in VIEW_OPS:
            return out
        self.kernels += 1
        if not any(m in name for m in MATMUL_OPS):
            inputs = [a for a in [*args, *(kwargs or {}).values()] if hasattr(a, "element_size")]
            outputs = [o for o in (out if isinstance(out, tuple | list) else [out]) if hasattr(o, "element_size")]
            self.elementwise_bytes += sum(t.numel() * t.element_size() for t in [*inputs, *outputs])
        return out
