"""Keep the chart's values.schema.json descriptions equal to values.yaml's helm-docs comments.

values.yaml is the one hand-written source of every value's description; the schema's `description`s are
generated from it, so the two cannot drift apart:

    python scripts/chart_schema.py --write   # rewrite the descriptions in values.schema.json
    python scripts/chart_schema.py --check   # exit 1, naming each path, when they differ (make test runs it)

Comment forms read from values.yaml (helm-docs' own):

* ``# -- text`` on the lines right above a key (continued by the following ``#`` lines at the same indentation)
  documents that key; a key inside a list item is named with ``[]`` (``models[].key``).
* ``# path -- text`` anywhere documents a value the defaults leave out (``# models[].revision -- ...``).
* Any other comment is a plain note and is ignored.

A per-model knob (``models[].gpu``, ``models[].batching.maxBatchSize``, ...) without its own comment is described
as an override of the ``predictor.*`` value of the same name. Every property the schema declares must end up with
a description, and every documented path must exist in the schema: the check fails on a value with no comment
and on a comment for a value the schema does not have.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parent.parent / "charts" / "audio-score"
#: A schema path under models[] that has no comment of its own inherits predictor.<rest>'s description.
OVERRIDE_PREFIX, OVERRIDDEN_PREFIX = "models[].", "predictor."

_COMMENT = re.compile(r"^(?P<indent>\s*)#(?P<text>.*)$")
_ANONYMOUS = re.compile(r"^\s*--\s?(?P<text>.*)$")
_QUALIFIED = re.compile(r"^\s*(?P<path>[A-Za-z_][\w.\[\]-]*)\s+--\s?(?P<text>.*)$")


@dataclass
class Docs:
    """What values.yaml documents: path -> description, and the problems found reading it."""

    descriptions: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    #: Paths of every key that appears in values.yaml (list items as []).
    keys: set[str] = field(default_factory=set)

    def add(self, path: str, text: str, line: int) -> None:
        old = self.descriptions.get(path)
        if old is not None and old != text:
            self.errors.append(f"values.yaml:{line}: {path} is documented twice, differently")
        self.descriptions[path] = text


def _key_lines(text: str) -> dict[int, str]:
    """0-based line -> path of the outermost key that starts on it (a flow map's keys are nested deeper)."""
    found: dict[int, tuple[int, str]] = {}

    def walk(node: yaml.Node, path: str) -> Iterator[tuple[yaml.Node, str]]:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = f"{path}.{key.value}" if path else str(key.value)
                yield key, child
                yield from walk(value, child)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                yield from walk(item, f"{path}[]")

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    for key, path in walk(root, "") if root is not None else ():
        line, column = key.start_mark.line, key.start_mark.column
        if line not in found or column < found[line][0]:
            found[line] = (column, path)
    return {line: path for line, (_, path) in found.items()}


def read_docs(values_text: str) -> Docs:
    """The descriptions values.yaml's helm-docs comments give, by value path."""
    docs = Docs()
    key_lines = _key_lines(values_text)
    docs.keys = set(key_lines.values())
    lines = values_text.splitlines()
    i = 0
    while i < len(lines):
        first = _COMMENT.match(lines[i])
        if not first:
            i += 1
            continue
        # A block: consecutive comment lines at one indentation.
        block: list[tuple[int, str]] = []
        while i < len(lines) and (m := _COMMENT.match(lines[i])) and m["indent"] == first["indent"]:
            block.append((i, m["text"]))
            i += 1
        entries: list[tuple[int, str | None, list[str]]] = []  # (line, path or None for "# --", text lines)
        for line, text in block:
            if anonymous := _ANONYMOUS.match(text):
                entries.append((line, None, [anonymous["text"].strip()]))
            elif qualified := _QUALIFIED.match(text):
                entries.append((line, qualified["path"], [qualified["text"].strip()]))
            elif entries:
                entries[-1][2].append(text.strip())
        for n, (line, path, text_lines) in enumerate(entries):
            description = " ".join(t for t in text_lines if t)
            if path is None:
                target = key_lines.get(i)
                if n != len(entries) - 1 or target is None:
                    docs.errors.append(f"values.yaml:{line + 1}: a '# --' comment must sit right above a key")
                    continue
                path = target
            if not description:
                docs.errors.append(f"values.yaml:{line + 1}: {path} has an empty description")
                continue
            docs.add(path, description, line + 1)
    return docs


def schema_properties(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, schema) of every property the schema declares, list items as [] (allOf/if branches only
    constrain properties declared here, so they are not walked)."""
    for name, sub in (node.get("properties") or {}).items():
        child = f"{path}.{name}" if path else name
        yield child, sub
        yield from schema_properties(sub, child)
    items = node.get("items")
    if isinstance(items, dict):
        yield from schema_properties(items, f"{path}[]")


def describe(schema: dict[str, Any], docs: Docs) -> tuple[dict[str, Any], list[str]]:
    """The schema with every property's description from docs (first key of its object), and the problems."""
    problems = list(docs.errors)
    declared = set()
    for path, sub in schema_properties(schema):
        declared.add(path)
        description = docs.descriptions.get(path)
        if description is None and path.startswith(OVERRIDE_PREFIX):
            base = OVERRIDDEN_PREFIX + path.removeprefix(OVERRIDE_PREFIX)
            if base in docs.descriptions:
                description = f"Overrides {base} for this model: {docs.descriptions[base]}"
        if description is None:
            problems.append(f"{path}: no '# --' comment in values.yaml (schema property without a description)")
            sub.pop("description", None)
            continue
        rest = {k: v for k, v in sub.items() if k != "description"}
        sub.clear()
        sub.update({"description": description, **rest})
    for path in sorted(set(docs.descriptions) - declared):
        problems.append(f"{path}: documented in values.yaml but not a property of values.schema.json")
    return schema, problems


def render(chart: Path) -> tuple[str, list[str]]:
    """(the schema file's text with generated descriptions, problems)."""
    docs = read_docs((chart / "values.yaml").read_text())
    schema = json.loads((chart / "values.schema.json").read_text())
    schema, problems = describe(schema, docs)
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n", problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="fail when the schema's descriptions are not values.yaml's")
    mode.add_argument("--write", action="store_true", help="write values.yaml's descriptions into the schema")
    parser.add_argument("--chart", type=Path, default=CHART, help="chart folder (default: %(default)s)")
    args = parser.parse_args(argv)
    target = args.chart / "values.schema.json"
    text, problems = render(args.chart)
    for problem in problems:
        print(f"chart_schema: {problem}", file=sys.stderr)
    if args.write:
        target.write_text(text)
        print(f"chart_schema: wrote {target}")
    elif target.read_text() != text:
        stale = f"chart_schema: {target} is out of date with values.yaml: run scripts/chart_schema.py --write"
        print(stale, file=sys.stderr)
        return 1
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
