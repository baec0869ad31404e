"""Reasoning models: their thinking is shown apart and never leaks into the answer, history, memory,
summaries, exports, the agent or the API's content.

No reasoning GGUF installs from PyPI, so the real templates of Qwen3 and the DeepSeek-R1 distills
(tests/data/templates) are put into copies of the real Qwen2.5-Coder-0.5B GGUF's header."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.config import Settings
from assistant.core import Assistant
from assistant.events import Done, Thinking, Token
from assistant.llm.reasoning import ThinkSplitter, split_reasoning, starts_in_thinking, strip_reasoning

TEMPLATES = Path(__file__).parent / "data" / "templates"
# Told to think, the coder model writes its reasoning and closes the block with </think>.
THINK_FIRST = "You think before you answer. Write your thinking, then the tag </think>, then the final answer in one sentence."
WRITE_TAGS = "Always start your reply with <think>, reason briefly, close with </think>, then give the answer."


# --- the splitter ------------------------------------------------------------------------------------


def _split(pieces: list[str], in_thinking: bool = False) -> tuple[str, str]:
    out = list(ThinkSplitter(in_thinking).feed_all(pieces))
    return ("".join(t for k, t in out if k == "thinking"), "".join(t for k, t in out if k == "answer"))


def test_tags_split_over_pieces_are_recognised() -> None:
    assert _split(["<th", "ink>\nLet me ", "see.</thi", "nk>\n\nIt is ", "4."]) == ("\nLet me see.", "It is 4.")
    assert _split(list("<think>a</think>b")) == ("a", "b")


def test_a_template_that_opened_the_block_starts_in_thinking() -> None:
    assert _split(["2+2 is 4.", "\n</think>\n\n", "Four."], in_thinking=True) == ("2+2 is 4.\n", "Four.")
    assert _split(["still thinking when it ran out"], in_thinking=True) == ("still thinking when it ran out", "")


def test_text_without_tags_is_all_answer_and_lookalikes_survive() -> None:
    assert _split(["a < b and <thin", "king> is not a tag"]) == ("", "a < b and <thinking> is not a tag")
    assert _split(["ends with <", "th"]) == ("", "ends with <th")  # a held partial tag is given back at the end


def test_whole_replies() -> None:
    assert split_reasoning("<think>x</think>\n\ny") == ("x", "y")
    assert strip_reasoning("<think>plan: Action: calculator</think>\nFinal Answer: 4") == "Final Answer: 4"
    assert strip_reasoning("opened by the template</think>\nFinal Answer: 4") == "Final Answer: 4"
    assert strip_reasoning("<think>never closed") == ""
    assert strip_reasoning("  no tags: kept as it is\n") == "  no tags: kept as it is\n"
    assert starts_in_thinking("<｜Assistant｜><think>\n") and not starts_in_thinking("<|im_start|>assistant\n")


def test_the_agent_does_not_parse_thinking_as_a_step() -> None:
    from assistant.agent.react import parse_step

    reply = ('<think>Thought: maybe a tool.\nAction: {"tool": "calculator", "input": {"expression": "2+2"}}</think>\n'
             "Thought: I know it.\nFinal Answer: 4")
    assert parse_step(reply).kind != "final"  # what the agent would make of it with the thinking left in
    parsed = parse_step(strip_reasoning(reply))
    assert (parsed.kind, parsed.answer) == ("final", "4")


# --- real templates in a real GGUF --------------------------------------------------------------------


def _with_template(source: Path, template: Path, dest: Path) -> Path:
    subprocess.run([sys.executable, "-m", "gguf.scripts.gguf_new_metadata", "--chat-template-file", str(template),
                    str(source), str(dest), "--force"], check=True, capture_output=True, timeout=300)
    return dest


@pytest.fixture(scope="module")
def qwen3_template_model(qwen: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _with_template(qwen, TEMPLATES / "qwen3.jinja", tmp_path_factory.mktemp("qwen3") / "qwen3-template.gguf")


@pytest.fixture(scope="module")
def r1_template_model(qwen: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _with_template(qwen, TEMPLATES / "deepseek-r1-distill.jinja",
                          tmp_path_factory.mktemp("r1") / "r1-template.gguf")


def test_the_qwen3_template_turns_thinking_off(qwen3_template_model: Path, qwen: Path) -> None:
    from assistant.llm.engine import Engine
    from assistant.llm.gguf_info import read_model_info

    assert "enable_thinking" in read_model_info(qwen3_template_model).chat_template
    engine = Engine(qwen3_template_model, n_ctx=512)
    try:
        f = engine.formatter
        assert f.can_turn_off_thinking and not f.opens_thinking(True) and not f.opens_thinking(False)
        messages = [{"role": "user", "content": "Hi"}]
        assert f.render(messages, thinking=True).endswith("<|im_start|>assistant\n")
        assert f.render(messages, thinking=False).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    finally:
        engine.close()
    plain = Engine(qwen, n_ctx=512)
    try:
        assert not plain.formatter.can_turn_off_thinking
    finally:
        plain.close()


def _ask(assistant: Assistant, chat_id: int, text: str) -> list:
    events = list(assistant.send(chat_id, text))
    assert isinstance(events[-1], Done), events[-1]
    return events


def test_thinking_streams_apart_and_stays_out_of_everything_else(r1_template_model: Path, isolated_home: Path) -> None:
    assistant = Assistant(Settings(model_path=str(r1_template_model), n_ctx=2048, temperature=0.0, max_tokens=120,
                                   system_prompt=THINK_FIRST))
    try:
        assert assistant.load_model() and assistant.engine.formatter.opens_thinking(True)
        chat = assistant.conversations.create()
        events = _ask(assistant, chat.id, "Tom has 3 boxes with 4 pens each. How many pens?")
        done = events[-1]
        thoughts = [e.text for e in events if isinstance(e, Thinking)]
        tokens = [e.text for e in events if isinstance(e, Token)]
        assert len(thoughts) > 3, "the model's reply starts in the template's think block and streams as thinking"
        assert "".join(thoughts).strip() == done.reasoning and "12" in done.reasoning
        assert "".join(tokens) == done.answer
        assert "<think>" not in done.answer and "</think>" not in done.answer and done.reasoning not in done.answer
        assert done.thinking_seconds > 0
        saved = assistant.conversations.messages(chat.id)[-1]
        assert saved.content == done.answer and saved.meta["reasoning"] == done.reasoning
        # the next turn's history carries the answer only
        history = assistant.with_system([{"role": m.role, "content": m.content}
                                         for m in assistant.conversations.messages(chat.id)])
        assert not any(done.reasoning in m["content"] for m in history)
        assistant.wait_for_memory()
        assert all(done.reasoning not in m.text for m in assistant.memory.list())
        store = assistant.conversations
        assert done.reasoning not in store.export_markdown(chat.id)
        assert "reasoning" not in json.dumps(store.export_json(chat.id))
        assert "reasoning" not in json.dumps(store.export_all())
        shared = store.export_markdown(chat.id, thinking=True)
        assert "<details><summary>Thinking</summary>" in shared and done.reasoning in shared
        assert store.export_json(chat.id, thinking=True)["messages"][-1]["meta"]["reasoning"] == done.reasoning
        assert store.get(chat.id).title == "Tom has 3 boxes with 4 pens each. How many pens?"
    finally:
        assistant.close()


def test_a_model_that_writes_its_own_think_tags(qwen3_template_model: Path, isolated_home: Path) -> None:
    assistant = Assistant(Settings(model_path=str(qwen3_template_model), n_ctx=2048, temperature=0.0,
                                   max_tokens=120, system_prompt=WRITE_TAGS))
    try:
        chat = assistant.conversations.create()
        done = _ask(assistant, chat.id, "Is 17 a prime number?")[-1]
        assert "prime" in done.reasoning
        assert "<think>" not in done.answer and "</think>" not in done.answer
        assert assistant.conversations.messages(chat.id)[-1].content == done.answer
    finally:
        assistant.close()


def test_thinking_off_closes_the_block_before_the_model_writes(qwen3_template_model: Path,
                                                               isolated_home: Path) -> None:
    assistant = Assistant(Settings(model_path=str(qwen3_template_model), n_ctx=2048, temperature=0.0,
                                   max_tokens=40, thinking=False))
    try:
        events = list(assistant.ask("What is the capital of France? One sentence."))
        done = events[-1]
        assert isinstance(done, Done) and assistant.engine.thinking is False
        assert not any(isinstance(e, Thinking) for e in events) and done.reasoning == ""
        assert "Paris" in done.answer
        prompt = assistant.engine.render([{"role": "user", "content": "x"}])
        assert prompt.endswith("<think>\n\n</think>\n\n")
    finally:
        assistant.close()


def test_a_chat_summary_holds_no_thinking(r1_template_model: Path, isolated_home: Path) -> None:
    from assistant.events import Summarised

    assistant = Assistant(Settings(model_path=str(r1_template_model), n_ctx=1024, temperature=0.0, max_tokens=60,
                                   system_prompt=THINK_FIRST))
    try:
        chat = assistant.conversations.create()
        assistant.conversations.set_memory(chat.id, False)
        store = assistant.conversations
        store.add_message(chat.id, "user", "My sister is called Ottilie.")
        store.add_message(chat.id, "assistant", "Nice name.")
        for n in range(40):
            store.add_message(chat.id, "user", f"Give me tip number {n} about houseplants, please, a practical one.")
            store.add_message(chat.id, "assistant", "Water them when the soil is dry, give them light, and check the "
                                                    "leaves for pests every week or so.")
        events = _ask(assistant, chat.id, "What is my sister called?")
        assert any(isinstance(e, Summarised) for e in events)
        summary = store.get(chat.id).summary
        assert "Ottilie" in summary and "<think>" not in summary and "</think>" not in summary
    finally:
        assistant.close()


def test_the_api_returns_thinking_as_reasoning_content(r1_template_model: Path, isolated_home: Path) -> None:
    import openai

    from assistant.server import ApiServer

    assistant = Assistant(Settings(model_path=str(r1_template_model), n_ctx=2048, temperature=0.0, max_tokens=80))
    assistant.load_model()
    server = ApiServer(assistant, "127.0.0.1", 0)
    server.start()
    try:
        c = openai.OpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=120)
        messages = [{"role": "system", "content": THINK_FIRST},
                    {"role": "user", "content": "Tom has 3 boxes with 4 pens each. How many pens?"}]
        whole = c.chat.completions.create(model="default", messages=messages, temperature=0).choices[0].message
        reasoning = whole.model_extra["reasoning_content"]
        assert "12" in reasoning and reasoning not in (whole.content or "")
        assert "</think>" not in (whole.content or "")
        thought, content = [], []
        for chunk in c.chat.completions.create(model="default", messages=messages, temperature=0, stream=True):
            for choice in chunk.choices:
                thought.append((choice.delta.model_extra or {}).get("reasoning_content") or "")
                content.append(choice.delta.content or "")
        assert len([t for t in thought if t]) > 1  # streamed as it was thought
        assert "".join(thought).strip() == reasoning and "".join(content) == (whole.content or "")
    finally:
        server.stop()
        assistant.close()


def test_the_window_folds_thinking_above_the_answer(qtbot, r1_template_model: Path, isolated_home: Path,
                                                    artifacts) -> None:
    from PySide6.QtCore import Qt

    from assistant.ui.main_window import MainWindow

    Settings(model_path=str(r1_template_model), n_ctx=2048, temperature=0.0, max_tokens=120,
             system_prompt=THINK_FIRST, welcomed=True).save()
    w = MainWindow()
    qtbot.addWidget(w)
    w.resize(1000, 700)
    w.show()
    qtbot.waitUntil(lambda: w.assistant is not None and w.model_ready, timeout=60_000)
    w.input.setPlainText("Tom has 3 boxes with 4 pens each. How many pens?")
    qtbot.mouseClick(w.send_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: bool(w.chat.bubbles) and w.chat.bubbles[-1].thinking_button.isVisible(), timeout=60_000)
    assert w.chat.bubbles[-1].thinking_button.text() == "Thinking…"  # live, while it streams
    qtbot.waitUntil(lambda: not w.busy, timeout=120_000)
    bubble = w.chat.bubbles[-1]
    assert bubble.thinking_button.text().startswith("Thought for ") and bubble.thinking_button.text().endswith(" s")
    assert not bubble.thinking_detail.isVisible()  # folded
    assert "12" in bubble.reasoning and bubble.reasoning.strip() not in bubble.text
    qtbot.mouseClick(bubble.thinking_button, Qt.LeftButton)
    assert bubble.thinking_detail.isVisible() and "12" in bubble.thinking_detail.text()
    w.grab().save(str(artifacts / "thinking_block.png"))
    # a chat opened again shows the block from what was saved
    w.chat.clear()
    w._reload_messages()
    qtbot.waitUntil(lambda: bool(w.chat.bubbles) and w.chat.bubbles[-1].role == "assistant"
                    and w.chat.bubbles[-1].thinking_button.isVisible(), timeout=10_000)
    assert w.chat.bubbles[-1].thinking_button.text().startswith("Thought for ")
    w.close()
