#!/usr/bin/env python
"""Cost of one FedSLLM prototype query (the packaged SmolLM2 by default) against a round.

Times the initial prompt and ``--updates`` update prompts (with made-up counts) through the
project's own :class:`~server_tasks.prototypes.PrototypeManager` on the dataset's item table,
after one warm-up load of the model, and prints the seconds per call. The paper re-queries the
LLM every round; compare the figure with a round's wall time (docs/benchmark.md).

    python bench/llm_cadence.py --dataset ml-100k --updates 3
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

APP_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(APP_DIR))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--llm", default="smollm2", help="fedsllm-llm value")
    p.add_argument("--updates", type=int, default=3)
    p.add_argument("--threads", type=int, default=0,
                   help="LLM threads during a call (fedsllm-llm-threads; default 0 = every CPU, "
                        "as a run's ServerApp since 2026-12-04; 1 = the earlier figures)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)     # the ServerApp's own setting (run-config 'threads')
    from fedmm.data.split import load_item_side
    from server_tasks.prototypes import PrototypeManager
    from server_tasks.prototypes.backends import make_generator
    from server_tasks.prototypes.prompts import item_noun_for
    from strategies.fedsllm import FedSLLMConfig

    settings = FedSLLMConfig(llm=args.llm, llm_threads=args.threads)
    side = load_item_side(args.dataset, 0.0, 3, "")
    t = time.perf_counter()
    gen = make_generator(settings, seed=0, device="cpu")
    manager = PrototypeManager(gen, side.items, max_prototypes=settings.max_prototypes,
                               item_noun=item_noun_for(args.dataset))
    first = manager.update(0)
    load_and_first = time.perf_counter() - t
    rng = np.random.default_rng(0)
    calls = []
    for r in range(1, args.updates + 1):
        counts = rng.integers(0, 500, len(manager.names))
        t = time.perf_counter()
        manager.update(r, counts=counts)
        calls.append(time.perf_counter() - t)
    print(json.dumps({"dataset": args.dataset, "llm": args.llm, "first_call_with_load_s": round(load_and_first, 2),
                      "first_source": first.source, "update_calls_s": [round(c, 2) for c in calls],
                      "median_update_s": round(statistics.median(calls), 2),
                      "threads": args.threads}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
