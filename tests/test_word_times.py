"""WordTimes: the reference word timeline's JSON form round-trips, and a damaged one is refused."""

from __future__ import annotations

import pytest

from audio_score.word_times import WordTime, WordTimes


def test_round_trip_keeps_words_times_and_source() -> None:
    times = WordTimes(words=(WordTime("It's", 0.12, 0.4), WordTime("5", 0.4, 0.81)), source="model")
    back = WordTimes.from_json(times.to_json())
    assert back == times
    assert back.as_dict()["source"] == "model"


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        "{}",
        '{"source": "guessed", "words": []}',
        '{"source": "voiced", "words": [["a", 1.0, 0.5]]}',
        '{"source": "voiced", "words": [["a", 0.1]]}',
        "not json",
    ],
)
def test_damaged_word_times_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="word time"):
        WordTimes.from_json(text)
