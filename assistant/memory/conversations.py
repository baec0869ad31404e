"""Conversations and their messages: create, list, rename, delete, search, export."""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from assistant.errors import AssistantError, NotFoundError
from assistant.memory.db import Database

TITLE_CHARS = 60


class ArchiveError(AssistantError):
    """A chat export that cannot be imported."""


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    created_at: float
    updated_at: float
    message_count: int = 0
    memory: bool = True  # this chat is remembered and recalls memories
    summary: str = ""  # of its early turns, once they no longer fit the context
    summary_upto: int = 0  # the id of the last message the summary covers
    match: str = ""  # from a search: a snippet of the message that matched


@dataclass(frozen=True)
class Message:
    id: int
    conversation_id: int
    role: str
    content: str
    created_at: float
    meta: dict = field(default_factory=dict)


def _conversation(row) -> Conversation:
    match = row["match"] if "match" in row.keys() else ""
    return Conversation(row["id"], row["title"], row["created_at"], row["updated_at"], row["n"], bool(row["memory"]),
                        row["summary"], row["summary_upto"], match or "")


def title_from(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"


class ConversationStore:
    def __init__(self, db_path: Path) -> None:
        self.db = Database(db_path)

    def create(self, title: str = "New chat") -> Conversation:
        now = time.time()
        cur = self.db.connect().execute(
            "INSERT INTO conversations(title, created_at, updated_at) VALUES (?, ?, ?)", (title, now, now)
        )
        return Conversation(cur.lastrowid, title, now, now)

    def get(self, conversation_id: int) -> Conversation:
        row = self.db.connect().execute(
            "SELECT c.*, (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) AS n "
            "FROM conversations c WHERE c.id = ?",
            (conversation_id,),
        ).fetchone()
        if row is None:
            raise NotFoundError(f"Conversation {conversation_id} does not exist (it may have been deleted).")
        return _conversation(row)

    def list(self, search: str = "", limit: int = 500) -> list[Conversation]:
        """Newest first. `search` finds chats whose title holds it or whose messages hold every word of it
        (word beginnings, case and accents ignored); such a chat's `match` is a snippet of the message."""
        count = "(SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) AS n"
        words = _fts_words(search)
        if not words:
            rows = self.db.connect().execute(
                f"SELECT c.*, {count}, '' AS match FROM conversations c "
                "WHERE c.title LIKE ? ESCAPE '\\' ORDER BY c.updated_at DESC, c.id DESC LIMIT ?",
                (f"%{_escape_like(search)}%", limit)).fetchall()
            return [_conversation(r) for r in rows]
        rows = self.db.connect().execute(
            f"""SELECT c.*, {count},
                   (SELECT snippet(messages_fts, 0, '', '', '…', 12) FROM messages_fts JOIN messages m
                    ON m.id = messages_fts.rowid WHERE messages_fts MATCH :q AND m.conversation_id = c.id
                    ORDER BY m.id DESC LIMIT 1) AS match
                FROM conversations c
                WHERE c.title LIKE :title ESCAPE '\\' OR c.id IN (
                    SELECT m.conversation_id FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid
                    WHERE messages_fts MATCH :q)
                ORDER BY c.updated_at DESC, c.id DESC LIMIT :limit""",
            {"q": words, "title": f"%{_escape_like(search.strip())}%", "limit": limit}).fetchall()
        return [_conversation(r) for r in rows]

    def rename(self, conversation_id: int, title: str) -> None:
        title = title_from(title) or "Untitled"
        cur = self.db.connect().execute("UPDATE conversations SET title = ? WHERE id = ?", (title, conversation_id))
        if cur.rowcount == 0:
            raise NotFoundError(f"Conversation {conversation_id} does not exist.")

    def set_memory(self, conversation_id: int, on: bool) -> None:
        cur = self.db.connect().execute("UPDATE conversations SET memory = ? WHERE id = ?", (int(on), conversation_id))
        if cur.rowcount == 0:
            raise NotFoundError(f"Conversation {conversation_id} does not exist.")

    def set_summary(self, conversation_id: int, summary: str, upto: int) -> None:
        self.db.connect().execute("UPDATE conversations SET summary = ?, summary_upto = ? WHERE id = ?",
                                  (summary, upto, conversation_id))

    def delete(self, conversation_id: int) -> None:
        self.db.connect().execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    def add_message(self, conversation_id: int, role: str, content: str, meta: dict | None = None) -> Message:
        now = time.time()
        conn = self.db.connect()
        with _transaction(conn):
            cur = conn.execute(
                "INSERT INTO messages(conversation_id, role, content, created_at, meta) VALUES (?, ?, ?, ?, ?)",
                (conversation_id, role, content, now, json.dumps(meta or {})),
            )
            conn.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation_id))
            # The first question names the chat, as users expect from other chat apps.
            if role == "user":
                conn.execute(
                    "UPDATE conversations SET title = ? WHERE id = ? AND title = 'New chat'",
                    (title_from(content), conversation_id),
                )
        return Message(cur.lastrowid, conversation_id, role, content, now, meta or {})

    def messages(self, conversation_id: int) -> list[Message]:
        rows = self.db.connect().execute(
            "SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", (conversation_id,)
        ).fetchall()
        return [
            Message(r["id"], r["conversation_id"], r["role"], r["content"], r["created_at"], json.loads(r["meta"]))
            for r in rows
        ]

    def search_messages(self, query: str, limit: int = 5) -> list[Message]:
        """Messages whose text holds every word of query (case-insensitive), newest first."""
        words = [w for w in query.split() if w][:8]
        if not words:
            return []
        where = " AND ".join("content LIKE ? ESCAPE '\\'" for _ in words)
        rows = self.db.connect().execute(
            f"SELECT * FROM messages WHERE role IN ('user', 'assistant') AND {where} ORDER BY id DESC LIMIT ?",
            (*[f"%{_escape_like(w)}%" for w in words], limit),
        ).fetchall()
        return [Message(r["id"], r["conversation_id"], r["role"], r["content"], r["created_at"], json.loads(r["meta"]))
                for r in rows]

    def delete_from(self, conversation_id: int, message_id: int) -> None:
        """Delete a message and everything after it (for regenerate and edit-and-resend)."""
        conn = self.db.connect()
        with _transaction(conn):
            conn.execute("DELETE FROM messages WHERE conversation_id = ? AND id >= ?", (conversation_id, message_id))
            # A summary of turns that are gone would keep saying them.
            conn.execute("UPDATE conversations SET summary = '', summary_upto = 0 WHERE id = ? AND summary_upto >= ?",
                         (conversation_id, message_id))

    def export_markdown(self, conversation_id: int, thinking: bool = False) -> str:
        """thinking: include a reasoning model's thinking (a folded <details> block) above its answers."""
        conv = self.get(conversation_id)
        lines = [f"# {conv.title}", "", f"_Exported from assistant on {_when(time.time())}._", ""]
        names = {"user": "You", "assistant": "Assistant", "system": "System"}
        for m in self.messages(conversation_id):
            lines += [f"## {names.get(m.role, m.role)} · {_when(m.created_at)}", ""]
            if thinking and m.meta.get("reasoning"):
                lines += ["<details><summary>Thinking</summary>", "", m.meta["reasoning"].strip(), "", "</details>", ""]
            lines += [m.content.rstrip(), ""]
        return "\n".join(lines)

    def export_json(self, conversation_id: int, thinking: bool = False) -> dict:
        conv = self.get(conversation_id)
        return {
            "format": "assistant.conversation/1",
            "conversation": asdict(conv),
            "messages": [_message_dict(m, thinking) for m in self.messages(conversation_id)],
        }

    def export_all(self, thinking: bool = False) -> dict:
        """Every chat with every message, oldest chat first: a backup, or a move to another computer."""
        conversations = sorted(self.list(limit=1_000_000), key=lambda c: (c.created_at, c.id))
        return {
            "format": ARCHIVE_FORMAT,
            "exported_at": time.time(),
            "conversations": [
                {**_exported(c), "messages": [_message_dict(m, thinking) for m in self.messages(c.id)]}
                for c in conversations
            ],
        }

    def import_all(self, archive: dict) -> tuple[int, int]:
        """Add the chats of an export_all (or one export_json) archive as new chats; a chat already here
        (same title, start time and messages) is skipped, so importing twice adds nothing.
        Returns (imported, skipped). All or nothing: a damaged archive adds no chat."""
        chats = _archive_chats(archive)
        conn = self.db.connect()
        imported = skipped = 0
        with _transaction(conn):
            for chat in chats:
                if self._already_here(chat):
                    skipped += 1
                    continue
                cur = conn.execute(
                    "INSERT INTO conversations(title, created_at, updated_at, memory) VALUES (?, ?, ?, ?)",
                    (chat["title"], chat["created_at"], chat["updated_at"], int(chat["memory"])))
                conn.executemany(
                    "INSERT INTO messages(conversation_id, role, content, created_at, meta) VALUES (?, ?, ?, ?, ?)",
                    [(cur.lastrowid, m["role"], m["content"], m["created_at"], json.dumps(m["meta"]))
                     for m in chat["messages"]])
                imported += 1
        return imported, skipped

    def _already_here(self, chat: dict) -> bool:
        conn = self.db.connect()
        for row in conn.execute("SELECT id FROM conversations WHERE title = ? AND created_at = ?",
                                (chat["title"], chat["created_at"])).fetchall():
            here = [(r["role"], r["content"]) for r in conn.execute(
                "SELECT role, content FROM messages WHERE conversation_id = ? ORDER BY id", (row["id"],))]
            if here == [(m["role"], m["content"]) for m in chat["messages"]]:
                return True
        return False

    def close(self) -> None:
        self.db.close()


ARCHIVE_FORMAT = "assistant.conversations/1"


def _exported(c: Conversation) -> dict:
    return {"title": c.title, "created_at": c.created_at, "updated_at": c.updated_at, "memory": c.memory}


def _archive_chats(archive: object) -> list[dict]:
    """The chats in an archive, checked and normalised; ArchiveError says in plain words what is wrong."""
    if not isinstance(archive, dict):
        raise ArchiveError("This file is not a chat export from Assistant (it is not a JSON object).")
    kind = archive.get("format")
    if kind == "assistant.conversation/1":  # one chat's export
        chats = [{**archive.get("conversation", {}), "messages": archive.get("messages")}]
    elif kind == ARCHIVE_FORMAT:
        chats = archive.get("conversations")
    else:
        raise ArchiveError(f"This file is not a chat export from Assistant (its format is {kind!r}).")
    if not isinstance(chats, list):
        raise ArchiveError("This chat export is damaged: it has no list of chats.")
    now = time.time()
    clean = []
    for n, chat in enumerate(chats, 1):
        messages = chat.get("messages") if isinstance(chat, dict) else None
        if not isinstance(messages, list):
            raise ArchiveError(f"This chat export is damaged: chat {n} has no list of messages.")
        out = []
        for m in messages:
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") \
                    or not isinstance(m.get("content"), str):
                raise ArchiveError(f"This chat export is damaged: chat {n} has a message without a role and text.")
            meta = m.get("meta")
            out.append({"role": m["role"], "content": m["content"], "created_at": _number(m.get("created_at"), now),
                        "meta": meta if isinstance(meta, dict) else {}})
        created = _number(chat.get("created_at"), now)
        clean.append({"title": title_from(str(chat.get("title") or "")) or "Imported chat", "created_at": created,
                      "updated_at": _number(chat.get("updated_at"), created), "memory": bool(chat.get("memory", True)),
                      "messages": out})
    return clean


def _number(value: object, default: float) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


class _transaction:
    """BEGIN ... COMMIT on an autocommit connection, ROLLBACK on error."""

    def __init__(self, conn) -> None:
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


def _fts_words(text: str) -> str:
    """Every word of text, each a quoted prefix ("word"*), all required; "" when no word is left.
    Quoting makes FTS5's operators and punctuation plain text, so no input is a syntax error."""
    words = [w for w in re.findall(r"\w+", text.replace("\0", " "))][:12]
    return " ".join(f'"{w}"*' for w in words)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


def _message_dict(message: Message, thinking: bool) -> dict:
    out = asdict(message)
    if not thinking:  # a reasoning model's thinking is left out of exports unless the user asks for it
        out["meta"] = {k: v for k, v in out["meta"].items() if k not in ("reasoning", "thinking_seconds")}
    return out
