"""When requests arrive, from whom, of which class: Poisson with a diurnal profile and bursts, or a trace.

Poisson arrivals with a rate that changes over the day are drawn exactly by thinning (Lewis & Shedler,
"Simulation of nonhomogeneous Poisson processes by thinning", Naval Res. Logistics Q. 26(3), 1979):
draw at the peak rate, keep each arrival with probability rate(t) / peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from noor.sim.scenario import Scenario, ScenarioError, utc_offset_h

# Hourly weights in local time, scaled to a mean of 1 when used. ASSUMPTIONS, not measurements of video
# generation traffic (none is published): "consumer" follows the familiar shape of consumer web traffic,
# low at 03:00-05:00, rising through the day to an evening peak at 20:00-22:00 (peak/trough about 3.5);
# "business" is office hours, 09:00-17:00 on a low night floor.
PROFILES: dict[str, tuple[float, ...]] = {
    "flat": (1.0,) * 24,
    "consumer": (0.55, 0.42, 0.33, 0.28, 0.26, 0.28, 0.36, 0.5, 0.68, 0.84, 0.95, 1.02,
                 1.08, 1.1, 1.1, 1.12, 1.18, 1.28, 1.42, 1.6, 1.75, 1.8, 1.55, 0.9),
    "business": (0.2, 0.2, 0.2, 0.2, 0.2, 0.25, 0.4, 0.8, 1.4, 1.9, 2.0, 2.0,
                 1.7, 1.9, 2.0, 1.95, 1.8, 1.4, 0.8, 0.5, 0.35, 0.3, 0.25, 0.2),
}


def profile(s: Scenario, region: str) -> np.ndarray:
    """The region's 24 hourly weights in local time, mean 1."""
    d = s.regions[region].diurnal
    w = np.asarray(PROFILES[d] if isinstance(d, str) else d, dtype=float)
    return w / w.mean()


def rate_per_s(s: Scenario, tenant: int, t_s: np.ndarray) -> np.ndarray:
    """Tenant's arrival rate at UTC seconds `t_s` from the start of the day: mean x profile x bursts."""
    ten = s.tenants[tenant]
    home = ten.home or ten.regions[0]
    offset_h = utc_offset_h(s.regions[home].timezone, s.date)
    local_h = np.floor((t_s / 3600.0 + offset_h) % 24).astype(int)
    rate = ten.requests_per_h / 3600.0 * profile(s, home)[local_h]
    for b in s.bursts:
        if (b.tenant is None or b.tenant == ten.name) and (b.region is None or b.region == home):
            inside = (t_s >= b.start_h * 3600) & (t_s < (b.start_h + b.duration_h) * 3600)
            rate = np.where(inside, rate * b.multiplier, rate)
    return rate


def peak_rate_per_s(s: Scenario, tenant: int) -> float:
    ten = s.tenants[tenant]
    home = ten.home or ten.regions[0]
    peak = ten.requests_per_h / 3600.0 * float(profile(s, home).max())
    for b in s.bursts:
        if (b.tenant is None or b.tenant == ten.name) and (b.region is None or b.region == home):
            peak *= max(1.0, b.multiplier)
    return peak


@dataclass
class Arrivals:
    """One row per request, sorted by time. `noise`: actual / predicted duration (lognormal, mean 1)."""

    t_s: np.ndarray  # float64
    tenant: np.ndarray  # int32, index into scenario.tenants
    cls: np.ndarray  # int32, index into the class list
    noise: np.ndarray  # float64

    def __len__(self) -> int:
        return len(self.t_s)


def _noise(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    if sigma == 0:
        return np.ones(n)
    return np.exp(rng.normal(-sigma * sigma / 2, sigma, n))  # E[exp(N(mu, s²))] = exp(mu + s²/2) = 1


def mix(s: Scenario, tenant: int) -> np.ndarray:
    """The tenant's class probabilities, in scenario class order."""
    ten = s.tenants[tenant]
    names = [c.name for c in s.classes]
    w = np.zeros(len(names))
    for i, c in enumerate(s.classes):
        w[i] = ten.classes.get(c.name, 0.0) if ten.classes is not None else c.weight
    return w / w.sum() if w.sum() > 0 else w


def poisson(s: Scenario) -> Arrivals:
    """Every tenant's arrivals over [0, horizon): seeded, so the same scenario gives the same requests."""
    rng = np.random.default_rng([s.seed, 0])
    horizon_s = s.horizon_h * 3600
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for i, ten in enumerate(s.tenants):
        if ten.requests_per_h <= 0:
            continue
        peak = peak_rate_per_s(s, i)
        n = rng.poisson(peak * horizon_s)
        t = np.sort(rng.uniform(0.0, horizon_s, n))
        keep = rng.uniform(0.0, 1.0, n) * peak < rate_per_s(s, i, t)
        t = t[keep]
        cls = rng.choice(len(s.classes), size=len(t), p=mix(s, i)).astype(np.int32)
        parts.append((t, np.full(len(t), i, dtype=np.int32), cls))
    t_all = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0)
    order = np.argsort(t_all, kind="stable")
    return Arrivals(
        t_s=t_all[order],
        tenant=np.concatenate([p[1] for p in parts])[order] if parts else np.zeros(0, np.int32),
        cls=np.concatenate([p[2] for p in parts])[order] if parts else np.zeros(0, np.int32),
        noise=_noise(rng, len(t_all), s.duration_noise_sigma),
    )


TRACE_COLUMNS = "time_s, and class (a scenario class name) or model [width height frames steps gpus]; tenant optional"


def read_table(path: str | Path) -> dict[str, list[object]]:
    """A CSV or Parquet file as columns."""
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.parquet

    path = Path(path)
    try:
        table: pa.Table = (
            pyarrow.parquet.read_table(path) if path.suffix.lower() == ".parquet" else pyarrow.csv.read_csv(path)
        )
    except (OSError, pa.ArrowInvalid) as err:
        raise ScenarioError(f"trace.path: cannot read {str(path)!r} as {path.suffix or 'CSV'} ({err})") from None
    return {name: table.column(name).to_pylist() for name in table.column_names}


def trace(s: Scenario, classes: list[dict[str, object]]) -> Arrivals:
    """Replay a trace. Rows naming a model instead of a class add classes to `classes` (dicts as in the TOML)."""
    assert s.trace is not None
    cols = read_table(s.trace.path)
    where = f"trace.path ({s.trace.path})"
    if "time_s" not in cols or ("class" not in cols and "model" not in cols):
        raise ScenarioError(f"{where}: needs columns {TRACE_COLUMNS}; got {sorted(cols)}")
    n = len(cols["time_s"])
    tenants = {t.name: i for i, t in enumerate(s.tenants)}
    by_name = {str(c["name"]): i for i, c in enumerate(classes)}
    t_s, ten, cls = np.zeros(n), np.zeros(n, np.int32), np.zeros(n, np.int32)
    for row in range(n):
        t = cols["time_s"][row]
        if not isinstance(t, int | float) or not math.isfinite(t) or t < 0:
            raise ScenarioError(f"{where}: row {row + 1}: time_s must be a number >= 0, got {t!r}")
        t_s[row] = t
        name = str(cols["tenant"][row]) if "tenant" in cols else s.tenants[0].name
        if name not in tenants:
            raise ScenarioError(f"{where}: row {row + 1}: unknown tenant {name!r}; valid: {', '.join(tenants)}")
        ten[row] = tenants[name]
        if "class" in cols:
            key = str(cols["class"][row])
            if key not in by_name:
                raise ScenarioError(f"{where}: row {row + 1}: unknown class {key!r}; valid: {', '.join(by_name)}")
        else:
            spec: dict[str, object] = {"model": str(cols["model"][row])}
            for col in ("width", "height", "frames", "steps", "gpus"):
                value = cols[col][row] if col in cols else None
                if value is not None:
                    if not isinstance(value, int | float) or value != int(value):
                        raise ScenarioError(f"{where}: row {row + 1}: {col} must be an integer, got {value!r}")
                    spec[col] = int(value)
            key = " ".join(f"{v}" for v in spec.values())
            if key not in by_name:
                by_name[key] = len(classes)
                classes.append({"name": key, **spec})
        cls[row] = by_name[key]
    order = np.argsort(t_s, kind="stable")
    keep = t_s[order] < s.horizon_h * 3600
    order = order[keep]
    if not len(order):
        raise ScenarioError(f"{where}: no arrivals before horizon_h = {s.horizon_h} h ({n} rows)")
    rng = np.random.default_rng([s.seed, 0])
    return Arrivals(t_s[order], ten[order], cls[order], _noise(rng, len(order), s.duration_noise_sigma))
