"""The product DHCP server as a benchmark target: `leaseflow dhcp` on PostgreSQL + Redis.

`bench/dhcp.py` measures Kea and Leaseflow's protocol engine (in-memory backend); this target
is what a deployment runs: `python -m app.cli dhcp --interface IF --dora fast|process` with
its leases in PostgreSQL, jobs over Redis, and `leaseflow worker` processes ("followers")
that start each bound lease's `dhcp_lease` instance from the outbox. perfdhcp's figures say
what a client gets; a step here also says what the rate left behind: the server's own
counters, and how far the instances lag the ACKs.

How processes in the server namespace reach PostgreSQL and Redis (tried on this machine): a
network namespace has a loopback of its own, so 127.0.0.1 there is not the host's.

- PostgreSQL: through its unix socket directory (`SHOW unix_socket_directories`, here
  /var/run/postgresql; pg_hba trusts local connections). A socket that is a file is not
  bound to a network namespace; Kea's PostgreSQL backend does the same (FIELD-NOTES).
- Redis: the machine's redis-server listens on 127.0.0.1:6379 only (`CONFIG GET unixsocket`
  is empty, and Redis refuses to set it at run time), and a unix socket would not serve the
  product anyway: kombu reads one only as `redis+socket://`, a URL the app's change
  notifications (`dispatch.CeleryTransport`: redis://, rediss://, unix://) skip. So this
  target runs a redis-server of its own *inside* the server namespace: the server and the
  followers use redis://127.0.0.1:6379/0 on the namespace's loopback, a production URL, and
  the bench reaches the same server through a unix socket in the run's work directory (to
  flush it and to ping the followers). The followers run in the server namespace for that
  URL; they take the same two cores wherever they run.

The bench's own database (`leaseflow_bench_dhcp`) lives beside the test database, never in
it: each step drops and recreates its schema, so two runs at once would trip over each other.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url

from bench.dhcp_process import server_counters
from bench.peers.netns import Namespace
from bench.peers.workers import stop as stop_process
from bench.peers.workers import wait_ready, worker_env

REPO = Path(__file__).resolve().parents[2]
DATABASE = "leaseflow_bench_dhcp"
DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379  # on the server namespace's own loopback
PRODUCT_PREFIX = "Leaseflow product"
PROCESS_KEY = "dhcp_lease"
DORA_MODES = ("fast", "process")
DRAIN_TIMEOUT = 120.0  # seconds the followers get to start what a step left behind
READY_TIMEOUT = 60.0
CLI_TIMEOUT = 300.0
STOP_TIMEOUT = 20.0  # the server lets its waiting threads finish before it prints counters
POLL = 0.1


class ProductError(RuntimeError):
    """The product target could not be set up or started."""


@dataclass(frozen=True, kw_only=True)
class ProductFigures:
    """What one step left behind: the server's counters and how far the `dhcp_lease`
    instances lag the ACKs (an instance has started once its workflow is stored)."""

    offers: int
    acks: int
    drops: int  # every dropped_* counter of the server
    instances: int
    started_at_exit: int  # instances started when perfdhcp exited
    started: int  # ... once the server had exited and the followers had their time
    followers: int
    drain_seconds: float | None  # after perfdhcp exited; None: no followers or not in time
    waited_seconds: float
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def backlog(self) -> int:
        return self.instances - self.started


# --- pure parts -----------------------------------------------------------------------------


def product_name(dora: str, processes: int = 1, reuse: float = 0.0) -> str:
    more = f", {processes} processes" if processes > 1 else ""
    if reuse and dora == "fast":  # the process path does not reuse leases
        more += f", reuse {reuse:g}"
    return f"{PRODUCT_PREFIX} ({dora} DORA, PostgreSQL{more})"


def base_database_url(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return env.get("LEASEFLOW_TEST_DATABASE_URL") or DEFAULT_DATABASE_URL


def socket_directory(setting: str, port: int,
                     exists: Callable[[str], bool] = os.path.exists) -> str | None:
    """The first of `unix_socket_directories` that holds the server's socket file (an
    entry starting with @ is an abstract socket, which is bound to a network namespace)."""
    for entry in setting.split(","):
        directory = entry.strip()
        if directory.startswith("/") and exists(f"{directory}/.s.PGSQL.{port}"):
            return directory
    return None


def socket_url(base: str, directory: str, database: str = DATABASE) -> str:
    """`base` (a SQLAlchemy URL) turned to `database` through the unix socket `directory`:
    the host part goes, because inside a namespace it would name the namespace's own
    loopback; the port stays, because it names the socket file."""
    url = make_url(base)
    return URL.create(url.drivername, username=url.username, password=url.password,
                      port=url.port, database=database,
                      query={**url.query, "host": directory}).render_as_string(
                          hide_password=False)


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL as psycopg takes it (libpq knows no `+driver`)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def shown(url: str) -> str:
    """A URL fit for an error message (no password)."""
    return make_url(url).render_as_string(hide_password=True)


def dora_argv(dora: str) -> list[str]:
    """`--dora fast`; nothing for `process`, which is the server's default (and the only
    behaviour of a server that predates the option): LEASEFLOW_DHCP_DORA says it as well."""
    if dora not in DORA_MODES:
        raise ValueError(f"unknown DORA mode {dora!r}")
    return [] if dora == "process" else ["--dora", dora]


def server_argv(interface: str, dora: str, processes: int = 1) -> list[str]:
    more = ["--processes", str(processes)] if processes > 1 else []
    return [sys.executable, "-m", "app.cli", "dhcp", "--interface", interface,
            *dora_argv(dora), *more]


def follower_argv(name: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", "worker", "--hostname", f"{name}@%h",
            "--loglevel", "WARNING"]


def drop_counts(counters: Mapping[str, int]) -> dict[str, int]:
    """The server's drops by reason (`dropped_stale` → `stale`), zeros left out."""
    prefix = "dropped_"
    return {k[len(prefix):]: v for k, v in sorted(counters.items())
            if k.startswith(prefix) and v}


def wait_for_starts(
    count: Callable[[], tuple[int, int]], *, since: float, timeout: float,
    clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
) -> tuple[int, int, float | None]:
    """Poll (instances, started) until every instance has started: the figures and the
    seconds since `since`, or None as the seconds when `timeout` passed first."""
    while True:
        instances, started = count()
        now = clock()
        if started >= instances:
            return instances, started, now - since
        if now - since >= timeout:
            return instances, started, None
        sleep(POLL)


def figures_from(counters: Mapping[str, int], *, instances: int, started_at_exit: int,
                 started: int, followers: int, drain_seconds: float | None,
                 waited_seconds: float) -> ProductFigures:
    return ProductFigures(
        offers=counters.get("offers", 0), acks=counters.get("acks", 0),
        drops=sum(drop_counts(counters).values()), instances=instances,
        started_at_exit=started_at_exit, started=started, followers=followers,
        drain_seconds=drain_seconds, waited_seconds=waited_seconds, counters=dict(counters))


def describe(figures: ProductFigures) -> str:
    """One line: the server's counters, then the instances and their lag behind the ACKs."""
    reasons = drop_counts(figures.counters)
    detail = (" (" + ", ".join(f"{k} {v:,}" for k, v in reasons.items()) + ")"
              if reasons else "")
    reused = figures.counters.get("acks_reused", 0)
    server = (f"server offers {figures.offers:,}, acks {figures.acks:,}"
              f"{f' ({reused:,} reused)' if reused else ''}, drops {figures.drops:,}{detail}")
    followers = f"{figures.followers} follower{'s' if figures.followers != 1 else ''}"
    lag = (f"dhcp_lease instances {figures.instances:,}, {figures.started_at_exit:,} "
           f"started when perfdhcp exited")
    if figures.started_at_exit >= figures.instances:
        return f"{server}; {lag} ({followers})"
    if figures.followers == 0 and figures.backlog == 0:  # the server started them itself
        return f"{server}; {lag}, the rest before the server exited (no followers)"
    if figures.followers == 0:
        return f"{server}; {lag}, no followers: {figures.backlog:,} wait in the outbox"
    if figures.drain_seconds is None:
        return (f"{server}; {lag}, {figures.backlog:,} still not started "
                f"{figures.waited_seconds:.0f} s later ({followers})")
    return f"{server}; {lag}, all {figures.drain_seconds:.2f} s later ({followers})"


# --- peers ----------------------------------------------------------------------------------


class BenchDatabase:
    """The bench's own PostgreSQL database, reached through the unix socket directory."""

    def __init__(self, base_url: str, name: str = DATABASE) -> None:
        self.base_url = base_url
        self.name = name
        self.url = ""  # the namespace-proof URL, known once ensure() has run

    def ensure(self) -> str:
        """Create the database when missing (CREATE DATABASE runs outside a transaction,
        hence autocommit); return the URL the namespace can use."""
        try:
            with psycopg.connect(libpq_url(self.base_url), autocommit=True,
                                 connect_timeout=5) as conn:
                found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                     (self.name,)).fetchone()
                if found is None:
                    with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                        conn.execute(sql.SQL("CREATE DATABASE {}").format(
                            sql.Identifier(self.name)))
                row = conn.execute("SHOW unix_socket_directories").fetchone()
        except psycopg.Error as exc:
            raise ProductError(f"PostgreSQL at {shown(self.base_url)}: {exc}") from None
        port = make_url(self.base_url).port or 5432
        directory = socket_directory(str(row[0]) if row else "", port)
        if directory is None:
            raise ProductError(f"PostgreSQL has no unix socket for port {port} "
                               f"(unix_socket_directories = {row[0] if row else '?'!s}): "
                               "a network namespace cannot reach it")
        self.url = socket_url(self.base_url, directory, self.name)
        return self.url

    @contextlib.contextmanager
    def connect(self) -> Iterator[psycopg.Connection[Any]]:
        with psycopg.connect(libpq_url(self.url), autocommit=True, connect_timeout=5) as conn:
            yield conn

    def reset(self) -> None:
        """An empty schema: every table, sequence and row of the last step goes."""
        with self.connect() as conn:
            # A forgotten session holding a lock must fail the step, not hang it.
            conn.execute("SET lock_timeout = '10s'")
            conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
            conn.execute("CREATE SCHEMA public")

    @staticmethod
    def instance_counts(conn: psycopg.Connection[Any]) -> tuple[int, int]:
        """(dhcp_lease instances, of which started): a fast-path instance is stored with an
        empty workflow and gets one when a worker runs its `engine.start` job."""
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE i.workflow <> '') "
            "FROM process_instances AS i JOIN process_definitions AS d "
            "ON d.id = i.definition_id WHERE d.key = %s", (PROCESS_KEY,)).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])


class NamespaceRedis:
    """A redis-server of the bench's own, listening on the server namespace's loopback and
    on a unix socket in the work directory (see the module docstring for why)."""

    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"

    def __init__(self, namespace: Namespace, workdir: Path) -> None:
        self.namespace = namespace
        self.workdir = workdir
        self.socket = workdir / "redis.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_url(self) -> str:
        """The same server for Celery in the bench's own namespace."""
        return f"redis+socket://{self.socket}"

    def _client(self) -> Any:
        import redis

        return redis.Redis(unix_socket_path=str(self.socket), socket_timeout=5)

    def start(self, timeout: float = 15.0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ProductError("redis-server not found: install redis-server (make test "
                               "installs it)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = self.namespace.popen(
            [binary, "--bind", REDIS_HOST, "--port", str(REDIS_PORT),
             "--unixsocket", str(self.socket),
             "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ProductError(f"redis-server exited with {self.proc.returncode}")
            with contextlib.suppress(Exception):
                if self._client().ping():
                    return
            time.sleep(POLL)
        raise ProductError(f"redis-server did not answer within {timeout:.0f} s")

    def flush(self) -> None:
        self._client().flushall()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class ProductTarget:
    """`leaseflow dhcp` on PostgreSQL + Redis in the server namespace, plus followers.

    Every step (`fresh`) starts on an empty schema, as Kea starts on an empty memfile:
    migrations and the subnet through the CLI, then the server and the followers; `settle`
    ends a step by waiting for the followers and stopping the server for its counters.
    """

    def __init__(self, namespace: Namespace, workdir: Path, *, subnet: str, pool: str,
                 dora: str = "fast", followers: int = 1, processes: int = 1,
                 reuse: float = 0.0, drain_timeout: float = DRAIN_TIMEOUT,
                 base_url: str | None = None) -> None:
        dora_argv(dora)  # refuse an unknown mode before anything starts
        self.name = product_name(dora, processes, reuse)
        self.reuse = reuse
        self.processes = processes
        self.namespace = namespace
        self.workdir = workdir / "product"
        self.subnet, self.pool = subnet, pool
        self.dora = dora
        self.followers = followers
        self.drain_timeout = drain_timeout
        self.database = BenchDatabase(base_url or base_database_url())
        self.redis = NamespaceRedis(namespace, self.workdir)
        self.server: subprocess.Popen[bytes] | None = None
        self.follower_procs: list[subprocess.Popen[bytes]] = []
        self._celery: Any = None

    # -- Target --------------------------------------------------------------------------

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.database.ensure()
        self.redis.start()

    def fresh(self) -> None:
        self._stop_server()
        self._stop_followers()
        self.redis.flush()  # messages of the last step name jobs of a dropped schema
        self.database.reset()
        env = self._env()
        self._cli(env, "db", "upgrade")
        self._cli(env, "subnet", "add", self.subnet, "--pool", self.pool)
        # Both start at once (a few seconds of imports each); the server's readiness first.
        self._spawn_server(env)
        names = self._spawn_followers(env)
        self._wait_listening()
        if names:
            try:
                wait_ready(self._celery_app(), names, timeout=READY_TIMEOUT)
            except RuntimeError as exc:
                raise ProductError(f"{exc}: {self._tail('follower-0.log')}") from None

    def settle(self) -> ProductFigures:
        """Right after perfdhcp: count the instances, wait for the followers to start the
        rest (with a timeout: this is a measurement, not a test), stop the server."""
        since = time.monotonic()
        with self.database.connect() as conn:

            def count() -> tuple[int, int]:
                return self.database.instance_counts(conn)

            def drain() -> tuple[int, int, float | None]:
                return wait_for_starts(count, since=since, timeout=self.drain_timeout)

            _, started_at_exit = count()
            drained: float | None = None
            if self.followers > 0:
                drained = drain()[2]
            # The server answers what it still had queued before it exits, so its last
            # instances may come after the drain: count again, and wait for those too.
            counters = self._stop_server()
            instances, started = count()
            if self.followers > 0 and drained is not None and started < instances:
                instances, started, drained = drain()
        return figures_from(counters, instances=instances, started_at_exit=started_at_exit,
                            started=started, followers=self.followers,
                            drain_seconds=drained, waited_seconds=time.monotonic() - since)

    uses_postgres = True  # its CPU per lease counts the cluster's

    def server_pids(self) -> list[int]:
        """The server (its forked processes are its descendants) and the followers."""
        procs = [self.server, *self.follower_procs] if self.server else self.follower_procs
        return [proc.pid for proc in procs if proc.poll() is None]

    def stop(self) -> None:
        self._stop_server()
        self._stop_followers()
        if self._celery is not None:
            self._celery.close()
            self._celery = None
        self.redis.stop()

    # -- parts ---------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        # worker_env drops every LEASEFLOW_* of the caller and sets the secrets.
        return worker_env(self.database.url, self.redis.url, LEASEFLOW_DHCP_DORA=self.dora,
                          LEASEFLOW_DHCP_REUSE=f"{self.reuse:g}")

    def _cli(self, env: dict[str, str], *argv: str) -> None:
        # In the namespace too: whatever these commands might send to the broker goes to
        # the bench's Redis, never to the machine's.
        try:
            done = self.namespace.run([sys.executable, "-m", "app.cli", *argv], cwd=REPO,
                                      env=env, timeout=CLI_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise ProductError(f"leaseflow {' '.join(argv)}: no answer within "
                               f"{CLI_TIMEOUT:.0f} s") from None
        if done.returncode != 0:
            raise ProductError(f"leaseflow {' '.join(argv)}: {done.stderr.strip()[-800:]}")

    def _spawn_server(self, env: dict[str, str]) -> None:
        with open(self.workdir / "server.out", "wb") as out, \
                open(self.workdir / "server.err", "wb") as err:  # fresh per start
            self.server = self.namespace.popen(server_argv(self.namespace.interface, self.dora,
                                                           self.processes),
                                               cwd=REPO, env=env, stdout=out, stderr=err)

    def _wait_listening(self, timeout: float = READY_TIMEOUT) -> None:
        # `leaseflow dhcp` prints `DHCP: listening on IF:PORT` once its socket is bound;
        # from then on the kernel queues what perfdhcp sends.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server is None or self.server.poll() is not None:
                code = None if self.server is None else self.server.returncode
                raise ProductError(f"leaseflow dhcp exited with {code}: "
                                   f"{self._tail('server.err')}")
            if "listening" in self._tail("server.out"):
                return
            time.sleep(0.02)  # polling interval
        raise ProductError(f"leaseflow dhcp not listening after {timeout:.0f} s: "
                           f"{self._tail('server.err')}")

    def _spawn_followers(self, env: dict[str, str]) -> list[str]:
        names = [f"lfbench{i}-{os.getpid()}" for i in range(self.followers)]
        for i, name in enumerate(names):
            with open(self.workdir / f"follower-{i}.log", "wb") as log:
                self.follower_procs.append(self.namespace.popen(
                    follower_argv(name), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                    stderr=log, start_new_session=True))
        return names

    def _celery_app(self) -> Any:
        # Only for pinging the followers: a bare Celery app on the same Redis.
        if self._celery is None:
            from celery import Celery

            self._celery = Celery("leaseflow-bench", broker=self.redis.socket_url)
        return self._celery

    def _stop_server(self) -> dict[str, int]:
        """Stop the server; its counters (one JSON line on exit), or {} if it had none."""
        proc, self.server = self.server, None
        if proc is None:
            return {}
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        return server_counters(self._tail("server.out", 20_000))

    def _stop_followers(self) -> None:
        procs, self.follower_procs = self.follower_procs, []
        for proc in procs:
            stop_process(proc)

    def _tail(self, name: str, size: int = 800) -> str:
        path = self.workdir / name
        return path.read_text(errors="replace")[-size:] if path.exists() else ""
