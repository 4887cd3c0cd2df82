"""The cache Job: ``audio-score cache-build`` over real .mov clips with tiny real-format models."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from audio_score.audio import decode_audio
from audio_score.backends import load_backend
from audio_score.cache import ReferenceCache
from audio_score.cli import main
from audio_score.env_settings import JobEnv
from audio_score.errors import ConfigError
from audio_score.scoring import compare
from audio_score.settings import load_settings
from audio_score_tools.crafted import matroska_pcm_bytes, tone_pcm16, wav_bytes, with_unknown_codec_id
from audio_score_tools.media import synth_speechlike, write_clip_mov
from audio_score_tools.workspace import Workspace
from cache_job.cli import parse_shard

ALL = {("video1", "clip1"), ("video1", "clip2"), ("video2", "clip1")}


def build(ws: Workspace, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(["cache-build", "--config", str(ws.config_path), "--no-progress", *args])
    out = capsys.readouterr().out.strip().splitlines()
    return code, json.loads(out[-1]) if out else {}


def by_model(summary: dict) -> dict[str, dict]:
    return {m["model"]: m for m in summary["models"]}


def entries(ws: Workspace, key: str) -> set[tuple[str, str]]:
    return set(ReferenceCache(ws.cache_dir, key).entries())


def test_builds_every_clip_for_every_model_then_nothing(workspace: Workspace, capsys) -> None:
    code, summary = build(workspace, capsys)
    assert code == 0
    assert {k: (m["built"], m["fresh"], m["failed"]) for k, m in by_model(summary).items()} == {
        "whisper-tiny": (3, 0, 0),
        "higgs-tiny": (3, 0, 0),
    }
    assert entries(workspace, "whisper-tiny") == entries(workspace, "higgs-tiny") == ALL
    code, summary = build(workspace, capsys)
    assert code == 0
    assert all((m["built"], m["fresh"]) == (0, 3) for m in summary["models"])


#: The product's guarantee (README "Scores", similarity.pooled_cosine): a reference clip uploaded as-is scores
#: 1.0 against its own entry within this, on any machine. Equal embeddings give exactly 1.0 (the cosine is written
#: so), but another machine's float32 kernels (or fp16 on a GPU) may give the batched embedding of the cache Job
#: last bits that differ from the single upload's.
SELF_SCORE_TOLERANCE = 1e-6


@pytest.fixture(params=[1, 2], ids=lambda n: f"{n}-threads")
def torch_threads(request: pytest.FixtureRequest) -> Iterator[int]:
    """Runs the test with torch on 1 and on 2 intra-op threads (matmul blocking may follow the thread count)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(previous)


@pytest.mark.parametrize("key", ["whisper-tiny", "higgs-tiny"])
def test_a_clip_scores_one_against_its_own_entry_and_less_against_another(
    workspace: Workspace, capsys, key, torch_threads
) -> None:
    """The cache Job embeds the clips in one batch, the upload path embeds the clip alone."""
    assert build(workspace, capsys, "--models", key)[0] == 0
    settings = load_settings(JobEnv, workspace.config_path, env={})
    backend = load_backend(settings.model(key), settings)
    cache = ReferenceCache(settings.config.cache_dir, key)
    # The upload path: the clip's bytes decoded by the same decoder, embedded by the same backend.
    upload = decode_audio(workspace.clips[("video1", "clip1")].read_bytes(), sampling_rate=16000)
    feats = backend.embed([upload])[0]
    own = cache.read("video1", "clip1")
    other = cache.read("video1", "clip2")
    same = _pooled_comparison(feats, own)
    assert same.audio_sim_score == pytest.approx(1.0, abs=SELF_SCORE_TOLERANCE)
    assert same.text_sim_score == 1.0
    assert same.sim_score == pytest.approx(1.0, abs=SELF_SCORE_TOLERANCE)
    diff = _pooled_comparison(feats, other)
    assert diff.audio_sim_score < 1.0 - 1e-3
    assert diff.sim_score < 1.0


def _pooled_comparison(feats, entry):  # type: ignore[no-untyped-def]
    """The upload against a cache entry as the predictor compares them, with the pooled cosine as the audio score
    (the guarantee above is the pooled one's)."""
    return compare(
        embedding=feats.embedding,
        frames=feats.frames,
        transcript=feats.transcript,
        reference_embedding=entry.embedding,
        reference_frames=entry.frames,
        reference_text=None,
        reference_transcript=entry.transcript,
        audio_similarity_kind="pooled",
    )


def test_a_changed_clip_is_rebuilt_and_only_it(workspace: Workspace, capsys) -> None:
    assert build(workspace, capsys, "--models", "whisper-tiny")[0] == 0
    cache = ReferenceCache(workspace.cache_dir, "whisper-tiny")
    before = cache.read("video1", "clip2")
    write_clip_mov(workspace.clips[("video1", "clip2")], synth_speechlike(1.0, 16000, seed=42), 16000)
    code, summary = build(workspace, capsys, "--models", "whisper-tiny")
    assert code == 0
    assert (summary["models"][0]["built"], summary["models"][0]["fresh"]) == (1, 2)
    after = cache.read("video1", "clip2")
    assert after.meta["source"]["sha256"] != before.meta["source"]["sha256"]
    assert after.meta["duration_s"] == pytest.approx(1.0, abs=0.05)


def test_a_clip_text_file_is_stored_and_editing_it_rebuilds_only_that_entry(workspace: Workspace, capsys) -> None:
    text_file = workspace.clips[("video1", "clip2")].with_suffix(".txt")
    text_file.write_text("the cat sat on the mat\n")
    assert build(workspace, capsys, "--models", "whisper-tiny")[0] == 0
    cache = ReferenceCache(workspace.cache_dir, "whisper-tiny")
    assert cache.read("video1", "clip2").reference_text == "the cat sat on the mat"
    assert cache.read("video1", "clip1").reference_text is None
    text_file.write_text("the dog sat on the mat\n")
    code, summary = build(workspace, capsys, "--models", "whisper-tiny")
    assert code == 0
    assert (summary["models"][0]["built"], summary["models"][0]["fresh"]) == (1, 2)
    assert cache.read("video1", "clip2").reference_text == "the dog sat on the mat"
    # A text file for a flat-layout clip (<uid>_<cid>.txt) counts too.
    workspace.clips[("video2", "clip1")].with_suffix(".txt").write_text("hello")
    code, summary = build(workspace, capsys, "--models", "whisper-tiny")
    assert (summary["models"][0]["built"], summary["models"][0]["fresh"]) == (1, 2)
    assert cache.read("video2", "clip1").reference_text == "hello"


def test_changing_the_decoder_makes_every_entry_stale(workspace: Workspace, capsys) -> None:
    # pyav and pydub differ in the last bits: an entry decoded by the other one would break the 1.0 self-score.
    assert build(workspace, capsys, "--models", "whisper-tiny")[0] == 0
    cache = ReferenceCache(workspace.cache_dir, "whisper-tiny")
    assert cache.read("video1", "clip1").meta["fingerprint"]["decoder"] == "pyav"
    config = json.loads(workspace.config_path.read_text())
    workspace.config_path.write_text(json.dumps({**config, "decoder": "pydub"}))
    code, summary = build(workspace, capsys, "--models", "whisper-tiny")
    assert code == 0
    assert (summary["models"][0]["built"], summary["models"][0]["fresh"]) == (3, 0)
    assert cache.read("video1", "clip1").meta["fingerprint"]["decoder"] == "pydub"


def test_a_corrupt_clip_is_reported_and_the_rest_built(workspace: Workspace, capsys) -> None:
    (workspace.clip_dir / "video3_broken.mov").write_bytes(b"\x00\x00\x00\x18ftypqt  not really a movie")
    code, summary = build(workspace, capsys, "--models", "whisper-tiny")
    assert code == 1
    assert summary["failed_clips"] == ["video3/broken"]
    assert summary["models"][0]["built"] == 3
    assert entries(workspace, "whisper-tiny") == ALL


def test_clips_with_impossible_headers_are_reported_and_skipped(workspace: Workspace, capsys, tmp_path) -> None:
    """Each crafted clip fails decoding with its own reason (no traceback, no lost run); the good ones build."""
    mkv = matroska_pcm_bytes(tmp_path / "a.mkv", synth_speechlike(0.5, 16000, seed=4))
    crafted = {
        "video4_rate.wav": wav_bytes(rate=2**31 - 1),
        "video4_nobits.wav": wav_bytes(bits=0),
        "video4_tag.wav": wav_bytes(format_tag=0x1234),
        "video4_tiny.wav": wav_bytes(tone_pcm16(1), rate=768000),
        "video4_codec.mkv": with_unknown_codec_id(mkv, b"A_PCM/INT/LIT"),
    }
    for name, data in crafted.items():
        (workspace.clip_dir / name).write_bytes(data)
    code, summary = build(workspace, capsys, "--models", "whisper-tiny")
    assert code == 1
    assert sorted(summary["failed_clips"]) == sorted(f"video4/{n.split('_')[1].split('.')[0]}" for n in crafted)
    assert summary["models"][0]["built"] == 3
    assert entries(workspace, "whisper-tiny") == ALL


def test_force_rebuilds_unless_flush_is_disabled(workspace: Workspace, capsys, monkeypatch, caplog) -> None:
    assert build(workspace, capsys, "--models", "whisper-tiny")[0] == 0
    meta_path = ReferenceCache(workspace.cache_dir, "whisper-tiny").entry_dir("video1", "clip1") / "meta.json"
    created = json.loads(meta_path.read_text())["created_at"]
    monkeypatch.setenv("AUDIO_SCORE_DISABLE_CACHE_FLUSH", "1")
    with caplog.at_level("WARNING", logger="cache_job.cli"):
        code, summary = build(workspace, capsys, "--models", "whisper-tiny", "--force")
    assert (code, summary["models"][0]["built"]) == (0, 0)
    # Both given: the Job says which won.
    (won,) = [r for r in caplog.records if r.name == "cache_job.cli" and r.levelname == "WARNING"]
    assert won.winner == "AUDIO_SCORE_DISABLE_CACHE_FLUSH" and "--force ignored" in won.getMessage()
    assert json.loads(meta_path.read_text())["created_at"] == created
    monkeypatch.delenv("AUDIO_SCORE_DISABLE_CACHE_FLUSH")
    code, summary = build(workspace, capsys, "--models", "whisper-tiny", "--force")
    assert (code, summary["models"][0]["built"]) == (0, 3)
    assert json.loads(meta_path.read_text())["created_at"] > created


def test_shards_cover_every_clip_once(workspace: Workspace, capsys, monkeypatch) -> None:
    _, s0 = build(workspace, capsys, "--models", "whisper-tiny", "--shard", "0/2")
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    _, s1 = build(workspace, capsys, "--models", "whisper-tiny", "--shards", "2")
    assert (s0["shard"], s1["shard"]) == ("0/2", "1/2")
    assert s0["models"][0]["built"] + s1["models"][0]["built"] == 3
    assert entries(workspace, "whisper-tiny") == ALL


def test_concurrent_shard_processes_share_one_cache(workspace: Workspace) -> None:
    cmd = [sys.executable, "-m", "audio_score", "cache-build", "--config", str(workspace.config_path)]
    procs = [
        subprocess.Popen(
            [*cmd, "--models", "whisper-tiny", "--no-progress", "--shard", f"{i}/2"], stdout=subprocess.PIPE
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    built = sum(json.loads(o.decode().strip().splitlines()[-1])["models"][0]["built"] for o in outs)
    assert built == 3
    cache = ReferenceCache(workspace.cache_dir, "whisper-tiny")
    assert set(cache.entries()) == ALL
    assert all(cache.read(u, c) is not None for u, c in ALL)
    assert not [p for p in cache.root.rglob(".*") if p.name.startswith((".tmp-", ".old-"))]


def test_bad_arguments_give_one_clear_error(workspace: Workspace, capsys) -> None:
    assert main(["cache-build", "--config", str(workspace.config_path), "--models", "nope"]) == 2
    assert "unknown model key(s) 'nope'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="JOB_COMPLETION_INDEX"):
        parse_shard(None, 4, None)
    with pytest.raises(ConfigError, match="expected I/N"):
        parse_shard("1-4", None, None)
    with pytest.raises(ConfigError, match="0 <= I < N"):
        parse_shard("4/4", None, None)
    assert parse_shard(None, None, None) == (0, 1)
