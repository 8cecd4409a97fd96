"""A real Kea (kea-dhcp4 + kea-ctrl-agent) for integration tests and the DHCP benchmark.

Kea 2.2 serves its REST API only through `kea-ctrl-agent`, which forwards commands to
kea-dhcp4 over a unix socket. A unix socket is a file, so it crosses network namespaces: the
DHCP server runs inside the namespace a test created (listening on that namespace's veth end)
while the agent listens on 127.0.0.1 of the calling namespace, where the test's HTTP client is.
Without an interface Kea opens no DHCP socket at all and serves the REST API only.

Every file (config, memfile lease store, unix socket, pid and lock files, logs) lives in one
work directory, so parallel runs never share state and a fresh lease store is a file removal.

The lease store is memfile unless a `KeaPostgres` is given: Kea's PostgreSQL lease backend on
a database of its own (`kea_bench`, beside the test database, never in it), its schema made by
`kea-admin db-init pgsql` once per run, and a fresh store a TRUNCATE of the lease tables while
kea-dhcp4 is stopped. Kea inside a network namespace reaches PostgreSQL through the server's
unix socket directory (FIELD-NOTES): 127.0.0.1 there is the namespace's own loopback.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from app.dhcp.kea import KeaClient, KeaError
from bench.peers.leaseflow_dhcp import BenchDatabase, ProductError, base_database_url, shown
from bench.peers.netns import Namespace

INSTALL_HINT = "install kea-dhcp4-server kea-ctrl-agent (make test installs it)"
READY_TIMEOUT = 15.0
KEA_DATABASE = "kea_bench"
# Where Kea 2.2's PostgreSQL schema (13.0) keeps leases and what its triggers count of them:
# TRUNCATE fires no row triggers, so the *_stat tables are emptied along with the leases.
LEASE_TABLES = ("lease4", "lease4_stat", "lease4_stat_by_client_class",
                "lease6", "lease6_stat", "lease6_stat_by_client_class", "logs")
KEA_ADMIN_TIMEOUT = 120.0


class KeaPeerError(RuntimeError):
    """Kea could not be found or started."""


class KeaMissing(KeaPeerError):
    """The Kea binaries or the lease_cmds hook are not installed."""


@dataclass(frozen=True, kw_only=True)
class KeaBinaries:
    dhcp4: str
    agent: str
    lease_cmds: str  # path of libdhcp_lease_cmds.so


def _hooks_dirs() -> list[str]:
    """Where Debian put Kea's hooks: ask dpkg, then look in the usual multiarch places."""
    found: list[str] = []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        listing = subprocess.run(
            ["dpkg", "-L", "kea-common", "kea-dhcp4-server"],
            capture_output=True, text=True, timeout=10, check=False,
        ).stdout
        found += [line for line in listing.splitlines() if line.endswith("/kea/hooks")]
    found += sorted(glob.glob("/usr/lib/*/kea/hooks")) + ["/usr/lib/kea/hooks",
                                                         "/usr/local/lib/kea/hooks"]
    return list(dict.fromkeys(found))


def find_kea() -> KeaBinaries:
    dhcp4 = shutil.which("kea-dhcp4") or _sbin("kea-dhcp4")
    agent = shutil.which("kea-ctrl-agent") or _sbin("kea-ctrl-agent")
    if not dhcp4 or not agent:
        raise KeaMissing(f"kea-dhcp4 / kea-ctrl-agent not found: {INSTALL_HINT}")
    for directory in _hooks_dirs():
        library = os.path.join(directory, "libdhcp_lease_cmds.so")
        if os.path.exists(library):
            return KeaBinaries(dhcp4=dhcp4, agent=agent, lease_cmds=library)
    raise KeaMissing(f"Kea's libdhcp_lease_cmds.so hook not found: {INSTALL_HINT}")


def _sbin(name: str) -> str | None:
    # `which` misses /usr/sbin when PATH is a user's PATH.
    for directory in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def memfile_lease_database(lease_file: Path) -> dict[str, Any]:
    return {"type": "memfile", "persist": True, "name": str(lease_file), "lfc-interval": 0}


def postgresql_lease_database(url: str) -> dict[str, Any]:
    """Kea's `lease-database` for a PostgreSQL URL (SQLAlchemy or libpq form). A socket
    directory given as `?host=/dir` (how libpq names it) wins over the URL's host; the port
    stays, because it names the socket file."""
    parsed = make_url(url)
    host = parsed.query.get("host") or parsed.host or "localhost"
    if not isinstance(host, str):  # a repeated ?host= comes as a tuple
        host = host[0]
    if not parsed.database or not parsed.username:
        raise ValueError(f"{shown(url)}: Kea needs a database name and a user")
    entry: dict[str, Any] = {"type": "postgresql", "name": parsed.database, "host": host,
                             "user": parsed.username}
    if parsed.port:
        entry["port"] = parsed.port
    if parsed.password:
        entry["password"] = parsed.password
    return entry


def dhcp4_config(
    *,
    interfaces: list[str],
    subnet: str,
    pool: str,
    subnet_id: int,
    valid_lifetime: int,
    socket_path: Path,
    lease_file: Path,
    log_file: Path,
    lease_cmds: str,
    lease_database: Mapping[str, Any] | None = None,
    cache_threshold: float | None = None,
) -> dict[str, Any]:
    """kea-dhcp4 as the benchmark wants it: one thread, WARN logging, and memfile in
    `lease_file` unless `lease_database` says otherwise (`postgresql_lease_database`);
    `cache_threshold`: Kea's lease caching (a renewal of a lease younger than that fraction
    of its lifetime is answered with the time left, not written), off unless given."""
    caching = {"cache-threshold": cache_threshold} if cache_threshold else {}
    return {
        "Dhcp4": {
            "interfaces-config": {"interfaces": interfaces},
            "control-socket": {"socket-type": "unix", "socket-name": str(socket_path)},
            "lease-database": (dict(lease_database) if lease_database is not None
                               else memfile_lease_database(lease_file)),
            # Kea 2.2 defaults to one thread already; say so, the benchmark depends on it.
            "multi-threading": {"enable-multi-threading": False},
            "valid-lifetime": valid_lifetime,
            **caching,
            "hooks-libraries": [{"library": lease_cmds}],
            "subnet4": [{"id": subnet_id, "subnet": subnet, "pools": [{"pool": pool}]}],
            # Per-lease INFO logging costs Kea most of its speed (FIELD-NOTES).
            "loggers": [{"name": "kea-dhcp4", "severity": "WARN",
                         "output_options": [{"output": str(log_file)}]}],
        }
    }


def agent_config(
    *, port: int, socket_path: Path, log_file: Path, auth: tuple[str, str] | None
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "http-host": "127.0.0.1",
        "http-port": port,
        "control-sockets": {"dhcp4": {"socket-type": "unix", "socket-name": str(socket_path)}},
        "loggers": [{"name": "kea-ctrl-agent", "severity": "WARN",
                     "output_options": [{"output": str(log_file)}]}],
    }
    if auth is not None:
        config["authentication"] = {
            "type": "basic", "realm": "leaseflow",
            "clients": [{"user": auth[0], "password": auth[1]}],
        }
    return {"Control-agent": config}


def find_kea_admin() -> str:
    admin = shutil.which("kea-admin") or _sbin("kea-admin")
    if not admin:
        raise KeaMissing("kea-admin not found: install kea-admin (make test installs it)")
    return admin


def kea_admin_init(admin: str, url: str) -> tuple[list[str], dict[str, str]]:
    """`kea-admin db-init pgsql` for the database `url` names: argv and the environment
    additions. Without -p kea-admin prompts for nothing (trust auth needs no password); a
    password goes in KEA_ADMIN_DB_PASSWORD, never on the command line."""
    entry = postgresql_lease_database(url)
    argv = [admin, "db-init", "pgsql", "-u", entry["user"], "-n", entry["name"],
            "-h", entry["host"]]
    if "port" in entry:
        argv += ["-P", str(entry["port"])]
    env = {"KEA_ADMIN_DB_PASSWORD": entry["password"]} if "password" in entry else {}
    return argv, env


class KeaPostgres:
    """Kea's PostgreSQL lease store: the database `name` on the server `base_url` names
    (default: the test database's server, LEASEFLOW_TEST_DATABASE_URL), reached through the
    server's unix socket directory so that a Kea inside a network namespace gets there."""

    def __init__(self, base_url: str | None = None, name: str = KEA_DATABASE) -> None:
        self.database = BenchDatabase(base_url or base_database_url(), name)

    @property
    def url(self) -> str:
        if not self.database.url:
            raise KeaPeerError("KeaPostgres.prepare() has not run")
        return self.database.url

    def prepare(self) -> KeaPostgres:
        """Create the database when missing and give it a new schema from the installed
        Kea's kea-admin (an empty database is what `db-init` insists on, and a schema made
        by this Kea is one it accepts)."""
        admin = find_kea_admin()
        try:
            self.database.ensure()
            self.database.reset()
        except ProductError as exc:
            raise KeaPeerError(str(exc)) from None
        except psycopg.Error as exc:
            where = self.database.url or self.database.base_url
            raise KeaPeerError(f"PostgreSQL at {shown(where)}: {exc}") from None
        argv, extra = kea_admin_init(admin, self.url)
        try:
            done = subprocess.run(argv, env=os.environ | extra, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=KEA_ADMIN_TIMEOUT,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise KeaPeerError(f"kea-admin db-init took over {KEA_ADMIN_TIMEOUT:.0f} s") from None
        if done.returncode != 0:
            raise KeaPeerError(f"kea-admin db-init pgsql failed ({done.returncode}): "
                               f"{(done.stdout + done.stderr)[-800:].strip()}")
        return self

    def lease_database(self) -> dict[str, Any]:
        return postgresql_lease_database(self.url)

    def wipe(self) -> None:
        """An empty lease store, for a kea-dhcp4 about to start (stopped: no step may
        race the writes of the last one)."""
        try:
            with self.database.connect() as conn:
                conn.execute("SET lock_timeout = '10s'")
                conn.execute(sql.SQL("TRUNCATE {}").format(
                    sql.SQL(", ").join(sql.Identifier(t) for t in LEASE_TABLES)))
        except psycopg.Error as exc:
            raise KeaPeerError(f"emptying Kea's lease tables in {shown(self.url)}: "
                               f"{exc}") from None


class KeaPeer:
    """kea-dhcp4 (optionally inside `namespace`) plus its control agent on 127.0.0.1."""

    def __init__(
        self,
        *,
        workdir: Path,
        subnet: str,
        pool: str,
        namespace: Namespace | None = None,
        subnet_id: int = 1,
        valid_lifetime: int = 3600,
        auth: tuple[str, str] | None = None,
        lease_store: KeaPostgres | None = None,
        cache_threshold: float | None = None,
    ) -> None:
        """`lease_store`: a prepared `KeaPostgres` for the PostgreSQL lease backend;
        None keeps leases in a memfile in `workdir`. `cache_threshold`: lease caching
        (`dhcp4_config`)."""
        self.binaries = find_kea()
        self.workdir = workdir
        self.namespace = namespace
        self.auth = auth
        self.lease_store = lease_store
        self.port = free_port()
        self.socket_path = workdir / "kea4.sock"
        self.lease_file = workdir / "leases4.csv"
        self._dhcp4_conf = workdir / "kea-dhcp4.json"
        self._agent_conf = workdir / "kea-ctrl-agent.json"
        self._dhcp4_conf.write_text(json.dumps(dhcp4_config(
            interfaces=[namespace.interface] if namespace else [],
            subnet=subnet, pool=pool, subnet_id=subnet_id, valid_lifetime=valid_lifetime,
            socket_path=self.socket_path, lease_file=self.lease_file,
            log_file=workdir / "kea-dhcp4.log", lease_cmds=self.binaries.lease_cmds,
            lease_database=lease_store.lease_database() if lease_store is not None else None,
            cache_threshold=cache_threshold,
        ), indent=1))
        self._agent_conf.write_text(json.dumps(agent_config(
            port=self.port, socket_path=self.socket_path,
            log_file=workdir / "kea-ctrl-agent.log", auth=auth,
        ), indent=1))
        # Kea writes pid and logger lock files to /run/kea unless told otherwise.
        self._env = os.environ | {"KEA_PIDFILE_DIR": str(workdir),
                                  "KEA_LOCKFILE_DIR": str(workdir)}
        self._dhcp4: subprocess.Popen[bytes] | None = None
        self._agent: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def client(self, timeout: float = 5.0) -> KeaClient:
        user, password = self.auth if self.auth else (None, None)
        return KeaClient.from_url(self.url, user, password, timeout=timeout)

    def _spawn(self, argv: list[str], name: str, in_namespace: bool) -> subprocess.Popen[bytes]:
        with open(self.workdir / f"{name}.out", "ab") as out:
            if in_namespace and self.namespace is not None:
                return self.namespace.popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                            env=self._env)
            return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self._env)

    def start(self, timeout: float = READY_TIMEOUT) -> KeaPeer:
        for conf, binary, namespace in ((self._dhcp4_conf, self.binaries.dhcp4, self.namespace),
                                        (self._agent_conf, self.binaries.agent, None)):
            # The interface exists only inside the namespace, so check the config there.
            argv = [binary, "-t", str(conf)]
            check = subprocess.run(namespace.cmd(argv) if namespace else argv,
                                   capture_output=True, text=True, env=self._env, check=False)
            if check.returncode != 0:
                raise KeaPeerError(f"{binary} refused {conf.name}: {check.stdout[-800:]}")
        self._agent = self._spawn([self.binaries.agent, "-c", str(self._agent_conf)],
                                  "kea-ctrl-agent", in_namespace=False)
        self.start_dhcp4(fresh=True, timeout=timeout)
        return self

    def start_dhcp4(self, *, fresh: bool = True, timeout: float = READY_TIMEOUT) -> None:
        if fresh and self.lease_store is not None:
            self.lease_store.wipe()
        elif fresh:
            # memfile keeps the store plus .1/.2 files from lease file cleanup.
            for stale in self.workdir.glob(self.lease_file.name + "*"):
                stale.unlink()
        self._dhcp4 = self._spawn([self.binaries.dhcp4, "-c", str(self._dhcp4_conf)],
                                  "kea-dhcp4", in_namespace=True)
        self.wait_ready(timeout)

    @property
    def dhcp4_pid(self) -> int | None:
        """kea-dhcp4's process id while it runs (what the CPU meter reads)."""
        return self._dhcp4.pid if self._dhcp4 is not None else None

    def stop_dhcp4(self) -> None:
        _stop(self._dhcp4)
        self._dhcp4 = None

    def restart_dhcp4(self, *, fresh: bool = True) -> None:
        """A fresh lease store (benchmark steps) or a restart that reloads the old one."""
        self.stop_dhcp4()
        self.start_dhcp4(fresh=fresh)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Poll `list-commands` through the agent until kea-dhcp4 answers, or fail."""
        deadline = time.monotonic() + timeout
        client = self.client(timeout=1.0)
        last: Exception | None = None
        while time.monotonic() < deadline:
            for proc, name in ((self._agent, "kea-ctrl-agent"), (self._dhcp4, "kea-dhcp4")):
                if proc is not None and proc.poll() is not None:
                    raise KeaPeerError(f"{name} exited with {proc.returncode}: {self._tail(name)}")
            try:
                client.ping()
                return
            except KeaError as exc:
                last = exc
            time.sleep(0.05)  # polling interval, not a wait for correctness
        raise KeaPeerError(f"Kea not ready after {timeout:.0f} s: {last}; "
                           f"{self._tail('kea-dhcp4')} {self._tail('kea-ctrl-agent')}")

    def _tail(self, name: str) -> str:
        text = ""
        for suffix in (".out", ".log"):
            path = self.workdir / f"{name}{suffix}"
            if path.exists():
                text += path.read_text(errors="replace")[-600:]
        return text.strip()

    def stop(self) -> None:
        self.stop_dhcp4()
        _stop(self._agent)
        self._agent = None


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@contextlib.contextmanager
def kea_server(
    *,
    subnet: str = "10.77.0.0/24",
    pool: str = "10.77.0.100 - 10.77.0.200",
    namespace: Namespace | None = None,
    subnet_id: int = 1,
    valid_lifetime: int = 3600,
    auth: tuple[str, str] | None = None,
    workdir: Path | None = None,
) -> Iterator[KeaPeer]:
    """A started Kea; stopped and its work directory removed on exit."""
    own_dir = workdir is None
    directory = Path(tempfile.mkdtemp(prefix="lf-kea-")) if workdir is None else workdir
    peer: KeaPeer | None = None
    try:
        peer = KeaPeer(workdir=directory, subnet=subnet, pool=pool, namespace=namespace,
                       subnet_id=subnet_id, valid_lifetime=valid_lifetime, auth=auth)
        peer.start()
        yield peer
    finally:
        if peer is not None:
            peer.stop()
        if own_dir:
            shutil.rmtree(directory, ignore_errors=True)
