"""The chain benchmark runs end to end on the embedded chain (figures are not asserted)."""

from __future__ import annotations

from bench.chain import main


def test_bench_chain_runs_on_embedded(capsys):
    code = main(["--chains", "embedded", "--unbatched", "2", "--batched", "30",
                 "--submitters", "3", "--max-items", "10", "--ledger-rows", "200",
                 "--anchor-every", "50"])
    out = capsys.readouterr().out
    assert code == 0
    assert "embedded  batched" in out and "ledger verify: 200 rows, 4 anchors" in out
    assert "cores" in out
