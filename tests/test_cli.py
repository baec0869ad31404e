"""The `assistant` command, run as a user would: a real subprocess and the real model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from assistant import __version__


def assistant(*args: str, home, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "assistant", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "ASSISTANT_HOME": str(home)})


def test_version(isolated_home) -> None:
    result = assistant("--version", home=isolated_home)
    assert result.returncode == 0 and result.stdout.strip() == f"assistant {__version__}"


def test_ask_json(isolated_home) -> None:
    result = assistant("ask", "What is the capital of France?", "--json", "--temperature", "0", home=isolated_home)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert {"answer", "model", "prompt_tokens", "completion_tokens", "tokens_per_second", "seconds"} <= data.keys()
    assert "Paris" in data["answer"]
    assert data["model"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert data["prompt_tokens"] > 10 and data["completion_tokens"] > 0 and data["tokens_per_second"] > 0


def test_ask_streams_plain_text(isolated_home) -> None:
    result = assistant("ask", "Say hello.", "--max-tokens", "8", home=isolated_home)
    assert result.returncode == 0 and result.stdout.strip()


def test_ask_with_a_missing_model_fails_plainly(isolated_home, tmp_path) -> None:
    result = assistant("ask", "hi", "--model", str(tmp_path / "gone.gguf"), home=isolated_home)
    assert result.returncode == 1
    assert "gone.gguf" in result.stderr and "not found" in result.stderr and "Traceback" not in result.stderr


def test_ask_empty_question_fails_plainly(isolated_home) -> None:
    result = assistant("ask", "  ", home=isolated_home)
    assert result.returncode == 1 and "empty" in result.stderr and "Traceback" not in result.stderr


def test_invalid_setting_in_file_is_reported(isolated_home) -> None:
    isolated_home.mkdir(parents=True, exist_ok=True)
    (isolated_home / "settings.toml").write_text("n_ctx = -4\n")
    result = assistant("ask", "hi", home=isolated_home)
    assert result.returncode == 1 and "Context size" in result.stderr and "Traceback" not in result.stderr


def test_models_list_add_info(isolated_home, default_model, tmp_path) -> None:
    listed = json.loads(assistant("models", "list", "--json", home=isolated_home).stdout)
    assert str(default_model) in listed
    info = json.loads(assistant("models", "info", "--json", home=isolated_home).stdout)
    assert info["architecture"] == "llama" and info["quantization"] == "Q4_1" and info["context_length"] == 8192
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"\0" * 1000)
    result = assistant("models", "add", str(junk), home=isolated_home)
    assert result.returncode == 1 and "junk.gguf" in result.stderr and "not a GGUF" in result.stderr


def test_chat_repl(isolated_home) -> None:
    result = subprocess.run([sys.executable, "-m", "assistant", "chat"], input="What is 2+2?\n/quit\n",
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "ASSISTANT_HOME": str(isolated_home)})
    assert result.returncode == 0, result.stderr
    assert "tok/s" in result.stderr and result.stdout.strip().startswith(">")


def test_ctrl_c_stops_the_answer_not_the_chat(isolated_home) -> None:
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "assistant", "chat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "ASSISTANT_HOME": str(isolated_home)})
    proc.stdin.write("Write a very long story about a dragon and a knight.\n")
    proc.stdin.flush()
    deadline = time.time() + 60
    seen = ""
    while len(seen) < 40 and time.time() < deadline:  # wait until the answer is streaming
        seen += proc.stdout.read(1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate("/quit\n", timeout=60)
    assert proc.returncode == 0, err
    assert "stopped" in err and "Traceback" not in err


def test_chats_list_search_export_and_import(isolated_home, tmp_path) -> None:
    from assistant.memory.conversations import ConversationStore

    store = ConversationStore(isolated_home / "assistant.db")
    chat = store.create()
    store.add_message(chat.id, "user", "Which houseplants like shade?")
    store.add_message(chat.id, "assistant", "Snake plants and ferns tolerate low light.")
    store.close()
    listed = assistant("chats", "list", "ferns", home=isolated_home)
    assert listed.returncode == 0 and "Which houseplants like shade?" in listed.stdout and "ferns" in listed.stdout
    assert "No chat matches." in assistant("chats", "list", "cactus", home=isolated_home).stdout
    archive = tmp_path / "chats.json"
    exported = assistant("chats", "export", str(archive), home=isolated_home)
    assert exported.returncode == 0 and "Exported 1 chat to" in exported.stdout
    elsewhere = tmp_path / "elsewhere"
    assert "Imported 1 chat." in assistant("chats", "import", str(archive), home=elsewhere).stdout
    again = assistant("chats", "import", str(archive), home=elsewhere)
    assert "Imported 0 chats; 1 already here, skipped." in again.stdout
    found = json.loads(assistant("chats", "list", "--json", home=elsewhere).stdout)
    assert [c["title"] for c in found] == ["Which houseplants like shade?"] and found[0]["message_count"] == 2
    (tmp_path / "notes.json").write_text("{not json", encoding="utf-8")
    broken = assistant("chats", "import", str(tmp_path / "notes.json"), home=elsewhere)
    assert broken.returncode == 1 and "is not a chat export from Assistant" in broken.stderr
