"""Will a model fit, and why is a GPU used or not: answered from the GGUF header before loading.

The estimate is deliberately on the high side. llama.cpp needs the weights (the file, memory-mapped),
the KV cache (2 × layers × context × KV width × 2 bytes at f16) and a compute buffer sized by the
larger of the batch's logits (vocabulary × batch × 4 bytes) and its attention scores (context × batch ×
heads × 4 bytes). Measured on SmolLM2-135M and Qwen2.5-0.5B at 2k and 8k contexts, real RSS was 55-70 %
of this figure: a load it calls safe is safe, and one it warns about is at least tight.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

from assistant.llm.gguf_info import ModelInfo

BATCH = 512  # the engine's n_batch
RUNTIME_BYTES = 80 << 20  # llama.cpp, Python and the app around the model
MB = 1 << 20


@dataclass(frozen=True)
class Need:
    weights: int
    kv_cache: int
    compute: int
    on_gpu: int  # of the total, what the chosen GPU layers put in video memory

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute + RUNTIME_BYTES

    @property
    def in_ram(self) -> int:
        return self.total - self.on_gpu


@dataclass(frozen=True)
class Fit:
    ok: bool
    need: Need
    ram_available: int | None
    vram_free: int | None
    message: str  # plain words for the user; "" when it fits
    context_that_fits: int | None  # a smaller context that would fit, when one would


def estimate(info: ModelInfo, n_ctx: int, n_gpu_layers: int = 0) -> Need:
    layers = info.n_layers or 1
    heads = info.head_count or 1
    heads_kv = info.head_count_kv or heads
    head_dim = (info.embedding_length or 4096) // heads
    kv_width = heads_kv * ((info.key_length or head_dim) + (info.value_length or head_dim))
    kv = layers * n_ctx * kv_width * 2
    batch = min(BATCH, n_ctx)
    compute = int(1.1 * max((info.vocab_size or 32000) * batch * 4, n_ctx * batch * heads * 4))
    offloaded = layers if n_gpu_layers < 0 else min(n_gpu_layers, layers)
    share = offloaded / layers
    on_gpu = int(share * (info.file_size + kv)) + (compute if offloaded else 0)
    return Need(info.file_size, kv, compute, on_gpu)


def available_ram() -> int | None:
    """Bytes of memory a new program can have without swapping; None where it cannot be told."""
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/meminfo", encoding="ascii") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError):
            return None
    if sys.platform == "win32":
        status = _windows_memory()
        return status.ullAvailPhys if status else None
    try:  # macOS and other Unixes: total memory, as the best figure there is without a helper library
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def total_ram() -> int | None:
    """Bytes of physical memory; None where it cannot be told."""
    if sys.platform == "win32":
        status = _windows_memory()
        return status.ullTotalPhys if status else None
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _windows_memory():
    import ctypes

    class Status(ctypes.Structure):
        _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong),
                    ("ullTotalPhys", ctypes.c_ulonglong), ("ullAvailPhys", ctypes.c_ulonglong),
                    ("ullTotalPageFile", ctypes.c_ulonglong), ("ullAvailPageFile", ctypes.c_ulonglong),
                    ("ullTotalVirtual", ctypes.c_ulonglong), ("ullAvailVirtual", ctypes.c_ulonglong),
                    ("ullAvailExtendedVirtual", ctypes.c_ulonglong)]

    status = Status()
    status.dwLength = ctypes.sizeof(Status)
    return status if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)) else None


def nvidia_gpus() -> list[tuple[str, int, int]]:
    """(name, free bytes, total bytes) of each NVIDIA GPU the driver reports; [] without one."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=name,memory.free,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.rsplit(",", 2)]
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            gpus.append((parts[0], int(parts[1]) * MB, int(parts[2]) * MB))
    return gpus


def check_fit(info: ModelInfo, n_ctx: int, n_gpu_layers: int = 0, ram: int | None = None,
              vram_free: int | None = None) -> Fit:
    """Whether loading info at n_ctx fits this machine's free memory (and GPU memory for offloaded layers)."""
    need = estimate(info, n_ctx, n_gpu_layers)
    ram = available_ram() if ram is None else ram
    if vram_free is None and need.on_gpu:
        gpus = nvidia_gpus()
        vram_free = gpus[0][1] if gpus else None
    problems = []
    if ram is not None and need.in_ram > ram:
        problems.append(f"it needs about {format_size(need.in_ram)} of memory and {format_size(ram)} is free")
    if vram_free is not None and need.on_gpu > vram_free:
        problems.append(f"its GPU layers need about {format_size(need.on_gpu)} of video memory and {format_size(vram_free)} is free")
    if not problems:
        return Fit(True, need, ram, vram_free, "", None)
    smaller = _context_that_fits(info, n_ctx, n_gpu_layers, ram, vram_free)
    advice = (f" A context of {smaller} tokens would fit." if smaller
              else " Even a small context would not: choose a smaller model (fewer parameters or a stronger "
                   "quantization such as Q4_K_M).")
    if vram_free is not None and need.on_gpu > vram_free:
        advice += " Fewer GPU layers (Settings ▸ Model) move the rest to ordinary memory."
    risk = ("Loading it anyway can make the computer swap and stall." if ram is not None and need.in_ram > ram
            else "Loading it anyway will probably fail.")
    message = (f"{info.name} may not fit: {' and '.join(problems)} (weights {format_size(need.weights)}, "
               f"context cache {format_size(need.kv_cache)} for {n_ctx} tokens, working memory {format_size(need.compute)}). "
               + risk + advice)
    return Fit(False, need, ram, vram_free, message, smaller)


def _context_that_fits(info: ModelInfo, n_ctx: int, n_gpu_layers: int, ram: int | None,
                       vram_free: int | None) -> int | None:
    ctx = n_ctx // 2
    while ctx >= 512:
        need = estimate(info, ctx, n_gpu_layers)
        if (ram is None or need.in_ram <= ram) and (vram_free is None or need.on_gpu <= vram_free):
            return ctx
        ctx //= 2
    return None


def gpu_note(n_gpu_layers: int, offloaded: int, supports_offload: bool, gpus: list[tuple[str, int, int]]) -> str:
    """Why the model runs where it does, in one sentence; "" when every layer asked for is on a GPU."""
    found = f"{gpus[0][0]} found" if gpus else ""
    if n_gpu_layers == 0:
        return (f"GPU not used: GPU layers is 0 in Settings ▸ Model ({found}; -1 puts every layer on it)."
                if gpus else "Runs on the CPU: GPU layers is 0 in Settings ▸ Model.")
    if not supports_offload:
        why = "this copy of llama.cpp was built for the CPU only"
        if gpus:
            why += f" ({found}: run `make setup` again with the CUDA toolkit installed to build it with CUDA)"
        return f"GPU not used: {why}."
    if offloaded == 0:
        return "GPU not used: llama.cpp found no GPU it can use (check the graphics driver)."
    return ""


def format_size(n: int) -> str:
    return f"{n / (1 << 30):.1f} GB" if n >= 1 << 30 else f"{n / MB:.0f} MB"
