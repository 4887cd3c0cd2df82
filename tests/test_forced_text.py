"""The forced reading of the reference's texts (``Backend.embed``'s ``forced_texts``, ``compare``'s
``forced_scores``): how it is measured, how it enters ``text_sim_score``, and that the backends compute it on the
same encoder states as the transcript, batched or not."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from audio_score.backends import load_backend
from audio_score.backends.forced import relative_likelihood
from audio_score.env_settings import PredictorEnv
from audio_score.scoring import compare, forced_texts
from audio_score.settings import load_settings
from audio_score_tools.media import synth_speechlike

RATE = 16000


# --- the measure -------------------------------------------------------------------------------------------------


def test_relative_likelihood_is_one_when_every_token_is_the_decoders_first_choice() -> None:
    logits = torch.tensor([[[0.0, 3.0, 1.0], [2.0, 0.0, -1.0]]])
    targets = torch.tensor([[1, 0]])
    mask = torch.tensor([[True, True]])
    assert relative_likelihood(logits, targets, mask) == [1.0]


def test_relative_likelihood_is_the_geometric_mean_of_each_tokens_ratio_to_the_best() -> None:
    logits = torch.tensor([[[0.0, math.log(4.0)], [math.log(2.0), 0.0]]])
    # Token 0 at position 0: p = 1/5 against the best 4/5 (ratio 1/4); token 0 at position 1: the best (1).
    targets = torch.tensor([[0, 0]])
    mask = torch.tensor([[True, True]])
    assert relative_likelihood(logits, targets, mask)[0] == pytest.approx(math.sqrt(0.25), rel=1e-6)


def test_padding_positions_do_not_count() -> None:
    logits = torch.tensor([[[0.0, 5.0], [5.0, 0.0], [0.0, 9.0]]])
    targets = torch.tensor([[1, 0, 0]])  # the last position would be far off the best
    assert relative_likelihood(logits, targets, torch.tensor([[True, True, False]])) == [1.0]
    assert relative_likelihood(logits, targets, torch.tensor([[True, True, True]]))[0] == pytest.approx(
        math.exp(-9 / 3)
    )
    assert relative_likelihood(logits, targets, torch.tensor([[False, False, False]])) == [0.0]


# --- how compare uses it ------------------------------------------------------------------------------------------


def _compare(**kwargs):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    frames = rng.standard_normal((40, 16)).astype(np.float32)
    other = rng.standard_normal((40, 16)).astype(np.float32)
    args = {
        "embedding": other.mean(0),
        "frames": other,
        "transcript": "the cat sat on a hat",
        "reference_embedding": frames.mean(0),
        "reference_frames": frames,
        "reference_text": "The cat sat on the mat.",
        "reference_transcript": "The cat sat on the mat.",
    }
    return compare(**{**args, **kwargs})


def test_text_sim_score_is_the_mean_of_the_transcript_similarity_and_the_best_forced_score() -> None:
    plain = _compare()
    forced = _compare(forced_scores=[0.2, 0.6])
    assert plain.text_transcript_score is None and plain.text_forced_score is None
    assert "text_forced_score" not in plain.scores() and "text_transcript_score" not in plain.scores()
    assert forced.text_transcript_score == pytest.approx(plain.text_sim_score)
    assert forced.text_forced_score == 0.6
    assert forced.text_sim_score == pytest.approx((plain.text_sim_score + 0.6) / 2)
    assert forced.sim_score == pytest.approx((forced.audio_sim_score + forced.text_sim_score) / 2)
    assert forced.scores()["text_forced_score"] == 0.6
    # The word marks say which words were heard: the transcript's, whatever the forced reading says.
    assert forced.words == plain.words and forced.word_accuracy == plain.word_accuracy


def test_unmeasured_forced_scores_leave_the_seeds_text_score() -> None:
    plain = _compare()
    for scores in ([], [None], [None, None]):
        c = _compare(forced_scores=scores)
        assert c.text_sim_score == plain.text_sim_score and c.text_forced_score is None


@pytest.mark.parametrize("case", [{"looped": True}, {"transcript": ""}])
def test_an_unreliable_transcript_leaves_the_forced_score_as_the_text_half(case: dict) -> None:
    """A looped or empty transcript says nothing about the words; the forced reading does not depend on it."""
    without = _compare(**case)
    assert not without.text_counted and without.sim_score == without.audio_sim_score
    c = _compare(forced_scores=[0.3], **case)
    assert c.text_counted and c.text_sim_score == 0.3 and c.text_forced_score == 0.3
    assert c.text_transcript_score == without.text_sim_score  # still reported
    assert c.sim_score == pytest.approx((c.audio_sim_score + 0.3) / 2)
    assert c.looped is bool(case.get("looped"))


def test_no_speech_zeroes_the_forced_score_too() -> None:
    c = _compare(forced_scores=[0.9], no_speech=True, transcript="")
    assert c.text_forced_score == 0.0 and c.text_transcript_score == 0.0 and c.sim_score == 0.0


def test_a_clip_against_itself_is_one_on_every_text_score() -> None:
    c = _compare(transcript="The cat sat on the mat.", forced_scores=[1.0])
    assert c.text_sim_score == c.text_transcript_score == c.text_forced_score == 1.0


def test_forced_texts_are_the_reference_text_and_transcript_without_repeats_or_blanks() -> None:
    assert forced_texts("It's 5 o'clock.", "It's five o'clock.") == ("It's 5 o'clock.", "It's five o'clock.")
    assert forced_texts("Same.", " Same. ") == ("Same.",)
    assert forced_texts(None, "Heard.") == ("Heard.",)
    assert forced_texts("", "") == ()


# --- the backends ---------------------------------------------------------------------------------------------


def _backend(tmp_path: Path, entry: dict):  # type: ignore[no-untyped-def]
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"models": [entry], "video_clip_dir": "clips", "cache_dir": "cache"}))
    settings = load_settings(PredictorEnv, path, env={})
    return load_backend(settings.models[0], settings)


@pytest.fixture(params=["whisper", "higgs_audio"])
def backend(request, tmp_path, tiny_models):  # type: ignore[no-untyped-def]
    if request.param == "whisper":
        entry = {"key": "w", "type": "whisper", "model_id": str(tiny_models.whisper), "max_new_tokens": 6}
    else:
        entry = {
            "key": "h",
            "type": "higgs_audio",
            "model_id": str(tiny_models.higgs),
            "processor_id": str(tiny_models.whisper),
            "transcriber_id": str(tiny_models.whisper),
            "max_new_tokens": 6,
        }
    return _backend(tmp_path, entry)


def test_forced_scores_come_with_the_transcript_one_per_text(backend) -> None:  # type: ignore[no-untyped-def]
    wave = synth_speechlike(2.0, RATE, seed=3)
    (plain,) = backend.embed([wave])
    assert plain.forced_scores == ()  # nothing asked, nothing read
    (read,) = backend.embed([wave], forced_texts=[(plain.transcript or "a", "something else entirely", "")])
    # The same transcript: the forced reading is one more pass over the same encoder states, not a new decode.
    assert read.transcript == plain.transcript and read.avg_logprob == plain.avg_logprob
    first, second, empty = read.forced_scores
    assert first is not None and second is not None and 0.0 < first <= 1.0 and 0.0 < second <= 1.0
    assert empty is None


def test_a_text_the_decoder_wrote_for_the_audio_scores_one(backend) -> None:  # type: ignore[no-untyped-def]
    """Tiny random weights: the transcript stops at its token budget, so the raw reading of it would not be 1.0
    (no end-of-text there); the decoder wrote it, so it is 1.0, and the clip against itself stays 1.0."""
    wave = synth_speechlike(2.0, RATE, seed=3)
    (plain,) = backend.embed([wave])
    assert plain.transcript
    (read,) = backend.embed([wave], forced_texts=[(f" {plain.transcript} ", "something else entirely")])
    own, other = read.forced_scores
    assert own == 1.0 and other is not None and other < 1.0


def test_forced_scores_do_not_depend_on_the_batch(backend) -> None:  # type: ignore[no-untyped-def]
    waves = [synth_speechlike(1.0, RATE, seed=4), synth_speechlike(2.5, RATE, seed=5)]
    texts = [("a short one",), ("a much longer text than the other one, so the rows are padded", "", "two")]
    batched = backend.embed(waves, forced_texts=texts)
    singles = [backend.embed([w], forced_texts=[t])[0] for w, t in zip(waves, texts, strict=True)]
    for b, s in zip(batched, singles, strict=True):
        assert len(b.forced_scores) == len(s.forced_scores)
        for x, y in zip(b.forced_scores, s.forced_scores, strict=True):
            assert (x is None) == (y is None)
            if x is not None:
                assert x == pytest.approx(y, abs=1e-4) and 0.0 < x <= 1.0
    assert batched[1].forced_scores[1] is None  # an empty text has nothing to read


def test_a_text_longer_than_the_decoder_takes_is_not_scored(backend) -> None:  # type: ignore[no-untyped-def]
    (read,) = backend.embed([synth_speechlike(1.0, RATE, seed=6)], forced_texts=[("word " * 1000,)])
    assert read.forced_scores == (None,)


# --- the predictor, with forced_text off ----------------------------------------------------------------------


def test_forced_text_off_answers_with_the_transcript_similarity_alone(workspace, start_predictor) -> None:  # type: ignore[no-untyped-def]
    """config.json ``forced_text: false``: no forced pass, no forced outputs, and ``text_sim_score`` is the
    transcript's similarity (the seed's meaning), through the real KServe server."""
    import httpx

    from audio_score import v2
    from audio_score.audio import decode_audio
    from audio_score.similarity import text_similarity

    config = json.loads(workspace.config_path.read_text())
    config["forced_text"] = False
    config["models"] = [m for m in config["models"] if m["type"] == "whisper"]
    workspace.config_path.write_text(json.dumps(config))
    key = config["models"][0]["key"]
    (uid, cid), other = sorted(workspace.clips)[0], workspace.clips[sorted(workspace.clips)[1]]
    with start_predictor(workspace.config_path, ready_models=[key]) as server:
        body, headers = v2.build_infer_request(decode_audio(other, sampling_rate=RATE), uid, cid)
        response = httpx.post(v2.infer_url(server.http_url, key), content=body, headers=headers, timeout=120)
    assert response.status_code == 200, response.text
    result = v2.parse_score_response(response.content, response.headers)
    assert "text_forced_score" not in result and "text_transcript_score" not in result
    expected = text_similarity(
        result["transcript"], result["reference_transcript"], result["text_similarity"], result["language"]
    )
    assert result["text_sim_score"] == pytest.approx(expected, abs=1e-6)
