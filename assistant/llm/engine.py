"""The llama.cpp engine: load a GGUF, keep its KV cache, stream tokens.

Written on llama-cpp-python's low-level bindings rather than its `Llama` class because the app
needs what that class hides: load progress and cancel, a Stop that lands within a fraction of a
second even while a long prompt is being read (llama.cpp's abort callback, checked between graph
nodes, is armed only then: per generated token it would cost more than it saves), KV-cache prefix reuse we can measure, and about
4 ms less Python per generated token.

One thread owns an Engine at a time (the UI's model worker, or the CLI's main thread).
"""

from __future__ import annotations

import codecs
import ctypes
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from assistant.errors import ContextOverflowError, ModelError
from assistant.llm.chat_format import ChatFormatter

_lib = None  # llama_cpp, imported on first use: it loads a large native library
_log_lines: deque[str] = deque(maxlen=400)
_log_callback = None  # keeps the ctypes callback alive for as long as llama.cpp may call it
_init_lock = threading.Lock()



def _llama():
    """Import llama_cpp once, route its log into memory and initialise the backend."""
    global _lib, _log_callback
    with _init_lock:
        if _lib is not None:
            return _lib
        try:
            import llama_cpp
        except ImportError as exc:  # a broken or missing build: say what to do
            raise ModelError(
                f"The llama.cpp engine is not installed or failed to load ({exc}). Run `make setup` again."
            ) from exc

        @llama_cpp.llama_log_callback
        def on_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            _log_lines.append(text.decode("utf-8", errors="replace"))

        _log_callback = on_log
        llama_cpp.llama_log_set(on_log, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
        _lib = llama_cpp
        return _lib


def supports_gpu_offload() -> bool:
    """Whether this build of llama.cpp has a GPU backend (CUDA, Metal, Vulkan...)."""
    return bool(_llama().llama_supports_gpu_offload())


def recent_log(lines: int = 30) -> str:
    """The tail of llama.cpp's own log, for error reports and `--verbose`."""
    return "".join(list(_log_lines)[-lines:])


def default_threads() -> int:
    """One thread per physical core: hyper-threads slow llama.cpp's matrix kernels down."""
    try:
        logical = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        logical = os.cpu_count() or 2
    return max(1, logical // 2 if logical > 4 else logical)


@dataclass(frozen=True)
class LoadReport:
    """What really loaded, as llama.cpp reports it, not what was asked for."""

    model_path: str
    model_description: str
    backend: str
    gpu_layers_offloaded: int
    n_layers: int
    n_ctx: int
    n_ctx_train: int
    n_threads: int
    flash_attn: bool
    load_seconds: float
    gpu_note: str = ""  # why the model is not (all) on a GPU, when it is not

    def summary(self) -> str:
        if self.backend.startswith("remote"):
            return f"{self.model_description} (remote) · ctx {self.n_ctx}"
        where = (
            f"{self.gpu_layers_offloaded}/{self.n_layers} layers on {self.backend}"
            if self.gpu_layers_offloaded
            else f"CPU, {self.n_threads} threads"
        )
        return f"{Path(self.model_path).name} · {where} · ctx {self.n_ctx}"


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    reused_tokens: int = 0
    completion_tokens: int = 0
    prompt_seconds: float = 0.0
    time_to_first_token: float = 0.0
    seconds: float = 0.0
    finish_reason: str = "stop"

    @property
    def tokens_per_second(self) -> float:
        # Generation speed after the first token, so prompt reading does not blur it.
        span = self.seconds - self.time_to_first_token
        return (self.completion_tokens - 1) / span if self.completion_tokens > 1 and span > 0 else 0.0

    @property
    def prompt_tokens_per_second(self) -> float:
        evaluated = self.prompt_tokens - self.reused_tokens
        return evaluated / self.prompt_seconds if self.prompt_seconds > 0 else 0.0


class Engine:
    """A loaded GGUF model with one context. Not thread-safe: one owner thread."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_ctx: int = 4096,
        n_threads: int = 0,
        n_gpu_layers: int = 0,
        flash_attn: bool = False,
        progress: Callable[[float], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        from assistant.llm.gguf_info import check_gguf_file

        path = Path(model_path)
        check_gguf_file(path)
        lib = _llama()
        started = time.perf_counter()
        self._lib = lib
        self.model_path = str(path)

        mparams = lib.llama_model_default_params()
        mparams.n_gpu_layers = 999 if n_gpu_layers < 0 else n_gpu_layers

        def on_progress(fraction: float, user_data: ctypes.c_void_p) -> bool:
            if progress is not None:
                progress(float(fraction))
            return not (cancel is not None and cancel.is_set())

        self._progress_cb = lib.llama_progress_callback(on_progress)
        mparams.progress_callback = self._progress_cb
        _log_lines.clear()
        self._model = lib.llama_model_load_from_file(str(path).encode("utf-8"), mparams)
        if not self._model:
            if cancel is not None and cancel.is_set():
                raise ModelError("Loading the model was cancelled.")
            raise ModelError(_load_failure_message(path))

        threads = n_threads or default_threads()
        cparams = lib.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = min(512, n_ctx)
        cparams.n_ubatch = min(512, n_ctx)
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        cparams.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cparams.no_perf = True
        self._ctx = lib.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            lib.llama_model_free(self._model)
            self._model = None
            raise ModelError(
                f"The model {path.name} loaded but no context of {n_ctx} tokens could be created "
                f"(likely not enough memory). Try a smaller context size.\n{recent_log(5)}"
            )
        self._vocab = lib.llama_model_get_vocab(self._model)
        self._memory = lib.llama_get_memory(self._ctx)
        self.n_ctx = lib.llama_n_ctx(self._ctx)
        self._n_batch = cparams.n_batch
        self._cached: list[int] = []  # tokens whose keys and values are in the KV cache, in order
        self._piece_buf = ctypes.create_string_buffer(256)
        self._add_bos = bool(lib.llama_vocab_get_add_bos(self._vocab))
        self._abort_when = threading.Event()  # the running generation's stop event
        self._abort_cb = lib.ggml_abort_callback(lambda _data: self._abort_when.is_set())
        self._no_abort = lib.ggml_abort_callback()  # a NULL function pointer
        self.thinking = True  # a reasoning model may think first; False asks its template not to (Settings)

        try:
            template = lib.llama_model_chat_template(self._model, None)
            self.formatter = ChatFormatter(
                template.decode("utf-8", errors="replace") if template else None,
                bos_token=self._special_piece(lib.llama_vocab_bos(self._vocab)),
                eos_token=self._special_piece(lib.llama_vocab_eos(self._vocab)),
            )
            self.report = self._make_report(path, threads, flash_attn, time.perf_counter() - started)
        except Exception as exc:
            self.close()  # free the model now, not whenever the garbage collector gets to it
            raise ModelError(f"The model {path.name} loaded, but its chat template is unusable: {exc}") from exc

    # -- tokens ---------------------------------------------------------------------------

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        """Tokens of text, special tokens (<|im_start|> ...) parsed as such."""
        data = text.encode("utf-8")
        if add_special and self._add_bos and self.formatter.bos_token and text.startswith(self.formatter.bos_token):
            add_special = False  # the template already wrote BOS; a second one hurts answers
        capacity = len(data) + 8
        buf = (self._lib.llama_token * capacity)()
        n = self._lib.llama_tokenize(self._vocab, data, len(data), buf, capacity, add_special, True)
        if n < 0:  # cannot happen with one slot per byte, but never trust a C length
            buf = (self._lib.llama_token * -n)()
            n = self._lib.llama_tokenize(self._vocab, data, len(data), buf, -n, add_special, True)
        return list(buf[:n])

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def render(self, messages: list[dict[str, str]], tools: list[dict] | None = None) -> str:
        return self.formatter.render(messages, add_generation_prompt=True, tools=tools, thinking=self.thinking)

    def _special_piece(self, token: int) -> str:
        # -1 means the vocabulary has no such token; llama.cpp would throw through its C API.
        return "" if token < 0 else self._piece_bytes(token, special=True).decode("utf-8", errors="replace")

    def _piece_bytes(self, token: int, special: bool = False) -> bytes:
        n = self._lib.llama_token_to_piece(self._vocab, token, self._piece_buf, len(self._piece_buf), 0, special)
        if n < 0:
            self._piece_buf = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(self._vocab, token, self._piece_buf, len(self._piece_buf), 0, special)
        return self._piece_buf.raw[:n]

    # -- generation -----------------------------------------------------------------------

    def generate(
        self,
        prompt_tokens: list[int],
        *,
        max_tokens: int = 512,
        temperature: float = 0.7,
        top_p: float = 0.95,
        seed: int | None = None,
        stop: threading.Event | None = None,
        grammar: str | None = None,
    ) -> Generation:
        """Stream the continuation of prompt_tokens; iterate the result for text pieces.

        grammar: a GBNF grammar (rule `root`) the continuation must follow; when it is complete, only the
        end of generation can follow, so a constrained answer stops by itself.
        """
        if not prompt_tokens:
            raise ContextOverflowError("There is nothing to send: the prompt is empty.")
        if len(prompt_tokens) >= self.n_ctx:
            raise ContextOverflowError(
                f"The prompt is {len(prompt_tokens)} tokens but the model's context holds {self.n_ctx}. "
                "Shorten the message or raise the context size in Settings."
            )
        return Generation(self, prompt_tokens, max_tokens, temperature, top_p, seed, stop, grammar)

    def choice_probabilities(self, prompt_tokens: list[int], choices: dict[str, Sequence[str]],
                             stop: threading.Event | None = None) -> dict[str, float] | None:
        """The probability the model gives each choice as its next token: one forward pass, no sampling.

        choices maps a name to the words that say it ("yes": ["yes", "Yes"]); each word counts by its first
        token, with and without a leading space. The prompt stays in the KV cache, so an answer that
        continues a shared prefix reads only what differs. None when stop was set.
        """
        import numpy as np

        if not prompt_tokens or len(prompt_tokens) >= self.n_ctx:
            raise ContextOverflowError(f"The prompt is {len(prompt_tokens)} tokens; the context holds {self.n_ctx}.")
        lib = self._lib
        reused = self._reuse_prefix(prompt_tokens)
        if not self._read_prompt(prompt_tokens[reused:], stop or threading.Event()):
            return None
        n_vocab = lib.llama_vocab_n_tokens(self._vocab)
        logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(self._ctx, -1), shape=(n_vocab,)).astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        out = {}
        for name, words in choices.items():
            ids = {self.tokenize(w, add_special=False)[0] for word in words for w in (word, " " + word)}
            out[name] = float(sum(probs[i] for i in ids))
        return out

    def reset_cache(self) -> None:
        self._lib.llama_memory_clear(self._memory, True)
        self._cached = []

    def _reuse_prefix(self, tokens: list[int]) -> int:
        """Keep the KV cache for the longest shared prefix; return how many tokens it saves."""
        shared = 0
        for a, b in zip(self._cached, tokens, strict=False):
            if a != b:
                break
            shared += 1
        shared = min(shared, len(tokens) - 1)  # the last prompt token must be decoded for its logits
        # Always drop the tail, even when our list ends at `shared`: if an interrupt landed between
        # a decode and our bookkeeping, the cache holds more than we think, and this heals it.
        if not self._lib.llama_memory_seq_rm(self._memory, -1, shared, -1):
            self.reset_cache()  # some memory types (recurrent) cannot drop a tail
            return 0
        del self._cached[shared:]
        return shared

    def _decode(self, tokens: list[int]) -> bool:
        """Evaluate tokens into the KV cache; False when the abort callback stopped it."""
        arr = (self._lib.llama_token * len(tokens))(*tokens)
        status = self._lib.llama_decode(self._ctx, self._lib.llama_batch_get_one(arr, len(tokens)))
        if status == 2:
            # Aborted: the micro-batches already done stay in the cache; keep our list in step.
            kept = self._lib.llama_memory_seq_pos_max(self._memory, 0) + 1
            self._cached = (self._cached + tokens)[: max(kept, 0)]
            return False
        if status != 0:
            self.reset_cache()
            if status == 1:
                raise ContextOverflowError(f"The model's context of {self.n_ctx} tokens is full.")
            raise ModelError(f"llama.cpp failed to evaluate the prompt (code {status}).\n{recent_log(5)}")
        self._cached.extend(tokens)
        return True

    def _read_prompt(self, tokens: list[int], stop: threading.Event) -> bool:
        """Decode the prompt in full batches, abortable mid-batch; False if stopped."""
        lib = self._lib
        self._abort_when = stop
        lib.llama_set_abort_callback(self._ctx, self._abort_cb, None)
        try:
            for start in range(0, len(tokens), self._n_batch):
                if stop.is_set() or not self._decode(tokens[start:start + self._n_batch]):
                    return False
            return True
        finally:
            lib.llama_set_abort_callback(self._ctx, self._no_abort, None)

    def _make_report(self, path: Path, threads: int, flash_attn: bool, seconds: float) -> LoadReport:
        lib = self._lib
        log = "".join(_log_lines)
        offloaded = re.search(r"offloaded (\d+)/(\d+) layers to GPU", log)
        device = re.search(r"using device (\S+) \(([^)]*)\)", log)
        desc = ctypes.create_string_buffer(256)
        lib.llama_model_desc(self._model, desc, len(desc))
        return LoadReport(
            model_path=str(path),
            model_description=desc.value.decode("utf-8", errors="replace"),
            backend=f"{device.group(1)} ({device.group(2)})" if device else "CPU",
            gpu_layers_offloaded=int(offloaded.group(1)) if offloaded else 0,
            n_layers=lib.llama_model_n_layer(self._model),
            n_ctx=self.n_ctx,
            n_ctx_train=lib.llama_model_n_ctx_train(self._model),
            n_threads=threads,
            flash_attn=flash_attn,
            load_seconds=seconds,
        )

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            self._lib.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            self._lib.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class Generation:
    """One streamed answer. Iterate for text pieces; `stats` is complete when iteration ends."""

    def __init__(self, engine: Engine, tokens: list[int], max_tokens: int, temperature: float,
                 top_p: float, seed: int | None, stop: threading.Event | None, grammar: str | None = None) -> None:
        self._engine = engine
        self._grammar = grammar
        self._tokens = tokens
        self._max_tokens = max_tokens
        self._temperature = temperature
        self._top_p = top_p
        self._seed = seed
        self._stop = stop or threading.Event()
        self.stats = GenerationStats(prompt_tokens=len(tokens))

    def __iter__(self) -> Iterator[str]:
        engine, lib, stats, stop = self._engine, self._engine._lib, self.stats, self._stop
        started = time.perf_counter()
        stats.reused_tokens = engine._reuse_prefix(self._tokens)
        if not engine._read_prompt(self._tokens[stats.reused_tokens:], stop):
            stats.finish_reason = "cancelled"
            stats.seconds = time.perf_counter() - started
            return
        stats.prompt_seconds = time.perf_counter() - started

        sampler = _make_sampler(lib, lib.llama_vocab_n_tokens(engine._vocab), self._temperature, self._top_p, self._seed,
                                engine._vocab, self._grammar)
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        budget = min(self._max_tokens, engine.n_ctx - len(engine._cached))
        token_array = (lib.llama_token * 1)()
        stats.finish_reason = "length"
        try:
            while stats.completion_tokens < budget:
                if stop.is_set():
                    stats.finish_reason = "cancelled"
                    break
                token = lib.llama_sampler_sample(sampler, engine._ctx, -1)
                if lib.llama_vocab_is_eog(engine._vocab, token):
                    stats.finish_reason = "stop"
                    break
                stats.completion_tokens += 1
                if stats.completion_tokens == 1:
                    stats.time_to_first_token = time.perf_counter() - started
                text = utf8.decode(engine._piece_bytes(token))
                if text:
                    yield text
                # Feed the token back so the cache holds the whole answer (the next turn reuses it).
                token_array[0] = token
                status = lib.llama_decode(engine._ctx, lib.llama_batch_get_one(token_array, 1))
                if status != 0:
                    engine.reset_cache()
                    raise ModelError(f"llama.cpp failed while generating (code {status}).\n{recent_log(5)}")
                engine._cached.append(token)
            tail = utf8.decode(b"", final=True)
            if tail:
                yield tail
        finally:
            lib.llama_sampler_free(sampler)
            stats.seconds = time.perf_counter() - started


REPEAT_PENALTY = 1.1


def _make_sampler(lib, n_vocab: int, temperature: float, top_p: float, seed: int | None, vocab=None,
                  grammar: str | None = None):
    chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
    if grammar:
        constraint = lib.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
        if not constraint:
            lib.llama_sampler_free(chain)
            raise ModelError(f"llama.cpp rejected a grammar.\n{recent_log(5)}")
        lib.llama_sampler_chain_add(chain, constraint)  # first: the others choose among allowed tokens
    if temperature <= 0:
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        return chain
    lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_k(40))
    # A mild repeat penalty (after top-k, where it is cheap): small models otherwise loop on a phrase.
    lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_penalties(n_vocab, 64, REPEAT_PENALTY, 0.0, 0.0))
    lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(top_p, 1))
    lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_min_p(0.05, 1))
    lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(temperature))
    seed = seed if seed is not None else int.from_bytes(os.urandom(4), "little")
    lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed))
    return chain


def _load_failure_message(path: Path) -> str:
    log = recent_log(12)
    detail = next((line.strip() for line in reversed(log.splitlines()) if "error" in line.lower() or "failed" in line.lower()), "")
    size_mb = path.stat().st_size / 1e6 if path.exists() else 0
    hint = "The file may be incomplete or damaged (download it again), or built for a newer llama.cpp."
    return f"Could not load the model {path.name} ({size_mb:.0f} MB). {hint}" + (f"\nllama.cpp said: {detail}" if detail else "")
