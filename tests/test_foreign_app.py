"""Reuse: fedmm's strategies drive a ClientApp that is NOT fedmm's.

The ClientApp below is written from the contract in ``fedmm.protocol`` alone: a numpy
logistic matrix factorisation whose item table is named ``emb/items`` (not fedmm's
``item_emb.weight``) and whose private score function ``(w, b)`` lives in ``context.state``.
A loopback Grid hands every message to that ClientApp (``ClientApp.__call__``: Flower's own
dispatch by message type) with one ``Context`` per node, and ``Strategy.start`` (Flower's round
loop) runs two rounds with each of ``FedRecStrategy``, ``GFMFR`` and ``FedSLLM``, imported from
the package as another project would.
"""
from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

import strategies
from fedmm.models import build_model
from fedmm.protocol import dict_to_arrays

N_ITEMS, DIM, N_USERS = 24, 4, 8
TABLE = "emb/items"
NODES = [5000 + 11 * u for u in range(N_USERS)]


def positives(user: int) -> np.ndarray:
    """Two tastes: even users like even items, odd users odd items."""
    rng = np.random.default_rng(user)
    return np.sort(rng.choice(np.arange(user % 2, N_ITEMS, 2), 5, replace=False))


def make_foreign_app() -> ClientApp:
    app = ClientApp()

    def user(context: Context) -> int:
        return int(context.node_config["user"])

    def scorer(context: Context):
        if "mine" in context.state.array_records:
            rec = context.state["mine"]
            return rec["w"].numpy().copy(), float(rec["b"].numpy()[0])
        rng = np.random.default_rng(100 + user(context))
        return rng.normal(0, 0.1, DIM), 0.0

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        return Message(RecordDict({"metrics": MetricRecord({"user": user(context)})}), reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        u = user(context)
        table = msg.content["arrays"][TABLE].numpy().astype(np.float64).copy()
        config = dict(msg.content["config"])
        w, b = scorer(context)
        pos = positives(u)
        rng = np.random.default_rng([u, int(config["server-round"])])
        extras: dict[str, np.ndarray] = {}
        if "fedsllm" in msg.content.array_records:   # FedSLLM: keep a share, upload counts
            sim = msg.content["fedsllm"]["similarity"].numpy()          # (N, P)
            nearest = sim[pos].argmax(1)
            extras["prototype-counts"] = np.bincount(nearest, minlength=sim.shape[1]).astype(np.int64)
            keep = max(1, int(len(pos) * float(config["fedsllm-fraction"])))
            pos = rng.choice(pos, keep, replace=False)
        negs = rng.choice(np.setdiff1d(np.arange(N_ITEMS), positives(u)), 2 * len(pos), replace=False)
        items = np.concatenate([pos, negs])
        labels = np.concatenate([np.ones(len(pos)), np.zeros(len(negs))])
        losses = []
        for _ in range(5):
            p = 1 / (1 + np.exp(-(table[items] @ w + b)))
            losses.append(float(-np.mean(labels * np.log(p + 1e-9) + (1 - labels) * np.log(1 - p + 1e-9))))
            g = (p - labels) / len(items)
            grad_rows = np.outer(g, w)
            w -= 0.5 * table[items].T @ g
            b -= 0.5 * g.sum()
            np.add.at(table, items, -5.0 * grad_rows)
        context.state["mine"] = dict_to_arrays({"w": w, "b": np.array([b])})  # never uploaded
        extras.update({"scorer/score_fn.weight": w[None, :].astype(np.float32),
                       "scorer/score_fn.bias": np.array([b], np.float32)})
        content = RecordDict({
            "arrays": dict_to_arrays({TABLE: table.astype(np.float32)}),
            "metrics": MetricRecord({"num-examples": len(items), "train-loss": losses[-1],
                                     "rec-loss": losses[-1]}),
            "extras": dict_to_arrays(extras)})
        return Message(content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        table = msg.content["arrays"][TABLE].numpy()
        w, b = scorer(context)
        pos = positives(user(context))
        held_out, scores = pos[-1], table @ w + b
        rank = int((scores[np.setdiff1d(np.arange(N_ITEMS), pos[:-1])] > scores[held_out]).sum())
        ndcg = 1 / np.log2(rank + 2) if rank < 10 else 0.0
        return Message(RecordDict({"metrics": MetricRecord({"valid_sampled_ndcg@10": ndcg})}),
                       reply_to=msg)

    return app


class LoopbackGrid:
    """A Grid whose nodes are in this process: each message goes to the ClientApp with its
    node's persistent Context."""

    def __init__(self, app: ClientApp) -> None:
        self.app = app
        self.contexts = {nid: Context(run_id=1, node_id=nid, node_config={"user": u},
                                      state=RecordDict(), run_config={})
                         for u, nid in enumerate(NODES)}
        self.sent: list[Message] = []

    def get_node_ids(self):
        return list(self.contexts)

    def send_and_receive(self, messages, timeout=None):
        out = []
        for m in messages:
            self.sent.append(m)
            out.append(self.app(m, self.contexts[m.metadata.dst_node_id]))
        return out


def initial(seed: int = 0) -> dict[str, np.ndarray]:
    return {TABLE: np.random.default_rng(seed).normal(0, 0.1, (N_ITEMS, DIM)).astype(np.float32)}


def run_two_rounds(strategy) -> LoopbackGrid:
    grid = LoopbackGrid(make_foreign_app())
    arrays = dict_to_arrays(strategy.initial_arrays(initial()))
    strategy.start(grid=grid, initial_arrays=arrays, num_rounds=2)
    return grid


COMMON = dict(fraction_train=0.5, eval_every=1, seed=0, select_metric="valid_sampled_ndcg@10",
              item_table_key=TABLE)


def check_run(strategy, grid: LoopbackGrid) -> None:
    assert strategy.num_rounds == 2                  # start()'s num_rounds is the one used
    assert [r["round"] for r in strategy.history] == [1, 2]
    assert all(r["clients"] == N_USERS // 2 and r["failures"] == 0 for r in strategy.history)
    assert sorted(strategy.user_of.values()) == list(range(N_USERS))
    trains = [m for m in grid.sent if m.metadata.message_type == "train"]
    assert len(trains) == 2 * N_USERS // 2
    # The item table moved, under the foreign name.
    assert strategy.best is not None and 0.0 <= strategy.best["valid_sampled_ndcg@10"] <= 1.0


def test_public_api_names():
    from strategies import FedRecStrategy, FedSLLM, GFMFR

    assert FedRecStrategy.__name__ == "FedRecStrategy" and GFMFR.__mro__[1] is FedRecStrategy
    assert issubclass(FedSLLM, FedRecStrategy)

    assert set(strategies.__all__) >= {"FedRecStrategy", "GFMFR", "FedSLLM"}
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        strategies.Nope  # noqa: B018


def test_base_strategy_drives_a_foreign_client_app(serverapp_identity):
    strategy = strategies.FedRecStrategy(**COMMON)
    grid = run_two_rounds(strategy)
    check_run(strategy, grid)
    # user sampling: the same seed picks the same users again
    again = strategies.FedRecStrategy(**COMMON)
    run_two_rounds(again)
    assert [r["client-bytes"].keys() for r in again.history] == \
           [r["client-bytes"].keys() for r in strategy.history]


def test_gfmfr_drives_a_foreign_client_app(serverapp_identity, tmp_path):
    settings = strategies.GFMFRConfig(groups=2, epochs=2, hidden=8, group_dim=4)
    rng = np.random.default_rng(1)
    modalities = {"text": (rng.normal(size=(N_ITEMS, 6)).astype(np.float32), np.ones(N_ITEMS, bool))}
    model = build_model("pfedrec", N_ITEMS, DIM)      # only its score function shape is used
    strategy = strategies.GFMFR(settings=settings, modalities=modalities, model=model,
                                run_dir=tmp_path, fraction_train=1.0, eval_every=1, seed=0,
                                select_metric="valid_sampled_ndcg@10", item_table_key=TABLE)
    grid = run_two_rounds(strategy)
    assert [r["round"] for r in strategy.history] == [1, 2]
    assert sum(strategy.history[0]["gfmfr-group-sizes"]) == N_USERS
    # Round 2's train messages carry each node's group signal and this round's lambda_t.
    round2 = [m for m in grid.sent if m.metadata.message_type == "train"][N_USERS:]
    assert all("gfmfr" in m.content.array_records for m in round2)
    assert all("gfmfr-lambda-t" in m.content["config"] for m in round2)
    assert (tmp_path / "groups.jsonl").read_text().count("\n") == 2


def test_fedsllm_drives_a_foreign_client_app(serverapp_identity, tmp_path):
    from test_fedsllm import CountingEncoder, ScriptedLLM, _items, _settings

    settings = _settings(sampler="fedsllm", proto_update_every=1, align_every=1)
    llm = ScriptedLLM(["1. Action adventure\n2. Romantic comedy",
                       "1. Action adventure\n2. War drama",
                       "1. Action adventure\n2. Family animation"])
    strategy = strategies.FedSLLM(settings=settings, items=_items(N_ITEMS), dataset_key="foreign",
                                  cache_dir=tmp_path / "cache", run_dir=tmp_path / "run",
                                  generator=llm, encode_fn=CountingEncoder(), **COMMON)
    grid = run_two_rounds(strategy)
    check_run(strategy, grid)
    assert all("prototype-counts" in r for r in strategy.history)
    assert sum(strategy.history[0]["prototype-counts"]) == sum(len(positives(u)) for u in
                                                               sorted(strategy.user_of.values())
                                                               if str(u) in strategy.history[0]["client-bytes"])
