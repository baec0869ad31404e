"""The model library: curated GGUF models to download, and which of them suit this computer.

The catalog ships inside the package (catalog.json next to this file) so it works offline and is
never fetched from a hub at run time. A user (or an organisation that mirrors models on its own
server) can add entries in a catalog.json in the config folder; an entry with the id of a built-in
one replaces it, and "replace_builtin": true hides the built-in list altogether.

Labels come from the memory estimate in hardware.py (the catalog carries the few architecture
numbers it needs, so nothing is downloaded to judge a model) and a speed estimate: generating a
token reads every weight once, so on a CPU tokens/s is roughly the memory bandwidth llama.cpp gets
divided by the file size.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from assistant.config import config_dir
from assistant.errors import ModelError
from assistant.llm.gguf_info import ModelInfo
from assistant.llm.hardware import MB, estimate, format_size

BUILTIN_CATALOG = Path(__file__).with_name("catalog.json")
USER_CATALOG = "catalog.json"

FITS_GPU = "fits on GPU"
FITS_RAM = "fits in RAM"
SLOW = "may be slow"
WONT_FIT = "won't fit"

# Generating a token reads every weight but the token-embedding table (one row of it) once, plus a
# fixed cost per token (sampling, Python, the graph). Fitted to bench/quality.py's measured speeds on
# this project's 2-core test machine: SmolLM2-135M about 100 and Qwen2.5-Coder-0.5B about 37 tokens/s
# give 8.4 GB/s per core and 5 ms a token. It errs slow for bigger models: Qwen2.5-Coder-1.5B is
# estimated at 17 and measured at 23-27, so a "fits in RAM" label is not a promise it cannot keep.
CPU_BANDWIDTH_PER_CORE = 8_400 * MB
CPU_BANDWIDTH_MAX = 40_000 * MB  # what a desktop's dual-channel memory allows, however many cores
TOKEN_OVERHEAD_S = 0.005
# Below this estimated speed a model is labelled "may be slow" (a reply of 200 words takes > 30 s).
USABLE_TOKENS_PER_SECOND = 8.0
# The recommended model must write at least this fast: a comfortable reading pace, and the bar
# bench quality set for the built-in default.
RECOMMEND_TOKENS_PER_SECOND = 15.0
CONTEXT = 4096  # the context the labels assume: the app's default
KINDS = ("chat", "code", "reasoning")


@dataclass(frozen=True)
class Entry:
    id: str  # what `assistant models get ID` takes
    name: str
    url: str
    file: str
    size: int
    sha256: str | None
    quantization: str
    license: str
    context_length: int
    parameters: float  # billions
    good_at: str
    tools: bool  # its chat template can call tools
    kind: str  # chat | code | reasoning (thinks in <think>...</think> before answering)
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    embedding: int
    vocab: int
    source: str = "built-in"  # or the user catalog's path

    @property
    def reasoning(self) -> bool:
        return self.kind == "reasoning"

    def model_info(self) -> ModelInfo:
        """What the memory estimate needs, as if read from the file's header."""
        return ModelInfo(path=self.url, file_size=self.size, name=self.name, architecture="",
                         parameter_count=int(self.parameters * 1e9), quantization=self.quantization,
                         context_length=self.context_length, n_layers=self.layers, vocab_size=self.vocab,
                         chat_template=None, embedding_length=self.embedding, head_count=self.heads,
                         head_count_kv=self.kv_heads, key_length=self.head_dim, value_length=self.head_dim,
                         license=self.license)


@dataclass(frozen=True)
class Machine:
    ram_available: int | None
    ram_total: int | None
    cores: int
    gpu_name: str | None = None
    vram_free: int | None = None  # None: no GPU llama.cpp can use

    def describe(self) -> str:
        parts = [f"{self.cores} CPU cores"]
        if self.ram_total:
            parts.append(f"{format_size(self.ram_total)} memory ({format_size(self.ram_available or 0)} free)")
        if self.gpu_name and self.vram_free is not None:
            parts.append(f"{self.gpu_name} with {format_size(self.vram_free)} free")
        return ", ".join(parts)


@dataclass(frozen=True)
class Assessment:
    label: str
    tokens_per_second: float  # estimated generation speed
    why: str  # one sentence for a tooltip


@dataclass
class Catalog:
    entries: list[Entry]
    problems: list[str] = field(default_factory=list)  # plain words about a user catalog that was skipped

    def find(self, name: str) -> Entry:
        """An entry by id, or by a unique part of its id or name; ModelError lists the choices."""
        wanted = name.strip().lower()
        for entry in self.entries:
            if entry.id.lower() == wanted:
                return entry
        matches = [e for e in self.entries if wanted and (wanted in e.id.lower() or wanted in e.name.lower())]
        if len(matches) == 1:
            return matches[0]
        ids = ", ".join(e.id for e in (matches or self.entries))
        if matches:
            raise ModelError(f"'{name}' matches several models: {ids}. Give the full id.")
        raise ModelError(f"No model '{name}' in the catalog. Choose one of: {ids}.")


def load_catalog(home: Path | None = None) -> Catalog:
    """The built-in catalog with the user's catalog.json (config folder) applied on top."""
    builtin = _parse(json.loads(BUILTIN_CATALOG.read_text(encoding="utf-8")), "built-in")
    catalog = Catalog(builtin)
    path = config_dir(home) / USER_CATALOG
    if not path.exists():
        return catalog
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        own = _parse(data, str(path))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ModelError) as exc:
        catalog.problems.append(f"Your model catalog {path} was not read: {exc}")
        return catalog
    by_id = {} if data.get("replace_builtin") is True else {e.id: e for e in builtin}
    for entry in own:
        by_id[entry.id] = entry  # the user's entry replaces a built-in one of the same id
    catalog.entries = list(by_id.values())
    return catalog


def _parse(data: object, source: str) -> list[Entry]:
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise ModelError('it must be a JSON object with a "models" list')
    entries = []
    for i, raw in enumerate(data["models"]):
        if not isinstance(raw, dict):
            raise ModelError(f"model {i + 1} is not a JSON object")
        try:
            arch = raw.get("architecture") or {}
            entries.append(Entry(
                id=str(raw["id"]), name=str(raw["name"]), url=str(raw["url"]),
                file=str(raw.get("file") or raw["url"].rsplit("/", 1)[-1]), size=int(raw["size"]),
                sha256=(str(raw["sha256"]).lower() if raw.get("sha256") else None),
                quantization=str(raw.get("quantization", "")), license=str(raw.get("license", "")),
                context_length=int(raw.get("context_length", CONTEXT)), parameters=float(raw["parameters"]),
                good_at=str(raw.get("good_at", "")), tools=bool(raw.get("tools", False)),
                kind=_kind(raw.get("kind", "chat")), layers=int(arch["layers"]), heads=int(arch["heads"]),
                kv_heads=int(arch.get("kv_heads", arch["heads"])), head_dim=int(arch["head_dim"]),
                embedding=int(arch["embedding"]), vocab=int(arch["vocab"]), source=source,
            ))
        except KeyError as exc:
            raise ModelError(f"model {i + 1} ({raw.get('id', '?')}) has no {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ModelError(f"model {i + 1} ({raw.get('id', '?')}) has a bad value: {exc}") from None
    return entries


def _kind(value: object) -> str:
    if value not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {value!r}")
    return str(value)


def this_machine(gpu_usable: bool | None = None) -> Machine:
    """Memory, cores and (when llama.cpp can offload to it) the GPU of this computer.

    gpu_usable None asks llama.cpp whether it was built with GPU support, which imports it: pass
    the answer where it is known already.
    """
    from assistant.llm.hardware import available_ram, nvidia_gpus, total_ram

    gpus = nvidia_gpus()
    if gpus and gpu_usable is None:
        from assistant.llm.engine import supports_gpu_offload

        gpu_usable = supports_gpu_offload()
    name, free = (gpus[0][0], gpus[0][1]) if gpus and gpu_usable else (None, None)
    return Machine(available_ram(), total_ram(), physical_cores(), name, free)


def physical_cores() -> int:
    from assistant.llm.engine import default_threads

    return default_threads()


def assess(entry: Entry, machine: Machine, n_ctx: int = CONTEXT) -> Assessment:
    info = entry.model_info()
    n_ctx = min(n_ctx, entry.context_length)
    if machine.vram_free is not None:
        need = estimate(info, n_ctx, -1)
        if need.on_gpu <= machine.vram_free:
            return Assessment(FITS_GPU, 0.0, f"All of it fits in {machine.gpu_name}'s free memory "
                                             f"({format_size(need.on_gpu)} of {format_size(machine.vram_free)}).")
    need = estimate(info, n_ctx, 0)
    speed = cpu_tokens_per_second(entry.size, entry.parameters * 1e9, entry.vocab * entry.embedding, machine.cores)
    if machine.ram_total is not None and need.in_ram > machine.ram_total * 0.9:
        return Assessment(WONT_FIT, speed, f"It needs about {format_size(need.in_ram)} of memory; this computer has "
                                           f"{format_size(machine.ram_total)}.")
    if machine.ram_available is not None and need.in_ram > machine.ram_available:
        return Assessment(SLOW, speed, f"It needs about {format_size(need.in_ram)} of memory and "
                                       f"{format_size(machine.ram_available or 0)} is free now: close other programs "
                                       "first, or it may swap.")
    if speed < USABLE_TOKENS_PER_SECOND:
        return Assessment(SLOW, speed, f"It fits in memory, but on {machine.cores} CPU cores it would write about "
                                       f"{speed:.0f} tokens a second.")
    return Assessment(FITS_RAM, speed, f"It fits in memory ({format_size(need.in_ram)}) and should write about "
                                       f"{speed:.0f} tokens a second on {machine.cores} CPU cores.")


def cpu_tokens_per_second(size: int, parameters: float, embedding_parameters: int, cores: int) -> float:
    """Estimated generation speed on the CPU of a model file of size bytes (see CPU_BANDWIDTH_PER_CORE)."""
    read = size * (1 - min(embedding_parameters / max(parameters, 1.0), 0.5))
    bandwidth = min(CPU_BANDWIDTH_PER_CORE * max(cores, 1), CPU_BANDWIDTH_MAX)
    return 1.0 / (TOKEN_OVERHEAD_S + read / bandwidth)


def recommend(catalog: Catalog, machine: Machine) -> Entry | None:
    """The most capable general model that fits this computer and writes at least 15 tokens a second.

    Coder and reasoning models are recommended only when no general one fits: a reasoning model
    thinks for hundreds of tokens before each answer, which on a CPU means a long wait.
    """
    good = []
    for entry in catalog.entries:
        a = assess(entry, machine)
        if a.label == FITS_GPU or (a.label == FITS_RAM and a.tokens_per_second >= RECOMMEND_TOKENS_PER_SECOND):
            good.append(entry)
    general = [e for e in good if e.kind == "chat"] or good
    # max keeps the first of equals: the catalog's order breaks ties
    return max(general, key=lambda e: e.parameters) if general else None


def catalog_rows(catalog: Catalog, machine: Machine) -> list[dict]:
    """Each entry with its label, for the CLI's --json and the window's table."""
    best = recommend(catalog, machine)
    rows = []
    for entry in catalog.entries:
        a = assess(entry, machine)
        rows.append({
            "id": entry.id, "name": entry.name, "size": entry.size, "parameters_b": entry.parameters,
            "quantization": entry.quantization, "license": entry.license, "context_length": entry.context_length,
            "good_at": entry.good_at, "tools": entry.tools, "kind": entry.kind, "url": entry.url,
            "sha256": entry.sha256, "label": a.label, "why": a.why,
            "estimated_tokens_per_second": round(a.tokens_per_second, 1),
            "recommended": best is not None and entry.id == best.id, "source": entry.source,
        })
    return rows


def downloaded_path(entry: Entry, models_folder: Path) -> Path | None:
    """Where this entry's file already is in the models folder, when a finished download is there."""
    path = models_folder / entry.file
    try:
        return path if path.is_file() and os.path.getsize(path) == entry.size else None
    except OSError:
        return None
