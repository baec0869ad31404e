"""Settings in tabs: the model (file, threads, GPU layers, context, sampling), documents, voice and tools."""

from __future__ import annotations

import os
from dataclasses import asdict

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from assistant.config import Settings
from assistant.errors import AssistantError
from assistant.ui.tasks import TaskRunner


class SettingsDialog(QDialog):
    def __init__(self, settings: Settings, tasks: TaskRunner, default_model: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.setMinimumWidth(560)
        self.result_settings: Settings | None = None
        self._tasks = tasks
        self._default_model = default_model
        form = QFormLayout()

        self.model_path = QLineEdit(settings.model_path)
        self.model_path.setPlaceholderText(f"Default: {default_model or 'the embedded SmolLM2-135M-Instruct'}")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.model_path, 1)
        row.addWidget(browse)
        form.addRow("Model file (GGUF)", row)
        self.model_info = QLabel("")
        self.model_info.setWordWrap(True)
        self.model_info.setObjectName("modelInfo")
        form.addRow("", self.model_info)
        self.model_path.editingFinished.connect(self._show_info)

        self.n_threads = _spin(0, 512, settings.n_threads, "0 = one per physical core")
        form.addRow("Threads", self.n_threads)
        self.n_gpu_layers = _spin(-1, 999, settings.n_gpu_layers, "-1 = all layers, 0 = CPU only")
        form.addRow("GPU layers", self.n_gpu_layers)
        self.n_ctx = _spin(128, 1_048_576, settings.n_ctx, "tokens the model sees at once")
        self.n_ctx.setSingleStep(512)
        form.addRow("Context size", self.n_ctx)
        # What this model at this context needs, against what is free: the load is checked the same way.
        self.fit_info = QLabel("")
        self.fit_info.setObjectName("fitInfo")
        self.fit_info.setWordWrap(True)
        form.addRow("", self.fit_info)
        self._info = None
        self.n_ctx.valueChanged.connect(self._show_fit)
        self.n_gpu_layers.valueChanged.connect(self._show_fit)
        self.flash_attn = QCheckBox("Flash attention")
        self.flash_attn.setChecked(settings.flash_attn)
        form.addRow("", self.flash_attn)
        self.temperature = _dspin(0.0, 5.0, settings.temperature, 0.05)
        form.addRow("Temperature", self.temperature)
        self.top_p = _dspin(0.01, 1.0, settings.top_p, 0.01)
        form.addRow("Top-p", self.top_p)
        self.max_tokens = _spin(1, 1_048_576, settings.max_tokens, "longest answer, in tokens")
        form.addRow("Max tokens", self.max_tokens)
        self.system_prompt = QPlainTextEdit(settings.system_prompt)
        self.system_prompt.setFixedHeight(80)
        form.addRow("System prompt", self.system_prompt)
        self.thinking = QCheckBox("Let reasoning models think before answering (slower, often better)")
        self.thinking.setChecked(settings.thinking)
        self.thinking.setToolTip("Models such as Qwen3 can answer without thinking when their template allows it.")
        form.addRow("", self.thinking)
        self.export_thinking = QCheckBox("Include a model's thinking in exported chats")
        self.export_thinking.setChecked(settings.export_thinking)
        form.addRow("", self.export_thinking)
        self.model_folders = QLineEdit(settings.model_folders)
        self.model_folders.setPlaceholderText("More folders to look for GGUF models in")
        self.model_folders.setToolTip("Searched by File ▸ Model library… beside Ollama's, LM Studio's and the "
                                      f"Hugging Face cache's folders. Separate folders with '{os.pathsep}'.")
        form.addRow("Model folders", self.model_folders)
        self.theme = QComboBox()
        self.theme.addItems(["system", "light", "dark"])
        self.theme.setCurrentText(settings.theme)
        form.addRow("Theme", self.theme)

        # Answers from documents.
        model_form, form = form, QFormLayout()
        documents_form = form
        self.top_k = _spin(1, 50, settings.top_k, "passages from your documents given to the model")
        form.addRow("Passages per answer", self.top_k)
        self.search_mode = QComboBox()
        self.search_mode.addItems(["hybrid", "dense", "keyword"])
        self.search_mode.setCurrentText(settings.search_mode)
        self.search_mode.setToolTip("hybrid: words and meaning together (best on the benchmark); dense: meaning; keyword: words")
        form.addRow("Document search", self.search_mode)
        self.min_similarity = _dspin(-1.0, 1.0, settings.min_similarity, 0.05)
        self.min_similarity.setToolTip("passages less similar to the question than this are left out")
        form.addRow("Minimum similarity", self.min_similarity)
        self.diversity = _dspin(0.0, 0.95, settings.diversity, 0.05)
        self.diversity.setToolTip("0: best-scoring passages only; higher: passages that say different things")
        form.addRow("Passage diversity", self.diversity)
        self.passage_neighbours = _spin(0, 5, settings.passage_neighbours,
                                        "chunks either side of each passage, while they fit the context")
        form.addRow("Surrounding chunks", self.passage_neighbours)
        self.grounding_threshold = _dspin(0.0, 0.95, settings.grounding_threshold, 0.05)
        self.grounding_threshold.setToolTip(
            "Before answering from documents, the model says whether the passages answer the question; its 'yes', "
            "weighed with how many of the question's words the passages hold and how close the best one is, must "
            "reach this, or the app says your documents don't say. 0 turns the check off. Models too small to "
            "judge (found by a short self-test) are never asked.")
        form.addRow("Say \"not in your documents\" below", self.grounding_threshold)
        self.watch_folders = QCheckBox("Watch added folders and re-index what changes")
        self.watch_folders.setChecked(settings.watch_folders)
        form.addRow("", self.watch_folders)

        # Voice.
        voice_form = QFormLayout()
        self.microphone = QComboBox()
        self.microphone.addItem("System default", "")
        for name in _microphones():
            self.microphone.addItem(name, name)
        if settings.microphone and self.microphone.findData(settings.microphone) < 0:
            self.microphone.addItem(f"{settings.microphone} (not connected)", settings.microphone)
        self.microphone.setCurrentIndex(max(0, self.microphone.findData(settings.microphone)))
        voice_form.addRow("Microphone", self.microphone)
        self.speech_model = QComboBox()
        self.speech_model.setEditable(True)
        self.speech_model.addItem("tiny.en", "tiny.en")
        self.speech_model.addItem("base", "base")
        self.speech_model.setItemData(0, "Whisper tiny.en: English only, fastest (75 MB)", Qt.ToolTipRole)
        self.speech_model.setItemData(1, "Whisper base: about 100 languages, detected; slower (145 MB)", Qt.ToolTipRole)
        self.speech_model.setCurrentText(settings.speech_model)
        self.speech_model.setToolTip("tiny.en (English, fastest), base (multilingual), or a CTranslate2 Whisper folder")
        speech_browse = QPushButton("Folder…")
        speech_browse.clicked.connect(self._browse_speech)
        speech_row = QHBoxLayout()
        speech_row.addWidget(self.speech_model, 1)
        speech_row.addWidget(speech_browse)
        voice_form.addRow("Speech model", speech_row)
        self.speech_language = QLineEdit(settings.speech_language)
        self.speech_language.setPlaceholderText("detect it (base); tiny.en is English only")
        self.speech_language.setToolTip("a language code such as en, fr or de, or empty to detect it")
        voice_form.addRow("Language", self.speech_language)
        self.voice_auto_send = QCheckBox("Send a spoken question as soon as it is written down")
        self.voice_auto_send.setChecked(settings.voice_auto_send)
        voice_form.addRow("", self.voice_auto_send)
        self.index_transcripts = QCheckBox("Index the transcript of a dropped recording, so answers can cite it")
        self.index_transcripts.setChecked(settings.index_transcripts)
        voice_form.addRow("", self.index_transcripts)
        hint = QLabel("Hold the Hold to talk button, or F2, while you speak. Recordings up to a minute go into "
                      "the input box; longer ones are saved as a transcript. Nothing leaves this computer.")
        hint.setWordWrap(True)
        voice_form.addRow(hint)

        # Tools.
        from assistant.agent.tools import TOOLS

        tools_form = QFormLayout()
        off = {t.strip() for t in settings.tools_disabled.split(",") if t.strip()}
        self.tool_boxes: dict[str, QCheckBox] = {}
        for n, (name, tool) in enumerate(TOOLS.items()):
            box = QCheckBox(f"{name}: {tool.description}")
            box.setChecked(name not in off)
            self.tool_boxes[name] = box
            tools_form.addRow("Tools the agent may use" if n == 0 else "", box)
        self.confirm_code = QCheckBox("Ask before running any program (always asked when there is no OS sandbox)")
        self.confirm_code.setChecked(settings.confirm_code)
        tools_form.addRow("", self.confirm_code)
        self.tool_format = QComboBox()
        self.tool_format.addItem("ReAct steps (any model)", "react")
        self.tool_format.addItem("The model's own tool calls (Qwen2.5, Hermes…)", "native")
        self.tool_format.setCurrentIndex(max(0, self.tool_format.findData(settings.tool_format)))
        self.tool_format.setToolTip("Small models follow ReAct steps better; larger ones trained for tool calls may do "
                                    "better in their own format. Models without one always use ReAct.")
        tools_form.addRow("Tool-call format", self.tool_format)
        self.sandbox_wall_s = _dspin(0.5, 3600.0, settings.sandbox_wall_s, 1.0)
        tools_form.addRow("Program time limit (s)", self.sandbox_wall_s)
        self.sandbox_cpu_s = _spin(1, 3600, settings.sandbox_cpu_s, "CPU seconds a program may use")
        tools_form.addRow("Program CPU limit (s)", self.sandbox_cpu_s)
        self.sandbox_memory_mb = _spin(64, 65536, settings.sandbox_memory_mb, "memory a program may use, in MB")
        tools_form.addRow("Program memory (MB)", self.sandbox_memory_mb)

        # Where the model runs, and the API other programs may use.
        server_form = QFormLayout()
        self.engine = QComboBox()
        self.engine.addItem("This computer (the GGUF model file on the Model tab)", "local")
        self.engine.addItem("A server I run (OpenAI-compatible: llama.cpp, vLLM, Ollama…)", "remote")
        self.engine.setCurrentIndex(max(0, self.engine.findData(settings.engine)))
        self.engine.setToolTip("For models too big for this computer: chat, documents, memory, tools and voice work the "
                               "same; your documents' index and speech recognition stay here.")
        server_form.addRow("The model runs on", self.engine)
        self.remote_url = QLineEdit(settings.remote_url)
        self.remote_url.setPlaceholderText("http://127.0.0.1:8080/v1")
        server_form.addRow("Server address", self.remote_url)
        self.remote_model = QLineEdit(settings.remote_model)
        self.remote_model.setPlaceholderText("empty: the server's first model")
        server_form.addRow("Model name", self.remote_model)
        self.remote_api_key = QLineEdit(settings.remote_api_key)
        self.remote_api_key.setEchoMode(QLineEdit.PasswordEchoOnEdit)
        server_form.addRow("Server's API key", self.remote_api_key)
        self.api_enabled = QCheckBox("Serve an OpenAI-compatible API to other programs on this computer")
        self.api_enabled.setChecked(settings.api_enabled)
        self.api_enabled.setToolTip("http://127.0.0.1:PORT/v1: /v1/chat/completions (with \"collection\" for cited "
                                    "answers from your documents), /v1/embeddings, /v1/models. Only this computer "
                                    "can reach it.")
        server_form.addRow("", self.api_enabled)
        self.api_port = _spin(1, 65535, settings.api_port, "the port on 127.0.0.1")
        server_form.addRow("API port", self.api_port)
        self.api_key = QLineEdit(settings.api_key)
        self.api_key.setEchoMode(QLineEdit.PasswordEchoOnEdit)
        self.api_key.setPlaceholderText("empty: no key needed (this computer only)")
        server_form.addRow("API key", self.api_key)
        self.api_allowed_origins = QLineEdit(settings.api_allowed_origins)
        self.api_allowed_origins.setPlaceholderText("none: only pages on localhost may call the API")
        self.api_allowed_origins.setToolTip(
            "Web pages that may call the API from your browser, as http://host:port (null: a page opened from a "
            "file). Any other site is refused, so a page you visit cannot read your documents through the API.")
        server_form.addRow("Web pages allowed", self.api_allowed_origins)

        self.tabs = QTabWidget()
        for title, tab_form in (("Model", model_form), ("Documents", documents_form), ("Voice", voice_form),
                                ("Tools", tools_form), ("Server", server_form)):
            page = QWidget()
            page.setLayout(tab_form)
            self.tabs.addTab(page, title)

        self.error = QLabel("")
        self.error.setObjectName("settingsError")
        self.error.setStyleSheet("color: #c0392b;")
        self.error.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs)
        layout.addWidget(self.error)
        layout.addWidget(buttons)
        self._base = settings
        self._show_info()

    def values(self) -> dict:
        values = asdict(self._base)
        values.update(
            model_path=self.model_path.text().strip(), n_threads=self.n_threads.value(),
            n_gpu_layers=self.n_gpu_layers.value(), n_ctx=self.n_ctx.value(), flash_attn=self.flash_attn.isChecked(),
            temperature=self.temperature.value(), top_p=self.top_p.value(), max_tokens=self.max_tokens.value(),
            system_prompt=self.system_prompt.toPlainText(), theme=self.theme.currentText(),
            thinking=self.thinking.isChecked(), export_thinking=self.export_thinking.isChecked(),
            model_folders=self.model_folders.text().strip(),
            top_k=self.top_k.value(), search_mode=self.search_mode.currentText(),
            min_similarity=self.min_similarity.value(), diversity=self.diversity.value(),
            passage_neighbours=self.passage_neighbours.value(), watch_folders=self.watch_folders.isChecked(),
            grounding_threshold=self.grounding_threshold.value(),
            microphone=self.microphone.currentData() or "", speech_model=self.speech_model.currentText().strip(),
            speech_language=self.speech_language.text().strip().lower(), voice_auto_send=self.voice_auto_send.isChecked(),
            index_transcripts=self.index_transcripts.isChecked(),
            tools_disabled=",".join(name for name, box in self.tool_boxes.items() if not box.isChecked()),
            confirm_code=self.confirm_code.isChecked(), tool_format=self.tool_format.currentData(),
            sandbox_wall_s=self.sandbox_wall_s.value(),
            sandbox_cpu_s=self.sandbox_cpu_s.value(), sandbox_memory_mb=self.sandbox_memory_mb.value(),
            engine=self.engine.currentData(), remote_url=self.remote_url.text().strip(),
            remote_model=self.remote_model.text().strip(), remote_api_key=self.remote_api_key.text().strip(),
            api_enabled=self.api_enabled.isChecked(), api_port=self.api_port.value(), api_key=self.api_key.text().strip(),
            api_allowed_origins=self.api_allowed_origins.text().strip(),
        )
        return values

    def accept(self) -> None:
        try:
            self.result_settings = Settings.from_dict(self.values())
        except AssistantError as exc:
            self.error.setText(str(exc))
            return
        super().accept()

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a GGUF model", "", "GGUF models (*.gguf);;All files (*)")
        if path:
            self.model_path.setText(path)
            self._show_info()

    def _browse_speech(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a Whisper model folder (CTranslate2: model.bin, config.json…)")
        if folder:
            self.speech_model.setCurrentText(folder)

    def _show_info(self) -> None:
        path = self.model_path.text().strip() or self._default_model
        if not path:
            self.model_info.setText("")
            return
        self.model_info.setText("Reading model metadata…")

        def read():
            from assistant.config import data_dir
            from assistant.llm.gguf_info import read_model_info

            return read_model_info(path, cache_dir=data_dir())

        def show(info) -> None:
            self.model_info.setText(info.summary())
            self._info = info
            self._show_fit()

        def failed(exc: Exception) -> None:
            self.model_info.setText(str(exc))
            self._info = None
            self.fit_info.setText("")

        self._tasks.submit(read, show, failed)

    def _show_fit(self) -> None:
        info, ctx, gpu = self._info, self.n_ctx.value(), self.n_gpu_layers.value()
        if info is None:
            return

        def check():
            from assistant.llm.hardware import check_fit

            return check_fit(info, ctx, gpu)

        def show(fit) -> None:
            if (ctx, gpu) != (self.n_ctx.value(), self.n_gpu_layers.value()):
                return  # the user changed it again meanwhile; that check will answer
            from assistant.llm.hardware import format_size

            free = f"; {format_size(fit.ram_available)} free" if fit.ram_available else ""
            gpu_part = f", {format_size(fit.need.on_gpu)} of it on the GPU" if fit.need.on_gpu else ""
            self.fit_info.setText(f"Needs about {format_size(fit.need.total)} at this context{gpu_part}{free}." if fit.ok
                                  else "⚠ " + fit.message)

        self._tasks.submit(check, show, lambda exc: self.fit_info.setText(""))


def _microphones() -> list[str]:
    from PySide6.QtMultimedia import QMediaDevices

    return [d.description() for d in QMediaDevices.audioInputs()]


def _spin(low: int, high: int, value: int, tip: str) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setValue(max(low, min(high, value)))
    box.setToolTip(tip)
    return box


def _dspin(low: float, high: float, value: float, step: float) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(low, high)
    box.setDecimals(2)
    box.setSingleStep(step)
    box.setValue(value)
    return box
