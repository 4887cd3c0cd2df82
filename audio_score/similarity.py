"""How close an upload is to a reference: by sound (pooled encoder features) and by words (transcripts).

:func:`pooled_cosine` is the cosine of the two pooled embeddings clipped to [0, 1] (the ``pooled`` audio
similarity; the ``aligned`` one is :mod:`audio_score.alignment`). :func:`text_similarity` compares the
transcripts after Whisper's normalisation (:mod:`audio_score.textnorm`: English rules for English, the basic
normaliser for other languages), in one of three kinds (:data:`audio_score.contract.TEXT_SIMILARITY_KINDS`),
``text_similarity`` in config.json:

- ``"word"``: 1 - (word-level Levenshtein distance) / (length of the longer token list), over the normalised
  tokens (RapidFuzz ``Levenshtein.normalized_similarity`` on token lists). Unrelated sentences share few words, so
  they score near 0 (only common words like "the" count).
- ``"char"``: the seed's RapidFuzz ``fuzz.ratio`` / 100 of the normalised strings (an InDel ratio of characters).
  It gives partial credit to a near miss ("wold" for "world") but also about 0.4 to an unrelated sentence, since
  any two English sentences share many letters in order.
- ``"fuzzy_word"``: ``"word"``, but a substituted word earns back its character similarity when the
  two words are close (:func:`fuzzy_word_similarity`): a misheard "gold" for "cold" costs a quarter of a word, an
  unrelated word a whole one. Unrelated sentences still score near 0 (0.07 where ``char`` gives 0.38).
- ``"phonetic_word"`` (default): ``"fuzzy_word"`` where two English words are also as close as their sounds:
  the larger of their character similarity and that of their Metaphone codes (:func:`phonetic_word_similarity`).
  A recogniser that mishears an accent writes words that *sound* like the ones said ("mating" for "meeting",
  "past" for "pass", "salad" for "salt"), often spelt further apart than they sound. Other languages than
  English: as ``fuzzy_word`` (Metaphone encodes English spelling only).

The default is the kind that separates right from wrong readings best on the broader corpus
(``bench/bench_quality.py`` over ``tests/data/speech`` and ``tests/data/corpus``; figures in docs/architecture.md
"Scores"): ``word`` was best on the five tuned-on sentences but fell below ``char`` on the new voices, because
tiny.en mishears a synthetic voice by a letter or two; ``phonetic_word`` was chosen over ``fuzzy_word`` on the
tuned-on set and half the corpus's sentences and checked on the other half (``bench/quality_pairs.py``).

Metaphone comes from ``jellyfish`` (a maintained Rust implementation of the common phonetic encodings, imported
on first use, in the predictor only), not written here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from rapidfuzz import fuzz
from rapidfuzz.distance import Indel, Levenshtein

from audio_score.contract import DEFAULT_TEXT_SIMILARITY, TEXT_SIMILARITY_KINDS, TextSimilarity, kinds_text
from audio_score.textnorm import is_english, normalize_text, tokens

__all__ = ["fuzzy_word_similarity", "normalize_text", "phonetic_word_similarity", "pooled_cosine", "text_similarity"]

#: ``fuzzy_word``: a substituted word earns back its character similarity when that is at least this much
#: ("gold" for "cold", 0.75; "Marie" for "Maria", 0.8); below it (unrelated words) it earns nothing.
FUZZY_WORD_MIN_SIMILARITY = 0.5


def text_similarity(
    hypothesis: str, reference: str, kind: TextSimilarity = DEFAULT_TEXT_SIMILARITY, language: str | None = None
) -> float:
    """How close two transcripts are, in [0, 1], after normalisation for ``language`` (None: English).

    Two empty transcripts (both clips without words) are identical: 1.0. One empty and one not: 0.0.
    """
    if kind not in TEXT_SIMILARITY_KINDS:
        raise ValueError(f"text_similarity {kind!r}: use {kinds_text(TEXT_SIMILARITY_KINDS)}")
    a, b = tokens(hypothesis, language), tokens(reference, language)
    if not a and not b:
        return 1.0
    if kind == "char":
        return float(fuzz.ratio(" ".join(a), " ".join(b))) / 100.0
    if kind == "word":
        return float(Levenshtein.normalized_similarity(a, b))
    if kind == "phonetic_word" and is_english(language):
        return phonetic_word_similarity(a, b)
    return fuzzy_word_similarity(a, b)  # fuzzy_word, and phonetic_word outside English


def fuzzy_word_similarity(a: list[str], b: list[str]) -> float:
    """1 - (word-level edit distance) / (length of the longer list), where substituting one word for another
    costs 1 minus their character similarity (RapidFuzz ``Indel.normalized_similarity``) when that is at least
    :data:`FUZZY_WORD_MIN_SIMILARITY`, else 1.

    RapidFuzz's edit distances take one fixed cost per operation, so the dynamic programme over the words is
    written here (at most a few dozen words a side: microseconds); the per-word similarity is RapidFuzz's.
    """
    return _word_edit_similarity(a, b, Indel.normalized_similarity)


def phonetic_word_similarity(a: list[str], b: list[str]) -> float:
    """:func:`fuzzy_word_similarity` where two words are as close as the closer of their spellings and their
    Metaphone codes (``jellyfish.metaphone``): "mating"/"meeting" (MTNK both) and "salad"/"salt" (SLT both)
    substitute for free, "closet"/"oclock" (KLST/OKLK) stays a near-whole word."""
    import jellyfish

    codes: dict[str, str] = {}

    def code(word: str) -> str:
        if word not in codes:
            codes[word] = jellyfish.metaphone(word)
        return codes[word]

    def close(word: str, other: str) -> float:
        spelt = Indel.normalized_similarity(word, other)
        sounds = (code(word), code(other))
        if not all(sounds):  # a word with no consonant-bearing code ("a", digits): spelling only
            return spelt
        return max(spelt, Indel.normalized_similarity(*sounds))

    return _word_edit_similarity(a, b, close)


def _word_edit_similarity(a: list[str], b: list[str], similarity: Callable[[str, str], float]) -> float:
    """The word-level edit similarity both fuzzy kinds share: a substitution costs 1 - ``similarity`` when that
    is at least :data:`FUZZY_WORD_MIN_SIMILARITY`, else 1; insertions and deletions cost 1."""
    if not a or not b:
        return 1.0 if not a and not b else 0.0
    previous = [float(j) for j in range(len(b) + 1)]
    for i, word in enumerate(a, start=1):
        current = [float(i)]
        for j, other in enumerate(b, start=1):
            close = similarity(word, other)
            substitute = 1.0 - close if close >= FUZZY_WORD_MIN_SIMILARITY else 1.0
            current.append(min(previous[j] + 1.0, current[j - 1] + 1.0, previous[j - 1] + substitute))
        previous = current
    return max(0.0, 1.0 - previous[-1] / max(len(a), len(b)))


def pooled_cosine(embedding: np.ndarray, reference: np.ndarray) -> float:
    """Cosine of two pooled embeddings, clipped to [0, 1]; a zero vector gives 0.0.

    Written as ``a.b / sqrt((a.a)(b.b))`` rather than ``a.b / (|a| |b|)``: for identical vectors the second
    rounds to 1 - 2**-53 for about a quarter of all vectors, while ``sqrt(x*x) == x`` exactly in IEEE arithmetic,
    so equal embeddings give exactly 1.0. A clip scored against its own cache entry is therefore exactly 1.0 when
    the two embeddings are bit-identical (batch and single calls are, on the CPU) and within 1e-6 on any machine.
    """
    a = np.asarray(embedding, dtype=np.float64).ravel()
    b = np.asarray(reference, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"embedding sizes differ: {a.shape[0]} vs {b.shape[0]} (different models?)")
    denom = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
    if denom == 0.0 or not np.isfinite(denom):
        return 0.0
    return float(np.clip(np.dot(a, b) / denom, 0.0, 1.0))
