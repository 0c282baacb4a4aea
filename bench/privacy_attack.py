#!/usr/bin/env python
"""What one train upload reveals: the changed-rows + PCA-sign attack on the item table.

Attack (issue 16). The server holds the item table it sent, ``S`` ``(N, d)``, and the user's
upload ``T``. Without noise, the rows of ``T - S`` that changed are exactly the user's training
positives plus the round's sampled negatives. Local training pushes positives' rows one way
along the user's taste direction and negatives' rows the other way, so the sign of the changed
rows' updates along their first principal direction (uncentred: the top right-singular vector
of the update rows, so the split is at "no update") separates the two. The side with fewer
rows is called "positive": each positive is trained once per local epoch but there are
``num-negatives`` sampled negatives per positive per epoch, so without labels the smaller side
is the positives' side. Predicted positives are scored against the true training positives.

Reported per user and averaged over users (macro): ``precision`` and ``recall`` of the predicted
positives; ``precision_at_n``: precision of the ``n`` changed rows furthest on the positive
side, where ``n`` is the user's number of positives, which the server reads off the reply's
``num-examples = n * (1 + num-negatives)`` (a stronger attack: it needs no sign threshold);
``changed_recall`` (share of the true positives whose row changed);
``changed_precision`` (share of the changed rows that are positives: what guessing "every
changed row" gets); ``chance_precision`` (positives / catalogue: a guess without the upload).

The uploads are produced by the project's own client code exactly as a Flower run would send
them (:func:`fedmm.factory.build_client`, ``FedRecClient.fit``; ``pad-items`` and ``ldp-delta``
applied inside ``fit``), for round 1 from the initial global weights (``same-init``: the
server's copy), i.e. the first upload of each user.

Setting ``secagg`` (``secagg = true``): the attacked users' uploads go through a real SecAgg+
exchange among them (fedmm/secagg.py: the ClientApp mod and the server's round, stages 1-3),
and the attack gets what the server holds of each user: its masked vector, read back as an
item table with the user's weight from the clear ``num-examples`` (:func:`secagg_views`). The
server's only other view of the table is the round's sum (after stage 4), which is no single
user's upload.

    nice -n 10 python bench/privacy_attack.py --users 100 --out bench/results/privacy_attack.jsonl

Prints a table and writes one JSON line per (backbone, setting).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

APP_DIR = Path(__file__).resolve().parents[1]
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))

#: Settings measured by default: name -> run-config overrides.
DEFAULT_SETTINGS = {
    "base": "",
    "ldp-0.1": "ldp-delta=0.1",
    "ldp-1": "ldp-delta=1.0",
    "pad-100": "pad-items=100",
    "pad-1000": "pad-items=1000",
    "secagg": "secagg=true",
}
BACKBONES = ("fedmf", "fedncf", "pfedrec", "fedrap", "fedpergnn")
METRICS = ("precision", "recall", "precision_at_n", "changed_recall", "changed_precision",
           "chance_precision")


@dataclass(frozen=True)
class Guess:
    """The attack's output for one upload.

    Attributes
    ----------
    changed : numpy.ndarray
        int64 ``(m,)`` sorted rows whose update is non-zero.
    predicted : numpy.ndarray
        int64 ``(k,)`` sorted rows called positive (a subset of ``changed``).
    ranked : numpy.ndarray
        int64 ``(m,)`` the changed rows from the furthest on the positive side to the furthest
        on the other side (by oriented projection).
    """

    changed: np.ndarray
    predicted: np.ndarray
    ranked: np.ndarray


def pca_sign_attack(sent: np.ndarray, uploaded: np.ndarray) -> Guess:
    """Changed rows of the item table and the smaller side of their PCA sign split.

    Parameters
    ----------
    sent : numpy.ndarray
        float ``(N, d)``: the item table the server sent.
    uploaded : numpy.ndarray
        float ``(N, d)``: the item table the client uploaded.

    Returns
    -------
    Guess
        With fewer than 2 changed rows, every changed row is predicted positive. On a tie
        (equal sides) the side with the larger mean ``|projection|`` is called positive
        (positives are updated once per local epoch, most negatives once in all).
    """
    update = np.asarray(uploaded, dtype=np.float64) - np.asarray(sent, dtype=np.float64)
    changed = np.flatnonzero(np.any(update != 0.0, axis=1))
    if changed.size < 2:
        return Guess(changed, changed, changed)
    x = update[changed]  # (m, d)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    proj = x @ vt[0]  # (m,)
    side = proj > 0
    n_a, n_b = int(side.sum()), int((~side).sum())
    if n_a == n_b:
        pick = side if np.abs(proj[side]).mean() >= np.abs(proj[~side]).mean() else ~side
    else:
        pick = side if n_a < n_b else ~side
    oriented = proj if pick is side else -proj
    return Guess(changed, changed[pick], changed[np.argsort(-oriented, kind="stable")])


def score_guess(guess: Guess, positives: np.ndarray, num_items: int) -> dict[str, float]:
    """Precision/recall of ``guess`` against the true training positives.

    Parameters
    ----------
    guess : Guess
    positives : numpy.ndarray
        int64 ``(n,)`` the user's training positives.
    num_items : int
        Catalogue size ``N``.

    Returns
    -------
    dict
        The :data:`METRICS` (precision 0 when nothing is predicted) and the sizes
        ``n_pos``, ``n_changed``, ``n_pred``.
    """
    pos = np.unique(np.asarray(positives, dtype=np.int64))
    hit = np.isin(guess.predicted, pos).sum()
    hit_changed = np.isin(guess.changed, pos).sum()
    top = guess.ranked[:pos.size]
    return {"precision": float(hit / guess.predicted.size) if guess.predicted.size else 0.0,
            "recall": float(hit / pos.size),
            "precision_at_n": float(np.isin(top, pos).sum() / pos.size),
            "changed_recall": float(hit_changed / pos.size),
            "changed_precision": float(hit_changed / guess.changed.size) if guess.changed.size else 0.0,
            "chance_precision": float(pos.size / num_items),
            "n_pos": int(pos.size), "n_changed": int(guess.changed.size),
            "n_pred": int(guess.predicted.size)}


def attack_users(cfg, users, server_round: int = 1) -> list[dict[str, float]]:
    """Run each user's real ``fit`` on the initial global weights and attack its upload.

    Parameters
    ----------
    cfg : fedmm.config.RunConfig
        Method ``base``; ``pad-items`` / ``ldp-delta`` as the setting to measure.
    users : sequence of int
        Users (partition ids) to attack.
    server_round : int, default 1

    Returns
    -------
    list of dict
        One :func:`score_guess` dict per user, plus ``user``.
    """
    from fedmm.factory import build_client, data_for, model_for
    from fedmm.protocol import ITEM_TABLE_KEY

    data = data_for(cfg)
    server = model_for(cfg, data.num_items)
    state = server.state_dict()
    keys = server.shared_keys()
    sent = [state[k].detach().cpu().numpy().copy() for k in keys]
    t = keys.index(ITEM_TABLE_KEY)
    uploads, positives = {}, {}
    for u in users:
        client = build_client(cfg, int(u))
        uploaded, n, _ = client.fit(sent, {"server-round": server_round,
                                           "aggregation": cfg.aggregation})
        uploads[int(u)] = (dict(zip(keys, uploaded)), n)
        positives[int(u)] = client.data.train
    if cfg.secagg:
        views = secagg_views(cfg, uploads, server_round)
        seen = {u: views[u][ITEM_TABLE_KEY] for u in uploads}
    else:
        seen = {u: uploads[u][0][ITEM_TABLE_KEY] for u in uploads}
    return [{"user": u, **score_guess(pca_sign_attack(sent[t], seen[u]), positives[u], data.num_items)}
            for u in uploads]


def secagg_views(cfg, uploads, server_round: int = 1) -> dict[int, dict[str, np.ndarray]]:
    """What the server holds of each user's upload under SecAgg+: the users' ``(arrays,
    num-examples)`` go through stages 1-3 of a real SecAgg+ round among them (fedmm's ClientApp
    mod on each upload, :class:`fedmm.secagg.SecAggPlusRound` on the server), and each masked
    vector is read back as arrays the way an unmasked one would be: dequantised (as a residue
    centred on the quantised zero) and divided by the user's weight ``num-examples /
    secagg-max-weight`` (which the server knows); without the masks this gives the upload
    back up to quantisation."""
    from flwr.app import ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict

    from fedmm.inprocess import set_identity
    from fedmm.protocol import (ARRAYS, CONFIG, METRICS, NUM_EXAMPLES, SECAGG_MASKED,
                                SERVER_ROUND, arrays_to_dict, dict_to_arrays)
    from fedmm.secagg import ARRAY_PREFIX, SecAggPlusRound, secagg_mod

    set_identity()
    p = cfg.secagg_params
    user_of = {i + 1: u for i, u in enumerate(sorted(uploads))}
    contexts = {n: Context(run_id=1, node_id=n, node_config={}, state=RecordDict(),
                           run_config={"seed": cfg.seed}) for n in user_of}

    def fit(msg, ctx):  # the ClientApp's train reply: the upload computed above
        arrays, n = uploads[user_of[ctx.node_id]]
        return Message(RecordDict({ARRAYS: dict_to_arrays(arrays),
                                   METRICS: MetricRecord({NUM_EXAMPLES: int(n)})}), reply_to=msg)

    class Grid:
        def send_and_receive(self, messages, timeout=None):
            return [secagg_mod(m, contexts[m.metadata.dst_node_id], fit) for m in messages]

    sa = SecAggPlusRound(p, Grid(), server_round, seed=cfg.seed)
    train = [Message(RecordDict({CONFIG: ConfigRecord({SERVER_ROUND: server_round})}),
                     dst_node_id=n, message_type=MessageType.TRAIN) for n in user_of]
    replies = Grid().send_and_receive(sa.prepare(train, aggregation="fedavg", item_key=""))
    M, step = p.modulus_range, 2 * p.clipping_range / p.quantization_range
    views = {}
    for r in replies:
        u = user_of[r.metadata.src_node_id]
        masked = arrays_to_dict(r.content[SECAGG_MASKED])
        ratio = uploads[u][1] / p.max_weight
        views[u] = {}
        for k, v in masked.items():
            if k.startswith(ARRAY_PREFIX):
                # Centred residue around the quantised zero: exactly the upload if unmasked.
                c = (v.astype(np.int64) - p.quantization_range // 2) % M
                views[u][k[len(ARRAY_PREFIX):]] = np.where(c >= M // 2, c - M, c) * step / ratio
    return views


def summarise(rows: list[dict[str, float]]) -> dict[str, float]:
    """Macro means of the :data:`METRICS` and of the sizes over users."""
    keys = (*METRICS, "n_pos", "n_changed", "n_pred")
    return {k: float(np.mean([r[k] for r in rows])) for k in keys}


def make_config(overrides: str):
    """A checked :class:`~fedmm.config.RunConfig` from pyproject defaults and ``key=value``
    overrides (as ``--run-config``)."""
    from fedmm.config import (RunConfig, load_app_config, merge_overrides,
                              parse_kv_overrides)

    defaults = load_app_config(APP_DIR / "pyproject.toml")
    return RunConfig.from_mapping(merge_overrides(defaults, parse_kv_overrides(overrides),
                                                  "--run-config"))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=100, help="users sampled (seeded by --seed)")
    p.add_argument("--seed", type=int, default=0, help="seed of the user sample")
    p.add_argument("--backbones", default=",".join(BACKBONES))
    p.add_argument("--settings", default=",".join(DEFAULT_SETTINGS),
                   help=f"comma list of {list(DEFAULT_SETTINGS)}")
    p.add_argument("--run-config", "-c", default="", help="overrides for every setting")
    p.add_argument("--out", default="", help="JSON-lines file to append to ('' = none)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from fedmm.config import ConfigError

    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = sorted(set(settings) - set(DEFAULT_SETTINGS))
    if unknown:
        print(f"error: unknown setting(s) {unknown}; choose from {list(DEFAULT_SETTINGS)}",
              file=sys.stderr)
        return 2
    backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    try:
        base_cfg = make_config(args.run_config)
        from fedmm.factory import data_for

        num_users = data_for(base_cfg).num_users
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not 0 < args.users <= num_users:
        print(f"error: --users must be in [1, {num_users}]", file=sys.stderr)
        return 2
    users = np.sort(np.random.default_rng(args.seed).choice(num_users, args.users, replace=False))
    head = f"{'backbone':10s} {'setting':9s} " + " ".join(f"{m[:13]:>13s}" for m in METRICS) + \
        f" {'n_pos':>6s} {'changed':>7s} {'pred':>6s} {'s':>5s}"
    print(head)
    out = open(args.out, "a") if args.out else None
    try:
        for backbone in backbones:
            for name in settings:
                overrides = f"{args.run_config} backbone='{backbone}' {DEFAULT_SETTINGS[name]}"
                try:
                    cfg = make_config(overrides)
                except ConfigError as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    return 2
                t0 = time.time()
                summary = summarise(attack_users(cfg, users))
                secs = time.time() - t0
                print(f"{backbone:10s} {name:9s} " + " ".join(f"{summary[m]:13.3f}" for m in METRICS)
                      + f" {summary['n_pos']:6.1f} {summary['n_changed']:7.1f} "
                        f"{summary['n_pred']:6.1f} {secs:5.1f}", flush=True)
                if out is not None:
                    out.write(json.dumps({"backbone": backbone, "setting": name,
                                          "overrides": overrides.strip(), "users": len(users),
                                          "user-seed": args.seed, "round": 1,
                                          "weights": "initial", **summary,
                                          "seconds": round(secs, 2)}) + "\n")
                    out.flush()
    finally:
        if out is not None:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
