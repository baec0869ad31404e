"""Benchmark the agent's parts: sandbox latency, and direct answers against program-aided ones on GSM8K.

`assistant bench agent` (or `python -m bench.agent`) prints one table, each figure beside its reference
from the same run:

1. sandbox: start-to-result time of print(1) through run_python (bubblewrap, rlimits, audit hook),
   beside the same interpreter started bare (`python -I -c "print(1)"`) and bubblewrap starting
   `true`: what the boundary itself costs. Target: under 50 ms.
2. GSM8K (../shared/data/gsm8k/test.jsonl, the first --limit questions): accuracy of the model
   answering directly (its number compared with the gold one) and of PAL (the model writes
   solution(), the sandbox runs it), for the default model and for any GGUF given with --model.

Not yet here: tool-call accuracy on bfcl-eval's simple_python and irrelevance cases.
This is a benchmark, not a test: it reports and never fails on a slow figure.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data"
SANDBOX_RUNS = 30
DEFAULT_LIMIT = 30
TARGET_SANDBOX_S = 0.050
DIRECT_PROMPT = ("Solve this problem. Think step by step, then give the final answer as a number on the last line, "
                 "like 'Answer: 42'.\n\n{question}")


def sandbox_latency(runs: int) -> dict[str, Any]:
    from assistant.agent.sandbox import _bwrap_argv, isolation, run_python

    run_python("print(1)")  # warm the page cache and the bubblewrap probe
    app = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = run_python("print(1)")
        app.append(time.perf_counter() - t0)
        assert result.stdout == "1\n", result
    bare = _time([sys.executable, "-I", "-c", "print(1)"], runs)
    out: dict[str, Any] = {"isolation": isolation(), "runs": runs, "app_s": _stats(app), "bare_python_s": _stats(bare)}
    if isolation() == "bubblewrap":
        from assistant.agent.sandbox import Limits

        folder = Path("/tmp")
        out["bwrap_true_s"] = _stats(_time(_bwrap_argv(folder, Limits()) + ["true"], runs))
        out["bwrap_python_s"] = _stats(_time(_bwrap_argv(folder, Limits()) + [sys.executable, "-I", "-c", "print(1)"], runs))
    return out


def _time(argv: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return times


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": statistics.median(ordered), "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]}


def gold_number(answer: str) -> float:
    return float(answer.split("####")[-1].strip().replace(",", ""))


def last_number(text: str) -> float | None:
    tail = text.split("Answer:")[-1] if "Answer:" in text else text
    numbers = re.findall(r"-?\d[\d,]*\.?\d*", tail)
    if not numbers:
        return None
    try:
        return float(numbers[-1].rstrip(".").replace(",", ""))
    except ValueError:
        return None


def gsm8k(model: str | None, data: Path, limit: int) -> dict[str, Any]:
    from assistant.config import Settings
    from assistant.core import Assistant
    from assistant.events import Done

    questions = [json.loads(line) for line in (data / "gsm8k" / "test.jsonl").read_text().splitlines()[:limit]]
    assistant = Assistant(Settings(model_path=model or "", n_ctx=4096, max_tokens=384, temperature=0.0,
                                   system_prompt=""))
    assistant.load_model()
    direct = pal = 0
    seconds = {"direct": 0.0, "pal": 0.0}
    rows = []
    for q in questions:
        gold = gold_number(q["answer"])
        t0 = time.perf_counter()
        done = [e for e in assistant.ask(DIRECT_PROMPT.format(question=q["question"])) if isinstance(e, Done)]
        seconds["direct"] += time.perf_counter() - t0
        got_direct = last_number(done[-1].answer) if done else None
        t0 = time.perf_counter()
        done = [e for e in assistant.agent(q["question"], pal=True) if isinstance(e, Done)]
        seconds["pal"] += time.perf_counter() - t0
        got_pal = last_number(done[-1].answer) if done else None
        direct += got_direct is not None and abs(got_direct - gold) < 1e-6
        pal += got_pal is not None and abs(got_pal - gold) < 1e-6
        rows.append({"gold": gold, "direct": got_direct, "pal": got_pal})
        say(f"  {len(rows)}/{len(questions)}: direct {direct}, PAL {pal}")
    name = Path(assistant.engine.model_path).name
    assistant.close()
    n = len(questions)
    return {"model": name, "questions": n, "direct_accuracy": direct / n, "pal_accuracy": pal / n,
            "direct_s_per_question": seconds["direct"] / n, "pal_s_per_question": seconds["pal"] / n, "rows": rows}


def render(r: dict[str, Any]) -> str:
    sb = r["sandbox"]
    rows = [("figure", "app", "reference", "ratio")]
    rows.append((f"sandbox print(1), p50 ({sb['isolation']})", f"{sb['app_s']['p50'] * 1000:.1f} ms",
                 f"{sb['bare_python_s']['p50'] * 1000:.1f} ms bare python -I", f"{sb['app_s']['p50'] / sb['bare_python_s']['p50']:.2f}×"))
    if "bwrap_true_s" in sb:
        rows.append(("  bubblewrap alone: true / python", "", f"{sb['bwrap_true_s']['p50'] * 1000:.1f} / "
                     f"{sb['bwrap_python_s']['p50'] * 1000:.1f} ms", ""))
    rows.append(("  p95", f"{sb['app_s']['p95'] * 1000:.1f} ms", f"target < {TARGET_SANDBOX_S * 1000:.0f} ms",
                 "met" if sb["app_s"]["p50"] < TARGET_SANDBOX_S else "missed"))
    for g in r["gsm8k"]:
        rows.append((f"GSM8K accuracy, {g['model']} ({g['questions']} q)", f"{g['pal_accuracy']:.3f} PAL",
                     f"{g['direct_accuracy']:.3f} direct", ""))
        rows.append(("  seconds per question", f"{g['pal_s_per_question']:.1f} s", f"{g['direct_s_per_question']:.1f} s", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    notes = ["Direct: the model answers with step-by-step reasoning, its last number is compared with the gold one. "
             "PAL: the model writes solution() under a grammar, the sandbox runs it, the printed value is compared. "
             "Greedy decoding for both."]
    return "\n".join(lines + [""] + [f"- {n}" for n in notes])


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.agent", description=__doc__.split("\n", 1)[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help="GSM8K questions (the first N)")
    p.add_argument("--model", action="append", help="a GGUF to measure besides the default (repeatable)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = p.parse_args(argv)
    say("bench.agent: sandbox latency...")
    result: dict[str, Any] = {"sandbox": sandbox_latency(SANDBOX_RUNS), "gsm8k": []}
    if args.limit > 0 and (args.data / "gsm8k" / "test.jsonl").is_file():
        for model in [None, *(args.model or [])]:
            say(f"bench.agent: GSM8K, {model or 'the default model'}...")
            result["gsm8k"].append(gsm8k(model, args.data, args.limit))
    print(json.dumps(result) if args.json else render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
