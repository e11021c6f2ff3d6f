"""A simulation scenario as TOML: regions, sites, request classes, tenants, bursts, an optional trace.

`load(path)` parses and checks everything up front; each mistake is a `ScenarioError` naming the key path
and the bad value: `sites[0].gpus: must be > 0, got -3`, `tenants[2].regions: ...`, `bogus: unknown key`.
See examples/sim/*.toml and docs/simulate.md.
"""

from __future__ import annotations

import datetime as dt
import math
import tomllib
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, model_validator


class ScenarioError(ValueError):
    """A scenario mistake; the message starts with the key path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Hourly = Annotated[list[NonNegFloat], Field(min_length=24, max_length=24)]


class Scheduling(_Strict):
    policy: str = "fifo"  # a name from noor.scheduling: fifo, priority, sjf, fair-share
    aging_per_s: NonNegFloat = 0.01  # sjf only
    max_batch: int = Field(1, ge=1)  # > 1: compatible small jobs (same class) run together as one call
    batch_max_predicted_s: PositiveFloat = 60.0  # only jobs predicted shorter than this are batched
    # training partitions: "never" pre-empted, or taken back by serving jobs that outrank them ("priority"):
    # noor.scheduling.preemption; a serving job that has waited preempt_after_s at the site may pre-empt
    preemption: str = "never"
    preempt_after_s: PositiveFloat = 60.0


class Region(_Strict):
    timezone: str = "UTC"  # IANA name, e.g. "Asia/Riyadh"
    # "flat", "consumer", "business", or 24 hourly weights in local time (scaled to a mean of 1)
    diurnal: Literal["flat", "consumer", "business"] | Hourly = "consumer"


class Site(_Strict):
    name: str
    region: str
    chip: str
    gpus: int | None = Field(None, gt=0)
    # Or derive the GPU count from power: power_mw / kw_per_gpu, rounded down to whole nodes
    power_mw: PositiveFloat | None = None
    kw_per_gpu: PositiveFloat | None = None  # all-in facility kW per GPU (server share, network, cooling)
    gpus_per_node: int = Field(8, ge=1)
    mtbf_h: PositiveFloat | None = None  # per GPU; None: no failures
    mttr_h: PositiveFloat = 4.0
    pue: float = Field(1.3, ge=1, allow_inf_nan=False)
    idle_power_fraction: float = Field(0.15, ge=0, le=1)  # of TDP, drawn by an idle GPU
    tdp_w: PositiveFloat | None = None  # default: the chip's from the catalog
    # the GPU's share of its server's CPUs, NICs, fans: drawn while it is up; None: noor.sim.fleet's sourced default
    host_w_per_gpu: NonNegFloat | None = None
    usd_per_gpu_hour: NonNegFloat | None = None  # default: the chip's from the catalog
    # per job, time a GPU is held outside the model's work (encoding, storing, dispatch): not in the perf model
    job_overhead_s: NonNegFloat = 0.0
    # on a [campus]: the site is the campus halls [first, last] (1-based), identical, each of gpus (or power_mw, by
    # default the campus's power / its halls); each hall schedules its own queue
    halls: list[int] | None = Field(None, min_length=2, max_length=2)

    @model_validator(mode="after")
    def _size(self) -> Site:
        power = self.power_mw is not None or self.kw_per_gpu is not None
        if self.halls is not None and self.gpus is None and self.kw_per_gpu is not None:
            return self  # a campus's hall: power_mw defaults to the campus's share (Scenario._halls)
        if self.gpus is None and not (self.power_mw is not None and self.kw_per_gpu is not None):
            raise ValueError("give gpus, or power_mw and kw_per_gpu")
        if self.gpus is not None and power:
            raise ValueError("give gpus or power_mw and kw_per_gpu, not both")
        return self

    @property
    def hall_count(self) -> int:
        return 1 if self.halls is None else self.halls[1] - self.halls[0] + 1

    @property
    def gpu_count(self) -> int:
        """GPUs (of one hall, on a campus)."""
        if self.gpus is not None:
            return self.gpus
        assert self.power_mw is not None and self.kw_per_gpu is not None
        nodes = math.floor(self.power_mw * 1000 / self.kw_per_gpu / self.gpus_per_node)
        return nodes * self.gpus_per_node


INTERACTIVE_ONLY = ("fps", "session_mean_s", "session_dist", "session_sigma", "max_queue")


class RequestClass(_Strict):
    name: str
    # "clip": a generation that runs for the perf model's time; "interactive": a world-model session that holds
    # its chips (one slot) for its length, placed only on chips that draw a frame within 1 / fps
    kind: Literal["clip", "interactive"] = "clip"
    model: str  # a catalog model id; for kind = "interactive" a world model id (noor perf world)
    width: int | None = Field(None, gt=0)  # default: the model's
    height: int | None = Field(None, gt=0)
    frames: int | None = Field(None, gt=0)
    steps: int | None = Field(None, gt=0)
    gpus: int = Field(1, ge=1)  # k GPUs on one node per request
    weight: NonNegFloat = 1.0  # share of requests, unless a tenant gives its own
    slo_s: PositiveFloat | None = None  # end-to-end target
    priority: int = 0  # lower runs first under the priority policy
    # interactive sessions only:
    fps: PositiveFloat = 24.0  # the per-frame SLO: a frame's time on the chip <= 1 / fps
    session_mean_s: PositiveFloat | None = None  # mean session length (required)
    session_dist: Literal["exponential", "lognormal", "fixed"] = "exponential"
    session_sigma: PositiveFloat = 1.0  # lognormal: sigma of log(length)
    max_queue: int | None = Field(None, ge=0)  # sessions allowed to wait; one more is refused (None: no limit)


class Tenant(_Strict):
    name: str
    regions: list[str] = Field(min_length=1)  # where its jobs may run (data residency)
    home: str | None = None  # whose clock its traffic follows; default: its first region
    requests_per_h: NonNegFloat = 0.0  # mean over the day
    share: PositiveFloat = 1.0  # fair-share weight
    priority: int = 0  # added to its classes' priority
    classes: dict[str, NonNegFloat] | None = None  # its own mix: class name -> weight


class Training(_Strict):
    """A training job: it holds a partition of one site (whole nodes, all or nothing) until its work is done."""

    name: str
    site: str  # a site name
    gpus: int | None = Field(None, gt=0)  # the partition: a multiple of the site's gpus_per_node (per hall)
    share: float | None = Field(None, gt=0, le=1)  # or this share of the site's GPUs (of each hall), in whole nodes
    start_h: NonNegFloat = 0.0  # when it asks for its partition
    work_h: PositiveFloat  # hours of work on the partition (72: three days)
    checkpoint_every_h: PositiveFloat = 1.0  # a pre-emption or failure loses the work since the last one
    restart_s: NonNegFloat = 600.0  # held, no work: reloading the last checkpoint after an interruption
    priority: int = 10  # lower runs first, on the classes' scale: serving of a lower value may pre-empt it

    @model_validator(mode="after")
    def _size(self) -> Training:
        if (self.gpus is None) == (self.share is None):
            raise ValueError("give gpus or share, one of them")
        return self

    def gpus_of(self, site: Site) -> int:
        """The partition's GPUs at `site` (per hall): given, or its share of the site in whole nodes."""
        if self.gpus is not None:
            return self.gpus
        assert self.share is not None
        return math.floor(self.share * site.gpu_count / site.gpus_per_node) * site.gpus_per_node


class Campus(_Strict):
    """Halls numbered 1..halls, each power_mw / halls; sites take ranges of them (`Site.halls`)."""

    power_mw: PositiveFloat  # facility power of the whole campus
    halls: int = Field(ge=1)


class Burst(_Strict):
    start_h: NonNegFloat
    duration_h: PositiveFloat
    multiplier: NonNegFloat
    region: str | None = None  # the tenants whose home is this region; none given: everyone
    tenant: str | None = None


class Trace(_Strict):
    path: str  # CSV or Parquet, relative to the scenario file; see docs/simulate.md for the columns


class Scenario(_Strict):
    name: str = "scenario"
    seed: int = 0
    horizon_h: PositiveFloat = 24.0  # arrivals in [0, horizon); jobs still running then are run to the end
    date: dt.date = dt.date(2026, 3, 2)  # the UTC day simulated: fixes each time zone's offset (DST)
    warmup_h: NonNegFloat = 0.0  # jobs submitted earlier are left out of the latency statistics
    sample_s: PositiveFloat = 300.0  # time-series step
    duration_noise_sigma: NonNegFloat = 0.0  # lognormal sigma of actual / predicted duration (mean 1)
    scheduling: Scheduling = Scheduling()
    regions: dict[str, Region] = Field(min_length=1)
    sites: list[Site] = Field(min_length=1)
    classes: list[RequestClass] = Field(min_length=1)
    tenants: list[Tenant] = Field(min_length=1)
    bursts: list[Burst] = []
    trace: Trace | None = None
    training: list[Training] = []
    campus: Campus | None = None

    @model_validator(mode="after")
    def _halls(self) -> Scenario:
        """A campus's site without gpus or power_mw gets the campus's power per hall."""
        if self.campus is None:
            return self
        per_hall = self.campus.power_mw / self.campus.halls
        sites = [x.model_copy(update={"power_mw": per_hall}) if x.halls is not None and x.gpus is None
                 and x.power_mw is None else x for x in self.sites]
        object.__setattr__(self, "sites", sites)
        return self


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _from_validation(err: pydantic.ValidationError) -> ScenarioError:
    first = err.errors()[0]
    loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
    where = _path(loc) or "scenario"
    if first["type"] == "extra_forbidden":
        return ScenarioError(f"{where}: unknown key (value {first['input']!r})")
    if first["type"] == "missing":
        return ScenarioError(f"{where}: missing")
    msg = first["msg"].removeprefix("Value error, ")
    return ScenarioError(f"{where}: {msg[0].lower() + msg[1:]}, got {first['input']!r}")


def parse(data: dict[str, Any]) -> Scenario:
    """Validate a scenario given as a dict (e.g. read from TOML) and check its cross-references."""
    try:
        scenario = Scenario.model_validate(data)
    except pydantic.ValidationError as err:
        raise _from_validation(err) from None
    check(scenario)
    return scenario


def load(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file") from None
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError(f"{path}: not valid TOML ({err})") from None
    scenario = parse(data)
    if scenario.trace is not None and not Path(scenario.trace.path).is_absolute():
        scenario = scenario.model_copy(
            update={"trace": Trace(path=str((path.parent / scenario.trace.path).resolve()))}
        )
    return scenario


def utc_offset_h(timezone: str, day: dt.date) -> float:
    tz = zoneinfo.ZoneInfo(timezone)
    offset = dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC).astimezone(tz).utcoffset()
    assert offset is not None
    return offset.total_seconds() / 3600


def check(s: Scenario) -> None:
    """Cross-references: names exist and are unique, ids are in the catalog, every tenant can run somewhere."""
    from noor import catalog, scheduling

    try:
        scheduling.preemption_policy(s.scheduling.preemption)
    except scheduling.SchedulingError:
        raise ScenarioError(f"scheduling.preemption: unknown policy {s.scheduling.preemption!r}; valid: "
                            f"{', '.join(sorted(scheduling.PREEMPTIONS))}") from None
    try:
        scheduling.get(s.scheduling.policy)
    except scheduling.SchedulingError:
        raise ScenarioError(
            f"scheduling.policy: unknown policy {s.scheduling.policy!r}; valid: {', '.join(scheduling.names())}"
        ) from None
    for name, region in s.regions.items():
        try:
            utc_offset_h(region.timezone, s.date)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ScenarioError(f"regions.{name}.timezone: unknown time zone, got {region.timezone!r}") from None
        if isinstance(region.diurnal, list) and sum(region.diurnal) <= 0:
            raise ScenarioError(f"regions.{name}.diurnal: needs some weight above 0, got {region.diurnal!r}")
    named: dict[str, list[str]] = {
        "sites": [x.name for x in s.sites],
        "classes": [x.name for x in s.classes],
        "tenants": [x.name for x in s.tenants],
    }
    for kind, names in named.items():
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ScenarioError(f"{kind}[{i}].name: used twice, got {name!r}")
    regions = sorted(s.regions)
    for i, site in enumerate(s.sites):
        if site.region not in s.regions:
            raise ScenarioError(f"sites[{i}].region: unknown region {site.region!r}; valid: {', '.join(regions)}")
        if site.chip not in catalog.chip_ids():
            raise ScenarioError(
                f"sites[{i}].chip: unknown chip {site.chip!r}; valid: {', '.join(catalog.chip_ids())}"
            )
        if site.gpu_count < 1:
            raise ScenarioError(
                f"sites[{i}].power_mw: too little for one {site.gpus_per_node}-GPU node, got {site.power_mw!r}"
            )
    classes = {c.name for c in s.classes}
    for i, c in enumerate(s.classes):
        if c.kind == "interactive":
            check_interactive(c, f"classes[{i}]")
            continue
        given = sorted(set(INTERACTIVE_ONLY) & c.model_fields_set)
        if given:
            value = getattr(c, given[0])
            raise ScenarioError(f"classes[{i}].{given[0]}: only for kind = \"interactive\" classes, got {value!r}")
        if c.model not in catalog.model_ids():
            valid = ", ".join(catalog.model_ids())
            raise ScenarioError(f"classes[{i}].model: unknown model {c.model!r}; valid: {valid}")
    if s.trace is None and not s.training and not any(t.requests_per_h > 0 for t in s.tenants):
        raise ScenarioError("tenants: no traffic: give some tenant requests_per_h > 0, a [trace] or [[training]]")
    tenants = {t.name for t in s.tenants}
    for i, t in enumerate(s.tenants):
        for r in t.regions:
            if r not in s.regions:
                raise ScenarioError(f"tenants[{i}].regions: unknown region {r!r}; valid: {', '.join(regions)}")
        if t.home is not None and t.home not in s.regions:
            raise ScenarioError(f"tenants[{i}].home: unknown region {t.home!r}; valid: {', '.join(regions)}")
        if not any(site.region in t.regions for site in s.sites):
            raise ScenarioError(f"tenants[{i}].regions: no site in any of them, so tenant {t.name!r} can run "
                                f"nowhere, got {t.regions!r}")
        for name in t.classes or {}:
            if name not in classes:
                valid = ", ".join(sorted(classes))
                raise ScenarioError(f"tenants[{i}].classes: unknown class {name!r}; valid: {valid}")
        mix = t.classes if t.classes is not None else {c.name: c.weight for c in s.classes}
        if t.requests_per_h > 0 and sum(mix.values()) <= 0:
            raise ScenarioError(f"tenants[{i}].classes: all weights are 0, got {mix!r}")
    for i, b in enumerate(s.bursts):
        if b.region is not None and b.region not in s.regions:
            raise ScenarioError(f"bursts[{i}].region: unknown region {b.region!r}; valid: {', '.join(regions)}")
        if b.tenant is not None and b.tenant not in tenants:
            raise ScenarioError(f"bursts[{i}].tenant: unknown tenant {b.tenant!r}; valid: {', '.join(sorted(tenants))}")
    check_campus(s)
    check_training(s)
    if s.warmup_h >= s.horizon_h:
        raise ScenarioError(f"warmup_h: must be below horizon_h ({s.horizon_h}), got {s.warmup_h!r}")


def check_campus(s: Scenario) -> None:
    """A campus's sites are ranges of its halls that do not overlap, within its power."""
    if s.campus is None:
        for i, site in enumerate(s.sites):
            if site.halls is not None:
                raise ScenarioError(f"sites[{i}].halls: only on a [campus] (power_mw, halls), got {site.halls!r}")
        return
    if s.trace is not None:
        raise ScenarioError(f"trace.path: a [campus] splits drawn traffic over its halls; a trace is not replayed "
                            f"there, got {s.trace.path!r}")
    n = s.campus.halls
    owner: dict[int, int] = {}
    power_mw = 0.0
    for i, site in enumerate(s.sites):
        if site.halls is None:
            raise ScenarioError(f"sites[{i}].halls: missing: a campus's sites are ranges [first, last] of its "
                                f"{n} halls")
        first, last = site.halls
        if not 1 <= first <= last <= n:
            raise ScenarioError(f"sites[{i}].halls: must be [first, last] with 1 <= first <= last <= {n}, "
                                f"got {site.halls!r}")
        taken = [h for h in range(first, last + 1) if h in owner]
        if taken:
            other = owner[taken[0]]
            raise ScenarioError(f"sites[{i}].halls: halls {taken[0]}-{taken[-1]} are also in sites[{other}] "
                                f"({s.sites[other].name!r}), got {site.halls!r}")
        owner.update(dict.fromkeys(range(first, last + 1), i))
        power_mw += (site.power_mw or 0.0) * site.hall_count
    if power_mw > s.campus.power_mw * (1 + 1e-9):
        raise ScenarioError(f"sites: their halls draw {power_mw:,.1f} MW, more than the campus's power_mw, "
                            f"got {s.campus.power_mw!r}")


def check_training(s: Scenario) -> None:
    """Each partition is whole nodes of a known site, and a site's partitions fit in it together."""
    names = [t.name for t in s.training]
    held: dict[str, int] = {}
    for i, t in enumerate(s.training):
        if t.name in names[:i]:
            raise ScenarioError(f"training[{i}].name: used twice, got {t.name!r}")
        site = next((x for x in s.sites if x.name == t.site), None)
        if site is None:
            valid = ", ".join(x.name for x in s.sites)
            raise ScenarioError(f"training[{i}].site: unknown site {t.site!r}; valid: {valid}")
        gpus = t.gpus_of(site)
        key = "gpus" if t.gpus is not None else "share"
        value = t.gpus if t.gpus is not None else t.share
        if gpus % site.gpus_per_node or gpus == 0:
            raise ScenarioError(f"training[{i}].{key}: a partition is whole nodes of {site.gpus_per_node} GPUs "
                                f"({gpus} GPUs), got {value!r}")
        held[t.site] = held.get(t.site, 0) + gpus
        if held[t.site] > site.gpu_count:
            raise ScenarioError(f"training[{i}].{key}: site {t.site!r}'s partitions add up to {held[t.site]:,} "
                                f"GPUs, more than its {site.gpu_count:,}, got {value!r}")


def check_interactive(c: RequestClass, where: str) -> None:
    """An interactive class: a world model, a session length, and none of a clip's fields."""
    from noor import catalog

    if c.model not in catalog.world_ids():
        valid = ", ".join(catalog.world_ids())
        raise ScenarioError(f"{where}.model: unknown world model {c.model!r}; valid: {valid}")
    if c.session_mean_s is None:
        raise ScenarioError(f"{where}.session_mean_s: missing: an interactive class needs its mean session length (s)")
    for name in ("width", "height", "frames"):
        if getattr(c, name) is not None:
            raise ScenarioError(f"{where}.{name}: an interactive class draws its world model's own size, "
                                f"got {getattr(c, name)!r}")
    if c.gpus != 1:
        raise ScenarioError(f"{where}.gpus: an interactive session holds one chip (multi-chip sessions are not "
                            f"modelled), got {c.gpus!r}")
    if c.slo_s is not None:
        raise ScenarioError(f"{where}.slo_s: an interactive class's SLO is per frame (fps), got {c.slo_s!r}")


def apply_overrides(data: dict[str, Any], assignments: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys in a scenario dict (`sites[0].gpus`, `scheduling.policy`); for sweeps and --set."""
    import copy
    import re

    out = copy.deepcopy(data)
    for key, value in assignments.items():
        parts: list[str | int] = []
        for token in key.split("."):
            m = re.fullmatch(r"([^\[\]]+)((?:\[\d+\])*)", token)
            if not m:
                raise ScenarioError(f"{key}: not a key path like sites[0].gpus")
            parts.append(m.group(1))
            parts.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
        node: Any = out
        for j, part in enumerate(parts[:-1]):
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                if isinstance(part, str) and isinstance(node, dict) and isinstance(parts[j + 1], str):
                    node[part] = {}
                    node = node[part]
                else:
                    raise ScenarioError(f"{key}: no such key in the scenario") from None
        last = parts[-1]
        if isinstance(last, int) and not (isinstance(node, list) and last < len(node)):
            raise ScenarioError(f"{key}: no such key in the scenario")
        node[last] = value
    return out
