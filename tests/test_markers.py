"""The quick run stays quick: a test that reaches PostgreSQL, joins Ray or drives Chromium carries its mark.

tests/conftest.py watches every test's setup and call and fails one that used them without its mark; here that
guard runs on small test files of its own (pytester), and a static check holds every test file that imports
Ray or Playwright to a module-wide mark.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MARKS_BY_IMPORT = {"ray": "ray", "playwright": "browser"}  # a module a test file imports -> the mark it needs


@pytest.fixture
def guarded(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester directory whose tests run under tests/conftest.py's guard, with the marks registered."""
    pytester.makeconftest("from tests.conftest import pytest_runtest_call, pytest_runtest_setup  # noqa: F401\n")
    pytester.makeini("[pytest]\nmarkers =\n    postgres\n    ray\n    browser\n")
    return pytester


@pytest.mark.postgres
def test_an_unmarked_test_that_connects_to_postgresql_fails_and_sqlite_needs_no_mark(guarded: pytest.Pytester) -> None:
    guarded.makepyfile(f"""
        import pytest
        from sqlalchemy import create_engine, text

        def query(url):
            engine = create_engine(url)
            with engine.connect() as c:
                assert c.execute(text("SELECT 1")).scalar() == 1
            engine.dispose()

        def test_unmarked():
            query("{POSTGRES}")

        @pytest.mark.postgres
        def test_marked():
            query("{POSTGRES}")

        def test_sqlite(tmp_path):
            query(f"sqlite:///{{tmp_path / 'x.db'}}")
    """)
    result = guarded.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*test_unmarked used postgres in its call without @pytest.mark.postgres*"])


def test_an_unmarked_test_that_runs_as_a_ray_driver_fails(guarded: pytest.Pytester) -> None:
    guarded.makepyfile("""
        import pytest

        def test_unmarked():
            pass

        @pytest.mark.ray
        def test_marked():
            pass
    """)
    joined = types.ModuleType("ray")  # what the guard asks a real driver: ray.is_initialized()
    joined.is_initialized = lambda: True  # type: ignore[attr-defined]
    with pytest.MonkeyPatch.context() as patch:  # undone before this test's own guard looks
        patch.setitem(sys.modules, "ray", joined)
        result = guarded.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)  # caught at setup: a module fixture would start Ray there
    result.stdout.fnmatch_lines(["*test_unmarked used ray in its setup without @pytest.mark.ray*"])


def test_an_unmarked_test_with_a_chromium_under_it_fails(guarded: pytest.Pytester, tmp_path: Path) -> None:
    import playwright.sync_api  # noqa: F401  (the guard looks for a browser once Playwright is loaded)

    chromium = tmp_path / "chromium"  # a process by that name under this one, as Playwright's would be
    shutil.copy(shutil.which("sleep") or "/bin/sleep", chromium)
    guarded.makepyfile("""
        import pytest

        def test_unmarked():
            pass

        @pytest.mark.browser
        def test_marked():
            pass
    """)
    with subprocess.Popen([str(chromium), "60"]) as browser:  # stopped and reaped before this test's guard looks
        try:
            result = guarded.runpytest_inprocess("-p", "no:cacheprovider")
        finally:
            browser.kill()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*test_unmarked used browser in its setup without @pytest.mark.browser*"])


def _module_marks(tree: ast.Module) -> set[str]:
    """The marks a file's `pytestmark = pytest.mark.x` (or a list of them) gives every test in it."""
    marks: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets):
            for sub in ast.walk(node.value):
                if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Attribute) and sub.value.attr == "mark":
                    marks.add(sub.attr)
    return marks


def _imported_roots(tree: ast.Module) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_every_test_file_that_imports_ray_or_playwright_is_marked() -> None:
    unmarked = []
    for path in sorted(TESTS.rglob("test_*.py")):
        if path == Path(__file__):
            continue  # imports playwright only to show the guard a browser
        tree = ast.parse(path.read_text(), str(path))
        needed = {MARKS_BY_IMPORT[m] for m in _imported_roots(tree) if m in MARKS_BY_IMPORT}
        missing = needed - _module_marks(tree)
        if missing:
            unmarked.append(f"{path.relative_to(TESTS.parent)}: pytestmark = pytest.mark.{'/'.join(sorted(missing))}")
    assert unmarked == []
