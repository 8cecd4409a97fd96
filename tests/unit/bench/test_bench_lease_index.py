"""`leaseflow bench lease_index`: it loads the leases it wrote and says how fast and how big,
and refuses a count its pool cannot hold with one line."""

from __future__ import annotations

import re

import pytest

from bench import lease_index
from lf_support import pg_url


@pytest.mark.integration
def test_the_bench_loads_the_leases_it_wrote_and_prints_its_figures(capsys):
    assert lease_index.main(["--leases", "400", "--database-url", pg_url()]) == 0
    out = capsys.readouterr().out
    assert "400 leases (300 holding)" in out  # one in four released
    assert re.search(r"load \d+\.\d\d s \([\d,]+ leases/s\); index [\d,]+ bytes per lease",
                     out)


@pytest.mark.parametrize("count", ["0", "-5", "99999999"])
def test_a_lease_count_the_pool_cannot_hold_is_one_line_on_stderr(capsys, count):
    assert lease_index.main(["--leases", count, "--database-url", pg_url()]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--leases must be 1.." in err
