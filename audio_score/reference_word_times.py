"""Reference word times: when each word of a reference was said in its clip, computed once when its cache entry
is built (never on the upload path) and stored in the entry (:class:`audio_score.word_times.WordTimes`).

The words are the ones the word marks use: :func:`audio_score.textnorm.units` of the entry's text (its reference
text when the clip has one, else its transcript) in the entry's language, each unit's ``surface`` as written. So
word i of the times is the reference word of the i-th non-insertion word mark.

Sources, best first; the first that gives times for the clip wins and the entry records which one:

1. ``subtitles``: a per-word subtitle file beside the clip (``<stem>.srt`` or ``<stem>.vtt``, the files the
   reference text may also come from; :func:`audio_score.cache.word_subtitle_file` finds it), every cue one word.
   Cue times are read by pysubs2 (a maintained reader of SRT, WebVTT and other subtitle formats, so no timing
   syntax is hand-parsed here). A file that does not parse, is too large, or is ordinary subtitles (a cue of
   several words) is no timing source; one whose cues go backwards, end before they start or run past the clip,
   or whose words do not match the text (fewer than half the text's words found) is logged and skipped.
2. ``model``: the transcribing model's own word timing (:meth:`audio_score.backends.base.Backend.embed_reference`).
   Whisper force-aligns the entry's text itself through its cross-attention (the checkpoint's ``alignment_heads``,
   transformers' token timestamps); a model without word timing (no alignment heads, Higgs, a clip past Whisper's
   30 s window, a text longer than its decoder) gives none.
3. ``voiced``: the fallback, always available: the clip's voiced regions (frame energy within
   :data:`VOICED_RANGE_DB` of its loud frames, gaps shorter than :data:`MIN_GAP_S` bridged), the words spread over
   them in reading order in proportion to their letters.

Mapping times onto the text's words: the model aligns the text itself, word by whitespace-separated word, so a
unit's span runs from its first word's start to its last word's end (a unit is several words when the normaliser
reads them as one: "twenty five"). Subtitle cues are matched to the text by their normalised tokens (RapidFuzz
Levenshtein opcodes, as :mod:`audio_score.words` aligns transcripts), so "5" in the text finds the cue "five". A
text word no cue or aligned word covers (the model skipped it, the subtitles lack it) gets the gap between its
timed neighbours, shared among the untimed words there by letters; before the first or after the last timed word
it gets the time its letters take at the clip's own rate, taken from the words that were timed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rapidfuzz.distance import Levenshtein

from audio_score.textnorm import Unit, _as_written, tokens, units
from audio_score.word_times import WordTime, WordTimes, WordTimeSource

log = logging.getLogger(__name__)

#: Bump when how word times are computed or stored changes: it is part of every entry's fingerprint
#: (:func:`audio_score.entries.entry_fingerprint`), so old entries are rebuilt with the new times.
WORD_TIMES_VERSION = 1
#: A per-word subtitle file is a few bytes a word; anything larger is not one (and is not read into memory).
MAX_SUBTITLE_BYTES = 256 * 1024
#: Subtitle cues may end this far past the decoded clip (authoring tools round, containers pad) and still count
#: as inside it; their times are then clamped to the clip.
SUBTITLE_SLACK_S = 0.5
#: At least this share of the text's words must be found among the cues, else the file is another text's timing.
MIN_SUBTITLE_MATCH = 0.5
#: Voiced-region analysis: 20 ms frames; voiced = within this many dB of the clip's loud frames (its 95th
#: percentile) and above an absolute floor; pauses shorter than ``MIN_GAP_S`` are inside speech, not between it.
VOICED_FRAME_S = 0.02
VOICED_RANGE_DB = 35.0
VOICED_FLOOR_DBFS = -60.0
MIN_GAP_S = 0.15
#: Seconds per letter when nothing in the clip says how fast it is spoken (about 150 words a minute).
DEFAULT_S_PER_LETTER = 0.075
#: Refining the model's boundaries: a boundary two words share moves to the quietest 10 ms frame within this
#: distance (words meet where the voice dips: a closure, a breath). 100 ms is about the alignment's own spread;
#: on the festival benchmark it halves the gap between the raw alignment and the engine's times.
REFINE_WINDOW_S = 0.10
_REFINE_FRAME_S = 0.01


@dataclass(frozen=True)
class WordSubtitles:
    """A subtitle file beside a clip, read for word timing: its identity (what the entry's freshness compares)
    and its cues when every cue is one word (None: it is no per-word timing; ``reason`` says why)."""

    identity: dict[str, Any]
    cues: tuple[WordTime, ...] | None
    reason: str | None = None


def read_word_subtitles(path: Path) -> WordSubtitles:
    """Read a ``.srt``/``.vtt`` for per-word cue times; never raises for a bad file (it is then no source)."""
    import pysubs2

    try:
        stat = path.stat()
        identity: dict[str, Any] = {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        if stat.st_size > MAX_SUBTITLE_BYTES:
            identity["sha256"] = _file_sha256(path)
            return WordSubtitles(identity, None, f"{stat.st_size} bytes; the limit is {MAX_SUBTITLE_BYTES}")
        data = path.read_bytes()
    except OSError as exc:
        return WordSubtitles({"path": str(path)}, None, f"unreadable: {exc}")
    identity["sha256"] = hashlib.sha256(data).hexdigest()
    try:
        text = data.decode("utf-8-sig")
        fmt = "vtt" if path.suffix.lower() == ".vtt" else "srt"
        events = [e for e in pysubs2.SSAFile.from_string(text, format_=fmt).events if not e.is_comment]
    except (UnicodeDecodeError, ValueError, pysubs2.Pysubs2Error) as exc:
        return WordSubtitles(identity, None, f"cannot be read as {path.suffix}: {exc}")
    cues = []
    for event in events:
        words = event.plaintext.split()
        if not words:
            continue
        if len(words) > 1:
            return WordSubtitles(identity, None, f"a cue holds {len(words)} words: not per-word timing")
        cues.append(WordTime(words[0], event.start / 1000.0, event.end / 1000.0))
    if not cues:
        return WordSubtitles(identity, None, "no cues")
    # pysubs2 keeps the file's order; times are checked against the clip when the entry is built.
    return WordSubtitles(identity, tuple(cues))


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def subtitle_problem(cues: Sequence[WordTime], duration_s: float) -> str | None:
    """Why these cues cannot time a clip of ``duration_s`` seconds, or None when they can."""
    previous = 0.0
    for index, cue in enumerate(cues):
        if cue.start < 0 or cue.end < cue.start:
            return f"cue {index + 1} ({cue.word!r}) runs from {cue.start} s to {cue.end} s"
        if cue.start < previous:
            return f"cue {index + 1} ({cue.word!r}) starts at {cue.start} s, before the cue ahead of it"
        if cue.end > duration_s + SUBTITLE_SLACK_S:
            return f"cue {index + 1} ({cue.word!r}) ends at {cue.end} s, past the clip's {duration_s:.2f} s"
        previous = cue.start
    return None


def build_word_times(
    text: str,
    language: str | None,
    *,
    samples: np.ndarray,
    sampling_rate: int,
    subtitles: WordSubtitles | None = None,
    model_spans: Sequence[tuple[float, float]] | None = None,
    model_text: str | None = None,
    clip: str = "",
    refine: bool = True,
) -> WordTimes:
    """The times of ``text``'s words (see the module docstring for the sources and their order).

    ``model_spans`` are the model's (start, end) for each whitespace-separated word of ``model_text`` (which must
    be ``text``; another text's spans are not used), None when the model gave none. ``refine`` (default) moves the
    model's boundaries onto the audio (:func:`refine_with_voice`); the benchmark turns it off to show the raw
    alignment beside it.
    """
    duration = len(samples) / float(sampling_rate) if sampling_rate > 0 else 0.0
    unit_list = units(text, language)
    if subtitles is not None and subtitles.cues is not None:
        problem = subtitle_problem(subtitles.cues, duration)
        spans = None
        if problem is None:
            spans = _spans_from_timed_words(unit_list, subtitles.cues, language)
            if spans is not None and _matched_share(spans) < MIN_SUBTITLE_MATCH:
                problem = f"only {_matched_share(spans):.0%} of the text's words are among its cues"
        if problem is None and spans is not None:
            return _word_times(unit_list, _fill_gaps(spans, unit_list, duration), "subtitles", duration)
        log.warning(
            "per-word subtitles not used for word times",
            extra={"clip": clip, "path": subtitles.identity.get("path"), "reason": problem},
        )
    if model_spans is not None and model_text == text:
        spans = _spans_from_word_spans(text, unit_list, model_spans)
        if spans is not None:
            filled = _fill_gaps(spans, unit_list, duration)
            if refine:
                filled = refine_with_voice(filled, samples, sampling_rate)
            return _word_times(unit_list, filled, "model", duration)
        log.warning("model word times do not map onto the text; spreading over voiced regions", extra={"clip": clip})
    regions = voiced_regions(samples, sampling_rate)
    return _word_times(unit_list, spread_over(unit_list, regions), "voiced", duration)


Span = tuple[float, float]


def _letters(unit: Unit) -> int:
    """How long a word is to say, roughly: its letters and digits as written (at least one)."""
    return max(1, sum(c.isalnum() for c in unit.surface))


def _word_times(unit_list: Sequence[Unit], spans: Sequence[Span], source: WordTimeSource, duration: float) -> WordTimes:
    """Clamp into the clip and make the spans run forwards (a start never before the previous start)."""
    words = []
    floor = 0.0
    for unit, (start, end) in zip(unit_list, spans, strict=True):
        start = min(max(start, floor, 0.0), duration)
        end = min(max(end, start), duration)
        # Rounded as stored (0.1 ms), so an entry read back equals the one written.
        words.append(WordTime(unit.surface, round(start, 4), round(end, 4)))
        floor = start
    return WordTimes(words=tuple(words), source=source)


def _unit_word_ranges(text: str, unit_list: Sequence[Unit]) -> list[range] | None:
    """For each unit, the whitespace-separated words of ``text`` it was made of (in order); None if they cannot
    be found (the units were made from another text)."""
    written = [_as_written(w) for w in text.split()]
    ranges: list[range] = []
    at = 0
    for unit in unit_list:
        parts = unit.surface.split()
        found = None
        for start in range(at, len(written) - len(parts) + 1):
            if written[start : start + len(parts)] == parts:
                found = range(start, start + len(parts))
                break
        if found is None:
            return None
        ranges.append(found)
        at = found.stop
    return ranges


def _spans_from_word_spans(
    text: str, unit_list: Sequence[Unit], word_spans: Sequence[Span]
) -> list[Span | None] | None:
    """Units' spans from per-whitespace-word spans of the same text."""
    if len(word_spans) != len(text.split()):
        return None
    ranges = _unit_word_ranges(text, unit_list)
    if ranges is None:
        return None
    return [(word_spans[r.start][0], word_spans[r.stop - 1][1]) for r in ranges]


def _spans_from_timed_words(
    unit_list: Sequence[Unit], timed: Sequence[WordTime], language: str | None
) -> list[Span | None]:
    """Units' spans from timed words of possibly different spelling, matched by normalised tokens; a unit no
    timed word matched is None."""
    said = [(token, k) for k, word in enumerate(timed) for token in tokens(word.word, language)]
    wanted = [(token, u) for u, unit in enumerate(unit_list) for token in unit.tokens]
    spans: list[Span | None] = [None] * len(unit_list)
    for op in Levenshtein.opcodes([t for t, _ in wanted], [t for t, _ in said]):
        if op.tag not in ("equal", "replace"):
            continue
        count, other = op.src_end - op.src_start, op.dest_end - op.dest_start
        for i in range(count):
            # A replacement of unequal lengths ("twenty five" vs "25") pairs tokens proportionally.
            first = op.dest_start + i * other // count
            last = op.dest_start + max(i * other // count, (i + 1) * other // count - 1)
            unit = wanted[op.src_start + i][1]
            start, end = timed[said[first][1]].start, timed[said[last][1]].end
            span = spans[unit]
            spans[unit] = (start, end) if span is None else (min(span[0], start), max(span[1], end))
    return spans


def _matched_share(spans: Sequence[Span | None]) -> float:
    return sum(s is not None for s in spans) / len(spans) if spans else 1.0


def _fill_gaps(spans: Sequence[Span | None], unit_list: Sequence[Unit], duration: float) -> list[Span]:
    """Untimed units get the gap between their timed neighbours, shared by letters (see the module docstring)."""
    timed = [(s, _letters(u)) for s, u in zip(spans, unit_list, strict=True) if s is not None]
    rates = [(end - start) / letters for (start, end), letters in timed if end > start]
    per_letter = float(np.median(rates)) if rates else DEFAULT_S_PER_LETTER
    out: list[Span | None] = list(spans)
    index = 0
    while index < len(out):
        if out[index] is not None:
            index += 1
            continue
        stop = index
        while stop < len(out) and out[stop] is None:
            stop += 1
        letters = [_letters(u) for u in unit_list[index:stop]]
        need = sum(letters) * per_letter
        before = out[index - 1] if index > 0 else None
        after = out[stop] if stop < len(out) else None
        if before is not None and after is not None:
            low, high = before[1], max(before[1], after[0])
        elif after is not None:
            low, high = max(0.0, after[0] - need), after[0]
        elif before is not None:
            low, high = before[1], min(duration, before[1] + need)
        else:
            low, high = 0.0, min(duration, need)
        for offset, span in enumerate(_spread(letters, [(low, high)])):
            out[index + offset] = span
        index = stop
    return [s for s in out if s is not None]


def refine_with_voice(spans: Sequence[Span], samples: np.ndarray, sampling_rate: int) -> list[Span]:
    """The model's word spans moved onto the audio, in two steps (Whisper's cross-attention times are coarse:
    20 ms frames, smoothed, and late by about 80 ms on the festival benchmark):

    1. an edge in a pause is moved to the voice: a start to the next voiced region's start, an end to the last
       voiced region's end (the first word no longer starts at the clip's first sample);
    2. a boundary two consecutive words share moves to the quietest 10 ms frame within :data:`REFINE_WINDOW_S`
       of it, never past either word's other edge.
    """
    regions = voiced_regions(samples, sampling_rate)
    out = [list(span) for span in spans]
    for span in out:
        start, end = span
        if regions and not _voiced_at(start, regions):
            later = [a for a, _ in regions if a > start]
            if later and later[0] < end:
                span[0] = later[0]
        if regions and not _voiced_at(end, regions):
            earlier = [b for _, b in regions if b < end]
            if earlier and earlier[-1] > span[0]:
                span[1] = earlier[-1]
    hop = max(1, round(sampling_rate * _REFINE_FRAME_S))
    count = len(samples) // hop
    if count < 3:
        return [(a, b) for a, b in out]
    frames = np.asarray(samples[: count * hop], dtype=np.float64).reshape(count, hop)
    level = np.convolve(10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-12), np.ones(3) / 3, mode="same")
    for i in range(1, len(out)):
        boundary = out[i][0]
        if abs(out[i - 1][1] - boundary) > _REFINE_FRAME_S:
            continue  # not a shared boundary (a pause lies between them)
        low = max(int((boundary - REFINE_WINDOW_S) / _REFINE_FRAME_S), int(out[i - 1][0] / _REFINE_FRAME_S) + 1, 0)
        high = min(int((boundary + REFINE_WINDOW_S) / _REFINE_FRAME_S) + 1, int(out[i][1] / _REFINE_FRAME_S), count)
        if high <= low:
            continue
        moved = (low + int(np.argmin(level[low:high])) + 0.5) * _REFINE_FRAME_S
        out[i - 1][1] = moved
        out[i][0] = moved
    return [(a, b) for a, b in out]


def _voiced_at(t: float, regions: Sequence[Span]) -> bool:
    return any(start <= t <= end for start, end in regions)


def voiced_regions(samples: np.ndarray, sampling_rate: int) -> list[Span]:
    """(start, end) seconds of the clip's voiced stretches by frame energy (see the module's constants); the
    whole clip when nothing stands out (a constant level, or too short to tell)."""
    duration = len(samples) / float(sampling_rate) if sampling_rate > 0 else 0.0
    hop = max(1, round(sampling_rate * VOICED_FRAME_S))
    count = len(samples) // hop
    if count < 2:
        return [(0.0, duration)] if duration > 0 else []
    frames = np.asarray(samples[: count * hop], dtype=np.float64).reshape(count, hop)
    level = 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    threshold = max(float(np.percentile(level, 95)) - VOICED_RANGE_DB, VOICED_FLOOR_DBFS)
    voiced = level > threshold
    if not voiced.any():
        return [(0.0, duration)]
    edges = np.flatnonzero(np.diff(np.concatenate(([0], voiced.astype(np.int8), [0]))))
    regions: list[Span] = []
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        begin, end = start * VOICED_FRAME_S, min(duration, stop * VOICED_FRAME_S)
        if regions and begin - regions[-1][1] < MIN_GAP_S:
            regions[-1] = (regions[-1][0], end)
        else:
            regions.append((begin, end))
    return regions


def spread_over(unit_list: Sequence[Unit], regions: Sequence[Span]) -> list[Span]:
    """The units laid over ``regions`` in reading order, each taking voiced time in proportion to its letters."""
    return _spread([_letters(u) for u in unit_list], regions)


def _spread(weights: Sequence[int], regions: Sequence[Span]) -> list[Span]:
    """Consecutive spans over the regions' concatenated time, one per weight, sized by weight."""
    if not weights:
        return []
    regions = [r for r in regions if r[1] >= r[0]] or [(0.0, 0.0)]
    lengths = [end - start for start, end in regions]
    total_time = sum(lengths)
    total_weight = float(sum(weights))

    def at(position: float, is_end: bool) -> float:
        """Clip time of a point ``position`` seconds into the voiced time; an end on a region's edge stays in it."""
        for (start, _end), length in zip(regions, lengths, strict=True):
            if position < length or (is_end and position <= length):
                return start + max(0.0, position)
            position -= length
        return regions[-1][1]

    spans = []
    done = 0.0
    for weight in weights:
        begin = done / total_weight * total_time
        done += weight
        finish = done / total_weight * total_time
        spans.append((at(begin, False), at(finish, True)))
    return spans
