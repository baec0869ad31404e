"""Long-term memory: earlier exchanges and facts the user asked to keep, recalled into new answers.

Memories live in the document store as the hidden collection MEMORY, one "document" of one chunk per
memory, so recall gets the same hybrid search (FAISS + FTS5), crash safety and repair as documents.
The document's path says where the memory came from:
  memory:chat/<conversation id>/<message id>   an exchange (the user's message and the answer)
  memory:fact/<chat id or 0>/<unique id>       a fact the user asked to remember ("remember that ...")
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

MEMORY = "~memory"  # "~": the app's own collection, never listed or searched as documents
POOL = 30  # candidates from each search before fusion (documents use 100): a third of the time, same recall here
EXCHANGE_CHARS = 1200  # of one exchange; the embedder reads 256 tokens, the prompt gets the first part
# A fact to keep is said in a sentence or two; a longer message (a pasted text) is not scanned for one, which
# also keeps the patterns below (quadratic at worst) cheap.
FACT_MESSAGE_CHARS = 1000
# "Remember that X", "please remember this: X", "don't forget X", "note that X", "can you remember X", at
# the start of the message or of a later sentence; and "X. Remember that." / "X, don't forget it!" at its end.
_POLITE = r"(?:(?:ok(?:ay)?|hey|so|also|and|oh|btw|by the way)[,\s]+){0,3}(?:please[,\s]+|pls[,\s]+|kindly\s+|" \
          r"(?:can|could|would|will)\s+you(?:\s+please)?\s+)?"
_VERB = (r"(?:remember|memori[sz]e|keep\s+in\s+mind|bear\s+in\s+mind|don'?t\s+forget|do\s+not\s+forget|"
         r"never\s+forget|note|make\s+a\s+note(?:\s+of)?|take\s+note(?:\s+of)?|save\s+(?:this|that)\s+to\s+"
         r"(?:your\s+)?memory|for\s+future\s+reference)")
_REMEMBER = re.compile(
    rf"(?:^|(?<=[.!?;\n]))\s*{_POLITE}{_VERB}(?:\s+for\s+me)?"
    r"(?:\s*[,:\-–—]\s*|\s+)(?:(?:this|the\s+following)(?:\s*[,:\-–—]\s*|\s+))?(?:that\s+)?(?P<fact>\S.*)",
    re.I | re.S)
_REMEMBER_AFTER = re.compile(
    rf"^(?P<fact>.+?)[\s,.;:!\-–—]+{_POLITE}{_VERB}(?:\s+(?:that|this|it))?(?:\s+for\s+me)?(?:[,\s]+please)?"
    r"\s*[.!]*\s*$", re.I | re.S)
_PRONOUN = re.compile(r"^(?:it|its|it's|he|she|his|her|they|their|them|this|that|these|those)\b", re.I)
# What follows "remember" in a question about memory rather than a fact to keep ("can you remember what ...").
_NOT_A_FACT = re.compile(r"^(?:what|who|whom|whose|where|when|which|why|how|if|whether|me|anything|everything|"
                         r"nothing|to\b)", re.I)


@dataclass(frozen=True)
class Memory:
    key: str
    text: str
    kind: str  # "exchange" or "fact"
    chat_id: int | None
    when: float
    similarity: float | None = None

    def as_dict(self) -> dict:
        return {"text": self.text, "chat_id": self.chat_id, "when": self.when, "kind": self.kind, "key": self.key}


@dataclass(frozen=True)
class _Chunk:
    text: str
    page: int | None = None
    heading: str | None = None
    start: int = 0
    end: int = 0


def fact_to_remember(message: str) -> str | None:
    """The fact in "remember that my dog is called Rex" (None when the message asks nothing of the kind)."""
    if len(message) > FACT_MESSAGE_CHARS:
        return None
    message = re.sub(r"\s+", lambda m: "\n" if "\n" in m.group() else " ", message)  # long blank runs cost time
    match = _REMEMBER_AFTER.match(message) or _REMEMBER.search(message)
    if not match:
        return None
    fact = " ".join(match.group("fact").split())
    if match.re is _REMEMBER_AFTER and fact.endswith("?"):  # "what is my code? remember it": a question
        return None
    fact = fact.rstrip(".!?")
    if not fact or _NOT_A_FACT.match(fact) or len(fact.split()) < 2:  # "remember that.": nothing to keep
        return None
    before = " ".join(message[:match.start()].split())
    if before and _PRONOUN.match(fact):  # "I bought a boat. Remember: it is called X" needs what came before
        fact = f"{before} {fact}"
    return fact


def exchange_text(question: str, answer: str) -> str:
    return f"User: {question.strip()}\nAssistant: {answer.strip()}"[:EXCHANGE_CHARS]


def _parse(path: str) -> tuple[str, int | None]:
    parts = path.split(":", 1)[-1].split("/")
    kind = "exchange" if parts[0] == "chat" else "fact"
    try:
        chat = int(parts[1]) or None
    except (IndexError, ValueError):
        chat = None
    return kind, chat


class LongTermMemory:
    """The memory collection of a DocumentStore, embedded with the documents' embedder.

    embedder is a function returning the Embedder: it loads torch, which only writing or searching needs.
    """

    def __init__(self, documents, embedder: Callable[[], object]) -> None:
        self.documents = documents
        self._embedder = embedder

    @property
    def embedder(self):
        return self._embedder()

    def count(self) -> int:
        return self.documents.document_count(MEMORY)

    def _add(self, path: str, text: str) -> Memory:
        from assistant.rag.store import NewDocument

        vectors = self.embedder.embed([text])
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        now = time.time()
        self.documents.add_documents(MEMORY, [NewDocument(path, digest, len(text), now, None,
                                                          [_Chunk(text, end=len(text))], vectors)])
        self.documents.save()
        kind, chat = _parse(path)
        return Memory(path, text, kind, chat, now)

    def remember_exchange(self, chat_id: int, message_id: int, question: str, answer: str) -> Memory:
        return self._add(f"memory:chat/{chat_id}/{message_id}", exchange_text(question, answer))

    def remember_exchanges(self, exchanges: list[tuple[int, int, str, str]], batch: int = 256) -> int:
        """Many (chat id, message id, question, answer) at once: batched embedding, one save (imports, benchmarks)."""
        from assistant.rag.store import NewDocument

        now = time.time()
        for start in range(0, len(exchanges), batch):
            part = exchanges[start:start + batch]
            texts = [exchange_text(q, a) for _, _, q, a in part]
            vectors = self.embedder.embed(texts)
            self.documents.add_documents(MEMORY, [
                NewDocument(f"memory:chat/{c}/{m}", hashlib.sha256(t.encode("utf-8")).hexdigest(), len(t), now, None,
                            [_Chunk(t, end=len(t))], vectors[i:i + 1])
                for i, ((c, m, _, _), t) in enumerate(zip(part, texts, strict=True))])
        self.documents.save()
        return len(exchanges)

    def remember_fact(self, fact: str, chat_id: int | None = None) -> Memory:
        return self._add(f"memory:fact/{chat_id or 0}/{uuid.uuid4().hex[:12]}", fact.strip())

    def list(self) -> list[Memory]:
        """Every memory, newest first."""
        if self.documents.collection_id(MEMORY) is None:
            return []
        docs = self.documents.documents(MEMORY)
        texts = {r.file: r.text for r in self.documents.chunks(self.documents.chunk_ids(MEMORY).tolist())}
        out = []
        for d in docs:
            kind, chat = _parse(d.path)
            out.append(Memory(d.path, texts.get(d.path, ""), kind, chat, d.indexed_at or 0.0))
        return sorted(out, key=lambda m: m.when, reverse=True)

    def forget(self, key: str) -> bool:
        if self.documents.collection_id(MEMORY) is None:
            return False
        removed = self.documents.remove_documents(MEMORY, [key])
        self.documents.save()
        return removed > 0

    def forget_chat(self, chat_id: int) -> int:
        keys = [m.key for m in self.list() if m.chat_id == chat_id]
        if keys:
            self.documents.remove_documents(MEMORY, keys)
            self.documents.save()
        return len(keys)

    def recall(self, query: str, k: int = 3, min_similarity: float = 0.3,
               skip: set[str] = frozenset(), mode: str = "hybrid") -> list[Memory]:
        """The memories closest to query, best first; those whose key is in skip are left out."""
        from assistant.rag.retriever import search

        if not query.strip() or not self.count():
            return []
        hits = search(self.documents, self.embedder, query, MEMORY, k + len(skip), mode, pool=POOL)
        out = []
        for hit in hits:
            if hit.file in skip or (hit.similarity is not None and hit.similarity < min_similarity):
                continue
            kind, chat = _parse(hit.file)
            info = self.documents.document(MEMORY, hit.file)
            out.append(Memory(hit.file, hit.text, kind, chat, (info.indexed_at if info else 0.0) or 0.0,
                              hit.similarity))
        return out[:k]
