"""The LLM benchmark runs end to end. A smoke test of the benchmark itself, not of speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_benchmark_reports_both_sides(isolated_home) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.llm", "--json", "--tokens", "16", "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "ASSISTANT_HOME": str(isolated_home)},
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)

    for side in ("raw", "app"):
        figures = data[side]
        for key in ("prompt_tps", "gen_tps", "ttft_s", "load_s"):
            assert figures[key] > 0, (side, key, figures[key])
        # The app may stop at end-of-generation; the raw side always generates exactly --tokens.
        assert 0 < figures["completion_tokens"] <= 16
        assert figures["prompt_tokens"] >= 100
        if sys.platform != "win32":
            assert figures["peak_rss_mb"] > 0
    assert data["raw"]["completion_tokens"] == 16
    assert data["app"]["gen_tps_wall"] > 0
    assert data["same_output"]["same_prompt_tokens"]  # the app renders and tokenizes as llama.cpp does

    ratios = data["ratios"]
    for key in ("gen_tps", "gen_tps_wall", "prompt_tps", "ttft", "chat_ttft_last_vs_first",
                "chat_ttft_last_no_cache_vs_cached"):
        assert ratios[key] is not None and ratios[key] > 0, key
    assert data["chat"]["ttft_first_s"] > 0 and data["chat"]["ttft_last_s"] > 0
    assert data["stop"]["generation_s"] > 0 and data["stop"]["prompt_s"] > 0
    assert data["window"]["visible_s"] > 0
    assert set(data["pass"]) >= {"gen_tps", "chat_ttft", "stop_generation", "stop_prompt", "window"}
    assert data["machine"]["llama_cpp_python"] and data["machine"]["model_file"].endswith(".gguf")


def test_bfcl_scoring_accepts_every_gold_call_and_refuses_wrong_ones() -> None:
    from bench.agent import bfcl_cases, bfcl_data, bfcl_tools, call_matches

    folder = bfcl_data()
    if folder is None:
        pytest.skip("bfcl-eval is not installed (make test installs it)")
    cases = bfcl_cases(folder, "simple_python", 400)
    assert len(cases) >= 350
    def concrete(option):  # a gold dict option holds a list of allowed values per key: take the first
        if isinstance(option, dict):
            return {k: concrete(v[0]) for k, v in option.items() if v and v[0] != ""}
        return option

    for case, gold in cases:
        (name, params), = gold.items()
        call = {key: concrete(allowed[0]) for key, allowed in params.items() if allowed and allowed[0] != ""}
        assert call_matches(name, call, gold), case["id"]
        assert not call_matches(name + "_x", call, gold)
        assert not call_matches(name, {**call, "no_such_argument": 1}, gold)
        required = [k for k, allowed in params.items() if "" not in allowed]
        if required:
            assert not call_matches(name, {k: v for k, v in call.items() if k != required[0]}, gold), case["id"]
        tools = bfcl_tools(case["function"])
        assert name in tools and tools[name].parameters["type"] == "object"
    # BFCL's standardisation: case, spaces and punctuation in strings do not matter; 5 == 5.0.
    gold = {"f": {"city": ["New York, NY"], "n": [5]}}
    assert call_matches("f", {"city": "new york ny", "n": 5.0}, gold)
    assert not call_matches("f", {"city": "Boston", "n": 5}, gold)


def test_quality_rules_score_right_and_wrong_answers() -> None:
    sys.path.insert(0, str(ROOT))
    from bench import quality as q

    assert len(q.QUESTIONS) >= 50 and {x.category for x in q.QUESTIONS} == set(q.CATEGORIES)
    assert q.number(42)("17 + 25 equals 42.") and not q.number(42)("17 + 25 = 32")
    assert q.number(1952)("It switched in 1,952.") and q.number(4)("Four.") and not q.number(4)("fourteen")
    assert q.number(7)("There are seven continents.") and not q.number(7)("Several.")
    assert q.contains("Paris")("The capital is Paris.") and not q.contains("Au")("A gold-coloured metal")
    assert q.says_not_in_passage("It is not in the passage.") and not q.says_not_in_passage("1,240 metres")
    assert q.in_language("fr")("La capitale de l'Espagne est Madrid.")
    assert not q.in_language("fr")("The capital of Spain is Madrid.")
    assert q.in_language("de")("Die Hauptstadt von Italien ist Rom.") and not q.in_language("es")("Die Katze ist hier.")
    assert q.one_word("blue")("Blue.") and not q.one_word("blue")("It is blue")
    assert q._json_key('{"city": "Rome"}', "city", "rome") and not q._json_key('{"city": {"name": "Rome"}}', "city", "rome")
    by_prompt = {x.prompt: x for x in q.QUESTIONS}
    vaccination = next(x for p, x in by_prompt.items() if "Do vaccinations need" in p)
    assert vaccination.check("No, they do not.") and not vaccination.check("Yes, vaccinations do not.")


@pytest.mark.slow
def test_quality_benchmark_prints_the_table(isolated_home) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.quality", "--limit", "6", "--only", "--model",
         str(__import__("assistant.llm.models", fromlist=["x"]).builtin_model_path()), "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "ASSISTANT_HOME": str(isolated_home)},
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    (r,) = data["results"]
    assert data["questions"] == 6 and r["asked"] == 6 and r["categories"]["facts"]["asked"] == 6
    assert r["model"] == "SmolLM2-135M-Instruct.Q4_1.gguf" and r["ratio_to_reference"] == 1.0
    assert r["tokens_per_second"] > 0 and r["estimated_tokens_per_second"] > 0
    assert all(a["answer"] for a in r["answers"])


def test_grounded_answer_rules_score_refusals_and_f1() -> None:
    from bench import rag_answers as ra

    assert ra.refused("Your documents don't say. None of the 5 passages I found answers it.")
    assert ra.refused("The passages do not provide information about the incubation period.")
    assert not ra.refused("The incubation period is 5.2 days [1].")
    assert ra.token_f1("The incubation period is 5.2 days [1].", ["5.2 days"]) == pytest.approx(2 / 3, abs=0.01)
    assert ra.token_f1("It is unknown.", ["5.2 days"]) == 0.0
    rows_a = [{"answer": "It is 5.2 days [1].", "golds": ["5.2 days"], "probability": 0.9, "seconds": 10.0,
               "answer_s": 8.0},
              {"answer": "About 5.2 days.", "golds": ["5.2 days"], "probability": 0.3, "seconds": 10.0, "answer_s": 8.0}]
    rows_u = [{"answer": "It is 14 days.", "golds": ["x"], "probability": 0.2, "seconds": 10.0, "answer_s": 8.0},
              {"answer": "The passages do not say.", "golds": ["x"], "probability": 0.7, "seconds": 10.0,
               "answer_s": 8.0}]
    current = ra.score(rows_a, rows_u, None, extra_s=0.5)
    grounded = ra.score(rows_a, rows_u, 0.5, extra_s=0.5)
    assert current["refuse_unanswerable"] == 0.5 and current["answer_answerable"] == 1.0
    assert grounded["refuse_unanswerable"] == 1.0 and grounded["answer_answerable"] == 0.5
    assert grounded["f1_answerable"] < current["f1_answerable"]
    # Without the judgement each question costs the measured extra less; a refusal costs no answer.
    assert current["seconds_per_question"] == pytest.approx(9.5)
    assert grounded["seconds_per_question"] == pytest.approx((10 + 2 + 2 + 10) / 4)
    # The app holds its groundedness score to the threshold; the model's yes alone is scored beside it.
    rows_u[1]["score"] = 0.4  # the model said yes, but the passages lack the question's words
    assert ra.score(rows_a, rows_u, 0.5, extra_s=0.5)["refuse_unanswerable"] == 1.0
    rows_u[1]["answer"] = "It is 21 days."
    assert ra.score(rows_a, rows_u, 0.5, extra_s=0.5)["refuse_unanswerable"] == 1.0
    assert ra.score(rows_a, rows_u, 0.5, extra_s=0.5, key="probability")["refuse_unanswerable"] == 0.5


@pytest.mark.slow
def test_grounded_answer_benchmark_runs_on_real_questions(isolated_home) -> None:
    from bench.rag_answers import COVID_JSON, DEFAULT_DATA

    if not (DEFAULT_DATA / COVID_JSON).is_file():
        pytest.skip(f"the shared evaluation data is not at {DEFAULT_DATA}")
    from assistant.llm.models import builtin_model_path

    result = subprocess.run(
        [sys.executable, "-m", "bench.rag_answers", "--model", str(builtin_model_path()), "--per-kind", "2",
         "--papers", "3", "--n-ctx", "2048", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "ASSISTANT_HOME": str(isolated_home)},
    )
    assert result.returncode == 0, result.stderr
    (r,) = json.loads(result.stdout)["results"]
    assert r["answerable"] == 2 and r["unanswerable"] == 2
    assert r["self_test"] is False  # SmolLM2 cannot judge: the app answers with it as before
    assert r["grounded"] == r["current"] == r["model_alone"]
    for row in r["rows"]["a"] + r["rows"]["u"]:
        assert 0.0 <= row["probability"] <= 1.0 and row["answer"]
    assert r["latency"]["questions"] == 4 and r["latency"]["extra_p50_s"] < 5
