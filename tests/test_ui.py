"""The real window (offscreen Qt) driven like a user: type, watch tokens stream, stop, settings."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
from PySide6.QtCore import Qt

from assistant.config import Settings
from assistant.ui.main_window import MainWindow


@pytest.fixture
def window(qtbot, isolated_home):
    Settings(max_tokens=400, n_ctx=2048).save()
    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.model_ready, timeout=30_000)
    yield w
    w.close()


def type_and_send(qtbot, w: MainWindow, text: str) -> None:
    w.input.setFocus()
    qtbot.keyClicks(w.input, text)
    qtbot.keyClick(w.input, Qt.Key_Return)


def test_window_opens_without_loading_heavy_libraries(isolated_home) -> None:
    code = (
        "import sys, time; t = time.perf_counter()\n"
        "from PySide6.QtWidgets import QApplication\n"
        "app = QApplication([])\n"
        "from assistant.ui.main_window import MainWindow\n"
        "w = MainWindow(); w.show(); app.processEvents()\n"
        "heavy = [m for m in ('llama_cpp', 'torch', 'faiss', 'faster_whisper', 'ctranslate2', 'av') if m in sys.modules]\n"
        "print(heavy, w.isVisible())\n"
        "w.close()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "ASSISTANT_HOME": str(isolated_home), "QT_QPA_PLATFORM": "offscreen"})
    assert result.stdout.strip() == "[] True", result.stderr


def test_type_stream_and_stop(qtbot, window: MainWindow, artifacts) -> None:
    w = window
    type_and_send(qtbot, w, "Write a long story about a lighthouse keeper.")
    assert w.input.toPlainText() == ""  # Enter sent it
    qtbot.waitUntil(lambda: w.busy, timeout=5_000)
    # Tokens arrive while the answer is still being written.
    qtbot.waitUntil(lambda: len(w.chat.streaming_text()) > 40, timeout=20_000)
    assert w.stop_button.isEnabled() and not w.send_button.isEnabled()
    w.grab().save(str(artifacts / "main_window_streaming.png"))
    qtbot.mouseClick(w.stop_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not w.busy, timeout=2_000)
    answer = [b for b in w.chat.bubbles if b.role == "assistant"][-1]
    assert "stopped" in answer.meta.text() and answer.text
    assert "tok/s" in w.speed_label.text()
    # The chat was saved and named after the question.
    qtbot.waitUntil(lambda: w.conversation_list.count() == 1 and "lighthouse" in w.conversation_list.item(0).text(),
                    timeout=5_000)
    qtbot.waitUntil(lambda: all(b.message_id for b in w.chat.bubbles if b.role in ("user", "assistant")), timeout=5_000)
    w.grab().save(str(artifacts / "main_window.png"))


def test_empty_input_is_not_sent(qtbot, window: MainWindow) -> None:
    type_and_send(qtbot, window, "   ")
    qtbot.wait(200)
    assert window.chat.bubbles == [] and not window.busy


def test_regenerate_and_edit(qtbot, window: MainWindow) -> None:
    w = window
    w.apply_settings(Settings.from_dict({**w.assistant.settings.__dict__, "max_tokens": 20}))
    qtbot.waitUntil(lambda: w.assistant.settings.max_tokens == 20, timeout=5_000)
    type_and_send(qtbot, w, "Name a fruit.")
    qtbot.waitUntil(lambda: not w.busy and any(b.role == "assistant" and b.message_id is not None for b in w.chat.bubbles),
                    timeout=20_000)
    w.activateWindow()
    qtbot.waitUntil(w.isActiveWindow, timeout=5_000)
    qtbot.keyClick(w.input, Qt.Key_R, Qt.ControlModifier)  # the Regenerate shortcut
    qtbot.waitUntil(lambda: w.busy, timeout=5_000)
    qtbot.waitUntil(lambda: not w.busy, timeout=20_000)
    qtbot.waitUntil(lambda: [b.role for b in w.chat.bubbles] == ["user", "assistant"]
                    and all(b.message_id for b in w.chat.bubbles), timeout=5_000)
    user = w.chat.bubbles[0]
    qtbot.mouseClick(user.edit_button, Qt.LeftButton)
    assert w.input.toPlainText() == "Name a fruit." and w.edit_banner.isVisible()
    w.input.setPlainText("Name a vegetable.")
    qtbot.keyClick(w.input, Qt.Key_Return)
    qtbot.waitUntil(lambda: not w.busy and len(w.chat.bubbles) == 2 and w.chat.bubbles[1].message_id is not None, timeout=20_000)
    messages = w.assistant.conversations.messages(w.conversation_id)
    assert [m.content for m in messages][0] == "Name a vegetable." and len(messages) == 2


def test_settings_persist_and_a_bad_model_is_reported(qtbot, window: MainWindow, isolated_home, tmp_path,
                                                      default_model) -> None:
    from assistant.ui.settings_dialog import SettingsDialog

    w = window
    dialog = SettingsDialog(w.assistant.settings, w.tasks, str(default_model), w)
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: "Q4_1" in dialog.model_info.text(), timeout=10_000)  # metadata read in the background
    dialog.temperature.setValue(0.25)
    dialog.max_tokens.setValue(123)
    dialog.system_prompt.setPlainText("Answer like a pirate.")
    dialog.model_path.setText(str(tmp_path / "missing.gguf"))
    dialog.accept()
    w.apply_settings(dialog.result_settings)
    qtbot.waitUntil(lambda: any(b.role == "error" and "missing.gguf" in b.text for b in w.chat.bubbles), timeout=10_000)
    assert w.model_label.text() == "No model loaded"
    saved = Settings.load(isolated_home)
    assert (saved.temperature, saved.max_tokens, saved.system_prompt) == (0.25, 123, "Answer like a pirate.")
    # Back to the default model: the window recovers without a restart.
    w.apply_settings(Settings.from_dict({**saved.__dict__, "model_path": ""}))
    qtbot.waitUntil(lambda: w.model_ready, timeout=30_000)


def test_switching_conversations(qtbot, window: MainWindow) -> None:
    w = window
    type_and_send(qtbot, w, "Hello there")
    qtbot.waitUntil(lambda: not w.busy and w.conversation_list.count() == 1, timeout=20_000)
    w.new_chat()
    qtbot.waitUntil(lambda: w.conversation_list.count() == 2 and not w.chat.bubbles, timeout=5_000)
    first = [w.conversation_list.item(i) for i in range(2) if "Hello" in w.conversation_list.item(i).text()][0]
    w.conversation_list.setCurrentItem(first)
    qtbot.waitUntil(lambda: [b.role for b in w.chat.bubbles] == ["user", "assistant"], timeout=5_000)
    w.search.setText("zzz-no-match")
    qtbot.waitUntil(lambda: w.conversation_list.count() == 0, timeout=5_000)


def test_dropping_a_gguf_switches_the_model(qtbot, window: MainWindow, default_model, tmp_path) -> None:
    from PySide6.QtCore import QMimeData, QPoint, QUrl
    from PySide6.QtGui import QDropEvent

    copy = tmp_path / "my-model.gguf"
    copy.write_bytes(default_model.read_bytes())
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(copy))])
    event = QDropEvent(QPoint(10, 10), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    window.dropEvent(event)
    qtbot.waitUntil(lambda: window.model_ready and "my-model.gguf" in window.model_label.text(), timeout=30_000)
    assert window.assistant.settings.model_path == str(copy)


def test_dropping_a_broken_gguf_is_reported(qtbot, window: MainWindow, tmp_path) -> None:
    from PySide6.QtCore import QMimeData, QPoint, QUrl
    from PySide6.QtGui import QDropEvent

    junk = tmp_path / "junk.gguf"
    junk.write_text("not a model")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(junk))])
    window.dropEvent(QDropEvent(QPoint(10, 10), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier))
    qtbot.waitUntil(lambda: any(b.role == "error" and "junk.gguf" in b.text for b in window.chat.bubbles), timeout=10_000)
    assert window.model_ready  # the working model stays loaded


@pytest.fixture
def model_server(default_model, tmp_path):
    """A real HTTP server on 127.0.0.1 serving a copy of the default model."""
    import functools
    import http.server
    import shutil
    import threading

    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(default_model, served / "tiny.gguf")
    (served / "page.gguf").write_text("<html>not a model</html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_dialog_fetches_checks_and_reports(qtbot, window: MainWindow, model_server, tmp_path) -> None:
    from assistant.ui.download_dialog import DownloadDialog

    folder = tmp_path / "models"
    dialog = DownloadDialog(folder, window.tasks, window)
    qtbot.addWidget(dialog)
    # A wrong checksum is refused in plain words and the dialog stays usable.
    dialog.url.setText(f"{model_server}/tiny.gguf")
    dialog.sha256.setText("0" * 64)
    qtbot.mouseClick(dialog.start_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: dialog.start_button.isEnabled(), timeout=30_000)
    assert "SHA-256" in dialog.status.text() and dialog.downloaded is None
    # A page that is not a model is refused too.
    dialog.url.setText(f"{model_server}/page.gguf")
    dialog.sha256.clear()
    qtbot.mouseClick(dialog.start_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: dialog.start_button.isEnabled(), timeout=30_000)
    assert "GGUF" in dialog.status.text()
    # The real file downloads, with progress shown, and the dialog closes with its path.
    dialog.url.setText(f"{model_server}/tiny.gguf")
    with qtbot.waitSignal(dialog.accepted, timeout=60_000):
        qtbot.mouseClick(dialog.start_button, Qt.LeftButton)
    assert dialog.downloaded == folder / "tiny.gguf" and dialog.downloaded.stat().st_size > 90_000_000
    assert "MB" in dialog.status.text()


def test_dark_theme_reaches_the_bubbles(qtbot, isolated_home, artifacts) -> None:
    from PySide6.QtWidgets import QApplication

    Settings(theme="dark", max_tokens=30).save()
    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.model_ready, timeout=30_000)
    try:
        assert QApplication.palette().window().color().lightness() < 128
        type_and_send(qtbot, w, "Say hi.")
        qtbot.waitUntil(lambda: not w.busy and len(w.chat.bubbles) == 2, timeout=20_000)
        assert all(b.dark for b in w.chat.bubbles)
        w.grab().save(str(artifacts / "main_window_dark.png"))
        # Switching back to light re-draws the conversation in light colours.
        w.apply_settings(Settings(theme="light", max_tokens=30))
        qtbot.waitUntil(lambda: len(w.chat.bubbles) == 2 and not any(b.dark for b in w.chat.bubbles), timeout=5_000)
    finally:
        w.apply_settings(Settings(theme="light"))
        w.close()


def test_drop_a_folder_index_it_and_get_a_cited_answer(qtbot, window: MainWindow, tmp_path, artifacts) -> None:
    from PySide6.QtCore import QMimeData, QPoint, QUrl
    from PySide6.QtGui import QDropEvent

    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "pets.md").write_text("# Pets\n\nOur dog is called Rex. He is a brown labrador who loves the lake.\n")
    (folder / "blob.txt").write_bytes(b"\x00\x01binary\x00" * 100)  # skipped, with its reason shown
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(folder))])
    window.dropEvent(QDropEvent(QPoint(10, 10), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier))
    panel = window.documents
    assert panel.busy and window.side_tabs.currentWidget() is panel
    qtbot.waitUntil(lambda: not panel.busy, timeout=120_000)
    assert "1 indexed, 1 skipped" in panel.status.text()
    # The new collection is chosen for the chat, and the panel says why a file was skipped.
    qtbot.waitUntil(lambda: panel.current_collection() == "default" and panel.files.topLevelItemCount() == 2,
                    timeout=10_000)
    statuses = {panel.files.topLevelItem(i).text(0): panel.files.topLevelItem(i).text(1) for i in range(2)}
    assert statuses["pets.md"] == "indexed" and "binary" in statuses["blob.txt"]

    type_and_send(qtbot, window, "What is our dog called?")
    qtbot.waitUntil(lambda: not window.busy and any(b.role == "assistant" and b.message_id for b in window.chat.bubbles),
                    timeout=60_000)
    # After the answer the chat is re-read from disk (for the saved ids): its new bubbles are shown by Qt
    # one event-loop turn later, so wait for the sources to be on screen rather than test mid-swap.
    def last_answer():
        return [b for b in window.chat.bubbles if b.role == "assistant"][-1]

    qtbot.waitUntil(lambda: last_answer().sources_label.isVisible(), timeout=10_000)
    assert "pets.md" in last_answer().sources_label.text()
    assert "documents in 'default'" in window.input.placeholderText()
    window.side_tabs.setCurrentIndex(0)
    qtbot.waitUntil(lambda: window.conversation_list.count() == 1, timeout=5_000)
    window.grab().save(str(artifacts / "answer_with_sources.png"))


def test_all_collections_together_and_answering_from_a_whole_file(qtbot, window: MainWindow, tmp_path, artifacts) -> None:
    from tests.test_rag_answer import LOG

    (tmp_path / "log").mkdir()
    log = "\n\n".join(LOG.split("\n\n")[:6])  # two chunks; fits this window's context whole
    (tmp_path / "log" / "log.txt").write_text(log)
    (tmp_path / "pets").mkdir()
    (tmp_path / "pets" / "pets.md").write_text("# Pets\n\nThe lighthouse cat is called Biscuit. The mayor loves her.\n")
    # Passages alone (no neighbouring chunks, which would already give the model all of this short file).
    window.apply_settings(dataclasses.replace(window.settings, passage_neighbours=0))  # as Settings' OK does
    qtbot.waitUntil(lambda: window.assistant.settings.passage_neighbours == 0, timeout=10_000)
    panel = window.documents
    for folder in ("log", "pets"):
        panel.index_paths([tmp_path / folder], folder)
        qtbot.waitUntil(lambda: not panel.busy, timeout=120_000)
    qtbot.waitUntil(lambda: panel.collection.findData("*") >= 0, timeout=10_000)
    panel.collection.setCurrentIndex(panel.collection.findData("*"))
    assert window.documents.current_collection() == "*"
    qtbot.waitUntil(lambda: panel.files.topLevelItemCount() == 2, timeout=10_000)  # the files of both
    assert "all your collections" in window.input.placeholderText()

    def last_answer():
        return [b for b in window.chat.bubbles if b.role == "assistant"][-1]

    type_and_send(qtbot, window, "Which day did the mayor visit the lighthouse keeper?")
    qtbot.waitUntil(lambda: not window.busy and last_answer().sources_label.isVisible(), timeout=60_000)
    assert os.path.basename(last_answer().sources[0]["file"]) == "log.txt"
    searched = {os.path.basename(s["file"]) for s in last_answer().sources + last_answer().dropped}
    assert searched == {"log.txt", "pets.md"}  # found in both collections (kept or not)
    offered = last_answer().whole_document
    assert offered and offered.endswith("log.txt") and "whole of log.txt" in last_answer().sources_label.text()
    window.grab().save(str(artifacts / "answer_all_collections.png"))

    last_answer().sources_label.linkActivated.emit("whole:")  # the user clicks "Answer from the whole of log.txt"
    qtbot.waitUntil(lambda: not window.busy and len(window.chat.bubbles) == 2 and last_answer().message_id
                    and last_answer().sources_label.isVisible(), timeout=60_000)
    assert [s["text"] for s in last_answer().sources] == [log]
    assert last_answer().whole_document is None  # already the whole file: nothing more to offer


def test_folder_watching_and_reindex_pick_up_new_and_removed_files(qtbot, window: MainWindow, tmp_path) -> None:
    folder = tmp_path / "watched"
    folder.mkdir()
    (folder / "one.txt").write_text("The first note.")
    panel = window.documents
    assert panel.watch_timer.isActive() and panel.watch  # on by default
    panel.index_paths([folder], "watched")
    qtbot.waitUntil(lambda: not panel.busy and panel.files.topLevelItemCount() == 1, timeout=120_000)

    (folder / "two.txt").write_text("The second note.")
    panel.sync_now()  # what the timer does every 30 s
    qtbot.waitUntil(lambda: not panel.syncing and panel.files.topLevelItemCount() == 2, timeout=60_000)
    assert "Noticed changes" in panel.status.text() and "1 indexed" in panel.status.text()

    (folder / "one.txt").unlink()
    qtbot.mouseClick(panel.reindex_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not panel.busy and panel.files.topLevelItemCount() == 1, timeout=60_000)
    assert panel.files.topLevelItem(0).text(0) == "two.txt" and "1 removed" in panel.status.text()
    # Removing the file in the panel keeps it out of the next walk.
    panel.files.setCurrentItem(panel.files.topLevelItem(0))
    qtbot.mouseClick(panel.remove_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: panel.files.topLevelItemCount() == 0, timeout=30_000)
    panel.sync_now()
    qtbot.waitUntil(lambda: not panel.syncing, timeout=60_000)
    assert panel.files.topLevelItemCount() == 0
