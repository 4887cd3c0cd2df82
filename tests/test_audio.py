"""Decoding: every format FFmpeg reads, both backends alike, limits and bad input as specific errors.

Tolerances (pyav vs pydub on the same file): pydub hands over 16-bit PCM, so on lossless files the two differ
by the 16-bit quantisation step (1/32768, about 3e-5) smeared by the resampler: ``atol=1e-4``, equal lengths.
On lossy files both run the same FFmpeg decoder family but different builds (PyAV's bundled libraries vs the
imageio-ffmpeg binary), and the ffmpeg CLI may trim the last AAC frame's padding that PyAV keeps, so the
lengths may differ by up to one codec frame (checked: within 50 ms) and the common prefix is compared with
``correlation > 0.999`` and ``max abs diff < 2e-3`` (-54 dBFS). That still catches any misalignment: a shift of
a single sample of this 100-1500 Hz signal changes samples by about 0.1.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from audio_score import audio as audio_mod
from audio_score.audio import audio_duration, decode_audio
from audio_score.errors import AudioError, AudioTooLarge, EmptyAudio, UndecodableAudio
from audio_score_tools import media
from audio_score_tools.media import synth_speechlike, write_audio, write_clip_mov

RATE = 16000
SECONDS = 3.0
BACKENDS = ["pyav", "pydub"]
LOSSLESS = {".wav", ".flac"}
FORMATS = [".wav", ".mp3", ".m4a", ".ogg", ".webm", ".flac", ".mov", ".mp4"]


@pytest.fixture(scope="module")
def signal() -> np.ndarray:
    return synth_speechlike(SECONDS, RATE, seed=7)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, signal: np.ndarray) -> dict[str, Path]:
    """One real file per format; .mov/.mp4 carry a video stream before the audio, like reference clips."""
    root = tmp_path_factory.mktemp("media")
    out = {ext: write_audio(root / f"a{ext}", signal, RATE) for ext in FORMATS if ext not in {".mov", ".mp4"}}
    out[".mov"] = write_clip_mov(root / "clip.mov", signal, RATE)
    out[".mp4"] = write_clip_mov(root / "clip.mp4", signal, RATE)
    return out


def aligned(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = min(len(a), len(b))
    return a[:n], b[:n]


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(*aligned(a, b))[0, 1])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ext", FORMATS)
def test_every_format_decodes_to_the_right_duration_and_content(files, signal, ext, backend) -> None:
    samples = decode_audio(files[ext], sampling_rate=RATE, backend=backend)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(audio_duration(samples, RATE) - SECONDS) < 0.05
    assert np.max(np.abs(samples)) <= 1.0
    # Lossless formats are near exact; lossy ones keep the waveform, aligned (encoder delay is trimmed).
    assert corr(samples, signal) > (0.9999 if ext in LOSSLESS else 0.95)


@pytest.mark.parametrize("ext", FORMATS)
def test_both_backends_give_the_same_samples(files, ext) -> None:
    a = decode_audio(files[ext], sampling_rate=RATE, backend="pyav")
    b = decode_audio(files[ext], sampling_rate=RATE, backend="pydub")
    if ext in LOSSLESS:
        assert len(a) == len(b)
        np.testing.assert_allclose(a, b, atol=1e-4)
    else:
        assert abs(len(a) - len(b)) < 0.05 * RATE
        a, b = aligned(a, b)
        assert corr(a, b) > 0.999
        assert float(np.max(np.abs(a - b))) < 2e-3


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ext", [".m4a", ".mov", ".wav"])
def test_bytes_file_object_and_path_give_identical_samples(files, ext, backend) -> None:
    path = files[ext]
    by_path = decode_audio(path, sampling_rate=RATE, backend=backend)
    by_str = decode_audio(str(path), sampling_rate=RATE, backend=backend)
    by_bytes = decode_audio(path.read_bytes(), sampling_rate=RATE, backend=backend)
    by_view = decode_audio(memoryview(bytearray(path.read_bytes())), sampling_rate=RATE, backend=backend)
    with path.open("rb") as handle:
        by_handle = decode_audio(handle, sampling_rate=RATE, backend=backend)
    for other in (by_str, by_bytes, by_view, by_handle):
        np.testing.assert_array_equal(by_path, other)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("source_rate", [44100, 48000, 8000])
def test_resampling_to_the_target_rate(tmp_path, source_rate, backend) -> None:
    t = np.arange(source_rate * 2) / source_rate
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    path = write_audio(tmp_path / "t.wav", tone, source_rate)
    samples = decode_audio(path, sampling_rate=RATE, backend=backend)
    assert len(samples) == 2 * RATE
    spectrum = np.abs(np.fft.rfft(samples))
    assert abs(np.argmax(spectrum) * RATE / len(samples) - 440) < 1
    assert abs(float(np.max(np.abs(samples[100:-100]))) - 0.5) < 0.01  # HQ resampling keeps the level
    same_rate = decode_audio(path, sampling_rate=source_rate, backend=backend)
    np.testing.assert_allclose(same_rate, tone, atol=1e-4)  # no resampling when the rate already matches


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ext", [".wav", ".m4a"])
def test_stereo_is_downmixed_by_averaging(tmp_path, signal, ext, backend) -> None:
    stereo = np.stack([signal, 0.5 * signal])
    samples = decode_audio(write_audio(tmp_path / f"s{ext}", stereo, RATE), sampling_rate=RATE, backend=backend)
    if ext in LOSSLESS:
        np.testing.assert_allclose(samples, 0.75 * signal, atol=1e-4)
    else:
        a, b = aligned(samples, 0.75 * signal)
        assert corr(a, b) > 0.95 and abs(float(np.std(a) / np.std(b)) - 1) < 0.05


@pytest.mark.parametrize("backend", BACKENDS)
def test_size_limit_is_checked_before_decoding(files, monkeypatch, backend) -> None:
    for name in ("_decode_pyav", "_decode_pydub"):
        monkeypatch.setattr(audio_mod, name, lambda *a: pytest.fail("decoded despite the byte limit"))
    path = files[".wav"]
    size = path.stat().st_size
    for source in (path, path.read_bytes()):
        with pytest.raises(AudioTooLarge, match=rf"{size} bytes, over the limit of 1000 bytes"):
            decode_audio(source, sampling_rate=RATE, max_bytes=1000, backend=backend)
    with path.open("rb") as handle, pytest.raises(AudioTooLarge, match="over the limit of 1000 bytes"):
        decode_audio(handle, sampling_rate=RATE, max_bytes=1000, backend=backend)


@pytest.fixture(scope="module")
def long_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_audio(tmp_path_factory.mktemp("long") / "long.flac", synth_speechlike(60.0, RATE, seed=3), RATE)


def test_duration_limit_stops_pyav_decoding_early(long_file, monkeypatch) -> None:
    seen = {"samples": 0}
    real = audio_mod._frame_to_mono

    def counting(frame: av.AudioFrame) -> np.ndarray:
        mono = real(frame)
        seen["samples"] += mono.size
        return mono

    monkeypatch.setattr(audio_mod, "_frame_to_mono", counting)
    with pytest.raises(AudioTooLarge, match="longer than the limit of 5 s"):
        decode_audio(long_file, sampling_rate=RATE, max_seconds=5)
    assert seen["samples"] < 6 * RATE  # stopped within a frame of the limit, not after 60 s
    assert len(decode_audio(long_file, sampling_rate=RATE, max_seconds=60.5)) == 60 * RATE  # at the limit: fine


def test_duration_limit_stops_pydub_decoding_early(long_file, monkeypatch) -> None:
    segment_class = audio_mod._pydub_segment_class()
    real = segment_class.from_file_using_temporary_files
    decoded: list[float] = []

    def spy(*args, **kwargs):
        segment = real(*args, **kwargs)
        decoded.append(segment.duration_seconds)
        return segment

    monkeypatch.setattr(segment_class, "from_file_using_temporary_files", spy)
    with pytest.raises(AudioTooLarge, match="longer than the limit of 5 s"):
        decode_audio(long_file, sampling_rate=RATE, max_seconds=5, backend="pydub")
    assert decoded and decoded[0] < 6  # ffmpeg was told to stop (-t), not asked for all 60 s
    assert len(decode_audio(long_file, sampling_rate=RATE, max_seconds=60.5, backend="pydub")) == 60 * RATE


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_silent_and_garbage_inputs_raise_specific_errors(tmp_path, signal, backend) -> None:
    def decode(source):
        return decode_audio(source, sampling_rate=RATE, backend=backend)

    with pytest.raises(EmptyAudio, match="empty"):
        decode(b"")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(EmptyAudio, match="empty"):
        decode(tmp_path / "empty.wav")
    with wave.open(str(tmp_path / "zero.wav"), "wb") as zero:  # a valid WAV header with no frames
        zero.setnchannels(1), zero.setsampwidth(2), zero.setframerate(RATE)
    with pytest.raises(EmptyAudio, match="no samples"):
        decode(tmp_path / "zero.wav")
    silent = write_audio(tmp_path / "silent.wav", np.zeros(RATE, np.float32), RATE)
    with pytest.raises(EmptyAudio, match="silent"):
        decode(silent)
    assert len(decode_audio(silent, sampling_rate=RATE, backend=backend, reject_silence=False)) == RATE
    with pytest.raises(UndecodableAudio, match="not a readable audio or video file"):
        decode(b"this is not audio at all" * 50)
    video_only = write_clip_mov(tmp_path / "noaudio.mov", signal, RATE, with_audio=False)
    with pytest.raises(UndecodableAudio, match="no audio stream"):
        decode(video_only)
    with pytest.raises(UndecodableAudio, match=r"missing\.wav does not exist"):
        decode(tmp_path / "missing.wav")
    with pytest.raises(UndecodableAudio, match="is a folder"):
        decode(tmp_path)


def test_unknown_backend_is_a_programming_error(files) -> None:
    with pytest.raises(ValueError, match="unknown decoder backend"):
        decode_audio(files[".wav"], sampling_rate=RATE, backend="sox")  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ext", [".mp3", ".m4a", ".webm", ".wav", ".mov"])
def test_truncated_files_decode_their_good_part_or_refuse(files, ext, backend) -> None:
    data = files[ext].read_bytes()
    outcomes = []
    for cut in (len(data) * 3 // 4, len(data) // 2, 200, 64):
        try:
            samples = decode_audio(data[:cut], sampling_rate=RATE, backend=backend)
        except (UndecodableAudio, EmptyAudio) as exc:
            outcomes.append(type(exc).__name__)
            continue
        outcomes.append("decoded")
        assert 0 < len(samples) <= (SECONDS + 0.05) * RATE
    if ext in {".mp3", ".wav"}:  # streamable formats keep what arrived
        assert outcomes[0] == "decoded"


@pytest.mark.parametrize("backend", BACKENDS)
def test_corrupt_input_never_leaks_other_exception_types(files, backend) -> None:
    rng = np.random.default_rng(0)
    for ext in (".mp3", ".m4a", ".ogg"):
        data = files[ext].read_bytes()
        for _ in range(8 if backend == "pyav" else 3):
            corrupt = bytearray(data)
            for i in rng.integers(0, len(corrupt), size=200):
                corrupt[int(i)] = int(rng.integers(0, 256))
            with contextlib.suppress(AudioError):  # any other exception type fails the test
                decode_audio(bytes(corrupt), sampling_rate=RATE, backend=backend)


def test_concurrent_decodes_in_threads_match_serial(files) -> None:
    jobs = [(ext, backend) for ext in (".wav", ".mp3", ".mov", ".webm") for backend in BACKENDS] * 2
    expected = {job: decode_audio(files[job[0]].read_bytes(), sampling_rate=RATE, backend=job[1]) for job in jobs}
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(index: int, ext: str, backend: str) -> None:
        try:
            results[index] = decode_audio(files[ext].read_bytes(), sampling_rate=RATE, backend=backend)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, *job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for i, job in enumerate(jobs):
        np.testing.assert_array_equal(results[i], expected[job])


def test_pydub_needs_nothing_on_path(files, monkeypatch, tmp_path) -> None:
    """imageio-ffmpeg's binary alone is enough: no ffprobe, no system ffmpeg (CI may have neither)."""
    monkeypatch.setenv("PATH", str(tmp_path))
    samples = decode_audio(files[".mov"].read_bytes(), sampling_rate=RATE, backend="pydub")
    assert abs(audio_duration(samples, RATE) - SECONDS) < 0.05


def test_decoder_imports_no_torch_and_no_web_framework() -> None:
    code = (
        "import sys, audio_score.audio, audio_score_tools.media;"
        "bad = {'torch', 'fastapi', 'starlette', 'kserve'} & set(sys.modules); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_synth_speechlike_is_deterministic_varied_and_loud_enough() -> None:
    a, b, c = synth_speechlike(2.0, seed=1), synth_speechlike(2.0, seed=1), synth_speechlike(2.0, seed=2)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and a.shape == (32000,)
    assert abs(corr(a, c)) < 0.5
    assert 0.05 < float(np.max(np.abs(a))) <= 1.0
    frames = a[: 32000 // 400 * 400].reshape(-1, 400)
    energy = np.sqrt(np.mean(frames**2, axis=1))
    assert energy.max() > 5 * energy.min()  # an amplitude envelope, not a steady tone


def test_write_audio_falls_back_to_the_ffmpeg_binary(tmp_path, signal, monkeypatch) -> None:
    monkeypatch.setattr(media, "has_encoder", lambda codec: codec == "pcm_s16le")
    path = write_audio(tmp_path / "fallback.mp3", signal, RATE)
    with av.open(str(path)) as container:
        assert container.streams.audio[0].codec_context.name in {"mp3", "mp3float"}
    assert corr(decode_audio(path, sampling_rate=RATE), signal) > 0.95
    with pytest.raises(RuntimeError, match="no nosuchcodec encoder"):
        write_audio(tmp_path / "x.ogg", signal, RATE, codec="nosuchcodec")
