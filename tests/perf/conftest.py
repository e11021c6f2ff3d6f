from __future__ import annotations

from collections.abc import Iterator

import pytest

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
def fixed_cpu_local(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from noor.perf import task

    monkeypatch.setattr(
        local, "load_or_measure", lambda remeasure=False: {**local._key(), **RECORD, "processor": "test"}
    )
    local._record.cache_clear()
    task.estimate_task.cache_clear()
    yield
    local._record.cache_clear()
    task.estimate_task.cache_clear()
