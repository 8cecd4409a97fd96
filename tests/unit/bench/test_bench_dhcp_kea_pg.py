"""The Kea-on-PostgreSQL target of the DHCP benchmark, its parts that need no network: the
`lease-database` Kea gets, the kea-admin call that makes its schema, how a fresh step empties
the store, the `--only kea-pg` choice and its ratio line. Nothing here starts a process,
opens a socket or touches a database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import dhcp
from bench.dhcp import (
    QUICK,
    KeaPostgresTarget,
    KeaTarget,
    ServerResult,
    build_parser,
    make_target,
    render,
    selected_servers,
)
from bench.peers import kea as kea_peer
from bench.peers.leaseflow_dhcp import product_name, socket_url
from bench.peers.netns import Namespace

SOCKET_URL = socket_url("postgresql+psycopg://postgres@127.0.0.1:5432/test",
                        "/var/run/postgresql", "kea_bench")
NAMESPACE = Namespace(name="lfs-x", interface="lfsx", address="10.77.0.1/16")


# --- the lease-database Kea gets ------------------------------------------------------------


def test_the_socket_url_becomes_kea_postgresql_through_the_socket_directory() -> None:
    assert kea_peer.postgresql_lease_database(SOCKET_URL) == {
        "type": "postgresql", "name": "kea_bench", "host": "/var/run/postgresql",
        "user": "postgres", "port": 5432}


def test_a_password_and_a_plain_host_are_passed_on() -> None:
    entry = kea_peer.postgresql_lease_database("postgresql://kea:s3cret@db.example:6543/leases")
    assert entry == {"type": "postgresql", "name": "leases", "host": "db.example",
                     "user": "kea", "password": "s3cret", "port": 6543}


def test_a_url_without_user_or_database_is_refused() -> None:
    with pytest.raises(ValueError, match="database name and a user"):
        kea_peer.postgresql_lease_database("postgresql://:5432/kea_bench?host=/run/pg")


def config(tmp_path: Path, lease_database: dict[str, Any] | None) -> dict[str, Any]:
    made = kea_peer.dhcp4_config(
        interfaces=["lfs1"], subnet="10.77.0.0/16", pool="10.77.1.0 - 10.77.255.254",
        subnet_id=1, valid_lifetime=3600, socket_path=tmp_path / "s",
        lease_file=tmp_path / "leases4.csv", log_file=tmp_path / "log",
        lease_cmds="/hooks/libdhcp_lease_cmds.so", lease_database=lease_database)
    return json.loads(json.dumps(made))["Dhcp4"]  # what Kea reads: JSON


def test_the_postgresql_config_keeps_one_thread_and_warn_logging(tmp_path: Path) -> None:
    pg = config(tmp_path, kea_peer.postgresql_lease_database(SOCKET_URL))
    memfile = config(tmp_path, None)
    assert pg["lease-database"] == {"type": "postgresql", "name": "kea_bench",
                                    "host": "/var/run/postgresql", "user": "postgres",
                                    "port": 5432}
    assert memfile["lease-database"] == {"type": "memfile", "persist": True,
                                         "name": str(tmp_path / "leases4.csv"),
                                         "lfc-interval": 0}
    # Everything but the lease store is the memfile target's.
    assert {k: v for k, v in pg.items() if k != "lease-database"} == \
        {k: v for k, v in memfile.items() if k != "lease-database"}
    assert pg["multi-threading"] == {"enable-multi-threading": False}
    assert pg["loggers"][0]["severity"] == "WARN"


# --- the schema and a fresh store -----------------------------------------------------------


def test_kea_admin_inits_the_schema_through_the_socket_directory_without_a_prompt() -> None:
    argv, env = kea_peer.kea_admin_init("/usr/sbin/kea-admin", SOCKET_URL)
    assert argv == ["/usr/sbin/kea-admin", "db-init", "pgsql", "-u", "postgres",
                    "-n", "kea_bench", "-h", "/var/run/postgresql", "-P", "5432"]
    assert env == {}  # no -p: kea-admin would ask for a password


def test_a_password_goes_to_kea_admin_in_its_environment_not_its_argv() -> None:
    url = socket_url("postgresql+psycopg://kea:s3cret@127.0.0.1:5432/test",
                     "/var/run/postgresql", "kea_bench")
    argv, env = kea_peer.kea_admin_init("kea-admin", url)
    assert "s3cret" not in " ".join(argv) and "-p" not in argv
    assert env == {"KEA_ADMIN_DB_PASSWORD": "s3cret"}


def test_the_store_has_no_url_before_it_is_prepared() -> None:
    store = kea_peer.KeaPostgres("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    assert store.database.name == "kea_bench"
    with pytest.raises(kea_peer.KeaPeerError, match="prepare"):
        store.lease_database()


class FakeStore(kea_peer.KeaPostgres):
    """A prepared store that records its wipes instead of truncating anything."""

    def __init__(self) -> None:
        super().__init__("postgresql+psycopg://postgres@127.0.0.1:5432/test")
        self.database.url = SOCKET_URL
        self.wipes = 0

    def wipe(self) -> None:
        self.wipes += 1


@pytest.fixture
def offline_kea(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """KeaPeer with made-up binaries; spawning records argv, readiness is immediate."""
    spawned: list[list[str]] = []
    monkeypatch.setattr(kea_peer, "find_kea", lambda: kea_peer.KeaBinaries(
        dhcp4="/usr/sbin/kea-dhcp4", agent="/usr/sbin/kea-ctrl-agent",
        lease_cmds="/hooks/libdhcp_lease_cmds.so"))
    monkeypatch.setattr(kea_peer, "free_port", lambda: 8123)
    monkeypatch.setattr(kea_peer.KeaPeer, "_spawn",
                        lambda self, argv, name, in_namespace: spawned.append(argv))
    monkeypatch.setattr(kea_peer.KeaPeer, "wait_ready", lambda self, timeout=0: None)
    return spawned


def test_the_peer_writes_the_postgresql_config_and_a_fresh_start_wipes_the_tables(
        tmp_path: Path, offline_kea: list[list[str]]) -> None:
    store = FakeStore()
    peer = kea_peer.KeaPeer(workdir=tmp_path, subnet="10.77.0.0/16",
                            pool="10.77.1.0 - 10.77.255.254", namespace=NAMESPACE,
                            lease_store=store)
    written = json.loads((tmp_path / "kea-dhcp4.json").read_text())["Dhcp4"]
    assert written["lease-database"]["type"] == "postgresql"
    assert written["lease-database"]["host"] == "/var/run/postgresql"
    assert written["interfaces-config"] == {"interfaces": ["lfsx"]}
    peer.start_dhcp4(fresh=True)
    peer.start_dhcp4(fresh=False)
    assert store.wipes == 1
    assert offline_kea[-1] == ["/usr/sbin/kea-dhcp4", "-c", str(tmp_path / "kea-dhcp4.json")]


def test_without_a_store_the_peer_keeps_its_memfile(
        tmp_path: Path, offline_kea: list[list[str]]) -> None:
    (tmp_path / "leases4.csv").write_text("old")
    (tmp_path / "leases4.csv.2").write_text("old")
    peer = kea_peer.KeaPeer(workdir=tmp_path, subnet="10.77.0.0/16", pool="10.77.1.0 - 10.77.1.9")
    written = json.loads((tmp_path / "kea-dhcp4.json").read_text())["Dhcp4"]
    assert written["lease-database"]["type"] == "memfile"
    peer.start_dhcp4(fresh=True)
    assert not list(tmp_path.glob("leases4.csv*"))


# --- command line and targets ---------------------------------------------------------------


@pytest.mark.parametrize(("argv", "expected"), [
    (["--only", "kea-pg"], ["kea-pg"]),
    (["--quick", "--only", "kea-pg"], ["kea-pg"]),
    (["--only", "kea,kea-pg"], ["kea", "kea-pg"]),
    (["--only", "kea-pg", "--only", "product,kea-pg"], ["kea-pg", "product"]),
])
def test_only_takes_kea_pg(argv: list[str], expected: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert selected_servers(args.only) == expected
    assert args.quick == ("--quick" in argv)


@pytest.mark.parametrize("argv", [["--only", "kea-postgres"], ["--only", "kea_pg"]])
def test_near_misses_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)


def test_kea_pg_is_a_kea_target_of_its_own(tmp_path: Path) -> None:
    target = make_target("kea-pg", NAMESPACE, tmp_path)
    assert isinstance(target, KeaPostgresTarget) and isinstance(target, KeaTarget)
    assert target.name == "Kea 2.2 (PostgreSQL, 1 thread)"
    assert target.workdir == tmp_path / "kea-pg"
    memfile = make_target("kea", NAMESPACE, tmp_path)
    assert isinstance(memfile, KeaTarget) and memfile.lease_store() is None
    assert memfile.workdir == tmp_path / "kea"


def test_the_kea_pg_target_gives_kea_a_prepared_store(
        tmp_path: Path, offline_kea: list[list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    store = FakeStore()
    monkeypatch.setattr(dhcp, "KeaPostgres", lambda: store)
    monkeypatch.setattr(FakeStore, "prepare", lambda self: self)
    monkeypatch.setattr(kea_peer.subprocess, "run",
                        lambda *a, **k: kea_peer.subprocess.CompletedProcess(a, 0, "", ""))
    target = KeaPostgresTarget(NAMESPACE, tmp_path)
    target.start()
    assert target.peer is not None and target.peer.lease_store is store
    target.fresh()
    assert store.wipes == 2  # the first start, then the step's
    target.stop()
    assert target.peer is None


# --- the table and the ratios ---------------------------------------------------------------


FAST = product_name("fast")


def test_the_product_is_also_compared_with_kea_on_postgresql() -> None:
    text = render([
        ServerResult(server=KeaTarget.name, new_leases_per_s=6000.0, new_drop_ratio=0.0,
                     renewals_per_s=3000.0),
        ServerResult(server=KeaPostgresTarget.name, new_leases_per_s=700.0,
                     new_drop_ratio=0.0, renewals_per_s=500.0),
        ServerResult(server=FAST, new_leases_per_s=350.0, new_drop_ratio=0.0,
                     renewals_per_s=250.0),
    ], QUICK, 100.0)
    lines = text.splitlines()
    row = next(line for line in lines if line.startswith(KeaPostgresTarget.name))
    assert row.split()[5] == "700"  # the new leases/s column, after the 5-word name
    assert "Leaseflow product / Kea: new leases 0.06 ×, renewals 0.08 × Kea" in lines
    assert ("Leaseflow product / Kea (PostgreSQL): new leases 0.50 ×, "
            "renewals 0.50 × Kea (PostgreSQL)") in lines
    kea_line = lines.index("Leaseflow product / Kea: new leases 0.06 ×, renewals 0.08 × Kea")
    assert lines[kea_line + 1].startswith("Leaseflow product / Kea (PostgreSQL)")


def test_kea_on_postgresql_alone_is_not_taken_for_the_memfile_reference() -> None:
    text = render([
        ServerResult(server=KeaPostgresTarget.name, new_leases_per_s=700.0, new_drop_ratio=0.0),
        ServerResult(server="Leaseflow (in-memory backend)", new_leases_per_s=2000.0,
                     new_drop_ratio=0.0),
        ServerResult(server=FAST, new_leases_per_s=350.0, new_drop_ratio=0.0),
    ], QUICK, 100.0)
    assert "Leaseflow product / Kea (PostgreSQL): new leases 0.50 ×" in text.splitlines()
    assert "/ Kea:" not in text  # no memfile Kea ran: no ratio to it


def test_a_failed_kea_pg_shows_its_error_and_no_ratio() -> None:
    text = render([
        ServerResult(server=KeaPostgresTarget.name, error="kea-admin db-init pgsql failed"),
        ServerResult(server=FAST, new_leases_per_s=350.0, new_drop_ratio=0.0),
    ], QUICK, 100.0)
    assert f"{KeaPostgresTarget.name}: kea-admin db-init pgsql failed" in text
    assert "(PostgreSQL):" not in text
