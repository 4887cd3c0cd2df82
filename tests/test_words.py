"""Word-level feedback: alignment of the reference words to what was said, and word accuracy."""

from __future__ import annotations

import json

import pytest

from audio_score.words import align_words


def ops(hypothesis: str, reference: str) -> list[tuple[str, str | None, str | None]]:
    return [(m.op, m.word, m.said) for m in align_words(hypothesis, reference).marks]


def test_all_right_after_normalisation() -> None:
    result = align_words("Hello, World!", "hello world")
    assert ops("Hello, World!", "hello world") == [("match", "hello", "hello"), ("match", "world", "world")]
    assert result.word_accuracy == 1.0


def test_a_skipped_word_is_a_deletion() -> None:
    assert ops("the sat on the mat", "the cat sat on the mat") == [
        ("match", "the", "the"),
        ("deletion", "cat", None),
        ("match", "sat", "sat"),
        ("match", "on", "on"),
        ("match", "the", "the"),
        ("match", "mat", "mat"),
    ]
    assert align_words("the sat on the mat", "the cat sat on the mat").word_accuracy == pytest.approx(5 / 6)


def test_an_added_word_is_an_insertion() -> None:
    assert ops("the big cat sat", "the cat sat") == [
        ("match", "the", "the"),
        ("insertion", None, "big"),
        ("match", "cat", "cat"),
        ("match", "sat", "sat"),
    ]
    assert align_words("the big cat sat", "the cat sat").word_accuracy == pytest.approx(2 / 3)


def test_a_wrong_word_is_a_substitution_with_what_was_said() -> None:
    assert ops("the dog sat", "the cat sat") == [
        ("match", "the", "the"),
        ("substitution", "cat", "dog"),
        ("match", "sat", "sat"),
    ]


def test_nothing_said_misses_every_word() -> None:
    result = align_words("", "the cat")
    assert ops("", "the cat") == [("deletion", "the", None), ("deletion", "cat", None)]
    assert result.word_accuracy == 0.0


def test_an_empty_reference() -> None:
    assert align_words("", "").word_accuracy == 1.0
    assert align_words("[music]", "...").marks == ()
    result = align_words("hello there", "")
    assert [m.op for m in result.marks] == ["insertion", "insertion"]
    assert result.word_accuracy == 0.0


def test_accuracy_never_goes_below_zero() -> None:
    assert align_words("one two three four five", "hi").word_accuracy == 0.0


def test_json_form() -> None:
    doc = json.loads(align_words("a dog", "a cat").to_json())
    assert doc == [{"op": "match", "word": "a", "said": "a"}, {"op": "substitution", "word": "cat", "said": "dog"}]
