"""The repository stands on its own: nothing under src/, tests/, benchmarks/ or scripts/ reaches outside it,
and the published figures the code calibrates on are in it, each row with its source."""

from __future__ import annotations

import ast
import csv
import os
from pathlib import Path

import pytest

from noor.config import PUBLISHED_DIR

ROOT = Path(__file__).resolve().parents[1]
CODE = sorted(p for folder in ("src", "tests", "benchmarks", "scripts") for p in (ROOT / folder).rglob("*.py"))
UP = os.pardir + os.sep  # a relative path that climbs out of where it is run


def _anchored_dirs(path: Path) -> list[tuple[int, Path]]:
    """Every `Path(__file__)...parents[N]` / `.parent` chain in a file, resolved to the folder it names (a chain's
    inner links are found too; they name the file itself or a folder nearer to it)."""
    found: list[tuple[int, Path]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        # walk down from an attribute/subscript chain to its root call
        chain: list[ast.AST] = []
        cur: ast.AST = node
        while isinstance(cur, ast.Attribute | ast.Subscript | ast.Call):
            chain.append(cur)
            cur = cur.value if isinstance(cur, ast.Attribute | ast.Subscript) else cur.func
        if not (isinstance(cur, ast.Name) and cur.id == "Path" and chain and isinstance(chain[-1], ast.Call)):
            continue
        root_call = chain[-1]
        assert isinstance(root_call, ast.Call)
        if not (root_call.args and isinstance(root_call.args[0], ast.Name) and root_call.args[0].id == "__file__"):
            continue
        here = path
        for step in reversed(chain[:-1]):
            if isinstance(step, ast.Attribute) and step.attr == "parent":
                here = here.parent
            elif (isinstance(step, ast.Subscript) and isinstance(step.value, ast.Attribute)
                  and step.value.attr == "parents" and isinstance(step.slice, ast.Constant)
                  and isinstance(step.slice.value, int)):
                here = here.parents[step.slice.value]
        found.append((node.lineno, here))  # type: ignore[attr-defined]
    return found


def _opens_above(node: ast.AST) -> bool:
    """`Path("../…")`, `open("../…")` or `x / "../…"`: a relative path that climbs out of where it is run (the
    strings tests hand to refusal checks, e.g. an asset key "../x", are not opened and not flagged)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("Path", "open"):
        candidates = node.args[:1]
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        candidates = [node.right]
    else:
        return False
    return any(isinstance(c, ast.Constant) and isinstance(c.value, str) and c.value.startswith(UP) for c in candidates)


@pytest.mark.parametrize("path", CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_file_reads_a_path_outside_the_repository(path: Path) -> None:
    outside = [f"line {line}: {target}" for line, target in _anchored_dirs(path)
               if target != ROOT and ROOT not in target.parents]
    assert not outside, f"{path.relative_to(ROOT)} reaches outside the repository: {outside}"
    climbing = [f"line {node.lineno}" for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                if _opens_above(node)]
    assert not climbing, f"{path.relative_to(ROOT)} opens a path above where it is run: {climbing}"


def test_the_check_sees_an_escaping_path(tmp_path: Path) -> None:
    """The walker itself: a file three levels deep that climbs four levels is outside its tree."""
    bad = tmp_path / "a" / "b" / "c.py"
    bad.parent.mkdir(parents=True)
    bad.write_text('from pathlib import Path\nX = Path(__file__).resolve().parents[3] / "beside"\n')
    assert any(_opens_above(n) for n in ast.walk(ast.parse('DATA = Path("' + UP + 'beside/data")')))
    found = _anchored_dirs(bad)
    assert (2, tmp_path.parent) in found
    assert all(target in (bad, tmp_path.parent) for _, target in found)


def test_the_published_figures_are_in_the_repository_with_their_sources() -> None:
    assert PUBLISHED_DIR == ROOT / "data" / "published"
    assert (PUBLISHED_DIR / "README.md").is_file()
    for name in ("measurements.csv", "mlperf_sdxl.csv", "chips.csv"):
        with (PUBLISHED_DIR / name).open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        assert rows, name
        source = next(k for k in rows[0] if "source" in k)
        missing = [i for i, row in enumerate(rows) if not (row[source] or "").startswith("http")]
        assert not missing, f"{name}: rows {missing} have no source URL"
