"""Decode anything FFmpeg reads to mono float32 at the target rate: the one decoder for clips and uploads.

The cache Job decodes reference clips and the router decodes uploads through :func:`decode_audio`, so a clip
uploaded as itself yields the same samples and scores 1.0. PyAV decodes in-process (no temporary files, no
subprocess per upload); the pydub backend (the seed's choice) shells out to the ffmpeg binary. Both hand their
native-rate mono samples to the same soxr resampler, so they differ only in how FFmpeg is driven.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Literal

import av
import numpy as np
import soxr

from audio_score.errors import AudioTooLarge, EmptyAudio, UndecodableAudio

Source = bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryIO
#: Peak below this (about -80 dBFS) counts as silence: nothing a model could transcribe or compare.
SILENCE_PEAK = 1e-4
_INT_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9223372036854775808.0}


def audio_duration(samples: np.ndarray, sampling_rate: int) -> float:
    return float(len(samples)) / float(sampling_rate)


def decode_audio(
    source: Source,
    *,
    sampling_rate: int,
    max_bytes: int | None = None,
    max_seconds: float | None = None,
    backend: Literal["pyav", "pydub"] = "pyav",
    reject_silence: bool = True,
) -> np.ndarray:
    """Mono float32 samples in [-1, 1] at ``sampling_rate`` from bytes, a path or a binary file object.

    Raises :class:`AudioTooLarge` over ``max_bytes`` (before decoding) or ``max_seconds`` (as soon as decoding
    passes it), :class:`EmptyAudio` for no samples or silence only, :class:`UndecodableAudio` otherwise.
    """
    data = _read_source(source, max_bytes)
    if backend == "pyav":
        samples, native_rate = _decode_pyav(data, max_seconds)
    elif backend == "pydub":
        samples, native_rate = _decode_pydub(data, max_seconds)
    else:
        raise ValueError(f"unknown decoder backend {backend!r}; use 'pyav' or 'pydub'")
    if samples.size == 0:
        raise EmptyAudio("the audio decoded to no samples; send a recording with sound in it")
    if native_rate != sampling_rate:
        samples = soxr.resample(samples, native_rate, sampling_rate, quality="HQ")
    samples = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    if reject_silence and float(np.max(np.abs(samples))) < SILENCE_PEAK:
        raise EmptyAudio("the audio is silent (peak below -80 dBFS); check the microphone and record again")
    return samples


def _read_source(source: Source, max_bytes: int | None) -> bytes | Path:
    """Bytes stay in memory; a path stays a path (checked for size first); a file object is read once."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            size = path.stat().st_size
        except OSError:
            raise UndecodableAudio(f"audio file {path} does not exist or cannot be read") from None
        _check_size(size, max_bytes)
        if size == 0:
            raise EmptyAudio(f"audio file {path.name} is empty (0 bytes)")
        return path
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        limit = None if max_bytes is None else max_bytes + 1
        data = source.read(-1 if limit is None else limit)
    _check_size(len(data), max_bytes)
    if not data:
        raise EmptyAudio("the upload is empty (0 bytes)")
    return data


def _check_size(size: int, max_bytes: int | None) -> None:
    if max_bytes is not None and size > max_bytes:
        raise AudioTooLarge(f"the audio is {size} bytes, over the limit of {max_bytes} bytes; send a shorter file")


def _too_long(max_seconds: float) -> AudioTooLarge:
    return AudioTooLarge(f"the audio is longer than the limit of {max_seconds:g} s; trim it")


def _frame_to_mono(frame: av.AudioFrame) -> np.ndarray:
    """One decoded frame as mono float32, whatever its sample format and channel layout."""
    array = frame.to_ndarray()
    fmt = frame.format
    channels = len(frame.layout.channels) or 1
    if not fmt.is_planar:
        array = array.reshape(-1, channels).T
    name = fmt.name.rstrip("p")
    if name in _INT_SCALE:
        array = array.astype(np.float32)
        if name == "u8":
            array -= 128.0
        array /= _INT_SCALE[name]
    return array.astype(np.float32, copy=False).mean(axis=0)


def _decode_pyav(data: bytes | Path, max_seconds: float | None) -> tuple[np.ndarray, int]:
    handle: str | io.BytesIO = str(data) if isinstance(data, Path) else io.BytesIO(data)
    chunks: list[np.ndarray] = []
    total = 0
    try:
        container = av.open(handle, mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise UndecodableAudio(f"not a readable audio or video file ({_reason(exc)})") from None
    with container:
        if not container.streams.audio:
            raise UndecodableAudio("the file has no audio stream")
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate or stream.rate
        limit = None if max_seconds is None else int(max_seconds * rate) if rate else None
        try:
            for frame in container.decode(stream):
                rate = frame.sample_rate or rate
                mono = _frame_to_mono(frame)
                chunks.append(mono)
                total += mono.size
                if limit is not None and total > limit:
                    raise _too_long(max_seconds)  # type: ignore[arg-type]
        except (av.error.FFmpegError, ValueError) as exc:
            # A truncated or partly corrupt file: keep what decoded cleanly, refuse if nothing did.
            if not chunks:
                raise UndecodableAudio(f"the audio stream cannot be decoded ({_reason(exc)})") from None
    if not rate:
        raise UndecodableAudio("the audio stream has no sample rate")
    return (np.concatenate(chunks) if chunks else np.zeros(0, np.float32)), int(rate)


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(":")[-1].strip() or type(exc).__name__


def ffmpeg_binaries() -> tuple[str, str | None]:
    """The ffmpeg binary (system, else imageio-ffmpeg's) and ffprobe (system only; pydub needs it)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        import imageio_ffmpeg

        ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    return ffmpeg, shutil.which("ffprobe")


def _decode_pydub(data: bytes | Path, max_seconds: float | None) -> tuple[np.ndarray, int]:
    from pydub import AudioSegment
    from pydub.exceptions import CouldntDecodeError

    ffmpeg, ffprobe = ffmpeg_binaries()
    if ffprobe is None:
        raise UndecodableAudio("the pydub decoder needs ffprobe on PATH (apt-get install ffmpeg); or use pyav")
    AudioSegment.converter = ffmpeg
    parameters = ["-t", f"{max_seconds + 0.5:g}"] if max_seconds is not None else None
    try:
        if isinstance(data, Path):
            segment = AudioSegment.from_file(str(data), parameters=parameters)
        else:
            # pydub pipes a file object through ffmpeg's stdin, where MP4/MOV (index at the end) cannot be
            # read, so bytes go to a temporary file for this backend; the PyAV default never needs one.
            with tempfile.NamedTemporaryFile(prefix="audio-score-", suffix=".upload") as handle:
                handle.write(data)
                handle.flush()
                segment = AudioSegment.from_file(handle.name, parameters=parameters)
    except (CouldntDecodeError, IndexError, KeyError, ValueError, OSError) as exc:
        if isinstance(exc, IndexError):  # pydub's answer for a file without an audio stream
            raise UndecodableAudio("the file has no audio stream") from None
        raise UndecodableAudio(f"not a readable audio or video file ({type(exc).__name__})") from None
    samples = np.array(segment.get_array_of_samples(), dtype=np.float32)
    channels = segment.channels or 1
    samples = samples.reshape(-1, channels).mean(axis=1) / float(1 << (8 * segment.sample_width - 1))
    if max_seconds is not None and samples.size > max_seconds * segment.frame_rate:
        raise _too_long(max_seconds)
    return samples.astype(np.float32), int(segment.frame_rate)
