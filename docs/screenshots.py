"""Take screenshots of the real app, as a user sees it: first run, an answer citing a document, the
documents panel, settings and About.

    .venv/bin/python docs/screenshots.py [--out DIR]

Runs itself under Xvfb (xvfb-run, from the xvfb package) when there is no display, so the window is
drawn by a real X server with a window manager-less screen, not the offscreen plugin. Uses a fresh
temporary data folder, the default model and this repository's README.md as the document. The
pictures go to test-artifacts/screenshots/ (not in git) unless --out says otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "How do I run the tests?"


def _under_xvfb() -> int | None:
    """Re-run this script under xvfb-run when no display is there; None when it should go on here."""
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("ASSISTANT_SHOTS_CHILD"):
        return None
    xvfb = shutil.which("xvfb-run")
    if xvfb is None:
        print("No display and no xvfb-run: install the xvfb package (make setup does) or run on a desktop.",
              file=sys.stderr)
        return 1
    env = {**os.environ, "ASSISTANT_SHOTS_CHILD": "1"}
    env.pop("QT_QPA_PLATFORM", None)
    return subprocess.call([xvfb, "-a", "-s", "-screen 0 1400x900x24", sys.executable, *sys.argv], env=env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=ROOT / "test-artifacts" / "screenshots")
    args = parser.parse_args()
    rerun = _under_xvfb()
    if rerun is not None:
        return rerun
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    home = tempfile.mkdtemp(prefix="assistant-shots-")
    os.environ["ASSISTANT_HOME"] = home

    from PySide6.QtWidgets import QApplication

    from assistant.config import Settings
    from assistant.ui.app import resource

    Settings(max_tokens=120, n_ctx=4096, temperature=0.2).save()
    app = QApplication(sys.argv[:1])
    app.setApplicationName("Assistant")
    from PySide6.QtGui import QIcon

    app.setWindowIcon(QIcon(str(resource("assistant.svg"))))
    from assistant.ui.main_window import MainWindow

    w = MainWindow()
    w.resize(1280, 820)
    w.show()

    def wait(condition, seconds: float, what: str) -> None:
        end = time.time() + seconds
        while not condition():
            if time.time() > end:
                raise SystemExit(f"screenshots: timed out waiting for {what}")
            app.processEvents()
            time.sleep(0.01)

    def shot(widget, name: str) -> None:
        for _ in range(20):  # let layouts settle and paint
            app.processEvents()
            time.sleep(0.01)
        path = out / f"{name}.png"
        widget.grab().save(str(path))
        print(path)

    wait(lambda: w.model_ready, 120, "the model")
    shot(w, "1-first-run")
    w.dismiss_welcome()

    # Index the README, then ask about it: the answer cites it.
    w.side_tabs.setCurrentWidget(w.documents)
    w.documents.index_paths([ROOT / "README.md"], "docs")
    wait(lambda: not w.documents.busy, 300, "indexing")
    shot(w, "2-documents")
    wait(lambda: w.documents.collection.findData("docs") >= 0, 30, "the new collection")
    w.side_tabs.setCurrentIndex(0)
    w.documents.collection.setCurrentIndex(w.documents.collection.findData("docs"))
    w.input.setPlainText(QUESTION)
    w.send()
    wait(lambda: not w.busy and any(b.role == "assistant" and b.sources for b in w.chat.bubbles), 300, "the answer")
    shot(w, "3-answer-with-sources")

    from assistant.ui.settings_dialog import SettingsDialog

    dialog = SettingsDialog(w.settings, w.tasks, "", w)
    dialog.show()
    shot(dialog, "4-settings")
    dialog.close()
    w.about()
    wait(lambda: getattr(w, "about_dialog", None) is not None, 10, "About")
    shot(w.about_dialog, "5-about")
    w.about_dialog.close()
    w.close()
    shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
