"""index_paths on real files with the real embedder, FAISS and SQLite: reasons, increments, kill -9, scale."""

from __future__ import annotations

import functools
import os
import random
import resource
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from assistant.config import db_path
from assistant.rag.embedder import Embedder
from assistant.rag.indexer import IndexProgress, index_paths
from assistant.rag.store import DocumentStore

ROOT = Path(__file__).resolve().parent.parent
WORDS = (
    "river mountain window garden letter market evening winter summer bridge station harbour forest village "
    "teacher doctor engine kitchen library museum castle island valley desert ocean meadow orchard painter "
    "walks reads builds carries opens closes watches finds keeps leaves brings shows hears writes remembers "
    "quietly slowly often never always again early late together alone near beyond under above across"
).split()


@functools.cache
def shared_embedder() -> Embedder:
    return Embedder()


@pytest.fixture
def embedder() -> Embedder:
    return shared_embedder()


@pytest.fixture
def store(isolated_home: Path):
    s = DocumentStore(isolated_home)
    yield s
    s.close()


def prose(seed: int, sentences: int) -> str:
    rng = random.Random(seed)
    return " ".join(
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))).capitalize() + "." for _ in range(sentences)
    )


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def assert_consistent(store: DocumentStore, collection: str = "default") -> None:
    """Every chunk id is in both SQLite and FAISS, and nothing else is."""
    assert store.missing_vectors(collection) == 0
    assert np.array_equal(store.chunk_ids(collection), store.vector_ids(collection))


def statuses(store: DocumentStore, collection: str = "default") -> dict[str, int]:
    out: dict[str, int] = {}
    for doc in store.documents(collection):
        out[doc.status] = out.get(doc.status, 0) + 1
    return out


def test_every_file_ends_indexed_skipped_or_failed_with_a_reason(
    tmp_path: Path, store: DocumentStore, embedder: Embedder
) -> None:
    docs = tmp_path / "docs"
    write(docs / "glaciers.md", "# Ice\n\nGlaciers carve valleys slowly over thousands of years.\n\n" + prose(1, 30))
    write(docs / "notes.txt", "The quartermaster ordered seventeen barrels of saltpetre. " + prose(2, 10))
    write(docs / "deep" / "er" / "budget.txt", "The budget for the bridge repair is four million euros.")
    write(docs / "empty.txt", "")
    write(docs / "blob.txt", b"\x00\x01\x02binary\x00data" * 50)
    write(docs / "broken.pdf", b"this is not a pdf at all")
    write(docs / "photo.png", b"\x89PNG\r\n\x1a\n....")  # inside a folder: passed over silently, counted
    write(docs / ".git" / "notes.txt", "hidden folders are never walked")
    write(docs / ".secret.txt", "hidden files neither")
    tool = write(tmp_path / "tool.exe", b"MZ\x90\x00")  # named directly: reported
    missing = tmp_path / "gone.txt"

    seen: list[IndexProgress] = []
    report = index_paths(store, embedder, [docs, tool, missing], progress=seen.append)

    assert report.files_indexed == 3
    assert sorted((Path(p).name, r) for p, r in report.skipped) == [
        ("blob.txt", "binary file"), ("empty.txt", "empty file"), ("tool.exe", "unsupported type .exe"),
    ]
    assert report.files_skipped == 3
    failed = {Path(p).name: e for p, e in report.files_failed}
    assert set(failed) == {"broken.pdf", "gone.txt"}
    assert "broken.pdf" in failed["broken.pdf"] and failed["gone.txt"] == "no such file or folder"
    assert report.files_ignored == 3  # photo.png, .git, .secret.txt
    assert report.chunks_added == sum(d.chunk_count for d in store.documents("default")) > 3

    data = report.as_dict()
    assert list(data) == ["files_indexed", "files_skipped", "files_failed", "chunks_added", "chunks_removed", "seconds",
                          "files_removed", "files_unchanged"]
    assert {"path": str(docs / "broken.pdf"), "error": failed["broken.pdf"]} in data["files_failed"]

    panel = {Path(d.path).name: (d.status, d.reason) for d in store.documents("default")}
    assert panel["glaciers.md"] == ("indexed", None) and panel["budget.txt"] == ("indexed", None)
    assert panel["blob.txt"] == ("skipped", "binary file") and panel["broken.pdf"][0] == "failed"
    assert "photo.png" not in panel and not any("hidden" in name or name.startswith(".") for name in panel)

    hit = store.chunks([store.keyword_search("saltpetre", "default", 1)[0][0]])[0]
    assert Path(hit.file).name == "notes.txt"
    query = embedder.embed(["How much will fixing the bridge cost?"])[0]
    assert Path(store.chunks([store.dense_search(query, "default", 1)[0][0]])[0].file).name == "budget.txt"
    md = [c for c in store.chunks(store.chunk_ids("default").tolist()) if c.file.endswith("glaciers.md")]
    assert md[0].heading == "Ice"

    assert seen and seen[-1].files_done == seen[-1].files_total == 7  # the seven files that needed reading
    assert seen[-1].chunks_done == report.chunks_added
    assert_consistent(store)


def test_reindexing_touches_only_what_changed(tmp_path: Path, store: DocumentStore, embedder: Embedder) -> None:
    docs = tmp_path / "docs"
    for i in range(20):
        write(docs / f"note{i:02d}.txt", f"Note {i} mentions marker{i}. " + prose(i, 12))
    first = index_paths(store, embedder, [docs])
    assert first.files_indexed == 20

    calls, texts = embedder.calls, embedder.texts_embedded
    again = index_paths(store, embedder, [docs])
    assert (embedder.calls, embedder.texts_embedded) == (calls, texts)  # nothing embedded at all
    assert again.files_unchanged == 20 and again.files_indexed == 0 and again.chunks_added == 0

    old_chunks = store.document("default", docs / "note03.txt").chunk_count
    gone_chunks = store.document("default", docs / "note07.txt").chunk_count
    write(docs / "note03.txt", "Rewritten: the note now talks about zeppelins and airships. " + prose(99, 5))
    (docs / "note07.txt").unlink()
    write(docs / "new.txt", "A brand new file about lighthouses and foghorns.")
    later = time.time() + 5
    os.utime(docs / "note11.txt", (later, later))  # touched, content the same: hashed, not embedded

    texts = embedder.texts_embedded
    third = index_paths(store, embedder, [docs])
    assert third.files_indexed == 2 and third.files_removed == 1
    assert third.chunks_removed == old_chunks + gone_chunks
    assert embedder.texts_embedded - texts == third.chunks_added  # only the changed and the new file
    assert store.document("default", docs / "note07.txt") is None
    assert store.keyword_search("marker3", "default", 5) == []  # the old version's chunks are gone
    assert store.keyword_search("marker7", "default", 5) == []
    assert len(store.keyword_search("zeppelins", "default", 5)) == 1
    assert store.document("default", docs / "note11.txt").mtime == later
    assert statuses(store) == {"indexed": 20}
    assert_consistent(store)

    fourth = index_paths(store, embedder, [docs])
    assert fourth.files_unchanged == 20 and fourth.files_indexed == 0

    # Deleting the whole folder removes everything it held.
    for item in docs.iterdir():
        item.unlink()
    docs.rmdir()
    fifth = index_paths(store, embedder, [docs])
    assert fifth.files_removed == 20 and fifth.files_failed == [] and store.documents("default") == []
    assert_consistent(store)


def test_symlink_loops_end_and_each_file_is_indexed_once(
    tmp_path: Path, store: DocumentStore, embedder: Embedder
) -> None:
    docs = tmp_path / "docs"
    write(docs / "a.txt", "Alpha file about comets.")
    write(docs / "sub" / "b.txt", "Bravo file about asteroids.")
    (docs / "sub" / "up").symlink_to(docs, target_is_directory=True)  # sub/up -> docs: a loop
    (docs / "self").symlink_to(docs / "sub", target_is_directory=True)  # a second way into sub
    (docs / "a-again.txt").symlink_to(docs / "a.txt")  # the same file twice
    (docs / "dangling.txt").symlink_to(tmp_path / "nowhere.txt")
    report = index_paths(store, embedder, [docs])
    assert report.files_indexed == 2 and report.files_failed == []
    assert sorted(Path(d.path).name for d in store.documents("default")) == ["a.txt", "b.txt"]
    assert_consistent(store)


def test_cancel_leaves_a_consistent_store_and_the_next_run_finishes(
    tmp_path: Path, store: DocumentStore, embedder: Embedder
) -> None:
    docs = tmp_path / "docs"
    for i in range(60):
        write(docs / f"f{i:02d}.txt", prose(1000 + i, 8))
    cancel = threading.Event()

    def on_progress(p: IndexProgress) -> None:
        if p.files_done >= 10:
            cancel.set()

    started = time.monotonic()
    first = index_paths(store, embedder, [docs], progress=on_progress, cancel=cancel, batch_chunks=8)
    assert first.cancelled and 10 <= first.files_indexed < 60
    assert time.monotonic() - started < 30
    assert statuses(store) == {"indexed": first.files_indexed, "pending": 60 - first.files_indexed}
    assert_consistent(store)
    reopened = DocumentStore(store.home)  # what is on disk agrees too: the index was saved on cancel
    assert np.array_equal(reopened.vector_ids("default"), store.chunk_ids("default"))
    reopened.close()

    texts = embedder.texts_embedded
    second = index_paths(store, embedder, [docs])
    assert not second.cancelled and second.files_indexed == 60 - first.files_indexed
    assert second.chunks_repaired == 0 and embedder.texts_embedded - texts == second.chunks_added
    assert statuses(store) == {"indexed": 60}
    assert_consistent(store)


KILL_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from assistant.rag.embedder import Embedder
    from assistant.rag.indexer import index_paths
    from assistant.rag.store import DocumentStore
    store, embedder = DocumentStore(), Embedder()
    print("loaded", flush=True)
    index_paths(store, embedder, [Path(sys.argv[1])], batch_chunks=8)
    print("finished", flush=True)
""")


def test_kill_9_while_indexing_then_only_the_rest_is_redone(isolated_home: Path, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    for i in range(300):
        write(docs / f"doc{i:03d}.txt", f"Document {i} has the tag kw{i:03d}. " + prose(i, 6))
    env = {**os.environ, "ASSISTANT_HOME": str(isolated_home), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(docs)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "loaded", proc.stderr.read()
        deadline = time.monotonic() + 120
        done = 0
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                conn = sqlite3.connect(f"file:{db_path(isolated_home)}?mode=ro", uri=True, timeout=5)
                done = conn.execute("SELECT COUNT(*) FROM documents WHERE status = 'indexed'").fetchone()[0]
                conn.close()
            except sqlite3.OperationalError:
                done = 0  # the schema is not there yet
            if done >= 40:
                break
            time.sleep(0.005)
        assert proc.poll() is None, f"indexing finished before it could be killed ({done} files)"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    embedder = shared_embedder()
    store = DocumentStore(isolated_home)
    try:
        killed_at = statuses(store)
        indexed = killed_at.get("indexed", 0)
        assert 40 <= indexed < 300 and killed_at.get("pending", 0) == 300 - indexed  # the rest was queued
        # Whatever the last save caught, what FAISS has is a subset of SQLite and the rest is known missing.
        assert set(store.vector_ids("default").tolist()) <= set(store.chunk_ids("default").tolist())
        missing = store.missing_vectors("default")
        assert len(store.vector_ids("default")) + missing == len(store.chunk_ids("default"))

        texts = embedder.texts_embedded
        report = index_paths(store, embedder, [docs])
        assert report.files_indexed == 300 - indexed  # only what the killed run had not committed
        assert report.files_unchanged == indexed
        assert report.chunks_repaired == missing
        assert embedder.texts_embedded - texts == report.chunks_added + missing
        assert statuses(store) == {"indexed": 300}
        assert_consistent(store)
        for i in (0, 150, 299):
            hit = store.keyword_search(f"kw{i:03d}", "default", 1)
            assert hit and store.chunks([hit[0][0]])[0].file.endswith(f"doc{i:03d}.txt")
    finally:
        store.close()


class TimedEmbedder:
    """The real embedder, with the time spent embedding added up (to tell the indexer's own cost apart)."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.seconds = 0.0

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        started = time.perf_counter()
        try:
            return self.inner.embed(texts, batch_size=batch_size)
        finally:
            self.seconds += time.perf_counter() - started


# 10,000 files take about 20 s on an idle 2-core machine, nearly all of it embedding, but 100-150 s while
# another test run shares the cores; ASSISTANT_TEST_MANY_FILES=2000 shortens it there.
MANY_FILES = int(os.environ.get("ASSISTANT_TEST_MANY_FILES", "10000"))


def test_many_tiny_files(tmp_path: Path, store: DocumentStore, embedder: Embedder) -> None:
    docs = tmp_path / "many"
    assert MANY_FILES % 100 == 0 and MANY_FILES >= 500
    for d in range(MANY_FILES // 100):
        folder = docs / f"d{d:03d}"
        folder.mkdir(parents=True)
        for f in range(100):
            n = d * 100 + f
            (folder / f"n{f:02d}.txt").write_text(f"note {n}: tiny{n:05d}", encoding="utf-8")
    timed = TimedEmbedder(embedder)
    embedder.embed(["warm up"] * 64)  # torch's first-batch allocations are the model's, not the indexer's
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, peak so far
    started = time.perf_counter()
    report = index_paths(store, timed, [docs])
    seconds = time.perf_counter() - started
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    overhead = seconds - timed.seconds
    print(f"\n{MANY_FILES:,} tiny files: {seconds:.1f} s ({timed.seconds:.1f} s embedding, {overhead:.1f} s everything else: "
          f"{overhead / MANY_FILES * 1000:.2f} ms a file), {report.chunks_added / seconds:.0f} chunks/s, peak RSS grew {grown_mib:.0f} MiB")
    assert report.files_indexed == MANY_FILES and report.files_failed == [] and report.chunks_added == MANY_FILES
    # Embedding time depends on the machine (and whatever else it runs); the indexer's own share must stay small.
    assert overhead < MANY_FILES * 0.003  # 3 ms a file; measured 0.5-0.6 ms
    assert grown_mib < 300
    assert_consistent(store)
    hit = store.keyword_search("tiny00442", "default", 1)
    assert store.chunks([hit[0][0]])[0].file.endswith(os.path.join("d004", "n42.txt"))

    started = time.perf_counter()
    again = index_paths(store, timed, [docs])
    assert again.files_indexed == 0 and again.files_unchanged == MANY_FILES
    assert time.perf_counter() - started < MANY_FILES * 0.003


def test_cancel_is_heard_within_a_second_while_a_50_mb_file_is_cut(
    tmp_path: Path, store: DocumentStore, embedder: Embedder
) -> None:
    big = tmp_path / "big.txt"
    block = "\n\n".join(prose(seed, 8) for seed in range(1200)) + "\n\n"  # about 1 MB of paragraphs
    with open(big, "w", encoding="utf-8") as handle:
        while handle.tell() < 50 * 1024 * 1024:
            handle.write(block)
    write(tmp_path / "small.txt", "A small file indexed before the big one starts.")
    cancel = threading.Event()
    asked: list[float] = []

    def press_cancel() -> None:
        asked.append(time.monotonic())
        cancel.set()

    timer = threading.Timer(3.0, press_cancel)
    timer.start()
    try:
        report = index_paths(store, embedder, [tmp_path / "small.txt", big], cancel=cancel)
    finally:
        timer.cancel()
    stopped_after = time.monotonic() - asked[0]
    print(f"\ncancel heard {stopped_after:.2f} s after it was pressed")
    assert report.cancelled and stopped_after < 2.0
    assert store.document("default", tmp_path / "small.txt").status == "indexed"
    assert store.document("default", big).status == "pending"  # the next run does it
    assert_consistent(store)


def test_pause_holds_indexing_between_batches(tmp_path) -> None:
    """While the app writes an answer, indexing waits; it finishes once the pause is lifted."""
    import threading as _threading

    from assistant.rag.embedder import Embedder
    from assistant.rag.indexer import index_paths
    from assistant.rag.store import DocumentStore

    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(20):
        (folder / f"note{i}.txt").write_text(f"Note number {i} about topic {i}.\n")
    store = DocumentStore(tmp_path / "home")
    pause = _threading.Event()
    pause.set()
    result = []
    worker = _threading.Thread(target=lambda: result.append(index_paths(store, Embedder(), [folder], pause=pause)))
    worker.start()
    worker.join(3.0)
    assert worker.is_alive() and not result  # held while paused
    pause.clear()
    worker.join(120)
    assert result and result[0].files_indexed == 20
    store.close()
