"""The README's two fresh-machine commands stay true: CI runs the second one verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Start")
    return re.findall(r"```(?:bash|sh)?\n(.+?)\n```", text[start:])[:2]


def test_readme_opens_with_install_and_generate_then_install_and_test() -> None:
    install_run, install_test = _readme_commands()
    assert install_run.startswith("pip install torch==2.13.0 -e .") and "noor generate" in install_run
    assert install_test.startswith('pip install torch==2.13.0 -e ".[test]"') and "pytest" in install_test


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    _, install_test = _readme_commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install_test in ci


def test_the_quick_run_leaves_out_registered_marks_and_the_readme_stays_short() -> None:
    """The README's quick command names only marks pytest knows (--strict-markers would not catch a typo in -m:
    an unknown mark there just selects nothing to leave out), and the README stays a newcomer's page."""
    text = (ROOT / "README.md").read_text()
    quick = re.search(r'^pytest -m "([^"]+)"', text, re.M)
    assert quick, "the README has no quick test command"
    named = set(re.findall(r"not (\w+)", quick.group(1)))
    registered = set(re.findall(r'^\s+"(\w+):', (ROOT / "pyproject.toml").read_text(), re.M))
    assert named == {"ray", "browser", "slow"} and named <= registered
    assert len(text.splitlines()) <= 250


def test_every_link_in_the_readme_and_docs_reaches_a_file() -> None:
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a web address or a heading on the same page
            if not (page.parent / target.split("#")[0]).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []
