"""The in-process engine (fedmm/inprocess.py, ``run.py --engine inprocess``): the same ServerApp
and ClientApp code as a Flower simulation, in one process; same results."""
from __future__ import annotations

import json
import subprocess
import sys

from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from e2e_util import ROOT, finals, run_app
from fedmm.inprocess import InProcessGrid, set_identity

OVERRIDES = "num-server-rounds=3 eval-every=1 fraction-train=0.5 aggregation='itemwise'"


def run_inprocess_app(tmp_path, data_dir, overrides: str, seed: int = 1):
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "run.py"), "--engine", "inprocess", "--out", str(out),
           "--seeds", str(seed), "--run-config",
           f"dataset='grouplens:{data_dir}' cache-dir='{tmp_path / 'cache'}' {overrides}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path), out


def rounds_of(out):
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return [json.loads(line) for line in (run / "rounds.jsonl").read_text().splitlines()]


def test_inprocess_engine_gives_the_flower_simulation_result(tmp_path, tiny_grouplens):
    (tmp_path / "sim").mkdir()
    (tmp_path / "ip").mkdir()
    proc, sim_out = run_app(tmp_path / "sim", tiny_grouplens, OVERRIDES, seeds=[1])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    proc, ip_out = run_inprocess_app(tmp_path / "ip", tiny_grouplens, OVERRIDES)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "in-process engine, 12 nodes" in proc.stdout
    (sim,), (ip,) = finals(sim_out), finals(ip_out)
    assert ip["status"] == "ok" and ip["best_round"] == sim["best_round"]
    assert ip["test"] == sim["test"] and ip["valid"] == sim["valid"]   # bit for bit
    for row in ("mostpop", "centralised"):
        assert ip["reference"][row]["test"] == sim["reference"][row]["test"]
    # The same users trained each round, with the same losses.
    sim_rounds, ip_rounds = rounds_of(sim_out), rounds_of(ip_out)
    assert [sorted(r["client-bytes"]) for r in ip_rounds] == [sorted(r["client-bytes"]) for r in sim_rounds]
    assert [r["train-loss"] for r in ip_rounds] == [r["train-loss"] for r in sim_rounds]


def test_inprocess_gfmfr_run_writes_its_outputs(tmp_path, tiny_grouplens):
    proc, out = run_inprocess_app(tmp_path, tiny_grouplens,
                                  "method='gfmfr' num-server-rounds=2 eval-every=1 fraction-train=0.5 "
                                  "gfmfr-groups=2 gfmfr-epochs=3 gfmfr-modalities='kg'")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (final,) = finals(out)
    assert final["method"] == "gfmfr" and final["status"] == "ok"
    assert all(0.0 <= v <= 1.0 for v in final["test"].values())
    assert len(rounds_of(out)) == 2


def test_inprocess_engine_rejects_flower_only_options(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "--engine", "inprocess",
                           "--superlink", "x"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "--engine inprocess takes no --superlink" in proc.stderr


def test_client_exception_becomes_an_error_reply_and_state_persists_per_node():
    app = ClientApp()

    @app.train()
    def train(msg, context):
        if context.node_config["partition-id"] == 1:
            raise ValueError("user 1 has a broken disk")
        seen = int(context.state["seen"]["n"]) + 1 if "seen" in context.state.config_records else 1
        context.state["seen"] = ConfigRecord({"n": seen})
        return Message(RecordDict({"metrics": MetricRecord({"seen": seen})}), reply_to=msg)

    set_identity()
    grid = InProcessGrid(app, 3, {"k": 1})
    assert grid.get_node_ids() == [1, 2, 3]
    assert grid.contexts[2].node_config == {"partition-id": 1, "num-partitions": 3}
    for expected in (1, 2):
        msgs = [Message(RecordDict({"config": ConfigRecord({})}), dst_node_id=n, message_type="train")
                for n in grid.get_node_ids()]
        replies = grid.send_and_receive(msgs)
        assert [r.metadata.src_node_id for r in replies] == [1, 2, 3]
        assert replies[1].has_error() and "user 1 has a broken disk" in replies[1].error.reason
        assert [r.content["metrics"]["seen"] for i, r in enumerate(replies) if i != 1] == [expected] * 2
    assert grid.messages == 6


def test_train_eval_gives_a_per_round_curve(tmp_path, tiny_grouplens):
    proc, out = run_inprocess_app(tmp_path, tiny_grouplens,
                                  "num-server-rounds=3 eval-every=3 fraction-train=0.5 train-eval=true")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rounds = rounds_of(out)
    assert all(0.0 <= r["fresh-valid_sampled_hr@10"] <= 1.0 for r in rounds)
    assert "eval-users" not in rounds[0] and rounds[2]["eval-users"] == 12
