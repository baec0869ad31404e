"""The chat list: a chat dragged out of it lands as a Markdown file (file manager) or text (an editor)."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QMimeData, Qt, QUrl
from PySide6.QtWidgets import QAbstractItemView, QListWidget

DRAG_FOLDER = Path(tempfile.gettempdir()) / "assistant-chats"


def markdown_file(conversation_id: int, title: str, markdown: str) -> Path:
    """Write a chat's Markdown where a drag can point at it, named for its title."""
    DRAG_FOLDER.mkdir(parents=True, exist_ok=True)
    name = re.sub(r'[\\/:*?"<>|\x00-\x1f]+', " ", title).strip(" .") or f"chat {conversation_id}"
    path = DRAG_FOLDER / f"{name[:80]}.md"
    path.write_text(markdown, encoding="utf-8")
    return path


class ChatList(QListWidget):
    def __init__(self, export: Callable[[int], tuple[str, str]]) -> None:
        """export(conversation_id) -> (title, markdown), used when no prepared copy is at hand."""
        super().__init__()
        self.export = export
        self.prepared: dict[int, tuple[Path, str]] = {}  # conversation id -> (file, markdown), made off the UI thread
        self.setDragEnabled(True)
        self.setDragDropMode(QAbstractItemView.DragOnly)
        self.setDefaultDropAction(Qt.CopyAction)

    def prepare(self, conversation_id: int, title: str, markdown: str) -> None:
        """Called from a worker thread: write the file now so a drag starts without touching the disk."""
        self.prepared[conversation_id] = (markdown_file(conversation_id, title, markdown), markdown)

    def mimeData(self, items) -> QMimeData:
        data = QMimeData()
        urls, texts = [], []
        for item in items:
            conversation_id = item.data(Qt.UserRole)
            prepared = self.prepared.get(conversation_id)
            if prepared is None or not prepared[0].exists():
                title, markdown = self.export(conversation_id)
                prepared = (markdown_file(conversation_id, title, markdown), markdown)
            urls.append(QUrl.fromLocalFile(str(prepared[0])))
            texts.append(prepared[1])
        data.setUrls(urls)
        data.setText("\n\n".join(texts))
        data.setData("text/markdown", "\n\n".join(texts).encode("utf-8"))
        return data

    def supportedDragActions(self):
        return Qt.CopyAction
