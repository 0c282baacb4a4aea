"""bench/tables.py: what it reads and the mean ± std it prints."""
from __future__ import annotations

import json

import pytest

from script_util import load_script

tables = load_script("bench/tables.py", "tables")


def _final(seed: int, hr: float) -> dict:
    return {"seed": seed, "best_round": 20 * (seed + 1), "test": {"sampled_hr@10": hr}}


def test_load_reads_run_dirs_summaries_and_final_files(tmp_path):
    run = tmp_path / "run-s0"
    run.mkdir()
    (run / "final.json").write_text(json.dumps(_final(0, 0.1)))
    summary = tmp_path / "x-summary.json"
    summary.write_text(json.dumps({"seeds": [1, 2], "finals": [_final(1, 0.2), _final(2, 0.3)]}))
    kept = tmp_path / "kept.json"
    kept.write_text(json.dumps(_final(3, 0.4)))
    finals = [f for p in (run, summary, kept) for f in tables.load(p)]
    assert [f["seed"] for f in finals] == [0, 1, 2, 3]
    line = tables.row("x", finals[:3], ["sampled_hr@10"], 100.0)
    assert line == "| x | 20.00 ± 10.00 | 3 | 20,40,60 |"


def test_load_rejects_a_file_of_another_shape(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"round": 3}))
    with pytest.raises(ValueError, match="bad.json.*finals"):
        tables.load(bad)


def test_missing_paths_and_non_json_are_named(tmp_path):
    with pytest.raises(ValueError, match="nope.*no such run directory"):
        tables.load(tmp_path / "nope")
    (tmp_path / "unfinished").mkdir()
    with pytest.raises(ValueError, match="unfinished: no final.json"):
        tables.load(tmp_path / "unfinished")
    (tmp_path / "half.json").write_text('{"finals": [')
    with pytest.raises(ValueError, match="half.json: not JSON"):
        tables.load(tmp_path / "half.json")


def test_cli_names_the_bad_path_and_prints_no_table(tmp_path, monkeypatch, capsys):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_final(0, 0.1)))
    monkeypatch.setattr("sys.argv", ["tables.py", "--metrics", "sampled_hr@10", "--row", f"a={good}", "--row", f"b={tmp_path / 'gone'}"])
    with pytest.raises(SystemExit, match="tables.py: .*gone: no such run directory"):
        tables.main()
    assert capsys.readouterr().out == ""
    monkeypatch.setattr("sys.argv", ["tables.py", "--metrics", "full_hr@50", "--row", f"a={good}"])
    with pytest.raises(SystemExit, match="no test metric 'full_hr@50' for seed.*sampled_hr@10"):
        tables.main()


def test_reference_rows_follow_their_run(tmp_path):
    from script_util import load_script

    tables = load_script("bench/tables.py", "tables_ref")
    finals = [{"seed": s, "best_round": 20, "test": {"sampled_hr@10": 0.5 + s / 100},
               "reference": {"mostpop": {"test": {"sampled_hr@10": 0.3}},
                             "centralised": {"best_epoch": 30, "test": {"sampled_hr@10": 0.7}}}}
              for s in (0, 1)]
    lines = tables.rows("pfedrec", finals, ["sampled_hr@10"], 100.0)
    assert lines[0].startswith("| pfedrec | 50.50 ± 0.71 | 2 | 20 |")
    assert lines[1] == "| pfedrec: mostpop | 30.00 ± 0.00 | 2 | - |"
    assert lines[2] == "| pfedrec: centralised | 70.00 ± 0.00 | 2 | 30 |"
    assert len(tables.rows("x", finals, ["sampled_hr@10"], 100.0, references=False)) == 1
    # --reference first: the floor and ceiling only under the first row
    import argparse

    for i, f in enumerate(finals):
        (tmp_path / f"r{i}").mkdir()
        (tmp_path / f"r{i}" / "final.json").write_text(json.dumps(f))
    ns = argparse.Namespace(metrics=["sampled_hr@10"], scale=100.0, max_round=None, dirs=[], paired=[],
                            reference="first", row=[f"a={tmp_path / 'r0'}", f"b={tmp_path / 'r1'}"])
    assert [line.split(" |")[0] for line in tables._lines(ns)[2:]] == [
        "| a", "| a: mostpop", "| a: centralised", "| b"]
    del finals[1]["reference"]
    assert len(tables.rows("x", finals, ["sampled_hr@10"], 100.0)) == 1


def test_max_round_reselects_the_best_round_of_a_shorter_run(tmp_path):
    run = tmp_path / "run-s0"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"select-metric": "valid_sampled_hr@10"}))
    rounds = [{"round": 1, "train-loss": 0.5},
              {"round": 2, "valid_sampled_hr@10": 0.3, "test_sampled_hr@10": 0.25},
              {"round": 4, "valid_sampled_hr@10": 0.2, "test_sampled_hr@10": 0.35},
              {"round": 6, "valid_sampled_hr@10": 0.9, "test_sampled_hr@10": 0.8}]
    (run / "rounds.jsonl").write_text("\n".join(json.dumps(r) for r in rounds) + "\n")
    (run / "final.json").write_text(json.dumps({**_final(0, 0.8), "best_round": 6, "reference": {}}))
    (short,) = tables.load(run, max_round=5)
    assert short["best_round"] == 2 and short["test"] == {"sampled_hr@10": 0.25}
    assert short["reference"] == {} and short["seed"] == 0
    assert tables.load(run)[0]["best_round"] == 6
    with pytest.raises(ValueError, match="no evaluated round <= 1"):
        tables.load(run, max_round=1)


def test_paired_differences_match_seeds_and_refuse_unequal_seed_sets():
    a = [_final(1, 0.30), _final(0, 0.50)]
    b = [_final(0, 0.40), _final(1, 0.35)]
    line = tables.paired("a", a, "b", b, ["sampled_hr@10"], 100.0)
    assert line == "| a − b | +10.00 / -5.00 (mean +2.50) | 0 / 1 |"
    with pytest.raises(ValueError, match="seeds"):
        tables.paired("a", a, "b", b[:1], ["sampled_hr@10"], 100.0)
