"""Speech to text, offline: audio decoding (audio.py), Whisper models (models.py), transcription (transcriber.py).

Nothing here imports Qt; the microphone lives in assistant/ui/voice.py and hands its samples here.
"""

from __future__ import annotations

SAMPLE_RATE = 16_000  # what Whisper was trained on; everything is resampled to it
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".webm")
