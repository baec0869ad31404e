"""Holding a document answer to its passages: before it, do they answer the question at all; after it,
does each sentence of the answer say what its passages say.

Before: the model's own judgement, read as the probability of "yes" against "no" for its next token
after the passages and the question (one forward pass, no sampling). The prompt is the answer's own
prompt up to the question, so the passages are read once for both: the judgement costs the few tokens
of its question. A small model says "yes" to passages on the right subject that lack the answer, so its
judgement is weighed with two things it cannot talk itself past: the share of the question's own words
that the passages hold, and the closest passage's cosine with the question (groundedness). Weights and
threshold chosen on bench/rag_answers.py's dev split (`assistant bench rag --answers --split dev`).

After: each sentence's content words found in the passages it cites (all passages when it cites none),
prefix-matched so that "vaccines" finds "vaccine". Cheap and explainable: the inspector shows the words
that were not found.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# Chosen by measurement among four wordings on Qwen2.5-Coder-1.5B: the widest gap between passages that
# answer and passages that do not (yes 0.67-0.85 against 0.21-0.28 on the self-test's kind of case).
JUDGE_QUESTION = "Is the answer to this question written in the passages above? Answer yes or no."
YES = ("yes", "Yes", "YES")
NO = ("no", "No", "NO")
# Below this many content words a sentence ("Yes.", "Here is what I found:") is not judged.
MIN_WORDS = 3
SUPPORTED = 0.5  # at least this share of a sentence's content words found in its passages
# groundedness = (probability + COVERAGE_WEIGHT * coverage + SIMILARITY_WEIGHT * similarity) / their weights.
COVERAGE_WEIGHT = 1.5
SIMILARITY_WEIGHT = 2.0

STOP_WORDS = frozenset("""
a about above after again against all also am an and any are aren't as at be because been before being below
between both but by can cannot could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how however i if in into is it its itself just let me more most
many much my myself no nor not of off on once only or other ought our ours ourselves out over own same she should so some
such than that the their theirs them themselves then there these they this those through to too under until up
very was we were what when where which while who whom why will with would you your yours yourself yourselves
according answer based document documents given mentioned passage passages question says stated text
""".split())
# Words that ask for something rather than name it: a question made only of them ("Summarize the main points")
# has nothing specific for the passages to hold, and is judged by the model alone.
ASKING_WORDS = frozenset("""
brief briefly compare describe detail details explain find give important key list main overview please point
points show summarise summarize summary tell
""".split())


@dataclass(frozen=True)
class SentenceSupport:
    text: str
    cites: tuple[int, ...]  # passage numbers the sentence cites
    score: float | None  # share of its content words found in its passages; None: too short to judge
    missing: tuple[str, ...] = ()  # its content words the passages do not have

    @property
    def supported(self) -> bool:
        return self.score is None or self.score >= SUPPORTED

    def as_dict(self) -> dict:
        return {"text": self.text, "cites": list(self.cites), "score": self.score, "missing": list(self.missing)}


def judge_messages(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The answer's messages with the judgement asked after the question, in the same user turn."""
    last = messages[-1]
    return [*messages[:-1], {**last, "content": f"{last['content']}\n\n{JUDGE_QUESTION}"}]


# The self-test: one question, a passage that answers it and one on the same subject that does not. A
# model that cannot tell these two apart by a clear margin (Qwen2.5-Coder-0.5B: 0.43 against 0.35;
# SmolLM2-135M) is not asked to judge: its "no" would turn away answers the documents hold.
CHECK_QUESTION = "What is the name of our dog?"
CHECK_ANSWERS = "Our dog is called Rex. He is a brown labrador who loves swimming in the lake."
CHECK_DOES_NOT = ("The neighbours have a dog too. Their poodle barks at night and the whole street hears it. "
                  "Dogs like theirs need a long walk every day.")
CHECK_MARGIN = 0.1  # each case this far on its side of the threshold


def check_passes(answers: float, does_not: float, threshold: float) -> bool:
    return answers >= threshold + CHECK_MARGIN and does_not <= threshold - CHECK_MARGIN


def yes_probability(choices: dict[str, float]) -> float:
    """P(yes) among yes and no: what the model would say, whatever else it might have begun with."""
    total = choices["yes"] + choices["no"]
    return choices["yes"] / total if total > 0 else 0.0


def refusal(question: str, collection: str, passages: int) -> str:
    """What the app says when no passage answers the question: plainly, and what it looked at."""
    asked = " ".join(question.split())
    if len(asked) > 120:
        asked = asked[:117].rstrip() + "…"
    where = "all your documents" if collection == "*" else f"the documents of '{collection}'"
    found = f"None of the {passages} passages I found" if passages != 1 else "The one passage I found"
    verb = "answers" if passages != 1 else "does not answer"
    return (f"Your documents don't say. {found} in {where} {verb} “{asked}”. "
            "The passages are listed below; you can also ask me to answer from general knowledge.")


_WORD = re.compile(r"[^\W_]+(?:[-'][^\W_]+)*", re.UNICODE)
_CITE = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
# A sentence ends at . ! or ? before a space (citations right after it stay with it), or at a line break.
_BOUNDARY = re.compile(r"[.!?]+(?:\s*\[\d+(?:\s*,\s*\d+)*\])*(?=\s)|\n+")


def sentences(answer: str) -> list[str]:
    """The answer cut into sentences and list items, each as it stands in the answer (so it can be marked
    there); a citation after the full stop stays with its sentence."""
    pieces, start = [], 0
    for m in _BOUNDARY.finditer(answer):
        pieces.append(answer[start:m.start()] if m.group().startswith("\n") else answer[start:m.end()])
        start = m.end()
    pieces.append(answer[start:])
    for i in range(len(pieces) - 1):
        if re.fullmatch(r"\s*\d+[.)]", pieces[i]):  # "2. " opens a numbered item: not a sentence of its own
            pieces[i], pieces[i + 1] = "", pieces[i] + " " + pieces[i + 1]
    out = []
    for piece in pieces:
        piece = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s+", "", piece).strip()  # a list item's bullet
        if piece:
            out.append(piece)
    return out


def _key(word: str) -> str:
    word = word.lower()
    return word[:5] if len(word) > 5 and not word.isdigit() else word


def _pool(texts: Sequence[str]) -> set[str]:
    """The passages' word keys, and each longer key's first four letters, so that "swim" finds "swimming"."""
    keys = {_key(w) for t in texts for w in _WORD.findall(t)}
    return keys | {k[:4] for k in keys if len(k) > 4 and not k.isdigit()}


def content_words(text: str) -> list[str]:
    words = (w for w in _WORD.findall(_CITE.sub(" ", text)))
    return [w for w in words if w.lower() not in STOP_WORDS and (len(w) > 2 or w.isdigit())]


def question_coverage(question: str, texts: Sequence[str]) -> tuple[float | None, tuple[str, ...]]:
    """The share of the question's own words (prefix-matched) that the passages hold, and the ones they lack;
    None when the question names fewer than MIN_WORDS things to look for."""
    words = list(dict.fromkeys(w for w in content_words(question) if w.lower() not in ASKING_WORDS))
    if len(words) < MIN_WORDS:
        return None, ()
    pool = _pool(texts)
    missing = tuple(w for w in words if _key(w) not in pool)
    return round(1 - len(missing) / len(words), 3), missing


def groundedness(probability: float, coverage: float | None, similarity: float | None) -> float:
    """How sure the app is that the passages answer the question: the model's yes weighed with the question's
    coverage and the closest passage's similarity. A question without specific words is the model's call alone
    (its passages are found by meaning, and a general question is far from all of them)."""
    if coverage is None:
        return round(probability, 3)
    parts = [(1.0, probability), (COVERAGE_WEIGHT, coverage)]
    if similarity is not None:
        parts.append((SIMILARITY_WEIGHT, max(0.0, similarity)))
    return round(sum(w * v for w, v in parts) / sum(w for w, _ in parts), 3)


def support(answer: str, texts: Sequence[str]) -> list[SentenceSupport]:
    """Each sentence of answer with the share of its content words that the passages it cites contain."""
    keys = [_pool([t]) for t in texts]
    everything = set().union(*keys) if keys else set()
    out = []
    for sentence in sentences(answer):
        cites = tuple(dict.fromkeys(int(n) for group in _CITE.findall(sentence) for n in group.split(",")
                                    if 1 <= int(n) <= len(texts)))
        pool = set().union(*(keys[n - 1] for n in cites)) if cites else everything
        words = list(dict.fromkeys(content_words(sentence)))
        if len(words) < MIN_WORDS:
            out.append(SentenceSupport(sentence, cites, None))
            continue
        missing = tuple(w for w in words if _key(w) not in pool)
        out.append(SentenceSupport(sentence, cites, round(1 - len(missing) / len(words), 2), missing))
    return out
