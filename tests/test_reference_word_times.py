"""Reference word times: computed when a cache entry is built, from per-word subtitles, the model's own alignment
or the voiced-region fallback; stored in the entry, read back, and rebuilt when their source changes.

Real files throughout: subtitle files on disk read by pysubs2, real .mov clips built by the cache Job with tiny
real-format checkpoints (one copy given alignment heads so the model path runs), and, in the real-voices tier,
OpenAI's tiny.en timing festival's speech against festival's own word times.
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from audio_score.cache import WORD_TIMES, ReferenceCache
from audio_score.cli import main
from audio_score.entries import entry_fingerprint
from audio_score.env_settings import JobEnv, PredictorEnv
from audio_score.reference_word_times import (
    WORD_TIMES_VERSION,
    build_word_times,
    read_word_subtitles,
    refine_with_voice,
    voiced_regions,
)
from audio_score.settings import load_settings
from audio_score.textnorm import units
from audio_score.word_times import WordTimes
from audio_score_tools.workspace import Workspace

RATE = 16000


def speech_like(bursts: list[tuple[float, float]], duration: float, seed: int = 0) -> np.ndarray:
    """Noise bursts (voice) at the given spans over faint noise (room), ``duration`` seconds at 16 kHz."""
    rng = np.random.default_rng(seed)
    samples = rng.normal(0, 1e-4, int(duration * RATE)).astype(np.float32)
    for start, end in bursts:
        a, b = int(start * RATE), int(end * RATE)
        samples[a:b] += rng.normal(0, 0.2, b - a).astype(np.float32)
    return samples


def vtt(cues: list[tuple[float, float, str]]) -> str:
    def stamp(t: float) -> str:
        ms = round(t * 1000)
        return f"00:{ms // 60000:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"

    return "WEBVTT\n" + "".join(f"\n{stamp(a)} --> {stamp(b)}\n{w}\n" for a, b, w in cues)


def srt(cues: list[tuple[float, float, str]]) -> str:
    def stamp(t: float) -> str:
        ms = round(t * 1000)
        return f"00:{ms // 60000:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"

    return "".join(f"{i}\n{stamp(a)} --> {stamp(b)}\n{w}\n\n" for i, (a, b, w) in enumerate(cues, 1))


CUES = [(0.30, 0.55, "We're"), (0.55, 0.90, "meeting"), (0.90, 1.30, "Maria"), (1.35, 1.50, "at"),
        (1.50, 1.80, "five"), (1.80, 2.40, "o'clock.")]  # fmt: skip
TEXT = "We're meeting Maria at 5 o'clock."


# --- subtitle files --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["vtt", "srt"])
def test_a_per_word_subtitle_file_times_the_text_words_as_written(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"clip.{kind}"
    path.write_text(vtt(CUES) if kind == "vtt" else srt(CUES))
    subtitles = read_word_subtitles(path)
    assert subtitles.cues is not None and next(c.word for c in subtitles.cues) == "We're"
    assert subtitles.identity["size"] == path.stat().st_size and len(subtitles.identity["sha256"]) == 64
    samples = speech_like([(0.3, 2.4)], 2.6)
    times = build_word_times(TEXT, "en", samples=samples, sampling_rate=RATE, subtitles=subtitles)
    assert times.source == "subtitles"
    assert [w.word for w in times.words] == [u.surface for u in units(TEXT, "en")]
    # "5" in the text is the cue "five"; every span is the cue's own.
    assert [(w.start, w.end) for w in times.words] == [(a, b) for a, b, _ in CUES]


def test_a_word_the_subtitles_lack_gets_the_gap_between_its_neighbours(tmp_path: Path) -> None:
    path = tmp_path / "clip.vtt"
    path.write_text(vtt([c for c in CUES if c[2] != "Maria"]))
    times = build_word_times(
        TEXT, "en", samples=speech_like([(0.3, 2.4)], 2.6), sampling_rate=RATE, subtitles=read_word_subtitles(path)
    )
    assert times.source == "subtitles"
    maria = times.words[2]
    assert maria.word == "Maria" and (maria.start, maria.end) == (0.90, 1.35)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (vtt([(0.0, 1.0, "We're meeting"), (1.0, 2.0, "Maria")]), "a cue holds 2 words"),
        ("this is not a subtitle file at all\n", "no cues"),
        (b"\xff\xfe\x00garbage", "cannot be read"),
    ],
)
def test_ordinary_or_broken_subtitle_files_are_no_timing_source(tmp_path: Path, content, reason: str) -> None:
    path = tmp_path / "clip.vtt"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    subtitles = read_word_subtitles(path)
    assert subtitles.cues is None and reason in (subtitles.reason or "")
    times = build_word_times(
        TEXT, "en", samples=speech_like([(0.3, 2.4)], 2.6), sampling_rate=RATE, subtitles=subtitles
    )
    assert times.source == "voiced"


@pytest.mark.parametrize(
    ("cues", "problem"),
    [
        ([(0.5, 0.9, "We're"), (0.2, 0.4, "meeting")], "before the cue ahead"),
        ([(0.5, 0.4, "We're")], "runs from"),
        ([(0.5, 9.0, "We're")], "past the clip"),
        ([(0.1, 0.2, "hello"), (0.2, 0.3, "there"), (0.3, 0.4, "friend")], "of the text's words"),
    ],
)
def test_subtitles_that_do_not_fit_the_clip_are_logged_and_the_next_source_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, cues, problem: str
) -> None:
    path = tmp_path / "clip.srt"
    path.write_text(srt(cues))
    with caplog.at_level(logging.WARNING, logger="audio_score.reference_word_times"):
        times = build_word_times(
            TEXT,
            "en",
            samples=speech_like([(0.3, 2.4)], 2.6),
            sampling_rate=RATE,
            subtitles=read_word_subtitles(path),
            clip="u/c",
        )
    assert times.source == "voiced"
    record = next(r for r in caplog.records if r.getMessage().startswith("per-word subtitles not used"))
    assert problem in record.reason  # type: ignore[attr-defined]


# --- model spans and the voiced fallback ----------------------------------------------------------------------


def test_model_spans_of_whitespace_words_become_spans_of_the_marked_words() -> None:
    # "um" is no word mark; "twenty five" is one (the normaliser reads it as 25).
    text = "Um, I have twenty five cats."
    spans = [(0.1, 0.3), (0.4, 0.5), (0.5, 0.7), (0.7, 1.0), (1.0, 1.3), (1.3, 1.8)]
    times = build_word_times(
        text,
        "en",
        samples=speech_like([(0.1, 1.8)], 2.0),
        sampling_rate=RATE,
        model_spans=spans,
        model_text=text,
        refine=False,
    )
    assert times.source == "model"
    assert [(w.word, w.start, w.end) for w in times.words] == [
        ("I", 0.4, 0.5),
        ("have", 0.5, 0.7),
        ("twenty five", 0.7, 1.3),
        ("cats", 1.3, 1.8),
    ]


def test_spans_of_another_text_are_not_used() -> None:
    times = build_word_times(
        "a b c",
        "en",
        samples=speech_like([(0.1, 0.9)], 1.0),
        sampling_rate=RATE,
        model_spans=[(0.0, 0.1)],
        model_text="something else",
    )
    assert times.source == "voiced"


def test_refining_moves_a_first_word_out_of_the_leading_silence_and_a_boundary_into_the_dip() -> None:
    samples = speech_like([(0.40, 0.80), (0.86, 1.40)], 1.6)
    refined = refine_with_voice([(0.0, 0.95), (0.95, 1.50)], samples, RATE)
    assert refined[0][0] == pytest.approx(0.40, abs=0.02)  # the voice starts there
    assert 0.80 <= refined[0][1] == refined[1][0] <= 0.87  # the quiet gap between the two bursts
    assert refined[1][1] == pytest.approx(1.40, abs=0.02)


def test_the_fallback_spreads_the_words_over_the_voiced_regions_by_length() -> None:
    samples = speech_like([(0.5, 1.0), (1.6, 2.1)], 2.5)
    regions = voiced_regions(samples, RATE)
    assert regions == [(pytest.approx(0.5, abs=0.02), pytest.approx(1.0, abs=0.02)),
                       (pytest.approx(1.6, abs=0.02), pytest.approx(2.1, abs=0.02))]  # fmt: skip
    times = build_word_times("aaaa bbbb cccc dddd", None, samples=samples, sampling_rate=RATE)
    assert times.source == "voiced"
    words = times.words
    # Equal lengths: two words in each second of voice, none in the pause, in order.
    assert words[0].start == pytest.approx(0.5, abs=0.02) and words[1].end == pytest.approx(1.0, abs=0.02)
    assert words[2].start == pytest.approx(1.6, abs=0.02) and words[3].end == pytest.approx(2.1, abs=0.02)
    assert all(a.end <= b.start + 1e-9 for a, b in itertools.pairwise(words))


def test_silence_and_an_empty_text_give_valid_times() -> None:
    silent = np.zeros(RATE, dtype=np.float32)
    assert build_word_times("", "en", samples=silent, sampling_rate=RATE).words == ()
    times = build_word_times("hello there", "en", samples=silent, sampling_rate=RATE)
    assert [w.word for w in times.words] == ["hello", "there"]
    assert all(0.0 <= w.start <= w.end <= 1.0 for w in times.words)


# --- entries: built by the cache Job, stored, read back, rebuilt when the source changes -------------------------


def build(ws: Workspace, capsys: pytest.CaptureFixture[str], *models: str) -> dict:
    capsys.readouterr()
    code = main(["cache-build", "--config", str(ws.config_path), "--no-progress", "--models", ",".join(models)])
    assert code == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def built_fresh(summary: dict) -> tuple[int, int]:
    return summary["models"][0]["built"], summary["models"][0]["fresh"]


def test_every_entry_holds_word_times_for_the_words_of_its_text(workspace: Workspace, capsys) -> None:
    workspace.clips[("video1", "clip2")].with_suffix(".txt").write_text("the cat sat on the mat\n")
    build(workspace, capsys, "whisper-tiny", "higgs-tiny")
    for key in ("whisper-tiny", "higgs-tiny"):
        cache = ReferenceCache(workspace.cache_dir, key)
        for uid, cid in cache.entries():
            entry = cache.read(uid, cid)
            assert entry is not None and entry.word_times is not None
            # The tiny checkpoints have no alignment heads and Higgs times nothing: the fallback.
            assert entry.word_times.source == "voiced" == entry.meta["word_times_source"]
            assert [w.word for w in entry.word_times.words] == [u.surface for u in units(entry.text, entry.language)]
            stored = WordTimes.from_json((cache.entry_dir(uid, cid) / WORD_TIMES).read_text())
            assert stored == entry.word_times
            assert entry.meta["fingerprint"]["word_times"] == WORD_TIMES_VERSION
    cache = ReferenceCache(workspace.cache_dir, "whisper-tiny")
    assert [w.word for w in cache.read("video1", "clip2").word_times.words] == ["the", "cat", "sat", "on", "the", "mat"]


def test_a_per_word_subtitle_file_rebuilds_the_entry_and_times_its_words(workspace: Workspace, capsys) -> None:
    clip = workspace.clips[("video1", "clip2")]
    clip.with_suffix(".txt").write_text("the cat sat\n")
    build(workspace, capsys, "whisper-tiny")
    cache = ReferenceCache(workspace.cache_dir, "whisper-tiny")
    assert cache.read("video1", "clip2").word_times.source == "voiced"
    # Added beside the clip: that entry (only) is stale, and its words get the cues' times.
    clip.with_suffix(".vtt").write_text(vtt([(0.1, 0.2, "the"), (0.2, 0.4, "cat"), (0.4, 0.6, "sat")]))
    assert built_fresh(build(workspace, capsys, "whisper-tiny")) == (1, 2)
    entry = cache.read("video1", "clip2")
    assert entry.word_times.source == "subtitles"
    assert [(w.word, w.start, w.end) for w in entry.word_times.words] == [
        ("the", 0.1, 0.2),
        ("cat", 0.2, 0.4),
        ("sat", 0.4, 0.6),
    ]
    assert entry.meta["source"]["word_subtitles"]["size"] == clip.with_suffix(".vtt").stat().st_size
    assert built_fresh(build(workspace, capsys, "whisper-tiny")) == (0, 3)
    # Edited into a broken one (a cue past the clip): rebuilt, logged, and the fallback used; never a failure.
    clip.with_suffix(".vtt").write_text(vtt([(0.1, 0.2, "the"), (0.2, 0.4, "cat"), (0.4, 60.0, "sat")]))
    assert built_fresh(build(workspace, capsys, "whisper-tiny")) == (1, 2)
    assert cache.read("video1", "clip2").word_times.source == "voiced"
    # Removed: stale again.
    clip.with_suffix(".vtt").unlink()
    assert built_fresh(build(workspace, capsys, "whisper-tiny")) == (1, 2)
    assert cache.read("video1", "clip2").meta["source"]["word_subtitles"] is None


def test_entries_without_word_times_or_with_damaged_ones_are_rebuilt(workspace: Workspace, capsys) -> None:
    build(workspace, capsys, "whisper-tiny")
    cache = ReferenceCache(workspace.cache_dir, "whisper-tiny")
    (cache.entry_dir("video1", "clip1") / WORD_TIMES).write_text('{"source": "voiced", "words": [["a", 2, 1]]}')
    assert cache.read("video1", "clip1") is None  # damaged: never served
    # An entry from before word times (its fingerprint lacks the version) is stale.
    meta_path = cache.entry_dir("video1", "clip2") / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["fingerprint"]["word_times"]
    meta_path.write_text(json.dumps(meta))
    assert built_fresh(build(workspace, capsys, "whisper-tiny")) == (1, 2)
    assert cache.read("video1", "clip2").meta["fingerprint"]["word_times"] == WORD_TIMES_VERSION
    # The damaged one is judged by its meta like any entry with a damaged file: the predictor, which reads it,
    # gets None and rebuilds it from its clip (references.py); it is never served.
    assert cache.read("video1", "clip1") is None


def test_the_predictors_reference_store_carries_the_word_times(workspace: Workspace) -> None:
    import asyncio

    from audio_score.backends import load_backend
    from predictors.references import ReferenceStore

    settings = load_settings(PredictorEnv, workspace.config_path, model_keys=["whisper-tiny"])
    backend = load_backend(settings.models[0], settings)

    async def on_model_thread(fn):  # type: ignore[no-untyped-def]
        return await asyncio.to_thread(fn)

    async def lookups() -> tuple:
        store = ReferenceStore(settings, backend, on_model_thread)
        built = await store.get("video1", "clip1")  # missing: built on demand
        store.memory.discard(("video1", "clip1"))
        read = await store.get("video1", "clip1")  # from disk
        return built, read

    try:
        built, read = asyncio.run(lookups())
    finally:
        backend.close()
    assert built.entry.word_times is not None and built.entry.word_times == read.entry.word_times
    assert built.nbytes > built.entry.embedding.nbytes + built.frames.nbytes


@pytest.fixture
def aligned_workspace(workspace: Workspace, tmp_path: Path) -> Workspace:
    """The workspace with its tiny Whisper copied and given alignment heads (random weights: any times, but the
    whole model path runs: forced alignment, transformers' token timestamps, mapping, refinement)."""
    config = json.loads(workspace.config_path.read_text())
    model = next(m for m in config["models"] if m["key"] == "whisper-tiny")
    copy = tmp_path / "whisper-aligned"
    shutil.copytree(model["model_id"], copy)
    generation = json.loads((copy / "generation_config.json").read_text())
    generation["alignment_heads"] = [[0, 0], [1, 1]]
    (copy / "generation_config.json").write_text(json.dumps(generation))
    model["model_id"] = str(copy)
    workspace.config_path.write_text(json.dumps(config))
    return workspace


def test_a_checkpoint_with_alignment_heads_times_the_words_itself(aligned_workspace: Workspace, capsys) -> None:
    clip = aligned_workspace.clips[("video1", "clip2")]
    clip.with_suffix(".txt").write_text("Um, the cat sat on twenty five mats.\n")
    build(aligned_workspace, capsys, "whisper-tiny")
    cache = ReferenceCache(aligned_workspace.cache_dir, "whisper-tiny")
    entry = cache.read("video1", "clip2")
    assert entry.word_times.source == "model"
    # The random-weight model hears any language in the clip; the words are those of the text in that language.
    assert [w.word for w in entry.word_times.words] == [u.surface for u in units(entry.text, entry.language)]
    assert len(entry.word_times.words) >= 6
    duration = entry.meta["duration_s"]
    assert all(0.0 <= w.start <= w.end <= duration for w in entry.word_times.words)
    assert all(a.start <= b.start for a, b in zip(entry.word_times.words, entry.word_times.words[1:], strict=False))
    # Clips without a text file are timed on their own transcript's words.
    other = cache.read("video1", "clip1")
    assert other.word_times.source == "model"
    assert [w.word for w in other.word_times.words] == [u.surface for u in units(other.transcript, other.language)]


def test_the_fingerprint_carries_the_word_times_version(workspace: Workspace) -> None:
    from audio_score.backends import load_backend

    settings = load_settings(JobEnv, workspace.config_path, model_keys=["whisper-tiny"])
    backend = load_backend(settings.models[0], settings)
    try:
        fingerprint = entry_fingerprint(backend, settings)
    finally:
        backend.close()
    assert fingerprint["word_times"] == WORD_TIMES_VERSION
    assert {k: v for k, v in fingerprint.items() if k not in ("word_times", "decoder")} == backend.fingerprint


# --- real weights: OpenAI's tiny.en against festival's own word times ------------------------------------------


@pytest.mark.real_voices
def test_real_tiny_en_times_festival_speech_within_60_ms_median(real_tiny_en: Path, tmp_path: Path) -> None:
    from audio_score.backends import load_backend
    from audio_score_tools.speech_timing import festival_available, festival_timed

    if not (festival_available("kal_diphone") and festival_available("cmu_us_slt_arctic_hts")):
        pytest.skip("festival and its kal_diphone and cmu_us_slt_arctic_hts voices are not installed")
    # The benchmark's clips (bench/bench_word_times.py): the English corpus sentences and the tuned-on set's
    # references (17), each read by two festival voices.
    data = Path(__file__).parent / "data"
    corpus = json.loads((data / "corpus/manifest.json").read_text())["sentences"].values()
    takes = json.loads((data / "speech/manifest.json").read_text())["takes"]
    texts = sorted({s["text"] for s in corpus if s["language"] == "en"})
    texts += sorted({t["text"] for t in takes if t["variant"] == "reference"})
    config = tmp_path / "config.json"
    model = {"key": "whisper-tiny-en", "type": "whisper", "model_id": str(real_tiny_en), "max_new_tokens": 48}
    config.write_text(json.dumps({"models": [model], "video_clip_dir": str(tmp_path), "cache_dir": str(tmp_path),
                                  "target_sampling_rate": RATE}))  # fmt: skip
    settings = load_settings(PredictorEnv, config)
    backend = load_backend(settings.models[0], settings)
    errors = []
    try:
        for text, voice in [(t, v) for t in texts for v in ("kal_diphone", "cmu_us_slt_arctic_hts")]:
            speech = festival_timed(text, voice, RATE)
            result = backend.embed_reference([speech.audio], [text])[0]
            times = build_word_times(
                text, "en", samples=speech.audio, sampling_rate=RATE, model_spans=result.word_spans, model_text=text
            )
            assert times.source == "model"
            assert len(times.words) == len(speech.words)
            for est, truth in zip(times.words, speech.words, strict=True):
                errors += [abs(est.start - truth.start), abs(est.end - truth.end)]
    finally:
        backend.close()
    print(f"median boundary error {np.median(errors) * 1000:.1f} ms over {len(errors)} boundaries")
    assert np.median(errors) <= 0.060
