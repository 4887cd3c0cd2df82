"""The settings tables of README.md and docs/architecture.md, generated from the declarations.

A setting is declared once: a config.json field in :class:`audio_score.settings.FileConfig` /
:class:`~audio_score.settings.ModelSpec`, an ``AUDIO_SCORE_*`` variable in the class of the part that reads it
(:mod:`audio_score.env_settings`), each with its type and bounds, its default and a docstring. The tables are
rendered from those (pydantic's field info: ``annotation``, ``metadata``, ``default``, ``description``), so a
new or changed setting is one edit plus ``python -m audio_score_tools.settings_tables`` (rewrites the tables in
place; ``--check`` exits 1 when a document is stale, as ``tests/test_settings.py`` checks).

Each table sits between ``<!-- settings-table: NAME -->`` and ``<!-- /settings-table -->`` in its document.
"""

from __future__ import annotations

import argparse
import re
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import NoDecode

from audio_score.env_settings import (
    PARTS,
    ComputeEnv,
    JobEnv,
    PartEnv,
    PredictorEnv,
    RouterEnv,
    SharedEnv,
    env_name,
)
from audio_score.settings import FileConfig, ModelSpec

ROOT = Path(__file__).resolve().parent.parent
#: The classes that declare variables, in the order the tables list them (every part's first, the router's last).
DECLARING: tuple[type[PartEnv], ...] = (PartEnv, ComputeEnv, PredictorEnv, JobEnv, SharedEnv, RouterEnv)
BEGIN = "<!-- settings-table: {name} -->"
END = "<!-- /settings-table -->"


def _cell(text: str) -> str:
    """One table cell: whitespace collapsed, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """The type under ``X | None`` and ``Annotated``, with the metadata found on the way."""
    metadata: list[Any] = []
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation, *extra = get_args(annotation)
            for item in extra:
                metadata.extend(item.metadata if isinstance(item, FieldInfo) else [item])
        elif origin in (Union, types.UnionType):
            (annotation,) = [a for a in get_args(annotation) if a is not type(None)]
        else:
            return annotation, metadata


def _bounds(metadata: list[Any], kind: Any) -> list[str]:
    """Bounds as pydantic stores them (annotated-types' ``Ge``, ``MinLen``..., ``StringConstraints``, a pattern)."""
    out = []
    for item in metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if getattr(item, attr, None) is not None:
                out.append(f"{sign} {getattr(item, attr):g}")
        n = getattr(item, "min_length", None)
        if getattr(item, "strip_whitespace", False) and n:
            out.append("not blank")
        elif n:
            out.append("not empty" if kind is str else f"at least {n} entr{'y' if n == 1 else 'ies'}")
        pattern = getattr(item, "pattern", None)
        if isinstance(pattern, str):
            out.append(f"`{pattern}`")
    return out


def values(field: FieldInfo) -> str:
    """What a field accepts: its type and bounds, from the annotation and the field's own metadata."""
    kind, metadata = _unwrap(field.annotation)
    metadata += field.metadata
    origin = get_origin(kind)
    if origin is Literal:
        text = " \\| ".join(f"`{v}`" for v in get_args(kind))
    elif kind is bool:
        text = "`1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`"
    elif origin is dict:
        text = "comma-separated `key=value`"
    elif origin in (tuple, list) and any(m is NoDecode or isinstance(m, NoDecode) for m in metadata):
        text = "comma-separated"
    elif origin in (tuple, list):
        text = "list"
    else:
        text = {int: "integer", float: "number", str: "text", Path: "path"}.get(kind, getattr(kind, "__name__", ""))
    return ", ".join([text, *_bounds(metadata, kind)])


def default(field: FieldInfo) -> str:
    value = field.default
    if value is PydanticUndefined:
        return "required"
    if value is None or value == () or value == {}:
        return "—"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, str | Path):
        return f"`{value}`"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def env_rows() -> Iterator[dict[str, str]]:
    """One row per variable: every field of every part's class, where it is declared."""
    seen: set[str] = set()
    for cls in DECLARING:
        for name in vars(cls).get("__annotations__", {}):
            field = cls.model_fields[name]
            readers = [part for part, part_cls in PARTS.items() if name in part_cls.model_fields]
            seen.add(name)
            yield {
                "variable": f"`{env_name(name, field)}`",
                "default": default(field),
                "values": values(field),
                "used by": "all" if len(readers) == len(PARTS) else ", ".join(readers),
                "meaning": _cell(field.description or ""),
                "declared in": f"`{cls.__name__}`",
            }
    missing = {n for part in PARTS.values() for n in part.model_fields} - seen
    if missing:
        raise RuntimeError(f"fields of no class in DECLARING: {sorted(missing)}")


def config_rows() -> Iterator[dict[str, str]]:
    """One row per config.json field, ``models[].X`` for a model entry's."""
    fields: list[tuple[str, FieldInfo]] = []
    for name, field in FileConfig.model_fields.items():
        fields.append((name, field))
        if name == "models":
            fields += [(f"models[].{n}", f) for n, f in ModelSpec.model_fields.items()]
    for name, field in fields:
        yield {
            "field": f"`{name}`",
            "default": default(field),
            "values": values(field),
            "meaning": _cell(field.description or ""),
        }


def table(rows: Iterator[dict[str, str]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(row[c] for c in columns) + " |" for row in rows]
    return "\n".join(lines)


#: (document, table name) -> the table's text.
TABLES: dict[tuple[str, str], Callable[[], str]] = {
    ("README.md", "config"): lambda: table(config_rows(), ["field", "default", "values", "meaning"]),
    ("README.md", "environment"): lambda: table(env_rows(), ["variable", "default", "values", "used by", "meaning"]),
    ("docs/architecture.md", "config"): lambda: table(config_rows(), ["field", "default", "values"]),
    ("docs/architecture.md", "environment"): lambda: table(
        env_rows(), ["variable", "default", "values", "used by", "declared in"]
    ),
}


def render(document: str, text: str) -> str:
    """``text`` with each of the document's tables replaced by the generated one; KeyError when one is missing."""
    for (doc, name), make in TABLES.items():
        if doc != document:
            continue
        pattern = re.compile(re.escape(BEGIN.format(name=name)) + r"\n.*?" + re.escape(END), flags=re.S)
        found = pattern.search(text)
        if found is None:
            raise KeyError(f"{document} has no {BEGIN.format(name=name)} ... {END} block")
        text = f"{text[: found.start()]}{BEGIN.format(name=name)}\n{make()}\n{END}{text[found.end() :]}"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a document's tables are stale")
    args = parser.parse_args(argv)
    stale = []
    for document in sorted({doc for doc, _name in TABLES}):
        path = ROOT / document
        text = path.read_text(encoding="utf-8")
        new = render(document, text)
        if new != text:
            stale.append(document)
            if not args.check:
                path.write_text(new, encoding="utf-8")
    if stale:
        print(("stale: " if args.check else "rewrote: ") + ", ".join(stale))
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
