"""Kea as the DHCP backend: a client of Kea's control agent REST API.

With `LEASEFLOW_DHCP_BACKEND=kea` Kea answers the wire and Leaseflow decides who holds which
address; the `dhcp.commit` / `dhcp.release` operations push those decisions into Kea with the
lease_cmds hook (`lease4-add`, `lease4-del`, `lease4-get`, `lease4-get-all`, `lease4-update`).
Kea 2.2 has no HTTP listener of its own: `kea-ctrl-agent` forwards each command to kea-dhcp4
over a unix socket, so every request names `"service": ["dhcp4"]`.

Building requests and interpreting answers are pure functions (tested without I/O); the
transport is a thin urllib POST with a timeout. Errors form one family so callers can tell a
transient outage (`KeaUnavailable`: retry with backoff) from a business answer
(`LeaseConflict`: the process's error path) and from a permanent misuse (`KeaCommandError`).
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.dhcp.errors import DhcpError

# Kea's command result codes (src/lib/cc/command_interpreter.h).
RESULT_SUCCESS = 0
RESULT_ERROR = 1
RESULT_UNSUPPORTED = 2
RESULT_EMPTY = 3

DEFAULT_TIMEOUT = 5.0


class KeaError(DhcpError):
    """Base of every error this module raises (part of the DHCP area's family)."""


class KeaUnavailable(KeaError):
    """Kea cannot be reached right now (agent down, timeout, kea-dhcp4 offline): transient."""


class LeaseConflict(KeaError):
    """Kea already has a lease for the address: a business answer, not a fault."""

    def __init__(
        self, ip: str, message: str = "IPv4 lease already exists.",
        holder: KeaLease | None = None,
    ) -> None:
        # args stay (ip, message) so pickling (Celery results) rebuilds the exception.
        super().__init__(ip, message)
        self.ip = ip
        self.message = message
        self.holder = holder

    def __str__(self) -> str:
        return f"{self.ip}: {self.message}"


class KeaCommandError(KeaError):
    """Kea refused the command (bad arguments, unsupported command, HTTP error): permanent."""

    def __init__(self, message: str, *, result: int | None = None) -> None:
        super().__init__(message)
        self.result = result


class KeaAuthError(KeaCommandError):
    """The control agent refused our credentials (HTTP 401)."""


# --- values ------------------------------------------------------------------------------

_HEX_RUN = re.compile(r"^[0-9a-f]+$")


def normalize_hex(value: str | bytes) -> str:
    """Kea's spelling of a hardware address or client id: lowercase octets joined by ':'.

    Accepts bytes, 'AA:BB', 'aa-bb', 'aabb' or 'aa bb'; Kea itself prints 'aa:bb'.
    """
    if isinstance(value, bytes | bytearray):
        return ":".join(f"{b:02x}" for b in value)
    text = value.strip().lower()
    if not text:
        return ""
    parts = re.split(r"[:\-\s.]", text)
    if len(parts) == 1:
        if len(text) % 2 or not _HEX_RUN.match(text):
            raise ValueError(f"not a hex identifier: {value!r}")
        parts = [text[i : i + 2] for i in range(0, len(text), 2)]
    octets = []
    for part in parts:
        if not part or len(part) > 2 or not _HEX_RUN.match(part):
            raise ValueError(f"not a hex identifier: {value!r}")
        octets.append(part.zfill(2))
    return ":".join(octets)


def client_id_hex(value: str | bytes) -> str:
    """Kea's spelling of a client identifier.

    Bytes (option 61 as received) and hex text ('01:aa:bb…', '01aabb…') are taken as the
    octets themselves. Any other text, such as an API caller's or a pod's name, is sent as a
    type-0 identifier, 00 + UTF-8 (RFC 2132 §9.14: type 0 is "not a hardware address"), so
    every client id Leaseflow stores has one stable spelling in Kea.
    """
    try:
        return normalize_hex(value)
    except ValueError:
        assert isinstance(value, str)  # bytes always normalize
        return normalize_hex(b"\x00" + value.encode())


def _check_ip(ip: str) -> str:
    try:
        return str(ipaddress.IPv4Address(ip))
    except ValueError as exc:
        raise ValueError(f"not an IPv4 address: {ip!r}") from exc


@dataclass(frozen=True, kw_only=True)
class KeaLease:
    """One lease as Kea reports it (the fields Leaseflow cares about)."""

    ip: str
    hwaddr: str
    client_id: str | None = None
    subnet_id: int | None = None
    valid_lft: int | None = None
    cltt: int | None = None
    hostname: str | None = None
    state: int = 0

    @classmethod
    def from_kea(cls, raw: Mapping[str, Any]) -> KeaLease:
        return cls(
            ip=str(raw["ip-address"]),
            hwaddr=str(raw.get("hw-address") or ""),
            client_id=raw.get("client-id") or None,
            subnet_id=raw.get("subnet-id"),
            valid_lft=raw.get("valid-lft"),
            cltt=raw.get("cltt"),
            hostname=raw.get("hostname") or None,
            state=int(raw.get("state", 0)),
        )

    def identities(self) -> frozenset[str]:
        """Every spelling of the holder Leaseflow might use for this lease.

        Leaseflow names a client by option 61 when it sent one, else by chaddr (RFC 2131
        §4.2). A type-1 client id ('01' + MAC) names the same client as its MAC, so both
        count as the same holder.
        """
        ids = {self.hwaddr} if self.hwaddr else set()
        if self.client_id:
            ids.add(self.client_id)
            if self.client_id.startswith("01:") and len(self.client_id) == 20:
                ids.add(self.client_id[3:])
        if self.hwaddr:
            ids.add("01:" + self.hwaddr)
        return frozenset(ids)


@dataclass(frozen=True, kw_only=True)
class OurLease:
    """A lease as Leaseflow holds it, for reconciliation with Kea."""

    ip: str
    identity: str  # normalized hex: client id (option 61) or chaddr
    hwaddr: str | None = None
    client_id: str | None = None
    subnet_id: int | None = None
    valid_lft: int | None = None
    hostname: str | None = None

    def __post_init__(self) -> None:
        _check_ip(self.ip)

    @classmethod
    def of(cls, ip: str, identity: str | bytes, **extra: Any) -> OurLease:
        """From Leaseflow's (ip, client id or chaddr) pair.

        Six octets is a MAC; anything else is a client id, whose MAC is recovered when it
        is a type-1 id ('01' + MAC) because Kea wants a hardware address for every lease.
        """
        ident = client_id_hex(identity)
        octets = ident.split(":") if ident else []
        hwaddr = extra.pop("hwaddr", None)
        client_id = extra.pop("client_id", None)
        if len(octets) == 6 and client_id is None:
            hwaddr = hwaddr or ident
        else:
            client_id = client_id or ident
            if hwaddr is None and len(octets) == 7 and octets[0] == "01":
                hwaddr = ":".join(octets[1:])
        return cls(
            ip=ip,
            identity=ident,
            hwaddr=normalize_hex(hwaddr) if hwaddr else None,
            client_id=client_id_hex(client_id) if client_id else None,
            **extra,
        )


@dataclass(frozen=True, kw_only=True)
class Mismatch:
    """The same address is leased on both sides, to different holders."""

    ours: OurLease
    kea: KeaLease


@dataclass(frozen=True, kw_only=True)
class ReconcileReport:
    only_in_kea: tuple[KeaLease, ...] = ()
    only_in_ours: tuple[OurLease, ...] = ()
    mismatched: tuple[Mismatch, ...] = ()

    @property
    def clean(self) -> bool:
        return not (self.only_in_kea or self.only_in_ours or self.mismatched)

    def summary(self) -> dict[str, list[str]]:
        return {
            "only_in_kea": [lease.ip for lease in self.only_in_kea],
            "only_in_ours": [lease.ip for lease in self.only_in_ours],
            "mismatched": [m.ours.ip for m in self.mismatched],
        }


@dataclass(frozen=True, kw_only=True)
class ApplyResult:
    deleted: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    failed: tuple[tuple[str, str], ...] = ()  # (ip, why)


@dataclass(frozen=True, kw_only=True)
class KeaCommand:
    """One control-agent command, ready to encode."""

    command: str
    arguments: Mapping[str, Any] | None = None
    service: tuple[str, ...] = ("dhcp4",)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"command": self.command, "service": list(self.service)}
        if self.arguments is not None:
            body["arguments"] = dict(self.arguments)
        return body

    def encode(self) -> bytes:
        return json.dumps(self.to_json()).encode()


@dataclass(frozen=True, kw_only=True)
class KeaAnswer:
    """Kea's answer for one service."""

    result: int
    text: str = ""
    arguments: Any = None


# --- pure request building ------------------------------------------------------------------


def lease_arguments(
    *,
    ip: str,
    hwaddr: str | bytes | None,
    client_id: str | bytes | None = None,
    subnet_id: int | None = None,
    valid_lft: int | None = None,
    hostname: str | None = None,
) -> dict[str, Any]:
    # Kea requires "hw-address" on every lease4-add; an empty one is accepted when a client
    # id names the holder instead.
    args: dict[str, Any] = {
        "ip-address": _check_ip(ip),
        "hw-address": normalize_hex(hwaddr) if hwaddr else "",
    }
    if client_id:
        args["client-id"] = client_id_hex(client_id)
    if not args["hw-address"] and "client-id" not in args:
        raise ValueError("a lease needs a hardware address or a client id")
    if subnet_id is not None:
        args["subnet-id"] = int(subnet_id)
    if valid_lft is not None:
        if valid_lft <= 0:
            raise ValueError("valid_lft must be positive")
        args["valid-lft"] = int(valid_lft)
    if hostname:
        args["hostname"] = hostname
    return args


def add_lease_command(**lease: Any) -> KeaCommand:
    return KeaCommand(command="lease4-add", arguments=lease_arguments(**lease))


def update_lease_command(**lease: Any) -> KeaCommand:
    # force-create: reconciliation wants the lease to exist afterwards whatever Kea had.
    args = lease_arguments(**lease) | {"force-create": True}
    return KeaCommand(command="lease4-update", arguments=args)


def delete_lease_command(ip: str) -> KeaCommand:
    return KeaCommand(command="lease4-del", arguments={"ip-address": _check_ip(ip)})


def get_lease_command(ip: str) -> KeaCommand:
    return KeaCommand(command="lease4-get", arguments={"ip-address": _check_ip(ip)})


def list_leases_command(subnet_id: int | None = None) -> KeaCommand:
    args = None if subnet_id is None else {"subnets": [int(subnet_id)]}
    return KeaCommand(command="lease4-get-all", arguments=args)


# --- pure answer interpretation -------------------------------------------------------------

# The agent answers result 1 with these words when kea-dhcp4 behind it is not running.
_OFFLINE = ("unable to forward command", "likely to be offline", "server is not available")


def parse_answer(status: int, body: bytes, command: str = "") -> KeaAnswer:
    """The dhcp4 service's answer from the agent's HTTP status and body.

    Raises `KeaAuthError` (401), `KeaUnavailable` (kea-dhcp4 offline, 5xx) or
    `KeaCommandError` (other HTTP errors, malformed answers).
    """
    where = f"{command}: " if command else ""
    if status == 401:
        raise KeaAuthError(f"{where}control agent refused the credentials (HTTP 401)")
    if status in (502, 503, 504):
        raise KeaUnavailable(f"{where}control agent answered HTTP {status}")
    try:
        decoded = json.loads(body.decode() or "null")
    except (UnicodeDecodeError, ValueError) as exc:
        raise KeaCommandError(f"{where}HTTP {status}, answer is not JSON") from exc
    # The agent wraps forwarded answers in a list (one per service); its own errors
    # (HTTP 400, unknown service) come as a bare object.
    if isinstance(decoded, list):
        if not decoded or not isinstance(decoded[0], dict):
            raise KeaCommandError(f"{where}HTTP {status}, empty answer")
        decoded = decoded[0]
    if not isinstance(decoded, dict) or "result" not in decoded:
        raise KeaCommandError(f"{where}HTTP {status}, answer has no result")
    answer = KeaAnswer(
        result=int(decoded["result"]),
        text=str(decoded.get("text", "")),
        arguments=decoded.get("arguments"),
    )
    if status != 200:
        raise KeaCommandError(f"{where}HTTP {status}: {answer.text}", result=answer.result)
    if answer.result == RESULT_ERROR and any(w in answer.text for w in _OFFLINE):
        raise KeaUnavailable(f"{where}{answer.text}")
    return answer


def _fail(command: str, answer: KeaAnswer) -> KeaCommandError:
    return KeaCommandError(f"{command}: {answer.text or 'result ' + str(answer.result)}",
                           result=answer.result)


def interpret_add(answer: KeaAnswer, ip: str) -> None:
    if answer.result == RESULT_SUCCESS:
        return
    if answer.result == RESULT_ERROR and "already exists" in answer.text:
        raise LeaseConflict(ip, answer.text)
    raise _fail("lease4-add", answer)


def interpret_update(answer: KeaAnswer) -> None:
    if answer.result != RESULT_SUCCESS:
        raise _fail("lease4-update", answer)


def interpret_delete(answer: KeaAnswer) -> bool:
    """True when a lease was deleted, False when there was none (release is idempotent)."""
    if answer.result == RESULT_SUCCESS:
        return True
    if answer.result == RESULT_EMPTY:
        return False
    raise _fail("lease4-del", answer)


def interpret_get(answer: KeaAnswer) -> KeaLease | None:
    if answer.result == RESULT_EMPTY:
        return None
    if answer.result != RESULT_SUCCESS or not isinstance(answer.arguments, dict):
        raise _fail("lease4-get", answer)
    return KeaLease.from_kea(answer.arguments)


def interpret_list(answer: KeaAnswer) -> list[KeaLease]:
    if answer.result == RESULT_EMPTY:
        return []
    if answer.result != RESULT_SUCCESS or not isinstance(answer.arguments, dict):
        raise _fail("lease4-get-all", answer)
    return [KeaLease.from_kea(raw) for raw in answer.arguments.get("leases", [])]


# --- pure reconciliation --------------------------------------------------------------------


def as_our_leases(ours: Iterable[OurLease | tuple[str, str | bytes]]) -> list[OurLease]:
    return [o if isinstance(o, OurLease) else OurLease.of(o[0], o[1]) for o in ours]


def diff_leases(
    kea: Iterable[KeaLease], ours: Iterable[OurLease | tuple[str, str | bytes]]
) -> ReconcileReport:
    """What differs between Kea's leases and ours, by address.

    Kea's expired-reclaimed or declined leases (state != 0) are not holdings, so they only
    count when we hold the address too (then they are a mismatch to fix).
    """
    kea_by_ip = {lease.ip: lease for lease in kea}
    ours_by_ip = {lease.ip: lease for lease in as_our_leases(ours)}
    only_in_kea = tuple(
        lease for ip, lease in sorted(kea_by_ip.items(), key=_ip_key)
        if ip not in ours_by_ip and lease.state == 0
    )
    only_in_ours: list[OurLease] = []
    mismatched: list[Mismatch] = []
    for ip, our in sorted(ours_by_ip.items(), key=_ip_key):
        theirs = kea_by_ip.get(ip)
        if theirs is None:
            only_in_ours.append(our)
        elif theirs.state != 0 or our.identity not in theirs.identities():
            mismatched.append(Mismatch(ours=our, kea=theirs))
    return ReconcileReport(
        only_in_kea=only_in_kea, only_in_ours=tuple(only_in_ours), mismatched=tuple(mismatched)
    )


def _ip_key(item: tuple[str, object]) -> int:
    return int(ipaddress.IPv4Address(item[0]))


def _our_lease_fields(our: OurLease, valid_lft: int | None) -> dict[str, Any]:
    return {
        "ip": our.ip,
        "hwaddr": our.hwaddr,
        "client_id": our.client_id,
        "subnet_id": our.subnet_id,
        "valid_lft": our.valid_lft or valid_lft,
        "hostname": our.hostname,
    }


def plan_fixes(report: ReconcileReport, *, valid_lft: int | None = None) -> list[KeaCommand]:
    """Commands that make Kea match ours: delete strays, overwrite mismatches, add missing."""
    plan = [delete_lease_command(lease.ip) for lease in report.only_in_kea]
    plan += [update_lease_command(**_our_lease_fields(m.ours, valid_lft))
             for m in report.mismatched]
    plan += [add_lease_command(**_our_lease_fields(o, valid_lft)) for o in report.only_in_ours]
    return plan


# --- transport -----------------------------------------------------------------------------


class Transport(Protocol):
    def post(self, body: bytes) -> tuple[int, bytes]: ...


@dataclass(frozen=True, kw_only=True)
class HttpTransport:
    """POST JSON to the control agent; connection failures become `KeaUnavailable`."""

    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT
    headers: Mapping[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"Kea control agent URL must be http(s): {self.url!r}")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.username is not None:
            token = base64.b64encode(f"{self.username}:{self.password or ''}".encode())
            headers["Authorization"] = "Basic " + token.decode()
        object.__setattr__(self, "headers", headers)

    def post(self, body: bytes) -> tuple[int, bytes]:
        request = urllib.request.Request(  # noqa: S310 - scheme checked in __post_init__
            self.url, data=body, headers=dict(self.headers), method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            # The agent's error statuses carry a JSON body worth interpreting.
            with exc:
                return int(exc.code), exc.read()
        except (OSError, http.client.HTTPException) as exc:
            # URLError (refused, DNS), TimeoutError and a dropped connection all mean the
            # agent may answer on a later attempt.
            raise KeaUnavailable(f"control agent {self.url} unreachable: {exc}") from exc


# --- the client ----------------------------------------------------------------------------


class KeaClient:
    """Leases in Kea through its control agent."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    @classmethod
    def from_url(
        cls,
        url: str,
        username: str | None = None,
        password: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> KeaClient:
        """A client for the agent at `url`; credentials may also come as `http://u:p@host/`."""
        parts = urllib.parse.urlsplit(url)
        if parts.username is not None:
            # urllib does not send userinfo itself; it becomes the basic-auth header.
            username = username or urllib.parse.unquote(parts.username)
            password = password or urllib.parse.unquote(parts.password or "")
            host = parts.hostname or ""
            netloc = f"[{host}]" if ":" in host else host
            netloc += f":{parts.port}" if parts.port else ""
            url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
        return cls(HttpTransport(url=url, username=username, password=password, timeout=timeout))

    def call(self, command: KeaCommand) -> KeaAnswer:
        status, body = self.transport.post(command.encode())
        return parse_answer(status, body, command.command)

    def ping(self) -> None:
        """Raise unless the agent and kea-dhcp4 behind it both answer."""
        answer = self.call(KeaCommand(command="list-commands"))
        if answer.result != RESULT_SUCCESS:
            raise _fail("list-commands", answer)

    def add_lease(
        self,
        ip: str,
        hwaddr: str | bytes | None,
        client_id: str | bytes | None = None,
        subnet_id: int | None = None,
        valid_lft: int | None = None,
        hostname: str | None = None,
    ) -> None:
        """lease4-add; `LeaseConflict` when Kea already has a lease for `ip`."""
        command = add_lease_command(ip=ip, hwaddr=hwaddr, client_id=client_id,
                                    subnet_id=subnet_id, valid_lft=valid_lft, hostname=hostname)
        interpret_add(self.call(command), ip)

    def commit_lease(
        self,
        ip: str,
        hwaddr: str | bytes | None,
        client_id: str | bytes | None = None,
        subnet_id: int | None = None,
        valid_lft: int | None = None,
        hostname: str | None = None,
    ) -> KeaLease | None:
        """`add_lease` that a retried operation may repeat safely.

        A commit whose answer was lost (timeout) and is retried finds its own lease: that
        is success, not a conflict. Returns the lease Kea already had in that case, else
        None. A lease held by anyone else raises `LeaseConflict` naming the holder.
        """
        try:
            self.add_lease(ip, hwaddr, client_id, subnet_id, valid_lft, hostname)
            return None
        except LeaseConflict as conflict:
            holder = self.get_lease(ip)
            ident = client_id_hex(client_id) if client_id else normalize_hex(hwaddr or "")
            if holder is not None and ident in holder.identities():
                return holder
            raise LeaseConflict(ip, conflict.message, holder) from conflict

    def delete_lease(self, ip: str) -> bool:
        """lease4-del; False when Kea had no lease (a repeated release is not an error)."""
        return interpret_delete(self.call(delete_lease_command(ip)))

    def get_lease(self, ip: str) -> KeaLease | None:
        return interpret_get(self.call(get_lease_command(ip)))

    def list_leases(self, subnet_id: int | None = None) -> list[KeaLease]:
        return interpret_list(self.call(list_leases_command(subnet_id)))

    def reconcile(
        self,
        ours: Iterable[OurLease | tuple[str, str | bytes]],
        subnet_id: int | None = None,
    ) -> ReconcileReport:
        """Compare Kea's leases (of one subnet, or all) with ours; changes nothing.

        With `subnet_id`, `ours` must hold that subnet's leases only (Kea's subnet ids are
        the ones in its config); anything else would show up as missing from Kea.
        """
        return diff_leases(self.list_leases(subnet_id), ours)

    def apply(self, report: ReconcileReport, *, valid_lft: int | None = None) -> ApplyResult:
        """Make Kea match ours as `report` describes; one failure does not stop the rest."""
        done: dict[str, list[str]] = {"lease4-del": [], "lease4-add": [], "lease4-update": []}
        failed: list[tuple[str, str]] = []
        for command in plan_fixes(report, valid_lft=valid_lft):
            ip = str((command.arguments or {})["ip-address"])
            try:
                answer = self.call(command)
                if command.command == "lease4-del":
                    interpret_delete(answer)
                elif command.command == "lease4-add":
                    interpret_add(answer, ip)
                else:
                    interpret_update(answer)
            except (LeaseConflict, KeaCommandError) as exc:
                failed.append((ip, str(exc)))
                continue
            done[command.command].append(ip)
        return ApplyResult(
            deleted=tuple(done["lease4-del"]),
            added=tuple(done["lease4-add"]),
            updated=tuple(done["lease4-update"]),
            failed=tuple(failed),
        )
