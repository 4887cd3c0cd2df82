"""The V2 contract is defined once (audio_score.contract): the codec, the router's response model and the id rule
follow it rather than keeping their own copies. The predictor's served metadata is checked against literal
values in test_predictor_server.py, so a change to the contract shows there too."""

from __future__ import annotations

import json

import numpy as np
import pytest

from audio_score import contract, v2
from audio_score.errors import InvalidIdentifier
from router.app import ScoreResponse

from conftest import REPO_ROOT


def test_the_router_answer_has_exactly_the_score_outputs() -> None:
    assert set(ScoreResponse.model_fields) == {"model", *contract.SCORE_REQUIRED, *contract.SCORE_OPTIONAL}


def test_the_codec_builds_the_inputs_of_the_contract() -> None:
    body, headers = v2.build_score_request(np.zeros(5, np.float32), uid="video1", cid="clip1")
    header = json.loads(body[: contract.parse_inference_header(headers[contract.INFERENCE_HEADER])])
    sent = [(i["name"], i["datatype"], len(i["shape"])) for i in header["inputs"]]
    assert sent == [(t.name, t.datatype, len(t.shape)) for t in contract.INPUTS]
    assert header["inputs"][0]["shape"] == [1, 5]


def test_embed_only_and_score_outputs_share_only_the_transcript() -> None:
    score = {t.name for t in contract.SCORE_OUTPUTS}
    embed = {t.name for t in contract.EMBED_OUTPUTS}
    assert score & embed == {"transcript"}
    assert [t.name for t in contract.ALL_OUTPUTS].count("transcript") == 1
    embedding = contract.EMBED_OUTPUTS[1]
    assert embedding.metadata(embedding=64) == {"name": "embedding", "datatype": "FP32", "shape": [1, 64]}


def test_the_id_rule_is_the_contracts() -> None:
    """The id rule is defined once, in the contract; the store, the clip finder, the predictor and the router use
    that one function (no part keeps a copy of the pattern or of the check)."""
    from audio_score import cache, clips
    from predictors import model, references
    from router import app, try_page
    from router import clips as router_clips

    assert contract.validate_id("clip-1.a_b", "cid") == "clip-1.a_b"
    for refused in ("..", ".", ".hidden", "a/b", "", "x" * 129):
        with pytest.raises(InvalidIdentifier):
            contract.validate_id(refused, "cid")
    for module in (cache, clips, model, references, app, router_clips, try_page):
        assert module.validate_id is contract.validate_id, module.__name__
    defining = [
        str(path.relative_to(REPO_ROOT))
        for folder in ("audio_score", "predictors", "router", "cache-job", "audio_score_tools")
        for path in (REPO_ROOT / folder).rglob("*.py")
        if "def validate_id(" in path.read_text(encoding="utf-8") or 're.compile(r"^[A-Za-z0-9._-]' in path.read_text()
    ]
    assert defining == ["audio_score/contract.py"], defining


def test_the_deadline_header_round_trips_and_a_bad_one_says_why() -> None:
    """The router writes the header and both the router and the predictor read it with these two functions."""
    assert contract.parse_deadline_header(contract.deadline_header_value(2.5)) == 2.5
    assert contract.deadline_header_value(0.0001) == "1"  # never 0, which the reader refuses
    assert contract.parse_deadline_header(None) is None and contract.parse_deadline_header("") is None
    for raw, reason in [("soon", "not a number"), ("0", "positive"), ("-5", "positive"), ("inf", "positive")]:
        with pytest.raises(ValueError, match=f"{contract.DEADLINE_HEADER}: '{raw}'.*{reason}"):
            contract.parse_deadline_header(raw)


def test_the_inference_header_is_a_byte_count() -> None:
    assert contract.parse_inference_header("12") == 12 and contract.parse_inference_header(None) is None
    for raw in ("abc", "-1", "1.5"):
        with pytest.raises(ValueError, match=f"{contract.INFERENCE_HEADER}: '{raw}' is not a byte count"):
            contract.parse_inference_header(raw)


def test_kinds_are_listed_in_messages_as_the_contract_has_them() -> None:
    assert contract.kinds_text(contract.AUDIO_SIMILARITY_KINDS) == "'aligned' or 'pooled'"
    assert contract.kinds_text(contract.TEXT_SIMILARITY_KINDS) == "'word', 'char', 'fuzzy_word' or 'phonetic_word'"
    assert contract.DEFAULT_AUDIO_SIMILARITY in contract.AUDIO_SIMILARITY_KINDS
    assert contract.DEFAULT_TEXT_SIMILARITY in contract.TEXT_SIMILARITY_KINDS
