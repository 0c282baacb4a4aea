"""run.py --timeout on Flower's simulation engine stops the Flower run itself (``flwr stop``)
and leaves the run directory marked failed (the deployed case, and Ctrl-C, are in
test_deploy.py)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedmm.outputs import RunDirBusy

ROOT = Path(__file__).resolve().parents[1]


def test_timeout_stops_the_simulation_run(tmp_path, tiny_grouplens):
    out = tmp_path / "out"
    # Far more rounds than the timeout allows: without `flwr stop` the run would go on.
    cmd = [sys.executable, str(ROOT / "run.py"), "--out", str(out), "--seeds", "0",
           "--timeout", "60", "--run-config",
           f"dataset='grouplens:{tiny_grouplens}' cache-dir='{tmp_path / 'cache'}' "
           "num-server-rounds=100000 eval-every=100000 run-name='long' centralised-epochs=0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    m = re.search(r"Successfully started run (\d+)", proc.stdout)
    assert m, proc.stdout[-3000:]
    run = out / "long-s0"
    failed = json.loads((run / "failed.json").read_text())
    assert "exceeded --timeout 60" in failed["reason"]
    assert f"Flower run {m.group(1)} stopped" in failed["reason"], failed
    # The SuperLink agrees (run.py's FLWR_HOME: $FLWR_HOME or the checkout's .flwr).
    env = dict(os.environ)
    env.setdefault("FLWR_HOME", str(ROOT / ".flwr"))
    ls = subprocess.run([str(Path(sys.executable).parent / "flwr"), "ls", "--run-id", m.group(1),
                         "--format", "json"], capture_output=True, text=True, timeout=120, env=env)
    assert "stopped" in json.loads(ls.stdout)["runs"][0]["status"], ls.stdout + ls.stderr
    # The simulation notices the stop within seconds: rounds.jsonl stops growing, far short of
    # the 100000 rounds, and no final.json appears.
    rounds = run / "rounds.jsonl"
    lines, still, deadline = -1, 0, time.time() + 120
    while still < 10 and time.time() < deadline:
        n = len(rounds.read_text().splitlines()) if rounds.exists() else 0
        still = still + 1 if n == lines else 0
        lines = n
        time.sleep(1)
    assert still >= 10, f"rounds.jsonl still growing 120 s after the stop ({lines} rounds)"
    assert not (run / "final.json").exists()


def test_ctrl_c_then_resume_through_flower_equals_the_uninterrupted_run(tmp_path, tiny_grouplens):
    """Ctrl-C to run.py on Flower's simulation engine, then ``run.py --resume`` at once, also
    through Flower: the stopped simulation goes on for some seconds after ``flwr stop``, so
    run.py must return only once its ServerApp has ended (else it writes a newer checkpoint
    under the resumed run). The resumed run ends exactly as an uninterrupted one (here on the
    in-process engine, which tests/test_inprocess.py shows equal to Flower's)."""
    from fedmm.checkpoint import checkpoint_round
    from fedmm.outputs import writer_pid

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    conf = (f"dataset='grouplens:{tiny_grouplens}' cache-dir='{tmp_path / 'cache'}' "
            "num-server-rounds=100 eval-every=5 fraction-train=0.5 checkpoint-every=2 "
            "centralised-epochs=0 run-name='r'")

    def run_py(*args: str, **kw):
        return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], capture_output=True,
                              text=True, timeout=600, cwd=tmp_path, env=env, **kw)

    whole = run_py("--engine", "inprocess", "--out", str(tmp_path / "whole"), "--seeds", "1",
                   "--run-config", conf)
    assert whole.returncode == 0, whole.stdout[-3000:] + whole.stderr[-3000:]

    run = tmp_path / "cut" / "r-s1"
    log = open(tmp_path / "cut.log", "w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "--out", str(tmp_path / "cut"),
                             "--seeds", "1", "--run-config", conf], stdout=log,
                            stderr=subprocess.STDOUT, text=True, cwd=tmp_path, env=env)
    rounds, deadline = run / "rounds.jsonl", time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if rounds.exists() and len(rounds.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)                         # Ctrl-C
    assert proc.wait(timeout=400) == 130, (tmp_path / "cut.log").read_text()[-4000:]
    # run.py returned only after the stopped ServerApp ended: nothing writes the directory.
    assert writer_pid(run) is None
    k, n = checkpoint_round(run), len(rounds.read_text().splitlines())
    time.sleep(5)
    assert (checkpoint_round(run), len(rounds.read_text().splitlines())) == (k, n)
    assert k is not None and 2 <= k < 100 and not (run / "final.json").exists()
    assert "interrupted (Ctrl-C)" in json.loads((run / "failed.json").read_text())["reason"]

    resumed = run_py("--resume", str(run))                 # at once, through Flower
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-4000:]
    a = json.loads((tmp_path / "whole" / "r-s1" / "final.json").read_text())
    b = json.loads((run / "final.json").read_text())
    assert b["resumed-from"] == [k]
    for key in ("best_round", "test", "valid", "last_round", "last_test", "eval_users", "rounds"):
        assert a[key] == b[key], key

    def results(d: Path) -> list[dict]:
        return [{x: v for x, v in json.loads(line).items() if "seconds" not in x and "-ms" not in x}
                for line in (d / "rounds.jsonl").read_text().splitlines()]
    assert results(tmp_path / "whole" / "r-s1") == results(run)


def test_a_resume_waits_for_a_writer_that_is_still_alive(tmp_path):
    """A run directory whose writer lock a live process holds is neither resumed nor marked;
    once the process ends, the lock is free (the OS drops it, however the process ended)."""
    from fedmm.outputs import hold_run_dir, wait_for_writer, writer_pid

    run = tmp_path / "r"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, %r)\n"
        "from fedmm.outputs import hold_run_dir\n"
        "with hold_run_dir(%r):\n    print('held', flush=True); time.sleep(60)") % (str(ROOT), str(run))],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert writer_pid(run) == holder.pid
        assert wait_for_writer(run, timeout=0.5, poll=0.1) == holder.pid
        with pytest.raises(RunDirBusy, match=f"pid {holder.pid}"):
            with hold_run_dir(run):
                pass
        proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "--engine", "inprocess",
                               "--resume", str(run)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and f"still being written by another process (pid {holder.pid})" in proc.stderr
    finally:
        holder.kill()
        holder.wait()
    assert wait_for_writer(run, timeout=10, poll=0.1) is None and writer_pid(run) is None
    with hold_run_dir(run):
        assert writer_pid(run) == os.getpid()
