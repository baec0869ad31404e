"""Benchmark long-term memory: recall latency at 10,000 remembered exchanges, and recall quality.

`assistant bench memory` (or `python -m bench.memory`) fills a fresh data folder's memory with 10,000
exchanges (generated from templates of the things people tell an assistant: plans, family, work, health,
errands), plus the 40 statements of bench/data/memory_pairs.jsonl, each a fact a user told in one chat,
paired with a question asked later in another. Then, side by side from the same run:

1. latency: Assistant.recall (embed the question, hybrid FAISS + FTS5 search, similarity floor) over all
   40 questions, three times, after a warm-up, p50 and p95, beside its two parts measured alone: embedding the question
   and an exact FAISS search of the same vector. Target: p95 < 30 ms.
2. quality: recall@1, @3 (what the app puts in the prompt) and @5 of each question's statement among the 10,040 memories, for the hybrid
   search the app uses beside dense-only and keyword-only search of the same store.

This is a benchmark, not a test: it reports and never fails on a slow figure.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PAIRS = Path(__file__).resolve().parent / "data" / "memory_pairs.jsonl"
EXCHANGES = 10_000
QUICK_EXCHANGES = 1_000
TARGET_P95_S = 0.030
WARM_UP = 10
PASSES = 3  # over the 40 questions, so p95 is not one unlucky sample

# Distractors: the same kinds of things the 40 statements say, about other people, places and numbers.
_NAMES = ["Anna", "Ben", "Chloe", "Dmitri", "Elif", "Farah", "Goran", "Hiro", "Ines", "Jakob", "Kofi", "Lena",
          "Mateo", "Nadia", "Oskar", "Paula", "Quinn", "Rosa", "Stefan", "Tariq", "Uma", "Viktor", "Wen", "Yara"]
_RELATIONS = ["brother", "aunt", "cousin", "colleague", "friend", "neighbour", "uncle", "niece", "flatmate", "coach"]
_CITIES = ["Oslo", "Porto", "Krakow", "Nairobi", "Osaka", "Quito", "Leeds", "Lyon", "Tallinn", "Perth", "Bologna"]
_THINGS = ["a standing desk", "a used van", "a sewing machine", "a tent", "an e-reader", "a drone", "a piano",
           "a rice cooker", "a kayak", "a telescope", "winter boots", "a coffee grinder", "a lawn mower"]
_TOPICS = ["how vaccines work", "compound interest", "the French revolution", "how to prune roses",
           "photosynthesis", "the offside rule", "how a heat pump works", "sourdough hydration", "black holes",
           "how to write a cover letter", "the difference between RAM and storage", "how tides work"]
_JOBS = ["teacher", "electrician", "accountant", "pharmacist", "architect", "chef", "bus driver", "translator"]
_TEMPLATES = [
    ("My {relation} {name} is moving to {city} next month.", "That's a big move! I hope it goes smoothly."),
    ("I'm thinking of buying {thing}. Any advice?", "Compare a few models, read reviews, and set a budget first."),
    ("Can you explain {topic}?", "Sure. In short, {topic} comes down to a few simple ideas."),
    ("{name} from work asked me to cover her shift on {day}.", "You could say yes if it fits your week."),
    ("My {relation} works as a {job} in {city}.", "That sounds like interesting work."),
    ("Remind me how many grams are in {n} ounces.", "{n} ounces is about {g} grams."),
    ("I sold {thing} for {n} euros yesterday.", "Nice, that's a fair price."),
    ("We're having dinner at {name}'s place on {day}.", "Enjoy the evening!"),
    ("My train to {city} was delayed by {n} minutes again.", "That's frustrating; you may be owed compensation."),
    ("I need a gift idea for my {relation} who likes {topic}.", "A good book on {topic} could be a nice gift."),
    ("The meeting with {name} about the budget moved to {day}.", "Noted, I'll keep that in mind."),
    ("I ran {n} kilometres this morning.", "Well done, that's a solid run."),
]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def distractors(n: int, seed: int = 7) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        question, answer = rng.choice(_TEMPLATES)
        n_ = rng.randint(2, 60)
        values = {"relation": rng.choice(_RELATIONS), "name": rng.choice(_NAMES), "city": rng.choice(_CITIES),
                  "thing": rng.choice(_THINGS), "topic": rng.choice(_TOPICS), "job": rng.choice(_JOBS),
                  "day": rng.choice(_DAYS), "n": n_, "g": round(n_ * 28.35)}
        out.append((question.format(**values), answer.format(**values)))
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(exchanges: int) -> dict[str, Any]:
    from assistant.config import Settings
    from assistant.core import Assistant
    from assistant.memory.longterm import MEMORY

    pairs = [json.loads(line) for line in PAIRS.read_text().splitlines() if line.strip()]
    home = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    assistant = Assistant(Settings(), home=home)
    memory = assistant.memory
    rows = [(1 + i // 20, i + 1, q, a) for i, (q, a) in enumerate(distractors(exchanges))]
    # The statements go in among the distractors, at evenly spaced places.
    gold = {}
    step = max(1, len(rows) // len(pairs))
    for j, pair in enumerate(pairs):
        chat, message = 100_000 + j, 1_000_000 + j
        rows.insert(j * step, (chat, message, pair["statement"], "Thanks, I'll remember that."))
        gold[pair["question"]] = f"memory:chat/{chat}/{message}"
    say(f"bench.memory: embedding {len(rows)} exchanges...")
    t0 = time.perf_counter()
    memory.remember_exchanges(rows)
    fill_s = time.perf_counter() - t0

    questions = list(gold)
    for q in questions[:WARM_UP]:
        assistant.recall(q)
    recall_s, embed_s, faiss_s = [], [], []
    store, embedder = assistant.documents, assistant.embedder
    for q in questions * PASSES:
        t0 = time.perf_counter()
        assistant.recall(q)
        recall_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        vector = embedder.embed([q])[0]
        embed_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        store.dense_search(vector, MEMORY, 5)
        faiss_s.append(time.perf_counter() - t0)

    quality = {}
    for mode in ("hybrid", "dense", "keyword"):
        at1 = at3 = at5 = 0
        for q, key in gold.items():
            keys = [m.key for m in memory.recall(q, k=5, min_similarity=-1.0, mode=mode)]
            at1 += bool(keys) and keys[0] == key
            at3 += key in keys[:3]
            at5 += key in keys
        quality[mode] = {"recall_at_1": at1 / len(gold), "recall_at_3": at3 / len(gold), "recall_at_5": at5 / len(gold)}
    floor = assistant.settings.memory_min_similarity
    kept = sum(any(m.key == key for m in memory.recall(q, k=3, min_similarity=floor)) for q, key in gold.items())
    assistant.close()

    def stats(values: list[float]) -> dict[str, float]:
        return {"p50": statistics.median(values), "p95": percentile(values, 0.95)}

    return {"memories": len(rows), "fill_s": fill_s, "questions": len(questions), "timed_recalls": len(recall_s),
            "recall_s": stats(recall_s), "embed_s": stats(embed_s), "faiss_s": stats(faiss_s),
            "quality": quality, "as_the_app_recalls": {"floor": floor, "k": 3, "found": kept / len(gold)}}


def render(r: dict[str, Any]) -> str:
    ms = 1000
    rows = [("figure", "app", "reference", "ratio")]
    rows.append((f"recall latency p50, {r['memories']:,} memories", f"{r['recall_s']['p50'] * ms:.1f} ms",
                 f"{(r['embed_s']['p50'] + r['faiss_s']['p50']) * ms:.1f} ms embed + exact FAISS alone",
                 f"{r['recall_s']['p50'] / (r['embed_s']['p50'] + r['faiss_s']['p50']):.2f}×"))
    rows.append(("  p95", f"{r['recall_s']['p95'] * ms:.1f} ms", f"target < {TARGET_P95_S * ms:.0f} ms",
                 "met" if r["recall_s"]["p95"] < TARGET_P95_S else "missed"))
    rows.append(("  of which embedding the question, p50", "", f"{r['embed_s']['p50'] * ms:.1f} ms", ""))
    q = r["quality"]
    for at in ("recall_at_1", "recall_at_3", "recall_at_5"):
        rows.append((f"{at.replace('_at_', '@')} ({r['questions']} questions), hybrid", f"{q['hybrid'][at]:.3f}",
                     f"dense {q['dense'][at]:.3f} / keyword {q['keyword'][at]:.3f}", ""))
    a = r["as_the_app_recalls"]
    rows.append((f"found as the app recalls (top {a['k']}, similarity >= {a['floor']})", f"{a['found']:.3f}", "", ""))
    rows.append(("filling the memory (batched embedding)", f"{r['fill_s']:.1f} s", "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.memory", description=__doc__.split("\n", 1)[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--quick", action="store_true", help=f"{QUICK_EXCHANGES:,} exchanges instead of {EXCHANGES:,}")
    args = p.parse_args(argv)
    result = run(QUICK_EXCHANGES if args.quick else EXCHANGES)
    print(json.dumps(result) if args.json else render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
