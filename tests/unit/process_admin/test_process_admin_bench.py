"""bench.engine runs end to end on a small scale and prints its tables (figures not asserted)."""

from __future__ import annotations

import pytest

from bench import engine as bench_engine


def test_bench_engine_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_engine.main(["--instances", "2", "--sizes", "30", "--compare-index"]) == 0
    out = capsys.readouterr().out
    assert "cores" in out and "waiting JSON" in out
    assert "state+wake_at" in out and "as shipped" in out


@pytest.mark.parametrize("argv", [["--sizes", "x"], ["--instances", "0"], ["--sizes", "0"]])
def test_bench_engine_refuses_bad_arguments(argv: list[str],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_engine.main(argv) == 2
    assert "bench.engine:" in capsys.readouterr().err
