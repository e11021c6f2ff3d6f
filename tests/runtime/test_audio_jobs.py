"""A worker claims sound-for-a-clip jobs with the audio models installed on its host (#29 audio), and goes on
claiming its video jobs when its audio table cannot be read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from noor.engine import registry
from noor.runtime.worker import Worker, WorkerConfig


class _Claims:
    """A job store with nothing queued that records which models each claim asked for."""

    def __init__(self) -> None:
        self.asked: list[list[str]] = []

    def claim_batch(self, worker: str, lease_s: float, models: Sequence[str] | None = None, **_: Any) -> list[Any]:
        self.asked.append(list(models or ()))
        return []


def _worker(store: _Claims) -> Worker:
    return Worker(store, {}, WorkerConfig(name="w", models=["tiny"]), load_backend=lambda model: None)  # type: ignore[arg-type]


class _Spec:
    id = "sao-toy"


def test_a_worker_claims_the_audio_models_installed_here(monkeypatch: pytest.MonkeyPatch) -> None:
    store = _Claims()
    worker = _worker(store)
    monkeypatch.setattr(registry, "audio_models", lambda: [_Spec()])
    assert not worker.run_once()
    monkeypatch.setattr(registry, "audio_models", lambda: [])
    assert not worker.run_once()
    assert store.asked[0] == [*worker.models, "sao-toy"] and store.asked[1] == worker.models


def test_an_unreadable_audio_table_leaves_the_video_jobs_claimed(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> list[Any]:
        raise ValueError("models.toml: audio.sao: unknown key 'stepz'")

    store = _Claims()
    worker = _worker(store)
    monkeypatch.setattr(registry, "audio_models", broken)
    assert not worker.run_once()
    assert store.asked == [worker.models] and "tiny" in worker.models
