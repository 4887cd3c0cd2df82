"""festival_timed: the ground truth the word-timing benchmarks stand on (real festival, real audio)."""

from __future__ import annotations

import numpy as np
import pytest

from audio_score_tools.speech_timing import FESTIVAL_VOICES, _parse, festival_available, festival_timed

TEXT = "We're meeting Maria at 5 o'clock, in \"twenty\" minutes."


def test_parse_joins_the_words_of_one_token_and_keeps_equal_tokens_apart() -> None:
    out = "noise\nW\t1\tthe\t0.1\t0.2\nW\t2\t5\t0.2\t0.3\nW\t3\tthe\t0.3\t0.4\nW\t3\tthe\t0.4\t0.55\n"
    words = _parse(out)
    assert [(w.word, w.start, w.end) for w in words] == [("the", 0.1, 0.2), ("5", 0.2, 0.3), ("the", 0.3, 0.55)]


@pytest.mark.skipif(not festival_available(), reason="festival with the kal_diphone voice is not installed")
@pytest.mark.parametrize("voice", [v for v in FESTIVAL_VOICES if festival_available(v)])
def test_every_token_has_an_ordered_span_inside_the_audio_where_the_speech_is(voice: str) -> None:
    speech = festival_timed(TEXT, voice)
    assert [w.word for w in speech.words] == [
        "We're",
        "meeting",
        "Maria",
        "at",
        "5",
        "o'clock",
        "in",
        "twenty",
        "minutes",
    ]
    starts = [w.start for w in speech.words]
    assert starts == sorted(starts)
    assert all(w.end > w.start for w in speech.words)
    assert speech.words[-1].end <= speech.duration_s + 1e-3
    # Energy inside the words is well above the lead-in before the first word.
    rate = speech.sampling_rate
    lead = speech.audio[: int(speech.words[0].start * rate * 0.8)]
    spoken = speech.audio[int(speech.words[0].start * rate) : int(speech.words[-1].end * rate)]
    assert float(np.sqrt(np.mean(spoken**2))) > 4 * float(np.sqrt(np.mean(lead**2)) + 1e-6)


def test_unknown_voice_is_refused() -> None:
    with pytest.raises(ValueError, match="festival voice"):
        festival_timed("hello", "nobody")
