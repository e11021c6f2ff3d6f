"""`noor concepts add|list|remove` in process (exit codes kept): a toy LoRA on the toy Wan, and bad input as one line
naming the option and the value, exit 2."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.engine.diffusers.toy_lora import FAMILY, toy_lora
from tests.engine.diffusers.toys import register_args, toy_dir

Noor = Callable[..., tuple[int, str, str]]


@pytest.fixture
def adapter(tmp_path_factory: pytest.TempPathFactory, noor: Noor) -> Path:
    """The toy LoRA, with the toy Wan it was trained on installed as `wan`."""
    code, _, err = noor(*register_args(FAMILY, toy_dir(tmp_path_factory, FAMILY), "wan"))
    assert code == 0, err
    return toy_lora(tmp_path_factory)


def refused(noor: Noor, *args: str) -> str:
    code, out, err = noor(*args)
    assert code == 2 and out == "", (code, out, err)
    assert err.count("\n") == 1 and err.startswith("noor: error: "), err
    return err.removeprefix("noor: error: ").strip()


def test_add_list_remove(noor: Noor, adapter: Path, tmp_path: Path) -> None:
    taught = shutil.copytree(adapter, tmp_path / "taught")
    config = json.loads((taught / "lora_config.json").read_text())
    (taught / "lora_config.json").write_text(json.dumps(config | {"words": {"en": ["redsq"], "ar": ["مربع"]}}))
    size = sum(f.stat().st_size for f in taught.iterdir())
    code, out, err = noor("concepts", "add", "red_square", "--path", str(adapter), "--description", "a red square")
    assert code == 0, err
    assert out.startswith("red_square: acts on wan, ") and out.rstrip().endswith("KB")
    code, out, err = noor("concepts", "add", "taught", "--path", str(taught), "--model", "wan")
    assert code == 0, err
    assert out.strip() == f"taught: acts on wan, {size / 1024:.1f} KB, words en: redsq; ar: مربع"
    code, out, _ = noor("concepts", "list")
    assert code == 0
    rows = [line for line in out.splitlines() if "red_square" in line or "taught" in line]
    assert len(rows) == 2 and "wan" in rows[0] and "a red square" in rows[0] and str(adapter) in rows[0]
    assert "en: redsq; ar: مربع" in rows[1] and f"{size / 1024:.1f} KB" in rows[1]
    code, out, _ = noor("concepts", "remove", "taught")
    assert code == 0 and out.strip() == f"taught: removed (the adapter folder {taught} is kept)"
    assert taught.is_dir()
    code, out, _ = noor("concepts", "list")
    assert "taught" not in out and "red_square" in out


def test_bad_input_is_one_line_exit_2(noor: Noor, adapter: Path, tmp_path: Path) -> None:
    assert refused(noor, "concepts", "add", "Bad Key", "--path", str(adapter)) == (
        "KEY: must be lowercase letters, digits, '_' or '-' (at most 64), got 'Bad Key'"
    )
    assert (
        refused(noor, "concepts", "add", "k", "--path", str(tmp_path / "none"))
        == f"--path: {tmp_path / 'none'} is not a folder"
    )
    assert refused(noor, "concepts", "add", "k", "--path", str(tmp_path)) == (
        f"--path: {tmp_path} has no pytorch_lora_weights.safetensors: not an adapter (noor train lora writes it)"
    )
    assert refused(noor, "concepts", "add", "k", "--path", str(adapter), "--model", "tiny").startswith(
        "--model: the adapter was trained for a wan2.1-t2v model; 'tiny' is noor-tiny"
    )
    assert refused(noor, "concepts", "add", "k", "--path", str(adapter), "--model", "gone") == (
        "--model: unknown model; available: tiny, wan, got 'gone'"
    )
    assert refused(noor, "concepts", "remove", "nope") == (
        "KEY: unknown concept; installed concepts and their models: none (noor concepts add), got 'nope'"
    )
    assert noor("concepts", "list")[0] == 0
