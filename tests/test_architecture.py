"""The import arrows between Noor's packages point one way, as docs/architecture.md draws them.

Every `import noor.x` / `from noor.x import ...` under src/noor (lazy ones inside functions and TYPE_CHECKING
ones included: a cycle is a cycle) is read with ast and checked against ALLOWED, which is the table in
docs/architecture.md ("Allowed imports"); a test holds the two to each other.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "noor"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
# engine's models are units of their own: only the registry (and the CLI's model tools) reach them
SUBPACKAGES = {"engine": {"tiny", "world_tiny", "diffusers"}}

# unit -> the units it may import (its own modules always). The same table as docs/architecture.md.
ALLOWED: dict[str, set[str]] = {
    "cli": {"api", "runtime", "engine", "engine.tiny", "engine.world_tiny", "engine.diffusers", "jobs", "scheduling",
            "perf", "catalog", "sim", "plan", "trust", "config", "logs", "arabic"},
    "api": {"runtime", "engine", "jobs", "scheduling", "perf", "catalog", "plan", "studio", "trust", "config", "logs"},
    "runtime": {"engine", "jobs", "trust", "scheduling", "perf", "catalog", "config", "logs"},
    "engine": {"engine.tiny", "engine.world_tiny", "engine.diffusers", "perf", "catalog", "config"},
    "engine.tiny": {"engine", "arabic"},
    "engine.world_tiny": {"engine", "engine.tiny"},
    "engine.diffusers": {"engine", "perf", "catalog", "config"},
    "jobs": {"scheduling", "perf", "catalog"},
    "scheduling": {"perf", "catalog"},
    "trust": {"jobs", "config", "arabic"},
    "perf": {"catalog"},
    "catalog": {"config"},
    "sim": {"scheduling", "perf", "catalog"},
    "plan": {"sim", "scheduling", "perf", "catalog"},
    "studio": set(),
    "config": {"scheduling"},
    "logs": set(),
    "arabic": set(),
}  # fmt: skip


def unit(module: str) -> str | None:
    """noor.engine.tiny.scene -> engine.tiny, noor.jobs.store -> jobs, noor.config -> config; None outside noor."""
    parts = module.split(".")
    if parts[0] != "noor" or len(parts) < 2:
        return None
    if len(parts) > 2 and parts[2] in SUBPACKAGES.get(parts[1], set()):
        return f"{parts[1]}.{parts[2]}"
    return parts[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) for each import in the file; `from a import b` gives a.b too, since b may be a module."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..jobs import y
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


@functools.cache  # one read of the tree for all the tests here
def arrows() -> dict[tuple[str, str], list[str]]:
    """(from unit, to unit) -> where: file:line, for every import between two different units."""
    out: dict[tuple[str, str], list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        source = unit(module_name(path))
        if source is None:
            continue  # noor/__init__.py: the version, nothing else
        for line, module in imported_modules(path):
            target = unit(module)
            if target is not None and target != source:
                where = f"{path.relative_to(ROOT)}:{line}"
                out.setdefault((source, target), [])
                if where not in out[source, target]:  # `from a import b` reads as a and a.b: one place
                    out[source, target].append(where)
    return out


def documented_table() -> dict[str, set[str]]:
    """docs/architecture.md's "Allowed imports" table: | `unit` | `a`, `b` | why |."""
    text = ARCHITECTURE.read_text()
    section = text[text.index("## Allowed imports"):]
    section = section[: section.find("\n## ", 1)] if "\n## " in section[1:] else section
    table: dict[str, set[str]] = {}
    for row in re.findall(r"^\| `([a-z._]+)` \|([^|]*)\|", section, re.M):
        table[row[0]] = set(re.findall(r"`([a-z._]+)`", row[1]))
    return table


def test_every_import_between_packages_is_an_allowed_arrow() -> None:
    found = arrows()
    units = {source for source, _ in found} | {target for _, target in found}
    assert units <= set(ALLOWED), f"packages the table does not know: {sorted(units - set(ALLOWED))}"
    wrong = {f"{s} -> {t}": where for (s, t), where in found.items() if t not in ALLOWED[s]}
    assert wrong == {}


def test_nothing_imports_cli() -> None:
    assert {s: where for (s, t), where in arrows().items() if t == "cli"} == {}
    assert all("cli" not in allowed for allowed in ALLOWED.values())


@pytest.mark.parametrize("planner", ["sim", "plan"])
def test_sim_and_plan_never_import_api_or_runtime(planner: str) -> None:
    assert {t for (s, t) in arrows() if s == planner} & {"api", "runtime", "jobs", "cli"} == set()
    assert ALLOWED[planner] & {"api", "runtime", "jobs", "cli"} == set()


def test_docs_architecture_has_the_same_table() -> None:
    assert documented_table() == ALLOWED


def test_the_reader_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    """The check would pass on anything if it missed imports inside functions or written relative."""
    found = arrows()
    assert ("engine", "engine.tiny") in found  # the registry imports the built-in backend inside a function
    assert ("plan", "sim") in found  # noor.plan.queueing: `from noor.sim import analytic`
    assert unit("noor.engine.tiny.scene") == "engine.tiny" and unit("noor.engine.task") == "engine"
    assert unit("noor.engine.world_tiny.terrain") == "engine.world_tiny"
    assert unit("noor") is None and unit("numpy.linalg") is None
