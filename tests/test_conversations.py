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
        sys.stdin.readline()  # hold the answer open mid-stream until the test kills us: its length never matters
"""


def test_kill_9_while_streaming_loses_at_most_that_answer(isolated_home) -> None:
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "ASSISTANT_HOME": str(isolated_home)})
    deadline = time.time() + 120
    for line in iter(proc.stdout.readline, ""):
        assert time.time() < deadline
        if line.startswith("streaming"):  # the second answer is being written (and waits for us)
            proc.send_signal(signal.SIGKILL)
            break
    else:
        pytest.fail("the second answer never started streaming")
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


def test_search_finds_chats_by_any_words_in_their_messages(store: ConversationStore) -> None:
    bread = store.create()
    store.add_message(bread.id, "user", "How do I bake sourdough bread?")
    store.add_message(bread.id, "assistant", "Feed the starter, then mix flour and water. Café crème optional.")
    other = store.create()
    store.add_message(other.id, "user", "Explain Python list comprehensions")
    found = store.list("starter flour")  # both words, in a message, not the title
    assert [c.id for c in found] == [bread.id]
    assert "starter" in found[0].match and "flour" in found[0].match
    assert [c.id for c in store.list("sourd")] == [bread.id]  # the start of a word
    assert [c.id for c in store.list("CAFE")] == [bread.id]  # case and accents ignored
    assert [c.id for c in store.list("comprehension")] == [other.id]
    assert store.list("starter python") == []  # every word must be in one message
    # FTS5's own syntax is plain text here: no input raises.
    for query in ['"', "NEAR(", "a AND", "*", "bread OR (", "-x", "col:val", "\x00"]:
        store.list(query)
    # Deleted messages stop matching (the index follows the table).
    store.delete_from(bread.id, store.messages(bread.id)[1].id)
    assert store.list("starter") == []


def test_search_index_covers_messages_written_before_it_existed(tmp_path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript("BEGIN;\n" + "\n".join(MIGRATIONS[:4]) + "\nPRAGMA user_version = 4;\nCOMMIT;")
    conn.execute("INSERT INTO conversations(title, created_at, updated_at) VALUES ('Old chat', 1, 1)")
    conn.execute("INSERT INTO messages(conversation_id, role, content, created_at) VALUES (1, 'user', 'tell me about "
                 "lighthouses', 1)")
    conn.commit()
    conn.close()
    store = ConversationStore(path)
    assert [c.title for c in store.list("lighthouse")] == ["Old chat"]
    store.close()


def test_export_all_and_import_into_another_database(store: ConversationStore, tmp_path) -> None:
    a = store.create()
    store.add_message(a.id, "user", "First question")
    store.add_message(a.id, "assistant", "First answer", {"completion_tokens": 3})
    b = store.create("Named")
    store.add_message(b.id, "user", "Second question")
    store.set_memory(b.id, False)
    archive = json.loads(json.dumps(store.export_all()))  # through JSON, as a file carries it
    assert archive["format"] == "assistant.conversations/1" and len(archive["conversations"]) == 2

    other = ConversationStore(tmp_path / "other.db")
    other.add_message(other.create().id, "user", "Already here")
    assert other.import_all(archive) == (2, 0)
    assert other.import_all(archive) == (0, 2)  # importing again adds nothing
    chats = {c.title: c for c in other.list()}
    assert set(chats) == {"First question", "Named", "Already here"}
    assert not chats["Named"].memory and chats["First question"].memory
    messages = other.messages(chats["First question"].id)
    assert [(m.role, m.content) for m in messages] == [("user", "First question"), ("assistant", "First answer")]
    assert messages[1].meta == {"completion_tokens": 3}
    assert chats["First question"].created_at == store.get(a.id).created_at
    assert [c.title for c in other.list("second")] == ["Named"]  # imported messages are searchable
    # One chat's own JSON export imports too.
    third = ConversationStore(tmp_path / "third.db")
    assert third.import_all(json.loads(json.dumps(store.export_json(a.id)))) == (1, 0)
    other.close()
    third.close()


@pytest.mark.parametrize("archive, says", [
    ([1, 2], "not a JSON object"),
    ({"format": "something else"}, "not a chat export"),
    ({"format": "assistant.conversations/1"}, "no list of chats"),
    ({"format": "assistant.conversations/1", "conversations": [{"title": "x"}]}, "no list of messages"),
    ({"format": "assistant.conversations/1",
      "conversations": [{"title": "ok", "messages": [{"role": "user", "content": "fine"}]},
                        {"title": "bad", "messages": [{"role": "robot", "content": "x"}]}]}, "without a role"),
])
def test_a_damaged_archive_says_why_and_adds_nothing(store: ConversationStore, archive, says: str) -> None:
    from assistant.memory.conversations import ArchiveError

    with pytest.raises(ArchiveError, match=says):
        store.import_all(archive)
    assert store.list() == []
