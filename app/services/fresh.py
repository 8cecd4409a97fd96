"""Values a hot path reads from the database at most once a second per process.

The DHCP fast path looks up the same few rows (a subnet, the active `dhcp_lease` version)
for every group of exchanges; each lookup is a round trip and an ORM query. A `Fresh`
keeps this process's copy for `seconds`: a change made in another process (an admin's, a
deploy) reaches it within that time, and one made in this process at once (`forget`).
Copies are kept per database engine (one process may serve, or test, several databases),
by the engine object: rendering its URL for a key costs more than the lookup saves.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from ..extensions import db

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Fresh(Generic[K, V]):
    def __init__(self, load: Callable[[K], V], *, seconds: float = 1.0) -> None:
        self._load = load
        self._seconds = seconds
        self._copies: weakref.WeakKeyDictionary[Any, dict[K, tuple[float, V]]] = \
            weakref.WeakKeyDictionary()

    def get(self, key: K) -> V:
        """`load(key)` as read at most `seconds` ago in this process (errors not kept)."""
        now = time.monotonic()
        here = self._copies.setdefault(db.engine, {})
        hit = here.get(key)
        if hit is not None and now - hit[0] < self._seconds:
            return hit[1]
        value = self._load(key)
        here[key] = (now, value)
        return value

    def copy(self, key: K, engine: Any) -> V | None:
        """This process's copy for `engine`'s database while it is fresh, else None: no
        read, and no app context needed (the DHCP server's receive loop runs outside one)."""
        hit = self._copies.get(engine, {}).get(key)
        if hit is not None and time.monotonic() - hit[0] < self._seconds:
            return hit[1]
        return None

    def forget(self) -> None:
        """Drop this process's copies: the next `get` reads the database."""
        self._copies.clear()
