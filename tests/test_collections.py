"""What the user added to a collection is remembered: re-index and folder watching walk it again,
and a file removed from inside an added folder stays out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from assistant.config import Settings
from assistant.core import Assistant
from assistant.errors import AssistantError


@pytest.fixture
def app(isolated_home):
    a = Assistant(Settings(), home=isolated_home)
    yield a
    a.close()


def indexed(app: Assistant, collection: str) -> set[str]:
    return {os.path.basename(d.path) for d in app.documents.documents(collection) if d.status == "indexed"}


def test_reindex_walks_the_added_folders_again(app: Assistant, tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("Apples are red or green.")
    single = tmp_path / "single.md"
    single.write_text("# Single\n\nA file added on its own.")
    app.index([folder, single], "notes")
    assert app.documents.roots("notes") == sorted([str(folder), str(single)])
    assert indexed(app, "notes") == {"a.txt", "single.md"}

    (folder / "b.txt").write_text("Bananas are yellow.")
    (folder / "a.txt").unlink()
    report = app.reindex("notes")
    assert report.files_indexed == 1 and report.files_removed == 1
    assert indexed(app, "notes") == {"b.txt", "single.md"}
    with pytest.raises(AssistantError, match="Nothing has been added"):
        app.reindex("empty")


def test_a_file_removed_from_an_added_folder_stays_out_until_added_again(app: Assistant, tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    for name in ("keep.txt", "drop.txt", "sub/deep.txt"):
        (folder / name).write_text(f"Text of {name}.")
    app.index([folder], "notes")
    assert indexed(app, "notes") == {"keep.txt", "drop.txt", "deep.txt"}

    assert app.forget("notes", folder / "drop.txt") > 0
    assert app.forget("notes", folder / "sub") > 0  # a whole sub-folder
    assert app.documents.exclusions("notes") == sorted([str(folder / "drop.txt"), str(folder / "sub")])
    app.reindex("notes")
    assert indexed(app, "notes") == {"keep.txt"}
    assert app.search("Text of drop.txt", "notes", mode="keyword", k=5)[0].file.endswith("keep.txt")

    app.index([folder / "drop.txt"], "notes")  # the user adds it again, by name
    assert indexed(app, "notes") == {"keep.txt", "drop.txt"}
    app.forget("notes", folder)  # the added folder itself: everything goes, nothing is left to walk
    assert indexed(app, "notes") == set() and app.documents.roots("notes") == []


def test_sync_reports_only_collections_that_changed(app: Assistant, tmp_path: Path) -> None:
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{name}.txt").write_text(f"The {name} file.")
        app.index([tmp_path / name], name)
    broken = tmp_path / "two" / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 this is not really a pdf")
    # Written a while ago, as real files are: one modified within a second of indexing is always re-read.
    os.utime(broken, (broken.stat().st_mtime - 60, broken.stat().st_mtime - 60))
    changed = app.sync()
    assert [name for name, _ in changed] == ["two"]
    report = dict(changed)["two"]
    assert report.files_failed and report.files_failed[0][0].endswith("broken.pdf")
    # Nothing changed since: no collection reports anything, and the damaged PDF is not tried again.
    assert app.sync() == []
    (tmp_path / "one" / "new.txt").write_text("A new file in one.")
    changed = app.sync()
    assert [(name, r.files_indexed) for name, r in changed] == [("one", 1)]
    # A deleted folder is reported once as removed, and is no longer walked.
    for f in (tmp_path / "one").iterdir():
        f.unlink()
    (tmp_path / "one").rmdir()
    changed = app.sync()
    assert [(name, r.files_removed) for name, r in changed] == [("one", 2)]
    assert app.documents.roots("one") == [] and app.sync() == []
