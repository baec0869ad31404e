"""The log file, crash reports for uncaught errors, and native crashes found on the next start."""

from __future__ import annotations

import faulthandler
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from assistant import logs
from assistant.config import config_dir, logs_dir, settings_path


@pytest.fixture
def restore_hooks():
    """The handlers are process-wide: each test starts as a fresh process would, and leaves pytest's own."""
    saved = sys.excepthook, threading.excepthook, list(logging.getLogger().handlers)
    logs._fault_file = None
    yield
    if logs._fault_file is not None:
        faulthandler.enable(sys.__stderr__, all_threads=True)
        logs._fault_file.close()
        logs._fault_file = None
    sys.excepthook, threading.excepthook = saved[0], saved[1]
    for handler in logging.getLogger().handlers:
        if handler not in saved[2]:
            logging.getLogger().removeHandler(handler)
            handler.close()


def test_the_log_rotates_instead_of_growing(isolated_home: Path, restore_hooks, monkeypatch) -> None:
    monkeypatch.setattr(logs, "MAX_BYTES", 20_000)
    path = logs.setup_logging()
    assert path == isolated_home / "logs" / "assistant.log"
    assert logs.setup_logging() == path  # a second call adds no second handler
    for n in range(2000):
        logging.getLogger("assistant.test").info("line %d %s", n, "x" * 40)
    files = sorted(p.name for p in path.parent.glob("assistant.log*"))
    assert files == ["assistant.log"] + [f"assistant.log.{n}" for n in range(1, logs.BACKUPS + 1)]
    assert all(p.stat().st_size <= 20_000 + 200 for p in path.parent.glob("assistant.log*"))
    assert "line 1999" in path.read_text(encoding="utf-8")


def test_an_error_in_a_thread_writes_a_report_and_is_handed_on(isolated_home: Path, restore_hooks) -> None:
    logs.setup_logging()
    logging.getLogger("assistant.test").info("what happened just before")
    seen: list[tuple[Path, str]] = []
    logs.install_crash_handler(on_crash=lambda report, summary: seen.append((report, summary)))

    def fail() -> None:
        raise ValueError("the index file has an odd size")

    worker = threading.Thread(target=fail, name="indexer")
    worker.start()
    worker.join()
    assert len(seen) == 1
    report, summary = seen[0]
    assert summary == "ValueError: the index file has an odd size"
    text = report.read_text(encoding="utf-8")
    assert report.parent == logs_dir() and report.name.startswith("crash-")
    assert "in indexer" in text and "Traceback" in text and "what happened just before" in text


NATIVE_CRASH = """
import faulthandler
from assistant.logs import install_crash_handler
install_crash_handler()
faulthandler._sigsegv()
"""


def test_a_native_crash_is_reported_on_the_next_start(isolated_home: Path, restore_hooks) -> None:
    env = {**os.environ, "ASSISTANT_HOME": str(isolated_home)}
    crashed = subprocess.run([sys.executable, "-c", NATIVE_CRASH], env=env, capture_output=True, timeout=60)
    assert crashed.returncode != 0
    report = logs.install_crash_handler()
    assert report is not None and "native code" in report.read_text(encoding="utf-8")
    assert "Segmentation fault" in report.read_text(encoding="utf-8")
    # Said once: the next start has nothing to report.
    logs._fault_file = None
    assert logs.install_crash_handler() is None


def test_settings_go_to_the_platform_config_folder_and_move_there_once(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("ASSISTANT_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    if not sys.platform.startswith("linux"):
        pytest.skip("XDG folders are Linux's")
    old = tmp_path / "data" / "assistant" / "settings.toml"
    old.parent.mkdir(parents=True)
    old.write_text("n_ctx = 1024\n", encoding="utf-8")
    assert settings_path() == tmp_path / "config" / "assistant" / "settings.toml"
    assert settings_path().read_text(encoding="utf-8") == "n_ctx = 1024\n" and not old.exists()
    assert config_dir() == tmp_path / "config" / "assistant"
    assert logs_dir() == tmp_path / "state" / "assistant" / "log"
