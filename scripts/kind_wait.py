"""Wait for an audio-score release on a cluster, with the `kubernetes` client (watches, not sleeps).

    python scripts/kind_wait.py wait --namespace audio-score --release audio-score [--timeout 1800]
    python scripts/kind_wait.py logs --namespace audio-score --release audio-score [--out DIR]

`wait` follows, in turn: the cache Job (condition Complete; Failed stops at once), every InferenceService of
the release (condition Ready) and the router Deployment (Available). On failure or timeout it prints what
it waited for, the pods' states, recent events and every container's log (also `logs`), and exits 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

KSERVE = ("serving.kserve.io", "v1beta1", "inferenceservices")


class WaitFailed(Exception):
    """A watched object reached a failed state, or the time ran out."""


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []}


def _is_true(obj: dict[str, Any], kind: str) -> bool:
    return _conditions(obj).get(kind, {}).get("status") == "True"


def job_state(objs: list[dict[str, Any]]) -> tuple[str, str]:
    if not objs:
        return "waiting", "no cache Job yet"
    for job in objs:
        name = job["metadata"]["name"]
        failed = _conditions(job).get("Failed", {})
        if failed.get("status") == "True":
            return "failed", f"Job {name} failed: {failed.get('reason')}: {failed.get('message')}"
    pending = [j["metadata"]["name"] for j in objs if not _is_true(j, "Complete")]
    if pending:
        return "waiting", f"Job(s) {', '.join(pending)} running"
    return "done", f"Job(s) {', '.join(j['metadata']['name'] for j in objs)} complete"


def isvc_state(objs: list[dict[str, Any]], expected: int) -> tuple[str, str]:
    if len(objs) < expected:
        return "waiting", f"{len(objs)}/{expected} InferenceServices exist"
    waiting = []
    for isvc in objs:
        if not _is_true(isvc, "Ready"):
            reasons = [
                f"{c.get('type')}={c.get('status')} {c.get('reason') or ''} {c.get('message') or ''}".strip()
                for c in _conditions(isvc).values()
                if c.get("status") != "True"
            ]
            waiting.append(f"{isvc['metadata']['name']} ({'; '.join(reasons) or 'no status yet'})")
    if waiting:
        return "waiting", "not Ready: " + ", ".join(waiting)
    return "done", f"InferenceService(s) {', '.join(i['metadata']['name'] for i in objs)} Ready"


def deployment_state(objs: list[dict[str, Any]]) -> tuple[str, str]:
    if not objs:
        return "waiting", "no router Deployment yet"
    waiting = [d["metadata"]["name"] for d in objs if not _is_true(d, "Available")]
    if waiting:
        return "waiting", f"Deployment(s) {', '.join(waiting)} not Available"
    return "done", "router Available"


def watch_until(
    list_fn: Callable[..., Any],
    state: Callable[[list[dict[str, Any]]], tuple[str, str]],
    deadline: float,
    what: str,
    **kwargs: Any,
) -> str:
    """List, then follow watch events until `state` says done (return) or failed / time is up (raise)."""
    serialize = client.ApiClient().sanitize_for_serialization
    last = ""
    while True:
        listing = serialize(list_fn(**kwargs))
        objs = {o["metadata"]["name"]: o for o in listing.get("items") or []}
        verdict, last = state(list(objs.values()))
        if verdict == "done":
            return last
        if verdict == "failed":
            raise WaitFailed(f"{what}: {last}")
        remaining = int(deadline - time.monotonic())
        if remaining <= 0:
            raise WaitFailed(f"{what}: timed out; last state: {last}")
        print(f"[wait] {what}: {last}", flush=True)
        stream = watch.Watch().stream(
            list_fn,
            resource_version=listing["metadata"].get("resourceVersion"),
            timeout_seconds=min(remaining, 120),
            **kwargs,
        )
        for event in stream:
            obj = serialize(event["object"])
            name = (obj.get("metadata") or {}).get("name")
            if event["type"] == "DELETED":
                objs.pop(name, None)
            elif name:
                objs[name] = obj
            verdict, message = state(list(objs.values()))
            if message != last:
                print(f"[wait] {what}: {message}", flush=True)
                last = message
            if verdict == "done":
                return last
            if verdict == "failed":
                raise WaitFailed(f"{what}: {last}")
        # The watch timed out or the server closed it: list again (also refreshes the resourceVersion).


def wait_release(namespace: str, release: str, timeout: float, expected_isvcs: int, skip_job: bool) -> None:
    deadline = time.monotonic() + timeout
    batch, apps, custom = client.BatchV1Api(), client.AppsV1Api(), client.CustomObjectsApi()
    instance = f"app.kubernetes.io/instance={release}"
    if not skip_job:
        print("[wait]", watch_until(
            batch.list_namespaced_job, job_state, deadline, "cache Job",
            namespace=namespace, label_selector=f"{instance},app.kubernetes.io/component=cache-job",
        ), flush=True)  # fmt: skip
    print("[wait]", watch_until(
        custom.list_namespaced_custom_object, lambda objs: isvc_state(objs, expected_isvcs), deadline,
        "InferenceServices", group=KSERVE[0], version=KSERVE[1], plural=KSERVE[2], namespace=namespace,
        label_selector=f"{instance},app.kubernetes.io/component=predictor",
    ), flush=True)  # fmt: skip
    print("[wait]", watch_until(
        apps.list_namespaced_deployment, deployment_state, deadline, "router",
        namespace=namespace, label_selector=f"{instance},app.kubernetes.io/component=router",
    ), flush=True)  # fmt: skip


def collect_logs(namespace: str, out: Path | None, extra_namespaces: tuple[str, ...] = ("kserve",)) -> None:
    """Pod states, recent events and every container's log (current and previous) of the namespace(s)."""
    core = client.CoreV1Api()
    if out:
        out.mkdir(parents=True, exist_ok=True)
    for ns in (namespace, *extra_namespaces):
        try:
            pods = core.list_namespaced_pod(ns).items
        except client.ApiException as exc:
            print(f"[logs] cannot list pods in {ns}: {exc.reason}")
            continue
        print(f"===== namespace {ns}: {len(pods)} pod(s)")
        for pod in pods:
            statuses = (pod.status.init_container_statuses or []) + (pod.status.container_statuses or [])
            states = []
            for st in statuses:
                waiting = st.state.waiting.reason if st.state and st.state.waiting else None
                term = st.state.terminated.reason if st.state and st.state.terminated else None
                states.append(f"{st.name}: ready={st.ready} restarts={st.restart_count} {waiting or term or ''}")
            print(f"--- pod {pod.metadata.name} phase={pod.status.phase} node={pod.spec.node_name}")
            for line in states:
                print(f"    {line}")
            containers = [c.name for c in (pod.spec.init_containers or [])] + [c.name for c in pod.spec.containers]
            for name in containers:
                for previous in (False, True):
                    try:
                        text = core.read_namespaced_pod_log(
                            pod.metadata.name, ns, container=name, previous=previous, tail_lines=200
                        )
                    except client.ApiException:
                        continue
                    label = f"{pod.metadata.name}/{name}{' (previous)' if previous else ''}"
                    print(f"----- log {label}\n{text}")
                    if out:
                        (out / f"{ns}_{label.replace('/', '_').replace(' ', '')}.log").write_text(text)
        events = sorted(
            core.list_namespaced_event(ns).items,
            key=lambda e: str(e.last_timestamp or e.event_time or e.metadata.creation_timestamp),
        )[-40:]
        print(f"===== events in {ns} (last {len(events)})")
        for ev in events:
            print(f"  {ev.type} {ev.involved_object.kind}/{ev.involved_object.name}: {ev.reason}: {ev.message}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["wait", "logs"])
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--release", default="audio-score")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds for everything (default 1800)")
    parser.add_argument("--isvcs", type=int, default=1, help="InferenceServices to expect (default 1)")
    parser.add_argument("--skip-job", action="store_true", help="do not wait for the cache Job")
    parser.add_argument("--context", default=None, help="kubeconfig context (default: current)")
    parser.add_argument("--out", type=Path, default=None, help="also write the logs into this folder")
    args = parser.parse_args(argv)
    config.load_kube_config(context=args.context)
    if args.action == "logs":
        collect_logs(args.namespace, args.out)
        return 0
    try:
        wait_release(args.namespace, args.release, args.timeout, args.isvcs, args.skip_job)
    except WaitFailed as exc:
        print(f"[wait] FAILED: {exc}", file=sys.stderr, flush=True)
        collect_logs(args.namespace, args.out)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
