#!/usr/bin/env bash
# End-to-end on kind: cluster, cert-manager, KServe (Standard mode), ingress-nginx, the images, the chart with
# values-kind.yaml, then POST /score through the Ingress on http://localhost and a check of the JSON.
#
#   scripts/kind-e2e.sh [--keep] [--name CLUSTER] [--no-build]     (make kind-e2e)
#
# Needs docker (running), kind, kubectl and helm (helm/kubectl from .tools/bin work too:
# `python scripts/install_helm.py --with-kubectl`), and the venv (make venv) for the waiting helper and the
# sample clip. Host ports 80 and 443 must be free. Deletes the cluster at the end unless --keep.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER=audio-score-e2e
KEEP=0
BUILD=1
NAMESPACE=audio-score
RELEASE=audio-score
TAG=0.1.0
CERT_MANAGER_VERSION=v1.17.0
KSERVE_VERSION=v0.20.0
INGRESS_NGINX_VERSION=controller-v1.15.1
VALUES="$ROOT/charts/audio-score/values-kind.yaml"
CLIP_UID=kind-e2e
CLIP_CID=clip-001

while [ $# -gt 0 ]; do
    case "$1" in
        --keep) KEEP=1 ;;
        --no-build) BUILD=0 ;;
        --name) CLUSTER="$2"; shift ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "kind-e2e: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

log() { printf '\n==> %s\n' "$*"; }
die() { echo "kind-e2e: $*" >&2; exit 1; }

# --- fail fast, naming every missing tool -------------------------------------------------------------------
export PATH="$PATH:$ROOT/.tools/bin"
missing=()
for tool in docker kind kubectl helm; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "kind-e2e: missing required tool(s): ${missing[*]}" >&2
    echo "  docker: https://docs.docker.com/engine/install/   kind: https://kind.sigs.k8s.io/docs/user/quick-start/" >&2
    echo "  kubectl and helm: python scripts/install_helm.py --with-kubectl (into .tools/bin), or your package manager" >&2
    exit 2
fi
docker info >/dev/null 2>&1 || die "docker is installed but its daemon is not running (docker info failed); start Docker first"
PY="$ROOT/.venv/bin/python"
[ -x "$PY" ] || die "no virtual environment at .venv (needed for scripts/kind_wait.py): run make venv"
"$PY" -c "import kubernetes" 2>/dev/null || die ".venv lacks the kubernetes client: run make venv"

cd "$ROOT"
CTX="kind-$CLUSTER"
CREATED_CLIP=""
ok=0
cleanup() {
    local rc=$?
    if [ "$ok" != 1 ] && kubectl --context "$CTX" get ns "$NAMESPACE" >/dev/null 2>&1; then
        log "failure: pods, events and logs"
        "$PY" scripts/kind_wait.py logs --context "$CTX" --namespace "$NAMESPACE" --out "$ROOT/.work/kind-e2e-logs" || true
    fi
    if [ "$KEEP" = 1 ]; then
        log "keeping cluster $CLUSTER (kubectl --context $CTX ...; delete: kind delete cluster --name $CLUSTER)"
    else
        log "deleting cluster $CLUSTER"
        kind delete cluster --name "$CLUSTER" || true
        [ -n "$CREATED_CLIP" ] && rm -f "$CREATED_CLIP"
    fi
    exit "$rc"
}
trap cleanup EXIT

# --- a reference clip in the folder kind mounts into every node ---------------------------------------------
CLIP="data/reference-videos/$CLIP_UID/$CLIP_CID.mov"
if [ ! -f "$CLIP" ]; then
    log "writing the sample clip $CLIP"
    mkdir -p "$(dirname "$CLIP")"
    "$PY" -c "
from audio_score_tools.media import synth_speechlike, write_clip_mov
write_clip_mov('$CLIP', synth_speechlike(3.0, 16000, seed=7), 16000)
"
    CREATED_CLIP="$CLIP"
fi

# --- cluster ------------------------------------------------------------------------------------------------
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    log "reusing kind cluster $CLUSTER"
else
    log "creating kind cluster $CLUSTER"
    kind create cluster --name "$CLUSTER" --config kind-config.yaml --wait 180s
fi
K="kubectl --context $CTX"

log "cert-manager $CERT_MANAGER_VERSION"
$K apply -f "https://github.com/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml"
$K -n cert-manager rollout status deploy/cert-manager deploy/cert-manager-cainjector deploy/cert-manager-webhook --timeout=300s

log "KServe $KSERVE_VERSION (Standard mode)"
helm --kube-context "$CTX" upgrade --install kserve-crd oci://ghcr.io/kserve/charts/kserve-crd \
    --version "$KSERVE_VERSION" -n kserve --create-namespace --wait
helm --kube-context "$CTX" upgrade --install kserve oci://ghcr.io/kserve/charts/kserve-resources \
    --version "$KSERVE_VERSION" -n kserve --wait --timeout 10m \
    --set kserve.controller.deploymentMode=Standard \
    --set kserve.controller.gateway.ingressGateway.className=nginx

log "ingress-nginx ($INGRESS_NGINX_VERSION, kind manifest), pinned to the port-mapped control-plane"
$K apply -f "https://raw.githubusercontent.com/kubernetes/ingress-nginx/$INGRESS_NGINX_VERSION/deploy/static/provider/kind/deploy.yaml"
$K -n ingress-nginx patch deployment ingress-nginx-controller --type merge \
    -p '{"spec":{"template":{"spec":{"nodeSelector":{"ingress-ready":"true","kubernetes.io/os":"linux"}}}}}'
$K -n ingress-nginx rollout status deploy/ingress-nginx-controller --timeout=300s
$K -n ingress-nginx wait --for=condition=Complete job --all --timeout=300s   # the admission webhook's certs

# --- images ---------------------------------------------------------------------------------------------------
if [ "$BUILD" = 1 ]; then
    log "building images (CPU torch for the predictor: kind has no GPUs)"
    docker build -f router/Dockerfile -t "audio-score-router:$TAG" .
    docker build -f predictors/Dockerfile -t "audio-score-predictor:$TAG" \
        --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
fi
log "loading images into kind"
kind load docker-image --name "$CLUSTER" "audio-score-router:$TAG" "audio-score-predictor:$TAG"

# --- the chart ------------------------------------------------------------------------------------------------
log "helm install $RELEASE -f values-kind.yaml"
helm --kube-context "$CTX" upgrade --install "$RELEASE" charts/audio-score -n "$NAMESPACE" --create-namespace \
    -f "$VALUES"
"$PY" scripts/kind_wait.py wait --context "$CTX" --namespace "$NAMESPACE" --release "$RELEASE" --timeout 2400

# --- POST /score through the Ingress ----------------------------------------------------------------------
log "POST http://localhost/score (the clip scored against itself)"
body=$(curl -sS --fail-with-body --max-time 300 -F uid="$CLIP_UID" -F cid="$CLIP_CID" -F "audio=@$CLIP" http://localhost/score) \
    || die "POST /score failed: $body"
echo "$body"
"$PY" - "$body" <<'PYEOF'
import json, sys
body = json.loads(sys.argv[1])
for key in ("sim_score", "audio_sim_score", "text_sim_score"):
    assert isinstance(body.get(key), (int, float)) and 0.0 <= body[key] <= 1.0, f"{key}: {body.get(key)!r}"
assert body["model"] == "whisper-tiny", body["model"]
assert body["audio_sim_score"] >= 0.99, f"a clip against itself should score ~1.0, got {body['audio_sim_score']}"
print("score JSON ok")
PYEOF

log "helm test $RELEASE"
helm --kube-context "$CTX" test "$RELEASE" -n "$NAMESPACE" --logs --timeout 10m

ok=1
log "kind e2e passed"
