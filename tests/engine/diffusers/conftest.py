from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from noor.config import settings
from tests.engine.diffusers.toys import toy_dir


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh NOOR_DATA_DIR, so models.toml starts empty."""
    monkeypatch.setenv("NOOR_DATA_DIR", str(tmp_path / "data"))
    settings.cache_clear()
    yield tmp_path / "data"
    settings.cache_clear()


@pytest.fixture(scope="session")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    return lambda family: toy_dir(tmp_path_factory, family)
