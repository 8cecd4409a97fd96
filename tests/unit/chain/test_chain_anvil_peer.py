"""The anvil peer helper fails clearly when anvil is not installed."""

from __future__ import annotations

import pytest

from bench.peers import anvil as anvil_peer


def test_missing_anvil_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(anvil_peer, "ANVIL_BINARY", tmp_path / "node_modules" / "anvil")
    monkeypatch.setattr(anvil_peer, "REPO_ROOT", tmp_path)
    with pytest.raises(anvil_peer.AnvilUnavailable, match="make node"):
        anvil_peer.start_anvil()
