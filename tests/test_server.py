"""`assistant serve`: the OpenAI-compatible API, spoken to by the official openai client and by raw HTTP."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import openai
import pytest

from assistant.config import Settings
from assistant.core import Assistant
from assistant.errors import SettingsError
from assistant.server import ApiServer, is_loopback


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One loaded model behind the API for the module (loading once keeps these tests quick)."""
    home = tmp_path_factory.mktemp("api-home")
    import os

    saved = os.environ.get("ASSISTANT_HOME")
    os.environ["ASSISTANT_HOME"] = str(home)
    assistant = Assistant(Settings(n_ctx=2048, max_tokens=64, temperature=0.0))
    assistant.load_model()
    notes = home / "notes.md"
    notes.write_text("# Garden\n\nThe greenhouse key is kept under the blue flowerpot by the shed door.\n",
                     encoding="utf-8")
    assistant.index([notes], "garden")
    server = ApiServer(assistant, "127.0.0.1", 0)
    server.start()
    yield server
    server.stop()
    assistant.close()
    if saved is None:
        os.environ.pop("ASSISTANT_HOME", None)
    else:
        os.environ["ASSISTANT_HOME"] = saved


def client(server: ApiServer, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=key, max_retries=0, timeout=120)


def raw(server: ApiServer, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    request = urllib.request.Request(server.url[: -len("/v1")] + path, data=body, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_models_chat_and_usage_through_the_openai_client(served: ApiServer) -> None:
    c = client(served)
    ids = [m.id for m in c.models.list().data]
    assert ids[0] == "SmolLM2-135M-Instruct.Q4_1" and "all-MiniLM-L6-v2" in ids
    reply = c.chat.completions.create(model=ids[0], messages=[{"role": "user", "content": "Name a colour."}],
                                      max_tokens=12)
    assert reply.object == "chat.completion" and reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content.strip()
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert 0 < reply.usage.completion_tokens <= 12 and reply.usage.prompt_tokens > 5
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streaming_gives_the_same_answer_as_a_whole_reply(served: ApiServer) -> None:
    c = client(served)
    messages = [{"role": "system", "content": "Answer in one short sentence."},
                {"role": "user", "content": "What is the capital of France?"}]
    whole = c.chat.completions.create(model="default", messages=messages, max_tokens=24, temperature=0)
    pieces, usage, finish = [], None, None
    for chunk in c.chat.completions.create(model="default", messages=messages, max_tokens=24, temperature=0,
                                           stream=True, stream_options={"include_usage": True}):
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert len([p for p in pieces if p]) > 1  # it really streamed
    assert "".join(pieces) == whole.choices[0].message.content  # greedy: identical
    assert usage.completion_tokens == whole.usage.completion_tokens and finish == whole.choices[0].finish_reason


def test_embeddings_match_the_apps_own_embedder(served: ApiServer) -> None:
    c = client(served)
    texts = ["the greenhouse key", "a recipe for bread"]
    got = c.embeddings.create(model="all-MiniLM-L6-v2", input=texts)  # the client asks for base64
    direct = served.assistant.embedder.embed(texts)
    assert [d.index for d in got.data] == [0, 1]
    for d, v in zip(got.data, direct, strict=True):
        assert len(d.embedding) == 384 and np.allclose(d.embedding, v, atol=1e-5)
    status, body = raw(served, "POST", "/v1/embeddings", json.dumps({"input": "one", "encoding_format": "base64"}).encode())
    assert status == 200
    vector = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(vector, served.assistant.embedder.embed(["one"])[0], atol=1e-6)


def test_a_collection_gives_a_cited_answer_with_its_sources(served: ApiServer) -> None:
    c = client(served)
    reply = c.chat.completions.create(model="default", max_tokens=40, extra_body={"collection": "garden"},
                                      messages=[{"role": "user", "content": "Where is the greenhouse key kept?"}])
    sources = reply.model_extra["sources"]
    assert sources and sources[0]["n"] == 1 and sources[0]["file"].endswith("notes.md")
    assert "blue flowerpot" in sources[0]["text"]
    status, body = raw(served, "POST", "/v1/chat/completions", json.dumps(
        {"messages": [{"role": "user", "content": "x"}], "collection": "no-such"}).encode())
    assert status == 404 and "no-such" in body["error"]["message"]


@pytest.mark.parametrize("method, path, body, status, says", [
    ("POST", "/v1/chat/completions", b"{not json", 400, "not valid JSON"),
    ("POST", "/v1/chat/completions", b"[1]", 400, "JSON object"),
    ("POST", "/v1/chat/completions", b'{"messages": []}', 400, "non-empty list"),
    ("POST", "/v1/chat/completions", b'{"messages": [{"role": "robot", "content": "hi"}]}', 400, "role"),
    ("POST", "/v1/chat/completions", b'{"messages": [{"role": "user", "content": 5}]}', 400, "string"),
    ("POST", "/v1/chat/completions", b'{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}',
     400, "temperature"),
    ("POST", "/v1/chat/completions", b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}', 400,
     "max_tokens"),
    ("POST", "/v1/chat/completions", b'{"messages": [{"role": "user", "content": "hi"}], "n": 3}', 400, "n=1"),
    ("POST", "/v1/chat/completions", b'{"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}', 404,
     "gpt-9"),
    ("POST", "/v1/embeddings", b'{"input": [1, 2, 3]}', 400, "input"),
    ("GET", "/v1/chat/completions", None, 405, "takes POST"),
    ("GET", "/v1/nothing", None, 404, "no /v1/nothing"),
])
def test_malformed_requests_get_4xx_json_errors(served: ApiServer, method, path, body, status, says) -> None:
    got, answer = raw(served, method, path, body)
    assert got == status and says in answer["error"]["message"] and answer["error"]["type"]


def test_an_oversized_body_is_refused_unread(served: ApiServer) -> None:
    host, port = served.httpd.server_address[:2]
    with socket.create_connection((host, port), timeout=30) as s:
        s.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode()
                  + b"Content-Type: application/json\r\nContent-Length: 999999999\r\n\r\n")
        reply = b""
        while b'"}' not in reply:  # headers and the JSON body may come in separate packets
            part = s.recv(65536)
            if not part:
                break
            reply += part
        reply = reply.decode()
    assert reply.startswith("HTTP/1.1 413") and "larger than" in reply


def raw_http(server: ApiServer, method: str, path: str, body: bytes | None = None, **headers: str):
    """A raw request whose headers are exactly those given (http.client adds Host unless one is given)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        conn.putrequest(method, path, skip_host="Host" in headers, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name.replace("_", "-"), value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        reply = conn.getresponse()
        data = reply.read()
        return reply.status, dict(reply.getheaders()), json.loads(data) if data else None
    finally:
        conn.close()


RAG = json.dumps({"collection": "garden", "max_tokens": 8,
                  "messages": [{"role": "user", "content": "Where is the greenhouse key?"}]}).encode()


def test_a_dns_rebinding_host_is_refused_without_a_key(served: ApiServer) -> None:
    port = served.port
    for host in (f"rebind.attacker.example:{port}", "attacker.example", f"127.0.0.1.nip.io:{port}",
                 f"localhost:{port + 1}", "127.0.0.1", ""):
        status, headers, body = raw_http(served, "POST", "/v1/chat/completions", RAG, Host=host,
                                     Content_Type="application/json")
        assert status == 403, host
        assert body["error"]["code"] == "host_not_allowed" and "blue flowerpot" not in json.dumps(body)
        assert "Access-Control-Allow-Origin" not in headers
    status, _, body = raw_http(served, "GET", "/v1/models", Host=f"attacker.example:{port}")
    assert status == 403 and body["error"]["type"] == "permission_error"
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"127.8.9.10:{port}"):
        status, _, body = raw_http(served, "GET", "/v1/models", Host=host)
        assert status == 200, host


def test_cross_site_requests_from_web_pages_are_refused(served: ApiServer) -> None:
    port = served.port
    for kind in ("text/plain", "application/json", "application/x-www-form-urlencoded"):
        status, headers, body = raw_http(served, "POST", "/v1/chat/completions", RAG, Content_Type=kind,
                                     Origin="https://attacker.example")
        assert status == 403 and body["error"]["code"] == "origin_not_allowed", kind
        assert "Access-Control-Allow-Origin" not in headers and "blue flowerpot" not in json.dumps(body)
    for origin in ("null", "http://localhost.attacker.example", f"http://attacker.example:{port}", "file://"):
        status, _, body = raw_http(served, "GET", "/v1/models", Origin=origin)
        assert status == 403, origin
    # A "simple" cross-site POST can carry no Origin in old browsers: a body that is not JSON is refused too.
    status, _, body = raw_http(served, "POST", "/v1/chat/completions", RAG, Content_Type="text/plain")
    assert status == 415 and "application/json" in body["error"]["message"]
    status, _, body = raw_http(served, "POST", "/v1/chat/completions", RAG)
    assert status == 415
    # The preflight a browser sends before a JSON POST is never answered with a foreign origin.
    status, headers, _ = raw_http(served, "OPTIONS", "/v1/chat/completions", Origin="https://attacker.example",
                              Access_Control_Request_Method="POST", Access_Control_Request_Headers="content-type")
    assert status == 403 and "Access-Control-Allow-Origin" not in headers


def test_loopback_pages_and_allowed_origins_may_call_the_api(served: ApiServer) -> None:
    mine = f"http://localhost:{served.port + 7}"
    status, headers, _ = raw_http(served, "OPTIONS", "/v1/chat/completions", Origin=mine,
                              Access_Control_Request_Method="POST", Access_Control_Request_Headers="content-type")
    assert status == 204 and headers["Access-Control-Allow-Origin"] == mine
    assert "POST" in headers["Access-Control-Allow-Methods"] and "Content-Type" in headers[
        "Access-Control-Allow-Headers"]
    status, headers, body = raw_http(served, "GET", "/v1/models", Origin=mine)
    assert status == 200 and headers["Access-Control-Allow-Origin"] == mine and body["data"]
    with pytest.raises(SettingsError, match="not a web origin"):
        ApiServer(served.assistant, "127.0.0.1", 0, allowed_origins=["ftp://x"])
    allowed = ApiServer(served.assistant, "127.0.0.1", 0, allowed_origins=["https://notes.example.org/"])
    allowed.start()
    try:
        status, headers, body = raw_http(allowed, "POST", "/v1/chat/completions", RAG, Content_Type="application/json",
                                     Origin="https://notes.example.org")
        assert status == 200 and headers["Access-Control-Allow-Origin"] == "https://notes.example.org"
        assert body["sources"]
        status, headers, _ = raw_http(allowed, "GET", "/v1/models", Origin="https://other.example.org")
        assert status == 403 and "Access-Control-Allow-Origin" not in headers
    finally:
        allowed.stop()


def test_with_an_api_key_the_key_decides_not_the_host(served: ApiServer) -> None:
    keyed = ApiServer(served.assistant, "127.0.0.1", 0, api_key="s3cret")
    keyed.start()
    try:
        status, _, body = raw_http(keyed, "GET", "/v1/models", Host="my-desktop.lan:1234",
                               Authorization="Bearer s3cret")
        assert status == 200 and body["data"]
        status, _, body = raw_http(keyed, "GET", "/v1/models", Host="my-desktop.lan:1234")
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
        # A page elsewhere still cannot use a key it got hold of: its origin is refused first.
        status, _, body = raw_http(keyed, "GET", "/v1/models", Origin="https://attacker.example",
                               Authorization="Bearer s3cret")
        assert status == 403
    finally:
        keyed.stop()


def test_32_concurrent_streaming_clients_all_get_their_answers(served: ApiServer) -> None:
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def ask(n: int) -> None:
        try:
            c = client(served)
            text = []
            for chunk in c.chat.completions.create(model="default", stream=True, max_tokens=6,
                                                   messages=[{"role": "user", "content": f"Say the number {n}."}]):
                text.extend(choice.delta.content or "" for choice in chunk.choices)
            results[n] = "".join(text)
        except BaseException as exc:  # noqa: BLE001 - every failure is the test's business
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, [(e, e.__cause__, getattr(e.__cause__, "__context__", None)) for e in errors[:3]]
    assert sorted(results) == list(range(32)) and all(results.values())


def test_a_client_that_leaves_mid_answer_frees_the_model(served: ApiServer) -> None:
    c = client(served)
    stream = c.chat.completions.create(model="default", stream=True, max_tokens=1500, temperature=0.8,
                                       messages=[{"role": "user", "content": "Write a very long story."}])
    next(iter(stream))
    stream.close()  # gone after the first chunk
    started = time.perf_counter()
    reply = c.chat.completions.create(model="default", max_tokens=4, messages=[{"role": "user", "content": "Hi"}])
    assert reply.choices[0].message.content is not None
    assert time.perf_counter() - started < 15  # 1,500 tokens would take far longer: the first answer stopped


def test_an_api_key_is_required_when_set_and_for_other_addresses(served: ApiServer) -> None:
    keyed = ApiServer(served.assistant, "127.0.0.1", 0, api_key="s3cret")
    keyed.start()
    try:
        with pytest.raises(openai.AuthenticationError):
            client(keyed, "wrong").models.list()
        status, body = raw(keyed, "GET", "/v1/models")
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
        assert client(keyed, "s3cret").models.list().data
    finally:
        keyed.stop()
    with pytest.raises(SettingsError, match="API key"):
        ApiServer(served.assistant, "0.0.0.0", 0)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("")


def test_assistant_serve_from_the_command_line(isolated_home: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    refused = subprocess.run([sys.executable, "-m", "assistant", "serve", "--host", "0.0.0.0", "--port", str(port)],
                             capture_output=True, text=True, timeout=60,
                             env={**__import__("os").environ, "ASSISTANT_API_KEY": ""})
    assert refused.returncode == 1 and "API key" in refused.stderr
    proc = subprocess.Popen([sys.executable, "-m", "assistant", "serve", "--port", str(port), "--n-ctx", "1024",
                             "--allow-origin", "https://notes.example.org"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/v1" in line
        reply = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0).chat.completions.create(
            model="default", max_tokens=5, messages=[{"role": "user", "content": "Hello"}])
        assert reply.choices[0].message.content is not None
        for origin, status in (("https://notes.example.org", 200), ("https://attacker.example", 403)):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("GET", "/v1/models", headers={"Origin": origin})
            assert conn.getresponse().status == status, origin
            conn.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_window_serves_the_api_when_settings_turn_it_on(qtbot, isolated_home: Path) -> None:
    import dataclasses

    from assistant.ui.main_window import MainWindow

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    Settings(max_tokens=8, n_ctx=2048, welcomed=True).save()
    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.model_ready, timeout=60_000)
    assert w.api_server is None and not w.api_label.text()
    w.apply_settings(dataclasses.replace(w.settings, api_enabled=True, api_port=port, api_key="k"))
    assert w.api_label.text() == f"API http://127.0.0.1:{port}/v1"
    c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0, timeout=60)
    # The request runs on the server's thread; the window keeps its event loop going meanwhile.
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(reply=c.chat.completions.create(
        model="default", max_tokens=6, messages=[{"role": "user", "content": "Hi"}])))
    worker.start()
    qtbot.waitUntil(lambda: not worker.is_alive(), timeout=60_000)
    assert result["reply"].choices[0].message.content is not None
    w.apply_settings(dataclasses.replace(w.settings, api_enabled=False))
    assert w.api_server is None and not w.api_label.text()
    with pytest.raises(openai.APIConnectionError):
        c.models.list()
    w.close()
