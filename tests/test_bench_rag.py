"""The document-search benchmark runs end to end. A smoke test of the benchmark itself, not of speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"  # the benchmark's default: ../shared/data beside the checkout
COVID = DATA / "covid_qa" / "200423_covidQA.json"
PDF = Path("/usr/share/R/doc/manual/R-data.pdf")  # the one manual --quick indexes


@pytest.mark.slow
@pytest.mark.skipif(not COVID.is_file(), reason=f"no shared evaluation data at {DATA} (COVID-QA)")
@pytest.mark.skipif(not PDF.is_file(), reason="no R manuals: the Debian package r-doc-pdf is not installed")
def test_quick_rag_benchmark_reports_every_part(isolated_home: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.rag", "--json", "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
        env={**os.environ, "ASSISTANT_HOME": str(isolated_home)},
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)

    pdf = data["indexing"]["pdf"]
    app, raw = pdf["app"], pdf["raw"]
    for key in ("chunks_per_s", "pages_per_s", "embed_chunks_per_s", "seconds", "model_load_s"):
        assert app[key] > 0, (key, app[key])
    assert app["pages"] == 41 and app["chunks"] > 41 and app["files_failed"] == 0
    assert raw["chunks"] == app["chunks"] and raw["chunks_per_s"] > 0
    assert set(app["split_s"]) == {"load", "chunk", "embed", "store", "other"}
    assert app["split_s"]["embed"] > 0
    assert app["size"]["db_bytes"] > 0 and app["size"]["index_bytes"] > 0
    if sys.platform != "win32":
        assert app["peak_rss_mb"] > 0
    assert pdf["vectors_agree"]["min_cosine"] > 0.99  # the app stores what the model computes
    assert data["indexing"]["covid_txt"]["chunks_per_s"] > 0

    quality = data["quality"]
    assert 0 < quality["answerable"] <= quality["questions"]
    for mode in ("keyword", "dense", "hybrid", "rrf"):
        figures = quality["modes"][mode]
        assert 0 < figures["recall@5"] <= figures["recall@10"] <= 1, (mode, figures)
        assert 0 < figures["mrr@10"] <= 1, (mode, figures)
    assert quality["reference"]["recall@5"]["keyword"] == 0.745

    latency = data["latency"]
    assert latency["chunks"] == 10_000 and latency["queries"] > 0
    for part in ("total", "embed", "keyword", "dense", "fetch"):
        assert latency["parts"][part]["p50_s"] > 0, part
        assert latency["parts"][part]["p95_s"] >= latency["parts"][part]["p50_s"], part
    for index in ("flat", "hnsw"):
        assert data["faiss"][index]["p50_s"] > 0, index
    assert 0 < data["faiss"]["hnsw"]["recall@100_vs_exact"] <= 1

    for key in ("index_chunks_per_s", "embed_phase_chunks_per_s", "hnsw_vs_flat_p50"):
        assert data["ratios"][key] > 0, key
    assert set(data["pass"]) >= {"index_ratio", "hybrid_beats_keyword_and_dense", "query_p95"}
    assert data["machine"]["usable_cpus"] > 0 and data["machine"]["torch"]
