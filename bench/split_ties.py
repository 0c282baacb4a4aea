#!/usr/bin/env python
"""How the split's tie rule (``split-ties``) changes the held-out items and the MostPop floor.

For one dataset: the share of users whose latest timestamp is shared by several positives, the
share of users whose test / validation item is the same under ``file-order`` and ``item-id``,
the mean popularity rank of the test items, and MostPop (test, seed 0) under each rule.

    python bench/split_ties.py --dataset ml-100k
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

APP_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(APP_DIR))

METRICS = ("sampled_hr@10", "sampled_ndcg@10", "full_hr@50", "full_ndcg@50")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="ml-100k")
    args = p.parse_args(argv)
    from fedmm.config import TIE_CHOICES
    from fedmm.data.loaders import load_raw
    from fedmm.data.split import load_federated
    from fedmm.reference import mostpop, popularity

    df = load_raw(args.dataset).interactions
    last = df.groupby("user")["timestamp"].transform("max")
    tied = (df["timestamp"] == last).groupby(df["user"]).sum()
    print(f"{args.dataset}: {(tied >= 2).mean():.1%} of users have >= 2 ratings at their latest timestamp")
    splits = {t: load_federated(args.dataset, 0.0, 3, "", t) for t in TIE_CHOICES}
    a, b = splits["file-order"], splits["item-id"]
    assert list(a.item_ids) == list(b.item_ids) and list(a.user_ids) == list(b.user_ids)
    print(f"same test item under both rules: {np.mean(a.test == b.test):.1%} of users; "
          f"same validation item: {np.mean(a.valid == b.valid):.1%}")
    print("| split-ties | mean popularity rank of the test items (0 = most popular) | "
          + " | ".join(f"MostPop {m}" for m in METRICS) + " |")
    print("|---" * (2 + len(METRICS)) + "|")
    for ties, data in splits.items():
        rank = np.argsort(np.argsort(-popularity(data), kind="stable"), kind="stable")
        row = mostpop(data, 0, (10, 50), ("full", "sampled"))
        print(f"| {ties} | {rank[data.test].mean():.0f} | "
              + " | ".join(f"{100 * row['test_' + m]:.2f}" for m in METRICS) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
