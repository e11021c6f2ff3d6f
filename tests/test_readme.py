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
