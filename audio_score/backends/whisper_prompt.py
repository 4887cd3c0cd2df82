"""How to call Whisper's ``generate`` for one checkpoint, decided once when it loads.

transformers' ``WhisperForConditionalGeneration.generate`` accepts different arguments per kind of checkpoint
(``models/whisper/generation_whisper.py``, ``_set_language_and_task``):

- multilingual (``is_multilingual`` not false, with ``lang_to_id`` and ``task_to_id``): ``task`` and ``language``
  are accepted; we pass ``task="transcribe"`` and the configured language (none: detected per clip);
- English-only (``*.en``: ``is_multilingual`` false): any ``task`` or ``language`` raises "Cannot specify `task`
  or `language` for an English-only model", so neither is passed;
- legacy (saved before transformers 4.27: no ``task_to_id``/``lang_to_id``): either raises "The generation config
  is outdated", so neither is passed, and the checkpoint's own ``forced_decoder_ids`` pick language and task.

``generate`` also raises for every clip when the prompt it builds plus ``max_new_tokens`` exceeds the decoder's
``max_target_positions``, so the token budget is capped to what fits. The prompt length comes from
:func:`decoder_prompt`, which follows ``_retrieve_init_tokens`` for short-form decoding without timestamps or
prompt ids (the only way this project calls ``generate``); a test checks it against the real ``generate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

WhisperKind = Literal["multilingual", "english-only", "legacy"]
_ENGLISH = {"en", "english", "<|en|>"}


@dataclass(frozen=True)
class DecodingPlan:
    """What ``generate`` gets for this checkpoint; ``notes`` say what was ignored or capped, and why (logged)."""

    kind: WhisperKind
    generate_kwargs: dict[str, Any]
    #: The decoder prompt; ``None`` stands for the language token that ``generate`` detects per clip.
    prompt: tuple[int | None, ...]
    max_new_tokens: int
    notes: tuple[str, ...] = ()


def checkpoint_kind(generation_config: Any) -> WhisperKind:
    """Which arguments this checkpoint's ``generate`` accepts (see the module docstring)."""
    if getattr(generation_config, "is_multilingual", None) is False:
        return "english-only"
    if getattr(generation_config, "task_to_id", None) and getattr(generation_config, "lang_to_id", None):
        return "multilingual"
    return "legacy"


def decoder_prompt(
    generation_config: Any, model_config: Any, *, language: str | None, task: str | None
) -> tuple[int | None, ...]:
    """The tokens ``generate`` starts the decoder with, for short-form decoding without timestamps."""
    gen = generation_config
    tokens: list[int | None] = [gen.decoder_start_token_id]
    if task is None and language is None:
        forced = getattr(gen, "forced_decoder_ids", None) or getattr(model_config, "forced_decoder_ids", None)
        # transformers takes the run of forced ids at positions 1, 2, 3...; it raises on a gap.
        for position, (index, token) in enumerate(forced or [], start=1):
            if index != position:
                break
            tokens.append(token)
    language_undefined = len(tokens) <= 1 or tokens[1] is None
    if language is not None or (hasattr(gen, "lang_to_id") and language_undefined):
        if len(tokens) > 1:
            tokens[1] = None
        else:
            tokens.append(None)
    task_ids = set((getattr(gen, "task_to_id", None) or {}).values())
    if task is not None:
        tokens.append(gen.task_to_id[task])
    elif language is not None and task_ids and not task_ids.intersection(tokens):
        tokens.append(gen.task_to_id["transcribe"])
    no_timestamps = getattr(gen, "no_timestamps_token_id", None)
    wants_no_timestamps = hasattr(gen, "no_timestamps_token_id") and not getattr(gen, "return_timestamps", False)
    if wants_no_timestamps and tokens[-1] != no_timestamps:
        tokens.append(no_timestamps)
    return tuple(tokens)


def plan_decoding(
    generation_config: Any, model_config: Any, *, language: str | None, max_new_tokens: int
) -> DecodingPlan:
    """The ``generate`` arguments and token budget for this checkpoint.

    Raises ValueError when the decoder cannot hold even its prompt plus one token.
    """
    kind = checkpoint_kind(generation_config)
    notes: list[str] = []
    kwargs: dict[str, Any] = {}
    if kind == "multilingual":
        kwargs["task"] = "transcribe"
        if language:
            kwargs["language"] = language
    elif kind == "english-only":
        if language and language.lower() not in _ENGLISH:
            notes.append(
                f"language {language!r} is ignored: the checkpoint is English-only (is_multilingual is false), "
                "so it transcribes English only"
            )
    else:
        ignored = "task and language are" if language else "task is"
        notes.append(
            f"{ignored} not passed to generate: the checkpoint's generation config predates task_to_id/lang_to_id "
            "(saved before transformers 4.27), so its forced_decoder_ids decide language and task"
        )
    prompt = decoder_prompt(generation_config, model_config, language=kwargs.get("language"), task=kwargs.get("task"))
    room = int(model_config.max_target_positions) - len(prompt)
    if room < 1:
        raise ValueError(
            f"the decoder holds {model_config.max_target_positions} tokens but its prompt alone takes {len(prompt)}"
        )
    if max_new_tokens > room:
        notes.append(
            f"max_new_tokens capped from {max_new_tokens} to {room}: the decoder holds "
            f"{model_config.max_target_positions} tokens and generate's prompt takes {len(prompt)}"
        )
        max_new_tokens = room
    return DecodingPlan(kind, kwargs, prompt, max_new_tokens, tuple(notes))
