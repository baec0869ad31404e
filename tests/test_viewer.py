"""Opening a cited PDF at its page: the user's default viewer is found in mimeapps.list and given the page."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from assistant.viewer import default_pdf_app, open_at_page, page_command

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="freedesktop viewers are a Linux thing")


@pytest.fixture
def desktop(tmp_path, monkeypatch):
    """An XDG config with a default PDF app, and a PATH holding only our own stand-in executables."""
    config, bin_dir = tmp_path / "config", tmp_path / "bin"
    config.mkdir()
    bin_dir.mkdir()
    for var, value in (("XDG_CONFIG_HOME", config), ("XDG_CONFIG_DIRS", tmp_path / "none"),
                       ("XDG_DATA_HOME", tmp_path / "none"), ("XDG_DATA_DIRS", tmp_path / "none"),
                       ("PATH", bin_dir)):
        monkeypatch.setenv(var, str(value))
    return config, bin_dir


def make_viewer(bin_dir: Path, name: str, log: Path) -> None:
    script = bin_dir / name
    script.write_text(f'#!/bin/sh\necho "$@" > "{log}"\n')
    script.chmod(0o755)


def test_the_default_viewer_is_opened_at_the_page(desktop, tmp_path) -> None:
    config, bin_dir = desktop
    (config / "mimeapps.list").write_text("[Default Applications]\napplication/pdf=org.gnome.Evince.desktop;\n")
    log = tmp_path / "args.txt"
    make_viewer(bin_dir, "evince", log)
    assert default_pdf_app() == "org.gnome.Evince.desktop"
    pdf = str(tmp_path / "manual.pdf")
    assert page_command(pdf, 12) == [str(bin_dir / "evince"), "--page-index=12", pdf]
    assert open_at_page(pdf, 12)
    deadline = time.monotonic() + 10
    while not log.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.read_text().split() == ["--page-index=12", pdf]  # the viewer really ran with the page


def test_okular_and_the_cases_that_fall_back_to_a_plain_open(desktop, tmp_path) -> None:
    config, bin_dir = desktop
    (config / "mimeapps.list").write_text("[Default Applications]\napplication/pdf=org.kde.okular.desktop\n")
    make_viewer(bin_dir, "okular", tmp_path / "log")
    assert page_command("/d/a.pdf", 3) == [str(bin_dir / "okular"), "-p", "3", "/d/a.pdf"]
    assert page_command("/d/a.pdf", None) is None  # no page: the platform's plain open does it
    assert page_command("/d/notes.txt", 3) is None
    os.remove(bin_dir / "okular")
    assert page_command("/d/a.pdf", 3) is None  # the default app is not installed
    (config / "mimeapps.list").write_text("[Default Applications]\napplication/pdf=firefox.desktop\n")
    assert page_command("/d/a.pdf", 3) is None and not open_at_page("/d/a.pdf", 3)  # a viewer we cannot steer
