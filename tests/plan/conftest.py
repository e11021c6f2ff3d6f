from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from noor.cli import main


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def noor_plan(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Run]:
    """`noor plan ARGS...` in this process (the CLI's own main: exit codes and one-line errors included)."""

    def run(*args: str) -> Run:
        monkeypatch.setattr(sys, "argv", ["noor", "plan", *args])
        capsys.readouterr()
        code = 0
        try:
            main()
        except SystemExit as stop:
            code = int(stop.code or 0)
        out = capsys.readouterr()
        return Run(code, out.out, out.err)

    return run
