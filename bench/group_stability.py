#!/usr/bin/env python
"""How stable are GFMFR's groups? From a run's ``groups.jsonl``.

    python bench/group_stability.py outputs/results-gfmfr/sweep/gfmfr-s0 --window 25

For every participation of a client that had taken part before, checks whether its group
equals its group at its previous participation; prints that share per window of rounds, next
to the share random assignment to the observed group sizes would give (sum of squared group
shares).
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--window", type=int, default=25)
    args = ap.parse_args()
    last: dict[str, int] = {}
    same: Counter = Counter()
    total: Counter = Counter()
    chance: dict[int, list[float]] = {}
    for line in (args.run / "groups.jsonl").read_text().splitlines():
        rec = json.loads(line)
        w = (int(rec["round"]) - 1) // args.window
        groups = {str(u): int(g) for u, g in rec["groups"].items()}
        sizes = Counter(groups.values())
        n = sum(sizes.values())
        chance.setdefault(w, []).append(sum((s / n) ** 2 for s in sizes.values()))
        for user, g in groups.items():
            if user in last:
                total[w] += 1
                same[w] += int(last[user] == g)
            last[user] = g
    print("| rounds | repeat participations | same group as last time | random-assignment level |")
    print("|---|---|---|---|")
    for w in sorted(total):
        lo, hi = w * args.window + 1, (w + 1) * args.window
        level = sum(chance[w]) / len(chance[w])
        print(f"| {lo}-{hi} | {total[w]} | {100 * same[w] / total[w]:.1f} % | {100 * level:.1f} % |")


if __name__ == "__main__":
    main()
