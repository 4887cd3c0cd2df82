"""Every (reference, take) comparison of the quality benchmark as one row of numbers, for studying score rules
offline: ``dump`` runs the benchmark's takes through real Whisper once (features kept in ``--work``, as
``bench_quality.py`` keeps them) and writes each pair's halves, transcripts and the recogniser's confidence;
``report`` reads that file and scores it under each combination rule in :data:`RULES`, on a tuning part and a
held-out part of the references, without running a model again.

    python bench/quality_pairs.py dump --work DIR [--out PAIRS.json.gz]
    python bench/quality_pairs.py report bench/results/quality-pairs.json.gz [--rules "mean, fuzzy_word;audio alone"]

``bench/results/quality-pairs.json.gz`` is the dump of the committed corpus with real tiny.en (the figures in
``bench/results/quality-rules.md`` and docs/architecture.md "Scores" come from it).

The split is fixed before looking at any figure (``HELD_OUT``): a rule is chosen on the tuned-on espeak-ng set
and corpus sentences c01-c06, and reported on c07-c12. Each part is scored two ways: with only its own sentences'
readings as the wrong ones (the parts share nothing), and with every other sentence's (as the full benchmark).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from quality_metrics import auc, per_reference_worst_margin  # noqa: E402

from audio_score.contract import TEXT_SIMILARITY_KINDS  # noqa: E402

#: The references a rule is not chosen on (the tuning part is the rest: speech/* and corpus/c01-c06).
HELD_OUT = tuple(f"corpus/c{n:02d}" for n in range(7, 13))


def dump(work: Path, out: Path, corpus_dir: Path | None = None) -> None:
    """Run the benchmark's takes (tiny.en, full set; ``corpus_dir``: that corpus alone) and write one row per
    compared pair."""
    import bench_quality as bq

    from audio_score.audio import decode_audio
    from audio_score.backends import load_backend
    from audio_score.env_settings import PredictorEnv
    from audio_score.scoring import compare, forced_texts
    from audio_score.settings import load_settings
    from audio_score.textnorm import tokens
    from audio_score_tools.ct2_whisper import ensure_tiny_en
    from audio_score_tools.speech import build_speech_workspace

    model_dir = ensure_tiny_en(work / "models")
    workspace = build_speech_workspace(work / "workspace-tiny.en", model_dir)
    settings = load_settings(PredictorEnv, workspace.config_path, env={})

    def decode(path: Path) -> Any:
        return decode_audio(path, sampling_rate=bq.RATE, max_seconds=settings.config.max_audio_seconds)

    references, takes = bq.build(decode, english_only=True, quick=False, corpus_dir=corpus_dir)
    cache_path = work / f"features-tiny.en-{bq.features_digest(model_dir)}.pkl"
    backend = load_backend(settings.models[0], settings)
    try:
        bq.embed_all(backend, references, takes, forced=False, log=print, cache_path=cache_path)
    finally:
        backend.close()
    rows = []
    for ref in references:
        rf = ref.take.features[None]
        for take in takes:
            right = take.sentence == ref.key and take.group != "reference"
            relation = "right" if right else "wrong" if bq.is_wrong(take, ref) else None
            if take is ref.take:
                relation = "self"
            elif take.group == "nospeech":
                relation = "nospeech"
            if relation is None:
                continue
            f = take.features[None]
            c = compare(
                embedding=f.embedding,
                frames=f.frames,
                transcript=f.transcript,
                reference_embedding=rf.embedding,
                reference_frames=rf.frames,
                reference_text=ref.text,
                reference_transcript=rf.transcript,
                no_speech=f.no_speech,
                looped=f.looped,
                forced_scores=[take.forced[None].get(t) for t in forced_texts(ref.text, rf.transcript)],
            )
            rows.append(
                {
                    "reference": ref.key,
                    "take": take.name,
                    "label": bq.label(take),
                    "relation": relation,
                    "audio_aligned": c.audio_aligned_sim_score,
                    "audio_pooled": c.audio_pooled_sim_score,
                    "word_accuracy": c.word_accuracy,
                    "text_sim": c.text_sim_score,
                    "text_forced": c.text_forced_score,
                    "sim": c.sim_score,
                    # Whether the transcript is reliable (compare's rule before any forced score stands in).
                    "text_counted": not f.looped and bool(tokens(f.transcript)),
                    "no_speech": f.no_speech,
                    "looped": f.looped,
                    "avg_logprob": f.avg_logprob,
                    "transcript": f.transcript,
                    "reference_text": ref.text,
                    "reference_transcript": rf.transcript,
                    "reference_avg_logprob": rf.avg_logprob,
                }
            )
    text = json.dumps(rows, separators=(",", ":")) + "\n"
    out.write_bytes(gzip.compress(text.encode(), mtime=0) if out.suffix == ".gz" else text.encode())
    print(f"{len(rows)} pairs -> {out}")


def load_pairs(path: Path) -> list[dict[str, Any]]:
    raw = path.read_bytes()
    return list(json.loads(gzip.decompress(raw) if path.suffix == ".gz" else raw))


Rule = Callable[[dict[str, Any]], float]
_TEXT: dict[tuple[str, str, str | None, str, bool], float] = {}


def _text(row: dict[str, Any], kind: str, transcript_credit: bool = True) -> float:
    """The text half as compare computes it (English), with the product's own text similarity of ``kind``:
    the larger of the score against the reference text and against the reference transcript, or (without
    ``transcript_credit``) against the text alone."""
    from audio_score.similarity import text_similarity

    key = (row["transcript"], row["reference_transcript"], row["reference_text"], kind, transcript_credit)
    if key not in _TEXT:
        text = row["reference_text"] if row["reference_text"] is not None else row["reference_transcript"]
        score = text_similarity(row["transcript"], text, kind)  # type: ignore[arg-type]
        if transcript_credit:
            score = max(score, text_similarity(row["transcript"], row["reference_transcript"], kind))  # type: ignore[arg-type]
        _TEXT[key] = score
    return _TEXT[key]


def _guarded(rule: Rule) -> Rule:
    """The decoder's verdicts as compare applies them: no speech 0, unreliable text -> audio alone."""

    def scored(row: dict[str, Any]) -> float:
        if row["no_speech"]:
            return 0.0
        if not row["text_counted"]:
            return float(row["audio_aligned"])
        return rule(row)

    return scored


def confidence(row: dict[str, Any]) -> float:
    """exp(avg_logprob): the geometric mean of the probabilities the recogniser gave its transcript's tokens."""
    lp = row["avg_logprob"]
    return 1.0 if lp is None else math.exp(min(0.0, lp))


def _mean(kind: str, transcript_credit: bool = True) -> Rule:
    """compare's sim_score: the mean of the aligned audio half and the text half of ``kind``."""
    return _guarded(lambda r: (r["audio_aligned"] + _text(r, kind, transcript_credit)) / 2)


def _confidence_weighted(kind: str) -> Rule:
    """The text half weighted by the recogniser's confidence: (audio + c * text) / (1 + c), c = exp(avg_logprob)."""
    return _guarded(lambda r: (r["audio_aligned"] + confidence(r) * _text(r, kind)) / (1 + confidence(r)))


def _gated(kind: str, bound: float = -1.0) -> Rule:
    """Whisper's own "decoding failed" bound (transcribe's logprob_threshold, -1.0): below it, audio alone."""

    def rule(r: dict[str, Any]) -> float:
        return (r["audio_aligned"] + _text(r, kind)) / 2 if r["avg_logprob"] >= bound else r["audio_aligned"]

    return _guarded(rule)


def _with_forced(kind: str) -> Rule:
    """The product's default since this study: the text half is the mean of the transcript similarity of ``kind``
    and the forced reading's score (:mod:`audio_score.backends.forced`; ``text_forced`` in the dump)."""

    def rule(r: dict[str, Any]) -> float:
        forced = r.get("text_forced")
        if r["no_speech"]:
            return 0.0
        if not r["text_counted"]:  # the transcript is unreliable: the forced score alone, if any
            return r["audio_aligned"] if forced is None else (r["audio_aligned"] + forced) / 2
        if forced is None:
            return (r["audio_aligned"] + _text(r, kind)) / 2
        return (r["audio_aligned"] + (_text(r, kind) + forced) / 2) / 2

    return rule


#: The combinations compared. ``fuzzy_word`` was the default before the first study, ``phonetic_word`` after it;
#: the forced reading's mean (``mean, (phonetic_word + forced reading) / 2``) is the product's since the second.
RULES: dict[str, Rule] = {
    "mean, fuzzy_word": _mean("fuzzy_word"),
    "mean, fuzzy_word, no reference-transcript credit": _mean("fuzzy_word", transcript_credit=False),
    "mean, char": _mean("char"),
    "audio alone": _guarded(lambda r: r["audio_aligned"]),
    "text alone, fuzzy_word": _guarded(lambda r: _text(r, "fuzzy_word")),
    "confidence-weighted, fuzzy_word": _confidence_weighted("fuzzy_word"),
    "whisper's -1.0 gate, fuzzy_word": _gated("fuzzy_word"),
    "mean, phonetic_word": _mean("phonetic_word"),
    "text alone, phonetic_word": _guarded(lambda r: _text(r, "phonetic_word")),
    "confidence-weighted, phonetic_word": _confidence_weighted("phonetic_word"),
    "forced reading alone": lambda r: 0.0 if r["no_speech"] else r.get("text_forced") or 0.0,
    "mean, (phonetic_word + forced reading) / 2": _with_forced("phonetic_word"),
    "the product's sim_score (as dumped)": lambda r: r["sim"],
}


def dominated(rows: list[dict[str, Any]], kind: str) -> dict[str, int]:
    """Per reference: accented right readings with a wrong reading at least as high on both halves (audio, and
    text as sim_score counts it: audio again when the text is not counted). No rule that rises with both halves
    can put such a reading above that wrong one: its margin stays below 0 whatever the weights."""
    out: dict[str, int] = {}
    for ref in sorted({r["reference"] for r in rows}):
        mine = [r for r in rows if r["reference"] == ref]
        halves = {
            id(r): (r["audio_aligned"], _text(r, kind) if r["text_counted"] else r["audio_aligned"]) for r in mine
        }
        right = [r for r in mine if r["relation"] == "right" and r["label"] == "accented"]
        wrong = [r for r in mine if r["relation"] == "wrong"]
        count = sum(
            any(halves[id(w)][0] >= halves[id(a)][0] and halves[id(w)][1] >= halves[id(a)][1] for w in wrong)
            for a in right
        )
        if count:
            out[ref] = count
    return out


def metrics(rows: list[dict[str, Any]], rule: Rule, refs: set[str], wrong_from: set[str] | None) -> dict[str, Any]:
    """Per group: AUC vs the wrong readings and the worst per-reference margin, over ``refs``; wrong readings only
    of sentences in ``wrong_from`` (None: every wrong reading)."""
    right: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    wrong: dict[str, list[float]] = defaultdict(list)
    nospeech: list[float] = []
    selfs: list[float] = []
    for row in rows:
        if row["reference"] not in refs:
            continue
        v = rule(row)
        if row["relation"] == "right":
            right[row["label"]][row["reference"]].append(v)
        elif row["relation"] == "wrong":
            sentence = "/".join(row["take"].split("/")[:2])
            if wrong_from is None or sentence in wrong_from:
                wrong[row["reference"]].append(v)
        elif row["relation"] == "nospeech":
            nospeech.append(v)
        else:
            selfs.append(v)
    out: dict[str, Any] = {}
    for group, per_ref in right.items():
        pos = [v for vs in per_ref.values() for v in vs]
        neg = [v for r in per_ref for v in wrong.get(r, [])]
        if not neg:
            continue
        margin, worst = per_reference_worst_margin(per_ref, wrong)
        out[group] = {"n": len(pos), "auc": auc(pos, neg), "margin": margin, "worst": worst}
    natives = [v for g, per in right.items() if g.startswith("native") for vs in per.values() for v in vs]
    out["no speech max"] = max(nospeech) if nospeech else None
    out["lowest native"] = min(natives) if natives else None
    out["self min"] = min(selfs) if selfs else None
    return out


def report(pairs: Path, names: list[str]) -> str:
    rows = load_pairs(pairs)
    refs = {r["reference"] for r in rows}
    held = {r for r in refs if r in HELD_OUT}
    # Another corpus (``dump --corpus``) has no split of its own: all of it is held out.
    parts = {"tuning": refs - held, "held-out": held, "all": refs} if held else {"all": refs}
    lines = []
    for name in names:
        rule = RULES[name]
        lines.append(f"## {name}")
        lines.append("    part     wrongs     group AUC/worst margin(reference)")
        for part, members in parts.items():
            if not members:  # another corpus (--corpus): no tuning/held-out split of its own
                continue
            for wrong_label, wrong_from in (("own wrongs", members), ("all wrongs", None)):
                if part == "all" and wrong_label == "own wrongs":
                    continue
                m = metrics(rows, rule, members, wrong_from)
                groups = ("native, speech", "native, corpus", "accented")
                cells = [
                    f"{g.split(', ')[-1]} {m[g]['auc']:.3f}/{m[g]['margin']:+.3f}({m[g]['worst'].split('/')[-1]})"
                    for g in groups
                    if g in m
                ]
                extra = f"nospeech {m['no speech max']:.3f} < native {m['lowest native']:.3f}; self {m['self min']:.4f}"
                lines.append(f"    {part:8} {wrong_label:10} " + "  ".join(cells) + "  " + extra)
    lines.append("## accented readings below a wrong reading on both halves (per reference)")
    for kind in TEXT_SIMILARITY_KINDS:
        lines.append(f"    {kind}: {json.dumps(dominated(rows, kind))}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump")
    d.add_argument("--work", type=Path, required=True)
    d.add_argument("--out", type=Path, default=None)
    d.add_argument("--corpus", type=Path, default=None, help="that corpus alone (e.g. tests/data/heldout)")
    r = sub.add_parser("report")
    r.add_argument("pairs", type=Path)
    r.add_argument("--rules", default=None, help="rule names, separated by ';' (default: all)")
    r.add_argument("--out", type=Path, default=None, help="also write the report as markdown here")
    args = parser.parse_args(argv)
    if args.command == "dump":
        dump(args.work, args.out or args.work / "pairs.json.gz", args.corpus.resolve() if args.corpus else None)
    else:
        text = report(args.pairs, args.rules.split(";") if args.rules else list(RULES))
        print(text)
        if args.out is not None:
            intro = __doc__.split("\n\n    python")[0]
            args.out.write_text(
                f"# quality: score rules on the benchmark's pairs\n\n{intro}\n\n"
                f"`python bench/quality_pairs.py report {args.pairs}`: for each rule, part and choice of wrong "
                "readings, each group's AUC against the wrong readings / worst per-reference margin (reference); "
                "the highest no-speech score against the lowest native one; the lowest self-score.\n\n"
                f"```\n{text}\n```\n"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
