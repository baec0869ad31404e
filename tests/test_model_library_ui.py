"""The model library in the window, driven like a new user: the welcome panel's recommended model in one
click (downloaded from a local server, checked, loaded, answering), pause/resume/cancel, and a model
found in Ollama's folder used where it is."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from assistant.config import Settings, config_dir, models_dir
from assistant.llm import catalog as cat
from tests.test_models import _Server, serving

QWEN_ID = "qwen2.5-coder-0.5b"


@pytest.fixture
def qwen_server(qwen: Path, tmp_path: Path) -> Iterator[_Server]:
    with serving(qwen, tmp_path) as srv:
        yield srv


def _mirror_catalog(home: Path, server: _Server) -> None:
    """A catalog like an organisation's own mirror: the built-in Qwen entry (its real size and SHA-256)
    served from the local server, offered as a general model, beside a 14B entry."""
    raw = {m["id"]: m for m in json.loads(cat.BUILTIN_CATALOG.read_text())["models"]}
    models = [{**raw[QWEN_ID], "url": server.url("/model.gguf"), "kind": "chat"},
              {**raw["qwen3-14b"], "url": server.url("/missing.gguf")}]
    path = config_dir(home) / "catalog.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"replace_builtin": True, "models": models}), encoding="utf-8")


def _open(qtbot, settings: Settings):
    from assistant.ui.main_window import MainWindow

    settings.save()
    w = MainWindow()
    qtbot.addWidget(w)
    w.resize(1100, 760)
    w.show()
    qtbot.waitUntil(lambda: w.assistant is not None and w.model_ready, timeout=60_000)
    return w


def _ask(qtbot, w, question: str) -> str:
    w.input.setPlainText(question)
    qtbot.mouseClick(w.send_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not w.busy and w.chat.bubbles and w.chat.bubbles[-1].role == "assistant"
                    and bool(w.chat.bubbles[-1].text), timeout=120_000)
    return w.chat.bubbles[-1].text


def test_one_click_from_first_start_to_the_recommended_model_answering(qtbot, isolated_home: Path,
                                                                      qwen_server: _Server, artifacts) -> None:
    _mirror_catalog(isolated_home, qwen_server)
    w = _open(qtbot, Settings(max_tokens=40, n_ctx=2048, temperature=0.0))
    assert w.welcome.isVisible()
    button = w.welcome.get_button
    qtbot.waitUntil(button.isVisible, timeout=30_000)  # the catalog is read off the UI thread
    assert button.text() == "Download Qwen2.5-Coder-0.5B-Instruct (469 MB) and use it"
    assert "Recommended for this computer" in button.toolTip() and w.welcome.builtin_button.isVisible()
    w.grab().save(str(artifacts / "welcome_recommended_model.png"))

    qtbot.mouseClick(button, Qt.LeftButton)  # the one click
    assert not w.welcome.isVisible()
    library = w.library
    qtbot.waitUntil(lambda: library.isVisible() and library.downloading == QWEN_ID, timeout=30_000)
    qtbot.waitUntil(lambda: "MB/s" in library.status.text(), timeout=30_000)
    assert "Downloading Qwen2.5-Coder-0.5B-Instruct" in w.statusBar().currentMessage()
    target = models_dir(isolated_home) / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    qtbot.waitUntil(lambda: w.model_ready and w.last_report is not None and w.last_report.model_path == str(target),
                    timeout=300_000)
    assert library.downloading is None and "Downloaded and checked" in library.status.text()
    assert Settings.load().model_path == str(target) and Settings.load().welcomed
    qtbot.waitUntil(lambda: library.table.rowCount() == 2 and "downloaded" in library.table.item(0, 1).text(),
                    timeout=30_000)
    labels = {library.table.item(r, 1).text().split(" ·")[0]: library.table.item(r, 3).text() for r in range(2)}
    assert labels["Qwen2.5-Coder-0.5B-Instruct"] == cat.FITS_RAM and labels["Qwen3-14B"] != cat.FITS_RAM
    assert library.table.item(0, 0).text() == "★" and library.get_button.text() == "Use"
    library.grab().save(str(artifacts / "model_library.png"))
    library.close()

    answer = _ask(qtbot, w, "What is the capital of France? Answer in one short sentence.")
    assert "Paris" in answer
    assert "qwen2.5-coder" in w.model_label.text().lower()
    w.grab().save(str(artifacts / "recommended_model_answering.png"))
    w.close()


def test_pause_resume_and_cancel_a_download(qtbot, isolated_home: Path, qwen_server: _Server) -> None:
    _mirror_catalog(isolated_home, qwen_server)
    qwen_server.block_delay = 0.01  # about 25 MB/s: slow enough to pause part way
    w = _open(qtbot, Settings(max_tokens=16, n_ctx=1024, welcomed=True))
    w.model_library()
    library = w.library
    qtbot.waitUntil(lambda: library.table.rowCount() == 2, timeout=30_000)
    assert library.selected_id() == QWEN_ID  # the recommended one is selected
    part = models_dir(isolated_home) / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf.part"

    qtbot.mouseClick(library.get_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: part.exists() and part.stat().st_size > 20_000_000, timeout=60_000)
    assert library.pause_button.isVisible() and not library.get_button.isEnabled()
    qtbot.mouseClick(library.pause_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: library.downloading is None and "Paused" in library.status.text(), timeout=30_000)
    paused_at = part.stat().st_size
    qtbot.waitUntil(lambda: library.resume_button.isVisible(), timeout=10_000)
    assert "% downloaded" in library.table.item(0, 1).text()

    qtbot.mouseClick(library.resume_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: part.exists() and part.stat().st_size > paused_at + 10_000_000, timeout=60_000)
    assert qwen_server.requests[-1] == ("/model.gguf", f"bytes={paused_at}-")  # it carried on, not over
    qtbot.mouseClick(library.cancel_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: "Cancelled" in library.status.text(), timeout=30_000)
    assert not part.exists() and library.downloading is None
    assert not (models_dir(isolated_home) / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf").exists()
    assert w.last_report.model_path != str(part.with_suffix(""))  # the loaded model did not change
    library.close()
    w.close()


def test_a_model_found_in_ollama_is_used_where_it_is(qtbot, isolated_home: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib
    import shutil

    from assistant.llm.models import builtin_model_path

    smol = builtin_model_path()
    digest = hashlib.sha256(smol.read_bytes()).hexdigest()
    ollama = tmp_path / "ollama-models"
    (ollama / "blobs").mkdir(parents=True)
    blob = ollama / "blobs" / f"sha256-{digest}"
    shutil.copy(smol, blob)
    tag = ollama / "manifests" / "registry.ollama.ai" / "library" / "smollm2" / "135m"
    tag.parent.mkdir(parents=True)
    tag.write_text(json.dumps({"layers": [{"mediaType": "application/vnd.ollama.image.model",
                                           "digest": f"sha256:{digest}"}]}))
    monkeypatch.setenv("OLLAMA_MODELS", str(ollama))
    monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))
    w = _open(qtbot, Settings(max_tokens=16, n_ctx=1024, welcomed=True))
    w.model_library()
    library = w.library
    qtbot.waitUntil(lambda: library.found.rowCount() == 1, timeout=30_000)
    assert library.found.item(0, 0).text() == "smollm2:135m" and library.found.item(0, 1).text() == "Ollama"
    library.found.selectRow(0)
    qtbot.mouseClick(library.use_found_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: w.model_ready and w.last_report.model_path == str(blob), timeout=60_000)
    assert Settings.load().model_path == str(blob)
    assert not any(p.name.startswith("sha256-") for p in models_dir(isolated_home).iterdir())  # nothing copied
    library.close()
    w.close()
