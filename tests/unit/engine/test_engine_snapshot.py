"""Engine snapshots: an instance stamped from a captured first wait is the instance a real
start would have made (the DHCP fast path stores its followers this way)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.engine import runtime

PROCESSES = Path(__file__).resolve().parents[3] / "processes"
FIELDS = ("subnet", "client_id", "hwaddr", "hostname", "requested_ip", "bound_lease_id",
          "bound_until", "instance_id")


def spec(name: str) -> runtime.ProcessSpec:
    return runtime.load_spec((PROCESSES / f"{name}.bpmn").read_text(), name)


def values(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "subnet": "10.0.0.0/24", "client_id": "01:02:03", "hwaddr": None,
        "hostname": 'a "quoted" \\ name', "requested_ip": "10.0.0.77", "bound_lease_id": 42,
        "bound_until": "2099-11-29T03:00:00.500000+00:00", "instance_id": 7}
    base.update(over)
    return base


def test_a_stamped_snapshot_is_the_instance_a_real_start_makes():
    dhcp = spec("dhcp_lease")
    snap = runtime.snapshot(dhcp, "lease_request", dict.fromkeys(FIELDS),
                            date_field="bound_until")
    assert snap is not None and snap.timer_field == "bound_until"
    real, report = runtime.start(dhcp, {"lease_request": values()})
    stamped = runtime.restore(dhcp, runtime.stamp(snap, values()))
    assert runtime.data_of(stamped) == runtime.data_of(real)
    assert set(snap.messages) == set(report.messages)
    assert runtime.fire_timers(stamped).wake_at == report.wake_at  # the lease's expiry
    # And it goes on like the real one: a RELEASE parks the release of this lease.
    parked = runtime.send_message(stamped, "lease_release", {"reason": "release"}).parked
    assert [(p.operation, p.params["lease_id"]) for p in parked] == [("dhcp.release", 42)]


def test_two_instances_from_one_snapshot_keep_their_own_values():
    dhcp = spec("dhcp_lease")
    snap = runtime.snapshot(dhcp, "lease_request", dict.fromkeys(FIELDS),
                            date_field="bound_until")
    assert snap is not None
    one = runtime.data_of(runtime.restore(dhcp, runtime.stamp(snap, values(bound_lease_id=1))))
    two = runtime.data_of(runtime.restore(dhcp, runtime.stamp(snap, values(bound_lease_id=2))))
    assert one["binding"]["lease_id"] == 1 and two["binding"]["lease_id"] == 2


def test_no_snapshot_where_the_first_run_parks_a_service_task():
    # The API's lease process reserves an address first: that needs the real instance.
    lifecycle = spec("lease_lifecycle")
    assert runtime.snapshot(lifecycle, "lease_request",
                            dict.fromkeys(("subnet", "client_id", "instance_id"))) is None


@pytest.mark.parametrize("value", [None, "plain", 'quote " back\\ é \n\t', 0, -12, 2**70,
                                   True, False, 1.5, [1, None], {"a": "b"}])
def test_a_stamped_value_is_exactly_what_json_dumps_writes(value) -> None:
    from app.engine.runtime import _json

    assert _json(value) == json.dumps(value)


KEY = runtime.SnapshotKey("lease_request", FIELDS, "bound_until")


def test_a_deferred_state_is_stamped_when_read_into_the_instance_a_real_start_makes():
    dhcp = spec("dhcp_lease")
    stored = runtime.deferred(KEY)
    assert stored.startswith(runtime.DEFERRED) and len(stored) < 200  # not ~6 kB
    state = runtime.materialize(dhcp, stored, values())
    real, report = runtime.start(dhcp, {"lease_request": values()})
    restored = runtime.restore(dhcp, state)
    assert runtime.data_of(restored) == runtime.data_of(real)
    assert runtime.fire_timers(restored).wake_at == report.wake_at
    assert runtime.snapshot_of(dhcp, KEY) is runtime.snapshot_of(dhcp, KEY)  # taken once


def test_a_state_that_is_not_deferred_is_read_as_stored():
    dhcp = spec("dhcp_lease")
    real, _ = runtime.start(dhcp, {"lease_request": values()})
    state = runtime.serialize(real)
    assert runtime.materialize(dhcp, state, {}) == state


@pytest.mark.parametrize(("state", "says"), [
    (runtime.DEFERRED + "not json", "unreadable deferred state"),
    (runtime.DEFERRED + '["lease_request", 3, null]', "unreadable deferred state"),
])
def test_a_deferred_state_that_cannot_be_read_is_an_instance_error(state, says):
    with pytest.raises(runtime.InstanceError, match=says):
        runtime.materialize(spec("dhcp_lease"), state, values())


def test_a_deferred_state_of_a_diagram_no_snapshot_stands_for_is_an_instance_error():
    # e.g. stored under a diagram whose first run parks a service task
    key = runtime.SnapshotKey("lease_request", ("subnet", "client_id", "instance_id"))
    with pytest.raises(runtime.InstanceError, match="no snapshot stands for"):
        runtime.materialize(spec("lease_lifecycle"), runtime.deferred(key),
                            {"subnet": "10.0.0.0/24", "client_id": "a", "instance_id": 1})


def test_a_deferred_state_without_one_of_its_values_is_an_instance_error():
    values_without_id = {k: v for k, v in values().items() if k != "instance_id"}
    with pytest.raises(runtime.InstanceError, match="misses its value"):
        runtime.materialize(spec("dhcp_lease"), runtime.deferred(KEY), values_without_id)
