"""The chart's containers, run on this machine as their pods would run them: the command, args, environment
and probe paths the chart renders for the cache Job, every predictor and the router are executed with
config.json taken from the rendered ConfigMap and the mount paths pointed at a workspace; then the helm test
pod's script scores a tone through them."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml
from helm_tools import of_kind, one, render

from audio_score_tools.procs import http_ok, log_tail, wait_ready
from audio_score_tools.workspace import Workspace

from conftest import free_port, stop_process

NAMESPACE = "audio"


def _values(ws: Workspace) -> str:
    models = json.loads(ws.config_path.read_text())["models"]  # tiny models in local folders
    return yaml.safe_dump(
        {
            "models": models,
            "storage": {"cache": {"mountPath": str(ws.cache_dir)}, "clips": {"mountPath": str(ws.clip_dir)}},
            "predictor": {"device": "cpu", "batching": {"maxBatchWaitMs": 5}},
            "cacheJob": {"device": "cpu"},
            "hub": {"offline": True},
            "tests": {"uid": "video1", "cid": "clip1", "timeoutS": 60},
        }
    )


def _env(container: dict[str, Any], tmp: Path, **overrides: str) -> dict[str, str]:
    """The container's rendered environment as the kubelet would set it (fieldRefs resolved, no secrets)."""
    env = {"PATH": os.environ["PATH"], "PYTHONUNBUFFERED": "1"}
    # The image's installed packages are this checkout's (conftest puts it and cache-job/ on PYTHONPATH).
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = item["value"]
        elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            env[item["name"]] = NAMESPACE
    env["HOME"] = str(tmp)  # the pod's /tmp emptyDir
    env["HF_HOME"] = str(tmp / "hf")  # the pod's HF_HOME volume
    return {**env, **overrides}


def _argv(container: dict[str, Any], config: Path, http_port: int | None = None) -> list[str]:
    """command + args with the ConfigMap mount path and the container port replaced by local ones."""
    command, args = container["command"], list(container.get("args") or [])
    assert command[0] == "audio-score"
    for flag, value in (("--config", str(config)), ("--http-port", str(http_port))):
        if flag in args:
            args[args.index(flag) + 1] = value
    return [sys.executable, "-m", "audio_score", *command[1:], *args]


@contextlib.contextmanager
def _serve(argv: list[str], env: dict[str, str], log: Path, ready_url: str, timeout_s: float = 180) -> Iterator[None]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent)
    try:
        # Only the pod's environment (no inherited variables), so not procs.started, which adds this one's.
        wait_ready(proc, http_ok(ready_url), timeout_s=timeout_s, what=argv[3], details=log_tail(log, 3000))
        yield
    finally:
        stop_process(proc, group=False)


def _probe_url(container: dict[str, Any], probe: str, port: int) -> str:
    get = container[probe]["httpGet"]
    return f"http://127.0.0.1:{port}{get['path']}"


def test_rendered_pods_build_serve_and_pass_the_helm_test(workspace: Workspace, tmp_path: Path) -> None:
    docs = render(namespace=NAMESPACE, extra=_values(workspace))
    (cm,) = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-config")]
    config = tmp_path / "etc" / "config.json"  # the ConfigMap volume
    config.parent.mkdir()
    config.write_text(cm["data"]["config.json"])
    keys = [m["key"] for m in json.loads(config.read_text())["models"]]
    assert keys == workspace.model_keys

    # 1. The cache Job's pod: Kubernetes sets JOB_COMPLETION_INDEX for an Indexed Job.
    job = one(docs, "Job")["spec"]["template"]["spec"]["containers"][0]
    proc = subprocess.run(
        _argv(job, config),
        env=_env(job, tmp_path, JOB_COMPLETION_INDEX="0"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["shard"] == "0/1" and not summary["failed_clips"]
    for key in keys:
        assert list((workspace.cache_dir / key).rglob("meta.json")), f"no cache entries for {key}"

    # 2. One predictor pod per InferenceService, ready by the chart's own readiness probe.
    with contextlib.ExitStack() as stack:
        urls = {}
        for isvc in of_kind(docs, "InferenceService"):
            (container,) = isvc["spec"]["predictor"]["containers"]
            key = isvc["metadata"]["name"]
            port = free_port()
            argv = _argv(container, config, http_port=port)
            ready = _probe_url(container, "readinessProbe", port)
            assert ready.endswith(f"/v2/models/{key}/ready")
            stack.enter_context(_serve(argv, _env(container, tmp_path), tmp_path / f"{key}.log", ready))
            assert httpx.get(_probe_url(container, "livenessProbe", port), timeout=5).status_code == 200
            assert httpx.get(_probe_url(container, "startupProbe", port), timeout=5).status_code == 200
            urls[key] = f"http://127.0.0.1:{port}"

        # 3. The router pod. Cluster DNS does not exist here: per-model URLs stand in for the template.
        deployment = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
        router_port = free_port()
        env = _env(
            deployment,
            tmp_path,
            AUDIO_SCORE_SERVER_HOST="127.0.0.1",
            AUDIO_SCORE_SERVER_PORT=str(router_port),
            AUDIO_SCORE_PREDICTOR_URLS=",".join(f"{k}={u}" for k, u in urls.items()),
        )
        assert env["AUDIO_SCORE_PREDICTOR_URL"] == f"http://{{model}}-predictor.{NAMESPACE}.svc.cluster.local"
        router_url = f"http://127.0.0.1:{router_port}"
        stack.enter_context(
            _serve(
                _argv(deployment, config),
                env,
                tmp_path / "router.log",
                _probe_url(deployment, "readinessProbe", router_port),
            )
        )
        assert httpx.get(_probe_url(deployment, "livenessProbe", router_port), timeout=5).status_code == 200

        # 4. The helm test pod's script, as rendered into its ConfigMap, against that router.
        pod = one(docs, "Pod")["spec"]["containers"][0]
        test_cm = next(d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-test"))
        script = tmp_path / "helm_test.py"
        script.write_text(test_cm["data"]["helm_test.py"])
        assert pod["command"] == ["python", "/etc/audio-score-test/helm_test.py"]
        test_env = _env(pod, tmp_path, ROUTER_URL=router_url)
        ok = subprocess.run([sys.executable, str(script)], env=test_env, capture_output=True, text=True, timeout=120)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "GET /healthz ok" in ok.stdout and "POST /score ok" in ok.stdout
        body = json.loads(ok.stdout.split("POST /score ok:", 1)[1])
        assert body["model"] == keys[0]

        # ...and it fails, saying why, for a clip that does not exist.
        bad = subprocess.run(
            [sys.executable, str(script)],
            env={**test_env, "TEST_CID": "nope"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert bad.returncode == 1 and "POST /score -> 404" in bad.stderr, bad.stderr
