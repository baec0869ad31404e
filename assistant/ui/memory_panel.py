"""The Memory panel: what the assistant remembers across chats, where each memory came from, and the
switches to forget any of it or stop remembering (everywhere, or for the open chat)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
)


class MemoryPanel(QDialog):
    settingsChanged = Signal(object)  # Settings, with memory_enabled changed

    def __init__(self, assistant, tasks, settings, conversation_id: int | None, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Memory")
        self.resize(640, 460)
        self.assistant, self.tasks, self.settings = assistant, tasks, settings
        self.conversation_id = conversation_id
        self.memories: list = []
        layout = QVBoxLayout(self)
        intro = QLabel("What the assistant remembers from your chats and recalls in new ones. It stays on this "
                       "computer. Deleting a chat also deletes what was remembered from it.")
        intro.setWordWrap(True)
        layout.addWidget(intro)
        self.enabled = QCheckBox("Remember conversations and recall them in other chats")
        self.enabled.setChecked(settings.memory_enabled)
        self.enabled.toggled.connect(self._set_enabled)
        layout.addWidget(self.enabled)
        self.this_chat = QCheckBox("Remember this chat")
        self.this_chat.setEnabled(False)  # until the chat's own setting is read
        self.this_chat.setVisible(conversation_id is not None)
        self.this_chat.toggled.connect(self._set_chat)
        layout.addWidget(self.this_chat)
        self.status = QLabel("Reading memories…")
        layout.addWidget(self.status)
        self.list = QListWidget()
        self.list.setObjectName("memory_list")
        self.list.setWordWrap(True)
        self.list.setSelectionMode(QListWidget.ExtendedSelection)
        self.list.itemSelectionChanged.connect(lambda: self.forget_button.setEnabled(bool(self.list.selectedItems())))
        layout.addWidget(self.list, 1)
        buttons = QHBoxLayout()
        self.forget_button = QPushButton("Forget selected")
        self.forget_button.setEnabled(False)
        self.forget_button.clicked.connect(self.forget_selected)
        self.forget_all_button = QPushButton("Forget everything…")
        self.forget_all_button.clicked.connect(self.forget_all)
        buttons.addWidget(self.forget_button)
        buttons.addWidget(self.forget_all_button)
        buttons.addStretch(1)
        close = QDialogButtonBox(QDialogButtonBox.Close)
        close.rejected.connect(self.reject)
        buttons.addWidget(close)
        layout.addLayout(buttons)
        self.refresh()

    def refresh(self) -> None:
        chat_id = self.conversation_id

        def read():
            memory = self.assistant.memory.list()
            titles = {c.id: c.title for c in self.assistant.conversations.list(limit=100_000)}
            chat = self.assistant.conversations.get(chat_id) if chat_id is not None else None
            return memory, titles, chat

        self.tasks.submit(read, self._show, lambda exc: self.status.setText(f"Could not read the memories: {exc}"))

    def _show(self, result) -> None:
        memories, titles, chat = result
        self.memories = memories
        self.list.clear()
        for m in memories:
            where = (f"from “{titles.get(m.chat_id, 'a deleted chat')}”" if m.kind == "exchange"
                     else "you asked me to remember" + (f", in “{titles[m.chat_id]}”" if m.chat_id in titles else ""))
            item = QListWidgetItem(f"{' '.join(m.text.split())[:300]}\n{datetime.fromtimestamp(m.when):%d %b %Y %H:%M}"
                                   f" · {where}")
            item.setData(Qt.UserRole, m.key)
            self.list.addItem(item)
        n = len(memories)
        self.status.setText(f"{n} memor{'y' if n == 1 else 'ies'}." if n else "Nothing is remembered yet.")
        self.forget_all_button.setEnabled(bool(n))
        if chat is not None:
            self.this_chat.blockSignals(True)
            self.this_chat.setChecked(chat.memory)
            self.this_chat.blockSignals(False)
            self.this_chat.setEnabled(True)

    def forget_selected(self) -> None:
        keys = [item.data(Qt.UserRole) for item in self.list.selectedItems()]
        self._forget(keys)

    def forget_all(self) -> None:
        if QMessageBox.question(self, "Forget everything", "Forget everything the assistant remembers? Your chats "
                                "stay; only what is recalled from them goes.") != QMessageBox.Yes:
            return
        self._forget([m.key for m in self.memories])

    def _forget(self, keys: list[str]) -> None:
        self.status.setText("Forgetting…")
        self.forget_button.setEnabled(False)
        self.tasks.submit(lambda: sum(self.assistant.memory.forget(k) for k in keys), lambda _: self.refresh())

    def _set_enabled(self, on: bool) -> None:
        self.settings = replace(self.settings, memory_enabled=on)
        self.settingsChanged.emit(self.settings)  # the window applies it; the worker saves it

    def _set_chat(self, on: bool) -> None:
        chat_id = self.conversation_id
        self.tasks.submit(lambda: self.assistant.conversations.set_memory(chat_id, on))
