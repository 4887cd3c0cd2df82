"""The cache Job's command, ``audio-score cache-build``: fill the reference cache.

Walks the clip folder, and for each selected model builds every entry that is missing or stale, batching clips
through the backend while the next batch decodes on a worker thread. Fresh entries are skipped, so a second run
builds nothing. ``--shard I/N`` (or ``--shards N`` with ``JOB_COMPLETION_INDEX``, as an Indexed Job sets it)
takes every N-th clip, so shards cover each clip exactly once and never write the same entry.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tqdm import tqdm

from audio_score.cache import ReferenceCache
from audio_score.clips import ClipRef, discover_clips, shard
from audio_score.entries import Decoded, compute_entries, decode_clip, entry_fingerprint
from audio_score.env_settings import JobEnv
from audio_score.errors import ConfigError
from audio_score.settings import JobSettings, load_settings

if TYPE_CHECKING:
    from audio_score.backends import Backend

log = logging.getLogger(__name__)


@dataclass
class BuildSummary:
    """What one run did for one model."""

    model: str
    built: int = 0
    fresh: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "model": self.model,
            "built": self.built,
            "fresh": self.fresh,
            "failed": len(self.failed),
            "seconds": round(self.seconds, 2),
            "clips_per_s": round(self.built / self.seconds, 2) if self.seconds > 0 else None,
        }


def _batches(items: list[ClipRef], size: int) -> Iterator[list[ClipRef]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def build_model(
    backend: Backend,
    clips: list[ClipRef],
    settings: JobSettings,
    *,
    force: bool = False,
    batch_size: int | None = None,
    progress: bool = True,
) -> BuildSummary:
    """Build the missing or stale entries of one model for ``clips``."""
    started = time.perf_counter()
    summary = BuildSummary(model=backend.key)
    cache = ReferenceCache(settings.config.cache_dir, backend.key)
    cache.sweep_temporaries()
    fingerprint = entry_fingerprint(backend, settings)
    rebuild_all = force_wins(force, settings)
    todo = []
    for clip in clips:
        if not rebuild_all and cache.is_fresh(cache.read_meta(clip.uid, clip.cid), fingerprint, clip):
            summary.fresh += 1
        else:
            todo.append(clip)
    log.info(
        "cache build started",
        extra={"model": backend.key, "clips": len(clips), "to_build": len(todo), "fresh": summary.fresh},
    )
    size = batch_size or settings.env.max_batch_size
    bar = tqdm(total=len(todo), desc=f"cache {backend.key}", unit="clip", disable=not progress, file=sys.stderr)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="decode") as pool:

        def submit(batch: list[ClipRef]) -> list[Future[Decoded]]:
            return [pool.submit(decode_clip, clip, settings) for clip in batch]

        batches = list(_batches(todo, size))
        pending = submit(batches[0]) if batches else []
        for index in range(len(batches)):
            decoded = [f.result() for f in pending]
            # Decode the next batch while the model works on this one.
            pending = submit(batches[index + 1]) if index + 1 < len(batches) else []
            for item in decoded:
                if item.error:
                    summary.failed.append((item.clip.name, item.error))
                    log.error(
                        "clip failed",
                        extra={"model": backend.key, "clip": item.clip.name, "error": item.error},
                    )
            try:
                entries = compute_entries(backend, cache, decoded, settings)
            except Exception as exc:  # a model error on one batch must not lose the rest of the run
                for item in decoded:
                    if item.samples is not None:
                        summary.failed.append((item.clip.name, f"{type(exc).__name__}: {exc}"))
                log.exception("batch failed", extra={"model": backend.key, "clips": [d.clip.name for d in decoded]})
                entries = []
            summary.built += len(entries)
            for entry in entries:
                log.debug(
                    "entry built",
                    extra={"model": backend.key, "clip": f"{entry.meta['uid']}/{entry.meta['cid']}"},
                )
            bar.update(len(decoded))
    bar.close()
    summary.seconds = time.perf_counter() - started
    log.info("cache build finished", extra=summary.as_dict())
    return summary


def force_wins(force: bool, settings: JobSettings) -> bool:
    """``--force`` rebuilds fresh entries unless ``AUDIO_SCORE_DISABLE_CACHE_FLUSH`` is set: the setting protects a
    cache an operator wants kept whoever starts the Job. When both are given, the log says which won."""
    if force and settings.env.disable_cache_flush:
        log.warning(
            "--force ignored: AUDIO_SCORE_DISABLE_CACHE_FLUSH is set, fresh entries are kept",
            extra={"force": True, "disable_cache_flush": True, "winner": "AUDIO_SCORE_DISABLE_CACHE_FLUSH"},
        )
        return False
    return force


def parse_shard(spec: str | None, shards: int | None, completion_index: int | None) -> tuple[int, int]:
    """``--shard I/N`` wins; else ``--shards N`` with the Indexed Job's completion index; else everything."""
    if spec:
        try:
            index_text, count_text = spec.split("/", 1)
            index, count = int(index_text), int(count_text)
        except ValueError:
            raise ConfigError(f"--shard {spec!r}: expected I/N, e.g. 0/4") from None
    elif shards:
        if completion_index is None:
            raise ConfigError("--shards N needs JOB_COMPLETION_INDEX (set by an Indexed Job) or use --shard I/N")
        index, count = completion_index, shards
    else:
        return 0, 1
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"shard {index}/{count}: need 0 <= I < N")
    return index, count


def register(commands: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    """The ``audio-score`` entry point (group ``audio_score.commands``) adds ``cache-build`` here."""
    parser = commands.add_parser(
        "cache-build", parents=parents, help="fill the reference cache for every clip and model", description=__doc__
    )
    add_arguments(parser)
    parser.set_defaults(run=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default=None, help="comma-separated model keys (default: all selected)")
    parser.add_argument("--shard", default=None, metavar="I/N", help="build only shard I of N (0-based)")
    parser.add_argument(
        "--shards", type=int, default=None, metavar="N", help="N shards, this one from JOB_COMPLETION_INDEX"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="rebuild fresh entries too (AUDIO_SCORE_DISABLE_CACHE_FLUSH=1 wins and keeps them; the log says so)",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="clips per backend call (default: max batch)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")


def run(args: argparse.Namespace) -> int:
    keys = [k.strip() for k in args.models.split(",") if k.strip()] if args.models else None
    settings = load_settings(JobEnv, args.config, model_keys=keys)
    index, count = parse_shard(args.shard, args.shards, settings.env.job_completion_index)
    clips = shard(discover_clips(settings.config.video_clip_dir), index, count)
    log.info(
        "clips found",
        extra={"clip_dir": str(settings.config.video_clip_dir), "shard": f"{index}/{count}", "clips": len(clips)},
    )
    from audio_score.backends import iter_backends
    from audio_score.threads import apply_torch_threads

    apply_torch_threads(settings.env)
    summaries: list[BuildSummary] = []
    skipped: dict[str, str] = {}
    # One model in memory at a time: each is built for every clip and closed before the next loads.
    for spec, backend, error in iter_backends(settings):
        if backend is None:
            skipped[spec.key] = error or "unknown error"
            continue
        try:
            summaries.append(
                build_model(
                    backend,
                    clips,
                    settings,
                    force=args.force,
                    batch_size=args.batch_size,
                    progress=not args.no_progress,
                )
            )
        finally:
            backend.close()
    if not summaries:
        reasons = "; ".join(f"{key}: {reason}" for key, reason in skipped.items())
        raise ConfigError(f"no model loaded ({reasons})")
    result = {
        "shard": f"{index}/{count}",
        "models": [s.as_dict() for s in summaries],
        "skipped_models": sorted(skipped),
        "failed_clips": sorted({name for s in summaries for name, _ in s.failed}),
    }
    print(json.dumps(result))
    return 1 if result["failed_clips"] or skipped else 0
