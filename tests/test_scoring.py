"""compare(): how the reference text, the reference's own transcript and the decoder's verdicts combine."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from audio_score.scoring import compare

TEXT = "It's 5 o'clock, and the colour of Aoife's coat is grey."
#: How the recogniser heard the reference clip itself: differently from its text file.
HEARD = "It is five o'clock and the collar of Eva's coat is gray"


def clip(seed: int) -> dict[str, np.ndarray]:
    frames = np.random.default_rng(seed).standard_normal((60, 16)).astype(np.float16)
    return {"frames": frames, "embedding": frames.astype(np.float32).mean(axis=0)}


def against_reference(upload: dict[str, np.ndarray], transcript: str, **kwargs: Any) -> Any:
    reference = clip(1)
    args: dict[str, Any] = {
        "embedding": upload["embedding"],
        "frames": upload["frames"],
        "transcript": transcript,
        "reference_embedding": reference["embedding"],
        "reference_frames": reference["frames"],
        "reference_text": TEXT,
        "reference_transcript": HEARD,
    }
    return compare(**{**args, **kwargs})


@pytest.mark.parametrize("kind", ["word", "char", "fuzzy_word", "phonetic_word"])
@pytest.mark.parametrize("reference_text", [TEXT, None])
def test_a_clip_against_itself_is_exactly_one_on_every_score(kind: str, reference_text: str | None) -> None:
    result = against_reference(clip(1), HEARD, reference_text=reference_text, text_similarity_kind=kind)
    assert result.scores() == {
        "sim_score": 1.0,
        "audio_sim_score": 1.0,
        "text_sim_score": 1.0,
        "audio_pooled_sim_score": 1.0,
        "audio_aligned_sim_score": 1.0,
        "word_accuracy": 1.0,
    }
    assert all(m["op"] == "match" for m in result.as_dict()["words"])
    if reference_text is not None:  # the marks show the text file's words as written
        assert [m.word for m in result.words.marks][:3] == ["It's", "5", "o'clock"]


def test_text_similarity_is_the_better_of_text_file_and_reference_transcript() -> None:
    upload = clip(2)
    said_as_text = against_reference(upload, "it's 5 o'clock and the colour of Aoife's coat is grey")
    assert said_as_text.text_sim_score == 1.0 and said_as_text.word_accuracy == 1.0
    unrelated = "she sells sea shells by the seashore every single morning"
    wrong = against_reference(upload, unrelated)
    assert wrong.text_similarity == "phonetic_word"  # the default kind
    assert wrong.text_sim_score < 0.15  # no floor for an unrelated sentence
    assert against_reference(upload, unrelated, text_similarity_kind="char").text_sim_score > 0.3


def test_phonetic_word_credits_a_sound_alike_mishearing_in_the_text_half_only() -> None:
    upload = clip(2)
    # "collar" was heard for "colour" (both KLR in Metaphone) and "grade" for "grey": the default kind credits the
    # first by its sound; the word marks (against the text as written) are the same for every kind.
    heard = "it's 5 o'clock and the collar of Aoife's coat is grade"
    by_sound = against_reference(upload, heard, reference_transcript="unrelated words")
    by_spelling = against_reference(
        upload, heard, reference_transcript="unrelated words", text_similarity_kind="fuzzy_word"
    )
    assert by_sound.text_sim_score > by_spelling.text_sim_score
    assert by_sound.sim_score == pytest.approx((by_sound.audio_sim_score + by_sound.text_sim_score) / 2)
    assert by_sound.word_accuracy == by_spelling.word_accuracy < 1.0


def test_no_speech_scores_zero_everywhere_and_misses_every_word() -> None:
    result = against_reference(clip(1), "", no_speech=True)  # even the reference's own sound
    assert set(result.scores().values()) == {0.0}
    assert result.no_speech and not result.looped
    assert [(m.op, m.word) for m in result.words.marks][:2] == [("deletion", "It's"), ("deletion", "5")]
    assert result.as_dict()["no_speech"] is True


def test_a_looped_or_empty_transcript_leaves_the_sound_alone_in_sim_score() -> None:
    upload = clip(3)
    looped = against_reference(upload, "it is five o'clock and", looped=True)
    assert looped.looped and looped.as_dict()["looped"] is True
    assert looped.sim_score == looped.audio_sim_score
    assert 0.0 < looped.text_sim_score < 1.0  # still computed on the cut transcript and reported
    assert 0.0 < looped.word_accuracy < 1.0
    empty = against_reference(upload, "")
    assert not empty.looped and empty.sim_score == empty.audio_sim_score and empty.text_sim_score == 0.0
    normal = against_reference(upload, "it is five o'clock and")
    assert normal.sim_score == pytest.approx((normal.audio_sim_score + normal.text_sim_score) / 2)


def test_as_dict_keeps_its_keys_and_adds_the_new_ones() -> None:
    result = against_reference(clip(2), HEARD, text_similarity_kind="char")
    assert set(result.as_dict()) == {
        *result.scores(),
        "audio_similarity",
        "words",
        "text_similarity",
        "no_speech",
        "looped",
    }
    assert result.as_dict()["text_similarity"] == "char"
    with pytest.raises(ValueError, match="text_similarity"):
        against_reference(clip(2), HEARD, text_similarity_kind="bogus")


def test_another_language_is_normalised_with_the_basic_normaliser() -> None:
    upload = clip(2)
    text = {"reference_text": "Cinq minutes, d'accord ?", "reference_transcript": "cinq minutes d'accord"}
    assert against_reference(upload, "cinq minutes, d'accord", language="fr", **text).word_accuracy == 1.0
    english = {"reference_text": "five minutes", "reference_transcript": "five minutes"}
    assert against_reference(upload, "5 minutes", language="en", **english).word_accuracy == 1.0
    assert against_reference(upload, "5 minutes", language="fr", **english).word_accuracy == 0.5  # no English rules
