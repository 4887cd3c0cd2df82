"""Whisper: encoder hidden states pooled over the frames that hold audio, transcripts by batched ``generate``.

The encoder runs once per batch; its output feeds both the pooled embedding and ``generate`` (passed as
``encoder_outputs``), so transcription does not run the encoder a second time. Which arguments ``generate`` gets
(task/language or neither, and the token budget) is decided once per checkpoint at load
(:mod:`audio_score.backends.whisper_prompt`), so multilingual, English-only and legacy checkpoints all work.

Decoding is guarded (:mod:`audio_score.backends.guard`): one decoder step after ``<|startoftranscript|>`` gives
each take's no-speech probability and, on multilingual checkpoints, its language (as Whisper's own
``detect_language``), then one batched ``generate`` decodes every take in its own language (transformers 5's
Whisper ``generate`` takes a list of languages, one per row) with a :class:`GuardStop` criterion that stops each
row at its duration's token budget or as soon as it loops.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import StoppingCriteria

from audio_score.backends.base import FEATURE_VERSION, Backend, Features, ReferenceFeatures
from audio_score.backends.checkpoint import checkpoint_identity
from audio_score.backends.forced import relative_likelihood
from audio_score.backends.guard import (
    GUARD,
    GuardSettings,
    average_logprob,
    compression_ratio,
    find_loop,
    is_no_speech,
    token_budget,
)
from audio_score.backends.whisper_prompt import plan_decoding
from audio_score.env_settings import PartEnv
from audio_score.errors import CheckpointMismatch
from audio_score.settings import ModelSpec, Settings

log = logging.getLogger(__name__)

#: Encoder frames (20 ms) past a clip's audio that word timing still reads (see ``WhisperRunner.word_spans``).
_ALIGN_MARGIN = 25
#: (item, text) pairs per decoder pass of :meth:`WhisperRunner.forced_scores` (bounds the copies of the encoder
#: states: 16 x 1500 frames x d_model).
_FORCED_CHUNK = 16


def encoder_frames_with_audio(mel_frames: int, total: int, pool: int = 1) -> int:
    """Encoder frames covering ``mel_frames`` of real audio: Whisper's conv stem halves the rate, a pooler
    (Higgs/Qwen2-Audio) divides it again. At least one frame, at most the whole window."""
    frames = math.ceil(mel_frames / 2)
    frames = math.ceil(frames / pool)
    return max(1, min(total, frames))


def pool_frames(hidden: torch.Tensor, lengths: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per item: (mean over its first ``length`` frames as float32, those frames as float16)."""
    out = []
    for row, length in zip(hidden, lengths, strict=True):
        frames = row[:length].float()
        out.append((frames.mean(dim=0).cpu().numpy(), frames.to(torch.float16).cpu().numpy()))
    return out


@dataclass(frozen=True)
class Transcription:
    """One take's transcript and what the decoding guard (:mod:`audio_score.backends.guard`) found."""

    text: str
    no_speech: bool
    looped: bool
    language: str | None
    #: Evidence behind the flags (logged when debugging thresholds; ``avg_logprob`` also reaches Features).
    no_speech_prob: float | None
    avg_logprob: float
    compression_ratio: float
    tokens: int
    budget: int


class GuardStop(StoppingCriteria):
    """Stops each row of one batched ``generate`` at its own budget, or as soon as its tokens end in a loop.

    transformers' ``generate`` ands ``~criterion(input_ids, scores)`` (one bool per row) into its unfinished rows,
    so each take stops on its own while the others go on. ``loop_cut[i]`` records where row i's repeats began.
    """

    def __init__(self, prompt_len: int, budgets: Sequence[int], eos_token_id: int, guard: GuardSettings) -> None:
        self.prompt_len = prompt_len
        self.budgets = list(budgets)
        self.eos = eos_token_id
        self.guard = guard
        self.loop_cut: dict[int, int] = {}
        #: Rows stopped at their budget (their padding after it is end-of-text, but they did not end).
        self.at_budget: set[int] = set()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        generated = input_ids[:, self.prompt_len :].tolist()
        done = []
        for row, tokens in enumerate(generated):
            if row in self.loop_cut or row in self.at_budget:
                done.append(True)
            elif self.eos in tokens:
                done.append(False)  # it ended by itself; generate keeps it finished
            elif len(tokens) >= self.budgets[row]:
                self.at_budget.add(row)
                done.append(True)
            elif (cut := find_loop(tokens, self.guard)) is not None:
                self.loop_cut[row] = cut
                done.append(True)
            else:
                done.append(False)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]


class WhisperRunner:
    """A Whisper checkpoint on a device: log-mel, encoder and batched, guarded greedy transcription."""

    def __init__(
        self,
        ref: str,
        *,
        revision: str | None,
        device: str,
        language: str | None,
        max_new_tokens: int,
        guard: GuardSettings = GUARD,
    ) -> None:
        from transformers import AutoTokenizer, WhisperFeatureExtractor, WhisperForConditionalGeneration

        self.device = device
        self.guard = guard
        self.dtype = torch.float16 if device.startswith("cuda") else torch.float32
        # transformers' own default when no revision is pinned (its signatures take a str, not None).
        hub_revision = "main" if revision is None else revision
        self.feature_extractor = WhisperFeatureExtractor.from_pretrained(ref, revision=hub_revision)
        self.tokenizer = AutoTokenizer.from_pretrained(ref, revision=hub_revision)
        self.model = WhisperForConditionalGeneration.from_pretrained(ref, revision=hub_revision, dtype=self.dtype)
        # transformers wraps Module.to with functools.wraps, so its stub reads as unbound (self = the device).
        self.model.to(device).eval()  # type: ignore[arg-type]
        gen = self.model.generation_config
        self.plan = plan_decoding(gen, self.model.config, language=language, max_new_tokens=max_new_tokens)
        #: The checkpoint's languages, code -> token id (multilingual checkpoints only).
        self.lang_to_id: dict[str, int] = {}
        if self.plan.kind == "multilingual":
            self.lang_to_id = {token.strip("<|>"): int(i) for token, i in getattr(gen, "lang_to_id", {}).items()}
            if language is not None and language not in self.lang_to_id:
                raise CheckpointMismatch(
                    f"{ref}: language {language!r} is not one of this checkpoint's languages "
                    f"({', '.join(sorted(self.lang_to_id))}); fix 'language' in config.json or leave it out"
                )
        self.language = language if self.plan.kind == "multilingual" else None
        self.max_new_tokens = self.plan.max_new_tokens
        self.no_speech_token = self._no_speech_token()
        for note in self.plan.notes:
            log.warning("whisper decoding adjusted", extra={"checkpoint": ref, "kind": self.plan.kind, "note": note})
        log.info(
            "whisper decoding",
            extra={
                "checkpoint": ref,
                "kind": self.plan.kind,
                "generate_kwargs": self.plan.generate_kwargs,
                "prompt_tokens": len(self.plan.prompt),
                "max_new_tokens": self.max_new_tokens,
                "no_speech_token": self.no_speech_token,
            },
        )
        self.identity = checkpoint_identity(ref, revision, getattr(self.model.config, "_commit_hash", None))

    def _no_speech_token(self) -> int | None:
        """Whisper's no-speech token (``<|nospeech|>``, called ``<|nocaptions|>`` before large-v3), if it has one."""
        unk = self.tokenizer.unk_token_id
        for token in ("<|nospeech|>", "<|nocaptions|>"):
            token_id = self.tokenizer.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id != unk:
                return token_id
        return None

    @property
    def sampling_rate(self) -> int:
        return int(self.feature_extractor.sampling_rate)

    @property
    def english_only(self) -> bool:
        return self.plan.kind == "english-only"

    def log_mel(self, waveforms: Sequence[np.ndarray]) -> tuple[torch.Tensor, list[int]]:
        """Padded log-mel (computed on the model's device) and the number of mel frames holding audio."""
        batch = self.feature_extractor(
            [np.asarray(w, dtype=np.float32) for w in waveforms],
            sampling_rate=self.sampling_rate,
            return_tensors="pt",
            return_attention_mask=True,
            device=self.device,
        )
        mel_frames = batch["attention_mask"].sum(dim=-1).tolist()
        return batch["input_features"].to(self.device, self.dtype), [int(n) for n in mel_frames]

    def encode(self, input_features: torch.Tensor) -> torch.Tensor:
        return self.model.get_encoder()(input_features).last_hidden_state

    @torch.inference_mode()
    def first_step(self, encoder_hidden: torch.Tensor) -> tuple[list[float | None], list[str | None]]:
        """One decoder step after ``<|startoftranscript|>``, per item: the no-speech probability and the most
        likely language (multilingual checkpoints), as Whisper's ``DecodingTask`` and ``detect_language`` take
        them from these same logits."""
        from transformers.modeling_outputs import BaseModelOutput

        gen = self.model.generation_config
        start = torch.full((encoder_hidden.shape[0], 1), gen.decoder_start_token_id, device=encoder_hidden.device)
        logits = (
            self.model(
                encoder_outputs=BaseModelOutput(last_hidden_state=encoder_hidden),
                decoder_input_ids=start,
                use_cache=False,
            )
            .logits[:, -1]
            .float()
        )
        probs: list[float | None] = [None] * logits.shape[0]
        if self.no_speech_token is not None:
            probs = [float(p) for p in logits.softmax(dim=-1)[:, self.no_speech_token].tolist()]
        languages: list[str | None] = [None] * logits.shape[0]
        if self.lang_to_id:
            codes = list(self.lang_to_id)
            ids = torch.tensor([self.lang_to_id[c] for c in codes], device=logits.device)
            languages = [codes[i] for i in logits[:, ids].argmax(dim=-1).tolist()]
        return probs, languages

    @torch.inference_mode()
    def transcribe(
        self,
        encoder_hidden: torch.Tensor,
        durations_s: Sequence[float],
        max_new_tokens: int | None = None,
        languages: Sequence[str | None] | None = None,
    ) -> list[Transcription]:
        """Guarded greedy transcripts, one batched ``generate``: each take has its own budget (its duration's
        share, never above the checkpoint's; ``max_new_tokens`` may lower it for this call) and its own language
        (the model's ``language``, else ``languages[i]``, else the one detected in its audio)."""
        from transformers import StoppingCriteriaList
        from transformers.modeling_outputs import BaseModelOutput

        count = encoder_hidden.shape[0]
        cap = self.max_new_tokens if max_new_tokens is None else min(max_new_tokens, self.max_new_tokens)
        budgets = [token_budget(d, cap, self.guard) for d in durations_s]
        no_speech_probs, detected = self.first_step(encoder_hidden)
        kwargs = dict(self.plan.generate_kwargs)
        used: list[str | None] = ["en" if self.english_only else None] * count
        if self.lang_to_id:
            asked = list(languages or [None] * count)
            used = [self._pick_language(asked[i], detected[i]) for i in range(count)]
            kwargs["language"] = list(used)
        gen = self.model.generation_config
        stop = GuardStop(len(self.plan.prompt), budgets, int(gen.eos_token_id), self.guard)
        out = self.model.generate(
            encoder_outputs=BaseModelOutput(last_hidden_state=encoder_hidden),
            max_new_tokens=max(budgets),
            do_sample=False,
            num_beams=1,
            stopping_criteria=StoppingCriteriaList([stop]),
            return_dict_in_generate=True,
            output_scores=True,
            **kwargs,
        )
        steps = len(out.scores)
        chosen = out.sequences[:, out.sequences.shape[1] - steps :]
        generated = chosen.tolist()
        # Whisper's avg_logprob is over the log-softmax of the processed logits (suppressed tokens at -inf); only
        # the chosen token's is kept per step (not batch x steps x vocabulary).
        picked = [s.float().log_softmax(dim=-1).gather(1, chosen[:, i : i + 1]) for i, s in enumerate(out.scores)]
        logprobs = torch.cat(picked, dim=1).tolist() if steps else [[] for _ in range(count)]
        results = []
        for row in range(count):
            tokens = generated[row]
            stopped = row in stop.loop_cut or row in stop.at_budget
            # A stopped row is padded with end-of-text after its last token; only a row without a stop ended.
            ended = stop.eos in tokens and not stopped
            text_tokens = tokens[: tokens.index(stop.eos)] if stop.eos in tokens else tokens
            scored = len(text_tokens) + (1 if ended else 0)
            token_logprobs = logprobs[row][:scored]
            avg = average_logprob(token_logprobs, len(text_tokens))
            text = self._decode(text_tokens)
            ratio = compression_ratio(text)
            cut = stop.loop_cut.get(row)
            if cut is None and not ended:
                cut = find_loop(text_tokens, self.guard)
            if cut is not None:
                text = self._decode(text_tokens[:cut])
            # Ran to its duration's budget without ending (and not a warm-up's lowered cap): more text than
            # the audio can hold.
            over_budget = row in stop.at_budget and max_new_tokens is None
            looped = cut is not None or over_budget or ratio > self.guard.compression_ratio_threshold
            no_speech = is_no_speech(no_speech_probs[row], avg, len(text_tokens), durations_s[row], self.guard)
            results.append(
                Transcription(
                    text="" if no_speech else text,
                    no_speech=no_speech,
                    looped=looped and not no_speech,
                    language=used[row],
                    no_speech_prob=no_speech_probs[row],
                    avg_logprob=avg,
                    compression_ratio=ratio,
                    tokens=len(text_tokens),
                    budget=budgets[row],
                )
            )
        log.debug("whisper transcripts", extra={"transcriptions": [vars(r) for r in results]})
        return results

    @property
    def alignment_heads(self) -> list[list[int]] | None:
        """The checkpoint's cross-attention heads that track time ((layer, head) pairs; OpenAI's checkpoints carry
        them in their generation config), or None: this checkpoint cannot time words."""
        heads = getattr(self.model.generation_config, "alignment_heads", None)
        return [list(pair) for pair in heads] if heads else None

    @torch.inference_mode()
    def word_spans(
        self,
        encoder_hidden: torch.Tensor,
        mel_frames: Sequence[int],
        texts: Sequence[str],
        languages: Sequence[str | None],
    ) -> list[tuple[tuple[float, float], ...] | None]:
        """Per item: (start, end) in seconds of each whitespace-separated word of ``texts[i]`` in its audio, by
        forced alignment; None where it cannot be had (see below).

        The decoder reads the prompt and the text's tokens in one teacher-forced pass over the encoder states the
        transcript was decoded from; the checkpoint's alignment heads' cross-attention is turned into token times
        by transformers' own token-timestamp code (``_extract_token_timestamps``: normalise, median filter, average
        the heads, DTW), as ``generate(return_token_timestamps=True)`` does for its own tokens. Aligning the text
        itself (not the transcript) times every word of the reference text as written, heard right or not.
        ``generate``'s way was not used: it switches the shared model to eager attention for good (slower uploads
        afterwards) and times only the transcript. Here eager attention (the only one that returns attention
        weights) is set for this pass and restored after; the model runs on one worker thread, so no upload sees it.

        None: no alignment heads; a clip past Whisper's 30 s window (the model never heard the rest); a text that
        does not fit the decoder; a multilingual clip whose language is unknown.
        """
        from transformers.generation import GenerateEncoderDecoderOutput

        heads = self.alignment_heads
        window = int(self.feature_extractor.nb_max_frames)
        limit = int(self.model.config.max_target_positions)
        out: list[tuple[tuple[float, float], ...] | None] = []
        for row, text in enumerate(texts):
            words = text.split()
            prompt = self._prompt(languages[row])
            if not words:
                out.append(())
                continue
            if heads is None or prompt is None or mel_frames[row] >= window:
                out.append(None)
                continue
            pieces = [self.tokenizer.encode(" " + w, add_special_tokens=False) for w in words]
            ids = [*prompt, *(t for piece in pieces for t in piece)]
            if len(ids) + 1 > limit:
                out.append(None)
                continue
            # The eot at the end is not needed: the row that predicts it (the last text token's) closes the text.
            # Only the frames that hold audio (and 0.5 s past them) are read: DTW uses no others, and the
            # cross-attention over the rest of the 30 s window was most of this pass's cost (same times on the
            # festival benchmark).
            frames = min(
                encoder_hidden.shape[1],
                encoder_frames_with_audio(mel_frames[row], encoder_hidden.shape[1]) + _ALIGN_MARGIN,
            )
            sequence: torch.LongTensor = torch.tensor([ids], device=encoder_hidden.device)  # type: ignore[assignment]
            attention = self.model.config._attn_implementation
            self.model.config._attn_implementation = "eager"
            try:
                result = self.model.model.decoder(
                    input_ids=sequence,
                    encoder_hidden_states=encoder_hidden[row : row + 1, :frames],
                    output_attentions=True,
                    use_cache=False,
                )
            finally:
                self.model.config._attn_implementation = attention
            outputs = GenerateEncoderDecoderOutput(sequences=sequence, cross_attentions=(result.cross_attentions,))
            # Rows from the last prompt token on: row k predicts text token k, the last one the end of the text.
            first = len(prompt) - 1
            times = self.model._extract_token_timestamps(
                outputs, heads, num_frames=int(mel_frames[row]), num_input_ids=first
            )[0].tolist()
            spans = []
            at = first
            for piece in pieces:
                spans.append((float(times[at]), float(times[at + len(piece)])))
                at += len(piece)
            out.append(tuple(spans))
        return out

    @torch.inference_mode()
    def forced_scores(
        self,
        encoder_hidden: torch.Tensor,
        texts: Sequence[Sequence[str]],
        languages: Sequence[str | None],
    ) -> list[tuple[float | None, ...]]:
        """Per item, per text of ``texts[i]``: :func:`audio_score.backends.forced.relative_likelihood` of the text
        read through the decoder on item i's encoder states, after the prompt ``generate`` used for it (its
        ``languages[i]``). None for an empty text, one longer than the decoder takes, or an item whose language
        is unknown. Every (item, text) pair goes through the decoder in chunks of :data:`_FORCED_CHUNK` rows,
        over the whole encoder output, as the transcript was decoded."""
        from transformers.modeling_outputs import BaseModelOutput

        eot = int(self.model.generation_config.eos_token_id)
        limit = int(self.model.config.max_target_positions)
        out: list[list[float | None]] = [[None] * len(row_texts) for row_texts in texts]
        pairs: list[tuple[int, int, list[int], int]] = []  # item, text index, decoder input, prompt length
        for row, row_texts in enumerate(texts):
            prompt = self._prompt(languages[row])
            for k, text in enumerate(row_texts):
                ids = self.tokenizer.encode(" " + text.strip(), add_special_tokens=False) if text.strip() else []
                if prompt is None or not ids or len(prompt) + len(ids) + 1 > limit:
                    continue
                pairs.append((row, k, [*prompt, *ids, eot], len(prompt)))
        for start in range(0, len(pairs), _FORCED_CHUNK):
            chunk = pairs[start : start + _FORCED_CHUNK]
            width = max(len(seq) for _, _, seq, _ in chunk) - 1
            inputs = torch.full((len(chunk), width), eot, dtype=torch.long)
            targets = torch.full((len(chunk), width), eot, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.bool)
            for i, (_, _, seq, first) in enumerate(chunk):
                inputs[i, : len(seq) - 1] = torch.tensor(seq[:-1])
                targets[i, : len(seq) - 1] = torch.tensor(seq[1:])
                # Position p predicts token p + 1: the text's tokens and its end-of-text, not the prompt's.
                mask[i, first - 1 : len(seq) - 1] = True
            rows = torch.tensor([item for item, _, _, _ in chunk], device=encoder_hidden.device)
            # Right padding needs no attention mask: the decoder is causal, a position never sees the ones after.
            logits = self.model(
                encoder_outputs=BaseModelOutput(last_hidden_state=encoder_hidden.index_select(0, rows)),
                decoder_input_ids=inputs.to(encoder_hidden.device),
                use_cache=False,
            ).logits
            scores = relative_likelihood(logits, targets.to(logits.device), mask.to(logits.device))
            for (item, k, _, _), score in zip(chunk, scores, strict=True):
                out[item][k] = score
        return [tuple(row) for row in out]

    def _prompt(self, language: str | None) -> list[int] | None:
        """The decoder prompt ``generate`` used for a clip decoded in ``language`` (None: it cannot be told)."""
        tokens = []
        for token in self.plan.prompt:
            if token is None:
                if language is None or language not in self.lang_to_id:
                    return None
                token = self.lang_to_id[language]
            tokens.append(int(token))
        return tokens

    def _decode(self, tokens: list[int]) -> str:
        return str(self.tokenizer.decode(tokens, skip_special_tokens=True)).strip()

    def _pick_language(self, asked: str | None, detected: str | None) -> str | None:
        if self.language is not None:
            return self.language
        if asked is not None and asked in self.lang_to_id:
            return asked
        if asked is not None:
            log.warning("unknown language asked for; detecting it", extra={"language": asked})
        return detected


def transcribed_features(
    t: Transcription, embedding: np.ndarray, frames: np.ndarray, forced: tuple[float | None, ...] = ()
) -> Features:
    return Features(
        transcript=t.text,
        embedding=embedding,
        frames=frames,
        no_speech=t.no_speech,
        looped=t.looped,
        language=t.language,
        avg_logprob=t.avg_logprob,
        forced_scores=forced,
    )


def forced_for(
    runner: WhisperRunner,
    encoder_hidden: torch.Tensor,
    transcripts: Sequence[Transcription],
    forced_texts: Sequence[Sequence[str]] | None,
) -> list[tuple[float | None, ...]]:
    """``runner.forced_scores`` for the texts asked for, each item in the language its transcript was decoded in
    (no pass at all when none was asked for). A text that is exactly what the decoder wrote for the item scores
    1.0 without a pass: the decoder chose each of its tokens (the raw-logit reading can differ where generation
    suppressed a token or the guard cut the text before its end), so a clip against itself is 1.0 on every score.
    """
    if not forced_texts or not any(forced_texts):
        return [() for _ in transcripts]
    rest = [
        tuple(t for t in texts if t.strip() != tr.text.strip())
        for texts, tr in zip(forced_texts, transcripts, strict=True)
    ]
    read = runner.forced_scores(encoder_hidden, rest, [t.language for t in transcripts])
    # A text left out of ``rest`` is the item's own transcript: 1.0.
    return [
        tuple(dict(zip(left, scores, strict=True)).get(t, 1.0) for t in texts)
        for texts, left, scores in zip(forced_texts, rest, read, strict=True)
    ]


class WhisperBackend(Backend):
    """``type: whisper`` in config.json."""

    def __init__(self, spec: ModelSpec, settings: Settings[PartEnv], device: str) -> None:
        self.spec = spec
        self.device = device
        self.runner = WhisperRunner(
            settings.resolve_model_ref(spec.model_id),
            revision=spec.revision,
            device=device,
            language=spec.language,
            max_new_tokens=spec.max_new_tokens,
        )
        self.sampling_rate = self.runner.sampling_rate
        if self.sampling_rate != settings.config.target_sampling_rate:
            raise ValueError(
                f"the feature extractor expects {self.sampling_rate} Hz but target_sampling_rate is "
                f"{settings.config.target_sampling_rate}; set target_sampling_rate to {self.sampling_rate}"
            )
        self._fingerprint = {
            "type": "whisper",
            "model_id": spec.model_id,
            "revision": self.runner.identity,
            "language": spec.language,
            "max_new_tokens": spec.max_new_tokens,
            "guard": self.runner.guard.fingerprint(),
            "feature_version": FEATURE_VERSION,
        }

    @property
    def fingerprint(self) -> dict[str, Any]:
        return dict(self._fingerprint)

    @property
    def embedding_dim(self) -> int:
        return int(self.runner.model.config.d_model)

    @torch.inference_mode()
    def embed(
        self,
        waveforms: Sequence[np.ndarray],
        *,
        max_new_tokens: int | None = None,
        languages: Sequence[str | None] | None = None,
        forced_texts: Sequence[Sequence[str]] | None = None,
    ) -> list[Features]:
        if not waveforms:
            return []
        return self._embed(waveforms, max_new_tokens, languages, forced_texts)[0]

    @torch.inference_mode()
    def _embed(
        self,
        waveforms: Sequence[np.ndarray],
        max_new_tokens: int | None,
        languages: Sequence[str | None] | None,
        forced_texts: Sequence[Sequence[str]] | None = None,
    ) -> tuple[list[Features], torch.Tensor, list[int]]:
        """The features, and the encoder states and mel frames they came from (for word timing)."""
        features, mel_frames = self.runner.log_mel(waveforms)
        hidden = self.runner.encode(features)
        lengths = [encoder_frames_with_audio(n, hidden.shape[1]) for n in mel_frames]
        durations = [len(w) / self.sampling_rate for w in waveforms]
        transcripts = self.runner.transcribe(hidden, durations, max_new_tokens, languages)
        forced = forced_for(self.runner, hidden, transcripts, forced_texts)
        out = [
            transcribed_features(t, emb, frames, f)
            for t, (emb, frames), f in zip(transcripts, pool_frames(hidden, lengths), forced, strict=True)
        ]
        return out, hidden, mel_frames

    @torch.inference_mode()
    def embed_reference(self, waveforms: Sequence[np.ndarray], texts: Sequence[str | None]) -> list[ReferenceFeatures]:
        """:meth:`embed`, then the words of each clip's text timed on the same encoder states
        (:meth:`WhisperRunner.word_spans`): the encoder runs once."""
        if not waveforms:
            return []
        features, hidden, mel_frames = self._embed(waveforms, None, None)
        aligned = [t if t is not None else f.transcript for f, t in zip(features, texts, strict=True)]
        spans = self.runner.word_spans(hidden, mel_frames, aligned, [f.language for f in features])
        return [ReferenceFeatures(f, t, s) for f, t, s in zip(features, aligned, spans, strict=True)]

    def close(self) -> None:
        del self.runner
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
