"""What the DHCP fast path keeps for a second (`fresh.Fresh`): a subnet and the active
`dhcp_lease` version. A change made in this process shows at once."""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from app.services import definitions, subnets
from app.services.uow import unit_of_work

PROCESSES = Path(__file__).resolve().parents[3] / "processes"


def test_a_subnet_change_made_here_is_seen_at_once(app: Flask) -> None:
    with app.app_context(), unit_of_work():
        subnet_id = subnets.create({"cidr": "10.70.0.0/24", "pools": ["10.70.0.10-10.70.0.20"],
                                    "lease_time": 600}, actor="test").id
    with app.app_context():
        assert subnets.known("10.70.0.0/24").lease_time == 600
        with unit_of_work():
            subnets.update(subnet_id, {"lease_time": 900}, actor="test")
        assert subnets.known("10.70.0.0/24").lease_time == 900


def test_a_deploy_made_here_is_seen_at_once(app: Flask) -> None:
    with app.app_context():
        before = definitions.current("dhcp_lease")
        assert (before.key, before.id) == ("dhcp_lease", definitions.active("dhcp_lease").id)
        xml = (PROCESSES / "dhcp_lease.bpmn").read_text()
        with unit_of_work():
            stored = definitions.store(xml.replace("</bpmn:definitions>",
                                                   "<!-- v2 --></bpmn:definitions>"),
                                       author="test")
        after = definitions.current("dhcp_lease")
        assert after.version == before.version + 1 and after.id == stored.id


def test_a_fresh_copy_is_read_without_an_app_context_and_a_stale_one_is_not_given(
        app: Flask) -> None:
    with app.app_context(), unit_of_work():
        subnet_id = subnets.create({"cidr": "10.71.0.0/24", "pools": ["10.71.0.10-10.71.0.20"],
                                    "lease_time": 600}, actor="test").id
    with app.app_context():
        from app.extensions import db

        engine = db.engine
        assert subnets.known_copy("10.71.0.0/24", engine) is None  # never read here yet
        subnets.known("10.71.0.0/24")
    copy = subnets.known_copy("10.71.0.0/24", engine)  # outside any app context
    assert copy is not None and copy.id == subnet_id and copy.lease_time == 600
    with app.app_context(), unit_of_work():
        subnets.update(subnet_id, {"lease_time": 900}, actor="test")  # forgets the copies
    assert subnets.known_copy("10.71.0.0/24", engine) is None
