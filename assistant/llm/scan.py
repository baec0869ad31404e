"""Models already on this computer, from other apps' folders, offered without copying a byte.

- Ollama keeps each model as a blob named by its SHA-256 (blobs/sha256-HEX, no extension); the
  manifests (manifests/HOST/NAMESPACE/MODEL/TAG, JSON) say which blob holds a tag's GGUF weights.
- LM Studio keeps plain .gguf files under models/PUBLISHER/REPO/.
- The Hugging Face cache keeps models--ORG--NAME/snapshots/REVISION/FILE, each a link into blobs/.
- Any folder the user adds is searched for .gguf files too.

Every hit's header is read (milliseconds) so a vision projector, a later part of a split model or
a damaged file is not offered as a chat model.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from assistant.errors import ModelError

OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
MAX_DEPTH = 6  # a user folder such as the home folder is not walked to the bottom
MAX_FILES = 2000  # directory entries looked at per folder tree, so a scan of a big folder stays quick
_LATER_PART = re.compile(r"-0*([2-9]|\d{2,})-of-\d+\.gguf$", re.IGNORECASE)
_DIGEST = re.compile(r"^sha256[:-]([0-9a-f]{64})$")


@dataclass(frozen=True)
class Found:
    path: Path
    name: str  # what the other app calls it (Ollama's "qwen2.5:0.5b", a file name elsewhere)
    source: str  # Ollama | LM Studio | Hugging Face cache | a folder's path
    size: int


def ollama_dirs(home: Path) -> list[Path]:
    env = os.environ.get("OLLAMA_MODELS")
    dirs = [Path(env)] if env else []
    dirs.append(home / ".ollama" / "models")
    if sys.platform.startswith("linux"):
        dirs.append(Path("/usr/share/ollama/.ollama/models"))  # the system service's own home
    return dirs


def lmstudio_dirs(home: Path) -> list[Path]:
    return [home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"]


def huggingface_dirs(home: Path) -> list[Path]:
    dirs = []
    if os.environ.get("HF_HUB_CACHE"):
        dirs.append(Path(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        dirs.append(Path(os.environ["HF_HOME"]) / "hub")
    dirs.append(home / ".cache" / "huggingface" / "hub")
    return dirs


def scan(folders: Iterable[Path] = (), home: Path | None = None) -> list[Found]:
    """Chat models found in Ollama's, LM Studio's and the Hugging Face cache's folders and in folders."""
    home = Path.home() if home is None else home
    found: list[Found] = []
    for d in ollama_dirs(home):
        found += _ollama(d)
    for d in lmstudio_dirs(home):
        found += [Found(p, p.name, "LM Studio", p.stat().st_size) for p in _gguf_files(d)]
    for d in huggingface_dirs(home):
        found += _huggingface(d)
    for d in folders:
        d = Path(d).expanduser()
        found += [Found(p, p.name, str(d), p.stat().st_size) for p in _gguf_files(d)]

    usable: list[Found] = []
    seen: set[Path] = set()
    for hit in found:
        try:
            key = hit.path.resolve()
        except OSError:
            continue
        if key in seen or not _is_chat_model(hit.path):
            continue
        seen.add(key)
        usable.append(hit)
    return usable


def _ollama(models: Path) -> list[Found]:
    manifests = models / "manifests"
    if not manifests.is_dir():
        return []
    hits = []
    for manifest in _files(manifests):
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        layers = data.get("layers") if isinstance(data, dict) else None
        for layer in layers if isinstance(layers, list) else []:
            if not isinstance(layer, dict) or layer.get("mediaType") != OLLAMA_MODEL_LAYER:
                continue
            match = _DIGEST.match(str(layer.get("digest", "")))
            blob = models / "blobs" / f"sha256-{match.group(1)}" if match else None
            if blob is not None and blob.is_file():
                hits.append(Found(blob, _ollama_name(manifests, manifest), "Ollama", blob.stat().st_size))
    return hits


def _ollama_name(manifests: Path, manifest: Path) -> str:
    # manifests/registry.ollama.ai/library/qwen2.5/0.5b -> qwen2.5:0.5b; other namespaces keep theirs
    parts = manifest.relative_to(manifests).parts
    host, *path, tag = parts if len(parts) >= 3 else ("", *parts[:-1], parts[-1])
    if path and path[0] == "library" and host == "registry.ollama.ai":
        path = path[1:]
    prefix = "" if host in ("", "registry.ollama.ai") else host + "/"
    return f"{prefix}{'/'.join(path)}:{tag}"


def _huggingface(hub: Path) -> list[Found]:
    if not hub.is_dir():
        return []
    hits = []
    for repo in sorted(hub.glob("models--*")):
        name = repo.name[len("models--"):].replace("--", "/")
        for path in _gguf_files(repo / "snapshots"):
            hits.append(Found(path, f"{name}/{path.name}", "Hugging Face cache", path.stat().st_size))
    return hits


def _gguf_files(root: Path) -> list[Path]:
    return [p for p in _files(root) if p.name.lower().endswith(".gguf")]


def _files(root: Path) -> list[Path]:
    """Files under root (following the links the HF cache is made of), bounded in depth and count."""
    if not root.is_dir():
        return []
    out: list[Path] = []
    looked = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=lambda _e: None):
        depth = len(Path(dirpath).relative_to(root).parts)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if depth < MAX_DEPTH else []
        for name in sorted(filenames):
            looked += 1
            if looked > MAX_FILES:
                return out
            path = Path(dirpath) / name
            if path.is_file():  # a link into the HF blobs counts; a dangling one does not
                out.append(path)
    return out


def _is_chat_model(path: Path) -> bool:
    if _LATER_PART.search(path.name) or "mmproj" in path.name.lower():
        return False
    from assistant.llm.gguf_info import read_model_info

    try:
        info = read_model_info(path)
    except ModelError:
        return False
    # a vision projector (clip) or an embedding-only model would load and then fail to chat
    return info.architecture not in ("clip", "bert", "nomic-bert")


def iter_sources(home: Path | None = None) -> Iterator[tuple[str, Path]]:
    """The folders a scan looks in, for the user to see."""
    home = Path.home() if home is None else home
    for d in ollama_dirs(home):
        yield "Ollama", d
    for d in lmstudio_dirs(home):
        yield "LM Studio", d
    for d in huggingface_dirs(home):
        yield "Hugging Face cache", d
