"""Canonical XML (same diagram, same bytes) and the semantic diff between versions."""

from __future__ import annotations

import pytest
from lxml import etree

from app.engine.canonical import BpmnXmlError, canonical_xml, diff_definitions, safe_parse
from lf_support import read_case

LEASE = read_case("valid_lease")

DIAGRAM = b"""  <bpmndi:BPMNDiagram xmlns:bpmndi="http://www.omg.org/spec/BPMN/20100524/DI"
      xmlns:dc="http://www.omg.org/spec/DD/20100524/DC" id="diagram">
    <bpmndi:BPMNPlane id="plane" bpmnElement="lease_gate_valid">
      <bpmndi:BPMNShape id="reserve_di" bpmnElement="reserve">
        <dc:Bounds x="100" y="80" width="100" height="80"/>
      </bpmndi:BPMNShape>
    </bpmndi:BPMNPlane>
  </bpmndi:BPMNDiagram>
</bpmn:definitions>"""


def _reformatted(data: bytes) -> bytes:
    """The same document written differently: attribute order, spacing, comments."""
    root = etree.fromstring(data)
    for el in root.iter():
        if isinstance(el.tag, str) and len(el.attrib) > 1:
            items = list(el.attrib.items())
            el.attrib.clear()
            for key, value in reversed(items):
                el.set(key, value)
    root.insert(0, etree.Comment(" exported by some modeler "))
    return etree.tostring(root, pretty_print=False, xml_declaration=True, encoding="UTF-8")


def test_the_same_diagram_written_differently_has_the_same_canonical_bytes():
    other = _reformatted(LEASE)
    assert other != LEASE
    assert canonical_xml(other) == canonical_xml(LEASE)


def test_canonical_form_is_stable_and_readable():
    once = canonical_xml(LEASE)
    assert canonical_xml(once) == once
    assert once.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n')
    assert once.count(b"\n") > 20  # one element per line, so versions diff line by line
    assert b"<!--" not in once


def test_script_text_is_kept_exactly():
    data = read_case("valid_script_gateway")
    script = etree.fromstring(data).find(".//{*}script").text
    canonical = canonical_xml(data)
    assert etree.fromstring(canonical).find(".//{*}script").text == script


@pytest.mark.parametrize("case", ["xxe_file", "billion_laughs", "external_dtd"])
def test_canonical_refuses_hostile_documents(case):
    with pytest.raises(BpmnXmlError) as err:
        canonical_xml(read_case(case))
    assert err.value.code == "doctype_forbidden"


def test_safe_parse_refuses_malformed_and_oversized_input():
    with pytest.raises(BpmnXmlError) as err:
        safe_parse(read_case("malformed_xml"))
    assert err.value.code == "malformed_xml" and err.value.line == 4
    with pytest.raises(BpmnXmlError) as err:
        safe_parse(b"<a/>" + b" " * 100, max_bytes=50)
    assert err.value.code == "too_large"
    with pytest.raises(BpmnXmlError):
        safe_parse(b"")


def test_identical_versions_have_no_diff():
    assert diff_definitions(LEASE, _reformatted(LEASE)).empty


def test_moving_a_shape_is_not_a_change():
    with_diagram = LEASE.replace(b"</bpmn:definitions>", DIAGRAM)
    moved = with_diagram.replace(b'x="100"', b'x="340"')
    assert diff_definitions(with_diagram, moved).empty


def _changed(old: bytes, new: bytes) -> dict[str, tuple[str, ...]]:
    diff = diff_definitions(old, new)
    assert not diff.added and not diff.removed
    return {c.element_id: c.changes for c in diff.changed}


@pytest.mark.parametrize(("old", "new", "element_id", "aspect"), [
    (b'name="Reserve address"', b'name="Reserve an address"', "reserve", "name"),
    (b'id="ipam.reserve"', b'id="ipam.reserve_v2"', "reserve", "operation"),
    (b"value=\"lease_request['subnet']\"", b"value=\"lease_request['cidr']\"", "reserve",
     "parameters"),
    (b'retries="3"', b'retries="4"', "reserve", "retry"),
    (b"in ('retry', 'alternative')", b"== 'retry'", "flow_retry", "condition"),
    (b'sourceRef="decide" targetRef="end_aborted"', b'sourceRef="decide" targetRef="end_bound"',
     "flow_abort", "target"),
    (b'value="manual_retry"', b'value="other_form"', "approve_retry", "form"),
    (b'errorRef="Error_reserve"', b'errorRef="Error_other"', "reserve_failed", "event"),
    (b'default="flow_abort"', b'default="flow_retry"', "decide", "attributes"),
])
def test_changes_name_the_element_and_what_changed(old, new, element_id, aspect):
    assert old in LEASE
    changed = _changed(LEASE, LEASE.replace(old, new))
    assert aspect in changed[element_id], changed
    assert set(changed) == {element_id}


def test_timer_and_script_changes_are_named():
    timers = read_case("valid_timer_message")
    changed = _changed(timers, timers.replace(b'"R3/PT10M"', b'"R5/PT10M"'))
    assert changed == {"hard_deadline": ("timer",)}
    scripts = read_case("valid_script_gateway")
    changed = _changed(scripts, scripts.replace(b"pool_size = len(pool)", b"pool_size = 0"))
    assert changed == {"compute": ("script",)}


def test_added_and_removed_elements_are_listed_with_type_and_name():
    new = LEASE.replace(
        b'<bpmn:endEvent id="end_aborted" name="Lease aborted"/>',
        b'<bpmn:endEvent id="end_cancelled" name="Lease cancelled"/>').replace(
        b'targetRef="end_aborted"', b'targetRef="end_cancelled"')
    diff = diff_definitions(LEASE, new)
    assert [(r.element_id, r.element_type, r.name) for r in diff.added] == [
        ("end_cancelled", "endEvent", "Lease cancelled")]
    assert [(r.element_id, r.element_type, r.name) for r in diff.removed] == [
        ("end_aborted", "endEvent", "Lease aborted")]
    assert [(c.element_id, c.changes) for c in diff.changed] == [("flow_abort", ("target",))]
    as_dict = diff.to_dict()
    assert as_dict["added"][0]["element_id"] == "end_cancelled"
    assert as_dict["changed"][0]["changes"] == ["target"]
