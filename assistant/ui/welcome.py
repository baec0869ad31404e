"""The first-run screen: shown over the empty chat until the user starts, then never again."""

from __future__ import annotations

import html

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout


class WelcomePanel(QFrame):
    """What runs where, the default model, and the three first things to do."""

    addDocuments = Signal()
    tryVoice = Signal()
    start = Signal()
    getModel = Signal(str)  # a catalog id: download it (one click) and use it

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("welcome")
        self.setFrameShape(QFrame.StyledPanel)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(24, 20, 24, 20)
        self.text = QLabel()
        self.text.setObjectName("welcome_text")
        self.text.setWordWrap(True)
        self.text.setTextFormat(Qt.RichText)
        self.set_model("loading…")
        layout.addWidget(self.text)
        row = QHBoxLayout()
        self.start_button = QPushButton("Start chatting")
        self.start_button.setDefault(True)
        self.documents_button = QPushButton("Add documents…")
        self.voice_button = QPushButton("Try voice")
        for button, signal, tip in [
            (self.start_button, self.start, "Close this and type a question"),
            (self.documents_button, self.addDocuments, "Choose files or a folder to search and cite in answers"),
            (self.voice_button, self.tryVoice, "Hold the button (or F2) while you speak; let go to send"),
        ]:
            button.setToolTip(tip)
            button.setAccessibleDescription(tip)
            button.clicked.connect(signal)
            row.addWidget(button)
        row.addStretch(1)
        layout.addLayout(row)
        # Filled in once the catalog has been read against this computer (off the UI thread).
        self.recommended_id = ""
        self.model_row = QHBoxLayout()
        self.builtin_button = QPushButton("Keep the built-in model")
        self.builtin_button.setToolTip("Start now with the small built-in model; File ▸ Model library… later")
        self.builtin_button.clicked.connect(self.start)
        self.get_button = QPushButton()
        self.get_button.setObjectName("get_recommended")
        self.get_button.clicked.connect(lambda: self.getModel.emit(self.recommended_id))
        self.model_row.addWidget(self.builtin_button)
        self.model_row.addWidget(self.get_button)
        self.model_row.addStretch(1)
        self.builtin_button.setVisible(False)
        self.get_button.setVisible(False)
        layout.addLayout(self.model_row)
        layout.addStretch(1)

    def offer(self, row: dict | None) -> None:
        """A catalog row (catalog_rows) recommended for this computer, offered beside the built-in model."""
        if not row:
            return
        from assistant.llm.hardware import format_size

        self.recommended_id = row["id"]
        self.get_button.setText(f"Download {row['name']} ({format_size(row['size'])}) and use it")
        tip = f"Recommended for this computer: {row['why']} Good at: {row['good_at']}. Licence: {row['license']}."
        self.get_button.setToolTip(tip)
        self.get_button.setAccessibleDescription(tip)
        self.builtin_button.setVisible(True)
        self.get_button.setVisible(True)

    def set_model(self, model: str) -> None:
        self.text.setText(
            "<h2>Welcome to Assistant</h2>"
            "<p><b>Everything runs on this computer.</b> The language model, the index of your documents and "
            "speech recognition all work offline. Nothing you type, say or drop is sent anywhere: there is no "
            "account, no cloud and no telemetry.</p>"
            f"<p><b>The model:</b> {html.escape(model)}. A small model answers fast on any computer but makes "
            "mistakes; a bigger one from File ▸ Model library… (or a .gguf file dropped here) answers better.</p>"
            "<p><b>Your documents:</b> add files or folders (PDF, Word, text, Markdown, code) and ask about "
            "them: each answer cites the passages it used, and a click opens the page.</p>"
            "<p><b>Voice:</b> hold <i>Hold to talk</i> or F2 while you speak; let go and your question is sent.</p>"
        )
