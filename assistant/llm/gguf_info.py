"""What a GGUF model file is (name, size, quantization, context) without loading it.

gguf.GGUFReader parses every vocabulary entry and takes seconds on small models, too slow for
a model picker. This reader walks the header with struct instead, keeps only scalars and
strings, and skips arrays, so a file reads in milliseconds. It also checks that the file is
long enough to hold every tensor: a cut-short download otherwise fails later, inside
llama.cpp, with a message the user cannot act on.
"""

from __future__ import annotations

import json
import os
import struct
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import BinaryIO

import gguf

from assistant.errors import ModelError
from assistant.fileio import atomic_write_text

CACHE_FILE = "model_info_cache.json"
_CACHE_VERSION = 2
_MAGIC = b"GGUF"
_BLOCK = 1 << 20
# Chat templates run to tens of KB; anything longer than this is not worth holding for display.
_MAX_STRING = 1 << 20
# llama.cpp tensors have at most 4 dimensions; a larger count means we are reading garbage.
_MAX_DIMS = 8
# Smallest possible encodings, used to reject absurd counts before looping over them:
# a KV pair is key length (8) + type (4) + at least one value byte; a tensor info is
# name length (8) + n_dims (4) + one dim (8) + type (4) + offset (8).
_MIN_KV_BYTES = 13
_MIN_TENSOR_INFO_BYTES = 32

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_MAGIC_FMT = struct.Struct("4s")
_VERSION_COUNTS = struct.Struct("<IQQ")
_TYPE_OFFSET = struct.Struct("<IQ")
_SCALARS: dict[int, struct.Struct] = {
    gguf.GGUFValueType.UINT8: struct.Struct("<B"),
    gguf.GGUFValueType.INT8: struct.Struct("<b"),
    gguf.GGUFValueType.UINT16: struct.Struct("<H"),
    gguf.GGUFValueType.INT16: struct.Struct("<h"),
    gguf.GGUFValueType.UINT32: struct.Struct("<I"),
    gguf.GGUFValueType.INT32: struct.Struct("<i"),
    gguf.GGUFValueType.FLOAT32: struct.Struct("<f"),
    gguf.GGUFValueType.BOOL: struct.Struct("<?"),
    gguf.GGUFValueType.UINT64: struct.Struct("<Q"),
    gguf.GGUFValueType.INT64: struct.Struct("<q"),
    gguf.GGUFValueType.FLOAT64: struct.Struct("<d"),
}


@dataclass(frozen=True)
class ModelInfo:
    path: str
    file_size: int
    name: str
    architecture: str
    parameter_count: int
    quantization: str
    context_length: int | None
    n_layers: int | None
    vocab_size: int | None
    chat_template: str | None
    # For the memory estimate (assistant/llm/hardware.py): the KV cache's width per layer follows from these.
    embedding_length: int | None = None
    head_count: int | None = None
    head_count_kv: int | None = None
    key_length: int | None = None
    value_length: int | None = None
    license: str | None = None  # general.license, as the model's authors wrote it

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One line for a model list, e.g. 'SmolLM2 · llama · 135M params · Q4_1 · ctx 8192 · 94 MB'."""
        parts = [self.name, self.architecture, f"{_format_count(self.parameter_count)} params", self.quantization]
        if self.context_length:
            parts.append(f"ctx {self.context_length}")
        parts.append(_format_size(self.file_size))
        return " · ".join(parts)


class _Truncated(Exception):
    """The file ended in the middle of the header."""


class _Cursor:
    """Sequential little-endian reads over a file through a large buffer, with cheap skips."""

    def __init__(self, handle: BinaryIO, size: int, start: int = 0) -> None:
        self._handle = handle
        self.size = size
        self.pos = start
        self._buf = b""
        self._buf_start = 0

    def _window(self, n: int) -> int:
        """Make [pos, pos + n) available in the buffer and return its offset there."""
        if self.pos + n > self.size:
            raise _Truncated
        offset = self.pos - self._buf_start
        if 0 <= offset and offset + n <= len(self._buf):
            return offset
        self._handle.seek(self.pos)
        self._buf = self._handle.read(max(n, _BLOCK))
        self._buf_start = self.pos
        if len(self._buf) < n:
            raise _Truncated
        return 0

    def unpack(self, fmt: struct.Struct) -> tuple:
        offset = self._window(fmt.size)
        self.pos += fmt.size
        return fmt.unpack_from(self._buf, offset)

    def u32(self) -> int:
        return self.unpack(_U32)[0]

    def u64(self) -> int:
        return self.unpack(_U64)[0]

    def skip(self, n: int) -> None:
        if self.pos + n > self.size:
            raise _Truncated
        self.pos += n

    def string(self) -> str | None:
        """A length-prefixed string; None (and skipped) when too long to be worth keeping."""
        length = self.u64()
        if length > _MAX_STRING:
            self.skip(length)
            return None
        offset = self._window(length)
        self.pos += length
        return self._buf[offset : offset + length].decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        # The vocabulary is ~50k-250k strings, each a u64 length then bytes: walk the lengths
        # in the buffer directly, since a method call per string would dominate the read time.
        unpack_from = _U64.unpack_from
        for _ in range(count):
            offset = self._window(8)
            length = unpack_from(self._buf, offset)[0]
            self.pos += 8
            self.skip(length)


def check_gguf_file(path: str | Path) -> None:
    """Cheap check that path is a readable GGUF file with a sane header; raises ModelError."""
    path = Path(path).expanduser()
    with _open(path) as handle:
        _read_header(_Cursor(handle, _size_of(handle)), path)


def read_model_info(path: str | Path, cache_dir: Path | None = None) -> ModelInfo:
    """Read a model's metadata, or raise ModelError naming the file and what is wrong with it.

    With cache_dir, results are kept in cache_dir/model_info_cache.json, keyed by the file's
    absolute path, size and modification time.
    """
    path = Path(os.path.abspath(Path(path).expanduser()))
    with _open(path) as handle:
        stat = os.fstat(handle.fileno())
        if cache_dir is not None:
            cached = _cache_get(cache_dir, path, stat)
            if cached is not None:
                return cached
        info = _read_info(_Cursor(handle, stat.st_size), path)
    if cache_dir is not None:
        _cache_put(cache_dir, info, stat)
    return info


def _open(path: Path) -> BinaryIO:
    try:
        if path.is_dir():
            raise ModelError(f"{path} is a folder, not a model file.")
        handle = open(path, "rb")  # noqa: SIM115 - returned to the caller's with-block
    except FileNotFoundError:
        raise ModelError(f"Model file not found: {path}") from None
    except PermissionError:
        raise ModelError(f"{path} cannot be read: permission denied.") from None
    except OSError as exc:
        raise ModelError(f"{path} cannot be read: {exc.strerror or exc}.") from None
    if _size_of(handle) == 0:
        handle.close()
        raise ModelError(f"{path} is an empty file, not a GGUF model.")
    return handle


def _size_of(handle: BinaryIO) -> int:
    return os.fstat(handle.fileno()).st_size


def _read_header(cursor: _Cursor, path: Path) -> tuple[int, int]:
    """Validate magic, version and counts; return (tensor_count, kv_count)."""
    try:
        magic = cursor.unpack(_MAGIC_FMT)[0]
    except _Truncated:
        magic = b""
    if magic != _MAGIC:
        raise ModelError(f"{path} is not a GGUF model file (it does not start with the GGUF signature).")
    try:
        version, tensor_count, kv_count = cursor.unpack(_VERSION_COUNTS)
    except _Truncated:
        raise _damaged(path, "it ends inside its header") from None
    if version not in (2, 3):
        raise ModelError(f"{path} uses GGUF version {version}; only versions 2 and 3 are supported.")
    if kv_count * _MIN_KV_BYTES + tensor_count * _MIN_TENSOR_INFO_BYTES > cursor.size:
        raise _damaged(path, f"its header claims {tensor_count} tensors and {kv_count} settings, more than fit")
    return tensor_count, kv_count


def _read_info(cursor: _Cursor, path: Path) -> ModelInfo:
    tensor_count, kv_count = _read_header(cursor, path)
    try:
        values, array_lengths = _read_metadata(cursor, path, kv_count)
        tensors = _read_tensor_infos(cursor, path, tensor_count)
    except _Truncated:
        raise _damaged(path, "it ends inside its header") from None

    alignment = values.get("general.alignment", gguf.GGUF_DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise _damaged(path, f"its data alignment {alignment!r} is not a power of two")
    data_start = -(-cursor.pos // alignment) * alignment

    parameter_count = 0
    elements_by_type: Counter[int] = Counter()
    data_end = data_start
    for dims, ggml_type, offset in tensors:
        elements = 1
        for dim in dims:
            elements *= dim
        parameter_count += elements
        elements_by_type[ggml_type] += elements
        # An unknown (newer) quantization has an unknown byte size: check what we can.
        block, type_size = gguf.GGML_QUANT_SIZES.get(ggml_type, (1, 0))
        data_end = max(data_end, data_start + offset + elements * type_size // block)
    if data_end > cursor.size:
        have, need = _format_mb(cursor.size), _format_mb(data_end)
        if have == need:
            have, need = f"{cursor.size:,} bytes", f"{data_end:,} bytes"
        raise ModelError(f"{path} is incomplete or damaged: the file is {have} but its tensors need {need}. "
                         "Download it again.")

    architecture = _str_or_none(values.get("general.architecture")) or "unknown"
    vocab_size = array_lengths.get("tokenizer.ggml.tokens", values.get(f"{architecture}.vocab_size"))
    return ModelInfo(
        path=str(path),
        file_size=cursor.size,
        name=_str_or_none(values.get("general.name")) or path.stem,
        architecture=architecture,
        parameter_count=parameter_count,
        quantization=_quantization(values.get("general.file_type"), elements_by_type),
        context_length=_int_or_none(values.get(f"{architecture}.context_length")),
        n_layers=_int_or_none(values.get(f"{architecture}.block_count")),
        vocab_size=_int_or_none(vocab_size),
        chat_template=_str_or_none(values.get("tokenizer.chat_template")),
        embedding_length=_int_or_none(values.get(f"{architecture}.embedding_length")),
        head_count=_int_or_none(values.get(f"{architecture}.attention.head_count")),
        head_count_kv=_int_or_none(values.get(f"{architecture}.attention.head_count_kv")),
        key_length=_int_or_none(values.get(f"{architecture}.attention.key_length")),
        value_length=_int_or_none(values.get(f"{architecture}.attention.value_length")),
        license=_str_or_none(values.get("general.license")),
    )


def _read_metadata(cursor: _Cursor, path: Path, kv_count: int) -> tuple[dict[str, object], dict[str, int]]:
    values: dict[str, object] = {}
    array_lengths: dict[str, int] = {}
    for _ in range(kv_count):
        key = cursor.string() or ""
        value_type = cursor.u32()
        if value_type == gguf.GGUFValueType.ARRAY:
            item_type, count = cursor.u32(), cursor.u64()
            array_lengths[key] = count
            _skip_array(cursor, path, item_type, count)
        elif value_type == gguf.GGUFValueType.STRING:
            values[key] = cursor.string()
        elif value_type in _SCALARS:
            values[key] = cursor.unpack(_SCALARS[value_type])[0]
        else:
            raise _damaged(path, f"setting {key!r} has unknown type {value_type}")
    return values, array_lengths


def _skip_array(cursor: _Cursor, path: Path, item_type: int, count: int) -> None:
    if item_type in _SCALARS:
        cursor.skip(count * _SCALARS[item_type].size)
    elif item_type == gguf.GGUFValueType.STRING:
        cursor.skip_strings(count)
    elif item_type == gguf.GGUFValueType.ARRAY:
        for _ in range(count):
            inner_type, inner_count = cursor.u32(), cursor.u64()
            _skip_array(cursor, path, inner_type, inner_count)
    else:
        raise _damaged(path, f"an array has unknown type {item_type}")


def _read_tensor_infos(cursor: _Cursor, path: Path, tensor_count: int) -> list[tuple[tuple[int, ...], int, int]]:
    tensors = []
    for _ in range(tensor_count):
        cursor.skip(cursor.u64())  # the tensor's name
        n_dims = cursor.u32()
        if n_dims > _MAX_DIMS:
            raise _damaged(path, f"a tensor claims {n_dims} dimensions")
        dims = cursor.unpack(struct.Struct(f"<{n_dims}Q"))
        ggml_type, offset = cursor.unpack(_TYPE_OFFSET)
        tensors.append((dims, ggml_type, offset))
    return tensors


def _quantization(file_type: object, elements_by_type: Counter[int]) -> str:
    if isinstance(file_type, int):
        try:
            name = gguf.LlamaFileType(file_type).name
        except ValueError:
            name = ""
        if name and name != "GUESSED":
            return name.removeprefix("MOSTLY_").removeprefix("ALL_")
    if not elements_by_type:
        return "unknown"
    # Weighted by elements, not tensor count: the many small F32 norm tensors would otherwise win.
    ggml_type = elements_by_type.most_common(1)[0][0]
    try:
        return gguf.GGMLQuantizationType(ggml_type).name
    except ValueError:
        return f"type {ggml_type}"


def _damaged(path: Path, why: str) -> ModelError:
    return ModelError(f"{path} is incomplete or damaged: {why}. Download it again.")


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _int_or_none(value: object) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _format_count(n: int) -> str:
    if n >= 1_000_000_000:
        return f"{n / 1e9:.1f}B".replace(".0B", "B")
    if n >= 1_000_000:
        return f"{n / 1e6:.0f}M"
    return f"{n / 1e3:.0f}K"


def _format_size(n: int) -> str:
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f} GB"
    return f"{n / (1 << 20):.0f} MB"


def _format_mb(n: int) -> str:
    return f"{n / (1 << 20):.1f} MB"


def _cache_key_matches(entry: object, stat: os.stat_result) -> bool:
    return isinstance(entry, dict) and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns


def _load_cache(cache_dir: Path) -> dict:
    try:
        data = json.loads((cache_dir / CACHE_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    if not isinstance(data, dict) or data.get("version") != _CACHE_VERSION or not isinstance(data.get("entries"), dict):
        return {}
    return data["entries"]


def _cache_get(cache_dir: Path, path: Path, stat: os.stat_result) -> ModelInfo | None:
    entry = _load_cache(cache_dir).get(str(path))
    if not _cache_key_matches(entry, stat):
        return None
    info = entry.get("info")
    if not isinstance(info, dict) or set(info) != {f.name for f in fields(ModelInfo)}:
        return None
    return ModelInfo(**info)


def _cache_put(cache_dir: Path, info: ModelInfo, stat: os.stat_result) -> None:
    entries = _load_cache(cache_dir)
    entries[info.path] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "info": info.as_dict()}
    try:
        atomic_write_text(cache_dir / CACHE_FILE, json.dumps({"version": _CACHE_VERSION, "entries": entries}))
    except OSError:
        pass  # the cache only saves time; a read-only or full disk must not stop the app showing models
