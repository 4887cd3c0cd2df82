"""Decode anything FFmpeg reads to mono float32 at the target rate: the one decoder for clips and uploads.

The cache Job decodes reference clips and the router decodes uploads through :func:`decode_audio`, so a clip
uploaded as itself yields the same samples and scores 1.0. PyAV (the default) decodes in-process: no temporary
file, no subprocess per upload, and ``max_seconds`` stops it after the first frames past the limit. The pydub
backend (the seed's choice) runs the ffmpeg binary that imageio-ffmpeg ships, so it needs no system FFmpeg.
Both hand their native-rate mono samples to the same soxr resampler, so they differ only in how FFmpeg is
driven and in pydub's 16-bit intermediate.

Uploads are untrusted: a header may declare any sample rate, sample size, format tag or codec id. Every way
decoding can fail therefore ends as one of the decode errors (:class:`UndecodableAudio`, :class:`EmptyAudio`,
:class:`AudioTooLarge`), which services answer with a 4xx; the known causes are checked where they arise (no
codec context, a sample rate outside :data:`MIN_SAMPLE_RATE`..:data:`MAX_SAMPLE_RATE`, nothing left after
resampling, NaN samples), and :func:`decode_audio` turns anything else a C library raises into
:class:`UndecodableAudio` at its boundary, logging it, so that an unforeseen corrupt file is still a 400.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any, BinaryIO, Literal

import av
import numpy as np
import soxr

from audio_score.errors import AudioError, AudioTooLarge, EmptyAudio, UndecodableAudio

log = logging.getLogger(__name__)

Source = bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryIO
Backend = Literal["pyav", "pydub"]

#: Peak below this (about -80 dBFS) counts as silence: nothing a model could transcribe or compare.
SILENCE_PEAK = 1e-4
#: pydub is asked for this much more than ``max_seconds``, so that "over the limit" can be told from "at it".
_PYDUB_MARGIN_S = 0.25
#: Native sample rates a real recording can have: telephone-grade 1 kHz up to studio 768 kHz. A header outside
#: this range is corrupt or crafted (and would resample to nothing, or to an enormous array).
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 768_000
_INT_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9223372036854775808.0}


def audio_duration(samples: np.ndarray, sampling_rate: int) -> float:
    """Seconds of audio in ``samples``: the one definition that limits, the cache's meta.json and logs share."""
    return float(len(samples)) / float(sampling_rate)


def decode_audio(
    source: Source,
    *,
    sampling_rate: int,
    max_bytes: int | None = None,
    max_seconds: float | None = None,
    backend: Backend = "pyav",
    reject_silence: bool = True,
) -> np.ndarray:
    """Mono float32 samples in [-1, 1] at ``sampling_rate`` from bytes, a path or a binary file object.

    The first audio stream is used, so a video clip works as well as an audio file. Raises
    :class:`AudioTooLarge` over ``max_bytes`` (checked before any decoding) or ``max_seconds`` (as soon as
    decoding passes it), :class:`EmptyAudio` for no samples or, with ``reject_silence``, silence only, and
    :class:`UndecodableAudio` for anything FFmpeg cannot read. Safe to call from several threads at once.
    """
    if backend not in ("pyav", "pydub"):
        raise ValueError(f"unknown decoder backend {backend!r}; use 'pyav' or 'pydub'")
    data = _read_source(source, max_bytes)
    try:
        if backend == "pyav":
            samples, native_rate = _decode_pyav(data, max_seconds)
        else:
            samples, native_rate = _decode_pydub(data, max_seconds)
        samples = _to_rate(samples, native_rate, sampling_rate)
    except AudioError:
        raise
    except MemoryError:
        raise AudioTooLarge("the audio needs more memory to decode than this server has; send a shorter file") from None
    except Exception as exc:
        # A corrupt or crafted file can make FFmpeg, PyAV, pydub or soxr fail in ways no one listed; the caller
        # still gets a decode error (a 4xx), and the log keeps the traceback to turn into a specific check.
        log.warning("decoder failed unexpectedly", exc_info=True, extra={"backend": backend})
        raise UndecodableAudio(f"the audio cannot be decoded ({type(exc).__name__}); re-encode the file") from None
    if reject_silence and float(np.max(np.abs(samples))) < SILENCE_PEAK:
        raise EmptyAudio("the audio is silent (peak below -80 dBFS); check the microphone and record again")
    return samples


def _to_rate(samples: np.ndarray, native_rate: int, sampling_rate: int) -> np.ndarray:
    """Finite float32 in [-1, 1] at ``sampling_rate``; a rate no recording has, or nothing left, is refused."""
    if samples.size == 0:
        raise EmptyAudio("the audio decoded to no samples; send a recording with sound in it")
    _check_rate(native_rate)
    # A float WAV may hold NaN or infinities; the resampler would smear them over the whole clip.
    samples = np.nan_to_num(np.asarray(samples, dtype=np.float32), nan=0.0, posinf=1.0, neginf=-1.0)
    if native_rate != sampling_rate:
        try:
            samples = soxr.resample(samples, native_rate, sampling_rate, quality="HQ")
        except (ValueError, RuntimeError) as exc:
            raise UndecodableAudio(f"the audio cannot be resampled from {native_rate} Hz ({exc})") from None
    if samples.size == 0:
        raise EmptyAudio("the audio is too short to resample (no samples left); send a longer recording")
    return np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)


def _check_rate(rate: int) -> int:
    """``rate`` if a recording can have it; checked as soon as a decoder knows it, before any duration limit."""
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise UndecodableAudio(
            f"the file declares a sample rate of {rate} Hz, outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz; "
            "the header is corrupt, re-encode the file"
        )
    return rate


def _read_source(source: Source, max_bytes: int | None) -> bytes | Path:
    """Bytes stay in memory; a path stays a path (its size checked first); a file object is read once.

    A file object is read at most ``max_bytes + 1`` bytes, so an oversized stream is refused without being
    held in memory whole.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            size = path.stat().st_size
        except OSError:
            missing = UndecodableAudio(f"audio file {path} does not exist or cannot be read; check the path")
            raise missing from None
        if path.is_dir():
            raise UndecodableAudio(f"{path} is a folder, not an audio file; name a file in it")
        _check_size(size, max_bytes)
        if size == 0:
            raise EmptyAudio(f"audio file {path.name} is empty (0 bytes); send a recording with sound in it")
        return path
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        data = source.read(-1 if max_bytes is None else max_bytes + 1)
    _check_size(len(data), max_bytes)
    if not data:
        raise EmptyAudio("the upload is empty (0 bytes); send a recording with sound in it")
    return data


def _check_size(size: int, max_bytes: int | None) -> None:
    if max_bytes is not None and size > max_bytes:
        raise AudioTooLarge(
            f"the audio is {size} bytes, over the limit of {max_bytes} bytes; send a shorter or more compressed file"
        )


def _too_long(max_seconds: float) -> AudioTooLarge:
    return AudioTooLarge(f"the audio is longer than the limit of {max_seconds:g} s; send a shorter recording")


def _frame_to_mono(frame: av.AudioFrame) -> np.ndarray:
    """One decoded frame as mono float32 (the mean of its channels), whatever its sample format."""
    array = frame.to_ndarray()
    fmt = frame.format
    if not fmt.is_planar:  # packed: one row of interleaved samples
        array = array.reshape(-1, len(frame.layout.channels) or 1).T
    name = fmt.name.rstrip("p")
    if name in _INT_SCALE:
        array = array.astype(np.float32)
        if name == "u8":
            array -= 128.0
        array /= _INT_SCALE[name]
    return array.astype(np.float32, copy=False).mean(axis=0)


def _decode_pyav(data: bytes | Path, max_seconds: float | None) -> tuple[np.ndarray, int]:
    """Decode frame by frame, so the duration limit is enforced after reading only what it allows."""
    handle: str | io.BytesIO = str(data) if isinstance(data, Path) else io.BytesIO(data)
    chunks: list[np.ndarray] = []
    total = 0
    try:
        container = av.open(handle, mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise UndecodableAudio(
            f"not a readable audio or video file ({_reason(exc)}); send WAV, MP3, M4A, ..."
        ) from None
    with container:
        if not container.streams.audio:
            raise UndecodableAudio("the file has no audio stream; send a recording that contains sound")
        stream = container.streams.audio[0]
        if stream.codec_context is None:  # FFmpeg has no decoder for the codec id the container declares
            raise UndecodableAudio(
                "the file's audio codec is unknown or not one FFmpeg can decode; send WAV, MP3, M4A, ..."
            )
        rate = stream.codec_context.sample_rate or stream.rate
        if rate:
            _check_rate(rate)
        try:
            for frame in container.decode(stream):
                if frame.sample_rate and frame.sample_rate != rate:
                    rate = _check_rate(frame.sample_rate)
                mono = _frame_to_mono(frame)
                chunks.append(mono)
                total += mono.size
                if max_seconds is not None and rate and total > max_seconds * rate:
                    raise _too_long(max_seconds)
        except (av.error.FFmpegError, ValueError) as exc:
            # A truncated or partly corrupt file: keep what decoded cleanly, refuse if nothing did.
            if not chunks:
                raise UndecodableAudio(f"the audio stream cannot be decoded ({_reason(exc)})") from None
    if not rate:
        raise UndecodableAudio("the audio stream has no sample rate; re-encode the file")
    return (np.concatenate(chunks) if chunks else np.zeros(0, np.float32)), int(rate)


def _reason(exc: BaseException) -> str:
    """FFmpeg's own short phrase (e.g. "Invalid data found when processing input"), without the file name."""
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(":")[-1].strip() or type(exc).__name__


@functools.cache
def _pydub_segment_class() -> Any:
    """pydub's AudioSegment, pointed at imageio-ffmpeg's binary once (pydub's converter is a class attribute).

    pydub warns at import when no ffmpeg is on PATH; that is expected here, since its PATH lookup is replaced.
    ``IMAGEIO_FFMPEG_EXE`` selects another binary (imageio-ffmpeg's own setting).
    """
    import imageio_ffmpeg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        from pydub import AudioSegment

    AudioSegment.converter = imageio_ffmpeg.get_ffmpeg_exe()
    return AudioSegment


def _decode_pydub(data: bytes | Path, max_seconds: float | None) -> tuple[np.ndarray, int]:
    """pydub without ffprobe: ``from_file_using_temporary_files`` only runs the converter.

    pydub's ``from_file`` asks ffprobe for the sample format first, and imageio-ffmpeg ships no ffprobe; the
    temporary-file variant lets ffmpeg detect the format itself and write 16-bit WAV. A seekable temporary
    input is what MOV/MP4 need anyway (their index may sit at the end, which a pipe cannot reach). A duration
    limit becomes ffmpeg's ``-t``, so a long file is not decoded whole.
    """
    from pydub.exceptions import CouldntDecodeError

    segment_class = _pydub_segment_class()
    duration = None if max_seconds is None else max_seconds + _PYDUB_MARGIN_S
    try:
        with data.open("rb") if isinstance(data, Path) else io.BytesIO(data) as handle:
            # A file object (not a name) so that pydub never takes its pure-Python path for "*.wav" names:
            # every input goes through ffmpeg alike.
            segment = segment_class.from_file_using_temporary_files(handle, duration=duration)
    except CouldntDecodeError as exc:
        raise UndecodableAudio(_ffmpeg_reason(str(exc))) from None
    except (OSError, ValueError, EOFError) as exc:  # pydub's WAV parser on ffmpeg's output
        raise UndecodableAudio(f"not a readable audio or video file ({type(exc).__name__})") from None
    width = segment.sample_width
    # ffmpeg's WAV output is 16-bit; pydub has made any 8-bit data signed.
    samples = np.frombuffer(segment.raw_data, dtype=f"<i{width}").astype(np.float32)
    samples /= float(1 << (8 * width - 1))
    samples = samples.reshape(-1, segment.channels or 1).mean(axis=1)
    _check_rate(segment.frame_rate)
    if max_seconds is not None and samples.size > max_seconds * segment.frame_rate:
        raise _too_long(max_seconds)
    return samples.astype(np.float32, copy=False), int(segment.frame_rate)


def _ffmpeg_reason(message: str) -> str:
    """A short, user-facing reason from the ffmpeg stderr that pydub puts in its exception."""
    if "does not contain any stream" in message:
        return "the file has no audio stream; send a recording that contains sound"
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    last = lines[-1].split(": ")[-1] if lines else "ffmpeg failed"
    return f"not a readable audio or video file ({last[:120]}); send WAV, MP3, M4A, ..."
