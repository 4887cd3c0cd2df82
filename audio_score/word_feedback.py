"""Per-word feedback against the speaker being imitated: each reference word on the learner's timeline, its own
audio score, and the take's timing (rate, pauses, lags, ``timing_score``).

The time-aligned audio similarity (:mod:`audio_score.alignment`) already matches the take to the reference frame
by frame; :func:`audio_score.alignment.aligned_paths` hands back the two paths it scored. A reference word's span
(its :class:`~audio_score.word_times.WordTimes`, seconds in the reference clip) becomes reference frames, and the
paths carry it onto the take:

- **Learner span** (``start``/``end``): the take frames the take-to-reference path matched to the word's
  frames (a monotone path, so a contiguous run). Where the path holds on the word's first (last) frame for more
  than ``MAX_STEP`` take frames (longer than the slope limit allows ordinary slow speech), the learner was not
  saying the word but waiting: the hold belongs to the gap before (after) it, not to the word.
- **Audio score** (``audio_score``): the word's mean aligned cosine, the larger of two readings, clipped to
  [0, 1]: over its reference frames, each with the take frame the reference-to-take path matched it to, and over
  its learner span, each take frame with the reference frame the take-to-reference path matched it to. Frames
  are centred and unit length, so a frame matched to itself has cosine exactly 1: the reference scored against
  itself gives 1.0 for every word with no further scaling (within float32 rounding, snapped as the clip score
  is). Two readings because each path has a blind spot next to a pause: the reference-to-take path may cross the
  take's silence at most ``MAX_STEP`` frames a step, so it spends the neighbouring word's frames on it, while the
  take-to-reference path holds on one frame through it; a word said wrong is low in both.
- **Left out**: a word the word marks call a ``deletion`` (the recogniser heard nothing of it) has no learner
  span (``start``/``end`` null, ``left_out`` true); its audio score is the first reading alone (what the take
  has where the word should be), so the score stays a measure of the sound, not of the recogniser. The path
  cannot decide "left out" alone: its slope limit gives every reference word at least half its length.

Timing, over the words the learner said:

- ``rate``: reference speech time / learner speech time from the first said word's start to the last one's end,
  less the words left out and the pauses (so a pause does not read as slow speech): 1.25 means 25 % faster than
  the speaker. With ``RATE_INNER_MIN_WORDS`` or more said words the first and last are left out of it: the paths
  must join the clips' first and last frames, so different silence before or after the speech bends them there.
- ``pauses``: the learner's time around the boundary before a word (from the middle of the previous said word
  to the middle of this one) longer than the reference's there, divided by the rate (a slower reader's gaps are
  longer too), by at least ``PAUSE_MIN_S``: where (the word it comes before, the learner's time) and how long
  (the learner's gap between the two spans and the excess over the expected time).
- ``lag`` per word: learner start - reference start, less the median of that over the said words (the overall
  offset: when the learner pressed record does not count), both in whole aligned frames (the reference's start
  is the frame its word begins in). Positive: later than the speaker.
- ``timing_score = 1 - (rate_penalty + pause_penalty + lag_penalty) / 3``, each penalty in [0, 1]:
  ``min(1, |ln rate| / ln 2)`` (half or double speed is the worst), ``min(1, total pause excess / PAUSE_BUDGET_S)``
  and ``min(1, mean |lag| / LAG_SCALE_S)``. The reference against itself scores 1.0; no said word scores 0.0.

All numpy on the paths' integer arrays; no library offers this mapping (dtw-python and librosa return a path,
which :mod:`audio_score.alignment` already has).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from audio_score.alignment import MAX_STEP, FramePaths, snap_unit
from audio_score.word_times import WordTimes

#: A gap this much longer than the reference's at the same place (after scaling by the rate) is a pause.
PAUSE_MIN_S = 0.3
#: Total pause excess (seconds) at which the pause penalty of ``timing_score`` is full.
PAUSE_BUDGET_S = 2.0
#: Mean |lag| (seconds) at which the lag penalty of ``timing_score`` is full.
LAG_SCALE_S = 0.5
#: With at least this many said words, the rate is measured without the first and last (see ``_timing``).
RATE_INNER_MIN_WORDS = 4
#: A rate this many times off (faster or slower) gives the full rate penalty.
RATE_SPAN = 2.0
#: Rates are clipped to this range before gaps are scaled by them (a path through a take of a few words).
_RATE_CLIP = (0.5, 2.0)


@dataclass(frozen=True)
class WordTiming:
    """One reference word on the learner's timeline (seconds; the learner's in the take)."""

    word: str
    ref_start: float
    ref_end: float
    start: float | None
    end: float | None
    audio_score: float
    lag: float | None
    left_out: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": _r(self.start),
            "end": _r(self.end),
            "ref_start": _r(self.ref_start),
            "ref_end": _r(self.ref_end),
            "audio_score": round(self.audio_score, 4),
            "lag": _r(self.lag),
            "left_out": self.left_out,
        }


@dataclass(frozen=True)
class Pause:
    """A gap before reference word ``index`` (``word``) longer than the speaker's there."""

    index: int
    word: str
    start: float
    duration: float
    reference_gap: float
    excess: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "word": self.word,
            "start": _r(self.start),
            "duration": _r(self.duration),
            "reference_gap": _r(self.reference_gap),
            "excess": _r(self.excess),
        }


@dataclass(frozen=True)
class WordFeedback:
    """Every reference word's :class:`WordTiming` in reading order, and the take's timing."""

    words: tuple[WordTiming, ...]
    rate: float | None
    pauses: tuple[Pause, ...]
    timing_score: float

    def pauses_json(self) -> str:
        return json.dumps([p.as_dict() for p in self.pauses], ensure_ascii=False, separators=(",", ":"))


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def nothing_said(times: WordTimes) -> WordFeedback:
    """Feedback for a take with nothing to align (no speech, or too short for a path): every word left out."""
    words = tuple(WordTiming(w.word, w.start, w.end, None, None, 0.0, None, True) for w in times.words)
    return WordFeedback(words=words, rate=None, pauses=(), timing_score=0.0)


def reference_frames(times: WordTimes, frame_s: float, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Each word's reference frames ``[first, stop)``: the frames whose centres fall in its span, at least one,
    within ``frames``."""
    starts = np.array([w.start for w in times.words], dtype=np.float64)
    ends = np.array([w.end for w in times.words], dtype=np.float64)
    first = np.clip(np.ceil(starts / frame_s - 0.5), 0, frames - 1).astype(np.int64)
    stop = np.clip(np.ceil(ends / frame_s - 0.5), 0, frames).astype(np.int64)
    return first, np.maximum(stop, first + 1)


def word_feedback(
    paths: FramePaths, times: WordTimes, frame_s: float, left_out: Sequence[bool] | None = None
) -> WordFeedback:
    """Map every word of ``times`` through ``paths`` onto the take (the module docstring has the rules).

    ``frame_s``: seconds per aligned (pooled) frame, on both sides. ``left_out[k]``: the word marks say reference
    word ``k`` was not said (None: every word was said). ``ValueError`` when ``left_out`` is not one per word.
    """
    if left_out is not None and len(left_out) != len(times.words):
        raise ValueError(f"{len(left_out)} left-out flags for {len(times.words)} words")
    if not times.words:
        return WordFeedback(words=(), rate=None, pauses=(), timing_score=1.0)
    f, g, sim = paths.take_to_reference, paths.reference_to_take, paths.similarity
    m = sim.shape[1]
    first, stop = reference_frames(times, frame_s, m)
    last = stop - 1
    # The take frames matched to each word's first and last reference frame: [lo, hi] (empty when skipped).
    lo_first = np.searchsorted(f, first, side="left")
    hi_first = np.searchsorted(f, first, side="right") - 1
    lo_last = np.searchsorted(f, last, side="left")
    hi_last = np.searchsorted(f, last, side="right") - 1
    # A hold on the word's first (last) frame longer than slow speech allows is waiting, not the word.
    start_frame = np.where(hi_first - lo_first + 1 > MAX_STEP, hi_first, lo_first)
    end_frame = np.where(hi_last - lo_last + 1 > MAX_STEP, lo_last, hi_last) + 1
    collapsed = end_frame <= start_frame  # a one-frame word that is all hold: the whole run is the word
    start_frame = np.where(collapsed, lo_first, start_frame)
    end_frame = np.where(collapsed, np.maximum(hi_last, lo_first) + 1, end_frame)
    _move_long_holds_out(f, first, stop, start_frame, end_frame, math.ceil(PAUSE_MIN_S / frame_s - 1e-9))
    flags = list(left_out) if left_out is not None else [False] * len(times.words)
    said = [k for k, gone in enumerate(flags) if not gone]
    rate, pauses = _timing(times, said, f, first, stop, start_frame, end_frame, frame_s)
    # Each word's mean cosine along the reference-to-take path over its reference frames, and along the
    # take-to-reference path over its learner span (sums by cumulative sum).
    along = np.concatenate(([0.0], np.cumsum(sim[g, np.arange(m)], dtype=np.float64)))
    by_reference = (along[stop] - along[first]) / (stop - first)
    along_take = np.concatenate(([0.0], np.cumsum(sim[np.arange(f.size), f], dtype=np.float64)))
    by_take = (along_take[end_frame] - along_take[start_frame]) / np.maximum(end_frame - start_frame, 1)
    scores = np.maximum(by_reference, by_take).tolist()
    starts, ends = (start_frame * frame_s).tolist(), (end_frame * frame_s).tolist()
    # Lags in whole aligned frames on both sides (the reference's start as the frame its word begins in), so
    # that the reference against itself lags by exactly 0.
    shifts = ((start_frame - first) * frame_s).tolist()
    offset = float(np.median([shifts[k] for k in said])) if said else 0.0

    words: list[WordTiming] = []
    for k, w in enumerate(times.words):
        if flags[k]:
            score = snap_unit(float(by_reference[k]))
            words.append(WordTiming(w.word, w.start, w.end, None, None, score, None, True))
        else:
            lag = shifts[k] - offset
            words.append(WordTiming(w.word, w.start, w.end, starts[k], ends[k], snap_unit(scores[k]), lag, False))

    return WordFeedback(
        words=tuple(words), rate=rate, pauses=tuple(pauses), timing_score=timing_score(rate, pauses, words)
    )


def _move_long_holds_out(
    f: np.ndarray, first: np.ndarray, stop: np.ndarray, start_frame: np.ndarray, end_frame: np.ndarray, least: int
) -> None:
    """A hold of at least ``least`` take frames (a pause) inside a word's span is not the word: one in the first
    half of the word's reference frames moves its start to after the hold, one in the second half its end to
    before it. (The path may hold on any quiet frame near the edge, a stop's closure or a steady sound, not only
    on the first or last.) Updates ``start_frame``/``end_frame`` in place."""
    changes = np.flatnonzero(np.diff(f)) + 1
    run_start = np.concatenate(([0], changes))
    run_length = np.diff(np.concatenate((run_start, [f.size])))
    for begin, length in zip(run_start[run_length >= least], run_length[run_length >= least], strict=True):
        frame = f[begin]
        k = int(np.searchsorted(first, frame, side="right")) - 1
        if k < 0 or frame >= stop[k] or not (start_frame[k] <= begin < end_frame[k]):
            continue
        if frame < (first[k] + stop[k]) / 2.0:
            start_frame[k] = min(max(start_frame[k], begin + length), end_frame[k] - 1)
        else:
            end_frame[k] = max(min(end_frame[k], begin), start_frame[k] + 1)


def _timing(
    times: WordTimes,
    said: list[int],
    f: np.ndarray,
    first: np.ndarray,
    stop: np.ndarray,
    start_frame: np.ndarray,
    end_frame: np.ndarray,
    frame_s: float,
) -> tuple[float | None, list[Pause]]:
    """The rate and the pauses (module docstring), in aligned frames.

    Between two consecutive said words ``u`` and ``k``, the region from the middle of ``u`` to the middle of
    ``k`` (reference frames) holds their boundary; the learner's time there is the take frames the path matched
    to it, and its excess over the reference's (divided by the rate) is the pause. A region, not the gap between
    the two spans, because a pause need not land on a word's edge: the path may hold on any quiet frame nearby
    (a stop's closure), or spread the silence over the reference's own gap. The rate is the reference's speech
    span (said words' first start to last end, less the words left out in between) over the learner's, less the
    pauses; pauses and rate are settled in two rounds (the first rate counts no pause).
    """
    if not said:
        return None, []
    # The rate's span leaves out the first and last said words when there are enough: the paths must join the
    # clips' first and last frames, so a take with less (or more) silence before or after its speech than the
    # reference bends the path there, and the outer words' spans with it.
    inner = said[1:-1] if len(said) >= RATE_INNER_MIN_WORDS else said
    ref_span = float(stop[inner[-1]] - first[inner[0]])
    spoken = set(said)
    ref_span -= float(sum(stop[k] - first[k] for k in range(inner[0], inner[-1]) if k not in spoken))
    take_span = float(end_frame[inner[-1]] - start_frame[inner[0]])
    if ref_span <= 0 or take_span <= 0:
        return None, []
    pairs = list(itertools.pairwise(said))
    middles = [(first[k] + stop[k]) / 2.0 for k in said]
    lo = np.searchsorted(f, middles[:-1], side="left")
    hi = np.searchsorted(f, middles[1:], side="left")
    learner = (hi - lo).astype(np.float64)
    reference = np.diff(np.asarray(middles, dtype=np.float64))
    rate = ref_span / take_span
    excess = np.zeros(len(pairs))
    for _ in range(2):
        expected = reference / min(max(rate, _RATE_CLIP[0]), _RATE_CLIP[1])
        excess = (learner - expected) * frame_s
        within = [inner[0] <= u and k <= inner[-1] for u, k in pairs]
        paused = float(np.sum(excess[(excess >= PAUSE_MIN_S) & np.asarray(within, dtype=bool)])) / frame_s
        rate = ref_span / max(take_span - paused, 1.0)
    pauses = []
    for place, (u, k) in enumerate(pairs):
        if excess[place] >= PAUSE_MIN_S:
            gap = max(0.0, float(start_frame[k] - end_frame[u]) * frame_s)
            reference_gap = max(0.0, float(first[k] - stop[u]) * frame_s)
            at = float(end_frame[u]) * frame_s
            pauses.append(Pause(k, times.words[k].word, at, gap, reference_gap, float(excess[place])))
    return rate, pauses


def timing_score(rate: float | None, pauses: Sequence[Pause], words: Sequence[WordTiming]) -> float:
    """``1 - (rate_penalty + pause_penalty + lag_penalty) / 3`` (module docstring); 0.0 without a rate."""
    if rate is None or rate <= 0:
        return 0.0
    rate_penalty = min(1.0, abs(math.log(rate)) / math.log(RATE_SPAN))
    pause_penalty = min(1.0, sum(p.excess for p in pauses) / PAUSE_BUDGET_S)
    lags = [abs(w.lag) for w in words if w.lag is not None]
    lag_penalty = min(1.0, (sum(lags) / len(lags)) / LAG_SCALE_S) if lags else 0.0
    return max(0.0, 1.0 - (rate_penalty + pause_penalty + lag_penalty) / 3.0)
