"""The app's SQLite database: WAL mode, one connection per thread, versioned migrations.

WAL lets the UI read the chat list while the model worker writes a message. Each write is its
own transaction, so a kill -9 loses at most the message being generated.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from assistant.errors import AssistantError

# Each entry moves the schema one version up; never edit a released entry, append a new one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE conversations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        title TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: the window refers to messages by id
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
        content TEXT NOT NULL,
        created_at REAL NOT NULL,
        meta TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX messages_by_conversation ON messages(conversation_id, id);
    CREATE INDEX conversations_by_update ON conversations(updated_at DESC);
    """,
    # 2: documents for retrieval. chunks.id is also the chunk's id in the collection's FAISS index, so it is
    # AUTOINCREMENT: an id is never reused, which is what lets the store reconcile the two after a crash.
    """
    CREATE TABLE collections (
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- names the FAISS file; never reused, so a stale file is never adopted
        name TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL
    );
    CREATE TABLE documents (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        path TEXT NOT NULL,
        content_hash TEXT,  -- NULL until the file's chunks are stored
        size INTEGER,
        mtime REAL,
        status TEXT NOT NULL CHECK (status IN ('indexed', 'skipped', 'failed', 'pending')),
        reason TEXT,
        pages INTEGER,
        chunk_count INTEGER NOT NULL DEFAULT 0,
        indexed_at REAL,
        UNIQUE (collection_id, path)
    );
    CREATE TABLE chunks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
        ordinal INTEGER NOT NULL,
        text TEXT NOT NULL,
        page INTEGER,
        heading TEXT,
        start INTEGER NOT NULL,
        "end" INTEGER NOT NULL
    );
    CREATE INDEX chunks_by_document ON chunks(document_id, ordinal);
    CREATE VIRTUAL TABLE chunks_fts USING fts5(
        text, content='chunks', content_rowid='id', tokenize='porter unicode61 remove_diacritics 2'
    );
    CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN
        INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
    END;
    CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN
        INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
    END;
    CREATE TRIGGER chunks_fts_update AFTER UPDATE ON chunks BEGIN
        INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
        INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
    END;
    """,
    # 3: what the user added to each collection (re-index and folder watching walk these again), and
    # what they removed from inside an added folder (the walk leaves it out instead of adding it back).
    """
    CREATE TABLE collection_paths (
        collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        path TEXT NOT NULL,
        excluded INTEGER NOT NULL DEFAULT 0,
        added_at REAL NOT NULL,
        PRIMARY KEY (collection_id, path)
    );
    INSERT OR IGNORE INTO collection_paths(collection_id, path, added_at)
        SELECT collection_id, path, COALESCE(indexed_at, 0) FROM documents;
    """,
    # 4: long-term memory per chat (on unless the user turns it off for that chat), and the running
    # summary of a long chat's early turns: the text, and the last message it covers.
    """
    ALTER TABLE conversations ADD COLUMN memory INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE conversations ADD COLUMN summary TEXT NOT NULL DEFAULT '';
    ALTER TABLE conversations ADD COLUMN summary_upto INTEGER NOT NULL DEFAULT 0;
    """,
    # 5: full-text search over what was said, so the chat list finds a chat by any word in it.
    """
    CREATE VIRTUAL TABLE messages_fts USING fts5(
        content, content='messages', content_rowid='id', tokenize='unicode61 remove_diacritics 2');
    INSERT INTO messages_fts(rowid, content) SELECT id, content FROM messages WHERE role != 'system';
    CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages WHEN new.role != 'system' BEGIN
        INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
    END;
    CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages WHEN old.role != 'system' BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
    END;
    CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages WHEN old.role != 'system' BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
        INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
    END;
    """,
]


class Database:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._migrate()

    def connect(self) -> sqlite3.Connection:
        """This thread's connection (SQLite connections must not cross threads)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
                conn.row_factory = sqlite3.Row
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA foreign_keys=ON")
                conn.execute("PRAGMA synchronous=NORMAL")  # durable against app crashes in WAL mode
            except sqlite3.DatabaseError as exc:
                raise AssistantError(f"The chat database {self.path} could not be opened: {exc}.") from exc
            self._local.conn = conn
        return conn

    def _migrate(self) -> None:
        conn = self.connect()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise AssistantError(
                f"The chat database {self.path} was written by a newer version of assistant "
                f"(schema {version}); update the app to open it."
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
