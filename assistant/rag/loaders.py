"""Turn a file on disk into text that remembers where it came from: page, heading and offset.

Every call either returns a LoadedDocument or raises SkippedFile (deliberately not indexed, the
reason in plain words) or LoadFailed (tried and failed, naming the file). The index shows those
reasons to the user, so a document is never dropped silently.
"""

from __future__ import annotations

import codecs
import json
import logging
import re
import stat
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import BinaryIO

from assistant.errors import AssistantError

log = logging.getLogger(__name__)


class SkippedFile(AssistantError):
    """The file is deliberately not indexed; str() is the reason in plain words ("binary file")."""

    def __init__(self, reason: str, path: Path | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path = path


class LoadFailed(AssistantError):
    """Reading the file was tried and failed; the message names the file."""

    def __init__(self, message: str, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True)
class Section:
    """A run of a document's text under one heading (and, for PDFs, on one page)."""

    text: str
    page: int | None  # 1-based page for PDFs, else None
    heading: str | None  # nearest heading above this text, else None
    start: int  # offset of this section in LoadedDocument.text


@dataclass(frozen=True)
class LoadedDocument:
    path: Path
    kind: str  # "pdf", "text", "markdown", "rst", "html", "code", "docx", "csv", "json"
    sections: list[Section]
    pages: int | None
    # Things the user should know although the file loaded: pages left out, text cut short.
    warnings: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        """The full text: section texts joined by blank lines, so Section.start indexes into it."""
        # Built on demand, not stored: a 50 MB text file would otherwise sit in memory twice.
        return "\n\n".join(section.text for section in self.sections)


_KINDS: dict[str, str] = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".html": "html", ".htm": "html", ".xhtml": "html",
    ".md": "markdown", ".markdown": "markdown", ".mdown": "markdown", ".mkd": "markdown",
    ".rst": "rst", ".rest": "rst",
    ".csv": "csv", ".tsv": "csv",
    ".json": "json", ".jsonl": "json", ".ndjson": "json",
    ".txt": "text", ".text": "text", ".log": "text", ".org": "text", ".adoc": "text", ".asciidoc": "text",
}
# Secrets-by-convention (.env, .pem, .key, id_rsa) are deliberately absent: they are never indexed.
_CODE_SUFFIXES = (
    ".py .pyi .pyx .js .mjs .cjs .jsx .ts .tsx .vue .svelte .c .h .cc .cpp .cxx .hpp .hh .hxx .m .mm "
    ".java .kt .kts .scala .groovy .gradle .go .rs .rb .php .pl .pm .lua .r .jl .swift .cs .fs .vb "
    ".dart .ex .exs .erl .hs .ml .mli .clj .el .lisp .scm .zig .nim .d .f90 .sh .bash .zsh .fish "
    ".ps1 .bat .cmd .toml .yaml .yml .ini .cfg .conf .properties .sql .tex .bib .sty .cls .xml .css "
    ".scss .less .proto .graphql .cmake .mk .dockerfile .diff .patch"
).split()
_KINDS.update(dict.fromkeys(_CODE_SUFFIXES, "code"))

SUPPORTED_SUFFIXES: frozenset[str] = frozenset(_KINDS)
# Well-known files that carry no suffix.
_NAME_KINDS: dict[str, str] = {
    "readme": "text", "license": "text", "copying": "text", "authors": "text", "changelog": "text",
    "news": "text", "notice": "text", "todo": "text", "install": "text",
    "makefile": "code", "dockerfile": "code", "containerfile": "code", "vagrantfile": "code",
}
SUPPORTED_NAMES: frozenset[str] = frozenset(_NAME_KINDS)

# Text files above this are read only up to it (with a warning), so one giant log cannot eat the memory.
MAX_TEXT_BYTES: int = 64 * 1024 * 1024
_BLOCK_BYTES = 1 << 20
# Long texts are cut into sections of about this many characters so no step needs the file as one string.
_SECTION_CHARS = 1 << 20
_SNIFF_BYTES = 64 * 1024
_JSON_PRETTY_MAX = 1 << 20

_BOMS = (
    # UTF-32 LE starts with the UTF-16 LE BOM, so it must be tried first.
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def is_supported(path: Path) -> bool:
    """Whether load_document would try this file (by its name alone; nothing is read)."""
    return _kind_of(Path(path)) is not None


def _kind_of(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix:
        return _KINDS.get(suffix)
    return _NAME_KINDS.get(path.name.lower())


def load_document(path: Path) -> LoadedDocument:
    """Read one file. Raises SkippedFile or LoadFailed, whose messages are meant for the user."""
    path = Path(path)
    try:
        return _load(path)
    except (SkippedFile, LoadFailed) as error:
        error.path = path
        raise
    except PermissionError:
        raise LoadFailed(f"Could not read {path.name}: permission denied.", path) from None
    except FileNotFoundError:
        raise LoadFailed(f"Could not read {path.name}: the file no longer exists.", path) from None
    except UnicodeDecodeError:
        # Validation passed moments earlier, so the file changed while it was being read.
        raise LoadFailed(f"Could not read {path.name}: it changed while being read; it will be tried again.",
                         path) from None
    except OSError as error:
        raise LoadFailed(f"Could not read {path.name}: {error.strerror or error}.", path) from error
    except MemoryError:
        raise LoadFailed(f"Could not read {path.name}: not enough memory to load it.", path) from None


def _load(path: Path) -> LoadedDocument:
    info = path.stat()  # follows symlinks on purpose; the folder walker guards against loops
    if stat.S_ISDIR(info.st_mode):
        raise LoadFailed(f"{path.name} is a folder, not a file.")
    kind = _kind_of(path)
    if kind is None:
        suffix = path.suffix.lower()
        raise SkippedFile(f"unsupported type {suffix}" if suffix else "unsupported type (no file extension)")
    if not stat.S_ISREG(info.st_mode):
        # Opening a pipe or device could block forever or never end.
        raise SkippedFile("not a regular file (pipe, socket or device)")
    if info.st_size == 0:
        raise SkippedFile("empty file")
    if kind == "pdf":
        return _load_pdf(path)
    if kind == "docx":
        return _load_docx(path)
    source = _TextSource(path, info.st_size)
    warnings = list(source.warnings)
    parts: Iterable[tuple[str, int | None, str | None]]
    if kind == "html":
        parts = ((text, None, heading) for text, heading in _html_parts(source.blocks()))
        return _build(path, kind, parts, None, warnings, empty_reason="no text (only markup)")
    if kind == "markdown":
        parts = ((text, None, heading) for text, heading in _markdown_parts(_lines(source.blocks())))
    elif kind == "rst":
        parts = ((text, None, heading) for text, heading in _rst_parts(_lines(source.blocks())))
    elif kind == "json" and info.st_size <= _JSON_PRETTY_MAX:
        parts = ((text, None, None) for text in _plain_parts([_pretty_json("".join(source.blocks()))]))
    else:
        parts = ((text, None, None) for text in _plain_parts(source.blocks()))
    return _build(path, kind, parts, None, warnings)


def _build(path: Path, kind: str, parts: Iterable[tuple[str, int | None, str | None]], pages: int | None,
           warnings: list[str], empty_reason: str = "empty file") -> LoadedDocument:
    sections: list[Section] = []
    start = 0
    for text, page, heading in parts:
        text = text.strip()
        if not text:
            continue
        sections.append(Section(text, page, heading, start))
        start += len(text) + 2  # the "\n\n" that LoadedDocument.text puts between sections
    if not sections:
        raise SkippedFile(empty_reason)
    return LoadedDocument(path, kind, sections, pages, tuple(warnings))


# --- plain text: encoding, streaming --------------------------------------------------------------------------


class _TextSource:
    """A text file's decoded contents, produced in blocks so no step needs the whole file as one object."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.truncated = size > MAX_TEXT_BYTES
        self.limit = min(size, MAX_TEXT_BYTES)
        self.warnings: list[str] = []
        if self.truncated:
            self.warnings.append(f"only the first {MAX_TEXT_BYTES >> 20} MB of {size / (1 << 20):.0f} MB were read")
        self.errors = "strict"
        self.encoding = self._detect_encoding()

    def _raw_blocks(self) -> Iterator[bytes]:
        left = self.limit
        with open(self.path, "rb") as handle:
            while left > 0:
                block = handle.read(min(_BLOCK_BYTES, left))
                if not block:
                    return
                left -= len(block)
                yield block

    def _first_error(self, encoding: str) -> int | None:
        """Byte offset (roughly) where decoding fails, or None when the whole file decodes."""
        decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
        offset = 0
        try:
            for block in self._raw_blocks():
                decoder.decode(block)
                offset += len(block)
            # A cut-short file may end inside a character; that is the cut's fault, not the file's.
            decoder.decode(b"", final=not self.truncated)
        except UnicodeDecodeError as error:
            return max(0, offset + error.start)
        return None

    def _detect_encoding(self) -> str:
        with open(self.path, "rb") as handle:
            head = handle.read(_SNIFF_BYTES)
        for bom, encoding in _BOMS:
            if head.startswith(bom):
                if self._first_error(encoding) is not None:
                    raise LoadFailed(f"Could not read {self.path.name}: it is marked as {encoding} but is not valid "
                                     f"{encoding} text.")
                return encoding
        if b"\x00" in head[:8192]:
            raise SkippedFile("binary file")
        bad = self._first_error("utf-8")
        if bad is None:
            return "utf-8"
        if self._mostly_utf8():
            self.errors = "replace"
            return "utf-8"
        # The guesser sees the start plus the place UTF-8 broke, which may lie far into a big file.
        with open(self.path, "rb") as handle:
            handle.seek(max(0, bad - _SNIFF_BYTES // 2))
            around = handle.read(_SNIFF_BYTES)
        encoding = _guess_encoding(head + b"\n" + around if bad >= len(head) else head)
        if self._first_error(encoding) is not None:
            raise LoadFailed(f"Could not read {self.path.name}: its text encoding could not be worked out.")
        return encoding

    def _mostly_utf8(self) -> bool:
        """UTF-8 with a few damaged bytes (a cut-off log line, one bad paste) rather than a legacy encoding.

        Guessing a legacy encoding for such a file would turn every accent in it into mojibake, so the few
        bad bytes are replaced instead, and the user is told.
        """
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        bad = chars = well_formed = 0

        def tally(text: str) -> None:
            nonlocal bad, chars, well_formed
            replaced = text.count("\ufffd")
            bad += replaced
            chars += len(text)
            # Extra bytes of non-ASCII characters, less those of the replacement marks (3 bytes each).
            well_formed += len(text.encode("utf-8")) - len(text) - 2 * replaced

        for block in self._raw_blocks():
            tally(decoder.decode(block))
        tally(decoder.decode(b"", final=not self.truncated))
        if well_formed > 0 and bad <= max(1, chars // 1000):
            self.warnings.append(f"{bad} damaged character{'s' if bad > 1 else ''} replaced (not valid UTF-8)")
            return True
        return False

    def blocks(self) -> Iterator[str]:
        """Decoded text with every line ending turned into "\\n"; blocks mostly end at line breaks."""
        decoder = codecs.getincrementaldecoder(self.encoding)(errors=self.errors)
        carry = ""
        for raw in self._raw_blocks():
            text = carry + decoder.decode(raw)
            if text.endswith("\r"):
                # Hold a lone "\r" back: the next block may start with the "\n" of the same "\r\n".
                carry, text = "\r", text[:-1]
            else:
                carry = ""
            text = _clean_decoded(text)
            cut = text.rfind("\n") + 1
            if 0 < cut < len(text) and len(text) - cut < _BLOCK_BYTES:
                carry, text = text[cut:] + carry, text[:cut]
            if text:
                yield text
        if self.truncated:
            return  # the partial last line of a cut-short file is dropped
        tail = _clean_decoded(carry + decoder.decode(b"", final=True))
        if tail:
            yield tail


def _clean_decoded(text: str) -> str:
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in text:
        text = text.replace("\x00", "")
    return text


def _guess_encoding(sample: bytes) -> str:
    from charset_normalizer import from_bytes

    matches = list(from_bytes(sample))
    if not matches:
        raise SkippedFile("binary file")
    best = matches[0]
    # On short Western European samples charset-normalizer often ranks cp1250/cp1257 first although
    # cp1252 reads just as cleanly; cp1252 is far more common, so it wins near-ties.
    for match in matches:
        if match.encoding == "cp1252" and match.chaos <= best.chaos + 0.1:
            return "cp1252"
    return best.encoding


def _cut_point(text: str, limit: int) -> int:
    """Where to cut an oversized buffer, at most `limit`: a paragraph break, else a line break, else a space."""
    for separator in ("\n\n", "\n", " "):
        index = text.rfind(separator, limit // 2, limit)
        if index >= 0:
            return index + len(separator)
    return limit


def _plain_parts(blocks: Iterable[str]) -> Iterator[str]:
    buffer = ""
    for block in blocks:
        buffer = buffer + block if buffer else block
        while len(buffer) > _SECTION_CHARS:
            cut = _cut_point(buffer, _SECTION_CHARS)
            yield buffer[:cut]
            buffer = buffer[cut:]
    if buffer:
        yield buffer


def _lines(blocks: Iterable[str]) -> Iterator[str]:
    carry = ""
    for block in blocks:
        lines = (carry + block if carry else block).split("\n")
        carry = lines.pop()
        yield from lines
    if carry:
        yield carry


def _pretty_json(text: str) -> str:
    try:
        # Indented JSON gives the chunker line breaks to cut at; minified JSON would be one huge line.
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        return text


# --- Markdown and reStructuredText: sections at headings ------------------------------------------------------

_ATX = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT_UNDERLINE = re.compile(r" {0,3}(?:=+|-+)[ \t]*$")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_RST_ADORNMENT = re.compile(r"([!-/:-@\[-`{-~])\1{2,}[ \t]*$")


class _SectionBuffer:
    """Lines under the current heading; flushed at the next heading or when it grows too big."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.size = 0
        self.heading: str | None = None

    def add(self, line: str) -> None:
        self.lines.append(line)
        self.size += len(line) + 1

    def flush(self) -> tuple[str, str | None] | None:
        part = ("\n".join(self.lines), self.heading) if self.lines else None
        self.lines, self.size = [], 0
        return part

    def too_big(self, line: str) -> bool:
        # Cut oversized sections at a blank line when possible, anywhere once they get far too big.
        return self.size > _SECTION_CHARS and (not line.strip() or self.size > 2 * _SECTION_CHARS)


def _markdown_parts(lines: Iterable[str]) -> Iterator[tuple[str, str | None]]:
    buffer = _SectionBuffer()
    fence: str | None = None
    front_matter = False
    for number, line in enumerate(lines):
        if number == 0 and line.rstrip() == "---":
            front_matter = True  # YAML front matter: its closing "---" must not make a heading
        elif front_matter:
            front_matter = line.rstrip() not in ("---", "...")
        elif fence is not None:
            match = _FENCE.match(line)
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence) \
                    and not line[match.end():].strip():
                fence = None
        elif match := _FENCE.match(line):
            fence = match.group(1)
        elif heading := _ATX.match(line):
            if (part := buffer.flush()) is not None:
                yield part
            buffer.heading = (heading.group(2) or "").strip() or None
        elif _SETEXT_UNDERLINE.match(line) and buffer.lines and buffer.lines[-1].strip() \
                and not buffer.lines[-1].startswith(("    ", "\t")) \
                and not (len(buffer.lines) == 1 and _ATX.match(buffer.lines[0])):
            title = buffer.lines.pop()
            if (part := buffer.flush()) is not None:
                yield part
            buffer.heading = title.strip()
            buffer.add(title)
        if buffer.too_big(line) and (part := buffer.flush()) is not None:
            yield part
        buffer.add(line)
    if (part := buffer.flush()) is not None:
        yield part


def _rst_parts(lines: Iterable[str]) -> Iterator[tuple[str, str | None]]:
    buffer = _SectionBuffer()
    for line in lines:
        previous = buffer.lines
        if _RST_ADORNMENT.match(line) and previous and previous[-1].strip() and not _RST_ADORNMENT.match(previous[-1]):
            # A title is its text line plus an underline, after a blank line; with an identical overline
            # it may also be indented.
            overline = len(previous) >= 2 and previous[-2].rstrip() == line.rstrip()
            before = previous[-2] if len(previous) >= 2 else ""
            if overline or (not before.strip() and not previous[-1].startswith((" ", "\t"))):
                title = previous.pop()
                top = previous.pop() if overline else None
                if (part := buffer.flush()) is not None:
                    yield part
                buffer.heading = title.strip()
                if top is not None:
                    buffer.add(top)
                buffer.add(title)
                buffer.add(line)
                continue
        if buffer.too_big(line) and (part := buffer.flush()) is not None:
            yield part
        buffer.add(line)
    if (part := buffer.flush()) is not None:
        yield part


# --- HTML -------------------------------------------------------------------------------------------------------

# Blocks end a paragraph (a blank line in the text); these only end a line, so tables and lists stay together.
_HTML_BLOCKS = frozenset(
    "address article aside blockquote body caption details dialog div dl fieldset figcaption figure footer form "
    "h1 h2 h3 h4 h5 h6 header hr main nav ol p pre section summary table ul".split()
)
_HTML_LINES = frozenset({"br", "li", "dt", "dd", "tr", "option"})
_HTML_HIDDEN = frozenset({"script", "style", "noscript", "template", "svg", "object", "iframe"})
_HTML_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_WHITESPACE_RUN = re.compile(r"\s+")
_BLANK_LINES = re.compile(r"\n{3,}")


class _HtmlText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[tuple[str, str | None]] = []
        self._pieces: list[str] = []
        self._size = 0
        self._breaks = 0  # line breaks owed before the next text: block edges ask for 2, line edges for 1
        self._at_line_start = True
        self._heading: str | None = None
        self._heading_pieces: list[str] | None = None
        self._title_pieces: list[str] | None = None
        self._title: str | None = None
        self._in_head = False
        self._hidden = 0
        self._pre = 0

    def _break(self, count: int) -> None:
        self._breaks = max(self._breaks, count)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "head":
            self._in_head = True
            return
        if tag == "body":
            self._in_head = False  # </head> is optional in real pages
        if tag in _HTML_HIDDEN:
            self._hidden += 1
            return
        if self._hidden:
            return
        if tag == "title" and self._title is None:
            self._title_pieces = []
        if tag in _HTML_HEADINGS:
            self._flush()
            self._heading_pieces = []
        elif tag in _HTML_BLOCKS and self._size > _SECTION_CHARS:
            self._flush()
        if tag == "pre":
            self._pre += 1
        if tag == "br":
            self._breaks = min(2, self._breaks + 1)  # <br><br> is a blank line, unlike two nested blocks
        elif tag in _HTML_BLOCKS:
            self._break(2)
        elif tag in _HTML_LINES:
            self._break(1)
        elif tag in ("td", "th") and not self._breaks and not self._at_line_start:
            self._pieces.append("\t")
            self._at_line_start = True

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HTML_HIDDEN or self._hidden:
            return
        self.handle_starttag(tag, attrs)  # <br/>, <hr/>: their end adds nothing more

    def handle_endtag(self, tag: str) -> None:
        if tag == "head":
            self._in_head = False
            return
        if tag in _HTML_HIDDEN:
            self._hidden = max(0, self._hidden - 1)
            return
        if self._hidden:
            return
        if tag == "title" and self._title_pieces is not None:
            self._title = " ".join("".join(self._title_pieces).split()) or None
            self._title_pieces = None
            if self._heading is None:
                self._heading = self._title  # the page title heads whatever precedes the first <h1>
        if tag in _HTML_HEADINGS and self._heading_pieces is not None:
            self._heading = " ".join("".join(self._heading_pieces).split()) or self._heading
            self._heading_pieces = None
        if tag == "pre":
            self._pre = max(0, self._pre - 1)
        if tag in _HTML_BLOCKS:
            self._break(2)
        elif tag in _HTML_LINES and tag != "br":
            self._break(1)

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        if self._title_pieces is not None:
            self._title_pieces.append(data)
            return
        if self._in_head:
            return
        if not self._pre:
            data = _WHITESPACE_RUN.sub(" ", data)
            # Text arrives in pieces; a space that follows a break or another space adds nothing.
            if data.startswith(" ") and (self._breaks or self._at_line_start):
                data = data[1:]
            if not data:
                return
        if self._breaks:
            if self._pieces:
                self._pieces.append("\n" * self._breaks)
            self._breaks = 0
        self._pieces.append(data)
        self._size += len(data)
        self._at_line_start = data.endswith((" ", "\n"))
        if self._heading_pieces is not None:
            self._heading_pieces.append(data)

    def _flush(self) -> None:
        text = "\n".join(line.rstrip() for line in "".join(self._pieces).split("\n"))
        text = _BLANK_LINES.sub("\n\n", text).strip()
        if text:
            self.parts.append((text, self._heading))
        self._pieces, self._size, self._breaks, self._at_line_start = [], 0, 0, True

    def finish(self) -> list[tuple[str, str | None]]:
        self.close()
        self._flush()
        return self.parts


def _html_parts(blocks: Iterable[str]) -> Iterator[tuple[str, str | None]]:
    parser = _HtmlText()
    for block in blocks:
        parser.feed(block)
        # Hand finished sections on as they come so a huge page is never all in memory twice.
        if parser.parts:
            yield from parser.parts
            parser.parts.clear()
    yield from parser.finish()


# --- Word (.docx) ---------------------------------------------------------------------------------------------


def _load_docx(path: Path) -> LoadedDocument:
    with open(path, "rb") as handle:
        magic = handle.read(8)
    if magic.startswith(b"\xd0\xcf\x11\xe0"):
        # Word stores password-protected .docx files inside an OLE container instead of a zip.
        raise SkippedFile("encrypted Word document (needs a password)")
    if not magic.startswith(b"PK"):
        raise LoadFailed(f"{path.name} is not a valid Word document (damaged or misnamed).")
    import docx
    from docx.table import Table

    try:
        document = docx.Document(str(path))
        blocks = list(document.iter_inner_content())
    except Exception as error:  # python-docx raises many kinds for a damaged package
        raise LoadFailed(f"{path.name} is damaged and could not be read as a Word document ({_brief(error)}).") \
            from error
    parts: list[tuple[str, int | None, str | None]] = []
    warnings: list[str] = []
    heading: str | None = None
    current: list[str] = []
    for number, block in enumerate(blocks):
        if isinstance(block, Table):
            try:
                current.append("\n".join(_docx_rows(block)))
            except Exception as error:
                warnings.append(f"table {number + 1} could not be read and was left out ({_brief(error)})")
            continue
        text = block.text
        if _docx_is_heading(block) and text.strip():
            if current:
                parts.append(("\n\n".join(filter(str.strip, current)), None, heading))
            heading, current = " ".join(text.split()), []
        current.append(text)
    if current:
        parts.append(("\n\n".join(filter(str.strip, current)), None, heading))
    return _build(path, "docx", parts, None, warnings, empty_reason="no text in the document")


def _docx_is_heading(paragraph: object) -> bool:
    try:
        style = paragraph.style  # type: ignore[attr-defined]
        name = (style.name or "").lower() if style is not None else ""
        if name.startswith("heading") or name == "title":
            return True
        # Localised Word saves "Überschrift 1" etc.; the outline level marks a heading in any language.
        elements = [paragraph._p] + ([style.element] if style is not None else [])  # type: ignore[attr-defined]
        for element in elements:
            for level in element.xpath("./w:pPr/w:outlineLvl/@w:val"):
                if level.isdigit() and int(level) < 9:
                    return True
    except Exception:
        return False  # an odd style never stops the text from loading
    return False


def _docx_rows(table: object) -> list[str]:
    rows: list[str] = []
    for row in table.rows:  # type: ignore[attr-defined]
        seen: list[object] = []
        cells: list[str] = []
        for cell in row.cells:
            # A merged cell is returned once per grid column it spans; keep it once.
            if any(cell._tc is other for other in seen):
                continue
            seen.append(cell._tc)
            cells.append(" ".join(cell.text.split()))
        line = "\t".join(cells)
        if line.strip():
            rows.append(line)
    return rows


# --- PDF ------------------------------------------------------------------------------------------------------

# Zero-width characters, and U+FFFD, which pypdf writes for glyphs it cannot map: noise for search.
_INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff\ufffd]")
_INLINE_SPACE = re.compile(r"[^\S\n]+")
_LINE_EDGE_SPACE = re.compile(r" ?\n ?")
# A letter, a hyphen at the end of a line, a letter on the next: a word broken across lines.
_MIN_PIECE_CHARS = 80
_PDF_CACHE_PAGES = 100
_HYPHEN_BREAK = re.compile("(?<=[^\\W\\d_])([-\u00ad\u2010])\n(?=([^\\W\\d_]))")


def _join_hyphen(match: re.Match[str]) -> str:
    # "exam-\nple" was one word; "S-\nPlus" keeps its hyphen, since a capital rarely continues a word.
    if match.group(1) == "\u00ad" or match.group(2).islower():
        return ""
    return match.group(1)


def clean_pdf_text(raw: str) -> str:
    """NFKC (ligatures like "ﬁ" become "fi"), tidy spaces, rejoin hyphenated line breaks, keep paragraphs."""
    text = unicodedata.normalize("NFKC", raw)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n\n")
    text = _INVISIBLE.sub("", text)
    text = _INLINE_SPACE.sub(" ", text)
    text = _LINE_EDGE_SPACE.sub("\n", text)
    text = _HYPHEN_BREAK.sub(_join_hyphen, text)
    text = text.replace("\u00ad", "")
    return _BLANK_LINES.sub("\n\n", text).strip()


def _brief(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _load_pdf(path: Path) -> LoadedDocument:
    with open(path, "rb") as handle:
        if b"%PDF-" not in handle.read(1024):
            raise LoadFailed(f"{path.name} is not a PDF (damaged or misnamed).")
        handle.seek(0)
        # An open handle, not the path: given a path, pypdf reads the whole file into memory first.
        return _read_pdf(path, handle)


def _read_pdf(path: Path, handle: BinaryIO) -> LoadedDocument:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError

    try:
        reader = PdfReader(handle)
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("")
            except DependencyError:
                raise SkippedFile("encrypted PDF (reading it needs the 'cryptography' package)") from None
            except Exception as error:  # certificate security and other handlers pypdf does not support
                raise SkippedFile(f"encrypted PDF (unsupported encryption: {_brief(error)})") from error
            if not opened:
                raise SkippedFile("encrypted PDF (needs a password)")
        count = len(reader.pages)
    except SkippedFile:
        raise
    except Exception as error:  # pypdf raises many kinds for a damaged file
        raise LoadFailed(f"{path.name} is a damaged PDF and could not be opened ({_brief(error)}).") from error
    if count == 0:
        raise SkippedFile("PDF has no pages")
    outline = _pdf_outline(reader, count)
    _drop_parsed_objects(reader)
    parts: list[tuple[str, int | None, str | None]] = []
    warnings: list[str] = []
    failed: list[int] = []
    blank = 0
    heading: str | None = None
    for index in range(count):
        number = index + 1
        titles = outline.get(index, [])
        try:
            text = clean_pdf_text(reader.pages[index].extract_text() or "")
        except Exception as error:
            # One broken page must not cost the rest of a big PDF.
            failed.append(number)
            log.warning("%s: page %d skipped: %s", path, number, error)
            if len(failed) <= 20:
                warnings.append(f"page {number} could not be read and was left out ({_brief(error)})")
            text = ""
        else:
            blank += not text
        parts.extend((piece, number, title) for piece, title in _split_at_titles(text, titles, heading))
        if number % _PDF_CACHE_PAGES == 0:
            _drop_parsed_objects(reader)
        # The last bookmark on a page heads the pages after it, even when this page had no text.
        heading = titles[-1] if titles else heading
    if len(failed) > 20:
        warnings.append(f"{len(failed) - 20} more pages could not be read and were left out")
    if len(failed) == count:
        raise LoadFailed(f"{path.name} is a damaged PDF: none of its {count} pages could be read.")
    if not parts:
        raise SkippedFile("no text layer (scanned PDF?)")
    if blank:
        warnings.append(f"{blank} of {count} pages have no text (blank, or scanned images)")
    return _build(path, "pdf", parts, count, warnings)


def _drop_parsed_objects(reader: object) -> None:
    # pypdf keeps every object it has parsed, fonts and decoded page streams included, for the reader's
    # life: 2,400 pages of the R reference manual grew it by 150 MB. It re-reads what it needs later.
    cache = getattr(reader, "resolved_objects", None)
    if isinstance(cache, dict):
        cache.clear()


def _pdf_outline(reader: object, count: int) -> dict[int, list[str]]:
    """Bookmark titles by 0-based page, in document order; empty when the PDF has none or they are broken."""
    titles: dict[int, list[str]] = {}

    def walk(items: list[object]) -> None:
        for item in items:
            if isinstance(item, list):
                walk(item)
                continue
            page = reader.get_destination_page_number(item)  # type: ignore[attr-defined]
            title = " ".join(unicodedata.normalize("NFKC", str(getattr(item, "title", "") or "")).split())
            if title and page is not None and 0 <= page < count:
                titles.setdefault(page, []).append(title)

    try:
        walk(reader.outline)  # type: ignore[attr-defined]
    except Exception as error:  # bookmarks only add headings; a broken outline is no reason to fail
        log.info("ignoring unreadable PDF outline: %s", error)
        return {}
    return titles


def _split_at_titles(text: str, titles: Iterable[str], heading: str | None) -> Iterator[tuple[str, str | None]]:
    """Cut a page where its bookmarked titles start a line; text above a title keeps the heading before it."""
    cursor = 0
    for title in titles:
        # Bookmarks usually leave out the number the printed heading carries ("1.1 ", "A ", "2.3. ").
        pattern = re.compile(r"(?m)^(?:[0-9A-Z]{1,3}(?:\.[0-9]+)*\.?[ \t]+)?" + r"\s+".join(map(re.escape, title.split())),
                             re.IGNORECASE)
        match = pattern.search(text, cursor)
        if match is None:
            continue  # drawn as an image or worded differently: it heads the following pages only
        # A page number or running header above the first heading is not worth a section of its own.
        if match.start() > cursor and (cursor > 0 or match.start() >= _MIN_PIECE_CHARS):
            yield text[cursor:match.start()], heading
            cursor = match.start()
        heading = title
    if cursor < len(text):
        yield text[cursor:], heading
