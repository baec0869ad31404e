"""File ▸ Model library…: the curated catalog labelled for this computer, one-click downloads, and the
models other apps (Ollama, LM Studio, the Hugging Face cache) already keep on this computer."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from assistant.ui.tasks import TaskRunner

COLUMNS = ["", "Model", "Size", "On this computer", "Good at", "Tools", "Licence"]


class _Progress(QObject):
    # Emitted from the download thread, delivered on the UI thread.
    changed = Signal(object, object)  # not int: a C int overflows past 2 GiB


def gather(home: Path, folders: list[str]) -> dict:
    """Everything the dialog shows, read off the UI thread: the catalog rows for this machine, which
    are downloaded (or half downloaded), and the models found in other apps' folders."""
    from assistant.config import models_dir
    from assistant.llm import catalog as cat
    from assistant.llm.scan import scan

    catalog = cat.load_catalog(home)
    machine = cat.this_machine()
    folder = models_dir(home)
    rows = cat.catalog_rows(catalog, machine)
    entries = {e.id: e for e in catalog.entries}
    for row in rows:
        entry = entries[row["id"]]
        done = cat.downloaded_path(entry, folder)
        part = folder / (entry.file + ".part")
        row["path"] = str(done) if done else None
        row["partial"] = part.stat().st_size if done is None and part.exists() else 0
    return {"machine": machine.describe(), "rows": rows, "entries": entries, "folder": folder,
            "problems": catalog.problems, "found": scan([Path(f) for f in folders])}


def recommended(home: Path) -> dict | None:
    """The catalog row recommended for this computer, for the welcome panel (off the UI thread)."""
    from assistant.llm import catalog as cat

    catalog = cat.load_catalog(home)
    return next((r for r in cat.catalog_rows(catalog, cat.this_machine()) if r["recommended"]), None)


class ModelLibrary(QDialog):
    """Not modal: a download of gigabytes goes on while the user chats, and closing the dialog does not
    stop it (the status bar keeps showing it). modelChosen(path) asks the window to load a model."""

    modelChosen = Signal(str)
    downloadProgress = Signal(str)  # a line for the window's status bar; "" when no download runs

    def __init__(self, home: Path, folders: list[str], tasks: TaskRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Model library")
        self.resize(980, 620)
        self.home, self.folders, self._tasks = home, folders, tasks
        self.data: dict | None = None
        self.downloading: str | None = None  # the id of the entry being downloaded
        self._cancel = threading.Event()
        self._stopping = ""  # "pause" or "cancel" while a download winds down
        self._started = 0.0
        self._start_bytes = 0
        self._progress = _Progress()
        self._progress.changed.connect(self._on_progress)

        self.machine = QLabel("Looking at this computer…")
        self.machine.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("catalog")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeToContents)
        header.setSectionResizeMode(4, QHeaderView.Stretch)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.itemDoubleClicked.connect(lambda _item: self.get_selected())

        self.get_button = QPushButton("Download and use")
        self.get_button.setDefault(True)
        self.get_button.clicked.connect(self.get_selected)
        self.pause_button = QPushButton("Pause")
        self.pause_button.clicked.connect(self.pause)
        self.resume_button = QPushButton("Resume")
        self.resume_button.clicked.connect(self.resume)
        self.cancel_button = QPushButton("Cancel download")
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        for button in (self.get_button, self.pause_button, self.resume_button, self.cancel_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setVisible(False)
        self.status = QLabel("")
        self.status.setObjectName("library_status")
        self.status.setWordWrap(True)

        self.found_label = QLabel("<b>Already on this computer</b> (used where they are, nothing is copied)")
        self.found = QTableWidget(0, 4)
        self.found.setObjectName("found")
        self.found.setHorizontalHeaderLabels(["Model", "From", "Size", "File"])
        self.found.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.found.setSelectionMode(QAbstractItemView.SingleSelection)
        self.found.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.found.verticalHeader().setVisible(False)
        self.found.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.found.horizontalHeader().setStretchLastSection(True)
        self.found.setMaximumHeight(150)
        self.found.itemDoubleClicked.connect(lambda _item: self.use_found())
        self.use_found_button = QPushButton("Use this model")
        self.use_found_button.clicked.connect(self.use_found)
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        bottom = QHBoxLayout()
        bottom.addWidget(self.use_found_button)
        bottom.addStretch(1)
        bottom.addWidget(close)

        layout = QVBoxLayout(self)
        layout.addWidget(self.machine)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.bar)
        layout.addWidget(self.status)
        layout.addWidget(self.found_label)
        layout.addWidget(self.found)
        layout.addLayout(bottom)
        self._update_buttons()

    # -- reading ------------------------------------------------------------------------

    def refresh(self, then=None) -> None:
        """Re-read the catalog, this computer and the other apps' folders (off the UI thread)."""
        def show(data: dict) -> None:
            self._show(data)
            if then is not None:
                then()

        self._tasks.submit(lambda: gather(self.home, self.folders), show,
                           lambda exc: self.status.setText(f"The model library could not be read: {exc}"))

    def _show(self, data: dict) -> None:
        self.data = data
        self.machine.setText(f"<b>This computer:</b> {data['machine']}. ★ marks the model recommended for it. "
                             f"Downloads go to {data['folder']} and resume if interrupted."
                             + "".join(f"<br><span style='color:#b00;'>{p}</span>" for p in data["problems"]))
        from assistant.llm.hardware import format_size

        selected = self.selected_id()
        self.table.setRowCount(len(data["rows"]))
        for i, row in enumerate(data["rows"]):
            name = row["name"] + (" · thinks before answering" if row["kind"] == "reasoning" else "")
            if row["path"]:
                name += " · downloaded"
            elif row["partial"]:
                name += f" · {row['partial'] * 100 // max(row['size'], 1)}% downloaded"
            cells = ["★" if row["recommended"] else "", name, format_size(row["size"]), row["label"],
                     row["good_at"], "yes" if row["tools"] else "", row["license"]]
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(Qt.UserRole, row["id"])
                item.setToolTip(f"{row['why']}\n{row['quantization']}, {row['parameters_b']:g}B parameters, "
                                f"context {row['context_length']:,} tokens.")
                self.table.setItem(i, j, item)
            if row["id"] == selected or (selected is None and row["recommended"]):
                self.table.selectRow(i)
        found = data["found"]
        self.found.setRowCount(len(found))
        for i, hit in enumerate(found):
            for j, text in enumerate([hit.name, hit.source, format_size(hit.size), str(hit.path)]):
                item = QTableWidgetItem(text)
                item.setData(Qt.UserRole, str(hit.path))
                self.found.setItem(i, j, item)
        self.found_label.setText("<b>Already on this computer</b> (used where they are, nothing is copied)"
                                 if found else "<b>Already on this computer:</b> no GGUF models found in Ollama's, "
                                 "LM Studio's or the Hugging Face cache's folders, or the folders in Settings.")
        self.found.setVisible(bool(found))
        self.use_found_button.setVisible(bool(found))
        self._update_buttons()

    def selected_id(self) -> str | None:
        items = self.table.selectedItems()
        return items[0].data(Qt.UserRole) if items else None

    def _row(self, entry_id: str | None) -> dict | None:
        if self.data is None or entry_id is None:
            return None
        return next((r for r in self.data["rows"] if r["id"] == entry_id), None)

    def _update_buttons(self) -> None:
        row = self._row(self.selected_id())
        running = self.downloading is not None
        self.get_button.setEnabled(row is not None and not running)
        self.get_button.setText("Use" if row and row["path"] else
                                "Resume and use" if row and row["partial"] else "Download and use")
        self.pause_button.setVisible(running)
        self.pause_button.setEnabled(running and not self._stopping)
        paused = not running and row is not None and bool(row["partial"])
        self.resume_button.setVisible(paused)
        self.cancel_button.setVisible(running or paused)
        self.cancel_button.setEnabled(not self._stopping)

    # -- actions --------------------------------------------------------------------------

    def get_selected(self) -> None:
        entry_id = self.selected_id()
        if entry_id is not None:
            self.get(entry_id)

    def get(self, entry_id: str) -> None:
        """Use the entry's file if it is downloaded; otherwise download it (resuming a .part) and use it."""
        row = self._row(entry_id)
        if row is None or self.downloading is not None:
            return
        if row["path"]:
            self.modelChosen.emit(row["path"])
            self.status.setText(f"Loading {row['name']}…")
            return
        from assistant.llm.models import download_model

        entry = self.data["entries"][entry_id]
        folder = self.data["folder"]
        self.downloading, self._stopping = entry_id, ""
        self._cancel.clear()
        self._started = time.monotonic()
        self._start_bytes = row["partial"]
        self.bar.setVisible(True)
        self.bar.setValue(int(row["partial"] * 1000 / max(entry.size, 1)))
        self.status.setText(f"Connecting to {entry.url.split('/')[2]}…")
        self._update_buttons()
        self._tasks.submit(
            lambda: download_model(entry.url, folder, sha256=entry.sha256, progress=self._progress.changed.emit,
                                   cancel=self._cancel, filename=entry.file, size=entry.size),
            lambda path: self._on_done(entry_id, path), lambda exc: self._on_error(entry_id, exc),
        )

    def pause(self) -> None:
        if self.downloading is not None:
            self._stopping = "pause"
            self._cancel.set()  # the download thread notices within one block; the .part stays
            self.status.setText("Pausing…")
            self._update_buttons()

    def resume(self) -> None:
        self.get_selected()

    def cancel(self) -> None:
        """Stop the download and delete what it wrote."""
        if self.downloading is not None:
            self._stopping = "cancel"
            self._cancel.set()
            self.status.setText("Cancelling…")
            self._update_buttons()
            return
        row = self._row(self.selected_id())
        if row is not None and row["partial"]:
            self._delete_part(row["id"])

    def shutdown(self) -> None:
        """The app is closing: stop a download, keeping its .part so the next start can resume it."""
        self._stopping = self._stopping or "pause"
        self._cancel.set()

    def use_found(self) -> None:
        items = self.found.selectedItems()
        if items:
            self.modelChosen.emit(items[0].data(Qt.UserRole))
            self.status.setText(f"Loading {items[0].text()}…")

    # -- download events ------------------------------------------------------------------

    def _on_progress(self, done: int, total: int | None) -> None:
        from assistant.llm.hardware import format_size

        elapsed = max(time.monotonic() - self._started, 1e-3)
        rate = max(done - self._start_bytes, 0) / elapsed
        row = self._row(self.downloading)
        name = row["name"] if row else "the model"
        if total:
            self.bar.setValue(int(done * 1000 / total))
            left = (total - done) / rate if rate > 0 else 0
            text = (f"Downloading {name}: {format_size(done)} of {format_size(total)} · {rate / 1e6:.1f} MB/s"
                    + (f" · about {_eta(left)} left" if rate > 0 else ""))
        else:
            text = f"Downloading {name}: {format_size(done)} · {rate / 1e6:.1f} MB/s"
        if not self._stopping:
            self.status.setText(text)
        self.downloadProgress.emit(text)

    def _on_done(self, entry_id: str, path: Path) -> None:
        row = self._row(entry_id)
        self.downloading, self._stopping = None, ""
        self.bar.setVisible(False)
        self.downloadProgress.emit("")
        if row is not None:
            row["path"], row["partial"] = str(path), 0
        self.status.setText(f"Downloaded and checked {path.name}. Loading it…")
        self.modelChosen.emit(str(path))
        self.refresh()

    def _on_error(self, entry_id: str, exc: Exception) -> None:
        stopping, self._stopping = self._stopping, ""
        self.downloading = None
        self.bar.setVisible(False)
        self.downloadProgress.emit("")
        if stopping == "cancel":
            self._delete_part(entry_id)
            return
        if stopping == "pause":
            self.status.setText("Paused. Resume carries on from where it stopped, even after a restart.")
        else:
            self.status.setText(str(exc))
        self.refresh()

    def _delete_part(self, entry_id: str) -> None:
        entry = self.data["entries"][entry_id]
        part = Path(self.data["folder"]) / (entry.file + ".part")

        def delete() -> None:
            part.unlink(missing_ok=True)

        def deleted(_value) -> None:
            self.status.setText(f"Cancelled; the partial download of {entry.name} was deleted.")
            self.refresh()

        self._tasks.submit(delete, deleted, lambda exc: self.status.setText(f"{part} could not be deleted: {exc}"))


def _eta(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
