"""Audio files to 16 kHz mono float32 samples, streamed in blocks so a two-hour file never sits in memory.

PyAV (FFmpeg, installed with faster-whisper) decodes and resamples every format: wav, flac, mp3, ogg,
opus, m4a... Blocks end at the quietest moment near their end, so a word is not cut in two between
two transcriptions.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assistant.errors import AudioError
from assistant.speech import SAMPLE_RATE

BLOCK_S = 300.0  # seconds per block: 19 MB of float32, about 15 s of tiny.en on 2 cores
CUT_SEARCH_S = 10.0  # look this far back from a block's end for a pause to cut at
CUT_WINDOW_S = 0.1  # the loudness of 100 ms windows decides where that pause is


@dataclass
class AudioInfo:
    duration_s: float | None  # from the container; None when it does not say (some streams)
    codec: str


def probe(path: Path) -> AudioInfo:
    """Open the file far enough to say what it is; AudioError in plain words when it is not audio."""
    container = _open(path)
    with container:
        stream = container.streams.audio[0]
        return AudioInfo(_duration(container, stream), stream.codec_context.name)


def load_audio(path: Path) -> np.ndarray:
    """The whole file as one array (for short clips: a spoken question)."""
    blocks = list(stream_audio(path, block_s=float("inf")))
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)


def stream_audio(path: Path, block_s: float = BLOCK_S) -> Iterator[np.ndarray]:
    """Yield float32 blocks of about block_s seconds (the last one shorter), cut at pauses."""
    import av
    import av.audio.resampler
    import av.error

    block = int(block_s * SAMPLE_RATE) if block_s != float("inf") else None
    pending: list[np.ndarray] = []
    held = total = 0
    container = _open(path)
    with container:
        stream = container.streams.audio[0]
        resampler = av.audio.resampler.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        try:
            for frame in _frames(container, stream):
                for out in resampler.resample(frame):
                    samples = out.to_ndarray().reshape(-1)
                    pending.append(samples)
                    held += samples.size
                    total += samples.size
                if block is not None and held >= block:
                    data = np.concatenate(pending)
                    cut = _quiet_cut(data, block)
                    yield data[:cut].astype(np.float32) / 32768.0
                    pending, held = [data[cut:]], data.size - cut
            for out in resampler.resample(None):  # what the resampler still holds
                pending.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as exc:
            raise AudioError(f"{path.name} is damaged: decoding failed after {total / SAMPLE_RATE:.1f} s of audio "
                             f"({_reason(exc)}).") from None
    if pending:
        data = np.concatenate(pending)
        if data.size:
            yield data.astype(np.float32) / 32768.0


def _open(path: Path):
    import av
    import av.error

    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise AudioError(f"{path} does not exist.") from None
    except OSError as exc:
        raise AudioError(f"{path.name} cannot be read: {exc.strerror or exc}.") from None
    if path.is_dir():
        raise AudioError(f"{path.name} is a folder, not an audio file.")
    if size == 0:
        raise AudioError(f"{path.name} is empty: there is no audio in it.")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except PermissionError:
        raise AudioError(f"{path.name} cannot be read: permission denied.") from None
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise AudioError(f"{path.name} is not an audio file this app can read ({_reason(exc)}).") from None
    if not container.streams.audio:
        other = [f"{st.type} ({st.codec_context.name})" for st in container.streams if st.codec_context is not None]
        container.close()
        held = f": it holds {', '.join(other)}" if other else ""
        raise AudioError(f"{path.name} is not an audio file, there is no sound in it{held}.")
    return container


def _frames(container, stream):
    for packet in container.demux(stream):
        yield from packet.decode()


def _duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # av.time_base
    return None


def _quiet_cut(data: np.ndarray, block: int) -> int:
    """The start of the quietest 100 ms window in the CUT_SEARCH_S before sample `block`."""
    window = int(CUT_WINDOW_S * SAMPLE_RATE)
    start = max(0, block - int(CUT_SEARCH_S * SAMPLE_RATE))
    region = data[start:block].astype(np.float32)
    n = region.size // window
    if n < 2:
        return block
    energy = np.square(region[: n * window].reshape(n, window)).mean(axis=1)
    return start + int(np.argmin(energy)) * window + window // 2


def _reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(":", 1)[-1].strip() if ":" in text and "Errno" in text else text
