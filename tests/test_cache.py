"""The reference cache: layout, atomic entries, staleness, listing, and strict uid/cid parsing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from audio_score import cache as cache_mod
from audio_score import clips as clips_mod
from audio_score.cache import ReferenceCache
from audio_score.clips import discover_clips, find_clip, parse_clip_path, shard
from audio_score.contract import validate_id
from audio_score.errors import InvalidIdentifier

FP = {"type": "whisper", "model_id": "m", "revision": "r1", "feature_version": 1}


@pytest.fixture
def clip_dir(tmp_path: Path) -> Path:
    root = tmp_path / "clips"
    (root / "vid1").mkdir(parents=True)
    (root / "vid1" / "c1.mov").write_bytes(b"clip-one")
    (root / "vid1" / "c2.mov").write_bytes(b"clip-two")
    (root / "vid_2_c3.mov").write_bytes(b"clip-three")
    (root / "notes.txt").write_text("not a clip")
    (root / "noseparator.mov").write_bytes(b"x")  # flat layout needs uid_cid
    return root


def write_entry(cache: ReferenceCache, clip, transcript: str = "hello", fp: dict = FP):
    return cache.write(
        clip,
        transcript=transcript,
        embedding=np.arange(4, dtype=np.float32),
        frames=np.ones((3, 4), dtype=np.float32),
        fingerprint=fp,
        sampling_rate=16000,
        duration_s=1.0,
    )


@pytest.mark.parametrize("bad", ["..", ".", "../etc", "a/b", "a\\b", "", "x" * 129, ".hidden", "a b", "é", "a\x00"])
def test_traversal_style_ids_are_refused(bad: str) -> None:
    with pytest.raises(InvalidIdentifier):
        validate_id(bad, "uid")


def test_valid_ids_pass() -> None:
    for good in ["video1", "clip-01", "a.b_c", "X" * 128]:
        assert validate_id(good) == good


def test_entry_paths_refuse_traversal(tmp_path: Path) -> None:
    cache = ReferenceCache(tmp_path, "whisper-small")
    with pytest.raises(InvalidIdentifier):
        cache.entry_dir("..", "x")
    with pytest.raises(InvalidIdentifier):
        ReferenceCache(tmp_path, "../other")
    with pytest.raises(InvalidIdentifier):
        find_clip(tmp_path, "ok", "../../etc/passwd")


def test_both_layouts_parse_and_discovery_is_sorted(clip_dir: Path) -> None:
    clips = discover_clips(clip_dir)
    assert [(c.uid, c.cid) for c in clips] == [("vid1", "c1"), ("vid1", "c2"), ("vid_2", "c3")]
    assert parse_clip_path(clip_dir / "vid_2_c3.mov", clip_dir).uid == "vid_2"  # split at the last '_'
    with pytest.raises(InvalidIdentifier):
        parse_clip_path(clip_dir / "a" / "b" / "c.mov", clip_dir)


def test_find_clip_in_both_layouts(clip_dir: Path) -> None:
    assert find_clip(clip_dir, "vid1", "c2").path == clip_dir / "vid1" / "c2.mov"
    assert find_clip(clip_dir, "vid_2", "c3").path == clip_dir / "vid_2_c3.mov"
    assert find_clip(clip_dir, "vid1", "c9") is None


def test_shards_partition_the_clips() -> None:
    clips = list(range(10))
    parts = [shard(clips, i, 3) for i in range(3)]  # type: ignore[arg-type]
    assert sorted(x for p in parts for x in p) == clips
    assert all(set(a).isdisjoint(b) for i, a in enumerate(parts) for b in parts[i + 1 :])
    with pytest.raises(ValueError):
        shard(clips, 3, 3)  # type: ignore[arg-type]


def test_write_then_read_round_trip_with_meta(tmp_path: Path, clip_dir: Path) -> None:
    cache = ReferenceCache(tmp_path / "cache", "whisper-small")
    clip = find_clip(clip_dir, "vid1", "c1")
    write_entry(cache, clip)
    folder = tmp_path / "cache" / "whisper-small" / "vid1" / "c1"
    assert sorted(p.name for p in folder.iterdir()) == ["embedding.npy", "frames.npy", "meta.json", "transcript.txt"]
    entry = cache.read("vid1", "c1")
    assert entry.transcript == "hello"
    assert entry.embedding.dtype == np.float32 and entry.frames.dtype == np.float16
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["fingerprint"] == FP
    assert meta["source"]["size"] == len(b"clip-one")
    assert len(meta["source"]["sha256"]) == 64
    assert meta["sampling_rate"] == 16000 and meta["duration_s"] == 1.0
    assert list(cache.entries()) == [("vid1", "c1")]


def test_staleness(tmp_path: Path, clip_dir: Path) -> None:
    cache = ReferenceCache(tmp_path / "cache", "m")
    clip = find_clip(clip_dir, "vid1", "c1")
    write_entry(cache, clip)
    meta = cache.read_meta("vid1", "c1")
    assert cache.is_fresh(meta, FP, clip)
    assert not cache.is_fresh(meta, {**FP, "revision": "r2"}, clip)  # model changed
    # Touched but identical content: still fresh (hash compared).
    os.utime(clip.path, ns=(1, 1))
    assert cache.is_fresh(meta, FP, clip)
    # Same size, different bytes: stale.
    clip.path.write_bytes(b"clip-ONE")
    assert not cache.is_fresh(meta, FP, clip)
    clip.path.write_bytes(b"longer content")
    assert not cache.is_fresh(meta, FP, clip)
    assert not cache.is_fresh(None, FP, clip)


def test_replacing_an_entry_is_atomic_and_leaves_no_temporaries(tmp_path: Path, clip_dir: Path) -> None:
    cache = ReferenceCache(tmp_path / "cache", "m")
    clip = find_clip(clip_dir, "vid1", "c1")
    write_entry(cache, clip, transcript="old")
    write_entry(cache, clip, transcript="new")
    assert cache.read("vid1", "c1").transcript == "new"
    assert sorted(p.name for p in (cache.root / "vid1").iterdir()) == ["c1"]


def test_interrupted_write_leaves_no_partial_entry(
    tmp_path: Path, clip_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = ReferenceCache(tmp_path / "cache", "m")
    clip = find_clip(clip_dir, "vid1", "c1")
    write_entry(cache, clip, transcript="kept")
    clip2 = find_clip(clip_dir, "vid1", "c2")

    calls = {"n": 0}
    real_save = cache_mod._save_npy

    def crash_on_frames(path: Path, array: np.ndarray) -> None:
        calls["n"] += 1
        if path.name == "frames.npy":
            raise OSError("disk full (simulated)")
        real_save(path, array)

    monkeypatch.setattr(cache_mod, "_save_npy", crash_on_frames)
    with pytest.raises(OSError, match="disk full"):
        write_entry(cache, clip2)
    with pytest.raises(OSError, match="disk full"):
        write_entry(cache, clip, transcript="replacement")  # replacing an existing entry fails mid-way
    assert calls["n"] == 4
    assert cache.read("vid1", "c2") is None  # no half entry
    assert cache.read("vid1", "c1").transcript == "kept"  # the old entry is untouched
    assert sorted(p.name for p in (cache.root / "vid1").iterdir()) == ["c1"]


def test_folder_without_meta_is_not_an_entry_and_old_temporaries_are_swept(tmp_path: Path, clip_dir: Path) -> None:
    cache = ReferenceCache(tmp_path / "cache", "m")
    half = cache.root / "vid1" / ".tmp-c9-abc"
    half.mkdir(parents=True)
    (half / "transcript.txt").write_text("partial")
    (cache.root / "vid1" / "c8").mkdir()  # a crash before meta.json of an old writer
    assert list(cache.entries()) == []
    assert cache.read("vid1", "c8") is None
    os.utime(half, (0, 0))
    assert cache.sweep_temporaries() == 1
    assert not half.exists()


def test_corrupt_entry_reads_as_missing(tmp_path: Path, clip_dir: Path) -> None:
    cache = ReferenceCache(tmp_path / "cache", "m")
    clip = find_clip(clip_dir, "vid1", "c1")
    write_entry(cache, clip)
    (cache.entry_dir("vid1", "c1") / "embedding.npy").write_bytes(b"garbage")
    assert cache.read("vid1", "c1") is None


def test_reading_without_frames_skips_the_frames_file(tmp_path: Path, clip_dir: Path) -> None:
    cache = ReferenceCache(tmp_path / "cache", "m")
    write_entry(cache, find_clip(clip_dir, "vid1", "c1"))
    (cache.entry_dir("vid1", "c1") / "frames.npy").write_bytes(b"not read")
    slim = cache.read("vid1", "c1", with_frames=False)
    assert slim.frames.shape == (0, 4) and slim.transcript == "hello"
    np.testing.assert_array_equal(slim.embedding, np.arange(4, dtype=np.float32))
    assert cache.read("vid1", "c1") is None  # the full read does load (and so validates) the frames


# --- reference text beside a clip ------------------------------------------------------------------------------


def test_reference_text_is_found_beside_both_layouts(clip_dir: Path) -> None:
    nested = find_clip(clip_dir, "vid1", "c1")
    flat = find_clip(clip_dir, "vid", "2_c3")
    assert clips_mod.read_reference_text(nested) == (None, None)
    (clip_dir / "vid1" / "c1.txt").write_text("\ufeffThe cat  sat\non the mat.\n", encoding="utf-8")
    (clip_dir / "vid_2_c3.txt").write_text("Hello there", encoding="utf-8")
    text, info = clips_mod.read_reference_text(nested)
    assert text == "The cat sat on the mat."  # BOM dropped, whitespace squeezed
    assert info["path"] == str(clip_dir / "vid1" / "c1.txt") and len(info["sha256"]) == 64
    assert clips_mod.read_reference_text(flat)[0] == "Hello there"
    # Another clip's text is not this clip's.
    assert clips_mod.read_reference_text(find_clip(clip_dir, "vid1", "c2")) == (None, None)


def test_subtitles_give_their_words_only(clip_dir: Path) -> None:
    clip = find_clip(clip_dir, "vid1", "c1")
    (clip_dir / "vid1" / "c1.srt").write_text(
        "1\n00:00:00,000 --> 00:00:01,500\nThe cat sat\n\n2\n00:00:01,500 --> 00:00:03,000\n<i>on the mat.</i>\n"
    )
    assert clips_mod.read_reference_text(clip)[0] == "The cat sat on the mat."
    (clip_dir / "vid1" / "c1.srt").unlink()
    (clip_dir / "vid1" / "c1.vtt").write_text(
        "WEBVTT - lesson 1\n\nNOTE\nfor the teacher\n\ncue-1\n00:00.000 --> 00:01.500 align:start\n"
        "<v Anna>Good morning</v>\n\n00:01.500 --> 00:03.000\neveryone\n"
    )
    assert clips_mod.read_reference_text(clip)[0] == "Good morning everyone"
    # A plain .txt wins over subtitles.
    (clip_dir / "vid1" / "c1.txt").write_text("plain words")
    assert clips_mod.read_reference_text(clip)[0] == "plain words"


def test_unusable_reference_text_is_refused(clip_dir: Path) -> None:
    clip = find_clip(clip_dir, "vid1", "c1")
    (clip_dir / "vid1" / "c1.txt").write_bytes(b"\xff\xfe\x00 not utf-8")
    with pytest.raises(ValueError, match="not UTF-8"):
        clips_mod.read_reference_text(clip)
    (clip_dir / "vid1" / "c1.txt").write_bytes(b"a" * (clips_mod.MAX_TEXT_BYTES + 1))
    with pytest.raises(ValueError, match="limit"):
        clips_mod.read_reference_text(clip)
    (clip_dir / "vid1" / "c1.txt").unlink()
    (clip_dir / "vid1" / "c1.txt").mkdir()  # a folder is not a text file
    assert clips_mod.read_reference_text(clip) == (None, None)


def test_reference_text_is_stored_and_part_of_the_source_identity(tmp_path: Path, clip_dir: Path) -> None:
    cache = ReferenceCache(tmp_path / "cache", "m")
    clip = find_clip(clip_dir, "vid1", "c1")
    text_file = clip_dir / "vid1" / "c1.txt"
    text_file.write_text("the cat sat")
    write_entry(cache, clip, transcript="the cat sad")
    entry = cache.read("vid1", "c1")
    assert entry.reference_text == "the cat sat" and entry.text == "the cat sat"
    assert (cache.entry_dir("vid1", "c1") / "reference.txt").read_text() == "the cat sat"
    meta = cache.read_meta("vid1", "c1")
    assert meta["has_text"] is True and meta["source"]["text"]["size"] == len("the cat sat")
    assert cache.is_fresh(meta, FP, clip)
    os.utime(text_file, ns=(1, 1))  # touched, same words: still fresh
    assert cache.is_fresh(meta, FP, clip)
    text_file.write_text("the dog sat")  # same size, other words: stale
    assert not cache.is_fresh(meta, FP, clip)
    text_file.unlink()  # removed: stale
    assert not cache.is_fresh(meta, FP, clip)
    # An entry written without text is stale once a text file appears.
    write_entry(cache, clip)
    meta = cache.read_meta("vid1", "c1")
    assert cache.read("vid1", "c1").reference_text is None and cache.read("vid1", "c1").text == "hello"
    assert cache.is_fresh(meta, FP, clip)
    (clip_dir / "vid1" / "c1.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    assert not cache.is_fresh(meta, FP, clip)
    write_entry(cache, clip)  # now with the .srt; a .txt of the same bytes beside it takes over: stale
    meta = cache.read_meta("vid1", "c1")
    assert cache.is_fresh(meta, FP, clip)
    (clip_dir / "vid1" / "c1.txt").write_bytes((clip_dir / "vid1" / "c1.srt").read_bytes())
    assert not cache.is_fresh(meta, FP, clip)
    assert entry.nbytes > entry.embedding.nbytes + entry.frames.nbytes + len("the cat sad")


def test_entries_of_an_older_format_are_stale(tmp_path: Path, clip_dir: Path) -> None:
    cache = ReferenceCache(tmp_path / "cache", "m")
    clip = find_clip(clip_dir, "vid1", "c1")
    write_entry(cache, clip)
    meta = cache.read_meta("vid1", "c1")
    assert cache.is_fresh(meta, FP, clip)
    assert not cache.is_fresh({**meta, "format_version": 1}, FP, clip)
