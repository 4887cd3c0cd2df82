"""Crafted uploads whose headers declare impossible parameters: each is a decode error (a 4xx), never anything else.

The files are built field by field (:mod:`audio_score_tools.crafted`): absurd sample rates, zero or odd sample
sizes and channel counts, unknown WAV format tags, Matroska/WebM tracks with an unknown codec id, NaN samples.
Both decoder backends see each one. The cache Job's handling of such a reference clip is in test_cachebuild.py and
the router's answer to them in test_fuzz_router.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from audio_score import audio as audio_mod
from audio_score.audio import MAX_SAMPLE_RATE, decode_audio
from audio_score.errors import AudioError, EmptyAudio, UndecodableAudio
from audio_score_tools.crafted import (
    WAV_FLOAT,
    float_wav_bytes,
    matroska_pcm_bytes,
    tone_pcm16,
    wav_bytes,
    with_unknown_codec_id,
)
from audio_score_tools.media import synth_speechlike, write_audio

RATE = 16000
BACKENDS = ["pyav", "pydub"]


def decode(data: bytes, backend: str) -> np.ndarray:
    return decode_audio(data, sampling_rate=RATE, backend=backend, max_seconds=30)  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rate", [1, 999, MAX_SAMPLE_RATE + 1, 2**31 - 1])
def test_a_sample_rate_no_recording_has_is_undecodable(backend, rate) -> None:
    with pytest.raises(UndecodableAudio, match=rf"sample rate of {rate} Hz|not a readable"):
        decode(wav_bytes(rate=rate), backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rate", [0, 2**32 - 1])
def test_a_zero_or_overflowing_sample_rate_is_undecodable(backend, rate) -> None:
    with pytest.raises(UndecodableAudio):
        decode(wav_bytes(rate=rate), backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("samples", [1, 20])
def test_audio_that_resamples_to_nothing_is_empty(backend, samples) -> None:
    """A plausible rate, but so few samples that 16 kHz leaves none: EmptyAudio, not numpy's ValueError."""
    with pytest.raises(EmptyAudio, match="no samples"):
        decode(wav_bytes(tone_pcm16(samples), rate=MAX_SAMPLE_RATE), backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "fields",
    [
        {"bits": 0},
        {"format_tag": 0},
        {"format_tag": 0x1234},
        {"format_tag": 0xFFFF},
        {"format_tag": WAV_FLOAT, "bits": 16},  # float samples cannot be 16-bit
        {"channels": 0},
        {"channels": 65535},
        {"channels": 2, "data": b"\x01"},  # less than one frame
    ],
    ids=lambda f: ",".join(f"{k}={v!r}"[:20] for k, v in f.items()),
)
def test_impossible_wav_headers_are_undecodable(backend, fields) -> None:
    with pytest.raises(UndecodableAudio):
        decode(wav_bytes(**fields), backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fields", [{"bits": 7}, {"bits": 24, "data": b"\x01" * 7}, {"block_align": 0}, {"bits": 64}])
def test_odd_but_readable_wav_headers_decode_or_refuse_cleanly(backend, fields) -> None:
    """FFmpeg reads some odd headers its own way; the outcome differs by build, but it is samples or a decode
    error, and samples are finite and in range."""
    try:
        samples = decode(wav_bytes(**fields), backend)
    except AudioError:
        return
    assert samples.dtype == np.float32 and np.isfinite(samples).all() and np.abs(samples).max() <= 1.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_data_chunk_declaring_more_than_is_there_keeps_what_is(backend) -> None:
    samples = decode(wav_bytes(tone_pcm16(1600), data_size=10**9), backend)
    assert len(samples) == 1600


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_and_infinite_float_samples_never_reach_the_caller(backend) -> None:
    values = np.tile(np.array([np.nan, 0.5, -np.inf, np.inf, -0.25], dtype=np.float32), 400)
    samples = decode(float_wav_bytes(values), backend)
    assert np.isfinite(samples).all() and np.abs(samples).max() <= 1.0
    try:
        samples = decode(float_wav_bytes(np.full(1600, np.nan)), backend)
    except EmptyAudio:  # PyAV keeps NaN as NaN, which becomes silence
        return
    assert np.isfinite(samples).all()  # the ffmpeg CLI converts NaN to 16-bit values itself


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("container", ["mkv", "webm"])
def test_a_track_with_an_unknown_codec_id_is_undecodable(tmp_path: Path, backend, container) -> None:
    """PyAV opens such a stream without a codec context (it was an AttributeError, so a 500)."""
    signal = synth_speechlike(0.5, RATE, seed=2)
    if container == "mkv":
        good, codec_id = matroska_pcm_bytes(tmp_path / "a.mkv", signal, RATE), b"A_PCM/INT/LIT"
    else:
        good, codec_id = write_audio(tmp_path / "a.webm", signal, RATE).read_bytes(), b"A_OPUS"
    assert len(decode(good, backend)) > 0
    with pytest.raises(UndecodableAudio, match=r"codec is unknown|not a readable"):
        decode(with_unknown_codec_id(good, codec_id), backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_any_other_failure_inside_decoding_is_undecodable_and_logged(monkeypatch, caplog, backend) -> None:
    """The boundary: whatever a C library raises that no check foresaw still ends as a decode error."""

    def broken(*args: object, **kwargs: object) -> None:
        raise IndexError("a failure no one listed")

    target = "_decode_pyav" if backend == "pyav" else "_decode_pydub"
    monkeypatch.setattr(audio_mod, target, broken)
    with (
        caplog.at_level(logging.WARNING, logger="audio_score.audio"),
        pytest.raises(UndecodableAudio, match=r"cannot be decoded \(IndexError\)"),
    ):
        decode(wav_bytes(), backend)
    assert any(r.exc_info and r.exc_info[0] is IndexError for r in caplog.records)
