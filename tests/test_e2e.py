"""End to end through Flower's real simulation engine (``flwr run``) on a tiny dataset."""
from __future__ import annotations

import json

import pytest

from e2e_util import finals, run_app


@pytest.mark.parametrize("backbone", ["pfedrec"])
def test_two_round_simulation_writes_outputs(tmp_path, tiny_grouplens, backbone):
    proc, out = run_app(tmp_path, tiny_grouplens,
                        f"backbone='{backbone}' num-server-rounds=3 eval-every=2 fraction-train=0.5 "
                        f"aggregation='itemwise'", seeds=[1, 2])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "mean ± std" in proc.stdout
    runs = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(runs) == 2
    for run in runs:
        cfg = json.loads((run / "config.json").read_text())
        assert cfg["backbone"] == backbone and cfg["num-users"] == 12
        rounds = [json.loads(line) for line in (run / "rounds.jsonl").read_text().splitlines()]
        assert [r["round"] for r in rounds] == [1, 2, 3]
        assert "eval-users" not in rounds[0] and rounds[1]["eval-users"] == 12
        assert rounds[0]["clients"] == 6 and rounds[0]["bytes-up-per-client"] > 0
        for r in rounds:  # per client [received, sent], consistent with the per-round means
            per = r["client-bytes"]
            assert len(per) == 6 and all(0 <= int(u) < 12 for u in per)
            assert sum(d for d, _ in per.values()) / 6 == pytest.approx(r["bytes-down-per-client"])
            assert sum(u for _, u in per.values()) / 6 == pytest.approx(r["bytes-up-per-client"])
    for f in finals(out):
        assert f["status"] == "ok" and f["best_round"] in (2, 3)
        assert set(f["test"]) >= {"full_hr@10", "sampled_ndcg@50"}
        assert all(0.0 <= v <= 1.0 for v in f["test"].values())
        assert f["eval_users"] == 12


def test_failed_run_exits_nonzero_and_keeps_results(tmp_path, tiny_grouplens):
    proc, out = run_app(tmp_path, tiny_grouplens, "num-server-rounds=1 eval-every=1", seeds=[0])
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # A bad key fails before anything starts, with the key named.
    proc = run_app(tmp_path, tiny_grouplens, "no-such-key=1")[0]
    assert proc.returncode == 2 and "no-such-key" in proc.stderr
    # A run that fails inside the ServerApp (lr so large training diverges to NaN) exits non-zero.
    proc = run_app(tmp_path, tiny_grouplens, "num-server-rounds=1 eval-every=1 items-lr=1e30 "
                   "private-lr=1e30 items-optimizer='sgd' private-optimizer='sgd'", seeds=[0])[0]
    assert proc.returncode != 0
    after = {p: p.read_bytes() for p in before}
    assert after == before  # earlier results untouched


def test_same_seed_trains_the_same_users_and_gives_the_same_result(tmp_path, tiny_grouplens):
    # The simulation engine draws new node ids every run; the strategy samples users.
    runs = []
    for k in range(2):
        (tmp_path / str(k)).mkdir()
        proc, out = run_app(tmp_path / str(k), tiny_grouplens,
                            "num-server-rounds=2 eval-every=2 fraction-train=0.5", seeds=[3])
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        (run,) = [p for p in out.iterdir() if p.is_dir()]
        rounds = [json.loads(line) for line in (run / "rounds.jsonl").read_text().splitlines()]
        runs.append(([sorted(r["client-bytes"]) for r in rounds], finals(out)[0]["test"]))
    assert runs[0][0] == runs[1][0] and all(len(users) == 6 for users in runs[0][0])
    assert runs[0][1] == runs[1][1]


@pytest.mark.parametrize("backbone", ["fedmf", "fedncf", "pfedrec", "fedrap", "fedpergnn"])
def test_every_backbone_learns_beyond_mostpop_through_flower(tmp_path, backbone):
    """Grouped tastes with unequal group sizes: the most popular items are the big group's, so
    MostPop misses the other groups' held-out items. Each backbone, with its default optimisers,
    trained through Flower's engine, must rank each user's own group first: beat MostPop by a
    clear margin on full-ranking HR@10 (test, validation-selected round)."""
    from conftest import write_grouped_grouplens

    data = write_grouped_grouplens(tmp_path / "grouped")
    proc, out = run_app(tmp_path, data, f"backbone='{backbone}' num-server-rounds=30 eval-every=5 "
                        "fraction-train=1.0 centralised-epochs=30 centralised-lr=0.05", seeds=[0])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (final,) = finals(out)
    fed = final["test"]["full_hr@10"]
    floor = final["reference"]["mostpop"]["test"]["full_hr@10"]
    ceiling = final["reference"]["centralised"]["test"]["full_hr@10"]
    assert floor < 0.35  # the data is built so that popularity ranks badly
    assert fed >= floor + 0.15, (backbone, fed, floor)
    assert 0.0 <= ceiling <= 1.0  # present; its strength is tested in test_reference.py
    assert "mostpop" in proc.stdout and "centralised" in proc.stdout  # the three rows are printed
