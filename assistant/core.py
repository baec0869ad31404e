"""Assistant: wires settings, the model and the conversation store into one object.

The UI, the CLI and the benchmarks all talk to this. Answers come out as a generator of
events (assistant.events); nothing here imports Qt.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from assistant.config import Settings, data_dir, db_path
from assistant.errors import AssistantError, ContextOverflowError
from assistant.events import ContextTrimmed, Done, Error, Event, Token
from assistant.llm.engine import Engine, LoadReport
from assistant.memory.conversations import ConversationStore

# Settings that need the model reloaded when they change.
ENGINE_SETTINGS = ("model_path", "n_ctx", "n_threads", "n_gpu_layers", "flash_attn")


class Assistant:
    def __init__(self, settings: Settings | None = None, home: Path | None = None) -> None:
        self.home = Path(home) if home else data_dir()
        self.settings = (settings or Settings.load(self.home)).validate()
        self.conversations = ConversationStore(db_path(self.home))
        self.engine: Engine | None = None

    # -- model --------------------------------------------------------------------------

    def model_path(self) -> Path:
        if self.settings.model_path:
            return Path(self.settings.model_path).expanduser()
        from assistant.llm.models import default_model_path

        return default_model_path()

    def load_model(
        self, progress: Callable[[float], None] | None = None, cancel: threading.Event | None = None
    ) -> LoadReport:
        """(Re)load the model the settings name. Slow: never call it on a UI thread."""
        self.unload_model()
        s = self.settings
        self.engine = Engine(
            self.model_path(), n_ctx=s.n_ctx, n_threads=s.n_threads, n_gpu_layers=s.n_gpu_layers,
            flash_attn=s.flash_attn, progress=progress, cancel=cancel,
        )
        return self.engine.report

    def unload_model(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def update_settings(self, settings: Settings, save: bool = True) -> bool:
        """Apply new settings; returns True when the model must be reloaded for them."""
        settings.validate()
        reload = any(getattr(settings, k) != getattr(self.settings, k) for k in ENGINE_SETTINGS)
        if save:
            settings.save(self.home)
        self.settings = settings
        if reload:
            self.unload_model()
        return reload

    # -- answering ------------------------------------------------------------------------

    def stream(self, history: list[dict[str, str]], stop: threading.Event | None = None) -> Iterator[Event]:
        """Answer the last user message of `history` (role/content dicts), without saving anything."""
        try:
            if self.engine is None:
                self.load_model()
            engine = self.engine
            tokens, dropped, kept = self._fit(history)
            if dropped:
                yield ContextTrimmed(dropped, kept, engine.n_ctx)
            s = self.settings
            generation = engine.generate(tokens, max_tokens=s.max_tokens, temperature=s.temperature, top_p=s.top_p, stop=stop)
            parts: list[str] = []
            for piece in generation:
                parts.append(piece)
                yield Token(piece)
            st = generation.stats
            yield Done(
                answer="".join(parts), finish_reason=st.finish_reason, prompt_tokens=st.prompt_tokens,
                reused_tokens=st.reused_tokens, completion_tokens=st.completion_tokens, seconds=st.seconds,
                time_to_first_token=st.time_to_first_token, tokens_per_second=st.tokens_per_second,
                prompt_tokens_per_second=st.prompt_tokens_per_second,
            )
        except AssistantError as exc:
            yield Error(str(exc))

    def ask(self, question: str, stop: threading.Event | None = None) -> Iterator[Event]:
        """A one-off question with the system prompt, outside any saved conversation."""
        if not question.strip():
            yield Error("Type a question first: the message is empty.")
            return
        yield from self.stream(self._with_system([{"role": "user", "content": question}]), stop)

    def send(self, conversation_id: int, text: str, stop: threading.Event | None = None) -> Iterator[Event]:
        """Save the user's message, stream the answer, save the answer (partial if stopped)."""
        if not text.strip():
            yield Error("Type a question first: the message is empty.")
            return
        try:
            self.conversations.get(conversation_id)
            self.conversations.add_message(conversation_id, "user", text)
        except AssistantError as exc:
            yield Error(str(exc))
            return
        yield from self._answer(conversation_id, stop)

    def regenerate(self, conversation_id: int, stop: threading.Event | None = None) -> Iterator[Event]:
        """Drop the last answer and answer the last question again."""
        messages = self.conversations.messages(conversation_id)
        if messages and messages[-1].role == "assistant":
            self.conversations.delete_from(conversation_id, messages[-1].id)
            messages = messages[:-1]
        if not messages or messages[-1].role != "user":
            yield Error("There is no question to answer again in this chat.")
            return
        yield from self._answer(conversation_id, stop)

    def edit_and_resend(
        self, conversation_id: int, message_id: int, text: str, stop: threading.Event | None = None
    ) -> Iterator[Event]:
        """Replace a user message, forget everything after it, and answer again."""
        if not text.strip():
            yield Error("Type a question first: the message is empty.")
            return
        self.conversations.delete_from(conversation_id, message_id)
        yield from self.send(conversation_id, text, stop)

    def _answer(self, conversation_id: int, stop: threading.Event | None) -> Iterator[Event]:
        history = [{"role": m.role, "content": m.content} for m in self.conversations.messages(conversation_id)]
        parts: list[str] = []
        for event in self.stream(self._with_system(history), stop):
            if isinstance(event, Token):
                parts.append(event.text)
            elif isinstance(event, Done):
                meta = {k: getattr(event, k) for k in (
                    "finish_reason", "prompt_tokens", "completion_tokens", "tokens_per_second", "seconds")}
                if event.answer or event.finish_reason != "cancelled":
                    saved = self.conversations.add_message(conversation_id, "assistant", event.answer, meta)
                    event = _with_message_id(event, saved.id)
            yield event

    def _with_system(self, history: list[dict[str, str]]) -> list[dict[str, str]]:
        prompt = self.settings.system_prompt.strip()
        return ([{"role": "system", "content": prompt}] if prompt else []) + history

    def _fit(self, messages: list[dict[str, str]]) -> tuple[list[int], int, int]:
        """Tokens of the prompt, leaving out the oldest turns until it fits with room to reply.

        Returns (tokens, dropped message count, kept message count). Never truncates a message.
        """
        engine = self.engine
        reserve = min(self.settings.max_tokens, engine.n_ctx // 4)
        limit = engine.n_ctx - reserve
        system = [m for m in messages[:1] if m["role"] == "system"]
        turns = messages[len(system):]
        dropped = 0
        while True:
            try:
                tokens = engine.tokenize(engine.render(system + turns))
            except ValueError as exc:  # the chat template refused this conversation shape
                raise AssistantError(str(exc)) from exc
            if len(tokens) <= limit:
                return tokens, dropped, len(turns)
            if len(turns) <= 1:
                raise ContextOverflowError(
                    f"This message is {len(tokens)} tokens long with the system prompt, but the model's "
                    f"context of {engine.n_ctx} tokens leaves room for {limit} (the rest is kept for the reply). "
                    "Shorten the message or raise the context size in Settings."
                )
            # Drop a whole exchange so the conversation still starts with a user turn.
            cut = 2 if len(turns) > 2 and turns[1]["role"] == "assistant" else 1
            turns = turns[cut:]
            dropped += cut

    def close(self) -> None:
        self.unload_model()
        self.conversations.close()


def _with_message_id(event: Done, message_id: int) -> Done:
    from dataclasses import replace

    return replace(event, message_id=message_id)
