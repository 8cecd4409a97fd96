"""The Kea client's request building and answer interpretation, without any I/O."""

from __future__ import annotations

import base64
import json

import pytest

from app.dhcp.kea import (
    HttpTransport,
    KeaAnswer,
    KeaAuthError,
    KeaClient,
    KeaCommand,
    KeaCommandError,
    KeaError,
    KeaLease,
    KeaUnavailable,
    LeaseConflict,
    OurLease,
    add_lease_command,
    delete_lease_command,
    diff_leases,
    get_lease_command,
    interpret_add,
    interpret_delete,
    interpret_get,
    interpret_list,
    list_leases_command,
    normalize_hex,
    parse_answer,
    plan_fixes,
)

MAC = "aa:bb:cc:dd:ee:ff"


def kea_body(result: int, text: str = "", arguments: object = None) -> bytes:
    answer: dict[str, object] = {"result": result, "text": text}
    if arguments is not None:
        answer["arguments"] = arguments
    return json.dumps([answer]).encode()


def raw_lease(ip: str, hw: str = MAC, client_id: str | None = None, state: int = 0) -> dict:
    raw = {"ip-address": ip, "hw-address": hw, "subnet-id": 1, "valid-lft": 3600,
           "cltt": 1, "state": state, "hostname": "", "fqdn-fwd": False, "fqdn-rev": False}
    if client_id:
        raw["client-id"] = client_id
    return raw


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("AA:BB:CC:DD:EE:FF", MAC),
        ("aa-bb-cc-dd-ee-ff", MAC),
        ("aabbccddeeff", MAC),
        ("a:b:c:d:e:f", "0a:0b:0c:0d:0e:0f"),
        (bytes.fromhex("01aabbccddeeff"), "01:" + MAC),
        ("", ""),
    ],
)
def test_identifiers_are_spelled_as_kea_spells_them(given: str | bytes, expected: str) -> None:
    assert normalize_hex(given) == expected


@pytest.mark.parametrize("bad", ["xyz", "abc", "aa::bb", "aaa:bb", "pod-1"])
def test_garbage_identifiers_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize_hex(bad)


def test_every_command_names_the_dhcp4_service() -> None:
    body = json.loads(get_lease_command("10.0.0.5").encode())
    assert body == {"command": "lease4-get", "service": ["dhcp4"],
                    "arguments": {"ip-address": "10.0.0.5"}}


def test_add_carries_only_the_fields_given() -> None:
    command = add_lease_command(ip="10.0.0.5", hwaddr="AA-BB-CC-DD-EE-FF",
                                client_id="01aabbccddeeff", subnet_id=7, valid_lft=600,
                                hostname="web1")
    assert command.to_json()["arguments"] == {
        "ip-address": "10.0.0.5", "hw-address": MAC, "client-id": "01:" + MAC,
        "subnet-id": 7, "valid-lft": 600, "hostname": "web1",
    }
    minimal = add_lease_command(ip="10.0.0.5", hwaddr=MAC)
    assert minimal.to_json()["arguments"] == {"ip-address": "10.0.0.5", "hw-address": MAC}


def test_a_client_id_alone_sends_an_empty_hardware_address() -> None:
    # Kea 2.2 insists on the hw-address key but accepts it empty next to a client id.
    args = add_lease_command(ip="10.0.0.5", hwaddr=None, client_id="ff:01").to_json()
    assert args["arguments"]["hw-address"] == ""


@pytest.mark.parametrize(
    "lease",
    [
        {"ip": "10.0.0.300", "hwaddr": MAC},
        {"ip": "not-an-ip", "hwaddr": MAC},
        {"ip": "10.0.0.5", "hwaddr": None},
        {"ip": "10.0.0.5", "hwaddr": MAC, "valid_lft": 0},
    ],
)
def test_invalid_leases_never_reach_kea(lease: dict) -> None:
    with pytest.raises(ValueError):
        add_lease_command(**lease)


def test_listing_one_subnet_or_all() -> None:
    assert list_leases_command(3).to_json()["arguments"] == {"subnets": [3]}
    assert "arguments" not in list_leases_command().to_json()


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (401, b'{ "result": 401, "text": "Unauthorized" }', KeaAuthError),
        (400, b'{ "result": 400, "text": "Bad Request" }', KeaCommandError),
        (503, b"", KeaUnavailable),
        (200, b"<html>", KeaCommandError),
        (200, b"[]", KeaCommandError),
        (200, b'{"no": "result"}', KeaCommandError),
        (200, kea_body(1, "unable to forward command to the dhcp4 service: No such file or "
                          "directory. The server is likely to be offline"), KeaUnavailable),
    ],
)
def test_transport_level_answers_become_errors(status: int, body: bytes, error: type) -> None:
    with pytest.raises(error):
        parse_answer(status, body, "lease4-get")


def test_auth_refusal_is_a_permanent_command_error() -> None:
    assert issubclass(KeaAuthError, KeaCommandError)
    assert all(issubclass(e, KeaError) for e in (KeaUnavailable, LeaseConflict, KeaCommandError))


def test_a_forwarded_answer_is_unwrapped() -> None:
    answer = parse_answer(200, kea_body(0, "IPv4 lease found.", raw_lease("10.0.0.5")))
    assert answer.result == 0
    assert interpret_get(answer) == KeaLease(
        ip="10.0.0.5", hwaddr=MAC, subnet_id=1, valid_lft=3600, cltt=1
    )


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        (KeaAnswer(result=0, text="Lease for address 10.0.0.5, subnet-id 1 added."), None),
        (KeaAnswer(result=1, text="IPv4 lease already exists."), LeaseConflict),
        (KeaAnswer(result=1, text="missing parameter 'hw-address'"), KeaCommandError),
        (KeaAnswer(result=2, text="'lease4-add' command not supported."), KeaCommandError),
    ],
)
def test_add_answers(answer: KeaAnswer, outcome: type | None) -> None:
    if outcome is None:
        interpret_add(answer, "10.0.0.5")
    else:
        with pytest.raises(outcome):
            interpret_add(answer, "10.0.0.5")


@pytest.mark.parametrize(
    ("answer", "deleted"),
    [
        (KeaAnswer(result=0, text="IPv4 lease deleted."), True),
        (KeaAnswer(result=3, text="IPv4 lease not found."), False),
    ],
)
def test_release_is_idempotent(answer: KeaAnswer, deleted: bool) -> None:
    assert interpret_delete(answer) is deleted


def test_delete_errors_are_not_swallowed() -> None:
    with pytest.raises(KeaCommandError):
        interpret_delete(KeaAnswer(result=1, text="Failed to convert string to address"))


def test_missing_lease_and_empty_subnet() -> None:
    assert interpret_get(KeaAnswer(result=3, text="Lease not found.")) is None
    assert interpret_list(KeaAnswer(result=3, text="0 IPv4 lease(s) found.",
                                    arguments={"leases": []})) == []


@pytest.mark.parametrize(
    ("identity", "hwaddr", "client_id"),
    [
        (MAC, MAC, None),
        ("01" + MAC.replace(":", ""), MAC, "01:" + MAC),
        ("ff:00:01", None, "ff:00:01"),
    ],
)
def test_our_identity_splits_into_kea_fields(identity: str, hwaddr: str | None,
                                             client_id: str | None) -> None:
    ours = OurLease.of("10.0.0.5", identity)
    assert (ours.hwaddr, ours.client_id) == (hwaddr, client_id)


def test_reconcile_finds_each_kind_of_difference() -> None:
    kea = [
        KeaLease(ip="10.0.0.5", hwaddr=MAC),                      # same holder
        KeaLease(ip="10.0.0.6", hwaddr="11:11:11:11:11:11"),      # another holder
        KeaLease(ip="10.0.0.7", hwaddr="22:22:22:22:22:22"),      # we do not know it
        KeaLease(ip="10.0.0.9", hwaddr="33:33:33:33:33:33", state=2),  # reclaimed: not held
        KeaLease(ip="10.0.0.10", hwaddr="", client_id="ff:00:01"),
    ]
    ours = [
        ("10.0.0.5", "01:" + MAC),  # type-1 client id of the same MAC
        ("10.0.0.6", "44:44:44:44:44:44"),
        ("10.0.0.8", "55:55:55:55:55:55"),
        ("10.0.0.10", "ff:00:01"),
    ]
    report = diff_leases(kea, ours)
    assert report.summary() == {
        "only_in_kea": ["10.0.0.7"], "only_in_ours": ["10.0.0.8"], "mismatched": ["10.0.0.6"],
    }
    assert not report.clean
    assert diff_leases(kea[:1], ours[:1]).clean


def test_the_fix_plan_deletes_overwrites_and_adds() -> None:
    report = diff_leases(
        [KeaLease(ip="10.0.0.6", hwaddr="11:11:11:11:11:11"),
         KeaLease(ip="10.0.0.7", hwaddr="22:22:22:22:22:22")],
        [("10.0.0.6", MAC), ("10.0.0.8", "55:55:55:55:55:55")],
    )
    plan = [c.to_json() for c in plan_fixes(report, valid_lft=900)]
    assert [(c["command"], c["arguments"]["ip-address"]) for c in plan] == [
        ("lease4-del", "10.0.0.7"), ("lease4-update", "10.0.0.6"), ("lease4-add", "10.0.0.8"),
    ]
    assert plan[1]["arguments"]["force-create"] is True
    assert plan[1]["arguments"]["hw-address"] == MAC
    assert plan[2]["arguments"]["valid-lft"] == 900


class ScriptedTransport:
    """Answers each POST with the next scripted (status, body); records what was sent."""

    def __init__(self, *answers: tuple[int, bytes]) -> None:
        self.answers = list(answers)
        self.sent: list[dict] = []

    def post(self, body: bytes) -> tuple[int, bytes]:
        self.sent.append(json.loads(body))
        return self.answers.pop(0)


def test_a_retried_commit_finds_its_own_lease() -> None:
    transport = ScriptedTransport(
        (200, kea_body(1, "IPv4 lease already exists.")),
        (200, kea_body(0, "IPv4 lease found.", raw_lease("10.0.0.5"))),
    )
    held = KeaClient(transport).commit_lease("10.0.0.5", MAC)
    assert held is not None and held.hwaddr == MAC
    assert [s["command"] for s in transport.sent] == ["lease4-add", "lease4-get"]


def test_a_commit_onto_someone_elses_lease_is_a_conflict_naming_the_holder() -> None:
    transport = ScriptedTransport(
        (200, kea_body(1, "IPv4 lease already exists.")),
        (200, kea_body(0, "IPv4 lease found.", raw_lease("10.0.0.5", hw="11:11:11:11:11:11"))),
    )
    with pytest.raises(LeaseConflict) as caught:
        KeaClient(transport).commit_lease("10.0.0.5", MAC)
    assert caught.value.ip == "10.0.0.5"
    assert caught.value.holder is not None and caught.value.holder.hwaddr == "11:11:11:11:11:11"


def test_apply_reports_failures_and_goes_on() -> None:
    report = diff_leases([KeaLease(ip="10.0.0.7", hwaddr=MAC)], [("10.0.0.8", MAC)])
    transport = ScriptedTransport(
        (200, kea_body(1, "Failed to delete")),
        (200, kea_body(0, "added")),
    )
    result = KeaClient(transport).apply(report)
    assert result.added == ("10.0.0.8",)
    assert result.deleted == ()
    assert [ip for ip, _ in result.failed] == ["10.0.0.7"]


def test_basic_auth_header_and_json_content_type() -> None:
    transport = HttpTransport(url="http://127.0.0.1:8000/", username="admin", password="s3cret")
    assert transport.headers["Content-Type"] == "application/json"
    assert transport.headers["Authorization"] == "Basic " + base64.b64encode(
        b"admin:s3cret").decode()
    assert "s3cret" not in repr(transport)
    assert "Authorization" not in HttpTransport(url="http://127.0.0.1:8000/").headers


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://kea/", "127.0.0.1:8000"])
def test_only_http_urls(url: str) -> None:
    with pytest.raises(ValueError):
        KeaClient.from_url(url)


def test_commands_are_values() -> None:
    command = KeaCommand(command="list-commands")
    assert command.to_json() == {"command": "list-commands", "service": ["dhcp4"]}
    assert delete_lease_command("10.0.0.5") == delete_lease_command("10.0.0.5")


def test_credentials_in_the_url_become_basic_auth() -> None:
    client = KeaClient.from_url("http://admin:p%40ss@kea.example:8000/")
    transport = client.transport
    assert isinstance(transport, HttpTransport)
    assert transport.url == "http://kea.example:8000/"
    assert transport.headers["Authorization"] == "Basic " + base64.b64encode(
        b"admin:p@ss").decode()


def test_a_conflict_survives_pickling() -> None:
    import pickle

    conflict = pickle.loads(pickle.dumps(LeaseConflict("10.0.0.5", "IPv4 lease already exists.")))
    assert isinstance(conflict, LeaseConflict)
    assert (conflict.ip, str(conflict)) == ("10.0.0.5", "10.0.0.5: IPv4 lease already exists.")


@pytest.mark.parametrize(
    ("client_id", "expected"),
    [
        (b"\x01\xaa\xbb\xcc\xdd\xee\xff", "01:" + MAC),
        ("01:AA:BB:CC:DD:EE:FF", "01:" + MAC),
        ("pod-web-1", "00:" + ":".join(f"{b:02x}" for b in b"pod-web-1")),
    ],
)
def test_text_client_ids_become_type_0_identifiers(client_id: str | bytes, expected: str) -> None:
    from app.dhcp.kea import client_id_hex

    assert client_id_hex(client_id) == expected
    args = add_lease_command(ip="10.0.0.5", hwaddr=None, client_id=client_id).to_json()
    assert args["arguments"]["client-id"] == expected
    assert OurLease.of("10.0.0.5", client_id).identity == expected
