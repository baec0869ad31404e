"""Help ▸ About: name, version, where the user's data lives, and the licences of what ships inside."""

from __future__ import annotations

import html
import platform
from pathlib import Path

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices, QIcon
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QHBoxLayout, QLabel, QTextBrowser, QVBoxLayout

from assistant import __version__

# What the app bundles: (component, what it is, licence, where it comes from).
MODELS = [
    ("SmolLM2-135M-Instruct", "the default chat model (GGUF)", "Apache-2.0", "Hugging Face TB"),
    ("all-MiniLM-L6-v2", "the document search embeddings", "Apache-2.0", "sentence-transformers"),
    ("Whisper tiny.en and base", "voice input, converted for faster-whisper", "MIT", "OpenAI; SYSTRAN"),
]
LIBRARIES = [
    ("llama.cpp and llama-cpp-python", "MIT"), ("Qt 6 and PySide6", "LGPL-3.0"),
    ("FFmpeg (through Qt Multimedia)", "LGPL-2.1"), ("FAISS", "MIT"), ("sentence-transformers", "Apache-2.0"),
    ("PyTorch", "BSD-3-Clause"), ("Hugging Face transformers and tokenizers", "Apache-2.0"),
    ("faster-whisper and CTranslate2", "MIT"), ("pypdf", "BSD-3-Clause"), ("gguf", "MIT"),
    ("platformdirs", "MIT"), ("Jinja2", "BSD-3-Clause"), ("bubblewrap (the sandbox, where installed)", "LGPL-2.0+"),
]


class AboutDialog(QDialog):
    def __init__(self, folders: dict[str, Path], model: tuple[str, str | None] | None, parent=None) -> None:
        """folders: label -> path shown with an Open link; model: (name, licence) of the loaded model."""
        super().__init__(parent)
        self.setWindowTitle("About Assistant")
        self.resize(620, 560)
        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        icon = QLabel()
        icon.setPixmap(QIcon(self.windowIcon()).pixmap(64, 64))
        top.addWidget(icon, 0, Qt.AlignTop)
        heading = QLabel(
            f"<h2>Assistant {__version__}</h2><p>A private assistant: the model, your documents' index and voice "
            "all run on this computer. Nothing you type, say or drop leaves it, and it needs no account and no "
            f"network.</p><p>Python {platform.python_version()} on {html.escape(platform.platform(terse=True))}</p>")
        heading.setWordWrap(True)
        top.addWidget(heading, 1)
        layout.addLayout(top)

        self.text = QTextBrowser()
        self.text.setObjectName("licences")
        self.text.setOpenLinks(False)
        self.text.anchorClicked.connect(lambda url: QDesktopServices.openUrl(url))
        self.text.setHtml(self._html(folders, model))
        layout.addWidget(self.text, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        buttons.rejected.connect(self.reject)
        buttons.accepted.connect(self.accept)
        layout.addWidget(buttons)

    @staticmethod
    def _html(folders: dict[str, Path], model: tuple[str, str | None] | None) -> str:
        parts = ["<h3>Your data</h3><table>"]
        for label, path in folders.items():
            url = QUrl.fromLocalFile(str(path)).toString()
            parts.append(f"<tr><td>{html.escape(label)}&nbsp;</td><td>{html.escape(str(path))} "
                         f'(<a href="{url}">open</a>)</td></tr>')
        parts.append("</table>")
        if model is not None:
            name, licence = model
            parts.append(f"<h3>The model in use</h3><p>{html.escape(name)}: licence "
                         f"{html.escape(licence or 'not stated in the file; see where it came from')}.</p>")
        parts.append("<h3>Bundled models</h3><table>")
        for name, what, licence, source in MODELS:
            parts.append(f"<tr><td><b>{name}</b>&nbsp;</td><td>{what}&nbsp;</td><td>{licence}&nbsp;</td>"
                         f"<td>{source}</td></tr>")
        parts.append("</table><h3>Open-source software inside</h3><table>")
        for name, licence in LIBRARIES:
            parts.append(f"<tr><td>{name}&nbsp;</td><td>{licence}</td></tr>")
        parts.append("</table><p>Each licence's full text ships with its package. Qt and FFmpeg are used as "
                     "shared libraries, as the LGPL allows; you may replace them.</p>")
        return "".join(parts)
