"""Grounded answers: the model's own judgement of whether the passages answer the question (real GGUF,
real index), "your documents don't say" instead of an invented answer, answering from general knowledge
when asked (marked so), and each sentence's support against its passages (real COVID-QA text)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assistant.config import Settings
from assistant.core import GENERAL_NOTE, Assistant
from assistant.events import Done, Judged, Sources, Support, Token
from assistant.rag.grounding import SUPPORTED, check_passes, groundedness, question_coverage, sentences, support

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "covid_qa" / "200423_covidQA.json"

PETS = "Our dog is called Rex. He is a brown labrador who loves swimming in the lake.\n"
OTHER_DOG = ("The neighbours have a dog too. Their poodle barks at night and the whole street hears it. "
             "Dogs like theirs need a long walk every day.\n")


@pytest.fixture(scope="module")
def paper() -> str:
    if not DATA.is_file():
        pytest.skip(f"the shared evaluation data is not at {DATA} (../shared/data beside the checkout)")
    return json.loads(DATA.read_text(encoding="utf-8"))["data"][0]["paragraphs"][0]["context"]


def test_sentences_keep_their_citations_and_drop_bullets() -> None:
    answer = "The virus is 28 nm wide [1]. It spreads by air. [2]\n- Masks help.\n2. Mortality was 2.5% [1]."
    assert sentences(answer) == ["The virus is 28 nm wide [1].", "It spreads by air. [2]", "Masks help.",
                                 "Mortality was 2.5% [1]."]
    assert all(s in answer for s in sentences(answer))  # as written, so the window can mark them


def test_support_tells_a_copied_claim_from_an_invented_one(paper: str) -> None:
    abstract = paper[paper.index("Abstract:"):][:1500]
    unrelated = "Bovine coronavirus particles measure 65 to 210 nm and carry a hemagglutinin-esterase."
    answer = ("Mother-to-child transmission is the main cause of HIV-1 infection in children worldwide [1]. "
              "Infants with two copies of the H1 or H3 haplotypes had a higher risk of in utero infection [1]. "
              "The study was funded by a chocolate company from Belgium that sells pralines [1].")
    scored = support(answer, [abstract, unrelated])
    assert [s.cites for s in scored] == [(1,), (1,), (1,)]
    assert scored[0].score >= 0.8 and scored[0].supported
    assert scored[1].score >= 0.7 and scored[1].supported
    assert scored[2].score < SUPPORTED and not scored[2].supported
    assert "chocolate" in scored[2].missing and "Belgium" in scored[2].missing
    # The same true sentence, citing the wrong passage, is not backed by what it cites.
    wrong = support(answer.split(" [1].")[0] + " [2].", [abstract, unrelated])[0]
    assert wrong.score < SUPPORTED


def test_question_coverage_looks_for_the_question_s_own_words() -> None:
    passages = ["Rex, our labrador, was vaccinated against rabies in March 2024 at the Oakwood clinic."]
    coverage, missing = question_coverage("When was Rex vaccinated against rabies?", passages)
    assert coverage == 1.0 and missing == ()
    coverage, missing = question_coverage("How much did the rabies vaccination for Rex cost in Berlin?", passages)
    assert missing == ("cost", "Berlin") and coverage == pytest.approx(0.6)
    # Nothing specific to look for: asking words and stop words only.
    assert question_coverage("Summarize the main points of this document.", passages) == (None, ())
    assert question_coverage("What is the name of our dog?", passages) == (None, ())


def test_groundedness_holds_a_confident_yes_to_what_the_passages_contain() -> None:
    assert groundedness(0.8, None, 0.1) == 0.8  # a general question: the model's call alone
    held = groundedness(0.8, 1.0, 0.6)
    lacking = groundedness(0.8, 0.25, 0.3)
    assert held > 0.6 > lacking  # the same yes, but the passages lack most of what was asked
    assert groundedness(0.8, 0.5, None) == pytest.approx((0.8 + 1.5 * 0.5) / 2.5, abs=1e-3)  # keyword search: no cosine


@pytest.fixture
def dogs(tmp_path: Path, isolated_home: Path, default_chat: Path):
    (tmp_path / "ours").mkdir()
    (tmp_path / "ours" / "pets.txt").write_text(PETS)
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "street.txt").write_text(OTHER_DOG)
    a = Assistant(Settings(model_path=str(default_chat), n_ctx=2048, temperature=0, max_tokens=40,
                           memory_enabled=False), home=isolated_home)
    a.index([tmp_path / "ours"], "ours")
    a.index([tmp_path / "theirs"], "theirs")
    yield a
    a.close()


def test_the_model_judges_which_passages_answer(dogs: Assistant) -> None:
    question = "What is the name of our dog?"
    answered = list(dogs.ask(question, collection="ours"))
    judged = next(e for e in answered if isinstance(e, Judged))
    assert judged.answerable and judged.probability >= judged.threshold
    assert "Rex" in answered[-1].answer
    scored = next(e for e in answered if isinstance(e, Support))
    assert scored.sentences and scored.sentences[0].text in answered[-1].answer

    # The other collection is about a dog too (so retrieval keeps it), but not ours, and says no name.
    refused = list(dogs.ask(question, collection="theirs"))
    sources = next(e for e in refused if isinstance(e, Sources))
    assert sources.sources, "the neighbours' dog passage should pass the similarity floor"
    judged_no = next(e for e in refused if isinstance(e, Judged))
    assert not judged_no.answerable and judged_no.probability < judged.probability
    done = refused[-1]
    assert isinstance(done, Done) and done.answer.startswith("Your documents don't say")
    assert done.completion_tokens == 0  # nothing was generated
    assert not any(isinstance(e, Support) for e in refused)
    assert done.answer == "".join(e.text for e in refused if isinstance(e, Token))


def test_the_judgement_weighs_the_question_s_words_and_a_general_question_is_answered(dogs: Assistant) -> None:
    specific = list(dogs.ask("Which lake does our labrador Rex swim in?", collection="ours"))
    judged = next(e for e in specific if isinstance(e, Judged))
    assert judged.coverage is not None and judged.similarity is not None and judged.similarity > 0.3
    assert judged.score == groundedness(judged.probability, judged.coverage, judged.similarity)
    assert judged.coverage == 1.0 and judged.missing == ()  # "swim" is found in "swimming"
    # A question with nothing specific in it is not held to words it does not have.
    general = list(dogs.ask("Tell me about our dog.", collection="ours"))
    judged = next(e for e in general if isinstance(e, Judged))
    assert judged.coverage is None and judged.score == judged.probability
    assert judged.answerable and general[-1].completion_tokens > 0
    assert not general[-1].answer.startswith("Your documents don't say")


def test_the_judgement_reads_the_passages_once_for_the_answer_too(dogs: Assistant) -> None:
    """The judgement's prompt is the answer's up to the question: the answer reuses what it read."""
    events = list(dogs.ask("What is the name of our dog?", collection="ours"))
    done = events[-1]
    assert done.reused_tokens > 0.8 * done.prompt_tokens


def test_a_refusal_is_saved_and_general_knowledge_answers_when_asked(dogs: Assistant) -> None:
    conv = dogs.conversations.create()
    list(dogs.send(conv.id, "What is the name of our dog?", collection="theirs"))
    refusal = dogs.conversations.messages(conv.id)[-1]
    assert refusal.content.startswith("Your documents don't say")
    assert refusal.meta["judged"]["answerable"] is False and refusal.meta["sources"]

    events = list(dogs.regenerate(conv.id, collection="theirs", general_knowledge=True))
    assert not any(isinstance(e, Sources | Judged) for e in events)  # no documents this time
    messages = dogs.conversations.messages(conv.id)
    assert [m.role for m in messages] == ["user", "assistant"]  # the refusal was replaced
    answer = messages[-1]
    assert answer.meta.get("general_knowledge") is True and "sources" not in answer.meta
    assert answer.content and not answer.content.startswith("Your documents don't say")


def test_general_knowledge_tells_the_model_the_documents_do_not_say(dogs: Assistant) -> None:
    from assistant.core import _with_note

    history = dogs.with_system([{"role": "user", "content": "Why do dogs bark?"}])
    noted = _with_note(history, GENERAL_NOTE)
    assert noted[0]["role"] == "system" and noted[0]["content"].endswith(GENERAL_NOTE)
    assert noted[1:] == history[1:]


def test_the_self_test_is_run_once_and_kept(dogs: Assistant) -> None:
    list(dogs.ask("What is the name of our dog?", collection="ours"))
    kept = json.loads((dogs.home / "judge_check.json").read_text())
    (entry,) = kept.values()
    assert entry["answers"] > entry["does_not"] + 0.3  # the default model tells the two cases apart


def test_a_model_that_fails_the_self_test_is_not_asked_to_judge(tmp_path: Path, isolated_home: Path,
                                                                  default_model: Path) -> None:
    """SmolLM2-135M cannot tell an answering passage from another: it answers as before, never "don't say"."""
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "street.txt").write_text(OTHER_DOG)
    a = Assistant(Settings(model_path=str(default_model), n_ctx=2048, temperature=0, max_tokens=20,
                           memory_enabled=False), home=isolated_home)
    try:
        a.index([tmp_path / "theirs"], "theirs")
        events = list(a.ask("What is the name of our dog?", collection="theirs"))
        assert any(isinstance(e, Sources) and e.sources for e in events)
        assert not any(isinstance(e, Judged) for e in events) and events[-1].completion_tokens > 0
        (entry,) = json.loads((isolated_home / "judge_check.json").read_text()).values()
        assert not check_passes(entry["answers"], entry["does_not"], a.settings.grounding_threshold)
    finally:
        a.close()


def test_grounding_can_be_turned_off(dogs: Assistant) -> None:
    dogs.settings.grounding_threshold = 0.0
    events = list(dogs.ask("What is the name of our dog?", collection="theirs"))
    assert not any(isinstance(e, Judged) for e in events)
    assert events[-1].completion_tokens > 0  # the model answered, as before this check existed


@pytest.fixture
def window(qtbot, isolated_home, default_chat, tmp_path):
    from assistant.ui.main_window import MainWindow

    Settings(model_path=str(default_chat), n_ctx=2048, temperature=0, max_tokens=60, memory_enabled=False,
             welcomed=True).save()
    w = MainWindow()
    qtbot.addWidget(w)
    w.resize(1000, 720)
    w.show()
    qtbot.waitUntil(lambda: w.model_ready, timeout=60_000)
    yield w
    w.close()


def _last_answer(window):
    return [b for b in window.chat.bubbles if b.role == "assistant"][-1]


def test_window_says_the_documents_dont_say_and_answers_from_general_knowledge(qtbot, window, tmp_path,
                                                                              artifacts) -> None:
    from tests.test_ui import type_and_send

    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "street.txt").write_text(OTHER_DOG)
    panel = window.documents
    panel.index_paths([tmp_path / "theirs"], "theirs")
    qtbot.waitUntil(lambda: not panel.busy, timeout=120_000)
    qtbot.waitUntil(lambda: panel.collection.findData("theirs") >= 0, timeout=10_000)
    panel.collection.setCurrentIndex(panel.collection.findData("theirs"))
    type_and_send(qtbot, window, "What is the name of our dog?")
    qtbot.waitUntil(lambda: not window.busy and _last_answer(window).message_id
                    and _last_answer(window).sources_label.isVisible(), timeout=90_000)
    refusal = _last_answer(window)
    assert refusal.text.startswith("Your documents don't say")
    label = refusal.sources_label.text()
    assert "Answer from general knowledge" in label and "none answers the question" in label
    assert "street.txt" in label  # what was looked at is still listed
    assert "they do not" in refusal.inspector_html()
    window.grab().save(str(artifacts / "documents_dont_say.png"))

    refusal.sources_label.linkActivated.emit("general:")  # the user clicks "Answer from general knowledge"
    qtbot.waitUntil(lambda: not window.busy and len(window.chat.bubbles) == 2 and _last_answer(window).message_id
                    and "General knowledge" in _last_answer(window).sources_label.text(), timeout=90_000)
    general = _last_answer(window)
    assert general.text and not general.text.startswith("Your documents don't say")
    assert "not from your documents" in general.sources_label.text()
    window.grab().save(str(artifacts / "general_knowledge_answer.png"))

    # Both survive a restart of the chat view: the mark comes from the saved answer.
    window.chat.clear()
    window._reload_messages()
    qtbot.waitUntil(lambda: len(window.chat.bubbles) == 2, timeout=10_000)
    assert "not from your documents" in _last_answer(window).sources_label.text()


def test_unbacked_sentences_are_marked_in_the_answer_and_explained(qtbot, window, paper) -> None:
    """A saved answer (real support scores of a real abstract) is shown with ⚠ after its invented sentence."""
    abstract = paper[paper.index("Abstract:"):][:1500]
    answer = ("Mother-to-child transmission is the main cause of HIV-1 infection in children worldwide [1]. "
              "The study was funded by a chocolate company from Belgium that sells pralines [1].")
    scored = [x.as_dict() for x in support(answer, [abstract])]
    a = window.assistant
    conv = a.conversations.create()
    a.conversations.add_message(conv.id, "user", "What causes HIV-1 infection in children?")
    source = {"n": 1, "file": "/papers/630.txt", "page": None, "text": abstract, "chunk_id": 1, "why": ["keyword"]}
    a.conversations.add_message(conv.id, "assistant", answer, {
        "sources": [source], "dropped": [], "support": scored,
        "judged": {"probability": 0.9, "threshold": 0.5, "answerable": True}})
    window.chat.clear()
    window.conversation_id = conv.id
    window._reload_messages()
    qtbot.waitUntil(lambda: len(window.chat.bubbles) == 2, timeout=10_000)
    bubble = _last_answer(window)
    body = bubble.body.text()
    assert body.count("⚠") == 1 and body.index("⚠") > body.index("pralines")
    assert "1 sentence of this answer" in bubble.sources_label.text()
    inspector = bubble.inspector_html()
    assert "chocolate" in inspector and "they do: 90%, needed 50%" in inspector and "said yes 90%" in inspector
    assert "Answer from general knowledge" not in bubble.sources_label.text()


def _post(server, body: dict) -> tuple[int, bytes]:
    import urllib.request

    request = urllib.request.Request(server.url + "/chat/completions", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.status, response.read()


def test_the_api_returns_the_judgement_and_answers_from_general_knowledge_when_asked(dogs: Assistant) -> None:
    from assistant.server import ApiServer

    server = ApiServer(dogs, "127.0.0.1", 0)
    server.start()
    try:
        ask = {"messages": [{"role": "user", "content": "What is the name of our dog?"}], "max_tokens": 30}
        status, raw = _post(server, {**ask, "collection": "theirs"})
        reply = json.loads(raw)
        assert status == 200 and reply["choices"][0]["message"]["content"].startswith("Your documents don't say")
        assert reply["grounding"]["answerable"] is False and reply["sources"]

        reply = json.loads(_post(server, {**ask, "collection": "theirs", "general_knowledge": True})[1])
        assert "grounding" not in reply and "sources" not in reply
        assert not reply["choices"][0]["message"]["content"].startswith("Your documents don't say")

        _, raw = _post(server, {**ask, "collection": "ours", "stream": True})
        chunks = [json.loads(line[6:]) for line in raw.decode().splitlines()
                  if line.startswith("data: {")]
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c.get("choices"))
        last = next(c for c in reversed(chunks) if c.get("choices") and c["choices"][0]["finish_reason"])
        assert "Rex" in text and last["grounding"]["answerable"] is True
        assert last["grounding"]["sentences"] and last["grounding"]["sentences"][0]["text"] in text
    finally:
        server.stop()


def test_the_command_line_says_so_and_takes_general_knowledge(dogs: Assistant, default_chat: Path) -> None:
    import subprocess
    import sys

    command = [sys.executable, "-m", "assistant", "ask", "What is the name of our dog?", "--collection", "theirs",
               "--model", str(default_chat), "--max-tokens", "30"]
    done = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["judged"]["answerable"] is False and result["answer"].startswith("Your documents don't say")
    plain = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert "--general-knowledge" in plain.stderr
    general = json.loads(subprocess.run([*command, "--json", "--general-knowledge"], capture_output=True, text=True,
                                        timeout=300).stdout)
    assert general["general_knowledge"] is True and "judged" not in general and "sources" not in general
