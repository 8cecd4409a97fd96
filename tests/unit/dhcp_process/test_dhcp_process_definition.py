"""The shipped `dhcp_lease` process: valid under the platform rules, loaded on first start."""

from __future__ import annotations

from pathlib import Path

from app.services import definitions

BPMN = Path(__file__).resolve().parents[3] / "processes" / "dhcp_lease.bpmn"


def test_the_dhcp_process_passes_the_upload_checks(app) -> None:
    with app.app_context():
        report = definitions.validate(BPMN.read_bytes())
    assert report.ok, [(p.element_id, p.code, p.message) for p in report.problems]


def test_first_start_loads_both_shipped_processes(app) -> None:
    with app.app_context():
        active = {d["key"]: d["version"] for d in definitions.listing() if d["active"]}
        assert definitions.ensure_default().key == "lease_lifecycle"  # idempotent
        again = {d["key"]: d["version"] for d in definitions.listing() if d["active"]}
    assert active == again == {"lease_lifecycle": 1, "dhcp_lease": 1}
