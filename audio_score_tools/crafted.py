"""Crafted bad media for tests: headers that declare impossible parameters, containers with unknown codec ids.

Real files from :mod:`audio_score_tools.media` are valid by construction; these are the inputs an attacker or
a broken recorder sends instead. WAV headers are packed with ``struct`` field by field (so any field can hold any
value, not just what an encoder would write); the container cases start from a real file and overwrite one
identifier, so everything around the broken field stays valid and the decoder gets as far as it can.
"""

from __future__ import annotations

import struct
from pathlib import Path

import av
import numpy as np

#: WAVE_FORMAT_PCM, the format tag of plain integer PCM.
WAV_PCM = 1
#: WAVE_FORMAT_IEEE_FLOAT.
WAV_FLOAT = 3


def tone_pcm16(samples: int = 1600, amplitude: int = 10000) -> bytes:
    """Little-endian 16-bit PCM of a loud tone (so no case is refused as silent by accident)."""
    return (np.sin(np.arange(samples) / 5.0) * amplitude).astype("<i2").tobytes()


def wav_bytes(
    data: bytes | None = None,
    *,
    rate: int = 16000,
    bits: int = 16,
    format_tag: int = WAV_PCM,
    channels: int = 1,
    block_align: int | None = None,
    byte_rate: int | None = None,
    data_size: int | None = None,
) -> bytes:
    """A RIFF/WAVE file with exactly the given ``fmt `` fields, however impossible.

    Derived fields (block align, byte rate) follow the declared ones unless given, wrapped to their field width;
    ``data_size`` overrides the ``data`` chunk's declared length (e.g. more than is there).
    """
    data = tone_pcm16() if data is None else data
    align = (channels * bits // 8) & 0xFFFF if block_align is None else block_align
    per_second = (rate * align) & 0xFFFFFFFF if byte_rate is None else byte_rate
    fmt = struct.pack("<HHIIHH", format_tag, channels, rate, per_second, align, bits)
    size = len(data) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def float_wav_bytes(values: np.ndarray, rate: int = 16000) -> bytes:
    """A 32-bit float WAV holding ``values`` as they are (NaN and infinities included)."""
    return wav_bytes(np.asarray(values, dtype="<f4").tobytes(), rate=rate, bits=32, format_tag=WAV_FLOAT)


def matroska_pcm_bytes(path: Path, samples: np.ndarray, rate: int = 16000) -> bytes:
    """A real Matroska file with one 16-bit PCM audio track (codec id ``A_PCM/INT/LIT``)."""
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").reshape(1, -1)
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("pcm_s16le", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return path.read_bytes()


def with_unknown_codec_id(data: bytes, codec_id: bytes) -> bytes:
    """``data`` (Matroska/WebM) with its audio track's codec id replaced by an unknown one of the same length.

    Same length, so every EBML size stays right: the demuxer opens the file and finds a stream whose codec it
    has no decoder for (PyAV gives it no codec context).
    """
    if data.count(codec_id) != 1:
        raise ValueError(f"expected exactly one {codec_id!r} in the file")
    bogus = codec_id[:2] + b"Z" * (len(codec_id) - 2)
    return data.replace(codec_id, bogus)
