"""The conversation: a scrolling column of message bubbles rendered from Markdown."""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from assistant import markdown
from assistant.rag.grounding import SUPPORTED
from assistant.viewer import open_at_page

ROLE_NAMES = {"user": "You", "assistant": "Assistant", "notice": "Note", "error": "Problem"}



def judged_html(judged: dict) -> str:
    """The inspector's account of "do these passages answer the question?": the verdict and what it was made of."""
    verdict = "they do" if judged["answerable"] else "they do not, so no answer was written from them"
    score = judged.get("score", judged["probability"])
    parts = [f"the model said yes {judged['probability']:.0%}"]
    if judged.get("coverage") is not None:
        words = f"{judged['coverage']:.0%} of the question's words are in them"
        if judged.get("missing"):
            words += " (not: " + html.escape(", ".join(judged["missing"][:8])) + ")"
        parts.append(words)
        if judged.get("similarity") is not None:
            parts.append(f"the closest is {judged['similarity']:.2f} similar to it")
    return (f"<p><b>Do these passages answer the question?</b> {verdict}: {score:.0%}, needed "
            f"{judged['threshold']:.0%}. Asked before answering, {'; '.join(parts)}.</p>")

class MessageBubble(QFrame):
    editRequested = Signal(object)  # the bubble
    wholeRequested = Signal(str)  # answer again from the whole of this file
    generalRequested = Signal(object)  # the bubble: its documents don't say, answer again from general knowledge

    def __init__(self, role: str, text: str = "", message_id: int | None = None, dark: bool = False) -> None:
        super().__init__()
        self.role, self.text, self.message_id, self.dark = role, text, message_id, dark
        self.setObjectName(f"bubble_{role}")
        self.setFrameShape(QFrame.StyledPanel)
        self.setStyleSheet(_bubble_style(role, dark))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 6, 10, 8)
        header = QHBoxLayout()
        self.title = QLabel(f"<b>{ROLE_NAMES.get(role, role)}</b>")
        header.addWidget(self.title)
        header.addStretch(1)
        self.meta = QLabel("")
        self.meta.setObjectName("meta")
        header.addWidget(self.meta)
        if role in ("user", "assistant"):
            copy = QPushButton("Copy")
            copy.setFlat(True)
            copy.setToolTip("Copy this message as Markdown")
            copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.text))
            header.addWidget(copy)
        if role == "user":
            self.edit_button = QPushButton("Edit")
            self.edit_button.setFlat(True)
            self.edit_button.setToolTip("Edit this question and send it again")
            self.edit_button.clicked.connect(lambda: self.editRequested.emit(self))
            header.addWidget(self.edit_button)
        layout.addLayout(header)
        # The agent's steps, above its answer: one foldable block each (thought, call, observation).
        self.steps_box = QVBoxLayout()
        self.steps_box.setSpacing(2)
        layout.addLayout(self.steps_box)
        self.steps: list[dict] = []
        # A reasoning model's thinking, folded above its answer: live while it streams, then its duration.
        self.thinking_button = QToolButton()
        self.thinking_button.setObjectName("thinking")
        self.thinking_button.setCheckable(True)
        self.thinking_button.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.thinking_button.setArrowType(Qt.RightArrow)
        self.thinking_button.setAutoRaise(True)
        self.thinking_button.setVisible(False)
        self.thinking_detail = QLabel()
        self.thinking_detail.setObjectName("thinking_detail")
        self.thinking_detail.setWordWrap(True)
        self.thinking_detail.setTextFormat(Qt.RichText)
        self.thinking_detail.setTextInteractionFlags(Qt.TextSelectableByMouse | Qt.TextSelectableByKeyboard)
        self.thinking_detail.setVisible(False)
        self.thinking_button.toggled.connect(self._toggle_thinking)
        layout.addWidget(self.thinking_button)
        layout.addWidget(self.thinking_detail)
        self.reasoning = ""
        self.body = QLabel()
        self.body.setObjectName("body")
        self.body.setWordWrap(True)
        self.body.setTextFormat(Qt.RichText)
        self.body.setTextInteractionFlags(Qt.TextSelectableByMouse | Qt.LinksAccessibleByMouse | Qt.TextSelectableByKeyboard)
        self.body.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)
        self.body.linkActivated.connect(self._on_link)
        layout.addWidget(self.body)
        self.sources_label = QLabel()
        self.sources_label.setObjectName("sources")
        self.sources_label.setWordWrap(True)
        self.sources_label.setTextFormat(Qt.RichText)
        self.sources_label.setVisible(False)
        self.sources_label.linkActivated.connect(self._open_source)
        layout.addWidget(self.sources_label)
        self.memories_label = QLabel()
        self.memories_label.setObjectName("memories")
        self.memories_label.setWordWrap(True)
        self.memories_label.setTextFormat(Qt.RichText)
        self.memories_label.setVisible(False)
        layout.addWidget(self.memories_label)
        self.memories: list[dict] = []
        self.kept: dict | None = None
        self.sources: list[dict] = []
        self.dropped: list[dict] = []
        self.judged: dict | None = None  # the model's yes/no on "do the passages answer this?"
        self.support: list[dict] = []  # each sentence of the answer and how much of it its passages hold
        self.set_text(text)

    def set_text(self, text: str) -> None:
        self.text = text
        if self.role in ("notice", "error"):
            self.body.setText(f"<p>{_escape(text)}</p>")
        elif not text:
            self.body.setText("<p><i>…</i></p>")
        else:
            self.body.setText(markdown.render(_mark_unsupported(text, self.support), self.dark))

    def set_grounding(self, judged: dict | None, support: list[dict]) -> None:
        """How the answer holds to its passages: sentences the passages do not back get a ⚠ in the answer."""
        self.judged, self.support = judged, list(support)
        if self.text:
            self.set_text(self.text)

    def show_general(self) -> None:
        """This answer was asked for from general knowledge: say plainly that the documents are not behind it."""
        self.sources_label.setText('<p style="color:#b06000;"><b>General knowledge: not from your documents.</b> '
                                   "Your documents did not answer this, so the model answered from what it "
                                   "learned in training. Check it before you rely on it.</p>")
        self.sources_label.setVisible(True)

    def set_meta(self, text: str) -> None:
        self.meta.setText(text)

    def set_thinking(self, text: str, seconds: float | None = None) -> None:
        """The model's thinking so far (seconds None: it is still thinking), or all of it and how long it took."""
        self.reasoning = text
        if not text.strip():
            self.thinking_button.setVisible(False)
            return
        self.thinking_button.setVisible(True)
        self.thinking_button.setText("Thinking…" if seconds is None else f"Thought for {_duration(seconds)}")
        self.thinking_button.setToolTip("Show how the model reasoned before answering. It is not part of the answer.")
        self.thinking_detail.setText(f'<p style="color:gray;">{_escape(text.strip())}</p>')
        if seconds is not None and not self.text.strip():
            self.body.setText("<p><i>The model stopped while thinking and wrote no answer. Open the thinking above "
                              "to read it, or ask again with a higher Max tokens (Settings ▸ Model).</i></p>")

    def _toggle_thinking(self, shown: bool) -> None:
        self.thinking_detail.setVisible(shown)
        self.thinking_button.setArrowType(Qt.DownArrow if shown else Qt.RightArrow)

    def ask_to_run(self, tool: str, args: dict, decide) -> None:
        """The program the agent wants to run, with Run and Deny; decide(bool) gets the answer, once."""
        box = QFrame()
        box.setObjectName("confirm")
        column = QVBoxLayout(box)
        column.setContentsMargins(0, 4, 0, 4)
        text = QLabel()
        text.setTextFormat(Qt.RichText)
        text.setWordWrap(True)
        text.setText(f"<p><b>Run this {html.escape(tool)} program?</b></p>"
                     + _step_html({"thought": "", "input": args, "observation": ""}, self.dark).split("<p><b>Observation")[0])
        row = QHBoxLayout()
        run, deny = QPushButton("Run"), QPushButton("Deny")
        run.setObjectName("run")
        deny.setObjectName("deny")
        row.addWidget(run)
        row.addWidget(deny)
        row.addStretch(1)
        column.addWidget(text)
        column.addLayout(row)

        def answer(allowed: bool) -> None:
            box.setParent(None)
            box.deleteLater()
            decide(allowed)

        run.clicked.connect(lambda: answer(True))
        deny.clicked.connect(lambda: answer(False))
        self.steps_box.addWidget(box)

    def add_step(self, step: dict) -> None:
        """A tool call the agent made: folded to one line (tool and thought); a click shows input and result."""
        self.steps.append(step)
        n = len(self.steps)
        header = QToolButton()
        header.setObjectName("step")
        header.setCheckable(True)
        header.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        header.setArrowType(Qt.RightArrow)
        header.setAutoRaise(True)
        state = " (refused)" if step.get("refused") else ""
        header.setText(f"Step {n} · {step['tool']}{state} · {step['thought'][:90]}")
        detail = QLabel()
        detail.setObjectName("step_detail")
        detail.setWordWrap(True)
        detail.setTextFormat(Qt.RichText)
        detail.setTextInteractionFlags(Qt.TextSelectableByMouse | Qt.TextSelectableByKeyboard)
        detail.setText(_step_html(step, self.dark))
        detail.setVisible(False)

        def toggle(shown: bool) -> None:
            detail.setVisible(shown)
            header.setArrowType(Qt.DownArrow if shown else Qt.RightArrow)

        header.toggled.connect(toggle)
        self.steps_box.addWidget(header)
        self.steps_box.addWidget(detail)

    def show_sources(self, sources: list[dict], dropped: list[dict] = (), whole_document: str | None = None) -> None:
        """List the passages under the answer: cited ones first and bold; each opens its file (at its page).
        When the best passage's file fits the context whole, offer answering from all of it."""
        from assistant.rag.citations import cited_numbers

        self.sources, self.dropped, self.whole_document = sources, list(dropped), whole_document
        refused = self.judged is not None and not self.judged.get("answerable", True)
        general = ' &nbsp; <a href="general:">Answer from general knowledge</a>' if refused else ""
        if not sources:
            self.sources_label.setText(f'<p><a href="why:">Why no passages?</a>{general}</p>' if dropped or general else "")
            self.sources_label.setVisible(bool(dropped or general))
            return
        cited = cited_numbers(self.text, len(sources))
        order = cited + [s["n"] for s in sources if s["n"] not in cited]
        by_n = {s["n"]: s for s in sources}
        lines = []
        for n in order:
            s = by_n[n]
            place = html.escape(Path(s["file"]).name) + (f", page {s['page']}" if s.get("page") else "")
            snippet = html.escape(" ".join(s["text"].split())[:160])
            label = f'<a href="open:{n}">[{n}] {place}</a>'
            lines.append(f"<b>{label}</b> — {snippet}…" if n in cited else f'{label} <span style="color:gray;">— {snippet}…</span>')
        title = ("Passages found (none answers the question)" if refused else
                 "Sources" if cited else "Passages given to the model (none cited)")
        whole = f' &nbsp; <a href="whole:">Answer from the whole of {html.escape(Path(whole_document).name)}</a>' \
            if whole_document else ""
        weak = sum(1 for x in self.support if x["score"] is not None and x["score"] < SUPPORTED)
        legend = (f'<br><span style="color:#b06000;">⚠ {weak} sentence{"s" if weak > 1 else ""} of this answer '
                  "use mostly words its passages do not have: check "
                  f'{"them" if weak > 1 else "it"} (Why these? shows which).</span>') if weak else ""
        self.sources_label.setText(f'<p><b>{title}</b> &nbsp; <a href="why:">Why these?</a>{general}{whole}{legend}<br>'
                                   + "<br>".join(lines) + "</p>")
        self.sources_label.setVisible(True)

    def show_memories(self, memories: list[dict], kept: dict | None = None) -> None:
        """What long-term memory put beside the question, so the user sees why the answer knows it, and the
        fact the question asked to keep (kept: {"fact", "key"})."""
        from datetime import datetime

        self.memories = list(memories)
        self.kept = kept
        parts = []
        if kept:
            parts.append(f"<b>✓ Kept in memory:</b> {html.escape(kept['fact'])} (Chat ▸ Memory… to forget it)")
        if memories:
            lines = []
            for m in memories:
                where = f"chat {m['chat_id']}" if m.get("chat_id") else "you told me"
                text = html.escape(" ".join(m["text"].split())[:160])
                lines.append(f"{datetime.fromtimestamp(m['when']):%d %b %Y}, {where}: {text}")
            parts.append("<b>Remembered</b> (Chat ▸ Memory… to manage)<br>" + "<br>".join(lines))
        self.memories_label.setText('<p style="color:gray;">' + "<br>".join(parts) + "</p>")
        self.memories_label.setVisible(bool(parts))

    def _open_source(self, href: str) -> None:
        from PySide6.QtCore import QUrl
        from PySide6.QtGui import QDesktopServices

        if href == "why:":
            self._inspect()
            return
        if href == "general:":
            self.generalRequested.emit(self)
            return
        if href == "whole:":
            if self.whole_document:
                self.wholeRequested.emit(self.whole_document)
            return
        n = int(href.split(":", 1)[1])
        source = next((s for s in self.sources if s["n"] == n), None)
        if source is not None and not open_at_page(source["file"], source.get("page")):
            QDesktopServices.openUrl(QUrl.fromLocalFile(source["file"]))

    def _inspect(self) -> None:
        from PySide6.QtWidgets import QMessageBox

        QMessageBox.information(self, "Why these passages", self.inspector_html())

    def inspector_html(self) -> str:
        """The retrieval inspector: which search found each passage, why it was kept or dropped, whether the
        passages answer the question, and how much of each sentence of the answer its passages hold."""
        rows = []
        for s in [*self.sources, *self.dropped]:
            place = html.escape(Path(s["file"]).name) + (f", page {s['page']}" if s.get("page") else "")
            label = f"[{s['n']}]" if s["n"] else "dropped"
            reasons = html.escape("; ".join(s.get("why", [])))
            rows.append(f"<tr><td>{label}</td><td>{place}</td><td>{reasons}</td></tr>")
        judged = ""
        if self.judged is not None and not self.sources:
            judged = "<p>No passage was about the question, so the model was not asked to answer from them.</p>"
        elif self.judged is not None:
            judged = judged_html(self.judged)
        support = ""
        if self.support:
            lines = []
            for x in self.support:
                if x["score"] is None:
                    score = "too short to check"
                else:
                    score = f"{x['score']:.0%} of its words in {'passage ' + ', '.join(map(str, x['cites'])) if x['cites'] else 'the passages'}"
                    if x["missing"]:
                        score += " · not there: " + html.escape(", ".join(x["missing"][:8]))
                flag = "⚠ " if x["score"] is not None and x["score"] < SUPPORTED else ""
                lines.append(f"<tr><td>{flag}{html.escape(x['text'][:140])}</td><td>{score}</td></tr>")
            support = ("<p><b>Each sentence against its passages</b></p>"
                       f"<table cellspacing='6'>{''.join(lines)}</table>")
        return ("<p>Each passage was found by keyword search, meaning (embedding) search or both, then ranked by "
                f"a blend of the two.</p><table cellspacing='6'>{''.join(rows)}</table>{judged}{support}")

    def _on_link(self, href: str) -> None:
        if href.startswith("copy:"):
            blocks = markdown.code_blocks(self.text)
            index = int(href.split(":", 1)[1])
            if index < len(blocks):
                QGuiApplication.clipboard().setText(blocks[index])
        else:
            from PySide6.QtCore import QUrl
            from PySide6.QtGui import QDesktopServices

            QDesktopServices.openUrl(QUrl(href))


class ChatView(QScrollArea):
    editRequested = Signal(object)
    wholeRequested = Signal(str)
    generalRequested = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.NoFrame)
        self.dark = False
        container = QWidget()
        self.column = QVBoxLayout(container)
        self.column.setContentsMargins(12, 12, 12, 12)
        self.column.setSpacing(10)
        self.column.addStretch(1)
        self.setWidget(container)
        self.bubbles: list[MessageBubble] = []
        self._streaming: MessageBubble | None = None
        self._sources: list[dict] = []
        self._dropped: list[dict] = []
        self._whole: str | None = None
        self._judged: dict | None = None
        self._support: list[dict] = []
        self._general = False
        self._memories: list[dict] = []
        self._kept: dict | None = None
        self._pending = ""
        self._thinking = ""
        self._thinking_started = 0.0
        # Re-rendering Markdown on every token is wasteful; 25 frames a second reads as smooth.
        self._render_timer = QTimer(self)
        self._render_timer.setInterval(40)
        self._render_timer.setSingleShot(True)
        self._render_timer.timeout.connect(self._flush)
        self.verticalScrollBar().rangeChanged.connect(self._follow)
        self._stick_to_bottom = True

    def clear(self) -> None:
        for bubble in self.bubbles:
            bubble.setParent(None)
            bubble.deleteLater()
        self.bubbles = []
        self._streaming = None

    def add(self, role: str, text: str = "", message_id: int | None = None) -> MessageBubble:
        bubble = MessageBubble(role, text, message_id, self.dark)
        bubble.editRequested.connect(self.editRequested)
        bubble.wholeRequested.connect(self.wholeRequested)
        bubble.generalRequested.connect(self.generalRequested)
        self.column.insertWidget(self.column.count() - 1, bubble)
        self.bubbles.append(bubble)
        self._stick_to_bottom = True
        return bubble

    def begin_answer(self) -> MessageBubble:
        self._streaming = self.add("assistant")
        self._pending = ""
        self._thinking = ""
        return self._streaming

    def append_thinking(self, text: str) -> None:
        """A piece of a reasoning model's thinking, shown folded above the answer as it streams."""
        import time

        if self._streaming is None:
            self.begin_answer()
        if not self._thinking:
            self._thinking_started = time.monotonic()
        self._thinking += text
        if not self._render_timer.isActive():
            self._render_timer.start()

    def append_token(self, text: str) -> None:
        if self._streaming is None:
            self.begin_answer()
        self._pending += text
        if not self._render_timer.isActive():
            self._render_timer.start()

    def end_answer(self, meta: str = "", thinking_seconds: float | None = None) -> MessageBubble | None:
        import time

        self._flush()
        bubble, self._streaming = self._streaming, None
        if bubble is not None and self._thinking:
            if thinking_seconds is None:  # stopped or failed: how long it had thought
                thinking_seconds = time.monotonic() - self._thinking_started
            bubble.set_thinking(self._thinking, thinking_seconds)
        self._thinking = ""
        if bubble is not None and meta:
            bubble.set_meta(meta)
        if bubble is not None and (self._judged or self._support):
            bubble.set_grounding(self._judged, self._support)
        if bubble is not None and self._general:
            bubble.show_general()
        elif bubble is not None and (self._sources or self._dropped or self._judged):
            bubble.show_sources(self._sources, self._dropped, self._whole)
        if bubble is not None and (self._memories or self._kept):
            bubble.show_memories(self._memories, self._kept)
        self._sources, self._dropped, self._whole, self._memories, self._kept = [], [], None, [], None
        self._judged, self._support, self._general = None, [], False
        return bubble

    def set_recalled(self, event) -> None:
        """The Recalled event of the answer being written: shown under it once it is complete."""
        self._memories = list(event.memories)

    def set_remembered(self, event) -> None:
        """The question told a fact that is now kept: the answer says so."""
        self._kept = {"fact": event.fact, "key": event.key}

    def add_step(self, event) -> None:
        """An AgentStep of the answer being written, shown as it happens."""
        if self._streaming is None:
            self.begin_answer()
        self._streaming.add_step({"thought": event.thought, "tool": event.tool, "input": event.input,
                                  "observation": event.observation, "refused": event.refused})

    def set_sources(self, event) -> None:
        """The Sources event of the answer being written: listed once the answer is complete."""
        from assistant.core import source_dict

        self._sources = [source_dict(s) for s in event.sources]
        self._dropped = [source_dict(s) for s in event.dropped]
        self._whole = event.whole_document

    def expect_general(self) -> None:
        """The next answer is asked for from general knowledge: it is marked so when it is complete."""
        self._general = True

    def set_judged(self, event) -> None:
        """The Judged event of the answer being written (do its passages answer the question?)."""
        self._judged = event.as_dict()

    def set_support(self, event) -> None:
        """The Support event of the answer being written: each sentence against its passages."""
        self._support = [x.as_dict() for x in event.sentences]

    def streaming_bubble(self) -> MessageBubble:
        if self._streaming is None:
            self.begin_answer()
        return self._streaming

    def streaming_text(self) -> str:
        return self._pending if self._streaming is not None else ""

    def remove_from(self, bubble: MessageBubble) -> None:
        """Remove a bubble and all after it (edit-and-resend, regenerate)."""
        index = self.bubbles.index(bubble)
        for b in self.bubbles[index:]:
            b.setParent(None)
            b.deleteLater()
        del self.bubbles[index:]

    def _flush(self) -> None:
        if self._streaming is not None:
            if self._thinking and self._streaming.reasoning != self._thinking:
                self._streaming.set_thinking(self._thinking)
            if self._pending or not self._thinking:
                self._streaming.set_text(self._pending)
            elif not self._pending:
                self._streaming.body.setText("")  # thinking: the folded block says so; no "…" below it

    def _follow(self, _min: int, maximum: int) -> None:
        bar = self.verticalScrollBar()
        if self._stick_to_bottom or bar.value() >= bar.maximum() - 40:
            bar.setValue(maximum)
            self._stick_to_bottom = False


def _mark_unsupported(text: str, support: list[dict]) -> str:
    """The answer with ⚠ after each sentence its passages do not back (the saved text stays as written)."""
    for x in support:
        if x["score"] is not None and x["score"] < SUPPORTED:
            at = text.find(x["text"])
            if at >= 0:
                end = at + len(x["text"])
                text = f"{text[:end]} ⚠{text[end:]}"
    return text


def _bubble_style(role: str, dark: bool) -> str:
    light_colors = {"user": "#e8f0fe", "assistant": "#ffffff", "notice": "#fff8e1", "error": "#fdecea"}
    dark_colors = {"user": "#2c3a52", "assistant": "#26282b", "notice": "#4a3f1c", "error": "#4a2323"}
    color = (dark_colors if dark else light_colors).get(role, "transparent")
    border = "#3c3f44" if dark else "#d0d4da"
    return (f"QFrame#bubble_{role} {{ background: {color}; border: 1px solid {border}; border-radius: 8px; }}"
            " QLabel#meta { color: gray; }")


def _step_html(step: dict, dark: bool) -> str:
    import json

    args = step.get("input") or {}
    if set(args) == {"code"}:
        call = markdown.render(f"```python\n{args['code']}\n```", dark)
    else:
        call = markdown.render(f"```json\n{json.dumps(args, ensure_ascii=False, indent=1)}\n```", dark)
    observation = html.escape(step.get("observation", ""))
    return (f"<p><i>{html.escape(step.get('thought', ''))}</i></p>{call}"
            f"<p><b>Observation</b></p><pre style='white-space: pre-wrap;'>{observation}</pre>")


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60)} s"


def _escape(text: str) -> str:
    import html

    return html.escape(text).replace("\n", "<br>")
