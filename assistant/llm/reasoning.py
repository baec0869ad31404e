"""A reasoning model's thinking, told apart from its answer.

Qwen3, DeepSeek-R1 distills, QwQ, Phi-4-reasoning and others write <think>...</think> before the
answer. Some templates open the block themselves (the generation prompt ends in "<think>\\n"), so
the output starts inside it with no opening tag. The thinking is shown folded and kept out of
everything else: history, memory, summaries, exports, the agent's parsing, the API's content.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

OPEN, CLOSE = "<think>", "</think>"
_BLOCK = re.compile(r"<think>.*?(?:</think>|\Z)\s*", re.DOTALL)


def starts_in_thinking(prompt: str) -> bool:
    """Whether the template opened a think block the output will close."""
    tail = prompt.rstrip()
    return tail.endswith(OPEN)


def split_reasoning(text: str, in_thinking: bool = False) -> tuple[str, str]:
    """(thinking, answer) of a whole reply; the answer without any think block."""
    thinking: list[str] = []
    answer: list[str] = []
    for kind, piece in ThinkSplitter(in_thinking).feed_all([text]):
        (thinking if kind == "thinking" else answer).append(piece)
    return "".join(thinking).strip(), "".join(answer).strip()


def strip_reasoning(text: str) -> str:
    """The reply without think blocks (an unclosed one runs to the end), or a stray closing tag's prefix.
    Text with no tag is returned as it is, spacing included."""
    if OPEN not in text and CLOSE not in text:
        return text
    if CLOSE in text and OPEN not in text.split(CLOSE, 1)[0]:
        text = text.split(CLOSE, 1)[1]  # the template opened the block: everything before </think> is thinking
    return _BLOCK.sub("", text).strip()


class ThinkSplitter:
    """Streams pieces of output into ("thinking", text) and ("answer", text), tags removed.

    A tag can arrive split over pieces ("<th" + "ink>"), so text that could be the start of a
    tag is held back until the next piece shows what it is.
    """

    def __init__(self, in_thinking: bool = False) -> None:
        self.in_thinking = in_thinking
        self._held = ""
        self._answer_started = False

    def feed(self, piece: str) -> list[tuple[str, str]]:
        text = self._held + piece
        self._held = ""
        out: list[tuple[str, str]] = []
        while text:
            tag = CLOSE if self.in_thinking else OPEN
            at = text.find(tag)
            if at >= 0:
                self._emit(out, text[:at])
                text = text[at + len(tag):]
                self.in_thinking = not self.in_thinking
                if not self.in_thinking:
                    text = text.lstrip()  # the blank line models put after </think>
                continue
            keep = _partial_tag_suffix(text, tag)
            self._emit(out, text[:len(text) - keep])
            self._held = text[len(text) - keep:]
            break
        return out

    def flush(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        self._emit(out, self._held)
        self._held = ""
        return out

    def feed_all(self, pieces: Iterable[str]) -> Iterator[tuple[str, str]]:
        for piece in pieces:
            yield from self.feed(piece)
        yield from self.flush()

    def _emit(self, out: list[tuple[str, str]], text: str) -> None:
        if not text:
            return
        if self.in_thinking:
            out.append(("thinking", text))
            return
        if not self._answer_started:
            text = text.lstrip()
            if not text:
                return
            self._answer_started = True
        out.append(("answer", text))


def _partial_tag_suffix(text: str, tag: str) -> int:
    """How many characters at the end of text could begin tag."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0
