"""The cost of one request on one chip and plan: FLOPs, bytes, latency, memory, energy, dollars.

from noor import perf
perf.predict("wan2.1-t2v-14b", "h100-sxm", Shape(1280, 720, 81, 50), ParallelPlan(gpus=8))
perf.estimate_task("tiny", 64, 64, 16, 16)   # per HTTP request: ETA and price on this machine
perf.predict_world("matrix-game-2", "h100-sxm").fps   # an interactive world model: frames/s per session
"""

from noor.perf.estimate import Estimate, StageEstimate, estimate
from noor.perf.parallelism import STRATEGIES, ParallelPlan
from noor.perf.shape import PerfError, Shape
from noor.perf.task import estimate_task, predict
from noor.perf.world import WorldEstimate, estimate_world, predict_world

__all__ = [
    "STRATEGIES",
    "Estimate",
    "ParallelPlan",
    "PerfError",
    "Shape",
    "StageEstimate",
    "WorldEstimate",
    "estimate",
    "estimate_task",
    "estimate_world",
    "predict",
    "predict_world",
]
