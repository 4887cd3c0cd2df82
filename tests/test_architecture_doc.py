"""docs/architecture.md cannot drift silently: its links resolve inside the repository, and every setting, V2
output, /score field, subcommand and format version of the code is named in it. Nothing in the repository sends
readers to ``../shared`` (absent from a clone) except the notes on where CI's KServe CRD comes from."""

from __future__ import annotations

import re
import subprocess

import pytest

from conftest import REPO_ROOT, environment_variables

DOC_PATH = REPO_ROOT / "docs" / "architecture.md"
DOC = DOC_PATH.read_text(encoding="utf-8")
#: Files allowed to name ../shared: the CI script and the notes on the KServe CRD it validates the chart against.
SHARED_ALLOWED = {
    ".ci/run",
    "README.md",
    "charts/audio-score/README.md",
    "tests/helm_tools.py",
    "tests/test_architecture_doc.py",
}


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (``-`` and ``_`` kept), spaces to ``-``."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def test_links_resolve_inside_the_repository() -> None:
    anchors = {github_slug(h) for h in re.findall(r"^#+ (.+)$", DOC, flags=re.M)}
    prose = re.sub(r"`[^`\n]*`", "", DOC)  # a regex in a code span is not a link
    links = re.findall(r"\]\(([^)\s]+)\)", prose)
    assert len(links) > 40  # the pattern still finds them
    for link in links:
        assert "://" not in link, f"external link {link}"
        path, _, anchor = link.partition("#")
        if not path:
            assert anchor in anchors, f"no heading for #{anchor}"
            continue
        target = (DOC_PATH.parent / path).resolve()
        assert target.is_relative_to(REPO_ROOT), f"{link} leaves the repository"
        assert target.exists(), link


def test_every_setting_is_named() -> None:
    from audio_score.settings import FileConfig, ModelSpec

    variables = environment_variables()
    assert {"AUDIO_SCORE_PREDICTOR_URL", "AUDIO_SCORE_BODY_TIMEOUT_S", "JOB_COMPLETION_INDEX"} <= variables
    assert {"AUDIO_SCORE_CONFIG", "AUDIO_SCORE_MODEL_KEYS", "POD_NAMESPACE"} <= variables
    missing = sorted(v for v in variables if f"`{v}`" not in DOC)
    missing += sorted(f for f in FileConfig.model_fields if f"`{f}`" not in DOC)
    missing += sorted(f for f in ModelSpec.model_fields if f"`models[].{f}`" not in DOC and f"`{f}`" not in DOC)
    assert not missing, f"docs/architecture.md lacks {missing}"


def test_every_output_field_and_command_is_named() -> None:
    from audio_score import contract
    from audio_score.cli import commands
    from router.app import ScoreResponse

    tensors = [t.name for t in (*contract.INPUTS, *contract.ALL_OUTPUTS)]
    names = [*tensors, contract.DEADLINE_HEADER, *ScoreResponse.model_fields, *commands()]
    missing = sorted({n for n in names if f"`{n}`" not in DOC})
    assert not missing, f"docs/architecture.md lacks {missing}"


def test_format_versions_match_the_code() -> None:
    from audio_score.backends.base import FEATURE_VERSION
    from audio_score.cache import CACHE_FORMAT_VERSION, EMBEDDING, FRAMES, META, REFERENCE_TEXT, TRANSCRIPT

    assert f"`CACHE_FORMAT_VERSION` (now {CACHE_FORMAT_VERSION}" in DOC
    assert "`FEATURE_VERSION` in" in DOC and f"({FEATURE_VERSION})" in DOC
    for name in (META, TRANSCRIPT, EMBEDDING, FRAMES, REFERENCE_TEXT):
        assert f"`{name}`" in DOC, name


def test_nothing_sends_readers_to_the_shared_folder() -> None:
    try:
        listed = subprocess.run(
            ["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"not a git checkout ({exc})")
    offenders = []
    for name in listed:
        path = REPO_ROOT / name
        if name in SHARED_ALLOWED or path.suffix not in {".py", ".md", ".sh", ".yaml", ".tpl", ".txt", ""}:
            continue
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if re.search(r"\.\./shared|[\"'`/ ]design\.md", text) or '"shared"' in text:
            offenders.append(name)
    assert not offenders, f"these files point at ../shared or the design document nobody has: {offenders}"
