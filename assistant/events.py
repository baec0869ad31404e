"""The answer pipeline is a generator of these small events.

The UI turns them into Qt signals on its worker thread; the CLI prints them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Token:
    """A piece of the answer as it streams."""

    text: str


@dataclass(frozen=True)
class Thinking:
    """A piece of a reasoning model's thinking (its <think> block) as it streams: shown folded, kept nowhere else."""

    text: str


@dataclass(frozen=True)
class ContextTrimmed:
    """Older turns were left out of the prompt so the conversation fits the context window."""

    dropped_messages: int
    kept_messages: int
    n_ctx: int


@dataclass(frozen=True)
class Source:
    """A passage from the user's documents given to the model as [n]."""

    n: int
    file: str
    page: int | None
    text: str
    score: float
    chunk_id: int
    why: tuple[str, ...] = ()  # which searches found it, for the retrieval inspector


@dataclass(frozen=True)
class Sources:
    """The passages the answer may cite; sent before the first token."""

    sources: tuple[Source, ...]
    collection: str  # as asked: a name, several joined by ", ", or "*" for all
    dropped: tuple[Source, ...] = ()  # found, but left out as not about the question (n = 0)
    whole_document: str | None = None  # a file that fits the context whole: the UI offers answering from all of it


@dataclass(frozen=True)
class Recalled:
    """Long-term memories put into the prompt, before the answer: each a dict with text, chat_id, when, kind, key."""

    memories: tuple[dict, ...]


@dataclass(frozen=True)
class Remembered:
    """The user's message asked to keep a fact ("remember that ..."): it is now a long-term memory."""

    fact: str
    key: str


@dataclass(frozen=True)
class Summarised:
    """The chat's early turns no longer fit the context: the model summarised them, and the summary stands in."""

    messages: int  # how many messages the summary now covers
    summary: str


@dataclass(frozen=True)
class Done:
    """The answer is complete (or was stopped); the numbers are measured, not estimated."""

    answer: str
    finish_reason: str  # "stop" (model ended), "length" (token budget or context full), "cancelled"
    prompt_tokens: int
    reused_tokens: int  # prompt tokens served from the KV cache of the previous turn
    completion_tokens: int
    seconds: float
    time_to_first_token: float
    tokens_per_second: float  # generation speed, after the first token
    prompt_tokens_per_second: float
    message_id: int | None = None
    reasoning: str = ""  # a reasoning model's thinking, never part of answer
    thinking_seconds: float = 0.0


@dataclass(frozen=True)
class AgentStep:
    """One step of the agent: what it thought, the tool it called with what, and what it saw."""

    thought: str
    tool: str
    input: dict
    observation: str
    refused: bool = False  # the call was not made (a copy of document or tool text, or a repeat)


@dataclass(frozen=True)
class Judged:
    """Before a document answer: whether the passages answer the question at all. The model's own yes/no,
    weighed with how much of the question the passages contain and how close the best of them is
    (grounding.groundedness)."""

    probability: float  # the model's "yes" among yes and no
    threshold: float  # below it the app says the documents don't say, and writes no answer
    seconds: float
    coverage: float | None = None  # share of the question's own words the passages hold; None: too few to look for
    similarity: float | None = None  # the closest passage's cosine with the question
    missing: tuple[str, ...] = ()  # the question's words that no passage has
    score: float | None = None  # what the threshold holds; None: the probability alone

    @property
    def groundedness(self) -> float:
        return self.probability if self.score is None else self.score

    @property
    def answerable(self) -> bool:
        return self.groundedness >= self.threshold

    def as_dict(self) -> dict:
        return {"answerable": self.answerable, "score": self.groundedness, "threshold": self.threshold,
                "probability": self.probability, "coverage": self.coverage, "similarity": self.similarity,
                "missing": list(self.missing), "seconds": self.seconds}


@dataclass(frozen=True)
class Support:
    """After a document answer: each sentence with how much of it its passages contain (grounding.SentenceSupport)."""

    sentences: tuple


@dataclass(frozen=True)
class Error:
    """Something the user can act on went wrong; the message is plain words."""

    message: str


Event = (Token | Thinking | ContextTrimmed | Sources | Judged | Support | Recalled | Remembered | Summarised | AgentStep
         | Done | Error)
