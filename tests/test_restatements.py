"""Every rule two parts share is stated once, in :mod:`audio_score.contract`, and imported everywhere else.

The source of every part (the core, the predictor, the router, the cache Job, the tools, the benchmarks and the
scripts) is read with :mod:`ast` and searched for a value of the contract written again:

- a header name (the deadline header, the binary extension's length header) in any string, f-strings included:
  use the constant, so a renamed header cannot leave a part behind;
- two or more values of one vocabulary (audio similarity kinds, text similarity kinds, word ops) in one tuple,
  list, set, dict's keys or ``Literal[...]``: that is the list written again, and it would not grow with the
  contract's. A single value (``kind == "pooled"``) is a use, not a restatement: the vocabularies are
  ``Literal`` types, so mypy checks each one against the contract. (Input names are left out: ``uid`` and
  ``cid`` are also the router's form fields and every log line's keys, which are not the tensors.) A mapping
  that must give each value of a vocabulary something of its own (a symbol per word op) is allowed in
  :data:`ALLOWED`, with its reason and a test that it covers the vocabulary;
- a module-level constant or type the contract defines, assigned again (``INFERENCE_HEADER = ...``) instead of
  imported;
- a tensor described by hand in a message (``'audio' (FP32 [1, N])``): :meth:`TensorSpec.describe` writes it.

Docstrings are prose and are not searched; ``tests/`` is not searched either, since a test writes the contract's
values literally on purpose, to check the code against them. The chart's values schema (JSON, which cannot
import) is checked against the contract instead.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_origin

import pytest

from audio_score import contract

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = ROOT / "audio_score" / "contract.py"
#: The parts' source; tests/ is left out (see the module docstring).
SOURCE_DIRS = ("audio_score", "audio_score_tools", "predictors", "router", "cache-job", "bench", "scripts")
HEADERS = (contract.DEADLINE_HEADER, contract.INFERENCE_HEADER)
VOCABULARIES: dict[str, frozenset[str]] = {
    "AUDIO_SIMILARITY_KINDS": frozenset(contract.AUDIO_SIMILARITY_KINDS),
    "TEXT_SIMILARITY_KINDS": frozenset(contract.TEXT_SIMILARITY_KINDS),
    "WORD_OPS": frozenset(contract.WORD_OPS),
}
#: (path, vocabulary) -> why that file may list it.
ALLOWED = {
    ("audio_score_tools/client.py", "WORD_OPS"): "WORD_MARKS gives each op its --table symbol: a mapping over the "
    "vocabulary, which test_a_mapping_over_a_vocabulary_covers_it keeps complete",
}
#: ``'audio' (FP32 [1, N])``, ``'uid' (BYTES [1])``: what TensorSpec.describe() writes.
HAND_DESCRIBED = re.compile(r"'\w+' \((?:FP32|BYTES|BOOL) \[")
#: The contract's constants and types (a header, a pattern, a list of names, a vocabulary): a module assigning
#: one of these names defines the rule a second time. (Its TensorSpecs are left out: ``UID`` in a script that
#: makes clips is that clip's uid, not the tensor.)
CONTRACT_NAMES = frozenset(
    name
    for name, value in vars(contract).items()
    if not name.startswith("_")
    and (isinstance(value, str | tuple | frozenset | re.Pattern) or get_origin(value) is Literal)
)


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def sources() -> Iterator[Path]:
    for folder in SOURCE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path != CONTRACT and "__pycache__" not in path.parts:
                yield path


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the Constant nodes that are docstrings (of the module, a class or a function)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _strings(nodes: list[ast.expr | None]) -> list[str]:
    return [n.value for n in nodes if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _listed(node: ast.AST) -> list[str] | None:
    """The string constants a collection display or a ``Literal[...]`` lists; None for any other node."""
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return _strings(list(node.elts))
    if isinstance(node, ast.Dict):
        return _strings(list(node.keys))
    if isinstance(node, ast.Subscript):
        name = node.value.attr if isinstance(node.value, ast.Attribute) else getattr(node.value, "id", None)
        if name == "Literal":
            inner = node.slice
            return _strings(list(inner.elts) if isinstance(inner, ast.Tuple) else [inner])
    return None


def restatements(path: Path, text: str) -> list[Finding]:
    """What ``text`` (the source of ``path``) writes again of the contract."""
    tree = ast.parse(text)
    docstrings = _docstrings(tree)
    shown = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    findings = []
    for node in tree.body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        for target in targets:
            if isinstance(target, ast.Name) and target.id in CONTRACT_NAMES:
                findings.append(Finding(shown, node.lineno, f"{target.id} defined again (import it from the contract)"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            for header in HEADERS:
                if header in node.value:
                    findings.append(Finding(shown, node.lineno, f"header {header!r} written out"))
            if HAND_DESCRIBED.search(node.value):
                findings.append(Finding(shown, node.lineno, f"a tensor described by hand: {node.value!r}"))
        listed = _listed(node)
        if listed:
            for name, vocabulary in VOCABULARIES.items():
                if len(vocabulary.intersection(listed)) >= 2 and (shown, name) not in ALLOWED:
                    findings.append(Finding(shown, node.lineno, f"{name} listed again: {sorted(set(listed))}"))
    return list(dict.fromkeys(findings))  # a Literal's values are also its slice's tuple: found once


def test_no_part_restates_a_rule_of_the_contract() -> None:
    findings = [f for path in sources() for f in restatements(path, path.read_text())]
    assert not findings, "restated outside audio_score/contract.py:\n" + "\n".join(map(str, findings))


@pytest.mark.parametrize(
    ("source", "what"),
    [
        ('INFERENCE_HEADER = "x"\n', "INFERENCE_HEADER defined again"),
        ('headers = {"inference-header-content-length": "3"}\n', "header 'inference-header-content-length'"),
        ('raise ValueError(f"x-audio-score-deadline-ms: {raw!r}")\n', "header 'x-audio-score-deadline-ms'"),
        ('Kind = Literal["aligned", "pooled"]\n', "AUDIO_SIMILARITY_KINDS listed again"),
        ('KINDS = ("word", "char")\n', "TEXT_SIMILARITY_KINDS listed again"),
        ('MARKS = {"match": "+", "deletion": "-"}\n', "WORD_OPS listed again"),
        ("msg = \"expected 'audio' (FP32 [1, N])\"\n", "a tensor described by hand"),
    ],
)
def test_the_search_finds_each_kind_of_restatement(source: str, what: str) -> None:
    """The search is not vacuous: each kind of restatement, written into a module, is found."""
    found = restatements(ROOT / "example.py", source)
    assert [f.what for f in found if what in f.what], found


def test_a_mapping_over_a_vocabulary_covers_it() -> None:
    from audio_score_tools.client import WORD_MARKS

    assert set(WORD_MARKS) == contract.WORD_OPS


def test_single_values_and_docstrings_are_not_restatements() -> None:
    source = '"""Sends the x-audio-score-deadline-ms header."""\nif kind == "pooled":\n    op = "match"\n'
    assert restatements(ROOT / "example.py", source) == []


def test_the_chart_schema_offers_the_contracts_kinds() -> None:
    """The chart's values schema (JSON: it cannot import) lists the kinds config.json accepts, as the contract."""
    schema = json.loads((ROOT / "charts" / "audio-score" / "values.schema.json").read_text())
    config = schema["properties"]["config"]["properties"]
    assert set(config["audioSimilarity"]["enum"]) == {*contract.AUDIO_SIMILARITY_KINDS, None}
    assert set(config["textSimilarity"]["enum"]) == {*contract.TEXT_SIMILARITY_KINDS, None}


def test_the_repository_tracks_nothing_it_ignores() -> None:
    """No build artefact (a wheel, an archive, a cache) is committed: git tracks no file its .gitignore names."""
    try:
        tracked = subprocess.run(
            ["git", "ls-files", "--cached", "--ignored", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"not a git checkout: {exc}")
    assert tracked == []
