"""Time-aligned audio similarity: self, time-stretched copies, different content, noise, and edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audio_score.alignment import aligned_similarity, prepare_frames
from audio_score.similarity import pooled_cosine

DIM = 64
VOICE = np.random.default_rng(7).standard_normal(DIM) * 3.0  # what every frame of one speaker shares


def sentence(frames: int, seed: int) -> np.ndarray:
    """Speech-like frames: 'phones' held for 3-7 frames each, noisy, on top of one voice's common offset."""
    rng = np.random.default_rng(seed)
    phones = rng.standard_normal((30, DIM))
    rows: list[np.ndarray] = []
    while len(rows) < frames:
        phone = phones[rng.integers(len(phones))]
        rows += [phone + 0.3 * rng.standard_normal(DIM) for _ in range(int(rng.integers(3, 8)))]
    return (np.array(rows[:frames]) + VOICE).astype(np.float16)


def stretch(frames: np.ndarray, factor: float, seed: int = 0) -> np.ndarray:
    """The same sounds said ``factor`` times slower (frames repeated), with fresh frame noise."""
    count = round(frames.shape[0] * factor)
    index = np.minimum((np.arange(count) / factor).astype(int), frames.shape[0] - 1)
    noise = 0.3 * np.random.default_rng(seed).standard_normal((count, frames.shape[1]))
    return (frames[index].astype(np.float32) + noise).astype(np.float16)


def pooled(frames: np.ndarray) -> np.ndarray:
    return frames.astype(np.float32).mean(axis=0)


def test_a_sequence_against_itself_is_exactly_one() -> None:
    a = sentence(300, 1)
    assert aligned_similarity(a, a) == 1.0
    assert aligned_similarity(a, a.copy()) == 1.0
    assert aligned_similarity(prepare_frames(a), prepare_frames(a)) == 1.0
    assert aligned_similarity(a, prepare_frames(a)) == 1.0


def test_a_stretched_copy_scores_high_and_a_different_sentence_in_the_same_voice_low() -> None:
    reference = sentence(300, 1)
    slower = stretch(reference, 1.4, seed=2)
    faster = stretch(reference, 0.7, seed=3)
    other = sentence(310, 99)
    other_score = aligned_similarity(other, reference)
    for copy in (slower, faster):
        assert aligned_similarity(copy, reference) > 0.8
        assert aligned_similarity(copy, reference) > other_score + 0.5
    assert other_score < 0.3
    # The problem this solves: pooled features cannot tell the two apart.
    assert pooled_cosine(pooled(other), pooled(reference)) > 0.95


def test_noise_scores_low() -> None:
    reference = sentence(300, 1)
    rng = np.random.default_rng(5)
    noise = (rng.standard_normal((300, DIM)) * 0.5 + VOICE).astype(np.float16)
    assert aligned_similarity(noise, reference) < 0.2


def test_it_is_symmetric() -> None:
    a, b = sentence(200, 1), stretch(sentence(200, 1), 1.2)
    assert aligned_similarity(a, b) == pytest.approx(aligned_similarity(b, a), abs=1e-6)


def test_saying_only_half_scores_lower_than_all() -> None:
    reference = sentence(300, 1)
    whole = stretch(reference, 1.0, seed=4)
    assert aligned_similarity(whole[:150], reference) < aligned_similarity(whole, reference) - 0.2


def test_very_different_lengths_still_align() -> None:
    reference = sentence(400, 1)
    short = sentence(12, 2)
    value = aligned_similarity(short, reference)
    assert 0.0 <= value <= 1.0
    assert aligned_similarity(reference, short) == pytest.approx(value, abs=1e-6)


def test_empty_and_one_frame_sequences() -> None:
    a = sentence(50, 1)
    empty = np.zeros((0, DIM), dtype=np.float16)
    assert aligned_similarity(empty, a) == 0.0
    assert aligned_similarity(a, empty) == 0.0
    assert aligned_similarity(empty, empty) == 0.0
    one = a[:1]
    assert aligned_similarity(one, one) == 1.0
    # One frame has no time structure: the score is the cosine of the mean frames, in [0, 1].
    expected = pooled_cosine(pooled(one), pooled(a))
    assert aligned_similarity(one, a) == pytest.approx(expected, abs=1e-5)
    zeros = np.zeros((10, DIM), dtype=np.float16)
    assert aligned_similarity(zeros, a) == 0.0


def test_shape_errors_are_refused() -> None:
    with pytest.raises(ValueError, match="frame sizes differ"):
        aligned_similarity(np.ones((10, DIM)), np.ones((10, DIM + 1)))
    with pytest.raises(ValueError, match=r"\[T, D\]"):
        aligned_similarity(np.ones(DIM), np.ones((10, DIM)))


def test_prepared_frames_take_no_more_memory_than_float16_frames() -> None:
    a = sentence(300, 1)
    assert prepare_frames(a).nbytes <= a.nbytes + 4 * DIM


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 60),
    m=st.integers(1, 60),
    seed=st.integers(0, 2**16),
)
def test_any_pair_scores_in_the_unit_interval(n: int, m: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, 8)).astype(np.float16)
    b = rng.standard_normal((m, 8)).astype(np.float16)
    value = aligned_similarity(a, b)
    assert 0.0 <= value <= 1.0


def test_pooling_follows_the_frame_length() -> None:
    from audio_score.alignment import pool_for

    assert (pool_for(20.0), pool_for(40.0), pool_for(10.0)) == (2, 1, 4)
    a = sentence(101, 1)  # an odd count: the last group is shorter
    for pool in (1, 2, 3):
        prepared = prepare_frames(a, pool)
        assert prepared.frames == -(-101 // pool)
        assert aligned_similarity(a, a, pool) == 1.0
        assert aligned_similarity(stretch(a, 1.3), a, pool) > aligned_similarity(sentence(100, 5), a, pool) + 0.5
    with pytest.raises(ValueError, match="pool"):
        prepare_frames(a, 0)


def test_a_voice_that_swings_some_dimensions_widely_scores_as_if_it_did_not() -> None:
    """Each dimension is standardised over the clip: another voice that offsets every dimension and stretches some
    of them tenfold (an accent's pitch or timbre) is the same sounds in the same order."""
    reference = sentence(300, 1)
    take = stretch(reference, 1.2, seed=4).astype(np.float32)
    scale = np.ones(DIM, dtype=np.float32)
    scale[:8] = 10.0
    offset = np.random.default_rng(5).standard_normal(DIM).astype(np.float32) * 5.0
    swung = (take * scale + offset).astype(np.float32)
    assert aligned_similarity(swung, reference) == pytest.approx(aligned_similarity(take, reference), abs=1e-4)
    other = sentence(310, 99).astype(np.float32) * scale
    assert aligned_similarity(other, reference) < 0.3 < aligned_similarity(swung, reference)


def test_a_clip_whose_frames_do_not_change_scores_zero_not_nan() -> None:
    flat = np.tile(sentence(1, 3), (40, 1))  # 40 identical frames: every dimension's spread is 0
    prepared = prepare_frames(flat)
    assert np.isfinite(prepared.units).all() and not prepared.units.any()
    assert aligned_similarity(flat, sentence(300, 1)) == 0.0
