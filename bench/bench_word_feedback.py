"""Per-word feedback on takes whose faults are known: does it find the wrong word, the pause and the tempo?

Ground truth from festival's own word timing (:mod:`audio_score_tools.speech_timing`): every English sentence of
the quality corpus (``tests/data/corpus``) and of the tuned set (``tests/data/speech``) is read by one festival
voice as the reference, whose word times are festival's own (as a per-word subtitle file would give them), and
by the other festival voices as takes, whose own festival word times say where each fault goes:

- **replaced word**: word ``k``'s samples replaced by those of another word of the same take (the word half the
  sentence away) -> word ``k`` should get the lowest per-word ``audio_score`` (ties count);
- **pause**: 0.6 s of silence inserted before word ``k`` (``k >= 1``) -> a pause reported at word ``k`` +- 1;
  the unchanged takes and the tempo takes -> no pause;
- **tempo** 0.8x and 1.25x (FFmpeg's ``atempo``, pitch kept, through imageio-ffmpeg's binary) -> ``rate``
  within +-10 % of the true factor: the tempo times the take voice's own rate against the reference voice
  (festival's times: the reference's speech span over the take's, first word's start to last word's end).

Every take goes the product's way: the backend's ``embed`` (real Whisper tiny.en, converted by
:mod:`audio_score_tools.ct2_whisper`) and :func:`audio_score.scoring.compare` with the reference's word times;
features are cached in ``--work`` (keyed by a hash of the samples). ``--quick``: one take voice and every other
word. Results: ``bench/results/word_feedback.{json,md}``.

    python bench/bench_word_feedback.py [--quick] [--work /tmp/feedback/w]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from audio_score.alignment import pool_for  # noqa: E402
from audio_score.scoring import Comparison, compare  # noqa: E402
from audio_score.textnorm import units  # noqa: E402
from audio_score.word_times import WordTime, WordTimes  # noqa: E402

from common import write_results  # noqa: E402

RATE = 16000
REFERENCE_VOICE = "kal_diphone"
TAKE_VOICES = ("ked_diphone", "cmu_us_slt_arctic_hts")
SILENCE_S = 0.6
TEMPOS = (0.8, 1.25)
#: The thresholds the issue sets for each criterion (share of takes).
TARGETS = {"replaced word lowest": 0.9, "pause found (+-1 word)": 0.9, "no pause without one": 0.9}
RATE_TOLERANCE = 0.10


def sentences() -> list[tuple[str, str]]:
    """(id, text) of every English sentence: the quality corpus's, then the tuned set's."""
    corpus = json.loads((ROOT / "tests/data/corpus/manifest.json").read_text())
    out = [(sid, s["text"]) for sid, s in corpus["sentences"].items() if s["language"] == "en"]
    speech = json.loads((ROOT / "tests/data/speech/manifest.json").read_text())
    seen: dict[str, str] = {}
    for take in speech["takes"]:
        seen.setdefault(take["sentence"], take["text"])
    return out + sorted(seen.items())


def word_times_for(text: str, spoken: tuple[WordTime, ...]) -> WordTimes:
    """Festival's token spans as the reference's word times: one per word mark (:func:`audio_score.textnorm.
    units`), a unit of several tokens ("twenty five") from its first token's start to its last one's end."""
    tokens = iter(spoken)
    words = []
    for unit in units(text):
        parts = [next(tokens) for _ in unit.surface.split()]
        words.append(WordTime(unit.surface, parts[0].start, parts[-1].end))
    return WordTimes(tuple(words), "subtitles")


def time_stretch(samples: np.ndarray, tempo: float) -> np.ndarray:
    """FFmpeg's ``atempo`` (tempo change without pitch change), through the binary imageio-ffmpeg ships."""
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "f32le", "-ar", str(RATE), "-ac", "1", "-i", "-"]
    cmd += ["-filter:a", f"atempo={tempo}", "-f", "f32le", "-"]
    out = subprocess.run(cmd, input=samples.astype("<f4").tobytes(), capture_output=True, check=True).stdout
    return np.frombuffer(out, dtype="<f4").copy()


def replaced(audio: np.ndarray, spans: list[tuple[int, int]], k: int, j: int) -> np.ndarray:
    """``audio`` with word ``k``'s samples replaced by word ``j``'s."""
    (ks, ke), (js, je) = spans[k], spans[j]
    return np.concatenate([audio[:ks], audio[js:je], audio[ke:]])


def paused(audio: np.ndarray, spans: list[tuple[int, int]], k: int) -> np.ndarray:
    """``audio`` with ``SILENCE_S`` of silence before word ``k``."""
    at = spans[k][0]
    return np.concatenate([audio[:at], np.zeros(int(SILENCE_S * RATE), dtype=np.float32), audio[at:]])


class Cache:
    """Pickled dict in ``--work``: festival readings and Features, so a rerun only computes what changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = pickle.loads(path.read_bytes()) if path.is_file() else {}
        self.dirty = False

    def get(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self.data:
            self.data[key] = make()
            self.dirty = True
        return self.data[key]

    def save(self) -> None:
        if self.dirty:
            self.path.write_bytes(pickle.dumps(self.data))
            self.dirty = False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one take voice, every other word")
    parser.add_argument("--work", type=Path, default=Path("/tmp/audio-score-word-feedback"))
    args = parser.parse_args(argv)
    import transformers

    from audio_score.backends import load_backend
    from audio_score.env_settings import PredictorEnv
    from audio_score.settings import load_settings
    from audio_score_tools.ct2_whisper import ensure_tiny_en
    from audio_score_tools.speech import build_speech_workspace
    from audio_score_tools.speech_timing import festival_timed

    transformers.logging.set_verbosity_error()
    started = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    model_dir = ensure_tiny_en(args.work / "models")
    workspace = build_speech_workspace(args.work / "workspace", model_dir)
    settings = load_settings(PredictorEnv, workspace.config_path, env={})
    backend = load_backend(settings.models[0], settings)
    pool, frame_ms = pool_for(backend.frame_ms), backend.frame_ms
    code = hashlib.sha1(str(model_dir.resolve()).encode())
    for path in sorted([*(ROOT / "audio_score" / "backends").glob("*.py"), ROOT / "audio_score" / "settings.py"]):
        code.update(path.read_bytes())
    cache = Cache(args.work / f"word-feedback-{code.hexdigest()[:12]}.pkl")

    def speak(text: str, voice: str) -> Any:
        return cache.get(f"festival|{voice}|{text}", lambda: festival_timed(text, voice, RATE))

    def features(samples: np.ndarray) -> Any:
        key = "features|" + hashlib.sha1(samples.astype(np.float32).tobytes()).hexdigest()
        return cache.get(key, lambda: backend.embed([samples.astype(np.float32)])[0])

    def score(take: np.ndarray, ref: Any, text: str, times: WordTimes) -> Comparison:
        f = features(take)
        return compare(
            embedding=f.embedding,
            frames=f.frames,
            transcript=f.transcript,
            reference_embedding=ref.embedding,
            reference_frames=ref.frames,
            reference_text=text,
            reference_transcript=ref.transcript,
            pool=pool,
            language=f.language,
            no_speech=f.no_speech,
            looped=f.looped,
            reference_word_times=times,
            frame_ms=frame_ms,
        )

    voices = TAKE_VOICES[:1] if args.quick else TAKE_VOICES
    records: dict[str, list[dict[str, Any]]] = {"replace": [], "pause": [], "clean": [], "tempo": []}
    try:
        for n, (sid, text) in enumerate(sentences(), 1):
            reading = speak(text, REFERENCE_VOICE)
            times = word_times_for(text, reading.words)
            ref = features(reading.audio)
            count = len(times.words)
            for voice in voices:
                take = speak(text, voice)
                take_times = word_times_for(text, take.words)
                spans = [(int(w.start * RATE), int(w.end * RATE)) for w in take_times.words]
                own = _span(times) / _span(take_times)  # the take voice's rate against the reference voice
                clean = score(take.audio, ref, text, times)
                records["clean"].append(
                    {"sentence": sid, "voice": voice, "kind": "unchanged", "true_rate": own, **_timing(clean)}
                )
                ks = range(0, count, 2) if args.quick else range(count)
                for k in ks:
                    j = (k + count // 2) % count
                    if count < 2 or times.words[j].word.lower() == times.words[k].word.lower():
                        continue
                    result = score(replaced(take.audio, spans, k, j), ref, text, times)
                    scores = [w.audio_score for w in result.feedback.words] if result.feedback else []
                    left = [w.left_out for w in result.feedback.words] if result.feedback else []
                    records["replace"].append(
                        {
                            "sentence": sid,
                            "voice": voice,
                            "k": k,
                            "word": times.words[k].word,
                            "by": times.words[j].word,
                            "lowest": bool(scores) and scores[k] <= min(scores),
                            "left_out": bool(left) and left[k],
                            "scores": [round(s, 3) for s in scores],
                        }
                    )
                for k in ks:
                    if k == 0:
                        continue
                    result = score(paused(take.audio, spans, k), ref, text, times)
                    found = [p["index"] for p in result.timing().get("pauses", [])]
                    records["pause"].append(
                        {
                            "sentence": sid,
                            "voice": voice,
                            "k": k,
                            "found": found,
                            "hit": any(abs(i - k) <= 1 for i in found),
                            **_timing(result),
                        }
                    )
                for tempo in TEMPOS:
                    result = score(time_stretch(take.audio, tempo), ref, text, times)
                    row = {"sentence": sid, "voice": voice, "kind": f"tempo {tempo}x", "tempo": tempo}
                    row["true_rate"] = own * tempo
                    records["tempo"].append({**row, **_timing(result)})
            cache.save()
            print(f"{n} sentences ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    finally:
        cache.save()
        backend.close()
    rows = summarise(records)
    notes = (
        f"Reference: festival {REFERENCE_VOICE} with its own word times; takes: festival "
        f"{', '.join(voices)}; {len(sentences())} English sentences (quality corpus + tuned set); features from "
        f"real Whisper tiny.en (pool {pool} x {frame_ms:g} ms). Replaced word: word k's samples replaced by the "
        "word half the sentence away, success when word k has the lowest per-word audio_score (ties count; "
        "'marked left out': the recogniser made it a deletion, its audio score is then the reference-side "
        "reading alone). Pause: 0.6 s of silence before word k, success when a pause is reported at k +- 1. Tempo: "
        "FFmpeg atempo, success when "
        f"rate is within +-{RATE_TOLERANCE:.0%} of the true factor: the tempo times the take voice's own rate "
        "against the reference voice from festival's times (the two diphone voices share festival's duration "
        f"model, so ked_diphone reads at the reference's pace). {'--quick run. ' if args.quick else ''}"
        f"Run time {time.perf_counter() - started:.0f} s."
    )
    write_results("word_feedback", {"quick": args.quick, "records": records, "rows": rows}, rows, notes)
    return 0


def _span(times: WordTimes) -> float:
    return times.words[-1].end - times.words[0].start


def _timing(result: Comparison) -> dict[str, Any]:
    timing = result.timing()
    return {
        "rate": timing.get("rate"),
        "timing_score": timing.get("timing_score"),
        "pauses": [p["index"] for p in timing.get("pauses", [])],
    }


def summarise(records: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per criterion: takes, share that passed, the issue's target."""

    def row(name: str, passed: list[bool], target: float | None, extra: str = "") -> dict[str, Any]:
        share = sum(passed) / len(passed) if passed else 0.0
        met = "" if target is None else ("yes" if share >= target else "no")
        return {
            "criterion": name,
            "takes": len(passed),
            "passed %": 100 * share,
            "target %": 100 * target if target is not None else None,
            "met": met,
            "detail": extra,
        }

    replace = records["replace"]
    rows = [
        row(
            "replaced word lowest",
            [r["lowest"] for r in replace],
            TARGETS["replaced word lowest"],
            f"{sum(r['left_out'] for r in replace)} of them marked left out by the recogniser",
        ),
        row(
            "replaced word lowest, recogniser kept it",
            [r["lowest"] for r in replace if not r["left_out"]],
            None,
            "the audio score alone decides",
        ),
        row("pause found (+-1 word)", [r["hit"] for r in records["pause"]], TARGETS["pause found (+-1 word)"]),
        row(
            "pause found at the word itself",
            [r["k"] in r["found"] for r in records["pause"]],
            None,
        ),
        row(
            "no pause without one",
            [not r["pauses"] for r in records["clean"]],
            TARGETS["no pause without one"],
            "unchanged takes",
        ),
        row("no pause without one, tempo takes", [not r["pauses"] for r in records["tempo"]], None),
    ]
    for tempo in TEMPOS:
        takes = [r for r in records["tempo"] if r["tempo"] == tempo]
        rates = [r["rate"] for r in takes if r["rate"] is not None]
        ok = [r["rate"] is not None and abs(r["rate"] / r["true_rate"] - 1) <= RATE_TOLERANCE for r in takes]
        ratio = [r["rate"] / r["true_rate"] for r in takes if r["rate"] is not None]
        median = float(np.median(ratio)) if rates else float("nan")
        rows.append(row(f"tempo {tempo}x: rate within 10 %", ok, 0.9, f"median rate / true {median:.3f}"))
    clean = records["clean"]
    ok = [r["rate"] is not None and abs(r["rate"] / r["true_rate"] - 1) <= RATE_TOLERANCE for r in clean]
    ratio = [r["rate"] / r["true_rate"] for r in clean if r["rate"] is not None]
    median = float(np.median(ratio)) if ratio else float("nan")
    rows.append(row("unchanged: rate within 10 %", ok, None, f"median rate / true {median:.3f}"))
    groups = {
        "unchanged": records["clean"],
        "pause": records["pause"],
        **{f"tempo {t}x": [r for r in records["tempo"] if r["tempo"] == t] for t in TEMPOS},
    }
    spread = []
    for name, takes in groups.items():
        values = [r["timing_score"] for r in takes if r["timing_score"] is not None]
        if values:
            low, mid, high = np.percentile(values, [10, 50, 90])
            spread.append(f"{name} {mid:.2f} ({low:.2f}-{high:.2f})")
    rows.append({**row("timing_score, median (p10-p90)", [], None, "; ".join(spread)), "passed %": None})
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
