"""Lease states and their allowed transitions, as a table (h11 `_state.py` style).

The table is the single source of truth: services ask `transition()` for the next state and
an illegal move raises before anything is written, so a lease never takes a path the table
does not name.
"""

from __future__ import annotations

from enum import StrEnum


class LeaseState(StrEnum):
    OFFERED = "offered"  # reserved for a client, not yet committed
    BOUND = "bound"  # committed: the client holds the address
    RELEASED = "released"  # given back by the client or an admin
    EXPIRED = "expired"  # lease time ran out
    DECLINED = "declined"  # the client found the address in use (RFC 2131 DHCPDECLINE)
    ABANDONED = "abandoned"  # the offer or the process was given up (abort, rollback)


class LeaseEvent(StrEnum):
    COMMIT = "commit"
    RENEW = "renew"
    RELEASE = "release"
    EXPIRE = "expire"
    DECLINE = "decline"
    ABANDON = "abandon"


# (state, event) -> next state. Anything not listed is illegal.
TRANSITIONS: dict[tuple[LeaseState, LeaseEvent], LeaseState] = {
    (LeaseState.OFFERED, LeaseEvent.COMMIT): LeaseState.BOUND,
    (LeaseState.OFFERED, LeaseEvent.ABANDON): LeaseState.ABANDONED,
    (LeaseState.OFFERED, LeaseEvent.EXPIRE): LeaseState.EXPIRED,
    (LeaseState.OFFERED, LeaseEvent.DECLINE): LeaseState.DECLINED,
    (LeaseState.OFFERED, LeaseEvent.RELEASE): LeaseState.RELEASED,
    (LeaseState.BOUND, LeaseEvent.RENEW): LeaseState.BOUND,
    (LeaseState.BOUND, LeaseEvent.RELEASE): LeaseState.RELEASED,
    (LeaseState.BOUND, LeaseEvent.EXPIRE): LeaseState.EXPIRED,
    (LeaseState.BOUND, LeaseEvent.DECLINE): LeaseState.DECLINED,
    (LeaseState.BOUND, LeaseEvent.ABANDON): LeaseState.ABANDONED,
}

# States in which the address is held; the database's partial unique index uses this list.
HOLDING: frozenset[LeaseState] = frozenset({LeaseState.OFFERED, LeaseState.BOUND})


class IllegalTransition(ValueError):
    def __init__(self, state: LeaseState, event: LeaseEvent) -> None:
        super().__init__(f"a lease in state {state.value!r} cannot {event.value}")
        self.state = state
        self.event = event


def transition(state: LeaseState | str, event: LeaseEvent | str) -> LeaseState:
    """The state after `event`, or IllegalTransition (nothing changes)."""
    current, ev = LeaseState(state), LeaseEvent(event)
    try:
        return TRANSITIONS[(current, ev)]
    except KeyError:
        raise IllegalTransition(current, ev) from None


def is_holding(state: LeaseState | str) -> bool:
    return LeaseState(state) in HOLDING
