"""Similarity: cosine of pooled features, normalised rapidfuzz ratio of transcripts, and their mean (through
:func:`audio_score.scoring.compare`, the one place they are combined)."""

from __future__ import annotations

import numpy as np
import pytest
from transformers.models.whisper.english_normalizer import BasicTextNormalizer

from audio_score.contract import TEXT_SIMILARITY_KINDS
from audio_score.scoring import compare
from audio_score.similarity import normalize_text, pooled_cosine, text_similarity


@pytest.mark.parametrize(
    "text",
    ["Hello, World! (laughs) [music]  Café ñandú", "It's 3.5 — done.", "<|en|> Straße", "  ¿Qué   tal?  "],
)
def test_normalisation_matches_whispers_basic_normaliser(text: str) -> None:
    """Any language but English gets Whisper's basic normaliser (tokens of no letter or digit dropped)."""
    expected = [t for t in BasicTextNormalizer()(text).split() if any(c.isalnum() for c in t)]
    assert normalize_text(text, "de") == " ".join(expected)


@pytest.mark.parametrize(
    "text",
    ["Hello, World! (laughs) [music]  Mr. Smith", "It's 3.5 — done, um, twenty-five", "We'll analyse the colour"],
)
def test_english_normalisation_is_whispers_english_normaliser(text: str) -> None:
    """English gets transformers' EnglishTextNormalizer with OpenAI's spelling map (bundled by whisper-normalizer)."""
    import json
    from importlib.resources import files

    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    spelling = json.loads(files("whisper_normalizer").joinpath("normalizers/english.json").read_text("utf-8"))
    assert normalize_text(text) == " ".join(EnglishTextNormalizer(spelling)(text).split())


def _pooled(embedding: np.ndarray, transcript: str, reference: np.ndarray, reference_transcript: str):  # type: ignore[no-untyped-def]
    """compare() with the pooled cosine as the audio score (frames: the embedding as one frame)."""
    return compare(
        embedding=embedding,
        frames=np.asarray(embedding, np.float16).reshape(1, -1),
        transcript=transcript,
        reference_embedding=reference,
        reference_frames=np.asarray(reference, np.float16).reshape(1, -1),
        reference_text=None,
        reference_transcript=reference_transcript,
        audio_similarity_kind="pooled",
    )


def test_identical_inputs_give_exactly_one() -> None:
    rng = np.random.default_rng(0)
    emb = rng.standard_normal(384).astype(np.float32)
    s = _pooled(emb, "Hello there", emb.copy(), "hello, there!")
    assert s.audio_sim_score == 1.0
    assert s.text_sim_score == 1.0
    assert s.sim_score == 1.0
    headline = {k: v for k, v in s.scores().items() if k in ("sim_score", "audio_sim_score", "text_sim_score")}
    assert headline == {"sim_score": 1.0, "audio_sim_score": 1.0, "text_sim_score": 1.0}


def test_an_embedding_against_itself_is_exactly_one_for_every_vector() -> None:
    # The textbook a.b / (|a| |b|) gives 1 - 2**-53 for about a quarter of these; a.b / sqrt(a.a * b.b) never does.
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((2000, 384)).astype(np.float32) * rng.uniform(1e-3, 1e3, (2000, 1)).astype(np.float32)
    textbook = [float(np.dot(v, v) / (np.linalg.norm(v) * np.linalg.norm(v))) for v in vectors.astype(np.float64)]
    assert sum(value != 1.0 for value in textbook) > 100  # the rounding this guards against is real
    assert all(pooled_cosine(v, v.copy()) == 1.0 for v in vectors)


def test_different_inputs_give_less_and_the_mean() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(64), rng.standard_normal(64)
    s = _pooled(a, "the cat sat", b, "a dog ran")
    assert 0.0 <= s.audio_sim_score < 1.0
    assert 0.0 <= s.text_sim_score < 1.0
    assert s.sim_score == pytest.approx((s.audio_sim_score + s.text_sim_score) / 2)


def test_cosine_is_clipped_and_defined_for_zero_vectors() -> None:
    v = np.ones(8)
    assert pooled_cosine(v, -v) == 0.0
    assert pooled_cosine(np.zeros(8), v) == 0.0
    with pytest.raises(ValueError, match="sizes differ"):
        pooled_cosine(np.ones(8), np.ones(4))


def test_empty_transcripts() -> None:
    assert text_similarity("", "") == 1.0
    assert text_similarity("...", "[music]") == 1.0  # both normalise to nothing
    assert text_similarity("", "hello") == 0.0
    assert text_similarity("hello wold", "hello world", "char") == pytest.approx(0.952, abs=1e-3)
    assert text_similarity("hello wold", "hello world", "word") == 0.5  # one word of two is wrong


def test_compare_feeds_the_chosen_audio_similarity_into_the_contract_scores() -> None:
    rng = np.random.default_rng(3)
    frames = rng.standard_normal((40, 16)).astype(np.float16)
    other = rng.standard_normal((40, 16)).astype(np.float16)
    common = {
        "embedding": frames.astype(np.float32).mean(axis=0),
        "frames": frames,
        "transcript": "the cat sat",
        "reference_embedding": other.astype(np.float32).mean(axis=0),
        "reference_frames": other,
        "reference_text": "the cat sat on the mat",
        "reference_transcript": "the cat sat on the mat",
    }
    aligned = compare(**common)
    pooled = compare(**common, audio_similarity_kind="pooled")
    assert aligned.audio_similarity == "aligned" and aligned.audio_sim_score == aligned.audio_aligned_sim_score
    assert pooled.audio_sim_score == pooled.audio_pooled_sim_score
    assert aligned.audio_pooled_sim_score == pooled.audio_pooled_sim_score
    assert aligned.sim_score == (aligned.audio_aligned_sim_score + aligned.text_sim_score) / 2
    assert aligned.word_accuracy == 0.5
    assert [w["op"] for w in aligned.as_dict()["words"]] == ["match"] * 3 + ["deletion"] * 3
    assert all(0.0 <= v <= 1.0 for v in aligned.scores().values())
    with pytest.raises(ValueError, match="aligned"):
        compare(**common, audio_similarity_kind="bogus")  # type: ignore[arg-type]


def test_normaliser_follows_the_language() -> None:
    from audio_score.textnorm import is_english, normalizer_for

    assert is_english(None) and is_english("en") and is_english("EN") and not is_english("fr")
    assert normalize_text("We're in 5 minutes, the colour!") == "we are in 5 minutes the color"
    assert normalize_text("We're five minutes", "en") == "we are 5 minutes"
    assert normalize_text("Cinq minutes, d'accord", "fr") == "cinq minutes d accord"
    assert normalize_text("one two", "de") == "one two"  # no English number rules for another language
    assert normalizer_for(None)("colour") == normalizer_for("en")("colour") == "color"
    assert normalizer_for("fr")("Colour") == "colour"


@pytest.mark.parametrize("kind", TEXT_SIMILARITY_KINDS)
def test_spelling_numbers_and_contractions_are_the_same_text(kind: str) -> None:
    for a, b in [("in 5 minutes", "in five minutes"), ("5.0", "five"), ("we're here", "we are here")]:
        assert text_similarity(a, b, kind) == 1.0  # type: ignore[arg-type]
    assert text_similarity("The colour grey", "the color gray", kind) == 1.0  # type: ignore[arg-type]


def test_the_word_kind_has_no_floor_for_an_unrelated_sentence() -> None:
    a, b = "the quick brown fox jumps over the lazy dog", "she sells sea shells by the seashore every morning"
    assert text_similarity(a, b, "char") > 0.35  # letters in order are shared by any two sentences
    assert text_similarity(a, b, "word") < 0.15
    assert text_similarity(a, b, "fuzzy_word") < 0.15
    assert text_similarity(a, b, "phonetic_word") < 0.15
    assert text_similarity("the cat sat on the mat", "the cat sat on a mat", "word") == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="word"):
        text_similarity(a, b, "bogus")  # type: ignore[arg-type]


def test_fuzzy_word_credits_a_near_miss_by_its_spelling_and_an_unrelated_word_not_at_all() -> None:
    ref = "david doesn't like cold weather"
    # Six tokens once normalised ("doesn't" = "does not"). "gold" for "cold": Indel similarity 0.75, so that word
    # costs 0.25 of 6 (the exact kind charges a whole word).
    assert text_similarity("david doesn't like gold weather", ref, "fuzzy_word") == pytest.approx(1 - 0.25 / 6)
    assert text_similarity("david doesn't like gold weather", ref, "word") == pytest.approx(5 / 6)
    # "warm" for "cold": no letters in common, similarity 0 (< 0.5): a whole word.
    assert text_similarity("david doesn't like warm weather", ref, "fuzzy_word") == pytest.approx(5 / 6)
    assert text_similarity("", ref, "fuzzy_word") == 0.0
    assert text_similarity(ref, ref, "fuzzy_word") == 1.0


def test_phonetic_word_credits_a_word_that_sounds_alike_and_not_one_that_does_not() -> None:
    ref = "could you pass me the salt please"
    # "salad" for "salt": spelt 0.67 alike (a third of a word with fuzzy_word), one Metaphone code (SLT): free.
    heard = "could you pass me the salad please"
    assert text_similarity(heard, ref, "fuzzy_word") == pytest.approx(1 - (1 - 2 * 3 / 9) / 7)
    assert text_similarity(heard, ref, "phonetic_word") == 1.0
    # "mating" for "meeting" (MTNK both) is free; "warm" for "cold" sounds no more alike than it is spelt.
    assert text_similarity("we are mating maria", "we are meeting maria", "phonetic_word") == 1.0
    cold = "david doesn't like cold weather"
    warm = "david doesn't like warm weather"
    assert text_similarity(warm, cold, "phonetic_word") == text_similarity(warm, cold, "fuzzy_word") == 5 / 6
    # Never below fuzzy_word (each word pair takes the closer of spelling and sound), 1.0 for the same text and 0
    # for nothing heard.
    for a, b in [("the train leaves in ten minutes", "a train leafs in the city minutes"), (warm, cold)]:
        assert text_similarity(a, b, "phonetic_word") >= text_similarity(a, b, "fuzzy_word")
    assert text_similarity(ref, ref, "phonetic_word") == 1.0
    assert text_similarity("", ref, "phonetic_word") == 0.0


def test_phonetic_word_is_fuzzy_word_for_other_languages_than_english() -> None:
    # Metaphone encodes English spelling: a French take is compared by its spelling alone.
    a, b = "il fait beau", "il fée bot"
    french = text_similarity(a, b, "phonetic_word", "fr")
    assert french == text_similarity(a, b, "fuzzy_word", "fr") == pytest.approx(1 / 3)
    assert text_similarity(a, b, "phonetic_word", "en") > 0.7  # English rules would hear "beau" as "bot"
