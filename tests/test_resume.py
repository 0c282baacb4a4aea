"""Checkpoint and resume (issue 16): a run interrupted by Ctrl-C and continued with
``run.py --resume`` ends exactly as the same run without the interruption.

Every run here uses the in-process engine (fedmm's real ServerApp ``main`` and ClientApp
handlers, no Ray, no SuperLink). The interrupted run is a real ``run.py`` process whose
in-process grid raises KeyboardInterrupt halfway through the training messages of one round,
as Ctrl-C would: the nodes handled before it have already trained and saved their state of
that round, which the resumed run must not use.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from e2e_util import ROOT
from fedmm.checkpoint import (CheckpointError, ClientStateStore, checkpoint_round,
                              load_checkpoint, save_checkpoint, truncate_jsonl)

#: Ctrl-C halfway through the train messages of round argv[1], then run.py with argv[2:].
DRIVER = """
import sys
sys.path.insert(0, {root!r})
from fedmm.inprocess import InProcessGrid

crash_round = int(sys.argv[1])

def send_and_receive(self, messages, timeout=None):
    messages, replies = list(messages), []
    for m in messages:
        if (m.metadata.message_type == "train" and 2 * len(replies) >= len(messages)
                and int(m.content["config"]["server-round"]) == crash_round):
            raise KeyboardInterrupt
        replies.append(self._handle(m))
    return replies

InProcessGrid.send_and_receive = send_and_receive
sys.argv = ["run.py"] + sys.argv[2:]
import run
sys.exit(run.main())
"""

BASE = ("num-server-rounds=4 eval-every=1 fraction-train=0.5 checkpoint-every=2 "
        "centralised-epochs=0 run-name='r'")
GFMFR = "method='gfmfr' gfmfr-groups=2 gfmfr-epochs=3 gfmfr-modalities='kg'"
FEDSLLM = ("method='fedsllm' fedsllm-sampler='cluster' fedsllm-fraction=0.5 fedsllm-ae-epochs=5 "
           "fedsllm-max-prototypes=3 fedsllm-proto-update-every=3")
#: Fields of rounds.jsonl that measure time, not results.
TIMING = ("seconds", "-ms")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def run_py(tmp_path: Path, *args: str, crash_round: int | None = None):
    if crash_round is None:
        cmd = [sys.executable, str(ROOT / "run.py"), *args]
    else:
        cmd = [sys.executable, "-c", DRIVER.format(root=str(ROOT)), str(crash_round), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env=_env())


def fresh_args(tmp_path: Path, out: Path, data_dir: Path, overrides: str) -> list[str]:
    return ["--engine", "inprocess", "--out", str(out), "--seeds", "1", "--run-config",
            f"dataset='grouplens:{data_dir}' cache-dir='{tmp_path / 'cache'}' {overrides}"]


def ok(proc) -> None:
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


def rows(run_dir: Path, name: str = "rounds.jsonl") -> list[dict]:
    return [json.loads(line) for line in (run_dir / name).read_text().splitlines()]


def results(run_dir: Path) -> list[dict]:
    """rounds.jsonl without its timings."""
    return [{k: v for k, v in r.items() if not any(t in k for t in TIMING)} for r in rows(run_dir)]


def interrupted_then_resumed(tmp_path: Path, data_dir: Path, overrides: str, crash_round: int = 4):
    """Run 1: uninterrupted. Run 2: Ctrl-C in ``crash_round``, then ``run.py --resume``.
    Returns both run directories and the resume's process."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    ok(run_py(tmp_path, *fresh_args(tmp_path, whole, data_dir, overrides)))
    proc = run_py(tmp_path, *fresh_args(tmp_path, cut, data_dir, overrides), crash_round=crash_round)
    assert proc.returncode == 130, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = cut / "r-s1"
    assert not (run_dir / "final.json").exists() and (run_dir / "failed.json").is_file()
    assert checkpoint_round(run_dir) == 2
    # Rounds 1-3 were complete when Ctrl-C came (round 3 is after the checkpoint: redone).
    assert [r["round"] for r in rows(run_dir)] == [1, 2, 3]
    # Some clients had trained (and saved) in the interrupted round 4 or in round 3.
    saved = [ClientStateStore(run_dir / "client-state", u, 2)._read(run_dir / "client-state" / f"user-{u}.npz")
             for u in range(12)]
    assert any(s is not None and s[0] > 2 for s in saved)
    resumed = run_py(tmp_path, "--engine", "inprocess", "--resume", str(run_dir))
    ok(resumed)
    return whole / "r-s1", run_dir, resumed


def assert_same_run(whole: Path, resumed: Path) -> dict:
    a, b = (json.loads((d / "final.json").read_text()) for d in (whole, resumed))
    assert b["status"] == "ok" and b["resumed-from"] == [2] and "resumed-from" not in a
    for key in ("best_round", "test", "valid", "last_round", "last_test", "last_valid",
                "eval_users", "rounds"):
        assert a[key] == b[key], key                                   # bit for bit
    assert a["reference"]["mostpop"] == b["reference"]["mostpop"]
    assert [r["round"] for r in rows(resumed)] == [1, 2, 3, 4]
    assert results(whole) == results(resumed)
    # The interrupted attempt's failure is kept aside; the run is complete.
    assert not (resumed / "failed.json").exists() and (resumed / "failed-1.json").is_file()
    assert not (resumed / "client-state").exists()          # removed once the run completed
    assert checkpoint_round(resumed) == 4
    return b


# ----- end to end: uninterrupted == interrupted + resumed ---------------------------------
def test_resumed_base_run_equals_the_uninterrupted_one(tmp_path, tiny_grouplens):
    whole, resumed, proc = interrupted_then_resumed(tmp_path, tiny_grouplens,
                                                    BASE + " aggregation='itemwise'")
    assert "resuming" in proc.stdout and "after its checkpoint of round 2" in proc.stdout
    final = assert_same_run(whole, resumed)
    assert final["method"] == "base"


def test_resume_without_the_clients_saved_state_differs(tmp_path, tiny_grouplens):
    """The comparison above can fail: resuming without the clients' private state (as a
    run with client-state-dir = "" would) does not reproduce the run."""
    whole = tmp_path / "whole"
    ok(run_py(tmp_path, *fresh_args(tmp_path, whole, tiny_grouplens, BASE)))
    cut = tmp_path / "cut"
    assert run_py(tmp_path, *fresh_args(tmp_path, cut, tiny_grouplens, BASE),
                  crash_round=4).returncode == 130
    for f in (cut / "r-s1" / "client-state").iterdir():
        f.unlink()
    ok(run_py(tmp_path, "--engine", "inprocess", "--resume", str(cut / "r-s1")))
    assert results(whole / "r-s1")[:2] == results(cut / "r-s1")[:2]   # restored from the checkpoint
    assert results(whole / "r-s1")[2:] != results(cut / "r-s1")[2:]


def test_resumed_gfmfr_run_equals_the_uninterrupted_one(tmp_path, tiny_grouplens):
    whole, resumed, _ = interrupted_then_resumed(tmp_path, tiny_grouplens, f"{BASE} {GFMFR}")
    final = assert_same_run(whole, resumed)
    assert final["gfmfr"]["groups"] == 2
    # groups.jsonl: the redone rounds replaced, not appended.
    assert rows(whole, "groups.jsonl") == rows(resumed, "groups.jsonl")
    assert [r["round"] for r in rows(resumed, "groups.jsonl")] == [1, 2, 3, 4]
    assert (resumed / "group_dynamics.png").is_file()


def test_resumed_fedsllm_cluster_run_equals_the_uninterrupted_one(tmp_path, tiny_grouplens):
    whole, resumed, _ = interrupted_then_resumed(tmp_path, tiny_grouplens, f"{BASE} {FEDSLLM}")
    final = assert_same_run(whole, resumed)
    assert final["fedsllm"]["prototypes"] and final["fedsllm"]["prototype-updates"] == 1
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(rows(whole, "prototypes.jsonl")) == strip(rows(resumed, "prototypes.jsonl"))


def test_resumed_lagged_fedsllm_run_asks_the_revision_in_flight_again(tmp_path, tiny_grouplens,
                                                                      chat_server):
    """fedsllm-llm-lag: the checkpoint of round 2 holds the revision asked at round 2 (in force
    after round 3); the resumed run asks it again and ends as the uninterrupted run."""
    # One answer for every request: both runs and the resume share the server's counter.
    url, seen = chat_server(["1. Action adventure\n2. Animated family\n3. Crime thriller"])
    overrides = (f"{BASE} method='fedsllm' fedsllm-llm='openai:{url}/v1:fake' fedsllm-llm-lag=1 "
                 "fedsllm-proto-update-every=2 fedsllm-align-every=2 fedsllm-fraction=0.5 "
                 "fedsllm-ae-epochs=5 fedsllm-align-epochs=2 fedsllm-max-prototypes=3")
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    ok(run_py(tmp_path, *fresh_args(tmp_path, whole, tiny_grouplens, overrides)))
    assert len(seen) == 2                           # the initial set, the revision of round 2
    proc = run_py(tmp_path, *fresh_args(tmp_path, cut, tiny_grouplens, overrides), crash_round=4)
    assert proc.returncode == 130, proc.stdout[-3000:] + proc.stderr[-3000:]
    done, _, state = load_checkpoint(cut / "r-s1")
    assert done == 2 and state["fedsllm"]["inflight"]["round"] == 2
    ok(run_py(tmp_path, "--engine", "inprocess", "--resume", str(cut / "r-s1")))
    assert len(seen) == 5                           # the resume asked round 2's request again
    assert seen[4]["body"]["messages"] == seen[3]["body"]["messages"] == seen[1]["body"]["messages"]
    final = assert_same_run(whole / "r-s1", cut / "r-s1")
    assert final["fedsllm"]["prototype-updates"] == 1
    strip = lambda rs: [{k: v for k, v in r.items() if not k.endswith("seconds")}  # noqa: E731
                        for r in rs]
    updates = [r for r in rows(cut / "r-s1", "prototypes.jsonl") if r["event"] == "update"]
    assert [(r["round"], r["requested-round"]) for r in updates] == [(3, 2)]
    assert strip(rows(whole / "r-s1", "prototypes.jsonl")) == strip(rows(cut / "r-s1",
                                                                          "prototypes.jsonl"))


# ----- --resume refuses, touching nothing -------------------------------------------------
def _snapshot(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def test_resume_refuses_what_it_cannot_continue(tmp_path, tiny_grouplens):
    out = tmp_path / "out"
    ok(run_py(tmp_path, *fresh_args(tmp_path, out, tiny_grouplens,
                                    "num-server-rounds=2 eval-every=1 fraction-train=0.5 "
                                    "checkpoint-every=1 centralised-epochs=0 run-name='r'")))
    done = out / "r-s1"
    cases = []
    # complete run (final.json)
    cases.append((done, "has final.json"))
    # no checkpoint
    nock = tmp_path / "nock"
    nock.mkdir()
    (nock / "config.json").write_text((done / "config.json").read_text())
    cases.append((nock, "has no checkpoint"))
    # a checkpoint, but a config.json that cannot be loaded
    for name, text, why in (("badjson", "{not json", "config.json cannot be loaded"),
                            ("badkey", None, "config.json cannot be loaded")):
        d = tmp_path / name
        d.mkdir()
        (d / "checkpoint").mkdir()
        for f in (done / "checkpoint").iterdir():
            (d / "checkpoint" / f.name).write_bytes(f.read_bytes())
        if text is None:
            cfg = json.loads((done / "config.json").read_text())
            cfg.update({"backbone": "nosuch", "out-dir": str(tmp_path), "run-name": name})
            text = json.dumps(cfg)
        (d / "config.json").write_text(text)
        cases.append((d, why))
    cases.append((tmp_path / "missing", "is not a directory"))
    for d, why in cases:
        before = _snapshot(d) if d.exists() else None
        proc = run_py(tmp_path, "--engine", "inprocess", "--resume", str(d))
        assert proc.returncode == 2 and why in proc.stderr, (d, proc.stderr[-2000:])
        assert (_snapshot(d) if d.exists() else None) == before     # nothing touched
    proc = run_py(tmp_path, "--engine", "inprocess", "--resume", str(done), "--seeds", "2")
    assert proc.returncode == 2 and "--resume takes no" in proc.stderr


# ----- the pieces ------------------------------------------------------------------------
def test_client_state_store_keeps_the_state_of_the_last_checkpoint(tmp_path):
    """checkpoint-every = 2: the server checkpoints after rounds 2, 4, ...; a resumed run from
    round c needs each user's state of its latest training round <= c."""
    store = ClientStateStore(tmp_path, user=3, checkpoint_every=2)
    assert store.load(2) is None                               # never trained
    state = lambda r: {"w": np.full(2, r, np.float32)}         # noqa: E731
    store.save(1, state(1), None, None)
    assert store.load(2)[0] == 1 and store.load(0) is None
    store.save(2, state(2), 1, state(1))                       # no checkpoint round crossed
    assert not store.ckpt.exists()
    store.save(5, state(5), 2, state(2))                       # crossed 2 and 4: keeps round 2
    r, arrays = store.load(4)
    assert r == 2 and np.array_equal(arrays["w"], state(2)["w"])
    assert store.load(5)[0] == 5
    store.save(6, state(6), 5, state(5))                       # 4 < 5: still the round-2 state
    assert store.load(4)[0] == 2 and store.load(6)[0] == 6
    store.save(7, state(7), 6, state(6))                       # crossed 6: the round-6 state
    assert store.load(6)[0] == 6
    with pytest.raises(CheckpointError, match="does not belong to that checkpoint"):
        store.load(4)                                          # round-4 state no longer kept
    # A fresh run's first save drops an older run's checkpoint-round state.
    store.save(3, state(3), None, None)
    assert store.load(2) is None and store.load(3)[0] == 3
    store.clear()
    assert store.load(10) is None and not any(tmp_path.iterdir())


def test_checkpoint_files_replace_each_other_atomically(tmp_path):
    import torch

    for r in (2, 4):
        save_checkpoint(tmp_path, r, {"a": np.arange(3.0) * r}, {"t": torch.ones(2) * r, "n": [r]})
    r, arrays, state = load_checkpoint(tmp_path)
    assert r == 4 and arrays["a"].tolist() == [0.0, 4.0, 8.0] and state["n"] == [4]
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == [
        "arrays-r4.npz", "checkpoint.json", "strategy-r4.pt"]
    # A crash while writing round 6 (its files half there, checkpoint.json not yet replaced)
    # leaves round 4 in force.
    (tmp_path / "checkpoint" / "arrays-r6.npz").write_bytes(b"partial")
    assert load_checkpoint(tmp_path)[0] == 4
    with pytest.raises(CheckpointError, match="has no checkpoint"):
        load_checkpoint(tmp_path / "elsewhere")


def test_truncate_jsonl_drops_later_rounds_and_a_cut_line(tmp_path):
    path = tmp_path / "rounds.jsonl"
    path.write_text('{"round": 1}\n{"round": 2}\n{"event": "x"}\n{"round": 3}\n{"round": 4, "a"')
    assert truncate_jsonl(path, 2) == 2
    assert path.read_text() == '{"round": 1}\n{"round": 2}\n{"event": "x"}\n'
    assert truncate_jsonl(tmp_path / "none.jsonl", 2) == 0


def test_a_run_saved_before_split_ties_existed_resumes_on_its_old_split(tmp_path, monkeypatch, capsys):
    """config.json without ``split-ties`` (runs before the key): the resumed run keeps the
    item-id tie rule it was made with, not the new default, and says so."""
    import fedmm.checkpoint
    import run
    from fedmm.config import load_app_config

    monkeypatch.setattr(fedmm.checkpoint, "checkpoint_round", lambda d: 2)
    for name, saved_ties, expect in (("old", None, "item-id"), ("new", "file-order", "file-order")):
        d = tmp_path / name
        d.mkdir()
        cfg = {**load_app_config(ROOT / "pyproject.toml"), "out-dir": str(tmp_path), "run-name": name}
        del cfg["split-ties"]
        if saved_ties is not None:
            cfg["split-ties"] = saved_ties
        (d / "config.json").write_text(json.dumps(cfg))
        raw, rc = run.resume_config(d)
        assert raw["split-ties"] == expect and rc.split_ties == expect and rc.resume_round == 2
    assert "except {'split-ties': 'item-id'}" in capsys.readouterr().err


def test_flwr_resume_of_a_run_saved_before_split_ties_refuses_the_new_split(tmp_path, monkeypatch):
    """``flwr run ... resume-round=k`` without run.py: the ServerApp's check reads a saved config
    without ``split-ties`` as the item-id split it was made with, so file-order is a change."""
    import fedmm.server_app as sa
    from fedmm.config import RunConfig, load_app_config

    monkeypatch.setattr(sa, "checkpoint_round", lambda d: 2)
    d = tmp_path / "old"
    d.mkdir()
    saved = {**load_app_config(ROOT / "pyproject.toml"), "out-dir": str(tmp_path), "run-name": "old"}
    del saved["split-ties"]
    (d / "config.json").write_text(json.dumps(saved))
    for ties, ok in (("item-id", True), ("file-order", False)):
        run_config = {**saved, "split-ties": ties, "resume-round": 2}
        cfg = RunConfig.from_mapping(run_config)
        if ok:
            assert sa.resume_dir(cfg, run_config) == d.resolve()
        else:
            with pytest.raises(CheckpointError, match="split-ties"):
                sa.resume_dir(cfg, run_config)
