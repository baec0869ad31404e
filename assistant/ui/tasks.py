"""Run short disk work (listing chats, exporting, reading metadata) off the UI thread.

The callback runs back on the UI thread, so it may touch widgets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal


class _Relay(QObject):
    # Emitted from a pool thread; Qt queues it to the thread this object lives in (the UI's).
    finished = Signal(object, object)

    def __init__(self) -> None:
        super().__init__()
        self.finished.connect(lambda callback, value: callback(value))


class _Task(QRunnable):
    def __init__(self, relay: _Relay, fn: Callable[[], Any], on_result: Callable, on_error: Callable) -> None:
        super().__init__()
        self.relay, self.fn, self.on_result, self.on_error = relay, fn, on_result, on_error

    def run(self) -> None:
        try:
            value = self.fn()
        except Exception as exc:  # delivered to on_error on the UI thread, never lost
            callback, value = self.on_error, exc
        else:
            callback = self.on_result
        try:
            self.relay.finished.emit(callback, value)
        except RuntimeError:  # the window closed while this ran: there is nobody left to tell
            pass


class TaskRunner:
    """Owned by the main window; create it on the UI thread."""

    def __init__(self, on_error: Callable[[Exception], None]) -> None:
        self._relay = _Relay()
        self._pool = QThreadPool()
        self._pool.setMaxThreadCount(2)
        self._on_error = on_error

    def submit(self, fn: Callable[[], Any], on_result: Callable[[Any], None] = lambda _: None,
               on_error: Callable[[Exception], None] | None = None) -> None:
        self._pool.start(_Task(self._relay, fn, on_result, on_error or self._on_error))

    def wait(self, msecs: int = 3000) -> bool:
        return self._pool.waitForDone(msecs)
