"""A scenario resolved into plain numbers the event core reads: sites, classes with perf-model durations,
and which sites each (tenant, class) may use: residency, memory fit and k GPUs per node, decided by
`noor.scheduling.placement` on the same records the live store uses."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from noor import catalog, perf
from noor.scheduling import QueuedJob, WorkerView, eligible, meets_frame_slo
from noor.sim.arrivals import Arrivals, poisson, trace
from noor.sim.scenario import RequestClass, Scenario, ScenarioError

# A site that gives no host power draws this share of its GPU's TDP per GPU for the rest of its server
# (CPUs, host memory, NICs, local storage, fans): Epoch AI, total server power = 1.53 x GPU power (GPUs'
# power usage in AI data centers, 18 Dec 2025, https://epoch-website.web.app/data-insights/gpus-power-usage-in-ai-data-centers;
# data/published/datacenter.md §3), the planner's it.server_per_accelerator. Never 0: a server's host draws.
HOST_SHARE_OF_TDP = 0.53
HOST_DEFAULT_SOURCE = ("default: 0.53 x TDP (Epoch AI: a server draws 1.53 x its GPUs' power; "
                       "datacenter.md §3); set host_w_per_gpu to replace it")


@dataclass
class SiteInfo:
    name: str
    region: str
    chip: str
    gpus: int
    gpus_per_node: int
    nodes: int
    mtbf_s: float | None
    mttr_s: float
    tdp_w: float | None
    host_w_per_gpu: float
    idle_power_fraction: float
    job_overhead_s: float
    pue: float
    usd_per_gpu_hour: float
    memory_gb: float
    host_w_source: str = "scenario"  # where host_w_per_gpu came from


@dataclass
class ClassInfo:
    name: str
    model: str
    shape: perf.Shape
    gpus: int
    slo_s: float | None
    priority: int
    latency_s: dict[str, float]  # chip -> seconds for one request (batch 1), only chips it fits on
    memory_gb: dict[str, float]  # chip -> peak GB per GPU
    why_not: dict[str, str]  # chip -> why it does not fit
    kind: str = "clip"  # or "interactive": a session holding one chip for its length (latency_s: the mean)
    fps: float | None = None  # interactive: the per-frame SLO is 1 / fps
    frame_latency_s: dict[str, float] = field(default_factory=dict)  # interactive: chip -> a frame's seconds
    max_queue: int | None = None  # interactive: sessions allowed to wait
    session_dist: str = "exponential"  # interactive: how lengths spread around their mean
    session_sigma: float = 1.0  # interactive, lognormal: sigma of log(length)

    def length_m2(self, noise_sigma: float) -> float:
        """E[X^2] of actual / mean duration (mean 1): a clip's lognormal noise, or a session's length."""
        if not self.interactive:
            return math.exp(noise_sigma**2)
        return {"exponential": 2.0, "lognormal": math.exp(self.session_sigma**2), "fixed": 1.0}[self.session_dist]

    @property
    def interactive(self) -> bool:
        return self.kind == "interactive"


@dataclass
class TrainingInfo:
    """A training job in seconds: its partition (`nodes` whole nodes of `site`) and its work."""

    name: str
    site: int
    gpus: int
    nodes: int
    start_s: float
    work_s: float
    checkpoint_s: float
    restart_s: float
    priority: int


@dataclass
class Fleet:
    scenario: Scenario
    sites: list[SiteInfo]
    classes: list[ClassInfo]
    arrivals: Arrivals
    # (tenant, class) -> indices of the sites it may run on, in the tenant's region order
    sites_for: dict[tuple[int, int], list[int]]
    training: list[TrainingInfo] = field(default_factory=list)
    _batch_latency: dict[tuple[int, str, int], float] = field(default_factory=dict)

    def latency_s(self, cls: int, chip: str, batch: int = 1) -> float:
        """Perf-model seconds for `batch` requests of a class run together on `chip` (cached per shape)."""
        if batch == 1:
            return self.classes[cls].latency_s[chip]
        key = (cls, chip, batch)
        if key not in self._batch_latency:
            c = self.classes[cls]
            shape = perf.Shape(c.shape.width, c.shape.height, c.shape.num_frames, c.shape.steps, batch)
            est = perf.predict(c.model, chip, shape, perf.ParallelPlan(gpus=c.gpus))
            # a batch that no longer fits in memory runs as one request after another
            self._batch_latency[key] = est.latency_s if est.fits and est.latency_s else batch * c.latency_s[chip]
        return self._batch_latency[key]

    def predicted_s(self, tenant: int, cls: int) -> float:
        """What the scheduler is told: the perf-model time on the first site the job may use."""
        sites = self.sites_for[(tenant, cls)]
        return self.classes[cls].latency_s[self.sites[sites[0]].chip]


def _site(s: Scenario, i: int) -> SiteInfo:
    site = s.sites[i]
    chip = catalog.chip(site.chip)
    gpus = site.gpu_count
    tdp = site.tdp_w if site.tdp_w is not None else chip.tdp_w
    host_w, host_source = site.host_w_per_gpu, "scenario"
    if host_w is None:
        host_w, host_source = HOST_SHARE_OF_TDP * (tdp or 0.0), HOST_DEFAULT_SOURCE
    return SiteInfo(
        name=site.name,
        region=site.region,
        chip=site.chip,
        gpus=gpus,
        gpus_per_node=site.gpus_per_node,
        nodes=-(-gpus // site.gpus_per_node),
        mtbf_s=site.mtbf_h * 3600 if site.mtbf_h is not None else None,
        mttr_s=site.mttr_h * 3600,
        tdp_w=tdp,
        host_w_per_gpu=host_w,
        idle_power_fraction=site.idle_power_fraction,
        job_overhead_s=site.job_overhead_s,
        pue=site.pue,
        usd_per_gpu_hour=site.usd_per_gpu_hour if site.usd_per_gpu_hour is not None else chip.usd_per_hour,
        memory_gb=chip.hbm_gb or 0.0,
        host_w_source=host_source,
    )


def _session_class(spec: RequestClass, where: str, chips: list[str]) -> ClassInfo:
    """An interactive class: eligible on a chip only where one session's frames meet 1 / fps there
    (`scheduling.meets_frame_slo`); it then holds the chip for the session's length (mean: session_mean_s)."""
    from noor.perf.world import estimate_world

    world = catalog.world(spec.model)
    assert spec.session_mean_s is not None  # scenario.check_interactive
    try:
        shape = perf.Shape(world.width, world.height, 1, spec.steps)
    except perf.PerfError as err:
        raise ScenarioError(f"{where}.{err.field}: {str(err).split(': ', 1)[1]}") from None
    latency, memory, why, frame = {}, {}, {}, {}
    for chip in chips:
        est = estimate_world(world, catalog.chip(chip), 1, spec.steps)
        memory[chip] = est.peak_memory_gb
        if est.frame_latency_s is not None:
            frame[chip] = est.frame_latency_s
        if meets_frame_slo(est.frame_latency_s, spec.fps):
            latency[chip] = spec.session_mean_s
        elif est.frame_latency_s is None:
            why[chip] = est.why_not or "does not fit"
        else:
            why[chip] = (f"{est.frame_latency_s * 1e3:.1f} ms a frame, above the {1e3 / spec.fps:.1f} ms that "
                         f"{spec.fps:g} frames/s allow")
    return ClassInfo(spec.name, spec.model, shape, 1, None, spec.priority, latency, memory, why, kind="interactive",
                     fps=spec.fps, frame_latency_s=frame, max_queue=spec.max_queue, session_dist=spec.session_dist,
                     session_sigma=spec.session_sigma)


def session_lengths(spec: RequestClass | ClassInfo, rng: np.random.Generator, n: int) -> np.ndarray:
    """n session lengths over their mean (mean 1): exponential, lognormal (sigma of the log) or fixed."""
    if spec.session_dist == "exponential":
        return rng.exponential(1.0, n)
    if spec.session_dist == "lognormal":
        sigma = spec.session_sigma
        return np.exp(rng.normal(-sigma * sigma / 2, sigma, n))
    return np.ones(n)


def _class(spec: RequestClass, where: str, chips: list[str]) -> ClassInfo:
    if spec.kind == "interactive":
        return _session_class(spec, where, chips)
    arch = catalog.model(spec.model)
    try:
        shape = perf.Shape(
            spec.width or arch.default_width,
            spec.height or arch.default_height,
            spec.frames or arch.default_frames,
            spec.steps,
        )
        plan = perf.ParallelPlan(gpus=spec.gpus)
    except perf.PerfError as err:
        raise ScenarioError(f"{where}.{err.field}: {str(err).split(': ', 1)[1]}") from None
    latency, memory, why = {}, {}, {}
    for chip in chips:
        est = perf.predict(spec.model, chip, shape, plan)
        memory[chip] = est.peak_memory_gb
        if est.fits and est.latency_s is not None:
            latency[chip] = est.latency_s
        else:
            why[chip] = est.why_not or "does not fit"
    return ClassInfo(spec.name, spec.model, shape, spec.gpus, spec.slo_s, spec.priority, latency, memory, why)


def resolve(s: Scenario, draw: bool = True) -> Fleet:
    """Sites sized, classes priced by the perf model (one call per class and chip), arrivals drawn
    (`draw=False`: Poisson arrivals are not drawn, for the analytic mode; a trace is always read)."""
    sites = [_site(s, i) for i in range(len(s.sites))]
    chips = sorted({site.chip for site in sites})
    specs: list[dict[str, Any]] = [c.model_dump() for c in s.classes]
    if s.trace is not None:
        arrivals = trace(s, specs)
    elif draw:
        arrivals = poisson(s)
    else:
        empty = np.zeros(0)
        arrivals = Arrivals(empty, empty.astype(np.int32), empty.astype(np.int32), empty)
    classes = []
    for i, spec in enumerate(specs):
        where = f"classes[{i}]" if i < len(s.classes) else f"trace.path: class {spec['name']!r}"
        try:
            parsed = RequestClass.model_validate(spec)
        except Exception as err:
            raise ScenarioError(f"{where}: {err}") from None
        if parsed.kind == "interactive":
            from noor.sim.scenario import check_interactive

            check_interactive(parsed, where)
        elif parsed.model not in catalog.model_ids():
            valid = ", ".join(catalog.model_ids())
            raise ScenarioError(f"{where}.model: unknown model {parsed.model!r}; valid: {valid}")
        classes.append(_class(parsed, where, chips))
        if parsed.kind == "interactive" and len(arrivals):  # a session's length, over the class's mean
            mine = arrivals.cls == i
            rng = np.random.default_rng([s.seed, 27, i])  # its own stream: clips' draws stay as they were
            arrivals.noise[mine] = session_lengths(parsed, rng, int(mine.sum()))

    # which (tenant, class) pairs occur: the mixes with weight > 0, and what the trace holds
    pairs: set[tuple[int, int]] = set()
    if s.trace is not None:
        pairs = {(int(t), int(c)) for t, c in set(zip(arrivals.tenant.tolist(), arrivals.cls.tolist(), strict=True))}
    from noor.sim.arrivals import mix

    for ti, ten in enumerate(s.tenants):
        if ten.requests_per_h > 0 and s.trace is None:
            pairs |= {(ti, ci) for ci, w in enumerate(mix(s, ti)) if w > 0}
    sites_for: dict[tuple[int, int], list[int]] = {}
    for ti, ten in enumerate(s.tenants):
        order = sorted(range(len(sites)), key=lambda k: ten.regions.index(sites[k].region)
                       if sites[k].region in ten.regions else len(ten.regions))
        for ci, c in enumerate(classes):
            ok = []
            for k in order:
                site = sites[k]
                if site.chip not in c.latency_s or c.gpus > site.gpus_per_node:
                    continue
                job = QueuedJob("probe", ten.name, c.model, 0.0, c.latency_s[site.chip], gpus=c.gpus,
                                memory_gb=c.memory_gb[site.chip], regions=tuple(ten.regions))
                node = WorkerView(site.name, site.region, site.chip, site.gpus_per_node, site.memory_gb)
                if eligible(job, node):
                    ok.append(k)
            sites_for[(ti, ci)] = ok
            if (ti, ci) in pairs and not ok:
                why = "; ".join(f"{ch}: {w}" for ch, w in c.why_not.items()) or (
                    f"needs {c.gpus} GPUs on one node" if c.gpus > 1 else "no site there")
                raise ScenarioError(
                    f"tenants[{ti}].regions: tenant {ten.name!r} has class {c.name!r} that no site in its regions "
                    f"can run ({why}), got {ten.regions!r}"
                )
    index = {site.name: k for k, site in enumerate(sites)}
    training = [
        TrainingInfo(t.name, index[t.site], gpus, gpus // sites[index[t.site]].gpus_per_node, t.start_h * 3600,
                     t.work_h * 3600, t.checkpoint_every_h * 3600, t.restart_s, t.priority)
        for t in s.training
        for gpus in [t.gpus_of(s.sites[index[t.site]])]
    ]
    return Fleet(s, sites, classes, arrivals, sites_for, training)
