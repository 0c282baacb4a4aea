"""bench/mem_processes.py: the per-process table at the peak of the launched tree."""
from __future__ import annotations

import json
import subprocess
import sys

from script_util import load_script

mem = load_script("bench/mem_processes.py", "mem_processes")

# A stand-in for run.py: a child that holds ~64 MiB for a second, then exits 0.
_CHILD = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
          "'import time; b = bytearray(64 << 20); b[::4096] = b\"x\" * len(b[::4096]); time.sleep(1.5)'])")


def test_reports_the_peak_processes_of_the_launched_tree(monkeypatch, capsys):
    real = subprocess.Popen
    monkeypatch.setattr(mem.subprocess, "Popen",
                        lambda cmd, **kw: real([sys.executable, "-c", _CHILD], **kw))
    assert mem.main(["-c", "num-server-rounds=1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("peak sum of RSS") and "processes" in out[0]
    rows = [line for line in out[3:] if line.startswith("| ")]
    assert len(rows) >= 2                                    # the stand-in and its child
    rss = [float(r.split("|")[1]) for r in rows]
    assert rss == sorted(rss, reverse=True) and rss[0] >= 64  # the child's 64 MiB, first


def test_a_failed_run_is_an_error(monkeypatch):
    real = subprocess.Popen
    monkeypatch.setattr(mem.subprocess, "Popen",
                        lambda cmd, **kw: real([sys.executable, "-c", "raise SystemExit(3)"], **kw))
    assert mem.main([]) == 1


# A stand-in that logs two milestones: the second one after it took ~64 MiB more.
_LOGGING_CHILD = (
    "import sys, time; print('INFO : fedmm: users of 5 of 5 nodes known (0.1 s)', flush=True); "
    "time.sleep(1.2); b = bytearray(64 << 20); b[::4096] = b'x' * len(b[::4096]); "
    "print('INFO : [ROUND 1/1]', flush=True); print('noise', flush=True); time.sleep(2.5)")


def test_trace_records_milestones_and_the_growth_between_them(monkeypatch, tmp_path, capsys):
    real = subprocess.Popen
    monkeypatch.setattr(mem.subprocess, "Popen",
                        lambda cmd, **kw: real([sys.executable, "-c", _LOGGING_CHILD], **kw))
    trace = tmp_path / "trace.json"
    assert mem.main(["-c", "num-server-rounds=1", "--trace", str(trace)]) == 0
    data = json.loads(trace.read_text())
    lines = [e[1] for e in data["events"]]                  # "noise" is not a milestone
    assert len(lines) == 2 and lines[0].endswith("nodes known (0.1 s)")
    assert lines[1].endswith("[ROUND 1/1]")
    assert [s["event"] for s in data["spans"]] == ["launch", *lines]
    assert data["samples"] and all(t <= data["end"] for t, _ in data["samples"])
    # The stand-in's ~64 MiB come after its second milestone (other processes of the machine
    # that bench/speed.py counts may be larger, so follow the stand-in by its label).
    t_round = data["events"][1][0]

    def stand_in(lo: float, hi: float) -> int:
        return max((p.get("import", 0) for t, p in data["samples"] if lo <= t < hi), default=0)

    assert stand_in(t_round + 0.6, data["end"]) - stand_in(0.0, t_round - 0.6) > 48 << 20
    assert "| from s | milestone |" in capsys.readouterr().out


def test_label_names_processes_by_script():
    assert mem.label("/v/bin/python /v/bin/flwr-simulation --runtime-api-address x") == \
        "flwr-simulation"
    assert mem.label("/v/bin/python -u /v/ray/_private/log_monitor.py --x") == "log_monitor.py"
    assert mem.label("ray::ClientAppActor   ") == "ray::ClientAppActor"
    assert mem.label("/v/ray/core/src/ray/raylet/raylet --raylet_socket_name=a") == "raylet"
    assert mem.label("") == "?"


def test_spans_take_the_largest_process_between_milestones():
    samples = [(0.5, {"a": 10, "b": 5}), (1.5, {"a": 30}), (2.5, {"a": 20, "b": 40})]
    rows = mem.spans([(1.0, "users"), (2.0, "round")], samples, end=3.0)
    assert [(r["event"], r["largest"], r["largest_rss"]) for r in rows] == [
        ("launch", "a", 10), ("users", "a", 30), ("round", "b", 40)]
    assert mem.spans([], [], end=1.0) == [{"t": 0.0, "event": "launch", "largest_rss": 0,
                                           "largest": None}]
