"""bench/selection_overlap.py: the repeat and coverage figures it prints from rounds.jsonl."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from script_util import load_script

bench = load_script("bench/selection_overlap.py", "selection_overlap")


def _write(run: Path, rows: list[dict]) -> Path:
    run.mkdir()
    (run / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_repeat_is_the_client_round_mean_and_coverage_the_tenths(tmp_path):
    rows = [{"round": 1, "selection-coverage": 0.1, "selection-repeat-clients": 0}]
    rows += [{"round": r, "selection-coverage": 0.1 + 0.01 * r, "selection-repeat": 0.2,
              "selection-repeat-clients": 1} for r in range(2, 11)]
    rows[-1].update({"selection-repeat": 0.7, "selection-repeat-clients": 4})
    o = bench.overlap(_write(tmp_path / "fedsllm-s0", rows))
    assert o["repeat-client-rounds"] == 12
    assert o["repeat"] == pytest.approx((8 * 0.2 + 4 * 0.7) / 12)
    assert o["tenth"] == 1 and o["coverage-first"] == 0.1
    assert o["coverage-last"] == pytest.approx(0.2)


def test_runs_without_the_bookkeeping_are_named(tmp_path):
    old = _write(tmp_path / "old", [{"round": 1, "selection-ms": 2.0}])
    with pytest.raises(SystemExit, match="old/rounds.jsonl: no 'selection-coverage'"):
        bench.overlap(old)
    with pytest.raises(SystemExit, match="nope/rounds.jsonl: no such file"):
        bench.overlap(tmp_path / "nope")
