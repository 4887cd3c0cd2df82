"""The committed quality corpora (the main one and the held-out one) match their manifests and the quality
benchmark's measures are right.

No model runs here: the corpus files are decoded for real (the product's decoder), and the benchmark's metric
functions are checked on inputs whose answers are known by hand.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from audio_score.audio import decode_audio
from audio_score_tools.corpus import HELDOUT_DIR, VARIANTS, Corpus, load_corpus

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from quality_metrics import (
    auc,
    no_speech_takes,
    per_reference_worst_margin,
    percentile,
    worst_case_margin,
)

CORPUS = load_corpus()
CORPORA = {"corpus": CORPUS, "heldout": load_corpus(HELDOUT_DIR)}


@pytest.fixture(params=sorted(CORPORA))
def corpus(request) -> Corpus:  # type: ignore[no-untyped-def]
    return CORPORA[request.param]


def test_every_manifest_file_is_there_and_every_file_is_in_the_manifest(corpus: Corpus) -> None:
    folder = corpus.folder
    listed = {t.path.relative_to(folder).as_posix() for t in corpus.takes}
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    texts = {t.path.with_suffix(".txt").relative_to(folder).as_posix() for t in corpus.references().values()}
    assert on_disk == listed | texts | {"manifest.json"}
    assert len(listed) == len(corpus.takes), "two manifest rows name one file"


def test_each_reference_has_its_sentence_as_text_and_each_sentence_one_reference(corpus: Corpus) -> None:
    references = corpus.references()
    assert set(references) == set(corpus.sentences)
    for sid, ref in references.items():
        assert ref.path.suffix == ".mov" and (ref.uid, ref.cid) == ("corpus", sid)
        assert ref.path.with_suffix(".txt").read_text().strip() == corpus.sentences[sid].text == ref.text


def test_the_corpus_covers_what_the_benchmark_reports(corpus: Corpus) -> None:
    english = [s for s in corpus.sentences.values() if s.language == "en"]
    assert len(english) >= 10
    if corpus is CORPUS:
        assert {"fr", "de"} <= {s.language for s in corpus.sentences.values()}
    # traits are claimed honestly: digits, contractions, capitalised names in the text
    for s in corpus.sentences.values():
        assert ("digits" in s.traits) == bool(re.search(r"\d", s.text)), s.sid
        if "contraction" in s.traits:
            assert re.search(r"\w'(re|s|t|d|ve|ll|m)\b", s.text), s.sid
    assert {"digits", "contraction", "name"} <= {t for s in english for t in s.traits}
    engines = {t.engine for t in corpus.takes if t.language == "en"}
    assert {"piper", "flite", "festival", "espeak-ng"} <= engines
    assert all(corpus.references()[s.sid].engine == "piper" for s in english)
    accents = {t.voice for t in corpus.takes if t.variant == "accented"}
    assert len(accents) >= 5 and not any(v.startswith("en") for v in accents)
    for s in english:
        variants = {t.variant for t in corpus.takes if t.sentence == s.sid}
        assert variants == set(VARIANTS), s.sid
        readers = {t.voice for t in corpus.takes if t.sentence == s.sid and t.variant in ("native", "accented")}
        assert corpus.references()[s.sid].voice not in readers


def test_accent_voices_say_numbers_as_english_words(corpus: Corpus) -> None:
    """An espeak-ng voice of another language reads "4" in its own language ("čtyři"); a learner says "four". So
    an accented take is given the numbers in English words, and nothing else of the sentence changes."""
    accented = [t for t in corpus.takes if t.variant == "accented"]
    with_digits = [t for t in accented if re.search(r"\d", t.text)]
    assert with_digits, "the corpus has sentences with digits, read by accent voices"
    for take in accented:
        if take in with_digits:
            assert take.spoken is not None and not re.search(r"\d", take.spoken), take.path.name
            # the text with each number as English words ("fifteen", "twenty-one", "one hundred and five")
            number_words = r"[a-z]+(?:[ -][a-z]+)*"
            pattern = "".join(
                number_words if re.fullmatch(r"\d+", part) else re.escape(part)
                for part in re.split(r"(\d+)", take.text)
            )
            assert re.fullmatch(pattern, take.spoken), (take.path.name, take.spoken)
        else:
            assert take.spoken is None, take.path.name
    # the other readings are given the text itself: every engine's English voice says digits in English
    assert all(t.spoken is None for t in corpus.takes if t.variant != "accented")


def test_the_held_out_corpus_shares_no_sentence_accent_or_english_variant_with_the_main_one() -> None:
    held = CORPORA["heldout"]
    assert not {s.text for s in held.sentences.values()} & {s.text for s in CORPUS.sentences.values()}
    for variant in ("accented",):
        mine = {t.voice for t in held.takes if t.variant == variant}
        assert mine and not mine & {t.voice for t in CORPUS.takes if t.variant == variant}
    espeak_english = {t.voice for t in held.takes if t.engine == "espeak-ng" and t.variant == "native"}
    assert espeak_english and not espeak_english & {t.voice for t in CORPUS.takes if t.engine == "espeak-ng"}


def test_the_corpus_is_small_and_every_file_decodes_to_speech_length_audio(corpus: Corpus) -> None:
    total = sum(p.stat().st_size for p in corpus.folder.rglob("*") if p.is_file())
    assert total < 3 * 1024 * 1024
    for take in corpus.takes:
        assert take.path.suffix == (".mov" if take.variant == "reference" else ".ogg")
        samples = decode_audio(take.path, sampling_rate=16000, max_seconds=30)
        assert 0.8 < samples.size / 16000 < 8, take.path.name
        assert float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) > 0.01, take.path.name


def test_auc_counts_pairs_and_ties_half() -> None:
    assert auc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auc([0.1], [0.9]) == 0.0
    # pairs: (0.5 vs 0.5) tie, (0.5 vs 0.2) win, (0.3 vs 0.5) loss, (0.3 vs 0.2) win -> 2.5 / 4
    assert auc([0.5, 0.3], [0.5, 0.2]) == pytest.approx(0.625)
    with pytest.raises(ValueError):
        auc([], [0.1])


def test_margins_overall_and_per_reference() -> None:
    assert worst_case_margin([0.9, 0.7], [0.2, 0.5]) == pytest.approx(0.2)
    positives = {"a": [0.9, 0.8], "b": [0.6, 0.7], "c": [0.99]}
    negatives = {"a": [0.3], "b": [0.5, 0.1]}  # c has no negatives: left out
    assert per_reference_worst_margin(positives, negatives) == (pytest.approx(0.1), "b")
    # one threshold for all fails (0.6 < 0.3? no: pooled margin 0.6 - 0.5) but per reference is what is asked
    negatives["a"] = [0.85]
    assert per_reference_worst_margin(positives, negatives) == (pytest.approx(-0.05), "a")
    with pytest.raises(ValueError):
        per_reference_worst_margin({"a": [0.5]}, {})


def test_percentile_interpolates() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile(list(range(101)), 95) == pytest.approx(95.0)
    assert percentile([1.0, 2.0], 95) == pytest.approx(1.95)


def test_no_speech_takes_are_seeded_and_what_they_say() -> None:
    first, again = no_speech_takes(), no_speech_takes()
    assert [n for n, _ in first] == ["silence", "near-silence", "white-noise", "tone-440Hz", "mains-hum", "rumble"]
    for (_, a), (_, b) in zip(first, again, strict=True):
        assert a.dtype == np.float32 and a.size == 48000 and np.array_equal(a, b)
    takes = dict(first)
    assert not np.any(takes["silence"])
    assert float(np.max(np.abs(takes["near-silence"]))) < 0.01
    spectrum = np.abs(np.fft.rfft(takes["tone-440Hz"]))
    assert np.argmax(spectrum) * 16000 / 48000 == pytest.approx(440, abs=1)


def test_the_benchmark_groups_wrong_readings_and_per_reference_margins_by_hand() -> None:
    """bench_quality's evaluate() on hand-made features through the real compare: which takes are wrong for which
    reference, and that the per-reference margin and the no-speech check come out as computed by hand."""
    from types import SimpleNamespace

    import bench_quality as bq

    rng = np.random.default_rng(0)
    bases = {s: rng.normal(size=(40, 8)).astype(np.float32) for s in ("a", "b")}

    def features(sentence: str, noise: float, transcript: str) -> SimpleNamespace:
        frames = (bases[sentence] + noise * rng.normal(size=(40, 8))).astype(np.float32)
        return SimpleNamespace(transcript=transcript, embedding=frames.mean(axis=0), frames=frames)

    texts = {"a": "open the window", "b": "drink hot coffee"}
    takes, refs = [], []
    for s in ("a", "b"):
        ref = bq.Take(f"corpus/{s}/reference", "corpus", f"corpus/{s}", "en", "reference", "clip", np.zeros(1))
        ref.features[None] = features(s, 0.0, texts[s])
        refs.append(bq.Reference(ref.sentence, "corpus", "en", texts[s], ("digits",) if s == "a" else (), ref))
        takes.append(ref)
        for i, noise in enumerate((0.3, 0.6)):
            take = bq.Take(f"corpus/{s}/n{i}", "corpus", f"corpus/{s}", "en", "native", f"v{i}", np.zeros(1))
            take.features[None] = features(s, noise, texts[s] if i == 0 else texts[s].split()[0])
            takes.append(take)
    silence = bq.Take("none/silence", "", "", None, "nospeech", "silence", np.zeros(1))
    silence.features[None] = SimpleNamespace(transcript="", embedding=np.zeros(8), frames=np.zeros((40, 8)))
    takes.append(silence)
    assert not bq.is_wrong(takes[1], refs[0]) and bq.is_wrong(takes[4], refs[0]) and bq.is_wrong(takes[3], refs[0])

    result = bq.evaluate(refs, takes, forced=False)
    native = result["groups"]["native, corpus"]["sim"]
    scores: dict[str, dict[str, list[float]]] = {"right": {}, "wrong": {}}
    for ref in refs:
        ref_features = ref.take.features[None]
        for take in takes:
            if take is ref.take or take.group == "nospeech":
                continue
            kind = "right" if take.sentence == ref.key else "wrong"
            c = bq.compare_take(take.features[None], ref_features, ref.text, "en")
            scores[kind].setdefault(ref.key, []).append(c.sim_score)
    margins = {r: min(scores["right"][r]) - max(scores["wrong"][r]) for r in scores["right"]}
    assert native["n"] == 4 and result["wrong"]["sim"]["n"] == 6  # each reference: the other's 3 readings
    assert native["worst_margin_per_reference"] == pytest.approx(min(margins.values()))
    assert native["worst_reference"] == min(margins, key=lambda r: margins[r])
    assert native["auc_vs_wrong"] == pytest.approx(
        auc([v for vs in scores["right"].values() for v in vs], [v for vs in scores["wrong"].values() for v in vs])
    )
    assert result["self"]["corpus/a"]["with_text"]["sim"] == pytest.approx(1.0)
    assert result["no_speech"]["word_accuracy"]["max"] == 0.0
    assert [c["take"] for c in result["word_checks"]] == ["v0", "v1", "the reference itself"]


def test_the_benchmark_passes_each_pair_the_forced_scores_of_its_own_references_texts() -> None:
    """A take is read once against every reference's texts (``Take.forced``); compare gets the ones of the
    reference it is compared with, as the predictor reads an upload against its own reference only."""
    from types import SimpleNamespace

    import bench_quality as bq

    frames = np.random.default_rng(1).normal(size=(20, 8)).astype(np.float32)
    take = SimpleNamespace(transcript="open a window", embedding=frames.mean(axis=0), frames=frames)
    ref = SimpleNamespace(transcript="Open the window.", embedding=frames.mean(axis=0), frames=frames)
    forced = {"Open the window!": 0.7, "Open the window.": 0.4, "Drink hot coffee.": 0.01}
    c = bq.compare_take(take, ref, "Open the window!", "en", forced)
    assert c.text_forced_score == 0.7  # the better of the reference's text and its transcript
    assert c.text_sim_score == pytest.approx((c.text_transcript_score + 0.7) / 2)
    assert bq.compare_take(take, ref, "Open the window!", "en", None).text_forced_score is None
