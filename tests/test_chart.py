"""The Helm chart, rendered offline with the real helm: lint, Kubernetes and KServe CRD schemas, values
schema, and what the parts must agree on (config, cache claim, model keys, URLs, GPUs, pod security)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from helm_tools import (
    CHART,
    CRD_PATH,
    HTTPROUTE_API,
    K8S_VERSION,
    KIND_VALUES,
    SITE_VALUES,
    containers,
    env_of,
    helm,
    load_values,
    mounts_by_path,
    of_kind,
    one,
    pod_specs,
    render,
    strict_load_all,
    template_args,
    values_file,
)
from ruamel.yaml.constructor import DuplicateKeyError

from audio_score.cli import build_parser
from audio_score.env_settings import JobEnv, PredictorEnv, RouterEnv
from audio_score.settings import FileConfig, load_settings

VALUE_SETS = {"default": (), "kind": (KIND_VALUES,), "site": (SITE_VALUES,)}
#: Values that switch on the optional parts, so they are validated too.
EVERYTHING = """
models:
  - {key: whisper-small, type: whisper, model_id: openai/whisper-small, gpu: 1, language: en, max_new_tokens: 100}
  - key: higgs-audio-v2
    type: higgs_audio
    storageUri: hf://bosonai/higgs-audio-v2-understanding-3B
    processor_id: openai/whisper-large-v3-turbo
    transcriber_id: openai/whisper-small
    revision: main
    batching: {maxBatchSize: 4}
  - {key: whisper-cpu, type: whisper, model_id: /models/whisper-base, gpu: 0, minReplicas: 2, maxReplicas: 3}
predictor:
  gpu: 0
  grpc: {enabled: true}
  namePrefix: "as-"
  annotations: {serving.kserve.io/enable-prometheus-scraping: "true"}
cacheJob: {shards: 3, parallelism: 2, force: true, disableCacheFlush: true, activeDeadlineSeconds: 7200, gpu: 1}
storage:
  cache: {existingClaim: shared-cache}
  clips: {existingClaim: clips}
modelWeights: {existingClaim: weights}
hub: {tokenSecret: {name: hf}, offline: true, home: {existingClaim: hf-home}}
router:
  apiKeysSecret: {name: keys}
  ingress: {host: a.example.com, tlsSecretName: tls}
  httpRoute: {enabled: true, parentRefs: [{name: gw, namespace: infra}], hostnames: [a.example.com]}
config:
  {maxUploadBytes: 10000000, maxAudioSeconds: 20, audioSimilarity: pooled, textSimilarity: char, forcedText: false,
   decoder: pydub}
"""
RENDERINGS = {**{k: dict(values=v) for k, v in VALUE_SETS.items()}, "everything": dict(extra=EVERYTHING)}
#: Kinds kubernetes-validate has no schema for, checked separately.
CRD_KINDS = {"InferenceService", "HTTPRoute"}


def rendered(name: str) -> list[dict[str, Any]]:
    spec = RENDERINGS[name]
    return render(*spec.get("values", ()), extra=spec.get("extra", ""))


def _strict(schema: Any) -> Any:
    """The CRD schema with additionalProperties: false on every object that lists its properties, so a
    misspelled field fails validation (the API server would silently prune it)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            out.get("type") == "object"
            and "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def isvc_validator() -> jsonschema.Draft7Validator:
    if not CRD_PATH.is_file():
        pytest.skip(f"KServe CRD schema not found at {CRD_PATH} (the shared folder beside the checkout; CI has it)")
    crd = yaml.safe_load(CRD_PATH.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")
    return jsonschema.Draft7Validator(_strict(version["schema"]["openAPIV3Schema"]))


# --- helm lint and the schemas -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint_strict(name: str) -> None:
    args = ["lint", "--strict", str(CHART)]
    for path in VALUE_SETS[name]:
        args += ["-f", str(path)]
    out = helm(*args).stdout
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_every_object_is_valid_kubernetes(name: str) -> None:
    docs = rendered(name)
    kinds = {d["kind"] for d in docs}
    assert {"ConfigMap", "Deployment", "Service", "InferenceService", "Pod"} <= kinds
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_validation_catches_a_bad_object() -> None:
    """The check above can fail: a misspelled field in a rendered Deployment is rejected."""
    deployment = copy.deepcopy(one(rendered("default"), "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_inference_services_match_the_kserve_crd(name: str, isvc_validator: jsonschema.Draft7Validator) -> None:
    isvcs = of_kind(rendered(name), "InferenceService")
    assert isvcs
    for isvc in isvcs:
        assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in isvc_validator.iter_errors(isvc)]
        assert not errors, errors


def test_crd_validation_catches_a_misspelled_field(isvc_validator: jsonschema.Draft7Validator) -> None:
    isvc = copy.deepcopy(of_kind(rendered("default"), "InferenceService")[0])
    isvc["spec"]["predictor"]["maxReplica"] = 3
    assert not isvc_validator.is_valid(isvc)
    isvc = copy.deepcopy(of_kind(rendered("default"), "InferenceService")[0])
    isvc["spec"]["predictor"]["minReplicas"] = "one"
    assert not isvc_validator.is_valid(isvc)


def test_http_route_shape() -> None:
    route = one(rendered("everything"), "HTTPRoute")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == [{"name": "gw", "namespace": "infra"}]
    backend = route["spec"]["rules"][0]["backendRefs"][0]
    service = one(rendered("everything"), "Service")
    assert backend == {"name": service["metadata"]["name"], "port": service["spec"]["ports"][0]["port"]}


def test_http_route_needs_the_gateway_api() -> None:
    """On a cluster without the Gateway API CRDs the install fails up front, saying what to install, instead of the
    API server's "no matches for kind HTTPRoute"; with the API present the route renders."""
    route_on = (values_file("router: {httpRoute: {enabled: true, parentRefs: [{name: gw}]}}"),)
    proc = helm(*template_args(values=route_on, api_versions=()), check=False)
    assert proc.returncode != 0
    assert "router.httpRoute.enabled needs the Gateway API CRDs" in proc.stderr, proc.stderr
    assert "standard-install.yaml" in proc.stderr and "--api-versions" in proc.stderr
    out = helm(*template_args(values=route_on, api_versions=(HTTPROUTE_API,))).stdout
    assert one([d for d in yaml.safe_load_all(out) if d], "HTTPRoute")["spec"]["parentRefs"] == [{"name": "gw"}]
    # The default (an Ingress, no route) needs no Gateway API.
    docs = [d for d in yaml.safe_load_all(helm(*template_args(api_versions=())).stdout) if d]
    assert not of_kind(docs, "HTTPRoute") and one(docs, "Ingress")


MODEL = "models: [{key: whisper-small, type: whisper, model_id: openai/whisper-small, %s}]"


@pytest.mark.parametrize(
    "bad",
    [
        "router: {ingres: {host: x}}",  # misspelled key
        "predictor: {gpus: 1}",
        "cacheJob: {shards: 0}",
        "predictor: {deploymentMode: Serverless}",
        "models: [{key: Whisper_Small, type: whisper, model_id: openai/whisper-small}]",  # not a DNS label
        "models: [{key: whisper-small, type: wav2vec, model_id: openai/whisper-small}]",
        MODEL % "storageUri: hf://openai/whisper-small",  # both model_id and storageUri
        MODEL % "gpus: 1",  # misspelled per-model knob
        MODEL % "modelId: x",  # camelCase for a config.json field
        "models: [{key: h, type: higgs_audio, model_id: x, processor_id: proc}]",  # no transcriber_id
        "models: []",
        "storage: {cache: {accessModes: [ReadWriteSometimes]}}",
        "tests: {uid: ../etc}",
    ],
)
def test_values_schema_rejects(bad: str) -> None:
    proc = helm(*template_args(values=(values_file(bad),)), check=False)
    assert proc.returncode != 0, f"{bad} was accepted"
    assert "schema" in proc.stderr, proc.stderr


def test_values_schema_accepts_the_good_twins() -> None:
    """The rejections above are about the one wrong thing: the corrected values render."""
    for good in (
        "router: {ingress: {host: x}}",
        MODEL % "gpu: 1",
        "models: [{key: h, type: higgs_audio, model_id: x, processor_id: proc, transcriber_id: asr}]",
        "models: [{key: h, type: whisper, storageUri: 'hf://openai/whisper-tiny'}]",
    ):
        helm(*template_args(values=(values_file(good),)))


def test_values_schema_rejects_a_wrong_type() -> None:
    proc = helm(*template_args(sets=("predictor.maxReplicas=many",)), check=False)
    assert proc.returncode != 0 and "maxReplicas" in proc.stderr


# --- what the parts must agree on ----------------------------------------------------------------------------


def expected_config(values: dict[str, Any]) -> dict[str, Any]:
    fields = ("key", "type", "model_id", "processor_id", "transcriber_id", "revision", "language", "max_new_tokens")
    models = []
    for m in values["models"]:
        entry = {k: m[k] for k in fields if k in m}
        if "storageUri" in m:
            entry["model_id"] = f"{values['storageInitializer']['mountRoot']}/{m['key']}"
        models.append(entry)
    cfg = {
        "models": models,
        "video_clip_dir": values["storage"]["clips"]["mountPath"],
        "cache_dir": values["storage"]["cache"]["mountPath"],
        "target_sampling_rate": values["config"]["targetSamplingRate"],
    }
    if values["config"].get("maxUploadBytes"):
        cfg["max_upload_bytes"] = values["config"]["maxUploadBytes"]
    if values["config"].get("maxAudioSeconds"):
        cfg["max_audio_seconds"] = values["config"]["maxAudioSeconds"]
    if values["config"].get("audioSimilarity"):
        cfg["audio_similarity"] = values["config"]["audioSimilarity"]
    if values["config"].get("textSimilarity"):
        cfg["text_similarity"] = values["config"]["textSimilarity"]
    if values["config"].get("forcedText") is not None:
        cfg["forced_text"] = values["config"]["forcedText"]
    if values["config"].get("decoder"):
        cfg["decoder"] = values["config"]["decoder"]
    return cfg


def values_for(name: str, tmp_path: Path) -> dict[str, Any]:
    spec = RENDERINGS[name]
    paths = list(spec.get("values", ()))
    if spec.get("extra"):
        extra = tmp_path / "extra.yaml"
        extra.write_text(spec["extra"])
        paths.append(extra)
    return load_values(*paths)


def config_json(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (cm,) = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-config")]
    return json.loads(cm["data"]["config.json"])


@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_config_json_equals_the_models_in_values(name: str, tmp_path: Path) -> None:
    cfg = config_json(rendered(name))
    assert cfg == expected_config(values_for(name, tmp_path))
    FileConfig.model_validate(cfg)  # the app's own schema accepts it (unknown fields are rejected there)


@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_every_part_mounts_the_one_config(name: str) -> None:
    docs = rendered(name)
    (cm,) = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-config")]
    for where, spec in pod_specs(docs):
        if "-test" in where:
            continue
        main = spec["containers"][0]
        env = env_of(main)
        assert env["AUDIO_SCORE_CONFIG"] == "/etc/audio-score/config.json", where
        volume = mounts_by_path(spec, main)["/etc/audio-score"]
        assert volume["configMap"]["name"] == cm["metadata"]["name"], where


@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_the_job_predictors_and_router_read_one_decoder(name: str, tmp_path: Path) -> None:
    """The decoder lives in config.json: every pod, loaded with its own rendered environment, gets the same
    value, and no pod carries a per-pod AUDIO_SCORE_DECODER that could make uploads and references differ."""
    docs = rendered(name)
    config = tmp_path / "config.json"
    config.write_text(json.dumps(config_json(docs)))
    expected = values_for(name, tmp_path)["config"].get("decoder") or "pyav"
    seen = {}
    for where, spec in pod_specs(docs):
        if "-test" in where:
            continue
        env = {k: v for k, v in env_of(spec["containers"][0]).items() if isinstance(v, str)}
        assert "AUDIO_SCORE_DECODER" not in env, where
        part = (
            JobEnv if where.startswith("Job/") else PredictorEnv if where.startswith("InferenceService/") else RouterEnv
        )
        seen[where] = load_settings(part, config, env=env).config.decoder
    assert any(w.startswith("Job/") for w in seen) and any(w.startswith("Deployment/") for w in seen), seen
    assert any(w.startswith("InferenceService/") for w in seen), seen
    assert set(seen.values()) == {expected}, seen


@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_job_and_predictors_share_the_cache_claim(name: str, tmp_path: Path) -> None:
    docs = rendered(name)
    values = values_for(name, tmp_path)
    cache_path = values["storage"]["cache"]["mountPath"]
    clips_path = values["storage"]["clips"]["mountPath"]
    job = one(docs, "Job")
    claims = set()
    users = [("Job", job["spec"]["template"]["spec"])] + [
        (i["metadata"]["name"], i["spec"]["predictor"]) for i in of_kind(docs, "InferenceService")
    ]
    for where, spec in users:
        main = spec["containers"][0]
        mounts = mounts_by_path(spec, main)
        assert cache_path in mounts and clips_path in mounts, where
        claims.add(mounts[cache_path]["persistentVolumeClaim"]["claimName"])
        assert mounts[clips_path]["persistentVolumeClaim"]["readOnly"] is True
        ro = {m["mountPath"]: m.get("readOnly", False) for m in main["volumeMounts"]}
        assert ro[cache_path] is False and ro[clips_path] is True, where
    assert len(claims) == 1, claims
    (claim,) = claims
    if values["storage"]["cache"]["existingClaim"]:
        assert claim == values["storage"]["cache"]["existingClaim"]
        assert all(not p["metadata"]["name"].endswith("-cache") for p in of_kind(docs, "PersistentVolumeClaim"))
    else:
        pvc = next(p for p in of_kind(docs, "PersistentVolumeClaim") if p["metadata"]["name"] == claim)
        assert pvc["spec"]["accessModes"] == values["storage"]["cache"]["accessModes"]


@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_router_reads_the_cache_and_clips_read_only_for_the_try_page(name: str, tmp_path: Path) -> None:
    """The try page lists the cache and plays the clips: the router mounts the predictors' claims, read-only, at
    the paths config.json names; router.tryPage.mountStorage=false leaves both out."""
    docs = rendered(name)
    values = values_for(name, tmp_path)
    config = config_json(docs)
    predictor = next(iter(of_kind(docs, "InferenceService")))["spec"]["predictor"]
    theirs = mounts_by_path(predictor, predictor["containers"][0])
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    router = pod["containers"][0]
    mounts = mounts_by_path(pod, router)
    read_only = {m["mountPath"]: m.get("readOnly", False) for m in router["volumeMounts"]}
    for path in (config["cache_dir"], config["video_clip_dir"]):
        assert path in mounts and read_only[path] is True, path
        assert mounts[path]["persistentVolumeClaim"]["readOnly"] is True
        assert mounts[path]["persistentVolumeClaim"]["claimName"] == theirs[path]["persistentVolumeClaim"]["claimName"]
    assert values["router"]["tryPage"]["mountStorage"] is True

    spec = RENDERINGS[name]
    files = [*spec.get("values", ()), *([values_file(spec["extra"])] if "extra" in spec else [])]
    off = render(*files, extra="router: {tryPage: {mountStorage: false}}")
    pod = one(off, "Deployment")["spec"]["template"]["spec"]
    assert set(mounts_by_path(pod, pod["containers"][0])) == {values["config"]["mountPath"], "/tmp"}


@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_one_inference_service_per_model_and_a_router_url_for_each(name: str, tmp_path: Path) -> None:
    namespace = "audio"
    docs = rendered(name)
    values = values_for(name, tmp_path)
    prefix = values["predictor"]["namePrefix"]
    keys = [m["key"] for m in values["models"]]
    isvcs = {i["metadata"]["name"]: i for i in of_kind(docs, "InferenceService")}
    assert sorted(isvcs) == sorted(prefix + k for k in keys)
    router = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    template = env_of(router)["AUDIO_SCORE_PREDICTOR_URL"]
    assert "{model}" in template
    for key in keys:
        isvc = isvcs[prefix + key]
        # KServe (Standard mode) names the predictor Service <isvc>-predictor, port 80.
        assert template.format(model=key) == f"http://{prefix}{key}-predictor.{namespace}.svc.cluster.local"
        assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
        (container,) = isvc["spec"]["predictor"]["containers"]
        assert container["name"] == "kserve-container"
        assert container["args"][container["args"].index("--model") + 1] == key
        probe = container["readinessProbe"]["httpGet"]
        assert probe["path"] == f"/v2/models/{key}/ready"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["http1"] == 8080 == probe["port"]
        assert ("h2c" in ports) == values["predictor"]["grpc"]["enabled"]
        if "h2c" in ports:
            assert ports["h2c"] == 8081 and "--no-grpc" not in container["args"]
        else:
            assert "--no-grpc" in container["args"]


def test_router_url_follows_namespace_and_prefix() -> None:
    docs = render(sets=("predictor.namePrefix=prod-",), namespace="speech")
    router = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(router)["AUDIO_SCORE_PREDICTOR_URL"] == "http://prod-{model}-predictor.speech.svc.cluster.local"
    names = [i["metadata"]["name"] for i in of_kind(docs, "InferenceService")]
    assert sorted(names) == ["prod-higgs-audio-v2", "prod-whisper-small"]


def _gpu_limit(container: dict[str, Any]) -> Any:
    return ((container.get("resources") or {}).get("limits") or {}).get("nvidia.com/gpu")


def test_no_gpu_anywhere_on_kind() -> None:
    docs = rendered("kind")
    text = yaml.safe_dump_all(docs)
    assert "nvidia.com/gpu" not in text
    for where, spec in pod_specs(docs):
        assert not spec.get("tolerations"), where
        assert not (spec.get("nodeSelector") or {}), where


def test_gpu_resources_only_where_asked() -> None:
    docs = rendered("everything")
    wanted = {"as-whisper-small": 1, "as-higgs-audio-v2": 0, "as-whisper-cpu": 0}
    for isvc in of_kind(docs, "InferenceService"):
        predictor = isvc["spec"]["predictor"]
        gpus = wanted[isvc["metadata"]["name"]]
        assert _gpu_limit(predictor["containers"][0]) == (gpus or None), isvc["metadata"]["name"]
        # device auto follows the pod's GPU: a CPU model beside GPU ones runs on the CPU.
        assert env_of(predictor["containers"][0])["AUDIO_SCORE_DEVICE"] == ("cuda" if gpus else "cpu")
        if gpus:
            assert predictor["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in predictor["tolerations"]
            assert "requests" not in predictor["containers"][0]["resources"] or (
                "nvidia.com/gpu" not in predictor["containers"][0]["resources"]["requests"]
            )
        else:
            assert "nodeSelector" not in predictor and "tolerations" not in predictor
    job = one(docs, "Job")["spec"]["template"]["spec"]
    assert _gpu_limit(job["containers"][0]) == 1 and job["nodeSelector"]
    assert env_of(job["containers"][0])["AUDIO_SCORE_DEVICE"] == "cuda"
    assert _gpu_limit(one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]) is None


#: Each part with its own scheduling, a RuntimeClass for GPU pods, one GPU model, one CPU model, a GPU Job.
GPU_SCHEDULING = """
gpu: {runtimeClassName: nvidia}
models:
  - {key: gpu-model, type: whisper, model_id: m, gpu: 1, nodeSelector: {pool: a, nvidia.com/gpu.present: "no"}}
  - {key: cpu-model, type: whisper, model_id: m, gpu: 0, tolerations: [{key: spot, operator: Exists}]}
predictor: {affinity: {podAntiAffinity: {preferredDuringSchedulingIgnoredDuringExecution: []}}}
cacheJob: {gpu: 2, tolerations: [{key: batch, operator: Exists}]}
"""


def test_gpu_scheduling_is_the_same_for_predictors_and_the_job(isvc_validator: jsonschema.Draft7Validator) -> None:
    """audio-score.gpuScheduling adds gpu.* to a GPU pod's own fields the same way for an InferenceService and the
    Job (the pod's own nodeSelector keys win, tolerations are appended, the RuntimeClass is set); a CPU pod keeps
    only its own."""
    docs = render(extra=GPU_SCHEDULING)
    isvcs = {i["metadata"]["name"]: i for i in of_kind(docs, "InferenceService")}
    for isvc in isvcs.values():
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in isvc_validator.iter_errors(isvc)]
        assert not errors, errors
    job = one(docs, "Job")
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    gpu_tolerations = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    affinity = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}
    gpu_pod = isvcs["gpu-model"]["spec"]["predictor"]
    assert gpu_pod["nodeSelector"] == {"pool": "a", "nvidia.com/gpu.present": "no"}
    assert gpu_pod["tolerations"] == gpu_tolerations
    assert gpu_pod["affinity"] == affinity and gpu_pod["runtimeClassName"] == "nvidia"
    assert _gpu_limit(gpu_pod["containers"][0]) == 1
    cpu_pod = isvcs["cpu-model"]["spec"]["predictor"]
    assert "nodeSelector" not in cpu_pod and "runtimeClassName" not in cpu_pod
    assert cpu_pod["tolerations"] == [{"key": "spot", "operator": "Exists"}] and cpu_pod["affinity"] == affinity
    job_pod = job["spec"]["template"]["spec"]
    assert job_pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert job_pod["tolerations"] == [{"key": "batch", "operator": "Exists"}, *gpu_tolerations]
    assert job_pod["runtimeClassName"] == "nvidia" and "affinity" not in job_pod
    assert _gpu_limit(job_pod["containers"][0]) == 2
    # Unset (the default), no pod names a RuntimeClass.
    assert all("runtimeClassName" not in spec for _, spec in pod_specs(rendered("default")))


@pytest.mark.parametrize("name", ["default", "site"])
def test_default_values_put_every_model_and_the_job_on_a_gpu(name: str) -> None:
    """The defaults are the production shape: a plain `helm install` on a GPU cluster serves both models on GPUs."""
    docs = rendered(name)
    isvcs = of_kind(docs, "InferenceService")
    assert sorted(i["metadata"]["name"] for i in isvcs) == ["higgs-audio-v2", "whisper-small"]
    job = one(docs, "Job")["spec"]["template"]
    for where, spec in [(i["metadata"]["name"], i["spec"]["predictor"]) for i in isvcs] + [("Job", job["spec"])]:
        main = spec["containers"][0]
        assert _gpu_limit(main) == 1, where
        assert env_of(main)["AUDIO_SCORE_DEVICE"] == "cuda", where
        assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}, where
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"], where


@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_restricted_security_context_on_every_pod(name: str) -> None:
    specs = list(pod_specs(rendered(name)))
    kinds = {where.split("/")[0] for where, _ in specs}
    assert kinds == {"Deployment", "Job", "InferenceService", "Pod"}
    for where, spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert isinstance(pod["runAsUser"], int) and pod["runAsUser"] > 0, where
        assert spec.get("automountServiceAccountToken") is False, where
        for c in containers(spec):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (where, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"], (where, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (where, c["name"])
            assert "privileged" not in sc, (where, c["name"])
            tmp = mounts_by_path(spec, c).get("/tmp")
            assert tmp is not None and "emptyDir" in tmp, (where, c["name"], "needs a writable /tmp")
        for field in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(field), (where, field)
        assert not any("hostPath" in v for v in spec.get("volumes") or []), where


def test_every_audio_score_command_parses_with_the_cli() -> None:
    parser = build_parser()
    seen = set()
    for name in RENDERINGS:
        for where, spec in pod_specs(rendered(name)):
            for c in containers(spec):
                if (c.get("command") or [None])[0] != "audio-score":
                    continue
                argv = c["command"][1:] + c.get("args", [])
                args = parser.parse_args(argv)  # SystemExit on an unknown subcommand or flag
                assert args.config == "/etc/audio-score/config.json", where
                seen.add(argv[0])
    assert seen == {"cache-build", "predictor", "router"}


def test_cache_job_is_indexed_and_sharded() -> None:
    job = one(rendered("everything"), "Job")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == 3 and spec["parallelism"] == 2 and spec["activeDeadlineSeconds"] == 7200
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    c = spec["template"]["spec"]["containers"][0]
    args = build_parser().parse_args(c["command"][1:] + c["args"])
    assert args.shards == 3 and args.force is True
    assert args.models == "whisper-small,higgs-audio-v2,whisper-cpu"
    assert env_of(c)["AUDIO_SCORE_DISABLE_CACHE_FLUSH"] == "1"
    assert len(job["metadata"]["name"]) <= 63


#: Values that each change something in the cache Job's spec (its pod template is immutable on the API server).
JOB_CHANGES = {
    "predictor image tag": "images: {predictor: {tag: 0.1.1}}",
    "cache Job image": "images: {cacheJob: {repository: registry.example.com/cache, tag: '1'}}",
    "pull policy": "images: {cacheJob: {pullPolicy: Always}}",
    "resources": "cacheJob: {resources: {limits: {memory: 30Gi}}}",
    "env": "cacheJob: {env: [{name: EXTRA, value: '1'}]}",
    "hub token": "hub: {tokenSecret: {name: hf}}",
    "device": "cacheJob: {device: cpu}",
    "gpu": "cacheJob: {gpu: 2}",
    "config.json": "config: {targetSamplingRate: 22050}",
    "models": "models: [{key: whisper-small, type: whisper, model_id: openai/whisper-base}]",
    "storageUri": "models: [{key: whisper-small, type: whisper, storageUri: 'hf://openai/whisper-small'}]",
    "runId": "cacheJob: {runId: clips-2}",
    "shards": "cacheJob: {shards: 2}",
    "ttl": "cacheJob: {ttlSecondsAfterFinished: 600}",
    "pod annotations": "cacheJob: {podAnnotations: {team: speech}}",
    "node selector": "cacheJob: {nodeSelector: {pool: gpu-a}}",
    "security context": "containerSecurityContext: {runAsNonRoot: true, allowPrivilegeEscalation: false, "
    "readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}, runAsUser: 10002}",
}
#: Values that leave the Job's spec alone.
NOT_JOB_CHANGES = {
    "router replicas": "router: {replicas: 5}",
    "router image": "images: {router: {tag: 0.1.1}}",
    "predictor replicas": "predictor: {maxReplicas: 3}",
    "ingress host": "router: {ingress: {host: a.example.com}}",
}


def _job(extra: str = "") -> dict[str, Any]:
    return one(render(extra=extra), "Job")


def test_cache_job_name_follows_its_whole_spec() -> None:
    """Any change in the Job's spec renames it; identical values give the identical name and spec."""
    base = _job()
    again = one(render(sets=("cacheJob.enabled=true",)), "Job")  # another helm run with the same values
    assert again["metadata"]["name"] == base["metadata"]["name"] and again["spec"] == base["spec"]
    names = {base["metadata"]["name"]}
    for what, extra in JOB_CHANGES.items():
        job = _job(extra)
        assert job["spec"] != base["spec"], f"{what} does not change the Job's spec"
        assert job["metadata"]["name"] != base["metadata"]["name"], f"{what} keeps the Job's name"
        assert len(job["metadata"]["name"]) <= 63
        names.add(job["metadata"]["name"])
    assert len(names) == len(JOB_CHANGES) + 1  # no two different specs share a name
    for what, extra in NOT_JOB_CHANGES.items():
        job = _job(extra)
        assert (job["metadata"]["name"], job["spec"]) == (base["metadata"]["name"], base["spec"]), what


def _immutable_conflicts(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[str]:
    """What the API server would refuse when `new` replaces `old` (an upgrade, or a rollback the other way):
    a same-named Job with another spec (its template, completions, selector... are immutable), a Deployment
    with another selector, a PVC or PV with another spec (beyond a storage request)."""
    before = {(d["kind"], d["metadata"]["name"]): d for d in old}
    conflicts = []
    for doc in new:
        prev = before.get((doc["kind"], doc["metadata"]["name"]))
        if prev is None:
            continue  # created
        if doc["kind"] == "Job" and doc["spec"] != prev["spec"]:
            conflicts.append(f"Job {doc['metadata']['name']}: spec.template is immutable")
        if doc["kind"] == "Deployment" and doc["spec"]["selector"] != prev["spec"]["selector"]:
            conflicts.append(f"Deployment {doc['metadata']['name']}: spec.selector is immutable")
        if doc["kind"] in ("PersistentVolumeClaim", "PersistentVolume"):
            strip = lambda spec: {k: v for k, v in spec.items() if k not in ("resources", "capacity")}  # noqa: E731
            if strip(doc["spec"]) != strip(prev["spec"]):
                conflicts.append(f"{doc['kind']} {doc['metadata']['name']}: spec is immutable")
    return conflicts


@pytest.mark.parametrize("what", sorted(JOB_CHANGES))
def test_upgrade_and_rollback_go_through(what: str) -> None:
    """`helm template` of two revisions (no cluster here): upgrading from the defaults to the changed values
    and rolling back patch nothing immutable; the old Job is deleted and a new one created each way."""
    rev1, rev2 = render(), render(extra=JOB_CHANGES[what])
    assert _immutable_conflicts(rev1, rev2) == []  # helm upgrade
    assert _immutable_conflicts(rev2, rev1) == []  # helm rollback to revision 1
    assert one(rev1, "Job")["metadata"]["name"] != one(rev2, "Job")["metadata"]["name"]


def test_the_upgrade_check_catches_a_patched_job() -> None:
    """The check above can fail: the old naming (a checksum of config.json only) kept the Job's name when the
    image tag changed, which the API server refuses."""
    rev1, rev2 = render(), copy.deepcopy(render(extra=JOB_CHANGES["predictor image tag"]))
    one(rev2, "Job")["metadata"]["name"] = one(rev1, "Job")["metadata"]["name"]
    assert _immutable_conflicts(rev1, rev2) == [
        f"Job {one(rev1, 'Job')['metadata']['name']}: spec.template is immutable"
    ]


def test_storage_initializer_scheme() -> None:
    docs = rendered("everything")
    cfg = {m["key"]: m for m in config_json(docs)["models"]}
    assert cfg["higgs-audio-v2"]["model_id"] == "/mnt/models/higgs-audio-v2"
    assert cfg["whisper-small"]["model_id"] == "openai/whisper-small"
    isvc = next(i for i in of_kind(docs, "InferenceService") if i["metadata"]["name"] == "as-higgs-audio-v2")
    assert isvc["spec"]["predictor"]["storageUris"] == [
        {"uri": "hf://bosonai/higgs-audio-v2-understanding-3B", "mountPath": "/mnt/models/higgs-audio-v2"}
    ]
    others = [i for i in of_kind(docs, "InferenceService") if i is not isvc]
    assert all("storageUris" not in i["spec"]["predictor"] for i in others)
    job = one(docs, "Job")["spec"]["template"]["spec"]
    (init,) = job["initContainers"]
    assert init["image"] == "kserve/storage-initializer:v0.20.0"
    assert init["args"] == ["hf://bosonai/higgs-audio-v2-understanding-3B", "/mnt/models/higgs-audio-v2"]
    assert mounts_by_path(job, init)["/mnt/models"] is mounts_by_path(job, job["containers"][0])["/mnt/models"]
    assert "emptyDir" in mounts_by_path(job, init)["/mnt/models"]


def test_weights_claim_hub_token_and_api_keys() -> None:
    docs = rendered("everything")
    for where, spec in pod_specs(docs):
        main = spec["containers"][0]
        env = env_of(main)
        if where.startswith(("Job", "InferenceService")):
            assert mounts_by_path(spec, main)["/models"]["persistentVolumeClaim"]["claimName"] == "weights"
            assert env["HF_TOKEN"] == {"secretKeyRef": {"name": "hf", "key": "HF_TOKEN"}}
            assert env["HF_HUB_OFFLINE"] == "1"
            hf_home = mounts_by_path(spec, main)[env["HF_HOME"]]
            assert hf_home["persistentVolumeClaim"]["claimName"] == "hf-home"
        if where.startswith(("Deployment", "Pod")):
            assert env["AUDIO_SCORE_API_KEYS"] == {"secretKeyRef": {"name": "keys", "key": "api-keys"}}


def test_kind_values_clips_from_a_hostpath_pv() -> None:
    docs = rendered("kind")
    (pv,) = of_kind(docs, "PersistentVolume")
    claims = {p["metadata"]["name"]: p for p in of_kind(docs, "PersistentVolumeClaim")}
    clips = claims[pv["spec"]["claimRef"]["name"]]
    assert pv["spec"]["hostPath"]["path"] == "/data/reference-videos"
    assert pv["spec"]["storageClassName"] == "" and clips["spec"]["storageClassName"] == ""
    assert clips["spec"]["volumeName"] == pv["metadata"]["name"]
    assert pv["spec"]["claimRef"]["namespace"] == "audio"
    cache = next(p for n, p in claims.items() if n != clips["metadata"]["name"])
    assert cache["spec"]["accessModes"] == ["ReadWriteOnce"] and cache["spec"]["storageClassName"] == "standard"


def test_kind_values_are_small_cpu_whisper_tiny_behind_nginx() -> None:
    values = load_values(KIND_VALUES)
    assert [(m["key"], m["model_id"]) for m in values["models"]] == [("whisper-tiny", "openai/whisper-tiny")]
    assert values["predictor"]["gpu"] == 0 and values["cacheJob"]["gpu"] == 0
    assert all(m.get("gpu", 0) == 0 for m in values["models"])
    docs = rendered("kind")
    assert one(docs, "Ingress")["spec"]["ingressClassName"] == "nginx"
    isvc = one(docs, "InferenceService")
    assert isvc["spec"]["predictor"]["containers"][0]["resources"]["requests"]["cpu"] == "250m"


#: Values that set, in their own maps, keys the chart also sets: the deployment mode and the model label, the
#: standard labels, the pods' config checksum and the Job's run id.
OVERRIDING = """
models:
  - key: whisper-small
    type: whisper
    model_id: openai/whisper-small
    annotations: {serving.kserve.io/deploymentMode: RawDeployment, team: speech}
    labels: {audio-score/model: small, app.kubernetes.io/part-of: lessons}
commonLabels: {app.kubernetes.io/managed-by: gitops, tier: ml}
router: {podAnnotations: {checksum/config: ""}}
cacheJob: {runId: "7", podAnnotations: {audio-score/run-id: "8"}}
"""


def test_a_key_the_chart_and_the_values_both_set_is_written_once_with_the_values_one() -> None:
    """Annotations and labels are merged once, the user's value winning: no mapping holds a key twice (which
    a strict decoder refuses; helm and the API server would keep the last silently)."""
    with pytest.raises(DuplicateKeyError):  # the decoder the check relies on is strict
        strict_load_all("a: 1\na: 2\n")
    text = helm(*template_args((values_file(OVERRIDING),))).stdout
    docs = strict_load_all(text)
    isvc = one(docs, "InferenceService")
    assert isvc["metadata"]["annotations"] == {"serving.kserve.io/deploymentMode": "RawDeployment", "team": "speech"}
    labels = isvc["metadata"]["labels"]
    assert labels["audio-score/model"] == "small" and labels["app.kubernetes.io/part-of"] == "lessons"
    assert labels["app.kubernetes.io/managed-by"] == "gitops" and labels["tier"] == "ml"
    assert labels["app.kubernetes.io/component"] == "predictor"  # the chart's other labels stay
    router = one(docs, "Deployment")
    assert router["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "gitops"
    assert router["spec"]["template"]["metadata"]["annotations"] == {"checksum/config": ""}  # even an empty one
    job = one(docs, "Job")["spec"]["template"]["metadata"]["annotations"]
    assert job["audio-score/run-id"] == "8" and len(job["checksum/config"]) == 64
    # Without overrides, the chart's own values are there.
    for isvc in of_kind(rendered("default"), "InferenceService"):
        assert isvc["metadata"]["annotations"] == {"serving.kserve.io/deploymentMode": "Standard"}
        assert isvc["metadata"]["labels"]["audio-score/model"] == isvc["metadata"]["name"]


def test_a_model_moved_to_the_cpu_runs_on_the_cpu() -> None:
    """With the GPU defaults, `gpu: 0` on one model is enough: device auto becomes cpu there, no GPU asked."""
    extra = "models: [{key: whisper-small, type: whisper, model_id: openai/whisper-small, gpu: 0}]"
    (container,) = one(render(extra=extra), "InferenceService")["spec"]["predictor"]["containers"]
    assert env_of(container)["AUDIO_SCORE_DEVICE"] == "cpu" and _gpu_limit(container) is None
    job = one(render(sets=("cacheJob.gpu=0",)), "Job")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(job)["AUDIO_SCORE_DEVICE"] == "cpu" and _gpu_limit(job) is None
    pinned = one(render(sets=("cacheJob.device=cuda", "cacheJob.gpu=0")), "Job")["spec"]["template"]["spec"]
    assert env_of(pinned["containers"][0])["AUDIO_SCORE_DEVICE"] == "cuda"  # an explicit device passes through


def test_default_models_are_the_repo_config_models() -> None:
    """The chart's default models are the repo config.json's models, all of them, field for field."""
    repo_cfg = json.loads((CHART.parent.parent / "config.json").read_text())
    assert config_json(rendered("default"))["models"] == repo_cfg["models"]


def test_router_deployment_probes_service_hpa_pdb_ingress() -> None:
    docs = rendered("default")
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert env_of(c)["AUDIO_SCORE_SERVER_HOST"] == "0.0.0.0"
    assert env_of(c)["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    pdb = one(docs, "PodDisruptionBudget")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    assert one(docs, "Service")["spec"]["selector"] == selector
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    ingress = one(docs, "Ingress")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == one(docs, "Service")["metadata"]["name"]
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "30m"


def test_network_policies_admit_the_router_and_ingress_only() -> None:
    docs = rendered("default")
    policies = {p["metadata"]["name"].rsplit("-", 1)[-1]: p for p in of_kind(docs, "NetworkPolicy")}
    router_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    test_labels = one(docs, "Pod")["metadata"]["labels"]
    predictors = policies["predictors"]["spec"]
    (expr,) = predictors["podSelector"]["matchExpressions"]
    assert expr["key"] == "serving.kserve.io/inferenceservice"
    assert expr["values"] == ["whisper-small", "higgs-audio-v2"]
    peers = predictors["ingress"][0]["from"]
    selectors = [p["podSelector"]["matchLabels"] for p in peers if "podSelector" in p]
    assert any(s.items() <= router_labels.items() for s in selectors)
    assert any(s.items() <= test_labels.items() for s in selectors)
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kserve"}}} in peers
    assert [p["port"] for p in predictors["ingress"][0]["ports"]] == [8080]
    router = policies["router"]["spec"]
    assert router["podSelector"]["matchLabels"].items() <= router_labels.items()
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}} in router[
        "ingress"
    ][0]["from"]


@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_standard_labels_on_every_object(name: str) -> None:
    for doc in rendered(name):
        labels = doc["metadata"]["labels"]
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by"):
            assert labels.get(key), (doc["kind"], doc["metadata"]["name"], key)
        assert labels["helm.sh/chart"] == "audio-score-0.1.0"


def test_helm_test_pod_scores_the_configured_clip() -> None:
    docs = render(sets=("tests.uid=vid7", "tests.cid=c2", "tests.model=whisper-small"))
    pod = one(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    env = env_of(pod["spec"]["containers"][0])
    assert (env["TEST_UID"], env["TEST_CID"], env["TEST_MODEL"]) == ("vid7", "c2", "whisper-small")
    service = one(docs, "Service")
    assert env["ROUTER_URL"] == f"http://{service['metadata']['name']}.audio.svc.cluster.local:80"
    script = next(d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-test"))
    source = script["data"]["helm_test.py"]
    compile(source, "helm_test.py", "exec")
    assert "/healthz" in source and "/score" in source
    assert pod["spec"]["containers"][0]["image"] == "audio-score-router:0.1.0"


def test_notes_render() -> None:
    proc = helm("install", "rel", str(CHART), "--dry-run=client", "-n", "audio", "-f", str(KIND_VALUES))
    assert "curl" in proc.stdout and "/score" in proc.stdout and "helm test rel" in proc.stdout


@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_each_pod_gets_only_variables_its_part_reads(name: str) -> None:
    """Every ``AUDIO_SCORE_*`` variable the chart sets on a pod is declared by that pod's part (RouterEnv,
    PredictorEnv, JobEnv): the chart never sets a knob the pod would ignore, e.g. a predictor's on the router."""
    from audio_score.env_settings import env_name

    checked = set()
    for where, spec in pod_specs(rendered(name)):
        if "-test" in where:
            continue
        part = (
            JobEnv if where.startswith("Job/") else PredictorEnv if where.startswith("InferenceService/") else RouterEnv
        )
        declared = {env_name(n, f) for n, f in part.model_fields.items()}
        given = {k for k in env_of(spec["containers"][0]) if k.startswith("AUDIO_SCORE_")}
        assert given <= declared, f"{where}: {sorted(given - declared)} are not {part.__name__}'s"
        checked.add(part)
    assert checked == {JobEnv, PredictorEnv, RouterEnv}
