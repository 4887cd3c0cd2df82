"""The rules two parts share, defined once: the V2 (Open Inference Protocol) contract between the router and a
predictor, its headers and how they are read, and the vocabularies of the answer.

Every other place that needs a tensor name, a datatype, a shape, how a tensor is named in an error, the id rule,
a header (the deadline, the binary extension's JSON length) or its parsing, a similarity kind or a word op
imports it from here: the predictor's model (:mod:`predictors.model`: parsing, metadata, the response), its
request decoder (:mod:`predictors.v2_decode`), the codec (:mod:`audio_score.v2`: requests and responses), the
router (:mod:`router.app`), settings (the kinds config.json may name), scoring and the score client.
``docs/architecture.md`` describes the same contract in prose; ``tests/test_architecture_doc.py`` keeps the two
in step, and ``tests/test_restatements.py`` fails when another module writes one of these values again.

The vocabularies are ``Literal`` types, so mypy checks every single use of a value (``kind == "pooled"``); the
tuples beside them are derived with :func:`typing.get_args`, never written a second time.

A request is one mono clip (``audio``); with ``uid`` and ``cid`` it is scored against that reference clip
(:data:`SCORE_OUTPUTS`), without them it is only embedded (:data:`EMBED_OUTPUTS`, the documented embed-only
mode).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

from audio_score.errors import InvalidIdentifier, quote_user_value

Datatype = Literal["FP32", "BYTES", "BOOL"]


@dataclass(frozen=True)
class TensorSpec:
    """One V2 tensor: its name, datatype and shape (``-1`` for a size known only per request or per model)."""

    name: str
    datatype: Datatype
    shape: tuple[int, ...]
    doc: str

    def metadata(self, **sizes: int) -> dict[str, Any]:
        """The tensor as V2 model metadata lists it; ``sizes`` fills a ``-1`` by name (``embedding=768``)."""
        shape = [sizes.get(self.name, d) if d == -1 else d for d in self.shape]
        return {"name": self.name, "datatype": self.datatype, "shape": shape}

    def describe(self) -> str:
        """``'audio' (FP32 [1, N])``: how error messages name the tensor."""
        dims = ", ".join("N" if d == -1 else str(d) for d in self.shape)
        return f"{self.name!r} ({self.datatype} [{dims}])"


# --- inputs ---------------------------------------------------------------------------------------------------

AUDIO = TensorSpec("audio", "FP32", (1, -1), "mono PCM at config.json's target_sampling_rate")
UID = TensorSpec("uid", "BYTES", (1,), "video id of the reference clip (ID_PATTERN)")
CID = TensorSpec("cid", "BYTES", (1,), "clip id within the video (ID_PATTERN)")
INPUTS = (AUDIO, UID, CID)
INPUT_NAMES = tuple(t.name for t in INPUTS)

#: A uid or cid: a path component of the clip store and the cache, so no separators and no traversal (a value
#: made only of dots, or starting with one, is refused too, by :func:`validate_id`).
ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def validate_id(value: str, what: str = "id") -> str:
    """The id rule, whole: :data:`ID_PATTERN`, not made only of dots, not starting with '.' (a hidden name that
    the cache's own temporary folders use). Every part checks a uid, cid or model key with this before a path is
    built from it or it is sent on; :class:`~audio_score.errors.InvalidIdentifier` (a 400) otherwise."""
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value) or set(value) == {"."}:
        raise InvalidIdentifier(
            f"invalid {what} {quote_user_value(value)}: use 1-128 letters, digits, '.', '_' or '-' "
            "(no path separators, not '..')"
        )
    if value.startswith("."):
        raise InvalidIdentifier(f"invalid {what} {quote_user_value(value)}: must not start with '.'")
    return value


#: Request header (REST) / metadata key (gRPC): milliseconds the caller will still wait for this answer. The
#: router's own callers may send it too; the router passes on what is left of it. Read with
#: :func:`parse_deadline_header`, written with :func:`deadline_header_value`.
DEADLINE_HEADER = "x-audio-score-deadline-ms"

#: The binary tensor extension's header (requests and responses): the byte length of the JSON part that starts
#: the body; the raw tensor bytes follow it. Read with :func:`parse_inference_header`.
INFERENCE_HEADER = "inference-header-content-length"


def parse_deadline_header(raw: str | None) -> float | None:
    """The seconds the caller will still wait, from the value of :data:`DEADLINE_HEADER` (milliseconds); None
    when the header is absent or empty. :class:`ValueError` whose message names the header and the fix when it
    is not a positive, finite number: each part answers it as its own 400.

    Naming: a *wait* (``wait_s``) is seconds left, as here; a *deadline* is the clock instant the caller stops
    waiting (the receiver's ``time.perf_counter()`` plus the wait)."""
    if raw is None or raw == "":
        return None
    try:
        ms = float(raw)
    except ValueError:
        raise ValueError(f"{DEADLINE_HEADER}: {raw!r} is not a number of milliseconds") from None
    if not 0 < ms < float("inf"):
        raise ValueError(f"{DEADLINE_HEADER}: {raw!r} must be a positive number of milliseconds")
    return ms / 1000.0


def deadline_header_value(wait_s: float) -> str:
    """:data:`DEADLINE_HEADER`'s value for ``wait_s`` seconds: whole milliseconds, at least 1 (a wait that
    rounds to 0 would be refused by :func:`parse_deadline_header`)."""
    return str(max(1, int(wait_s * 1000)))


def parse_inference_header(raw: str | None) -> int | None:
    """The JSON part's byte length from the value of :data:`INFERENCE_HEADER`; None when the header is absent
    (the body is all JSON). :class:`ValueError` naming the header when it is not a non-negative integer."""
    if raw is None:
        return None
    try:
        length = int(raw)
    except ValueError:
        raise ValueError(f"{INFERENCE_HEADER}: {raw!r} is not a byte count") from None
    if length < 0:
        raise ValueError(f"{INFERENCE_HEADER}: {raw!r} is not a byte count")
    return length


# --- outputs --------------------------------------------------------------------------------------------------


def _fp32(name: str, doc: str) -> TensorSpec:
    return TensorSpec(name, "FP32", (1,), doc)


def _text(name: str, doc: str) -> TensorSpec:
    return TensorSpec(name, "BYTES", (1,), doc)


def _flag(name: str, doc: str) -> TensorSpec:
    return TensorSpec(name, "BOOL", (1,), doc)


#: What the decoding guard says about the upload (:mod:`audio_score.backends.guard`), in score and embed answers.
GUARD_OUTPUTS = (
    _flag("no_speech", "no speech was heard (Whisper's no-speech rule): the transcript is empty, every score 0"),
    _flag("looped", "the transcript looped or ran past the audio: it was cut; the text half is the forced score alone"),
    _text("language", "the language code the upload was transcribed in ('' when the checkpoint does not say)"),
)


#: Per-word feedback's timing (:mod:`audio_score.word_feedback`): sent only when the reference has word times
#: (``rate`` only when the learner said a word of it).
TIMING_OUTPUTS = (
    _fp32("timing_score", "1 - mean of the rate, pause and lag penalties, in [0, 1] (docs/architecture.md)"),
    _fp32("rate", "reference speech time / learner speech time over the words said (> 1: faster than the speaker)"),
    _text(
        "pauses",
        "JSON list of {index, word, start, duration, reference_gap, excess}: pauses longer than the reference's",
    ),
)


#: Outputs every scoring response has.
SCORE_REQUIRED_OUTPUTS = (
    _fp32("sim_score", "mean of audio_sim_score and text_sim_score"),
    _fp32("audio_sim_score", "the audio similarity named by audio_similarity"),
    _fp32(
        "text_sim_score",
        "text_transcript_score, or (forced_text) the mean of text_transcript_score and text_forced_score",
    ),
    _text("transcript", "the upload's transcript"),
    _text("reference_transcript", "the reference clip's transcript"),
)
#: Outputs added later (the feedback outputs): a client parses them when present, since a predictor of an
#: older release does not send them.
SCORE_OPTIONAL_OUTPUTS = (
    _fp32("audio_pooled_sim_score", "cosine of the pooled encoder features"),
    _fp32("audio_aligned_sim_score", "mean cosine of the DTW-aligned encoder frames"),
    _text("audio_similarity", "which of AUDIO_SIMILARITY_KINDS feeds audio_sim_score"),
    _fp32("word_accuracy", "max(0, 1 - word error rate) against the reference text"),
    _text(
        "words",
        "JSON list of {op, word, said}, op one of WORD_OPS; with the reference's word times each item also has "
        "WORD_TIMING_KEYS",
    ),
    _text("reference_text", "the clip's reference text file ('' when it has none)"),
    _text("text_similarity", "which of TEXT_SIMILARITY_KINDS feeds text_sim_score (config.json's text_similarity)"),
    _fp32("text_transcript_score", "the transcript's similarity to the reference's texts (sent with forced_text)"),
    _fp32("text_forced_score", "how well the audio supports the reference's words, read through the recogniser"),
    *GUARD_OUTPUTS,
    *TIMING_OUTPUTS,
)
SCORE_OUTPUTS = SCORE_REQUIRED_OUTPUTS + SCORE_OPTIONAL_OUTPUTS
#: The embed-only answer (a request without uid/cid); ``embedding``'s D is the model's feature size.
EMBED_OUTPUTS = (
    _text("transcript", "the upload's transcript"),
    TensorSpec("embedding", "FP32", (1, -1), "pooled encoder features, D = the model's embedding size"),
)
#: Added to the embed-only answer later: a client parses them when present.
EMBED_OPTIONAL_OUTPUTS = GUARD_OUTPUTS
ALL_OUTPUTS = SCORE_OUTPUTS + tuple(t for t in EMBED_OUTPUTS if t.name not in {s.name for s in SCORE_OUTPUTS})

SCORE_REQUIRED = tuple(t.name for t in SCORE_REQUIRED_OUTPUTS)
SCORE_OPTIONAL = tuple(t.name for t in SCORE_OPTIONAL_OUTPUTS)
EMBED_NAMES = tuple(t.name for t in EMBED_OUTPUTS)
EMBED_OPTIONAL = tuple(t.name for t in EMBED_OPTIONAL_OUTPUTS)
#: The three numbers a caller reads first.
HEADLINE_SCORES = ("sim_score", "audio_sim_score", "text_sim_score")


# --- vocabularies of the answer (and of config.json) ----------------------------------------------------------

#: Which audio similarity feeds ``audio_sim_score``: frames aligned in time (:mod:`audio_score.alignment`) or
#: the cosine of the pooled embeddings. config.json's ``audio_similarity`` and the output of the same name.
AudioSimilarity = Literal["aligned", "pooled"]
AUDIO_SIMILARITY_KINDS: tuple[AudioSimilarity, ...] = get_args(AudioSimilarity)
DEFAULT_AUDIO_SIMILARITY: AudioSimilarity = "aligned"

#: Which text similarity feeds ``text_sim_score`` (:mod:`audio_score.similarity` describes each).
#: config.json's ``text_similarity`` and the output of the same name.
TextSimilarity = Literal["word", "char", "fuzzy_word", "phonetic_word"]
TEXT_SIMILARITY_KINDS: tuple[TextSimilarity, ...] = get_args(TextSimilarity)
#: The kind that separated right from wrong readings best (docs/architecture.md "Scores").
DEFAULT_TEXT_SIMILARITY: TextSimilarity = "phonetic_word"

#: The ``op`` of one item of ``words``: said right, said instead, missed, added.
WordOp = Literal["match", "substitution", "deletion", "insertion"]
WORD_OPS: frozenset[WordOp] = frozenset(get_args(WordOp))

#: What an item of ``words`` adds when the reference has word times: seconds (or null) except ``audio_score``
#: (the word's own aligned similarity, [0, 1]) and ``left_out`` (bool).
WORD_TIMING_KEYS = ("start", "end", "ref_start", "ref_end", "audio_score", "lag", "left_out")
#: The keys of one item of ``pauses``.
PAUSE_KEYS = ("index", "word", "start", "duration", "reference_gap", "excess")


def kinds_text(kinds: tuple[str, ...]) -> str:
    """``'aligned' or 'pooled'``, ``'word', 'char' or 'fuzzy_word'``: a vocabulary as error messages list it."""
    quoted = [repr(k) for k in kinds]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
