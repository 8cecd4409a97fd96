"""`python -m bench.dhcp --quick` runs end to end against real Kea and perfdhcp.

Only that it runs and prints a figure is checked: benchmark numbers are never asserted.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


def test_quick_bench_against_kea_prints_a_figure() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.dhcp", "--quick", "--only", "kea", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )
    if done.returncode != 0:
        pytest.fail(f"bench.dhcp failed (make test installs kea-dhcp4-server kea-ctrl-agent "
                    f"kea-admin):\n{done.stdout}\n{done.stderr[-2000:]}")
    table = done.stdout.split("\n[", 1)[0]
    assert re.search(r"\d+ cores", table)
    row = next(line for line in table.splitlines() if line.startswith("Kea"))
    assert re.search(r"\d[\d,]* ", row)
    figures = json.loads("[" + done.stdout.split("\n[", 1)[1])
    assert figures[0]["error"] is None
    assert figures[0]["new_leases_per_s"] > 0
    assert figures[0]["renewals_per_s"] > 0
