"""values.schema.json's descriptions are values.yaml's helm-docs comments (scripts/chart_schema.py): the shipped
pair agrees, every value is described, and the check fails on each kind of drift, naming the value."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "audio-score"
SCRIPT = ROOT / "scripts" / "chart_schema.py"
sys.path.insert(0, str(ROOT / "scripts"))
from chart_schema import read_docs, schema_properties  # noqa: E402


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_shipped_schema_matches_values_yaml() -> None:
    proc = run("--check")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def test_every_schema_property_has_a_description() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    paths = dict(schema_properties(schema))
    assert len(paths) > 200
    undescribed = [p for p, sub in paths.items() if not sub.get("description", "").strip()]
    assert not undescribed, undescribed
    assert paths["router.service.port"]["description"] == "Service port."
    # A per-model knob is described as its predictor.* default's override.
    assert paths["models[].gpu"]["description"].startswith("Overrides predictor.gpu for this model: GPUs per")


def test_every_values_yaml_key_in_the_schema_is_commented_itself() -> None:
    """Every key values.yaml sets that the schema declares carries its own `# --` comment (per-model knobs may
    lean on predictor.*'s)."""
    docs = read_docs((CHART / "values.yaml").read_text())
    declared = {p for p, _ in schema_properties(json.loads((CHART / "values.schema.json").read_text()))}
    uncommented = sorted(
        k for k in docs.keys & declared if k not in docs.descriptions and not k.startswith("models[].resources")
    )
    assert not uncommented, uncommented


@pytest.fixture
def chart(tmp_path: Path) -> Path:
    for name in ("values.yaml", "values.schema.json"):
        shutil.copy(CHART / name, tmp_path / name)
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


def test_a_changed_comment_makes_the_schema_stale_until_written(chart: Path) -> None:
    edit(chart / "values.yaml", "# -- Service port.", "# -- Port of the router's Service.")
    proc = run("--check", "--chart", str(chart))
    assert proc.returncode == 1 and "out of date" in proc.stderr and "--write" in proc.stderr
    assert run("--write", "--chart", str(chart)).returncode == 0
    assert run("--check", "--chart", str(chart)).returncode == 0
    schema = json.loads((chart / "values.schema.json").read_text())
    port = schema["properties"]["router"]["properties"]["service"]["properties"]["port"]
    assert port["description"] == "Port of the router's Service."
    assert port["type"] == "integer"  # the rest of the schema is kept


def test_a_value_without_a_comment_is_named(chart: Path) -> None:
    edit(chart / "values.yaml", "    # -- Service port.\n", "")
    proc = run("--check", "--chart", str(chart))
    assert proc.returncode == 1
    assert "router.service.port: no '# --' comment in values.yaml" in proc.stderr


def test_a_comment_for_a_value_the_schema_lacks_is_named(chart: Path) -> None:
    edit(chart / "values.yaml", "# -- Render the test pod.\n", "# -- Render the test pod.\n  # tests.colour -- x\n")
    proc = run("--check", "--chart", str(chart))
    assert proc.returncode == 1
    assert "tests.colour: documented in values.yaml but not a property of values.schema.json" in proc.stderr


def test_a_dangling_comment_is_named(chart: Path) -> None:
    edit(chart / "values.yaml", "  # -- Render the test pod.\n", "  # -- Render the test pod.\n\n")
    proc = run("--check", "--chart", str(chart))
    assert proc.returncode == 1
    assert "a '# --' comment must sit right above a key" in proc.stderr
    assert "tests.enabled: no '# --' comment" in proc.stderr


def test_list_items_and_qualified_comments() -> None:
    docs = read_docs(
        "# -- The list.\nitems:\n  # -- First key.\n  - name: a\n    # -- Size.\n    size: {cpu: 1}\n"
        "  # items[].extra -- Not in the defaults,\n  # continued.\n  - name: b\n"
    )
    assert docs.errors == []
    assert docs.descriptions == {
        "items": "The list.",
        "items[].name": "First key.",
        "items[].size": "Size.",
        "items[].extra": "Not in the defaults, continued.",
    }
