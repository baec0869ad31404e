"""`assistant serve`: an OpenAI-compatible API over the same engine, so other programs on this computer can
use the model, its document collections (cited answers) and the embedder.

    GET  /v1/models
    POST /v1/chat/completions   (stream: server-sent events); extension: "collection" answers from
                                documents and returns the passages as "sources", and "grounding" (do the
                                passages answer it; each sentence's support); "general_knowledge": true
                                answers without them
    POST /v1/embeddings

Standard library only (http.server), one thread per connection. The model has one context, so answers
are written one at a time under Assistant.engine_lock; clients beyond the first wait their turn, and one
that disconnects stops its answer. Bound to loopback by default; any other address needs an API key.
Errors are JSON in OpenAI's shape: {"error": {"message", "type", "code"}} with a 4xx status.

Web pages the user visits can send requests to loopback too, so without an API key a request must name
this server by a loopback Host (a DNS-rebinding page names its own host), and with or without a key a
request from a browser page must come from a loopback origin or one the user allowed (--allow-origin).
POST bodies must be application/json: a cross-site "simple" request (text/plain, no preflight) is refused.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from assistant import __version__
from assistant.errors import AssistantError, SettingsError
from assistant.events import Done, Error, Judged, Sources, Support, Thinking, Token

log = logging.getLogger(__name__)

DEFAULT_PORT = 8765
MAX_BODY = 8 << 20  # a request bigger than this is refused (413), never read
EMBEDDING_MODEL = "all-MiniLM-L6-v2"
# A connection that sends or takes nothing for this long is dropped: an idle client must not hold a thread
# (nor keep stop() waiting) for ever.
IDLE_TIMEOUT_S = 60


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def split_host(value: str) -> tuple[str, int | None] | None:
    """("host", port) from a Host header or an origin's authority; None when it is malformed."""
    value = value.strip()
    if value.startswith("["):  # [::1]:8765
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1:]
        if rest and not rest.startswith(":"):
            return None
        port = rest[1:] if rest else None
    else:
        host, _, port = value.partition(":")
        port = port if ":" in value else None
    if not host or (port is not None and not (port.isdigit() and 0 < int(port) < 65536)):
        return None
    return host.lower(), int(port) if port is not None else None


def origin_is_loopback(origin: str) -> bool:
    scheme, sep, authority = origin.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or "/" in authority:
        return False
    parsed = split_host(authority)
    return parsed is not None and is_loopback(parsed[0])


def parse_origins(value: str) -> list[str]:
    """Origins the user allows to call the API from a web page, from a setting or flags: comma or space
    separated, each scheme://host[:port] or null (a file:// page). SettingsError names a malformed one."""
    out = []
    for item in value.replace(",", " ").split():
        item = item.rstrip("/")
        scheme, sep, authority = item.partition("://")
        if item != "null" and not (sep and scheme.lower() in ("http", "https") and "/" not in authority
                                   and split_host(authority) is not None):
            raise SettingsError(f"{item!r} is not a web origin: write it as http://host:port (or null for a page "
                                "opened from a file).")
        out.append(item if item == "null" else item.lower())
    return out


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class ApiServer:
    """The API over one Assistant; start() serves from a background thread until stop()."""

    def __init__(self, assistant, host: str = "127.0.0.1", port: int = DEFAULT_PORT, api_key: str = "",
                 allowed_origins: list[str] | tuple[str, ...] = ()) -> None:
        if not is_loopback(host) and not api_key:
            raise SettingsError(f"Serving on {host} lets other computers reach the model: set an API key "
                                "(--api-key or ASSISTANT_API_KEY), or serve on 127.0.0.1.")
        self.assistant = assistant
        self.api_key = api_key
        self.origins_setting = " ".join(allowed_origins)
        self.allowed_origins = frozenset(parse_origins(self.origins_setting))
        try:
            self.httpd = _HttpServer((host, port), _Handler)
        except OSError as exc:
            raise SettingsError(f"The API server could not listen on {host}:{port}: {exc.strerror or exc}. "
                                "Is another program using that port?") from exc
        # Request threads are joined by server_close() (see stop): none may still be inside the model or the
        # embedder when the process exits (assistant.background says why that aborts it).
        self.httpd.daemon_threads = False
        self.httpd.block_on_close = True
        self.httpd.api = self
        self.thread: threading.Thread | None = None
        self._answers: set[threading.Event] = set()  # the stop events of answers being written
        self._answers_lock = threading.Lock()
        self._stopped = False
        self._serving = False

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def start(self) -> str:
        """Serve from a background thread; stop() (or the process's exit) ends it."""
        from assistant import background

        self._serving = True
        self.thread = background.start(self.httpd.serve_forever, name="api-server", on_exit=self.stop)
        return self.url

    def serve_forever(self) -> None:
        self._serving = True
        self.httpd.serve_forever()

    def stop(self) -> None:
        """Stop answers being written (within a token), stop listening, and wait for every request thread."""
        with self._answers_lock:
            if self._stopped:
                return
            self._stopped = True
            for stop in self._answers:
                stop.set()
        if self._serving:
            self.httpd.shutdown()
        self.httpd.server_close()

    def answer_started(self, stop: threading.Event) -> bool:
        """Track an answer's stop event; False when the server is stopping (then no answer starts)."""
        with self._answers_lock:
            if self._stopped:
                return False
            self._answers.add(stop)
            return True

    def answer_ended(self, stop: threading.Event) -> None:
        with self._answers_lock:
            self._answers.discard(stop)

    def origin_allowed(self, origin: str) -> bool:
        origin = origin.rstrip("/")
        return origin_is_loopback(origin) or origin.lower() in self.allowed_origins or (
            origin == "null" and "null" in self.allowed_origins)

    def model_id(self) -> str:
        engine = self.assistant.engine
        if engine is not None:
            return getattr(engine, "model", None) or _model_name(engine.report.model_path)
        return self.assistant.model_name()


class _HttpServer(ThreadingHTTPServer):
    # socketserver's default backlog of 5 made the kernel refuse some of a burst of clients (connection reset).
    request_queue_size = 128


def _model_name(path: str) -> str:
    from pathlib import Path

    return Path(path).stem


class _Handler(BaseHTTPRequestHandler):
    server_version = f"assistant/{__version__}"
    protocol_version = "HTTP/1.1"
    # Tokens are small writes: with Nagle's algorithm each waits for the client's delayed ACK (~40 ms on
    # loopback), which made a 32-token answer take seconds.
    disable_nagle_algorithm = True
    timeout = IDLE_TIMEOUT_S
    _origin_ok = False  # set per request once its Origin is found acceptable

    # -- plumbing ---------------------------------------------------------------------------------

    @property
    def api(self) -> ApiServer:
        return self.server.api

    def log_message(self, fmt: str, *args) -> None:
        log.info("api %s %s", self.address_string(), fmt % args)

    def end_headers(self) -> None:
        # A page of an origin that was let in may read the reply; no other origin is ever named.
        headers = getattr(self, "headers", None)  # http.server's own errors come before headers are read
        origin = headers.get("Origin") if headers is not None else None
        if origin and self._origin_ok:
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Vary", "Origin")
        super().end_headers()

    def _send_json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        # One request per connection: a server that is stopped (Settings ▸ Server off) is then really gone,
        # with no kept-alive connection still answering.
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        try:
            self._check_host_and_origin()
            if method == "OPTIONS":
                self._preflight()
                return
            self._authorise()
            route = self.path.split("?", 1)[0].rstrip("/")
            routes = {"/v1/models": ("GET", self._models), "/v1/chat/completions": ("POST", self._chat),
                      "/v1/embeddings": ("POST", self._embeddings)}
            if route not in routes:
                raise ApiError(404, f"There is no {route or '/'} here: the API has /v1/models, /v1/chat/completions "
                                    "and /v1/embeddings.", code="not_found")
            allowed, handler = routes[route]
            if method != allowed:
                raise ApiError(405, f"{route} takes {allowed}, not {method}.", code="method_not_allowed")
            handler()
        except ApiError as exc:
            self._discard_body()
            self._send_json(exc.status, exc.body())
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away
        except Exception as exc:  # a bug: say so in JSON, log it, keep serving
            log.exception("API request failed")
            try:
                self._send_json(500, ApiError(500, f"The server failed: {exc}", "server_error").body())
            except OSError:
                pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    def do_OPTIONS(self) -> None:  # noqa: N802
        self._handle("OPTIONS")

    def _check_host_and_origin(self) -> None:
        """Refuse what a web page could send: another site's Host (DNS rebinding) and foreign origins."""
        api = self.api
        self._origin_ok = False
        if not api.api_key:
            host = split_host(self.headers.get("Host") or "")
            if host is None or not is_loopback(host[0]) or (host[1] or 80) != api.port:
                raise ApiError(403, "This server answers only requests addressed to it on this computer (Host "
                                    f"localhost:{api.port} or 127.0.0.1:{api.port}).", "permission_error",
                               "host_not_allowed")
        origin = self.headers.get("Origin")
        if origin is not None:
            if not api.origin_allowed(origin):
                raise ApiError(403, f"Requests from web pages at {origin} are refused. To call the API from a web "
                                    "page, allow its origin (assistant serve --allow-origin ORIGIN, or Settings ▸ "
                                    "Server).", "permission_error", "origin_not_allowed")
            self._origin_ok = True

    def _preflight(self) -> None:
        """A browser asks before a cross-origin JSON POST: say yes only to an origin that was let in."""
        if not self._origin_ok:  # no Origin at all: not a browser's preflight
            raise ApiError(403, "A preflight request needs an Origin.", "permission_error", "origin_not_allowed")
        self._discard_body()
        self.send_response(204)
        self.send_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
        self.send_header("Access-Control-Allow-Headers", "Authorization, Content-Type")
        self.send_header("Access-Control-Max-Age", "600")
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()

    def _authorise(self) -> None:
        key = self.api.api_key
        if not key:
            return
        given = self.headers.get("Authorization", "")
        token = given[7:].strip() if given.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), key.encode()):
            raise ApiError(401, "A valid API key is needed: send it as 'Authorization: Bearer KEY'.",
                           "authentication_error", "invalid_api_key")

    def _discard_body(self) -> None:
        length = self.headers.get("Content-Length")
        if length and length.isdigit() and int(length) <= MAX_BODY and not getattr(self, "_body_read", False):
            self.rfile.read(int(length))
        elif length and (not length.isdigit() or int(length) > MAX_BODY):
            self.close_connection = True

    def _body(self) -> dict:
        kind = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if kind != "application/json":
            raise ApiError(415, "Send the request body as JSON, with 'Content-Type: application/json'.",
                           code="unsupported_media_type")
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise ApiError(411, "Send the request body with a Content-Length.", code="length_required")
        if int(length) > MAX_BODY:
            raise ApiError(413, f"The request is larger than {MAX_BODY >> 20} MB.", code="request_too_large")
        raw = self.rfile.read(int(length))
        self._body_read = True
        try:
            body = json.loads(raw or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"The request body is not valid JSON ({exc}).", code="invalid_json") from None
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
        return body

    # -- endpoints --------------------------------------------------------------------------------

    def _models(self) -> None:
        now = int(time.time())
        data = [{"id": self.api.model_id(), "object": "model", "created": now, "owned_by": "assistant"},
                {"id": EMBEDDING_MODEL, "object": "model", "created": now, "owned_by": "assistant"}]
        self._send_json(200, {"object": "list", "data": data})

    def _chat(self) -> None:
        body = self._body()
        history = _messages(body.get("messages"))
        if history[0]["role"] != "system":  # the app's system prompt, as its own chats have it
            history = self.api.assistant.with_system(history)
        sampling = _sampling(body)
        collection = body.get("collection")
        if collection is not None and not (isinstance(collection, str) or (
                isinstance(collection, list) and all(isinstance(c, str) for c in collection))):
            raise ApiError(400, "'collection' must be a collection's name or a list of names.", param="collection")
        assistant, stream = self.api.assistant, bool(body.get("stream", False))
        model = body.get("model")
        if model not in (None, "", "default", self.api.model_id()):
            raise ApiError(404, f"There is no model {model!r} here; GET /v1/models lists them.", code="model_not_found",
                           param="model")
        if collection:
            try:
                assistant.collection_names(collection)
            except AssistantError as exc:
                raise ApiError(404, str(exc), param="collection", code="collection_not_found") from None
        stop = threading.Event()
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if not self.api.answer_started(stop):
            raise ApiError(503, "The server is shutting down.", "server_error", "shutting_down")
        try:
            # Wait for the model in short steps: a server being stopped must not wait for the answers queued
            # before this one (or the window's) to end.
            while not assistant.engine_lock.acquire(timeout=0.1):
                if stop.is_set():
                    raise ApiError(503, "The server is shutting down.", "server_error", "shutting_down")
            try:
                events = assistant.stream(history, stop, collection=collection or None, memory_skip=None,
                                          sampling=sampling, general_knowledge=body.get("general_knowledge") is True)
                if stream:
                    self._stream_chat(events, stop, completion_id, created, body)
                else:
                    self._whole_chat(events, completion_id, created)
            finally:
                assistant.engine_lock.release()
        finally:
            self.api.answer_ended(stop)

    def _whole_chat(self, events, completion_id: str, created: int) -> None:
        sources, done, grounding = None, None, {}
        for event in events:
            if isinstance(event, Sources):
                sources = _sources(event)
            elif isinstance(event, Judged | Support):
                grounding |= _grounding(event)
            elif isinstance(event, Done):
                done = event
            elif isinstance(event, Error):
                raise ApiError(400 if "context" in event.message else 500, event.message,
                               "invalid_request_error" if "context" in event.message else "server_error")
        if done is None:
            raise ApiError(500, "The model gave no answer.", "server_error")
        message = {"role": "assistant", "content": done.answer}
        if done.reasoning:  # a thinking model's reasoning, apart from content as llama.cpp's server sends it
            message["reasoning_content"] = done.reasoning
        body = {
            "id": completion_id, "object": "chat.completion", "created": created, "model": self.api.model_id(),
            "choices": [{"index": 0, "message": message, "finish_reason": _finish(done.finish_reason)}],
            "usage": _usage(done),
        }
        if sources is not None:
            body["sources"] = sources
        if grounding:
            body["grounding"] = grounding
        self._send_json(200, body)

    def _stream_chat(self, events, stop: threading.Event, completion_id: str, created: int, body: dict) -> None:
        model = self.api.model_id()
        include_usage = isinstance(body.get("stream_options"), dict) and body["stream_options"].get("include_usage")
        started = False

        def chunk(delta: dict, finish: str | None = None, **extra: Any) -> dict:
            return {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}

        def start(extra: dict | None = None) -> None:
            nonlocal started
            if not started:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")  # the end of the stream ends the response
                self.end_headers()
                self.close_connection = True
                started = True
                self._event(chunk({"role": "assistant", "content": ""}, **(extra or {})))

        grounding: dict = {}
        try:
            for event in events:
                if isinstance(event, Sources):
                    start({"sources": _sources(event)})
                elif isinstance(event, Judged | Support):
                    grounding |= _grounding(event)
                elif isinstance(event, Token):
                    start()
                    self._event(chunk({"content": event.text}))
                elif isinstance(event, Thinking):
                    start()
                    self._event(chunk({"reasoning_content": event.text}))
                elif isinstance(event, Error):
                    if not started:
                        raise ApiError(400 if "context" in event.message else 500, event.message)
                    self._event({"error": {"message": event.message, "type": "server_error"}})
                    break
                elif isinstance(event, Done):
                    start()
                    self._event(chunk({}, _finish(event.finish_reason), **({"grounding": grounding} if grounding else {})))
                    if include_usage:
                        self._event({"id": completion_id, "object": "chat.completion.chunk", "created": created,
                                     "model": model, "choices": [], "usage": _usage(event)})
            if started:
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            stop.set()  # the client left: stop writing its answer
            for _ in events:  # let the generator finish (it stops within a token) and release the engine
                pass

    def _event(self, data: dict) -> None:
        self.wfile.write(b"data: " + json.dumps(data).encode() + b"\n\n")
        self.wfile.flush()

    def _embeddings(self) -> None:
        body = self._body()
        given = body.get("input")
        texts = [given] if isinstance(given, str) else given
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise ApiError(400, "'input' must be a string or a non-empty list of strings (token arrays are not "
                                "supported).", param="input")
        if len(texts) > 2048:
            raise ApiError(400, "At most 2048 inputs per request.", param="input")
        model = body.get("model")
        if model not in (None, "", EMBEDDING_MODEL, "default"):
            raise ApiError(404, f"There is no embedding model {model!r}; use {EMBEDDING_MODEL!r}.",
                           code="model_not_found", param="model")
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise ApiError(400, "encoding_format must be 'float' or 'base64'.", param="encoding_format")
        embedder = self.api.assistant.embedder
        vectors = embedder.embed(texts)
        tokens = sum(embedder.count_tokens(t) for t in texts)

        def encoded(v):  # base64: the float32 bytes, little-endian, as OpenAI's own client asks by default
            import base64

            return base64.b64encode(v.astype("<f4").tobytes()).decode() if encoding == "base64" else v.tolist()

        self._send_json(200, {
            "object": "list", "model": EMBEDDING_MODEL,
            "data": [{"object": "embedding", "index": i, "embedding": encoded(v)} for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })


def _messages(given: object) -> list[dict[str, str]]:
    if not isinstance(given, list) or not given:
        raise ApiError(400, "'messages' must be a non-empty list of {role, content} objects.", param="messages")
    out = []
    for n, m in enumerate(given):
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant"):
            raise ApiError(400, f"messages[{n}] needs a role of system, user or assistant.", param="messages")
        content = m.get("content")
        if isinstance(content, list):  # content parts: the text ones are kept
            if not all(isinstance(p, dict) for p in content):
                raise ApiError(400, f"messages[{n}].content parts must be objects.", param="messages")
            if any(p.get("type") != "text" for p in content):
                raise ApiError(400, f"messages[{n}] has a part that is not text; this model reads text only.",
                               param="messages")
            content = "".join(str(p.get("text", "")) for p in content)
        if not isinstance(content, str):
            raise ApiError(400, f"messages[{n}].content must be a string.", param="messages")
        out.append({"role": "system" if m["role"] == "developer" else m["role"], "content": content})
    if out[-1]["role"] != "user":
        raise ApiError(400, "The last message must be the user's: it is what gets answered.", param="messages")
    return out


def _sampling(body: dict) -> dict:
    out: dict = {}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    checks = [
        ("max_tokens", max_tokens, int, 1, 1 << 20),
        ("temperature", body.get("temperature"), (int, float), 0.0, 2.0),
        ("top_p", body.get("top_p"), (int, float), 0.0, 1.0),
        ("seed", body.get("seed"), int, -(1 << 63), (1 << 63) - 1),
    ]
    for name, value, kind, low, high in checks:
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
            raise ApiError(400, f"'{name}' must be a number from {low} to {high}.", param=name)
        out[name] = value
    if out.get("top_p") == 0:
        out["top_p"] = 1e-6
    if body.get("n", 1) != 1:
        raise ApiError(400, "Only n=1 is supported: one answer per request.", param="n")
    return out


def _finish(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def _usage(done: Done) -> dict:
    return {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens}


def _grounding(event: Judged | Support) -> dict:
    """The extension field "grounding": whether the passages answer the question, and each sentence's support."""
    if isinstance(event, Judged):
        return {k: v for k, v in event.as_dict().items() if k != "seconds"}
    return {"sentences": [x.as_dict() for x in event.sentences]}


def _sources(event: Sources) -> list[dict]:
    """The passages as [n] numbers them in the answer: where each is from, and its text."""
    from dataclasses import asdict

    return [{k: v for k, v in asdict(s).items() if k not in ("chunk_id", "why")} for s in event.sources]


