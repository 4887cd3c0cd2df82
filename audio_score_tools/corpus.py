"""The committed quality corpus (``tests/data/corpus/``, made by ``scripts/make_corpus.py``): sentences read by
voices the score was not tuned on (Piper's neural voice for the references, flite, festival, espeak-ng English
variants, espeak-ng voices of other languages as accent proxies, partial readings, French and German sentences).
``bench/bench_quality.py`` measures the score on it; ``tests/test_corpus.py`` checks it matches its manifest."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

CORPUS_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "corpus"
#: The held-out corpus (``scripts/make_corpus.py --set heldout``): other sentences, English variants and accent
#: voices, made after the score's rules were chosen on the corpus above; same layout, English only.
HELDOUT_DIR = CORPUS_DIR.parent / "heldout"
#: What a take is: the reference clip, the same words by another voice (native English or, for the French and
#: German sentences, another variant of the language's voice), by a voice of another language (accented), with a
#: word left out (skip) or only the first half (half).
VARIANTS = ("reference", "native", "accented", "skip", "half")


@dataclass(frozen=True)
class Sentence:
    sid: str
    language: str
    text: str
    traits: tuple[str, ...]  # "digits", "contraction", "name"


@dataclass(frozen=True)
class CorpusTake:
    path: Path
    sentence: str
    language: str  # the sentence's language (not the voice's)
    text: str  # the words read (the reference's text, or the partial reading's)
    engine: str  # piper, flite, festival, espeak-ng
    voice: str
    variant: str  # one of VARIANTS
    uid: str | None = None
    cid: str | None = None
    #: what the synthesiser was given when it differs from ``text`` (an accent voice gets numbers in English words)
    spoken: str | None = None


@dataclass(frozen=True)
class Corpus:
    folder: Path
    sentences: dict[str, Sentence]
    takes: list[CorpusTake]
    synthesisers: dict[str, str]

    def references(self) -> dict[str, CorpusTake]:
        return {t.sentence: t for t in self.takes if t.variant == "reference"}


def load_corpus(folder: str | Path = CORPUS_DIR) -> Corpus:
    """The manifest with paths resolved; FileNotFoundError when the folder is not there, ValueError when the
    manifest names an unknown sentence or variant."""
    folder = Path(folder)
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} is missing: the corpus ships in the repository (tests/data/corpus)")
    data = json.loads(manifest.read_text())
    sentences = {
        sid: Sentence(sid=sid, language=s["language"], text=s["text"], traits=tuple(s["traits"]))
        for sid, s in data["sentences"].items()
    }
    takes: list[CorpusTake] = []
    for row in data["takes"]:
        row = dict(row)
        take = CorpusTake(path=folder / row.pop("file"), **row)
        if take.sentence not in sentences or take.variant not in VARIANTS:
            raise ValueError(
                f"{manifest}: take {take.path.name} has sentence {take.sentence!r}, variant {take.variant!r}"
            )
        takes.append(take)
    return Corpus(folder=folder, sentences=sentences, takes=takes, synthesisers=dict(data["synthesisers"]))
