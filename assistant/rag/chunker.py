"""Cut a loaded document into overlapping chunks that fit the embedder, each pointing back at its source.

Recursive splitting: a section (heading or PDF page) is cut at blank lines, pieces still too big at line
breaks, then sentence ends, then spaces, and a lone giant "word" (a base64 blob) by characters. Adjacent
pieces are merged back up to the size limit, so chunk borders fall on the strongest break available.

Token counts are taken once per piece and summed: re-counting every candidate merge would make chunking
quadratic. For whitespace and WordPiece tokenizers the sum is exact, since pieces are separated by
whitespace, which they never count. A counter that does charge for whitespace (byte-level BPE counts
newlines) is caught by a probe or by counting the first chunks whole, and then gets every chunk counted
and cut again where needed; one that passes is still spot-checked now and then.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from assistant.rag.loaders import LoadedDocument

# Break points, strongest first. Each matches the whitespace *between* two pieces, so pieces never
# start or end with a separator and nothing but whitespace is ever left out of a chunk.
_SEPARATORS = (
    re.compile(r"\n[ \t]*\n\s*"),  # paragraphs
    re.compile(r"\n\s*"),  # lines
    re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')\]”’»])\s+"),  # sentences
    re.compile(r"\s+"),  # words
)
# A piece longer than this many characters per allowed token is split whatever the counter says:
# a whitespace counter sees a 1 MB base64 blob as one token, and so does BERT's (it becomes [UNK]).
_MAX_CHARS_PER_TOKEN = 16
_WORD_START = re.compile(r"\s+")
# After a sentence end or a blank line; not after a single line break, which in PDFs is mid-sentence.
_SENTENCE_START = re.compile(r"[.!?][\"')\]”’»]?\s+|\n[ \t]*\n\s*")

# Once this many chunks counted whole have matched their summed estimate, the counter is trusted to add up
# (whitespace and WordPiece counters do); one that does not is checked on every chunk from then on.
_TRUST_AFTER = 16
_RECHECK_EVERY = 64

_PROBES = (("alpha", "beta."), ("Überschrift", "naïve"), ("x=1;", "y"))

Span = tuple[int, int, int, bool]  # start, end, estimated tokens, whether the estimate must be checked


@dataclass(frozen=True)
class Chunk:
    text: str  # == doc.text[start:end], exactly
    page: int | None
    heading: str | None
    start: int
    end: int


def chunk_document(doc: LoadedDocument, count_tokens: Callable[[str], int], size: int = 256,
                   overlap: int = 38) -> list[Chunk]:
    """Chunks of at most `size` tokens (as counted by count_tokens), consecutive ones in a section
    sharing about `overlap` tokens. Chunks never cross a section, so never a heading or a PDF page."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1 token, not {size}")
    if not 0 <= overlap < size:
        raise ValueError(f"overlap must be at least 0 and less than the chunk size ({size}), not {overlap}")
    checker = _Checker(count_tokens)
    chunks: list[Chunk] = []
    for section in doc.sections:
        text = section.text
        for start, end in _chunk_spans(text, checker, size, overlap):
            chunks.append(Chunk(text[start:end], section.page, section.heading,
                                section.start + start, section.start + end))
    return chunks


class _Checker:
    """Decides which chunks get counted whole, to catch counters for which pieces do not add up."""

    def __init__(self, count: Callable[[str], int]) -> None:
        self.count = count
        self.matched = 0
        self.seen = 0
        self.additive: bool | None = None  # unknown until proven either way
        # Summing assumes whitespace between pieces costs nothing; a counter that charges for it never earns trust.
        for left, right in _PROBES:
            for space in (" ", "  ", "\n", "\n\n", "\t", " \n\n  "):
                if count(left + space + right) > count(left) + count(right):
                    self.additive = False
                    return

    def wants(self, unsure: bool) -> bool:
        self.seen += 1
        return unsure or self.additive is not True or self.seen % _RECHECK_EVERY == 0

    def record(self, actual: int, estimate: int) -> None:
        if actual > estimate:
            self.additive = False
        elif self.additive is None:
            self.matched += 1
            if self.matched >= _TRUST_AFTER:
                self.additive = True


def _chunk_spans(text: str, checker: _Checker, size: int, overlap: int) -> list[tuple[int, int]]:
    count = checker.count
    # New text per chunk is held to size - overlap so that adding the overlap keeps the total within size.
    limit = size - overlap
    pending = _split(text, 0, len(text), 0, limit, limit * _MAX_CHARS_PER_TOKEN, count)
    pending.reverse()
    result: list[tuple[int, int]] = []
    previous: tuple[int, int, int] | None = None
    while pending:
        start, end, tokens, unsure = pending.pop()
        begin, extra = start, 0
        if previous is not None and overlap:
            begin, extra = _overlap(text, previous, start, count, min(overlap, size - tokens))
        first, last = _trim(text, begin, end)
        if first >= last:
            continue
        if checker.wants(unsure):
            actual = count(text[first:last])
            checker.record(actual, tokens + extra)
            if actual > size:
                if tokens > 1 and end - start > 1:
                    # Pieces did not add up: cut this span again, finer, and check the results.
                    smaller = max(1, min(tokens - 1, (tokens + extra) * size // actual - extra))
                    again = _split(text, start, end, 0, smaller, smaller * _MAX_CHARS_PER_TOKEN, count)
                    pending.extend((a, b, t, True) for a, b, t, _ in reversed(again))
                    continue
                first, last = _trim(text, start, end)  # cannot be cut further: give up the overlap instead
        result.append((first, last))
        previous = (start, end, tokens)
    return result


def _split(text: str, lo: int, hi: int, level: int, limit: int, max_chars: int,
           count: Callable[[str], int]) -> list[Span]:
    """Spans covering the non-whitespace of text[lo:hi], each within limit tokens and max_chars characters."""
    if level == len(_SEPARATORS):
        return _hard_split(text, lo, hi, limit, max_chars, count)
    units: list[Span] = []
    position = lo
    separator = _SEPARATORS[level]
    for match in separator.finditer(text, lo, hi):
        if match.start() > position:
            _add_piece(text, position, match.start(), level, limit, max_chars, count, units)
        position = match.end()
    if position < hi:
        _add_piece(text, position, hi, level, limit, max_chars, count, units)
    return _merge(units, limit, max_chars)


def _add_piece(text: str, start: int, end: int, level: int, limit: int, max_chars: int,
               count: Callable[[str], int], units: list[Span]) -> None:
    if end - start <= max_chars:
        tokens = count(text[start:end])
        if tokens <= limit:
            units.append((start, end, tokens, False))
            return
    # Too big (or too long to be worth counting): cut it at the next weaker kind of break.
    units.extend(_split(text, start, end, level + 1, limit, max_chars, count))


def _merge(units: list[Span], limit: int, max_chars: int) -> list[Span]:
    merged: list[Span] = []
    if not units:
        return merged
    group_start, group_end, group_tokens, group_unsure = units[0]
    for start, end, tokens, unsure in units[1:]:
        if group_tokens + tokens <= limit and end - group_start <= max_chars:
            group_end, group_tokens, group_unsure = end, group_tokens + tokens, group_unsure or unsure
        else:
            merged.append((group_start, group_end, group_tokens, group_unsure))
            group_start, group_end, group_tokens, group_unsure = start, end, tokens, unsure
    merged.append((group_start, group_end, group_tokens, group_unsure))
    return merged


def _hard_split(text: str, lo: int, hi: int, limit: int, max_chars: int, count: Callable[[str], int]) -> list[Span]:
    """Cut a run with no whitespace by characters: step sized from its token density, halved until it fits."""
    sample = text[lo:min(hi, lo + 4 * max_chars)]
    density = max(1, count(sample)) / max(1, len(sample))  # tokens per character
    step = max(1, min(max_chars, int(limit / density * 0.9)))
    spans: list[Span] = []
    pending = [(start, min(start + step, hi)) for start in range(lo, hi, step)]
    pending.reverse()
    while pending:
        start, end = pending.pop()
        tokens = count(text[start:end])
        if tokens <= limit or end - start == 1:  # a single character is kept whatever it counts as
            # Parts of a word need not add up to the word (WordPiece may cut it differently): check later.
            spans.append((start, end, tokens, True))
        else:
            middle = (start + end) // 2
            pending.append((middle, end))
            pending.append((start, middle))
    return spans


def _overlap(text: str, previous: tuple[int, int, int], current_start: int, count: Callable[[str], int],
             budget: int) -> tuple[int, int]:
    """Where the current chunk starts once it takes up to `budget` tokens from the end of the previous
    one, and how many tokens that adds."""
    previous_start, previous_end, previous_tokens = previous
    if budget <= 0:
        return current_start, 0
    chars_per_token = (previous_end - previous_start) / max(1, previous_tokens)
    # At most half the previous chunk, or a short chunk would be repeated whole inside the next one.
    reach = min(int(budget * chars_per_token), budget * _MAX_CHARS_PER_TOKEN, (previous_end - previous_start) // 2)
    begin = _next_word(text, max(previous_start, previous_end - reach), previous_end)
    # Starting the overlap at a sentence start reads better, if that keeps at least half of it.
    sentence = _SENTENCE_START.search(text, begin, previous_end)
    if sentence is not None and sentence.end() < previous_end and \
            previous_end - sentence.end() >= (previous_end - begin) // 2:
        begin = sentence.end()
    if begin >= previous_end:
        return current_start, 0
    tokens = count(text[begin:previous_end])
    if tokens <= budget:
        return begin, tokens
    # Denser than estimated (numbers, code): bisect for the earliest word start whose overlap still fits.
    starts = [match.end() for match in _WORD_START.finditer(text, begin, previous_end) if match.end() < previous_end]
    best = current_start, 0
    low, high = 0, len(starts) - 1
    while low <= high:
        middle = (low + high) // 2
        tokens = count(text[starts[middle]:previous_end])
        if tokens <= budget:
            best = starts[middle], tokens
            high = middle - 1
        else:
            low = middle + 1
    return best


def _next_word(text: str, position: int, end: int) -> int:
    """The first word start at or after position (end when there is none before end)."""
    if position > 0 and not text[position - 1].isspace():
        match = _WORD_START.search(text, position, end)  # inside a word: go past the next space
        return match.end() if match is not None else end
    while position < end and text[position].isspace():
        position += 1
    return position


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end
