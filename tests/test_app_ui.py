"""The window's everyday polish, driven like a user: first run, About, text size, keyboard, chat search,
drag out, import, a model that will not fit, and a crash report."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QMessageBox, QPushButton, QWidget

from assistant.config import Settings
from assistant.llm import hardware
from assistant.llm.gguf_info import read_model_info
from assistant.memory.conversations import ConversationStore
from assistant.ui.main_window import MainWindow


def open_window(qtbot, settings: Settings | None = None, wait_model: bool = True) -> MainWindow:
    (settings or Settings(max_tokens=40, n_ctx=2048)).save()
    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.assistant is not None, timeout=30_000)
    if wait_model:
        qtbot.waitUntil(lambda: w.model_ready, timeout=30_000)
    return w


def test_first_run_shows_the_welcome_once(qtbot, isolated_home: Path, artifacts) -> None:
    w = open_window(qtbot)
    assert w.welcome.isVisible()
    text = w.welcome.text.text()
    assert "Everything runs on this computer" in text and "SmolLM2" in text
    assert {b.text() for b in w.welcome.findChildren(QPushButton)} >= {"Start chatting", "Add documents…", "Try voice"}
    w.grab().save(str(artifacts / "first_run.png"))
    qtbot.mouseClick(w.welcome.voice_button, Qt.LeftButton)
    assert "F2" in w.statusBar().currentMessage() and w.talk_button.hasFocus()
    qtbot.mouseClick(w.welcome.start_button, Qt.LeftButton)
    assert not w.welcome.isVisible()
    qtbot.waitUntil(lambda: Settings.load().welcomed, timeout=5_000)  # saved by the worker
    w.close()
    again = open_window(qtbot, Settings.load(), wait_model=False)
    assert not again.welcome.isVisible()
    again.close()


def test_about_names_the_version_data_folders_and_licences(qtbot, isolated_home: Path) -> None:
    from assistant import __version__

    w = open_window(qtbot)
    assert __version__ in w.windowTitle()
    w.about()
    qtbot.waitUntil(lambda: getattr(w, "about_dialog", None) is not None and w.about_dialog.isVisible(), timeout=5_000)
    shown = w.about_dialog.text.toPlainText()
    assert str(isolated_home) in shown and "logs" in shown
    assert "SmolLM2-135M-Instruct" in shown and "Apache-2.0" in shown and "LGPL-3.0" in shown
    assert "licence apache-2.0" in shown  # read from the loaded model's own header
    w.about_dialog.close()
    w.close()


def test_text_size_keyboard_order_and_names(qtbot, isolated_home: Path) -> None:
    w = open_window(qtbot)
    base = QApplication.font().pointSizeF()
    w.input.setFocus()
    qtbot.keyClick(w.input, Qt.Key_Equal, Qt.ControlModifier)
    qtbot.keyClick(w.input, Qt.Key_Equal, Qt.ControlModifier)
    assert QApplication.font().pointSizeF() == pytest.approx(base * 1.2)
    qtbot.waitUntil(lambda: w.chat.font().pointSizeF() == pytest.approx(base * 1.2), timeout=2_000)  # it follows
    qtbot.waitUntil(lambda: Settings.load().font_scale == 120, timeout=5_000)
    qtbot.keyClick(w.input, Qt.Key_0, Qt.ControlModifier)
    assert QApplication.font().pointSizeF() == pytest.approx(base)
    # Keyboard only: Tab walks from the chat search through the list to the message box and its buttons.
    w.search.setFocus()
    order = []
    for _ in range(8):
        qtbot.keyClick(QApplication.focusWidget(), Qt.Key_Tab)
        order.append(QApplication.focusWidget())
    assert order.index(w.conversation_list) < order.index(w.input) < order.index(w.send_button)
    # Every control a screen reader lands on has a name.
    unnamed = [c for c in w.findChildren(QWidget) if c.isVisible() and c.focusPolicy() & Qt.TabFocus
               and not c.accessibleName() and not getattr(c, "text", lambda: "")()
               and c.metaObject().className() not in ("QScrollBar", "QTextBrowser", "QLabel", "QTabBar", "QSplitterHandle")]
    assert not unnamed, [type(c).__name__ + ":" + c.objectName() for c in unnamed]
    w.close()


def test_search_finds_words_inside_chats_and_a_chat_drags_out_as_markdown(qtbot, isolated_home: Path) -> None:
    store = ConversationStore(isolated_home / "assistant.db")
    plants = store.create()
    store.add_message(plants.id, "user", "Which houseplants like shade?")
    store.add_message(plants.id, "assistant", "Snake plants and ferns tolerate low light.")
    store.add_message(store.create().id, "user", "Recipe for pancakes")
    store.close()
    w = open_window(qtbot, wait_model=False)
    qtbot.waitUntil(lambda: w.conversation_list.count() == 2, timeout=10_000)
    qtbot.keyClicks(w.search, "ferns")
    qtbot.waitUntil(lambda: w.conversation_list.count() == 1, timeout=10_000)
    item = w.conversation_list.item(0)
    assert item.text().startswith("Which houseplants like shade?") and "ferns" in item.text()
    data = w.conversation_list.mimeData([item])
    path = Path(data.urls()[0].toLocalFile())
    assert path.suffix == ".md" and path.name.startswith("Which houseplants like shade")
    markdown = path.read_text(encoding="utf-8")
    assert markdown.startswith("# Which houseplants like shade?") and "Snake plants and ferns" in markdown
    assert data.text() == markdown
    w.close()


def test_import_chats_from_the_file_menu_path(qtbot, isolated_home: Path, tmp_path: Path) -> None:
    other = ConversationStore(tmp_path / "other.db")
    chat = other.create()
    other.add_message(chat.id, "user", "Exported elsewhere")
    archive = tmp_path / "chats.json"
    archive.write_text(json.dumps(other.export_all()), encoding="utf-8")
    other.close()
    w = open_window(qtbot, wait_model=False)
    w.import_chats(str(archive))
    qtbot.waitUntil(lambda: "Imported 1 chat" in w.statusBar().currentMessage(), timeout=10_000)
    qtbot.waitUntil(lambda: any(w.conversation_list.item(i).text() == "Exported elsewhere"
                                for i in range(w.conversation_list.count())), timeout=10_000)
    (tmp_path / "junk.json").write_text("[1, 2]", encoding="utf-8")
    w.import_chats(str(tmp_path / "junk.json"))
    qtbot.waitUntil(lambda: any(b.role == "error" and "not a chat export" in b.text for b in w.chat.bubbles),
                    timeout=10_000)
    w.close()


def test_a_model_that_will_not_fit_is_not_loaded_until_the_user_chooses(qtbot, isolated_home: Path,
                                                                         default_model: Path) -> None:
    need = hardware.estimate(read_model_info(default_model), 1_048_576)
    if need.in_ram <= (hardware.available_ram() or 0):
        pytest.skip("this machine has memory for a 1M-token context: nothing to warn about")
    w = open_window(qtbot, Settings(n_ctx=1_048_576, max_tokens=20), wait_model=False)
    qtbot.waitUntil(lambda: w.wont_fit_box is not None and w.wont_fit_box.isVisible(), timeout=30_000)
    box = w.wont_fit_box
    assert "may not fit" in box.text() and "1048576 tokens" in box.text()
    assert not w.model_ready and "may not fit" in w.model_label.text()
    buttons = {b.text(): b for b in box.buttons()}
    assert {"Load anyway", "Choose another model…"} <= set(buttons)
    # The user picks a context that surely fits (as the settings dialog would apply it).
    box.close()
    w.apply_settings(Settings(n_ctx=2048, max_tokens=20, welcomed=True))
    qtbot.waitUntil(lambda: w.model_ready, timeout=60_000)
    assert w.last_report.n_ctx == 2048
    w.close()


def test_an_unexpected_error_writes_a_report_and_says_the_data_is_safe(qtbot, isolated_home: Path) -> None:
    import sys

    from assistant import logs
    from assistant.ui.app import CrashNotice

    saved = sys.excepthook, threading.excepthook
    w = open_window(qtbot, wait_model=False)
    notice = CrashNotice(w)
    try:
        logs.install_crash_handler(on_crash=lambda report, summary: notice.crashed.emit(str(report), summary))
        thread = threading.Thread(target=lambda: 1 / 0, name="model-worker")
        thread.start()
        thread.join()

        def shown():
            return [m for m in QApplication.topLevelWidgets() if isinstance(m, QMessageBox) and m.isVisible()]

        qtbot.waitUntil(lambda: bool(shown()), timeout=5_000)
        box = shown()[0]
        assert "ZeroDivisionError" in box.text() and "Your chats, documents and settings are saved" in box.informativeText()
        report = Path(box.informativeText().split("written to\n")[1].split("\n")[0])
        assert report.exists() and "model-worker" in report.read_text(encoding="utf-8")
        assert any(b.text() == "Open log folder" for b in box.buttons())
        box.close()
    finally:
        sys.excepthook, threading.excepthook = saved
        if logs._fault_file is not None:
            import faulthandler

            faulthandler.enable(sys.__stderr__, all_threads=True)
            logs._fault_file.close()
            logs._fault_file = None
    w.close()


def test_check_mode_opens_answers_and_reports_timings(isolated_home: Path) -> None:
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "assistant", "gui", "--check", "What is the capital of France?"],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "ASSISTANT_HOME": str(isolated_home), "QT_QPA_PLATFORM": "offscreen"})
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["answer"] and not result["errors"]
    assert 0 < result["window_s"] < result["first_token_s"] <= result["answer_s"]
    assert (isolated_home / "logs" / "assistant.log").exists()  # the app logs from its first start


def test_settings_show_what_the_model_needs_at_the_chosen_context(qtbot, isolated_home: Path,
                                                                   default_model: Path) -> None:
    from assistant.ui.settings_dialog import SettingsDialog

    w = open_window(qtbot, wait_model=False)
    dialog = SettingsDialog(w.settings or Settings(), w.tasks, str(default_model), w)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitUntil(lambda: dialog.fit_info.text().startswith("Needs about"), timeout=10_000)
    assert "free" in dialog.fit_info.text()
    need = hardware.estimate(read_model_info(default_model), 1_048_576)
    if need.in_ram > (hardware.available_ram() or 0):
        dialog.n_ctx.setValue(1_048_576)
        qtbot.waitUntil(lambda: "may not fit" in dialog.fit_info.text(), timeout=10_000)
    dialog.close()
    w.close()


@pytest.mark.skipif(not __import__("shutil").which("xvfb-run"), reason="xvfb-run (apt xvfb) draws the screenshots")
def test_the_screenshot_script_draws_the_real_app_under_xvfb(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from PySide6.QtGui import QImage

    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    out = subprocess.run([sys.executable, str(root / "docs" / "screenshots.py"), "--out", str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    assert names == ["1-first-run.png", "2-documents.png", "3-answer-with-sources.png", "4-settings.png", "5-about.png"]
    for name in names:
        image = QImage(str(tmp_path / name))
        assert image.width() > 500 and image.height() > 400
        colours = {image.pixel(x, y) for x in range(0, image.width(), 37) for y in range(0, image.height(), 37)}
        assert len(colours) > 5, f"{name} is blank"  # drawn, not an empty window
