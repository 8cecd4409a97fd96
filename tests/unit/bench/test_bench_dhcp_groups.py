"""`leaseflow bench dhcp_groups`: it binds the groups it asks for and prints, per size, the
CPU figures and the round trips of a group of bindings, which do not grow with the group."""

from __future__ import annotations

import re

import pytest

from bench import dhcp_groups
from lf_support import pg_url

pytestmark = pytest.mark.integration


def test_the_bench_prints_a_row_per_size_with_its_round_trips(capsys):
    assert dhcp_groups.main(["--sizes", "1,64", "--database-url", pg_url()]) == 0
    out = capsys.readouterr().out
    rows = dict(re.findall(r"^\s+(\d+)\s+[\d,]+\s+[\d,]+\s+[\d,]+\s+(\d+)$", out, re.M))
    assert set(rows) == {"1", "64"}, out
    # One statement per step of the group whatever its size: a table of short rows goes
    # in the statement with the others, not by COPY (see uow.insert_tables).
    assert rows["1"] == rows["64"], out
    assert 3 <= int(rows["64"]) <= 8, out
