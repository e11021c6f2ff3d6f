"""One request on two ranks (gloo on CPU) equals it on one: diffusers' context parallelism and CFG parallelism
on the toy pipelines, and the local k-rank worker (progress, cancel, a rank killed)."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from noor.engine.backend import Cancelled
from noor.engine.diffusers import parallel
from noor.engine.diffusers.installed import InstalledModel
from noor.engine.diffusers.spec import spec_of
from noor.engine.task import Task
from noor.runtime.ranks import LocalRanks, RankFailed
from tests.engine.diffusers.toys import TOYS, toy_dir

Toy = Callable[[str], Path]


TRUE_CFG = "-true-cfg"  # a toy HunyuanVideo without a guidance embedder: its guidance is true CFG


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Toy:
    def path(name: str) -> Path:
        family = name.removesuffix(TRUE_CFG)
        if name == family:
            return toy_dir(tmp_path_factory, family)
        out = tmp_path_factory.getbasetemp() / "toys" / name
        if not out.is_dir():
            shutil.copytree(toy_dir(tmp_path_factory, family), out)
            _without_guidance_embedder(out / "transformer")
        return out

    return path


def _without_guidance_embedder(transformer: Path) -> None:
    import torch
    from diffusers import HunyuanVideoTransformer3DModel

    config = dict(HunyuanVideoTransformer3DModel.load_config(transformer), guidance_embeds=False)
    torch.manual_seed(0)
    HunyuanVideoTransformer3DModel.from_config(config).save_pretrained(transformer, safe_serialization=True)


# each toy with each strategy it can run (cfg=2 on the guidance-distilled HunyuanVideo is refused: the test below)
RUNS = {"wan2.1-t2v": ("ulysses=2", "ring=2", "cfg=2"), "ltx-video": ("ulysses=2", "ring=2", "cfg=2"),
        "hunyuanvideo": ("ulysses=2", "ring=2"), "hunyuanvideo" + TRUE_CFG: ("cfg=2",)}  # fmt: skip


def entry(toy: Toy, name: str) -> InstalledModel:
    family = name.removesuffix(TRUE_CFG)
    _, width, height, frames = TOYS[family]
    return InstalledModel(
        id=f"toy-{name}", family=family, path=str(toy(name)), dtype="float32", device="cpu",
        width=width, height=height, frames=frames, fps=8, steps=2,
    )  # fmt: skip


def task(model: InstalledModel, seed: int = 1, steps: int = 2, guidance: float = 3.0) -> Task:
    assert model.width and model.height and model.frames
    return Task(
        prompt="a red circle moves left", negative_prompt="blue square", width=model.width, height=model.height,
        num_frames=model.frames, fps=8, steps=steps, guidance=guidance, seed=seed,
    )  # fmt: skip


def floats(model: InstalledModel, plan: str | None, guidance: float = 3.0) -> np.ndarray:
    """The pipeline's float frames (before uint8) for `task(model)`, on this rank."""
    from noor.engine.diffusers import backend as module

    seen: list[np.ndarray] = []
    real = module.to_uint8

    def spy(frames: Any) -> np.ndarray:
        seen.append(np.asarray(frames, dtype=np.float32))
        return real(frames)

    module.to_uint8 = spy  # type: ignore[assignment]
    try:
        b = module.DiffusersBackend(model, threads=1, parallel=parallel.parse(plan) if plan else None)
        b.generate([task(model, guidance=guidance)])
    finally:
        module.to_uint8 = real  # type: ignore[assignment]
    return seen[0]


def _two_ranks(rank: int, port: int, models: list[InstalledModel], out: str) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        results = {f"{m.id}|{p}": floats(m, p) for m in models for p in RUNS[m.id.removeprefix("toy-")]}
        if rank == 0:
            np.savez(out, **results)
    finally:
        dist.destroy_process_group()


def test_two_ranks_equal_one_for_each_strategy_on_wan_ltx_and_hunyuanvideo(toy: Toy, tmp_path: Path) -> None:
    import torch
    import torch.multiprocessing as tmp

    from noor.runtime.ranks import _free_port

    torch.set_num_threads(1)
    models = [entry(toy, name) for name in RUNS]
    one = {m.id: floats(m, None) for m in models}
    out = tmp_path / "two.npz"
    tmp.spawn(_two_ranks, args=(_free_port(), models, str(out)), nprocs=2)
    two = np.load(out)
    for m in models:
        for plan in RUNS[m.id.removeprefix("toy-")]:
            diff = float(np.abs(two[f"{m.id}|{plan}"] - one[m.id]).max())
            assert diff <= 1e-4, f"{m.id} {plan}: max abs diff {diff:.2e}"
    # the true-CFG toy's guidance and negative prompt are used: without them the clip differs
    unguided = floats(models[-1], None, guidance=1.0)
    assert float(np.abs(unguided - one[models[-1].id]).max()) > 1e-3


def test_plans_parse_and_what_a_model_cannot_split_is_refused() -> None:
    plan = parallel.parse("ulysses=2,cfg=2")
    assert (plan.gpus, plan.degrees, plan.text()) == (4, (2, 1, 2), "ulysses=2,cfg=2")
    auto = parallel.parse("auto=4")
    assert (auto.gpus, auto.degrees, auto.text()) == (4, None, "auto=4")
    assert parallel.parse(plan.text()) == plan and parallel.parse("1").gpus == 1
    for bad, why in [
        ("ulysses", "expected strategy=degree"),
        ("tensor=2", "expected strategy=degree"),
        ("ring=0", "ring must be >= 1, got 'ring=0'"),
        ("ring=2,ring=2", "ring is given twice"),
        ("auto=0", "auto=K needs a chip count K >= 1"),
    ]:
        with pytest.raises(parallel.ParallelError, match=why):
            parallel.parse(bad)
    wan, hunyuan = parallel.Denoiser("WanTransformer3DModel", heads=2), "HunyuanVideoTransformer3DModel"
    wan.check(parallel.parse("ulysses=2"), tokens=32, guidance=5.0)
    distilled = parallel.Denoiser(hunyuan, heads=2, embedded_guidance=True)
    for plan in ("ulysses=2", "ring=2", "ulysses=2,ring=2"):
        distilled.check(parallel.parse(plan), tokens=32, guidance=6.0)
    parallel.Denoiser(hunyuan, heads=2).check(parallel.parse("cfg=2"), tokens=32, guidance=6.0)
    assert [p.text() for p in distilled.splits(parallel.parse("auto=2"), tokens=32, guidance=6.0)] == [
        "ulysses=2", "ring=2"
    ]  # fmt: skip
    refusals = [
        (parallel.parse("ulysses=4"), wan, 32, 5.0, "ulysses=4 must divide the model's 2 attention heads"),
        (parallel.parse("ring=2"), wan, 33, 5.0, "must divide the request's 33 video tokens"),
        (parallel.parse("cfg=2"), wan, 32, 1.0, "cfg=2 needs guidance > 1"),
        (parallel.parse("cfg=4"), wan, 32, 5.0, "cfg is 1 or 2"),
        (parallel.parse("cfg=2"), distilled, 32, 6.0, f"cfg=2 cannot run this {hunyuan} checkpoint: it is guidance-"),
        (parallel.parse("cfg=2"), parallel.Denoiser(hunyuan, heads=2), 32, 1.0, "cfg=2 needs guidance > 1"),
        (parallel.parse("ring=2"), parallel.Denoiser("CogVideoXTransformer3DModel", 2), 32, 5.0, "no parallel plan"),
    ]
    for plan, denoiser, tokens, guidance, why in refusals:
        with pytest.raises(parallel.ParallelError, match=why):
            denoiser.check(plan, tokens=tokens, guidance=guidance)
    with pytest.raises(parallel.ParallelError, match="two-expert"):
        parallel.Denoiser(wan.class_name, heads=2, count=2).check(parallel.parse("cfg=2"), tokens=32, guidance=5.0)


def test_local_ranks_report_steps_cancel_together_and_survive_a_killed_rank(toy: Toy) -> None:
    from noor.engine.diffusers.backend import DiffusersBackend

    model = entry(toy, "wan2.1-t2v")
    alone = DiffusersBackend(model, threads=1).generate([task(model, seed=3, steps=3)])[0].frames
    ranks = LocalRanks(spec_of(model), parallel.parse("ulysses=2"), threads=1, step_timeout_s=120)
    try:
        # 1. the same clip as one rank, each step reported once
        steps: list[tuple[int, int]] = []
        media = ranks.generate([task(model, seed=3, steps=3)], lambda d, t: steps.append((d, t)))
        assert np.array_equal(media[0].frames, alone)
        assert steps == [(1, 3), (2, 3), (3, 3)]

        # 2. a cancel after the first step stops both ranks, and they take the next job
        def cancel(done: int, total: int) -> None:
            raise Cancelled

        with pytest.raises(Cancelled):
            ranks.generate([task(model, seed=3, steps=3)], cancel)
        assert np.array_equal(ranks.generate([task(model, seed=3, steps=3)])[0].frames, alone)

        # 3. a rank killed: the attempt fails naming it; the next call starts fresh ranks
        first = ranks.pids
        os.kill(first[1], signal.SIGKILL)
        with pytest.raises(RankFailed, match=r"rank 1 of 2 exited \(code -9\)"):
            ranks.generate([task(model, seed=3, steps=3)])
        assert np.array_equal(ranks.generate([task(model, seed=3, steps=3)])[0].frames, alone)
        assert set(ranks.pids).isdisjoint(first)
    finally:
        ranks.close()


def test_a_model_that_cannot_split_fails_at_load_with_the_reason(toy: Toy) -> None:
    model = entry(toy, "cogvideox")
    ranks = LocalRanks(spec_of(model), parallel.parse("ulysses=2"), threads=1, start_timeout_s=120)
    with pytest.raises(RankFailed, match=r"rank \d could not load toy-cogvideox as ulysses=2: .*no parallel plan"):
        ranks.start()
    assert ranks.pids == []


def test_cli_generates_on_two_ranks_and_refuses_what_cannot_split(
    noor: Callable[..., tuple[int, str, str]], toy: Toy, tmp_path: Path
) -> None:
    from noor.engine import media
    from tests.engine.diffusers.toys import register_args

    # 1. a plan the checkpoint cannot split is refused when the model is added, and when it is asked for
    code, _, err = noor(*register_args("wan2.1-t2v", toy("wan2.1-t2v"), "wan"), "--parallel", "ulysses=4")
    assert code == 2 and err.endswith("noor: error: --parallel: ulysses=4 must divide the model's 2 attention heads\n")
    assert noor(*register_args("wan2.1-t2v", toy("wan2.1-t2v"), "wan"))[0] == 0
    args = ["generate", "a red circle moves left", "--model", "wan", "--seed", "2"]
    for plan, why in [("cfg=2", "cfg=2 needs guidance > 1"), ("tensor=2", "expected strategy=degree")]:
        code, _, err = noor(*args, "--guidance", "1", "--parallel", plan, "-o", "x.mp4")
        assert code == 2 and "--parallel: " in err and why in err, err
    code, _, err = noor(*args, "--model", "tiny", "--parallel", "ulysses=2", "-o", "x.mp4")
    assert code == 2 and "model 'tiny' runs on one rank" in err

    # 2. the same clip on two ranks as on one
    assert noor(*args, "-o", "one.mp4")[0] == 0
    code, out, err = noor(*args, "--parallel", "ring=2", "-o", "two.mp4")
    assert code == 0 and "on 2 ranks (ring=2)" in out, err
    assert np.array_equal(media.read_video(tmp_path / "two.mp4"), media.read_video(tmp_path / "one.mp4"))

    # 3. a model pinned to a plan runs every request on it
    assert noor(*register_args("hunyuanvideo", toy("hunyuanvideo"), "hy"), "--parallel", "ulysses=2")[0] == 0
    code, out, err = noor("generate", "a red circle", "--model", "hy", "-o", "hy.mp4")
    assert code == 0 and "on 2 ranks (ulysses=2)" in out, err
    code, _, err = noor(*register_args("hunyuanvideo", toy("hunyuanvideo"), "hy2"), "--parallel", "cfg=2")
    assert code == 2 and "--parallel: cfg=2 cannot run this HunyuanVideoTransformer3DModel checkpoint" in err


def test_a_served_job_records_its_split_and_runs_on_its_ranks(
    toy: Toy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from noor.api.app import ApiConfig, create_app
    from noor.config import settings
    from noor.engine.diffusers import installed
    from noor.jobs import tenants
    from noor.jobs.assets import AssetStore
    from noor.jobs.store import Store
    from noor.runtime.local import load_backend
    from noor.runtime.worker import Worker, WorkerConfig

    monkeypatch.setenv("NOOR_DATA_DIR", str(tmp_path / "data"))
    settings.cache_clear()
    installed.add(replace(entry(toy, "ltx-video"), id="ltx", parallel="auto=2"))
    store, assets = Store(f"sqlite:///{tmp_path / 'noor.db'}"), AssetStore(str(tmp_path / "assets"))
    tenants.create_tenant(store, "acme", credits_cents=1000)
    app = create_app(store, assets, ApiConfig(secret=b"test-secret"))
    worker = Worker(store, assets, WorkerConfig(name="w", models=["ltx"]), partial(load_backend, threads=2))
    try:
        with TestClient(app) as client:
            auth = {"Authorization": f"Bearer {tenants.create_key(store, 'acme')}"}
            body = {"model": "ltx", "prompt": "a red circle", "aspect_ratio": "1:1", "resolution": "540p"}
            made = client.post("/dream-machine/v1/generations/video", json=body, headers=auth)
            assert made.status_code == 201, made.text
            # unpriced (no perf model for the toy): the engine's first split for a guided request, cfg
            assert store.get("acme", made.json()["id"]).task["parallel"] == "cfg=2"
            assert worker.run_once()
            done = client.get(f"/dream-machine/v1/generations/{made.json()['id']}", headers=auth).json()
            assert done["state"] == "completed", done
            backend = worker.backend("ltx", "cfg=2")
            assert isinstance(backend, LocalRanks) and backend.plan.text() == "cfg=2" and len(backend.pids) == 2
    finally:
        for _, held in worker._backends.values():
            getattr(held, "close", lambda: None)()
        store.close()
        settings.cache_clear()
