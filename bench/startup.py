"""Benchmark start-up: from a double-click to the window, and to the first token of an answer.

`assistant bench startup` (or `python -m bench.startup`) launches the real app as a user does
(`python -m assistant gui --check QUESTION`, offscreen where there is no display), which shows the
window, waits for the default model, asks QUESTION and reports, measured from the moment this
script started the process:

- window: the main window is on screen (exposed);
- first token: the first word of the answer is in the window (the model loads in parallel with the
  window, so this includes loading it).

Twice each: a first start (an empty data folder) and a returning user's start (a folder holding an
earlier chat and its long-term memory, so the question also searches memory). Beside them, from the
same run, the floors set by the libraries alone: a bare PySide6 window shown the same way, and a bare
llama-cpp-python process (load the same model, stream the same chat) to its first token. Targets:
window < 1.5 s and first token < 4 s on 2 cores.

This is a benchmark, not a test: it reports and never fails on a slow figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "What is the capital of France?"
TARGET_WINDOW_S = 1.5
TARGET_FIRST_TOKEN_S = 4.0

BARE_WINDOW = r"""
import json, os, sys, time
t0 = float(os.environ["ASSISTANT_T0"])
from PySide6.QtWidgets import QApplication, QLabel, QMainWindow
app = QApplication(sys.argv[:1])
w = QMainWindow(); w.setCentralWidget(QLabel("hello")); w.resize(1100, 760); w.show()
while True:
    app.processEvents()
    h = w.windowHandle()
    if w.isVisible() and h is not None and h.isExposed():
        break
    time.sleep(0.001)
print(json.dumps({"window_s": time.time() - t0}))
"""

BARE_LLAMA = r"""
import json, os, sys, time
t0 = float(os.environ["ASSISTANT_T0"])
import llama_cpp
from assistant.config import DEFAULT_SYSTEM_PROMPT
from assistant.llm.engine import default_threads
llm = llama_cpp.Llama(sys.argv[1], n_ctx=4096, n_threads=default_threads(), verbose=False)
for chunk in llm.create_chat_completion([{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                                         {"role": "user", "content": sys.argv[2]}], stream=True, max_tokens=8):
    if chunk["choices"][0]["delta"].get("content"):
        break
print(json.dumps({"first_token_s": time.time() - t0}))
"""


def _env(home: str) -> dict[str, str]:
    env = dict(os.environ)
    env["ASSISTANT_HOME"] = home
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    if sys.platform.startswith("linux") and not (env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")):
        env.setdefault("QT_QPA_PLATFORM", "offscreen")
    return env


def _timed(argv: list[str], home: str) -> dict[str, Any]:
    env = _env(home)
    env["ASSISTANT_T0"] = repr(time.time())  # the child measures from here: interpreter start-up counts
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(argv[:4])} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def app_start(home: str) -> dict[str, Any]:
    return _timed([sys.executable, "-m", "assistant", "gui", "--check", QUESTION], home)


def _returning_home(home: str) -> None:
    """An earlier chat, remembered, so the next start's question also searches long-term memory."""
    from assistant.config import Settings
    from assistant.core import Assistant

    os.environ["ASSISTANT_HOME"] = home
    Settings(welcomed=True).save()
    assistant = Assistant()
    conversation = assistant.conversations.create()
    question = "My sister Ana lives in Lisbon."
    assistant.conversations.add_message(conversation.id, "user", question)
    answer = assistant.conversations.add_message(conversation.id, "assistant", "Noted: your sister Ana lives in Lisbon.")
    assistant.memory.remember_exchange(conversation.id, answer.id, question, answer.content)
    assistant.close()


def run(repeats: int) -> dict[str, Any]:
    from assistant.llm.models import default_model_path

    model = str(default_model_path())
    first, returning, bare_window, bare_llama = [], [], [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="assistant-bench-start-") as home:
            first.append(app_start(home))
        with tempfile.TemporaryDirectory(prefix="assistant-bench-return-") as home:
            _returning_home(home)
            returning.append(app_start(home))
        with tempfile.TemporaryDirectory(prefix="assistant-bench-bare-") as home:
            bare_window.append(_timed([sys.executable, "-c", BARE_WINDOW], home))
            bare_llama.append(_timed([sys.executable, "-c", BARE_LLAMA, model, QUESTION], home))

    def med(runs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    result = {
        "repeats": repeats, "cores": os.cpu_count(), "platform": _env("x").get("QT_QPA_PLATFORM", "native"),
        "first": {"window_s": med(first, "window_s"), "first_token_s": med(first, "first_token_s")},
        "returning": {"window_s": med(returning, "window_s"), "first_token_s": med(returning, "first_token_s")},
        "bare": {"window_s": med(bare_window, "window_s"), "first_token_s": med(bare_llama, "first_token_s")},
        "targets": {"window_s": TARGET_WINDOW_S, "first_token_s": TARGET_FIRST_TOKEN_S},
        "answers": [r["answer"] for r in first + returning],
    }
    result["pass"] = all(result[k]["window_s"] < TARGET_WINDOW_S and result[k]["first_token_s"] < TARGET_FIRST_TOKEN_S
                         for k in ("first", "returning"))
    return result


def render(r: dict[str, Any]) -> str:
    rows = [("start", "measure", "app", "bare libraries", "ratio", "target", "")]
    for kind, label in (("first", "first start"), ("returning", "returning user")):
        for key, name, target in (("window_s", "window on screen", TARGET_WINDOW_S),
                                  ("first_token_s", "first token", TARGET_FIRST_TOKEN_S)):
            ours, bare = r[kind][key], r["bare"][key]
            rows.append((label, name, f"{ours:.2f} s", f"{bare:.2f} s", f"{ours / bare:.2f}×", f"< {target} s",
                         "ok" if ours < target else "MISSED"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"Start-up, median of {r['repeats']}, {r['cores']} cores, Qt platform {r['platform']}; "
             "from process start (a bare window: PySide6 alone; bare first token: llama-cpp-python's Llama, "
             "same model and chat)"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.append("all targets met" if r["pass"] else "some targets missed")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.startup", description=__doc__.split("\n", 1)[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    result = run(args.repeats)
    print(json.dumps(result) if args.json else render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
