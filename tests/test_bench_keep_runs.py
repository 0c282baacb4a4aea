"""bench/keep_runs.py and bench/group_sizes.py: what they keep and count."""
from __future__ import annotations

import json

from script_util import load_script

keep_runs = load_script("bench/keep_runs.py", "keep_runs")
tables = load_script("bench/tables.py", "tables")


def _run(d, best_hr):
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"select-metric": "valid_sampled_ndcg@10"}))
    (d / "final.json").write_text(json.dumps({"seed": 0, "best_round": 2,
                                              "test": {"sampled_hr@10": best_hr}}))
    rounds = [{"round": 1, "loss": 0.5, "client-bytes": {str(i): [1, 2] for i in range(500)}},
              {"round": 2, "valid_sampled_ndcg@10": 0.3, "test_sampled_hr@10": best_hr,
               "client-bytes": {str(i): [1, 2] for i in range(500)}}]
    (d / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rounds))


def test_keeps_finished_runs_with_evaluated_rounds_only(tmp_path):
    out, dest = tmp_path / "out", tmp_path / "kept"
    _run(out / "gfmfr" / "a-s0", 0.61)
    (out / "gfmfr" / "b-s0").mkdir(parents=True)  # unfinished: no final.json
    kept, skipped = keep_runs.keep(out, dest)
    assert kept == ["gfmfr/a-s0"] and skipped == ["gfmfr/b-s0"]
    lines = (dest / "gfmfr" / "a-s0" / "rounds.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == [{"round": 2, "valid_sampled_ndcg@10": 0.3,
                                               "test_sampled_hr@10": 0.61}]
    assert not (dest / "gfmfr" / "b-s0").exists()
    # tables.py reads the kept copy, with and without --max-round
    assert tables.load(dest / "gfmfr" / "a-s0")[0]["test"]["sampled_hr@10"] == 0.61
    assert tables.load(dest / "gfmfr" / "a-s0", max_round=2)[0]["test"]["sampled_hr@10"] == 0.61


def test_all_rounds_and_prompt_log_are_kept(tmp_path):
    out, dest = tmp_path / "out", tmp_path / "kept"
    _run(out / "fedsllm" / "a-s0", 0.55)
    (out / "fedsllm" / "a-s0" / "prototype-prompts.jsonl").write_text('{"prompt": "p"}\n')
    assert keep_runs.keep(out, dest, all_rounds=True) == (["fedsllm/a-s0"], [])
    run = dest / "fedsllm" / "a-s0"
    rounds = [json.loads(x) for x in (run / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2] and all("client-bytes" not in r for r in rounds)
    assert (run / "prototype-prompts.jsonl").read_text() == '{"prompt": "p"}\n'


def test_group_sizes_summary(tmp_path):
    group_sizes = load_script("bench/group_sizes.py", "group_sizes")
    run = tmp_path / "run"
    run.mkdir()
    rounds = [{"round": 1, "gfmfr-group-sizes": [1, 3, 90]}, {"round": 2},
              {"round": 3, "gfmfr-group-sizes": [30, 30, 34]}]
    (run / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rounds))
    s = group_sizes.summary(run)
    assert s["rounds"] == 2 and s["min"] == 15.5 and s["max"] == 62.0
    assert s["singleton"] == 0.5 and s["under5"] == 0.5 and s["sizes"][3] == [30, 30, 34]


def test_group_sizes_skip_empty_groups(tmp_path):
    """gfmfr-min-group-size leaves merged clusters empty: they are not groups of size 0."""
    group_sizes = load_script("bench/group_sizes.py", "group_sizes")
    run = tmp_path / "run"
    run.mkdir()
    (run / "rounds.jsonl").write_text(json.dumps({"round": 1, "gfmfr-group-sizes": [24, 0, 70, 0, 0]}) + "\n")
    s = group_sizes.summary(run)
    assert s["groups"] == 2 and s["min"] == 24 and s["under5"] == 0 and s["sizes"][1] == [24, 70]
