"""Real `leaseflow worker` processes (Celery over Redis) for integration tests and benches."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def worker_env(database_url: str, broker_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEASEFLOW_")}
    env.update({"LEASEFLOW_DATABASE_URL": database_url, "LEASEFLOW_BROKER_URL": broker_url,
                "LEASEFLOW_SECRET_KEY": "bench", "LEASEFLOW_API_TOKEN": "bench",
                "LEASEFLOW_ADMIN_PASSWORD": "bench", **extra})
    return env


def start_worker(env: Mapping[str, str], name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker", "--hostname", f"{name}@%h",
         "--loglevel", "WARNING"],
        cwd=ROOT, env=dict(env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True)


def wait_ready(celery_app: object, names: list[str], timeout: float = 60.0) -> None:
    """Bounded readiness check: every named worker answers a ping."""
    deadline = time.monotonic() + timeout
    wanted = set(names)
    while time.monotonic() < deadline:
        replies = celery_app.control.ping(timeout=1.0) or []  # type: ignore[attr-defined]
        seen = {name.split("@")[0] for reply in replies for name in reply}
        if wanted <= seen:
            return
    raise RuntimeError(f"workers {sorted(wanted)} did not answer within {timeout:.0f}s")


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def workers(env: Mapping[str, str], count: int, celery_app: object,
            prefix: str = "lfw") -> Iterator[list[subprocess.Popen[bytes]]]:
    names = [f"{prefix}{i}-{os.getpid()}" for i in range(count)]
    procs = [start_worker(env, name) for name in names]
    try:
        wait_ready(celery_app, names)
        yield procs
    finally:
        for proc in procs:
            stop(proc)
