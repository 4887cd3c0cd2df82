"""Guards on Whisper's greedy decoding: a token budget bounded by the audio's length, repetition loops, no speech.

Whisper is trained on 30-s windows of captioned video, and on a short take outside what it knows it makes text up:
on accented speech it loops ("I am the only one who is I am the only one who is ...") until its token cap, on
silence or noise it writes a stock caption ("you", "Thanks for watching!"). Each rule here is one Whisper's own
long-form ``transcribe`` uses (openai/whisper ``transcribe.py`` and ``decoding.py``), applied to one short take:

- **Token budget** (:func:`token_budget`): at most :data:`TOKENS_PER_SECOND` tokens per second of audio plus
  :data:`BUDGET_SLACK_TOKENS`, never above the checkpoint's cap. Fast read English is ~3.5 words/s, ~5 Whisper
  tokens/s with punctuation (the committed espeak-ng takes measure 3.0-4.9 tokens/s at 130-200 words/minute); 8
  leaves room for languages whose words take more tokens. A take that reaches its budget without ending has more
  text than its audio can hold, and is treated as a loop.
- **Repetition loop** (:func:`find_loop`): the decoded tokens end in one phrase of up to :data:`MAX_LOOP_UNIT`
  tokens repeated at least :data:`MIN_LOOP_REPEATS` times, :data:`MIN_LOOP_TOKENS` tokens in all. The decoder
  stops that row as soon as this holds (so no request decodes a loop to the cap) and the transcript keeps the
  phrase once. Whisper's own test, the gzip :func:`compression_ratio` of the text above
  :data:`COMPRESSION_RATIO_THRESHOLD` (2.4), also marks a take as looped (it catches loops with small changes).
- **No speech** (:func:`is_no_speech`): the probability of Whisper's ``<|nospeech|>``/``<|nocaptions|>`` token
  right after ``<|startoftranscript|>`` above :data:`NO_SPEECH_THRESHOLD` (0.6, Whisper's), *and* what was
  decoded is unlike speech: its mean log-probability (end-of-text included) below :data:`LOGPROB_THRESHOLD`, or
  fewer than :data:`MIN_SPEECH_TOKENS_PER_SECOND` tokens per second of audio. Whisper's own rule (0.6 and -1.0)
  is wrong both ways on short takes: on digital silence tiny.en writes a *confident* "you" (no_speech_prob 0.95,
  avg_logprob -0.38), and on base a real (synthesised) French reading scores 0.78 / -1.34. Measured (tiny.en
  and base, 3-s takes): silence, -60/-40 dBFS noise, white noise and a 440 Hz tone give 0.63-0.95 with 1-2
  tokens (0.3-0.7 tokens/s) and log-probabilities -0.38 to -1.88; real readings give at most 0.78 with 2.5+
  tokens/s, and the one above 0.6 has -1.34. Such a take gets an empty transcript.

This module holds the rules on plain numbers and token lists (no torch): the runner
(:mod:`audio_score.backends.whisper`) feeds them, the tests check them alone.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

#: Tokens a second of audio may hold, and the slack added to every take's budget (see the module docstring).
TOKENS_PER_SECOND = 8.0
BUDGET_SLACK_TOKENS = 8
#: Whisper's transcribe defaults (openai/whisper transcribe.py: no_speech_threshold 0.6, compression_ratio_threshold
#: 2.4); the log-probability bound is lower than its -1.0 (see the module docstring for the figures).
NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.5
#: Fewer decoded tokens than this per second of audio, with a likely no-speech token: a stock caption ("you"),
#: not a reading (read speech gives 2.5-5 tokens/s).
MIN_SPEECH_TOKENS_PER_SECOND = 1.0
COMPRESSION_RATIO_THRESHOLD = 2.4
#: A loop: one phrase of 1..MAX_LOOP_UNIT tokens repeated MIN_LOOP_REPEATS times or more at the end of the
#: tokens, MIN_LOOP_TOKENS tokens in all (a word said twice, "no, no, no", or a 3-word phrase said 3 times is
#: not a loop; "please, please, please, please" (4 x 2 tokens), "you" 8 times, a 7-token phrase 3 times are).
MAX_LOOP_UNIT = 32
MIN_LOOP_REPEATS = 3
MIN_LOOP_TOKENS = 8


@dataclass(frozen=True)
class GuardSettings:
    """The guard's knobs in one value: part of every cache fingerprint, since they change transcripts."""

    tokens_per_second: float = TOKENS_PER_SECOND
    budget_slack_tokens: int = BUDGET_SLACK_TOKENS
    no_speech_threshold: float = NO_SPEECH_THRESHOLD
    min_speech_tokens_per_second: float = MIN_SPEECH_TOKENS_PER_SECOND
    logprob_threshold: float = LOGPROB_THRESHOLD
    compression_ratio_threshold: float = COMPRESSION_RATIO_THRESHOLD
    max_loop_unit: int = MAX_LOOP_UNIT
    min_loop_repeats: int = MIN_LOOP_REPEATS
    min_loop_tokens: int = MIN_LOOP_TOKENS

    def fingerprint(self) -> dict[str, float | int]:
        return {
            "tokens_per_second": self.tokens_per_second,
            "budget_slack_tokens": self.budget_slack_tokens,
            "no_speech_threshold": self.no_speech_threshold,
            "min_speech_tokens_per_second": self.min_speech_tokens_per_second,
            "logprob_threshold": self.logprob_threshold,
            "compression_ratio_threshold": self.compression_ratio_threshold,
            "max_loop_unit": self.max_loop_unit,
            "min_loop_repeats": self.min_loop_repeats,
            "min_loop_tokens": self.min_loop_tokens,
        }


GUARD = GuardSettings()


def token_budget(duration_s: float, cap: int, guard: GuardSettings = GUARD) -> int:
    """New tokens a take of ``duration_s`` seconds may decode: its share by duration, at least 1, at most ``cap``."""
    by_duration = math.ceil(max(0.0, duration_s) * guard.tokens_per_second) + guard.budget_slack_tokens
    return max(1, min(cap, by_duration))


def find_loop(tokens: Sequence[int], guard: GuardSettings = GUARD) -> int | None:
    """Where the repeats of a loop at the end of ``tokens`` begin (the phrase is kept once before it), or None.

    The shortest repeating phrase wins, so "a b a b a b ..." is cut after the first "a b".
    """
    n = len(tokens)
    for unit in range(1, min(guard.max_loop_unit, n // guard.min_loop_repeats) + 1):
        repeats = 1
        while (repeats + 1) * unit <= n and _same(tokens, n - (repeats + 1) * unit, n - repeats * unit, unit):
            repeats += 1
        if repeats >= guard.min_loop_repeats and repeats * unit >= guard.min_loop_tokens:
            return n - (repeats - 1) * unit
    return None


def _same(tokens: Sequence[int], a: int, b: int, length: int) -> bool:
    return all(tokens[a + i] == tokens[b + i] for i in range(length))


def compression_ratio(text: str) -> float:
    """Whisper's repetition measure: bytes of the text over bytes of its zlib compression (0 for no text)."""
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


def is_no_speech(
    no_speech_prob: float | None, avg_logprob: float, tokens: int, duration_s: float, guard: GuardSettings = GUARD
) -> bool:
    """No speech: the no-speech token is likely and what was decoded is unlikely or too short for the audio."""
    if no_speech_prob is None or no_speech_prob <= guard.no_speech_threshold:
        return False
    too_few = tokens < guard.min_speech_tokens_per_second * max(duration_s, 1.0)
    return avg_logprob < guard.logprob_threshold or too_few


def average_logprob(token_logprobs: Sequence[float], text_tokens: int) -> float:
    """Whisper's ``avg_logprob``: the sum over the decoded tokens (end-of-text included) over their count + 1."""
    return float(sum(token_logprobs)) / (text_tokens + 1)
