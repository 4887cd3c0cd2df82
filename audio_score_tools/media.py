"""Deterministic test audio and real media files (WAV, MP3, M4A, OGG, WebM, FLAC, MOV/MP4), written with PyAV.

PyAV's wheels ship the encoders used here (libmp3lame, aac, libopus, flac, mpeg4); where a build lacks one,
:func:`write_audio` encodes with imageio-ffmpeg's binary instead, so tests, the demo and benchmarks never need
a system FFmpeg.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

#: extension -> (container format, audio codec, sample format fed to the encoder, fixed rate or None)
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

    Speech-like rather than a pure tone so that codecs, resamplers and encoders see a realistic spectrum; distinct
    per seed, never silent, float32 mono in [-1, 1].
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
    """Encode ``samples`` (mono, or [channels, n]) into ``stream``, one encoder frame at a time."""
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


def has_encoder(codec: str) -> bool:
    """Whether PyAV's bundled FFmpeg can encode ``codec`` (wheels differ: some lack libmp3lame or libopus)."""
    try:
        av.codec.Codec(codec, "w")
    except Exception:  # PyAV raises UnknownCodecError (a ValueError) or FFmpegError depending on the version
        return False
    return True


def write_audio(path: str | Path, samples: np.ndarray, sampling_rate: int, *, codec: str | None = None) -> Path:
    """Write mono (or [channels, n]) float samples in the format the extension names.

    Opus only takes 48 kHz (and a few lower rates), so it is resampled to 48 kHz first, as a browser would
    record it. Without the encoder in PyAV, imageio-ffmpeg's binary encodes a temporary WAV instead; a
    RuntimeError naming the codec means neither has it.
    """
    path = Path(path)
    fmt, default_codec, sample_format, fixed_rate = FORMATS[path.suffix.lower()]
    codec = codec or default_codec
    data = np.asarray(samples, dtype=np.float32)
    rate = sampling_rate
    if fixed_rate and fixed_rate != sampling_rate:
        import soxr

        data = soxr.resample(data.T, sampling_rate, fixed_rate).T.astype(np.float32)
        rate = fixed_rate
    if not has_encoder(codec):
        return _write_with_ffmpeg_binary(path, data, rate, fmt, codec)
    with av.open(str(path), "w", format=fmt) as container:
        stream = _add_audio_stream(container, rate, codec, np.atleast_2d(data).shape[0])
        _encode_audio(container, stream, data, rate, sample_format)
    return path


def _write_with_ffmpeg_binary(path: Path, data: np.ndarray, rate: int, fmt: str, codec: str) -> Path:
    import imageio_ffmpeg

    with tempfile.TemporaryDirectory(prefix="audio-score-media-") as tmp:
        wav = write_audio(Path(tmp) / "in.wav", data, rate)
        command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(wav)]
        result = subprocess.run([*command, "-c:a", codec, "-f", fmt, str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"no {codec} encoder in PyAV or imageio-ffmpeg: {result.stderr.strip()[-300:]}")
    return path


def write_clip_mov(
    path: str | Path, samples: np.ndarray, sampling_rate: int, *, with_video: bool = True, with_audio: bool = True
) -> Path:
    """A real video clip like a reference .mov: a 64x64, 10 fps mpeg4 video stream plus an AAC audio stream.

    ``with_audio=False`` makes a video-only file (the "no audio stream" case); ``.mp4`` paths work too.
    """
    path = Path(path)
    seconds = len(samples) / sampling_rate
    with av.open(str(path), "w", format="mov" if path.suffix.lower() == ".mov" else None) as container:
        # Every stream must exist before the first packet is muxed.
        audio = _add_audio_stream(container, sampling_rate, "aac", 1) if with_audio else None
        if with_video:
            video = container.add_stream("mpeg4", rate=10)
            video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
            for i in range(max(1, int(seconds * 10))):
                image = np.full((64, 64, 3), (i * 8) % 255, dtype=np.uint8)  # a slowly brightening frame
                for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
            for packet in video.encode(None):
                container.mux(packet)
        if audio is not None:
            _encode_audio(container, audio, samples, sampling_rate, "fltp")
    return path


# --- committed speech sets (scripts/make_speech.py, scripts/make_corpus.py) ------------------------------------
# Encoded with imageio-ffmpeg's binary and bit-exact flags, so a rerun of a script rewrites the same bytes.

_BITEXACT = ["-map_metadata", "-1", "-fflags", "+bitexact", "-flags", "+bitexact"]


def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def encode_reference_mov(wav: Path, out: Path) -> None:
    """AAC 24 kb/s mono 16 kHz audio plus a 64x64, 5 fps grey mpeg4 video stream, as a reference clip is stored.

    The video's length is the audio's, given up front (``-shortest`` lets a busy machine add a frame now and then,
    which breaks reproducibility)."""
    import wave

    with wave.open(str(wav), "rb") as source:
        seconds = f"{source.getnframes() / source.getframerate():.3f}"
    cmd = [_ffmpeg(), "-v", "error", "-y", "-f", "lavfi", "-i", f"color=c=gray:s=64x64:r=5:d={seconds}", "-i", str(wav)]
    cmd += ["-t", seconds, "-map", "0:v", "-map", "1:a", "-c:v", "mpeg4", "-q:v", "31"]
    cmd += ["-c:a", "aac", "-b:a", "24k", "-ac", "1", "-ar", "16000", *_BITEXACT, str(out)]
    subprocess.run(cmd, check=True)


def encode_upload_opus(wav: Path, out: Path, rate: int | None = 16000) -> None:
    """Opus 16 kb/s mono in Ogg, as a browser would upload a short recording; ``rate``: the sample rate the
    stream declares (None: the WAV's own; the espeak-ng set was made so)."""
    cmd = [_ffmpeg(), "-v", "error", "-y", "-i", str(wav), "-c:a", "libopus", "-b:a", "16k", "-ac", "1"]
    if rate is not None:
        cmd += ["-ar", str(rate)]
    subprocess.run([*cmd, *_BITEXACT, str(out)], check=True)


def render_takes(
    takes: list[dict[str, str]],
    out: Path,
    speak: Callable[[dict[str, str], Path], None],
    upload_rate: int | None = 16000,
) -> None:
    """Synthesise every take of a manifest into ``out``: ``speak(take, wav)`` writes the take's WAV; a reference
    becomes ``take["file"]`` (a .mov) with its text beside it, any other take an Ogg/Opus upload declaring
    ``upload_rate``."""
    with tempfile.TemporaryDirectory(prefix="audio-score-render-") as tmp:
        wav = Path(tmp) / "take.wav"
        for take in takes:
            speak(take, wav)
            path = out / take["file"]
            path.parent.mkdir(parents=True, exist_ok=True)
            if take["variant"] == "reference":
                encode_reference_mov(wav, path)
                path.with_suffix(".txt").write_text(take["text"] + "\n")
            else:
                encode_upload_opus(wav, path, upload_rate)
