#!/usr/bin/env python
"""Flower's own floor for an all-node round: a ClientApp that does nothing.

Runs Flower 1.42's simulation engine (``flwr.simulation.run_simulation``: the same Ray backend,
actor pool, dispatcher and in-memory LinkState as ``flwr run``) with ``--nodes`` nodes and a
ClientApp whose handlers only reply. The ServerApp sends one message to every node per round, as
fedmm's user query and all-user evaluation do, and times each ``send_and_receive``:

* one ``query`` round first (cold: it waits for Ray's start and the actors' first load, as
  fedmm's user discovery does) and ``--rounds`` more (warm);
  ``ray_init_s`` (Ray's own start, ``ray.init`` on the engine's thread) and
  ``cold_after_ray_init_s`` (from Ray being up to the cold round's last reply) split it;
* ``--rounds`` ``evaluate`` rounds whose messages carry a float32 array of ``--kb`` KiB (the
  ML-100K item table fedmm sends is 210 KiB) and whose replies carry ``--reply-kb`` KiB.

Whatever a fedmm round costs above these figures is fedmm's (the client's work, its messages'
contents); what they cost is Flower's and Ray's per-message round trip on this machine. fedmm's
per-node message index (``--indexed``, fedmm/sim_dispatch.py, on in fedmm's runs by default) is
applied the same way fedmm's ServerApp applies it.

    .venv/bin/python bench/flower_floor.py --nodes 943 --rounds 6 --json bench/results/flower-floor.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def floor_apps(nodes: int, rounds: int, kb: float, reply_kb: float, indexed: bool,
               result: dict):
    """The (ServerApp, ClientApp) pair; the ServerApp writes its timings into ``result``:
    ``query_cold_s`` (float), ``query_cold_span`` (its ``time.perf_counter()`` start and end),
    ``query_warm_s`` and ``evaluate_s`` (lists of seconds)."""
    import numpy as np
    from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp

    from fedmm.sim_dispatch import index_grid_dispatch

    down = np.zeros(int(kb * 1024) // 4, dtype=np.float32)
    up = np.zeros(int(reply_kb * 1024) // 4, dtype=np.float32)
    client = ClientApp()

    @client.query()
    def query(msg: Message, context: Context) -> Message:
        return Message(RecordDict({"m": MetricRecord({"x": 1})}), reply_to=msg)

    @client.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        content = RecordDict({"m": MetricRecord({"x": 1})})
        if up.size:
            content["a"] = ArrayRecord({"t": Array(up)})
        return Message(content, reply_to=msg)

    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        result["indexed"] = bool(indexed and index_grid_dispatch(grid))
        deadline = time.monotonic() + 300
        while len(list(grid.get_node_ids())) < nodes:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(list(grid.get_node_ids()))} of {nodes} nodes "
                                   f"registered after 300 s")
            time.sleep(0.05)
        node_ids = sorted(grid.get_node_ids())

        def one_round(kind: str, content_fn) -> float:
            msgs = [Message(content_fn(), dst_node_id=n, message_type=kind) for n in node_ids]
            t = time.perf_counter()
            replies = list(grid.send_and_receive(msgs))
            took = time.perf_counter() - t
            errors = [r for r in replies if r.has_error()]
            if len(replies) != len(node_ids) or errors:
                raise RuntimeError(f"{kind}: {len(replies)} replies of {len(node_ids)}, "
                                   f"{len(errors)} errors")
            return took

        cold_start = time.perf_counter()
        result["query_cold_s"] = one_round("query", RecordDict)
        result["query_cold_span"] = [cold_start, time.perf_counter()]
        result["query_warm_s"] = [one_round("query", RecordDict) for _ in range(rounds)]
        table = ArrayRecord({"t": Array(down)})
        result["evaluate_s"] = [one_round("evaluate", lambda: RecordDict({"a": table}))
                                for _ in range(rounds)]

    return server, client


@contextlib.contextmanager
def timed(owner, name: str, stamps: dict):
    """Replace ``owner.name`` (a callable) for the block by one that records the
    ``time.perf_counter()`` span of its first call in ``stamps[name]`` as ``[start, end]``
    (also when it raises); the original is put back on exit."""
    real = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            stamps.setdefault(name, [start, time.perf_counter()])

    setattr(owner, name, wrapper)
    try:
        yield stamps
    finally:
        setattr(owner, name, real)


def cold_breakdown(ray_init: list[float] | None, cold: list[float] | None) -> dict:
    """Split the cold query round (``cold``: its perf_counter span) at the end of Ray's start
    (``ray_init``: the span of ``ray.init``, which runs on the engine's thread while the
    ServerApp waits for its first replies): ``ray_init_s``, the seconds of ``ray.init``;
    ``cold_after_ray_init_s``, from Ray being up to the round's last reply (the actors'
    creation and first load, then the round itself). Empty when a span is missing."""
    if not ray_init or not cold:
        return {}
    return {"ray_init_s": ray_init[1] - ray_init[0],
            "cold_after_ray_init_s": cold[1] - max(ray_init[1], cold[0])}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=943)
    p.add_argument("--rounds", type=int, default=6, help="warm query and evaluate rounds each")
    p.add_argument("--kb", type=float, default=210.25, help="KiB of float32 sent to each node "
                   "(default: ML-100K's 1,682 x 32 item table)")
    p.add_argument("--reply-kb", type=float, default=0.0, help="KiB of float32 in each reply")
    p.add_argument("--actors", type=int, default=2, help="client actors (num-cpus each: 1; "
                   "Ray is given this many CPUs)")
    p.add_argument("--no-index", dest="indexed", action="store_false",
                   help="Flower's dispatch as is (no fedmm per-node index)")
    p.add_argument("--json", type=Path, help="write the figures here")
    a = p.parse_args(argv)
    if a.nodes < 1 or a.rounds < 1 or a.actors < 1 or a.kb < 0 or a.reply_kb < 0:
        p.error("--nodes, --rounds, --actors must be >= 1 and --kb, --reply-kb >= 0")
    sys.path.insert(0, str(ROOT))
    from run import RAY_ENV

    # As run.py sets them for flwr run: messages up to 4 MiB go inline, not through the object
    # store; no task events.
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    import ray
    from flwr.simulation import run_simulation

    result: dict = {}
    stamps: dict = {}
    server, client = floor_apps(a.nodes, a.rounds, a.kb, a.reply_kb, a.indexed, result)
    t = time.perf_counter()
    with timed(ray, "init", stamps):   # Flower's Ray backend calls ray.init(...) by attribute
        run_simulation(server_app=server, client_app=client, num_supernodes=a.nodes,
                       backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                       "init_args": {"num_cpus": a.actors}})
    if "evaluate_s" not in result:
        raise SystemExit("flower_floor: the ServerApp did not finish (see Flower's log above)")
    result.update(cold_breakdown(stamps.get("init"), result.pop("query_cold_span", None)))
    result.update({"nodes": a.nodes, "kb": a.kb, "reply_kb": a.reply_kb, "actors": a.actors,
                   "wall_s": time.perf_counter() - t,
                   "query_warm_median_s": statistics.median(result["query_warm_s"]),
                   "evaluate_median_s": statistics.median(result["evaluate_s"])})
    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else
                          [round(x, 3) for x in v] if isinstance(v, list) else v)
                      for k, v in result.items()}))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
