"""Dependencies point down only: the import graph, checked in fresh interpreters.

The core (``audio_score``) imports no part built on it (the services, the cache Job, the tools); the router imports
neither torch, transformers, kserve nor the predictor (its image has none of them); the predictor does not import
the router; the cache Job's command imports no service. Each check imports every module of a package in a
subprocess (so nothing this test process loaded counts) and inspects ``sys.modules``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

TOOLS = "audio_score_tools"

_PROBE = """
import importlib, json, pkgutil, sys
package = importlib.import_module(sys.argv[1])
names = [package.__name__]
for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    if info.name.rsplit(".", 1)[-1] != "__main__":  # __main__ runs the command
        importlib.import_module(info.name)
        names.append(info.name)
print(json.dumps({"imported": names, "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def _top_level_modules(package: str) -> tuple[list[str], set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, package], capture_output=True, text=True, timeout=240, cwd=REPO_ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["imported"], set(result["modules"])


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("audio_score", {"predictors", "router", "cache_job", TOOLS}),
        ("router", {"torch", "transformers", "kserve", "predictors", "cache_job", TOOLS}),
        ("predictors", {"router", "cache_job", TOOLS}),
        ("cache_job", {"predictors", "router", TOOLS}),
    ],
)
def test_package_imports_nothing_above_it(package: str, forbidden: set[str]) -> None:
    imported, modules = _top_level_modules(package)
    assert len(imported) > 1, imported  # the walk found the package's modules
    assert not modules & forbidden, f"importing every {package} module loads {sorted(modules & forbidden)}"


def test_the_core_names_no_service() -> None:
    """No core module spells a service's package name in an import (the dispatcher finds them by entry point)."""
    offenders = []
    for path in sorted((REPO_ROOT / "audio_score").rglob("*.py")):
        for line in path.read_text().splitlines():
            words = line.strip().split()
            if words[:1] in (["import"], ["from"]) and words[1].split(".")[0] in {
                "predictors",
                "router",
                "cache_job",
                TOOLS,
            }:
                offenders.append(f"{path.relative_to(REPO_ROOT)}: {line.strip()}")
    assert not offenders, offenders


def test_a_part_missing_from_the_image_is_listed_as_absent() -> None:
    """As in the router image, which has no ``predictors``: ``--help`` lists ``predictor`` as not installed, running
    it is one line and exit 2, and the router's own subcommand still parses."""
    code = (
        "import sys\n"
        "sys.modules['predictors'] = None  # not importable, as when the package is not installed\n"
        "from audio_score.cli import build_parser, main\n"
        "build_parser().parse_args(['router', '--port', '1'])\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    run = [sys.executable, "-c", code]
    wide = {**os.environ, "COLUMNS": "300"}  # argparse wraps help at the terminal width
    helped = subprocess.run([*run, "--help"], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, env=wide)
    assert helped.returncode == 0, helped.stderr
    assert "not installed in this environment" in helped.stdout and "router" in helped.stdout
    refused = subprocess.run([*run, "predictor"], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert refused.returncode == 2
    assert refused.stderr.startswith("audio-score predictor: error: not installed"), refused.stderr
