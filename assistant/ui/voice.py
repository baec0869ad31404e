"""Voice input: the microphone (QtMultimedia) and the thread that turns speech into text (assistant.speech).

The Recorder asks for 16 kHz mono 16-bit samples, what Whisper wants, so nothing is converted on the
way; where a device will not give that, it records the device's own format and converts when done.
It lives on the UI thread (QAudioSource delivers through the event loop, a few KB at a time) and does
nothing slow there. Transcription runs on the SpeechWorker's own thread.
"""

from __future__ import annotations

import logging
import math
import threading
import time

import numpy as np
from PySide6.QtCore import QElapsedTimer, QObject, QTimer, Signal, Slot
from PySide6.QtMultimedia import QAudioDevice, QAudioFormat, QAudioSource, QMediaDevices, QtAudio

from assistant.errors import AssistantError
from assistant.speech import SAMPLE_RATE

log = logging.getLogger(__name__)

MIN_RECORDING_S = 0.3  # shorter than this is a slip of the finger, not a question
MAX_RECORDING_S = 300.0  # a held button longer than this is stuck: stop and transcribe what is there
LEVEL_FLOOR_DB = -60.0  # the level meter shows -60..0 dBFS
# A working microphone sends samples all the time, silence included. None for this long means it is gone:
# neither PulseAudio nor Qt reports an unplugged or dead device to a recording in progress, they just stop.
STALL_S = 2.0
FIRST_SOUND_S = 6.0  # opening a stream can take a second or two the first time (PulseAudio, measured 0.1-1.9 s)


def input_devices() -> list[QAudioDevice]:
    return list(QMediaDevices.audioInputs())


def find_device(description: str) -> tuple[QAudioDevice | None, str]:
    """The input named in Settings, else the default; with a sentence for the user when it had to fall back."""
    devices = input_devices()
    if not devices:
        return None, ""
    if description:
        for device in devices:
            if device.description() == description:
                return device, ""
    default = QMediaDevices.defaultAudioInput()
    chosen = default if not default.isNull() else devices[0]
    note = (f"The microphone “{description}” chosen in Settings is not connected; using “{chosen.description()}”."
            if description else "")
    return chosen, note


class Recorder(QObject):
    """Hold-to-talk recording. start() then stop() (keep) or cancel() (discard)."""

    live = Signal()  # the first sound has arrived: the user can speak now
    level = Signal(float)  # 0..1, a few times a second
    elapsed = Signal(float)  # seconds recorded so far
    recorded = Signal(object)  # float32 samples at 16 kHz, after stop()
    failed = Signal(str)  # the microphone could not be used: a sentence for the user; recording has stopped
    discarded = Signal(str)  # stopped, but nothing worth transcribing (too short): why
    notice = Signal(str)  # something worth saying that does not stop the recording

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.source: QAudioSource | None = None
        self.device: QAudioDevice | None = None
        self._io = None
        self._format: QAudioFormat | None = None
        self._chunks: list[bytes] = []
        self._last_data_ms = 0
        self._clock = QElapsedTimer()
        self._tick = QTimer(self)
        self._tick.setInterval(100)
        self._tick.timeout.connect(self._on_tick)
        self._devices = QMediaDevices(self)
        self._devices.audioInputsChanged.connect(self._check_device)

    @property
    def recording(self) -> bool:
        return self.source is not None

    @property
    def is_live(self) -> bool:
        """Sound is arriving (the first moment after start() can be silent while the stream opens)."""
        return bool(self._chunks)

    def start(self, description: str = "") -> bool:
        """Start recording from the named device (or the default); False, with failed emitted, when it cannot."""
        if self.recording:
            return True
        device, note = find_device(description)
        if device is None:
            self.failed.emit("No microphone was found. Connect one (and check it is not muted in the system's "
                             "sound settings), or type your question.")
            return False
        if note:
            self.notice.emit(note)
        wanted = QAudioFormat()
        wanted.setSampleRate(SAMPLE_RATE)
        wanted.setChannelCount(1)
        wanted.setSampleFormat(QAudioFormat.SampleFormat.Int16)
        fmt = wanted if device.isFormatSupported(wanted) else device.preferredFormat()
        source = QAudioSource(device, fmt, self)
        io = source.start()
        if io is None or source.error() != QtAudio.Error.NoError:
            error = source.error()
            source.deleteLater()
            self.failed.emit(_open_error(device, error))
            return False
        self.source, self.device, self._io, self._format = source, device, io, fmt
        self._chunks = []
        self._last_data_ms = 0
        io.readyRead.connect(self._read)
        self._clock.start()
        self._tick.start()
        return True

    def stop(self) -> None:
        """Stop and emit recorded (or failed, when too short to be speech)."""
        if not self.recording:
            return
        self._read()
        samples = self._finish()
        if samples.size < MIN_RECORDING_S * SAMPLE_RATE:
            self.discarded.emit("That was too short to hear anything: hold the button while you speak.")
            return
        self.recorded.emit(samples)

    def cancel(self) -> None:
        if self.recording:
            self._finish()

    def _finish(self) -> np.ndarray:
        self._tick.stop()
        source, self.source = self.source, None
        source.stop()
        source.deleteLater()
        data = b"".join(self._chunks)
        self._chunks = []
        self._io = None
        return _to_whisper(data, self._format)

    def _read(self) -> None:
        if self._io is None:
            return
        data = bytes(self._io.readAll())
        if not data:
            return
        if not self._chunks:
            self.live.emit()
        self._last_data_ms = self._clock.elapsed()
        self._chunks.append(data)
        if self._format.sampleFormat() == QAudioFormat.SampleFormat.Int16:
            samples = np.frombuffer(data[: len(data) // 2 * 2], dtype=np.int16).astype(np.float32)
            rms = math.sqrt(float(np.mean(np.square(samples)))) if samples.size else 0.0
            db = 20 * math.log10(rms / 32768.0) if rms > 0 else LEVEL_FLOOR_DB
            self.level.emit(max(0.0, min(1.0, 1 - db / LEVEL_FLOOR_DB)))

    def _on_tick(self) -> None:
        # Errors are polled here rather than taken from stateChanged, whose QAudio::State argument PySide
        # cannot always pass to a Python slot.
        error = self.source.error()
        if self.source.state() == QtAudio.State.StoppedState and error != QtAudio.Error.NoError:
            device = self.device
            self._finish()
            self.failed.emit(_open_error(device, error))
            return
        seconds = self._clock.elapsed() / 1000
        if not self._chunks and seconds > FIRST_SOUND_S:
            self._lost(f"sent no sound for {FIRST_SOUND_S:.0f} seconds after it was opened")
            return
        if self._chunks and seconds - self._last_data_ms / 1000 > STALL_S:
            self._lost(f"stopped sending sound for {STALL_S:.0f} seconds")
            return
        self.elapsed.emit(seconds)
        if seconds >= MAX_RECORDING_S:
            self.notice.emit(f"Recording stopped after {MAX_RECORDING_S / 60:.0f} minutes.")
            self.stop()

    def _check_device(self) -> None:
        if self.source is None or self.device is None:
            return
        if all(d.id() != self.device.id() for d in input_devices()):
            self._lost("was disconnected")

    def _lost(self, what: str) -> None:
        name = self.device.description() if self.device is not None else "in use"
        self._finish()
        self.failed.emit(f"The microphone “{name}” {what} while recording (unplugged, or switched off?), so the "
                         "recording was dropped. Connect it again or choose another in Settings, then hold the "
                         "button again.")


def microphone_allowed(tell) -> bool:
    """Whether the platform lets this app record (macOS asks the user once); tell() says what to do when not."""
    from PySide6.QtCore import QCoreApplication, Qt

    try:
        from PySide6.QtCore import QMicrophonePermission
    except ImportError:  # Qt < 6.5: no permission API, and none needed on Linux
        return True
    app = QCoreApplication.instance()
    permission = QMicrophonePermission()
    status = app.checkPermission(permission)
    if status == Qt.PermissionStatus.Granted:
        return True
    if status == Qt.PermissionStatus.Undetermined:
        app.requestPermission(permission, lambda _p: tell("Microphone access was answered: hold the button again to talk."))
        tell("Allow microphone access in the system's prompt, then hold the button again.")
        return False
    tell("This app is not allowed to use the microphone. Allow it in the system's privacy settings, then try again.")
    return False


def _open_error(device: QAudioDevice | None, error) -> str:
    name = f"“{device.description()}”" if device is not None else "The microphone"
    if error == QtAudio.Error.OpenError:
        return (f"The microphone {name} could not be opened: another program may be using it, or this app is not "
                "allowed to use it (check the system's privacy or sound settings).")
    return f"Recording from {name} failed ({error.name}). Try again, or choose another microphone in Settings."


def _to_whisper(data: bytes, fmt: QAudioFormat | None) -> np.ndarray:
    """Raw bytes in the device's format to float32 mono at 16 kHz."""
    if fmt is None or not data:
        return np.zeros(0, dtype=np.float32)
    kind = fmt.sampleFormat()
    S = QAudioFormat.SampleFormat
    if kind == S.Int16:
        samples = np.frombuffer(data[: len(data) // 2 * 2], dtype=np.int16).astype(np.float32) / 32768.0
    elif kind == S.Int32:
        samples = np.frombuffer(data[: len(data) // 4 * 4], dtype=np.int32).astype(np.float32) / 2147483648.0
    elif kind == S.Float:
        samples = np.frombuffer(data[: len(data) // 4 * 4], dtype=np.float32).copy()
    else:  # UInt8
        samples = (np.frombuffer(data, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    channels = max(1, fmt.channelCount())
    if channels > 1:
        samples = samples[: samples.size // channels * channels].reshape(-1, channels).mean(axis=1)
    rate = fmt.sampleRate()
    if rate != SAMPLE_RATE and samples.size:
        # Linear interpolation is enough for speech recognition; the rare device that needs it is 44.1/48 kHz.
        n = int(samples.size * SAMPLE_RATE / rate)
        samples = np.interp(np.arange(n) * (rate / SAMPLE_RATE), np.arange(samples.size), samples).astype(np.float32)
    return samples


class SpeechWorker(QObject):
    """Owns transcription on its own thread, so a long file never holds up the window or the chat."""

    warmed = Signal()
    transcribed = Signal(object, str, float)  # Transcript, what it came from ("voice" or a file path), seconds taken
    progress = Signal(float, float)  # seconds of audio done, total (0 when unknown)
    failed = Signal(str, str)  # message, what it came from

    def __init__(self) -> None:
        super().__init__()
        self.assistant = None
        self.cancel = threading.Event()  # set by the UI thread; checked between segments

    @Slot()
    def warm(self) -> None:
        """Load Whisper while the user is still speaking, so release-to-text is transcription time only."""
        try:
            self.assistant.transcriber.load()
        except AssistantError as exc:
            self.failed.emit(str(exc), "voice")
        except Exception as exc:
            log.exception("speech model load failed")
            self.failed.emit(f"The speech model could not be loaded: {exc}", "voice")
        else:
            self.warmed.emit()

    @Slot(object, float)
    def transcribe(self, samples: np.ndarray, released_at: float) -> None:
        self._run(lambda: self.assistant.transcriber.transcribe(samples, self.cancel), "voice", released_at)

    @Slot(str)
    def transcribe_file(self, path: str) -> None:
        def progress(done: float, total: float | None) -> None:
            self.progress.emit(done, total or 0.0)

        self._run(lambda: self.assistant.transcribe_file(path, progress, self.cancel), path, time.perf_counter())

    def _run(self, job, source: str, since: float) -> None:
        try:
            transcript = job()
        except AssistantError as exc:
            self.failed.emit(str(exc), source)
        except Exception as exc:
            log.exception("transcription failed")
            self.failed.emit(f"Transcription failed: {exc}", source)
        else:
            self.transcribed.emit(transcript, source, time.perf_counter() - since)
