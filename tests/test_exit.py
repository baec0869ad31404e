"""Every entry point exits 0 with only its own output, never "terminate called" and a gdb backtrace.

The abort came from CPython (< 3.14) ending a daemon thread with pthread_exit() when it woke inside
torch during interpreter finalization (see assistant.background). Each run here has stdout and stderr
as pipes, as in CI and when the output is piped to another program.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time

import pytest

CRASH_SIGNS = ("terminate called", "Aborted", "#0 ", "Fatal Python error", "Segmentation fault", "[Inferior")


def run(args: list[str], home, stdin: str = "", timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "ASSISTANT_HOME": str(home)})


def assert_clean(proc: subprocess.CompletedProcess | subprocess.Popen, out: str, err: str) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {out[-3000:]}\nstderr: {err[-3000:]}"
    for sign in CRASH_SIGNS:
        assert sign not in out and sign not in err, f"{sign!r} in the output:\n{out[-3000:]}\n{err[-3000:]}"


# The exchanges are handed to long-term memory as send() hands each finished one; the script leaves as soon
# as the first is stored, so the memory thread is inside torch's kernels when the interpreter starts to exit.
LIBRARY_SCRIPT = """
import time
from assistant.core import Assistant
a = Assistant()
c = a.conversations.create()
for i in range(24):
    a._remember(c.id, i + 1, f"Question {i}: " + "tell me about sourdough bread " * 20, "An answer. " * 80)
while a.memory.count() == 0:
    time.sleep(0.01)
print("leaving")
"""


def test_library_use_without_close_exits_cleanly_and_loses_no_memory(tmp_path) -> None:
    from assistant.core import Assistant

    for n in range(3):
        home = tmp_path / f"home-{n}"
        proc = run([sys.executable, "-c", LIBRARY_SCRIPT], home)
        assert_clean(proc, proc.stdout, proc.stderr)
        assert proc.stdout == "leaving\n"
        after = Assistant(home=home)
        try:
            assert after.memory.count() == 24  # what memory was handed before the exit was all kept
        finally:
            after.close()


def test_cli_chat_and_ask_exit_cleanly_into_pipes(tmp_path) -> None:
    home = tmp_path / "home"
    cli = [sys.executable, "-m", "assistant"]
    for _ in range(3):
        proc = run(cli + ["chat"], home, stdin="hello\nName a colour.\n")
        assert_clean(proc, proc.stdout, proc.stderr)
        assert proc.stdout.count("> ") >= 2 and "tok/s" in proc.stderr
    for _ in range(2):
        proc = run(cli + ["ask", "--max-tokens", "24", "Say hello."], home)
        assert_clean(proc, proc.stdout, proc.stderr)
        assert proc.stdout.strip()


def test_window_exits_cleanly_after_an_answer(tmp_path) -> None:
    home = tmp_path / "home"
    for _ in range(2):
        proc = run([sys.executable, "-m", "assistant", "gui", "--check", "Say hello."], home)
        assert_clean(proc, proc.stdout, proc.stderr)
        (line,) = proc.stdout.splitlines()  # its own output: the timings, nothing else
        assert json.loads(line)["answer"]


def _post(port: int, path: str, body: dict) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM])
def test_api_server_stops_cleanly_mid_answer(tmp_path, how) -> None:
    home = tmp_path / "home"
    proc = subprocess.Popen([sys.executable, "-m", "assistant", "serve", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "ASSISTANT_HOME": str(home)})
    try:
        line = proc.stdout.readline()
        assert "Serving" in line, line + proc.stderr.read()
        port = int(line.split("http://127.0.0.1:", 1)[1].split("/", 1)[0])
        status, data = _post(port, "/v1/embeddings", {"input": ["torch is loaded in a request thread"]})
        assert status == 200, data
        # A long streamed answer is being written when the signal comes.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.request("POST", "/v1/chat/completions", json.dumps({
            "messages": [{"role": "user", "content": "Write a long story about a lighthouse."}],
            "stream": True, "max_tokens": 2000}), {"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200
        assert response.readline().startswith(b"data: ")
        proc.send_signal(how)
        started = time.monotonic()
        rest = response.read()  # the server ends the stream when it stops
        conn.close()
        out, err = proc.communicate(timeout=60)
        assert time.monotonic() - started < 30
        assert b"data: [DONE]" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert_clean(proc, out, err)
    assert out.strip() == ""  # after its "Serving ..." line (read above), nothing but its own log
