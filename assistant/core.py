"""Assistant: wires settings, the model and the conversation store into one object.

The UI, the CLI and the benchmarks all talk to this. Answers come out as a generator of
events (assistant.events); nothing here imports Qt.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from assistant.config import Settings, data_dir, db_path
from assistant.errors import AssistantError, ContextOverflowError, WontFitError
from assistant.events import (
    AgentStep,
    ContextTrimmed,
    Done,
    Error,
    Event,
    Judged,
    Recalled,
    Remembered,
    Source,
    Sources,
    Summarised,
    Support,
    Thinking,
    Token,
)
from assistant.llm.engine import Engine, LoadReport
from assistant.llm.reasoning import ThinkSplitter, strip_reasoning
from assistant.memory.conversations import ConversationStore
from assistant.rag import ALL_COLLECTIONS

log = logging.getLogger(__name__)

# When older turns must go, cut down to this share of the room, so the next few turns fit without
# moving the cut and reuse the KV cache instead of re-reading the whole prompt every turn.
TRIM_TARGET = 0.75

# Retrieved passages may take this share of what the context leaves after the reply's reserve; the rest
# is for the question, the system prompt and recent turns.
PASSAGE_SHARE = 0.6
PASSAGE_OVERHEAD = 16  # tokens around each passage in the prompt: its number, file name, quotes

MEMORY_K = 3  # memories recalled for one question, at most
MEMORY_HEADER = ("From earlier conversations with this user (your long-term memory; it may be out of date, "
                 "use it only where it helps):")
SUMMARY_WORDS = 150
SUMMARY_PROMPT = (
    "Here is the earlier part of a conversation between a user and an assistant.\n\n<conversation>\n{turns}\n"
    "</conversation>\n\n{previous}Write notes on it for the assistant to remember, at most {words} words, as a "
    "list. Keep every fact the user gave about themselves or other people (names, places, numbers, dates, "
    "preferences) and anything decided or promised. Leave out small talk and general advice. Never repeat a note."
)
QUOTE = "The user said: "
# A sentence of the user's in the first person that is not a question: most likely a fact about them.
_FIRST_PERSON = re.compile(r"\b(my|i|i'm|i've|i'd|we|we're|our|mine)\b", re.I)


# Settings that need the model reloaded when they change.
ENGINE_SETTINGS = ("model_path", "n_ctx", "n_threads", "n_gpu_layers", "flash_attn", "engine", "remote_url",
                   "remote_model", "remote_api_key")


class Assistant:
    def __init__(self, settings: Settings | None = None, home: Path | None = None) -> None:
        self.home = Path(home) if home else data_dir()
        self.settings = (settings or Settings.load(self.home)).validate()
        self.conversations = ConversationStore(db_path(self.home))
        self.engine: Engine | None = None
        self._documents = None  # DocumentStore, opened on first use
        self._embedder = None  # Embedder: loads torch, so only when documents are used
        self._transcriber = None  # Transcriber: Whisper, loaded on the first spoken question
        self._memory = None  # LongTermMemory, over the document store
        self._memory_jobs = None  # exchanges waiting to be remembered (a queue, with its thread)
        self._rag_lock = threading.Lock()
        # Set while an answer is being written: indexing waits between batches, because on a
        # small machine the embedder and llama.cpp fighting for the same cores slows both a lot.
        self.generating = threading.Event()
        # One model, one context: whoever generates (the window's worker, an API request) holds this.
        self.engine_lock = threading.RLock()
        self._cut: tuple[int, str] | None = None  # where the last trim started: (index, that message's text)

    # -- model --------------------------------------------------------------------------

    def model_name(self) -> str:
        """What the status bar calls the model while it loads."""
        s = self.settings
        if s.engine == "remote":
            return f"{s.remote_model or 'the model'} at {s.remote_url}"
        return self.model_path().name

    def model_path(self) -> Path:
        if self.settings.model_path:
            return Path(self.settings.model_path).expanduser()
        from assistant.llm.models import default_model_path

        return default_model_path(self.home)

    def load_model(
        self, progress: Callable[[float], None] | None = None, cancel: threading.Event | None = None,
        force: bool = False,
    ) -> LoadReport:
        """(Re)load the model the settings name. Slow: never call it on a UI thread.
        Unless force, first check from its header that it fits free memory: WontFitError if not."""
        with self.engine_lock:  # never swap the model under an answer being written
            return self._load_model(progress, cancel, force)

    def _load_model(self, progress: Callable[[float], None] | None, cancel: threading.Event | None,
                    force: bool) -> LoadReport:
        from assistant.llm import hardware
        from assistant.llm.engine import supports_gpu_offload
        from assistant.llm.gguf_info import read_model_info

        self.unload_model()
        s = self.settings
        if s.engine == "remote":
            from assistant.llm.remote import RemoteEngine, RemoteModel

            self.engine = RemoteEngine(RemoteModel(s.remote_url, s.remote_model, s.remote_api_key), n_ctx=s.n_ctx)
            log.info("Using %s", self.engine.report.summary())
            return self.engine.report
        path = self.model_path()
        if not force:
            fit = hardware.check_fit(read_model_info(path, cache_dir=self.home), s.n_ctx, s.n_gpu_layers)
            if not fit.ok:
                raise WontFitError(fit.message, fit.context_that_fits)
        self.engine = Engine(
            path, n_ctx=s.n_ctx, n_threads=s.n_threads, n_gpu_layers=s.n_gpu_layers,
            flash_attn=s.flash_attn, progress=progress, cancel=cancel,
        )
        report = self.engine.report
        note = hardware.gpu_note(s.n_gpu_layers, report.gpu_layers_offloaded, supports_gpu_offload(),
                                 hardware.nvidia_gpus())
        self.engine.report = replace(report, gpu_note=note)
        log.info("Loaded %s in %.2f s. %s", report.summary(), report.load_seconds, note)
        return self.engine.report

    def unload_model(self) -> None:
        with self.engine_lock:
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

    # -- speech -------------------------------------------------------------------------

    @property
    def transcriber(self):
        """Whisper as the settings choose it; made again when the speech settings change."""
        s = self.settings
        wanted = (s.speech_model, s.speech_language, s.n_threads)
        with self._rag_lock:
            t = self._transcriber
            if t is None or (t.model_name, t.language, t.threads_setting) != wanted:
                from assistant.speech.transcriber import Transcriber

                self._transcriber = Transcriber(s.speech_model, self.home, s.n_threads, s.speech_language)
            return self._transcriber

    def transcribe_file(self, path: str | Path, progress=None, cancel: threading.Event | None = None):
        """Transcribe an audio file (any length) with the speech settings; returns a Transcript."""
        return self.transcriber.transcribe_file(path, progress, cancel)

    # -- documents ----------------------------------------------------------------------

    @property
    def documents(self):
        """The document store (SQLite + FAISS), opened on first use."""
        with self._rag_lock:
            if self._documents is None:
                from assistant.rag.store import DocumentStore

                self._documents = DocumentStore(self.home)
            return self._documents

    @property
    def embedder(self):
        """The sentence embedder; the first use takes a few seconds (torch)."""
        with self._rag_lock:
            if self._embedder is None:
                from assistant.rag.embedder import Embedder

                self._embedder = Embedder()
            return self._embedder

    # -- long-term memory -------------------------------------------------------------------

    @property
    def memory(self):
        """Remembered exchanges and facts (assistant.memory.longterm), kept in the document store."""
        if self._memory is None:
            from assistant.memory.longterm import LongTermMemory

            self._memory = LongTermMemory(self.documents, lambda: self.embedder)
        return self._memory

    def recall(self, question: str, skip: set[str] = frozenset()) -> list:
        """The memories to put beside this question (none when memory is off or empty)."""
        s = self.settings
        if not s.memory_enabled or s.memory_tokens <= 0 or not self.memory.count():
            return []
        return self.memory.recall(question, MEMORY_K, s.memory_min_similarity, skip)

    def delete_conversation(self, conversation_id: int) -> None:
        """Delete a chat, and everything long-term memory kept from it."""
        self.conversations.delete(conversation_id)
        self.wait_for_memory()  # an exchange still on its way in would outlive the chat
        if self.memory.count():
            self.memory.forget_chat(conversation_id)

    def _forget_from(self, conversation_id: int, message_id: int) -> None:
        """Forget the exchanges of a chat from this message on (their answers are being replaced)."""
        self.wait_for_memory()
        if self.memory.count():
            for m in self.memory.list():
                if m.kind == "exchange" and m.chat_id == conversation_id and int(m.key.rsplit("/", 1)[1]) >= message_id:
                    self.memory.forget(m.key)

    def _remember(self, conversation_id: int, message_id: int, question: str, answer: str) -> None:
        """Keep an exchange in long-term memory, on a background thread: embedding it (and, the first time,
        loading the embedder) must not hold up the next question."""
        import queue

        if not (self.settings.memory_enabled and answer.strip()):
            return
        from assistant import background

        with self._rag_lock:
            if self._memory_jobs is None:
                jobs = self._memory_jobs = queue.Queue()
                # At exit the thread finishes what it was handed (nothing told is lost), then ends.
                background.start(self._memory_loop, jobs, name="memory", on_exit=lambda: jobs.put(None))
        self._memory_jobs.put((conversation_id, message_id, question, answer))

    def _memory_loop(self, jobs) -> None:
        while (job := jobs.get()) is not None:
            try:
                conversation_id, message_id, question, answer = job
                if self.conversations.get(conversation_id).memory:
                    self.memory.remember_exchange(conversation_id, message_id, question, answer)
            except Exception:  # memory is a help, never the reason anything else fails
                log.exception("could not remember an exchange")
            finally:
                jobs.task_done()
        jobs.task_done()

    def wait_for_memory(self) -> None:
        """Return once every exchange handed to long-term memory so far is kept."""
        if self._memory_jobs is not None:
            self._memory_jobs.join()

    def _with_memories(self, messages: list[dict[str, str]], memories: list) -> tuple[list[dict[str, str]], list]:
        """The last user message with the memories that fit memory_tokens put before it; and those memories."""
        from datetime import datetime

        if not memories:
            return messages, []
        if self.engine is None:
            self.load_model()
        budget = self.settings.memory_tokens
        lines, kept = [], []
        for m in memories:
            line = f"- {datetime.fromtimestamp(m.when):%d %b %Y}: {' '.join(m.text.split())}"
            cost = self.engine.count_tokens(line) + 2
            if cost > budget:
                break
            budget -= cost
            lines.append(line)
            kept.append(m)
        if not kept:
            return messages, []
        last = messages[-1]
        content = MEMORY_HEADER + "\n" + "\n".join(lines) + "\n\n" + last["content"]
        return messages[:-1] + [{"role": last["role"], "content": content}], kept

    def index(self, paths: list[Path], collection: str = "default", progress=None,
              cancel: threading.Event | None = None, retry_failed: bool = True):
        """Index files and folders into a collection; returns an IndexReport."""
        from assistant.rag.indexer import index_paths

        return index_paths(self.documents, self.embedder, [Path(p) for p in paths], collection,
                           progress=progress, cancel=cancel, pause=self.generating, retry_failed=retry_failed)

    def reindex(self, collection: str, progress=None, cancel: threading.Event | None = None):
        """Walk again everything added to the collection: new, changed and deleted files; returns an IndexReport."""
        roots = self.documents.roots(collection)
        if not roots:
            raise AssistantError(f"Nothing has been added to {collection!r} yet: add files or folders first.")
        return self.index([Path(p) for p in roots], collection, progress=progress, cancel=cancel)

    def sync(self, progress=None, cancel: threading.Event | None = None) -> list[tuple[str, object]]:
        """Bring every collection up to date with its files and folders (folder watching calls this); returns
        (collection, IndexReport) for each collection where something changed. Unchanged files cost a stat()."""
        changed = []
        for info in self.documents.list_collections():
            if cancel is not None and cancel.is_set():
                break
            roots = self.documents.roots(info.name)
            if not roots:
                continue
            report = self.index([Path(p) for p in roots], info.name, progress=progress, cancel=cancel,
                                retry_failed=False)
            if report.files_indexed or report.files_removed or report.files_failed or report.chunks_removed:
                changed.append((info.name, report))
        return changed

    def forget(self, collection: str, path: str | Path) -> int:
        """Take a file or folder out of a collection (it stays out of folder walks); returns chunks removed."""
        removed = self.documents.forget(collection, path)
        self.documents.save()
        return removed

    def collection_names(self, collection: str | Sequence[str]) -> list[str]:
        """The collections meant: one name, several, or "*" for every collection there is."""
        docs = self.documents
        if collection == ALL_COLLECTIONS:
            return [c.name for c in docs.list_collections()]
        names = [collection] if isinstance(collection, str) else list(collection)
        for name in names:
            if docs.collection_id(name) is None:
                raise AssistantError(f"There is no document collection named {name!r}. Add documents to it first.")
        return names

    def search(self, query: str, collection: str | Sequence[str] = "default", k: int | None = None,
               mode: str | None = None):
        """The passages of one collection, several, or all ("*") that best match query (list of retriever.Hit)."""
        from assistant.rag.retriever import search

        docs = self.documents
        names = self.collection_names(collection)
        for name in names:
            if docs.missing_vectors(name):
                docs.repair(self.embedder, name)  # chunks committed after the last index save (a crash)
        return search(docs, self.embedder, query, names, k or self.settings.top_k,
                      mode or self.settings.search_mode, diversity=self.settings.diversity)

    def _retrieve(self, question: str, collection: str | Sequence[str],
                  whole_document: str | None = None) -> tuple[Sources, list, list[str]]:
        """Relevant passages as a Sources event, the hits given to the model and the text of each (with
        its neighbouring chunks where they fit). Passages that do not fit the context are left out."""
        from assistant.rag.retriever import Hit, join_chunks

        label = collection if isinstance(collection, str) else ", ".join(collection)
        if whole_document is not None:
            records = self.documents.document_chunks(whole_document, self.collection_names(collection))
            if not records:
                raise AssistantError(f"{Path(whole_document).name} is no longer in the documents of '{label}'.")
            hit = Hit(records[0].chunk_id, whole_document, None, None, join_chunks(records), 1.0, None, None, None,
                      ["the whole document, as asked"])
            source = Source(1, hit.file, None, hit.text, 1.0, hit.chunk_id, tuple(hit.why))
            return Sources((source,), label), [hit], [hit.text]
        hits = self.search(question, collection)
        floor = self.settings.min_similarity
        relevant = [h for h in hits if h.similarity is None or h.similarity >= floor]
        kept, texts, whole = self._fit_passages(relevant)

        def why(h) -> tuple[str, ...]:
            similarity = [f"similarity {h.similarity:.2f}"] if h.similarity is not None else []
            return (*h.why, *similarity, f"fused score {h.score:.2f}")

        def reason(h) -> str:
            return f"below {floor:.2f}: dropped" if h not in relevant else "did not fit the model's context: dropped"

        sources = tuple(Source(n, h.file, h.page, h.text, h.score, h.chunk_id, why(h)) for n, h in enumerate(kept, 1))
        dropped = tuple(Source(0, h.file, h.page, h.text, h.score, h.chunk_id, (*why(h), reason(h)))
                        for h in hits if h not in kept)
        return Sources(sources, label, dropped, whole), kept, texts

    def _fit_passages(self, hits: list) -> tuple[list, list[str], str | None]:
        """The hits that fit PASSAGE_SHARE of the context; each one's text widened by its neighbouring
        chunks while that still fits (best hit first); and the top hit's file if it would fit whole."""
        from assistant.rag.retriever import expand, join_chunks

        if not hits:
            return [], [], None
        if self.engine is None:
            self.load_model()  # its tokenizer measures the passages
        engine = self.engine
        budget = int((engine.n_ctx - min(self.settings.max_tokens, engine.n_ctx // 4)) * PASSAGE_SHARE)

        def cost(text: str) -> int:
            return len(engine.tokenize(text)) + PASSAGE_OVERHEAD

        kept: list = []
        texts: list[str] = []
        used = 0
        for hit in hits:
            c = cost(hit.text)
            if kept and used + c > budget:
                break
            kept.append(hit)
            texts.append(hit.text)
            used += c
        for i, hit in enumerate(kept):
            wider = expand(self.documents, [hit], self.settings.passage_neighbours)[0]
            if wider != texts[i]:
                extra = cost(wider) - cost(texts[i])
                if used + extra <= budget:
                    texts[i], used = wider, used + extra
        whole = None
        records = self.documents.document_chunks(kept[0].file)
        # Offered only when it gives the model more than it has, and without tokenizing a whole book.
        if len(records) > 1 and sum(len(r.text) for r in records) < budget * 8:
            text = join_chunks(records)
            if text not in texts and cost(text) <= budget:
                whole = kept[0].file
        return kept, texts, whole

    # -- answering ------------------------------------------------------------------------

    def stream(self, history: list[dict[str, str]], stop: threading.Event | None = None,
               collection: str | Sequence[str] | None = None, whole_document: str | None = None,
               memory_skip: set[str] | None = frozenset(), sampling: dict | None = None,
               general_knowledge: bool = False) -> Iterator[Event]:
        """Answer the last user message of `history` (role/content dicts), without saving anything.

        With a collection (a name, several, or "*" for all), the answer is grounded in its passages,
        which come first as a Sources event; with whole_document too, in the whole of that file. Before
        answering, the model judges whether the passages answer the question (a Judged event); when they
        do not, the answer says so and nothing is generated. After it, a Support event scores each
        sentence against its passages. general_knowledge=True answers without the documents instead,
        told that they do not cover the question.
        Long-term memories about the question come with it (a Recalled event says which), except those
        whose key is in memory_skip; memory_skip=None recalls none. sampling: max_tokens, temperature,
        top_p and seed for this answer instead of the settings' (the API server passes a request's).
        """
        try:
            question = history[-1]["content"] if history else ""
            memories = self.recall(question, memory_skip) if memory_skip is not None else []
            texts: list[str] = []
            if collection and general_knowledge:
                history = _with_note(history, GENERAL_NOTE)
            elif collection:
                sources, hits, texts = self._retrieve(question, collection, whole_document)
                yield sources
                if not hits:
                    # Saying so beats letting a model invent an answer "from the documents".
                    answer = f"Your documents don't say: I found nothing about this in the documents of '{sources.collection}'."
                    yield Judged(0.0, self.settings.grounding_threshold, 0.0)
                    yield Token(answer)
                    yield Done(answer, "stop", 0, 0, 0, 0.0, 0.0, 0.0, 0.0)
                    return
                from assistant.rag.citations import passages_prompt

                history = history[:-1] + [{"role": "user", "content": passages_prompt(question, hits, texts)}]
            history, memories = self._with_memories(history, memories)
            if memories:
                yield Recalled(tuple(m.as_dict() for m in memories))
            if self.engine is None:
                self.load_model()
            engine = self.engine
            engine.thinking = self.settings.thinking
            tokens, dropped, kept = self._fit(history)
            if dropped:
                yield ContextTrimmed(dropped, kept, engine.n_ctx)
            if texts and whole_document is None and self.settings.grounding_threshold > 0:
                system = history[:1] if history[0]["role"] == "system" else []
                judged = self._judge(system + history[-kept:], stop, question, hits, texts)  # the turns the answer's prompt kept
                if judged is not None:
                    yield judged
                    if not judged.answerable:
                        from assistant.rag.grounding import refusal

                        answer = refusal(question, sources.collection, len(texts))
                        yield Token(answer)
                        yield Done(answer, "stop", len(tokens), 0, 0, judged.seconds, 0.0, 0.0, 0.0)
                        return
            s = self.settings
            options = {"max_tokens": s.max_tokens, "temperature": s.temperature, "top_p": s.top_p, **(sampling or {})}
            generation = engine.generate(tokens, stop=stop, **options)
            parts: list[str] = []
            thoughts: list[str] = []
            splitter = ThinkSplitter(engine.formatter.opens_thinking(engine.thinking))
            started = time.perf_counter()
            thinking_seconds = 0.0
            self.generating.set()
            try:
                for piece in itertools.chain(generation, [None]):
                    for kind, text in splitter.feed(piece) if piece is not None else splitter.flush():
                        if kind == "thinking":
                            thoughts.append(text)
                            thinking_seconds = time.perf_counter() - started
                            yield Thinking(text)
                        else:
                            parts.append(text)
                            yield Token(text)
            finally:
                self.generating.clear()
            st = generation.stats
            if texts:
                from assistant.rag.grounding import support

                yield Support(tuple(support("".join(parts), texts)))
            yield Done(
                answer="".join(parts), finish_reason=st.finish_reason, prompt_tokens=st.prompt_tokens,
                reused_tokens=st.reused_tokens, completion_tokens=st.completion_tokens, seconds=st.seconds,
                time_to_first_token=st.time_to_first_token, tokens_per_second=st.tokens_per_second,
                prompt_tokens_per_second=st.prompt_tokens_per_second, reasoning="".join(thoughts).strip(),
                thinking_seconds=round(thinking_seconds, 2),
            )
        except AssistantError as exc:
            yield Error(str(exc))

    def _judge(self, messages: list[dict[str, str]], stop: threading.Event | None, question: str,
               hits: Sequence, texts: Sequence[str]) -> Judged | None:
        """Whether the passages in the last message answer its question: the model's own yes/no (its prompt is
        the answer's up to the question, so the passages are read once for both), weighed with the question's
        words found in the passages and the closest passage's similarity. None where the engine cannot say
        (a remote server), the model failed the self-test, or Stop was pressed."""
        from assistant.rag import grounding as g

        if not hasattr(self.engine, "choice_probabilities") or not self._can_judge(stop):
            return None
        started = time.perf_counter()
        probability = self._yes_probability(messages, stop)
        if probability is None:
            return None
        probability = round(probability, 3)
        coverage, missing = g.question_coverage(question, texts)
        similarities = [h.similarity for h in hits if h.similarity is not None]
        similarity = round(max(similarities), 3) if similarities else None
        return Judged(probability, self.settings.grounding_threshold, round(time.perf_counter() - started, 3),
                      coverage, similarity, missing, g.groundedness(probability, coverage, similarity))

    def _yes_probability(self, messages: list[dict[str, str]], stop: threading.Event | None) -> float | None:
        from assistant.rag.grounding import NO, YES, judge_messages, yes_probability

        engine = self.engine
        formatter = engine.formatter
        try:
            prompt = formatter.render(judge_messages(messages), add_generation_prompt=True, thinking=False)
        except Exception as exc:
            raise AssistantError(f"The model's chat template could not format this chat: {exc}") from exc
        if formatter.opens_thinking(False):
            prompt += "\n</think>\n\n"  # the judgement needs no thinking: close the block the template opened
        choices = engine.choice_probabilities(engine.tokenize(prompt), {"yes": YES, "no": NO}, stop)
        return None if choices is None else yes_probability(choices)

    def _can_judge(self, stop: threading.Event | None) -> bool:
        """Whether this model tells a passage that answers a question from one that does not (grounding's
        self-test: two short forward passes, once per model file and wording, kept in judge_check.json)."""
        import json

        from assistant.fileio import atomic_write_text
        from assistant.rag import grounding as g
        from assistant.rag.citations import passages_prompt
        from assistant.rag.retriever import Hit

        path = Path(self.engine.model_path)
        try:
            stat = path.stat()
        except OSError:
            return False
        key = f"{path}|{stat.st_size}|{int(stat.st_mtime)}|{g.JUDGE_QUESTION}"
        cache = self.home / "judge_check.json"
        try:
            known = json.loads(cache.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            known = {}
        if key not in known:
            found = []
            for text in (g.CHECK_ANSWERS, g.CHECK_DOES_NOT):
                hit = Hit(0, "pets.txt", None, None, text, 1.0, None, None, None)
                question = passages_prompt(g.CHECK_QUESTION, [hit], [text])
                found.append(self._yes_probability(self.with_system([{"role": "user", "content": question}]), stop))
            if None in found:  # stopped
                return False
            known[key] = {"answers": round(found[0], 3), "does_not": round(found[1], 3)}
            try:
                atomic_write_text(cache, json.dumps(known, indent=1))
            except OSError:
                log.warning("could not save %s", cache)
        entry = known[key]
        return g.check_passes(entry["answers"], entry["does_not"], self.settings.grounding_threshold)

    def agent(self, question: str, stop: threading.Event | None = None,
              collection: str | Sequence[str] | None = None, pal: bool = False, confirm=None,
              history: Sequence[dict] = ()) -> Iterator[Event]:
        """Answer with tools (ReAct), or with a program the sandbox runs (pal=True); nothing is saved.

        history: earlier turns of the chat, of which the agent sees the most recent that fit a third of the
        context. Yields an AgentStep per tool call, then Token and Done, or an Error. confirm(tool, args) -> bool is
        asked before a program runs when the settings want that, and always without an OS sandbox; with
        no confirm to ask, such a program does not run.
        """
        from assistant.agent.sandbox import Limits, isolation
        from assistant.agent.tools import ToolContext, enabled_tools

        s = self.settings
        limits = Limits(wall_s=s.sandbox_wall_s, cpu_s=s.sandbox_cpu_s, memory_mb=s.sandbox_memory_mb)
        if s.confirm_code or isolation() != "bubblewrap":
            confirm = confirm or (lambda _tool, _args: False)
        else:
            confirm = None
        try:
            if self.engine is None:
                self.load_model()
            self.generating.set()
            if pal:
                from assistant.agent.pal import run_pal

                yield from run_pal(self.engine, question, stop, limits, confirm=confirm)
                return
            from assistant.agent.react import run_agent

            ctx = ToolContext(self, stop or threading.Event(), list(collection) if isinstance(collection, (list, tuple))
                              else collection, limits, confirm)
            native = s.tool_format == "native" and self.engine.formatter.native_tools
            yield from run_agent(self.engine, question, enabled_tools(s.tools_disabled), ctx, stop,
                                 style="native" if native else "react", history=self._recent_turns(history, s.n_ctx // 3))
        except AssistantError as exc:
            yield Error(str(exc))
        finally:
            self.generating.clear()

    def _recent_turns(self, history: Sequence[dict], budget: int) -> list[dict]:
        kept: list[dict] = []
        for message in reversed(history):
            budget -= self.engine.count_tokens(message["content"]) + 8
            if budget < 0:
                break
            kept.append({"role": message["role"], "content": message["content"]})
        return kept[::-1]

    def ask(self, question: str, stop: threading.Event | None = None, collection: str | Sequence[str] | None = None,
            general_knowledge: bool = False) -> Iterator[Event]:
        """A one-off question with the system prompt, outside any saved conversation."""
        if not question.strip():
            yield Error("Type a question first: the message is empty.")
            return
        kept = self.keep_fact(question)
        if kept is not None:
            yield kept
        yield from self.stream(self.with_system([{"role": "user", "content": question}], note=_kept_note(kept)), stop,
                               collection, memory_skip={kept.key} if kept else frozenset(),
                               general_knowledge=general_knowledge)

    def send(self, conversation_id: int, text: str, stop: threading.Event | None = None,
             collection: str | Sequence[str] | None = None) -> Iterator[Event]:
        """Save the user's message, stream the answer, save the answer (partial if stopped)."""
        if not text.strip():
            yield Error("Type a question first: the message is empty.")
            return
        try:
            kept = self._note_fact(conversation_id, text)
        except AssistantError as exc:
            yield Error(str(exc))
            return
        if kept is not None:
            yield kept
        yield from self._answer(conversation_id, stop, collection=collection)

    def _note_fact(self, conversation_id: int, text: str) -> Remembered | None:
        """Save the user's message; "remember that ..." also keeps the fact as an explicit memory (when memory
        is on for the chat), noted in the message's meta so its answers say so, now and after a restart."""
        chat = self.conversations.get(conversation_id)
        kept = self.keep_fact(text, chat.id) if chat.memory else None
        meta = {"remembered": {"fact": kept.fact, "key": kept.key}} if kept else None
        self.conversations.add_message(conversation_id, "user", text, meta)
        return kept

    def keep_fact(self, text: str, chat_id: int | None = None) -> Remembered | None:
        """Keep the fact in "remember that ...", if the message says so and long-term memory is on."""
        from assistant.memory.longterm import fact_to_remember

        fact = fact_to_remember(text)
        if not fact or not self.settings.memory_enabled:
            return None
        memory = self.memory.remember_fact(fact, chat_id)
        return Remembered(memory.text, memory.key)

    def send_with_tools(self, conversation_id: int, text: str, stop: threading.Event | None = None,
                        collection: str | Sequence[str] | None = None, pal: bool = False,
                        confirm=None) -> Iterator[Event]:
        """Like send, answered by the agent (or PAL); the steps are saved with the answer.

        The agent sees the earlier turns of the chat (PAL, a program for one question, does not).
        """
        if not text.strip():
            yield Error("Type a question first: the message is empty.")
            return
        try:
            kept = self._note_fact(conversation_id, text)
        except AssistantError as exc:
            yield Error(str(exc))
            return
        if kept is not None:
            yield kept
        steps: list[dict] = []
        history = [{"role": m.role, "content": m.content} for m in self.conversations.messages(conversation_id)[:-1]
                   if m.role in ("user", "assistant") and m.content.strip()]
        for event in self.agent(text, stop, collection, pal, confirm, history):
            if isinstance(event, AgentStep):
                steps.append({"thought": event.thought, "tool": event.tool, "input": event.input,
                              "observation": event.observation, "refused": event.refused})
            if isinstance(event, Done) and (event.answer or event.finish_reason != "cancelled"):
                meta = {k: getattr(event, k) for k in (
                    "finish_reason", "prompt_tokens", "completion_tokens", "tokens_per_second", "seconds")}
                meta.update(steps=steps, mode="pal" if pal else "agent")
                saved = self.conversations.add_message(conversation_id, "assistant", event.answer, meta)
                yield replace(event, message_id=saved.id)
                if event.finish_reason != "cancelled":
                    self._remember(conversation_id, saved.id, text, event.answer)
                continue
            yield event

    def regenerate(self, conversation_id: int, stop: threading.Event | None = None,
                   collection: str | Sequence[str] | None = None, whole_document: str | None = None,
                   general_knowledge: bool = False) -> Iterator[Event]:
        """Answer the last question again; the old answer goes only once a new one is saved.
        general_knowledge: without the documents (they do not say), and marked so."""
        messages = self.conversations.messages(conversation_id)
        old = messages[-1] if messages and messages[-1].role == "assistant" else None
        if old is not None:
            messages = messages[:-1]
        if not messages or messages[-1].role != "user":
            yield Error("There is no question to answer again in this chat.")
            return
        yield from self._answer(conversation_id, stop, replaces=old.id if old else None, collection=collection,
                                whole_document=whole_document, general_knowledge=general_knowledge)

    def edit_and_resend(
        self, conversation_id: int, message_id: int, text: str, stop: threading.Event | None = None,
        collection: str | Sequence[str] | None = None,
    ) -> Iterator[Event]:
        """Replace a user message, forget everything after it, and answer again."""
        if not text.strip():
            yield Error("Type a question first: the message is empty.")
            return
        self.conversations.delete_from(conversation_id, message_id)
        self._forget_from(conversation_id, message_id)
        yield from self.send(conversation_id, text, stop, collection)

    def _answer(self, conversation_id: int, stop: threading.Event | None, replaces: int | None = None,
                collection: str | Sequence[str] | None = None, whole_document: str | None = None,
                general_knowledge: bool = False) -> Iterator[Event]:
        try:
            chat = self.conversations.get(conversation_id)
            messages = _alternating([m for m in self.conversations.messages(conversation_id) if m.id != replaces])
            summary, upto = chat.summary, chat.summary_upto
            if summary:
                messages = [m for m in messages if m.id > upto] or messages[-1:]
            if self.engine is None:
                self.load_model()
            _, dropped, _ = self._fit(self.with_system(_dicts(messages), summary))
            if dropped:  # the early turns no longer fit: notes on them stand in for them from now on
                summary = self._summarise(summary, messages[:dropped], stop)
                if summary:
                    upto = messages[dropped - 1].id
                    self.conversations.set_summary(conversation_id, summary, upto)
                    messages = messages[dropped:]
                    yield Summarised(sum(1 for m in self.conversations.messages(conversation_id) if m.id <= upto),
                                     summary)
                else:
                    summary = chat.summary  # could not summarise: the oldest turns are left out, as said
        except AssistantError as exc:
            yield Error(str(exc))
            return
        # Exchanges of this chat still in the prompt need not be recalled; those summarised away may be.
        skip = {f"memory:chat/{conversation_id}/{m.id}" for m in messages if m.role == "assistant"}
        question = messages[-1].content if messages else ""
        told = messages[-1].meta.get("remembered") if messages and messages[-1].role == "user" else None
        kept = Remembered(told["fact"], told["key"]) if told else None
        if kept is not None:
            skip.add(kept.key)  # the fact just told is in the question already
        sources: Sources | None = None
        recalled: Recalled | None = None
        judged: Judged | None = None
        backed: Support | None = None
        for event in self.stream(self.with_system(_dicts(messages), summary, _kept_note(kept)), stop, collection,
                                 whole_document, skip if chat.memory else None, general_knowledge=general_knowledge):
            if isinstance(event, Sources):
                sources = event
            if isinstance(event, Judged):
                judged = event
            if isinstance(event, Support):
                backed = event
            if isinstance(event, Recalled):
                recalled = event
            if isinstance(event, Done) and (event.answer or event.finish_reason != "cancelled"):
                meta = {k: getattr(event, k) for k in (
                    "finish_reason", "prompt_tokens", "completion_tokens", "tokens_per_second", "seconds")}
                if sources is not None:  # kept with the answer so its citations still open after a restart
                    meta["collection"] = sources.collection
                    meta["sources"] = [source_dict(s) for s in sources.sources]
                    meta["dropped"] = [source_dict(s) for s in sources.dropped]
                    if sources.whole_document:
                        meta["whole_document"] = sources.whole_document
                if judged is not None:  # "not in your documents" answers keep the offer to answer anyway
                    meta["judged"] = judged.as_dict()
                if backed is not None:
                    meta["support"] = [x.as_dict() for x in backed.sentences]
                if collection and general_knowledge:
                    meta["general_knowledge"] = True
                if recalled is not None:
                    meta["memories"] = list(recalled.memories)
                if event.reasoning:  # shown folded with the answer; never sent back to the model
                    meta["reasoning"] = event.reasoning
                    meta["thinking_seconds"] = event.thinking_seconds
                if kept is not None:
                    meta["remembered"] = told
                if replaces is not None:
                    self.conversations.delete_from(conversation_id, replaces)
                if replaces is not None:
                    self._forget_from(conversation_id, replaces)
                saved = self.conversations.add_message(conversation_id, "assistant", event.answer, meta)
                yield replace(event, message_id=saved.id)
                if event.finish_reason != "cancelled":
                    self._remember(conversation_id, saved.id, question, event.answer)  # after the answer is shown
                continue
            yield event

    def with_system(self, history: list[dict[str, str]], summary: str = "", note: str = "") -> list[dict[str, str]]:
        prompt = self.settings.system_prompt.strip()
        if summary:
            prompt = (prompt + "\n\n" if prompt else "") + f"Notes on the earlier part of this conversation:\n{summary}"
        if note:
            prompt = (prompt + "\n\n" if prompt else "") + note
        return ([{"role": "system", "content": prompt}] if prompt else []) + history

    def _summarise(self, previous: str, messages: list, stop: threading.Event | None) -> str:
        """Notes on these turns (and the notes before them); "" if the model could not write them.

        Two parts: what the user said about themselves, quoted (first-person statements, so a fact never
        depends on a small model noticing it), then the model's own notes on the rest.
        """
        engine = self.engine
        room = engine.n_ctx // 2  # the prompt's share; the notes and the template need the rest
        quotes = [line for line in previous.splitlines() if line.startswith(QUOTE)]
        notes = "\n".join(line for line in previous.splitlines() if not line.startswith(QUOTE))
        batch: list[str] = []

        def flush() -> str:
            prompt = SUMMARY_PROMPT.format(
                turns="\n".join(batch), words=SUMMARY_WORDS,
                previous=f"Your notes on what came before it (keep what they say):\n{notes}\n\n" if notes else "")
            # The reply starts as a list, so even a small model writes notes rather than more conversation.
            # Notes need no thinking: a template that can skip it does; one that always opens a think block
            # gets it closed empty (what Qwen3's template does when thinking is off).
            formatter = engine.formatter
            head = formatter.render([{"role": "user", "content": prompt}], add_generation_prompt=True, thinking=False)
            if formatter.opens_thinking(False):
                head += "\n</think>\n\n"
            head += "Notes:\n-"
            generation = engine.generate(engine.tokenize(head), max_tokens=min(2 * SUMMARY_WORDS, engine.n_ctx // 4),
                                         temperature=0.0, stop=stop)
            if generation.stats.finish_reason == "cancelled":
                return ""
            # Small models loop; a note said twice says nothing more.
            written = strip_reasoning("".join(generation))  # a reasoning model's thinking is not notes
            lines = dict.fromkeys(line.strip() for line in ("-" + written).splitlines()
                                  if len(line.strip(" -")) > 1)
            return "\n".join(lines)

        for m in messages:
            if m.role == "user":
                quotes += [f'{QUOTE}"{s}"' for s in re.split(r"(?<=[.!?])\s+", " ".join(m.content.split()))
                           if _FIRST_PERSON.search(s) and not s.endswith("?") and 8 <= len(s) <= 300]
            # The user's own words carry the facts; long answers are cut to their start.
            limit = 800 if m.role == "user" else 300
            line = f"{'User' if m.role == 'user' else 'Assistant'}: {' '.join(m.content.split())[:limit]}"
            if batch and engine.count_tokens("\n".join([*batch, line, notes])) > room:
                notes = flush()
                if not notes:
                    return ""
                batch = []
            batch.append(line)
        if batch:
            notes = flush()
            if not notes:
                return ""
        quotes = list(dict.fromkeys(quotes))
        while quotes and engine.count_tokens("\n".join(quotes)) > engine.n_ctx // 8:
            quotes.pop(_least_specific(quotes))
        return "\n".join([*quotes, notes])

    def _fit(self, messages: list[dict[str, str]]) -> tuple[list[int], int, int]:
        """Tokens of the prompt, leaving out the oldest turns until it fits with room to reply.

        Returns (tokens, dropped message count, kept message count). Never truncates a message.
        """
        engine = self.engine
        reserve = min(self.settings.max_tokens, engine.n_ctx // 4)
        limit = engine.n_ctx - reserve
        system = [m for m in messages[:1] if m["role"] == "system"]
        turns = messages[len(system):]

        def tokens_from(start: int) -> list[int]:
            try:
                return engine.tokenize(engine.render(system + turns[start:]))
            except Exception as exc:  # jinja2 errors, and the template's own raise_exception
                raise AssistantError(f"The model's chat template could not format this chat: {exc}") from exc

        tokens = tokens_from(0)
        if len(tokens) <= limit:
            return tokens, 0, len(turns)
        if self._cut is not None:  # the same chat going on: keep the cut while it still fits
            start, text = self._cut
            if start < len(turns) and turns[start]["content"] == text:
                tokens = tokens_from(start)
                if len(tokens) <= limit:
                    return tokens, start, len(turns) - start
        # Cut only where a user turn starts, so the prompt still opens with a question. The
        # prompt shrinks as the cut moves later, so binary search: a few renders, not one per turn.
        cuts = sorted({i for i in range(1, len(turns)) if turns[i]["role"] == "user"} | {len(turns) - 1})
        best = None
        for room in (int(limit * TRIM_TARGET), limit):
            low, high = 0, len(cuts) - 1
            while low <= high:
                mid = (low + high) // 2
                candidate = tokens_from(cuts[mid])
                if len(candidate) <= room:
                    best, high = (cuts[mid], candidate), mid - 1
                else:
                    low = mid + 1
            if best is not None:
                break
        if best is None:
            tokens = tokens_from(len(turns) - 1)
            raise ContextOverflowError(
                f"This message is {len(tokens)} tokens long with the system prompt, but the model's "
                f"context of {engine.n_ctx} tokens leaves room for {limit} (the rest is kept for the reply). "
                "Shorten the message or raise the context size in Settings."
            )
        start, tokens = best
        self._cut = (start, turns[start]["content"])
        return tokens, start, len(turns) - start

    def close(self) -> None:
        """Finish remembering, free the model and close the files. Safe to call twice; what is used
        afterwards opens again."""
        with self._rag_lock:
            jobs, self._memory_jobs = self._memory_jobs, None
        if jobs is not None:
            jobs.put(None)  # after what is queued: nothing handed over is lost
            jobs.join()
        self.unload_model()
        self.conversations.close()
        with self._rag_lock:
            documents, self._documents, self._memory = self._documents, None, None
        if documents is not None:
            documents.close()


GENERAL_NOTE = ("The user's documents do not answer the next question, and the user asked for an answer from "
                "general knowledge. Answer from what you know; do not say or imply that the documents say it.")


def _with_note(history: list[dict[str, str]], note: str) -> list[dict[str, str]]:
    """history with note added to its system message (or as one)."""
    if history and history[0]["role"] == "system":
        return [{"role": "system", "content": f"{history[0]['content']}\n\n{note}"}, *history[1:]]
    return [{"role": "system", "content": note}, *history]


def source_dict(s: Source) -> dict:
    """A source as saved with the answer and shown under it."""
    return {"n": s.n, "file": s.file, "page": s.page, "text": s.text, "chunk_id": s.chunk_id, "why": list(s.why)}


def _kept_note(kept: Remembered | None) -> str:
    """Tells the model a fact was saved, so its answer acknowledges it instead of promising what it cannot do."""
    if kept is None:
        return ""
    return (f'The app has saved this to your long-term memory, as the user asked: "{kept.fact}". '
            "Confirm briefly that you will remember it, then answer anything else the message asks.")


def _alternating(messages: list) -> list:
    """The messages to send, keeping only the last of several unanswered questions in a row.

    A question whose answer failed or was stopped early stays saved, but many chat templates
    refuse two user turns in a row, and the model should answer the latest one.
    """
    kept: list = []
    for m in messages:
        if kept and m.role == "user" and kept[-1].role == "user":
            kept[-1] = m
        else:
            kept.append(m)
    return kept


def _least_specific(quotes: list[str]) -> int:
    """The index of the quote with the fewest names and numbers in it (the latest of equals goes first)."""
    def specific(q: str) -> int:
        words = q[len(QUOTE):].split()
        return sum(1 for w in words[1:] if w[:1].isupper() or any(c.isdigit() for c in w))
    scores = [specific(q) for q in quotes]
    low = min(scores)
    return max(i for i, score in enumerate(scores) if score == low)


def _dicts(messages: list) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]
