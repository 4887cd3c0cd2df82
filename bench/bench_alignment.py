"""Cost of the time-aligned audio similarity per (upload, reference) pair, on one CPU core.

Frames as the cache stores them (float16, one row per 20 ms encoder frame): 10 s = 500 frames, at the encoder
widths of Whisper tiny (384), small (768) and large (1280); the upload as long as the reference, 1.3x longer
(a slower learner) and half as long. The pooled cosine is timed beside it for scale. Per-word feedback (the
paths read back and :func:`audio_score.word_feedback.word_feedback` over 25 reference words, what ``compare``
does when the reference has word times) is timed interleaved with the plain score, call for call, so that the
extra cost is a paired difference that the machine's load affects alike. BLAS is pinned to one thread before
numpy loads, so the figures are per core.
Usage: python bench/bench_alignment.py [--repeat 50] [--out alignment]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from audio_score.alignment import aligned_paths, aligned_similarity, pool_for, prepare_frames  # noqa: E402
from audio_score.similarity import pooled_cosine  # noqa: E402
from audio_score.word_feedback import word_feedback  # noqa: E402
from audio_score.word_times import WordTime, WordTimes  # noqa: E402

from common import write_results  # noqa: E402

FRAMES_PER_S = 50
#: Reference words for the feedback timing: one every 0.4 s (a brisk 150 words a minute).
WORD_S = 0.4


def _time(fn, repeat: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return times


def _paired(plain, with_feedback, repeat: int) -> tuple[list[float], list[float]]:  # type: ignore[no-untyped-def]
    """Both calls timed alternately (ms), so that the machine's load falls on both alike."""
    plain()
    with_feedback()
    base, full = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        plain()
        t1 = time.perf_counter()
        with_feedback()
        t2 = time.perf_counter()
        base.append((t1 - t0) * 1000)
        full.append((t2 - t1) * 1000)
    return base, full


def _feedback(upload: np.ndarray, prepared, times: WordTimes, frame_s: float) -> None:  # type: ignore[no-untyped-def]
    paths = aligned_paths(upload, prepared)
    assert paths is not None
    word_feedback(paths, times, frame_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", default="alignment", help="results name: bench/results/<out>.{json,md}")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    ref_frames = int(args.seconds * FRAMES_PER_S)
    frame_s = pool_for(1000 / FRAMES_PER_S) / FRAMES_PER_S
    count = int(args.seconds / WORD_S)
    times = WordTimes(tuple(WordTime(f"w{k}", k * WORD_S, (k + 1) * WORD_S) for k in range(count)), "subtitles")
    for dim in (384, 768, 1280):
        reference = rng.standard_normal((ref_frames, dim)).astype(np.float16)
        for ratio in (1.0, 1.3, 0.5):
            upload = rng.standard_normal((int(ref_frames * ratio), dim)).astype(np.float16)
            prepared = prepare_frames(reference)  # the predictor keeps references in this form
            per_request = _time(lambda u=upload, r=prepared: aligned_similarity(u, r), args.repeat)
            aligned = _time(lambda u=upload, r=reference: aligned_similarity(u, r), args.repeat)
            pooled_u = upload.astype(np.float32).mean(axis=0)
            pooled_r = reference.astype(np.float32).mean(axis=0)
            pooled = _time(lambda u=pooled_u, r=pooled_r: pooled_cosine(u, r), args.repeat)
            base, full = _paired(
                lambda u=upload, r=prepared: aligned_similarity(u, r),
                lambda u=upload, r=prepared: _feedback(u, r, times, frame_s),
                args.repeat,
            )
            rows.append(
                {
                    "dim": dim,
                    "reference frames": ref_frames,
                    "upload frames": upload.shape[0],
                    "per request min ms": min(per_request),
                    "per request p50 ms": statistics.median(per_request),
                    "per request p90 ms": float(np.percentile(per_request, 90)),
                    "both raw p50 ms": statistics.median(aligned),
                    "pooled p50 ms": statistics.median(pooled),
                    "feedback extra p50 ms": statistics.median([f - b for b, f in zip(base, full, strict=True)]),
                    "feedback extra min ms": min(full) - min(base),
                    "with feedback / plain": statistics.median(full) / statistics.median(base),
                }
            )
    load = os.getloadavg()
    notes = (
        f"{args.seconds:g} s reference ({ref_frames} float16 frames), {args.repeat} repeats after one warm-up, "
        "BLAS pinned to 1 thread; min, median (p50) and p90 of `audio_score.alignment.aligned_similarity` "
        "(standardise, pool pairs, centre, L2-normalise, cosine matrix, DTW both ways). 'per request': the "
        "reference already prepared, as the predictor's reference store keeps it; 'both raw': both prepared in "
        "the call. "
        f"'feedback extra': what per-word feedback adds ({count} reference words: the paths read back, spans, "
        "per-word scores, rate, pauses, lags): the median of per-pair differences with the plain score timed "
        "alternately, and the difference of the two minima; 'with feedback / plain': the ratio of the two medians "
        "in the same run. Target <= 2 ms p50 for 10 s vs 10 s. Target for the score: "
        f"<= 5 ms per pair for 10 s clips on one core. Load average during the run: {load[0]:.1f} / {load[1]:.1f} "
        f"/ {load[2]:.1f} on {os.cpu_count()} cores: above the core count the figures include waiting for a "
        "core, and the min is the better estimate of the cost itself."
    )
    payload = {"repeat": args.repeat, "seconds": args.seconds, "load_average": load, "rows": rows}
    write_results(args.out, payload, rows, notes)


if __name__ == "__main__":
    main()
