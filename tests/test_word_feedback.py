"""Per-word feedback on synthetic frames whose path is known: a take that is the reference with silence inserted,
stretched in time, a word replaced or left out; then ``compare`` end to end, the V2 parse, the client's table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from audio_score import contract, v2
from audio_score.alignment import aligned_paths, aligned_similarity, prepare_frames
from audio_score.scoring import compare
from audio_score.word_feedback import word_feedback
from audio_score.word_times import WordTime, WordTimes

DIM = 64
FRAME_S = 0.04  # pool 1 at 40 ms frames: one row per aligned frame
_RNG = np.random.default_rng(7)
VOICE = _RNG.standard_normal(DIM) * 3.0  # what every frame of one speaker shares
PHONES = _RNG.standard_normal((40, DIM))
SILENCE = _RNG.standard_normal(DIM) * 0.2
TEXT = "red cat blue dog green fox gold owl pink bee"


def make_words(count: int, seed: int) -> list[np.ndarray]:
    """``count`` words of 2-4 'phones' held 3-5 frames each."""
    rng = np.random.default_rng(seed)
    words = []
    for _ in range(count):
        rows: list[np.ndarray] = []
        for _ in range(int(rng.integers(2, 5))):
            rows += [PHONES[rng.integers(len(PHONES))]] * int(rng.integers(3, 6))
        words.append(np.array(rows))
    return words


def render(words: list[np.ndarray], seed: int, silence_before: dict[int, int] | None = None) -> tuple[np.ndarray, list]:
    """Frames of the words in order (3 frames of silence around them, ``silence_before[k]`` more before word k),
    with fresh noise; and each word's (start, end) in seconds."""
    rng = np.random.default_rng(seed)
    rows: list[np.ndarray] = [SILENCE] * 3
    spans = []
    for k, word in enumerate(words):
        rows += [SILENCE] * (silence_before or {}).get(k, 0)
        start = len(rows)
        rows += list(word)
        spans.append((start * FRAME_S, len(rows) * FRAME_S))
    rows += [SILENCE] * 3
    frames = np.array(rows) + VOICE + 0.3 * rng.standard_normal((len(rows), DIM))
    return frames.astype(np.float32), spans


def stretch(words: list[np.ndarray], factor: float) -> list[np.ndarray]:
    """Every word said ``factor`` times as long (frames repeated)."""
    out = []
    for w in words:
        index = np.minimum((np.arange(round(len(w) * factor)) / factor).astype(int), len(w) - 1)
        out.append(w[index])
    return out


WORDS = make_words(10, 1)
REFERENCE, SPANS = render(WORDS, 0)
TIMES = WordTimes(tuple(WordTime(w, s, e) for w, (s, e) in zip(TEXT.split(), SPANS, strict=True)), "subtitles")


def feedback_of(take: np.ndarray, left_out: list[bool] | None = None):  # type: ignore[no-untyped-def]
    paths = aligned_paths(take, REFERENCE, pool=1)
    assert paths is not None
    return word_feedback(paths, TIMES, FRAME_S, left_out)


# --- the paths -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "m"), [(120, 120), (160, 120), (60, 130), (3, 2)])
def test_paths_score_exactly_what_aligned_similarity_scores(n: int, m: int) -> None:
    rng = np.random.default_rng(n + m)
    a = rng.standard_normal((n, 32)).astype(np.float16)
    b = rng.standard_normal((m, 32)).astype(np.float16)
    paths = aligned_paths(a, prepare_frames(b, 1), pool=1)
    assert paths is not None
    assert paths.score == aligned_similarity(a, b, pool=1)
    f, g = paths.take_to_reference, paths.reference_to_take
    assert f.shape == (n,) and g.shape == (m,)
    for path, end in ((f, m - 1), (g, n - 1)):
        assert path[0] == 0 and path[-1] == end and np.all(np.diff(path) >= 0)
    # The mean similarity along the read-back paths is the score the programmes computed.
    along = 0.5 * (paths.similarity[np.arange(n), f].mean() + paths.similarity[g, np.arange(m)].mean())
    assert along == pytest.approx(max(0.0, paths.score), abs=1e-5)


def test_no_path_for_an_empty_or_one_frame_side() -> None:
    frames = np.ones((10, 8), dtype=np.float32)
    assert aligned_paths(frames[:0], frames) is None
    assert aligned_paths(frames[:2], frames) is None  # one pooled frame
    with pytest.raises(ValueError, match="frame sizes differ"):
        aligned_paths(frames, np.ones((10, 9), dtype=np.float32))


# --- word feedback on known takes -------------------------------------------------------------------------------


def test_the_reference_against_itself_is_perfect_word_by_word() -> None:
    fb = feedback_of(REFERENCE)
    assert [w.audio_score for w in fb.words] == [1.0] * 10
    assert [(w.start, w.end) for w in fb.words] == [(w.ref_start, w.ref_end) for w in fb.words]
    assert all(w.lag == 0.0 and not w.left_out for w in fb.words)
    assert fb.rate == 1.0 and fb.pauses == () and fb.timing_score == 1.0


def test_inserted_silence_is_a_pause_before_that_word_and_not_slow_speech() -> None:
    take, spans = render(WORDS, 5, silence_before={4: 15})  # 0.6 s
    fb = feedback_of(take)
    assert [p.index for p in fb.pauses] == [4]
    pause = fb.pauses[0]
    assert pause.word == "green" and 0.45 <= pause.excess <= 0.75
    assert pause.start == pytest.approx(spans[3][1], abs=0.2)
    assert fb.rate == pytest.approx(1.0, rel=0.1)
    # The word after the pause starts where the take has it, not where the silence began (within a held phone:
    # the frames of one synthetic phone are alike, so the path may enter it anywhere).
    assert fb.words[4].start == pytest.approx(spans[4][0], abs=0.2)
    assert fb.words[4].start - fb.words[3].end > 0.4
    assert fb.words[9].lag is not None and fb.words[0].lag is not None and fb.words[9].lag > fb.words[0].lag
    assert fb.timing_score < 1.0


def test_no_pause_without_one() -> None:
    take, _ = render(WORDS, 11)
    assert feedback_of(take).pauses == ()


@pytest.mark.parametrize("factor", [1.25, 0.8])
def test_a_stretched_take_reads_as_its_rate(factor: float) -> None:
    take, spans = render(stretch(WORDS, factor), 6)
    fb = feedback_of(take)
    assert fb.rate == pytest.approx(1.0 / factor, rel=0.1)
    assert fb.pauses == ()
    learner = [(w.start, w.end) for w in fb.words]
    assert np.allclose(np.array(learner, dtype=float), np.array(spans), atol=0.13)


def test_a_replaced_word_has_the_lowest_audio_score() -> None:
    words = list(WORDS)
    words[6] = make_words(1, 99)[0]
    take, _ = render(words, 7)
    scores = [w.audio_score for w in feedback_of(take).words]
    assert int(np.argmin(scores)) == 6
    assert scores[6] < 0.5 < min(s for k, s in enumerate(scores) if k != 6)


def test_a_left_out_word_has_no_span_and_does_not_count_in_the_timing() -> None:
    take, _ = render(WORDS[:3] + WORDS[4:], 8)
    flags = [k == 3 for k in range(10)]
    fb = feedback_of(take, flags)
    gone = fb.words[3]
    assert gone.left_out and gone.start is None and gone.end is None and gone.lag is None
    assert 0.0 <= gone.audio_score < 0.6  # what the take has where the word should be: its neighbours
    assert fb.rate == pytest.approx(1.0, rel=0.1) and fb.pauses == ()
    with pytest.raises(ValueError, match="left-out flags"):
        feedback_of(take, flags[:3])


# --- compare, end to end ----------------------------------------------------------------------------------------


def _compare(take: np.ndarray, transcript: str, **kwargs):  # type: ignore[no-untyped-def]
    return compare(
        embedding=take.mean(axis=0),
        frames=take,
        transcript=transcript,
        reference_embedding=REFERENCE.mean(axis=0),
        reference_frames=REFERENCE,
        reference_text=TEXT,
        reference_transcript=TEXT,
        pool=1,
        frame_ms=40.0,
        **kwargs,
    )


def test_compare_without_word_times_answers_as_before() -> None:
    take, _ = render(WORDS, 5, silence_before={4: 15})
    result = _compare(take, TEXT)
    assert result.feedback is None and result.timing() == {}
    assert all(set(w) == {"op", "word", "said"} for w in result.as_dict()["words"])
    assert "timing_score" not in result.as_dict()
    assert result.audio_aligned_sim_score == _compare(take, TEXT, reference_word_times=TIMES).audio_aligned_sim_score


def test_compare_with_word_times_adds_the_feedback_fields() -> None:
    take, _ = render(WORDS[:3] + WORDS[4:], 5, silence_before={6: 15})  # "dog" left out, a pause before "owl"
    said = "red cat blue green fox so gold owl pink bee"
    result = _compare(take, said, reference_word_times=TIMES)
    doc = result.as_dict()
    words = doc["words"]
    assert [w["op"] for w in words if w["op"] != "match"] == ["deletion", "insertion"]
    for item in words:
        assert set(item) == {"op", "word", "said", *contract.WORD_TIMING_KEYS}
    four = next(w for w in words if w["word"] == "dog")
    assert four["left_out"] is True and four["start"] is None and four["audio_score"] < 0.6
    assert four["ref_start"] == pytest.approx(SPANS[3][0])
    um = next(w for w in words if w["op"] == "insertion")
    assert um["left_out"] is False and um["ref_start"] is None and um["audio_score"] is None
    assert [p["word"] for p in doc["pauses"]] == ["owl"]
    assert set(doc["pauses"][0]) == set(contract.PAUSE_KEYS)
    assert 0.0 < doc["timing_score"] < 1.0 and doc["rate"] == pytest.approx(1.0, rel=0.1)
    assert json.loads(result.words_json()) == words


def test_word_times_of_another_text_are_not_used() -> None:
    other = WordTimes((WordTime("hello", 0.0, 0.5),), "voiced")
    result = _compare(REFERENCE, TEXT, reference_word_times=other)
    assert result.feedback is None and "timing_score" not in result.as_dict()
    none = WordTimes((), "voiced")  # a reference with no words: nothing to time
    assert _compare(REFERENCE, TEXT, reference_word_times=none).feedback is None
    assert _compare(REFERENCE, "", reference_word_times=none, no_speech=True).feedback is None


def test_no_speech_leaves_every_word_out_and_times_zero() -> None:
    result = _compare(REFERENCE, "", reference_word_times=TIMES, no_speech=True)
    doc = result.as_dict()
    assert doc["timing_score"] == 0.0 and doc["rate"] is None and doc["pauses"] == []
    assert all(w["left_out"] and w["start"] is None and w["op"] == "deletion" for w in doc["words"])
    # A take too short to align: every word left out too.
    short = _compare(REFERENCE[:1], "red", reference_word_times=TIMES)
    assert short.feedback is not None and all(w.left_out is False or w.start is None for w in short.feedback.words)
    assert short.feedback.timing_score == 0.0


def test_the_reference_scored_against_itself_through_compare() -> None:
    result = _compare(REFERENCE, TEXT, reference_word_times=TIMES)
    assert result.audio_aligned_sim_score == 1.0
    assert [w["audio_score"] for w in result.as_dict()["words"]] == [1.0] * 10
    assert result.timing() == {"timing_score": 1.0, "rate": 1.0, "pauses": []}


# --- the wire and the table -------------------------------------------------------------------------------------


def _response(outputs: dict[str, object]) -> bytes:
    tensors = []
    for name, value in outputs.items():
        if isinstance(value, float):
            tensors.append({"name": name, "datatype": "FP32", "shape": [1], "data": [value]})
        else:
            tensors.append({"name": name, "datatype": "BYTES", "shape": [1], "data": [value]})
    return json.dumps({"model_name": "m", "outputs": tensors}).encode()


def _score_outputs(**extra: object) -> dict[str, object]:
    base: dict[str, object] = {
        "sim_score": 0.5,
        "audio_sim_score": 0.5,
        "text_sim_score": 0.5,
        "transcript": "t",
        "reference_transcript": "t",
    }
    return {**base, **extra}


def test_v2_parse_keeps_the_timing_keys_and_checks_them() -> None:
    take, _ = render(WORDS, 5, silence_before={4: 15})
    result = _compare(take, TEXT, reference_word_times=TIMES)
    pauses = json.dumps(result.timing()["pauses"])
    body = _response(_score_outputs(words=result.words_json(), timing_score=0.7, rate=1.0, pauses=pauses))
    parsed = v2.parse_score_response(body)
    assert parsed["words"] == result.word_list()
    assert parsed["pauses"] == result.timing()["pauses"] and parsed["timing_score"] == pytest.approx(0.7)
    bad_word = json.dumps([{"op": "match", "word": "a", "said": "a", "start": "soon"}])
    with pytest.raises(v2.V2ProtocolError, match="words"):
        v2.parse_score_response(_response(_score_outputs(words=bad_word)))
    with pytest.raises(v2.V2ProtocolError, match="pauses"):
        v2.parse_score_response(_response(_score_outputs(pauses=json.dumps([{"index": 1}]))))
    # An older predictor's answer: no timing outputs, plain word items.
    old = v2.parse_score_response(_response(_score_outputs(words='[{"op":"match","word":"a","said":"a"}]')))
    assert old["words"] == [{"op": "match", "word": "a", "said": "a"}] and "timing_score" not in old


def test_the_client_table_shows_each_words_timing() -> None:
    from audio_score_tools.client import render_result

    take, _ = render(WORDS[:3] + WORDS[4:], 5, silence_before={6: 15})
    result = _compare(take, "red cat blue green fox gold owl pink bee", reference_word_times=TIMES)
    text = render_result({"sim_score": 0.5, **result.as_dict()})
    assert "timing_score" in text and "before 'owl'" in text
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if "you (s)" in line)
    rows = lines[header + 2 :]
    assert len(rows) == 10
    assert "left out" in rows[3] and rows[3].startswith("\u2212 dog")
    assert float(rows[0].split()[-2]) > 0.5 and rows[0].split()[-1].startswith(("+", "-"))
    # Without word times the table is the field table alone.
    plain = _compare(take, "red cat blue green fox gold owl pink bee")
    assert "you (s)" not in render_result(plain.as_dict())
