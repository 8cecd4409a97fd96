"""Which address to try next: the allocator's decisions, without I/O.

The database has the last word (a partial unique index admits one holder per address); this
module only proposes candidates in an order that keeps concurrent allocators from all
fighting for the lowest free address: the client's current or previous address first, then
the requested one, then random probes, then a random pick from the exact free list.

Several server processes sharing a pool (`leaseflow dhcp --processes N`) each hold their
offers in memory, unseen by the others: each probes its own `Stripe` of the pool first, so
two of them rarely offer one address (the database would refuse the second REQUEST, and
that client would start over).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass

from .addresses import PoolRange


@dataclass(frozen=True, kw_only=True)
class Pool:
    ranges: tuple[PoolRange, ...]
    excluded: frozenset[int] = frozenset()

    @property
    def size(self) -> int:
        return sum(r.size for r in self.ranges) - sum(
            1 for a in self.excluded if any(a in r for r in self.ranges))

    def __contains__(self, address: object) -> bool:
        return (isinstance(address, int) and address not in self.excluded
                and any(address in r for r in self.ranges))

    def nth(self, index: int) -> int:
        for r in self.ranges:
            if index < r.size:
                return r.first + index
            index -= r.size
        raise IndexError(index)

    def addresses(self) -> Iterator[int]:
        for r in self.ranges:
            for address in range(r.first, r.last + 1):
                if address not in self.excluded:
                    yield address


@dataclass(frozen=True, slots=True)
class Stripe:
    """The addresses `a` with `a % count == index`: one process's share of every pool."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"stripe {self.index} of {self.count}")

    def __contains__(self, address: int) -> bool:
        return address % self.count == self.index


def preferred(pool: Pool, *, current: int | None, previous: int | None,
              requested: int | None) -> list[int]:
    """Addresses the client should get if free, best first (RFC 2131 §4.3.1 order)."""
    out: list[int] = []
    for candidate in (current, previous, requested):
        if candidate is not None and candidate in pool and candidate not in out:
            out.append(candidate)
    return out


def random_probes(pool: Pool, count: int, rng: random.Random,
                  stripe: Stripe | None = None) -> list[int]:
    """Up to `count` distinct random pool addresses (the cheap first try under contention),
    all in `stripe` if one is given."""
    return list(itertools.islice(iter_probes(pool, count, rng, stripe), count))


def iter_probes(pool: Pool, count: int, rng: random.Random,
                stripe: Stripe | None = None) -> Iterator[int]:
    """`random_probes`, drawn one at a time as the caller asks: a caller that takes the
    first free one (nearly always the first) draws no more."""
    total = sum(r.size for r in pool.ranges)
    if total == 0:
        return
    seen: set[int] = set()
    for _ in range(count * 2 * (stripe.count if stripe is not None else 1)):
        address = pool.nth(rng.randrange(total))
        if address in pool.excluded or address in seen \
                or (stripe is not None and address not in stripe):
            continue
        seen.add(address)
        yield address
        if len(seen) == count:
            return


def free_candidates(pool: Pool, taken: Collection[int], count: int,
                    rng: random.Random, stripe: Stripe | None = None) -> list[int]:
    """Random addresses from the exact free list, those of `stripe` while it has any;
    empty means the pool is exhausted."""
    free: Sequence[int] = [a for a in pool.addresses() if a not in taken]
    if stripe is not None:
        own = [a for a in free if a in stripe]
        free = own or free
    if len(free) <= count:
        shuffled = list(free)
        rng.shuffle(shuffled)
        return shuffled
    return rng.sample(free, count)
