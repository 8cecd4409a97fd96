from __future__ import annotations

import pytest

from app.leases.states import (
    TRANSITIONS,
    IllegalTransition,
    LeaseEvent,
    LeaseState,
    is_holding,
    transition,
)


@pytest.mark.parametrize(("state", "event", "after"), [
    ("offered", "commit", "bound"),
    ("offered", "abandon", "abandoned"),
    ("bound", "renew", "bound"),
    ("bound", "release", "released"),
    ("bound", "expire", "expired"),
    ("bound", "decline", "declined"),
])
def test_allowed_transitions(state: str, event: str, after: str) -> None:
    assert transition(state, event) == LeaseState(after)


@pytest.mark.parametrize(("state", "event"), [
    ("released", "commit"), ("expired", "renew"), ("bound", "commit"), ("declined", "release"),
    ("abandoned", "commit"), ("released", "release"),
])
def test_illegal_transition_raises_and_changes_nothing(state: str, event: str) -> None:
    table_before = dict(TRANSITIONS)
    with pytest.raises(IllegalTransition) as err:
        transition(state, event)
    assert err.value.state == LeaseState(state)
    assert TRANSITIONS == table_before


def test_every_final_state_has_no_way_out() -> None:
    for state in (LeaseState.RELEASED, LeaseState.EXPIRED, LeaseState.DECLINED,
                  LeaseState.ABANDONED):
        assert not is_holding(state)
        for event in LeaseEvent:
            with pytest.raises(IllegalTransition):
                transition(state, event)


def test_holding_states_are_offered_and_bound() -> None:
    assert {s for s in LeaseState if is_holding(s)} == {LeaseState.OFFERED, LeaseState.BOUND}
