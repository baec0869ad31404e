"""The model worker: one QThread owns the Assistant's model; the UI talks to it by signals."""

from __future__ import annotations

import logging
import threading

from PySide6.QtCore import QObject, Signal, Slot

from assistant.config import Settings
from assistant.core import Assistant
from assistant.errors import AssistantError, SettingsError, WontFitError
from assistant.events import (
    AgentStep,
    ContextTrimmed,
    Done,
    Error,
    Judged,
    Recalled,
    Remembered,
    Sources,
    Summarised,
    Support,
    Thinking,
    Token,
)

log = logging.getLogger(__name__)


class ModelWorker(QObject):
    ready = Signal(object)  # the Assistant, once its database is open
    loading = Signal(str)  # model file name
    loadProgress = Signal(float)
    loaded = Signal(object)  # LoadReport
    loadFailed = Signal(str)
    wontFit = Signal(str, int)  # why the model may not fit, a context that would (0: none)
    token = Signal(str)
    thinking = Signal(str)  # a piece of a reasoning model's thinking, before its answer
    sources = Signal(object)  # Sources: the passages the answer may cite
    judged = Signal(object)  # Judged: do the passages answer the question at all?
    support = Signal(object)  # Support: each sentence of the answer against its passages
    step = Signal(object)  # AgentStep: a tool call and what it returned
    confirmRequested = Signal(str, object)  # tool, its arguments: the UI answers with decide()
    trimmed = Signal(object)  # ContextTrimmed
    recalled = Signal(object)  # Recalled: long-term memories given with the question
    remembered = Signal(object)  # Remembered: the question told a fact to keep, and it was kept
    summarised = Signal(object)  # Summarised: the chat's early turns now stand as notes
    finished = Signal(object)  # Done
    failed = Signal(str)
    idle = Signal()  # a run is over, whatever its outcome; always after its finished/failed

    def __init__(self) -> None:
        super().__init__()
        self.assistant: Assistant | None = None
        # Set and cleared by the UI thread (so a Stop pressed before a job starts still counts);
        # checked between tokens and inside llama.cpp, so Stop lands within a token's time.
        self.stop_event = threading.Event()
        self.load_cancel = threading.Event()
        self._decided = threading.Event()
        self._allowed = False

    @Slot()
    def start(self) -> None:
        try:
            try:
                self.assistant = Assistant()
            except SettingsError as exc:
                # A broken settings file must not stop the app: start on defaults and say why.
                self.failed.emit(f"{exc} Starting with default settings.")
                self.assistant = Assistant(Settings())
        except (AssistantError, OSError) as exc:  # no usable data folder or database
            self.loadFailed.emit(f"The app could not open its data: {exc}")
            return
        self.ready.emit(self.assistant)
        self.load()

    @Slot()
    def load_anyway(self) -> None:
        self.load(force=True)

    def load(self, force: bool = False) -> None:
        try:
            self.loading.emit(self.assistant.model_name())
            report = self.assistant.load_model(progress=self.loadProgress.emit, cancel=self.load_cancel, force=force)
        except WontFitError as exc:
            self.wontFit.emit(str(exc), exc.context_that_fits or 0)
        except AssistantError as exc:
            self.loadFailed.emit(str(exc))
        except Exception as exc:  # a bug, but the window must survive it
            log.exception("model load failed")
            self.loadFailed.emit(f"The model could not be loaded: {exc}")
        else:
            self.loaded.emit(report)

    @Slot(object)
    def apply_settings(self, settings: Settings) -> None:
        try:
            reload = self.assistant.update_settings(settings)
        except (AssistantError, OSError) as exc:
            self.failed.emit(str(exc))
            return
        if reload:
            self.load()

    def _tools(self, conversation_id: int, text: str, pal: bool, **kwargs):
        return self.assistant.send_with_tools(conversation_id, text, pal=pal, confirm=self._confirm, **kwargs)

    def _confirm(self, tool: str, args: dict) -> bool:
        """On this thread: ask the window (Run / Deny) and wait for the answer, or for Stop."""
        self._decided.clear()
        self._allowed = False
        self.confirmRequested.emit(tool, args)
        while not self._decided.wait(0.05):
            if self.stop_event.is_set():
                return False
        return self._allowed

    def decide(self, allowed: bool) -> None:
        """Called by the UI thread."""
        self._allowed = allowed
        self._decided.set()

    def _general(self, conversation_id: int, **kwargs):
        return self.assistant.regenerate(conversation_id, general_knowledge=True, **kwargs)

    def _whole(self, conversation_id: int, path: str, **kwargs):
        return self.assistant.regenerate(conversation_id, whole_document=path, **kwargs)

    @Slot(str, object, str)
    def run(self, kind: str, args: tuple, collection: str) -> None:
        """kind: send (conversation_id, text) | regenerate (conversation_id,) | edit (conversation_id, message_id, text)
        | whole (conversation_id, file): answer the last question again from the whole file
        | general (conversation_id,): answer the last question again from general knowledge, not the documents
        | tools (conversation_id, text, pal): send, answered by the agent (pal: by a program).

        collection: the documents to answer from, or "" for none.
        """
        try:
            if self.assistant.engine is None:
                self.load()
                if self.assistant.engine is None:
                    return  # loadFailed has told the user why
            method = {"send": self.assistant.send, "regenerate": self.assistant.regenerate,
                      "edit": self.assistant.edit_and_resend, "whole": self._whole, "tools": self._tools,
                      "general": self._general}[kind]
            with self.assistant.engine_lock:  # an API request may be using the model: answer after it
                self._relay(method(*args, stop=self.stop_event, collection=collection or None))
        except AssistantError as exc:
            self.failed.emit(str(exc))
        except Exception as exc:
            log.exception("generation failed")
            self.failed.emit(f"Something went wrong while answering: {exc}")
        finally:
            self.idle.emit()

    def _relay(self, events) -> None:
        for event in events:
            if isinstance(event, Token):
                self.token.emit(event.text)
            elif isinstance(event, Thinking):
                self.thinking.emit(event.text)
            elif isinstance(event, Sources):
                self.sources.emit(event)
            elif isinstance(event, Judged):
                self.judged.emit(event)
            elif isinstance(event, Support):
                self.support.emit(event)
            elif isinstance(event, AgentStep):
                self.step.emit(event)
            elif isinstance(event, ContextTrimmed):
                self.trimmed.emit(event)
            elif isinstance(event, Recalled):
                self.recalled.emit(event)
            elif isinstance(event, Remembered):
                self.remembered.emit(event)
            elif isinstance(event, Summarised):
                self.summarised.emit(event)
            elif isinstance(event, Done):
                self.finished.emit(event)
            elif isinstance(event, Error):
                self.failed.emit(event.message)
