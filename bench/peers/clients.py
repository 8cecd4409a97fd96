"""Real DHCP clients (ISC dhclient, busybox udhcpc, dhcpcd) run inside a test namespace.

Each client gets its own work directory with a hook script of ours, so nothing touches the
machine's resolver or hostname: the hook only logs `<reason> <address>` lines to an events
file and (for dhclient and udhcpc, which leave that to the script) sets the address on the
namespace's interface. dhcpcd configures the interface itself.

Every launcher here is a context manager or has `stop()`, and tests call it in `finally`, so
no client outlives its test: dhclient daemonizes and is killed by its pid file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from bench.peers.netns import Namespace

PACKAGES = {"dhclient": "isc-dhcp-client", "udhcpc": "udhcpc", "dhcpcd": "dhcpcd-base"}


class ClientMissing(RuntimeError):
    """A client binary is not installed."""


class ClientTimeout(RuntimeError):
    """A client did not reach the expected state in time."""


def require_client(binary: str) -> str:
    path = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/sbin")
    if path is None:
        package = PACKAGES.get(binary, binary)
        raise ClientMissing(
            f"{binary} not found: install Debian package {package} (make test installs it)"
        )
    return path


_HOOK_HEAD = "#!/bin/sh\n# From bench/peers/clients.py: logs events, touches only its namespace.\n"

# dhclient: $reason, $interface, $new_ip_address, $new_subnet_mask.
_DHCLIENT_HOOK = _HOOK_HEAD + """\
case "$reason" in
  PREINIT) ip link set dev "$interface" up ;;
  BOUND|RENEW|REBIND|REBOOT)
    if [ -n "$old_ip_address" ] && [ "$old_ip_address" != "$new_ip_address" ]; then
      ip -4 addr flush dev "$interface"
    fi
    ip addr replace "$new_ip_address/$new_subnet_mask" dev "$interface" ;;
  EXPIRE|FAIL|RELEASE|STOP) ip -4 addr flush dev "$interface" ;;
esac
echo "$reason ${new_ip_address:-$old_ip_address}" >> "EVENTS"
exit 0
"""

# udhcpc: $1 = deconfig|bound|renew|nak|leasefail; $interface, $ip, $subnet.
_UDHCPC_HOOK = _HOOK_HEAD + """\
case "$1" in
  deconfig) ip -4 addr flush dev "$interface"; ip link set dev "$interface" up ;;
  bound|renew) ip addr replace "$ip/$subnet" dev "$interface" ;;
esac
echo "$1 $ip" >> "EVENTS"
exit 0
"""

# dhcpcd configures the interface itself; $reason, $new_ip_address.
_DHCPCD_HOOK = _HOOK_HEAD + """\
echo "$reason ${new_ip_address:-$old_ip_address}" >> "EVENTS"
exit 0
"""

# No IPv4LL, no start-up delay and no ARP probe, or it waits seconds (FIELD-NOTES); no
# resolv.conf, hostname or NTP hooks (we pass our own script anyway).
_DHCPCD_CONF = """\
noipv4ll
nodelay
noarp
ipv4only
nohook resolv.conf, hostname, ntp.conf, timesyncd.conf
option subnet_mask, routers, domain_name_servers
"""


class DhcpClient:
    """Common part: work dir, hook, events file, the namespace's address."""

    binary = ""
    hook_template = ""

    def __init__(self, ns: Namespace, workdir: Path) -> None:
        self.path = require_client(self.binary)
        self.ns = ns
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.events_file = workdir / "events"
        self.events_file.touch()
        self.hook = workdir / f"{self.binary}-hook.sh"
        self.hook.write_text(self.hook_template.replace("EVENTS", str(self.events_file)))
        self.hook.chmod(0o755)

    def events(self) -> list[tuple[str, str]]:
        out = []
        for line in self.events_file.read_text().splitlines():
            reason, _, address = line.partition(" ")
            out.append((reason, address.strip()))
        return out

    def wait_event(self, reasons: Iterable[str], *, after: int = 0,
                   timeout: float = 20.0) -> tuple[str, str]:
        """The first event with one of `reasons` among events[after:]; polls until timeout."""
        wanted = set(reasons)
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events()[after:]:
                if event[0] in wanted:
                    return event
            if time.monotonic() > deadline:
                raise ClientTimeout(
                    f"{self.binary}: no {sorted(wanted)} within {timeout}s; "
                    f"events so far: {self.events()}")
            time.sleep(0.05)

    def address(self) -> str | None:
        """The IPv4 address on the client's interface, if any."""
        out = self.ns.run(["ip", "-4", "-o", "addr", "show", "dev", self.ns.interface]).stdout
        for line in out.splitlines():
            parts = line.split()
            if "inet" in parts:
                return parts[parts.index("inet") + 1].split("/")[0]
        return None

    def stop(self) -> None:
        raise NotImplementedError


class Dhclient(DhcpClient):
    """ISC dhclient: `dhclient -4 -1 -sf HOOK -lf F -pf F IF` daemonizes once bound."""

    binary = "dhclient"
    hook_template = _DHCLIENT_HOOK

    def __init__(self, ns: Namespace, workdir: Path) -> None:
        super().__init__(ns, workdir)
        self.lease_file = workdir / "dhclient.leases"
        self.pid_file = workdir / "dhclient.pid"
        self.lease_file.touch()

    def _argv(self, *extra: str) -> list[str]:
        return [self.path, "-4", "-v", "-sf", str(self.hook), "-lf", str(self.lease_file),
                "-pf", str(self.pid_file), *extra, self.ns.interface]

    def obtain(self, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run until bound (then dhclient stays in the background); -1: one try."""
        return self.ns.run(self._argv("-1"), timeout=timeout)

    def release(self, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        """`dhclient -r`: send DHCPRELEASE and stop the running dhclient."""
        return self.ns.run(self._argv("-r"), timeout=timeout)

    def seed_lease(self, *, address: str, mask: str, server: str) -> None:
        """A remembered lease, so the next start is an INIT-REBOOT asking for `address`."""
        far = time.strftime("%w %Y/%m/%d %H:%M:%S", time.gmtime(time.time() + 86400))
        self.lease_file.write_text(
            "lease {\n"
            f'  interface "{self.ns.interface}";\n'
            f"  fixed-address {address};\n"
            f"  option subnet-mask {mask};\n"
            "  option dhcp-lease-time 86400;\n"
            "  option dhcp-message-type 5;\n"
            f"  option dhcp-server-identifier {server};\n"
            f"  renew {far};\n  rebind {far};\n  expire {far};\n"
            "}\n"
        )

    def stop(self) -> None:
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, signal.SIGTERM)
            _wait_gone(pid)


class Udhcpc(DhcpClient):
    """busybox udhcpc in the foreground: SIGUSR1 renews, SIGUSR2 releases."""

    binary = "udhcpc"
    hook_template = _UDHCPC_HOOK

    def __init__(self, ns: Namespace, workdir: Path) -> None:
        super().__init__(ns, workdir)
        self.process: subprocess.Popen[bytes] | None = None

    def _argv(self, *extra: str) -> list[str]:
        return [self.path, "-i", self.ns.interface, "-f", "-n", "-t", "3", "-T", "2",
                "-s", str(self.hook), *extra]

    def obtain(self, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Get a lease and quit (-q), keeping the address."""
        return self.ns.run(self._argv("-q"), timeout=timeout)

    def start(self, *extra: str) -> None:
        """Keep running (renews at T1, answers signals) until stop()."""
        log = (self.workdir / "udhcpc.log").open("wb")
        self.process = self.ns.popen(self._argv(*extra), stdout=log, stderr=subprocess.STDOUT)

    def renew(self) -> None:
        self._signal(signal.SIGUSR1)

    def release(self) -> None:
        self._signal(signal.SIGUSR2)

    def _signal(self, sig: int) -> None:
        # `ip netns exec` execs the client, so the Popen pid is udhcpc itself.
        assert self.process is not None, "start() first"
        self.process.send_signal(sig)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class Dhcpcd(DhcpClient):
    """dhcpcd (dhcpcd-base) in the foreground for one interface, with its own config."""

    binary = "dhcpcd"
    hook_template = _DHCPCD_HOOK

    def __init__(self, ns: Namespace, workdir: Path) -> None:
        super().__init__(ns, workdir)
        self.config = workdir / "dhcpcd.conf"
        self.config.write_text(_DHCPCD_CONF)
        self.process: subprocess.Popen[bytes] | None = None

    def _argv(self, *extra: str) -> list[str]:
        return [self.path, "-f", str(self.config), "-c", str(self.hook), "-4", *extra,
                self.ns.interface]

    def obtain(self, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """One shot: get a lease, configure it and exit (-1), in the foreground (-B)."""
        return self.ns.run(self._argv("-1", "-B", "-t", str(int(timeout) - 5)),
                           timeout=timeout)

    def start(self) -> None:
        log = (self.workdir / "dhcpcd.log").open("wb")
        self.process = self.ns.popen(self._argv("-B", "-d"), stdout=log,
                                     stderr=subprocess.STDOUT)

    def release(self, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        """`dhcpcd -k IF`: the running dhcpcd sends DHCPRELEASE and drops the address."""
        return self.ns.run([self.path, "-4", "-k", self.ns.interface], timeout=timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        # dhcpcd keeps per-interface leases under /var/lib/dhcpcd; ours are throw-away.
        for leftover in Path("/var/lib/dhcpcd").glob(f"{self.ns.interface}*"):
            with contextlib.suppress(OSError):
                leftover.unlink()


def _wait_gone(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def running(client: DhcpClient) -> Iterator[DhcpClient]:
    """Stop `client` however the block ends."""
    try:
        yield client
    finally:
        client.stop()


KINDS: dict[str, type[DhcpClient]] = {"dhclient": Dhclient, "udhcpc": Udhcpc, "dhcpcd": Dhcpcd}


@contextlib.contextmanager
def client_factory(namespace: Namespace, workdir: Path) -> Iterator[Any]:
    """`make(kind)` starts nothing yet: it builds a client of that kind in `namespace`, with
    its own files under `workdir`; every client made is stopped on exit."""
    clients: list[DhcpClient] = []

    def make(kind: str) -> DhcpClient:
        client = KINDS[kind](namespace, workdir / f"{kind}-{len(clients)}")
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for client in clients:
            client.stop()
