"""Index files and folders into a collection: incremental, resumable, and honest about every file.

1. Walk: every named path; folders recursively, following symlinks but never into a folder already
   visited ((st_dev, st_ino)), never into hidden folders. Inside folders, files of unsupported types
   are passed over silently (a photo folder is not an error) but counted; a file the user named
   directly is always reported.
2. Compare with the store: a file whose size and mtime match what was stored is unchanged without
   being read (as git does; a file modified within a second of being indexed is re-hashed next time);
   otherwise its SHA-256 decides. Files gone from a folder that was walked lose their chunks.
3. Work: new files are queued as 'pending' (one transaction), then each is hashed, loaded and chunked;
   chunks from many files are embedded together in large length-sorted batches (throughput close to one
   big encode call), and the files whose chunks are all embedded are committed together. Every file ends
   'indexed', 'skipped' (with the reason) or 'failed' (with the error); one bad file never stops the rest.

A kill -9 at any point loses at most the files not yet committed: they are still 'pending' (or carry
their old hash) and the next run does them, and only them. The store's repair() first gives a vector to
any chunk committed after its last index save.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import queue
import sqlite3
import stat as stat_mod
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from assistant import background
from assistant.errors import AssistantError

if TYPE_CHECKING:
    import numpy as np

    from assistant.rag.embedder import Embedder
    from assistant.rag.loaders import LoadedDocument
    from assistant.rag.store import DocumentStore, NewDocument

# Chunks gathered before embedding, sorted by length so each forward pass pads little. Measured on four R
# manuals (1,488 chunks, 2 cores) against one bare encode of them all: 256 -> 0.81 of its speed, 512 -> 0.85,
# 1024 -> 0.89, 2048 -> 0.88. Finished files are committed once per queue: about every 30 s here.
EMBED_QUEUE = 1024
ENCODE_BATCH = 64  # one forward pass; cancel is checked between them
PROGRESS_EVERY_S = 0.1
HASH_BLOCK = 1 << 20
CHUNK_GROUP_CHARS = 1 << 20  # sections chunked per call; Cancel is checked between calls
READ_AHEAD = 4  # files read and chunked ahead of the embedder


@dataclass(frozen=True)
class IndexProgress:
    files_done: int
    files_total: int
    chunks_done: int
    current_file: str | None
    rate_chunks_per_s: float
    eta_s: float | None  # None until there is enough to estimate from


@dataclass
class IndexReport:
    files_indexed: int = 0
    files_skipped: int = 0
    files_failed: list[tuple[str, str]] = field(default_factory=list)
    chunks_added: int = 0
    chunks_removed: int = 0
    seconds: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) for each skipped file
    files_unchanged: int = 0
    files_removed: int = 0  # gone from a folder that was indexed
    files_ignored: int = 0  # unsupported types, hidden files and duplicate links inside folders: not recorded
    chunks_repaired: int = 0  # re-embedded after a crash (see DocumentStore.repair)
    warnings: list[tuple[str, str]] = field(default_factory=list)  # indexed, with a caveat (text cut short...)
    cancelled: bool = False

    def as_dict(self) -> dict:
        """The figures the CLI prints as JSON."""
        return {
            "files_indexed": self.files_indexed,
            "files_skipped": self.files_skipped,
            "files_failed": [{"path": path, "error": error} for path, error in self.files_failed],
            "chunks_added": self.chunks_added,
            "chunks_removed": self.chunks_removed,
            "seconds": round(self.seconds, 3),
            # Beyond the summary: what re-index and folder watching report.
            "files_removed": self.files_removed,
            "files_unchanged": self.files_unchanged,
        }


@dataclass
class _File:
    path: str
    size: int
    mtime: float


@dataclass
class _Job:
    """A file whose chunks are being embedded."""

    file: _File
    content_hash: str
    pages: int | None
    chunks: list
    vectors: np.ndarray
    waiting: int  # chunks without a vector yet
    note: str | None = None  # the loader's warnings, kept as the document's reason


@dataclass
class _Walk:
    files: list[_File] = field(default_factory=list)
    roots: list[str] = field(default_factory=list)  # folders walked completely: deletions under them are real
    unreadable: list[str] = field(default_factory=list)  # folders that could not be listed: keep what they had
    missing: list[str] = field(default_factory=list)  # named paths that do not exist
    ignored: int = 0


class _Cancelled(Exception):
    pass


def index_paths(
    store: DocumentStore,
    embedder: Embedder,
    paths: Iterable[str | Path],
    collection: str = "default",
    progress: Callable[[IndexProgress], None] | None = None,
    cancel: threading.Event | None = None,
    batch_chunks: int = EMBED_QUEUE,
    pause: threading.Event | None = None,
    retry_failed: bool = True,
) -> IndexReport:
    """Bring `collection` up to date with `paths` (files and folders); see the module docstring.

    `batch_chunks` chunks are embedded (and their finished files committed) at a time: larger is a
    little faster, smaller loses less to a crash and commits more often. While `pause` is set, work
    waits between batches (the app sets it while it writes an answer, so chat keeps its speed).
    retry_failed=False leaves files that failed alone until their size or mtime changes (folder watching:
    a damaged PDF is not re-read, and re-reported, every few seconds).
    """
    indexer = _Indexer(store, embedder, collection, progress, cancel, max(1, batch_chunks))
    indexer.pause = pause or threading.Event()
    indexer.retry_failed = retry_failed
    return indexer.run([Path(p) for p in paths])


class _Indexer:
    def __init__(
        self, store: DocumentStore, embedder: Embedder, collection: str,
        progress: Callable[[IndexProgress], None] | None, cancel: threading.Event | None, batch_chunks: int,
    ) -> None:
        self.store = store
        self.batch_chunks = batch_chunks
        self.embedder = embedder
        self.collection = collection
        self.progress = progress
        self.cancel = cancel or threading.Event()
        self.pause = threading.Event()
        self.excluded: set[str] = set()
        self.retry_failed = True
        self.report = IndexReport()
        self.queue: deque[tuple[_Job, int]] = deque()  # (job, chunk ordinal) waiting to be embedded
        self.ready: list[_Job] = []  # fully embedded, to be committed together
        self.touched: list[tuple[str, int, float]] = []  # unchanged content, new stat: saved with the next commit
        self.files_total = 0
        self.files_done = 0
        self.bytes_total = 0
        self.bytes_done = 0
        self.chunks_done = 0
        self.current: str | None = None
        self.started = time.monotonic()
        self.last_progress = 0.0

    def run(self, paths: list[Path]) -> IndexReport:
        started = time.monotonic()
        try:
            try:
                self.store.create_collection(self.collection)
                self.report.chunks_repaired = self.store.repair(self.embedder, self.collection, self.cancel)
                named = [os.path.abspath(os.path.expanduser(str(p))) for p in paths]
                self.store.add_roots(self.collection, [p for p in named if os.path.lexists(p)])
                self.excluded = set(self.store.exclusions(self.collection))
                walk = self._walk(paths)
                self.store.remove_roots(self.collection, walk.missing)  # deleted: nothing left to watch
                self.report.files_ignored = walk.ignored
                work = self._plan(walk)
                self._process(work)
            except _Cancelled:
                self.report.cancelled = True
                self._commit()  # files whose every chunk is already embedded are kept, not thrown away
            finally:
                # Whatever happened, what was committed gets its vectors on disk before we return.
                self.store.save()
                self.report.seconds = time.monotonic() - started
        except (sqlite3.Error, OSError) as exc:
            # Disk full, database locked too long...: what was committed stays consistent (see store.py).
            raise AssistantError(f"The document index could not be updated: {exc}. "
                                 "What was indexed before this is kept; index again once this is fixed.") from exc
        self._emit(force=True)
        return self.report

    # ------------------------------------------------------------------ walk

    def _walk(self, paths: list[Path]) -> _Walk:
        walk = _Walk()
        seen_files: set[tuple[int, int]] = set()
        seen_dirs: set[tuple[int, int]] = set()
        for raw in paths:
            path = os.path.abspath(os.path.expanduser(str(raw)))
            try:
                st = os.stat(path)
            except FileNotFoundError:
                walk.missing.append(path)
                continue
            except OSError as exc:
                self.report.files_failed.append((path, f"could not be read: {exc.strerror or exc}"))
                continue
            if stat_mod.S_ISDIR(st.st_mode):
                walk.roots.append(path)
                self._walk_dir(path, st, walk, seen_dirs, seen_files)
            elif stat_mod.S_ISREG(st.st_mode):
                if (st.st_dev, st.st_ino) not in seen_files:
                    seen_files.add((st.st_dev, st.st_ino))
                    walk.files.append(_File(path, st.st_size, st.st_mtime))
            else:
                self.report.files_failed.append((path, "not a regular file or folder"))
        return walk

    def _walk_dir(
        self, root: str, root_stat: os.stat_result, walk: _Walk, seen_dirs: set[tuple[int, int]],
        seen_files: set[tuple[int, int]],
    ) -> None:
        if (root_stat.st_dev, root_stat.st_ino) in seen_dirs:
            return
        seen_dirs.add((root_stat.st_dev, root_stat.st_ino))
        stack = [root]
        # Symlinks are followed only once every real folder has been walked, so a file reachable both
        # directly and through a link is recorded under its real path, whatever the names sort like.
        linked_dirs: list[tuple[str, tuple[int, int]]] = []
        linked_files: list[tuple[str, os.stat_result]] = []
        while stack or linked_files or linked_dirs:
            self._check_cancel()
            if not stack:
                for path, st in linked_files:
                    self._add_file(path, st, walk, seen_files)
                linked_files.clear()
                path, key = linked_dirs.pop(0)
                if key not in seen_dirs:  # else a loop, or a folder already walked by its real path
                    seen_dirs.add(key)
                    stack.append(path)
                continue
            folder = stack.pop()
            try:
                with os.scandir(folder) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                walk.unreadable.append(folder)
                self.report.files_failed.append((folder, f"folder could not be read: {exc.strerror or exc}"))
                continue
            subdirs = []
            for entry in entries:
                if entry.name.startswith("."):
                    walk.ignored += 1  # hidden: .git, .venv, .DS_Store...
                    continue
                if entry.path in self.excluded:
                    continue  # the user removed it from this folder
                try:
                    st = entry.stat()  # follows symlinks
                    link = entry.is_symlink()
                except OSError:
                    walk.ignored += 1  # a broken link is not a document
                    continue
                if stat_mod.S_ISDIR(st.st_mode):
                    key = (st.st_dev, st.st_ino)
                    if link:
                        linked_dirs.append((entry.path, key))
                    elif key not in seen_dirs:
                        seen_dirs.add(key)
                        subdirs.append(entry.path)
                elif stat_mod.S_ISREG(st.st_mode):
                    if not _supported(entry.name):
                        walk.ignored += 1
                    elif link:
                        linked_files.append((entry.path, st))
                    else:
                        self._add_file(entry.path, st, walk, seen_files)
                else:
                    walk.ignored += 1
            stack.extend(reversed(subdirs))  # depth first, in name order
        for path, st in linked_files:
            self._add_file(path, st, walk, seen_files)

    @staticmethod
    def _add_file(path: str, st: os.stat_result, walk: _Walk, seen_files: set[tuple[int, int]]) -> None:
        key = (st.st_dev, st.st_ino)
        if key in seen_files:
            walk.ignored += 1  # the same file through another link (or a hard link): index it once
            return
        seen_files.add(key)
        walk.files.append(_File(path, st.st_size, st.st_mtime))

    # ------------------------------------------------------------------ plan

    def _plan(self, walk: _Walk) -> list[tuple[_File, str | None]]:
        """Which files need work (with the hash stored for them, if any); removes files that are gone."""
        known = {d.path: d for d in self.store.documents(self.collection)}
        work: list[tuple[_File, str | None]] = []
        new: list[str] = []
        for file in walk.files:
            doc = known.get(file.path)
            if doc is None:
                new.append(file.path)
                work.append((file, None))
                continue
            settled = doc.status in ("indexed", "skipped") or (doc.status == "failed" and not self.retry_failed)
            if (settled and doc.size == file.size and doc.mtime == file.mtime
                    and doc.indexed_at is not None and file.mtime < doc.indexed_at - 1.0):
                self.report.files_unchanged += 1
                continue
            work.append((file, doc.content_hash if settled else None))
        gone = self._gone(walk, known)
        if gone:
            self.report.chunks_removed += self.store.remove_documents(self.collection, gone)
            self.report.files_removed += len(gone)
        if new:
            # Queued in one transaction: the Documents panel shows them at once, and a crash leaves them 'pending'.
            self.store.mark_many(self.collection, [(path, "pending", None) for path in new])
        self.files_total = len(work)
        self.bytes_total = sum(f.size for f, _ in work)
        return work

    def _gone(self, walk: _Walk, known: dict) -> list[str]:
        present = {f.path for f in walk.files}
        gone = [p for p in walk.missing if p in known]
        for path in walk.missing:
            if path not in known:
                prefix = path + os.sep
                under = [p for p in known if p.startswith(prefix)]
                if under:
                    gone.extend(under)  # a whole indexed folder was deleted
                else:
                    self.report.files_failed.append((path, "no such file or folder"))
        for root in walk.roots:
            prefix = root.rstrip(os.sep) + os.sep
            for path in known:
                if path in present or not path.startswith(prefix):
                    continue
                if any(path.startswith(u.rstrip(os.sep) + os.sep) for u in walk.unreadable):
                    continue  # could not look: keep it
                rel = path[len(prefix):].split(os.sep)
                if any(part.startswith(".") for part in rel):
                    continue  # the walk never looks there; it was named directly once, leave it
                if not _supported(os.path.basename(path)):
                    continue  # likewise: an unsupported file named directly
                gone.append(path)
        return sorted(set(gone))

    # ------------------------------------------------------------------ work

    def _process(self, work: list[tuple[_File, str | None]]) -> None:
        """Embed and commit while a reader thread hashes, loads and chunks the next files.

        Reading a PDF is pure Python; the embedder spends its time in torch kernels that let go of the GIL,
        so the two overlap (measured on 800 R-manual chunks, 2 cores: 37.6 s one after the other, 32.8 s
        together). At most READ_AHEAD files wait, read, for the embedder: memory stays bounded.
        """
        self.started = time.monotonic()
        outcomes: queue.Queue = queue.Queue(maxsize=READ_AHEAD)
        stop_reader = threading.Event()

        def read() -> None:
            try:
                for file, stored_hash in work:
                    if stop_reader.is_set():
                        return
                    outcome = self._read(file, stored_hash)
                    while not stop_reader.is_set():
                        try:
                            outcomes.put(outcome, timeout=0.1)
                            break
                        except queue.Full:
                            continue
            except _Cancelled:
                # No end marker: the consumer must not take a cancelled read for the end of the work (it
                # would finish "normally"); it sees the cancel itself at its next check, within 0.2 s.
                return
            except BaseException as exc:  # reported by the consumer, which owns the report
                outcomes.put(("crash", None, exc))
                return
            outcomes.put(None)

        reader = background.start(read, name="index-reader", on_exit=stop_reader.set)
        try:
            while True:
                outcome = self._next_read(outcomes)
                if outcome is None:
                    break
                kind, file, payload = outcome
                if kind == "crash":
                    raise payload
                self.current = file.path
                self._emit()
                if kind == "touch":
                    # Same content, new mtime (touched, copied back): nothing to embed. Recorded in batches.
                    self.touched.append((file.path, file.size, file.mtime))
                    self.report.files_unchanged += 1
                    self._file_done(file)
                elif kind == "fail":
                    self._fail(file, payload)
                elif kind == "skip":
                    self._skip(file, *payload)
                else:
                    if payload.note:
                        self.report.warnings.append((file.path, payload.note))
                    self._enqueue(payload)
                    while len(self.queue) >= self.batch_chunks:
                        self._embed(self.batch_chunks)
            while self.queue:
                self._embed(self.batch_chunks)
            self._commit()
        finally:
            stop_reader.set()
            while reader.is_alive():  # let a reader blocked on a full queue see the stop
                try:
                    outcomes.get(timeout=0.1)
                except queue.Empty:
                    pass
            reader.join()

    def _next_read(self, outcomes: queue.Queue):
        """The reader's next outcome. While it is busy (a large file), embed and commit what is queued."""
        while True:
            self._check_cancel()
            try:
                return outcomes.get(timeout=0.05 if self.queue else 0.2)
            except queue.Empty:
                if self.queue:
                    self._embed(min(len(self.queue), ENCODE_BATCH))

    def _read(self, file: _File, stored_hash: str | None) -> tuple[str, _File, object]:
        """Hash, load and chunk one file (on the reader thread): ("touch" | "fail" | "skip" | "job", file, payload)."""
        from assistant.rag.chunker import chunk_document
        from assistant.rag.loaders import SkippedFile, load_document

        self._check_cancel()
        try:
            content_hash = _sha256(file.path)
        except OSError as exc:
            return "fail", file, f"could not be read: {exc.strerror or exc}"
        if stored_hash is not None and content_hash == stored_hash:
            return "touch", file, None
        try:
            doc = load_document(Path(file.path))
            chunks = self._chunk(doc, chunk_document)
        except _Cancelled:
            raise
        except SkippedFile as exc:
            return "skip", file, (str(exc), content_hash)
        except AssistantError as exc:  # LoadFailed and anything else meant for the user
            return "fail", file, str(exc)
        except MemoryError:
            return "fail", file, "too large to read into memory"
        except Exception as exc:  # a loader bug on one file must not stop the others
            return "fail", file, f"could not be read ({type(exc).__name__}: {exc})"
        if not chunks:
            return "skip", file, ("no text to index", content_hash)
        note = "; ".join(getattr(doc, "warnings", ())) or None
        return "job", file, _Job(file, content_hash, doc.pages, chunks, self._vector_buffer(len(chunks)), len(chunks), note)

    def _chunk(self, doc: LoadedDocument, chunk_document: Callable) -> list:
        """The document's chunks, cut a megabyte of sections at a time (chunks never cross a section, so
        this is the same as one call) so that Cancel is heard within a second even in a 50 MB file."""
        chunks: list = []
        group: list = []
        chars = 0
        for section in [*doc.sections, None]:
            if section is not None:
                group.append(section)
                chars += len(section.text)
            if group and (section is None or chars >= CHUNK_GROUP_CHARS):
                self._check_cancel()
                part = dataclasses.replace(doc, sections=group)
                chunks.extend(chunk_document(part, self.embedder.count_tokens, size=self.embedder.chunk_tokens))
                group, chars = [], 0
                self._emit()
        return chunks

    def _vector_buffer(self, n: int) -> np.ndarray:
        import numpy as np

        return np.empty((n, self.embedder.dim), dtype=np.float32)

    def _enqueue(self, job: _Job) -> None:
        self.queue.extend((job, i) for i in range(len(job.chunks)))

    def _embed(self, limit: int) -> None:
        """Embed up to `limit` queued chunks, longest first so each forward pass pads little."""
        take = [self.queue.popleft() for _ in range(min(limit, len(self.queue)))]
        take.sort(key=lambda item: len(item[0].chunks[item[1]].text), reverse=True)
        for start in range(0, len(take), ENCODE_BATCH):
            # Checked between forward passes: a cancel waits at most one batch, and drops only uncommitted files.
            self._check_cancel()
            part = take[start:start + ENCODE_BATCH]
            vectors = self.embedder.embed([job.chunks[i].text for job, i in part], batch_size=ENCODE_BATCH)
            for (job, i), vector in zip(part, vectors, strict=True):
                job.vectors[i] = vector
                job.waiting -= 1
                if job.waiting == 0:
                    self.ready.append(job)
            self.chunks_done += len(part)
            self._emit()
        self._commit()

    def _commit(self) -> None:
        """Store every file whose chunks are all embedded: one transaction for the lot."""
        from assistant.rag.store import NewDocument

        if self.touched:
            self.store.touch(self.collection, self.touched)
            self.touched = []
        if not self.ready:
            return
        docs: list[NewDocument] = [
            NewDocument(job.file.path, job.content_hash, job.file.size, job.file.mtime, job.pages, job.chunks, job.vectors,
                        job.note)
            for job in self.ready
        ]
        self.report.chunks_removed += self.store.add_documents(self.collection, docs)
        for job in self.ready:
            self.report.files_indexed += 1
            self.report.chunks_added += len(job.chunks)
            self._file_done(job.file)
        self.ready = []

    def _skip(self, file: _File, reason: str, content_hash: str | None = None) -> None:
        self.report.chunks_removed += self.store.mark(
            self.collection, file.path, "skipped", reason, content_hash=content_hash, size=file.size, mtime=file.mtime
        )
        self.report.files_skipped += 1
        self.report.skipped.append((file.path, reason))
        self._file_done(file)

    def _fail(self, file: _File, error: str) -> None:
        # No hash is kept for a failure, so the next run tries again (the cause may be gone: a lock, a permission).
        self.report.chunks_removed += self.store.mark(
            self.collection, file.path, "failed", error, size=file.size, mtime=file.mtime
        )
        self.report.files_failed.append((file.path, error))
        self._file_done(file)

    def _file_done(self, file: _File) -> None:
        self.files_done += 1
        self.bytes_done += file.size

    def _check_cancel(self) -> None:
        while self.pause.is_set() and not self.cancel.is_set():
            time.sleep(0.05)
        if self.cancel.is_set():
            raise _Cancelled

    def _emit(self, force: bool = False) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if not force and now - self.last_progress < PROGRESS_EVERY_S:
            return
        self.last_progress = now
        elapsed = max(now - self.started, 1e-9)
        eta = None
        # Estimated from bytes, not files: one large file can take as long as thousands of small ones.
        if self.bytes_done > 0 and elapsed > 0.5:
            eta = elapsed * (self.bytes_total - self.bytes_done) / self.bytes_done
        self.progress(IndexProgress(
            files_done=self.files_done, files_total=self.files_total, chunks_done=self.chunks_done,
            current_file=self.current, rate_chunks_per_s=self.chunks_done / elapsed, eta_s=eta,
        ))


def _supported(name: str) -> bool:
    """Whether the loaders read a file of this name (suffix, or a known name such as README)."""
    from assistant.rag import loaders

    check = getattr(loaders, "is_supported", None)
    if check is not None:
        return bool(check(Path(name)))
    return os.path.splitext(name)[1].lower() in loaders.SUPPORTED_SUFFIXES


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()
