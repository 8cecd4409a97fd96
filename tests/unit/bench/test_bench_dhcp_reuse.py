"""Lease reuse in the DHCP benchmark: the product's `LEASEFLOW_DHCP_REUSE` and the Kea row
with the same lease caching (`cache-threshold`) as its like-for-like peer. Nothing here
starts a process or opens a socket."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_bench_dhcp_kea_pg import NAMESPACE, offline_kea  # noqa: F401 - the fixture

from bench.dhcp import (
    QUICK,
    KeaCachingTarget,
    KeaTarget,
    ServerResult,
    build_parser,
    caching_name,
    make_target,
    render,
    selected_servers,
)
from bench.peers import kea as kea_peer
from bench.peers.leaseflow_dhcp import ProductTarget, product_name


def test_reuse_sets_the_products_setting_and_the_caching_kea_rows_threshold(
        tmp_path: Path) -> None:
    args = build_parser().parse_args(["--reuse", "0.5"])
    assert args.reuse == 0.5 and "kea-cache" in selected_servers(args.only, args.reuse)
    kea = make_target("kea-cache", NAMESPACE, tmp_path, reuse=0.5)
    assert isinstance(kea, KeaCachingTarget) and isinstance(kea, KeaTarget)
    assert kea.name == "Kea 2.2 (memfile, 1 thread, cache-threshold 0.5)"
    product = make_target("product", NAMESPACE, tmp_path, reuse=0.5)
    assert isinstance(product, ProductTarget)
    assert product.name == product_name("fast", 1, 0.5) and "reuse 0.5" in product.name
    assert product._env()["LEASEFLOW_DHCP_REUSE"] == "0.5"


def test_reuse_off_drops_the_caching_kea_row_unless_asked_for() -> None:
    off = build_parser().parse_args(["--reuse", "0"])
    assert selected_servers(off.only, off.reuse) == ["kea", "kea-pg", "leaseflow", "product"]
    assert product_name("fast", 2, 0.0) == "Leaseflow product (fast DORA, PostgreSQL, 2 processes)"
    assert product_name("process", 1, 0.25) == "Leaseflow product (process DORA, PostgreSQL)"


@pytest.mark.parametrize("argv", [["--reuse", "1"], ["--reuse", "-0.1"], ["--reuse", "x"]])
def test_a_threshold_outside_0_to_1_is_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)


def test_the_caching_kea_gets_its_cache_threshold_and_the_memfile_kea_none(
        tmp_path: Path, offline_kea: list[list[str]],  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kea_peer.subprocess, "run",
                        lambda *a, **k: kea_peer.subprocess.CompletedProcess(a, 0, "", ""))
    target = KeaCachingTarget(NAMESPACE, tmp_path, 0.25)
    target.start()
    written = json.loads((tmp_path / "kea-cache" / "kea-dhcp4.json").read_text())["Dhcp4"]
    assert written["cache-threshold"] == 0.25 and written["lease-database"]["type"] == "memfile"
    target.stop()
    plain = KeaTarget(NAMESPACE, tmp_path)
    plain.start()
    assert "cache-threshold" not in json.loads(
        (tmp_path / "kea" / "kea-dhcp4.json").read_text())["Dhcp4"]
    plain.stop()


def test_the_product_is_compared_with_kea_with_and_without_lease_caching() -> None:
    product = product_name("fast", 2, 0.25)
    text = render([
        ServerResult(server=KeaTarget.name, new_leases_per_s=6000.0, new_drop_ratio=0.0,
                     renewals_per_s=4000.0),
        ServerResult(server=caching_name(0.25), new_leases_per_s=6000.0, new_drop_ratio=0.0,
                     renewals_per_s=5000.0),
        ServerResult(server=product, new_leases_per_s=3000.0, new_drop_ratio=0.0,
                     renewals_per_s=5000.0),
    ], QUICK, 100.0)
    lines = text.splitlines()
    assert "Leaseflow product / Kea: new leases 0.50 ×, renewals 1.25 × Kea" in lines
    assert ("Leaseflow product / Kea (lease caching): new leases 0.50 ×, "
            "renewals 1.00 × Kea (lease caching)") in lines
