"""How the Kea peer is configured and what it says when Kea is not installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.peers import kea as kea_peer
from bench.peers import perfdhcp


def test_dhcp4_config_is_memfile_one_thread_warn_with_lease_cmds(tmp_path: Path) -> None:
    config = kea_peer.dhcp4_config(
        interfaces=["lfs1"], subnet="10.77.0.0/16", pool="10.77.1.0 - 10.77.255.254",
        subnet_id=1, valid_lifetime=3600, socket_path=tmp_path / "s", lease_file=tmp_path / "l",
        log_file=tmp_path / "log", lease_cmds="/hooks/libdhcp_lease_cmds.so",
    )["Dhcp4"]
    assert config["lease-database"]["type"] == "memfile"
    assert config["multi-threading"] == {"enable-multi-threading": False}
    assert config["loggers"][0]["severity"] == "WARN"
    assert config["hooks-libraries"] == [{"library": "/hooks/libdhcp_lease_cmds.so"}]
    assert config["interfaces-config"] == {"interfaces": ["lfs1"]}
    assert config["control-socket"]["socket-name"] == str(tmp_path / "s")


@pytest.mark.parametrize("auth", [None, ("leaseflow", "secret")])
def test_agent_config_listens_on_loopback(tmp_path: Path, auth: tuple[str, str] | None) -> None:
    config = kea_peer.agent_config(port=8123, socket_path=tmp_path / "s",
                                   log_file=tmp_path / "log", auth=auth)["Control-agent"]
    assert config["http-host"] == "127.0.0.1"
    assert config["control-sockets"]["dhcp4"]["socket-name"] == str(tmp_path / "s")
    if auth is None:
        assert "authentication" not in config
    else:
        assert config["authentication"]["clients"] == [{"user": "leaseflow",
                                                        "password": "secret"}]


def test_missing_kea_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kea_peer.shutil, "which", lambda name: None)
    monkeypatch.setattr(kea_peer, "_sbin", lambda name: None)
    with pytest.raises(kea_peer.KeaMissing, match="install kea-dhcp4-server kea-ctrl-agent"):
        kea_peer.find_kea()


def test_missing_lease_cmds_hook_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kea_peer.shutil, "which", lambda name: "/usr/sbin/" + name)
    monkeypatch.setattr(kea_peer, "_hooks_dirs", lambda: [])
    with pytest.raises(kea_peer.KeaMissing, match="make test installs it"):
        kea_peer.find_kea()


def test_missing_perfdhcp_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(perfdhcp.shutil, "which", lambda name: None)
    with pytest.raises(perfdhcp.PerfdhcpError, match="install kea-admin"):
        perfdhcp.find_perfdhcp()
