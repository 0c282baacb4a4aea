#!/usr/bin/env python
"""Replay a FedSLLM run's logged LLM prompts through prototype backends: time and agreement.

Reads ``prototype-prompts.jsonl`` of one or more run folders (every prompt the run's server
sent, with the answer it got and the names it accepted), sends each prompt again through each
``--backends`` entry (a ``fedsllm-llm`` value) at each ``--threads`` setting, and prints per
setting: median / min / max seconds per revision, and how many answers and accepted name lists
equal the logged ones. The first call of each setting loads the model and is timed apart.

    python bench/llm_backends.py outputs/t20/fedsllm/pfedrec-fedsllm-s0 \\
        --backends smollm2,llamacpp --threads 1,2 --limit 6
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

APP_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(APP_DIR))


def load_prompts(run_dirs: list[Path], limit: int) -> list[dict]:
    """Logged calls (initial and update prompts) of ``run_dirs``, at most ``limit`` per run."""
    calls = []
    for run in run_dirs:
        path = run / "prototype-prompts.jsonl"
        if not path.is_file():
            raise SystemExit(f"{path} not found: give FedSLLM run folders (fedsllm-sampler = "
                             "'fedsllm' with an LLM backend)")
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if r.get("prompt") and r.get("response") is not None]
        calls.extend(rows[:limit] if limit > 0 else rows)
    if not calls:
        raise SystemExit("no logged LLM prompts in the given folders")
    return calls


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="FedSLLM run folders")
    p.add_argument("--backends", default="smollm2", help="comma-separated fedsllm-llm values")
    p.add_argument("--threads", default="1", help="comma-separated thread counts (0 = all CPUs)")
    p.add_argument("--limit", type=int, default=0, help="prompts per run (0 = all)")
    p.add_argument("--max-prototypes", type=int, default=10)
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args(argv)

    from server_tasks.prototypes.backends import ChatLLM, make_generator
    from strategies.fedsllm import FedSLLMConfig

    calls = load_prompts(args.runs, args.limit)
    rows = []
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        for threads in [int(t) for t in args.threads.split(",")]:
            settings = FedSLLMConfig(llm=backend, llm_threads=threads)
            gen = make_generator(settings, seed=0, device="cpu")
            t = time.perf_counter()
            gen.generate("List three movie genres.", None)  # load + warm-up
            load_s = time.perf_counter() - t
            secs, same_text, same_parse = [], 0, 0
            for call in calls:
                t = time.perf_counter()
                text, cut = gen.generate(call["prompt"], call.get("system"))
                secs.append(time.perf_counter() - t)
                same_text += text == call["response"]
                same_parse += ChatLLM.parse_answer(text, cut) == call.get("parsed")
            row = {"backend": backend, "threads": gen.threads, "calls": len(calls),
                   "load_and_warmup_s": round(load_s, 2),
                   "median_s": round(statistics.median(secs), 3),
                   "min_s": round(min(secs), 3), "max_s": round(max(secs), 3),
                   "same_answer_as_logged": same_text, "same_parsed_names_as_logged": same_parse}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
