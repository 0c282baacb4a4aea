"""FedRecStrategy samples users, not node ids: the same seed trains the same users whatever
node ids the engine drew (query round before round 1); a Grid stub stands in for Flower's."""
from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Error, Message, MessageType, MetricRecord, RecordDict

from strategies.aggregation import ReplyError
from fedmm.protocol import dict_to_arrays
from strategies.base import FedRecStrategy

N_USERS = 40


def _reply(msg: Message, content: RecordDict | None, error: str | None = None) -> Message:
    """A reply from ``msg``'s destination node, as a ClientApp handler returns one."""
    if error is not None:
        return Message(Error(code=1, reason=error), reply_to=msg)
    return Message(content, reply_to=msg)


class UserGrid:
    """Nodes with random ids, each holding one user; answers query messages like
    ``fedmm.client_app.query`` (or fails for users in ``no_handler``)."""

    def __init__(self, node_seed: int, no_handler=(), user_of=None):
        ids = np.random.default_rng(node_seed).choice(10**9, N_USERS, replace=False)
        self.user_of = user_of or {int(n): u for u, n in enumerate(ids)}
        self.no_handler = set(no_handler)
        self.queries = 0

    def get_node_ids(self):
        return list(self.user_of)

    def send_and_receive(self, messages, *, timeout=None):
        out = []
        for m in messages:
            assert m.metadata.message_type == MessageType.QUERY
            assert dict(m.content["config"]) == {"query": "user"}
            self.queries += 1
            user = self.user_of[m.metadata.dst_node_id]
            out.append(_reply(m, None, "no query handler") if user in self.no_handler else
                       _reply(m, RecordDict({"metrics": MetricRecord({"user": user})})))
        return out


def strategy(seed: int = 3) -> FedRecStrategy:
    return FedRecStrategy(num_rounds=3, fraction_train=0.25, seed=seed)


def sampled_users(strat: FedRecStrategy, grid: UserGrid, rounds: int = 3) -> list[list[int]]:
    arrays = dict_to_arrays({"item_emb.weight": np.zeros((5, 2), np.float32)})
    out = []
    for rnd in range(1, rounds + 1):
        msgs = list(strat.configure_train(rnd, arrays, ConfigRecord({}), grid))
        out.append([grid.user_of[m.metadata.dst_node_id] for m in msgs])
    return out


def test_same_seed_same_users_whatever_the_node_ids(serverapp_identity):
    runs = []
    for node_seed in (0, 1):
        grid, strat = UserGrid(node_seed), strategy()
        strat.user_of = strat.discover_users(grid)
        assert grid.queries == N_USERS and len(strat.user_of) == N_USERS
        runs.append(sampled_users(strat, grid))
    assert runs[0] == runs[1]
    assert all(len(r) == 10 and r == sorted(r) for r in runs[0])   # sent in user order
    assert len({tuple(r) for r in runs[0]}) == 3                     # rounds differ
    other = strategy(seed=4)
    grid = UserGrid(0)
    other.user_of = other.discover_users(grid)
    assert sampled_users(other, grid) != runs[0]                     # the seed matters


def test_without_the_query_round_sampling_follows_node_ids(serverapp_identity):
    # The old behaviour, kept for clients without a query handler: not reproducible across
    # node-id draws (this is what the query round fixes).
    assert sampled_users(strategy(), UserGrid(0)) != sampled_users(strategy(), UserGrid(1))


def test_nodes_without_query_handler_are_logged_and_still_sampled(serverapp_identity, caplog):
    grid, strat = UserGrid(0, no_handler={5, 6, 7}), strategy()
    strat.user_of = strat.discover_users(grid)
    assert len(strat.user_of) == N_USERS - 3
    assert "3 of 40 nodes did not report their user" in caplog.text
    order = strat._order(grid.get_node_ids())
    assert [grid.user_of[n] for n in order[:-3]] == [u for u in range(N_USERS) if u not in {5, 6, 7}]
    assert {grid.user_of[n] for n in order[-3:]} == {5, 6, 7}        # unknown users last,
    assert order[-3:] == sorted(order[-3:])                          # by node id


def test_two_nodes_claiming_one_user_is_an_error(serverapp_identity):
    grid = UserGrid(0, user_of={11: 0, 12: 1, 13: 1})
    with pytest.raises(ReplyError, match="nodes 12 and 13 both hold user 1"):
        strategy().discover_users(grid)


class Recording(FedRecStrategy):
    """Records the node order in which ``server_update`` sees the replies."""

    def server_update(self, server_round, replies, arrays):
        self.seen = [r.node for r in replies]
        self.users = [r.user for r in replies]
        return arrays


def test_server_update_sees_replies_in_user_order_not_arrival_order(serverapp_identity):
    # GFMFR clusters the replies' score functions with K-Means, whose result depends on the
    # row order: arrival order would make runs with one seed differ.
    grid, strat = UserGrid(0), Recording(num_rounds=1, fraction_train=0.2, seed=0)
    strat.user_of = strat.discover_users(grid)
    arrays = dict_to_arrays({"item_emb.weight": np.zeros((5, 2), np.float32)})
    seen = []
    for perm_seed in (0, 1):
        strat._rng.seed(0)   # the same nodes every time
        msgs = list(strat.configure_train(1, arrays, ConfigRecord({}), grid))
        replies = [_reply(m, RecordDict({
            "arrays": dict_to_arrays({"item_emb.weight": np.ones((5, 2), np.float32)}),
            "metrics": MetricRecord({"num-examples": 3, "train-loss": 0.5})})) for m in msgs]
        order = np.random.default_rng(perm_seed).permutation(len(replies))
        strat.aggregate_train(1, [replies[i] for i in order])
        seen.append([grid.user_of[n] for n in strat.seen])
        # The user of each parsed reply comes from the query round, not from the reply.
        assert strat.users == seen[-1]
    assert seen[0] == seen[1] == sorted(seen[0]) and len(seen[0]) == 8


def _train_reply(m: Message) -> Message:
    return _reply(m, RecordDict({
        "arrays": dict_to_arrays({"item_emb.weight": np.ones((5, 2), np.float32)}),
        "metrics": MetricRecord({"num-examples": 3, "train-loss": 0.5})}))


def test_lost_train_replies_cost_only_their_own_update(serverapp_identity):
    grid = UserGrid(0)
    strat = FedRecStrategy(fraction_train=0.2, seed=0, min_train_replies=5, num_rounds=2)
    strat.user_of = strat.discover_users(grid)
    arrays = dict_to_arrays({"item_emb.weight": np.zeros((5, 2), np.float32)})
    msgs = list(strat.configure_train(1, arrays, ConfigRecord({}), grid))
    assert len(msgs) == 8
    # one reply is an error, one node never answers (died / timed out), six succeed
    replies = [_reply(msgs[0], None, "client crashed")] + [_train_reply(m) for m in msgs[2:]]
    new, _ = strat.aggregate_train(1, replies)
    assert new is not None and np.allclose(new["item_emb.weight"].numpy(), 1.0)
    lost_users = sorted(grid.user_of[m.metadata.dst_node_id] for m in msgs[:2])
    assert strat._round["failures"] == 2 and sorted(strat._round["failed-users"]) == lost_users
    # fewer successes than min-train-replies: the run stops with a message saying why
    msgs = list(strat.configure_train(2, arrays, ConfigRecord({}), grid))
    with pytest.raises(RuntimeError, match="4 of 4 train replies succeeded, fewer than "
                                           "min-train-replies = 5"):
        strat.aggregate_train(2, [_train_reply(m) for m in msgs[:4]])


def _eval_reply(m: Message, value: float) -> Message:
    return _reply(m, RecordDict({"metrics": MetricRecord({"valid_sampled_ndcg@10": value})}))


@pytest.mark.parametrize("allowed, ok", [(0.0, False), (0.05, True)])
def test_evaluation_tolerates_lost_nodes_up_to_max_eval_failures(serverapp_identity, allowed, ok):
    grid = UserGrid(0)
    strat = FedRecStrategy(fraction_train=0.2, seed=0, eval_every=1, max_eval_failures=allowed,
                           num_rounds=1)
    strat.user_of = strat.discover_users(grid)
    arrays = dict_to_arrays({"item_emb.weight": np.zeros((5, 2), np.float32)})
    msgs = list(strat.configure_evaluate(1, arrays, ConfigRecord({}), grid))
    assert len(msgs) == N_USERS
    replies = [_eval_reply(m, 1.0) for m in msgs[1:]]          # node of msgs[0] never answers
    if not ok:
        with pytest.raises(RuntimeError, match="1 of 40 evaluate replies failed or never came"):
            strat.aggregate_evaluate(1, replies)
        return
    result = strat.aggregate_evaluate(1, replies)
    assert result["valid_sampled_ndcg@10"] == 1.0 and result["eval-users"] == N_USERS - 1
    assert strat.history[-1]["eval-failures"] == 1
    assert strat.history[-1]["eval-failed-users"] == [grid.user_of[msgs[0].metadata.dst_node_id]]


def test_after_round_one_sampling_does_not_wait_for_lost_nodes(serverapp_identity):
    grid = UserGrid(0)
    strat = FedRecStrategy(fraction_train=0.5, seed=0, min_available_nodes=N_USERS,
                           node_timeout=0.1, num_rounds=3)
    strat.user_of = strat.discover_users(grid)
    strat._started = True                                   # as start() sets after the query round
    del grid.user_of[next(iter(grid.user_of))]              # a SuperNode died
    msgs = list(strat.configure_train(2, dict_to_arrays({"item_emb.weight": np.zeros((5, 2), np.float32)}),
                                      ConfigRecord({}), grid))
    assert len(msgs) == (N_USERS - 1) // 2 and strat._round["nodes"] == N_USERS - 1
    fresh = FedRecStrategy(min_available_nodes=N_USERS, node_timeout=0.1)   # before round 1
    with pytest.raises(RuntimeError, match="only 39 of 40 nodes connected after 0s"):
        fresh.discover_users(grid)
