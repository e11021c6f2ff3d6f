from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def scenario_dict(**over: Any) -> dict[str, Any]:
    """A small two-region scenario; keyword arguments replace top-level keys."""
    base: dict[str, Any] = {
        "seed": 3,
        "horizon_h": 2.0,
        "regions": {"us-west": {"timezone": "America/Los_Angeles"}, "eu-london": {"timezone": "Europe/London"}},
        "sites": [
            {"name": "us1", "region": "us-west", "chip": "h100-sxm", "gpus": 16},
            {"name": "eu1", "region": "eu-london", "chip": "h100-sxm", "gpus": 8},
        ],
        "classes": [
            {"name": "img", "model": "flux.1-dev", "slo_s": 30.0, "weight": 3},
            {"name": "t2v", "model": "wan2.1-t2v-1.3b", "gpus": 1, "slo_s": 600.0},
        ],
        "tenants": [
            {"name": "acme", "regions": ["us-west"], "requests_per_h": 300},
            {"name": "bank", "regions": ["eu-london"], "requests_per_h": 100},
            {"name": "any", "regions": ["eu-london", "us-west"], "requests_per_h": 100},
        ],
    }
    base.update(over)
    return base


@pytest.fixture
def write_trace(tmp_path: Path):  # type: ignore[no-untyped-def]
    def write(rows: list[tuple[Any, ...]], header: str = "time_s,tenant,class", name: str = "trace.csv") -> Path:
        path = tmp_path / name
        path.write_text(header + "\n" + "\n".join(",".join(str(v) for v in r) for r in rows) + "\n")
        return path

    return write
