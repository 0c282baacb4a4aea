#!/usr/bin/env python
"""Which processes of a run hold the memory: the per-process RSS and PSS at the moment the run's
sum of RSS peaked (sampled every 0.5 s over the processes ``bench/speed.py`` counts).

    python bench/mem_processes.py -c "num-server-rounds=8 eval-every=8 centralised-epochs=0"

Launches ``run.py`` with the run config ``-c`` (outputs to a temporary directory, removed after)
and prints the peak's total and one line per process, largest first.

``--trace FILE`` also writes every sample (seconds since launch, each process's RSS) and the
moments the run logged its milestones (users discovered, each round's start, each aggregation;
:data:`EVENTS`) as JSON, and prints the largest process's peak RSS between one milestone and
the next: where in the run its memory grew.

    python bench/mem_processes.py -c "dataset='ml-1m' num-server-rounds=2 eval-every=2 centralised-epochs=0" --trace bench/results/mem-trace.json
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


#: Log lines of a run that mark where it is: fedmm's user discovery done, Flower's round start,
#: an aggregation (train, then evaluate) done, the strategy done.
EVENTS = re.compile(r"fedmm: users of|\[ROUND \d+/\d+\]|Aggregated MetricRecord|"
                    r"Strategy execution finished")


def label(cmd: str) -> str:
    """A short name for a process from its command line: ``ray::X`` as is, else the base name
    of the script a Python interpreter runs (``flwr-simulation``, ``run.py``, ...), else the
    program's base name."""
    parts = cmd.split()
    if not parts:
        return "?"
    if parts[0].startswith("ray::"):
        return parts[0]
    if Path(parts[0]).name.startswith("python") and len(parts) > 1:
        script = next((a for a in parts[1:] if not a.startswith("-")), parts[1])
        return Path(script).name
    return Path(parts[0]).name


def spans(events: list[tuple[float, str]], samples: list[tuple[float, dict[str, int]]],
          end: float) -> list[dict]:
    """Per milestone (plus ``launch`` at 0): its time, its log line, and the largest single
    process's peak RSS (bytes) and that process's label over the samples from it to the next
    milestone (``end`` after the last)."""
    marks = [(0.0, "launch"), *events]
    out = []
    for i, (t, text) in enumerate(marks):
        t_next = marks[i + 1][0] if i + 1 < len(marks) else end
        peak, who = 0, None
        for ts, procs in samples:
            if t <= ts < t_next:
                for name, rss in procs.items():
                    if rss > peak:
                        peak, who = rss, name
        out.append({"t": t, "event": text, "largest_rss": peak, "largest": who})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-c", "--run-config", default="num-server-rounds=8 eval-every=8 centralised-epochs=0")
    p.add_argument("--trace", type=Path, help="write the samples and the run's milestones here "
                   "(JSON) and print the largest process's peak between milestones")
    args = p.parse_args(argv)
    from bench.speed import process_memory

    peak: tuple[int, dict] = (0, {})
    samples: list[tuple[float, dict[str, int]]] = []
    events: list[tuple[float, str]] = []
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "-c",
                                 f"{args.run_config} run-name='mem'", "--out", out],
                                cwd=ROOT, stderr=subprocess.STDOUT, text=True,
                                stdout=subprocess.PIPE if args.trace else subprocess.DEVNULL)

        def read_log() -> None:
            for line in proc.stdout:
                if EVENTS.search(line):
                    events.append((time.perf_counter() - t0, line.strip()[-160:]))

        reader = threading.Thread(target=read_log, daemon=True) if args.trace else None
        if reader is not None:
            reader.start()
        while proc.poll() is None:
            snap = process_memory(proc.pid)
            total = sum(v[1] for v in snap.values())
            if total > peak[0]:
                peak = (total, snap)
            if args.trace:
                per: dict[str, int] = {}
                for cmd, rss, _ in snap.values():
                    name = label(cmd)
                    per[name] = max(per.get(name, 0), rss)
                samples.append((time.perf_counter() - t0, per))
            time.sleep(0.5)
        if reader is not None:
            reader.join(timeout=10)
        end = time.perf_counter() - t0
    if proc.returncode != 0:
        print(f"run.py exited {proc.returncode}", file=sys.stderr)
        return 1
    total, snap = peak
    print(f"peak sum of RSS {total / 2**30:.2f} GiB, sum of PSS "
          f"{sum(v[2] for v in snap.values()) / 2**30:.2f} GiB, {len(snap)} processes")
    print("| RSS MiB | PSS MiB | process |\n|---|---|---|")
    for cmd, rss, pss in sorted(snap.values(), key=lambda v: -v[1]):
        print(f"| {rss / 2**20:.0f} | {pss / 2**20:.0f} | `{cmd[:90]}` |")
    if args.trace:
        rows = spans(events, samples, end)
        print("\n| from s | milestone | largest process | its peak RSS MiB until the next |")
        print("|---|---|---|---|")
        for r in rows:
            print(f"| {r['t']:.1f} | `{r['event'][-70:]}` | {r['largest']} | "
                  f"{r['largest_rss'] / 2**20:.0f} |")
        args.trace.parent.mkdir(parents=True, exist_ok=True)
        args.trace.write_text(json.dumps({"run_config": args.run_config, "end": end,
                                          "events": events, "spans": rows,
                                          "samples": samples}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
