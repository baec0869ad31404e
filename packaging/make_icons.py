"""Render resources/assistant.svg into the icons the packages use.

    QT_QPA_PLATFORM=offscreen .venv/bin/python packaging/make_icons.py

writes resources/icons/assistant-<N>.png for N in SIZES (the hicolor theme sizes that
install_desktop.sh installs, and the window icon set) and resources/assistant.ico (Windows:
one file holding 16 to 256 px, each as PNG, which Windows Vista and later read).
The outputs are committed; run this again only when the SVG changes.

    make_icons.py --iconset DIR      (on a Mac, for the .app's icon; see packaging/README.md)

writes DIR (name it something.iconset) with the file names macOS's iconutil expects, 16 to 1024 px;
`iconutil -c icns DIR -o resources/assistant.icns` then makes the .icns the spec uses on macOS.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt  # noqa: E402
from PySide6.QtGui import QGuiApplication, QImage, QPainter  # noqa: E402
from PySide6.QtSvg import QSvgRenderer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SVG = ROOT / "resources" / "assistant.svg"
ICONS = ROOT / "resources" / "icons"
ICO = ROOT / "resources" / "assistant.ico"
SIZES = (16, 32, 48, 64, 128, 256, 512)
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)  # 256 is the largest an .ico entry can describe


def render(renderer: QSvgRenderer, size: int) -> QImage:
    image = QImage(size, size, QImage.Format_ARGB32_Premultiplied)
    image.fill(Qt.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.Antialiasing)
    painter.setRenderHint(QPainter.SmoothPixmapTransform)
    renderer.render(painter)
    painter.end()
    return image.convertToFormat(QImage.Format_ARGB32)


def png_bytes(image: QImage) -> bytes:
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.WriteOnly)
    if not image.save(buffer, "PNG"):
        raise RuntimeError("PNG encoding failed")
    buffer.close()
    return bytes(data)


def ico_bytes(images: dict[int, bytes]) -> bytes:
    """An ICO file whose entries are PNG streams (ICONDIR, ICONDIRENTRY per image, then the data)."""
    header = struct.pack("<HHH", 0, 1, len(images))
    entries, blobs = b"", b""
    offset = 6 + 16 * len(images)
    for size, blob in sorted(images.items()):
        side = 0 if size >= 256 else size  # 0 means 256
        entries += struct.pack("<BBBBHHII", side, side, 0, 0, 1, 32, len(blob), offset)
        blobs += blob
        offset += len(blob)
    return header + entries + blobs


def iconset(renderer: QSvgRenderer, folder: Path) -> None:
    """icon_NxN.png and icon_NxN@2x.png for N in 16, 32, 128, 256, 512: what iconutil reads."""
    folder.mkdir(parents=True, exist_ok=True)
    for side in (16, 32, 128, 256, 512):
        (folder / f"icon_{side}x{side}.png").write_bytes(png_bytes(render(renderer, side)))
        (folder / f"icon_{side}x{side}@2x.png").write_bytes(png_bytes(render(renderer, 2 * side)))
    print(folder)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])  # noqa: F841 (QPainter needs it)
    renderer = QSvgRenderer(str(SVG))
    if not renderer.isValid():
        print(f"make_icons: cannot read {SVG}", file=sys.stderr)
        return 1
    if argv[:1] == ["--iconset"] and len(argv) == 2:
        iconset(renderer, Path(argv[1]))
        return 0
    if argv:
        print("usage: make_icons.py [--iconset DIR]", file=sys.stderr)
        return 2
    ICONS.mkdir(parents=True, exist_ok=True)
    for size in SIZES:
        out = ICONS / f"assistant-{size}.png"
        out.write_bytes(png_bytes(render(renderer, size)))
        print(out.relative_to(ROOT))
    ICO.write_bytes(ico_bytes({size: png_bytes(render(renderer, size)) for size in ICO_SIZES}))
    print(ICO.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
