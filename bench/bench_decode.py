"""Decode time per 10 s upload: PyAV (in-process) vs pydub (imageio-ffmpeg subprocess), side by side in one run.

Formats: WAV, MP3, AAC-in-MOV (with a video stream, like a reference clip), Opus-in-WebM. Each decode goes
through ``decode_audio`` from bytes in memory, as the router receives uploads, to 16 kHz mono float32.
Usage: python bench/bench_decode.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np

from audio_score.audio import decode_audio
from audio_score_tools.media import synth_speechlike, write_audio, write_clip_mov

from common import write_results

RATE = 16000


def time_decode(data: bytes, backend: str, repeat: int) -> list[float]:
    decode_audio(data, sampling_rate=RATE, backend=backend)  # warm-up
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        decode_audio(data, sampling_rate=RATE, backend=backend)
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    signal = synth_speechlike(10.0, 44100, seed=1)  # a typical browser/phone rate, so both resample
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = {
            "WAV (pcm_s16le)": write_audio(root / "a.wav", signal, 44100),
            "MP3": write_audio(root / "a.mp3", signal, 44100),
            "AAC in MOV (+video)": write_clip_mov(root / "a.mov", signal, 44100),
            "Opus in WebM": write_audio(root / "a.webm", signal, 44100),
        }
        for name, path in files.items():
            data = path.read_bytes()
            pyav = time_decode(data, "pyav", args.repeat)
            pydub = time_decode(data, "pydub", args.repeat)
            row = {
                "format": name,
                "bytes": len(data),
                "pyav p50 ms": statistics.median(pyav),
                "pyav p90 ms": float(np.percentile(pyav, 90)),
                "pydub p50 ms": statistics.median(pydub),
                "pydub p90 ms": float(np.percentile(pydub, 90)),
                "pydub/pyav": statistics.median(pydub) / statistics.median(pyav),
            }
            rows.append(row)
    versions = {
        "pyav": av.__version__,
        "pyav_ffmpeg": str(av.ffmpeg_version_info),
        "imageio_ffmpeg": imageio_ffmpeg.get_ffmpeg_version(),
    }
    notes = (
        f"10 s of 44.1 kHz mono per file, decoded from bytes to 16 kHz mono float32 (soxr HQ), {args.repeat} "
        "repeats after one warm-up, median (p50) and p90. PyAV decodes in-process (bundled FFmpeg "
        f"{versions['pyav_ffmpeg']}); pydub copies the upload to a temporary file and runs imageio-ffmpeg's binary "
        f"({versions['imageio_ffmpeg']}) once per call. CPU only (no GPU is involved in decoding)."
    )
    write_results("decode", {"repeat": args.repeat, "versions": versions, "rows": rows}, rows, notes)


if __name__ == "__main__":
    main()
