"""Speech to text with the real Whisper models on real audio: a human recording, espeak-ng questions, bad files."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from conftest import JFK_TEXT, ROOT

from assistant.errors import AudioError, ModelError
from assistant.speech import SAMPLE_RATE
from assistant.speech.audio import load_audio, probe, stream_audio
from assistant.speech.models import speech_model_dir
from assistant.speech.transcriber import Transcriber
from bench.speech import word_error_rate


@pytest.fixture(scope="module")
def tiny() -> Transcriber:
    t = Transcriber("tiny.en")
    t.load()
    return t


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Transcriber:
    t = Transcriber("base", home=tmp_path_factory.mktemp("speech-home"))
    t.load()  # joins the two pip-installed halves into the models folder and checks the SHA-256
    return t


def encode(source: Path, dest: Path, codec: str, rate: int | None = None) -> Path:
    """Re-encode a WAV with PyAV (FFmpeg): flac, mp3, opus in ogg, aac in m4a."""
    import av

    with av.open(str(source)) as src, av.open(str(dest), "w") as out:
        in_stream = src.streams.audio[0]
        stream = out.add_stream(codec, rate=rate or in_stream.rate)
        stream.layout = "mono"
        resampler = av.audio.resampler.AudioResampler(format=stream.format.name, layout="mono", rate=stream.rate)
        for frame in src.decode(in_stream):
            for piece in resampler.resample(frame):
                for packet in stream.encode(piece):
                    out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return dest


def write_wav(path: Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes())
    return path


def test_a_real_human_recording_is_transcribed_almost_word_for_word(tiny: Transcriber, jfk_wav: Path) -> None:
    result = tiny.transcribe_file(jfk_wav)
    assert result.language == "en"
    assert result.duration_s == pytest.approx(11.0, abs=0.05)
    assert word_error_rate(JFK_TEXT, result.text) <= 0.1, result.text
    assert 0 < result.real_time_factor < 1  # faster than the audio plays, even on 2 busy cores
    assert result.segments and result.segments[0].start < 1.0
    assert result.timestamped().startswith("[0:00] ")


def test_spoken_questions_in_every_format_come_out_as_their_words(tiny: Transcriber, say, tmp_path: Path) -> None:
    wav = say("What is the capital of France?")
    with wave.open(str(wav)) as w:
        assert w.getframerate() != SAMPLE_RATE  # espeak speaks at 22,050 Hz: the app must resample
    files = [wav, encode(wav, tmp_path / "q.flac", "flac"), encode(wav, tmp_path / "q.mp3", "mp3", 44100),
             encode(wav, tmp_path / "q.ogg", "libopus", 48000), encode(wav, tmp_path / "q.m4a", "aac", 44100)]
    for path in files:
        text = tiny.transcribe_file(path).text.lower()
        assert "capital" in text and "france" in text, (path.suffix, text)


def test_the_multilingual_model_detects_the_language(base: Transcriber, say, jfk_wav: Path) -> None:
    french = base.transcribe_file(say("Bonjour. Je voudrais savoir quelle est la capitale de la France, s'il vous plaît.",
                                      voice="fr", speed=130))
    assert french.language == "fr", french.text
    assert "capitale" in french.text.lower() and "bonjour" in french.text.lower(), french.text
    english = base.transcribe_file(jfk_wav)
    assert english.language == "en"
    assert word_error_rate(JFK_TEXT, english.text) <= 0.1, english.text


def test_the_base_model_is_assembled_once_and_kept(base: Transcriber) -> None:
    folder = speech_model_dir("base", base.home)
    assert folder.parent == base.home / "models"
    assert (folder / "model.bin").stat().st_size == 145_217_532
    before = (folder / "model.bin").stat().st_mtime_ns
    assert speech_model_dir("base", base.home) == folder
    assert (folder / "model.bin").stat().st_mtime_ns == before  # not joined again
    assert not [p for p in folder.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_missing_or_broken_model_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="neither tiny.en, base, nor a folder"):
        speech_model_dir(str(tmp_path / "nowhere"))
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="model.bin, tokenizer.json, vocabulary.txt missing"):
        Transcriber(str(tmp_path / "half")).load()


def test_speech_after_a_long_silence_is_timed_where_it_is_said(tiny: Transcriber, jfk_wav: Path) -> None:
    """A meeting with a long quiet stretch: no segment runs across it, and the words after it start after it."""
    with wave.open(str(jfk_wav)) as src:
        speech = np.frombuffer(src.readframes(src.getnframes()), dtype=np.int16).astype(np.float32) / 32768
    gap_end = (speech.size + 48 * SAMPLE_RATE) / SAMPLE_RATE
    result = tiny.transcribe(np.concatenate([speech, np.zeros(48 * SAMPLE_RATE, dtype=np.float32), speech]))
    before = [s for s in result.segments if s.start < gap_end - 40]
    after = [s for s in result.segments if s.start >= gap_end - 1]
    assert before and after, [(s.start, s.end) for s in result.segments]
    assert all(s.end < speech.size / SAMPLE_RATE + 2 for s in before), [(s.start, s.end) for s in before]
    assert abs(after[0].start - gap_end) < 1.0, after[0].start
    assert len(before) + len(after) == len(result.segments)
    assert word_error_rate(JFK_TEXT, " ".join(s.text for s in after)) <= 0.1


def test_silence_gives_no_words_and_no_invented_ones(tiny: Transcriber, tmp_path: Path) -> None:
    short = write_wav(tmp_path / "blip.wav", np.zeros(int(0.2 * SAMPLE_RATE)))
    result = tiny.transcribe_file(short)
    assert result.text == ""
    assert result.duration_s == pytest.approx(0.2, abs=0.01)
    # Five seconds of quiet room noise: Whisper alone tends to "hear" words in it; the VAD keeps them out.
    noise = np.random.default_rng(0).normal(0, 0.002, 5 * SAMPLE_RATE)
    assert tiny.transcribe(noise.astype(np.float32)).text == ""


@pytest.mark.parametrize("name, content, message", [
    ("empty.wav", b"", "is empty"),
    ("notes.mp3", b"%PDF-1.4\n" + bytes(range(256)) * 40, "not an audio file"),
    ("words.ogg", b"plain text, not sound\n" * 100, "not an audio file"),
])
def test_files_that_are_not_audio_say_so_before_any_model_loads(tmp_path: Path, name: str, content: bytes,
                                                                 message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    t = Transcriber("tiny.en")
    with pytest.raises(AudioError, match=message):
        t.transcribe_file(path)
    assert not t.loaded


def test_a_missing_file_a_folder_and_a_damaged_file(tiny: Transcriber, tmp_path: Path, jfk_wav: Path) -> None:
    with pytest.raises(AudioError, match="does not exist"):
        tiny.transcribe_file(tmp_path / "gone.wav")
    with pytest.raises(AudioError, match="is a folder"):
        tiny.transcribe_file(tmp_path)
    # A FLAC file cut off a third of the way through and its tail overwritten: what can be read is
    # transcribed or the damage is named; either way it ends, and quickly.
    flac = encode(jfk_wav, tmp_path / "jfk.flac", "flac")
    data = bytearray(flac.read_bytes())
    cut = len(data) // 3
    data[cut:cut + 4000] = bytes(4000)
    damaged = tmp_path / "damaged.flac"
    damaged.write_bytes(bytes(data[: cut + 4000]))
    start = time.perf_counter()
    try:
        text = tiny.transcribe_file(damaged).text.lower()
        assert "fellow americans" in text  # the undamaged first third
    except AudioError as exc:
        assert "damaged" in str(exc)
    assert time.perf_counter() - start < 30


def long_recording(path: Path, speech: np.ndarray, hours: float = 2.0, every_s: int = 600) -> Path:
    """hours of 16 kHz WAV, near-silent but for the speech every `every_s` seconds, written a minute at a time."""
    rng = np.random.default_rng(1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        for minute in range(int(hours * 60)):
            block = rng.normal(0, 0.001, 60 * SAMPLE_RATE)
            if (minute * 60) % every_s == 0:
                block[: speech.size] += speech
            w.writeframes((np.clip(block, -1, 1) * 32767).astype(np.int16).tobytes())
    return path


@pytest.mark.slow
def test_a_two_hour_file_streams_in_bounded_memory_reports_progress_and_cancels(tiny: Transcriber, jfk_wav: Path,
                                                                                tmp_path: Path) -> None:
    path = long_recording(tmp_path / "two-hours.wav", load_audio(jfk_wav))
    assert path.stat().st_size > 230_000_000
    assert probe(path).duration_s == pytest.approx(7200, abs=1)

    # Decoding all of it in a process of its own: its peak memory stays far below the 460 MB the whole
    # file would take as float32 samples.
    code = ("import resource, sys; from pathlib import Path; from assistant.speech.audio import stream_audio\n"
            "n = sum(b.size for b in stream_audio(Path(sys.argv[1])))\n"
            "print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)")
    baseline = subprocess.run([sys.executable, "-c", "import resource, numpy, av; "
                               "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)"],
                              capture_output=True, text=True, check=True, cwd=ROOT)
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True, cwd=ROOT)
    samples, peak_mb = map(int, out.stdout.split())
    assert samples == 7200 * SAMPLE_RATE
    assert peak_mb - int(baseline.stdout) < 150, f"decoding used {peak_mb} MB at peak"

    # Transcribing: progress as it goes, and Cancel stops it within a block, keeping what was heard.
    seen: list[tuple[float, float | None]] = []
    cancel = threading.Event()

    def progress(done: float, total: float | None) -> None:
        seen.append((done, total))
        if done >= 900:
            cancel.set()

    start = time.perf_counter()
    result = tiny.transcribe_file(path, progress, cancel)
    assert result.cancelled
    assert time.perf_counter() - start < 120
    assert all(total == pytest.approx(7200, abs=1) for _, total in seen)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert 900 <= result.duration_s <= 1300
    assert result.text.lower().count("your country") >= 2  # at 0:00 and 10:00
    assert any(s.start >= 590 for s in result.segments)  # times run on across blocks


def test_blocks_are_cut_at_a_pause_not_inside_a_word(jfk_wav: Path, tmp_path: Path) -> None:
    speech = load_audio(jfk_wav)
    # 25 s: speech, 1 s of silence, speech again; blocks of 12 s must end inside the silence (11-12 s).
    audio = np.concatenate([speech, np.zeros(SAMPLE_RATE), speech[: 13 * SAMPLE_RATE]])
    path = write_wav(tmp_path / "two.wav", audio)
    blocks = list(stream_audio(path, block_s=12.0))
    assert sum(b.size for b in blocks) == audio.size
    assert 11.0 <= blocks[0].size / SAMPLE_RATE <= 12.0


def test_cli_transcribe_and_ask_by_audio(jfk_wav: Path, say, tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "assistant"]
    out = subprocess.run([*cli, "transcribe", str(jfk_wav), "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert set(result) >= {"text", "language", "duration_s", "seconds", "real_time_factor"}
    assert word_error_rate(JFK_TEXT, result["text"]) <= 0.1
    assert result["language"] == "en" and result["duration_s"] == pytest.approx(11.0, abs=0.05)

    bad = tmp_path / "photo.wav"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(2000))
    out = subprocess.run([*cli, "transcribe", str(bad)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "photo.wav is not an audio file" in out.stderr and "Traceback" not in out.stderr

    question = say("What is the capital of France?")
    out = subprocess.run([*cli, "ask", "--audio", str(question), "--json", "--max-tokens", "24", "--temperature", "0"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    heard = answer["transcript"]["text"].lower()
    assert "capital" in heard and "france" in heard, heard
    assert answer["answer"].strip() and answer["completion_tokens"] > 0
