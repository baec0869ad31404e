"""Start the window. Heavy libraries load later, on the model worker, so the window shows fast."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QIcon, QPalette
from PySide6.QtWidgets import QApplication


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


def main(argv: list[str] | None = None) -> int:
    app = QApplication.instance() or QApplication(argv if argv is not None else sys.argv)
    app.setApplicationName("Assistant")
    app.setOrganizationName("assistant")
    app.setDesktopFileName("assistant")
    icon = Path(__file__).resolve().parents[2] / "resources" / "assistant.svg"
    if icon.exists():
        app.setWindowIcon(QIcon(str(icon)))
    from assistant.ui.main_window import MainWindow

    window = MainWindow()
    # "system" follows the desktop when it switches between light and dark while we run.
    app.styleHints().colorSchemeChanged.connect(
        lambda _scheme: window.assistant is not None and window.apply_settings(window.assistant.settings))
    window.show()
    return app.exec()


if __name__ == "__main__":
    raise SystemExit(main())
