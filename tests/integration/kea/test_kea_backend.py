"""The Kea backend against a real Kea 2.2 and its control agent."""

from __future__ import annotations

import pytest

from app.dhcp.kea import (
    KeaAuthError,
    KeaClient,
    KeaCommandError,
    KeaUnavailable,
    LeaseConflict,
    OurLease,
)
from bench.peers.kea import KeaPeer, free_port
from bench.peers.netns import Namespace
from bench.peers.perfdhcp import PerfdhcpError, find_perfdhcp

pytestmark = pytest.mark.integration

MAC = "aa:bb:cc:dd:ee:01"
OTHER = "aa:bb:cc:dd:ee:02"


def test_commit_then_get(kea_client: KeaClient) -> None:
    kea_client.add_lease("10.77.0.120", MAC, client_id="01:" + MAC, subnet_id=1,
                         valid_lft=600, hostname="web1")
    lease = kea_client.get_lease("10.77.0.120")
    assert lease is not None
    assert (lease.hwaddr, lease.client_id, lease.subnet_id, lease.valid_lft, lease.hostname) == (
        MAC, "01:" + MAC, 1, 600, "web1")


def test_get_of_a_free_address_is_none(kea_client: KeaClient) -> None:
    assert kea_client.get_lease("10.77.0.150") is None


def test_a_taken_address_is_a_conflict(kea_client: KeaClient) -> None:
    kea_client.add_lease("10.77.0.121", MAC)
    with pytest.raises(LeaseConflict) as caught:
        kea_client.add_lease("10.77.0.121", OTHER)
    assert caught.value.ip == "10.77.0.121"
    held = kea_client.get_lease("10.77.0.121")
    assert held is not None and held.hwaddr == MAC


def test_a_repeated_commit_is_not_a_conflict_but_a_foreign_one_is(kea_client: KeaClient) -> None:
    assert kea_client.commit_lease("10.77.0.122", MAC) is None
    again = kea_client.commit_lease("10.77.0.122", MAC)
    assert again is not None and again.hwaddr == MAC
    with pytest.raises(LeaseConflict) as caught:
        kea_client.commit_lease("10.77.0.122", OTHER)
    assert caught.value.holder is not None and caught.value.holder.hwaddr == MAC


def test_release_is_idempotent(kea_client: KeaClient) -> None:
    kea_client.add_lease("10.77.0.123", MAC)
    assert kea_client.delete_lease("10.77.0.123") is True
    assert kea_client.delete_lease("10.77.0.123") is False
    assert kea_client.get_lease("10.77.0.123") is None


def test_a_lease_named_by_client_id_only(kea_client: KeaClient) -> None:
    kea_client.add_lease("10.77.0.124", None, client_id="ff:00:00:00:01")
    lease = kea_client.get_lease("10.77.0.124")
    assert lease is not None and lease.client_id == "ff:00:00:00:01"


def test_an_address_outside_every_subnet_is_refused(kea_client: KeaClient) -> None:
    with pytest.raises(KeaCommandError) as caught:
        kea_client.add_lease("10.99.0.5", MAC)
    assert not isinstance(caught.value, LeaseConflict)


def test_listing_by_subnet(kea_client: KeaClient) -> None:
    kea_client.add_lease("10.77.0.125", MAC)
    kea_client.add_lease("10.77.0.126", OTHER)
    assert sorted(lease.ip for lease in kea_client.list_leases(1)) == ["10.77.0.125",
                                                                       "10.77.0.126"]
    assert kea_client.list_leases(42) == []


@pytest.mark.parametrize(
    ("credentials", "accepted"),
    [
        (("leaseflow", "kea-test-password"), True),
        (("leaseflow", "wrong"), False),
        (("someone", "kea-test-password"), False),
        ((None, None), False),
    ],
)
def test_basic_auth(kea: KeaPeer, credentials: tuple[str | None, str | None],
                    accepted: bool) -> None:
    client = KeaClient.from_url(kea.url, *credentials)
    if accepted:
        client.ping()
    else:
        with pytest.raises(KeaAuthError):
            client.ping()


def test_reconcile_finds_and_fixes_every_difference(kea_client: KeaClient) -> None:
    kea_client.add_lease("10.77.0.130", MAC)                   # agreed
    kea_client.add_lease("10.77.0.131", OTHER)                 # ours says someone else
    kea_client.add_lease("10.77.0.132", "aa:bb:cc:dd:ee:03")   # Kea only
    ours = [
        ("10.77.0.130", "01:" + MAC),
        ("10.77.0.131", "aa:bb:cc:dd:ee:04"),
        OurLease.of("10.77.0.133", "aa:bb:cc:dd:ee:05", valid_lft=900),  # ours only
    ]
    report = kea_client.reconcile(ours, subnet_id=1)
    assert report.summary() == {"only_in_kea": ["10.77.0.132"], "only_in_ours": ["10.77.0.133"],
                                "mismatched": ["10.77.0.131"]}

    result = kea_client.apply(report)
    assert (result.deleted, result.updated, result.added, result.failed) == (
        ("10.77.0.132",), ("10.77.0.131",), ("10.77.0.133",), ())
    assert kea_client.reconcile(ours, subnet_id=1).clean
    fixed = kea_client.get_lease("10.77.0.131")
    assert fixed is not None and fixed.hwaddr == "aa:bb:cc:dd:ee:04"
    added = kea_client.get_lease("10.77.0.133")
    assert added is not None and added.valid_lft == 900


def test_no_agent_listening_is_transient() -> None:
    client = KeaClient.from_url(f"http://127.0.0.1:{free_port()}/", timeout=1.0)
    with pytest.raises(KeaUnavailable):
        client.get_lease("10.77.0.120")


def test_kea_dhcp4_down_behind_the_agent_is_transient(kea: KeaPeer) -> None:
    client = kea.client()
    client.add_lease("10.77.0.140", MAC)
    kea.stop_dhcp4()
    try:
        with pytest.raises(KeaUnavailable):
            client.get_lease("10.77.0.140")
    finally:
        kea.start_dhcp4(fresh=False)
    # memfile persisted the lease across the restart.
    lease = client.get_lease("10.77.0.140")
    assert lease is not None and lease.hwaddr == MAC
    client.delete_lease("10.77.0.140")


def test_a_text_client_id_round_trips_and_reconciles(kea_client: KeaClient) -> None:
    kea_client.commit_lease("10.77.0.127", None, client_id="pod-web-1", hostname="pod-web-1")
    lease = kea_client.get_lease("10.77.0.127")
    assert lease is not None and lease.client_id is not None
    assert bytes.fromhex(lease.client_id.replace(":", "")) == b"\x00pod-web-1"
    assert kea_client.reconcile([("10.77.0.127", "pod-web-1")], subnet_id=1).clean
    # A retried commit of the same pod is not a conflict.
    assert kea_client.commit_lease("10.77.0.127", None, client_id="pod-web-1") is not None


PERFDHCP_MAC = "00:0c:01:02:03:04"  # perfdhcp's default base MAC: its first client


def dora(client: Namespace) -> None:
    """A second of DORAs by perfdhcp's first client, relayed from the client namespace.

    One client (-R 1) keeps one lease however many exchanges run. `-n` is no help here: it
    stops perfdhcp before the REQUEST is answered, and without `-r` it floods.
    """
    try:
        binary = find_perfdhcp()
    except PerfdhcpError as exc:
        pytest.fail(str(exc))
    done = client.run([binary, "-4", "-r", "10", "-p", "1", "-R", "1",
                       "-l", client.ip, "10.77.0.1"], timeout=30)
    # 3 = something was dropped: possible on a loaded machine, and the lease check decides.
    assert done.returncode in (0, 3), done.stdout + done.stderr


def test_kea_serves_the_wire_around_leases_we_committed(kea_client: KeaClient,
                                                        dhcp_client: Namespace) -> None:
    # The first pool address is Leaseflow's: Kea must not hand it to a wire client.
    kea_client.add_lease("10.77.0.100", MAC)
    dora(dhcp_client)
    leases = {lease.ip: lease.hwaddr for lease in kea_client.list_leases(1)}
    assert leases.pop("10.77.0.100") == MAC
    assert list(leases.values()) == [PERFDHCP_MAC]

    # A lease Kea granted on its own is a stray to Leaseflow; apply removes it.
    report = kea_client.reconcile([("10.77.0.100", MAC)], subnet_id=1)
    assert report.summary()["only_in_kea"] == list(leases)
    assert kea_client.apply(report).deleted == tuple(leases)
    assert [lease.ip for lease in kea_client.list_leases(1)] == ["10.77.0.100"]
