"""The model library: the built-in catalog, labels for a computer, the user's catalog, downloads of a
catalog entry from a local server (resumed, wrong checksum, full disk), and models found on disk in
Ollama's, LM Studio's and the Hugging Face cache's real folder layouts."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from assistant.config import Settings, config_dir, models_dir
from assistant.errors import DownloadError, ModelError
from assistant.llm import catalog as cat
from assistant.llm.models import download_model
from assistant.llm.scan import scan
from tests.test_models import _Server, serving

GB = 1 << 30
LAPTOP = cat.Machine(ram_available=6 * GB, ram_total=8 * GB, cores=4)
SMALL = cat.Machine(ram_available=1 * GB, ram_total=2 * GB, cores=2)
WORKSTATION = cat.Machine(ram_available=60 * GB, ram_total=64 * GB, cores=16, gpu_name="RTX 4090", vram_free=22 * GB)


@pytest.fixture(scope="module")
def builtin() -> cat.Catalog:
    return cat.load_catalog(Path("/nonexistent"))


def test_builtin_catalog_is_complete(builtin: cat.Catalog) -> None:
    entries = builtin.entries
    assert 8 <= len(entries) <= 15
    assert not builtin.problems
    sizes = [e.parameters for e in entries]
    assert min(sizes) <= 0.6 and max(sizes) >= 14
    assert len({e.id for e in entries}) == len(entries)
    for e in entries:
        assert re.fullmatch(r"[0-9a-f]{64}", e.sha256 or ""), e.id
        # pinned to a revision, so the hash cannot drift when a publisher re-uploads
        assert re.fullmatch(r"https://huggingface\.co/[^/]+/[^/]+/resolve/[0-9a-f]{40}/" + re.escape(e.file), e.url), e.id
        assert e.file.endswith(".gguf") and e.size > 100e6 and e.license and e.quantization and e.good_at
        assert e.context_length >= 8192 and e.layers and e.kv_heads <= e.heads
    kinds = {e.kind for e in entries}
    assert kinds == {"chat", "code", "reasoning"}
    assert any(e.tools for e in entries) and any(not e.tools for e in entries)


def test_catalog_entry_matches_the_real_file(builtin: cat.Catalog, qwen: Path) -> None:
    """The Qwen2.5-Coder-0.5B entry's size and SHA-256 (the publisher's) are those of the real GGUF
    assembled from its PyPI parts: an independent check of the catalog's data."""
    from assistant.llm.gguf_info import read_model_info

    entry = builtin.find("qwen2.5-coder-0.5b")
    assert qwen.stat().st_size == entry.size
    assert _sha(qwen) == entry.sha256
    info = read_model_info(qwen)
    assert (info.n_layers, info.head_count, info.head_count_kv, info.embedding_length, info.vocab_size) == \
        (entry.layers, entry.heads, entry.kv_heads, entry.embedding, entry.vocab)
    # the estimate from the catalog's numbers is the estimate from the file's header
    from assistant.llm.hardware import estimate

    assert abs(estimate(entry.model_info(), 4096, 0).in_ram - estimate(info, 4096, 0).in_ram) < 32 << 20


def test_labels_follow_the_machine(builtin: cat.Catalog) -> None:
    big = builtin.find("qwen3-14b")
    small = builtin.find("qwen2.5-0.5b")
    assert cat.assess(small, LAPTOP).label == cat.FITS_RAM
    assert cat.assess(big, SMALL).label == cat.WONT_FIT
    assert "2.0 GB" in cat.assess(big, SMALL).why
    assert cat.assess(big, LAPTOP).label in (cat.SLOW, cat.WONT_FIT)
    assert cat.assess(big, WORKSTATION).label == cat.FITS_GPU
    # a GPU too small for a model falls back to the CPU's label
    tiny_gpu = replace(WORKSTATION, vram_free=1 * GB)
    assert cat.assess(big, tiny_gpu).label != cat.FITS_GPU
    # fits in total memory but not in what is free now
    busy = cat.Machine(ram_available=2 * GB, ram_total=32 * GB, cores=8)
    assert cat.assess(builtin.find("qwen2.5-7b"), busy).label == cat.SLOW
    assert "free" in cat.assess(builtin.find("qwen2.5-7b"), busy).why


def test_recommendation_is_the_most_capable_general_model_that_fits(builtin: cat.Catalog) -> None:
    for machine in (SMALL, LAPTOP, WORKSTATION):
        best = cat.recommend(builtin, machine)
        assert best is not None and best.kind == "chat"
        assert cat.assess(best, machine).label in (cat.FITS_RAM, cat.FITS_GPU)
        for other in builtin.entries:
            a = cat.assess(other, machine)
            if other.kind == "chat" and (a.label == cat.FITS_GPU or (
                    a.label == cat.FITS_RAM and a.tokens_per_second >= cat.RECOMMEND_TOKENS_PER_SECOND)):
                assert other.parameters <= best.parameters
        assert cat.assess(best, machine).label == cat.FITS_GPU or \
            cat.assess(best, machine).tokens_per_second >= cat.RECOMMEND_TOKENS_PER_SECOND
    assert cat.recommend(builtin, WORKSTATION).parameters > cat.recommend(builtin, SMALL).parameters
    rows = cat.catalog_rows(builtin, LAPTOP)
    assert sum(r["recommended"] for r in rows) == 1
    nothing = cat.Machine(ram_available=100 << 20, ram_total=200 << 20, cores=1)
    assert cat.recommend(builtin, nothing) is None


def test_find_by_id_or_unique_part(builtin: cat.Catalog) -> None:
    assert builtin.find("QWEN3-4B").id == "qwen3-4b"
    assert builtin.find("phi").id == "phi-4-mini"
    with pytest.raises(ModelError, match="several"):
        builtin.find("qwen3")
    with pytest.raises(ModelError, match="No model 'gpt-9'"):
        builtin.find("gpt-9")


def _user_entry(**changes) -> dict:
    entry = {"id": "house-model", "name": "House model", "url": "http://127.0.0.1:1/house.gguf", "size": 94_000_000,
             "sha256": "ab" * 32, "parameters": 0.135, "context_length": 8192, "good_at": "Testing",
             "license": "Apache-2.0", "quantization": "Q4_1",
             "architecture": {"layers": 30, "heads": 9, "kv_heads": 3, "head_dim": 64, "embedding": 576, "vocab": 49152}}
    entry.update(changes)
    return entry


def _write_user_catalog(home: Path, data: object) -> Path:
    path = config_dir(home) / "catalog.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) if not isinstance(data, str) else data, encoding="utf-8")
    return path


def test_user_catalog_adds_and_replaces(isolated_home: Path, builtin: cat.Catalog) -> None:
    _write_user_catalog(isolated_home, {"models": [_user_entry(), _user_entry(id="qwen2.5-0.5b", name="Mirror")]})
    catalog = cat.load_catalog(isolated_home)
    assert len(catalog.entries) == len(builtin.entries) + 1
    assert catalog.find("house-model").source.endswith("catalog.json")
    assert catalog.find("qwen2.5-0.5b").name == "Mirror"  # same id: the user's entry wins
    _write_user_catalog(isolated_home, {"replace_builtin": True, "models": [_user_entry()]})
    assert [e.id for e in cat.load_catalog(isolated_home).entries] == ["house-model"]


@pytest.mark.parametrize("bad, why", [
    ("{not json", "Expecting property name"),
    ({"entries": []}, '"models" list'),
    ({"models": [{"id": "x"}]}, "has no 'name'"),
    ({"models": [_user_entry(size="big")]}, "bad value"),
    ({"models": [_user_entry(kind="vision")]}, "kind must be one of"),
])
def test_a_bad_user_catalog_is_reported_and_the_builtin_kept(isolated_home: Path, builtin: cat.Catalog,
                                                              bad: object, why: str) -> None:
    path = _write_user_catalog(isolated_home, bad)
    catalog = cat.load_catalog(isolated_home)
    assert len(catalog.entries) == len(builtin.entries)
    assert len(catalog.problems) == 1 and str(path) in catalog.problems[0] and why in catalog.problems[0]


def test_this_machine_is_read() -> None:
    machine = cat.this_machine(gpu_usable=False)
    assert machine.cores >= 1 and machine.ram_total and 0 < machine.ram_available <= machine.ram_total
    assert "CPU cores" in machine.describe()


# --- downloading a catalog entry from a local server ------------------------------------------------------


@pytest.fixture
def qwen_server(qwen: Path, tmp_path: Path) -> Iterator[_Server]:
    with serving(qwen, tmp_path) as srv:
        yield srv


def _local(entry: cat.Entry, server: _Server) -> cat.Entry:
    return replace(entry, url=server.url("/model.gguf"))


def test_download_of_a_catalog_entry_resumes_and_is_checked(qwen_server: _Server, builtin: cat.Catalog,
                                                            tmp_path: Path) -> None:
    entry = _local(builtin.find("qwen2.5-coder-0.5b"), qwen_server)
    folder = tmp_path / "models"
    qwen_server.drop_after = 150_000_000  # the connection breaks part way
    with pytest.raises(DownloadError, match="lost after 150,000,000 of 491,400,064 bytes"):
        download_model(entry.url, folder, sha256=entry.sha256, filename=entry.file, size=entry.size)
    part = folder / (entry.file + ".part")
    assert part.stat().st_size == 150_000_000
    assert cat.downloaded_path(entry, folder) is None
    seen: list[tuple[int, int | None]] = []
    path = download_model(entry.url, folder, sha256=entry.sha256, filename=entry.file, size=entry.size,
                          progress=lambda done, total: seen.append((done, total)))
    assert qwen_server.requests[-1] == ("/model.gguf", "bytes=150000000-")
    assert seen[0] == (150_000_000, entry.size) and seen[-1] == (entry.size, entry.size)
    assert path == folder / entry.file and not part.exists()
    assert cat.downloaded_path(entry, folder) == path
    assert _sha(path) == entry.sha256


def test_download_with_the_wrong_checksum_is_deleted(qwen_server: _Server, builtin: cat.Catalog,
                                                     tmp_path: Path) -> None:
    entry = _local(builtin.find("qwen2.5-coder-0.5b"), qwen_server)
    folder = tmp_path / "models"
    wrong = "0" * 64
    with pytest.raises(DownloadError, match=f"should be {wrong} but is {entry.sha256}. It was deleted"):
        download_model(entry.url, folder, sha256=wrong, filename=entry.file, size=entry.size)
    assert list(folder.iterdir()) == []


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 64 MB filesystem (tmpfs): the disk a 469 MB model does not fit on."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_is_refused_before_downloading(qwen_server: _Server, builtin: cat.Catalog, small_disk: Path) -> None:
    entry = _local(builtin.find("qwen2.5-coder-0.5b"), qwen_server)
    with pytest.raises(DownloadError, match=r"Not enough free disk space: the model needs 491 MB more and .* 67 MB free"):
        download_model(entry.url, small_disk, sha256=entry.sha256, filename=entry.file, size=entry.size)
    assert qwen_server.requests == []  # it did not even connect
    # without a size from the catalog, the server's Content-Length is checked before writing
    with pytest.raises(DownloadError, match="Not enough free disk space"):
        download_model(entry.url, small_disk, filename=entry.file)
    assert len(qwen_server.requests) == 1 and list(small_disk.iterdir()) == []


def test_disk_filling_up_during_a_download_keeps_the_partial(qwen_server: _Server, builtin: cat.Catalog,
                                                             small_disk: Path) -> None:
    entry = _local(builtin.find("qwen2.5-coder-0.5b"), qwen_server)
    qwen_server.no_length = True  # the server does not say the size: only the write finds out
    with pytest.raises(DownloadError, match=r"The disk holding .* is full after \d+ MB\. Free some space"):
        download_model(entry.url, small_disk, filename=entry.file)
    part = small_disk / (entry.file + ".part")
    assert 30e6 < part.stat().st_size <= 64 << 20  # what fitted is kept for the resume


# --- models already on this computer -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def smol() -> Path:
    from assistant.llm.models import builtin_model_path

    return builtin_model_path()


def _clip_gguf(path: Path) -> None:
    """A real GGUF of a vision projector (architecture clip): not a chat model."""
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "clip")
    writer.add_name("mmproj")
    writer.add_tensor("v.patch_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture
def user_home(tmp_path: Path, smol: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home folder with Ollama's, LM Studio's and the Hugging Face cache's real layouts, each holding
    the real SmolLM2 GGUF, plus things that must not be offered."""
    home = tmp_path / "user"
    digest = _sha(smol)
    # Ollama: the weights are a blob named by its digest; a manifest per tag names the blob.
    ollama = home / ".ollama" / "models"
    (ollama / "blobs").mkdir(parents=True)
    shutil.copy(smol, ollama / "blobs" / f"sha256-{digest}")
    (ollama / "blobs" / ("sha256-" + "1" * 64)).write_text('{"stop": ["<|im_end|>"]}')  # params blob
    manifest = {"schemaVersion": 2, "config": {"digest": "sha256:" + "2" * 64},
                "layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}",
                            "size": smol.stat().st_size},
                           {"mediaType": "application/vnd.ollama.image.params", "digest": "sha256:" + "1" * 64}]}
    tag = ollama / "manifests" / "registry.ollama.ai" / "library" / "smollm2" / "135m"
    tag.parent.mkdir(parents=True)
    tag.write_text(json.dumps(manifest))
    gone = ollama / "manifests" / "registry.ollama.ai" / "library" / "deleted" / "latest"
    gone.parent.mkdir(parents=True)
    gone.write_text(json.dumps({**manifest, "layers": [{**manifest["layers"][0], "digest": "sha256:" + "3" * 64}]}))
    # LM Studio: plain files under PUBLISHER/REPO, with a projector and a later split part beside them.
    lms = home / ".lmstudio" / "models" / "HuggingFaceTB" / "SmolLM2-135M-Instruct-GGUF"
    lms.mkdir(parents=True)
    shutil.copy(smol, lms / "SmolLM2-135M-Instruct-Q4_1.gguf")
    _clip_gguf(lms / "mmproj-model-f16.gguf")
    os.link(lms / "SmolLM2-135M-Instruct-Q4_1.gguf", lms / "big-model-00002-of-00003.gguf")
    (lms / "README.md").write_text("not a model")
    # Hugging Face cache: snapshots/REV/FILE is a relative link into blobs/.
    repo = home / ".cache" / "huggingface" / "hub" / "models--HuggingFaceTB--SmolLM2-135M-Instruct-GGUF"
    (repo / "blobs").mkdir(parents=True)
    shutil.copy(smol, repo / "blobs" / digest)
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "smollm2-135m-instruct-q4_1.gguf").symlink_to(Path("../../blobs") / digest)
    (snapshot / "broken.gguf").symlink_to(Path("../../blobs") / ("f" * 64))  # an unfinished download
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return home


def test_scan_finds_models_in_other_apps_folders(user_home: Path, smol: Path, tmp_path: Path) -> None:
    mine = tmp_path / "my models" / "nested"
    mine.mkdir(parents=True)
    shutil.copy(smol, mine / "copy.gguf")
    (mine / "truncated.gguf").write_bytes(smol.read_bytes()[:1000])  # a damaged file is not offered

    found = scan([tmp_path / "my models"], user_home)
    by_source = {f.source: f for f in found}
    assert sorted(by_source) == sorted(["Ollama", "LM Studio", "Hugging Face cache", str(tmp_path / "my models")])
    assert len(found) == 4
    assert by_source["Ollama"].name == "smollm2:135m"
    assert by_source["Ollama"].path.name == f"sha256-{_sha(smol)}"
    assert by_source["LM Studio"].name == "SmolLM2-135M-Instruct-Q4_1.gguf"
    assert by_source["Hugging Face cache"].name == "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/smollm2-135m-instruct-q4_1.gguf"
    assert by_source["Hugging Face cache"].path.name == "smollm2-135m-instruct-q4_1.gguf"
    assert by_source[str(tmp_path / "my models")].path == mine / "copy.gguf"
    assert all(f.size == smol.stat().st_size for f in found)


def test_ollama_models_folder_from_the_environment(user_home: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    moved = tmp_path / "ollama-elsewhere"
    shutil.move(user_home / ".ollama" / "models", moved)
    monkeypatch.setenv("OLLAMA_MODELS", str(moved))
    assert [f.name for f in scan([], user_home) if f.source == "Ollama"] == ["smollm2:135m"]


def test_a_found_model_loads_where_it_is(user_home: Path, isolated_home: Path) -> None:
    from assistant.llm.engine import Engine
    from assistant.llm.models import add_model, list_models

    blob = next(f for f in scan([], user_home) if f.source == "Ollama").path
    registered = add_model(blob, isolated_home)
    assert registered == blob and blob in list_models(isolated_home)
    assert not any(p.name.startswith("sha256-") for p in models_dir(isolated_home).iterdir())  # nothing copied
    engine = Engine(blob, n_ctx=512)
    try:
        assert engine.tokenize("Hello") and engine.formatter is not None
    finally:
        engine.close()


# --- the CLI ------------------------------------------------------------------------------------------


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "assistant", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_cli_catalog_lists_labels_and_one_recommendation(isolated_home: Path, builtin: cat.Catalog) -> None:
    result = _cli("models", "catalog", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert "CPU cores" in data["machine"]
    assert [r["id"] for r in data["models"]] == [e.id for e in builtin.entries]
    assert sum(r["recommended"] for r in data["models"]) == 1
    assert {r["label"] for r in data["models"]} <= {cat.FITS_GPU, cat.FITS_RAM, cat.SLOW, cat.WONT_FIT}
    text = _cli("models", "catalog")
    assert text.returncode == 0 and "★" in text.stdout and "qwen3-14b" in text.stdout


def test_cli_get_downloads_checks_and_switches(isolated_home: Path, qwen_server: _Server,
                                               builtin: cat.Catalog) -> None:
    entry = builtin.find("qwen2.5-coder-0.5b")
    raw = json.loads(cat.BUILTIN_CATALOG.read_text())["models"]
    mirrored = [{**m, "url": qwen_server.url("/model.gguf")} for m in raw if m["id"] == entry.id]
    _write_user_catalog(isolated_home, {"replace_builtin": True, "models": mirrored})
    result = _cli("models", "get", "coder")
    assert result.returncode == 0, result.stderr
    path = models_dir(isolated_home) / entry.file
    assert f"Downloaded {path}" in result.stdout and "now uses Qwen2.5-Coder-0.5B-Instruct" in result.stdout
    assert "MB/s" in result.stderr
    assert Settings.load(isolated_home).model_path == str(path)
    again = _cli("models", "get", entry.id, "--no-use")  # already there: no second download
    assert again.returncode == 0 and len(qwen_server.requests) == 1
    missing = _cli("models", "get", "gpt-9")
    assert missing.returncode != 0 and "No model 'gpt-9'" in missing.stderr


def test_cli_scan_and_add(isolated_home: Path, user_home: Path) -> None:
    env = {"HOME": str(user_home)}
    result = _cli("models", "scan", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert sorted(f["source"] for f in json.loads(result.stdout)) == ["Hugging Face cache", "LM Studio", "Ollama"]
    added = _cli("models", "scan", "--add", env=env)
    assert added.returncode == 0 and "3 found" in added.stdout
    listed = _cli("models", "list", env=env)
    assert "smollm2-135m-instruct-q4_1.gguf" in listed.stdout


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
