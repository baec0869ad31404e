"""Long-term memory and long chats, with the real models, embedder, FAISS and SQLite: a fact told in one
chat is recalled in another; deleted memories and memory switched off are never used; a long chat keeps
an early fact through its running summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.config import Settings
from assistant.core import Assistant
from assistant.events import Done, Recalled, Remembered, Summarised
from assistant.memory.longterm import MEMORY, fact_to_remember

ROOT = Path(__file__).resolve().parent.parent


def _send(assistant: Assistant, chat_id: int, text: str) -> list:
    events = list(assistant.send(chat_id, text))
    assert isinstance(events[-1], Done), events[-1]
    assistant.wait_for_memory()  # exchanges are kept on a background thread
    return events


def _recalled(events: list) -> list[dict]:
    return [m for e in events if isinstance(e, Recalled) for m in e.memories]


@pytest.mark.parametrize("message, fact", [
    ("Remember that my locker code is 4711.", "my locker code is 4711"),
    ("please remember: the wifi password is 'tulip-42'", "the wifi password is 'tulip-42'"),
    ("Note that I am allergic to peanuts!", "I am allergic to peanuts"),
    ("Please remember this: my sailboat is named Halcyon Drift.", "my sailboat is named Halcyon Drift"),
    ("Remember: my sister's birthday is 12 May.", "my sister's birthday is 12 May"),
    ("Don't forget that the boiler service is on Friday.", "the boiler service is on Friday"),
    ("do not forget my badge number is 88123", "my badge number is 88123"),
    ("Can you remember that I prefer metric units?", "I prefer metric units"),
    ("Hey, keep in mind that I am vegetarian.", "I am vegetarian"),
    ("For future reference, my employee ID is E-5521.", "my employee ID is E-5521"),
    ("Make a note that the car is due for its MOT in March.", "the car is due for its MOT in March"),
    ("My locker code is 4711, remember that.", "My locker code is 4711"),
    ("My train leaves at 7:40. Please don't forget it!", "My train leaves at 7:40"),
    ("I bought a boat. Please remember: it is called Halcyon Drift.", "I bought a boat. it is called Halcyon Drift"),
    ("What time is it in Oslo? Also, remember that I live in Bergen.", "I live in Bergen"),
    ("Do you remember what I said?", None),
    ("Can you remember what my dog is called?", None),
    ("I can't remember the name of that film.", None),
    ("I remember that the capital is Rome.", None),
    ("Write a note about cats.", None),
    ("Remember that.", None),
    ("Remember me?", None),
    ("What is 2 + 2?", None),
])
def test_which_messages_ask_to_remember(message: str, fact: str | None) -> None:
    assert fact_to_remember(message) == fact


@pytest.mark.slow
def test_a_fact_told_in_one_chat_is_recalled_in_another(qwen: Path, isolated_home: Path) -> None:
    assistant = Assistant(Settings(model_path=str(qwen), n_ctx=4096, temperature=0.0, max_tokens=60))
    first = assistant.conversations.create()
    _send(assistant, first.id, "My dog is called Rex. He is a beagle and he loves carrots.")
    _send(assistant, first.id, "What should I cook tonight? Something quick.")
    memories = assistant.memory.list()
    assert len(memories) == 2 and {m.chat_id for m in memories} == {first.id}

    second = assistant.conversations.create()
    events = _send(assistant, second.id, "What is my dog called?")
    recalled = _recalled(events)
    assert recalled and "Rex" in recalled[0]["text"] and recalled[0]["chat_id"] == first.id
    assert not any("cook" in m["text"] for m in recalled)  # not about the question: below the similarity floor
    assert "Rex" in events[-1].answer
    saved = assistant.conversations.messages(second.id)[-1]
    assert saved.role == "assistant" and saved.meta["memories"][0]["chat_id"] == first.id

    # The memory collection is the app's own: not a document collection, never in a document search.
    assert MEMORY not in [c.name for c in assistant.documents.list_collections()]
    assert MEMORY not in assistant.collection_names("*")
    assistant.close()


def test_remember_forget_and_turning_memory_off(isolated_home: Path) -> None:
    assistant = Assistant(Settings(max_tokens=16))
    chat = assistant.conversations.create()
    _send(assistant, chat.id, "Remember that my locker code is 4711.")
    facts = [m for m in assistant.memory.list() if m.kind == "fact"]
    assert [f.text for f in facts] == ["my locker code is 4711"] and facts[0].chat_id == chat.id

    other = assistant.conversations.create()
    assert any("4711" in m["text"] for m in _recalled(_send(assistant, other.id, "What is my locker code?")))

    # Off for one chat: it neither recalls nor is remembered.
    private = assistant.conversations.create()
    assistant.conversations.set_memory(private.id, False)
    before = len(assistant.memory.list())
    events = _send(assistant, private.id, "What is my locker code? Also, my bike is red.")
    assert not _recalled(events)
    assert len(assistant.memory.list()) == before

    # Off everywhere: nothing recalled, nothing new kept.
    assistant.update_settings(Settings(max_tokens=16, memory_enabled=False), save=False)
    events = _send(assistant, other.id, "What is my locker code?")
    assert not _recalled(events) and len(assistant.memory.list()) == before
    assistant.update_settings(Settings(max_tokens=16), save=False)

    # A deleted memory is never recalled again.
    forgotten = {m.key for m in assistant.memory.list() if "4711" in m.text}
    for key in forgotten:
        assert assistant.memory.forget(key)
    assert not assistant.memory.forget("memory:fact/0/nonexistent")
    events = _send(assistant, other.id, "What is my locker code?")
    assert not any("4711" in m["text"] for m in _recalled(events))
    # This new exchange may itself say 4711 (the chat's own history still holds it): only the forgotten
    # memories must never come back.
    assert not {m.key for m in assistant.recall("locker code 4711")} & forgotten

    # Deleting a chat removes what memory kept from it.
    assert any(m.chat_id == other.id for m in assistant.memory.list())
    assistant.delete_conversation(other.id)
    assert not any(m.chat_id == other.id for m in assistant.memory.list())
    assistant.close()


def test_a_fact_told_in_other_words_is_kept_and_the_answer_says_so(isolated_home: Path) -> None:
    assistant = Assistant(Settings(max_tokens=16, temperature=0.0))
    chat = assistant.conversations.create()
    events = _send(assistant, chat.id, "Please remember this: my sailboat is named Halcyon Drift.")
    kept = [e for e in events if isinstance(e, Remembered)]
    assert [k.fact for k in kept] == ["my sailboat is named Halcyon Drift"]
    assert kept[0].key in {m.key for m in assistant.memory.list()}
    assert not _recalled(events)  # the fact just told is not "recalled" into its own answer
    answer = assistant.conversations.messages(chat.id)[-1]
    assert answer.meta["remembered"] == {"fact": kept[0].fact, "key": kept[0].key}  # shown again after a restart
    # The model is told the fact was saved, so it need not pretend it cannot remember.
    prompt = assistant.with_system([], note="x")[0]["content"]
    assert prompt.endswith("x")
    other = assistant.conversations.create()
    recalled = _recalled(_send(assistant, other.id, "What is my sailboat called?"))
    assert any("Halcyon Drift" in m["text"] for m in recalled)
    # A one-off question (`ask`) keeps a fact too.
    events = list(assistant.ask("Don't forget that my badge number is 88123."))
    assert [e.fact for e in events if isinstance(e, Remembered)] == ["my badge number is 88123"]
    assert any(m.text == "my badge number is 88123" and m.chat_id is None for m in assistant.memory.list())
    # With memory off, nothing is kept and nothing claims it was.
    assistant.update_settings(Settings(max_tokens=16, memory_enabled=False), save=False)
    events = list(assistant.ask("Remember that my bike lock code is 2468."))
    assert not any(isinstance(e, Remembered) for e in events)
    assert not any("2468" in m.text for m in assistant.memory.list())
    assistant.close()


def test_regenerating_an_answer_replaces_its_memory(isolated_home: Path) -> None:
    assistant = Assistant(Settings(max_tokens=16))
    chat = assistant.conversations.create()
    _send(assistant, chat.id, "My favourite colour is teal.")
    old = assistant.memory.list()
    list(assistant.regenerate(chat.id))
    assistant.wait_for_memory()
    new = assistant.memory.list()
    assert len(new) == 1 and new[0].key != old[0].key
    assert new[0].key.endswith(f"/{assistant.conversations.messages(chat.id)[-1].id}")
    assistant.close()


@pytest.mark.slow
def test_a_sixty_turn_chat_keeps_an_early_fact_through_its_summary(qwen: Path, isolated_home: Path) -> None:
    assistant = Assistant(Settings(model_path=str(qwen), n_ctx=1024, temperature=0.0, max_tokens=40))
    chat = assistant.conversations.create()
    assistant.conversations.set_memory(chat.id, False)  # only the summary can carry the fact
    store = assistant.conversations
    store.add_message(chat.id, "user", "My sister is called Ottilie and she lives in Lisbon.")
    store.add_message(chat.id, "assistant", "Lovely, Lisbon is a beautiful city.")
    topics = ["tomatoes", "a bicycle chain", "the moon", "tax forms", "a jazz record", "rain boots", "chess openings",
              "a sourdough starter", "train timetables", "houseplants", "a broken zip", "winter tyres",
              "bird feeders", "a printer jam", "knitting", "solar panels", "a job interview", "paint colours",
              "a leaky tap", "camping gear", "a birthday cake", "a library card", "running shoes", "a violin",
              "compost", "a parking ticket", "a cough", "wallpaper", "a chess clock"]
    for topic in topics:
        store.add_message(chat.id, "user", f"Tell me one short practical tip about {topic}, please.")
        store.add_message(chat.id, "assistant", f"Here is a practical tip about {topic}: keep it simple, check it "
                                                "regularly, and ask someone experienced when you are unsure.")
    assert len(store.messages(chat.id)) == 60
    events = _send(assistant, chat.id, "What is my sister called? Answer with her name.")
    summarised = [e for e in events if isinstance(e, Summarised)]
    assert summarised and summarised[0].messages >= 2
    saved = store.get(chat.id)
    assert "Ottilie" in saved.summary and saved.summary_upto > 0
    assert "Ottilie" in events[-1].answer
    assistant.close()


def test_cli_memory_and_ask_json(isolated_home: Path) -> None:
    env = {**os.environ, "ASSISTANT_HOME": str(isolated_home)}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "assistant", *args], capture_output=True, text=True,
                              timeout=300, cwd=ROOT, env=env)

    added = cli("memory", "add", "My cat is called Biscuit.")
    assert added.returncode == 0, added.stderr
    listed = cli("memory", "list", "--json")
    memories = json.loads(listed.stdout)
    assert [m["text"] for m in memories] == ["My cat is called Biscuit."] and memories[0]["kind"] == "fact"
    asked = cli("ask", "--json", "--max-tokens", "16", "What is my cat called?")
    assert asked.returncode == 0, asked.stderr
    result = json.loads(asked.stdout)
    assert result["memories"][0]["text"] == "My cat is called Biscuit."
    assert set(result["memories"][0]) >= {"text", "chat_id", "when"}
    forgot = cli("memory", "forget", memories[0]["key"])
    assert forgot.returncode == 0, forgot.stderr
    assert json.loads(cli("memory", "list", "--json").stdout) == []
    assert cli("memory", "forget", "memory:fact/0/nothing").returncode == 1
    asked = json.loads(cli("ask", "--json", "--max-tokens", "16", "What is my cat called?").stdout)
    assert "memories" not in asked
    told = cli("ask", "--max-tokens", "16", "Remember that my cat is called Pudding.")
    assert told.returncode == 0, told.stderr
    assert "Kept in memory: my cat is called Pudding" in told.stderr and "memory forget memory:fact/0/" in told.stderr
    assert [m["text"] for m in json.loads(cli("memory", "list", "--json").stdout)] == ["my cat is called Pudding"]
    asked = json.loads(cli("ask", "--json", "--max-tokens", "16", "What is my cat called?").stdout)
    assert asked["memories"][0]["text"] == "my cat is called Pudding" and "remembered" not in asked


@pytest.mark.slow
def test_the_window_shows_what_was_remembered_and_the_panel_forgets_it(qtbot, isolated_home: Path) -> None:
    from PySide6.QtCore import Qt

    from assistant.ui.main_window import MainWindow

    Settings(max_tokens=16, temperature=0.0).save()
    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.model_ready, timeout=60_000)

    def ask(text: str) -> None:
        answered = len([b for b in w.chat.bubbles if b.role == "assistant"])
        w.input.setPlainText(text)
        qtbot.keyClick(w.input, Qt.Key_Return)
        qtbot.waitUntil(lambda: not w.busy and len([b for b in w.chat.bubbles if b.role == "assistant"]) > answered,
                        timeout=120_000)

    ask("My dog is called Rex and he is a beagle.")
    first = w.conversation_id
    qtbot.waitUntil(lambda: w.assistant.memory.count() == 1, timeout=60_000)
    ask("Oh, and please remember: Rex's vet is Dr Okafor.")
    kept = [b for b in w.chat.bubbles if b.role == "assistant"][-1]
    assert kept.memories_label.isVisible() and "Kept in memory:" in kept.memories_label.text()
    assert "Dr Okafor" in kept.memories_label.text()
    qtbot.waitUntil(lambda: w.assistant.memory.count() == 3, timeout=60_000)  # the fact and the exchange
    for m in w.assistant.memory.list():
        if m.kind == "fact" or "Okafor" in m.text:
            w.assistant.memory.forget(m.key)  # the rest of the test counts the Rex memories only
    assert w.assistant.memory.count() == 1
    w.new_chat()
    qtbot.waitUntil(lambda: w.conversation_id not in (None, first), timeout=10_000)
    ask("What is my dog called?")

    def remembered_shown() -> bool:
        answers = [b for b in w.chat.bubbles if b.role == "assistant"]
        return bool(answers) and answers[-1].memories_label.isVisible() and "Rex" in answers[-1].memories_label.text()

    qtbot.waitUntil(remembered_shown, timeout=10_000)
    shown = [b for b in w.chat.bubbles if b.role == "assistant"][-1]
    w._reload_messages()  # saved with the answer: shown again when the chat is read back
    qtbot.waitUntil(lambda: shown not in w.chat.bubbles and remembered_shown(), timeout=10_000)

    qtbot.waitUntil(lambda: w.assistant.memory.count() == 2, timeout=60_000)  # remembered in the background
    w.open_memory()
    panel = w.memory_panel
    qtbot.waitUntil(lambda: panel.list.count() == 2 and panel.this_chat.isEnabled(), timeout=10_000)
    assert panel.this_chat.isChecked()
    panel.this_chat.setChecked(False)
    qtbot.waitUntil(lambda: not w.assistant.conversations.get(w.conversation_id).memory, timeout=10_000)
    rex = [panel.list.item(i) for i in range(panel.list.count()) if "Rex" in panel.list.item(i).text()]
    assert any("from “My dog is called Rex" in item.text() for item in rex)
    for item in rex:
        item.setSelected(True)
    qtbot.mouseClick(panel.forget_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: panel.list.count() == 2 - len(rex), timeout=10_000)
    assert not any("Rex" in m.text for m in w.assistant.memory.list())
    panel.enabled.setChecked(False)
    qtbot.waitUntil(lambda: not Settings.load().memory_enabled, timeout=10_000)
    panel.close()
    w.close()
