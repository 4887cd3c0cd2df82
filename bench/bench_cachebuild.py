"""cache-build throughput vs the backend's raw batched throughput on the same clips: the Job's overhead.

The raw figure times ``Backend.embed`` alone on pre-decoded audio; the cache-build figure is the whole Job path
(walk, hash, decode on a worker thread, embed, atomic write) on the same clips, measured in the same run.
Usage: python bench/bench_cachebuild.py [--clips 24] [--size whisper-tiny] [--batch 8]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

from audio_score.audio import decode_audio
from audio_score.backends import load_backend
from audio_score.clips import discover_clips
from audio_score.env_settings import JobEnv
from audio_score.settings import load_settings
from audio_score_tools.tiny_models import build_tiny_whisper
from audio_score_tools.workspace import TinyModelSet, build_workspace
from cache_job.cli import build_model

from common import write_results  # bench/ is on sys.path when run as a script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--size", default="whisper-tiny")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        whisper = build_tiny_whisper(root / "models" / "whisper", size=args.size)
        models = TinyModelSet(whisper=whisper, higgs=whisper)
        clips = tuple(
            (f"video{i // 4}", f"clip{i % 4}", "nested" if i % 2 else "flat", 3.0 + (i % 5), i)
            for i in range(args.clips)
        )
        ws = build_workspace(
            root / "ws", models=models, clips=clips, model_keys=["whisper-tiny"], max_new_tokens=args.max_new_tokens
        )
        settings = load_settings(JobEnv, ws.config_path, env={"AUDIO_SCORE_DEVICE": args.device})
        backend = load_backend(settings.models[0], settings)
        refs = discover_clips(settings.config.video_clip_dir)
        waves = [decode_audio(c.path, sampling_rate=16000) for c in refs]
        backend.embed(waves[: args.batch])  # warm-up

        # Alternate the two measurements so that load from other processes hits both alike; report medians.
        raw_runs, job_runs = [], []
        for _ in range(args.rounds):
            started = time.perf_counter()
            for i in range(0, len(waves), args.batch):
                backend.embed(waves[i : i + args.batch])
            raw_runs.append(time.perf_counter() - started)
            summary = build_model(backend, refs, settings, force=True, batch_size=args.batch, progress=False)
            assert summary.built == len(refs) and not summary.failed
            job_runs.append(summary.seconds)
        raw_s, job_s = statistics.median(raw_runs), statistics.median(job_runs)
        audio_s = sum(len(w) for w in waves) / 16000

    raw_rate = len(waves) / raw_s
    job_rate = len(waves) / job_s
    rows = [
        {"path": "backend.embed (raw, pre-decoded)", "clips": len(waves), "seconds": raw_s, "clips_per_s": raw_rate},
        {
            "path": "cache-build (decode+embed+write)",
            "clips": summary.built,
            "seconds": summary.seconds,
            "clips_per_s": job_rate,
        },
    ]
    ratio = job_rate / raw_rate
    notes = (
        f"Model: {args.size}-sized random weights, batch {args.batch}, max_new_tokens {args.max_new_tokens}, "
        f"{audio_s:.0f} s of audio in {len(waves)} clips; median of {args.rounds} alternating rounds. "
        f"cache-build / raw throughput = {ratio:.2f} "
        f"(overhead {100 * (1 - ratio):.1f}%)."
    )
    write_results(
        "cachebuild",
        {
            "size": args.size,
            "batch": args.batch,
            "raw_clips_per_s": raw_rate,
            "job_clips_per_s": job_rate,
            "ratio": ratio,
        },
        rows,
        notes,
    )


if __name__ == "__main__":
    main()
