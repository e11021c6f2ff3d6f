from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
import torch
from sqlalchemy import event
from sqlalchemy.pool import Pool

from noor.engine.tiny.train import TrainConfig, build_models, build_vae, save_pipeline

pytest_plugins = ["pytester"]  # tests/test_markers.py runs the resource guard below on tests of its own

# Tests never read or write the user's data dir (keys, jobs, the cached cpu-local measurement): one temporary
# data dir for the session, inherited by the `noor` subprocesses that tests start. Tests that need their own set it.
os.environ["NOOR_DATA_DIR"] = tempfile.mkdtemp(prefix="noor-test-data-")
atexit.register(shutil.rmtree, os.environ["NOOR_DATA_DIR"], ignore_errors=True)

# noor-tiny's real classes at toy size
TOY = {
    "hidden_size": 32,
    "patch_size": 2,  # at 4, a random toy's 2-step output barely depends on the seed (64x64 is 16 tokens)
    "num_layers": 2,
    "num_heads": 2,
    "text_layers": 1,
    "vae_channels": (8, 8, 8),
    "batch_size": 4,
    "vae_batch_size": 4,
    "pool_clips": 12,
    "vae_steps": 2,
    "decoder_steps": 2,
    "image_first": False,  # toy pipelines sample in one stage; tests of the two-stage path ask for it
    "clip_guidance_scale": None,
    "clip_guidance_min_sigma": 0.0,
    "tune_steps": 0,  # tests of the second phase ask for it
}


@pytest.fixture(scope="module", autouse=True)
def _torch_threads() -> Generator[None, None, None]:
    """The torch thread count each test file starts with is the session's: a file that sets its own (a backend
    built with threads=1, a rank emulated on one thread) sets it for itself, not for every file after it."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def toy_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A toy noor-tiny with random weights, saved in Hugging Face layout."""
    torch.manual_seed(0)
    cfg = TrainConfig(**TOY)  # type: ignore[arg-type]
    transformer, text_encoder = build_models(cfg)
    # adaLN-Zero starts at an exact zero output; perturb so toy outputs depend on their inputs
    with torch.no_grad():
        for p in transformer.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    out = tmp_path_factory.mktemp("toy-tiny")
    save_pipeline(transformer, text_encoder, build_vae(cfg), out, cfg)
    return out


@dataclass
class Served:
    """A live `noor serve` subprocess on a free loopback port, with the admin key it printed."""

    proc: subprocess.Popen[str]
    base: str
    key: str
    env: dict[str, str]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def noor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Generator[Callable[..., tuple[int, str, str]], None, None]:
    """Run `noor ARGS` in this process with a fresh data dir (cwd: tmp_path); returns (exit code, stdout,
    stderr)."""
    from noor import cli
    from noor.config import settings

    monkeypatch.setenv("NOOR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    settings.cache_clear()

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["noor", *args])
        code = 0
        try:
            cli.main()
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    yield run
    settings.cache_clear()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


REPO = Path(__file__).resolve().parent.parent


# `noor serve` measures cpu-local (about 2 s: src/noor/catalog/local.py) into its data dir before it serves,
# unless the dir holds a record already. The first record a server of this session made is given to every later
# server's fresh data dir, as one user's servers share one measurement; a record that is not this server's
# (another machine, thread count or boot) is measured again by the server itself.
_served_cpu_local: list[str] = []


def _cpu_local_record(env: dict[str, str]) -> Path:
    return Path(env.get("NOOR_DATA_DIR", os.environ["NOOR_DATA_DIR"])) / "perf" / "cpu-local.json"


def share_cpu_local(env: dict[str, str]) -> None:
    """Before a `noor serve` starts on `env`'s data dir: give it the session's record if it has none."""
    path = _cpu_local_record(env)
    if _served_cpu_local and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_served_cpu_local[0])


def keep_cpu_local(env: dict[str, str]) -> None:
    """Once a `noor serve` on `env`'s data dir answers: keep its record for the servers after it."""
    path = _cpu_local_record(env)
    if not _served_cpu_local and path.is_file():
        _served_cpu_local.append(path.read_text())


def serve_process(
    module: str,
    port: int,
    env: dict[str, str],
    *args: str,
    timeout_s: float = 60,
    started: list[subprocess.Popen[str]] | None = None,
) -> tuple[subprocess.Popen[str], str]:
    """`python -m MODULE serve --port PORT ARGS` (`noor.cli`, or `tests.world_double`: noor serve that knows the
    terrain double), waited for until /healthz answers: (process, the admin key it printed). The process goes into
    `started` at once, so a caller can stop it whatever happens; no answer within `timeout_s` is a failure."""
    share_cpu_local(env)
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "serve", "--port", str(port), *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if started is not None:
        started.append(proc)
    assert proc.stdout is not None
    key = ""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            raise AssertionError(f"{module} serve exited with {proc.returncode}")
        if "admin API key" in line:
            key = line.rsplit(" ", 1)[-1].strip()
        if "serving on" in line:
            break
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                keep_cpu_local(env)
                return proc, key
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"{module} serve did not answer /healthz within {timeout_s:.0f} s")


def start_serve(
    data_dir: Path, toy_weights: Path, *args: str, port: int | None = None, module: str = "noor.cli"
) -> Served:
    port = port or free_port()
    env = {
        **os.environ,
        "NOOR_DATA_DIR": str(data_dir),
        "NOOR_TINY_WEIGHTS": str(toy_weights),
        "NOOR_THREADS": "1",
        "NOOR_LOG_LEVEL": "WARNING",
    }
    proc, key = serve_process(module, port, env, *args)
    return Served(proc, f"http://127.0.0.1:{port}", key, env)


# --- The resource guard: a test that reaches PostgreSQL, joins Ray or drives Chromium carries its mark ---
# The quick run (`pytest -m "not ray and not browser and not slow"`, README) stays quick and needs no cluster or
# browser only if every such test says so. So each test's setup and call are watched, and a test that used one
# of them without its mark fails, naming the mark. (A PostgreSQL-parametrised fixture attaches the mark with
# pytest.param(..., marks=pytest.mark.postgres), as tests/jobs/conftest.py's `store` does.)

_postgres_checkouts = 0


@event.listens_for(Pool, "checkout")
def _count_postgres_checkout(dbapi_connection: object, record: object, proxy: object) -> None:
    """Every SQLAlchemy pool hands out connections here; psycopg's are PostgreSQL's (SQLite's are sqlite3's)."""
    global _postgres_checkouts
    if type(dbapi_connection).__module__.startswith("psycopg"):
        _postgres_checkouts += 1


def _chromium_running() -> bool:
    """A Chromium process under this one (Playwright starts it as a grandchild, through its driver)."""
    if "playwright" not in sys.modules:  # the only way tests drive a browser; skips a process scan per test
        return False
    return any("chrom" in child.name().lower() for child in psutil.Process().children(recursive=True))


def _ray_joined() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())


def resources_used(since_postgres_checkouts: int) -> set[str]:
    """The marks that what is in use now calls for: `postgres` if a connection was checked out since the count
    given, `ray` if this process is a driver on a Ray cluster, `browser` if a Chromium runs under it."""
    used = set()
    if _postgres_checkouts > since_postgres_checkouts:
        used.add("postgres")
    if _ray_joined():
        used.add("ray")
    if _chromium_running():
        used.add("browser")
    return used


def _require_marks(item: pytest.Item, since_postgres_checkouts: int, phase: str) -> None:
    missing = sorted(m for m in resources_used(since_postgres_checkouts) if item.get_closest_marker(m) is None)
    if missing:
        marks = ", ".join(f"@pytest.mark.{m}" for m in missing)
        pytest.fail(f"{item.nodeid} used {'/'.join(missing)} in its {phase} without {marks}: mark it, "
                    "so the quick run leaves it out", pytrace=False)  # fmt: skip


def _guard(phase: str) -> Callable[[pytest.Item], Generator[None, object, object]]:
    """A wrapper around one phase of each test (setup: fixtures start things; call: the test itself)."""

    @pytest.hookimpl(wrapper=True)
    def hook(item: pytest.Item) -> Generator[None, object, object]:
        before = _postgres_checkouts
        result = yield
        _require_marks(item, before, phase)
        return result

    return hook


pytest_runtest_setup = _guard("setup")
pytest_runtest_call = _guard("call")
