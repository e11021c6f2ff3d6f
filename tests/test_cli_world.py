"""`noor world run`, `noor world eval` and `noor train world`, on toy weights."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from noor.engine.media import read_video
from noor.engine.world_tiny.train import save_toy_weights

Noor = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_toy_weights(tmp_path_factory.mktemp("world") / "weights")


def test_world_run_writes_one_frame_per_action_and_the_script_beside_it(noor: Noor, toy: Path, tmp_path: Path) -> None:
    code, out, err = noor(
        "world",
        "run",
        "صحراء فيها نخيل",
        "--actions",
        "right:2,up,none",
        "-o",
        "walk.mp4",
        "--weights",
        str(toy),
        "--seed",
        "4",
    )
    assert code == 0, err
    frames = read_video(tmp_path / "walk.mp4")
    assert frames.shape[0] == 5 and frames.shape[1:] == (64, 64, 3)  # the opening frame and four steps
    record = json.loads((tmp_path / "walk.json").read_text(encoding="utf-8"))
    assert record["actions"] == ["right", "right", "up", "none"] and record["prompt"] == "صحراء فيها نخيل"
    assert record["seed"] == 4 and record["memory"] is True and "walk.mp4" in out


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["a coast", "--actions", "jump:3"], "--actions"),
        (["a coast", "--actions", "right:0"], "--actions"),
        (["", "--actions", "right"], "PROMPT"),
        (["a coast", "-o", "walk.gif"], "--output"),
        (["a coast", "--start-image", "missing.png"], "--start-image"),
        (["a coast", "--seed", "-1"], "--seed"),
    ],
)
def test_world_run_bad_input_is_one_line_and_exit_2(noor: Noor, toy: Path, args: list[str], names: str) -> None:
    code, _, err = noor("world", "run", *args, "--weights", str(toy))
    assert code == 2 and names in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_world_run_without_weights_says_how_to_get_them(noor: Noor, tmp_path: Path) -> None:
    code, _, err = noor("world", "run", "a coast", "--weights", str(tmp_path / "nothing"))
    assert code == 2 and "noor train world" in err


def test_world_eval_prints_every_figure_per_language_and_fails_untrained_weights(
    noor: Noor, toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from noor.engine.world_tiny import eval as world_eval

    # the command's output, not the figures, is under test: a set smaller than --quick's (a third of its frames)
    smaller = world_eval.Size(captions=1, seeds=1, action_walks=1, action_steps=3, revisit_sides=(2,), long_frames=100)
    monkeypatch.setattr(world_eval, "QUICK", smaller)
    monkeypatch.setitem(world_eval.REVISIT_TARGET_DB, 2, world_eval.REVISIT_TARGET_DB[8])
    code, out, err = noor("world", "eval", "--quick", "--weights", str(toy), "--json", str(tmp_path / "eval.json"))
    assert code == 1, err  # random weights: below target
    for figure in ("caption adherence", "action adherence", "revisit n=2, memory on", "memory off", "long rollouts"):
        assert figure in out
    report = json.loads((tmp_path / "eval.json").read_text())
    assert set(report["figures"]) == {"en", "ar"} and report["failures"]
    assert "below target" in out


def test_train_world_writes_a_pipeline_that_plays(noor: Noor, tmp_path: Path) -> None:
    code, _, err = noor(
        "train", "world", "-o", "w", "--steps", "1", "--vae-steps", "1", "--maps-per-biome", "1", "--batch-size", "2"
    )
    assert code == 0, err
    assert (tmp_path / "w" / "model_index.json").is_file() and json.loads(
        (tmp_path / "w" / "train_log.json").read_text()
    )["seconds"] > 0
    code, _, err = noor(
        "world", "run", "a city at night", "--actions", "left", "-o", "x.mp4", "--weights", str(tmp_path / "w")
    )
    assert code == 0, err
    code, _, err = noor("train", "world", "--steps", "0")
    assert code == 2 and "--steps" in err
