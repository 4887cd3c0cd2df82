"""The V2 (Open Inference Protocol) contract between the router and a predictor, defined once.

Every other place that needs a tensor name, a datatype, a shape, the id rule or the deadline header imports
it from here: the predictor's model (:mod:`predictors.model`: parsing, metadata, the response), the codec
(:mod:`audio_score.v2`: requests and responses), the router (:mod:`router.app`) and the score client.
``docs/architecture.md`` describes the same contract in prose; ``tests/test_architecture_doc.py`` keeps the two
in step.

A request is one mono clip (``audio``); with ``uid`` and ``cid`` it is scored against that reference clip
(:data:`SCORE_OUTPUTS`), without them it is only embedded (:data:`EMBED_OUTPUTS`, the documented embed-only
mode).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

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
#: made only of dots is refused too, by :func:`audio_score.cache.validate_id`).
ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,128}$")

#: Request header (REST) / metadata key (gRPC): milliseconds the caller will still wait for this answer. The
#: router's own callers may send it too; the router passes on what is left of it.
DEADLINE_HEADER = "x-audio-score-deadline-ms"


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
    _flag("looped", "the transcript looped or ran past what the audio can hold: it was cut, the text half not used"),
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
    _fp32("text_sim_score", "rapidfuzz ratio / 100 of the transcripts (or the reference text)"),
    _text("transcript", "the upload's transcript"),
    _text("reference_transcript", "the reference clip's transcript"),
)
#: Outputs added later (the feedback outputs): a client parses them when present, since a predictor of an
#: older release does not send them.
SCORE_OPTIONAL_OUTPUTS = (
    _fp32("audio_pooled_sim_score", "cosine of the pooled encoder features"),
    _fp32("audio_aligned_sim_score", "mean cosine of the DTW-aligned encoder frames"),
    _text("audio_similarity", "which of the two feeds audio_sim_score: 'aligned' or 'pooled'"),
    _fp32("word_accuracy", "max(0, 1 - word error rate) against the reference text"),
    _text(
        "words",
        "JSON list of {op, word, said}, op one of WORD_OPS; with the reference's word times each item also has "
        "WORD_TIMING_KEYS",
    ),
    _text("reference_text", "the clip's reference text file ('' when it has none)"),
    _text("text_similarity", "which text similarity feeds text_sim_score (config.json's text_similarity)"),
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

#: The values of ``audio_similarity`` (config.json's field of the same name).
AUDIO_SIMILARITY_KINDS = ("aligned", "pooled")
#: The ``op`` of one item of ``words``.
WORD_OPS = frozenset({"match", "substitution", "deletion", "insertion"})
#: What an item of ``words`` adds when the reference has word times: seconds (or null) except ``audio_score``
#: (the word's own aligned similarity, [0, 1] or null) and ``left_out`` (bool).
WORD_TIMING_KEYS = ("start", "end", "ref_start", "ref_end", "audio_score", "lag", "left_out")
#: The keys of one item of ``pauses``.
PAUSE_KEYS = ("index", "word", "start", "duration", "reference_gap", "excess")
