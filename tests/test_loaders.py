"""Document loaders against real files written by the tests (PDFs by a tiny raw-syntax writer below)."""

from __future__ import annotations

import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import pytest

from assistant.rag.loaders import (
    MAX_TEXT_BYTES,
    SUPPORTED_SUFFIXES,
    LoadedDocument,
    LoadFailed,
    SkippedFile,
    clean_pdf_text,
    is_supported,
    load_document,
)

ROOT = Path(__file__).resolve().parent.parent
R_MANUALS = Path("/usr/share/doc/r-doc-pdf/manual")
FI = "\x1f"  # byte our PDF font maps to the "fi" ligature glyph (U+FB01 once extracted)


def pdf_bytes(pages: list[list[str]], streams: dict[int, bytes] | None = None) -> bytes:
    """A minimal but valid PDF: one Helvetica line per string, one page per list.

    streams replaces the raw content-stream object of a page (0-based) to make broken pages.
    """
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    # Byte 31 is remapped to the glyph named "fi", so extraction yields the real ligature character.
    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding << /Type /Encoding "
               b"/BaseEncoding /WinAnsiEncoding /Differences [31 /fi] >> >>")
    parent = len(objects) + 1 + 2 * len(pages)
    kids = []
    for index, lines in enumerate(pages):
        if streams and index in streams:
            content = add(streams[index])
        else:
            ops = [b"BT /F1 12 Tf 14 TL 72 720 Td"]
            for line in lines:
                data = line.encode("cp1252").replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
                ops.append(b"(" + data + b") Tj T*")
            ops.append(b"ET")
            stream = b"\n".join(ops)
            content = add(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        kids.append(add(b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
                        b"/Resources << /Font << /F1 %d 0 R >> >> >>" % (parent, content, font)))
    add(b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % kid for kid in kids) + b"] /Count %d >>" % len(kids))
    catalog = add(b"<< /Type /Catalog /Pages %d 0 R >>" % parent)
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, catalog, xref)
    return bytes(out)


def write_pdf(path: Path, pages: list[list[str]], **kwargs: object) -> Path:
    path.write_bytes(pdf_bytes(pages, **kwargs))  # type: ignore[arg-type]
    return path


def assert_offsets(doc: LoadedDocument) -> None:
    text = doc.text
    for section in doc.sections:
        assert text[section.start:section.start + len(section.text)] == section.text
        assert section.text == section.text.strip() and section.text


THREE_PAGES = [
    ["Chapter one starts here.", f"The {FI}rst {FI}eld is an exam-", "ple of hyphen-", "ation in print."],
    ["Page two talks about Paris", "and   its    spaces."],
    ["Page three: S-", "Plus keeps its hyphen."],
]


# --- PDF --------------------------------------------------------------------------------------------------------


def test_pdf_pages_ligatures_and_hyphenation(tmp_path: Path) -> None:
    doc = load_document(write_pdf(tmp_path / "paper.pdf", THREE_PAGES))
    assert doc.kind == "pdf" and doc.pages == 3 and doc.warnings == ()
    assert [section.page for section in doc.sections] == [1, 2, 3]
    first, second, third = (section.text for section in doc.sections)
    assert "The first field is an example of hyphenation in print." in first
    assert "\ufb01" not in doc.text
    assert "and its spaces." in second
    assert "S-Plus keeps its hyphen." in third
    assert_offsets(doc)


def test_clean_pdf_text_keeps_paragraphs_and_fixes_ligatures() -> None:
    raw = "e\ufb03cient  \ufb02ow\u00a0here\r\n\n\n\nnew para-\ngraph\u200b ends.\fNext  page-\nBreak"
    assert clean_pdf_text(raw) == "efficient flow here\n\nnew paragraph ends.\n\nNext page-Break"


def test_pdf_outline_titles_become_headings(tmp_path: Path) -> None:
    from pypdf import PdfWriter

    filler = "This sentence fills the page so that the text above a heading is worth a section."
    pages = [["Introduction", filler], [filler, "2.1 Methods", "We measured things."], ["More methods."]]
    writer = PdfWriter(clone_from=io.BytesIO(pdf_bytes(pages)))
    writer.add_outline_item(title="Introduction", page_number=0)
    writer.add_outline_item(title="Methods", page_number=1)
    path = tmp_path / "outlined.pdf"
    with open(path, "wb") as handle:
        writer.write(handle)
    doc = load_document(path)
    assert [(s.page, s.heading, s.text.splitlines()[0]) for s in doc.sections] == [
        (1, "Introduction", "Introduction"),
        (2, "Introduction", filler),
        (2, "Methods", "2.1 Methods"),
        (3, "Methods", "More methods."),
    ]
    assert_offsets(doc)


def _encrypted(tmp_path: Path, user_password: str) -> Path:
    from pypdf import PdfWriter

    writer = PdfWriter(clone_from=io.BytesIO(pdf_bytes(THREE_PAGES)))
    # RC4 needs no extra package; AES would need 'cryptography', which the app does not require.
    writer.encrypt(user_password=user_password, owner_password="owner-secret", algorithm="RC4-128")
    path = tmp_path / f"locked-{bool(user_password)}.pdf"
    with open(path, "wb") as handle:
        writer.write(handle)
    return path


def test_encrypted_pdf_with_password_is_skipped_with_reason(tmp_path: Path) -> None:
    path = _encrypted(tmp_path, "secret")
    with pytest.raises(SkippedFile) as caught:
        load_document(path)
    assert str(caught.value) == "encrypted PDF (needs a password)"
    assert caught.value.path == path


def test_encrypted_pdf_with_empty_user_password_loads(tmp_path: Path) -> None:
    doc = load_document(_encrypted(tmp_path, ""))
    assert doc.pages == 3 and "example of hyphenation" in doc.text


def test_garbled_pdf_fails_naming_the_file(tmp_path: Path) -> None:
    good = pdf_bytes(THREE_PAGES)
    rng = random.Random(7)
    path = tmp_path / "garbled.pdf"
    path.write_bytes(good[:9] + bytes(rng.randrange(256) for _ in range(len(good) - 9)))
    with pytest.raises(LoadFailed, match="garbled.pdf"):
        load_document(path)


def test_truncated_pdf_never_crashes(tmp_path: Path) -> None:
    good = pdf_bytes(THREE_PAGES)
    # Cut at many places: each load either recovers some pages or says why, never anything else.
    for cut in range(20, len(good), max(1, len(good) // 40)):
        path = tmp_path / f"cut-{cut}.pdf"
        path.write_bytes(good[:cut])
        try:
            doc = load_document(path)
        except (LoadFailed, SkippedFile) as error:
            assert str(error)
        else:
            assert doc.sections and all(1 <= s.page <= 3 for s in doc.sections)


def test_not_a_pdf_fails(tmp_path: Path) -> None:
    path = tmp_path / "notes.pdf"
    path.write_text("just some text, misnamed\n")
    with pytest.raises(LoadFailed, match=r"notes\.pdf is not a PDF"):
        load_document(path)


def test_pdf_without_text_layer_is_skipped(tmp_path: Path) -> None:
    path = write_pdf(tmp_path / "scan.pdf", [[], []])
    with pytest.raises(SkippedFile, match=r"^no text layer \(scanned PDF\?\)$"):
        load_document(path)


def test_pdf_bad_page_is_left_out_and_noted(tmp_path: Path) -> None:
    # Page 2 is a decompression bomb (80 MB of spaces), which pypdf refuses; pages 1 and 3 must survive.
    packer = zlib.compressobj(9)
    bomb = b"".join(packer.compress(b" " * (1 << 20)) for _ in range(80)) + packer.flush()
    stream = b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(bomb) + bomb + b"\nendstream"
    path = write_pdf(tmp_path / "bomb.pdf", [["Good page one."], [], ["Good page three."]], streams={1: stream})
    doc = load_document(path)
    assert [(s.page, s.text) for s in doc.sections] == [(1, "Good page one."), (3, "Good page three.")]
    assert doc.pages == 3
    assert any(warning.startswith("page 2 could not be read") for warning in doc.warnings)


@pytest.mark.skipif(not (R_MANUALS / "R-intro.pdf").exists(),
                    reason="real-world PDF check needs the R manuals: apt-get install r-doc-pdf")
def test_real_manual_pdf_keeps_pages_and_headings() -> None:
    started = time.perf_counter()
    doc = load_document(R_MANUALS / "R-data.pdf")
    elapsed = time.perf_counter() - started
    assert doc.pages is not None and doc.pages > 30
    pages = [section.page for section in doc.sections]
    assert pages == sorted(pages) and pages[0] == 1 and pages[-1] == doc.pages
    headings = {section.heading for section in doc.sections}
    assert {"Acknowledgements", "Imports", "Export to text files"} <= headings
    assert "\ufb01" not in doc.text and "\ufb02" not in doc.text
    assert_offsets(doc)
    assert elapsed < 10, f"{doc.pages} pages took {elapsed:.1f} s"


# --- text and encodings -----------------------------------------------------------------------------------------


ACCENTED = "Le garçon a mangé une crème brûlée à Noël; déjà vu, naïve façade.\n"


def test_plain_utf8_text(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("First paragraph.\r\nStill first.\r\n\r\nSecond — with ünïcode.\n", encoding="utf-8")
    doc = load_document(path)
    assert doc.kind == "text" and doc.pages is None and doc.warnings == ()
    assert doc.text == "First paragraph.\nStill first.\n\nSecond — with ünïcode."
    assert [(s.page, s.heading) for s in doc.sections] == [(None, None)]


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1", "utf-8-sig", "utf-16", "utf-16-be", "utf-32"])
def test_encodings_are_detected(tmp_path: Path, encoding: str) -> None:
    text = ACCENTED * 3
    data = text.encode(encoding)
    if encoding == "utf-16-be":
        data = b"\xfe\xff" + data  # Python's utf-16-be codec writes no BOM; editors do
    path = tmp_path / "french.txt"
    path.write_bytes(data)
    assert load_document(path).text == text.strip()


def test_non_utf8_byte_deep_in_a_big_file_is_found(tmp_path: Path) -> None:
    # The guesser must see the place UTF-8 broke, not only the (pure ASCII) start of the file.
    path = tmp_path / "mostly-ascii.txt"
    path.write_bytes(b"plain ascii line\n" * 20_000 + ACCENTED.encode("cp1252"))
    assert load_document(path).text.endswith(ACCENTED.strip())


def test_utf8_with_a_damaged_byte_keeps_its_accents(tmp_path: Path) -> None:
    # Guessing a legacy encoding here would turn every accent into mojibake; one bad byte is replaced instead.
    path = tmp_path / "log.txt"
    path.write_bytes(ACCENTED.encode() * 50 + b"cut off \xe2\x82 here\n" + ACCENTED.encode())
    doc = load_document(path)
    assert doc.text == (ACCENTED * 50 + "cut off \ufffd here\n" + ACCENTED).strip()
    assert doc.warnings == ("1 damaged character replaced (not valid UTF-8)",)


def test_binary_named_txt_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "image.txt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8)
    with pytest.raises(SkippedFile, match="^binary file$"):
        load_document(path)


def test_random_bytes_without_nul_are_skipped_as_binary(tmp_path: Path) -> None:
    rng = random.Random(3)
    path = tmp_path / "noise.log"
    path.write_bytes(bytes(rng.randrange(1, 256) for _ in range(4000)))
    with pytest.raises(SkippedFile, match="^binary file$"):
        load_document(path)


@pytest.mark.parametrize("content", [b"", b"   \n\t\r\n  \n"])
def test_empty_files_are_skipped(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.md"
    path.write_bytes(content)
    with pytest.raises(SkippedFile, match="^empty file$"):
        load_document(path)


def test_unsupported_type_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "setup.exe"
    path.write_bytes(b"MZ\x90\x00")
    with pytest.raises(SkippedFile, match=r"^unsupported type \.exe$"):
        load_document(path)
    assert not is_supported(path) and is_supported(tmp_path / "Makefile") and ".py" in SUPPORTED_SUFFIXES
    assert ".env" not in SUPPORTED_SUFFIXES and ".pem" not in SUPPORTED_SUFFIXES


def test_folder_and_missing_file_fail(tmp_path: Path) -> None:
    folder = tmp_path / "folder.txt"
    folder.mkdir()
    with pytest.raises(LoadFailed, match="folder.txt is a folder"):
        load_document(folder)
    with pytest.raises(LoadFailed, match="gone.txt"):
        load_document(tmp_path / "gone.txt")


def test_symlink_is_followed(tmp_path: Path) -> None:
    target = tmp_path / "real.txt"
    target.write_text("linked content\n")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    assert load_document(link).text == "linked content"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX only")
def test_named_pipe_is_skipped_without_blocking(tmp_path: Path) -> None:
    pipe = tmp_path / "pipe.txt"
    os.mkfifo(pipe)
    with pytest.raises(SkippedFile, match="not a regular file"):
        load_document(pipe)


_CHILD = """
import sys
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from assistant.rag.loaders import LoadFailed, load_document
try:
    load_document(Path(sys.argv[1]))
    print("LOADED")
except LoadFailed as error:
    print("LOADFAILED " + str(error))
"""


def _drop_to_nobody() -> None:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


def test_unreadable_file_fails_with_permission_denied() -> None:
    # A folder under /tmp, not tmp_path: pytest's base folder is private to root, and nobody must reach the file.
    folder = Path(tempfile.mkdtemp(prefix="assistant-perm-", dir="/tmp"))
    try:
        folder.chmod(0o755)
        path = folder / "secret.txt"
        path.write_text("you cannot read me\n")
        path.chmod(0o000)
        if os.geteuid() != 0:
            with pytest.raises(LoadFailed, match="secret.txt: permission denied"):
                load_document(path)
            return
        # Root reads anything, so the check runs in a child that has given up root.
        outputs = []
        for python in dict.fromkeys([sys.executable, shutil.which("python3") or "", "/usr/bin/python3"]):
            if not python or not os.path.exists(python):
                continue
            try:
                done = subprocess.run([python, "-c", _CHILD, str(path), str(ROOT)], preexec_fn=_drop_to_nobody,
                                      capture_output=True, text=True, timeout=60)
            except OSError as error:
                outputs.append(f"{python}: {error}")
                continue
            if done.returncode == 0:
                assert done.stdout.strip() == "LOADFAILED Could not read secret.txt: permission denied."
                return
            outputs.append(f"{python}: {done.stderr.strip()[-300:]}")
        pytest.skip("no Python that an unprivileged user can run (and import the app with) was found: "
                    + " | ".join(outputs))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_text_over_the_limit_is_cut_with_a_warning(tmp_path: Path) -> None:
    line = b"0123456789 abcdefghij klmnopqrstu vwxyz.\n"  # 41 bytes: the limit falls mid-line
    path = tmp_path / "huge.log"
    with open(path, "wb") as handle:
        block = line * (1 << 15)
        written = 0
        while written <= MAX_TEXT_BYTES + (1 << 20):
            handle.write(block)
            written += len(block)
    doc = load_document(path)
    assert doc.warnings == (f"only the first {MAX_TEXT_BYTES >> 20} MB of {written / (1 << 20):.0f} MB were read",)
    text = doc.text
    assert len(text) <= MAX_TEXT_BYTES + 2 * len(doc.sections)
    assert text.endswith("vwxyz.")  # cut at a line end, not in the middle of one
    assert_offsets(doc)


# --- structured text --------------------------------------------------------------------------------------------


def test_markdown_sections_at_headings(tmp_path: Path) -> None:
    path = tmp_path / "guide.md"
    path.write_text(
        "---\ntitle: front matter\n---\nIntro text.\n\n# Install\n\nRun it.\n\n```sh\n# not a heading\n```\n\n"
        "Usage\n=====\n\nType things.\n\n## Advanced ##\nMore.\n\nSub part\n--------\nDeep.\n",
        encoding="utf-8",
    )
    doc = load_document(path)
    assert doc.kind == "markdown"
    assert [(s.heading, s.text.splitlines()[0]) for s in doc.sections] == [
        (None, "---"), ("Install", "# Install"), ("Usage", "Usage"), ("Advanced", "## Advanced ##"),
        ("Sub part", "Sub part"),
    ]
    assert "# not a heading" in doc.sections[1].text
    assert_offsets(doc)


def test_rst_sections_at_underlined_titles(tmp_path: Path) -> None:
    path = tmp_path / "manual.rst"
    path.write_text(
        "=======\n Title\n=======\n\nOpening words.\n\nFirst part\n----------\n\nBody one.\n\n"
        "A line followed by a transition:\n\n----------\n\nSecond part\n~~~~~~~~~~~\nBody two.\n",
        encoding="utf-8",
    )
    doc = load_document(path)
    assert doc.kind == "rst"
    assert [s.heading for s in doc.sections] == ["Title", "First part", "Second part"]
    assert doc.sections[0].text.startswith("=======\n Title\n=======")
    assert "----------" in doc.sections[1].text  # the transition stays text
    assert_offsets(doc)


def test_html_text_headings_and_blocks(tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    path.write_text(
        "<!doctype html><html><head><title>My  Page</title><style>p {color: red}</style>"
        "<script>var hidden = 1;</script><meta charset='utf-8'></head><body>"
        "<p>Before any &amp; heading.</p><nav>Home</nav><h1>Main <em>Title</em></h1><p>First\n   para.</p>"
        "<p>Line<br>break</p><script>alert('no')</script><h2>Data</h2>"
        "<table><tr><th>Name</th><th>Age</th></tr><tr><td>Ann</td><td>31</td></tr></table>"
        "<pre>  keep   this</pre><svg><text>icon</text></svg><div>Caf&eacute; end</div></body></html>",
        encoding="utf-8",
    )
    doc = load_document(path)
    assert doc.kind == "html"
    assert [(s.heading, s.text) for s in doc.sections] == [
        ("My Page", "Before any & heading.\n\nHome"),
        ("Main Title", "Main Title\n\nFirst para.\n\nLine\nbreak"),
        ("Data", "Data\n\nName\tAge\nAnn\t31\n\n  keep   this\n\nCafé end"),
    ]
    assert "hidden" not in doc.text and "alert" not in doc.text and "color" not in doc.text
    assert_offsets(doc)


def test_html_with_only_markup_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "blank.htm"
    path.write_text("<html><head><title>t</title></head><body><script>x()</script></body></html>")
    with pytest.raises(SkippedFile, match="no text"):
        load_document(path)


def test_docx_paragraphs_headings_and_tables(tmp_path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_paragraph("Preamble before any heading.")
    document.add_heading("Results", level=1)
    document.add_paragraph("We found things.")
    table = document.add_table(rows=3, cols=3)
    for row, values in zip(table.rows, [("Name", "Score", "Note"), ("Ann", "9", "good"), ("Bo", "7", "")], strict=True):
        for cell, value in zip(row.cells, values, strict=True):
            cell.text = value
    table.cell(2, 1).merge(table.cell(2, 2))
    document.add_heading("Discussion", level=2)
    document.add_paragraph("It means something.")
    path = tmp_path / "report.docx"
    document.save(str(path))

    doc = load_document(path)
    assert doc.kind == "docx"
    assert [(s.heading, s.text) for s in doc.sections] == [
        (None, "Preamble before any heading."),
        ("Results", "Results\n\nWe found things.\n\nName\tScore\tNote\nAnn\t9\tgood\nBo\t7"),
        ("Discussion", "Discussion\n\nIt means something."),
    ]
    assert_offsets(doc)


def test_docx_damaged_or_encrypted(tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.docx"
    damaged.write_bytes(b"PK\x03\x04" + bytes(200))
    with pytest.raises(LoadFailed, match="damaged.docx"):
        load_document(damaged)
    locked = tmp_path / "locked.docx"
    locked.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(512))  # OLE container: Word's encrypted form
    with pytest.raises(SkippedFile, match="encrypted Word document"):
        load_document(locked)


def test_csv_code_and_json(tmp_path: Path) -> None:
    csv_path = tmp_path / "data.csv"
    csv_path.write_text("name,score\nAnn,9\n")
    assert (load_document(csv_path).kind, load_document(csv_path).text) == ("csv", "name,score\nAnn,9")

    code = tmp_path / "tool.py"
    code.write_text("def main():\n    return 1\n")
    doc = load_document(code)
    assert (doc.kind, doc.text, doc.sections[0].heading) == ("code", "def main():\n    return 1", None)

    small = tmp_path / "small.json"
    small.write_text('{"name":"Zoë","tags":["a","b"]}')
    assert load_document(small).text == json.dumps({"name": "Zoë", "tags": ["a", "b"]}, indent=2, ensure_ascii=False)

    big = tmp_path / "big.json"
    raw = json.dumps([{"id": n, "value": "x" * 40} for n in range(30_000)], separators=(",", ":"))
    assert len(raw) > 1 << 20
    big.write_text(raw)
    doc = load_document(big)
    # Too big to pretty-print: kept as written, only cut into sections of about a megabyte.
    assert doc.kind == "json" and len(doc.sections) == 2 and "".join(s.text for s in doc.sections) == raw
    assert_offsets(doc)


def test_long_markdown_section_is_split_but_keeps_its_heading(tmp_path: Path) -> None:
    path = tmp_path / "long.md"
    paragraph = "word " * 200 + "\n\n"
    path.write_text("# Only heading\n\n" + paragraph * 3000)  # about 3 MB under one heading
    doc = load_document(path)
    assert len(doc.sections) >= 3
    assert {s.heading for s in doc.sections} == {"Only heading"}
    assert_offsets(doc)
    assert re.sub(r"\s+", " ", doc.text).strip() == re.sub(r"\s+", " ", path.read_text()).strip()
