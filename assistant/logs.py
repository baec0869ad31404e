"""The log file and crash reports.

The log rotates (1 MB × 5) so it never grows without bound. A Python error nobody caught writes
a crash report (what happened, versions, the log's last lines) and the app goes on where it can;
a crash inside native code (llama.cpp, Qt) cannot be caught, so faulthandler writes its stack to
a file that the next start turns into a report and tells the user about. The user's chats and
documents are never touched: each message is committed to SQLite as it is saved.
"""

from __future__ import annotations

import faulthandler
import logging
import logging.handlers
import platform
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from assistant import __version__
from assistant.config import logs_dir

LOG_FILE = "assistant.log"
NATIVE_FILE = "native-crash.log"
MAX_BYTES = 1_000_000
BACKUPS = 5
_FORMAT = "%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"

_fault_file = None  # kept open for faulthandler, which writes to its descriptor at crash time
_on_crash: Callable[[Path, str], None] | None = None


def setup_logging(home: Path | None = None, level: int = logging.INFO) -> Path:
    """Log to the rotating file (once per process); returns the log file's path."""
    folder = logs_dir(home)
    path = folder / LOG_FILE
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, logging.handlers.RotatingFileHandler) and Path(handler.baseFilename) == path:
            return path
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
    handler.setFormatter(logging.Formatter(_FORMAT))
    root.addHandler(handler)
    root.setLevel(min(root.level or level, level))
    logging.getLogger(__name__).info("assistant %s started (Python %s, %s)", __version__,
                                     platform.python_version(), platform.platform())
    return path


def install_crash_handler(home: Path | None = None,
                          on_crash: Callable[[Path, str], None] | None = None) -> Path | None:
    """Write a report for any uncaught error, in any thread; on_crash(report, one-line summary) is then
    called (from the failing thread: a window must hand it to its own thread). Returns the report of
    a native crash that ended the previous run, if one did."""
    global _fault_file, _on_crash
    _on_crash = on_crash
    folder = logs_dir(home)
    previous = None
    if _fault_file is None:
        previous = _native_report(folder)
        _fault_file = open(folder / NATIVE_FILE, "a", encoding="utf-8")  # noqa: SIM115 - must stay open
        faulthandler.enable(_fault_file, all_threads=True)

    def on_exception(kind, value, tb) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, value, tb)
            return
        _report(folder, kind, value, tb, threading.current_thread().name)

    def on_thread_exception(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        _report(folder, args.exc_type, args.exc_value, args.exc_traceback,
                args.thread.name if args.thread else "a thread")

    sys.excepthook = on_exception
    threading.excepthook = on_thread_exception
    return previous


def _report(folder: Path, kind, value, tb, thread: str) -> None:
    text = "".join(traceback.format_exception(kind, value, tb))
    logging.getLogger(__name__).error("Uncaught error in %s:\n%s", thread, text)
    path = write_report(folder, f"An error nobody caught, in {thread}.\n\n{text}")
    summary = f"{kind.__name__}: {value}"
    if _on_crash is not None:
        try:
            _on_crash(path, summary)
        except Exception:  # the handler must never raise from the hook itself
            logging.getLogger(__name__).exception("The crash handler failed")
    else:
        print(f"assistant: {summary}\nA report was written to {path}", file=sys.stderr)


def write_report(folder: Path, what: str) -> Path:
    """A crash report: what happened, the versions, and the log's last 80 lines."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = folder / f"crash-{stamp}.txt"
    n = 1
    while path.exists():
        n += 1
        path = folder / f"crash-{stamp}-{n}.txt"
    log = folder / LOG_FILE
    tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-80:] if log.exists() else []
    path.write_text(
        f"assistant {__version__} crash report, {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        f"Python {platform.python_version()} on {platform.platform()}\n\n{what.rstrip()}\n\n"
        "The log's last lines:\n" + "\n".join(tail) + "\n",
        encoding="utf-8")
    return path


def _native_report(folder: Path) -> Path | None:
    """faulthandler's output from the last run, if it died inside native code, as a report (once)."""
    native = folder / NATIVE_FILE
    try:
        text = native.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if not text.strip():
        return None
    report = write_report(folder, "The app stopped inside native code (llama.cpp, Qt or a driver). "
                                  "Where each thread was:\n\n" + text)
    native.write_text("", encoding="utf-8")
    return report
