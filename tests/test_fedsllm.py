"""FedSLLM strategy and client: config, pre-training, payloads, counts, selection, end to end.

Strategy hooks are driven with real ``flwr.app.Message`` objects (train messages from
``configure_train``, replies built with ``Message(content, reply_to=msg)``) and a node-id
stub instead of a Grid; the LLM is a scripted ``ChatLLM`` and the text encoder a deterministic
bag-of-words hash, so nothing heavy loads here. One end-to-end run goes through Flower's real
simulation engine with a local OpenAI-compatible HTTP server standing in for the LLM.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from clients.base import FedRecClient, LocalSettings
from clients.fedsllm import FedSLLMClient
from clients.selection import budget, select_samples
from e2e_util import finals, run_app
from fedmm.config import ConfigError, load_app_config
from fedmm.data.split import UserData
from fedmm.models import build_model
from server_tasks.prototypes import (ChatLLM, ClusterPrototypes, OpenAICompatible,
                                     TransformersLLM, cosine_similarity_matrix)
from strategies.aggregation import ReplyError
from fedmm.protocol import ITEM_TABLE_KEY, arrays_to_dict, dict_to_arrays
from server_tasks.item_text import FEDSLLM_TEXT, item_texts
from server_tasks.prototypes.backends import make_generator, parse_llm_spec
from server_tasks.prototypes.prompts import item_noun_for
from server_tasks.selection_stats import selection_overlap, sum_prototype_counts
from strategies.fedsllm import FedSLLM, FedSLLMConfig

ROOT = Path(__file__).resolve().parents[1]
DIM = 8
GENRES = ["Action|Adventure", "Comedy|Romance", "Drama|War", "Animation|Children's", "unknown"]


pytestmark = pytest.mark.usefixtures("serverapp_identity")


def _defaults() -> dict:
    return load_app_config(ROOT / "pyproject.toml")


def _settings(**overrides) -> FedSLLMConfig:
    cfg = _defaults()
    cfg.update({"fedsllm-ae-epochs": 5, "fedsllm-align-epochs": 3, "fedsllm-max-prototypes": 4})
    cfg.update({f"fedsllm-{k.replace('_', '-')}": v for k, v in overrides.items()})
    return FedSLLMConfig.from_mapping(cfg)


def _items(n: int = 20) -> pd.DataFrame:
    return pd.DataFrame({
        "title": [f"Film {i}" for i in range(n)],
        "year": [1990.0 + i % 7 if i % 5 else np.nan for i in range(n)],
        "genres": [GENRES[i % len(GENRES)] for i in range(n)],
        "description": ["" if i % 2 else f"story number {i}" for i in range(n)],
        "image": [""] * n,
    })


class CountingEncoder:
    """Deterministic text encoder: hashed bag of words, 16-d, unit norm. Counts its calls."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(len(texts))
        out = np.zeros((len(texts), 16), dtype=np.float32)
        for r, text in enumerate(texts):
            for word in text.lower().replace(",", " ").replace(".", " ").split():
                h = int(hashlib.sha1(word.encode()).hexdigest(), 16)
                out[r, h % 16] += 1.0 if (h >> 8) % 2 else -1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-6)


class ScriptedLLM(ChatLLM):
    """ChatLLM test double: answers in turn; fails the test if asked once too often."""

    name = "scripted"

    def __init__(self, answers: list[str]) -> None:
        self.answers = list(answers)
        self.prompts: list[str] = []

    def complete(self, prompt, system=None):
        self.prompts.append(prompt)
        if not self.answers:
            raise AssertionError(f"LLM called once too often with: {prompt[:80]!r}")
        return self.answers.pop(0)


class Nodes:
    """Stands in for a Grid in ``configure_train`` (the only call it makes)."""

    def __init__(self, ids) -> None:
        self.ids = list(ids)

    def get_node_ids(self):
        return self.ids


FIRST = "1. Action adventure\n2. Romantic comedy\n3. War drama"
SECOND = "1. Action adventure\n2. Family animation\n3. War drama\n4. Crime thriller"


def _strategy(tmp_path: Path, sampler: str = "fedsllm", answers=(FIRST, SECOND),
              num_rounds: int = 4, encoder: CountingEncoder | None = None, **overrides):
    settings = _settings(sampler=sampler, **overrides)
    llm = ScriptedLLM(list(answers)) if sampler == "fedsllm" else None
    strategy = FedSLLM(settings=settings, items=_items(), dataset_key="grouplens:/x",
                       cache_dir=tmp_path / "cache", run_dir=tmp_path / "run", generator=llm,
                       encode_fn=encoder or CountingEncoder(), seed=0, num_rounds=num_rounds,
                       fraction_train=0.5, eval_every=2, min_available_nodes=1)
    return strategy, llm


def _initial_table(n: int = 20) -> dict[str, np.ndarray]:
    return {ITEM_TABLE_KEY: np.random.default_rng(0).normal(size=(n, DIM)).astype(np.float32)}


def _reply(msg: Message, table: np.ndarray, counts=None, ms: float = 2.0,
           examples: int = 10) -> Message:
    content = RecordDict({
        "arrays": dict_to_arrays({ITEM_TABLE_KEY: table}),
        "metrics": MetricRecord({"num-examples": examples, "train-loss": 0.5,
                                 "selection-ms": ms}),
    })
    if counts is not None:
        content["extras"] = dict_to_arrays({"prototype-counts": np.asarray(counts, dtype=np.int64)})
    return Message(content=content, reply_to=msg)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ----- configuration ------------------------------------------------------------------------
def test_every_declared_key_is_read_and_defaults_parse():
    cfg = _defaults()
    declared = sorted(k for k in cfg if k.startswith("fedsllm-"))
    assert declared == sorted(FedSLLMConfig.keys()) == sorted(FedSLLMConfig.KEYS)
    s = FedSLLMConfig.from_mapping(cfg)
    assert (s.sampler, s.fraction, s.llm, s.score, s.pool) == ("fedsllm", 0.1, "smollm2",
                                                               "probability", "unseen")
    assert s.uses_prototypes and s.uses_autoencoder
    # the paper's initialisation for every method by default (App. B.2), off only as ablation
    for sampler in ("base", "random", "entropy", "cluster", "fedselect", "fale"):
        assert _settings(sampler=sampler).uses_autoencoder, sampler
    assert not _settings(sampler="entropy", ae_init_baselines="false").uses_autoencoder
    assert _settings(sampler="fedsllm", ae_init_baselines="false").uses_autoencoder


@pytest.mark.parametrize("key,value,match", [
    ("fedsllm-sampler", "entropyy", "choose one of"),
    ("fedsllm-fraction", 0.0, r"\(0, 1\]"),
    ("fedsllm-fraction", 1.5, r"\(0, 1\]"),
    ("fedsllm-fraction", "lots", "not a valid float"),
    ("fedsllm-eps", 0.0, "> 0"),
    ("fedsllm-score", "logits", "choose one of.*probability.*literal"),
    ("fedsllm-pool", "fresh", "choose one of.*unseen.*all"),
    ("fedsllm-max-prototypes", 1, ">= 2"),
    ("fedsllm-max-prototypes", 2.5, "not a valid int"),
    ("fedsllm-proto-update-every", 0, ">= 1"),
    ("fedsllm-align-every", -1, "0 = never"),
    ("fedsllm-ae-init-baselines", "yes", "not a valid bool"),
    ("fedsllm-llm", "openai:localhost:8000", "openai:<base_url>:<model>"),
    ("fedsllm-llm-max-tokens", 5000, "<= 2048"),
])
def test_config_errors_name_the_key(key, value, match):
    cfg = {**_defaults(), key: value}
    with pytest.raises(ConfigError, match=f"'{key}'.*{match}"):
        FedSLLMConfig.from_mapping(cfg)


def test_missing_key_is_named():
    cfg = _defaults()
    del cfg["fedsllm-eps"]
    with pytest.raises(ConfigError, match="'fedsllm-eps' is missing"):
        FedSLLMConfig.from_mapping(cfg)


def test_llm_spec_and_backends_without_loading(tmp_path):
    assert parse_llm_spec("smollm2").kind == "transformers" and parse_llm_spec("").model is None
    spec = parse_llm_spec("openai:http://127.0.0.1:8000/v1:qwen2.5:7b")
    assert (spec.kind, spec.base_url, spec.model) == ("openai", "http://127.0.0.1:8000/v1",
                                                      "qwen2.5:7b")
    gguf = parse_llm_spec(str(tmp_path / "m" / "model.Q4.gguf"))
    assert (gguf.model, gguf.gguf_file) == (str(tmp_path / "m"), "model.Q4.gguf")
    assert parse_llm_spec("HuggingFaceTB/SmolLM2-360M-Instruct").model == \
        "HuggingFaceTB/SmolLM2-360M-Instruct"
    llm = make_generator(_settings(), seed=3, device="cpu")
    assert isinstance(llm, TransformersLLM) and llm.model is None and llm.seed == 3
    api = make_generator(_settings(llm="openai:https://api.example.org:gpt-x",
                                   api_key_env="MY_KEY"), seed=0, device="cpu")
    assert isinstance(api, OpenAICompatible) and api.url == \
        "https://api.example.org/v1/chat/completions" and api.api_key_env == "MY_KEY"
    assert isinstance(make_generator(_settings(sampler="cluster"), 0, "cpu"), ClusterPrototypes)


def test_llamacpp_spec_threads_key_and_backend_without_loading():
    from server_tasks.prototypes.backends import LlamaCppLLM, resolve_threads
    assert (parse_llm_spec("llamacpp").kind, parse_llm_spec("llamacpp").model) == ("llamacpp", None)
    spec = parse_llm_spec("llamacpp:/models/q.Q4_K_M.gguf")
    assert (spec.kind, spec.model) == ("llamacpp", "/models/q.Q4_K_M.gguf")
    with pytest.raises(ConfigError, match="llama.cpp runs GGUF files"):
        parse_llm_spec("llamacpp:/models/q.bin")
    with pytest.raises(ConfigError, match="'fedsllm-llm-threads'.*>= 0"):
        _settings(llm_threads=-1)
    llm = make_generator(_settings(llm="llamacpp", llm_threads=3, llm_max_tokens=50), 7, "cpu")
    assert isinstance(llm, LlamaCppLLM) and (llm.threads, llm.seed, llm.max_new_tokens) == (3, 7, 50)
    assert make_generator(_settings(llm_threads=2), 0, "cpu").threads == 2
    import os
    assert resolve_threads(0) == len(os.sched_getaffinity(0)) and resolve_threads(5) == 5
    with pytest.raises(ValueError, match="threads must be >= 0"):
        resolve_threads(-2)


def test_item_texts_and_prompt_noun():
    texts = item_texts(_items(), FEDSLLM_TEXT)
    assert texts[0] == "Film 0. Genres: Action, Adventure. story number 0"
    assert texts[1] == "Film 1. Year: 1991. Genres: Comedy, Romance"
    assert texts[4] == "Film 4. Year: 1994. story number 4"  # "unknown" genre dropped
    assert [item_noun_for(d) for d in ("ml-100k", "grouplens:/d", "amazon:/d:Beauty", "x")] == \
        ["movie", "movie", "product", "item"]
    assert item_noun_for("ml-1m", "film") == "film"


# ----- pre-training -------------------------------------------------------------------------
def test_initial_item_table_comes_from_the_autoencoder(tmp_path):
    encoder = CountingEncoder()
    strategy, llm = _strategy(tmp_path, encoder=encoder)
    arrays = _initial_table()
    out = strategy.initial_arrays(dict(arrays))
    z = out[ITEM_TABLE_KEY]
    assert z.shape == (20, DIM) and z.dtype == np.float32 and not np.allclose(z, arrays[ITEM_TABLE_KEY])
    x = torch.as_tensor(CountingEncoder()(item_texts(_items(), FEDSLLM_TEXT)))
    with torch.no_grad():
        np.testing.assert_allclose(z, strategy.autoencoder.embed(x).numpy(), atol=1e-5)
    rms = lambda a: float(np.sqrt(np.mean(a.astype(np.float64) ** 2)))  # noqa: E731
    assert abs(rms(z) - rms(arrays[ITEM_TABLE_KEY])) < 1e-3  # calibrated to the backbone's init
    assert strategy.autoencoder.widths == [16, DIM]
    # first prototypes from the initial prompt, embedded with E_AE(F_PLM(p_j))
    assert strategy.names == ["Action adventure", "Romantic comedy", "War drama"]
    with torch.no_grad():
        expected = strategy.autoencoder.embed(torch.as_tensor(CountingEncoder()(strategy.names)))
    np.testing.assert_allclose(strategy.vectors, expected.numpy(), atol=1e-5)
    assert "catalogue of 20 movies" in llm.prompts[0]
    prompts = _jsonl(tmp_path / "run" / "prototype-prompts.jsonl")
    assert prompts[0]["round"] == 0 and prompts[0]["kind"] == "initial"
    assert prompts[0]["response"] == FIRST
    line = _jsonl(tmp_path / "run" / "prototypes.jsonl")[0]
    assert line["event"] == "initial" and line["names"] == strategy.names
    assert encoder.calls == [20, 3]  # item texts once, prototype names once
    # a second run reads the item-text embeddings from the cache
    encoder2 = CountingEncoder()
    again, _ = _strategy(tmp_path, encoder=encoder2)
    np.testing.assert_allclose(again.initial_arrays(dict(arrays))[ITEM_TABLE_KEY], z, atol=1e-6)
    assert encoder2.calls == [3] and again.finish()["fedsllm"]["text-cache-hit"] is True


def test_baselines_keep_the_table_and_load_nothing(tmp_path):
    encoder = CountingEncoder()
    strategy, _ = _strategy(tmp_path, sampler="entropy", encoder=encoder,
                            ae_init_baselines="false")
    arrays = _initial_table()
    out = strategy.initial_arrays(dict(arrays))
    np.testing.assert_array_equal(out[ITEM_TABLE_KEY], arrays[ITEM_TABLE_KEY])
    assert encoder.calls == [] and strategy.manager is None
    msgs = list(strategy.configure_train(1, dict_to_arrays(out), ConfigRecord(), Nodes([5, 6])))
    assert len(msgs) == 1 and "fedsllm" not in msgs[0].content.array_records
    assert dict(msgs[0].content["config"])["fedsllm-sampler"] == "entropy"


# ----- payload, counts, revisions, alignment ------------------------------------------------
def test_train_messages_carry_prototypes_and_similarities(tmp_path):
    strategy, _ = _strategy(tmp_path)
    table = strategy.initial_arrays(_initial_table())
    nodes = [101, 202, 303, 404]
    msgs = list(strategy.configure_train(3, dict_to_arrays(table), ConfigRecord({"x": 1}),
                                         Nodes(nodes)))
    assert len(msgs) == 2
    for msg in msgs:
        assert msg.metadata.dst_node_id in nodes
        assert msg.metadata.message_type == MessageType.TRAIN
        cfg = dict(msg.content["config"])
        assert cfg == {"x": 1, "server-round": 3, "aggregation": "fedavg",
                       "fedsllm-sampler": "fedsllm", "fedsllm-fraction": 0.1,
                       "fedsllm-eps": 1e-6, "fedsllm-score": "probability",
                       "fedsllm-pool": "unseen"}
        payload = arrays_to_dict(msg.content["fedsllm"])
        assert payload["prototypes"].shape == (3, DIM) and payload["prototypes"].dtype == np.float32
        assert payload["similarity"].shape == (20, 3) and payload["similarity"].dtype == np.float32
        np.testing.assert_allclose(payload["similarity"],
                                   cosine_similarity_matrix(table[ITEM_TABLE_KEY],
                                                            strategy.vectors), atol=1e-6)


def test_counts_are_summed_and_feed_the_update_prompt(tmp_path):
    strategy, llm = _strategy(tmp_path, proto_update_every=2, align_every=2, num_rounds=4)
    arrays = strategy.initial_arrays(_initial_table())
    encoder_before = {k: v.clone() for k, v in strategy.autoencoder.encoder.state_dict().items()}
    decoder_before = {k: v.clone() for k, v in strategy.autoencoder.decoder.state_dict().items()}
    per_round = {1: ([3, 1, 0], [0, 2, 4]), 2: ([1, 1, 1], [2, 0, 0]),
                 3: ([1, 0, 0, 0], [0, 0, 0, 5]), 4: ([1, 1, 1, 1], [0, 0, 0, 2])}
    for rnd, counts in per_round.items():
        msgs = list(strategy.configure_train(rnd, dict_to_arrays(arrays), ConfigRecord(),
                                             Nodes([7, 8, 9, 10])))
        replies = [_reply(m, arrays[ITEM_TABLE_KEY] + 0.1 * rnd, c, ms=1.0 + i)
                   for i, (m, c) in enumerate(zip(msgs, counts))]
        for m, r in zip(msgs, replies):
            assert r.metadata.src_node_id == m.metadata.dst_node_id
            assert r.metadata.reply_to_message_id == m.metadata.message_id
        new, metrics = strategy.aggregate_train(rnd, replies)
        arrays = arrays_to_dict(new)
        info = strategy.round_info()
        assert info["selection-ms"] == pytest.approx(1.5)
        assert info["prototype-counts"] == np.sum(counts, axis=0).tolist()
        if rnd == 2:  # revision at round 2 with the counts of rounds 1 and 2; alignment first
            assert "1. Action adventure (used 6 times, 40%)" in llm.prompts[1]
            assert "2. Romantic comedy (used 4 times, 27%)" in llm.prompts[1]
            assert "3. War drama (used 5 times, 33%)" in llm.prompts[1]
            assert info["prototype-update"] == "generated" and "align-mse" in info
            assert strategy.names == ["Action adventure", "Family animation", "War drama",
                                      "Crime thriller"]
    assert len(llm.prompts) == 2  # round 4 is the last: no LLM call (the script would fail)
    enc = strategy.autoencoder.encoder.state_dict()
    assert any(not torch.equal(enc[k], encoder_before[k]) for k in enc)
    for k, v in strategy.autoencoder.decoder.state_dict().items():
        assert torch.equal(v, decoder_before[k])
    with torch.no_grad():
        now = strategy.autoencoder.embed(torch.as_tensor(CountingEncoder()(strategy.names)))
    np.testing.assert_allclose(strategy.vectors, now.numpy(), atol=1e-5)
    lines = _jsonl(tmp_path / "run" / "prototypes.jsonl")
    assert [(d["round"], d["event"]) for d in lines] == [
        (0, "initial"), (1, "round"), (2, "round"), (2, "update"), (3, "round"), (4, "round")]
    assert lines[3]["counts"] == [6, 4, 5] and lines[3]["previous"] == FIRST_NAMES
    assert lines[4]["counts"] == [1, 0, 0, 5] and lines[4]["clients"] == 2
    summary = strategy.finish()["fedsllm"]
    assert summary["prototype-updates"] == 1 and summary["alignments"] == 1
    assert summary["prototypes"] == strategy.names


FIRST_NAMES = ["Action adventure", "Romantic comedy", "War drama"]
SECOND_NAMES = ["Action adventure", "Family animation", "War drama", "Crime thriller"]


def test_lag_key_is_checked_with_the_keys_it_depends_on():
    assert _settings(llm="llamacpp", llm_lag=3).llm_lag == 3
    assert _settings(llm="openai:http://127.0.0.1:8000:m", llm_lag=1).llm_lag == 1
    for overrides, match in [({"llm_lag": -1, "llm": "llamacpp"}, ">= 0"),
                             ({"llm_lag": 1}, "needs fedsllm-llm = .llamacpp"),
                             ({"llm_lag": 1, "llm": "llamacpp", "sampler": "cluster"},
                              "needs sampler 'fedsllm'"),
                             ({"llm_lag": 10, "llm": "llamacpp"},
                              r"below fedsllm-proto-update-every \(10\)")]:
        with pytest.raises(ConfigError, match=f"'fedsllm-llm-lag'.*{match}"):
            _settings(**overrides)


class ThreadNotingLLM(ScriptedLLM):
    """ScriptedLLM that notes the thread of each call."""

    def complete(self, prompt, system=None):
        import threading
        self.threads = getattr(self, "threads", []) + [threading.current_thread().name]
        return super().complete(prompt, system)


THIRD = "1. Crime thriller\n2. Family animation\n3. Space adventure"


def _lagged_rounds(strategy, arrays, rounds, per_round):
    for rnd in rounds:
        msgs = list(strategy.configure_train(rnd, dict_to_arrays(arrays), ConfigRecord(),
                                             Nodes([7, 8])))
        sent = {tuple(arrays_to_dict(m.content["fedsllm"])["prototypes"].shape) for m in msgs}
        counts = per_round(rnd, len(strategy.names))
        replies = [_reply(m, arrays[ITEM_TABLE_KEY] + 0.1 * rnd, c) for m, c in zip(msgs, counts)]
        new, _ = strategy.aggregate_train(rnd, replies)
        arrays = arrays_to_dict(new)
        yield rnd, sent, strategy.round_info(), arrays


def test_lagged_revision_asks_beside_the_rounds_and_installs_l_rounds_later(tmp_path):
    strategy, _ = _strategy(tmp_path, proto_update_every=2, align_every=0, num_rounds=6,
                            llm="llamacpp", llm_lag=1)
    llm = ThreadNotingLLM([FIRST, SECOND, THIRD])
    strategy.manager.generator = llm
    arrays = strategy.initial_arrays(_initial_table())
    names_after = {}
    for rnd, sent, info, arrays in _lagged_rounds(
            strategy, arrays, range(1, 7), lambda rnd, p: [[rnd] * p, [1] * p]):
        names_after[rnd] = strategy.names
        if rnd == 3:   # asked at round 2 (counts of rounds 1-2), in force after round 3
            assert sent == {(3, 8)}   # round 3 still trained with the first prototypes
            assert info["prototype-requested-round"] == 2 and info["prototype-wait-seconds"] >= 0
    assert names_after[2] == FIRST_NAMES and names_after[3] == SECOND_NAMES
    assert names_after[5] == ["Crime thriller", "Family animation", "Space adventure"]
    # counts: rounds 1-2 for the first request; round 3's (for the first prototypes, reported
    # while the answer was pending) are dropped at the install; round 4's for the second.
    # (one client per round: fraction-train 0.5 of 2 nodes; it reports ``rnd`` per prototype)
    assert "1. Action adventure (used 3 times, 33%)" in llm.prompts[1]   # 1 + 2
    assert "1. Action adventure (used 4 times, 25%)" in llm.prompts[2]   # round 4 alone
    assert len(llm.prompts) == 3          # round 6 is the last: nothing asked there
    assert llm.threads[0] == "MainThread" and all(t.startswith("fedsllm-llm") for t in llm.threads[1:])
    lines = [d for d in _jsonl(tmp_path / "run" / "prototypes.jsonl") if d["event"] == "update"]
    assert [(d["round"], d["requested-round"], d["counts"]) for d in lines] == [
        (3, 2, [3, 3, 3]), (5, 4, [4, 4, 4, 4])]
    summary = strategy.finish()["fedsllm"]
    assert summary["prototype-updates"] == 2 and summary["prototype-wait-seconds"] >= 0


def test_a_checkpoint_with_a_revision_in_flight_resumes_as_the_uninterrupted_run(tmp_path):
    import io
    whole, _ = _strategy(tmp_path / "a", proto_update_every=2, align_every=2, num_rounds=4,
                         llm="llamacpp", llm_lag=1)
    llm = ScriptedLLM([FIRST, SECOND])
    whole.manager.generator = llm
    arrays = whole.initial_arrays(_initial_table())
    per_round = lambda rnd, p: [[rnd] * p, [2] * p]  # noqa: E731
    steps = list(_lagged_rounds(whole, arrays, range(1, 3), per_round))
    buf = io.BytesIO()
    torch.save(whole.state_dict(), buf)          # round 2: the revision is in flight
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert state["fedsllm"]["inflight"]["round"] == 2
    resumed, _ = _strategy(tmp_path / "b", proto_update_every=2, align_every=2, num_rounds=4,
                           llm="llamacpp", llm_lag=1)
    again = ScriptedLLM([FIRST, SECOND])  # the initial call, then the request in flight again
    resumed.manager.generator = again
    resumed.initial_arrays(_initial_table())
    resumed.load_state_dict(state)
    arrays = steps[-1][3]
    a = [(s[0], s[2].get("prototype-requested-round")) for s in
         _lagged_rounds(whole, arrays, range(3, 5), per_round)]
    b = [(s[0], s[2].get("prototype-requested-round")) for s in
         _lagged_rounds(resumed, arrays, range(3, 5), per_round)]
    assert a == b == [(3, 2), (4, None)]
    assert whole.names == resumed.names == SECOND_NAMES
    np.testing.assert_allclose(whole.vectors, resumed.vectors, atol=1e-6)
    assert again.prompts[1] == llm.prompts[1] and len(again.prompts) == len(llm.prompts) == 2


def test_a_checkpoint_does_not_wait_for_the_revision_in_flight(tmp_path):
    import threading
    strategy, _ = _strategy(tmp_path, proto_update_every=2, align_every=0, num_rounds=4,
                            llm="llamacpp", llm_lag=1)
    release = threading.Event()

    class SlowLLM(ScriptedLLM):
        def complete(self, prompt, system=None):
            if self.prompts:            # the revision: held until the test releases it
                assert release.wait(10)
            return super().complete(prompt, system)

    strategy.manager.generator = SlowLLM([FIRST, SECOND])
    arrays = strategy.initial_arrays(_initial_table())
    steps = _lagged_rounds(strategy, arrays, range(1, 4), lambda rnd, p: [[1] * p, [1] * p])
    next(steps), next(steps)                      # round 2: asked, not answered
    state = strategy.state_dict()                 # returns while the call is held
    assert state["fedsllm"]["inflight"]["round"] == 2 and not release.is_set()
    release.set()
    assert next(steps)[2]["prototype-requested-round"] == 2 and strategy.names == SECOND_NAMES


def test_alignment_alone_reembeds_prototypes(tmp_path):
    strategy, llm = _strategy(tmp_path, proto_update_every=10, align_every=1, num_rounds=3)
    arrays = strategy.initial_arrays(_initial_table())
    before = strategy.vectors.copy()
    msgs = list(strategy.configure_train(1, dict_to_arrays(arrays), ConfigRecord(), Nodes([1, 2])))
    target = np.random.default_rng(1).normal(size=(20, DIM)).astype(np.float32)
    strategy.aggregate_train(1, [_reply(msgs[0], target, [1, 1, 1])])
    assert strategy.names == FIRST_NAMES and len(llm.prompts) == 1
    assert not np.allclose(strategy.vectors, before)
    with torch.no_grad():
        now = strategy.autoencoder.embed(torch.as_tensor(CountingEncoder()(strategy.names)))
    np.testing.assert_allclose(strategy.vectors, now.numpy(), atol=1e-5)


def test_replies_without_valid_counts_are_rejected(tmp_path):
    strategy, _ = _strategy(tmp_path)
    arrays = strategy.initial_arrays(_initial_table())
    msg = list(strategy.configure_train(1, dict_to_arrays(arrays), ConfigRecord(), Nodes([42, 43])))[0]
    dst = msg.metadata.dst_node_id
    with pytest.raises(ReplyError, match=f"node {dst}.*'extras' with 'prototype-counts'"):
        strategy.aggregate_train(1, [_reply(msg, arrays[ITEM_TABLE_KEY])])
    with pytest.raises(ReplyError, match=f"node {dst}.*shape \\(2,\\), expected \\(3,\\)"):
        strategy.aggregate_train(1, [_reply(msg, arrays[ITEM_TABLE_KEY], [1, 2])])


def test_sum_prototype_counts():
    total = sum_prototype_counts([np.array([1, 0, 2]), np.array([0, 5, 1], dtype=np.int32)], 3,
                                 ["a", "b"], key="prototype-counts")
    assert total.tolist() == [1, 5, 3] and total.dtype == np.int64
    with pytest.raises(ReplyError, match="node b.*non-negative integers"):
        sum_prototype_counts([np.array([1, 0, 2]), np.array([0.5, 1, 1])], 3, ["a", "b"],
                             key="prototype-counts")
    with pytest.raises(ReplyError, match="node a.*non-negative"):
        sum_prototype_counts([np.array([-1, 0, 2])], 3, ["a"], key="prototype-counts")


def test_cluster_baseline_uses_kmeans_centroids_of_the_current_table(tmp_path):
    encoder = CountingEncoder()
    strategy, _ = _strategy(tmp_path, sampler="cluster", encoder=encoder, proto_update_every=1,
                            num_rounds=3, ae_init_baselines="false")
    arrays = _initial_table()
    out = strategy.initial_arrays(dict(arrays))
    np.testing.assert_array_equal(out[ITEM_TABLE_KEY], arrays[ITEM_TABLE_KEY])  # no AE
    names, vectors = ClusterPrototypes(seed=0).fit(arrays[ITEM_TABLE_KEY], 4)
    assert strategy.names == names == [f"cluster-{j}" for j in range(4)]
    np.testing.assert_allclose(strategy.vectors, vectors)
    msgs = list(strategy.configure_train(1, dict_to_arrays(out), ConfigRecord(), Nodes([1, 2])))
    assert msgs[0].content["fedsllm"]["similarity"].numpy().shape == (20, 4)
    moved = out[ITEM_TABLE_KEY] * 3.0 + 1.0
    strategy.aggregate_train(1, [_reply(msgs[0], moved, [1, 2, 0, 0])])
    np.testing.assert_allclose(strategy.vectors, ClusterPrototypes(seed=0).fit(moved, 4)[1],
                               rtol=1e-5)
    assert encoder.calls == []  # no text encoder, no LLM


# ----- client -------------------------------------------------------------------------------
N_ITEMS, N_TRAIN = 40, 20


def _client(cls=FedSLLMClient, model_seed: int = 0):
    torch.manual_seed(model_seed)
    model = build_model("pfedrec", N_ITEMS, DIM)
    train = np.arange(0, 2 * N_TRAIN, 2, dtype=np.int64)  # even items
    data = UserData(user=3, train=train, valid=1, test=3, num_items=N_ITEMS)
    settings = LocalSettings.make(local_epochs=2, batch_size=16, num_negatives=2, topk=(10,),
                                  eval_protocol="sampled", num_eval_negatives=10)
    return cls(model, data, settings)


def _payload(p: int = 3) -> dict:
    rng = np.random.default_rng(5)
    return {"fedsllm": {"prototypes": rng.normal(size=(p, DIM)).astype(np.float32),
                        "similarity": rng.uniform(-1, 1, size=(N_ITEMS, p)).astype(np.float32)}}


def _config(sampler: str, fraction: float = 0.25, **extra) -> dict:
    return {"server-round": 1, "aggregation": "itemwise", "fedsllm-sampler": sampler,
            "fedsllm-fraction": fraction, "fedsllm-eps": 1e-6, "fedsllm-score": "probability",
            **extra}


def _global_params() -> list[np.ndarray]:
    """Shared parameters of a different model: the client must select with THESE."""
    torch.manual_seed(99)
    return [build_model("pfedrec", N_ITEMS, DIM).item_emb.weight.detach().numpy().copy()]


@pytest.mark.parametrize("sampler", ["fedsllm", "cluster", "random", "entropy", "margin",
                                     "least-confidence", "fedselect", "fale"])
def test_client_trains_only_on_the_selected_fraction(sampler):
    client = _client()
    payload = _payload()
    client.receive(payload if sampler in ("fedsllm", "cluster") else {}, {})
    params = _global_params()
    # expected selection: the client's private scorer on the round's global item table
    ref = _client()
    ref.set_parameters(params)
    ref.model.eval()
    with torch.no_grad():
        r_items = ref.model(torch.as_tensor(ref.data.train)).numpy()
        r_protos = ref.model.score_vectors(torch.as_tensor(payload["fedsllm"]["prototypes"])).numpy()
        features = ref.model.item_vectors(torch.as_tensor(ref.data.train)).numpy()
    rng = np.random.default_rng([0, 1, 3, 7])
    expected = select_samples(sampler, r_items, 0.25, rng=rng, r_protos=r_protos,
                              sim=payload["fedsllm"]["similarity"][ref.data.train], eps=1e-6,
                              features=features)
    new, num_examples, metrics = client.fit(params, _config(sampler))
    k = budget(N_TRAIN, 0.25)
    chosen = np.sort(client.data.train[expected.indices])
    assert "num-positives" not in metrics and k == 5 and num_examples == k * 3
    assert metrics["selection-candidates"] == N_TRAIN and metrics["selection-ms"] > 0
    np.testing.assert_array_equal(np.sort(client.data.train[client.selection.indices]), chosen)
    extras = client.upload_extras()
    item_counts = extras["item-counts"][client.data.train]
    selected = np.isin(client.data.train, chosen)
    assert (item_counts[selected] == 2).all() and (item_counts[~selected] == 0).all()
    if sampler in ("fedsllm", "cluster"):
        assert extras["prototype-counts"].dtype == np.int64
        assert extras["prototype-counts"].tolist() == expected.counts.tolist()
        assert extras["prototype-counts"].sum() == N_TRAIN
    else:
        assert "prototype-counts" not in extras
    assert not np.allclose(new[0], params[0])


@pytest.mark.parametrize("sampler", ["random", "fedsllm"])
def test_coverage_and_repeat_follow_the_selections_across_rounds(sampler):
    payload = _payload() if sampler == "fedsllm" else {}
    first = _client()
    first.receive(payload, {})
    _, _, m1 = first.fit(_global_params(), _config(sampler))
    chosen1 = np.zeros(N_TRAIN, dtype=bool)
    chosen1[first.selection.indices] = True
    assert m1["selection-coverage"] == pytest.approx(chosen1.mean()) and "selection-repeat" not in m1
    state = first.private_state()  # what the ClientApp keeps in context.state
    assert state["fedsllm.selected-ever"].dtype == np.uint8
    np.testing.assert_array_equal(state["fedsllm.selected-ever"].astype(bool), chosen1)
    second = _client(model_seed=1)  # a fresh client object, as in the next round
    second.load_private_state(state)
    second.receive(payload, {})
    _, _, m2 = second.fit(_global_params(), _config(sampler, **{"server-round": 2}))
    chosen2 = np.zeros(N_TRAIN, dtype=bool)
    chosen2[second.selection.indices] = True
    assert m2["selection-repeat"] == pytest.approx((chosen1 & chosen2).sum() / chosen2.sum())
    assert m2["selection-coverage"] == pytest.approx((chosen1 | chosen2).mean())
    if sampler == "random":  # another round's stream: not the same 5 positives again
        assert m2["selection-repeat"] < 1.0 and m2["selection-coverage"] > m1["selection-coverage"]
    with pytest.raises(ValueError, match="selected-ever' has shape \\(3,\\).*20 training positives"):
        _client().load_private_state({"fedsllm.selected-ever": np.ones(3, dtype=np.uint8)})


def _federated_rounds(sampler: str, score: str, rounds: int = 8,
                      pool: str = "all") -> tuple[float, float]:
    """One client trained for ``rounds`` rounds, the model changing with its own training: each
    round's global item table is the previous round's upload, the similarities are recomputed
    from it (as the server does) and the private state is carried over. Returns the mean
    ``selection-repeat`` over rounds 2.. and the last ``selection-coverage`` (the diagnostics
    the client reports)."""
    n_items, n_train = 200, 60
    train = np.arange(0, 2 * n_train, 2, dtype=np.int64)
    data = UserData(user=3, train=train, valid=1, test=3, num_items=n_items)
    settings = _client().settings
    protos = np.random.default_rng(5).normal(size=(4, DIM)).astype(np.float32)
    torch.manual_seed(0)
    params = [build_model("pfedrec", n_items, DIM).item_emb.weight.detach().numpy().copy()]
    state, repeats, coverage = None, [], 0.0
    for t in range(1, rounds + 1):
        torch.manual_seed(0)
        client = FedSLLMClient(build_model("pfedrec", n_items, DIM), data, settings)
        if state is not None:
            client.load_private_state(state)
        sim = cosine_similarity_matrix(params[0], protos).astype(np.float32)
        client.receive({"fedsllm": {"prototypes": protos, "similarity": sim}}, {})
        params, _, metrics = client.fit(params, _config(sampler, 0.1, **{
            "server-round": t, "aggregation": "fedavg", "fedsllm-score": score,
            "fedsllm-pool": pool}))
        state = client.private_state()
        repeats += [metrics["selection-repeat"]] if "selection-repeat" in metrics else []
        coverage = metrics["selection-coverage"]
    return float(np.mean(repeats)), coverage


def test_probability_score_moves_the_selection_between_rounds():
    """The literal form keeps re-selecting the same positives as the model trains (repeat ~1,
    coverage stays at S, as measured on ML-100K); the default form moves with the model."""
    lit_repeat, lit_cov = _federated_rounds("fedsllm", "literal")
    new_repeat, new_cov = _federated_rounds("fedsllm", "probability")
    rnd_repeat, _ = _federated_rounds("random", "probability")
    assert lit_repeat > 0.9 and lit_cov < 0.2
    assert new_repeat < 0.5 * lit_repeat and new_repeat < rnd_repeat
    assert new_cov > 3 * lit_cov


def test_unseen_pool_trains_every_positive_once_per_pass():
    """Default pool: S = 10 % of 60 positives, 6 per round, none repeated for 10 rounds, so the
    coverage reaches 1 in 10 rounds (random: about 1 - 0.9^10 = 65 %); the "all" pool (the
    earlier rule) re-selects some of the previous rounds' positives."""
    repeat, coverage = _federated_rounds("fedsllm", "probability", rounds=10, pool="unseen")
    assert repeat == 0.0 and coverage == 1.0
    all_repeat, all_cov = _federated_rounds("fedsllm", "probability", rounds=10, pool="all")
    assert all_repeat > 0 and all_cov < 1.0
    rnd_repeat, rnd_cov = _federated_rounds("random", "probability", rounds=10)
    assert rnd_repeat > 0 and rnd_cov < 1.0
    # the same pass in a random order: same coverage, no payload needed
    pass_repeat, pass_cov = _federated_rounds("random-pass", "probability", rounds=10)
    assert pass_repeat == 0.0 and pass_cov == 1.0


def test_unseen_pool_keeps_its_pass_in_the_private_state():
    payload = _payload()
    first = _client()
    first.receive(payload, {})
    first.fit(_global_params(), _config("fedsllm", **{"fedsllm-pool": "unseen"}))
    state = first.private_state()
    used = state["fedsllm.pass-used"]
    assert used.dtype == np.uint8 and used.sum() == 5
    assert sorted(np.flatnonzero(used)) == sorted(first.selection.indices.tolist())
    second = _client(model_seed=1)
    second.load_private_state(state)
    second.receive(payload, {})
    _, _, m2 = second.fit(_global_params(), _config("fedsllm", **{
        "server-round": 2, "fedsllm-pool": "unseen"}))
    assert not set(second.selection.indices.tolist()) & set(np.flatnonzero(used).tolist())
    assert m2["selection-repeat"] == 0.0 and m2["selection-coverage"] == 0.5
    assert second.private_state()["fedsllm.pass-used"].sum() == 10
    with pytest.raises(ValueError, match="pass-used' has shape \\(3,\\)"):
        _client().load_private_state({"fedsllm.pass-used": np.ones(3, dtype=np.uint8)})
    bad = _client()
    bad.receive(payload, {})
    with pytest.raises(ValueError, match="'fedsllm-pool' = 'fresh'"):
        bad.fit(_global_params(), _config("cluster", **{"fedsllm-pool": "fresh"}))


@pytest.mark.parametrize("sampler", ["fedsllm", "random", "entropy", "base"])
def test_selection_diagnostics_hardness_and_positive_share(sampler):
    """``selection-p-selected`` / ``selection-p-all``: mean predicted probability of the
    selected and of all positives under the round's global model; the positive share of the
    training examples is 1 / (1 + num-negatives) whatever the sampler."""
    client = _client()
    client.receive(_payload() if sampler == "fedsllm" else {}, {})
    params = _global_params()
    ref = _client()
    ref.set_parameters(params)
    ref.model.eval()
    with torch.no_grad():
        p = torch.sigmoid(ref.model(torch.as_tensor(ref.data.train))).double().numpy()
    _, num_examples, m = client.fit(params, _config(sampler))
    assert m["selection-positive-share"] == pytest.approx(1 / 3)      # num_negatives = 2
    assert "num-positives" not in m and num_examples % 3 == 0
    if sampler == "base":
        assert "selection-p-selected" not in m and "selection-p-all" not in m
        return
    assert m["selection-p-all"] == pytest.approx(p.mean(), rel=1e-5)
    assert m["selection-p-selected"] == pytest.approx(p[client.selection.indices].mean(), rel=1e-5)
    got = selection_overlap([m])
    assert got["selection-p-selected"] == m["selection-p-selected"]
    assert got["selection-positive-share"] == pytest.approx(1 / 3)


def test_fedselect_keeps_its_margin_in_the_private_state():
    client = _client()
    _, _, m1 = client.fit(_global_params(), _config("fedselect"))
    state = client.private_state()
    loss, margin = state["fedsllm.fedselect-loss"], state["fedsllm.fedselect-margin"]
    assert loss.shape == margin.shape == (N_TRAIN,) and loss.dtype == np.float32
    # the stored loss is the trained model's per-positive BCE
    client.model.eval()
    with torch.no_grad():
        logits = client.model(torch.as_tensor(client.data.train)).numpy()
    np.testing.assert_allclose(loss, np.logaddexp(0, -logits), rtol=1e-5)
    assert margin.min() == 0.0 and margin.max() == pytest.approx(1.0)
    # next round: the draw is weighted by that margin (rng stream of round 2)
    second = _client(model_seed=1)
    second.load_private_state(state)
    _, _, m2 = second.fit(_global_params(), _config("fedselect", **{"server-round": 2}))
    rng = np.random.default_rng([0, 2, 3, 7])
    expected = select_samples("fedselect", np.zeros(N_TRAIN), 0.25, rng=rng,
                              margin=margin.astype(np.float64))
    assert second.selection.indices.tolist() == expected.indices.tolist()
    with pytest.raises(ValueError, match="fedselect-loss' has shape \\(3,\\)"):
        _client().load_private_state({"fedsllm.fedselect-loss": np.ones(3, np.float32)})


def test_selection_overlap_means_what_is_reported():
    got = selection_overlap([{"selection-coverage": 0.2}, {"selection-coverage": 0.4,
                             "selection-repeat": 0.5}, {"selection-ms": 1.0}])
    assert got == {"selection-coverage": pytest.approx(0.3), "selection-repeat": 0.5,
                   "selection-repeat-clients": 1}
    assert selection_overlap([{"selection-ms": 1.0}]) == {"selection-repeat-clients": 0}


def test_base_sampler_trains_exactly_like_the_base_client():
    params = _global_params()
    plain, sllm = _client(FedRecClient), _client(FedSLLMClient)
    a = plain.fit(params, _config("base", aggregation="fedavg"))
    b = sllm.fit(params, _config("base", aggregation="fedavg"))
    np.testing.assert_array_equal(a[0][0], b[0][0])
    assert a[1] == b[1] and a[2]["train-loss"] == b[2]["train-loss"]
    assert b[1] == N_TRAIN * 3 and "prototype-counts" not in sllm.upload_extras()


def test_client_errors_are_clear():
    client = _client()
    with pytest.raises(ValueError, match="needs the ArrayRecord 'fedsllm'"):
        client.fit(_global_params(), _config("fedsllm"))
    with pytest.raises(ValueError, match="lacks 'fedsllm-sampler'.*method = \"fedsllm\""):
        client.fit(_global_params(), {"server-round": 1})
    bad = _payload()
    bad["fedsllm"]["similarity"] = bad["fedsllm"]["similarity"][:10]
    with pytest.raises(ValueError, match=r"similarity' has shape \(10, 3\), expected .*\(40, 3\)"):
        client.receive(bad, {})
    with pytest.raises(ValueError, match="unknown sample-selection method"):
        client.fit(_global_params(), _config("entropyy"))
    client.receive(_payload(), {})
    with pytest.raises(ValueError, match="'fedsllm-score' = 'logit'.*probability"):
        client.fit(_global_params(), _config("fedsllm", **{"fedsllm-score": "logit"}))


# ----- end to end ---------------------------------------------------------------------------
ANSWERS = ["1. Action adventure\n2. Animated family\n3. Romantic drama",
           "1. Action adventure\n2. Animated family\n3. Romantic drama\n4. Crime thriller",
           "1. Action adventure\n2. Animated family\n3. Crime thriller\n4. War epic"]


def test_fedsllm_end_to_end_through_flower(tmp_path, tiny_grouplens, chat_server):
    root, seen = chat_server(ANSWERS)
    url = root + "/v1"
    proc, out = run_app(tmp_path, tiny_grouplens,
                        f"method='fedsllm' fedsllm-llm='openai:{url}:fake-chat' "
                        "num-server-rounds=3 eval-every=3 fraction-train=0.5 fedsllm-fraction=0.3 "
                        "fedsllm-proto-update-every=1 fedsllm-align-every=2 fedsllm-ae-epochs=5 "
                        "fedsllm-align-epochs=2 fedsllm-max-prototypes=4", seeds=[0])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (final,) = finals(out)
    assert final["status"] == "ok" and final["fedsllm"]["sampler"] == "fedsllm"
    assert final["fedsllm"]["prototype-updates"] == 2 and final["fedsllm"]["alignments"] == 1
    assert final["fedsllm"]["prototypes"] == ["Action adventure", "Animated family",
                                              "Crime thriller", "War epic"]
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    rounds = [json.loads(line) for line in (run / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2, 3] and all(r["clients"] == 6 for r in rounds)
    assert all(r["selection-ms"] > 0 for r in rounds)
    assert [len(r["prototype-counts"]) for r in rounds] == [3, 4, 4]
    assert "align-mse" in rounds[1] and "align-mse" not in rounds[0]
    lines = _jsonl(run / "prototypes.jsonl")
    assert [(d["round"], d["event"]) for d in lines] == [
        (0, "initial"), (1, "round"), (1, "update"), (2, "round"), (2, "update"), (3, "round")]
    assert lines[2]["counts"] == rounds[0]["prototype-counts"]
    prompts = _jsonl(run / "prototype-prompts.jsonl")
    assert [p["round"] for p in prompts] == [0, 1, 2] and len(seen) == 3
    assert "movies" in prompts[0]["prompt"] and "used" in prompts[1]["prompt"]
    assert seen[0]["body"]["model"] == "fake-chat"
    best = next(r for r in rounds if r["round"] == final["best_round"])
    assert final["test"]["sampled_hr@10"] == best["test_sampled_hr@10"]
    assert final["valid"]["sampled_ndcg@10"] == best["valid_sampled_ndcg@10"]


def test_prototype_counts_are_count_noised_under_ldp():
    """``ldp-delta`` covers the uploaded prototype counts: two-sided geometric noise clipped at
    0 (int64, non-negative, same on every call of a round); 0 keeps them exact."""
    def counts(delta: float) -> np.ndarray:
        torch.manual_seed(0)
        data = UserData(user=3, train=np.arange(0, 2 * N_TRAIN, 2, dtype=np.int64), valid=1,
                        test=3, num_items=N_ITEMS)
        settings = LocalSettings.make(local_epochs=1, batch_size=16, num_negatives=2, topk=(10,),
                                      eval_protocol="sampled", num_eval_negatives=10,
                                      ldp_delta=delta)
        client = FedSLLMClient(build_model("pfedrec", N_ITEMS, DIM), data, settings)
        client.receive(_payload(p=40), {})
        client.fit(_global_params(), _config("fedsllm"))
        first = client.upload_extras()["prototype-counts"]
        assert np.array_equal(client.upload_extras()["prototype-counts"], first)
        return first

    exact, noisy = counts(0.0), counts(3.0)
    assert exact.sum() == N_TRAIN
    assert noisy.dtype == np.int64 and (noisy >= 0).all()
    assert (noisy != exact).sum() >= 10  # scale 3 moves most of the 40 counts
