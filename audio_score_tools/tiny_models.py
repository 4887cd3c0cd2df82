"""Tiny random-weight checkpoints in the real formats, for tests, the demo and benchmarks.

No hub download works offline, so these build what a user's real checkpoints look like on disk and are loaded
through exactly the same code: a Whisper checkpoint (``config.json``, ``model.safetensors``,
``generation_config.json``, ``preprocessor_config.json`` and the tokenizer files) and a Higgs-Audio-style
checkpoint (``config.json`` with ``audio_encoder_config``, safetensors shards holding ``audio_tower.*`` next to
language-model weights that must never be loaded). Whisper comes in the three generation-config kinds found on the
hub (see :data:`WHISPER_KINDS`), because transformers' ``generate`` accepts different arguments for each.
Random weights say nothing about speech: the scores they give only prove the plumbing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

WhisperKind = Literal["multilingual", "english", "legacy"]
#: ``multilingual``: like openai/whisper-* (``is_multilingual`` true, ``lang_to_id``, ``task_to_id``);
#: ``english``: like openai/whisper-*.en (``is_multilingual`` false, no ``lang_to_id``/``task_to_id``, the prompt
#: forced to start-of-transcript + no-timestamps); ``legacy``: a fine-tune saved before transformers 4.27 (no
#: ``is_multilingual``/``lang_to_id``/``task_to_id``/``no_timestamps_token_id``; language and task come from
#: ``forced_decoder_ids``). Their tokenizers are alike: the real ``.en`` tokenizers keep the language tokens too.
WHISPER_KINDS: tuple[WhisperKind, ...] = ("multilingual", "english", "legacy")

#: Sizes by name: ``tiny`` is far smaller than whisper-tiny (fast tests); ``whisper-tiny``/``whisper-small``
#: match those models' encoder/decoder shapes for benchmarks.
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"d_model": 64, "layers": 2, "heads": 2, "ffn": 128},
    "whisper-tiny": {"d_model": 384, "layers": 4, "heads": 6, "ffn": 1536},
    "whisper-small": {"d_model": 768, "layers": 12, "heads": 12, "ffn": 3072},
}
_READABLE_BYTES = {bytes([c]) for c in b"abcdefghijklmnopqrstuvwxyz "}
LANGUAGES = ("en", "es", "fr", "de", "it", "pt", "ja", "zh")


@dataclass(frozen=True)
class TinyModelSet:
    """Where a demo/test workspace's checkpoints were written."""

    whisper: Path
    higgs: Path


def _tokenizer():
    """A byte-level BPE Whisper tokenizer over the 256 byte symbols plus Whisper's special tokens."""
    from transformers import WhisperTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_symbols = bytes_to_unicode()
    tokenizer = WhisperTokenizer(vocab={byte_symbols[i]: i for i in range(256)}, merges=[])
    specials = [
        "<|startoftranscript|>",
        *(f"<|{lang}|>" for lang in LANGUAGES),
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nospeech|>",
        "<|notimestamps|>",
    ]
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    return tokenizer


def build_tiny_whisper(
    path: str | Path,
    *,
    size: str = "tiny",
    num_mel_bins: int = 80,
    seed: int = 0,
    init_std: float = 0.3,
    kind: WhisperKind = "multilingual",
    max_target_positions: int = 448,
) -> Path:
    """Save a random-weight Whisper checkpoint with its tokenizer and feature extractor to ``path``.

    ``init_std`` is far above a trained model's 0.02 so that greedy decoding depends on the audio: with tiny
    initial weights every input decodes to the same string and text similarity would prove nothing. ``kind``
    picks the generation config (:data:`WHISPER_KINDS`); ``max_target_positions`` is how many tokens the decoder
    holds, prompt included (448 in every OpenAI checkpoint).
    """
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )

    dims = SIZES[size]
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    eot, sot = ids("<|endoftext|>"), ids("<|startoftranscript|>")
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=num_mel_bins,
        d_model=dims["d_model"],
        encoder_layers=dims["layers"],
        decoder_layers=dims["layers"],
        encoder_attention_heads=dims["heads"],
        decoder_attention_heads=dims["heads"],
        encoder_ffn_dim=dims["ffn"],
        decoder_ffn_dim=dims["ffn"],
        max_source_positions=1500,
        max_target_positions=max_target_positions,
        init_std=init_std,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
        begin_suppress_tokens=None,
        suppress_tokens=None,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot,
        eos_token_id=eot,
        pad_token_id=eot,
        bos_token_id=eot,
        max_length=max_target_positions,
        # Random weights emit any byte; keeping to lower-case letters and spaces makes demo transcripts
        # readable and keeps every token a whole UTF-8 character. Special tokens (end-of-text included) are
        # suppressed too, so every transcript runs to max_new_tokens of text and depends on the audio.
        suppress_tokens=[i for i in range(len(tokenizer)) if i >= 256 or bytes([i]) not in _READABLE_BYTES],
        **_generation_fields(kind, ids),
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    WhisperFeatureExtractor(feature_size=num_mel_bins).save_pretrained(out)
    return out


def _generation_fields(kind: WhisperKind, ids: Any) -> dict[str, Any]:
    """The generation-config fields that tell the three kinds apart, as each kind's real checkpoints have them."""
    no_timestamps = ids("<|notimestamps|>")
    if kind == "multilingual":
        return {
            "lang_to_id": {f"<|{lang}|>": ids(f"<|{lang}|>") for lang in LANGUAGES},
            "task_to_id": {"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")},
            "no_timestamps_token_id": no_timestamps,
            "is_multilingual": True,
        }
    if kind == "english":
        return {
            "is_multilingual": False,
            "no_timestamps_token_id": no_timestamps,
            "forced_decoder_ids": [[1, no_timestamps]],
        }
    if kind == "legacy":
        return {"forced_decoder_ids": [[1, ids("<|en|>")], [2, ids("<|transcribe|>")], [3, no_timestamps]]}
    raise ValueError(f"unknown Whisper kind {kind!r}; one of {', '.join(WHISPER_KINDS)}")


def build_tiny_higgs(
    path: str | Path, *, size: str = "tiny", num_mel_bins: int = 80, seed: int = 1, with_tower: bool = True
) -> Path:
    """Save a Higgs-Audio-v2-style checkpoint: ``audio_tower.*`` + stand-in LM weights in two shards.

    The tower has the layout of transformers' ``Qwen2AudioEncoder`` (Whisper encoder + average pooler). The
    language-model shard is real safetensors data that the loader must skip (a test checks it is never read).
    ``with_tower=False`` writes a checkpoint without an audio tower, which must fail to load with a clear message.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen2AudioEncoder, Qwen2AudioEncoderConfig

    dims = SIZES[size]
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    encoder_config: dict[str, Any] = {
        "model_type": "higgs_audio_encoder",
        "num_mel_bins": num_mel_bins,
        "encoder_layers": dims["layers"],
        "encoder_attention_heads": dims["heads"],
        "encoder_ffn_dim": dims["ffn"],
        "d_model": dims["d_model"],
        "max_source_positions": 1500,
        "activation_function": "gelu",
        "init_std": 0.3,
    }
    config = {
        "architectures": ["HiggsAudioModel"],
        "model_type": "higgs_audio",
        "audio_encoder_config": encoder_config,
        "text_config": {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 1, "vocab_size": 64},
        "skip_audio_tower": not with_tower,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))

    torch.manual_seed(seed)
    lm_weights = {
        "embed_tokens.weight": torch.randn(64, 32),
        "layers.0.mlp.up_proj.weight": torch.randn(64, 32),
    }
    shards = {"model-00002-of-00002.safetensors": lm_weights}
    if with_tower:
        qwen_cfg = {k: v for k, v in encoder_config.items() if k != "model_type"}
        tower = Qwen2AudioEncoder(Qwen2AudioEncoderConfig(**qwen_cfg)).eval()
        tower_weights = {f"audio_tower.{k}": v.contiguous() for k, v in tower.state_dict().items()}
        shards["model-00001-of-00002.safetensors"] = tower_weights
    weight_map: dict[str, str] = {}
    for name, tensors in shards.items():
        save_file(tensors, str(out / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, name))
    index = {"metadata": {"total_size": 0}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return out


def build_tiny_model_set(root: str | Path, *, size: str = "tiny") -> TinyModelSet:
    """A Whisper checkpoint plus a Higgs-style one whose processor and transcriber are that Whisper."""
    root = Path(root)
    return TinyModelSet(
        whisper=build_tiny_whisper(root / f"whisper-{size}", size=size),
        higgs=build_tiny_higgs(root / f"higgs-{size}", size=size),
    )
