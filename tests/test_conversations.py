"""Conversations in real SQLite: CRUD, search, export, migrations, and kill -9 mid-answer."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from assistant.errors import AssistantError, NotFoundError
from assistant.memory.conversations import ConversationStore
from assistant.memory.db import MIGRATIONS


@pytest.fixture
def store(tmp_path):
    s = ConversationStore(tmp_path / "assistant.db")
    yield s
    s.close()


def test_create_list_rename_delete(store: ConversationStore) -> None:
    a = store.create()
    b = store.create("Second")
    store.add_message(a.id, "user", "How do I bake bread?")
    assert store.get(a.id).title == "How do I bake bread?"  # the first question names a new chat
    assert [c.id for c in store.list()] == [a.id, b.id]  # most recently active first
    store.rename(b.id, "  Taxes   2026 ")
    assert store.get(b.id).title == "Taxes 2026"
    store.delete(a.id)
    with pytest.raises(NotFoundError):
        store.get(a.id)
    assert store.messages(a.id) == []  # messages went with it
    with pytest.raises(NotFoundError):
        store.rename(a.id, "x")


def test_search_titles_treats_wildcards_literally(store: ConversationStore) -> None:
    store.create("100% rye bread")
    store.create("1000 rye loaves")
    store.create("Python_tips")
    store.create("Pythonxtips")
    assert [c.title for c in store.list("100%")] == ["100% rye bread"]
    assert [c.title for c in store.list("python_")] == ["Python_tips"]
    assert len(store.list("RYE")) == 2


def test_long_first_message_gives_a_short_title(store: ConversationStore) -> None:
    conv = store.create()
    store.add_message(conv.id, "user", "word " * 100)
    title = store.get(conv.id).title
    assert len(title) <= 60 and title.endswith("…")


def test_export_markdown_and_json(store: ConversationStore) -> None:
    conv = store.create("Recipe")
    store.add_message(conv.id, "user", "Ingredients?")
    store.add_message(conv.id, "assistant", "```\nflour\n```", {"completion_tokens": 3})
    md = store.export_markdown(conv.id)
    assert md.startswith("# Recipe") and "## You" in md and "## Assistant" in md and "```\nflour\n```" in md
    data = json.loads(json.dumps(store.export_json(conv.id)))
    assert data["conversation"]["title"] == "Recipe"
    assert [m["role"] for m in data["messages"]] == ["user", "assistant"]
    assert data["messages"][1]["meta"] == {"completion_tokens": 3}


def test_schema_is_versioned(tmp_path) -> None:
    path = tmp_path / "a.db"
    ConversationStore(path).close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # A database from a newer app is refused with a plain message, not corrupted.
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(AssistantError, match="newer version"):
        ConversationStore(path)


def test_garbage_database_file_gives_a_clear_error(tmp_path) -> None:
    path = tmp_path / "assistant.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(AssistantError, match="could not be opened"):
        ConversationStore(path)


def test_messages_ids_are_never_reused(store: ConversationStore) -> None:
    conv = store.create()
    m1 = store.add_message(conv.id, "user", "a")
    m2 = store.add_message(conv.id, "assistant", "b")
    store.delete_from(conv.id, m2.id)
    m3 = store.add_message(conv.id, "assistant", "c")
    assert m3.id > m2.id > m1.id


KILL_SCRIPT = """
import sys
from assistant.config import Settings
from assistant.core import Assistant
from assistant.events import Token
a = Assistant(Settings(n_ctx=1024, max_tokens=4000, temperature=0.8))
conv = a.conversations.create()
list(a.send(conv.id, "Tell me a short joke.", None))
print("first-done", flush=True)
for event in a.send(conv.id, "Now write a very long essay about the history of bread.", None):
    if isinstance(event, Token):
        print("streaming", flush=True)
"""


def test_kill_9_while_streaming_loses_at_most_that_answer(isolated_home) -> None:
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "ASSISTANT_HOME": str(isolated_home)})
    seen = 0
    deadline = time.time() + 120
    for line in proc.stdout:
        if line.startswith("streaming"):
            seen += 1
            if seen == 10:
                proc.send_signal(signal.SIGKILL)
                break
        assert time.time() < deadline
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    store = ConversationStore(isolated_home / "assistant.db")
    try:
        assert sqlite3.connect(isolated_home / "assistant.db").execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        (conv,) = store.list()
        messages = store.messages(conv.id)
        # The first exchange and the second question survive; only the answer being written is lost.
        assert [m.role for m in messages] == ["user", "assistant", "user"]
        assert messages[2].content.startswith("Now write a very long essay")
    finally:
        store.close()
