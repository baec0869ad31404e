"""A remote engine: any OpenAI-compatible server the user runs (llama.cpp's server, vLLM, Ollama, LM Studio)
in place of the local model, for models too big for this machine.

It keeps the local Engine's interface, so chat, documents, memory, tools and voice run unchanged:
prompts are rendered here with the model's chat template (fetched from llama.cpp's /props when the
server offers it, ChatML otherwise) and sent to /v1/completions as text, so the server applies no
template of its own and the agent's grammar (a llama.cpp extension, ignored elsewhere) still holds
the model to the tool format. Token counts, which only size the prompt, are estimated on the safe
side (3 characters a token) unless the server can /tokenize.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

from assistant.errors import ModelError
from assistant.llm.chat_format import ChatFormatter
from assistant.llm.engine import GenerationStats, LoadReport

CHARS_PER_TOKEN = 3  # below the ~4 of English text: an estimate that errs towards a shorter prompt
TIMEOUT_S = 30.0  # for the connection and for each streamed line; a slow first token may take this long


class TextTokens(list):
    """A prompt's 'tokens' for a remote model: as many placeholders as it has tokens, and its text."""

    def __init__(self, text: str, count: int) -> None:
        super().__init__([0] * count)
        self.text = text


@dataclass(frozen=True)
class RemoteModel:
    url: str  # the server's base, e.g. http://127.0.0.1:8080/v1
    model: str  # "" lets the server pick its (only) model
    api_key: str = ""


class RemoteEngine:
    """Engine's interface over an OpenAI-compatible HTTP server."""

    def __init__(self, remote: RemoteModel, n_ctx: int = 4096) -> None:
        self.remote = remote
        self.base = remote.url.rstrip("/")
        if not self.base.endswith("/v1"):
            self.base += "/v1"
        started = time.perf_counter()
        models = self._json("GET", "/models").get("data") or []
        ids = [m.get("id") for m in models if isinstance(m, dict)]
        if remote.model and remote.model not in ids:
            raise ModelError(f"The server at {remote.url} has no model {remote.model!r}; it offers: "
                             f"{', '.join(map(str, ids)) or 'none'}.")
        self.model = remote.model or (ids[0] if ids else "")
        props = self._props()
        template = props.get("chat_template") if isinstance(props.get("chat_template"), str) else None
        self.formatter = ChatFormatter(template, bos_token=props.get("bos_token", "") or "",
                                       eos_token=props.get("eos_token", "") or "")
        self.thinking = True  # as Engine.thinking
        server_ctx = (props.get("default_generation_settings") or {}).get("n_ctx") if isinstance(
            props.get("default_generation_settings"), dict) else None
        self.n_ctx = min(n_ctx, server_ctx) if isinstance(server_ctx, int) and server_ctx > 0 else n_ctx
        self._can_tokenize = bool(props)
        name = self.model.replace("\\", "/").rsplit("/", 1)[-1] or "the model"  # some servers name it by its path
        self.report = LoadReport(
            model_path=self.model or remote.url, model_description=f"{name} at {self._host()}",
            backend=f"remote ({self._host()})", gpu_layers_offloaded=0, n_layers=0, n_ctx=self.n_ctx,
            n_ctx_train=self.n_ctx, n_threads=0, flash_attn=False, load_seconds=time.perf_counter() - started,
            gpu_note="")

    # -- Engine's interface ----------------------------------------------------------------------

    def tokenize(self, text: str, add_special: bool = True) -> TextTokens:
        return TextTokens(text, self.count_tokens(text))

    def count_tokens(self, text: str) -> int:
        return len(text) // CHARS_PER_TOKEN + 1

    def render(self, messages: list[dict[str, str]], tools: list[dict] | None = None) -> str:
        return self.formatter.render(messages, add_generation_prompt=True, tools=tools, thinking=self.thinking)

    def generate(self, prompt_tokens, *, max_tokens: int = 512, temperature: float = 0.7, top_p: float = 0.95,
                 seed: int | None = None, stop: threading.Event | None = None, grammar: str | None = None):
        text = getattr(prompt_tokens, "text", None)
        if text is None:
            raise ModelError("A remote model takes prompts as text; this one came as token ids.")
        return RemoteGeneration(self, text, len(prompt_tokens), max_tokens, temperature, top_p, seed, stop, grammar)

    def reset_cache(self) -> None:
        pass  # the server keeps its own cache

    def close(self) -> None:
        pass

    # -- HTTP -------------------------------------------------------------------------------------

    def _host(self) -> str:
        return urllib.parse.urlsplit(self.base).netloc

    def _request(self, method: str, path: str, body: dict | None = None, base: str | None = None):
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if self.remote.api_key:
            headers["Authorization"] = f"Bearer {self.remote.api_key}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request((base or self.base) + path, data=data, headers=headers, method=method)
        try:
            return urllib.request.urlopen(request, timeout=TIMEOUT_S)  # noqa: S310 - the user's own server
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:300]
            try:
                detail = json.loads(detail)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                pass
            if exc.code in (401, 403):
                raise ModelError(f"The server at {self._host()} refused the API key (HTTP {exc.code}). "
                                 "Check the key in Settings ▸ Model.") from None
            raise ModelError(f"The server at {self._host()} answered HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ModelError(f"The model server at {self.remote.url} cannot be reached ({reason}). Is it running?") \
                from None

    def _json(self, method: str, path: str, body: dict | None = None) -> dict:
        with self._request(method, path, body) as response:
            try:
                return json.loads(response.read())
            except ValueError:
                raise ModelError(f"{self.remote.url} did not answer as an OpenAI-compatible server does.") from None

    def _props(self) -> dict:
        """llama.cpp's server describes itself at /props (template, context); others have no such page."""
        root = self.base[: -len("/v1")]
        try:
            with self._request("GET", "/props", base=root) as response:
                props = json.loads(response.read())
                return props if isinstance(props, dict) else {}
        except (ModelError, ValueError):
            return {}


class RemoteGeneration:
    """One streamed answer from the server; iterate for text pieces, then read stats."""

    def __init__(self, engine: RemoteEngine, prompt: str, prompt_tokens: int, max_tokens: int, temperature: float,
                 top_p: float, seed: int | None, stop: threading.Event | None, grammar: str | None) -> None:
        self.engine = engine
        self.body = {"model": engine.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": temperature,
                     "top_p": top_p, "stream": True, "stream_options": {"include_usage": True}}
        if seed is not None:
            self.body["seed"] = seed
        if grammar:
            self.body["grammar"] = grammar  # llama.cpp's server honours it; others ignore unknown fields
        self.stop = stop or threading.Event()
        self.stats = GenerationStats(prompt_tokens=prompt_tokens)

    def __iter__(self) -> Iterator[str]:
        stats, started = self.stats, time.perf_counter()
        response = self.engine._request("POST", "/completions", self.body)
        try:
            for raw in response:
                if self.stop.is_set():
                    stats.finish_reason = "cancelled"
                    break
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    chunk = json.loads(data)
                except ValueError:
                    continue
                if isinstance(chunk.get("usage"), dict):
                    usage = chunk["usage"]
                    stats.prompt_tokens = usage.get("prompt_tokens", stats.prompt_tokens)
                    stats.completion_tokens = usage.get("completion_tokens", stats.completion_tokens)
                for choice in chunk.get("choices") or []:
                    piece = choice.get("text") or ""
                    if piece:
                        if stats.completion_tokens == 0:
                            stats.time_to_first_token = time.perf_counter() - started
                            stats.prompt_seconds = stats.time_to_first_token
                        stats.completion_tokens += 1
                        yield piece
                    if choice.get("finish_reason"):
                        stats.finish_reason = "length" if choice["finish_reason"] == "length" else "stop"
        except (OSError, TimeoutError) as exc:
            raise ModelError(f"The model server stopped answering ({exc}).") from None
        finally:
            response.close()  # closing the stream is how the server learns to stop
            stats.seconds = time.perf_counter() - started
