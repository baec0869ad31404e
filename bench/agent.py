"""Benchmark the agent's parts: sandbox latency, and direct answers against program-aided ones on GSM8K.

`assistant bench agent` (or `python -m bench.agent`) prints one table, each figure beside its reference
from the same run:

1. sandbox: start-to-result time of print(1) through run_python (bubblewrap, rlimits, audit hook),
   beside the same interpreter started bare (`python -I -c "print(1)"`) and bubblewrap starting
   `true`: what the boundary itself costs. Target: under 50 ms.
2. GSM8K (../shared/data/gsm8k/test.jsonl, the first --limit questions): accuracy of the model
   answering directly (its number compared with the gold one) and of PAL (the model writes
   solution(), the sandbox runs it), for the default model and for any GGUF given with --model.
3. BFCL (the PyPI package bfcl-eval, data with gold calls; `make bench` installs it): tool-call accuracy
   on simple_python (one right call with right arguments, checked as BFCL's AST checker does) and
   irrelevance (no call when no tool fits), for each step format the model can use: ReAct text under
   a grammar, and the model's own <tool_call> convention where its chat template has one.
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
DEFAULT_BFCL = 40  # cases per category, evenly spread over the file
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


def bfcl_data() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("bfcl_eval")  # not imported: its many dependencies are not installed
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    return folder if (folder / "BFCL_v4_simple_python.json").is_file() else None


def bfcl_cases(folder: Path, category: str, limit: int) -> list[tuple[dict, dict | None]]:
    """(case, gold call or None) for `limit` cases spread evenly over the category."""
    cases = [json.loads(line) for line in (folder / f"BFCL_v4_{category}.json").read_text().splitlines() if line.strip()]
    gold_file = folder / "possible_answer" / f"BFCL_v4_{category}.json"
    gold = {}
    if gold_file.is_file():
        for line in gold_file.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                gold[row["id"]] = row["ground_truth"][0]
    step = max(1, len(cases) // max(1, limit))
    chosen = cases[::step][:limit]
    return [(case, gold.get(case["id"])) for case in chosen]


_TYPES = {"dict": "object", "float": "number", "tuple": "array", "any": None}


def json_schema(schema: dict) -> dict:
    """BFCL's Python-flavoured schema (dict, float, tuple, any) as JSON schema."""
    out = {}
    for key, value in schema.items():
        if key == "type":
            kind = _TYPES.get(value, value)
            if kind:
                out["type"] = kind
        elif key == "properties":
            out["properties"] = {name: json_schema(prop) for name, prop in value.items()}
        elif key == "items" and isinstance(value, dict):
            out["items"] = json_schema(value)
        else:
            out[key] = value
    return out


def bfcl_tools(functions: list[dict]) -> dict:
    from assistant.agent.tools import Tool

    return {f["name"]: Tool(f["name"], f.get("description", ""), json_schema(f["parameters"]), lambda a, c: "")
            for f in functions}


def _norm(value: Any) -> Any:
    # BFCL's standardisation: strings compare without spaces and ",./-_*^", case-insensitively; 3 == 3.0.
    if isinstance(value, str):
        return re.sub(r"[ ,./\-_*^]", "", value).lower().replace("'", '"')
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    return value


def value_ok(value: Any, allowed: list) -> bool:
    for option in allowed:
        if option == "":
            continue
        if isinstance(option, dict) and isinstance(value, dict):
            if all(k in option for k in value) and all(
                    value_ok(value[k], opts) if k in value else "" in opts for k, opts in option.items()):
                return True
        elif _norm(value) == _norm(option):
            return True
    return False


def call_matches(name: str, args: dict, gold: dict) -> bool:
    """One gold call {name: {param: [allowed values, "" when it may be left out]}} against the model's call."""
    (gold_name, params), = gold.items()
    if name != gold_name or any(key not in params for key in args):
        return False
    return all(value_ok(args[key], allowed) if key in args else "" in allowed for key, allowed in params.items())


def first_step(engine, question: str, tools: dict, style: str):
    from assistant.agent.react import STEP_TOKENS, step_format

    steps = step_format(engine, question, tools, style)
    generation = engine.generate(engine.tokenize(steps.prompt(False, True)), max_tokens=STEP_TOKENS,
                                 temperature=0.0, grammar=steps.grammar(False))
    return steps.parse("".join(generation))[1]


def bfcl(model: str | None, folder: Path, limit: int) -> list[dict[str, Any]]:
    from assistant.llm.engine import Engine
    from assistant.llm.models import default_model_path

    engine = Engine(Path(model) if model else default_model_path(), n_ctx=4096)
    styles = ["react"] + (["native"] if engine.formatter.native_tools else [])
    results = []
    for style in styles:
        for category in ("simple_python", "irrelevance"):
            right = malformed = 0
            t0 = time.perf_counter()
            cases = bfcl_cases(folder, category, limit)
            for case, gold in cases:
                parsed = first_step(engine, case["question"][0][-1]["content"], bfcl_tools(case["function"]), style)
                malformed += parsed.kind == "malformed"
                if category == "irrelevance":
                    right += parsed.kind != "action"  # as BFCL scores it: no call decoded is right
                else:
                    right += parsed.kind == "action" and call_matches(parsed.tool, parsed.input or {}, gold)
            results.append({"model": Path(engine.model_path).name, "style": style, "category": category,
                            "cases": len(cases), "accuracy": right / len(cases), "malformed": malformed,
                            "s_per_case": (time.perf_counter() - t0) / len(cases)})
            say(f"  {style} {category}: {right}/{len(cases)}")
    engine.close()
    return results


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
    for b in r.get("bfcl", []):
        rows.append((f"BFCL {b['category']}, {b['model']}, {b['style']} ({b['cases']} cases)", f"{b['accuracy']:.3f}",
                     f"{b['malformed']} malformed, {b['s_per_case']:.1f} s/case", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    notes = ["Direct: the model answers with step-by-step reasoning, its last number is compared with the gold one. "
             "PAL: the model writes solution() under a grammar, the sandbox runs it, the printed value is compared. "
             "Greedy decoding for both.",
             "BFCL: one step of the agent's own prompt and grammar per case, greedy; the first call is scored. "
             "simple_python: right function and arguments (BFCL's string standardisation, optional ones may be "
             "left out). irrelevance: right when no call is made."]
    return "\n".join(lines + [""] + [f"- {n}" for n in notes])


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.agent", description=__doc__.split("\n", 1)[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help="GSM8K questions (the first N)")
    p.add_argument("--model", action="append", help="a GGUF to measure besides the default (repeatable)")
    p.add_argument("--bfcl", type=int, default=DEFAULT_BFCL, help="BFCL cases per category (0 skips BFCL)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = p.parse_args(argv)
    say("bench.agent: sandbox latency...")
    result: dict[str, Any] = {"sandbox": sandbox_latency(SANDBOX_RUNS), "gsm8k": []}
    if args.limit > 0 and (args.data / "gsm8k" / "test.jsonl").is_file():
        for model in [None, *(args.model or [])]:
            say(f"bench.agent: GSM8K, {model or 'the default model'}...")
            result["gsm8k"].append(gsm8k(model, args.data, args.limit))
    folder = bfcl_data()
    if args.bfcl > 0 and folder is None:
        say("bench.agent: BFCL skipped: the bfcl-eval package is not installed (make bench installs it)")
    elif args.bfcl > 0:
        result["bfcl"] = []
        for model in [None, *(args.model or [])]:
            say(f"bench.agent: BFCL, {model or 'the default model'}...")
            result["bfcl"] += bfcl(model, folder, args.bfcl)
    print(json.dumps(result) if args.json else render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
