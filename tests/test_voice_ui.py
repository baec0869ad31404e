"""Voice in the real window: a PulseAudio virtual microphone hears what the test plays, the app records it with
QtMultimedia, Whisper writes it down, and the question is asked. Also: cancel, unplugging, no microphone, drops."""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from conftest import JFK_TEXT
from PySide6.QtCore import QMimeData, QPoint, Qt, QUrl
from PySide6.QtGui import QDropEvent

from assistant.config import Settings
from assistant.ui.main_window import MainWindow
from bench.speech import word_error_rate


@pytest.fixture
def window(qtbot, isolated_home, virtual_microphone):
    Settings(max_tokens=24, temperature=0.0, n_ctx=2048).save()
    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    w.activateWindow()
    qtbot.waitUntil(lambda: w.model_ready, timeout=60_000)
    yield w
    w.close()


def hold_and_speak(qtbot, w: MainWindow, mic, wav: Path) -> None:
    """Press Hold to talk, play the recording into the microphone, let go when it has been heard."""
    qtbot.mousePress(w.talk_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: w.recorder.is_live, timeout=8_000)  # speak when the meter moves, as the label says
    player = mic.play(wav)
    qtbot.waitUntil(lambda: player.poll() is not None, timeout=60_000)
    qtbot.wait(400)  # the tail of the sound reaches the source a moment after paplay returns
    qtbot.mouseRelease(w.talk_button, Qt.LeftButton)


def drop(w: MainWindow, *paths: Path) -> None:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    w.dropEvent(QDropEvent(QPoint(10, 10), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier))


def test_hold_to_talk_records_the_microphone_transcribes_and_asks(qtbot, window: MainWindow, virtual_microphone, say,
                                                                  artifacts) -> None:
    w = window
    assert w.recorder.recording is False and not w.voice_bar.isVisible()
    qtbot.mousePress(w.talk_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: w.recorder.recording, timeout=5_000)
    assert w.voice_bar.isVisible() and "Opening" in w.voice_label.text()
    qtbot.waitUntil(lambda: w.recorder.is_live and "Recording from" in w.voice_label.text(), timeout=8_000)
    player = virtual_microphone.play(say("What is the capital of France?"))
    qtbot.waitUntil(lambda: w.voice_level.value() > 30, timeout=10_000)  # the meter moves with the voice
    w.grab().save(str(artifacts / "voice_recording.png"))
    qtbot.waitUntil(lambda: player.poll() is not None, timeout=30_000)
    qtbot.wait(400)
    qtbot.mouseRelease(w.talk_button, Qt.LeftButton)

    # Sent automatically: the question appears as the user's message and gets an answer.
    qtbot.waitUntil(lambda: any(b.role == "user" for b in w.chat.bubbles), timeout=30_000)
    question = next(b for b in w.chat.bubbles if b.role == "user").text.lower()
    assert "capital" in question and "france" in question, question
    assert w.last_voice_latency is not None and w.last_voice_latency < 30
    assert "Heard" in w.statusBar().currentMessage()
    qtbot.waitUntil(lambda: not w.busy and any(b.role == "assistant" and b.text for b in w.chat.bubbles),
                    timeout=60_000)
    assert not w.voice_bar.isVisible() and w.talk_button.text() == "Hold to talk"


def test_the_human_recording_through_the_microphone_without_auto_send(qtbot, window: MainWindow, virtual_microphone,
                                                                     jfk_wav: Path) -> None:
    w = window
    w.apply_settings(Settings.from_dict({**w.settings.__dict__, "voice_auto_send": False}))
    hold_and_speak(qtbot, w, virtual_microphone, jfk_wav)
    qtbot.waitUntil(lambda: w.input.toPlainText().strip() != "", timeout=30_000)
    assert word_error_rate(JFK_TEXT, w.input.toPlainText()) <= 0.15, w.input.toPlainText()
    assert not any(b.role == "user" for b in w.chat.bubbles)  # left in the box for the user to send


def test_f2_holds_to_talk_and_escape_cancels(qtbot, window: MainWindow, virtual_microphone, say) -> None:
    w = window
    w.input.setFocus()
    qtbot.keyPress(w.input, Qt.Key_F2)
    qtbot.waitUntil(lambda: w.recorder.recording, timeout=5_000)
    virtual_microphone.play(say("This should never be sent."))
    qtbot.wait(800)
    qtbot.keyClick(w.input, Qt.Key_Escape)
    assert not w.recorder.recording and not w.voice_bar.isVisible()
    qtbot.keyRelease(w.input, Qt.Key_F2)  # letting go after Esc does nothing
    qtbot.wait(1500)
    assert w.input.toPlainText() == "" and w.chat.bubbles == [] and w.transcribing is None
    assert "cancelled" in w.statusBar().currentMessage()
    # A tap too short to be speech is dropped with a hint, not transcribed.
    qtbot.keyPress(w.input, Qt.Key_F2)
    qtbot.waitUntil(lambda: w.recorder.recording, timeout=5_000)
    qtbot.keyRelease(w.input, Qt.Key_F2)
    assert not w.recorder.recording and "too short" in w.statusBar().currentMessage()


def test_a_microphone_that_goes_away_while_recording_is_said_plainly(tmp_path: Path) -> None:
    # Its own sound server, killed mid-recording: what a pulled USB microphone looks like to the app
    # (no error from Qt or PulseAudio, the sound just stops). In a process of its own, because Qt
    # connects to one sound server per process.
    code = (
        "import time\n"
        "from bench import virtual_mic\n"
        "mic = virtual_mic.start()\n"
        "from PySide6.QtWidgets import QApplication\n"
        "app = QApplication([])\n"
        "from assistant.ui.voice import Recorder\n"
        "r = Recorder(); said = []\n"
        "r.failed.connect(said.append)\n"
        "def spin(seconds, until):\n"
        "    end = time.time() + seconds\n"
        "    while time.time() < end and not until(): app.processEvents(); time.sleep(0.01)\n"
        "assert r.start('')\n"
        "spin(10, lambda: r.is_live)\n"
        "mic.process.kill()\n"
        "start = time.time(); spin(10, lambda: not r.recording)\n"
        "print(r.recording, round(time.time() - start, 1)); print(said[0] if said else '')\n"
        "mic.stop()\n"
    )
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "ASSISTANT_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0, result.stderr
    stopped, message = result.stdout.splitlines()
    assert stopped.startswith("False ") and float(stopped.split()[1]) < 5
    assert "stopped sending sound" in message and "unplugged" in message


def test_a_chosen_microphone_that_is_not_connected_falls_back_to_the_default(qtbot, window: MainWindow,
                                                                             virtual_microphone, say) -> None:
    w = window
    w.apply_settings(Settings.from_dict({**w.settings.__dict__, "microphone": "USB Headset", "voice_auto_send": False}))
    notices: list[str] = []
    w.recorder.notice.connect(notices.append)
    hold_and_speak(qtbot, w, virtual_microphone, say("What is the capital of France?"))
    assert notices and "“USB Headset” chosen in Settings is not connected" in notices[0]
    assert virtual_microphone.description in notices[0]
    qtbot.waitUntil(lambda: "france" in w.input.toPlainText().lower(), timeout=30_000)


def test_without_any_microphone_the_app_says_so(tmp_path: Path) -> None:
    # A process whose sound server does not exist sees no input devices at all.
    code = (
        "from PySide6.QtWidgets import QApplication\n"
        "app = QApplication([])\n"
        "from assistant.ui.voice import Recorder\n"
        "r = Recorder(); said = []\n"
        "r.failed.connect(said.append)\n"
        "print(r.start(''), said)\n"
    )
    env = {**os.environ, "PULSE_SERVER": f"unix:{tmp_path}/no-server", "QT_QPA_PLATFORM": "offscreen",
           "ASSISTANT_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("False") and "No microphone was found" in result.stdout, result.stdout


def test_a_dropped_recording_is_transcribed_short_into_the_box_long_into_a_saved_transcript(
        qtbot, window: MainWindow, jfk_wav: Path, tmp_path: Path) -> None:
    w = window
    drop(w, jfk_wav)
    assert w.voice_bar.isVisible() and "Transcribing jfk.wav" in w.voice_label.text()
    qtbot.waitUntil(lambda: w.transcribing is None, timeout=60_000)
    assert word_error_rate(JFK_TEXT, w.input.toPlainText()) <= 0.1
    assert not any(b.role == "user" for b in w.chat.bubbles)  # a dropped file is not sent by itself

    # Seventy seconds: a meeting, not a question. Saved with times, indexed because the setting says so.
    w.input.clear()
    w.apply_settings(Settings.from_dict({**w.settings.__dict__, "index_transcripts": True}))
    with wave.open(str(jfk_wav)) as src:
        speech = np.frombuffer(src.readframes(src.getnframes()), dtype=np.int16)
    long = np.concatenate([speech, np.zeros(48 * 16000, dtype=np.int16), speech])
    meeting = tmp_path / "meeting.wav"
    with wave.open(str(meeting), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(long.tobytes())
    drop(w, meeting)
    qtbot.waitUntil(lambda: w.voice_level.value() > 0, timeout=60_000)  # progress moves
    qtbot.waitUntil(lambda: any(b.role == "notice" and "meeting.wav" in b.text for b in w.chat.bubbles),
                    timeout=60_000)
    notice = next(b.text for b in w.chat.bubbles if b.role == "notice" and "meeting.wav" in b.text)
    saved = w.assistant.home / "transcripts" / "meeting.txt"
    assert str(saved) in notice and "indexed" in notice
    lines = saved.read_text().splitlines()
    assert lines[0].startswith("Transcript of meeting.wav (1:10")
    stamps = [line.split("]")[0] for line in lines if line.startswith("[")]
    assert stamps[0] == "[0:00" and any(s >= "[0:58" for s in stamps), stamps
    qtbot.waitUntil(lambda: not w.documents.busy, timeout=120_000)
    hits = w.assistant.search("ask not what your country can do for you", "default", k=3)
    assert hits and hits[0].file == str(saved)


def test_a_dropped_file_that_is_not_audio_is_explained(qtbot, window: MainWindow, tmp_path: Path) -> None:
    fake = tmp_path / "song.mp3"
    fake.write_text("not really a song\n" * 50)
    drop(window, fake)
    qtbot.waitUntil(lambda: any(b.role == "error" for b in window.chat.bubbles), timeout=30_000)
    error = next(b.text for b in window.chat.bubbles if b.role == "error")
    assert "song.mp3 is not an audio file" in error
    assert window.transcribing is None and not window.voice_bar.isVisible()


def test_settings_list_the_microphone_and_the_speech_models(qtbot, window: MainWindow, virtual_microphone) -> None:
    from assistant.ui.settings_dialog import SettingsDialog

    dialog = SettingsDialog(window.settings, window.tasks, "", window)
    qtbot.addWidget(dialog)
    names = [dialog.microphone.itemText(i) for i in range(dialog.microphone.count())]
    assert names[0] == "System default" and virtual_microphone.description in names
    dialog.microphone.setCurrentText(virtual_microphone.description)
    dialog.speech_model.setCurrentText("base")
    dialog.speech_language.setText("FR")
    dialog.accept()
    s = dialog.result_settings
    assert (s.microphone, s.speech_model, s.speech_language) == (virtual_microphone.description, "base", "fr")
    dialog = SettingsDialog(window.settings, window.tasks, "", window)
    dialog.speech_language.setText("french!")
    dialog.accept()
    assert dialog.result_settings is None and "language code" in dialog.error.text()
