"""Noor's settings: one validated object, read from NOOR_* environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "noor"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NOOR_", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir, description="where Noor keeps its files")
    default_model: str = Field("tiny", description="the model used when a request names none")
    tiny_weights: Path | None = Field(None, description="noor-tiny weights dir; default: the ones in the package")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; default: torch's choice")


@lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings()
