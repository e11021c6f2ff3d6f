"""`noor plan train`: FLOPs by hand, the MFU model held out on published runs, bad input, the report."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from noor import catalog
from noor.plan import assumptions, train, training_runs
from noor.plan.errors import PlanError


def test_video_flops_match_a_hand_count() -> None:
    # Wan2.1 T2V 1.3B (models.toml): 30 layers, width 1536, FFN 8960, 512 text tokens, cross-attention;
    # 81 frames of 832x480 through a 4x8x8 VAE and 1x2x2 patches: (1 + 80 / 4) x (480 / 16) x (832 / 16)
    tokens = 21 * 30 * 52
    layers, d, text = 30, 1536, 512
    attention = 4 * layers * tokens * tokens * d  # QK^T and PV, one forward pass
    cross = 4 * layers * tokens * text * d
    clips = 1000
    job = train.job_for_model("wan2.1-t2v-1.3b", videos=clips)
    assert job.tokens_per_clip == tokens == 32_760
    assert job.tokens == clips * tokens
    assert job.dense_flops == pytest.approx(6 * 1.3e9 * clips * tokens)
    assert job.attention_flops == pytest.approx(3 * (attention + cross) * clips)  # forward + backward = 3 x forward
    # tokens instead of videos: as many clips of that size as the tokens make
    assert train.job_for_model("wan2.1-t2v-1.3b", tokens=clips * tokens).flops == pytest.approx(job.flops)


def test_dense_flops_and_days_by_hand() -> None:
    a = assumptions.resolve()
    plan = train.plan_training(train.job_for_params(70e9, 2e12), "a100-80gb", 2048, 0.4, a)
    flops = 6 * 70e9 * 2e12
    assert plan.job.flops == flops
    days = flops / (2048 * 312e12 * 0.4) / 86400
    assert plan.days == pytest.approx(days)
    doc = plan.to_dict()
    hours = days * 24
    watts = 400 * a.num("it.server_per_accelerator") * a.num("it.it_per_server") * a.num("pue.liquid")
    assert doc["energy"]["kwh"] == pytest.approx(2048 * watts * hours / 1e3)
    assert doc["cost"]["rental_usd"] == pytest.approx(2048 * hours * catalog.chip("a100-80gb").usd_per_hour)
    assert doc["checkpoints"]["tb_total"] == pytest.approx(70e9 * 16 * 3 / 1e12)
    assert doc["memory"]["replica_chips"] == 14  # 70e9 x 16 B = 1120 GB over 80 GB chips
    assert "InfiniBand/RoCE" in doc["network"] and "NVLink" in doc["network"]


def test_a_mixture_of_experts_counts_its_active_parameters() -> None:
    model = catalog.model("wan2.2-t2v-a14b")
    job = train.job_for_model(model.id, videos=10)
    assert job.params == pytest.approx(model.params_b * 1e9)
    assert job.active_params == pytest.approx(job.params * model.experts_active / model.experts_total)


def test_mfu_model_held_out_meets_the_target() -> None:
    runs = training_runs.load()
    assert len(runs) >= 6
    rows = training_runs.leave_one_out(runs)
    # each run's own figure is not in the model that predicts it
    for held in rows:
        fitted = training_runs.fit(tuple(r for r in runs if r is not held.run))
        assert held.run.name not in fitted.runs
        assert held.predicted_mfu == pytest.approx(fitted.predict(held.run.chip))
    assert training_runs.median_error(rows) <= training_runs.TARGET_MEDIAN_ERROR
    assert "meets" in training_runs.check_markdown(rows)


def test_published_mfu_is_derived_from_the_quoted_figures() -> None:
    runs = {r.name: r for r in training_runs.load()}
    assert runs["llama-2-70b"].mfu == pytest.approx(6 * 70e9 * 2e12 / (1_720_320 * 3600 * 312e12))
    assert runs["llama-3.1-405b-16k"].mfu == pytest.approx(400 / 989.4)
    assert runs["llama-65b"].mfu == pytest.approx(6 * 65e9 * 380 / 312e12)


def test_auto_mfu_comes_from_the_fit() -> None:
    plan = train.plan_training(train.job_for_params(7e9, 1e12), "h100-sxm", 64, "auto", assumptions.resolve())
    assert plan.mfu == pytest.approx(training_runs.mfu_model().predict("h100-sxm"))
    assert 0.05 <= plan.mfu <= 0.7


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--params", "7e9", "--tokens", "1e12", "--chips", "64", "--mfu", "0"], "--mfu: must be in (0, 1], got '0'"),
        (["--params", "7e9", "--tokens", "1e12", "--chips", "64", "--mfu", "1.2"], "--mfu: must be in (0, 1]"),
        (["--params", "7e9", "--tokens", "1e12", "--chips", "64", "--mfu", "fast"], "--mfu: must be a number"),
        (["--params", "7e9", "--tokens", "0", "--chips", "64"], "--tokens: must be > 0, got 0.0"),
        (["--params", "-7e9", "--tokens", "1e12", "--chips", "64"], "--params: must be > 0, got -7000000000.0"),
        (["--params", "405e9", "--tokens", "1e12", "--chips", "8"], "--chips: below one replica"),
        (["--model", "wan2.1-t2v-14b", "--videos", "0", "--chips", "64"], "--videos: must be > 0"),
        (["--params", "7e9", "--videos", "10", "--chips", "64"], "--videos: needs --model"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(noor_plan: Callable[..., Any], args: list[str], message: str) -> None:
    run = noor_plan("train", "--chip", "h100-sxm", *args)
    assert run.code == 2
    assert message in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_a_replica_is_checked_in_the_library_too() -> None:
    with pytest.raises(PlanError) as err:
        train.plan_training(train.job_for_params(405e9, 1e12), "h100-sxm", 80, 0.4, assumptions.resolve())
    assert err.value.field == "chips" and err.value.value == 80  # 405e9 x 16 B needs 81 H100s


def test_cli_json_markdown_and_check(noor_plan: Callable[..., Any]) -> None:
    run = noor_plan(
        "train",
        "--model",
        "wan2.1-t2v-1.3b",
        "--videos",
        "1e6",
        "--chip",
        "h100-sxm",
        "--chips",
        "64",
        "--mfu",
        "0.35",
        "--json",
    )
    assert run.code == 0, run.stderr
    doc = json.loads(run.stdout)
    job = train.job_for_model("wan2.1-t2v-1.3b", videos=1e6)
    assert doc["flops"]["total"] == pytest.approx(job.flops)
    assert doc["time"]["days"] == pytest.approx(job.flops / (64 * 989.4e12 * 0.35) / 86400)
    text = noor_plan("train", "--params", "7e9", "--tokens", "1e12", "--chip", "b200", "--chips", "16").stdout
    assert "# Training plan: 7B parameters on 16 b200" in text
    check = noor_plan("train", "--check")
    assert check.code == 0 and "llama-3.1-405b-16k" in check.stdout and "Leave-one-out" in check.stdout
