"""Benchmark the OpenAI-compatible API: `assistant serve` against llama-cpp-python's own server.

`assistant bench api` (or `python -m bench.api`) starts each server in turn on loopback with the same
model (the default SmolLM2-135M), context (2048) and threads, then runs 1, 8 and 32 concurrent clients
(the official openai client, streaming), each asking a few short questions with max_tokens 32. For each
it reports, side by side from the same run: requests per second, completion tokens per second over the
whole run, and the median and 95th-percentile time to the first streamed token. Both servers write one
answer at a time (one llama.cpp context). Extra clients queue on ours; llama-cpp-python's server by
default interrupts the answer being streamed when a new request arrives, so the table also counts the
answers that ran to their end and the tokens each client received.

Two more rows measure the HTTP stack alone, which is what moving to an ASGI server (llama-cpp-python's is
FastAPI on uvicorn) would change: GET /v1/models requests/s from 1 and 8 clients, each keeping one
http.client connection (reused where the server keeps it alive; ours closes after each reply, so the
client reconnects), and the time to answer one request while 200 other connections sit idle half-way
through their headers (a slow or hostile client must not lock others out).

This is a benchmark, not a test: it reports and never fails on a slow figure.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ["Name a colour.", "What is two plus two?", "Say hello in French.", "Name a fruit.",
             "What is the capital of Italy?", "Name an animal."]
MAX_TOKENS = 32
# Sent by the client, so both servers see the same prompt (without one, ours adds the app's own).
SYSTEM = "You are a helpful assistant. Answer briefly."
CLIENTS = (1, 8, 32)
REQUESTS_EACH = {1: 6, 8: 2, 32: 1}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(kind: str, model: str, threads: int, home: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "ASSISTANT_HOME": home, "PYTHONPATH": str(ROOT)}
    if kind == "app":
        from assistant.config import Settings

        os.environ["ASSISTANT_HOME"] = home
        Settings(n_threads=threads, n_ctx=2048).save()
        argv = [sys.executable, "-m", "assistant", "serve", "--port", str(port), "--model", model]
    else:
        argv = [sys.executable, "-m", "llama_cpp.server", "--model", model, "--host", "127.0.0.1", "--port", str(port),
                "--n_ctx", "2048", "--n_threads", str(threads), "--n_batch", "512"]
    log = open(Path(home) / f"{kind}.log", "w")  # noqa: SIM115 - the server's log, read on failure
    proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} server did not start:\n{(Path(home) / f'{kind}.log').read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url + "/models", timeout=2).close()
            return proc, url
        except urllib.error.HTTPError:
            return proc, url
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"{kind} server did not answer within 180 s")


def _load(url: str, clients: int, each: int) -> dict[str, Any]:
    import openai

    ttfts: list[float] = []
    tokens = [0]
    complete = [0]  # answers that ran to their end (llama_cpp.server cuts one short when another request comes)
    errors: list[str] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        c = openai.OpenAI(base_url=url, api_key="bench", max_retries=0, timeout=600)
        model = c.models.list().data[0].id
        for r in range(each):
            question = QUESTIONS[(n + r) % len(QUESTIONS)]
            started, first, pieces, finished = time.perf_counter(), None, 0, False
            try:
                for chunk in c.chat.completions.create(
                        model=model, stream=True, max_tokens=MAX_TOKENS, temperature=0.0,
                        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]):
                    for choice in chunk.choices:
                        if choice.delta.content:
                            first = first if first is not None else time.perf_counter() - started
                            pieces += 1  # one streamed piece is one token on both servers
                        finished = finished or choice.finish_reason is not None
            except Exception as exc:  # noqa: BLE001 - counted, reported
                with lock:
                    errors.append(str(exc)[:200])
                continue
            with lock:
                if first is not None:
                    ttfts.append(first)
                tokens[0] += pieces
                complete[0] += finished and pieces > 0

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    done = clients * each - len(errors)
    ttfts.sort()
    return {
        "clients": clients, "requests": clients * each, "errors": len(errors), "error_samples": errors[:3],
        "seconds": wall, "requests_per_s": done / wall, "tokens_per_s": tokens[0] / wall,
        "complete": complete[0], "tokens_per_answer": tokens[0] / done if done else 0.0,
        "ttft_p50_s": statistics.median(ttfts) if ttfts else None,
        "ttft_p95_s": ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))] if ttfts else None,
    }


def _http_only(url: str, clients: int, each: int) -> float:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    errors: list[str] = []

    def client() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        for _ in range(each):
            try:
                conn.request("GET", "/v1/models")
                conn.getresponse().read()
            except OSError as exc:
                errors.append(str(exc))
                conn.close()
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return (clients * each - len(errors)) / (time.perf_counter() - started)


def _with_idle_connections(url: str, idle: int = 200) -> float | None:
    """Seconds to answer GET /v1/models while `idle` connections have sent half a request; None: no answer."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    held = []
    try:
        for _ in range(idle):
            s = socket.create_connection((parts.hostname, parts.port), timeout=10)
            s.sendall(f"GET /v1/models HTTP/1.1\r\nHost: {parts.netloc}\r\n".encode())  # never finished
            held.append(s)
        time.sleep(0.5)
        started = time.perf_counter()
        try:
            urllib.request.urlopen(url + "/models", timeout=30).close()
        except OSError:
            return None
        return time.perf_counter() - started
    finally:
        for s in held:
            s.close()


def run(threads: int) -> dict[str, Any]:
    from assistant.llm.models import default_model_path

    model = str(default_model_path())
    results: dict[str, list[dict[str, Any]]] = {}
    for kind in ("app", "llama_cpp"):
        with tempfile.TemporaryDirectory(prefix=f"assistant-bench-api-{kind}-") as home:
            proc, url = _start(kind, model, threads, home)
            try:
                _load(url, 1, 1)  # warm-up: first request's loading costs are not the API's
                results[kind] = [_load(url, c, REQUESTS_EACH[c]) for c in CLIENTS]
                results[f"{kind}_http"] = {"models_rps_1": _http_only(url, 1, 300),
                                           "models_rps_8": _http_only(url, 8, 100),
                                           "idle_200_s": _with_idle_connections(url)}
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    return {"model": Path(model).name, "threads": threads, "max_tokens": MAX_TOKENS, **results}


def render(r: dict[str, Any]) -> str:
    rows = [("clients", "measure", "assistant serve", "llama_cpp.server", "ratio")]
    for ours, theirs in zip(r["app"], r["llama_cpp"], strict=True):
        for key, name, unit in (("requests_per_s", "requests/s", ""), ("tokens_per_s", "completion tokens/s", ""),
                                ("ttft_p50_s", "first token p50", " s"), ("ttft_p95_s", "first token p95", " s")):
            a, b = ours[key], theirs[key]
            rows.append((str(ours["clients"]), name, f"{a:.2f}{unit}" if a is not None else "-",
                         f"{b:.2f}{unit}" if b is not None else "-", f"{a / b:.2f}×" if a and b else "-"))
        rows.append((str(ours["clients"]), "tokens per answer", f"{ours['tokens_per_answer']:.1f}",
                     f"{theirs['tokens_per_answer']:.1f}", ""))
        rows.append((str(ours["clients"]), "answers complete / errors",
                     f"{ours['complete']}/{ours['requests']} / {ours['errors']}",
                     f"{theirs['complete']}/{theirs['requests']} / {theirs['errors']}", ""))
    ours, theirs = r["app_http"], r["llama_cpp_http"]
    for key, clients, name in (("models_rps_1", "1", "GET /v1/models per s"), ("models_rps_8", "8", "GET /v1/models per s"),
                               ("idle_200_s", "1", "answer with 200 idle conns")):
        a, b = ours[key], theirs[key]
        unit = " s" if key == "idle_200_s" else ""
        rows.append((clients, name, f"{a:.3f}{unit}" if a is not None else "no answer",
                     f"{b:.3f}{unit}" if b is not None else "no answer", f"{a / b:.2f}×" if a and b else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    head = (f"API throughput, {r['model']}, {r['threads']} threads, streaming, max_tokens {r['max_tokens']}, "
            "the official openai client; ratio: ours / llama-cpp-python's server (higher is better for rates, "
            "lower for times)")
    return "\n".join([head] + ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows])


def main(argv: list[str] | None = None) -> int:
    from assistant.llm.engine import default_threads

    p = argparse.ArgumentParser(prog="bench.api", description=__doc__.split("\n", 1)[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--threads", type=int, default=default_threads())
    args = p.parse_args(argv)
    result = run(args.threads)
    print(json.dumps(result) if args.json else render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
