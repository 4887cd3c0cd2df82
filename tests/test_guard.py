"""The decoding guard (issue 15): its rules alone, then through the real Whisper backend on tiny random-weight
checkpoints (per-take budgets in one batch, loop stops, per-take languages, the cache entry's new fields).

The thresholds themselves are checked on real weights and real speech in ``tests/test_real_voices.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from audio_score.backends.guard import (
    GUARD,
    compression_ratio,
    find_loop,
    is_no_speech,
    token_budget,
)
from audio_score.cache import CACHE_FORMAT_VERSION, ReferenceCache
from audio_score.clips import ClipRef
from audio_score_tools.media import synth_speechlike
from audio_score_tools.tiny_models import build_tiny_whisper

RATE = 16000


# --- the rules ------------------------------------------------------------------------------------------------


def test_budget_grows_with_duration_and_never_passes_the_cap() -> None:
    assert token_budget(0.0, 444) == GUARD.budget_slack_tokens
    assert token_budget(3.0, 444) == 24 + GUARD.budget_slack_tokens
    assert token_budget(3.0, 444) < token_budget(5.0, 444)
    assert token_budget(30.0, 100) == 100
    assert token_budget(3.0, 3) == 3  # the warm-up's lowered cap wins


def test_a_loop_is_cut_after_its_first_phrase() -> None:
    phrase = [40, 716, 262, 691, 530, 508, 318]  # "I am the only one who is"
    tokens = [11, 12, *phrase * 3]
    assert find_loop(tokens) == 2 + len(phrase)  # the prefix and one copy of the phrase are kept
    assert find_loop([5] * 8) == 1
    assert find_loop([5, 6] * 4) == 2


def test_words_said_twice_or_a_short_repeat_are_not_loops() -> None:
    assert find_loop([1, 2, 3, 4, 5, 6, 7, 8, 9]) is None
    assert find_loop([9, 1, 2, 1, 2, 1, 2]) is None  # "no, no, no": 3 x 2 tokens
    assert find_loop([3, 4, 5, 6, 3, 4, 5, 6]) is None  # a phrase said twice
    assert find_loop([7] * 7) is None


def test_compression_ratio_flags_long_repetition_only() -> None:
    assert compression_ratio("") == 0.0
    assert compression_ratio("Please open the window before the meeting starts.") < 1.2
    assert compression_ratio("I am the only one who is " * 12) > GUARD.compression_ratio_threshold


@pytest.mark.parametrize(
    ("prob", "logprob", "tokens", "seconds", "expected"),
    [
        (0.95, -0.38, 1, 3.0, True),  # digital silence: a confident "you"
        (0.63, -1.75, 2, 3.0, True),  # a tone
        (0.78, -1.34, 21, 4.0, False),  # a real (synthesised) French reading on base
        (0.05, -2.5, 1, 3.0, False),  # unlikely words, but the model says there is speech
        (None, -3.0, 0, 3.0, False),  # a checkpoint without a no-speech token
    ],
)
def test_no_speech_needs_the_token_and_an_unlikely_or_too_short_text(prob, logprob, tokens, seconds, expected) -> None:
    assert is_no_speech(prob, logprob, tokens, seconds) is expected


# --- through the backend ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def multilingual(tmp_path_factory: pytest.TempPathFactory):
    from audio_score.backends.whisper import WhisperRunner

    path = build_tiny_whisper(tmp_path_factory.mktemp("guard") / "whisper", kind="multilingual")
    return WhisperRunner(str(path), revision=None, device="cpu", language=None, max_new_tokens=128)


def _hidden(runner, waves):
    import torch

    with torch.inference_mode():
        features, _ = runner.log_mel(waves)
        return runner.encode(features)


def test_each_take_gets_its_own_budget_in_one_batch(multilingual) -> None:
    waves = [synth_speechlike(0.5, RATE, seed=1), synth_speechlike(4.0, RATE, seed=2)]
    durations = [len(w) / RATE for w in waves]
    out = multilingual.transcribe(_hidden(multilingual, waves), durations)
    assert [t.budget for t in out] == [token_budget(d, multilingual.max_new_tokens) for d in durations]
    for t in out:
        assert t.tokens <= t.budget
        if t.tokens == t.budget:  # ran to its budget without ending: more text than the audio holds
            assert t.looped


def test_the_stop_criterion_ends_a_looping_row_and_leaves_the_others() -> None:
    import torch

    from audio_score.backends.whisper import GuardStop

    prompt = [1, 2]
    rows = [
        prompt + [5, 6, 7] + [8, 9] * 4,  # a loop: 4 x 2 tokens
        [*prompt, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],  # words, not done
        [*prompt, 5, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # ended (0 = end of text), padded
    ]
    stop = GuardStop(len(prompt), [50, 50, 50], eos_token_id=0, guard=GUARD)
    done = stop(torch.tensor(rows), torch.zeros(3, 4))
    assert done.tolist() == [True, False, False]
    assert stop.loop_cut == {0: 5}  # after "5 6 7 8 9": the phrase is kept once
    at_budget = GuardStop(len(prompt), [50, 12, 50], eos_token_id=0, guard=GUARD)
    assert at_budget(torch.tensor(rows), torch.zeros(3, 4)).tolist() == [True, False, False]
    short = GuardStop(len(prompt), [50, 11, 11], 0, GUARD)
    assert short(torch.tensor(rows), torch.zeros(3, 4)).tolist() == [True, True, False]
    assert short.at_budget == {1} and short.loop_cut == {0: 5}


def test_languages_are_forced_per_take_or_detected(multilingual) -> None:
    waves = [synth_speechlike(1.0, RATE, seed=s) for s in range(3)]
    hidden = _hidden(multilingual, waves)
    _, detected = multilingual.first_step(hidden)
    out = multilingual.transcribe(hidden, [1.0] * 3, None, ["fr", None, "de"])
    assert [t.language for t in out] == ["fr", detected[1], "de"]
    # Forcing changes what is decoded (the language token is part of the prompt).
    alone_en = multilingual.transcribe(hidden[:1], [1.0], None, ["en"])[0]
    alone_fr = multilingual.transcribe(hidden[:1], [1.0], None, ["fr"])[0]
    assert alone_fr.text == out[0].text
    assert (alone_en.language, alone_fr.language) == ("en", "fr")


def test_an_unknown_configured_language_is_a_permanent_load_error(tmp_path: Path) -> None:
    from audio_score.backends.whisper import WhisperRunner
    from audio_score.errors import CheckpointMismatch

    path = build_tiny_whisper(tmp_path / "few", kind="multilingual")
    with pytest.raises(CheckpointMismatch, match="not one of this checkpoint's languages") as caught:
        WhisperRunner(str(path), revision=None, device="cpu", language="xx", max_new_tokens=8)
    assert caught.value.permanent


def test_the_entry_keeps_the_reference_language_and_flags(tmp_path: Path) -> None:
    clip_path = tmp_path / "clips" / "v1" / "c1.wav"
    clip_path.parent.mkdir(parents=True)
    clip_path.write_bytes(b"RIFF")
    cache = ReferenceCache(tmp_path / "cache", "whisper-base")
    clip = ClipRef("v1", "c1", clip_path)
    cache.write(
        clip,
        transcript="",
        embedding=np.zeros(4, np.float32),
        frames=np.zeros((2, 4), np.float32),
        fingerprint={"k": 1},
        sampling_rate=RATE,
        duration_s=1.0,
        language="de",
        no_speech=True,
    )
    entry = cache.read("v1", "c1")
    assert entry is not None
    assert (entry.language, entry.no_speech, entry.looped) == ("de", True, False)
    assert entry.meta["format_version"] == CACHE_FORMAT_VERSION == 3
    assert cache.is_fresh(entry.meta, {"k": 1}, clip)
    assert not cache.is_fresh({**entry.meta, "format_version": 2}, {"k": 1}, clip)  # older entries are rebuilt
