"""Settings and paths: one data folder holds everything the app writes.

ASSISTANT_HOME overrides the platform's data folder (tests use it to stay isolated).
"""

from __future__ import annotations

import json
import os

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from assistant.errors import SettingsError
from assistant.fileio import atomic_write_text

DEFAULT_SYSTEM_PROMPT = "You are a helpful, concise assistant running privately on the user's computer."


def data_dir() -> Path:
    """The folder for the database, documents' index and models (created if missing)."""
    override = os.environ.get("ASSISTANT_HOME")
    if override:
        path = Path(override).expanduser()
    else:
        from platformdirs import user_data_dir

        path = Path(user_data_dir("assistant", appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _own_folder(home: Path | None) -> bool:
    """True where one folder holds everything: ASSISTANT_HOME (tests, a portable install) or a home the
    caller chose. Otherwise settings and logs go where the platform keeps them."""
    if os.environ.get("ASSISTANT_HOME"):
        return True
    if home is None:
        return False
    from platformdirs import user_data_dir

    return Path(home).resolve() != Path(user_data_dir("assistant", appauthor=False)).resolve()


def config_dir(home: Path | None = None) -> Path:
    """settings.toml's folder: ~/.config/assistant, %APPDATA%\\assistant, ~/Library/Application Support/assistant."""
    if _own_folder(home):
        return home or data_dir()
    from platformdirs import user_config_dir

    path = Path(user_config_dir("assistant", appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def logs_dir(home: Path | None = None) -> Path:
    """The log and crash reports' folder: ~/.local/state/assistant/log, ...\\Logs, ~/Library/Logs/assistant."""
    if _own_folder(home):
        path = (home or data_dir()) / "logs"
    else:
        from platformdirs import user_log_dir

        path = Path(user_log_dir("assistant", appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def db_path(home: Path | None = None) -> Path:
    return (home or data_dir()) / "assistant.db"


def models_dir(home: Path | None = None) -> Path:
    path = (home or data_dir()) / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def settings_path(home: Path | None = None) -> Path:
    path = config_dir(home) / "settings.toml"
    if not _own_folder(home):
        # Before 0.2 settings lived beside the data: move them once, keeping the user's choices.
        old = data_dir() / "settings.toml"
        if old.exists() and not path.exists():
            try:
                os.replace(old, path)
            except OSError:
                return old
    return path


@dataclass
class Settings:
    """What the user can change. Empty model_path means the embedded default model."""

    model_path: str = ""
    # local: the GGUF above, run here by llama.cpp. remote: an OpenAI-compatible server the user runs
    # (llama.cpp's server, vLLM, Ollama) for models too big for this machine.
    engine: str = "local"
    remote_url: str = ""  # e.g. http://127.0.0.1:8080/v1
    remote_model: str = ""  # "" takes the server's first model
    remote_api_key: str = ""
    api_enabled: bool = False  # serve the OpenAI-compatible API (assistant serve) while the window is open
    api_port: int = 8765  # on 127.0.0.1 only, from the window
    api_key: str = ""  # clients must send it when set
    api_allowed_origins: str = ""  # web pages (origins) that may call the API besides those on localhost
    n_ctx: int = 4096
    n_threads: int = 0  # 0: one per physical core, as llama.cpp does best
    n_gpu_layers: int = 0  # -1: every layer the backend can take
    flash_attn: bool = False
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 512
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    theme: str = "system"  # system | light | dark
    font_scale: int = 100  # per cent of the desktop's font size (View ▸ Bigger text, Ctrl++)
    welcomed: bool = False  # the first-run screen has been dismissed
    top_k: int = 5  # passages from the user's documents given to the model
    search_mode: str = "hybrid"  # hybrid | dense | keyword
    min_similarity: float = 0.25  # below this cosine, a passage is not about the question
    diversity: float = 0.3  # MMR: 0 ranks by score alone; COVID-QA hybrid recall@5 0.760 at 0, 0.764 at 0.3
    # Before a document answer the model judges whether the passages answer the question; below this
    # groundedness (its "yes" weighed with the question's coverage and similarity: rag/grounding.py) the app
    # says the documents don't say (bench/rag_answers.py's dev split chose it). 0 turns it off.
    grounding_threshold: float = 0.62
    passage_neighbours: int = 1  # chunks either side of each passage given to the model, while they fit
    watch_folders: bool = True  # re-walk added folders every 30 s while the app runs
    speech_model: str = "tiny.en"  # tiny.en | base (multilingual) | a CTranslate2 Whisper folder
    speech_language: str = ""  # "" detects it (base); a code such as "fr" fixes it
    microphone: str = ""  # the input device's description; "" is the system's default
    voice_auto_send: bool = True  # a spoken question is sent as soon as it is transcribed
    index_transcripts: bool = False  # a dropped audio file's transcript also goes into the chosen collection
    tools_disabled: str = ""  # comma-separated tool names the agent may not use (python, search_documents...)
    confirm_code: bool = False  # ask before each program runs (always asked where there is no OS sandbox)
    # react: Thought/Action text under a grammar, any model; native: the model's own <tool_call> format where
    # its template has one. react is the default by measurement: Qwen2.5-Coder-0.5B calls no tool natively.
    tool_format: str = "react"
    sandbox_wall_s: float = 10.0  # the Python sandbox's limits
    sandbox_cpu_s: int = 5
    sandbox_memory_mb: int = 512
    memory_enabled: bool = True  # remember finished exchanges and recall them in other chats
    memory_tokens: int = 300  # the most of the prompt recalled memories may take
    memory_min_similarity: float = 0.35  # below this cosine, a memory is not about the question
    model_folders: str = ""  # more folders searched for GGUF models, separated by os.pathsep
    thinking: bool = True  # reasoning models think before answering; off asks the template not to, where it can
    export_thinking: bool = False  # exports include a reasoning model's thinking

    def model_folder_list(self) -> list[Path]:
        return [Path(p).expanduser() for p in self.model_folders.split(os.pathsep) if p.strip()]

    def validate(self) -> Settings:
        """Raise SettingsError naming the first value the app cannot use."""
        checks = [
            (128 <= self.n_ctx <= 1_048_576, f"Context size must be between 128 and 1048576 tokens, not {self.n_ctx}."),
            (0 <= self.n_threads <= 512, f"Threads must be 0 (automatic) or a positive number, not {self.n_threads}."),
            (self.n_gpu_layers >= -1, f"GPU layers must be -1 (all), 0 (none) or a positive number, not {self.n_gpu_layers}."),
            (0.0 <= self.temperature <= 5.0, f"Temperature must be between 0 and 5, not {self.temperature}."),
            (0.0 < self.top_p <= 1.0, f"Top-p must be above 0 and at most 1, not {self.top_p}."),
            (1 <= self.max_tokens <= 1_048_576, f"Max tokens must be at least 1, not {self.max_tokens}."),
            (self.engine in ("local", "remote"), f"Engine must be local or remote, not {self.engine!r}."),
            (self.engine == "local" or self.remote_url.startswith(("http://", "https://")),
             f"The remote server's address must start with http:// or https://, not {self.remote_url!r}."),
            (1 <= self.api_port <= 65535, f"The API port must be between 1 and 65535, not {self.api_port}."),
            (50 <= self.font_scale <= 300, f"Text size must be between 50 and 300 per cent, not {self.font_scale}."),
            (self.theme in ("system", "light", "dark"), f"Theme must be system, light or dark, not {self.theme!r}."),
            (1 <= self.top_k <= 50, f"Passages per answer must be between 1 and 50, not {self.top_k}."),
            (self.search_mode in ("hybrid", "dense", "keyword"),
             f"Search mode must be hybrid, dense or keyword, not {self.search_mode!r}."),
            (self.tool_format in ("react", "native"), f"Tool format must be react or native, not {self.tool_format!r}."),
            (-1.0 <= self.min_similarity <= 1.0, f"Minimum similarity must be between -1 and 1, not {self.min_similarity}."),
            (0.0 <= self.grounding_threshold < 1.0,
             f"The groundedness threshold must be at least 0 and below 1, not {self.grounding_threshold}."),
            (0.0 <= self.diversity < 1.0, f"Diversity must be at least 0 and below 1, not {self.diversity}."),
            (0 <= self.passage_neighbours <= 5, f"Neighbouring chunks must be between 0 and 5, not {self.passage_neighbours}."),
            (0.5 <= self.sandbox_wall_s <= 3600, f"Sandbox time must be between 0.5 and 3600 seconds, not {self.sandbox_wall_s}."),
            (1 <= self.sandbox_cpu_s <= 3600, f"Sandbox CPU time must be between 1 and 3600 seconds, not {self.sandbox_cpu_s}."),
            (0 <= self.memory_tokens <= 4096, f"Memory tokens must be between 0 and 4096, not {self.memory_tokens}."),
            (-1.0 <= self.memory_min_similarity <= 1.0,
             f"Memory similarity must be between -1 and 1, not {self.memory_min_similarity}."),
            (64 <= self.sandbox_memory_mb <= 65536, f"Sandbox memory must be between 64 and 65536 MB, not {self.sandbox_memory_mb}."),
            (self.speech_language == "" or (2 <= len(self.speech_language) <= 3 and self.speech_language.isalpha()),
             f"Speech language must be empty (detect it) or a language code such as en or fr, not {self.speech_language!r}."),
        ]
        for ok, message in checks:
            if not ok:
                raise SettingsError(message)
        from assistant.server import parse_origins

        parse_origins(self.api_allowed_origins)  # SettingsError names a malformed origin
        return self

    @classmethod
    def from_dict(cls, values: dict) -> Settings:
        """Build settings from loose values (a file, a form), converting types or saying why not."""
        settings = cls()
        known = {f.name: f for f in fields(cls)}
        for key, value in values.items():
            if key not in known:
                continue  # a setting from a newer or older version: ignore, never fail to start
            kind = type(getattr(settings, key))
            try:
                if kind is bool:
                    converted = value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")
                elif kind is int and isinstance(value, float) and not value.is_integer():
                    raise ValueError
                else:
                    converted = kind(value)
            except (TypeError, ValueError):
                raise SettingsError(f"Setting {key!r} must be a {kind.__name__}, not {value!r}.") from None
            setattr(settings, key, converted)
        return settings.validate()

    @classmethod
    def load(cls, home: Path | None = None) -> Settings:
        """Read settings.toml; a missing file gives defaults, a broken one a clear error."""
        path = settings_path(home)
        if not path.exists():
            return cls()
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"The settings file {path} could not be read ({exc}). Fix or delete it.") from exc
        return cls.from_dict(values)

    def save(self, home: Path | None = None) -> None:
        self.validate()
        lines = [f"{key} = {_toml_value(value)}" for key, value in asdict(self).items()]
        path = settings_path(home)
        try:
            atomic_write_text(path, "\n".join(lines) + "\n")
        except OSError as exc:
            raise SettingsError(f"The settings could not be saved to {path}: {exc.strerror or exc}.") from exc


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    # A JSON string with non-ASCII escaped is a valid TOML basic string.
    return json.dumps(str(value), ensure_ascii=True)
