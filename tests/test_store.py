"""DocumentStore on the real embedder, real FAISS and real SQLite: search, replacement, crash recovery."""

from __future__ import annotations

import functools
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from assistant.errors import AssistantError
from assistant.memory.db import MIGRATIONS, Database
from assistant.rag.chunker import Chunk
from assistant.rag.embedder import Embedder
from assistant.rag.store import DocumentStore, fts_query

ROOT = Path(__file__).resolve().parent.parent

FACTS = [
    "Photosynthesis lets plants turn sunlight, water and carbon dioxide into sugar and oxygen.",
    "The quarterly report shows revenue grew twelve percent while costs stayed flat.",
    "Our cat sleeps on the warm windowsill every afternoon.",
    "The flux capacitor part number is ZX-9917-QUARK and it ships from Rotterdam.",
    "Running shoes should be replaced after about 800 kilometres of use.",
    "The café serves crème brûlée on Sundays.",
]


@functools.cache
def shared_embedder() -> Embedder:
    return Embedder()  # loaded once for the whole module: about 5 s


@pytest.fixture
def embedder() -> Embedder:
    return shared_embedder()


@pytest.fixture
def store(isolated_home: Path):
    s = DocumentStore(isolated_home)
    yield s
    s.close()


def chunks_of(texts: list[str], page: int | None = None) -> list[Chunk]:
    out, pos = [], 0
    for text in texts:
        out.append(Chunk(text=text, page=page, heading="Notes", start=pos, end=pos + len(text)))
        pos += len(text) + 1
    return out


def add(store: DocumentStore, embedder: Embedder, path: str, texts: list[str], collection: str = "default") -> int:
    return store.add_document_chunks(
        collection, path, f"hash-{path}-{len(texts)}", 100, 1.0, 1, chunks_of(texts, page=1), embedder.embed(texts)
    )


def assert_consistent(store: DocumentStore, collection: str = "default") -> None:
    assert store.missing_vectors(collection) == 0
    assert np.array_equal(store.chunk_ids(collection), store.vector_ids(collection))


def test_dense_finds_a_paraphrase_and_keyword_an_exact_rare_term(store: DocumentStore, embedder: Embedder) -> None:
    store.repair(embedder)
    add(store, embedder, "/docs/facts.md", FACTS)
    ids = store.chunk_ids("default").tolist()
    assert len(ids) == len(FACTS)

    query = embedder.embed(["How do green leaves make food from light?"])[0]
    hits = store.dense_search(query, "default", 3)
    assert len(hits) == 3 and hits[0][1] >= hits[1][1] >= hits[2][1]
    top = store.chunks([hits[0][0]])[0]
    assert top.text == FACTS[0] and top.file == "/docs/facts.md" and top.page == 1 and top.heading == "Notes"

    rare = store.keyword_search("zx-9917-quark", "default", 5)
    assert rare and store.chunks([rare[0][0]])[0].text == FACTS[3]
    assert rare[0][1] < 0  # SQLite's bm25(): negative, lower is better
    # Porter stemming and diacritics folding: "run" finds "Running", "creme brulee" finds "crème brûlée".
    assert store.chunks([store.keyword_search("run", "default", 1)[0][0]])[0].text == FACTS[4]
    assert store.chunks([store.keyword_search("creme brulee", "default", 1)[0][0]])[0].text == FACTS[5]

    # chunks() keeps the order asked and leaves out ids that do not exist.
    assert [c.chunk_id for c in store.chunks([ids[2], 999_999, ids[0]])] == [ids[2], ids[0]]
    window = store.neighbours(ids[2], 1)
    assert [c.ordinal for c in window] == [1, 2, 3]
    assert [c.ordinal for c in store.neighbours(ids[0], 2)] == [0, 1, 2]
    assert store.neighbours(999_999, 1) == []


@pytest.mark.parametrize("query", [
    '"', '""', '"unbalanced', "AND", "OR NOT", "a AND", "NEAR(cat sleeps", "cat*", "*", "^cat", "text:cat",
    "(cat", ")", "-cat", "cat -", "'; DROP TABLE chunks; --", "🙂", "🐈 cat 🐈", "\u200b", "", "   ",
    "a" * 5000, " ".join(["word"] * 500), "\x00cat", "\ud800cat", "C++ && || !", "NOT NOT NOT", "{cat}", "[cat]",
])
def test_keyword_search_accepts_any_text(store: DocumentStore, embedder: Embedder, query: str) -> None:
    add(store, embedder, "/docs/facts.md", FACTS)
    hits = store.keyword_search(query, "default", 5)  # must never raise
    assert isinstance(hits, list)
    if query in ("cat*", "^cat", "(cat", "-cat", "cat -", "NEAR(cat sleeps", "🐈 cat 🐈", "\x00cat", "\ud800cat", "{cat}", "[cat]"):
        assert any(store.chunks([i])[0].text == FACTS[2] for i, _ in hits)


def test_fts_query_quotes_every_term() -> None:
    assert fts_query('say "hi" AND bye') == '"say" OR """hi""" OR "AND" OR "bye"'
    assert fts_query("🙂 ?!") is None


def test_replacing_and_removing_a_document_keeps_sqlite_fts_and_faiss_in_step(
    store: DocumentStore, embedder: Embedder
) -> None:
    store.repair(embedder)
    add(store, embedder, "/docs/a.txt", ["The old version mentions the word obsolete-marker."])
    add(store, embedder, "/docs/b.txt", ["An unrelated note about gardening tomatoes."])
    old_ids = store.chunk_ids("default").tolist()

    replaced = add(store, embedder, "/docs/a.txt", ["The new version talks about fresh-marker.", "And a second part."])
    assert replaced == 1
    assert store.keyword_search("obsolete", "default", 5) == []  # the delete trigger kept FTS in step
    assert len(store.keyword_search("fresh", "default", 5)) == 1
    ids = store.chunk_ids("default").tolist()
    assert old_ids[0] not in ids and len(ids) == 3 and min(set(ids) - set(old_ids)) > max(old_ids)  # ids never reused
    assert_consistent(store)
    doc = store.document("default", "/docs/a.txt")
    assert doc is not None and doc.status == "indexed" and doc.chunk_count == 2

    assert store.remove_document("default", "/docs/a.txt") == 2
    assert store.document("default", "/docs/a.txt") is None
    assert store.keyword_search("fresh", "default", 5) == []
    assert_consistent(store)
    query = embedder.embed(["growing tomatoes in the garden"])[0]
    assert [store.chunks([i])[0].file for i, _ in store.dense_search(query, "default", 10)] == ["/docs/b.txt"]


def test_statuses_and_reasons_for_the_documents_panel(store: DocumentStore, embedder: Embedder) -> None:
    add(store, embedder, "/docs/a.txt", ["Some text that was indexed once."])
    store.mark("default", "/docs/b.bin", "skipped", "binary file")
    store.mark_many("default", [("/docs/c.txt", "pending", None), ("/docs/d.txt", "pending", None)])
    assert store.mark("default", "/docs/a.txt", "failed", "could not be read: permission denied") == 1
    docs = {d.path: d for d in store.documents("default")}
    assert {p: (d.status, d.reason, d.chunk_count) for p, d in docs.items()} == {
        "/docs/a.txt": ("failed", "could not be read: permission denied", 0),
        "/docs/b.bin": ("skipped", "binary file", 0),
        "/docs/c.txt": ("pending", None, 0),
        "/docs/d.txt": ("pending", None, 0),
    }
    assert store.chunk_ids("default").size == 0 and store.keyword_search("indexed", "default", 5) == []
    assert_consistent(store)
    with pytest.raises(ValueError):
        store.mark("default", "/x", "done")


def test_collections_are_separate(store: DocumentStore, embedder: Embedder) -> None:
    store.repair(embedder)
    store.create_collection("work")
    add(store, embedder, "/work/plan.txt", ["The launch plan for the rocket project."], "work")
    add(store, embedder, "/home/recipe.txt", ["A recipe for rocket salad with lemon."], "home")
    assert [(c.name, c.documents, c.chunks) for c in store.list_collections()] == [("home", 1, 1), ("work", 1, 1)]
    assert [store.chunks([i])[0].file for i, _ in store.keyword_search("rocket", "work", 5)] == ["/work/plan.txt"]
    query = embedder.embed(["rocket"])[0]
    assert [store.chunks([i])[0].file for i, _ in store.dense_search(query, "home", 5)] == ["/home/recipe.txt"]
    assert store.dense_search(query, "nowhere", 5) == [] and store.keyword_search("rocket", "nowhere", 5) == []
    store.save()
    work_id = store.collection_id("work")
    assert (store.index_dir / f"c{work_id}.faiss").exists()
    assert store.delete_collection("work") and not store.delete_collection("work")
    assert not (store.index_dir / f"c{work_id}.faiss").exists()
    assert [c.name for c in store.list_collections()] == ["home"]
    assert store.keyword_search("rocket", "work", 5) == []
    with pytest.raises(AssistantError):
        store.create_collection("  ")


def test_several_collections_are_searched_together(store: DocumentStore, embedder: Embedder) -> None:
    store.repair(embedder)
    add(store, embedder, "/work/plan.txt", ["The launch plan for the rocket project."], "work")
    add(store, embedder, "/home/recipe.txt", ["A recipe for rocket salad with lemon."], "home")
    add(store, embedder, "/misc/rocket.txt", ["Rocket rocket rocket: a page about rockets."], "misc")
    both = ["work", "home"]
    files = {store.chunks([i])[0].file for i, _ in store.keyword_search("rocket", both, 5)}
    assert files == {"/work/plan.txt", "/home/recipe.txt"}
    query = embedder.embed(["rocket"])[0]
    dense = store.dense_search(query, both, 5)
    assert {store.chunks([i])[0].file for i, _ in dense} == files
    assert [s for _, s in dense] == sorted((s for _, s in dense), reverse=True)
    ids = [i for i, _ in dense]
    vectors = store.vectors(ids, both)  # each from the collection that holds it
    assert np.allclose(vectors @ query, [s for _, s in dense], atol=1e-5)
    misc_id = store.keyword_search("rocket", "misc", 1)[0][0]
    assert not store.vectors([misc_id], both).any()  # not in these collections: zeros


def test_a_small_collection_beside_a_big_one_still_gets_its_keyword_hits(store: DocumentStore, embedder: Embedder) -> None:
    """FTS5 ranks first and the collection is filtered after: the small collection's hits are past the
    over-fetch when the big one matches better, so the search must fall back to ranking with the join."""
    store.repair(embedder)
    big = [f"Rocket engine rocket fuel rocket stage, note {i}." for i in range(300)]
    add(store, embedder, "/big/rockets.txt", big, "big")
    small = ["A salad with a little rocket."] + [f"Lemon dressing, step {i}." for i in range(29)]
    add(store, embedder, "/small/salad.txt", small, "small")
    hits = store.keyword_search("rocket", "small", 5)  # over-fetch of 115 of 330 chunks: all from "big"
    assert [store.chunks([i])[0].text for i, _ in hits] == ["A salad with a little rocket."]
    assert len(store.keyword_search("rocket", "big", 5)) == 5


def test_the_commonest_words_are_left_out_past_the_match_budget(
        store: DocumentStore, embedder: Embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    import assistant.rag.store as store_module

    store.repair(embedder)
    texts = [f"Common words everywhere, line {i}." for i in range(40)] + ["Common words and one zeppelin."]
    add(store, embedder, "/notes.txt", texts)
    everything = store.keyword_search("common zeppelin", "default", 100)
    assert len(everything) == 41  # within budget: every chunk with either word is ranked
    monkeypatch.setattr(store_module, "MATCH_BUDGET", 10)
    only_rare = store.keyword_search("common zeppelin", "default", 100)
    assert [store.chunks([i])[0].text for i, _ in only_rare] == ["Common words and one zeppelin."]
    # A query of common words alone still searches with its rarest word.
    assert len(store.keyword_search("common words", "default", 100)) == 41


def test_vectors_are_saved_in_batches_not_per_document(store: DocumentStore, embedder: Embedder) -> None:
    store.repair(embedder)
    texts = [f"Note number {i} about topic {i % 7}." for i in range(200)]
    vectors = embedder.embed(texts)
    for i, text in enumerate(texts):
        store.add_document_chunks("default", f"/n/{i}.txt", str(i), 10, 1.0, None, chunks_of([text]), vectors[i:i + 1])
    assert store.saves <= 1  # 200 documents in well under SAVE_EVERY_S
    store.save()
    reopened_ids = _ids_in_saved_index(store.home, store.collection_id("default"))
    assert np.array_equal(np.sort(reopened_ids), store.chunk_ids("default"))


def test_schema_migrates_an_existing_chat_database(tmp_path: Path) -> None:
    path = tmp_path / "assistant.db"
    conn = sqlite3.connect(path)
    conn.executescript(f"BEGIN;\n{MIGRATIONS[0]}\nPRAGMA user_version = 1;\nCOMMIT;")
    conn.execute("INSERT INTO conversations(title, created_at, updated_at) VALUES ('kept', 0, 0)")
    conn.commit()
    conn.close()
    db = Database(path)
    conn = db.connect()
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) >= 2
    assert conn.execute("SELECT title FROM conversations").fetchone()[0] == "kept"
    assert conn.execute("SELECT sqlite_compileoption_used('ENABLE_FTS5')").fetchone()[0] == 1
    db.close()


def test_a_second_writer_is_refused_until_the_first_closes(isolated_home: Path, embedder: Embedder) -> None:
    first = DocumentStore(isolated_home)
    add(first, embedder, "/a.txt", ["first writer"])
    second = DocumentStore(isolated_home)
    assert second.keyword_search("first", "default", 5)  # reading is always allowed
    with pytest.raises(AssistantError, match="Another assistant process"):
        add(second, embedder, "/b.txt", ["second writer"])
    first.close()
    add(second, embedder, "/b.txt", ["second writer"])
    second.close()


def test_a_reader_picks_up_what_the_writer_saved(isolated_home: Path, embedder: Embedder) -> None:
    writer, reader = DocumentStore(isolated_home), DocumentStore(isolated_home)
    try:
        writer.repair(embedder)
        add(writer, embedder, "/a.txt", ["Volcanoes erupt molten rock called lava."])
        writer.save()
        query = embedder.embed(["Which mountains spit out lava?"])[0]
        assert [reader.chunks([i])[0].file for i, _ in reader.dense_search(query, "default", 5)] == ["/a.txt"]
        add(writer, embedder, "/b.txt", ["Geysers shoot hot water into the air."])
        writer.save()
        query = embedder.embed(["hot water spraying from the ground"])[0]
        assert reader.chunks([reader.dense_search(query, "default", 1)[0][0]])[0].file == "/b.txt"
        reader.save()  # a reader has nothing of its own to write, and must not take the writer's place
        with pytest.raises(AssistantError):
            reader.remove_document("default", "/a.txt")
    finally:
        reader.close()
        writer.close()


def _ids_in_saved_index(home: Path, cid: int | None) -> np.ndarray:
    """What a fresh reader finds in the index file on disk."""
    reader = DocumentStore(home)
    try:
        vec = reader._load(cid)  # the loaded file before any repair
        return reader._faiss_ids(vec.index)
    finally:
        reader.close()


CRASH_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from assistant.rag.chunker import Chunk
    from assistant.rag.embedder import Embedder
    from assistant.rag.store import DocumentStore
    store, emb = DocumentStore(), Embedder()
    store.repair(emb)
    def add(path, texts):
        chunks = [Chunk(text=t, page=None, heading=None, start=0, end=len(t)) for t in texts]
        store.add_document_chunks("default", path, path, 1, 1.0, None, chunks, emb.embed(texts))
    add("/a.txt", ["Alpha document about mountains and glaciers.", "More about alpine lakes."])
    add("/b.txt", ["Bravo document about databases and transactions."])
    store.save()
    # Committed to SQLite but never saved to the FAISS file: exactly what a kill -9 between saves leaves.
    add("/c.txt", ["Charlie document explains how submarines dive using ballast tanks.", "Sonar basics."])
    store.remove_document("default", "/a.txt")
    print("ready", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_kill_9_between_saves_is_reconciled(isolated_home: Path, embedder: Embedder) -> None:
    env = {**os.environ, "ASSISTANT_HOME": str(isolated_home), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", CRASH_SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "ready" in proc.stdout

    store = DocumentStore(isolated_home)
    try:
        cid = store.collection_id("default")
        sql_ids = store.chunk_ids("default")
        assert len(sql_ids) == 3  # b (1) + c (2); a was removed
        # The file on disk still has a's two vectors and lacks c's: loading drops a's at once...
        vector_ids = set(store.vector_ids("default").tolist())
        assert vector_ids < set(sql_ids.tolist()) and len(vector_ids) == 1
        # ...and repair re-embeds exactly c's two chunks, from the text SQLite kept.
        assert store.missing_vectors("default") == 2
        before = embedder.texts_embedded
        assert store.repair(embedder) == 2
        assert embedder.texts_embedded - before == 2
        assert_consistent(store)
        query = embedder.embed(["how does a submarine go under water"])[0]
        assert store.chunks([store.dense_search(query, "default", 1)[0][0]])[0].file == "/c.txt"
    finally:
        store.close()
    # repair() saved: a fresh open finds the file and SQLite agreeing, with nothing to do.
    assert np.array_equal(np.sort(_ids_in_saved_index(isolated_home, cid)), sql_ids)


def test_an_index_from_another_model_or_a_damaged_file_is_rebuilt(isolated_home: Path, embedder: Embedder) -> None:
    store = DocumentStore(isolated_home)
    store.model_name = "some-older-model"
    add(store, embedder, "/a.txt", ["one chunk", "two chunk"])
    store.close()

    store = DocumentStore(isolated_home)
    assert store.repair(embedder) == 2  # the file says another model made it: every vector is redone
    cid = store.collection_id("default")
    store.close()

    (isolated_home / "index" / f"c{cid}.faiss").write_bytes(b"ASSTVEC1garbage")
    store = DocumentStore(isolated_home)
    assert store.missing_vectors("default") == 2
    assert store.repair(embedder) == 2
    assert_consistent(store)
    store.close()


def test_diversity_lets_a_duplicate_give_way(store: DocumentStore, embedder: Embedder) -> None:
    from assistant.rag.retriever import search

    store.repair(embedder)
    same = "The red kite nests in tall oak trees near the river."
    add(store, embedder, "/a/kites.txt", [same])
    add(store, embedder, "/b/kites copy.txt", [same])
    add(store, embedder, "/c/birds.txt", ["Red kites build their nests in old woodland, often close to water."])
    add(store, embedder, "/d/cars.txt", ["The car needs new tyres before winter."])
    plain = search(store, embedder, "Where does the red kite nest?", "default", k=2)
    assert {h.text for h in plain} == {same}  # the copy outranks the other passage
    diverse = search(store, embedder, "Where does the red kite nest?", "default", k=2, diversity=0.3)
    assert diverse[0].text == same and "woodland" in diverse[1].text


def test_neighbouring_chunks_join_without_repeating_their_overlap(store: DocumentStore, embedder: Embedder) -> None:
    from assistant.rag.retriever import expand, join_chunks, search

    store.repair(embedder)
    text = "Alpha one two. Beta three four. Gamma five six. Delta seven eight."
    spans = [(0, 31), (15, 47), (32, len(text))]  # overlapping, as the chunker makes them
    chunks = [Chunk(text[s:e], None, None, s, e) for s, e in spans]
    store.add_document_chunks("default", "/t.txt", "h", len(text), 1.0, None, chunks,
                              embedder.embed([c.text for c in chunks]))
    records = store.document_chunks("/t.txt")
    assert join_chunks(records) == text
    hit = search(store, embedder, "Gamma five six", "default", k=1, mode="keyword")[0]
    assert hit.text == text[15:47]
    assert expand(store, [hit], 1) == [text] and expand(store, [hit], 0) == [hit.text]


def test_a_large_collection_is_searched_through_hnsw_kept_in_step(
        store: DocumentStore, embedder: Embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past HNSW_MIN_VECTORS (lowered here) an HNSW graph is built in the background and used; chunks added
    later are in it, removed ones never come back from it, and many removals have it rebuilt."""
    import time

    import assistant.rag.store as store_module

    monkeypatch.setattr(store_module, "HNSW_MIN_VECTORS", 60)
    store.repair(embedder)
    rng = np.random.default_rng(1)

    def add_random(path: str, n: int) -> np.ndarray:
        vectors = rng.normal(size=(n, embedder.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.add_document_chunks("default", path, f"h{path}", 1, 1.0, None,
                                  chunks_of([f"{path} chunk {i}" for i in range(n)]), vectors)
        return vectors

    first = add_random("/a.txt", 40)
    add_random("/b.txt", 40)
    query = first[3]
    exact = store.dense_search(query, "default", 10)  # starts the build; this answer is exact search's
    vec = store._vectors[store.collection_id("default")]
    deadline = time.monotonic() + 60
    while vec.hnsw is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert vec.hnsw is not None and vec.hnsw.ntotal == 80
    through_graph = store.dense_search(query, "default", 10)
    assert [i for i, _ in through_graph] == [i for i, _ in exact]  # a small graph: the same answer
    assert np.allclose([s for _, s in through_graph], [s for _, s in exact], atol=1e-5)

    third = add_random("/c.txt", 5)
    assert vec.hnsw.ntotal == 85  # added to the graph as well
    top = store.dense_search(third[0], "default", 1)[0]
    assert store.chunks([top[0]])[0].file == "/c.txt" and top[1] == pytest.approx(1.0, abs=1e-5)

    store.remove_document("default", "/c.txt")
    assert all(store.chunks([i])[0].file != "/c.txt" for i, _ in store.dense_search(third[0], "default", 10))
    assert vec.hnsw is not None and len(vec.hnsw_stale) == 5  # filtered, not yet rebuilt
    store.remove_document("default", "/b.txt")  # 45 of 85 gone: past HNSW_STALE_MAX, the graph goes
    hits = store.dense_search(query, "default", 5)
    assert vec.hnsw is None and all(store.chunks([i])[0].file == "/a.txt" for i, _ in hits)
    assert hits[0][1] == pytest.approx(1.0, abs=1e-5)
