"""Benchmark: lease changes per second on the chain, unbatched vs micro-batched, and the
time to verify a 100k-row ledger.

    python -m bench.chain [--chains embedded,anvil] [--batched 20000] [--unbatched 300]

Unbatched sends one allocation per transaction; batched pushes many concurrent submitters
through `ChainBatcher`, so the figures show what batching buys (transactions per second vs
changes per transaction). Every allocation goes to a distinct address, so each counted
change is one allocation the contract checked and accepted. Figures only: nothing here is
asserted by the tests.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from app.chain import AllocateItem, holder_id, subnet_id
from app.chain.batcher import BatchReport, ChainBatcher
from app.chain.client import ChainClient, Registry
from app.ledger import Anchor, make_row, merkle_root, verify


@dataclass(frozen=True, kw_only=True)
class ChainFigure:
    chain: str
    mode: str
    changes: int
    transactions: int
    seconds: float

    @property
    def changes_per_tx(self) -> float:
        return self.changes / max(1, self.transactions)

    @property
    def tx_per_second(self) -> float:
        return self.transactions / self.seconds

    @property
    def changes_per_second(self) -> float:
        return self.changes / self.seconds


def _items(count: int, tag: str) -> list[AllocateItem]:
    subnet = subnet_id(f"bench-{tag}")
    return [
        AllocateItem(subnet=subnet, ip=0x0A000000 + n, holder=holder_id(f"{tag}-{n}"))
        for n in range(count)
    ]


def bench_unbatched(chain: str, registry: Registry, count: int) -> ChainFigure:
    items = _items(count, f"{chain}-single-{time.time_ns()}")
    started = time.perf_counter()
    accepted = sum(registry.allocate(item).accepted for item in items)
    seconds = time.perf_counter() - started
    if accepted != count:
        raise SystemExit(f"{chain}: only {accepted} of {count} allocations accepted")
    return ChainFigure(chain=chain, mode="unbatched", changes=count, transactions=count,
                       seconds=seconds)


def bench_batched(
    chain: str, registry: Registry, count: int, *, submitters: int, max_items: int,
    max_delay: float, max_in_flight: int,
) -> ChainFigure:
    items = _items(count, f"{chain}-batched-{time.time_ns()}")
    reports: list[BatchReport] = []
    lock = threading.Lock()

    def record(report: BatchReport) -> None:
        with lock:
            reports.append(report)

    batcher = ChainBatcher(registry, max_items=max_items, max_delay=max_delay,
                           max_in_flight=max_in_flight, on_batch=record)
    share = [items[k::submitters] for k in range(submitters)]
    accepted = [0] * submitters

    def submitter(k: int) -> None:
        futures = [batcher.submit(item) for item in share[k]]
        accepted[k] = sum(f.result(timeout=600).accepted for f in futures)

    threads = [threading.Thread(target=submitter, args=(k,)) for k in range(submitters)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    batcher.close()
    if sum(accepted) != count:
        raise SystemExit(f"{chain}: only {sum(accepted)} of {count} allocations accepted")
    transactions = len({h for r in reports for h in r.tx_hashes})
    return ChainFigure(chain=chain, mode="batched", changes=count,
                       transactions=transactions, seconds=seconds)


def bench_ledger(rows: int, anchor_every: int) -> tuple[float, int]:
    """Seconds to verify `rows` rows with an anchor every `anchor_every` rows."""
    ledger = []
    previous = None
    for n in range(rows):
        previous = make_row(previous, {"op": "bind", "ip": f"10.{n >> 16 & 255}.{n >> 8 & 255}."
                                       f"{n & 255}", "client_id": f"client-{n}", "seq": n})
        ledger.append(previous)
    anchors = [
        Anchor(seq=end, root=merkle_root([r.hash for r in ledger[end - anchor_every:end]]))
        for end in range(anchor_every, rows + 1, anchor_every)
    ]
    started = time.perf_counter()
    report = verify(iter(ledger), anchors)
    seconds = time.perf_counter() - started
    if not report.ok:
        raise SystemExit(f"ledger verify failed on an intact ledger: {report.message}")
    return seconds, len(anchors)


def _print_table(figures: Sequence[ChainFigure]) -> None:
    header = (f"{'chain':<10}{'mode':<11}{'changes':>9}{'tx':>7}{'changes/tx':>12}"
              f"{'tx/s':>9}{'changes/s':>11}{'seconds':>9}")
    print(header)
    print("-" * len(header))
    for f in figures:
        print(f"{f.chain:<10}{f.mode:<11}{f.changes:>9}{f.transactions:>7}"
              f"{f.changes_per_tx:>12.1f}{f.tx_per_second:>9.1f}{f.changes_per_second:>11.0f}"
              f"{f.seconds:>9.2f}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench.chain", description=__doc__.split("\n")[0])
    parser.add_argument("--chains", default="embedded,anvil",
                        help="comma-separated: embedded, anvil, or an http(s):// node URL")
    parser.add_argument("--unbatched", type=int, default=0,
                        help="allocations sent one per transaction (default 100 embedded, "
                             "300 on a node)")
    parser.add_argument("--batched", type=int, default=0,
                        help="allocations through the batcher (default 3000 embedded, "
                             "20000 on a node)")
    parser.add_argument("--submitters", type=int, default=16,
                        help="concurrent submitting threads")
    parser.add_argument("--max-items", type=int, default=256, help="batch size bound")
    parser.add_argument("--max-delay", type=float, default=0.05,
                        help="seconds a batch waits to fill")
    parser.add_argument("--in-flight", type=int, default=2,
                        help="transactions in flight at once on a node")
    parser.add_argument("--ledger-rows", type=int, default=100_000)
    parser.add_argument("--anchor-every", type=int, default=1_000)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    print(f"Leaseflow chain bench: {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, {platform.machine()}")
    figures: list[ChainFigure] = []
    for chain in [c.strip() for c in args.chains.split(",") if c.strip()]:
        node = None
        if chain == "embedded":
            client = ChainClient.embedded_fresh()
        elif chain == "anvil":
            from bench.peers.anvil import AnvilUnavailable, start_anvil

            try:
                node = start_anvil()
            except AnvilUnavailable as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            client = ChainClient.from_url(node.url, chain_id=node.chain_id)
        else:
            client = ChainClient.from_url(chain)
        try:
            registry = client.registry()
            embedded = chain == "embedded"
            unbatched = args.unbatched or (100 if embedded else 300)
            batched = args.batched or (3000 if embedded else 20_000)
            figures.append(bench_unbatched(chain, registry, unbatched))
            figures.append(bench_batched(
                chain, registry, batched, submitters=args.submitters,
                max_items=min(args.max_items, registry.max_batch), max_delay=args.max_delay,
                max_in_flight=1 if embedded else args.in_flight,
            ))
        finally:
            if node is not None:
                from bench.peers.anvil import stop_anvil

                stop_anvil(node)
    _print_table(figures)
    if args.ledger_rows:
        seconds, anchors = bench_ledger(args.ledger_rows, args.anchor_every)
        print(f"\nledger verify: {args.ledger_rows:,} rows, {anchors} anchors: "
              f"{seconds:.2f} s ({args.ledger_rows / seconds:,.0f} rows/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
