"""The main window: chats on the left, the conversation on the right, status at the bottom."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, Qt, QThread, Signal
from PySide6.QtGui import QAction, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidgetItem,
    QMainWindow,
    QMenu,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from assistant import __version__
from assistant.errors import AssistantError
from assistant.events import ContextTrimmed, Done
from assistant.fileio import atomic_write_text
from assistant.rag import ALL_COLLECTIONS
from assistant.speech import AUDIO_SUFFIXES, SAMPLE_RATE
from assistant.speech.transcriber import clock
from assistant.ui.chat_list import ChatList
from assistant.ui.chat_view import ChatView, MessageBubble
from assistant.ui.documents import DocumentsPanel, start_index_thread
from assistant.ui.tasks import TaskRunner
from assistant.ui.voice import Recorder, SpeechWorker, microphone_allowed
from assistant.ui.welcome import WelcomePanel
from assistant.ui.worker import ModelWorker

log = logging.getLogger(__name__)
TALK_KEY = Qt.Key_F2  # hold to talk, wherever the focus is
SHORT_AUDIO_S = 60.0  # a dropped recording up to this long is a question: its words go into the input box


def answer_meta(tokens: int, tokens_per_second: float, finish_reason: str) -> str:
    if tokens == 0 and finish_reason == "stop":
        return ""  # the app's own words ("Your documents don't say"): no model output to measure
    ending = {"cancelled": " · stopped", "length": " · cut short: max tokens or context full"}.get(finish_reason, "")
    return f"{tokens} tokens · {tokens_per_second:.1f} tok/s{ending}"


_base_point_size: float | None = None


def apply_font_scale(percent: int) -> None:
    """Scale the whole window's text from the desktop's own size (remembered at the first call)."""
    global _base_point_size
    app = QApplication.instance()
    font = app.font()
    if _base_point_size is None:
        _base_point_size = font.pointSizeF() if font.pointSizeF() > 0 else 10.0
    font.setPointSizeF(_base_point_size * percent / 100)
    app.setFont(font)


class InputBox(QPlainTextEdit):
    """Enter sends, Shift+Enter starts a new line."""

    submitted = Signal()

    def keyPressEvent(self, event) -> None:
        if event.key() in (Qt.Key_Return, Qt.Key_Enter) and not (event.modifiers() & Qt.ShiftModifier):
            self.submitted.emit()
            return
        super().keyPressEvent(event)


class MainWindow(QMainWindow):
    runRequested = Signal(str, object, str)
    settingsApplied = Signal(object)
    warmRequested = Signal()
    transcribeRequested = Signal(object, float)
    transcribeFileRequested = Signal(str)
    loadAnywayRequested = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle(f"Assistant {__version__}")
        self.resize(1100, 760)
        self.setAcceptDrops(True)
        self.assistant = None  # set when the worker has opened the database
        self.settings = None  # the latest settings the user applied (the worker's copy may lag behind)
        self.closing = False
        self._answered = False  # the last run ended with an answer, so the saved chat is worth re-reading
        self._last_trim: tuple[int | None, int] = (None, 0)
        self.conversation_id: int | None = None
        self.busy = False
        self.model_ready = False
        self.editing: MessageBubble | None = None
        self.last_report = None
        self.wont_fit_box: QMessageBox | None = None
        self.api_server = None  # the OpenAI-compatible API, while Settings ▸ Server has it on
        self.tasks = TaskRunner(self.show_error)
        self.transcribing: str | None = None  # "voice" or the audio file being transcribed
        self.released_at = 0.0  # when the talk button was let go
        self.last_voice_latency: float | None = None  # release to text in the input box, seconds

        self._build_widgets()
        self._build_actions()

        # The worker thread owns the model; everything slow happens there or in the task pool.
        self.worker_thread = QThread(self)
        self.worker_thread.setObjectName("model-worker")
        self.worker = ModelWorker()
        self.worker.moveToThread(self.worker_thread)
        self.worker_thread.started.connect(self.worker.start)
        self.runRequested.connect(self.worker.run)
        self.settingsApplied.connect(self.worker.apply_settings)
        w = self.worker
        w.ready.connect(self._on_ready)
        w.loading.connect(self._on_loading)
        # Bound methods of this window, not lambdas: a lambda would run in the worker's thread.
        w.loadProgress.connect(self._on_load_progress)
        w.loaded.connect(self._on_loaded)
        w.loadFailed.connect(self._on_load_failed)
        w.wontFit.connect(self._on_wont_fit)
        self.loadAnywayRequested.connect(w.load_anyway)
        w.token.connect(self.chat.append_token)
        w.thinking.connect(self.chat.append_thinking)
        w.sources.connect(self.chat.set_sources)
        w.judged.connect(self.chat.set_judged)
        w.support.connect(self.chat.set_support)
        w.step.connect(self.chat.add_step)
        w.confirmRequested.connect(self._confirm_code)
        w.trimmed.connect(self._on_trimmed)
        w.recalled.connect(self.chat.set_recalled)
        w.remembered.connect(self.chat.set_remembered)
        w.summarised.connect(self._on_summarised)
        w.finished.connect(self._on_finished)
        w.failed.connect(self._on_failed)
        w.idle.connect(self._on_idle)
        self.worker_thread.start()

        # Indexing has its own thread: the one writer of the index, so chat never waits on it.
        self.index_thread, self.indexer = start_index_thread(self)
        self.documents.indexRequested.connect(self.indexer.index)
        self.documents.removeRequested.connect(self.indexer.remove)
        self.documents.reindexRequested.connect(self.indexer.reindex)
        self.documents.syncRequested.connect(self.indexer.sync)
        self.indexer.synced.connect(self.documents.on_synced)
        self.documents.cancel_event = self.indexer.cancel
        self.indexer.progress.connect(self.documents.on_progress)
        self.indexer.finished.connect(self.documents.on_finished)
        self.indexer.failed.connect(self.documents.on_failed)
        self.indexer.changed.connect(self.documents.refresh)
        self.documents.collectionChosen.connect(self._on_collection_chosen)

        # Voice: the recorder on this thread (Qt delivers audio through the event loop), Whisper on its own.
        self.recorder = Recorder(self)
        self.recorder.live.connect(self._on_live)
        self.recorder.level.connect(self._on_level)
        self.recorder.elapsed.connect(self._on_recording_elapsed)
        self.recorder.recorded.connect(self._on_recorded)
        self.recorder.failed.connect(self._on_recording_failed)
        self.recorder.discarded.connect(self._on_recording_discarded)
        self.recorder.notice.connect(self._show_status)
        self.speech_thread = QThread(self)
        self.speech_thread.setObjectName("speech-worker")
        self.speech = SpeechWorker()
        self.speech.moveToThread(self.speech_thread)
        self.warmRequested.connect(self.speech.warm)
        self.transcribeRequested.connect(self.speech.transcribe)
        self.transcribeFileRequested.connect(self.speech.transcribe_file)
        self.speech.transcribed.connect(self._on_transcribed)
        self.speech.progress.connect(self._on_transcribe_progress)
        self.speech.failed.connect(self._on_transcribe_failed)
        self.speech_thread.start()
        QApplication.instance().installEventFilter(self)

    # -- layout ---------------------------------------------------------------------------

    def _build_widgets(self) -> None:
        side = QWidget()
        side_layout = QVBoxLayout(side)
        side_layout.setContentsMargins(8, 8, 4, 8)
        self.new_button = QPushButton("New chat")
        self.new_button.clicked.connect(self.new_chat)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search chats (titles and messages)")
        self.search.setAccessibleName("Search chats")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self.refresh_conversations)
        self.conversation_list = ChatList(self._chat_markdown)
        self.conversation_list.setAccessibleName("Chats")
        self.conversation_list.setToolTip("Your chats, newest first. Drag one out to save it as Markdown.")
        self.conversation_list.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.conversation_list.setTextElideMode(Qt.ElideRight)
        self.conversation_list.setContextMenuPolicy(Qt.CustomContextMenu)
        self.conversation_list.customContextMenuRequested.connect(self._conversation_menu)
        self.conversation_list.currentItemChanged.connect(self._on_conversation_selected)
        side_layout.addWidget(self.new_button)
        side_layout.addWidget(self.search)
        side_layout.addWidget(self.conversation_list, 1)
        self.documents = DocumentsPanel(self.tasks)
        self.side_tabs = QTabWidget()
        self.side_tabs.addTab(side, "Chats")
        self.side_tabs.addTab(self.documents, "Documents")

        main = QWidget()
        main_layout = QVBoxLayout(main)
        main_layout.setContentsMargins(4, 8, 8, 8)
        self.chat = ChatView()
        self.chat.editRequested.connect(self._start_edit)
        self.chat.wholeRequested.connect(self.answer_from_whole)
        self.chat.generalRequested.connect(self.answer_from_general_knowledge)
        self.edit_banner = QLabel("")
        self.edit_banner.setVisible(False)
        self.input = InputBox()
        self.input.setPlaceholderText("Ask anything. Enter sends, Shift+Enter adds a line.")
        self.input.setFixedHeight(90)
        self.input.setTabChangesFocus(True)  # Tab leaves the box, as keyboard users expect; Enter sends
        self.input.submitted.connect(self.send)
        self.send_button = QPushButton("Send")
        self.send_button.setDefault(True)
        self.send_button.clicked.connect(self.send)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        self.regenerate_button = QPushButton("Regenerate")
        self.regenerate_button.clicked.connect(self.regenerate)
        self.mode = QComboBox()
        self.mode.addItem("Chat", "chat")
        self.mode.addItem("Use tools", "tools")
        self.mode.addItem("Write a program", "pal")
        self.mode.setToolTip("Chat: the model answers. Use tools: it may run Python in a sandbox, search your "
                             "documents and past chats (each step is shown). Write a program: for sums and logic, "
                             "it writes a Python solution() and the sandbox runs it.")
        self.mode.currentIndexChanged.connect(self._on_mode_changed)
        self.talk_button = QPushButton("Hold to talk")
        self.talk_button.setToolTip("Hold this (or F2) while you speak; let go and your words are sent. Esc cancels.")
        self.talk_button.pressed.connect(self.start_recording)
        self.talk_button.released.connect(self.stop_recording)
        buttons = QVBoxLayout()
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.regenerate_button)
        buttons.addWidget(self.talk_button)
        buttons.addWidget(self.mode)
        row = QHBoxLayout()
        row.addWidget(self.input, 1)
        row.addLayout(buttons)
        # Recording (level and time) and transcribing (progress and Cancel) show here, above the input.
        self.voice_bar = QWidget()
        voice_row = QHBoxLayout(self.voice_bar)
        voice_row.setContentsMargins(0, 0, 0, 0)
        self.voice_label = QLabel("")
        self.voice_level = QProgressBar()
        self.voice_level.setRange(0, 100)
        self.voice_level.setTextVisible(False)
        self.voice_level.setMaximumWidth(220)
        self.voice_level.setMaximumHeight(12)
        self.voice_cancel = QPushButton("Cancel")
        self.voice_cancel.clicked.connect(self.cancel_voice)
        voice_row.addWidget(self.voice_label, 1)
        voice_row.addWidget(self.voice_level)
        voice_row.addWidget(self.voice_cancel)
        self.voice_bar.setVisible(False)
        for widget, name in [(self.chat, "Conversation"), (self.input, "Message"), (self.mode, "Answer mode"),
                             (self.new_button, "New chat"), (self.talk_button, "Hold to talk"),
                             (self.side_tabs, "Chats and documents")]:
            widget.setAccessibleName(name)
        self.welcome = WelcomePanel()
        self.welcome.setVisible(False)  # until the settings say this is a first run
        self.welcome.start.connect(self.dismiss_welcome)
        self.welcome.addDocuments.connect(self._welcome_add_documents)
        self.welcome.tryVoice.connect(self._welcome_try_voice)
        self.welcome.getModel.connect(self._welcome_get_model)
        self.library = None  # the model library dialog, once opened; it may be downloading while hidden
        main_layout.addWidget(self.welcome)
        main_layout.addWidget(self.chat, 1)
        main_layout.addWidget(self.edit_banner)
        main_layout.addWidget(self.voice_bar)
        main_layout.addLayout(row)

        splitter = QSplitter()
        splitter.addWidget(self.side_tabs)
        splitter.addWidget(main)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([260, 840])
        self.setCentralWidget(splitter)
        # Tab walks the window in reading order: the chat list side, then the conversation and its controls.
        chain = [self.new_button, self.search, self.conversation_list, self.chat, self.input, self.send_button,
                 self.stop_button, self.regenerate_button, self.talk_button, self.mode]
        for first, second in zip(chain, chain[1:], strict=False):
            QWidget.setTabOrder(first, second)

        self.model_label = QLabel("Starting…")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(160)
        self.progress.setRange(0, 100)
        self.progress.setVisible(False)
        self.speed_label = QLabel("")
        self.speed_label.setMinimumWidth(self.speed_label.fontMetrics().horizontalAdvance("000.0 tok/s · first token 0.00 s"))
        self.context_label = QLabel("")
        self.context_label.setMinimumWidth(self.context_label.fontMetrics().horizontalAdvance("context 00000/00000"))
        status = self.statusBar()
        status.addWidget(self.model_label)
        status.addWidget(self.progress)
        self.sandbox_label = QLabel("")
        self.sandbox_label.setObjectName("sandbox")
        self.api_label = QLabel("")
        self.api_label.setObjectName("api")
        self.api_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        status.addPermanentWidget(self.api_label)
        status.addPermanentWidget(self.sandbox_label)
        status.addPermanentWidget(self.speed_label)
        status.addPermanentWidget(self.context_label)

    def _build_actions(self) -> None:
        menu = self.menuBar()
        file_menu = menu.addMenu("&File")
        self._action(file_menu, "&New chat", self.new_chat, QKeySequence.New)
        self._action(file_menu, "Open &model file…", self.open_model_file, "Ctrl+O")
        self._action(file_menu, "Model &library…", self.model_library, "Ctrl+L")
        self._action(file_menu, "&Download model from a link…", self.download_model)
        self._action(file_menu, "Export chat as &Markdown…", lambda: self.export_chat("md"), "Ctrl+E")
        self._action(file_menu, "Export chat as &JSON…", lambda: self.export_chat("json"))
        self._action(file_menu, "Export &all chats…", self.export_all_chats)
        self._action(file_menu, "&Import chats…", self.import_chats)
        file_menu.addSeparator()
        self._action(file_menu, "&Settings…", self.open_settings, "Ctrl+,")
        file_menu.addSeparator()
        self._action(file_menu, "&Quit", self.close, QKeySequence.Quit)
        chat_menu = menu.addMenu("&Chat")
        self._action(chat_menu, "&Stop", self.stop, "Esc")
        self._action(chat_menu, "&Regenerate", self.regenerate, "Ctrl+R")
        self._action(chat_menu, "Focus &input", self.input.setFocus, "Ctrl+L")
        self._action(chat_menu, "Search &chats", self.search.setFocus, QKeySequence.Find)
        chat_menu.addSeparator()
        self._action(chat_menu, "&Memory…", self.open_memory, "Ctrl+M")
        view_menu = menu.addMenu("&View")
        self._action(view_menu, "&Chats", lambda: (self.side_tabs.setCurrentIndex(0), self.conversation_list.setFocus()),
                     "Ctrl+1")
        self._action(view_menu, "&Documents", lambda: (self.side_tabs.setCurrentWidget(self.documents),
                                                       self.documents.setFocus()), "Ctrl+2")
        view_menu.addSeparator()
        self._action(view_menu, "&Bigger text", lambda: self.zoom(+10), QKeySequence.ZoomIn)
        self._action(view_menu, "&Smaller text", lambda: self.zoom(-10), QKeySequence.ZoomOut)
        self._action(view_menu, "&Actual size", lambda: self.zoom(0), "Ctrl+0")
        help_menu = menu.addMenu("&Help")
        self._action(help_menu, "&Welcome", lambda: self.welcome.setVisible(True))
        self._action(help_menu, "&About", self.about)
        QShortcut(QKeySequence("Ctrl+Return"), self, activated=self.send)
        QShortcut(QKeySequence("Ctrl+="), self, activated=lambda: self.zoom(+10))  # Ctrl++ without Shift

    def _action(self, menu: QMenu, text: str, slot, shortcut=None) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(slot)
        menu.addAction(action)
        self.addAction(action)
        return action

    # -- worker events --------------------------------------------------------------------

    def _on_ready(self, assistant) -> None:
        self.assistant = assistant
        self.settings = assistant.settings
        self.indexer.assistant = assistant
        self.speech.assistant = assistant
        self.documents.watch = assistant.settings.watch_folders
        self.documents.set_assistant(assistant)
        from assistant.ui.app import apply_theme

        self.chat.dark = apply_theme(assistant.settings.theme)
        apply_font_scale(assistant.settings.font_scale)
        self.welcome.setVisible(not assistant.settings.welcomed)
        if not assistant.settings.welcomed:
            from assistant.ui.model_library import recommended

            home = assistant.home
            self.tasks.submit(lambda: recommended(home), self.welcome.offer,
                              lambda exc: log.info("No recommended model for the welcome panel: %s", exc))
        self._sync_api_server(assistant.settings)
        # Open the latest chat, unless a start-up problem is on screen: it must stay readable.
        self.refresh_conversations(select_first=not self.chat.bubbles)

    def _on_load_progress(self, fraction: float) -> None:
        self.progress.setValue(int(fraction * 100))

    def _on_loading(self, name: str) -> None:
        self.model_ready = False
        self.model_label.setText(f"Loading {name}…")
        self.progress.setValue(0)
        self.progress.setVisible(True)

    def _on_loaded(self, report) -> None:
        self.model_ready = True
        self.last_report = report
        self.progress.setVisible(False)
        self.model_label.setText(report.summary())
        self.welcome.set_model(f"{Path(report.model_path).stem} ({report.model_description})")
        self.model_label.setToolTip(
            f"{report.model_description}\nBackend: {report.backend}\n"
            f"GPU layers: {report.gpu_layers_offloaded}/{report.n_layers}\n"
            f"Context: {report.n_ctx} (trained on {report.n_ctx_train})\nThreads: {report.n_threads}\n"
            f"Loaded in {report.load_seconds:.2f} s" + (f"\n{report.gpu_note}" if report.gpu_note else "")
        )

    def _on_wont_fit(self, message: str, context_that_fits: int) -> None:
        """Before a load that may not fit: say why, and let the user pick a smaller context or go ahead."""
        self.progress.setVisible(False)
        self.model_label.setText("Model not loaded: it may not fit")
        box = QMessageBox(QMessageBox.Warning, "The model may not fit", message, QMessageBox.NoButton, self)
        box.setObjectName("wont_fit")
        smaller = box.addButton(f"Use a {context_that_fits}-token context", QMessageBox.AcceptRole) \
            if context_that_fits else None
        anyway = box.addButton("Load anyway", QMessageBox.DestructiveRole)
        box.addButton("Choose another model…", QMessageBox.RejectRole).clicked.connect(self.open_settings)

        def chosen(button) -> None:
            if button is smaller and self.settings is not None:
                from dataclasses import replace

                self.apply_settings(replace(self.settings, n_ctx=context_that_fits))
            elif button is anyway:
                self.worker.load_cancel.clear()
                self.loadAnywayRequested.emit()

        box.buttonClicked.connect(chosen)
        box.setModal(False)
        box.show()
        self.wont_fit_box = box

    def _on_load_failed(self, message: str) -> None:
        self._drop_empty_answer()
        self.progress.setVisible(False)
        self.model_label.setText("No model loaded")
        self.chat.add("error", message + "\nChoose another model in Settings (Ctrl+,) or drop a .gguf file on the window.")

    def _on_summarised(self, event) -> None:
        note = self.chat.add(
            "notice",
            f"The first {event.messages} messages of this chat no longer fit the model's context, so the model "
            "wrote notes on them that stand in for them from now on. They are still saved here.",
        )
        note.setToolTip(event.summary)

    def _on_trimmed(self, event: ContextTrimmed) -> None:
        self.context_label.setToolTip(f"{event.dropped_messages} older messages are not in the model's view")
        if self._last_trim == (self.conversation_id, event.dropped_messages):
            return  # the same cut as last turn: said once is enough
        self._last_trim = (self.conversation_id, event.dropped_messages)
        self.chat.add(
            "notice",
            f"{event.dropped_messages} older messages were left out of what the model sees, so the conversation "
            f"fits its {event.n_ctx}-token context. They are still saved here.",
        )

    def _on_finished(self, done: Done) -> None:
        self._answered = True
        bubble = self.chat.end_answer(answer_meta(done.completion_tokens, done.tokens_per_second, done.finish_reason),
                                      done.thinking_seconds if done.reasoning else None)
        if bubble is not None:
            bubble.message_id = done.message_id
        if done.completion_tokens:
            self.speed_label.setText(f"{done.tokens_per_second:.1f} tok/s · first token {done.time_to_first_token:.2f} s")
        if self.last_report is not None:
            used = done.prompt_tokens + done.completion_tokens
            self.context_label.setText(f"context {used}/{self.last_report.n_ctx}")

    def _on_failed(self, message: str) -> None:
        self._drop_empty_answer()
        self.chat.add("error", message)

    def _drop_empty_answer(self) -> None:
        bubble = self.chat.end_answer()
        if bubble is not None and not bubble.text:
            self.chat.remove_from(bubble)

    def _on_idle(self) -> None:
        # Busy ends only here, so a request can never overlap the one before it.
        self._set_busy(False)
        if self.closing:
            self.close()
            return
        if self._answered:  # after a failure, keep the error on screen instead of re-reading the chat
            self._reload_messages(keep_bubbles=True)  # picks up saved message ids (edit needs them)
        self.refresh_conversations()  # and new titles

    def _set_busy(self, busy: bool) -> None:
        self.busy = busy
        self.stop_button.setEnabled(busy)
        self.send_button.setEnabled(not busy)
        self.regenerate_button.setEnabled(not busy)

    # -- user actions ---------------------------------------------------------------------

    def send(self) -> None:
        text = self.input.toPlainText()
        if self.busy or self.assistant is None:
            return
        if not text.strip():
            self.statusBar().showMessage("Type a question first.", 3000)
            return
        if self.editing is not None and self.editing not in self.chat.bubbles:
            self._cancel_edit()  # the chat was re-drawn or switched since Edit was pressed
        self.input.clear()
        if self.welcome.isVisible():
            self.dismiss_welcome()
        # Busy from now, not from when the worker picks the job up: a second Enter must not send twice.
        self._set_busy(True)
        if self.editing is not None:
            bubble = self.editing
            self._cancel_edit()
            self.chat.remove_from(bubble)
            self._start_answer(text, "edit", (self.conversation_id, bubble.message_id, text))
        elif self.conversation_id is None:
            def created(conversation) -> None:
                self.conversation_id = conversation.id
                self.chat.clear()
                self._start_answer(text, *self._send_request(conversation.id, text))

            self.tasks.submit(lambda: self.assistant.conversations.create(), created,
                              lambda exc: (self._set_busy(False), self.show_error(exc)))
        else:
            self._start_answer(text, *self._send_request(self.conversation_id, text))

    def _confirm_code(self, tool: str, args: dict) -> None:
        """The agent wants to run a program and must ask first: show it with Run and Deny in the answer."""
        bubble = self.chat.streaming_bubble()
        bubble.ask_to_run(tool, args, self.worker.decide)

    def _on_mode_changed(self, _index: int) -> None:
        """Say plainly where the model's code would run, before it runs any."""
        if self.mode.currentData() == "chat":
            self.sandbox_label.setText("")
            return

        def check() -> str:
            from assistant.agent.sandbox import isolation

            return isolation()

        def show(kind: str) -> None:
            if kind == "bubblewrap":
                self.sandbox_label.setText("Code runs sandboxed: bubblewrap, no network, no access to your files")
            else:
                self.sandbox_label.setText("Code runs with limits only (install bubblewrap for a real sandbox)")
            self.sandbox_label.setToolTip(f"Isolation of the Python tool: {kind}")

        self.tasks.submit(check, show)

    def _send_request(self, conversation_id: int, text: str) -> tuple[str, tuple]:
        mode = self.mode.currentData()
        if mode == "chat":
            return "send", (conversation_id, text)
        return "tools", (conversation_id, text, mode == "pal")

    def _start_answer(self, text: str, kind: str, args: tuple) -> None:
        self.chat.add("user", text)
        self._request(kind, args)

    def _request(self, kind: str, args: tuple) -> None:
        self.chat.begin_answer()
        if not self.model_ready:
            self.statusBar().showMessage("The answer starts once the model has loaded.", 4000)
        # Cleared here, not by the worker: a Stop pressed before it picks the job up must still count.
        self.worker.stop_event.clear()
        self._answered = False
        self.runRequested.emit(kind, args, self.documents.current_collection())

    def stop(self) -> None:
        if self.recorder.recording or self.transcribing:
            self.cancel_voice()
        elif self.busy:
            self.worker.stop_event.set()
            if not self.model_ready:
                self.worker.load_cancel.set()  # the answer is waiting for a load: stop that too
        elif self.editing is not None:
            self._cancel_edit()
            self.input.clear()

    def _cancel_edit(self) -> None:
        self.editing = None
        self.edit_banner.setVisible(False)

    def regenerate(self) -> None:
        if self.busy or self.conversation_id is None or not self.chat.bubbles:
            return
        last = self.chat.bubbles[-1]
        if last.role in ("assistant", "error", "notice"):
            while self.chat.bubbles and self.chat.bubbles[-1].role != "user":
                self.chat.remove_from(self.chat.bubbles[-1])
        self._set_busy(True)
        self._request("regenerate", (self.conversation_id,))

    def answer_from_whole(self, path: str) -> None:
        """Answer the last question again, giving the model the whole file instead of passages."""
        if self.busy or self.conversation_id is None or not self.chat.bubbles:
            return
        while self.chat.bubbles and self.chat.bubbles[-1].role != "user":
            self.chat.remove_from(self.chat.bubbles[-1])
        self._set_busy(True)
        self._request("whole", (self.conversation_id, path))

    def answer_from_general_knowledge(self, bubble: MessageBubble) -> None:
        """The documents don't say: answer the last question again from the model's own knowledge, marked so."""
        if self.busy or self.conversation_id is None or not self.chat.bubbles:
            return
        if bubble is not self.chat.bubbles[-1]:
            self.statusBar().showMessage("Only the latest answer can be asked again; send the question again to "
                                         "get an answer from general knowledge.", 8000)
            return
        while self.chat.bubbles and self.chat.bubbles[-1].role != "user":
            self.chat.remove_from(self.chat.bubbles[-1])
        self._set_busy(True)
        self.chat.expect_general()
        self._request("general", (self.conversation_id,))

    def _start_edit(self, bubble: MessageBubble) -> None:
        if self.busy or bubble.message_id is None:
            return
        self.editing = bubble
        self.input.setPlainText(bubble.text)
        self.input.setFocus()
        self.edit_banner.setText("Editing an earlier question: Send replaces it and everything after it. Esc cancels.")
        self.edit_banner.setVisible(True)

    def new_chat(self) -> None:
        if self.assistant is None or self.busy:
            return
        self._create_conversation_then(lambda: self.input.setFocus())

    def _create_conversation_then(self, then) -> None:
        def created(conversation) -> None:
            self.conversation_id = conversation.id
            self._cancel_edit()
            self.chat.clear()
            self.refresh_conversations()
            then()

        self.tasks.submit(lambda: self.assistant.conversations.create(), created)

    def refresh_conversations(self, *_args, select_first: bool = False) -> None:
        if self.assistant is None:
            return
        query = self.search.text()

        def show(conversations) -> None:
            self.conversation_list.blockSignals(True)
            self.conversation_list.clear()
            for conv in conversations:
                item = QListWidgetItem(conv.title + (f"\n   {conv.match}" if query and conv.match else ""))
                item.setData(Qt.UserRole, conv.id)
                item.setToolTip(f"{conv.message_count} messages" + (f"\n…{conv.match}" if conv.match else ""))
                self.conversation_list.addItem(item)
                if conv.id == self.conversation_id:
                    self.conversation_list.setCurrentItem(item)
            self.conversation_list.blockSignals(False)
            if select_first and self.conversation_id is None and conversations:
                self.conversation_list.setCurrentRow(0)

        self.tasks.submit(lambda: self.assistant.conversations.list(query), show)

    def _on_conversation_selected(self, item: QListWidgetItem | None, _previous=None) -> None:
        if item is None or self.busy:
            return
        conversation_id = item.data(Qt.UserRole)
        if conversation_id == self.conversation_id and self.chat.bubbles:
            return
        self.conversation_id = conversation_id
        self._reload_messages()

    def _reload_messages(self, keep_bubbles: bool = False) -> None:
        """Re-read the chat from disk. keep_bubbles: when the bubbles on screen already show exactly these
        messages, only give them their saved ids, so an answer does not flicker or fold its opened steps."""
        conversation_id = self.conversation_id
        if conversation_id is None:
            return

        def show(messages) -> None:
            if conversation_id != self.conversation_id or self.busy:
                return  # the user moved on while the messages were read
            shown = [m for m in messages if m.role != "system"]
            if keep_bubbles and len(shown) == len(self.chat.bubbles) and all(
                    b.role == m.role and b.text == m.content for b, m in zip(self.chat.bubbles, shown, strict=True)):
                for b, m in zip(self.chat.bubbles, shown, strict=True):
                    b.message_id = m.id
                return
            self._cancel_edit()
            self.chat.clear()
            for m in messages:
                if m.role == "system":
                    continue
                bubble = self.chat.add(m.role, m.content, m.id)
                for step in m.meta.get("steps", []) if m.role == "assistant" else []:
                    bubble.add_step(step)
                if m.role == "assistant" and m.meta.get("reasoning"):
                    bubble.set_thinking(m.meta["reasoning"], m.meta.get("thinking_seconds", 0.0))
                if m.role == "assistant" and (m.meta.get("memories") or m.meta.get("remembered")):
                    bubble.show_memories(m.meta.get("memories", []), m.meta.get("remembered"))
                if m.role == "assistant" and (m.meta.get("judged") or m.meta.get("support")):
                    bubble.set_grounding(m.meta.get("judged"), m.meta.get("support", []))
                if m.role == "assistant" and m.meta.get("general_knowledge"):
                    bubble.show_general()
                elif m.role == "assistant" and (m.meta.get("sources") or m.meta.get("dropped") or m.meta.get("judged")):
                    bubble.show_sources(m.meta.get("sources", []), m.meta.get("dropped", []),
                                        m.meta.get("whole_document"))
                if m.role == "assistant" and "completion_tokens" in m.meta:
                    bubble.set_meta(answer_meta(m.meta["completion_tokens"], m.meta.get("tokens_per_second", 0.0),
                                                m.meta.get("finish_reason", "stop")))

        self.tasks.submit(lambda: self.assistant.conversations.messages(conversation_id), show)
        # A drag of this chat out of the list then finds its Markdown file ready (a failure here only
        # means the drag writes it itself).
        self.tasks.submit(lambda: self.conversation_list.prepare(conversation_id, *self._chat_markdown(conversation_id)),
                          on_error=lambda exc: log.info("Markdown for dragging not prepared: %s", exc))

    def _export_thinking(self) -> bool:
        return bool(self.settings is not None and self.settings.export_thinking)

    def _chat_markdown(self, conversation_id: int) -> tuple[str, str]:
        store = self.assistant.conversations
        return store.get(conversation_id).title, store.export_markdown(conversation_id, self._export_thinking())

    def _conversation_menu(self, pos) -> None:
        item = self.conversation_list.itemAt(pos)
        if item is None:
            return
        conversation_id = item.data(Qt.UserRole)
        menu = QMenu(self)
        menu.addAction("Rename…", lambda: self.rename_chat(conversation_id, item.text()))
        menu.addAction("Export as Markdown…", lambda: self.export_chat("md", conversation_id))
        menu.addAction("Export as JSON…", lambda: self.export_chat("json", conversation_id))
        menu.addSeparator()
        menu.addAction("Delete", lambda: self.delete_chat(conversation_id))
        menu.exec(self.conversation_list.mapToGlobal(pos))

    def open_memory(self) -> None:
        from assistant.ui.memory_panel import MemoryPanel

        if self.assistant is None:
            return
        panel = MemoryPanel(self.assistant, self.tasks, self.settings, self.conversation_id, self)
        panel.settingsChanged.connect(self.apply_settings)
        self.memory_panel = panel  # kept for tests and so it is not collected while open
        panel.open()

    def rename_chat(self, conversation_id: int, current: str) -> None:
        title, ok = QInputDialog.getText(self, "Rename chat", "Title:", text=current)
        if ok and title.strip():
            self.tasks.submit(lambda: self.assistant.conversations.rename(conversation_id, title),
                              lambda _: self.refresh_conversations())

    def delete_chat(self, conversation_id: int) -> None:
        if self.busy and conversation_id == self.conversation_id:
            return
        answer = QMessageBox.question(self, "Delete chat", "Delete this chat and all its messages?")
        if answer != QMessageBox.Yes:
            return
        if conversation_id == self.conversation_id:
            self.conversation_id = None
            self._cancel_edit()
            self.chat.clear()
        self.tasks.submit(lambda: self.assistant.delete_conversation(conversation_id),
                          lambda _: self.refresh_conversations(select_first=True))

    def export_chat(self, kind: str, conversation_id: int | None = None) -> None:
        conversation_id = conversation_id or self.conversation_id
        if conversation_id is None or self.assistant is None:
            return
        suffix = "Markdown (*.md)" if kind == "md" else "JSON (*.json)"
        path, _ = QFileDialog.getSaveFileName(self, "Export chat", f"chat.{kind}", suffix)
        if not path:
            return
        store = self.assistant.conversations

        def write() -> str:
            thinking = self._export_thinking()
            text = store.export_markdown(conversation_id, thinking) if kind == "md" else json.dumps(
                store.export_json(conversation_id, thinking), ensure_ascii=False, indent=2)
            atomic_write_text(Path(path), text)
            return path

        self.tasks.submit(write, lambda p: self.statusBar().showMessage(f"Exported to {p}", 5000))

    def export_all_chats(self) -> None:
        if self.assistant is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export all chats", "assistant-chats.json", "JSON (*.json)")
        if not path:
            return
        store = self.assistant.conversations

        def write() -> int:
            archive = store.export_all(self._export_thinking())
            atomic_write_text(Path(path), json.dumps(archive, ensure_ascii=False, indent=1))
            return len(archive["conversations"])

        self.tasks.submit(write, lambda n: self._show_status(f"Exported {n} chat{'s' * (n != 1)} to {path}"))

    def import_chats(self, path: str | None = None) -> None:
        """Add the chats of an export (from this or another computer); chats already here are skipped."""
        if self.assistant is None:
            return
        if not path:
            path, _ = QFileDialog.getOpenFileName(self, "Import chats", "", "Chat exports (*.json)")
        if not path:
            return
        store = self.assistant.conversations

        def read() -> tuple[int, int]:
            try:
                archive = json.loads(Path(path).read_text(encoding="utf-8"))
            except OSError as exc:
                raise AssistantError(f"{path} could not be read: {exc.strerror or exc}.") from exc
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise AssistantError(f"{Path(path).name} is not a chat export from Assistant (not JSON).") from exc
            return store.import_all(archive)

        def done(counts: tuple[int, int]) -> None:
            imported, skipped = counts
            self._show_status(f"Imported {imported} chat{'s' * (imported != 1)}"
                              + (f"; {skipped} already here, skipped." if skipped else "."))
            self.refresh_conversations()

        self.tasks.submit(read, done)

    def _sync_api_server(self, settings) -> None:
        """Start, restart or stop the API to match the settings (loopback only from the window)."""
        if self.assistant is None:
            return
        running = self.api_server
        wanted = (settings.api_port, settings.api_key, settings.api_allowed_origins) if settings.api_enabled else None
        if running is not None and (wanted is None or (running.port, running.api_key, running.origins_setting) != wanted):
            running.stop()
            self.api_server = None
            self.api_label.setText("")
        if wanted is None or self.api_server is not None:
            return
        from assistant.server import ApiServer

        try:
            self.api_server = ApiServer(self.assistant, "127.0.0.1", settings.api_port, settings.api_key,
                                        [settings.api_allowed_origins])
        except AssistantError as exc:
            self.chat.add("error", str(exc))
            return
        url = self.api_server.start()
        self.api_label.setText(f"API {url}")
        self.api_label.setToolTip("Other programs on this computer can use the model here (OpenAI-compatible)"
                                  + (", with the API key" if settings.api_key else ""))

    def _welcome_get_model(self, entry_id: str) -> None:
        self.dismiss_welcome()
        self.model_library(entry_id)

    def dismiss_welcome(self) -> None:
        from dataclasses import replace

        self.welcome.setVisible(False)
        self.input.setFocus()
        if self.settings is not None and not self.settings.welcomed:
            self.apply_settings(replace(self.settings, welcomed=True))

    def _welcome_add_documents(self) -> None:
        self.side_tabs.setCurrentWidget(self.documents)
        self.documents.add_files.click()

    def _welcome_try_voice(self) -> None:
        self.talk_button.setFocus()
        self._show_status("Hold the Hold to talk button, or F2 anywhere, while you speak; let go to send. Esc cancels.")

    def zoom(self, step: int) -> None:
        """Text size in steps of 10 %; 0 goes back to the desktop's size. Saved with the settings."""
        if self.settings is None:
            return
        from dataclasses import replace

        scale = 100 if step == 0 else max(50, min(300, self.settings.font_scale + step))
        if scale != self.settings.font_scale:
            self.apply_settings(replace(self.settings, font_scale=scale))
        self._show_status(f"Text size {scale} %")

    def open_settings(self) -> None:
        if self.assistant is None:
            return
        from assistant.ui.settings_dialog import SettingsDialog

        default = ""
        try:
            from assistant.llm.models import default_model_path

            default = str(default_model_path(self.assistant.home))
        except Exception:
            pass
        dialog = SettingsDialog(self.settings, self.tasks, default, self)
        if dialog.exec() and dialog.result_settings is not None:
            self.apply_settings(dialog.result_settings)

    def apply_settings(self, settings) -> None:
        from assistant.ui.app import apply_theme

        self.settings = settings
        self.documents.watch = settings.watch_folders
        if not self.busy:
            self.worker.load_cancel.clear()  # a cancel left from an earlier Stop must not abort this load
        dark = apply_theme(settings.theme)
        apply_font_scale(settings.font_scale)
        self._sync_api_server(settings)
        if dark != self.chat.dark:
            self.chat.dark = dark
            if not self.busy:
                self._reload_messages()  # re-draw the bubbles in the new colours
        self.settingsApplied.emit(settings)

    def open_model_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a GGUF model", "", "GGUF models (*.gguf)")
        if path:
            self.use_model_file(path)

    def use_model_file(self, path: str) -> None:
        """Register a GGUF and switch to it (checked off the UI thread first)."""
        if self.assistant is None:
            return
        from dataclasses import replace

        from assistant.llm.models import add_model

        def register():
            return add_model(Path(path), self.assistant.home)

        self.tasks.submit(register, lambda p: self.apply_settings(replace(self.settings, model_path=str(p))),
                          lambda exc: self.chat.add("error", str(exc)))

    def model_library(self, get: str = "") -> None:
        """Show the model library; get: the id of an entry to download (or use) straight away."""
        if self.assistant is None:
            return
        if self.library is None:
            from assistant.ui.model_library import ModelLibrary

            self.library = ModelLibrary(self.assistant.home, self.settings.model_folder_list(), self.tasks, self)
            self.library.modelChosen.connect(self.use_model_file)
            self.library.downloadProgress.connect(self._on_download_progress)
        else:
            self.library.folders = self.settings.model_folder_list()
        self.library.show()
        self.library.raise_()
        self.library.refresh(then=(lambda: self.library.get(get)) if get else None)

    def _on_download_progress(self, text: str) -> None:
        if text:
            self.statusBar().showMessage(text)
        else:
            self.statusBar().clearMessage()

    def download_model(self) -> None:
        if self.assistant is None:
            return
        from assistant.ui.download_dialog import DownloadDialog

        dialog = DownloadDialog(self.assistant.home / "models", self.tasks, self)
        if dialog.exec() and dialog.downloaded is not None:
            self.use_model_file(str(dialog.downloaded))

    def about(self) -> None:
        from assistant.config import config_dir, data_dir, logs_dir
        from assistant.ui.about import AboutDialog

        report = self.last_report

        def gather():
            home = self.assistant.home if self.assistant is not None else data_dir()
            folders = {"Chats, documents' index, models": home, "Settings": config_dir(home), "Log and crash reports": logs_dir(home)}
            model = None
            if report is not None:
                from assistant.llm.gguf_info import read_model_info

                try:
                    info = read_model_info(report.model_path, cache_dir=home)
                    model = (info.name, info.license)
                except Exception:
                    model = (Path(report.model_path).name, None)
            return folders, model

        def show(found) -> None:
            self.about_dialog = AboutDialog(*found, parent=self)
            self.about_dialog.show()

        self.tasks.submit(gather, show)

    def show_error(self, exc: Exception) -> None:
        self.chat.add("error", str(exc))

    # -- drag and drop ----------------------------------------------------------------------

    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        paths = [Path(url.toLocalFile()) for url in event.mimeData().urls() if url.isLocalFile()]
        models = [p for p in paths if p.suffix.lower() == ".gguf"]
        if models:
            self.use_model_file(str(models[0]))
        audio = [p for p in paths if p.suffix.lower() in AUDIO_SUFFIXES]
        if audio:
            self.transcribe_audio_file(audio[0])
            if len(audio) > 1:
                self._show_status("One recording at a time: the others were left out.")
        documents = [p for p in paths if p.suffix.lower() != ".gguf" and p.suffix.lower() not in AUDIO_SUFFIXES]
        if documents:
            if self.documents.busy:
                self.statusBar().showMessage("Documents are being indexed; drop more when that is done.", 5000)
                return
            self.side_tabs.setCurrentWidget(self.documents)
            self.documents.index_paths(documents)
        elif not models and not audio:
            self.statusBar().showMessage("Drop documents to search them, a recording to transcribe it, or a .gguf "
                                        "model file to use it.", 4000)

    def _on_collection_chosen(self, collection: str) -> None:
        where = "all your collections" if collection == ALL_COLLECTIONS else f"'{collection}'"
        self.input.setPlaceholderText(
            f"Ask about the documents in {where}. Enter sends." if collection
            else "Ask anything. Enter sends, Shift+Enter adds a line.")

    # -- voice ------------------------------------------------------------------------------

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        # Application-wide, so F2 works whatever has the focus, but only while this window is active.
        kind = event.type()
        if kind in (QEvent.KeyPress, QEvent.KeyRelease) and event.key() == TALK_KEY and self.isActiveWindow():
            if not event.isAutoRepeat():
                (self.start_recording if kind == QEvent.KeyPress else self.stop_recording)()
            return True
        return super().eventFilter(watched, event)

    def start_recording(self) -> None:
        if self.recorder.recording or self.assistant is None:
            return
        if self.busy or self.transcribing:
            self._show_status("Wait for the answer or transcription to finish (or press Esc) before speaking.")
            return
        if not microphone_allowed(self._show_status):
            return
        if not self.recorder.start(self.settings.microphone):
            return  # recorder.failed has said why
        self.speech.cancel.clear()
        self.warmRequested.emit()  # Whisper loads while the user speaks, if it has not yet
        self.voice_level.setValue(0)
        self.voice_level.setVisible(True)
        self.voice_label.setText(f"Opening {self.recorder.device.description()}… speak when the meter moves.")
        self.voice_bar.setVisible(True)
        self.talk_button.setText("Recording…")

    def stop_recording(self) -> None:
        if not self.recorder.recording:
            return
        self.released_at = time.perf_counter()
        self.talk_button.setText("Hold to talk")
        self.recorder.stop()  # emits recorded or failed at once

    def cancel_voice(self) -> None:
        if self.recorder.recording:
            self.recorder.cancel()
            self._show_status("Recording cancelled.")
        if self.transcribing:
            self.speech.cancel.set()
            self.voice_label.setText("Stopping…")
            return  # the bar goes when the worker says it stopped
        self._end_voice()

    def transcribe_audio_file(self, path: Path) -> None:
        if self.assistant is None:
            return
        if self.transcribing or self.recorder.recording:
            self._show_status("One transcription at a time: drop it again when this one is done.")
            return
        self.transcribing = str(path)
        self.speech.cancel.clear()
        self.voice_label.setText(f"Transcribing {path.name}… (the speech model loads the first time)")
        self.voice_level.setValue(0)
        self.voice_level.setVisible(True)
        self.voice_bar.setVisible(True)
        self.transcribeFileRequested.emit(str(path))

    def _on_live(self) -> None:
        self._on_recording_elapsed(0.0)

    def _on_level(self, level: float) -> None:
        self.voice_level.setValue(int(level * 100))

    def _on_recording_elapsed(self, seconds: float) -> None:
        if not self.recorder.is_live:
            return  # still "Opening…"
        name = self.recorder.device.description() if self.recorder.device is not None else "the microphone"
        self.voice_label.setText(f"Recording from {name}: {clock(seconds)}. Let go to send, Esc cancels.")

    def _on_recorded(self, samples) -> None:
        self.transcribing = "voice"
        self.voice_level.setVisible(False)
        self.voice_label.setText(f"Transcribing {len(samples) / SAMPLE_RATE:.1f} s of speech…")
        self.transcribeRequested.emit(samples, self.released_at)

    def _on_recording_failed(self, message: str) -> None:
        self._end_voice()
        self.chat.add("error", message)

    def _on_recording_discarded(self, message: str) -> None:
        self._end_voice()
        self._show_status(message)

    def _on_transcribe_progress(self, done: float, total: float) -> None:
        if not self.transcribing or self.transcribing == "voice":
            return
        name = Path(self.transcribing).name
        if total > 0:
            self.voice_level.setValue(int(100 * min(1.0, done / total)))
            self.voice_label.setText(f"Transcribing {name}: {clock(done)} of {clock(total)}")
        else:
            self.voice_label.setText(f"Transcribing {name}: {clock(done)}")

    def _on_transcribed(self, transcript, source: str, seconds: float) -> None:
        self._end_voice()
        if source == "voice":
            self.last_voice_latency = time.perf_counter() - self.released_at
            if transcript.cancelled:
                return
            if not transcript.text:
                self._show_status("No speech was heard. Hold the button while you speak, close to the microphone.")
                return
            self._show_status(f"Heard {transcript.duration_s:.1f} s in {self.last_voice_latency:.2f} s "
                              f"({transcript.model}).")
            self._put_in_input(transcript.text)
            if self.settings.voice_auto_send and self.editing is None:
                self.send()
            return
        name = Path(source).name
        if transcript.cancelled:
            self._show_status(f"Transcription of {name} stopped at {clock(transcript.duration_s)}.")
            return
        if not transcript.text:
            self.chat.add("notice", f"No speech was heard in {name}.")
            return
        if transcript.duration_s <= SHORT_AUDIO_S:
            self._put_in_input(transcript.text)
            self._show_status(f"Transcribed {name} ({transcript.duration_s:.0f} s) in {seconds:.1f} s: press Enter to send.")
            return
        self._save_transcript(Path(source), transcript, seconds)

    def _save_transcript(self, source: Path, transcript, seconds: float) -> None:
        """A long recording's transcript becomes a text file (with times) the user can open, search or index."""
        folder = self.assistant.home / "transcripts"
        home_settings = self.settings

        def write() -> Path:
            from assistant.fileio import atomic_write_text

            path = folder / f"{source.stem}.txt"
            header = f"Transcript of {source.name} ({clock(transcript.duration_s)}, Whisper {transcript.model})\n\n"
            atomic_write_text(path, header + transcript.timestamped() + "\n")
            return path

        def written(path: Path) -> None:
            preview = transcript.text[:600] + ("…" if len(transcript.text) > 600 else "")
            also = ""
            if home_settings.index_transcripts and not self.documents.busy:
                self.documents.index_paths([path])
                also = " It is being indexed so answers can cite it."
            self.chat.add("notice", f"Transcribed {source.name} ({clock(transcript.duration_s)} of audio in "
                                    f"{clock(seconds)}): saved to {path}.{also}\n\n{preview}")

        self.tasks.submit(write, written)

    def _on_transcribe_failed(self, message: str, source: str) -> None:
        self._end_voice()
        self.chat.add("error", message)

    def _put_in_input(self, text: str) -> None:
        current = self.input.toPlainText().rstrip()
        self.input.setPlainText(f"{current} {text}" if current else text)
        self.input.setFocus()
        cursor = self.input.textCursor()
        cursor.movePosition(cursor.MoveOperation.End)
        self.input.setTextCursor(cursor)

    def _end_voice(self) -> None:
        self.transcribing = None
        self.voice_bar.setVisible(False)
        self.talk_button.setText("Hold to talk")

    def _show_status(self, message: str) -> None:
        self.statusBar().showMessage(message, 6000)

    def closeEvent(self, event) -> None:
        self.closing = True
        self.recorder.cancel()
        self.speech.cancel.set()
        self.worker.stop_event.set()
        self.worker.load_cancel.set()
        self.indexer.cancel.set()  # indexing resumes where it stopped next time
        if self.library is not None:
            self.library.shutdown()  # a download stops within a block and resumes next time
        if self.busy:
            # Stop lands within a token; the window closes when the worker says it is idle.
            event.ignore()
            return
        self.hide()  # gone at once for the user; what is left is joining threads and saving memory
        self.worker_thread.quit()
        if not self.worker_thread.wait(10_000):
            event.ignore()  # destroying a running QThread aborts the process: better to stay open
            self.show()
            self.closing = False
            self.statusBar().showMessage("Still finishing model work; try closing again in a moment.", 5000)
            return
        self.index_thread.quit()
        self.index_thread.wait(30_000)  # cancel lands within one embedding batch
        self.speech_thread.quit()
        self.speech_thread.wait(10_000)  # cancel lands within one Whisper segment
        QApplication.instance().removeEventFilter(self)
        if self.api_server is not None:
            self.api_server.stop()
        self.tasks.wait(30_000)  # short disk work (exports, listings)
        if self.assistant is not None:
            # The window is gone already; this puts the last exchange into long-term memory (loading the
            # embedder the first time: seconds) and frees the model. No thread of ours may still be inside
            # torch or llama.cpp when the interpreter exits (assistant.background says why).
            self.assistant.close()
        super().closeEvent(event)
