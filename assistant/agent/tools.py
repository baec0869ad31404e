"""The tools the agent may call: each a name, a JSON schema of its arguments and a function.

A tool returns text (the Observation the model reads next). It never raises for something the model
did wrong (bad arguments, nothing found): it says so in the text, so the model can try again.
"""

from __future__ import annotations

import datetime as _dt
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from assistant.agent.sandbox import Limits, run_python
from assistant.errors import AssistantError

if TYPE_CHECKING:
    from assistant.core import Assistant

OBSERVATION_CHARS = 2000  # what one observation may add to the prompt


@dataclass
class ToolContext:
    assistant: Assistant | None
    cancel: threading.Event = field(default_factory=threading.Event)
    collection: str | list[str] | None = None  # the documents search_documents looks in
    limits: Limits = field(default_factory=Limits)
    # Asked before a program runs, when the user wants that or there is no OS boundary: True runs it.
    confirm: Callable[[str, dict], bool] | None = None


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict  # JSON schema of an object
    run: Callable[[dict, ToolContext], str]

    def signature(self) -> str:
        args = ", ".join(f"{k}: {v.get('type', 'any')}" for k, v in self.parameters.get("properties", {}).items())
        return f"{self.name}({args}): {self.description}"


def _python(args: dict, ctx: ToolContext) -> str:
    if ctx.confirm is not None and not ctx.confirm("python", args):
        return "The user did not allow this program to run."
    result = run_python(str(args.get("code", "")), ctx.limits, ctx.cancel)
    return result.observation()


def _search_documents(args: dict, ctx: ToolContext) -> str:
    if ctx.assistant is None:
        return "No documents are available."
    query = str(args.get("query", "")).strip()
    if not query:
        return "search_documents needs a query."
    names = ctx.collection or "*"
    floor = ctx.assistant.settings.min_similarity
    try:
        hits = ctx.assistant.search(query, names, k=int(args.get("k", 3) or 3))
    except AssistantError as exc:
        return str(exc)
    hits = [h for h in hits if h.similarity is None or h.similarity >= floor]  # as answers do: unrelated is nothing
    if not hits:
        return f"Nothing in the documents matches {query!r}."
    return "\n".join(f"[chunk {h.chunk_id}] {h.file}" + (f", page {h.page}" if h.page else "")
                     + f": {' '.join(h.text.split())[:400]}" for h in hits)


def _read_document(args: dict, ctx: ToolContext) -> str:
    if ctx.assistant is None:
        return "No documents are available."
    try:
        chunk_id = int(args.get("chunk_id"))
    except (TypeError, ValueError):
        return "read_document needs a chunk_id (a number from search_documents)."
    rows = ctx.assistant.documents.chunks([chunk_id])
    if not rows:
        return f"There is no chunk {chunk_id}."
    row = rows[0]
    return f"{row.file}" + (f", page {row.page}" if row.page else "") + f":\n{row.text}"


def _recall(args: dict, ctx: ToolContext) -> str:
    if ctx.assistant is None:
        return "No past conversations are available."
    query = str(args.get("query", "")).strip()
    if not query:
        return "recall needs a query."
    # Long-term memory by meaning first (when on), then the words themselves in every saved message.
    lines = [f"[memory, {'chat ' + str(m.chat_id) if m.chat_id else 'fact'}] {' '.join(m.text.split())[:300]}"
             for m in ctx.assistant.recall(query)]
    lines += [f"[{m.role}, conversation {m.conversation_id}] {' '.join(m.content.split())[:300]}"
              for m in ctx.assistant.conversations.search_messages(query, limit=5)]
    return "\n".join(dict.fromkeys(lines)) if lines else f"No past conversation mentions {query!r}."


def _current_time(args: dict, ctx: ToolContext) -> str:
    now = _dt.datetime.now().astimezone()
    return now.strftime("%A %d %B %Y, %H:%M:%S %Z (UTC%z)")


TOOLS: dict[str, Tool] = {t.name: t for t in (
    Tool("python", "run a Python program in a sandbox and see what it prints (use print)",
         {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}, _python),
    Tool("search_documents", "search the user's indexed documents; returns passages with chunk ids",
         {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}, _search_documents),
    Tool("read_document", "read one passage of an indexed document by its chunk id",
         {"type": "object", "properties": {"chunk_id": {"type": "integer"}}, "required": ["chunk_id"]}, _read_document),
    Tool("recall", "search past conversations with the user",
         {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}, _recall),
    Tool("current_time", "the current date and time", {"type": "object", "properties": {}}, _current_time),
)}


def enabled_tools(disabled: str = "") -> dict[str, Tool]:
    """TOOLS less those named in the comma-separated setting."""
    off = {name.strip() for name in disabled.split(",") if name.strip()}
    return {name: tool for name, tool in TOOLS.items() if name not in off}


def run_tool(tools: dict[str, Tool], name: str, args: dict, ctx: ToolContext) -> str:
    """The observation for a call: the tool's text, or why the call could not be made."""
    tool = tools.get(name)
    if tool is None:
        return f"There is no tool {name!r}. The tools are: {', '.join(tools)}."
    if not isinstance(args, dict):
        return f"The input of {name} must be a JSON object, not {json.dumps(args)[:100]}."
    missing = [k for k in tool.parameters.get("required", []) if k not in args]
    if missing:
        return f"{name} needs {', '.join(missing)}."
    text = tool.run(args, ctx)
    if len(text) > OBSERVATION_CHARS:
        text = text[:OBSERVATION_CHARS] + f"\n[… {len(text) - OBSERVATION_CHARS} more characters left out]"
    return text
