#!/usr/bin/env python
"""Summarise a py-spy ``--format raw`` profile (collapsed stacks): the functions with the most
samples of their own and the most samples including callees, as shares of all samples.

    python bench/pyspy_top.py /tmp/prof-sim.txt --top 25
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path


def _name(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)``: one key per function."""
    func, _, where = frame.partition(" (")
    return f"{func} ({Path(where.split(':')[0]).name})" if where else func


def summarise(lines) -> tuple[int, Counter, Counter]:
    """(total samples, own samples per function, inclusive samples per function)."""
    own, incl, total = Counter(), Counter(), 0
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        own[frames[-1]] += n
        for name in set(frames):
            incl[name] += n
    return total, own, incl


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("profile", type=Path)
    p.add_argument("--top", type=int, default=20)
    args = p.parse_args(argv)
    total, own, incl = summarise(args.profile.read_text().splitlines())
    if not total:
        sys.exit(f"{args.profile}: no samples (expected py-spy record --format raw output)")
    print(f"{total} samples")
    for title, counter in (("own", own), ("inclusive", incl)):
        print(f"\n| {title} % | function |\n|---|---|")
        for name, n in counter.most_common(args.top):
            print(f"| {100.0 * n / total:.1f} | `{name}` |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
