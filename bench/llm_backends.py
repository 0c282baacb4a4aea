#!/usr/bin/env python
"""Replay a FedSLLM run's logged LLM prompts through prototype backends: time and agreement.

Reads ``prototype-prompts.jsonl`` of one or more run folders (every prompt the run's server
sent, with the answer it got and the names it accepted), sends each prompt again through each
``--backends`` entry (a ``fedsllm-llm`` value) at each ``--threads`` setting, and prints per
setting: median / min / max seconds per revision, and how many answers, parsed names and
accepted names (item titles dropped and validated, as the run's manager does on the
``--dataset`` item table) equal the logged ones. The first call of each setting loads the model
and is timed apart. With ``--stop-full`` every call is made twice in a row, generating up to the
length bound and stopping once the answer holds a full list (``fedsllm-llm-stop-full``), and
each way gets its own row. ``--logged`` runs no model: it finds where each logged answer would
have been stopped (greedy decoding gives the same tokens up to there) and checks that the names
kept from the answer up to there equal the logged accepted ones.

    python bench/llm_backends.py outputs/t20/fedsllm/pfedrec-fedsllm-s0 \\
        --backends smollm2,llamacpp --threads 1,2 --limit 6
"""
from __future__ import annotations

import argparse
import itertools
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


def replay(gen, call: dict, is_full, accept) -> dict:
    """One logged call sent again through ``gen`` (with ``is_full``: may stop early): seconds,
    and whether the answer, parsed names and accepted names (``accept(names)``; ``None`` when
    it raises) equal the logged ones."""
    gen.system = call.get("system")
    t = time.perf_counter()
    proposal = gen.answer(call["prompt"], is_full)
    seconds = time.perf_counter() - t
    try:
        accepted = accept(proposal.names) if proposal.error is None else None
    except ValueError:
        accepted = None
    return {"seconds": seconds, "stopped": proposal.stopped_full,
            "same_answer": proposal.response == call["response"],
            "same_parsed": proposal.names == call.get("parsed"),
            "same_accepted": accepted == call.get("accepted")}


def stop_in_logged(call: dict, is_full, accept) -> dict:
    """Where ``call``'s logged answer would have stopped with ``is_full`` (the first newline
    after which it holds a full list), and whether the names kept from the answer up to there
    (``accept``, after parsing as the backend does) equal the logged accepted names."""
    from server_tasks.prototypes.backends import ChatLLM
    from server_tasks.prototypes.parsing import stopped_answer

    answer = call["response"]
    head = stopped_answer(answer, is_full)
    names = (ChatLLM.parse_answer(answer, bool(call.get("truncated"))) if head is None
             else ChatLLM.parse_answer(head, False))
    try:
        accepted = accept(names)
    except ValueError:
        accepted = None
    return {"stopped": head is not None, "same_accepted": accepted == call.get("accepted"),
            "chars": len(answer), "chars_kept": len(answer if head is None else head)}


def summary(backend: str, threads: int, mode: str, load_s: float, results: list[dict]) -> dict:
    """One printed row: timing and agreement counts of one setting."""
    secs = [r["seconds"] for r in results]
    return {"backend": backend, "threads": threads, "generation": mode, "calls": len(results),
            "load_and_warmup_s": round(load_s, 2),
            "median_s": round(statistics.median(secs), 3),
            "min_s": round(min(secs), 3), "max_s": round(max(secs), 3),
            "total_s": round(sum(secs), 2),
            "stopped_at_full_list": sum(r["stopped"] for r in results),
            "same_answer_as_logged": sum(r["same_answer"] for r in results),
            "same_parsed_names_as_logged": sum(r["same_parsed"] for r in results),
            "same_accepted_names_as_logged": sum(r["same_accepted"] for r in results)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="FedSLLM run folders")
    p.add_argument("--backends", default="smollm2", help="comma-separated fedsllm-llm values")
    p.add_argument("--threads", default="1", help="comma-separated thread counts (0 = all CPUs)")
    p.add_argument("--limit", type=int, default=0, help="prompts per run (0 = all)")
    p.add_argument("--max-prototypes", type=int, default=10)
    p.add_argument("--dataset", default="ml-100k", help="item table of the runs (item titles)")
    p.add_argument("--stop-full", action="store_true",
                   help="also stop each call once its answer holds a full list (a second row)")
    p.add_argument("--logged", action="store_true",
                   help="no model: where each logged answer would have stopped, and whether the "
                        "names kept are the logged ones (rows per backend: at a full list, and "
                        "at the --max-prototypes-th entry, repeats and titles included)")
    p.add_argument("--max-tokens", type=int, default=160,
                   help="generation bound (fedsllm-llm-max-tokens; 1 = the prompt's cost alone)")
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args(argv)

    from fedmm.data.split import load_item_side
    from server_tasks.prototypes import PrototypeManager
    from server_tasks.prototypes.backends import make_generator
    from strategies.fedsllm import FedSLLMConfig

    calls = load_prompts(args.runs, args.limit)
    items = load_item_side(args.dataset, 0.0, 3, "").items
    rows = []
    if args.logged:
        from server_tasks.prototypes import ClusterPrototypes

        manager = PrototypeManager(ClusterPrototypes(), items, max_prototypes=args.max_prototypes)
        distinct = list({(c["prompt"], c["response"]): c for c in calls}.values())
        rules = {"stop at a full list": manager.is_full,
                 f"stop at entry {args.max_prototypes}":
                     lambda names: len(names) >= args.max_prototypes}
        for (rule, is_full), backend in itertools.product(
                rules.items(), sorted({c.get("backend", "?") for c in distinct})):
            mine = [stop_in_logged(c, is_full, manager.accept) for c in distinct
                    if c.get("backend", "?") == backend]
            row = {"backend": backend, "generation": f"logged answers, {rule}", "calls": len(mine),
                   "stopped_early": sum(r["stopped"] for r in mine),
                   "same_accepted_names_as_logged": sum(r["same_accepted"] for r in mine),
                   "share_of_characters_kept": round(sum(r["chars_kept"] for r in mine)
                                                     / max(1, sum(r["chars"] for r in mine)), 3)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    backends = [] if args.logged else [b.strip() for b in args.backends.split(",") if b.strip()]
    for backend in backends:
        for threads in [int(t) for t in args.threads.split(",")]:
            settings = FedSLLMConfig(llm=backend, llm_threads=threads,
                                     llm_max_tokens=args.max_tokens)
            gen = make_generator(settings, seed=0, device="cpu")
            manager = PrototypeManager(gen, items, max_prototypes=args.max_prototypes)
            t = time.perf_counter()
            gen.generate("List three movie genres.", None)  # load + warm-up
            load_s = time.perf_counter() - t
            modes = {"whole": None}
            if args.stop_full:
                modes["stop-full"] = manager.is_full
            results = {mode: [] for mode in modes}
            for call in calls:
                for mode, is_full in modes.items():
                    results[mode].append(replay(gen, call, is_full, manager.accept))
            for mode, res in results.items():
                row = summary(backend, gen.threads, mode, load_s, res)
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
