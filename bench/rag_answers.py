"""Benchmark grounded answers: does the app answer from the user's documents when they hold the answer,
and say "your documents don't say" when they do not?

`assistant bench rag --answers` (or `python -m bench.rag_answers`). COVID-QA's papers (../shared/data) are
indexed one collection per paper, through the app's own loaders, chunker and embedder. Then:

- answerable: a question asked of its own paper's collection, kept when the gold answer text lies in the
  passages the app gives the model (so the documents, as the model sees them, do hold the answer);
- unanswerable: the same question asked of the next paper's collection, kept when the gold answer text is
  in none of its passages (a wrong paper on the same subject: the hard case, not an unrelated one).

Every question goes through Assistant.ask with its collection, greedy, the app's own settings otherwise.
Each answer is scored three ways from the same run: the current pipeline (the model's answer as it is), the
model's yes/no alone (the same answer, unless the model's judgement before it fell below the threshold, in
which case the app's "your documents don't say" stands instead), and grounded, what the app does: the same
with the judgement weighed with the question's coverage and the closest passage's similarity
(grounding.groundedness). Printed per model: refusal rate on unanswerable, answer rate and token F1 on
answerable, seconds per question, and the judgement's extra latency, timed separately on a few questions,
cold, with and without it (one token of answer each).

--split dev picks the threshold (a sweep is printed); the default split, test, is disjoint from it and is
what the closing figures come from. A benchmark: it reports and never fails on a figure.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import string
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
COVID_JSON = Path("covid_qa") / "200423_covidQA.json"
PAPERS = 16
PER_KIND = 30
LATENCY_QUESTIONS = 6
MAX_TOKENS = 120
SWEEP = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
TARGETS = {"refuse_unanswerable": 0.80, "answer_answerable": 0.90, "extra_latency_s": 1.0}

# How a model says the passages do not answer (the app's own refusal starts "Your documents don't say").
REFUSALS = (
    "don't say", "do not say", "does not say", "doesn't say", "not mentioned", "not mention", "no information",
    "not contain", "does not provide", "do not provide", "doesn't provide", "don't provide", "not provided",
    "not specified", "not specify", "cannot find", "can't find", "could not find", "unable to", "no mention",
    "not stated", "not state", "not in the passages", "not found in", "not include", "not discuss", "not address",
    "cannot answer", "can't answer", "cannot be determined", "not possible to determine", "no answer",
    "not available", "not given", "none of the passages",
)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def refused(answer: str) -> bool:
    lowered = answer.lower().replace("’", "'")
    return any(phrase in lowered for phrase in REFUSALS)


def _normal_tokens(text: str) -> list[str]:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, words."""
    text = re.sub(r"\[\d+(?:\s*,\s*\d+)*\]", " ", text.lower())
    text = "".join(" " if ch in string.punctuation else ch for ch in text)
    return [w for w in text.split() if w not in ("a", "an", "the")]


def token_f1(answer: str, golds: list[str]) -> float:
    """The best SQuAD token F1 of answer against any of the gold answers."""
    best = 0.0
    got = _normal_tokens(answer)
    for gold in golds:
        want = _normal_tokens(gold)
        common = sum((Counter(got) & Counter(want)).values())
        if common:
            precision, recall = common / len(got), common / len(want)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def norm_ws(text: str) -> str:
    return " ".join(text.split()).lower()


def write_papers(data: Path, folder: Path, count: int) -> list[dict[str, Any]]:
    """The first count papers as .txt files, each with its questions (gold answers by text)."""
    papers = json.loads((data / COVID_JSON).read_text(encoding="utf-8"))["data"][:count]
    out = []
    for i, paper in enumerate(papers):
        para = paper["paragraphs"][0]
        path = folder / f"paper-{i:02d}" / f"{para['document_id']}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(para["context"], encoding="utf-8")
        out.append({"path": path, "collection": f"paper-{i:02d}",
                    "questions": [(qa["question"], [a["text"] for a in qa["answers"]]) for qa in para["qas"]]})
    return out


def build_sets(app: Any, papers: list[dict[str, Any]], split: str, per_kind: int) -> tuple[list, list]:
    """(answerable, unanswerable) lists of (question, golds, collection), round-robin over the papers;
    dev takes every other candidate from the first, test every other from the second."""
    answerable: list[tuple[str, list[str], str]] = []
    unanswerable: list[tuple[str, list[str], str]] = []
    seen = {"a": 0, "u": 0}
    offset = 0 if split == "test" else 1
    depth = max(len(p["questions"]) for p in papers)
    for j in range(depth):
        for i, paper in enumerate(papers):
            if j >= len(paper["questions"]):
                continue
            question, golds = paper["questions"][j]
            for kind, target, bucket in (("a", paper, answerable), ("u", papers[(i + 1) % len(papers)], unanswerable)):
                if len(bucket) >= per_kind:
                    continue
                _, hits, texts = app._retrieve(question, target["collection"])
                found = any(norm_ws(g) in norm_ws(" ".join(texts)) for g in golds)
                if hits and found == (kind == "a"):
                    if seen[kind] % 2 == offset:
                        bucket.append((question, golds, target["collection"]))
                    seen[kind] += 1
            if len(answerable) >= per_kind and len(unanswerable) >= per_kind:
                return answerable, unanswerable
    return answerable, unanswerable


def ask(app: Any, question: str, collection: str) -> dict[str, Any]:
    from assistant.events import Done, Error, Judged

    app.engine.reset_cache()  # each question cold, as a new chat would be
    started = time.perf_counter()
    out: dict[str, Any] = {"probability": None}
    for event in app.ask(question, collection=collection):
        if isinstance(event, Judged):
            out |= {"probability": event.probability, "score": event.score, "coverage": event.coverage,
                    "similarity": event.similarity, "judge_s": event.seconds}
        elif isinstance(event, Done):
            out |= {"answer": event.answer, "prompt_tokens": event.prompt_tokens,
                    "completion_tokens": event.completion_tokens, "answer_s": event.seconds}
        elif isinstance(event, Error):
            raise RuntimeError(event.message)
    out["seconds"] = time.perf_counter() - started
    return out


def time_first_token(app: Any, questions: list[tuple[str, list[str], str]]) -> dict[str, Any]:
    """Seconds to the first token of the answer, cold, without and with the judgement (which never refuses
    here, so both write a token): the judgement's cost, measured, not inferred."""
    from assistant.events import Done

    settings = app.settings
    threshold, tokens = settings.grounding_threshold, settings.max_tokens
    rows = []
    try:
        for question, _golds, collection in questions:
            row = {}
            for key, value in (("without", 0.0), ("with", 1e-9)):
                settings.grounding_threshold = value
                settings.max_tokens = 1
                app.engine.reset_cache()
                started = time.perf_counter()
                for event in app.ask(question, collection=collection):
                    if isinstance(event, Done):
                        row[key] = time.perf_counter() - started
            rows.append(row)
    finally:
        settings.grounding_threshold, settings.max_tokens = threshold, tokens
    extra = [r["with"] - r["without"] for r in rows]
    return {"questions": len(rows), "without_p50_s": statistics.median(r["without"] for r in rows),
            "with_p50_s": statistics.median(r["with"] for r in rows), "extra_p50_s": statistics.median(extra),
            "extra_max_s": max(extra)}


def score(rows_a: list[dict], rows_u: list[dict], threshold: float | None, extra_s: float,
          key: str = "score") -> dict[str, float]:
    """Rates for the current pipeline (threshold None) or the grounded one at threshold, held to the row's
    key ("score": the app's groundedness; "probability": the model's yes alone). Each row was asked with
    the judgement first (never refusing), so its time is the grounded pipeline's when it answers; without the
    judgement it is extra_s (measured by time_first_token) less; a refusal costs all but the answer's own time."""
    def judged_no(row: dict) -> bool:
        value = row.get(key) if row.get(key) is not None else row["probability"]
        return threshold is not None and value is not None and value < threshold

    def says_no(row: dict) -> bool:
        return judged_no(row) or refused(row["answer"])

    def seconds(row: dict) -> float:
        if threshold is None:
            return row["seconds"] - extra_s
        return row["seconds"] - row["answer_s"] if judged_no(row) else row["seconds"]

    f1 = [0.0 if says_no(r) else token_f1(r["answer"], r["golds"]) for r in rows_a]
    return {"refuse_unanswerable": sum(map(says_no, rows_u)) / len(rows_u),
            "answer_answerable": sum(not says_no(r) for r in rows_a) / len(rows_a),
            "f1_answerable": sum(f1) / len(f1),
            "seconds_per_question": statistics.mean(map(seconds, rows_a + rows_u))}


def run_model(model: Path, home: Path, papers: list[dict[str, Any]], split: str, per_kind: int,
              threads: int | None, n_ctx: int | None = None,
              latency_questions: int = LATENCY_QUESTIONS, max_tokens: int = MAX_TOKENS) -> dict[str, Any]:
    from assistant.config import Settings
    from assistant.core import Assistant

    settings = Settings(model_path=str(model), temperature=0.0, max_tokens=max_tokens, memory_enabled=False,
                        grounding_threshold=1e-9, **({"n_threads": threads} if threads else {}),
                        **({"n_ctx": n_ctx} if n_ctx else {}))
    app = Assistant(settings=settings, home=home)
    try:
        if not (home / "indexed").exists():  # the models share one index
            say(f"bench.rag_answers: indexing {len(papers)} papers, one collection each...")
            for paper in papers:
                app.index([paper["path"].parent], paper["collection"])
            (home / "indexed").touch()
        app.load_model()
        # The app judges only with models that pass its self-test; to show what judging would do with the
        # others too, every model is asked to judge here, and "grounded" is what the app really does.
        settings.grounding_threshold = Settings().grounding_threshold  # the self-test at the app's own threshold
        self_test = app._can_judge(None)
        settings.grounding_threshold = 1e-9
        app._can_judge = lambda stop: True
        answerable, unanswerable = build_sets(app, papers, split, per_kind)
        say(f"bench.rag_answers: {model.name}: {len(answerable)} answerable + {len(unanswerable)} unanswerable...")
        rows: dict[str, list[dict]] = {"a": [], "u": []}
        for kind, items in (("a", answerable), ("u", unanswerable)):
            for question, golds, collection in items:
                row = ask(app, question, collection) | {"question": question, "golds": golds, "collection": collection}
                rows[kind].append(row)
        timed = answerable[:latency_questions // 2] + unanswerable[:latency_questions // 2]
        latency = time_first_token(app, timed) if timed else {"questions": 0, "without_p50_s": 0.0, "with_p50_s": 0.0,
                                                               "extra_p50_s": 0.0, "extra_max_s": 0.0}
        threshold = Settings().grounding_threshold
        result = {
            "model": model.name, "path": str(model), "split": split, "threshold": threshold, "self_test": self_test,
            "answerable": len(rows["a"]), "unanswerable": len(rows["u"]),
            "current": score(rows["a"], rows["u"], None, latency["extra_p50_s"]),
            "grounded": score(rows["a"], rows["u"], threshold if self_test else None, latency["extra_p50_s"]),
            "judging_anyway": score(rows["a"], rows["u"], threshold, latency["extra_p50_s"]),
            "model_alone": score(rows["a"], rows["u"], threshold if self_test else None, latency["extra_p50_s"],
                                 "probability"),
            "sweep": {str(t): score(rows["a"], rows["u"], t, latency["extra_p50_s"]) for t in SWEEP},
            "sweep_model_alone": {str(t): score(rows["a"], rows["u"], t, latency["extra_p50_s"], "probability")
                                  for t in SWEEP},
            "latency": latency,
            "prompt_tokens_mean": statistics.mean(r["prompt_tokens"] for r in rows["a"] + rows["u"]),
            "rows": rows,
        }
        return result
    finally:
        app.close()


def pypi_models() -> list[Path]:
    from bench.quality import pypi_models as found

    return found()


def report(results: list[dict]) -> str:
    lines = []
    for r in results:
        cur, gr, lat = r["current"], r["grounded"], r["latency"]
        lines += [
            f"{r['model']}  ({r['split']} split: {r['answerable']} answerable, {r['unanswerable']} unanswerable; "
            f"prompt {r['prompt_tokens_mean']:.0f} tokens on average; threshold {r['threshold']})",
            f"  {'pipeline':<10} {'refuses unanswerable':>21} {'answers answerable':>19} {'F1 answerable':>14} "
            f"{'s/question':>11}",
        ]
        shown = [("current", cur), ("yes alone", r["model_alone"]), ("grounded", gr)]
        if not r["self_test"]:
            shown.append(("(judging)", r["judging_anyway"]))
            lines.append("  this model fails the judgement's self-test, so the app does not judge with it: grounded = "
                         "yes alone = current; (judging) is what judging anyway would do")
        for name, s in shown:
            lines.append(f"  {name:<10} {s['refuse_unanswerable']:>21.0%} {s['answer_answerable']:>19.0%} "
                         f"{s['f1_answerable']:>14.3f} {s['seconds_per_question']:>11.1f}")
        ratio = gr["refuse_unanswerable"] / cur["refuse_unanswerable"] if cur["refuse_unanswerable"] else None
        lines.append(f"  refusals grounded / current: {'—' if ratio is None else f'{ratio:.1f}×'}; "
                     f"targets: refuse ≥ {TARGETS['refuse_unanswerable']:.0%}, answer ≥ {TARGETS['answer_answerable']:.0%}")
        lines.append(f"  judgement's extra latency, cold, to the first token ({lat['questions']} questions): "
                     f"p50 {lat['extra_p50_s']:.2f} s (max {lat['extra_max_s']:.2f} s) on "
                     f"{lat['without_p50_s']:.2f} s without it; target < {TARGETS['extra_latency_s']:.0f} s")
        for name, key in (("grounded", "sweep"), ("yes alone", "sweep_model_alone")):
            sweep = "  ".join(f"{t}: {s['refuse_unanswerable']:.0%}/{s['answer_answerable']:.0%}"
                              for t, s in r[key].items())
            lines.append(f"  sweep, {name} (threshold: refuses/answers) {sweep}")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.rag_answers", description=__doc__.split("\n", 1)[0])
    p.add_argument("--model", action="append", default=[], help="a GGUF to measure (repeatable; default: the PyPI ones)")
    p.add_argument("--split", choices=["test", "dev"], default="test")
    p.add_argument("--per-kind", type=int, default=PER_KIND, help=f"questions of each kind (default {PER_KIND})")
    p.add_argument("--papers", type=int, default=PAPERS)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--n-ctx", type=int, default=None, help="the model's context (default: the app's setting)")
    p.add_argument("--latency", type=int, default=LATENCY_QUESTIONS,
                   help=f"questions timed with and without the judgement (default {LATENCY_QUESTIONS}; 0: none)")
    p.add_argument("--max-tokens", type=int, default=MAX_TOKENS,
                   help=f"of each answer (default {MAX_TOKENS}; 1 measures the judgement alone, quickly)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--json", action="store_true")
    p.add_argument("--answers", action="store_true", help="also print every answer with its judgement")
    args = p.parse_args(argv)
    data = args.data.expanduser().resolve()
    if not (data / COVID_JSON).is_file():
        say(f"bench.rag_answers: no evaluation data at {data / COVID_JSON}; pass --data DIR.")
        return 2
    models = [Path(m).expanduser() for m in args.model] or pypi_models()[::-1]  # the default model first
    results = []
    with tempfile.TemporaryDirectory(prefix="assistant-bench-answers-") as tmp_name:
        tmp = Path(tmp_name)
        papers = write_papers(data, tmp / "papers", args.papers)
        for model in models:
            started = time.perf_counter()
            result = run_model(model, tmp / "home", papers, args.split, args.per_kind, args.threads,
                               args.n_ctx, args.latency, args.max_tokens)
            result["seconds"] = round(time.perf_counter() - started, 1)
            results.append(result)
            say(f"bench.rag_answers: {model.name} took {result['seconds']} s")
    if args.json:
        print(json.dumps({"results": results}, ensure_ascii=False, default=str))
        return 0
    print(report(results))
    if args.answers:
        for r in results:
            for kind in ("a", "u"):
                for row in r["rows"][kind]:
                    print(f"[{r['model']} {'answerable' if kind == 'a' else 'unanswerable'} "
                          f"p(yes)={row['probability']}] {row['question']}\n  -> {' '.join(row['answer'].split())[:300]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
