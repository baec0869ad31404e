"""Open a cited PDF at its page in the user's own PDF viewer, where that viewer can be told a page.

There is no portable "open at page": file URLs with #page=N are ignored by most desktop viewers. So the
user's default PDF application is looked up (freedesktop mimeapps.list, as xdg-mime does, without
spawning it) and, if it is one whose command line takes a page, it is started with it. Anything else
(another viewer, macOS, Windows) gets the plain "open this file" of the platform, done by the caller.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

# Desktop file -> (executable, arguments before the file, given the 1-based page).
PAGE_VIEWERS = {
    "org.gnome.Evince.desktop": ("evince", lambda p: [f"--page-index={p}"]),
    "evince.desktop": ("evince", lambda p: [f"--page-index={p}"]),
    "org.kde.okular.desktop": ("okular", lambda p: ["-p", str(p)]),
    "okularApplication_pdf.desktop": ("okular", lambda p: ["-p", str(p)]),
    "org.pwmt.zathura.desktop": ("zathura", lambda p: ["-P", str(p)]),
    "org.pwmt.zathura-pdf-mupdf.desktop": ("zathura", lambda p: ["-P", str(p)]),
    "org.pwmt.zathura-pdf-poppler.desktop": ("zathura", lambda p: ["-P", str(p)]),
    "atril.desktop": ("atril", lambda p: [f"--page-index={p}"]),
    "xreader.desktop": ("xreader", lambda p: [f"--page-index={p}"]),
    "org.gnome.Papers.desktop": ("papers", lambda p: [f"--page-index={p}"]),
}


def default_pdf_app() -> str | None:
    """The desktop file of the default application for PDFs, read from mimeapps.list the way xdg-mime does."""
    home = Path.home()
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    config_dirs = [Path(d) for d in (os.environ.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(":") if d]
    data_home = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    data_dirs = [Path(d) for d in (os.environ.get("XDG_DATA_DIRS") or "/usr/local/share:/usr/share").split(":") if d]
    candidates = [config_home / "mimeapps.list", *(d / "mimeapps.list" for d in config_dirs),
                  data_home / "applications" / "mimeapps.list",
                  *(d / "applications" / name for d in data_dirs for name in ("mimeapps.list", "defaults.list"))]
    for path in candidates:
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        try:
            parser.read(path, encoding="utf-8")
        except (OSError, configparser.Error, UnicodeDecodeError):
            continue
        for section in ("Default Applications", "Added Associations"):
            value = parser.get(section, "application/pdf", fallback="")
            apps = [a for a in value.split(";") if a.strip()]
            if apps:
                return apps[0].strip()
    return None


def page_command(file: str, page: int | None) -> list[str] | None:
    """The command that opens file at page in the default PDF viewer, or None when that cannot be done."""
    if not page or not file.lower().endswith(".pdf") or not sys.platform.startswith("linux"):
        return None
    known = PAGE_VIEWERS.get(default_pdf_app() or "")
    if known is None:
        return None
    executable = shutil.which(known[0])
    if executable is None:
        return None
    return [executable, *known[1](int(page)), file]


def open_at_page(file: str, page: int | None) -> bool:
    """Start the viewer at the page (not waiting for it); False when the caller should open the file plainly."""
    command = page_command(file, page)
    if command is None:
        return False
    try:
        subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    except OSError:
        return False
    return True
