"""`Pacer`: replies that become ready together go out a few at a time, not as one burst.

A group commit settles every exchange of its group at once: with one server process at
3,000 new leases/s the groups of bindings held 180 REQUESTs on average and up to 470. Sent
back to back, a group's ACKs reach the relay or the client host within a few milliseconds,
and a receiver that is not scheduled in that moment loses what its socket buffer cannot
hold (Linux's default is 212,992 bytes). perfdhcp's socket overflowed that way and lost
0.2-0.4 % of the replies of runs the server had answered in full.

The pacer hands a part of what is queued to `handle`, then sleeps `gap` seconds before the
next part: a `spread`th of the queue, at least `burst` and at most `most` items. A small
fixed number per pause would not do: the pacer's thread also waits for the interpreter's
lock after each pause (up to its 5 ms switch interval while the receive loop and the
group's thread run): 32 items a millisecond fell behind at 3,400 ACKs/s, 16 a millisecond
and 32 every 2 ms at 3,600 (the server's slots filled and it dropped REQUESTs). A share
of the queue keeps up; the cap of 64 keeps one part well below what a receive buffer
holds. An item that arrives when the pacer is idle goes out at once.

One thread does it, so the group's thread returns to the next group as soon as it has
queued the replies.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
MOST = 64  # items handed over per pause at most, unless `burst` is more


class Pacer(Generic[T]):
    def __init__(self, handle: Callable[[T], None], *, burst: int, gap: float, spread: int = 4,
                 most: int | None = None,
                 name: str = "dhcp-replies", sleep: Callable[[float], None] = time.sleep,
                 start: bool = True) -> None:
        if burst < 1:
            raise ValueError("burst must be >= 1")
        if not gap >= 0:
            raise ValueError("gap must be >= 0")
        if spread < 1:
            raise ValueError("spread must be >= 1")
        if most is not None and most < burst:
            raise ValueError("most must be >= burst")
        self._handle = handle
        self._burst = burst
        self._gap = gap
        self._spread = spread
        self._most = most if most is not None else max(MOST, burst)
        self._sleep = sleep
        self._queue: collections.deque[T] = collections.deque()
        self._ready = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
            self._thread.start()

    def put(self, item: T) -> None:
        """Queue `item` for `handle`; after `close`, handle it on the caller's thread."""
        if self._closed:
            self._run(item)
            return
        self._queue.append(item)
        # Set only when clear: `_loop` clears it before it drains, so an item queued while
        # it is still set is drained all the same (Event.set costs a Condition each time).
        if not self._ready.is_set():
            self._ready.set()

    def drain(self) -> int:
        """Handle everything queued, a part at a time with a `gap` between; the count."""
        queue, handled = self._queue, 0
        while queue:
            waiting = len(queue)
            for _ in range(min(max(self._burst, -(-waiting // self._spread)), self._most, waiting)):
                self._run(queue.popleft())
                handled += 1
            if queue and self._gap > 0:
                self._sleep(self._gap)
        return handled

    def close(self, timeout: float = 5.0) -> None:
        """Handle what is queued, then stop the thread."""
        self._closed = True
        self._ready.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.drain()  # what arrived while closing, or everything without a thread

    def _loop(self) -> None:
        while True:
            self._ready.wait()
            self._ready.clear()
            self.drain()
            if self._closed:  # close() drains what came after, once this thread ended
                return

    def _run(self, item: T) -> None:
        try:
            self._handle(item)
        except Exception:  # one reply's failure never stops the others
            log.exception("pacer %r: handling an item failed", self)
