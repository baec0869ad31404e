"""Settings: model file and its metadata, threads, GPU layers, context, sampling, system prompt."""

from __future__ import annotations

from dataclasses import asdict

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
        self.theme = QComboBox()
        self.theme.addItems(["system", "light", "dark"])
        self.theme.setCurrentText(settings.theme)
        form.addRow("Theme", self.theme)

        # Answers from documents.
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
        self.watch_folders = QCheckBox("Watch added folders and re-index what changes")
        self.watch_folders.setChecked(settings.watch_folders)
        form.addRow("", self.watch_folders)

        self.error = QLabel("")
        self.error.setObjectName("settingsError")
        self.error.setStyleSheet("color: #c0392b;")
        self.error.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
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
            top_k=self.top_k.value(), search_mode=self.search_mode.currentText(),
            min_similarity=self.min_similarity.value(), diversity=self.diversity.value(),
            passage_neighbours=self.passage_neighbours.value(), watch_folders=self.watch_folders.isChecked(),
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

        self._tasks.submit(read, lambda info: self.model_info.setText(info.summary()),
                           lambda exc: self.model_info.setText(str(exc)))


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
