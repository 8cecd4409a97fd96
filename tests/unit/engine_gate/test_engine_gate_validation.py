"""The upload gate over the table of hostile, broken and valid BPMN files in tests/data/bpmn."""

from __future__ import annotations

import codecs
import re
import time

import pytest

from app.engine import canonical
from app.engine.canonical import BpmnXmlError, safe_parse
from app.engine.validation import OperationSchema, validate_bpmn
from lf_support import bpmn_cases, read_case

CASES = bpmn_cases()


def test_the_table_has_hostile_broken_and_valid_cases():
    names = {name for name, _, _ in CASES}
    assert {"malformed_xml", "xxe_file", "xxe_http", "billion_laughs", "external_dtd",
            "unknown_operation", "wrong_parameter_type", "missing_retry_and_error_path",
            "user_task_without_form", "unreachable_end", "sandbox_escape_condition",
            "sandbox_escape_script", "sandbox_escape_parameter", "malformed_timer",
            "undeclared_message", "valid_lease"} <= names
    assert any(expected["ok"] for _, _, expected in CASES)


@pytest.mark.parametrize(("name", "data", "expected"), CASES, ids=[c[0] for c in CASES])
def test_case_gets_the_expected_verdict(name, data, expected, catalogue):
    report = validate_bpmn(data, catalogue)
    found = {(p.code, p.element_id) for p in report.problems}
    wanted = {(p["code"], p["element_id"]) for p in expected["problems"]}
    assert report.ok is expected["ok"], report.problems
    assert wanted <= found, f"missing {wanted - found}; got {report.problems}"
    if expected["exact"]:
        assert found == wanted, f"unexpected {found - wanted}"
    for problem in report.problems:
        assert problem.message.strip(), problem  # every problem says what to do
    if report.ok:
        assert report.process_ids and report.canonical


def test_every_problem_is_collected_not_only_the_first(catalogue):
    report = validate_bpmn(read_case("malformed_timer"), catalogue)
    assert len({p.element_id for p in report.problems if p.code == "timer_malformed"}) == 5


def test_a_50_mb_file_is_refused_before_parsing(catalogue):
    huge = read_case("valid_lease").replace(
        b"</bpmn:definitions>", b"<!-- " + b"x" * (50 * 1024 * 1024) + b" --></bpmn:definitions>")
    started = time.process_time()
    report = validate_bpmn(huge, catalogue)
    assert [(p.code, p.element_id) for p in report.problems] == [("too_large", "")]
    assert "limit" in report.problems[0].message
    assert report.canonical is None
    # refused on its length alone: no parse of 50 MB (generous bound, CPU time not wall time)
    assert time.process_time() - started < 5


def test_the_size_cap_is_configurable(catalogue):
    data = read_case("valid_lease")
    assert validate_bpmn(data, catalogue, max_bytes=len(data)).ok
    report = validate_bpmn(data, catalogue, max_bytes=len(data) - 1)
    assert [p.code for p in report.problems] == ["too_large"]


@pytest.mark.parametrize("codec", ["utf-16", "utf-32", "utf-16-le"])
def test_doctype_is_refused_in_every_encoding(codec, catalogue):
    text = read_case("xxe_file").decode().replace('<?xml version="1.0"?>',
                                                 f'<?xml version="1.0" encoding="{codec}"?>')
    data = text.encode(codec)
    if codec == "utf-16-le":
        data = codecs.BOM_UTF16_LE + data
    report = validate_bpmn(data, catalogue)
    assert [p.code for p in report.problems] == ["doctype_forbidden"]


def test_doctype_is_refused_in_utf16_without_a_byte_order_mark():
    data = read_case("external_dtd").decode().encode("utf-16-be")
    with pytest.raises(BpmnXmlError) as err:
        safe_parse(data)
    assert err.value.code == "doctype_forbidden"


@pytest.mark.parametrize("case", ["xxe_file", "xxe_http", "billion_laughs", "external_dtd"])
def test_the_parsed_document_is_checked_too_if_the_byte_scan_misses(case, monkeypatch):
    # defence in depth: with the raw-byte scan disabled, the parse itself must not expand
    # anything, and the DOCTYPE left in the parsed document is refused
    monkeypatch.setattr(canonical, "_DTD_MARKER", re.compile(rb"(?!)"))
    with pytest.raises(BpmnXmlError) as err:
        safe_parse(read_case(case))
    # libxml2 itself refuses the entity amplification of billion laughs as malformed
    assert err.value.code in {"doctype_forbidden", "malformed_xml"}
    assert len(str(err.value)) < 500


def test_entities_are_never_resolved(catalogue, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    data = read_case("xxe_file").replace(b"/etc/passwd", str(secret).encode())
    report = validate_bpmn(data, catalogue)
    assert not report.ok
    assert all("TOP-SECRET" not in p.message for p in report.problems)
    assert report.canonical is None


def test_unknown_catalogue_operation_lists_the_known_ones(catalogue):
    report = validate_bpmn(read_case("unknown_operation"), catalogue)
    message = report.problems[0].message
    assert "ipam.teleport" in message and "ipam.reserve" in message


def test_sandbox_problems_name_the_construct(catalogue):
    report = validate_bpmn(read_case("sandbox_escape_condition"), catalogue)
    text = " ".join(p.message for p in report.problems)
    assert "__class__" in text and "lambda" in text and ".format" in text


def test_helper_functions_known_to_the_engine_are_accepted(catalogue):
    data = read_case("valid_lease").replace(b"lease_request.get('requested_ip') or ''",
                                            b"pick_address(lease_request)")
    assert not validate_bpmn(data, catalogue).ok
    assert validate_bpmn(data, catalogue, functions={"pick_address"}).ok


def test_any_typed_parameter_accepts_every_type():
    catalogue = {"ledger.append": OperationSchema(name="ledger.append",
                                                  params={"action": "any", "ip": "str"})}
    data = read_case("valid_lease").replace(b'id="ipam.reserve"', b'id="ledger.append"')
    report = validate_bpmn(data, catalogue)
    # ipam.reserve's parameters are now unknown to ledger.append; types are not the issue
    assert {p.code for p in report.problems} == {"unknown_parameter"}


def test_operation_schema_rejects_unknown_types():
    with pytest.raises(ValueError):
        OperationSchema(name="x", params={"a": "bytes"})
    with pytest.raises(ValueError):
        OperationSchema(name="x", params={"a": "str"}, required=frozenset({"b"}))


def test_canonical_form_of_a_valid_file_validates_again(catalogue):
    report = validate_bpmn(read_case("valid_lease"), catalogue)
    again = validate_bpmn(report.canonical, catalogue)
    assert again.ok and again.canonical == report.canonical


def test_string_input_is_accepted(catalogue):
    assert validate_bpmn(read_case("valid_lease").decode(), catalogue).ok


@pytest.fixture()
def loopback_server():
    """A loopback HTTP server that records every request (nothing should ever reach it)."""
    import http.server
    import threading

    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            requests.append(self.path)
            body = b'<!ENTITY leaked "LEAKED">'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("case", ["xxe_http", "external_dtd"])
def test_no_network_access_even_if_the_byte_scan_misses(case, loopback_server, monkeypatch,
                                                        catalogue):
    port, requests = loopback_server
    data = read_case(case).replace(b"127.0.0.1:9", f"127.0.0.1:{port}".encode())
    monkeypatch.setattr(canonical, "_DTD_MARKER", re.compile(rb"(?!)"))
    report = validate_bpmn(data, catalogue)
    assert not report.ok
    assert requests == []
    assert all("LEAKED" not in p.message for p in report.problems)


@pytest.mark.parametrize("how", ["external_subset", "parameter_entity", "general_entity"])
def test_external_files_are_never_read_even_if_the_byte_scan_misses(how, tmp_path, monkeypatch,
                                                                    catalogue):
    from lxml import etree

    dtd = tmp_path / "evil.dtd"
    dtd.write_text('<!ENTITY leaked "LEAKED">')
    secret = tmp_path / "secret.txt"
    secret.write_text("LEAKED")
    doctype = {
        "external_subset": f'<!DOCTYPE definitions SYSTEM "{dtd.as_uri()}">',
        "parameter_entity": f'<!DOCTYPE definitions [<!ENTITY % r SYSTEM "{dtd.as_uri()}"> %r;]>',
        "general_entity": f'<!DOCTYPE definitions [<!ENTITY leaked SYSTEM "{secret.as_uri()}">]>',
    }[how]
    data = read_case("valid_lease").replace(
        b'<?xml version="1.0" encoding="UTF-8"?>',
        b'<?xml version="1.0" encoding="UTF-8"?>\n' + doctype.encode()).replace(
        b'<bpmn:startEvent id="start" name="Lease requested"/>',
        b'<bpmn:startEvent id="start" name="Lease requested">'
        b"<bpmn:documentation>&leaked;</bpmn:documentation></bpmn:startEvent>")
    # control: a naive parser really does read the file, so this test can tell
    naive = etree.XMLParser(load_dtd=True, resolve_entities=True)
    assert b"LEAKED" in etree.tostring(etree.fromstring(data, naive))
    monkeypatch.setattr(canonical, "_DTD_MARKER", re.compile(rb"(?!)"))
    report = validate_bpmn(data, catalogue)
    assert not report.ok
    assert report.canonical is None
    assert all("LEAKED" not in p.message for p in report.problems)
