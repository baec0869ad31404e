"""Shared fixtures. Every test runs against the real model, database and window."""

from __future__ import annotations

import os
from pathlib import Path

# Before anything imports Qt: tests draw into memory, no screen needed.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own data folder, never the user's."""
    home = tmp_path / "assistant-home"
    monkeypatch.setenv("ASSISTANT_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def default_model() -> Path:
    from assistant.llm.models import default_model_path

    return default_model_path()  # raises a clear ModelError when the package is missing


@pytest.fixture(scope="session")
def engine(default_model: Path):
    from assistant.llm.engine import Engine

    eng = Engine(default_model, n_ctx=2048)
    yield eng
    eng.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
