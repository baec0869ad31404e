"""Whisper through faster-whisper (CTranslate2, int8 on the CPU): samples or files in, a Transcript out.

The model loads once and is kept (0.8 s for tiny.en); a warm-up pass right after loading takes the
first-call cost off the user's first question. Silero VAD (bundled with faster-whisper, run by
onnxruntime) trims silence before Whisper sees it, which is both faster and stops Whisper from
inventing words in the quiet ("Thank you.").
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from assistant.errors import ModelError
from assistant.speech import SAMPLE_RATE
from assistant.speech.audio import probe, stream_audio
from assistant.speech.models import DEFAULT_SPEECH_MODEL, speech_model_dir

# Greedy decoding: on jfk.wav beam 5 gives the same words as beam 1 at ~1.6x the time, and a spoken
# question must be in the input box within a second of letting go of the button.
BEAM_SIZE = 1
# Pauses shorter than this stay in: people pause mid-sentence, and cutting there loses context.
VAD_PARAMETERS = {"min_silence_duration_ms": 500, "speech_pad_ms": 200}
# Whisper decodes a block as one stream: across a long silence it can run one segment over the gap or
# start the words after it at the time before it. Speech separated by this much quiet is therefore
# transcribed as separate regions, each timed from where its speech starts.
REGION_GAP_MS = 2000
PROMPT_CHARS = 200  # the end of the previous block's text, given to the next so it reads on


@dataclass
class Segment:
    start: float  # seconds from the start of the audio
    end: float
    text: str


@dataclass
class Transcript:
    text: str
    language: str
    duration_s: float  # of the audio
    seconds: float  # spent transcribing (after the model was loaded)
    model: str
    segments: list[Segment] = field(default_factory=list)
    cancelled: bool = False

    @property
    def real_time_factor(self) -> float:
        return self.seconds / self.duration_s if self.duration_s else 0.0

    def as_dict(self) -> dict:
        return {"text": self.text, "language": self.language, "duration_s": round(self.duration_s, 3),
                "seconds": round(self.seconds, 3), "real_time_factor": round(self.real_time_factor, 4),
                "model": self.model, "cancelled": self.cancelled}

    def timestamped(self) -> str:
        """One line per segment, '[h:mm:ss] words': the form a transcript is indexed in, so citations say when."""
        return "\n".join(f"[{clock(s.start)}] {s.text}" for s in self.segments)


Progress = Callable[[float, float | None], None]  # (seconds of audio done, total seconds or None)


class Transcriber:
    """One Whisper model, loaded on first use; one transcription at a time."""

    def __init__(self, model: str = DEFAULT_SPEECH_MODEL, home: Path | None = None, threads: int = 0,
                 language: str = "") -> None:
        self.model_name = model or DEFAULT_SPEECH_MODEL
        self.home = home
        self.threads_setting = threads
        self.threads = threads or os.cpu_count() or 1
        self.language = language  # "" detects it (multilingual models); English-only models always say "en"
        self.load_seconds: float | None = None
        self._model = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        with self._lock:
            if self._model is None:
                self._load()

    def _load(self) -> None:
        folder = speech_model_dir(self.model_name, self.home)
        start = time.perf_counter()
        from faster_whisper import WhisperModel

        try:
            # local_files_only: a folder is a path, but a missing one must never turn into a download.
            model = WhisperModel(str(folder), device="cpu", compute_type="int8", cpu_threads=self.threads,
                                 local_files_only=True)
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelError(f"The speech model in {folder} could not be loaded: {exc}") from None
        # The first pass allocates CTranslate2's buffers; doing it now takes ~0.8 s off the first question.
        segments, _ = model.transcribe(np.zeros(SAMPLE_RATE // 2, dtype=np.float32), language="en",
                                       beam_size=BEAM_SIZE, vad_filter=False, without_timestamps=True)
        list(segments)
        self._model = model
        self.load_seconds = time.perf_counter() - start

    def transcribe(self, samples: np.ndarray, cancel: threading.Event | None = None) -> Transcript:
        """Samples already in memory (a recording): 16 kHz mono float32 in [-1, 1]."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        return self._run([samples], samples.size / SAMPLE_RATE, None, cancel)

    def transcribe_file(self, path: str | Path, progress: Progress | None = None,
                        cancel: threading.Event | None = None) -> Transcript:
        """Any audio file, decoded and transcribed a block at a time: memory stays flat however long it is."""
        path = Path(path)
        info = probe(path)  # AudioError now, before the model loads, for a file that is not audio
        return self._run(stream_audio(path), info.duration_s, progress, cancel)

    def _run(self, blocks: Iterable[np.ndarray], total: float | None, progress: Progress | None,
             cancel: threading.Event | None) -> Transcript:
        with self._lock:
            if self._model is None:
                self._load()
            model = self._model
            language = self.language or (None if model.model.is_multilingual else "en")
            segments: list[Segment] = []
            offset = 0.0
            cancelled = False
            start = time.perf_counter()
            if progress:
                progress(0.0, total)
            for block in blocks:
                if cancel is not None and cancel.is_set():
                    cancelled = True
                    break
                for first, last in speech_regions(block):
                    prompt = " ".join(s.text for s in segments[-5:])[-PROMPT_CHARS:] or None
                    at = offset + first / SAMPLE_RATE
                    pieces, info = model.transcribe(block[first:last], language=language, beam_size=BEAM_SIZE,
                                                    vad_filter=True, vad_parameters=VAD_PARAMETERS,
                                                    initial_prompt=prompt)
                    for piece in pieces:  # a generator: the decoding happens as it is read
                        text = piece.text.strip()
                        if text:
                            segments.append(Segment(at + piece.start, at + piece.end, text))
                        if progress:
                            progress(at + piece.end, total)
                        if cancel is not None and cancel.is_set():
                            cancelled = True
                            break
                    if language is None and segments:
                        language = info.language  # detected once, kept for the blocks after
                    if cancelled:
                        break
                offset += block.size / SAMPLE_RATE
                if cancelled:
                    break
                if progress:
                    progress(offset, total)
            seconds = time.perf_counter() - start
        return Transcript(text=" ".join(s.text for s in segments), language=language or "", duration_s=offset,
                          seconds=seconds, model=self.model_name, segments=segments, cancelled=cancelled)


def speech_regions(samples: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) sample of each stretch of speech, split where the quiet lasts REGION_GAP_MS or more."""
    if not samples.size:
        return []
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    found = get_speech_timestamps(samples, VadOptions(min_silence_duration_ms=REGION_GAP_MS,
                                                      speech_pad_ms=VAD_PARAMETERS["speech_pad_ms"]))
    return [(r["start"], r["end"]) for r in found]


def clock(seconds: float) -> str:
    """1:05 or, past an hour, 1:02:05."""
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
