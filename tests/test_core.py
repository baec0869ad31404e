"""The Assistant end to end on the real model and a real SQLite file."""

from __future__ import annotations

import shutil
import threading

import pytest

from assistant.config import Settings
from assistant.core import TRIM_TARGET, Assistant
from assistant.events import ContextTrimmed, Done, Error, Token


def run(events) -> tuple[str, list]:
    events = list(events)
    return "".join(e.text for e in events if isinstance(e, Token)), events


@pytest.fixture
def assistant(isolated_home):
    a = Assistant(Settings(n_ctx=2048, temperature=0, max_tokens=48), home=isolated_home)
    yield a
    a.close()


def test_send_streams_and_saves_both_turns(assistant: Assistant) -> None:
    conv = assistant.conversations.create()
    text, events = run(assistant.send(conv.id, "What is the capital of France?"))
    done = events[-1]
    assert isinstance(done, Done) and done.answer == text and "Paris" in text
    assert done.message_id is not None and done.completion_tokens > 0
    saved = assistant.conversations.messages(conv.id)
    assert [m.role for m in saved] == ["user", "assistant"]
    assert saved[1].content == text and saved[1].meta["completion_tokens"] == done.completion_tokens
    assert assistant.conversations.get(conv.id).title == "What is the capital of France?"


def test_chat_survives_reopening_the_database(isolated_home) -> None:
    first = Assistant(Settings(n_ctx=1024, temperature=0, max_tokens=16), home=isolated_home)
    conv = first.conversations.create()
    text, _ = run(first.send(conv.id, "Say hello."))
    first.close()
    again = Assistant(home=isolated_home)
    try:
        messages = again.conversations.messages(conv.id)
        assert [m.content for m in messages] == ["Say hello.", text]
        # And the conversation goes on with that history in the prompt.
        _, events = run(again.send(conv.id, "Thanks!"))
        assert isinstance(events[-1], Done)
        assert len(again.conversations.messages(conv.id)) == 4
    finally:
        again.close()


def test_forty_turns_at_512_context_never_error(isolated_home) -> None:
    a = Assistant(Settings(n_ctx=512, temperature=0.7, max_tokens=40), home=isolated_home)
    try:
        conv = a.conversations.create()
        trimmed = 0
        for turn in range(40):
            _, events = run(a.send(conv.id, f"Turn {turn}: tell me one fact about the number {turn}."))
            assert not [e for e in events if isinstance(e, Error)], events
            assert isinstance(events[-1], Done)
            assert events[-1].prompt_tokens + events[-1].completion_tokens <= 512
            trimmed += sum(1 for e in events if isinstance(e, ContextTrimmed))
        assert trimmed > 0  # older turns were left out, and the user was told
        assert len(a.conversations.messages(conv.id)) == 80  # but nothing was deleted
    finally:
        a.close()


def test_huge_prompt_is_refused_with_a_plain_message(assistant: Assistant) -> None:
    conv = assistant.conversations.create()
    _, events = run(assistant.send(conv.id, "word " * 40_000))  # 200,000 characters
    assert len(events) == 1 and isinstance(events[0], Error)
    assert "context" in events[0].message and "Shorten" in events[0].message
    # The app keeps working afterwards.
    _, events = run(assistant.send(conv.id, "What is 2 + 2?"))
    assert isinstance(events[-1], Done)


def test_empty_prompt_is_refused(assistant: Assistant) -> None:
    conv = assistant.conversations.create()
    _, events = run(assistant.send(conv.id, "   \n "))
    assert isinstance(events[0], Error) and "empty" in events[0].message
    assert assistant.conversations.messages(conv.id) == []


def test_regenerate_replaces_the_last_answer(assistant: Assistant) -> None:
    assistant.settings.temperature = 0.9
    conv = assistant.conversations.create()
    run(assistant.send(conv.id, "Name a colour."))
    first = assistant.conversations.messages(conv.id)
    _, events = run(assistant.regenerate(conv.id))
    assert isinstance(events[-1], Done)
    after = assistant.conversations.messages(conv.id)
    assert len(after) == 2 and after[0].id == first[0].id and after[1].id != first[1].id


def test_edit_and_resend_forgets_what_came_after(assistant: Assistant) -> None:
    conv = assistant.conversations.create()
    run(assistant.send(conv.id, "What is the capital of Spain?"))
    run(assistant.send(conv.id, "And its population?"))
    first_user = assistant.conversations.messages(conv.id)[0]
    text, events = run(assistant.edit_and_resend(conv.id, first_user.id, "What is the capital of France?"))
    assert isinstance(events[-1], Done)
    messages = assistant.conversations.messages(conv.id)
    assert [m.content for m in messages] == ["What is the capital of France?", text]


def test_stopped_answer_is_kept_and_marked(assistant: Assistant) -> None:
    assistant.settings.max_tokens = 500
    conv = assistant.conversations.create()
    stop = threading.Event()
    pieces = 0
    for event in assistant.send(conv.id, "Write a long poem about the sea.", stop):
        if isinstance(event, Token):
            pieces += 1
            if pieces == 4:
                stop.set()
        last = event
    assert isinstance(last, Done) and last.finish_reason == "cancelled"
    saved = assistant.conversations.messages(conv.id)[-1]
    assert saved.role == "assistant" and saved.meta["finish_reason"] == "cancelled" and saved.content


def test_model_file_deleted_while_running(default_model, isolated_home, tmp_path) -> None:
    copy = tmp_path / "model.gguf"
    shutil.copy(default_model, copy)
    a = Assistant(Settings(model_path=str(copy), n_ctx=1024, temperature=0, max_tokens=12), home=isolated_home)
    try:
        a.load_model()
        copy.unlink()
        # The loaded model keeps answering (the file is memory-mapped)...
        _, events = run(a.ask("Say hi."))
        assert isinstance(events[-1], Done)
        # ...and a reload says plainly what is missing instead of crashing.
        a.unload_model()
        _, events = run(a.ask("Say hi."))
        assert isinstance(events[-1], Error) and "not found" in events[-1].message and "model.gguf" in events[-1].message
    finally:
        a.close()


def test_changing_engine_settings_asks_for_a_reload(assistant: Assistant) -> None:
    assistant.load_model()
    same = Settings(**{**assistant.settings.__dict__, "temperature": 0.3})
    assert assistant.update_settings(same) is False and assistant.engine is not None
    bigger = Settings(**{**assistant.settings.__dict__, "n_ctx": 1024})
    assert assistant.update_settings(bigger) is True and assistant.engine is None
    assert Settings.load(assistant.home).n_ctx == 1024


def test_unanswered_questions_do_not_break_strict_templates(assistant: Assistant) -> None:
    conv = assistant.conversations.create()
    stop = threading.Event()
    stop.set()  # stopped before the first token: the question stays, no answer is saved
    run(assistant.send(conv.id, "First question, never answered.", stop))
    assert [m.role for m in assistant.conversations.messages(conv.id)] == ["user"]
    text, events = run(assistant.send(conv.id, "What is the capital of France?"))
    assert isinstance(events[-1], Done) and "Paris" in text
    assert [m.role for m in assistant.conversations.messages(conv.id)] == ["user", "user", "assistant"]


def test_regenerate_keeps_the_old_answer_until_a_new_one_exists(assistant: Assistant) -> None:
    conv = assistant.conversations.create()
    run(assistant.send(conv.id, "Name a colour."))
    before = assistant.conversations.messages(conv.id)
    stop = threading.Event()
    stop.set()
    run(assistant.regenerate(conv.id, stop))
    assert assistant.conversations.messages(conv.id) == before


def test_trimming_keeps_as_much_recent_history_as_fits(isolated_home) -> None:
    a = Assistant(Settings(n_ctx=512, max_tokens=64), home=isolated_home)
    try:
        a.load_model()
        history = [{"role": "system", "content": "Be brief."}]
        for i in range(30):
            history += [{"role": "user", "content": f"Question number {i} about topic {i}?"},
                        {"role": "assistant", "content": f"Answer number {i}, which is short."}]
        history.append({"role": "user", "content": "Last question?"})
        tokens, dropped, kept = a._fit(history)
        limit = 512 - 64
        room = int(limit * TRIM_TARGET)  # a fresh cut leaves headroom so the next turns reuse the cache
        assert len(tokens) <= room and dropped + kept == 61 and dropped % 2 == 0
        # One exchange more would not have fitted that room: nothing was dropped needlessly.
        more = a.engine.tokenize(a.engine.render(history[:1] + history[1 + dropped - 2:]))
        assert len(more) > room
        # The next turn keeps the same cut (same prefix, so the KV cache is reused)...
        history += [{"role": "assistant", "content": "Fine."}, {"role": "user", "content": "And then?"}]
        _, dropped_next, _ = a._fit(history)
        assert dropped_next == dropped
        # ...until it no longer fits.
        for i in range(20):
            history += [{"role": "assistant", "content": f"More words {i} " * 3}, {"role": "user", "content": "Go on?"}]
        tokens, dropped_later, _ = a._fit(history)
        assert dropped_later > dropped and len(tokens) <= limit
    finally:
        a.close()
