"""Will it fit: the estimate from the real GGUF header, checked against what llama.cpp really takes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.config import Settings
from assistant.core import Assistant
from assistant.errors import WontFitError
from assistant.llm import hardware
from assistant.llm.gguf_info import read_model_info

MB = 1 << 20

RSS_CODE = r"""
import json, sys
from assistant.llm.engine import Engine
e = Engine(sys.argv[1], n_ctx=int(sys.argv[2]))
for _ in e.generate(e.tokenize("Tell me a story. " * 60), max_tokens=8):
    pass
status = open("/proc/self/status").read()
print(json.dumps({"hwm": int(status.split("VmHWM:")[1].split()[0]) * 1024}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak memory is read from /proc (Linux)")
@pytest.mark.parametrize("n_ctx", [2048, 8192])
def test_the_estimate_is_on_the_safe_side_of_real_peak_memory(default_model: Path, n_ctx: int) -> None:
    info = read_model_info(default_model)
    need = hardware.estimate(info, n_ctx)
    out = subprocess.run([sys.executable, "-c", RSS_CODE, str(default_model), str(n_ctx)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    peak = json.loads(out.stdout.strip().splitlines()[-1])["hwm"]
    # Above the real peak (a load called safe is safe), and not wildly so (a warning means something).
    assert peak < need.total < 2.5 * peak, (peak // MB, need.total // MB)


def test_kv_cache_follows_the_header(default_model: Path) -> None:
    info = read_model_info(default_model)  # SmolLM2-135M: 30 layers, 3 KV heads of 64
    assert (info.n_layers, info.head_count, info.head_count_kv, info.embedding_length) == (30, 9, 3, 576)
    assert hardware.estimate(info, 4096).kv_cache == 30 * 4096 * 3 * (64 + 64) * 2
    assert hardware.estimate(info, 8192).kv_cache == 2 * hardware.estimate(info, 4096).kv_cache


def test_too_little_memory_is_said_in_plain_words_with_a_context_that_fits(default_model: Path) -> None:
    info = read_model_info(default_model)
    fit = hardware.check_fit(info, 32768, ram=400 * MB)
    assert not fit.ok
    assert "may not fit" in fit.message and "400 MB is free" in fit.message and "32768 tokens" in fit.message
    assert fit.context_that_fits and fit.context_that_fits < 32768
    assert hardware.estimate(info, fit.context_that_fits).in_ram <= 400 * MB
    assert f"A context of {fit.context_that_fits} tokens would fit" in fit.message
    hopeless = hardware.check_fit(info, 4096, ram=50 * MB)
    assert not hopeless.ok and hopeless.context_that_fits is None and "smaller model" in hopeless.message
    assert hardware.check_fit(info, 4096, ram=64 << 30).ok


def test_gpu_layers_count_against_video_memory(default_model: Path) -> None:
    info = read_model_info(default_model)
    all_on_gpu = hardware.estimate(info, 4096, n_gpu_layers=-1)
    assert all_on_gpu.in_ram == hardware.RUNTIME_BYTES  # weights, cache and buffers all in video memory
    half = hardware.estimate(info, 4096, n_gpu_layers=15)
    assert 0 < half.on_gpu < all_on_gpu.on_gpu
    fit = hardware.check_fit(info, 4096, n_gpu_layers=-1, ram=8 << 30, vram_free=50 * MB)
    assert not fit.ok and "video memory" in fit.message and "Fewer GPU layers" in fit.message


def test_why_the_gpu_is_not_used() -> None:
    gpu = [("NVIDIA GeForce RTX 4060", 7 << 30, 8 << 30)]
    assert "GPU layers is 0" in hardware.gpu_note(0, 0, True, [])
    assert "RTX 4060 found" in hardware.gpu_note(0, 0, True, gpu)
    assert "built for the CPU only" in hardware.gpu_note(-1, 0, False, gpu) and "CUDA" in hardware.gpu_note(-1, 0, False, gpu)
    assert "found no GPU" in hardware.gpu_note(-1, 0, True, [])
    assert hardware.gpu_note(-1, 30, True, gpu) == ""


def test_this_machine_reports_its_free_memory() -> None:
    ram = hardware.available_ram()
    assert ram is not None and 64 * MB < ram < 1 << 44


def test_a_load_that_will_not_fit_is_refused_before_it_starts(isolated_home: Path) -> None:
    settings = Settings(n_ctx=1_048_576)
    assistant = Assistant(settings=settings)
    need = hardware.estimate(read_model_info(assistant.model_path()), settings.n_ctx)
    if need.in_ram <= (hardware.available_ram() or 0):
        pytest.skip(f"this machine has {hardware.available_ram() // MB} MB free: even a 1M-token context fits")
    with pytest.raises(WontFitError) as caught:
        assistant.load_model()
    assert assistant.engine is None and caught.value.context_that_fits
    assistant.update_settings(Settings(n_ctx=caught.value.context_that_fits if caught.value.context_that_fits <= 8192
                                       else 2048), save=False)
    report = assistant.load_model()
    assert report.n_ctx in (2048, caught.value.context_that_fits)
    assert "GPU" in report.gpu_note  # this machine has none: the note says why the CPU is used
    assistant.close()
