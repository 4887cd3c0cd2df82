"""Deterministic test audio and real media files (WAV, MP3, M4A, OGG, WebM, FLAC, MOV), written with PyAV.

Every encoder used here ships in PyAV's wheels (libmp3lame, aac, libopus, flac, mpeg4), so tests, the demo and
benchmarks need no system FFmpeg.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

#: extension -> (container format, audio codec, sample format, native rate or None)
FORMATS: dict[str, tuple[str, str, str, int | None]] = {
    ".wav": ("wav", "pcm_s16le", "s16", None),
    ".mp3": ("mp3", "libmp3lame", "fltp", None),
    ".m4a": ("ipod", "aac", "fltp", None),
    ".ogg": ("ogg", "libopus", "flt", 48000),
    ".webm": ("webm", "libopus", "flt", 48000),
    ".flac": ("flac", "flac", "s16", None),
    ".mov": ("mov", "aac", "fltp", None),
    ".mp4": ("mp4", "aac", "fltp", None),
}


def synth_speechlike(seconds: float, sampling_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """A voiced, syllable-like signal: a gliding pitch with harmonics, an amplitude envelope and light noise.

    Distinct per seed, never silent, float32 mono in [-1, 1].
    """
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sampling_rate)) / sampling_rate
    base = rng.uniform(100, 220)
    pitch = base * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t + rng.uniform(0, np.pi)))
    phase = 2 * np.pi * np.cumsum(pitch) / sampling_rate
    weights = rng.uniform(0.2, 1.0, size=6)
    voice = sum(w * np.sin((k + 1) * phase) / (k + 1) for k, w in enumerate(weights))
    syllables = np.abs(np.sin(np.pi * rng.uniform(2.5, 5.0) * t)) ** 1.5
    signal = 0.3 * voice * syllables / max(1e-6, float(np.max(np.abs(voice)))) + rng.normal(0, 0.005, t.size)
    return np.clip(signal, -1, 1).astype(np.float32)


def _add_audio_stream(container: av.container.OutputContainer, rate: int, codec: str, channels: int):
    return container.add_stream(codec, rate=rate, layout="mono" if channels == 1 else "stereo")


def _encode_audio(
    container: av.container.OutputContainer, stream, samples: np.ndarray, rate: int, sample_format: str
) -> None:
    """Encode ``samples`` (mono, or [channels, n]) into ``stream``, frame by frame."""
    data = np.atleast_2d(np.asarray(samples, dtype=np.float32))
    layout = "mono" if data.shape[0] == 1 else "stereo"
    frame_size = stream.codec_context.frame_size or 1024
    pts = 0
    for start in range(0, data.shape[1], frame_size):
        chunk = data[:, start : start + frame_size]
        if sample_format == "s16":
            pcm = (np.clip(chunk, -1, 1) * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(pcm.T.reshape(1, -1).copy(), format="s16", layout=layout)
        elif sample_format == "flt":
            frame = av.AudioFrame.from_ndarray(chunk.T.reshape(1, -1).copy(), format="flt", layout=layout)
        else:  # planar float
            frame = av.AudioFrame.from_ndarray(chunk.copy(), format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = pts
        frame.time_base = Fraction(1, rate)
        pts += chunk.shape[1]
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def write_audio(path: str | Path, samples: np.ndarray, sampling_rate: int, *, codec: str | None = None) -> Path:
    """Write mono (or [channels, n]) float samples in the format the extension names."""
    path = Path(path)
    fmt, default_codec, sample_format, native_rate = FORMATS[path.suffix.lower()]
    data = np.asarray(samples, dtype=np.float32)
    rate = sampling_rate
    if native_rate and native_rate != sampling_rate:  # Opus only takes 48 kHz and a few others
        import soxr

        data = soxr.resample(data.T, sampling_rate, native_rate).T.astype(np.float32)
        rate = native_rate
    with av.open(str(path), "w", format=fmt) as container:
        stream = _add_audio_stream(container, rate, codec or default_codec, np.atleast_2d(data).shape[0])
        _encode_audio(container, stream, data, rate, sample_format)
    return path


def write_clip_mov(
    path: str | Path, samples: np.ndarray, sampling_rate: int, *, with_video: bool = True, with_audio: bool = True
) -> Path:
    """A real video clip: a small mpeg4 video stream plus an AAC audio stream, like a reference .mov."""
    path = Path(path)
    seconds = len(samples) / sampling_rate
    with av.open(str(path), "w", format="mov" if path.suffix.lower() == ".mov" else None) as container:
        # Every stream must exist before the first packet is muxed.
        audio = _add_audio_stream(container, sampling_rate, "aac", 1) if with_audio else None
        if with_video:
            video = container.add_stream("mpeg4", rate=10)
            video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
            for i in range(max(1, int(seconds * 10))):
                image = np.full((64, 64, 3), (i * 8) % 255, dtype=np.uint8)
                for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
            for packet in video.encode(None):
                container.mux(packet)
        if audio is not None:
            _encode_audio(container, audio, samples, sampling_rate, "fltp")
    return path
