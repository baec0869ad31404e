"""The Documents panel: collections, their files and why any was skipped, indexing with progress.

Indexing runs on its own thread (the one writer of the index); the panel only shows and asks.
"""

from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import QObject, Qt, QThread, QTimer, Signal, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QProgressBar,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from assistant.rag import ALL_COLLECTIONS

NO_DOCUMENTS = "No documents"
WATCH_INTERVAL_S = 30


class IndexWorker(QObject):
    progress = Signal(object)  # IndexProgress
    finished = Signal(object)  # IndexReport
    failed = Signal(str)
    changed = Signal()  # the store changed: re-read lists
    synced = Signal(object)  # [(collection, IndexReport)] where folder watching found changes

    def __init__(self) -> None:
        super().__init__()
        self.assistant = None
        self.cancel = threading.Event()  # set and cleared by the UI thread

    @Slot(object, str)
    def index(self, paths: list, collection: str) -> None:
        try:
            report = self.assistant.index(paths, collection, progress=self.progress.emit, cancel=self.cancel)
        except Exception as exc:  # the worker must survive anything; the message says what happened
            self.failed.emit(str(exc))
        else:
            self.finished.emit(report)
        self.changed.emit()

    @Slot(str)
    def reindex(self, collection: str) -> None:
        try:
            report = self.assistant.reindex(collection, progress=self.progress.emit, cancel=self.cancel)
        except Exception as exc:
            self.failed.emit(str(exc))
        else:
            self.finished.emit(report)
        self.changed.emit()

    @Slot()
    def sync(self) -> None:
        """Folder watching: re-walk every collection's files and folders; quiet unless something changed."""
        def progress(p) -> None:
            if p.files_total:  # work found: show it like any indexing
                self.progress.emit(p)

        try:
            changed = self.assistant.sync(progress=progress, cancel=self.cancel)
        except Exception as exc:
            self.failed.emit(f"Watching folders: {exc}")
            return
        self.synced.emit(changed)
        if changed:
            self.changed.emit()

    @Slot(str, str)
    def remove(self, collection: str, path: str) -> None:
        try:
            self.assistant.forget(collection, path)
        except Exception as exc:
            self.failed.emit(str(exc))
        self.changed.emit()


class DocumentsPanel(QWidget):
    indexRequested = Signal(object, str)
    reindexRequested = Signal(str)
    syncRequested = Signal()
    removeRequested = Signal(str, str)
    collectionChosen = Signal(str)  # "" means: answer without documents

    def __init__(self, tasks, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tasks = tasks
        self.assistant = None
        self.busy = False
        self._pending_select: str | None = None
        self._indexing_into = "default"
        self.cancel_event = threading.Event()  # replaced by the index worker's own event
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)

        row = QHBoxLayout()
        row.addWidget(QLabel("Answer from"))
        self.collection = QComboBox()
        self.collection.setToolTip("The document collection this chat's answers are grounded in")
        self.collection.addItem(NO_DOCUMENTS, "")
        self.collection.currentIndexChanged.connect(self._on_collection)
        row.addWidget(self.collection, 1)
        layout.addLayout(row)

        self.files = QTreeWidget()
        self.files.setHeaderLabels(["File", "Status", "Chunks"])
        self.files.setRootIsDecorated(False)
        self.files.header().setSectionResizeMode(0, QHeaderView.Stretch)
        self.files.setToolTip("Why a file was skipped or failed is shown in its status")
        layout.addWidget(self.files, 1)

        buttons = QHBoxLayout()
        self.add_files = QPushButton("Add files…")
        self.add_files.clicked.connect(self._pick_files)
        self.add_folder = QPushButton("Add folder…")
        self.add_folder.clicked.connect(self._pick_folder)
        self.remove_button = QPushButton("Remove")
        self.remove_button.clicked.connect(self._remove_selected)
        self.reindex_button = QPushButton("Re-index")
        self.reindex_button.setToolTip("Look for new, changed and deleted files (unchanged files cost nothing)")
        self.reindex_button.clicked.connect(self._reindex)
        for b in (self.add_files, self.add_folder, self.remove_button, self.reindex_button):
            buttons.addWidget(b)
        layout.addLayout(buttons)

        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setVisible(False)
        self.cancel_button.clicked.connect(self._cancel)
        prow = QHBoxLayout()
        prow.addWidget(self.progress, 1)
        prow.addWidget(self.cancel_button)
        layout.addLayout(prow)
        layout.addWidget(self.status)

        # Folder watching: a walk every WATCH_INTERVAL_S costs a stat() per file and finds what changed
        # whatever the file system (network shares and removable disks give no change notifications).
        self.watch = True
        self.syncing = False
        self.watch_timer = QTimer(self)
        self.watch_timer.setInterval(WATCH_INTERVAL_S * 1000)
        self.watch_timer.timeout.connect(self.sync_now)
        self.watch_timer.start()

    # -- what the window calls ----------------------------------------------------------------

    def set_assistant(self, assistant) -> None:
        self.assistant = assistant
        self.refresh()

    def current_collection(self) -> str:
        return self.collection.currentData() or ""

    def index_paths(self, paths: list[Path], collection: str | None = None) -> None:
        if self.assistant is None or self.busy or not paths:
            return
        collection = collection or self.current_collection() or "default"
        if collection == ALL_COLLECTIONS:
            collection = "default"
        self._start(collection)
        self.indexRequested.emit(list(paths), collection)

    def _start(self, collection: str) -> None:
        self.busy = True
        self._set_buttons()
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        self.cancel_button.setVisible(True)
        self.status.setText(f"Indexing into '{collection}'… (the first time, the embedding model loads)")
        self.cancel_event.clear()  # here, not in the worker: a Cancel pressed early still counts
        self._indexing_into = collection

    def sync_now(self) -> None:
        """Look for changed files in every collection now (the timer calls this)."""
        if self.assistant is None or self.busy or self.syncing or not self.watch:
            return
        self.syncing = True
        self.syncRequested.emit()

    def on_synced(self, changed) -> None:
        self.syncing = False
        if self.busy:
            self._done()
        if changed:
            parts = [f"'{name}': {r.files_indexed} indexed, {r.files_removed} removed, {len(r.files_failed)} failed"
                     for name, r in changed]
            self.status.setText("Noticed changes in your folders. " + "; ".join(parts))

    def on_progress(self, p) -> None:
        if not self.busy:  # folder watching found work: show it, with Cancel, like any indexing
            self.busy = True
            self._set_buttons()
            self.progress.setVisible(True)
            self.cancel_button.setVisible(True)
        if p.files_total:
            self.progress.setRange(0, p.files_total)
            self.progress.setValue(p.files_done)
        eta = f" · about {p.eta_s:.0f} s left" if p.eta_s is not None else ""
        name = Path(p.current_file).name if p.current_file else ""
        self.status.setText(f"{p.files_done}/{p.files_total} files · {p.chunks_done} chunks · "
                            f"{p.rate_chunks_per_s:.0f} chunks/s{eta}\n{name}")

    def on_finished(self, report) -> None:
        self._done()
        r = report.as_dict()
        failed = len(r["files_failed"])
        self.status.setText(
            f"{r['files_indexed']} indexed, {r['files_skipped']} skipped, {failed} failed · "
            f"{r['chunks_added']} chunks added, {r['chunks_removed']} removed in {r['seconds']:.1f} s"
            + (" (cancelled: run Re-index to finish)" if report.cancelled else ""))
        if self.current_collection() == "" and r["files_indexed"]:
            self.select(self._indexing_into)  # the user just added documents: answer from them

    def on_failed(self, message: str) -> None:
        self.syncing = False
        self._done()
        self.status.setText(message)

    def select(self, collection: str) -> None:
        self._pending_select = collection
        self.refresh()

    # -- internals ------------------------------------------------------------------------------

    def refresh(self) -> None:
        if self.assistant is None:
            return
        chosen = self._pending_select or self.current_collection()

        def read():
            docs = self.assistant.documents
            collections = docs.list_collections()
            if chosen == ALL_COLLECTIONS:
                files = [(c.name, f) for c in collections for f in docs.documents(c.name)]
            elif chosen and docs.collection_id(chosen) is not None:
                files = [(chosen, f) for f in docs.documents(chosen)]
            else:
                files = []
            return collections, files

        self.tasks.submit(read, lambda result: self._show(result, chosen))

    def _show(self, result, chosen: str) -> None:
        collections, files = result
        self._pending_select = None
        before = self.current_collection()
        self.collection.blockSignals(True)
        self.collection.clear()
        self.collection.addItem(NO_DOCUMENTS, "")
        for c in collections:
            self.collection.addItem(f"{c.name} ({c.documents} file{'s' * (c.documents != 1)})", c.name)
        if len(collections) > 1:
            self.collection.addItem(f"All {len(collections)} collections", ALL_COLLECTIONS)
        index = max(0, self.collection.findData(chosen))
        self.collection.setCurrentIndex(index)
        self.collection.blockSignals(False)
        self.files.clear()
        for collection, d in files:
            status = d.status if not d.reason else f"{d.status}: {d.reason}"
            item = QTreeWidgetItem([Path(d.path).name, status, str(d.chunk_count)])
            item.setToolTip(0, d.path if chosen != ALL_COLLECTIONS else f"{d.path}\nin '{collection}'")
            item.setToolTip(1, status)
            item.setData(0, Qt.UserRole, d.path)
            item.setData(0, Qt.UserRole + 1, collection)
            self.files.addTopLevelItem(item)
        self._set_buttons()
        if self.current_collection() != before:
            self.collectionChosen.emit(self.current_collection())

    def _on_collection(self, _index: int) -> None:
        self.collectionChosen.emit(self.current_collection())
        self.refresh()

    def _pick_files(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Add documents")
        self._ask_collection_then_index([Path(p) for p in paths])

    def _pick_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Add a folder of documents")
        if path:
            self._ask_collection_then_index([Path(path)])

    def _ask_collection_then_index(self, paths: list[Path]) -> None:
        if not paths:
            return
        collection = self.current_collection()
        if collection in ("", ALL_COLLECTIONS):
            name, ok = QInputDialog.getText(self, "New collection", "Name of the collection:", text="default")
            if not ok or not name.strip():
                return
            collection = name.strip()
        self.index_paths(paths, collection)

    def _remove_selected(self) -> None:
        item = self.files.currentItem()
        if item is None or self.busy:
            return
        self.removeRequested.emit(item.data(0, Qt.UserRole + 1), item.data(0, Qt.UserRole))

    def _reindex(self) -> None:
        collection = self.current_collection()
        if collection in ("", ALL_COLLECTIONS) or self.busy or self.assistant is None:
            return
        self._start(collection)
        self.reindexRequested.emit(collection)

    def _cancel(self) -> None:
        self.cancel_event.set()
        self.status.setText("Cancelling… (what is indexed so far is kept)")

    def _done(self) -> None:
        self.busy = False
        self.progress.setVisible(False)
        self.cancel_button.setVisible(False)
        self._set_buttons()

    def _set_buttons(self) -> None:
        for b in (self.add_files, self.add_folder, self.remove_button, self.reindex_button):
            b.setEnabled(not self.busy)
        has = bool(self.current_collection())
        self.remove_button.setEnabled(not self.busy and has)
        self.reindex_button.setEnabled(not self.busy and has)


def start_index_thread(parent: QObject) -> tuple[QThread, IndexWorker]:
    thread = QThread(parent)
    thread.setObjectName("indexer")
    worker = IndexWorker()
    worker.moveToThread(thread)
    thread.start()
    return thread, worker
