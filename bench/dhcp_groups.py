"""The fast DORA path's database work alone: CPU per DORA by group size, in-process.

`bench dhcp` measures the whole server through perfdhcp; this isolates what one group of
exchanges costs the server process (no sockets, no packet work): a group of N DISCOVERs
(one offers transaction) then their N REQUESTs (one bindings transaction, with each
lease's history, ledger entries and stamped `dhcp_lease` instance), and a group of N
renewals. Each size runs three rounds; the best round is shown (the VM is shared). CPU is
this process's (`time.process_time`); wall includes the database's share of the two cores.

Run: `leaseflow bench dhcp_groups [--sizes 1,8,32,128] [--database-url URL]` (default: a
database `leaseflow_bench_groups` beside LEASEFLOW_TEST_DATABASE_URL's, recreated per run;
a `sqlite:///...` URL measures the embedded default).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

DATABASE = "leaseflow_bench_groups"
CIDR, POOL = "10.77.0.0/16", "10.77.1.0-10.77.255.254"
DEFAULT_BASE = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def fresh_database(base: str) -> str:
    """A new empty database beside `base`'s (PostgreSQL), or a new SQLite file."""
    if base.startswith("sqlite"):
        return f"sqlite:///{Path(tempfile.mkdtemp(prefix='lf-groups-')) / 'leaseflow.db'}"
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{DATABASE}"'))
    engine.dispose()
    return make_url(base).set(database=DATABASE).render_as_string(hide_password=False)


def fresh_database_or_say(bench: str, base: str) -> str | None:
    """`fresh_database(base)`, or None after one line on stderr saying it is unreachable."""
    try:
        return fresh_database(base)
    except Exception as exc:  # noqa: BLE001 - one line on stderr, as for every bench
        print(f"bench {bench}: database at {make_url(base).render_as_string()}"
              f" not reachable: {exc}", file=sys.stderr)
        return None


def make_app(url: str) -> Any:
    from flask_migrate import upgrade

    from app import create_app
    from app.config import Settings
    from app.services import setup, subnets
    from app.services.uow import unit_of_work

    settings = Settings.from_env(environ={}, database_url=url, broker_url="memory://",
                                 api_token="bench", admin_password="bench", secret_key="bench")
    app = create_app(settings=settings)
    with app.app_context():
        upgrade()
        setup.bootstrap()
        with unit_of_work():
            subnets.create({"cidr": CIDR, "pools": [POOL]}, actor="bench")
    return app


class Waits:
    """The round trips to the server while counting. psycopg's: one wait per statement
    (the COMMIT too), a transaction's BEGIN sent within its first statement's wait, so a
    BEGIN is not counted on its own there. libpq's (`plain_sql.run`): one per call, the
    BEGIN and a statement's first PREPARE included. PostgreSQL only."""

    def __init__(self) -> None:
        self.count = 0
        self.counting = False

    def install(self) -> None:
        import psycopg

        wait = psycopg.Connection.wait

        def counted(connection: Any, *args: Any, **kwargs: Any) -> Any:
            if self.counting:
                self.count += 1
            return wait(connection, *args, **kwargs)

        psycopg.Connection.wait = counted  # type: ignore[method-assign, assignment]

        from app.services import plain_sql

        check = plain_sql._check

        def checked(result: Any, *args: Any) -> Any:  # one per libpq round trip
            if self.counting:
                self.count += 1
            return check(result, *args)

        plain_sql._check = checked  # type: ignore[assignment]


class Driver:
    """Groups of exchanges for new clients, straight into `dora.run`."""

    def __init__(self, app: Any) -> None:
        from app.ipam.offers import OfferBook

        self.app, self.book, self.next = app, OfferBook(), 0
        self.waits = Waits()  # the bindings group's, when installed
        self.bind_waits = 0  # in the last bindings group

    def _run(self, asks: Sequence[Any]) -> list[Any]:
        from app.services import dora
        from app.services.uow import unit_of_work

        with self.app.app_context(), unit_of_work():
            return dora.run(asks, book=self.book, actor="bench")

    def dora(self, size: int) -> list[tuple[str, str]]:
        """`size` new clients through DISCOVER and REQUEST: their (client id, address)."""
        from app.services import dora

        clients = [f"01:02:{(n >> 16) & 255:02x}:{(n >> 8) & 255:02x}:{n & 255:02x}"
                   for n in range(self.next, self.next + size)]
        self.next += size
        offers = self._run([dora.Discover(cidr=CIDR, client_id=c, hwaddr=c[3:])
                            for c in clients])
        self.waits.count, self.waits.counting = 0, True
        try:
            acks = self._run([dora.Request(cidr=CIDR, client_id=c, address=o.address, hwaddr=c[3:])
                              for c, o in zip(clients, offers, strict=True)])
        finally:
            self.waits.counting = False
        self.bind_waits = self.waits.count
        if not all(a is not None and getattr(a, "state", "") == "bound" for a in acks):
            raise RuntimeError(f"a REQUEST was not bound: {acks[:3]}")
        return [(c, a.address) for c, a in zip(clients, acks, strict=True)]

    def renew(self, bound: Sequence[tuple[str, str]]) -> None:
        from app.services import dora

        out = self._run([dora.Renew(cidr=CIDR, client_id=c, address=a, hwaddr=c[3:])
                         for c, a in bound])
        if any(o is None for o in out):
            raise RuntimeError("a renewal was not answered")


def best(rounds: int, reps: int, work: Any) -> tuple[float, float]:
    """(CPU, wall) seconds per repetition of `work`, of the best round."""
    figures = []
    for _ in range(rounds):
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(reps):
            work()
        figures.append(((time.process_time() - cpu) / reps,
                        (time.perf_counter() - wall) / reps))
    return min(figures)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="leaseflow bench dhcp_groups",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,8,32,128",
                        help="group sizes, comma separated (default 1,8,32,128)")
    parser.add_argument("--database-url", default=os.environ.get(
        "LEASEFLOW_TEST_DATABASE_URL", DEFAULT_BASE))
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    url = fresh_database_or_say("dhcp_groups", args.database_url)
    if url is None:
        return 1
    driver = Driver(make_app(url))
    dialect = make_url(url).get_backend_name()
    if dialect == "postgresql":
        driver.waits.install()
    driver.dora(8)  # warm: the engine snapshot, statement caches
    print(f"fast DORA path, in-process, {dialect}, best of 3 rounds per size")
    print(f"{'group':>6} {'DORA CPU us':>12} {'DORA wall us':>13} {'renewal CPU us':>15} "
          f"{'binding waits':>14}")
    for size in sizes:
        reps = max(3, 200 // size)
        cpu, wall = best(3, reps, lambda size=size: driver.dora(size))
        bound = driver.dora(size)
        renew_cpu, _ = best(3, max(3, 100 // size), lambda bound=bound: driver.renew(bound))
        waits = str(driver.bind_waits) if dialect == "postgresql" else "-"
        print(f"{size:>6} {cpu / size * 1e6:>12,.0f} {wall / size * 1e6:>13,.0f} "
              f"{renew_cpu / size * 1e6:>15,.0f} {waits:>14}")
    print("CPU: this process per exchange (offers + bindings transactions for a DORA, one "
          "renewal group for renewals); wall includes waiting for the database;\n"
          "binding waits: the bindings group's round trips to PostgreSQL (statements and "
          "COMMIT; the BEGIN rides with the first).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
