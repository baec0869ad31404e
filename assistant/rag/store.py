"""Documents, chunks and their vectors: SQLite holds the truth, FAISS a copy of the vectors.

SQLite (assistant.db, migration 2) has collections, documents, chunks and an FTS5 table of the chunk
text. Each collection has its own FAISS index, `index/c<collection id>.faiss`, an IndexIDMap2 over an
IndexFlatIP whose ids are chunk ids. One index per collection, not one global one, because searches are
always within one collection: a global index would need a filter or over-fetching to return k hits
from a small collection beside a large one, and deleting a collection would mean removing its ids one
by one instead of deleting a file.

Crash safety. Vectors enter FAISS only after their chunks are committed to SQLite, and the FAISS file
is written (temp file, fsync, rename) every few seconds, not after each document. A kill -9 can
therefore leave the saved file behind SQLite in either direction:
- chunks committed after the last save have no vector in the file: they are *missing* and
  `repair(embedder)` embeds their text again (the indexer does this before it starts);
- chunks deleted after the last save still have a vector: they are removed when the file is loaded.
Chunk ids are AUTOINCREMENT, never reused, so an id means one chunk forever, and the file's own id list
is its manifest: if its count and largest id equal SQLite's, the two hold the same ids (anything
added since would have a larger id, anything removed would lower the count). Only when they differ
is the full difference computed.

One writer: the first write takes an advisory lock on index/.writer.lock, so a second process (the CLI
while the window indexes) gets a clear error instead of overwriting the other's file. Within a
process, one DocumentStore is shared by the indexer thread and searches; a lock serialises them.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from assistant.config import db_path
from assistant.errors import AssistantError
from assistant.fileio import _fsync_dir
from assistant.memory.db import Database

if TYPE_CHECKING:
    import numpy as np

    from assistant.rag.embedder import Embedder

STATUSES = ("indexed", "skipped", "failed", "pending")
INDEX_MAGIC = b"ASSTVEC1"
SAVE_EVERY_S = 5.0  # at most this much embedding work is redone after a kill -9
SAVE_COST_FACTOR = 20  # and never more than 1/20 of the time goes to saving a large index
REPAIR_BATCH = 256
MAX_QUERY_TERMS = 64
# FTS5 computes bm25() for every chunk holding any query word (~1 µs each); past this many the
# commonest words are dropped from the query (see keyword_search).
MATCH_BUDGET = 10_000
FTS_FETCH_MAX = 5_000  # FTS-only ranking, then a collection filter, up to this many rows; else a join
# Exact search costs ~0.076 us per vector per query here (7.6 ms at 100k, bench/rag.py), HNSW 0.2 ms
# with recall@100 0.98 against exact. Past this size exact search would take 15 ms of the 50 ms a query
# may take, so an HNSW graph is built (in the background: ~1 min per 100k vectors on 2 cores) and used.
HNSW_MIN_VECTORS = 200_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 40
HNSW_EF_SEARCH = 128
HNSW_STALE_MAX = 0.1  # rebuilt once this share of its vectors has been removed
_SQL_BATCH = 500  # ids per IN (...) clause, well under SQLite's variable limit
_UNSAFE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


Names = str | Sequence[str]  # one collection, or several searched together


class ChunkLike(Protocol):
    text: str
    page: int | None
    heading: str | None
    start: int
    end: int

HIDDEN_PREFIX = "~"  # collections the app keeps for itself (long-term memory): searched only by name


@dataclass(frozen=True)
class ChunkRecord:
    chunk_id: int
    file: str
    page: int | None
    heading: str | None
    text: str
    ordinal: int
    document_id: int
    start: int = 0
    end: int = 0


@dataclass(frozen=True)
class DocumentInfo:
    id: int
    path: str
    status: str
    reason: str | None
    chunk_count: int
    pages: int | None
    size: int | None
    mtime: float | None
    content_hash: str | None
    indexed_at: float | None


@dataclass(frozen=True)
class CollectionInfo:
    id: int
    name: str
    created_at: float
    documents: int
    chunks: int


@dataclass
class NewDocument:
    """One file's chunks and their vectors (row i of `vectors` belongs to chunks[i])."""

    path: str
    content_hash: str
    size: int
    mtime: float
    pages: int | None
    chunks: Sequence[ChunkLike]
    vectors: np.ndarray
    reason: str | None = None  # indexed, but with something to say ("only the first 64 MB were read")


@dataclass
class _Vectors:
    """A collection's FAISS index as loaded, with what it still lacks and what is queued out of it."""

    index: Any | None  # faiss.IndexIDMap2, None until the first vector arrives
    model: str | None
    missing: set[int] = field(default_factory=set)  # chunk ids in SQLite with no vector yet
    removals: list[int] = field(default_factory=list)  # removed in SQLite, not yet from FAISS (batched)
    dirty: bool = False
    file_stamp: tuple[int, int] | None = None  # (mtime_ns, size) of the file it was read from
    # Past HNSW_MIN_VECTORS, searches go to an HNSW graph built from the flat index in the background.
    hnsw: Any | None = None
    hnsw_building: bool = False
    hnsw_stale: set[int] = field(default_factory=set)  # removed since the graph was built: filtered out
    hnsw_pending: list[int] = field(default_factory=list)  # added while it was being built


def fts_query(text: str) -> str | None:
    """A safe FTS5 query for arbitrary user text: each word quoted as a literal, any of them matching.

    Quoting makes AND/OR/NOT/NEAR, '*', ':', '^', parentheses and quotes plain text, so no input can raise
    a syntax error. Tokens with no letter or digit (emoji, punctuation) would be empty phrases and are left
    out. None when nothing searchable is left.
    """
    # NUL ends the string inside SQLite's parser ("unterminated string") and a lone surrogate cannot be
    # encoded at all: control characters and surrogates become spaces.
    text = _UNSAFE.sub(" ", text)
    terms: list[str] = []
    seen: set[str] = set()
    for token in text.split():
        if not re.search(r"\w", token):
            continue
        key = token.lower()
        if key in seen:
            continue
        seen.add(key)
        terms.append('"' + token.replace('"', '""') + '"')
        if len(terms) >= MAX_QUERY_TERMS:
            break
    return " OR ".join(terms) if terms else None


class DocumentStore:
    def __init__(self, home: Path | None = None) -> None:
        from assistant.config import data_dir

        self.home = Path(home) if home is not None else data_dir()
        self.db = Database(db_path(self.home))
        self.index_dir = self.home / "index"
        self._lock = threading.RLock()
        self._vectors: dict[int, _Vectors] = {}
        self._writer_fd: int | None = None
        self._last_save = time.monotonic()
        self._save_cost = 0.0
        self.model_name: str | None = None  # set by repair(): recorded in the index files written
        self.model_dim: int | None = None
        self.saves = 0

    # ---------------------------------------------------------------- collections

    def collection_id(self, name: str, create: bool = False) -> int | None:
        conn = self.db.connect()
        row = conn.execute("SELECT id FROM collections WHERE name = ?", (name,)).fetchone()
        if row is not None:
            return int(row[0])
        if not create:
            return None
        self._take_writer_lock()
        conn.execute("INSERT OR IGNORE INTO collections(name, created_at) VALUES (?, ?)", (name, time.time()))
        return int(conn.execute("SELECT id FROM collections WHERE name = ?", (name,)).fetchone()[0])

    def create_collection(self, name: str) -> int:
        """The collection's id, creating it if needed. Takes the writer's lock: a second writer fails here, early."""
        name = name.strip()
        if not name:
            raise AssistantError("A collection needs a name.")
        if name.startswith(HIDDEN_PREFIX):
            raise AssistantError(f"Collection names cannot start with {HIDDEN_PREFIX!r}: those are the app's own.")
        self._take_writer_lock()
        return self.collection_id(name, create=True)  # type: ignore[return-value]

    def list_collections(self, hidden: bool = False) -> list[CollectionInfo]:
        """The user's collections; with hidden=True also the app's own (named "~...", such as long-term memory)."""
        rows = self.db.connect().execute(
            """SELECT c.id, c.name, c.created_at, COUNT(d.id), COALESCE(SUM(d.chunk_count), 0)
               FROM collections c LEFT JOIN documents d ON d.collection_id = c.id
               GROUP BY c.id ORDER BY c.name"""
        ).fetchall()
        return [CollectionInfo(r[0], r[1], r[2], r[3], r[4]) for r in rows
                if hidden or not r[1].startswith(HIDDEN_PREFIX)]

    def delete_collection(self, name: str) -> bool:
        """Forget a collection, its documents and vectors. False when there was none by that name."""
        with self._lock:
            cid = self.collection_id(name)
            if cid is None:
                return False
            self._take_writer_lock()
            with self._transaction() as conn:
                conn.execute("DELETE FROM collections WHERE id = ?", (cid,))
            # After the commit: a crash before the unlink leaves an orphan file, removed at the next open.
            self._vectors.pop(cid, None)
            self._index_path(cid).unlink(missing_ok=True)
            return True

    # ---------------------------------------------------------------- documents

    def documents(self, collection: str) -> list[DocumentInfo]:
        """Every file the collection knows, for a Documents panel: path, status, reason, chunk count..."""
        cid = self.collection_id(collection)
        if cid is None:
            return []
        rows = self.db.connect().execute(
            """SELECT id, path, status, reason, chunk_count, pages, size, mtime, content_hash, indexed_at
               FROM documents WHERE collection_id = ? ORDER BY path""",
            (cid,),
        ).fetchall()
        return [DocumentInfo(*tuple(r)) for r in rows]

    def document_count(self, collection: str) -> int:
        cid = self.collection_id(collection)
        if cid is None:
            return 0
        return self.db.connect().execute("SELECT COUNT(*) FROM documents WHERE collection_id = ?", (cid,)).fetchone()[0]

    def document(self, collection: str, path: str | Path) -> DocumentInfo | None:
        cid = self.collection_id(collection)
        if cid is None:
            return None
        row = self.db.connect().execute(
            """SELECT id, path, status, reason, chunk_count, pages, size, mtime, content_hash, indexed_at
               FROM documents WHERE collection_id = ? AND path = ?""",
            (cid, str(path)),
        ).fetchone()
        return DocumentInfo(*tuple(row)) if row else None

    def add_document_chunks(
        self, collection: str, path: str | Path, content_hash: str, size: int, mtime: float,
        pages: int | None, chunks: Sequence[ChunkLike], vectors: np.ndarray,
    ) -> int:
        """Store (or replace) one file's chunks and vectors in one transaction; the number of chunks it replaced."""
        doc = NewDocument(str(path), content_hash, size, mtime, pages, chunks, vectors)
        return self.add_documents(collection, [doc])

    def add_documents(self, collection: str, docs: Sequence[NewDocument]) -> int:
        """Store several files at once (one transaction for all); the number of old chunks replaced."""
        import numpy as np

        if not docs:
            return 0
        with self._lock:
            self._take_writer_lock()
            cid = self.collection_id(collection, create=True)
            assert cid is not None
            vec = self._load(cid)  # reconcile before writing, so a stale file never meets a new id
            for doc in docs:
                if len(doc.chunks) != len(doc.vectors):
                    raise ValueError(f"{doc.path}: {len(doc.chunks)} chunks but {len(doc.vectors)} vectors")
                if len(doc.chunks) and vec.index is not None and doc.vectors.shape[1] != vec.index.d:
                    raise AssistantError("The document index was built with another embedding model. "
                                         "Index the documents again.")
            new_ids: list[int] = []
            blocks: list[np.ndarray] = []
            removed: list[int] = []
            now = time.time()
            with self._transaction() as conn:
                for doc in docs:
                    doc_id = self._upsert_document(
                        conn, cid, doc.path, status="indexed", reason=doc.reason, content_hash=doc.content_hash,
                        size=doc.size, mtime=doc.mtime, pages=doc.pages, chunk_count=len(doc.chunks),
                        indexed_at=now,
                    )
                    removed.extend(self._delete_chunks(conn, doc_id))
                    for ordinal, chunk in enumerate(doc.chunks):
                        cur = conn.execute(
                            'INSERT INTO chunks(document_id, ordinal, text, page, heading, start, "end") '
                            "VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (doc_id, ordinal, chunk.text, chunk.page, chunk.heading, chunk.start, chunk.end),
                        )
                        new_ids.append(int(cur.lastrowid))
                    if len(doc.chunks):
                        blocks.append(np.asarray(doc.vectors, dtype=np.float32))
            # Committed: now the vectors. Had we crashed before this line, repair() would re-embed them.
            self._queue_removals(vec, removed)
            if new_ids:
                try:
                    vectors = np.ascontiguousarray(np.concatenate(blocks), dtype=np.float32)
                    self._add_vectors(cid, vec, vectors, np.asarray(new_ids, dtype=np.int64))
                except BaseException:
                    vec.missing.update(new_ids)  # committed without vectors: repair() will embed them
                    raise
            self._maybe_save()
            return len(removed)

    def remove_document(self, collection: str, path: str | Path) -> int:
        """Forget one file and its chunks; the number of chunks removed."""
        return self.remove_documents(collection, [path])

    def remove_documents(self, collection: str, paths: Iterable[str | Path]) -> int:
        with self._lock:
            cid = self.collection_id(collection)
            if cid is None:
                return 0
            self._take_writer_lock()
            vec = self._load(cid)
            removed: list[int] = []
            with self._transaction() as conn:
                for path in paths:
                    row = conn.execute(
                        "SELECT id FROM documents WHERE collection_id = ? AND path = ?", (cid, str(path))
                    ).fetchone()
                    if row is None:
                        continue
                    removed.extend(self._delete_chunks(conn, row[0]))
                    conn.execute("DELETE FROM documents WHERE id = ?", (row[0],))
            self._queue_removals(vec, removed)
            self._maybe_save()
            return len(removed)

    # ---------------------------------------------------------------- what the user added

    def add_roots(self, collection: str, paths: Iterable[str | Path]) -> None:
        """Record files and folders the user added (and so no longer excluded)."""
        cid = self.create_collection(collection)
        now = time.time()
        with self._transaction() as conn:
            conn.executemany(
                """INSERT INTO collection_paths(collection_id, path, excluded, added_at) VALUES (?, ?, 0, ?)
                   ON CONFLICT (collection_id, path) DO UPDATE SET excluded = 0""",
                [(cid, str(p), now) for p in paths])

    def remove_roots(self, collection: str, paths: Iterable[str | Path]) -> None:
        cid = self.collection_id(collection)
        paths = [str(p) for p in paths]
        if cid is None or not paths:
            return
        with self._transaction() as conn:
            conn.executemany("DELETE FROM collection_paths WHERE collection_id = ? AND path = ? AND excluded = 0",
                             [(cid, p) for p in paths])

    def roots(self, collection: str) -> list[str]:
        """The files and folders added to the collection, in the order they were added."""
        return [r[0] for r in self._paths(collection, 0)]

    def exclusions(self, collection: str) -> list[str]:
        """Files and folders removed from inside an added folder: walks leave them out."""
        return [r[0] for r in self._paths(collection, 1)]

    def _paths(self, collection: str, excluded: int) -> list:
        cid = self.collection_id(collection)
        if cid is None:
            return []
        return self.db.connect().execute(
            "SELECT path FROM collection_paths WHERE collection_id = ? AND excluded = ? ORDER BY added_at, path",
            (cid, excluded)).fetchall()

    def forget(self, collection: str, path: str | Path) -> int:
        """Take a file or folder out of the collection for good: its chunks go, and if it lies inside an
        added folder it is excluded from that folder's walks. Returns the number of chunks removed."""
        path = str(path)
        cid = self.collection_id(collection)
        if cid is None:
            return 0
        self._take_writer_lock()
        prefix = path.rstrip(os.sep) + os.sep
        docs = [r[0] for r in self.db.connect().execute(
            "SELECT path FROM documents WHERE collection_id = ? AND (path = ? OR substr(path, 1, ?) = ?)",
            (cid, path, len(prefix), prefix))]
        removed = self.remove_documents(collection, docs)
        inside = any(path.startswith(root.rstrip(os.sep) + os.sep) for root in self.roots(collection))
        with self._transaction() as conn:
            conn.execute("DELETE FROM collection_paths WHERE collection_id = ? AND (path = ? OR substr(path, 1, ?) = ?)",
                         (cid, path, len(prefix), prefix))
            if inside:
                conn.execute("INSERT INTO collection_paths(collection_id, path, excluded, added_at) VALUES (?, ?, 1, ?)",
                             (cid, path, time.time()))
        return removed

    def mark(
        self, collection: str, path: str | Path, status: str, reason: str | None = None, *,
        content_hash: str | None = None, size: int | None = None, mtime: float | None = None,
    ) -> int:
        """Record a file's status without chunks. 'skipped' and 'failed' drop any chunks it had (they came
        from content that is gone); 'pending' keeps them, so a file queued for re-indexing stays searchable.
        Returns the number of chunks dropped."""
        return self.mark_many(collection, [(path, status, reason)], content_hash=content_hash, size=size, mtime=mtime)

    def mark_many(
        self, collection: str, entries: Iterable[tuple[str | Path, str, str | None]], *,
        content_hash: str | None = None, size: int | None = None, mtime: float | None = None,
    ) -> int:
        """mark() for many files in one transaction (the indexer queues thousands of new files at once)."""
        with self._lock:
            self._take_writer_lock()
            cid = self.collection_id(collection, create=True)
            assert cid is not None
            vec = self._load(cid)
            removed: list[int] = []
            with self._transaction() as conn:
                for path, status, reason in entries:
                    if status not in STATUSES:
                        raise ValueError(f"unknown document status {status!r}")
                    if status == "pending":
                        conn.execute(
                            "INSERT INTO documents(collection_id, path, status) VALUES (?, ?, 'pending') "
                            "ON CONFLICT(collection_id, path) DO UPDATE SET status = 'pending', reason = NULL",
                            (cid, str(path)),
                        )
                        continue
                    doc_id = self._upsert_document(
                        conn, cid, str(path), status=status, reason=reason, content_hash=content_hash,
                        size=size, mtime=mtime, pages=None, chunk_count=0, indexed_at=time.time(),
                    )
                    removed.extend(self._delete_chunks(conn, doc_id))
            self._queue_removals(vec, removed)
            self._maybe_save()
            return len(removed)

    def touch(self, collection: str, entries: Iterable[tuple[str | Path, int, float]]) -> None:
        """Files (path, size, mtime) whose content is unchanged though size or mtime moved: remember the new
        values, so the next run trusts stat() and does not read them again."""
        cid = self.collection_id(collection)
        if cid is None:
            return
        now = time.time()
        with self._lock, self._transaction() as conn:
            conn.executemany(
                "UPDATE documents SET size = ?, mtime = ?, indexed_at = ? WHERE collection_id = ? AND path = ?",
                [(size, mtime, now, cid, str(path)) for path, size, mtime in entries],
            )

    # ---------------------------------------------------------------- search

    def dense_search(self, vector: np.ndarray, collection: Names, k: int) -> list[tuple[int, float]]:
        """The k chunks nearest to `vector` (cosine similarity, higher is closer) in one collection or
        several, best first."""
        import numpy as np

        query = np.ascontiguousarray(np.asarray(vector, dtype=np.float32).reshape(1, -1))
        found: list[tuple[int, float]] = []
        for cid in self._collection_ids(collection):
            with self._lock:
                vec = self._load(cid)
                self._flush_removals(vec)
                if vec.index is None or vec.index.ntotal == 0 or k <= 0:
                    continue
                if query.shape[1] != vec.index.d:
                    raise AssistantError("The document index was built with another embedding model. "
                                         "Index the documents again to search them.")
                hnsw = self._hnsw(cid, vec)
                if hnsw is not None:
                    # faiss searches with max(efSearch, k), so asking for more keeps the recall.
                    scores, ids = hnsw.search(query, min(k + len(vec.hnsw_stale), hnsw.ntotal))
                    stale = vec.hnsw_stale
                else:
                    scores, ids = vec.index.search(query, min(k, vec.index.ntotal))
                    stale = set()
            found += [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True)
                      if i >= 0 and int(i) not in stale][:k]
        return sorted(found, key=lambda item: -item[1])[:k]

    def vectors(self, ids: Sequence[int], collection: Names) -> np.ndarray:
        """The stored vectors of these chunks, one row each in the order asked; zeros for a chunk with none
        (not in these collections, or waiting for repair), so its cosine with any query is 0."""
        import numpy as np

        keys = np.asarray(list(ids), dtype=np.int64)
        cids = self._collection_ids(collection)
        if len(cids) > 1:  # each id is asked of the collection that holds it
            where = self._collections_of(keys.tolist())
            out = None
            for cid in cids:
                rows = [row for row, key in enumerate(keys.tolist()) if where.get(key) == cid]
                if rows:
                    part = self._vectors_of(keys[rows], cid)
                    if out is None:
                        out = np.zeros((len(keys), part.shape[1]), dtype=np.float32)
                    out[rows] = part
            return out if out is not None else np.zeros((len(keys), self.model_dim or 0), dtype=np.float32)
        if not cids:
            return np.zeros((len(keys), self.model_dim or 0), dtype=np.float32)
        return self._vectors_of(keys, cids[0])

    def _vectors_of(self, keys: np.ndarray, cid: int) -> np.ndarray:
        import numpy as np

        with self._lock:
            vec = self._load(cid)
            if vec.index is None:
                return np.zeros((len(keys), self.model_dim or 0), dtype=np.float32)
            self._flush_removals(vec)
            try:
                return vec.index.reconstruct_batch(keys)
            except RuntimeError:  # some id has no vector: fetch one by one, zeros for those
                out = np.zeros((len(keys), vec.index.d), dtype=np.float32)
                for row, key in enumerate(keys.tolist()):
                    try:
                        out[row] = vec.index.reconstruct(key)
                    except RuntimeError:
                        pass
                return out

    def keyword_search(self, query: str, collection: Names, k: int) -> list[tuple[int, float]]:
        """The k chunks that best match the words of `query` (BM25) in one collection or several, best first.

        Any text is accepted: quotes, FTS operators, emoji. The score is SQLite's bm25() as it comes: negative,
        and lower is better (the retriever negates it when it fuses scores).

        Cost is bounded: FTS5 scores every chunk that holds any query word, so in a large store common
        words make a query slow (COVID-QA questions at 100k chunks match 36k chunks at the median: 70 ms
        median, 139 ms p95 ranked with the join to documents, 36 / 87 ms in FTS5 alone). Words are taken
        rarest first while the chunks they match stay within MATCH_BUDGET; the commonest ones, which weigh
        least in BM25 anyway, are left out past it: 8.7 / 14.1 ms. On COVID-QA's 3,280 chunks this leaves
        recall unchanged (keyword recall@5 0.749 both ways); a budget of 20,000 gave 16 / 23 ms.
        """
        cids = self._collection_ids(collection)
        if not cids or k <= 0:
            return []
        conn = self.db.connect()
        match = fts_query(" ".join(self._affordable_words(conn, query)))
        if match is None:
            return []
        # Rank in FTS5 alone, then keep the collection's chunks: joining every match to its document
        # before ranking doubles the cost. Over-fetch by the collection's share of all chunks; in the
        # rare case that is not enough, rank with the join.
        sizes = dict(conn.execute("SELECT collection_id, SUM(chunk_count) FROM documents GROUP BY collection_id"))
        total, mine = sum(sizes.values()), sum(sizes.get(cid, 0) for cid in cids)
        if mine == 0:
            return []
        fetch = min(total, 2 * k * total // mine + k)
        wanted = ",".join(str(int(c)) for c in cids)
        if fetch <= FTS_FETCH_MAX:
            rows = conn.execute(
                "SELECT rowid, bm25(chunks_fts) AS score FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY score LIMIT ?",
                (match, fetch),
            ).fetchall()
            if set(sizes) <= set(cids):  # no other collection holds a chunk
                return [(int(r[0]), float(r[1])) for r in rows[:k]]
            where = self._collections_of([r[0] for r in rows])
            kept = [(int(r[0]), float(r[1])) for r in rows if where.get(r[0]) in cids]
            if len(kept) >= k or len(rows) < fetch:
                return kept[:k]
        rows = conn.execute(
            f"""SELECT c.id, bm25(chunks_fts) AS score
               FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid JOIN documents d ON d.id = c.document_id
               WHERE chunks_fts MATCH ? AND d.collection_id IN ({wanted})
               ORDER BY score LIMIT ?""",
            (match, k),
        ).fetchall()
        return [(int(r[0]), float(r[1])) for r in rows]

    @staticmethod
    def _affordable_words(conn: sqlite3.Connection, query: str) -> list[str]:
        """The query's words, rarest first, as many as keep the chunks matched within MATCH_BUDGET."""
        counted = []
        for word in dict.fromkeys(query.split()):
            match = fts_query(word)
            if match is not None:
                n = conn.execute("SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH ?", (match,)).fetchone()[0]
                counted.append((n, word))
        counted.sort()
        kept, matched = [], 0
        for n, word in counted:
            if kept and matched + n > MATCH_BUDGET:
                break
            kept.append(word)
            matched += n
        return kept

    def _collection_ids(self, collection: Names) -> list[int]:
        names = [collection] if isinstance(collection, str) else list(collection)
        return [cid for cid in (self.collection_id(name) for name in dict.fromkeys(names)) if cid is not None]

    def _collections_of(self, ids: Sequence[int]) -> dict[int, int]:
        """chunk id -> collection id, for those of these chunks that exist."""
        conn = self.db.connect()
        ids = [int(i) for i in ids]
        out: dict[int, int] = {}
        for start in range(0, len(ids), _SQL_BATCH):
            part = ids[start:start + _SQL_BATCH]
            out.update(conn.execute(
                f"""SELECT c.id, d.collection_id FROM chunks c JOIN documents d ON d.id = c.document_id
                    WHERE c.id IN ({",".join("?" * len(part))})""", part).fetchall())
        return out

    def chunks(self, ids: Sequence[int]) -> list[ChunkRecord]:
        """The chunks with these ids, in the order asked (ids that no longer exist are left out)."""
        found: dict[int, ChunkRecord] = {}
        conn = self.db.connect()
        ids = [int(i) for i in ids]
        for start in range(0, len(ids), _SQL_BATCH):
            part = ids[start:start + _SQL_BATCH]
            rows = conn.execute(
                f"""SELECT c.id, d.path, c.page, c.heading, c.text, c.ordinal, c.document_id, c.start, c."end"
                    FROM chunks c JOIN documents d ON d.id = c.document_id
                    WHERE c.id IN ({",".join("?" * len(part))})""",
                part,
            ).fetchall()
            for r in rows:
                found[r[0]] = ChunkRecord(*tuple(r))
        return [found[i] for i in ids if i in found]

    def neighbours(self, chunk_id: int, n: int = 1) -> list[ChunkRecord]:
        """The chunk and up to n chunks either side of it in its file, in reading order (sentence-window expansion)."""
        conn = self.db.connect()
        row = conn.execute("SELECT document_id, ordinal FROM chunks WHERE id = ?", (int(chunk_id),)).fetchone()
        if row is None:
            return []
        rows = conn.execute(
            """SELECT c.id, d.path, c.page, c.heading, c.text, c.ordinal, c.document_id, c.start, c."end"
               FROM chunks c JOIN documents d ON d.id = c.document_id
               WHERE c.document_id = ? AND c.ordinal BETWEEN ? AND ? ORDER BY c.ordinal""",
            (row[0], row[1] - max(n, 0), row[1] + max(n, 0)),
        ).fetchall()
        return [ChunkRecord(*tuple(r)) for r in rows]

    def document_chunks(self, path: str | Path, collections: Sequence[str] = ()) -> list[ChunkRecord]:
        """Every chunk of the file, in reading order (from the first of `collections` that holds it, or any)."""
        conn = self.db.connect()
        cids = self._collection_ids(collections) if collections else \
            [r[0] for r in conn.execute("SELECT collection_id FROM documents WHERE path = ? ORDER BY id", (str(path),))]
        for cid in cids:
            rows = conn.execute(
                """SELECT c.id, d.path, c.page, c.heading, c.text, c.ordinal, c.document_id, c.start, c."end"
                   FROM chunks c JOIN documents d ON d.id = c.document_id
                   WHERE d.collection_id = ? AND d.path = ? ORDER BY c.ordinal""",
                (cid, str(path)),
            ).fetchall()
            if rows:
                return [ChunkRecord(*tuple(r)) for r in rows]
        return []

    # ---------------------------------------------------------------- consistency

    def chunk_ids(self, collection: str) -> np.ndarray:
        """Every chunk id SQLite holds for the collection, sorted."""
        import numpy as np

        cid = self.collection_id(collection)
        if cid is None:
            return np.zeros(0, dtype=np.int64)
        return self._sql_ids(cid)

    def vector_ids(self, collection: str) -> np.ndarray:
        """Every id the collection's FAISS index holds now (after queued removals), sorted."""
        import numpy as np

        cid = self.collection_id(collection)
        if cid is None:
            return np.zeros(0, dtype=np.int64)
        with self._lock:
            vec = self._load(cid)
            self._flush_removals(vec)
            return np.sort(self._faiss_ids(vec.index))

    def missing_vectors(self, collection: str) -> int:
        """How many chunks have no vector yet (after a crash, before repair())."""
        cid = self.collection_id(collection)
        if cid is None:
            return 0
        with self._lock:
            return len(self._load(cid).missing)

    def repair(
        self, embedder: Embedder, collection: str | None = None, cancel: threading.Event | None = None,
    ) -> int:
        """Give every chunk a vector again: those committed after the last save, or all of them when the
        index was built by another model. Returns how many chunks were embedded."""
        import numpy as np

        self.model_name = embedder.name
        self.model_dim = embedder.dim
        try:
            self._take_writer_lock()
        except AssistantError:
            pass  # another process writes the index: repair this process's copy in memory, save nothing
        names = [collection] if collection is not None else [c.name for c in self.list_collections(hidden=True)]
        done = 0
        for name in names:
            cid = self.collection_id(name)
            if cid is None:
                continue
            with self._lock:
                vec = self._load(cid)
                stale = vec.index is not None and (vec.model != embedder.name or vec.index.d != embedder.dim)
                if stale or (vec.index is None and vec.missing):
                    vec.index = self._new_index(embedder.dim)
                    vec.model = embedder.name
                    vec.removals.clear()
                    vec.missing = set(self._sql_ids(cid).tolist())
                    vec.dirty = True
                todo = sorted(vec.missing)
            for start in range(0, len(todo), REPAIR_BATCH):
                if cancel is not None and cancel.is_set():
                    break
                part = todo[start:start + REPAIR_BATCH]
                rows = self.db.connect().execute(
                    f"SELECT id, text FROM chunks WHERE id IN ({','.join('?' * len(part))})", part
                ).fetchall()
                vectors = embedder.embed([r[1] for r in rows]) if rows else None
                with self._lock:
                    if vectors is not None:
                        self._add_vectors(cid, vec, vectors, np.asarray([r[0] for r in rows], dtype=np.int64))
                    vec.missing.difference_update(part)  # ids gone from SQLite meanwhile need nothing
                    self._maybe_save()
                done += len(rows)
        if done and self._writer_fd is not None:
            self.save()
        return done

    def save(self) -> None:
        """Write every changed FAISS index to disk now (atomically).

        Nothing to do for a store that never wrote: whatever it changed in memory (dropping stale vectors,
        repairing) follows from what is on disk, and the file belongs to the process that writes."""
        with self._lock:
            if self._writer_fd is None:
                return
            started = time.monotonic()
            for cid, vec in list(self._vectors.items()):
                self._flush_removals(vec)
                if vec.dirty and vec.index is not None:
                    self._write_index(cid, vec)
                    vec.dirty = False
            self._last_save = time.monotonic()
            self._save_cost = self._last_save - started

    def close(self) -> None:
        with self._lock:
            if self._writer_fd is not None:
                self.save()
                os.close(self._writer_fd)  # closing the descriptor releases the lock
                self._writer_fd = None
            self._vectors.clear()
            self.db.close()

    # ---------------------------------------------------------------- internals

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._take_writer_lock()
        conn = self.db.connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _upsert_document(self, conn: sqlite3.Connection, cid: int, path: str, **values: Any) -> int:
        cols = list(values)
        conn.execute(
            f"INSERT INTO documents(collection_id, path, {', '.join(cols)}) "
            f"VALUES (?, ?, {', '.join('?' * len(cols))}) "
            f"ON CONFLICT(collection_id, path) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in cols)}",
            (cid, path, *values.values()),
        )
        return int(conn.execute(
            "SELECT id FROM documents WHERE collection_id = ? AND path = ?", (cid, path)
        ).fetchone()[0])

    @staticmethod
    def _delete_chunks(conn: sqlite3.Connection, doc_id: int) -> list[int]:
        ids = [r[0] for r in conn.execute("SELECT id FROM chunks WHERE document_id = ?", (doc_id,))]
        if ids:
            conn.execute("DELETE FROM chunks WHERE document_id = ?", (doc_id,))
        return ids

    def _sql_ids(self, cid: int) -> np.ndarray:
        import numpy as np

        rows = self.db.connect().execute(
            "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id WHERE d.collection_id = ? ORDER BY c.id",
            (cid,),
        ).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    @staticmethod
    def _faiss_ids(index: Any) -> np.ndarray:
        import numpy as np

        if index is None or index.ntotal == 0:
            return np.zeros(0, dtype=np.int64)
        import faiss

        return faiss.vector_to_array(index.id_map).astype(np.int64, copy=False)

    @staticmethod
    def _new_index(dim: int) -> Any:
        import faiss

        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))

    def _index_path(self, cid: int) -> Path:
        return self.index_dir / f"c{cid}.faiss"

    def _load(self, cid: int) -> _Vectors:
        """The collection's vectors, read from disk on first use and reconciled with SQLite."""
        vec = self._vectors.get(cid)
        if vec is not None:
            # The writer's copy is the newest there is. A reader (another process writes) picks up the
            # writer's saves, at the cost of one stat() per search.
            if self._writer_fd is not None or vec.file_stamp == self._file_stamp(cid):
                return vec
        import numpy as np

        stamp = self._file_stamp(cid)
        index, model = self._read_index(cid)
        vec = _Vectors(index=index, model=model, file_stamp=stamp)
        faiss_ids = self._faiss_ids(index)
        conn = self.db.connect()
        own = not conn.in_transaction
        if own:
            conn.execute("BEGIN")  # one snapshot for both reads, whatever another process commits meanwhile
        try:
            row = conn.execute(
                "SELECT COUNT(c.id), MAX(c.id) FROM chunks c JOIN documents d ON d.id = c.document_id "
                "WHERE d.collection_id = ?",
                (cid,),
            ).fetchone()
            sql_count, sql_max = int(row[0]), row[1]
            file_max = int(faiss_ids.max()) if len(faiss_ids) else None
            if not (sql_count == len(faiss_ids) and sql_max == file_max):
                sql_ids = self._sql_ids(cid)
                extra = np.setdiff1d(faiss_ids, sql_ids, assume_unique=True)
                if len(extra):
                    index.remove_ids(extra)
                    vec.dirty = True
                vec.missing = set(np.setdiff1d(sql_ids, faiss_ids, assume_unique=True).tolist())
        finally:
            if own:
                conn.execute("COMMIT")
        self._vectors[cid] = vec
        return vec

    def _file_stamp(self, cid: int) -> tuple[int, int] | None:
        try:
            st = os.stat(self._index_path(cid))
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def _read_index(self, cid: int) -> tuple[Any | None, str | None]:
        path = self._index_path(cid)
        if not path.exists():
            return None, None
        import faiss

        try:
            with open(path, "rb") as handle:
                if handle.read(len(INDEX_MAGIC)) != INDEX_MAGIC:
                    raise ValueError("not an assistant vector index")
                header_len = int.from_bytes(handle.read(4), "little")
                header = json.loads(handle.read(header_len).decode("utf-8"))
                index = faiss.read_index(faiss.PyCallbackIOReader(handle.read))
            # read_index already returns the concrete class; downcast_index() would hand back a second
            # wrapper that does not own the index, which dangles once this one is collected.
            if not isinstance(index, faiss.IndexIDMap2):
                raise ValueError(f"unexpected index type {type(index).__name__}")
            return index, header.get("model")
        except Exception:
            # Renamed files are complete, so this means outside damage: never fatal. Every chunk becomes
            # missing and repair() re-embeds them from the text SQLite still has.
            return None, None

    def _write_index(self, cid: int, vec: _Vectors) -> None:
        import faiss

        self._take_writer_lock()
        path = self._index_path(cid)
        self.index_dir.mkdir(parents=True, exist_ok=True)
        header = json.dumps({"model": vec.model, "dim": vec.index.d, "ntotal": int(vec.index.ntotal)}).encode()
        fd, tmp = tempfile.mkstemp(dir=self.index_dir, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(INDEX_MAGIC + len(header).to_bytes(4, "little") + header)
                # Straight into the file through a callback: no second in-memory copy of a large index.
                writer = faiss.PyCallbackIOWriter(handle.write)
                faiss.write_index(vec.index, writer)
                del writer  # flushes faiss's buffer into the handle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(self.index_dir)
        vec.file_stamp = self._file_stamp(cid)
        self.saves += 1

    def _add_vectors(self, cid: int, vec: _Vectors, vectors: np.ndarray, ids: np.ndarray) -> None:
        if vec.index is None:
            vec.index = self._new_index(vectors.shape[1])
            vec.model = self.model_name
        elif vectors.shape[1] != vec.index.d:
            raise AssistantError("These vectors come from another embedding model than the collection's index.")
        vec.index.add_with_ids(vectors, ids)
        vec.dirty = True
        if vec.hnsw is not None:
            vec.hnsw.add_with_ids(vectors, ids)
        elif vec.hnsw_building:
            vec.hnsw_pending.extend(int(i) for i in ids)

    def _hnsw(self, cid: int, vec: _Vectors) -> Any | None:
        """The collection's HNSW graph when it is large enough and built; starts the build if needed."""
        if vec.index is None or vec.index.ntotal < HNSW_MIN_VECTORS:
            vec.hnsw = None
            return None
        if vec.hnsw is None and not vec.hnsw_building:
            vec.hnsw_building = True
            from assistant import background

            background.start(self._build_hnsw, cid, vec, name="hnsw-build")  # faiss's C++: joined at exit
        return vec.hnsw

    def _build_hnsw(self, cid: int, vec: _Vectors) -> None:
        import faiss
        import numpy as np

        try:
            with self._lock:
                self._flush_removals(vec)
                ids = self._faiss_ids(vec.index).copy()
                vectors = vec.index.index.reconstruct_n(0, vec.index.ntotal)  # a copy: the flat index moves on
                vec.hnsw_stale, vec.hnsw_pending = set(), []
            graph = faiss.IndexHNSWFlat(vectors.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
            graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            graph.hnsw.efSearch = HNSW_EF_SEARCH
            hnsw = faiss.IndexIDMap(graph)
            hnsw.add_with_ids(vectors, ids)  # the slow part, outside the lock: searches go to the flat index
            del vectors
            with self._lock:
                if self._vectors.get(cid) is not vec:
                    return  # the collection was reloaded or deleted meanwhile
                pending = [i for i in vec.hnsw_pending if i not in vec.hnsw_stale]
                if pending:
                    hnsw.add_with_ids(vec.index.reconstruct_batch(np.asarray(pending, dtype=np.int64)),
                                      np.asarray(pending, dtype=np.int64))
                vec.hnsw, vec.hnsw_pending = hnsw, []
        finally:
            vec.hnsw_building = False

    @staticmethod
    def _queue_removals(vec: _Vectors, ids: list[int]) -> None:
        # remove_ids on a flat index rewrites the whole array, so removals are applied in one go at
        # the next search or save instead of once per re-indexed file.
        if ids:
            vec.removals.extend(ids)
            vec.missing.difference_update(ids)
            vec.dirty = True

    @staticmethod
    def _flush_removals(vec: _Vectors) -> None:
        if vec.removals and vec.index is not None:
            import numpy as np

            vec.index.remove_ids(np.asarray(vec.removals, dtype=np.int64))
            if vec.hnsw is not None or vec.hnsw_building:
                vec.hnsw_stale.update(vec.removals)  # an HNSW graph cannot remove: its searches skip them
                if vec.hnsw is not None and len(vec.hnsw_stale) > HNSW_STALE_MAX * vec.hnsw.ntotal:
                    vec.hnsw, vec.hnsw_stale = None, set()  # rebuilt at the next search
        vec.removals.clear()

    def _maybe_save(self) -> None:
        if self._writer_fd is None:
            return  # a reader repairs in memory only; the file belongs to the writer
        elapsed = time.monotonic() - self._last_save
        if elapsed >= max(SAVE_EVERY_S, SAVE_COST_FACTOR * self._save_cost):
            self.save()

    def _take_writer_lock(self) -> None:
        """Become the one writer of this data folder's index, or say who is."""
        if self._writer_fd is not None:
            return
        with self._lock:
            if self._writer_fd is not None:
                return
            self.index_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.index_dir / ".writer.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                _lock_file(fd)
            except OSError:
                os.close(fd)
                raise AssistantError("Another assistant process is updating the document index. "
                                     "Wait for it to finish, then try again.") from None
            self._writer_fd = fd
            # What a reader cached may predate the last writer's save: read it again, now that nobody else writes.
            self._vectors.clear()
            self._clean_index_dir()

    def _clean_index_dir(self) -> None:
        # Only the writer may do this: temp files of a save cut short, and files of deleted collections.
        known = {r[0] for r in self.db.connect().execute("SELECT id FROM collections")}
        for item in self.index_dir.iterdir():
            if item.name.endswith(".tmp") and item.name.startswith("."):
                item.unlink(missing_ok=True)
            elif item.suffix == ".faiss" and item.stem[1:].isdigit() and int(item.stem[1:]) not in known:
                item.unlink(missing_ok=True)


def _lock_file(fd: int) -> None:
    if os.name == "nt":
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
