"""Text normalisation as Whisper's evaluations do it, and the words of a text as written.

Which normaliser: English (the upload heard in English, an English-only model, or no language known) gets
Whisper's ``EnglishTextNormalizer``: numbers ("5" = "five" = "5.0"), contractions ("we're" = "we are"),
British/American spelling ("colour" = "color"), filler words dropped. Any other language gets Whisper's
``BasicTextNormalizer`` (lower case, no punctuation or symbols, accents kept), because the English rules would
rewrite words of another language. Both are transformers' copies of OpenAI's code
(``transformers.models.whisper.english_normalizer``, maintained with the Whisper model there); the English
spelling map they take (OpenAI's ``english.json``) is the one the ``whisper-normalizer`` package bundles (a
maintained PyPI package shipping that file, so nothing is fetched at run time). Both are imported on first use:
text scoring runs in the predictor, and the router (no transformers in its image) never calls this module.

Two small steps run before the English normaliser, both fixes of its input rather than new rules: typographic
apostrophes (’ ‘ ʼ) become ``'`` (the contraction rules match only ``'``, so a text file's "it’s" would
otherwise split into "it s"), and "o'clock" becomes "oclock" (the normaliser reads its "o" as a zero and glues
it to the number before: "5 o'clock" -> "50 clock"). Tokens with no letter or digit left (a lone "." of an
ellipsis) are dropped.

Words as written (:func:`units`): a learner is shown the reference's own words ("it's", "o'clock", "5"), while
matching uses the normalised tokens. The normaliser can change the number of words ("we're" -> "we are",
"twenty five" -> "25", "um" -> nothing), so each whitespace-separated word is normalised alone and the result
aligned (RapidFuzz Levenshtein opcodes) with the normalisation of the whole text: a word keeps the tokens it
normalised to where the two agree; where they differ (numbers that read across words: "twenty five", "$20
million") the words involved become one unit holding the whole text's tokens; a word with no token left ("um",
"(laughs)") is no unit. Each :class:`Unit` is one mark for the learner, whatever its number of tokens.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from rapidfuzz.distance import Levenshtein

Normalizer = Callable[[str], str]

#: Language codes (as Whisper writes them) that get the English normaliser; None means "English or unknown".
ENGLISH = frozenset({"en", "english"})
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})
_OCLOCK = re.compile(r"\bo'clock\b", re.IGNORECASE)


def is_english(language: str | None) -> bool:
    """None (English-only model, or not known) and "en" use the English normaliser."""
    return language is None or language.strip().lower() in ENGLISH or not language.strip()


@lru_cache(maxsize=1)
def _english() -> Normalizer:
    from importlib.resources import files

    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    spelling = json.loads(files("whisper_normalizer").joinpath("normalizers/english.json").read_text("utf-8"))
    normalize: Normalizer = EnglishTextNormalizer(spelling)

    def english(text: str) -> str:
        return normalize(_OCLOCK.sub("oclock", text.translate(_APOSTROPHES)))

    return english


@lru_cache(maxsize=1)
def _basic() -> Normalizer:
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer

    normalize: Normalizer = BasicTextNormalizer()
    return normalize


def normalizer_for(language: str | None) -> Normalizer:
    """Whisper's English normaliser for English (or no language), its basic normaliser for any other."""
    return _english() if is_english(language) else _basic()


def _tokens(normalize: Normalizer, text: str) -> list[str]:
    return [t for t in normalize(text).split() if any(c.isalnum() for c in t)]


def _as_written(word: str) -> str:
    """A word as the text wrote it, less the punctuation around it ("mat." -> "mat"; "it's", "$20" stay)."""
    start, end = 0, len(word)
    while start < end and unicodedata.category(word[start])[0] == "P":
        start += 1
    while end > start and unicodedata.category(word[end - 1])[0] == "P":
        end -= 1
    return word[start:end] or word


@dataclass(frozen=True)
class Unit:
    """One word of a text as written (``surface``; several words when the normaliser reads them as one, like
    "twenty five") and the normalised tokens it stands for (at least one)."""

    surface: str
    tokens: tuple[str, ...]


def tokens(text: str, language: str | None = None) -> list[str]:
    """The normalised tokens of a text: what similarity and word accuracy compare."""
    return [t for u in units(text, language) for t in u.tokens]


def normalize_text(text: str, language: str | None = None) -> str:
    """The normalised text (tokens joined by single spaces)."""
    return " ".join(tokens(text, language))


def units(text: str, language: str | None = None) -> tuple[Unit, ...]:
    """The words of ``text`` as written, each with its normalised tokens (see the module's docstring)."""
    return _units(text, is_english(language))


@lru_cache(maxsize=4096)
def _units(text: str, english: bool) -> tuple[Unit, ...]:
    normalize = _english() if english else _basic()
    words = text.split()
    if not words:
        return ()
    alone = [(tok, i) for i, word in enumerate(words) for tok in _tokens(normalize, word)]
    whole = _tokens(normalize, " ".join(words))
    # group[i]: the first word of the unit word i belongs to (units are runs of consecutive words).
    group = list(range(len(words)))
    owner: list[int | None] = [None] * len(whole)
    # Runs of edits between agreeing stretches are one rewrite ("twenty five" -> "25" is a substitution and a
    # deletion): the words it touches become one unit and own the whole text's tokens of that run.
    runs: list[tuple[int, int, int, int]] = []  # (alone start, alone end, whole start, whole end)
    for op in Levenshtein.opcodes([t for t, _ in alone], whole):
        if op.tag == "equal":
            for k in range(op.src_end - op.src_start):
                owner[op.dest_start + k] = alone[op.src_start + k][1]
        elif runs and runs[-1][1] == op.src_start and runs[-1][3] == op.dest_start:
            runs[-1] = (runs[-1][0], op.src_end, runs[-1][2], op.dest_end)
        else:
            runs.append((op.src_start, op.src_end, op.dest_start, op.dest_end))
    for src_start, src_end, dest_start, dest_end in runs:
        if dest_start == dest_end:  # tokens a word has alone but not in the whole text (an aside over words)
            continue
        if src_start == src_end:  # tokens only the whole text has: they belong to the word before (or after)
            first = alone[src_start - 1][1] if src_start > 0 else (alone[0][1] if alone else 0)
        else:
            first, last = alone[src_start][1], alone[src_end - 1][1]
            for i in range(first, last + 1):
                group[i] = group[first]
        for k in range(dest_start, dest_end):
            owner[k] = first
    for i in range(1, len(words)):  # a group may have been extended after its members were pointed at it
        group[i] = group[group[i]]
    token_lists: dict[int, list[str]] = {}
    for token, word in zip(whole, owner, strict=True):
        if word is not None:
            token_lists.setdefault(group[word], []).append(token)
    out: list[Unit] = []
    for start in sorted(set(group)):
        members = [i for i in range(len(words)) if group[i] == start]
        toks = token_lists.get(start)
        if toks:
            out.append(Unit(" ".join(_as_written(words[i]) for i in members), tuple(toks)))
    return tuple(out)
