"""A model that runs on k ranks: each request's split is the perf model's fastest of those the engine can run, and
its price holds all k chips for the predicted seconds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from noor.api import pricing
from noor.api.requests import RequestError
from noor.config import settings
from noor.engine.diffusers import installed
from noor.engine.diffusers.installed import InstalledModel
from noor.perf import estimate_task
from noor.perf.parallelism import ParallelPlan
from tests.engine.diffusers.toys import toy_dir

CHIP = "h100-sxm"


@pytest.fixture
def wan(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("NOOR_DATA_DIR", str(tmp_path_factory.mktemp("data")))
    settings.cache_clear()
    path = toy_dir(tmp_path_factory, "wan2.1-t2v")
    for model_id, plan in (("wan1", None), ("wan2", "auto=2"), ("wan-u2", "ulysses=2")):
        installed.add(InstalledModel(
            id=model_id, family="wan2.1-t2v", path=str(path), dtype="float32", width=32, height=32, frames=5,
            steps=2, perf_id="wan2.1-t2v-1.3b", parallel=plan,
        ))  # fmt: skip
    yield "wan2"
    settings.cache_clear()


def task(guidance: float | None = None, width: int = 832) -> dict[str, object]:
    """Wan's own 480p clip, 50 steps: the model's work, not the output file, sets the ETA."""
    return {"prompt": "a red circle", "width": width, "height": 480, "num_frames": 81, "fps": 16, "steps": 50,
            "guidance": guidance}  # fmt: skip


def test_the_split_is_the_fastest_the_engine_can_run_and_the_price_holds_every_chip(wan: str) -> None:
    one = pricing.quote("wan1", task(), CHIP)
    two = pricing.quote("wan2", task(), CHIP)
    # 1. guided: every 2-rank split is runnable; the quote takes the perf model's fastest of them
    splits = {
        label: estimate_task("wan2.1-t2v-1.3b", 832, 480, 81, 50, CHIP, plan).latency_s
        for label, plan in (
            ("cfg=2", ParallelPlan(gpus=2, ulysses=1, ring=1, cfg=2)),
            ("ulysses=2", ParallelPlan(gpus=2, ulysses=2, ring=1, cfg=1)),
            ("ring=2", ParallelPlan(gpus=2, ulysses=1, ring=2, cfg=1)),
        )
    }
    assert two.parallel == min(splits, key=lambda k: splits[k] or 0.0)
    assert one.parallel is None and two.eta_s is not None and one.eta_s is not None and two.eta_s < one.eta_s
    rate = pricing.catalog.chip(CHIP).usd_per_hour
    per_s_two, per_s_one = two.price_microcents / two.eta_s, one.price_microcents / one.eta_s  # both chips billed
    assert per_s_two == pytest.approx(2 * per_s_one, rel=1e-4)
    assert per_s_one == pytest.approx(rate / 36 * 1e6, rel=1e-4)  # $/h -> microcents per second (markup 1)
    # 2. unguided: cfg has nothing to split, so the quote is among the sequence splits
    assert pricing.quote("wan2", task(guidance=1.0), CHIP).parallel in ("ulysses=2", "ring=2")
    # 3. a pinned split is kept; a request it cannot split (an odd count of tokens) is a 400
    assert pricing.quote("wan-u2", task(), CHIP).parallel == "ulysses=2"
    with pytest.raises(RequestError, match="parallel: ulysses x ring = 2 must divide the request's 31899 video tokens"):
        pricing.quote("wan-u2", {**task(width=784), "height": 496}, CHIP)  # 21 x 31 x 49 tokens
