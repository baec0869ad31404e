"""Background threads that are finished, never abandoned, when the process exits.

Why this exists: CPython before 3.14 ends a daemon thread that tries to take the GIL once interpreter
finalization has begun by calling pthread_exit(). glibc implements that as a forced stack unwind; when
the thread is inside C++ (torch's kernels release the GIL and take it back in a pybind11 destructor,
and faiss, tokenizers and CTranslate2 do the same), the unwind crosses a noexcept frame and the C++
runtime calls std::terminate: "terminate called without an active exception", SIGABRT, and ggml's
terminate handler prints a gdb backtrace to stdout (cpython gh-87135, pytorch #38228). An `ask` or a
script that exited while long-term memory was still embedding the last exchange died that way.

So every long-lived thread of ours that may run native code is started here, and an atexit hook asks
each to stop (or to finish what it was handed) and joins it before finalization starts. atexit runs
after the interpreter has joined non-daemon threads and before it begins finalizing, while these
daemon threads still run normally.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# Longest the process waits at exit for background work (the first embedding of a session may load
# torch and the embedder, several seconds on a small machine). Past it the work is abandoned.
EXIT_WAIT_S = 120.0

_lock = threading.Lock()
_running: list[tuple[threading.Thread, Callable[[], None] | None]] = []
_hooked = False


def start(target: Callable[..., object], *args: object, name: str,
          on_exit: Callable[[], None] | None = None) -> threading.Thread:
    """Run target(*args) on a daemon thread that is joined before the interpreter finalizes.

    on_exit, when given, is called at exit before the join: it should make the thread end soon (put
    an end marker in its queue, set its cancel event). Without it the thread is simply waited for.
    """
    global _hooked
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    with _lock:
        _running[:] = [(t, f) for t, f in _running if t.is_alive()]
        _running.append((thread, on_exit))
        if not _hooked:
            atexit.register(finish_all)
            _hooked = True
    thread.start()
    return thread


def running() -> list[threading.Thread]:
    """The background threads still alive (tests, diagnostics)."""
    with _lock:
        return [t for t, _ in _running if t.is_alive()]


def finish_all(timeout: float = EXIT_WAIT_S) -> bool:
    """Stop and join every background thread; True when all have ended. atexit calls it."""
    with _lock:
        items = [(t, f) for t, f in _running if t.is_alive()]
    for _thread, on_exit in items:
        if on_exit is not None:
            try:
                on_exit()
            except Exception:  # one thread's stop failing must not keep the others running
                log.exception("could not ask a background thread to stop")
    deadline = time.monotonic() + timeout
    for thread, _ in items:
        if thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
    left = [t.name for t, _ in items if t.is_alive()]
    if left:
        log.warning("background work still running at exit: %s", ", ".join(left))
    return not left
