"""The remote engine against a real OpenAI-compatible server: llama-cpp-python's own, started on loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from assistant.config import Settings
from assistant.core import Assistant
from assistant.errors import ModelError
from assistant.events import Done, Error, Recalled, Sources, Token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_llama_server(model: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    pytest.importorskip("uvicorn", reason="llama-cpp-python's server needs its `server` extra (make test installs it)")
    port = free_port()
    log = tempfile.NamedTemporaryFile("w+", prefix="llama-server-", suffix=".log", delete=False)  # noqa: SIM115
    # Its log goes to a file: a pipe nobody reads would fill up and stall the server.
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
                             "--port", str(port), "--n_ctx", "2048", *extra], stdout=log, stderr=log, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama-cpp-python's server did not start:\n{Path(log.name).read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url + "/models", timeout=2).close()
            return proc, url
        except urllib.error.HTTPError:
            return proc, url  # up, and asking for its key
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("llama-cpp-python's server did not answer within 120 s")


@pytest.fixture(scope="module")
def llama_server(default_model: Path):
    proc, url = start_llama_server(default_model, "--api_key", "remote-key")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def remote_assistant(url: str, **settings) -> Assistant:
    return Assistant(Settings(engine="remote", remote_url=url, remote_api_key="remote-key", n_ctx=2048,
                              temperature=0.0, **settings))


def test_chat_through_a_remote_server(llama_server: str, isolated_home: Path) -> None:
    assistant = remote_assistant(llama_server, max_tokens=24)
    report = assistant.load_model()
    assert report.backend.startswith("remote (127.0.0.1:") and "(remote)" in report.summary()
    assert "SmolLM2-135M-Instruct.Q4_1.gguf at 127.0.0.1" in report.summary()
    conversation = assistant.conversations.create()
    events = list(assistant.send(conversation.id, "What is the capital of France?"))
    tokens = [e.text for e in events if isinstance(e, Token)]
    done = next(e for e in events if isinstance(e, Done))
    assert len(tokens) > 1 and done.answer == "".join(tokens) and done.answer.strip()
    assert 0 < done.completion_tokens <= 24 and done.prompt_tokens > 10
    saved = assistant.conversations.messages(conversation.id)
    assert [m.role for m in saved] == ["user", "assistant"] and saved[1].content == done.answer
    assistant.close()


def test_documents_and_memory_work_the_same_with_a_remote_model(llama_server: str, isolated_home: Path,
                                                                tmp_path: Path) -> None:
    notes = tmp_path / "boat.md"
    notes.write_text("# Boat\n\nThe sailing boat Albatross is moored at pier 7 in Kiel harbour.\n", encoding="utf-8")
    assistant = remote_assistant(llama_server, max_tokens=40)
    assistant.index([notes], "boats")
    events = list(assistant.ask("Where is the Albatross moored?", collection="boats"))
    sources = next(e for e in events if isinstance(e, Sources))
    assert sources.sources and "pier 7" in sources.sources[0].text
    assert next(e for e in events if isinstance(e, Done)).answer.strip()
    # Memory: a fact told once is recalled into a later question, as with the local model.
    assistant.memory.remember_fact("My daughter's name is Ilse and she plays the cello.")
    recalled = [e for e in assistant.stream(assistant.with_system(
        [{"role": "user", "content": "What instrument does my daughter play?"}])) if isinstance(e, Recalled)]
    assert recalled and "cello" in recalled[0].memories[0]["text"]
    assistant.close()


def test_a_wrong_key_or_a_dead_server_is_said_plainly(llama_server: str, isolated_home: Path) -> None:
    wrong = Assistant(Settings(engine="remote", remote_url=llama_server, remote_api_key="nope"))
    with pytest.raises(ModelError, match="refused the API key"):
        wrong.load_model()
    dead = Assistant(Settings(engine="remote", remote_url=f"http://127.0.0.1:{free_port()}/v1"))
    with pytest.raises(ModelError, match="cannot be reached"):
        dead.load_model()
    events = list(dead.ask("hello"))
    assert isinstance(events[-1], Error) and "cannot be reached" in events[-1].message
    missing = Assistant(Settings(engine="remote", remote_url=llama_server, remote_api_key="remote-key",
                                 remote_model="llama-70b"))
    with pytest.raises(ModelError, match="has no model 'llama-70b'"):
        missing.load_model()


def test_tools_through_a_remote_server_keep_the_grammar(qwen: Path, isolated_home: Path) -> None:
    """Program-aided answers with Qwen on the remote side: the program format is held by the grammar the
    remote engine passes on, and the sandbox runs the program here."""
    proc, url = start_llama_server(qwen)
    try:
        assistant = Assistant(Settings(engine="remote", remote_url=url, n_ctx=2048, temperature=0.0))
        events = list(assistant.agent("What is 1234 times 5678, minus 91?", pal=True))
        done = next(e for e in events if isinstance(e, Done))
        assert "7006561" in done.answer.replace(",", "")
        assistant.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_window_says_which_engine_answers(qtbot, llama_server: str, isolated_home: Path) -> None:
    from assistant.ui.main_window import MainWindow

    Settings(engine="remote", remote_url=llama_server, remote_api_key="remote-key", max_tokens=16,
             welcomed=True).save()
    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.model_ready, timeout=60_000)
    assert "remote" in w.model_label.text() and "127.0.0.1" in w.model_label.text()
    w.input.setPlainText("Hello!")
    w.send()
    qtbot.waitUntil(lambda: not w.busy and any(b.role == "assistant" and b.text for b in w.chat.bubbles),
                    timeout=60_000)
    w.close()


def test_llama_server_extra_is_what_ci_installs() -> None:
    # The remote tests must not be skipped in CI: the server extra's packages come with `make test`.
    import importlib.util

    missing = [m for m in ("uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
               if importlib.util.find_spec(m) is None]
    assert not missing, f"install the test extra: {missing}"
