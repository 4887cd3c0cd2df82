"""The kind path without a cluster: kind-config.yaml, scripts/kind-e2e.sh failing fast, the kind_wait
helpers, the Dockerfiles' commands and the cache Job's entrypoint, and the helm installer."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helm_tools import KIND_VALUES, ROOT, helm_binary, load_values

from audio_score.cli import build_parser, commands

sys.path.insert(0, str(ROOT / "scripts"))
import kind_wait

SCRIPT = ROOT / "scripts" / "kind-e2e.sh"


# --- kind-config.yaml ----------------------------------------------------------------------------------------


def test_kind_config_has_the_required_fields() -> None:
    cfg = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert cfg["kind"] == "Cluster" and cfg["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    roles = [n["role"] for n in cfg["nodes"]]
    assert roles.count("control-plane") == 1 and roles.count("worker") >= 1
    (cp,) = [n for n in cfg["nodes"] if n["role"] == "control-plane"]
    assert cp["labels"] == {"ingress-ready": "true"}  # a string, as a node label must be
    assert "kubeadmConfigPatches" not in cp
    ports = {(p["containerPort"], p["hostPort"], p.get("protocol", "TCP")) for p in cp["extraPortMappings"]}
    assert ports == {(80, 80, "TCP"), (443, 443, "TCP")}
    clips_path = load_values(KIND_VALUES)["storage"]["clips"]["hostPath"]["path"]
    for node in cfg["nodes"]:
        mounts = {(m["hostPath"], m["containerPath"]) for m in node["extraMounts"]}
        assert ("./data/reference-videos", clips_path) in mounts, node["role"]


# --- scripts/kind-e2e.sh -------------------------------------------------------------------------------------


def _tool_dir(tmp_path: Path, fake: dict[str, str]) -> Path:
    """A PATH with only what the script needs before its tool check, plus fake tools."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "sed", "cat", "env"):
        real = shutil.which(tool)
        assert real, tool
        (bin_dir / tool).symlink_to(real)
    for name, body in fake.items():
        path = bin_dir / name
        path.write_text(f"#!{shutil.which('bash')}\n{body}\n")
        path.chmod(0o755)
    return bin_dir


def _run_script(tmp_path: Path, fake: dict[str, str], root: Path) -> subprocess.CompletedProcess[str]:
    bin_dir = _tool_dir(tmp_path, fake)
    start = time.monotonic()
    proc = subprocess.run(
        [str(bin_dir / "bash"), str(root / "scripts" / "kind-e2e.sh")],
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert time.monotonic() - start < 10, "the tool check must fail fast"
    return proc


@pytest.fixture
def bare_root(tmp_path: Path) -> Path:
    """A copy of the script in a tree without .tools/bin, so no helm/kubectl is found there either."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPT, root / "scripts" / "kind-e2e.sh")
    return root


def test_kind_e2e_names_every_missing_tool(tmp_path: Path, bare_root: Path) -> None:
    proc = _run_script(tmp_path, {}, bare_root)
    assert proc.returncode != 0
    assert "missing required tool(s): docker kind kubectl helm" in proc.stderr


def test_kind_e2e_names_only_docker_and_kind_when_helm_is_there(tmp_path: Path) -> None:
    fake = {"kubectl": "exit 0", "helm": "exit 0"}
    proc = _run_script(tmp_path, fake, ROOT)  # the real script and repo
    assert proc.returncode != 0
    assert re.search(r"missing required tool\(s\): docker kind$", proc.stderr, re.M), proc.stderr


def test_kind_e2e_says_when_the_docker_daemon_is_down(tmp_path: Path, bare_root: Path) -> None:
    fake = {"docker": "echo 'Cannot connect to the Docker daemon' >&2; exit 1", "kind": "exit 0"}
    fake |= {"kubectl": "exit 0", "helm": "exit 0"}
    proc = _run_script(tmp_path, fake, bare_root)
    assert proc.returncode != 0
    assert "daemon is not running" in proc.stderr and "missing" not in proc.stderr


def test_kind_e2e_uses_the_pinned_versions_and_the_kind_values() -> None:
    text = SCRIPT.read_text()
    assert "KSERVE_VERSION=v0.20.0" in text and "CERT_MANAGER_VERSION=v1.17.0" in text
    assert "oci://ghcr.io/kserve/charts/kserve-crd" in text and "oci://ghcr.io/kserve/charts/kserve-resources" in text
    assert "deploymentMode=Standard" in text
    assert "charts/audio-score/values-kind.yaml" in text and "kind load docker-image" in text
    assert "scripts/kind_wait.py wait" in text and "http://localhost/score" in text
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


# --- scripts/kind_wait.py ------------------------------------------------------------------------------------


def _obj(name: str, **conditions: str) -> dict:
    return {
        "metadata": {"name": name},
        "status": {"conditions": [{"type": t, "status": s} for t, s in conditions.items()]},
    }


def test_kind_wait_job_states() -> None:
    assert kind_wait.job_state([])[0] == "waiting"
    assert kind_wait.job_state([_obj("j")])[0] == "waiting"
    assert kind_wait.job_state([_obj("j", Complete="True")])[0] == "done"
    verdict, message = kind_wait.job_state([_obj("j", Failed="True")])
    assert verdict == "failed" and "j" in message


def test_kind_wait_isvc_states() -> None:
    assert kind_wait.isvc_state([_obj("a", Ready="True")], expected=2)[0] == "waiting"
    verdict, message = kind_wait.isvc_state([_obj("a", Ready="True"), _obj("b", Ready="False")], expected=2)
    assert verdict == "waiting" and "b" in message and "a (" not in message
    assert kind_wait.isvc_state([_obj("a", Ready="True"), _obj("b", Ready="True")], expected=2)[0] == "done"
    assert kind_wait.deployment_state([_obj("r", Available="True")])[0] == "done"


# --- images --------------------------------------------------------------------------------------------------


def _instruction(dockerfile: Path, name: str) -> list[str]:
    lines = [ln for ln in dockerfile.read_text().splitlines() if ln.startswith(f"{name} ")]
    assert len(lines) == 1, (dockerfile, name, lines)
    return json.loads(lines[0][len(name) + 1 :])  # exec form only


@pytest.mark.parametrize(
    ("dockerfile", "subcommand"), [("router/Dockerfile", "router"), ("predictors/Dockerfile", "predictor")]
)
def test_dockerfile_entrypoints_name_cli_subcommands(dockerfile: str, subcommand: str) -> None:
    path = ROOT / dockerfile
    entrypoint = _instruction(path, "ENTRYPOINT")
    assert entrypoint == ["audio-score", subcommand]
    assert subcommand in commands()
    build_parser().parse_args([*entrypoint[1:], "--config", "/etc/audio-score/config.json"])
    text = path.read_text()
    assert re.search(r"^USER 10001:10001$", text, re.M), "runs as the non-root user the chart expects"
    for base in re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M):
        assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), base  # pinned, never :latest
    assert "org.opencontainers.image.title" in text


def test_router_image_has_no_torch() -> None:
    text = (ROOT / "router" / "Dockerfile").read_text()
    assert '".[router]"' in text and "predictor]" not in text and "torch" not in text.replace("no torch", "")


def test_predictor_image_pins_torch_and_never_torchaudio() -> None:
    text = (ROOT / "predictors" / "Dockerfile").read_text()
    assert "ARG TORCH_VERSION=2.13.0" in text and '".[predictor]"' in text
    assert "torchaudio" not in text.replace("torchaudio is not needed", "")


def test_cache_job_image_runs_cache_build() -> None:
    """The Job's image takes everything as cache-build flags (no environment layer of its own)."""
    dockerfile = ROOT / "cache-job" / "Dockerfile"
    assert re.search(r"^FROM \$\{PREDICTOR_IMAGE\}$", dockerfile.read_text(), re.M)
    entrypoint = _instruction(dockerfile, "ENTRYPOINT")
    assert entrypoint[:2] == ["audio-score", "cache-build"] and "cache-build" in commands()
    args = build_parser().parse_args([*entrypoint[1:], "--shards", "4", "--models", "a,b", "--force"])
    assert (args.shards, args.models, args.force, args.no_progress) == (4, "a,b", True, True)


def test_each_image_copies_only_what_it_runs() -> None:
    router = (ROOT / "router" / "Dockerfile").read_text()
    predictor = (ROOT / "predictors" / "Dockerfile").read_text()
    copied = {
        name: set(re.findall(r"^COPY (?!--from)(\S+) ", text, re.M)) for name, text in (("r", router), ("p", predictor))
    }
    assert copied["r"] == {"pyproject.toml", "audio_score", "router"}, copied["r"]
    assert copied["p"] == {"pyproject.toml", "audio_score", "predictors", "cache-job/cache_job"}, copied["p"]
    assert "audio_score_tools" in (ROOT / ".dockerignore").read_text().split()


# --- the helm installer --------------------------------------------------------------------------------------


def test_helm_is_available_and_v4() -> None:
    out = subprocess.run([helm_binary(), "version", "--short"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("v4."), out


def test_install_helm_is_fast_and_idempotent_when_present() -> None:
    helm_binary()  # installed (or on PATH) by now
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "install_helm.py")], capture_output=True, text=True, check=True
    )
    assert time.monotonic() - start < 5
    assert Path(proc.stdout.strip()).is_file()
