"""Decoding: every format FFmpeg reads, both backends alike, limits and bad input as specific errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from audio_score import audio as audio_mod
from audio_score.audio import decode_audio
from audio_score.devtools.media import synth_speechlike, write_audio, write_clip_mov
from audio_score.errors import AudioTooLarge, EmptyAudio, UndecodableAudio

RATE = 16000
FORMATS = [".wav", ".mp3", ".m4a", ".ogg", ".webm", ".flac"]
needs_ffprobe = pytest.mark.skipif(shutil.which("ffprobe") is None, reason="pydub needs ffprobe (.ci/run installs it)")


@pytest.fixture(scope="module")
def signal() -> np.ndarray:
    return synth_speechlike(3.0, RATE, seed=7)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, signal: np.ndarray) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    out = {ext: write_audio(root / f"a{ext}", signal, RATE) for ext in FORMATS}
    out[".mov"] = write_clip_mov(root / "clip.mov", signal, RATE)
    return out


def aligned_corr(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


@pytest.mark.parametrize("ext", [*FORMATS, ".mov"])
def test_every_format_decodes_to_the_right_duration_and_content(files, signal, ext) -> None:
    samples = decode_audio(files[ext], sampling_rate=RATE)
    assert samples.dtype == np.float32 and samples.ndim == 1
    # AAC adds up to one frame of priming/padding (1024 samples at the source rate).
    assert abs(len(samples) / RATE - 3.0) < 0.07
    assert np.max(np.abs(samples)) <= 1.0
    # Lossless formats are near exact; lossy ones keep the waveform (encoder delay aside, which PyAV trims).
    assert aligned_corr(samples, signal) > (0.999 if ext in {".wav", ".flac"} else 0.9)


@needs_ffprobe
@pytest.mark.parametrize("ext", [*FORMATS, ".mov"])
def test_both_backends_give_the_same_samples(files, ext) -> None:
    a = decode_audio(files[ext], sampling_rate=RATE, backend="pyav")
    b = decode_audio(files[ext], sampling_rate=RATE, backend="pydub")
    from_bytes = decode_audio(files[ext].read_bytes(), sampling_rate=RATE, backend="pydub")  # the upload path
    # pydub hands over 16-bit PCM, so the two differ by at most a quantisation step or two after resampling.
    assert len(a) == len(b) == len(from_bytes)
    np.testing.assert_allclose(a, b, atol=1e-4)
    np.testing.assert_array_equal(b, from_bytes)


def test_bytes_file_object_and_path_give_identical_samples(files) -> None:
    path = files[".m4a"]
    by_path = decode_audio(path, sampling_rate=RATE)
    by_bytes = decode_audio(path.read_bytes(), sampling_rate=RATE)
    with path.open("rb") as handle:
        by_handle = decode_audio(handle, sampling_rate=RATE)
    np.testing.assert_array_equal(by_path, by_bytes)
    np.testing.assert_array_equal(by_path, by_handle)


@pytest.mark.parametrize("source_rate", [44100, 48000, 8000])
def test_resampling_to_the_target_rate(tmp_path, source_rate) -> None:
    t = np.arange(source_rate * 2) / source_rate
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    samples = decode_audio(write_audio(tmp_path / "t.wav", tone, source_rate), sampling_rate=RATE)
    assert len(samples) == 2 * RATE
    spectrum = np.abs(np.fft.rfft(samples))
    assert abs(np.argmax(spectrum) * RATE / len(samples) - 440) < 2


def test_stereo_is_downmixed(tmp_path, signal) -> None:
    stereo = np.stack([signal, 0.5 * signal])
    samples = decode_audio(write_audio(tmp_path / "s.wav", stereo, RATE), sampling_rate=RATE)
    np.testing.assert_allclose(samples, 0.75 * signal, atol=1e-4)


def test_size_limit_is_checked_before_decoding(files, monkeypatch) -> None:
    monkeypatch.setattr(audio_mod, "_decode_pyav", lambda *a: pytest.fail("decoded despite the byte limit"))
    with pytest.raises(AudioTooLarge, match="over the limit of 1000 bytes"):
        decode_audio(files[".wav"], sampling_rate=RATE, max_bytes=1000)
    with pytest.raises(AudioTooLarge):
        decode_audio(files[".wav"].read_bytes(), sampling_rate=RATE, max_bytes=1000)


def test_duration_limit_stops_decoding_early(tmp_path, monkeypatch) -> None:
    long = write_audio(tmp_path / "long.flac", synth_speechlike(60.0, RATE, seed=3), RATE)
    seen = {"frames": 0}
    real = audio_mod._frame_to_mono

    def counting(frame):
        seen["frames"] += 1
        return real(frame)

    monkeypatch.setattr(audio_mod, "_frame_to_mono", counting)
    with pytest.raises(AudioTooLarge, match="longer than the limit of 5 s"):
        decode_audio(long, sampling_rate=RATE, max_seconds=5)
    full = decode_audio(long, sampling_rate=RATE)
    frames_for_all = seen["frames"]
    assert len(full) == 60 * RATE
    assert frames_for_all > 0
    assert seen["frames"] - frames_for_all < frames_for_all  # the limited decode read far less than all


@pytest.mark.parametrize("backend", ["pyav", pytest.param("pydub", marks=needs_ffprobe)])
def test_bad_inputs_raise_specific_errors(tmp_path, signal, backend) -> None:
    with pytest.raises(EmptyAudio, match="empty"):
        decode_audio(b"", sampling_rate=RATE, backend=backend)
    silent = write_audio(tmp_path / "silent.wav", np.zeros(RATE, np.float32), RATE)
    with pytest.raises(EmptyAudio, match="silent"):
        decode_audio(silent, sampling_rate=RATE, backend=backend)
    with pytest.raises(UndecodableAudio):
        decode_audio(b"this is not audio at all" * 50, sampling_rate=RATE, backend=backend)
    video_only = write_clip_mov(tmp_path / "noaudio.mov", signal, RATE, with_audio=False)
    with pytest.raises(UndecodableAudio, match="no audio stream"):
        decode_audio(video_only, sampling_rate=RATE, backend=backend)
    with pytest.raises(UndecodableAudio, match="does not exist"):
        decode_audio(tmp_path / "missing.wav", sampling_rate=RATE, backend=backend)


def test_silence_is_accepted_when_asked(tmp_path) -> None:
    silent = write_audio(tmp_path / "silent.wav", np.zeros(RATE, np.float32), RATE)
    assert len(decode_audio(silent, sampling_rate=RATE, reject_silence=False)) == RATE


@pytest.mark.parametrize("ext", [".mp3", ".m4a", ".webm"])
def test_truncated_files_decode_their_good_part_or_refuse(files, ext) -> None:
    data = files[ext].read_bytes()
    for cut in (len(data) // 2, 64):
        try:
            samples = decode_audio(data[:cut], sampling_rate=RATE)
        except (UndecodableAudio, EmptyAudio):
            continue
        assert 0 < len(samples) <= 3.1 * RATE


def test_decoder_never_leaks_ffmpeg_exceptions(files) -> None:
    data = bytearray(files[".mp3"].read_bytes())
    rng = np.random.default_rng(0)
    for _ in range(20):
        corrupt = bytearray(data)
        for i in rng.integers(0, len(corrupt), size=200):
            corrupt[int(i)] = int(rng.integers(0, 256))
        try:
            decode_audio(bytes(corrupt), sampling_rate=RATE)
        except (UndecodableAudio, EmptyAudio):
            pass
        except av.error.FFmpegError as exc:  # pragma: no cover - the failure this test guards against
            pytest.fail(f"leaked {type(exc).__name__}")
