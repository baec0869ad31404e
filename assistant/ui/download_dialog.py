"""Download a GGUF from a URL the user gives: progress, cancel (resumable), SHA-256 check."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from assistant.ui.tasks import TaskRunner


class _Progress(QObject):
    # Emitted from the download thread, delivered on the UI thread.
    changed = Signal(object, object)  # not int: a C int overflows past 2 GiB


class DownloadDialog(QDialog):
    def __init__(self, models_folder: Path, tasks: TaskRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Download a model")
        self.setMinimumWidth(560)
        self.models_folder = models_folder
        self.downloaded: Path | None = None
        self._tasks = tasks
        self._cancel = threading.Event()
        self._started = 0.0
        self._progress = _Progress()
        self._progress.changed.connect(self._on_progress)

        self.url = QLineEdit()
        self.url.setPlaceholderText("https://…/model.gguf")
        self.sha256 = QLineEdit()
        self.sha256.setPlaceholderText("optional: the SHA-256 the publisher lists")
        form = QFormLayout()
        form.addRow("URL", self.url)
        form.addRow("SHA-256", self.sha256)
        self.bar = QProgressBar()
        self.bar.setVisible(False)
        self.status = QLabel(f"Saved to {models_folder}. An interrupted download resumes where it stopped.")
        self.status.setWordWrap(True)
        self.start_button = QPushButton("Download")
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Cancel)
        self.buttons.addButton(self.start_button, QDialogButtonBox.AcceptRole)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.bar)
        layout.addWidget(self.status)
        layout.addWidget(self.buttons)

    def start(self) -> None:
        url, sha = self.url.text().strip(), self.sha256.text().strip() or None
        if not url:
            self.status.setText("Paste the address of a .gguf file first.")
            return
        from assistant.llm.models import download_model

        self._cancel.clear()
        self._started = time.monotonic()
        self.start_button.setEnabled(False)
        self.url.setEnabled(False)
        self.sha256.setEnabled(False)
        self.bar.setVisible(True)
        self.bar.setRange(0, 0)
        self.status.setText("Connecting…")
        self._tasks.submit(
            lambda: download_model(url, self.models_folder, sha256=sha, progress=self._progress.changed.emit,
                                   cancel=self._cancel),
            self._on_done, self._on_error,
        )

    def reject(self) -> None:
        """Cancel, Esc and the close button stop a running download first; the next press closes."""
        if self.start_button.isEnabled():
            super().reject()
        else:
            self._cancel.set()  # the download thread notices within one block and reports back
            self.status.setText("Cancelling…")

    def _on_progress(self, done: int, total: int | None) -> None:
        rate = done / max(time.monotonic() - self._started, 1e-3) / 1e6
        if total:
            self.bar.setRange(0, 1000)
            self.bar.setValue(int(done * 1000 / total))
            left = (total - done) / 1e6 / rate if rate > 0 else 0
            self.status.setText(f"{done / 1e6:.0f} of {total / 1e6:.0f} MB · {rate:.1f} MB/s · about {left:.0f} s left")
        else:
            self.status.setText(f"{done / 1e6:.0f} MB · {rate:.1f} MB/s")

    def _on_done(self, path: Path) -> None:
        self.downloaded = path
        self.accept()

    def _on_error(self, exc: Exception) -> None:
        self.start_button.setEnabled(True)
        self.url.setEnabled(True)
        self.sha256.setEnabled(True)
        self.bar.setVisible(False)
        self.status.setText(str(exc))
