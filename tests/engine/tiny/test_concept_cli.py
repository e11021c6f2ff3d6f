"""The concept commands' CLI: noor train concept-data, noor train lora --model tiny, noor generate --concept and
noor eval tiny --concept refuse bad input in one line (exit 2) before any work."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

Noor = Callable[..., tuple[int, str, str]]


def _one_line(code: int, out: str, err: str, *needles: str) -> None:
    text = (out + err).strip()
    assert code == 2, text
    assert len(text.splitlines()) == 1 and "Traceback" not in text, text
    for needle in needles:
        assert needle in text, text


def test_concept_data_writes_a_folder_and_refuses_bad_options(noor: Noor, tmp_path: Path) -> None:
    code, out, err = noor("train", "concept-data", "-o", str(tmp_path / "data"), "--clips", "3")
    assert code == 0, out + err
    rows = (tmp_path / "data" / "captions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 6 and len(list((tmp_path / "data").glob("*.mp4"))) == 3
    _one_line(*noor("train", "concept-data", "-o", str(tmp_path / "x"), "--clips", "201"), "--clips", "201")
    _one_line(*noor("train", "concept-data", "-o", str(tmp_path / "x"), "--shape", "star"), "--shape", "star")
    _one_line(*noor("train", "concept-data", "-o", str(tmp_path / "x"), "--prior", "1"), "--prior")


def test_train_lora_tiny_refuses_bad_input(noor: Noor, tmp_path: Path) -> None:
    out = str(tmp_path / "adapter")
    _one_line(*noor("train", "lora", "--model", "tiny", "--data", str(tmp_path / "none"), "-o", out), "--data")
    plain = tmp_path / "plain"
    plain.mkdir()
    code, _, _ = noor("train", "concept-data", "-o", str(plain), "--clips", "1")
    assert code == 0
    rows = [json.loads(line) for line in (plain / "captions.jsonl").read_text(encoding="utf-8").splitlines()]
    text = "\n".join(json.dumps({**r, "caption": "a red circle moves left"}) for r in rows)
    (plain / "captions.jsonl").write_text(text + "\n", encoding="utf-8")
    _one_line(*noor("train", "lora", "--model", "tiny", "--data", str(plain), "-o", out), "no new word")
    _one_line(*noor("train", "lora", "--model", "tiny", "--data", str(plain), "-o", out, "--size", "64x64"), "--size")
    _one_line(*noor("train", "lora", "--model", "tiny", "--data", str(plain), "-o", out, "--steps", "0"), "--steps")
    bad = ("--prior-target", "teacher")
    _one_line(*noor("train", "lora", "--model", "tiny", "--data", str(plain), "-o", out, *bad), "--prior-target")
    assert not Path(out).exists()


def test_generate_and_eval_refuse_a_folder_that_is_not_a_tiny_adapter(noor: Noor, tmp_path: Path) -> None:
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "lora_config.json").write_text(
        json.dumps({"model": "wan-toy", "words": {"en": ["crescent"]}}), encoding="utf-8"
    )
    video = str(tmp_path / "clip.mp4")
    _one_line(*noor("generate", "a red crescent", "-o", video, "--concept", str(tmp_path / "none")), "no such folder")
    _one_line(*noor("generate", "a red crescent", "-o", video, "--concept", str(folder)), "--concept", "has no")
    _one_line(*noor("eval", "tiny", "--concept", str(folder)), "--concept", "has no")
    assert not Path(video).exists()
    _one_line(*noor("eval", "tiny", "--concept", str(folder), "--seeds", "3"), "--seeds", "leave it out")
