from __future__ import annotations

import ipaddress
import random

import pytest

from app.ipam.addresses import (
    InvalidSubnet,
    PoolRange,
    SubnetOverlap,
    check_no_overlap,
    check_pools_disjoint,
    ip_to_int,
    parse_network,
    parse_pool,
)
from app.ipam.allocator import (
    Pool,
    Stripe,
    free_candidates,
    iter_probes,
    preferred,
    random_probes,
)

NET = ipaddress.IPv4Network("10.0.0.0/24")


def pool(text: str = "10.0.0.10-10.0.0.19", excluded: tuple[str, ...] = ()) -> Pool:
    return Pool(ranges=(parse_pool(text, NET),),
                excluded=frozenset(ip_to_int(a) for a in excluded))


@pytest.mark.parametrize(("cidr", "ok"), [
    ("10.0.0.0/24", True), ("10.0.0.1/24", False), ("300.0.0.0/8", False), ("x", False),
    ("10.0.0.0/33", False), ("", False),
])
def test_parse_network(cidr: str, ok: bool) -> None:
    if ok:
        assert str(parse_network(cidr)) == cidr
    else:
        with pytest.raises(InvalidSubnet) as err:
            parse_network(cidr)
        assert err.value.field == "cidr"


@pytest.mark.parametrize("text", ["10.0.1.1-10.0.1.5", "10.0.0.0-10.0.0.5",
                                  "10.0.0.250-10.0.0.255", "10.0.0.9-10.0.0.5", "10.0.0.5",
                                  "a-b"])
def test_pool_outside_or_malformed_is_refused(text: str) -> None:
    with pytest.raises(InvalidSubnet) as err:
        parse_pool(text, NET)
    assert err.value.field == "pool"


def test_overlaps_are_refused() -> None:
    with pytest.raises(SubnetOverlap):
        check_no_overlap(parse_network("10.0.0.0/25"), [("a", NET)])
    with pytest.raises(InvalidSubnet):
        check_pools_disjoint([PoolRange(first=1, last=10), PoolRange(first=10, last=12)])


def test_preferred_order_current_previous_requested_and_only_in_pool() -> None:
    p = pool(excluded=("10.0.0.12",))
    cur, prev, req = ip_to_int("10.0.0.11"), ip_to_int("10.0.0.15"), ip_to_int("10.0.0.17")
    assert preferred(p, current=cur, previous=prev, requested=req) == [cur, prev, req]
    outside, excluded = ip_to_int("10.0.0.100"), ip_to_int("10.0.0.12")
    assert preferred(p, current=None, previous=excluded, requested=outside) == []


def test_random_probes_spread_over_the_pool() -> None:
    p = Pool(ranges=(parse_pool("10.0.0.1-10.0.0.254", NET),))
    rng = random.Random(1)
    firsts = {random_probes(p, 1, rng)[0] for _ in range(50)}
    assert len(firsts) > 20  # not all allocators start at the lowest address
    probes = random_probes(p, 8, rng)
    assert len(probes) == len(set(probes)) == 8 and all(a in p for a in probes)


def test_probes_drawn_one_at_a_time_are_the_same_and_cost_one_draw_each() -> None:
    p = Pool(ranges=(parse_pool("10.0.0.1-10.0.0.254", NET),))
    assert list(iter_probes(p, 8, random.Random(3))) == random_probes(p, 8, random.Random(3))

    class Counting(random.Random):
        draws = 0

        def randrange(self, *args: int) -> int:  # type: ignore[override]
            self.draws += 1
            return super().randrange(*args)

    rng = Counting(3)
    first = next(iter_probes(p, 8, rng))
    assert first in p and rng.draws == 1  # the first free probe: no seven more drawn


def test_free_candidates_exact_and_exhausted() -> None:
    p = pool(excluded=("10.0.0.10",))
    all_but_one = {a for a in p.addresses()} - {ip_to_int("10.0.0.13")}
    assert free_candidates(p, all_but_one, 4, random.Random(0)) == [ip_to_int("10.0.0.13")]
    assert free_candidates(p, set(p.addresses()), 4, random.Random(0)) == []
    assert p.size == 9


def test_probes_of_a_stripe_stay_in_it() -> None:
    p = Pool(ranges=(parse_pool("10.0.0.1-10.0.0.254", NET),))
    rng = random.Random(2)
    for index in range(3):
        stripe = Stripe(index, 3)
        probes = random_probes(p, 8, rng, stripe)
        assert len(probes) == len(set(probes)) == 8
        assert all(a in p and a % 3 == index for a in probes)


def test_free_candidates_take_the_stripe_first_then_any_free_address() -> None:
    p = pool()  # .10-.19
    odd = Stripe(1, 2)
    assert all(a % 2 == 1 for a in free_candidates(p, set(), 8, random.Random(0), odd))
    all_odd = {a for a in p.addresses() if a % 2 == 1}
    # The stripe spent: the other process's share rather than no lease at all.
    rest = free_candidates(p, all_odd, 8, random.Random(0), odd)
    assert sorted(rest) == sorted(set(p.addresses()) - all_odd)


@pytest.mark.parametrize(("index", "count"), [(0, 0), (2, 2), (-1, 3)])
def test_a_stripe_outside_its_count_is_refused(index: int, count: int) -> None:
    with pytest.raises(ValueError):
        Stripe(index, count)
