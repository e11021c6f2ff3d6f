"""Fleet simulation: a discrete-event core driving `noor.scheduling` with `noor.perf` durations, and
queueing approximations (`noor.sim.analytic`) for fleets too large to simulate job by job."""
