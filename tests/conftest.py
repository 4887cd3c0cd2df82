"""Shared fixtures: tiny random-weight models in real checkpoint formats (built once per session) and
workspaces with real .mov reference clips in both layouts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from audio_score.devtools.tiny_models import TinyModelSet, build_tiny_model_set
from audio_score.devtools.workspace import Workspace, build_workspace

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModelSet:
    return build_tiny_model_set(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def _workspace_template(tmp_path_factory: pytest.TempPathFactory, tiny_models: TinyModelSet) -> Workspace:
    return build_workspace(tmp_path_factory.mktemp("ws-template"), models=tiny_models)


@pytest.fixture
def workspace(tmp_path: Path, _workspace_template: Workspace) -> Workspace:
    """A private copy of the template workspace (clips, config; empty cache) that a test may change."""
    tpl = _workspace_template
    root = tmp_path / "ws"
    shutil.copytree(tpl.root, root)
    (root / "config.json").write_text(tpl.config_path.read_text())
    ws = Workspace(
        root=root,
        config_path=root / "config.json",
        clip_dir=root / "clips",
        cache_dir=root / "cache",
        models=tpl.models,
        clips={k: root / p.relative_to(tpl.root) for k, p in tpl.clips.items()},
        samples=dict(tpl.samples),
    )
    return ws
