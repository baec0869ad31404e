"""Benchmark the app's model path against llama-cpp-python's low-level API on the same GGUF.

`assistant bench llm` (or `python -m bench.llm`) prints one table, app beside reference:

- raw: llama-cpp-python's low-level calls and nothing of ours, the best the bindings can do;
- app: Assistant.stream, the path the window and the CLI use, events and all;
- chat: TTFT at turn 1 and turn 10 of a chat through Assistant.send (KV-cache prefix reuse);
- stop: how long Stop takes to land while generating and while a long prompt is read;
- window: seconds from process start to the main window being on screen.

Each side runs in its own subprocess (`--side raw|app`, which prints one JSON line) so that
peak RSS measures that side alone and neither inherits the other's warm allocator.
This is a benchmark, not a test: it reports and never fails on a slow figure.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

N_CTX = 2048
N_BATCH = 512
PROMPT_TOKENS = 512  # the prompt-processing measurement; --quick shrinks it
LONG_PROMPT_TOKENS = 1500  # the prompt Stop must interrupt
CHAT_TURNS = 10
CHAT_MAX_TOKENS = 32
STOP_AFTER_TOKENS = 20
STOP_MAX_TOKENS = 256  # enough to still be generating at STOP_AFTER_TOKENS, small enough for _fit's reserve

# Targets. TTFT ratio, Stop and window come from the brief; the throughput ones are this file's
# choice: the app may cost up to 10% over the bare bindings for what it adds (slicing, events).
TARGET_GEN_RATIO = 0.90
TARGET_PROMPT_RATIO = 0.90
TARGET_TTFT_RATIO = 1.20
TARGET_CHAT_RATIO = 1.20
TARGET_STOP_S = 0.200
TARGET_WINDOW_S = 1.5

# Both sides get these exact messages. A copy of the app's default system prompt, not an import:
# the raw side must not depend on our code.
SYSTEM_PROMPT = "You are a helpful, concise assistant running privately on the user's computer."
FACTS = [
    "The town of Larkspur sits in a narrow valley between two rivers, the Amber and the Slate.",
    "Its oldest building is a stone mill from 1742 that still grinds flour every autumn.",
    "The mayor, Odette Fairweather, keeps bees on the roof of the town hall and sells the honey.",
    "A wooden bridge with seven arches crosses the Amber near the market square.",
    "Every spring the town holds a lantern festival where children float paper boats downstream.",
    "The bakery on Juniper Lane is famous for rye bread baked with caraway and smoked salt.",
    "An old lighthouse stands on the hill, although the nearest sea is three hundred miles away.",
    "Nobody remembers who built the lighthouse, but its lamp is lit every night by a retired sailor.",
    "The library has a secret reading room behind a shelf of atlases, known only to regular visitors.",
    "Winters are long and snowy, and the rivers freeze so hard that people skate to the next village.",
    "In summer the meadows above the town turn purple with the larkspur flowers that gave it its name.",
    "The school has forty pupils and one teacher, Mr. Abernathy, who also plays the church organ.",
    "A traveling circus camps in the east field every August and stays for exactly two weeks.",
    "The clock in the square runs eleven minutes slow, and the townspeople refuse to have it fixed.",
    "Fishermen on the Slate tell stories of a silver pike longer than a rowing boat.",
    "The inn, called the Crooked Kettle, serves a stew whose recipe has not changed in a century.",
    "Once a year the whole town climbs to the lighthouse to watch the first snowfall of the season.",
    "A blacksmith named Ilse forges weather vanes shaped like foxes, herons and sailing ships.",
    "The railway station closed in 1961, and its waiting room is now a museum of lost umbrellas.",
    "Wild horses graze on the ridge to the north, and nobody has ever managed to tame one.",
    "The post office still delivers letters by bicycle, even up the steep road to the farms.",
    "An annual argument divides the town over whether the Amber or the Slate is the prettier river.",
    "The cemetery has a grave for a dog named Captain who once saved three children from a flood.",
    "At midsummer the sun sets behind the lighthouse, and its beam and the sunset line up for a minute.",
]
STORY_REQUEST = (
    "Using these notes, write a very long story, at least 3000 words, about a young mapmaker who comes to "
    "Larkspur for one year. Describe every street, every person and every season in detail, with dialogue."
)
WARM_UP = [{"role": "user", "content": "Say hello."}]
CHAT_QUESTIONS = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "What color is the sky on a clear day?",
    "Name a fruit that is yellow.",
    "What is 7 times 8?",
    "Which planet is closest to the sun?",
    "What do bees make?",
    "How many days are in a week?",
    "What is the opposite of hot?",
    "What language is spoken in Spain?",
]


def story_messages(n_facts: int) -> list[dict[str, str]]:
    """A prompt that makes a model write at length; n_facts sets its size (facts cycle past the list)."""
    notes = "\n".join(f"{i + 1}. {FACTS[i % len(FACTS)]}" for i in range(n_facts))
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"Notes about the town of Larkspur:\n{notes}\n\n{STORY_REQUEST}"},
    ]


def peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def token_digest(tokens: list[int]) -> str:
    return hashlib.sha256(repr(list(tokens)).encode()).hexdigest()[:16]


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(r[key]) for r in runs)


# -- raw side: llama-cpp-python's low-level API only ----------------------------------------


class RawModel:
    """The bare bindings, configured as the app's engine configures its context, so only code differs."""

    def __init__(self, path: Path, threads: int) -> None:
        import llama_cpp

        lib = self.lib = llama_cpp

        @lib.llama_log_callback
        def quiet(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            pass  # llama.cpp's load log would bury the JSON line on stderr otherwise

        self._quiet = quiet  # the callback must outlive every llama.cpp call
        lib.llama_log_set(quiet, ctypes.c_void_p(0))
        lib.llama_backend_init()
        started = time.perf_counter()
        mparams = lib.llama_model_default_params()
        mparams.n_gpu_layers = 0  # the app's default; the bindings default to offloading everything
        self.model = lib.llama_model_load_from_file(str(path).encode("utf-8"), mparams)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        cparams = lib.llama_context_default_params()
        cparams.n_ctx = N_CTX
        cparams.n_batch = N_BATCH
        cparams.n_ubatch = N_BATCH
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        # The bindings default to "auto" (on for CPU); the app turns it off, and equal settings are the point.
        cparams.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self.ctx = lib.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create a context")
        self.load_seconds = time.perf_counter() - started
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.memory = lib.llama_get_memory(self.ctx)
        self.template = lib.llama_model_chat_template(self.model, None)
        self._piece_buf = ctypes.create_string_buffer(256)

    def render(self, messages: list[dict[str, str]]) -> str:
        lib = self.lib
        chat = (lib.llama_chat_message * len(messages))()
        encoded = [(m["role"].encode("utf-8"), m["content"].encode("utf-8")) for m in messages]
        for slot, (role, content) in zip(chat, encoded, strict=True):
            slot.role, slot.content = role, content
        size = 2 * sum(len(r) + len(c) for r, c in encoded) + 256
        buf = ctypes.create_string_buffer(size)
        n = lib.llama_chat_apply_template(self.template, chat, len(messages), True, buf, size)
        if n > size:
            buf = ctypes.create_string_buffer(n)
            n = lib.llama_chat_apply_template(self.template, chat, len(messages), True, buf, n)
        if n < 0:
            raise RuntimeError("llama.cpp does not know this model's chat template")
        return buf.raw[:n].decode("utf-8")

    def tokenize(self, text: str) -> list[int]:
        data = text.encode("utf-8")
        buf = (self.lib.llama_token * (len(data) + 8))()
        n = self.lib.llama_tokenize(self.vocab, data, len(data), buf, len(buf), True, True)
        if n < 0:
            raise RuntimeError("tokenization overflowed")
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        n = self.lib.llama_token_to_piece(self.vocab, token, self._piece_buf, len(self._piece_buf), 0, False)
        return self._piece_buf.raw[: max(n, 0)]

    def decode(self, tokens: list[int]) -> None:
        arr = (self.lib.llama_token * len(tokens))(*tokens)
        status = self.lib.llama_decode(self.ctx, self.lib.llama_batch_get_one(arr, len(tokens)))
        if status != 0:
            raise RuntimeError(f"llama_decode failed with {status}")

    def generate(self, messages: list[dict[str, str]], n_tokens: int) -> dict[str, Any]:
        """Prompt in n_batch pieces, then exactly n_tokens greedy tokens, EOG or not."""
        lib = self.lib
        lib.llama_memory_clear(self.memory, True)  # a cold prompt every run, like the app side
        started = time.perf_counter()
        # Template and tokenizer count towards TTFT because the app's wall clock includes its own.
        tokens = self.tokenize(self.render(messages))
        prompt_started = time.perf_counter()
        for i in range(0, len(tokens), N_BATCH):
            self.decode(tokens[i : i + N_BATCH])
        lib.llama_synchronize(self.ctx)
        prompt_seconds = time.perf_counter() - prompt_started

        sampler = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        lib.llama_sampler_chain_add(sampler, lib.llama_sampler_init_greedy())
        one = (lib.llama_token * 1)()
        pieces: list[bytes] = []
        first_eog: int | None = None
        first_at = 0.0
        try:
            for n in range(n_tokens):
                token = lib.llama_sampler_sample(sampler, self.ctx, -1)
                if n == 0:
                    first_at = time.perf_counter()
                if first_eog is None and lib.llama_vocab_is_eog(self.vocab, token):
                    first_eog = n  # keep going: both sides must generate the same count
                pieces.append(self.piece(token))
                one[0] = token
                status = lib.llama_decode(self.ctx, lib.llama_batch_get_one(one, 1))
                if status != 0:
                    raise RuntimeError(f"llama_decode failed with {status}")
            ended = time.perf_counter()
        finally:
            lib.llama_sampler_free(sampler)
        span = ended - first_at
        return {
            "prompt_tokens": len(tokens),
            "prompt_seconds": prompt_seconds,
            "prompt_tps": len(tokens) / prompt_seconds,
            "ttft_s": first_at - started,
            "completion_tokens": n_tokens,
            "gen_tps": (n_tokens - 1) / span if n_tokens > 1 and span > 0 else 0.0,
            "first_eog": first_eog,
            "text": b"".join(pieces[:first_eog]).decode("utf-8", errors="replace"),
        }

    def close(self) -> None:
        self.lib.llama_free(self.ctx)
        self.lib.llama_model_free(self.model)


def run_raw(args: argparse.Namespace) -> dict[str, Any]:
    rss_before = peak_rss_mb()
    model = RawModel(Path(args.model), args.threads)
    # The smallest prompt of at least the target size; the app side is handed the same count.
    facts = args.facts or next(
        k for k in range(1, 1000) if len(model.tokenize(model.render(story_messages(k)))) >= args.prompt_tokens
    )
    messages = story_messages(facts)
    model.generate(WARM_UP, 4)  # first touch of the mmap'd weights and thread start-up: not what is measured
    runs = [model.generate(messages, args.tokens) for _ in range(args.gen_runs)]
    result = {
        "facts": facts,
        "prompt_digest": token_digest(model.tokenize(model.render(messages))),
        "runs": runs,
        "load_s": model.load_seconds,
        "rss_before_load_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
        "system_info": model.lib.llama_print_system_info().decode("utf-8", errors="replace").strip(" |"),
    }
    model.close()
    return result


# -- app side: Assistant.stream and Assistant.send --------------------------------------------


def _drain(events: Iterable[Any]) -> tuple[Any, float | None, float]:
    """Consume an event stream; (Done, when the first Token came, when Done came)."""
    from assistant.events import Done, Error, Token

    done, first_at, done_at = None, None, 0.0
    for event in events:
        if isinstance(event, Token):
            if first_at is None:
                first_at = time.perf_counter()
        elif isinstance(event, Done):
            done, done_at = event, time.perf_counter()
        elif isinstance(event, Error):
            raise RuntimeError(f"the app answered with an error: {event.message}")
    if done is None:
        raise RuntimeError("the app's stream ended without a Done event")
    return done, first_at, done_at


def _app_generation(assistant: Any, messages: list[dict[str, str]]) -> dict[str, Any]:
    assistant.engine.reset_cache()  # a cold prompt every run, like the raw side
    started = time.perf_counter()
    done, first_at, done_at = _drain(assistant.stream(messages))
    first_at = first_at or done_at
    span = done_at - first_at
    return {
        "prompt_tokens": done.prompt_tokens,
        "prompt_tps": done.prompt_tokens_per_second,
        "gen_tps": done.tokens_per_second,
        "gen_tps_wall": (done.completion_tokens - 1) / span if done.completion_tokens > 1 and span > 0 else 0.0,
        "ttft_s": first_at - started,
        "ttft_engine_s": done.time_to_first_token,
        "completion_tokens": done.completion_tokens,
        "finish_reason": done.finish_reason,
        "text": done.answer,
    }


def _timed_turn(events: Iterator[Any]) -> dict[str, Any]:
    started = time.perf_counter()
    done, first_at, done_at = _drain(events)
    return {
        "ttft_s": (first_at or done_at) - started,
        "ttft_engine_s": done.time_to_first_token,
        "prompt_tokens": done.prompt_tokens,
        "reused_tokens": done.reused_tokens,
        "completion_tokens": done.completion_tokens,
    }


def _app_chat(assistant: Any, turns: int, repeats: int) -> dict[str, Any]:
    saved = assistant.settings
    assistant.update_settings(replace(saved, max_tokens=CHAT_MAX_TOKENS), save=False)
    chats: list[list[dict[str, Any]]] = []
    no_cache: list[dict[str, Any]] = []
    for _ in range(repeats):
        conversation = assistant.conversations.create()
        # Turn 1 starts cold: left over, the story prompt's system prefix would flatter it.
        assistant.engine.reset_cache()
        chats.append([
            _timed_turn(assistant.send(conversation.id, CHAT_QUESTIONS[i % len(CHAT_QUESTIONS)]))
            for i in range(turns)
        ])
        # Regenerate sends turn 10's prompt again, so this is the same turn without the cache.
        assistant.engine.reset_cache()
        no_cache.append(_timed_turn(assistant.regenerate(conversation.id)))
    assistant.update_settings(saved, save=False)

    def med(index: int, key: str) -> float:
        return statistics.median(chat[index][key] for chat in chats)

    first, last, cold = med(0, "ttft_s"), med(-1, "ttft_s"), median_of(no_cache, "ttft_s")
    return {
        "turns": turns,
        "ttft_first_s": first,
        "ttft_last_s": last,
        "ttft_last_no_cache_s": cold,
        "ttft_first_engine_s": med(0, "ttft_engine_s"),
        "ttft_last_engine_s": med(-1, "ttft_engine_s"),
        "ttft_last_no_cache_engine_s": median_of(no_cache, "ttft_engine_s"),
        "per_turn": [
            {k: turn[k] for k in ("prompt_tokens", "reused_tokens", "completion_tokens")} | {"ttft_s": med(i, "ttft_s")}
            for i, turn in enumerate(chats[0])
        ],
    }


def _stop_once(assistant: Any, messages: list[dict[str, str]], after_tokens: int = 0, after_seconds: float = 0.0
               ) -> dict[str, Any]:
    """Stream in a thread, set Stop after some tokens or seconds, time set() to the generator's end."""
    from assistant.events import Done, Token

    stop, reached = threading.Event(), threading.Event()
    out: dict[str, Any] = {}

    def consume() -> None:
        seen = 0
        try:
            for event in assistant.stream(messages, stop=stop):
                if isinstance(event, Token):
                    seen += 1
                    if after_tokens and seen >= after_tokens:
                        reached.set()
                elif isinstance(event, Done):
                    out["done"] = event
        finally:
            out["ended"] = time.perf_counter()
            reached.set()  # an answer that ends early must not leave the main thread waiting

    worker = threading.Thread(target=consume, name="bench-stop", daemon=True)
    worker.start()
    if after_tokens:
        reached.wait(120)
    else:
        time.sleep(after_seconds)
    set_at = time.perf_counter()
    stop.set()
    worker.join(120)
    done = out.get("done")
    return {
        "latency_s": out["ended"] - set_at,
        "finish_reason": done.finish_reason if done else "error",
        "completion_tokens": done.completion_tokens if done else 0,
        "ended_before_stop": out["ended"] < set_at,
    }


def _app_stop(assistant: Any, story: list[dict[str, str]], prompt_tps: float, repeats: int,
              long_prompt_tokens: int) -> dict[str, Any]:
    saved = assistant.settings
    assistant.update_settings(replace(saved, max_tokens=STOP_MAX_TOKENS), save=False)
    engine = assistant.engine
    generating = []
    for _ in range(repeats):
        engine.reset_cache()
        generating.append(_stop_once(assistant, story, after_tokens=STOP_AFTER_TOKENS))

    facts = next(k for k in range(1, 1000)
                 if engine.count_tokens(engine.render(story_messages(k))) >= long_prompt_tokens)
    long_story = story_messages(facts)
    n_long = engine.count_tokens(engine.render(long_story))
    # Stop about a third of the way through reading the prompt, going by the measured prompt speed.
    wait = max(0.02, 0.35 * n_long / max(prompt_tps, 1.0))
    reading = []
    for _ in range(repeats):
        engine.reset_cache()  # else the last run's partial prompt is reused and there is little to read
        reading.append(_stop_once(assistant, long_story, after_seconds=wait))
    assistant.update_settings(saved, save=False)
    return {
        "generation_s": median_of(generating, "latency_s"),
        "generation_max_s": max(r["latency_s"] for r in generating),
        "generation_valid": all(r["finish_reason"] == "cancelled" and not r["ended_before_stop"] for r in generating),
        "prompt_tokens": n_long,
        "prompt_wait_s": wait,
        "prompt_s": median_of(reading, "latency_s"),
        "prompt_max_s": max(r["latency_s"] for r in reading),
        # Valid only if Stop landed before the first token: i.e. while the prompt was being read.
        "prompt_valid": all(r["finish_reason"] == "cancelled" and r["completion_tokens"] == 0 for r in reading),
        "runs": {"generating": generating, "reading": reading},
    }


def run_app(args: argparse.Namespace) -> dict[str, Any]:
    from assistant.config import Settings
    from assistant.core import Assistant

    rss_before = peak_rss_mb()
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="assistant-bench-") as home:
        settings = Settings(model_path=args.model, n_threads=args.threads, temperature=0,
                            max_tokens=args.tokens, n_ctx=N_CTX)
        assistant = Assistant(settings, home=Path(home))
        try:
            report = assistant.load_model()  # now, so no measured run pays for the load
            story = story_messages(args.facts)
            engine = assistant.engine
            for _ in engine.generate(engine.tokenize(engine.render(WARM_UP)), max_tokens=4, temperature=0):
                pass  # the same warm-up as the raw side's
            result["prompt_digest"] = token_digest(engine.tokenize(engine.render(story)))
            runs = [_app_generation(assistant, story) for _ in range(args.gen_runs)]
            result["peak_rss_mb"] = peak_rss_mb()  # before chat and stop, to compare with the raw side
            if args.extras:
                result["chat"] = _app_chat(assistant, args.chat_turns, args.repeats)
                result["stop"] = _app_stop(assistant, story, median_of(runs, "prompt_tps"), args.repeats,
                                           args.long_prompt_tokens)
        finally:
            assistant.close()
    return result | {
        "runs": runs, "load_s": report.load_seconds, "rss_before_load_mb": rss_before, "peak_rss_end_mb": peak_rss_mb(),
    }


def summarise(children: list[dict[str, Any]]) -> dict[str, Any]:
    """One side's figures from its child processes: medians over every generation run."""
    runs = [run for child in children for run in child["runs"]]
    keys = [k for k, v in runs[0].items() if isinstance(v, float)]
    summary: dict[str, Any] = {k: median_of(runs, k) for k in keys}
    summary |= {
        "prompt_tokens": runs[0]["prompt_tokens"],
        "completion_tokens": runs[0]["completion_tokens"],
        "finish_reason": runs[0].get("finish_reason", "length"),
        "first_eog": runs[0].get("first_eog"),
        "text": runs[0]["text"],
        "load_s": statistics.median(c["load_s"] for c in children),
        "rss_before_load_mb": max(c["rss_before_load_mb"] or 0 for c in children) or None,
        "peak_rss_mb": max(c["peak_rss_mb"] or 0 for c in children) or None,
        # Spread shows how far a median can be trusted on a machine that is busy with other work.
        "gen_tps_spread": max(r["gen_tps"] for r in runs) / max(min(r["gen_tps"] for r in runs), 1e-9),
        "processes": len(children),
        "runs": [{k: v for k, v in r.items() if k != "text"} for r in runs],
    }
    return summary


# -- window: process start to the main window on screen ---------------------------------------

# Run with `python -c`; argv[1] is the parent's time.time() just before starting it, so the
# interpreter's own start-up counts as it does for a user launching the app.
WINDOW_CODE = r"""
import json, os, sys, time
t0 = float(sys.argv[1])
from PySide6.QtCore import QEvent, QObject
from PySide6.QtWidgets import QApplication
import assistant.ui.app
imported = time.time()
app = QApplication(sys.argv[:1])
app.setApplicationName("Assistant")
app.setOrganizationName("assistant")
from assistant.ui.main_window import MainWindow


class FirstPaint(QObject):
    # Exposed alone can be true before anything is drawn (the offscreen platform says so at once).
    at = None

    def eventFilter(self, obj, event):
        if FirstPaint.at is None and event.type() == QEvent.Paint:
            FirstPaint.at = time.time()
        return False


first_paint = FirstPaint()
app.installEventFilter(first_paint)
window = MainWindow()
window.show()
shown = time.time()
exposed = False
while time.time() - shown < 30:
    app.processEvents()
    handle = window.windowHandle()
    if window.isVisible() and handle is not None and handle.isExposed() and FirstPaint.at is not None:
        exposed = True
        break
    time.sleep(0.001)
visible = time.time()
print(json.dumps({"visible_s": visible - t0, "imports_s": imported - t0, "shown_s": shown - t0,
                  "painted_s": (FirstPaint.at or visible) - t0, "exposed": exposed, "platform": app.platformName()}),
      flush=True)
# The model worker may still be loading; the figure is taken, so skip the orderly shutdown.
os._exit(0)
"""


def run_window(repeats: int) -> dict[str, Any]:
    env = _child_env()
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        env.setdefault("QT_QPA_PLATFORM", "offscreen")
    runs = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="assistant-bench-window-") as home:
            env["ASSISTANT_HOME"] = home  # a first start, and never the user's chats
            started = time.time()
            proc = subprocess.run([sys.executable, "-c", WINDOW_CODE, repr(started)], cwd=ROOT, env=env,
                                  capture_output=True, text=True, timeout=120)
        runs.append(_last_json(proc, "window"))
    return {
        "visible_s": median_of(runs, "visible_s"),
        "imports_s": median_of(runs, "imports_s"),
        "exposed": all(r["exposed"] for r in runs),
        "platform": runs[0]["platform"],
        "runs": runs,
    }


# -- the parent: run the sides, compare, print ----------------------------------------------


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # `assistant bench llm` reaches this file through sys.path, which a child does not inherit.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _last_json(proc: subprocess.CompletedProcess[str], what: str) -> dict[str, Any]:
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"the {what} benchmark failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def _run_side(side: str, argv: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="assistant-bench-home-") as home:
        env = _child_env()
        env["ASSISTANT_HOME"] = home
        proc = subprocess.run([sys.executable, "-m", "bench.llm", "--side", side, *argv], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=1200)
    return _last_json(proc, side)


def _machine(threads: int, model: Path, system_info: str) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    try:
        bindings = version("llama_cpp_python")
    except PackageNotFoundError:
        bindings = "unknown"
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "threads": threads,
        "os": platform.platform(),
        "python": platform.python_version(),
        "llama_cpp_python": bindings,
        "llama_cpp_system_info": system_info,
        "model_file": model.name,
        "model_path": str(model),
        "model_mb": round(model.stat().st_size / 1e6, 1),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):  # lengths differ: stop at the shorter
        if x != y:
            break
        n += 1
    return n


def compare(raw: dict[str, Any], app: dict[str, Any], window: dict[str, Any], machine: dict[str, Any],
            config: dict[str, Any]) -> dict[str, Any]:
    chat, stop = app.pop("chat"), app.pop("stop")
    raw["batch_seconds"] = N_BATCH / raw["prompt_tps"]
    raw_text, app_text = raw.pop("text"), app.pop("text")
    ratios = {
        "gen_tps": _ratio(app["gen_tps"], raw["gen_tps"]),
        "gen_tps_wall": _ratio(app["gen_tps_wall"], raw["gen_tps"]),
        "prompt_tps": _ratio(app["prompt_tps"], raw["prompt_tps"]),
        "ttft": _ratio(app["ttft_s"], raw["ttft_s"]),
        "peak_rss": _ratio(app["peak_rss_mb"], raw["peak_rss_mb"]),
        "chat_ttft_last_vs_first": _ratio(chat["ttft_last_s"], chat["ttft_first_s"]),
        "chat_ttft_last_no_cache_vs_cached": _ratio(chat["ttft_last_no_cache_s"], chat["ttft_last_s"]),
    }
    passed = {
        "gen_tps": ratios["gen_tps"] is not None and ratios["gen_tps"] >= TARGET_GEN_RATIO,
        "prompt_tps": ratios["prompt_tps"] is not None and ratios["prompt_tps"] >= TARGET_PROMPT_RATIO,
        "ttft": ratios["ttft"] is not None and ratios["ttft"] <= TARGET_TTFT_RATIO,
        "chat_ttft": ratios["chat_ttft_last_vs_first"] is not None
        and ratios["chat_ttft_last_vs_first"] <= TARGET_CHAT_RATIO,
        "stop_generation": stop["generation_valid"] and stop["generation_s"] <= TARGET_STOP_S,
        "stop_prompt": stop["prompt_valid"] and stop["prompt_s"] <= TARGET_STOP_S,
        "window": window["exposed"] and window["visible_s"] < TARGET_WINDOW_S,
    }
    shared = _common_prefix(raw_text, app_text)
    return {
        "machine": machine,
        "config": config,
        "raw": raw,
        "app": app,
        "chat": chat,
        "stop": stop | {"reference_token_s": 1 / raw["gen_tps"], "reference_batch_s": raw["batch_seconds"]},
        "window": window,
        "ratios": ratios,
        "targets": {
            "gen_tps_ratio_min": TARGET_GEN_RATIO, "prompt_tps_ratio_min": TARGET_PROMPT_RATIO,
            "ttft_ratio_max": TARGET_TTFT_RATIO, "chat_ttft_ratio_max": TARGET_CHAT_RATIO,
            "stop_s_max": TARGET_STOP_S, "window_s_max": TARGET_WINDOW_S,
        },
        "pass": passed,
        # Same prompt, greedy on both sides: the texts should agree, a check that the app's template,
        # tokenizer and sampler match llama.cpp's own (batch-size rounding may part them late on).
        "same_output": {"same_prompt_tokens": raw["prompt_digest"] == app["prompt_digest"],
                        "common_prefix_chars": shared, "app_chars": len(app_text),
                        "app_is_prefix_of_raw": shared == len(app_text)},
    }


def render_table(r: dict[str, Any]) -> str:
    raw, app, chat, stop, window, ratios, ok = r["raw"], r["app"], r["chat"], r["stop"], r["window"], r["ratios"], r["pass"]
    m = r["machine"]

    def num(value: float | None, unit: str = "", digits: int = 1) -> str:
        return "—" if value is None else f"{value:.{digits}f}{unit}"

    def ms(seconds: float | None) -> str:
        return "—" if seconds is None else f"{seconds * 1000:.0f} ms"

    def mark(key: str) -> str:
        return "yes" if ok[key] else "NO"

    n = chat["turns"]
    rows = [
        ("metric", "app", "reference", "ratio", "target", "pass?"),
        ("generation tok/s (engine stats)", num(app["gen_tps"]), num(raw["gen_tps"]) + " raw",
         num(ratios["gen_tps"], "×", 2), f"≥ {TARGET_GEN_RATIO:.2f}×", mark("gen_tps")),
        ("generation tok/s (wall clock)", num(app["gen_tps_wall"]), num(raw["gen_tps"]) + " raw",
         num(ratios["gen_tps_wall"], "×", 2), "", ""),
        (f"prompt tok/s ({app['prompt_tokens']} vs {raw['prompt_tokens']} tokens)", num(app["prompt_tps"]),
         num(raw["prompt_tps"]) + " raw", num(ratios["prompt_tps"], "×", 2), f"≥ {TARGET_PROMPT_RATIO:.2f}×",
         mark("prompt_tps")),
        ("time to first token (wall clock)", ms(app["ttft_s"]), ms(raw["ttft_s"]) + " raw",
         num(ratios["ttft"], "×", 2), f"≤ {TARGET_TTFT_RATIO:.2f}×", mark("ttft")),
        ("time to first token (engine stats)", ms(app["ttft_engine_s"]), "", "", "", ""),
        ("completion tokens", str(app["completion_tokens"]) + f" ({app['finish_reason']})",
         f"{raw['completion_tokens']} raw", "", "", ""),
        ("model load", ms(app["load_s"]), ms(raw["load_s"]) + " raw", num(_ratio(app["load_s"], raw["load_s"]), "×", 2),
         "", ""),
        ("peak RSS after generation", num(app["peak_rss_mb"], " MB", 0), num(raw["peak_rss_mb"], " MB", 0) + " raw",
         num(ratios["peak_rss"], "×", 2), "", ""),
        ("chat TTFT turn 1 (cold)", ms(chat["ttft_first_s"]), "", "", "", ""),
        (f"chat TTFT turn {n} (cache reused)", ms(chat["ttft_last_s"]), ms(chat["ttft_first_s"]) + " turn 1",
         num(ratios["chat_ttft_last_vs_first"], "×", 2), f"≤ {TARGET_CHAT_RATIO:.2f}×", mark("chat_ttft")),
        (f"chat TTFT turn {n} (cache reset)", ms(chat["ttft_last_no_cache_s"]), ms(chat["ttft_last_s"]) + " cached",
         num(ratios["chat_ttft_last_no_cache_vs_cached"], "×", 2), "", ""),
        (f"stop latency, generating (after {STOP_AFTER_TOKENS} tok)", ms(stop["generation_s"]),
         ms(stop["reference_token_s"]) + " 1 raw token", "", f"≤ {TARGET_STOP_S * 1000:.0f} ms",
         mark("stop_generation")),
        (f"stop latency, reading a {stop['prompt_tokens']}-token prompt", ms(stop["prompt_s"]),
         ms(stop["reference_batch_s"]) + f" 1 raw {N_BATCH}-batch", "", f"≤ {TARGET_STOP_S * 1000:.0f} ms",
         mark("stop_prompt")),
        ("window visible after process start", num(window["visible_s"], " s", 2),
         num(window["imports_s"], " s", 2) + " imports", "", f"< {TARGET_WINDOW_S} s", mark("window")),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))

    cfg = r["config"]
    head = [
        f"model    {m['model_file']} ({m['model_mb']} MB)",
        f"machine  {m['cpu']}, {m['usable_cpus']} usable CPUs, {m['threads']} threads, {m['os']}",
        f"software Python {m['python']}, llama-cpp-python {m['llama_cpp_python']}",
        f"runs     median of {cfg['repeats']}; n_ctx {N_CTX}, n_batch {N_BATCH}, greedy, flash attention off",
        "",
    ]
    notes = []
    if app["completion_tokens"] < raw["completion_tokens"]:
        notes.append(f"The app stopped at end-of-generation after {app['completion_tokens']} tokens; the raw side "
                     f"generated {raw['completion_tokens']} ignoring EOG. Rates are per token, so they still compare.")
    if raw["first_eog"] is not None:
        notes.append(f"The raw side sampled EOG at token {raw['first_eog'] + 1} and kept generating.")
    same = r["same_output"]
    prompt_same = "identical" if same["same_prompt_tokens"] else "DIFFERENT (template or tokenizer mismatch)"
    agree = f"{same['common_prefix_chars']} of the app's {same['app_chars']} characters agree"
    if same["app_is_prefix_of_raw"]:
        notes.append(f"Prompt tokens on both sides: {prompt_same}. Greedy output: {agree} (all of them).")
    else:
        # Greedy near-ties flip with the prompt's batch split (e.g. 512-token batches vs other splits), so a
        # parting after identical prompts is float rounding, not a template or sampler difference.
        notes.append(f"Prompt tokens on both sides: {prompt_same}. Greedy output: {agree}; past that the texts "
                     "part, as greedy near-ties flip with how the prompt was split into batches.")
    reuse = ", ".join(f"{t['reused_tokens']}/{t['prompt_tokens']}" for t in chat["per_turn"])
    notes.append(f"Chat prompt tokens served from the cache, turn by turn: {reuse}.")
    spread = max(raw["gen_tps_spread"], app["gen_tps_spread"])
    if spread > 1.15:
        notes.append(f"Generation runs varied up to {spread:.2f}× between fastest and slowest: the machine was "
                     "busy with other work, so trust the medians less.")
    if not stop["generation_valid"]:
        notes.append("Stop while generating: the answer ended before Stop was set in at least one run; ignore it.")
    if not stop["prompt_valid"]:
        notes.append("Stop while reading: the prompt was fully read before Stop landed in at least one run.")
    if not window["exposed"]:
        notes.append("The window never reported itself exposed; the time is when waiting gave up.")
    notes.append(f"Window measured on the {window['platform']} Qt platform.")
    return "\n".join(head + lines + [""] + [f"- {n}" for n in notes])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench.llm", description=__doc__.split("\n", 1)[0])
    p.add_argument("--threads", type=int, default=0, help="0: the app's default (one per physical core)")
    p.add_argument("--tokens", type=int, default=128, help="tokens to generate per run")
    p.add_argument("--model", help="a GGUF file; default: the bundled default model")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--quick", action="store_true", help="one run each and smaller prompts: a smoke test")
    p.add_argument("--repeats", type=int, default=3)
    # Internal: the parent runs each side as `--side raw|app` in a subprocess.
    p.add_argument("--side", choices=["raw", "app"], help=argparse.SUPPRESS)
    p.add_argument("--facts", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--gen-runs", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--extras", action="store_true", help=argparse.SUPPRESS)  # app: chat and stop too
    p.add_argument("--prompt-tokens", type=int, default=PROMPT_TOKENS, help=argparse.SUPPRESS)
    p.add_argument("--long-prompt-tokens", type=int, default=LONG_PROMPT_TOKENS, help=argparse.SUPPRESS)
    p.add_argument("--chat-turns", type=int, default=CHAT_TURNS, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.tokens < 2:
        print("bench.llm: --tokens must be at least 2 (a rate needs two tokens)", file=sys.stderr)
        return 2
    if args.side:
        run = run_raw if args.side == "raw" else run_app
        print(json.dumps(run(args)), flush=True)
        return 0

    from assistant.llm.engine import default_threads
    from assistant.llm.models import default_model_path

    model = Path(args.model).expanduser().resolve() if args.model else default_model_path()
    if not model.is_file():
        print(f"bench.llm: no model file at {model}", file=sys.stderr)
        return 2
    threads = args.threads or default_threads()  # resolved here so both sides surely use the same count
    repeats = 1 if args.quick else max(1, args.repeats)
    config = {
        "threads": threads, "tokens": args.tokens, "repeats": repeats, "quick": args.quick, "n_ctx": N_CTX,
        "n_batch": N_BATCH,
        "prompt_tokens_target": 128 if args.quick else args.prompt_tokens,
        "long_prompt_tokens_target": 600 if args.quick else args.long_prompt_tokens,
        "chat_turns": 3 if args.quick else args.chat_turns,
    }
    common = ["--model", str(model), "--threads", str(threads), "--tokens", str(args.tokens),
              "--repeats", str(repeats), "--prompt-tokens", str(config["prompt_tokens_target"]),
              "--long-prompt-tokens", str(config["long_prompt_tokens_target"]),
              "--chat-turns", str(config["chat_turns"])]

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    started = time.perf_counter()
    try:
        say(f"bench: {model.name}, {threads} threads, raw llama-cpp-python and the app in turns...")
        # Sides alternate, one process each per round, so a busy spell on the machine hits both alike.
        raws: list[dict[str, Any]] = []
        apps: list[dict[str, Any]] = []
        for round_ in range(repeats):
            raws.append(_run_side("raw", [*common, "--facts", str(raws[0]["facts"]) if raws else "0"]))
            last = round_ == repeats - 1
            apps.append(_run_side("app", [*common, "--facts", str(raws[0]["facts"])] + (["--extras"] if last else [])))
        say("bench: window start-up...")
        window = run_window(repeats)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        say(f"bench.llm: {exc}")
        return 1
    raw, app = summarise(raws), summarise(apps)
    raw["system_info"], raw["facts"] = raws[0]["system_info"], raws[0]["facts"]
    app["chat"], app["stop"] = apps[-1]["chat"], apps[-1]["stop"]
    raw["prompt_digest"], app["prompt_digest"] = raws[0]["prompt_digest"], apps[0]["prompt_digest"]
    config["seconds"] = round(time.perf_counter() - started, 1)
    result = compare(raw, app, window, _machine(threads, model, raw.pop("system_info")), config)
    print(json.dumps(result, indent=1) if args.json else render_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
