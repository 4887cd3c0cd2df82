"""Word-level feedback: alignment of the reference words (as written) to what was said, and word accuracy."""

from __future__ import annotations

import json

import pytest

from audio_score.words import align_words


def ops(hypothesis: str, reference: str) -> list[tuple[str, str | None, str | None]]:
    return [(m.op, m.word, m.said) for m in align_words(hypothesis, reference).marks]


def test_all_right_after_normalisation() -> None:
    result = align_words("Hello, World!", "hello world")
    # ``said`` is the transcript's word as written, less the punctuation around it
    assert ops("Hello, World!", "hello world") == [("match", "hello", "Hello"), ("match", "world", "World")]
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


def test_words_are_shown_as_the_reference_wrote_them_one_mark_each() -> None:
    reference = "It's 5 o'clock, and it hasn't started."
    assert ops("it is five o'clock and it has not started", reference) == [
        ("match", "It's", "it is"),
        ("match", "5", "five"),
        ("match", "o'clock", "o'clock"),
        ("match", "and", "and"),
        ("match", "it", "it"),
        ("match", "hasn't", "has not"),
        ("match", "started", "started"),
    ]
    assert align_words("it is five o'clock and it has not started", reference).word_accuracy == 1.0


def test_a_wrong_contraction_is_one_substitution_of_the_word_as_written() -> None:
    assert ops("were here", "we're here") == [("substitution", "we're", "were"), ("match", "here", "here")]
    assert align_words("were here", "we're here").word_accuracy == 0.5


def test_numbers_spelling_and_contractions_read_either_way_match() -> None:
    for said, written in [
        ("in five minutes", "in 5 minutes"),
        ("in 5.0 minutes", "in five minutes"),
        ("twenty five", "25"),
        ("we are late", "we're late"),
        ("what a color", "What a colour!"),
        ("I'm home", "I am home"),
    ]:
        result = align_words(said, written)
        assert result.word_accuracy == 1.0, (said, written, result.marks)
        assert all(m.op == "match" for m in result.marks)
    # several written words the normaliser reads as one number are one mark
    assert ops("25 minutes", "twenty five minutes") == [("match", "twenty five", "25"), ("match", "minutes", "minutes")]


def test_other_languages_keep_their_words() -> None:
    # English rules would turn "cinq" into nothing and "one" into 1; the basic normaliser only drops punctuation.
    assert ops("l'homme est là", "L'homme est là.") == [
        ("match", "L'homme", "l'homme"),
        ("match", "est", "est"),
        ("match", "là", "là"),
    ]
    assert align_words("5 minutos", "cinco minutos", language="es").word_accuracy == 0.5
    assert align_words("5 minutes", "five minutes", language="en").word_accuracy == 1.0


def test_a_difference_the_reference_transcript_makes_at_the_same_place_is_a_match() -> None:
    text = "The colour of Aoife's coat"
    heard = "the collar of eva's coat yes"  # how the recogniser heard the reference clip itself
    result = align_words(heard, text, reference_transcript=heard)
    assert all(m.op == "match" for m in result.marks), result.marks
    assert result.word_accuracy == 1.0
    assert [m.word for m in result.marks] == ["The", "colour", "of", "Aoife's", "coat", "yes"]
    assert align_words(heard, text).word_accuracy < 0.7  # without the reference transcript: marked down
    # the learner said the text's words: right too
    assert align_words("the color of Aoife's coat", text, reference_transcript=heard).word_accuracy == 1.0
    # a mistake the reference transcript does not make is still a mistake
    other = align_words("the collar of mary's coat yes", text, reference_transcript=heard)
    assert [(m.op, m.word, m.said) for m in other.marks if m.op != "match"] == [("substitution", "Aoife's", "mary's")]
