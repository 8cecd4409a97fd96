"""The real-client launchers say how to install a missing client instead of skipping."""

from __future__ import annotations

import pytest

from bench.peers import clients
from bench.peers.clients import ClientMissing, require_client


def test_missing_client_names_its_package_and_make_test() -> None:
    with pytest.raises(ClientMissing, match=r"install .* \(make test installs it\)"):
        require_client("no-such-dhcp-client")


@pytest.mark.parametrize("binary, package", [("dhclient", "isc-dhcp-client"),
                                             ("udhcpc", "udhcpc"), ("dhcpcd", "dhcpcd-base")])
def test_each_client_names_its_debian_package(monkeypatch, binary, package) -> None:
    monkeypatch.setattr(clients.shutil, "which", lambda *a, **k: None)
    with pytest.raises(ClientMissing, match=f"install Debian package {package} "):
        require_client(binary)
