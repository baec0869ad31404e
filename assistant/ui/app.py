"""Start the window. Heavy libraries load later, on the model worker, so the window shows fast."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from PySide6.QtCore import QObject, Qt, QUrl, Signal
from PySide6.QtGui import QColor, QDesktopServices, QGuiApplication, QIcon, QPalette
from PySide6.QtWidgets import QApplication, QMessageBox, QWidget

from assistant import __version__

_IMPORTED = time.time()


def apply_theme(theme: str) -> bool:
    """system | light | dark; returns True when dark. Fusion renders both the same on every platform."""
    app = QApplication.instance()
    app.setStyle("Fusion")
    dark = theme == "dark"
    if theme == "system":
        dark = QGuiApplication.styleHints().colorScheme() == Qt.ColorScheme.Dark
    app.setPalette(_dark_palette() if dark else app.style().standardPalette())
    return dark


def _dark_palette() -> QPalette:
    p = QPalette()
    base, window, text = QColor(30, 31, 34), QColor(43, 45, 48), QColor(223, 225, 229)
    for role, color in [
        (QPalette.Window, window), (QPalette.WindowText, text), (QPalette.Base, base),
        (QPalette.AlternateBase, window), (QPalette.Text, text), (QPalette.Button, window),
        (QPalette.ButtonText, text), (QPalette.ToolTipBase, base), (QPalette.ToolTipText, text),
        (QPalette.Highlight, QColor(53, 116, 240)), (QPalette.HighlightedText, QColor(255, 255, 255)),
        (QPalette.Link, QColor(110, 160, 255)), (QPalette.PlaceholderText, QColor(140, 143, 148)),
    ]:
        p.setColor(role, color)
    p.setColor(QPalette.Disabled, QPalette.ButtonText, QColor(120, 120, 120))
    p.setColor(QPalette.Disabled, QPalette.Text, QColor(120, 120, 120))
    return p


def resource(name: str) -> Path:
    """A file under resources/: beside the package in a checkout, inside the folder a bundle unpacks to."""
    base = Path(getattr(sys, "_MEIPASS", Path(__file__).resolve().parents[2]))
    return base / "resources" / name


class CrashNotice(QObject):
    """Hands a crash report from whichever thread failed to the window's thread, then tells the user."""

    crashed = Signal(str, str)

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.window = parent
        self.crashed.connect(self.show, Qt.QueuedConnection)

    def show(self, report: str, summary: str, native: bool = False) -> None:
        box = QMessageBox(self.window)
        box.setIcon(QMessageBox.Warning)
        box.setWindowTitle("Assistant hit a problem")
        what = ("Assistant closed unexpectedly last time, inside native code (the model runtime, Qt or a driver)."
                if native else f"Something went wrong that the app did not expect:\n{summary}")
        box.setText(what)
        box.setInformativeText("Your chats, documents and settings are saved. A report was written to\n"
                               f"{report}\nIt stays on this computer; attach it if you report the problem.")
        open_folder = box.addButton("Open log folder", QMessageBox.ActionRole)
        box.addButton("Continue", QMessageBox.AcceptRole)
        open_folder.clicked.connect(
            lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(report).parent))))
        box.setModal(False)
        box.show()


def main(argv: list[str] | None = None) -> int:
    argv = list(argv if argv is not None else sys.argv)
    check = None
    if "--check" in argv:  # open, answer one question, print timings as JSON, quit (packaging, bench)
        at = argv.index("--check")
        check = argv[at + 1] if at + 1 < len(argv) else "Say hello."
        del argv[at:at + 2]
    from assistant.logs import install_crash_handler, setup_logging

    setup_logging()
    app = QApplication.instance() or QApplication(argv)
    app.setApplicationName("Assistant")
    app.setApplicationVersion(__version__)
    app.setOrganizationName("assistant")
    app.setDesktopFileName("assistant")
    icon = resource("assistant.svg")
    if icon.exists():
        app.setWindowIcon(QIcon(str(icon)))
    from assistant.ui.main_window import MainWindow

    window = MainWindow()
    notice = CrashNotice(window)
    previous = install_crash_handler(on_crash=lambda report, summary: notice.crashed.emit(str(report), summary))
    # "system" follows the desktop when it switches between light and dark while we run.
    app.styleHints().colorSchemeChanged.connect(
        lambda _scheme: window.assistant is not None and window.apply_settings(window.assistant.settings))
    window.show()
    if previous is not None:
        notice.show(str(previous), "", native=True)
    outcome: dict[str, int] = {}
    if check is not None:
        _check(window, check, outcome)
    return app.exec() or outcome.get("rc", 0)


def _check(window, question: str, outcome: dict[str, int]) -> None:
    """Ask once the model is ready; print {"window_s", "first_token_s", "answer_s", "answer"} measured from
    process start, then quit. Exit status 1 when no answer came within 5 minutes."""
    import json
    import time

    from PySide6.QtCore import QTimer

    start = _process_start()
    marks: dict[str, float] = {}

    def poll() -> None:
        now = time.time()
        handle = window.windowHandle()
        if "window_s" not in marks and window.isVisible() and handle is not None and handle.isExposed():
            marks["window_s"] = now - start
        if "asked" not in marks and window.model_ready and window.assistant is not None and not window.busy:
            marks["asked"] = now
            window.input.setPlainText(question)
            window.send()
        answers = [b for b in window.chat.bubbles if b.role == "assistant" and b.text]
        errors = [b.text for b in window.chat.bubbles if b.role == "error"]
        if "asked" in marks and answers and "first_token_s" not in marks:
            marks["first_token_s"] = now - start
        if errors or ("first_token_s" in marks and not window.busy) or now - start > 300:
            result = {k: round(v, 3) for k, v in marks.items() if k.endswith("_s")}
            result["answer_s"] = round(now - start, 3)
            result["answer"] = answers[-1].text if answers else None
            result["errors"] = errors
            print(json.dumps(result), flush=True)
            timer.stop()
            outcome["rc"] = 0 if answers and not errors else 1
            window.close()  # the orderly way: it stops and joins the worker threads
            return

    timer = QTimer(window)
    timer.timeout.connect(poll)
    timer.start(5)


def _process_start() -> float:
    """When this process started, by the clock time.time() uses; ASSISTANT_T0 (a launcher's clock) wins."""
    import os
    import time

    if os.environ.get("ASSISTANT_T0"):
        return float(os.environ["ASSISTANT_T0"])
    try:  # Linux: field 22 of /proc/self/stat is the start in clock ticks after boot
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return _IMPORTED


if __name__ == "__main__":
    raise SystemExit(main())
