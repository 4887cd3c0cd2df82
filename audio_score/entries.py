"""Compute reference cache entries: decode a list of clips the way uploads are decoded, run them through a
backend in one batch, and write each entry atomically.

This is the one code path that makes cache entries. Two callers use it: the cache Job's command
(:mod:`cache_job.cli`, which adds clip discovery, shards, a progress bar and a summary) and the predictor, for a
missing or stale entry whose clip exists. It has no command-line concerns (no argparse, no tqdm), so the
predictor imports the core, not the Job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from audio_score.audio import audio_duration, decode_audio
from audio_score.cache import CacheEntry, ReferenceCache
from audio_score.clips import ClipRef, read_reference_text, source_info
from audio_score.env_settings import PartEnv
from audio_score.errors import AudioError
from audio_score.settings import Settings

if TYPE_CHECKING:
    from audio_score.backends import Backend

#: Reference clips may run longer than uploads; decoding stops here so a stray feature film cannot stall a
#: shard. Whisper-style models only see the first 30 s anyway.
MAX_CLIP_SECONDS = 600.0


@dataclass(frozen=True)
class Decoded:
    clip: ClipRef
    samples: np.ndarray | None
    source: dict[str, object] | None
    error: str | None
    #: The words spoken in the clip, from its text file (None: there is none).
    reference_text: str | None = None


def entry_fingerprint(backend: Backend, settings: Settings[PartEnv]) -> dict[str, Any]:
    """What an entry's features depend on: the model's fingerprint and the decoder that turned the clip into samples
    (pyav and pydub differ in the last bits, so an entry decoded by the other one is stale)."""
    return {**backend.fingerprint, "decoder": settings.config.decoder}


def decode_clip(clip: ClipRef, settings: Settings[PartEnv]) -> Decoded:
    """Decode a clip with the same decoder that uploads go through, and read its reference text if it has one;
    a failure is returned, not raised."""
    try:
        # Hash the file before decoding it: if it changes while we work, the entry records the older content
        # and the next run sees it as stale, never the other way round.
        source = source_info(clip.path)
        try:
            reference_text, text_info = read_reference_text(clip)
        except ValueError as exc:  # too large, not UTF-8
            return Decoded(clip, None, None, f"reference text: {exc}")
        source["text"] = text_info
        samples = decode_audio(
            clip.path,
            sampling_rate=settings.config.target_sampling_rate,
            max_seconds=MAX_CLIP_SECONDS,
            backend=settings.config.decoder,
        )
    except (AudioError, OSError) as exc:
        return Decoded(clip, None, None, f"{type(exc).__name__}: {exc}")
    return Decoded(clip, samples, source, None, reference_text)


def compute_entries(
    backend: Backend, cache: ReferenceCache, decoded: Sequence[Decoded], settings: Settings[PartEnv]
) -> list[CacheEntry]:
    """Run one batch of decoded clips through the backend and write their entries atomically.

    The Job calls it per batch, the predictor for one missing or stale entry; a clip that failed to decode
    (``samples`` is None) is skipped, its error is the caller's to report. Each clip's language is detected here,
    once (no ``languages`` given), and stored in its entry: uploads scored against it are decoded in it.
    """
    ready = [d for d in decoded if d.samples is not None]
    features = backend.embed([d.samples for d in ready])  # type: ignore[misc]
    entries = []
    for item, feats in zip(ready, features, strict=True):
        assert item.samples is not None
        entries.append(
            cache.write(
                item.clip,
                transcript=feats.transcript,
                embedding=feats.embedding,
                frames=feats.frames,
                fingerprint=entry_fingerprint(backend, settings),
                sampling_rate=settings.config.target_sampling_rate,
                duration_s=audio_duration(item.samples, settings.config.target_sampling_rate),
                source=item.source,
                reference_text=item.reference_text,
                language=feats.language,
                no_speech=feats.no_speech,
                looped=feats.looped,
            )
        )
    return entries
