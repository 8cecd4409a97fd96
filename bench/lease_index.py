"""The fast DHCP path's lease index at start: how long a server takes to load N leases and
what the index holds in memory per lease.

A `leaseflow dhcp --dora fast` process loads every lease (`app.services.lease_index.load`)
before it answers. This fills a fresh database with N lease rows (three in four bound, the
rest released, as a lease table that has lived a while), then loads them twice: once timed,
once under `tracemalloc` for the index's size and the load's peak.

Run: `leaseflow bench lease_index [--leases 1000000] [--database-url URL]` (default: a
database `leaseflow_bench_groups` beside LEASEFLOW_TEST_DATABASE_URL's, recreated per run).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import tracemalloc
from collections.abc import Sequence

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.dhcp_groups import DEFAULT_BASE, fresh_database_or_say, make_app

CIDR, POOL = "10.96.0.0/12", "10.96.0.10-10.111.255.250"  # room for a few million leases
# One statement: N leases on the bench subnet, each its own client and address.
_FILL = text(
    "INSERT INTO leases (subnet_id, address, state, client_id, created_at, updated_at,"
    " expires_at) SELECT s.id, :first + g, CASE WHEN g % 4 = 0 THEN 'released' ELSE 'bound'"
    " END, 'client-' || g, now(), now(), now() + interval '1 hour'"
    " FROM generate_series(0, :n - 1) AS g, subnets AS s WHERE s.cidr = :cidr")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="leaseflow bench lease_index",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--leases", type=int, default=1_000_000,
                        help="lease rows to load (default 1,000,000; at most the pool's)")
    parser.add_argument("--database-url", default=os.environ.get(
        "LEASEFLOW_TEST_DATABASE_URL", DEFAULT_BASE))
    args = parser.parse_args(argv)
    from app.ipam.addresses import parse_address

    first = parse_address(POOL.split("-")[0], field="pool")
    size = parse_address(POOL.split("-")[1], field="pool") - first + 1
    if not 0 < args.leases <= size:
        print(f"bench lease_index: --leases must be 1..{size:,} (the bench pool)",
              file=sys.stderr)
        return 2
    url = fresh_database_or_say("lease_index", args.database_url)
    if url is None:
        return 1
    app = make_app(url)
    from app.services import subnets
    from app.services.uow import unit_of_work

    with app.app_context(), unit_of_work():
        subnets.create({"cidr": CIDR, "pools": [POOL]}, actor="bench")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(_FILL, {"first": first, "n": args.leases, "cidr": CIDR})
    engine.dispose()
    from app.services import lease_index

    with app.app_context():
        began = time.perf_counter()
        lease_index.load()  # timed, then dropped
        seconds = time.perf_counter() - began
        gc.collect()
        tracemalloc.start()
        index = lease_index.load()  # measured while it is alive
        kept, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        holding = len(index)
    dialect = make_url(url).get_backend_name()
    print(f"lease index at start, {dialect}: {args.leases:,} leases ({holding:,} holding)")
    print(f"load {seconds:.2f} s ({args.leases / seconds:,.0f} leases/s); index "
          f"{kept / args.leases:,.0f} bytes per lease ({kept / 2**20:,.0f} MiB); "
          f"peak while loading {peak / 2**20:,.0f} MiB (tracemalloc)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
