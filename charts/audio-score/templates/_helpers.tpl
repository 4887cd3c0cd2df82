{{/*
Names, labels, images and the pieces every pod shares (config.json, cache, clips, security contexts).
*/}}

{{- define "audio-score.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped base name; kept short (40) so "<fullname>-cache-<checksum>" still fits 63. */}}
{{- define "audio-score.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "audio-score.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
One YAML mapping from a list of maps (null entries skipped), a later map's value winning key by key: a key the
chart sets and the user's values set too is written once, with the user's value (a key written twice is kept
last by helm and the API server but refused by strict YAML decoders). sprig's mustMergeOverwrite into a fresh
dict, so no values map is changed. Call with (list $chartMap $userMap ...).
*/}}
{{- define "audio-score.mergedMap" -}}
{{- $out := dict }}
{{- range . }}{{ $out = mustMergeOverwrite $out (deepCopy (default dict .)) }}{{ end }}
{{- with $out }}{{ toYaml . }}{{ end }}
{{- end }}

{{/*
Standard labels (helm.sh chart best practices), then the object's own ("own"), then commonLabels, then the
object's user labels ("user"), merged once by audio-score.mergedMap. Call with
(dict "ctx" $ "component" "router") and optionally "own" and "user" maps.
*/}}
{{- define "audio-score.labels" -}}
{{- $ctx := .ctx -}}
{{- $chart := include "audio-score.selectorLabels" . | fromYaml }}
{{- $_ := set $chart "helm.sh/chart" (include "audio-score.chart" $ctx) }}
{{- $_ = set $chart "app.kubernetes.io/version" (toString $ctx.Chart.AppVersion) }}
{{- $_ = set $chart "app.kubernetes.io/managed-by" $ctx.Release.Service }}
{{- $_ = set $chart "app.kubernetes.io/part-of" "audio-score" }}
{{- include "audio-score.mergedMap" (list $chart .own $ctx.Values.commonLabels .user) }}
{{- end }}

{{- define "audio-score.selectorLabels" -}}
{{- $labels := dict "app.kubernetes.io/name" (include "audio-score.name" .ctx) "app.kubernetes.io/instance" .ctx.Release.Name }}
{{- with .component }}{{ $_ := set $labels "app.kubernetes.io/component" . }}{{ end }}
{{- toYaml $labels }}
{{- end }}

{{/* "repository:tag"; tag defaults to the chart's appVersion. Call with (dict "ctx" $ "image" .Values.images.router). */}}
{{- define "audio-score.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion (toString (default "" .image.tag))) }}
{{- end }}

{{/* The cache Job's image: images.cacheJob when its repository is set, else the predictor's image. */}}
{{- define "audio-score.cacheJobImage" -}}
{{- if .Values.images.cacheJob.repository }}
{{- include "audio-score.image" (dict "ctx" . "image" .Values.images.cacheJob) }}
{{- else }}
{{- include "audio-score.image" (dict "ctx" . "image" .Values.images.predictor) }}
{{- end }}
{{- end }}

{{/* The router's Deployment, Service, HPA, PDB, Ingress and HTTPRoute all carry this name. */}}
{{- define "audio-score.routerName" -}}
{{- printf "%s-router" (include "audio-score.fullname" .) }}
{{- end }}

{{/* InferenceService name of a model key: predictor.namePrefix + key (the V2 model name stays the key). */}}
{{- define "audio-score.isvcName" -}}
{{- printf "%s%s" .ctx.Values.predictor.namePrefix .key }}
{{- end }}

{{/* The router's AUDIO_SCORE_PREDICTOR_URL: KServe's Standard-mode predictor Service of each InferenceService. */}}
{{- define "audio-score.predictorUrlTemplate" -}}
{{- if .Values.router.predictorUrl }}
{{- .Values.router.predictorUrl }}
{{- else }}
{{- printf "http://%s{model}-predictor.%s.svc.%s" .Values.predictor.namePrefix .Release.Namespace .Values.clusterDomain }}
{{- end }}
{{- end }}

{{/* Where a model's weights land when it uses storageUri (KServe's storage initializer / the Job's init container). */}}
{{- define "audio-score.storageMountPath" -}}
{{- printf "%s/%s" (trimSuffix "/" .ctx.Values.storageInitializer.mountRoot) .key }}
{{- end }}

{{/*
config.json, shared by the Job, every predictor and the router. A model's serving knobs (gpu, resources,
replicas, storageUri, ...) stay out of it; a model with storageUri gets model_id = <mountRoot>/<key>.
*/}}
{{- define "audio-score.configJson" -}}
{{- $models := list }}
{{- range .Values.models }}
{{- $m := dict "key" .key "type" .type }}
{{- if .storageUri }}
{{- $_ := set $m "model_id" (include "audio-score.storageMountPath" (dict "ctx" $ "key" .key)) }}
{{- else }}
{{- $_ := set $m "model_id" .model_id }}
{{- end }}
{{- $src := . }}
{{- range $field := list "processor_id" "transcriber_id" "revision" "language" "max_new_tokens" }}
{{- if and (hasKey $src $field) (not (kindIs "invalid" (index $src $field))) }}
{{- $_ := set $m $field (index $src $field) }}
{{- end }}
{{- end }}
{{- $models = append $models $m }}
{{- end }}
{{- $cfg := dict "models" $models "video_clip_dir" .Values.storage.clips.mountPath "cache_dir" .Values.storage.cache.mountPath "target_sampling_rate" .Values.config.targetSamplingRate }}
{{- with .Values.config.maxUploadBytes }}
{{- $_ := set $cfg "max_upload_bytes" . }}
{{- end }}
{{- with .Values.config.maxAudioSeconds }}
{{- $_ := set $cfg "max_audio_seconds" . }}
{{- end }}
{{- with .Values.config.audioSimilarity }}
{{- $_ := set $cfg "audio_similarity" . }}
{{- end }}
{{- with .Values.config.textSimilarity }}
{{- $_ := set $cfg "text_similarity" . }}
{{- end }}
{{- if not (kindIs "invalid" .Values.config.forcedText) }}
{{- $_ := set $cfg "forced_text" .Values.config.forcedText }}
{{- end }}
{{- with .Values.config.decoder }}
{{- $_ := set $cfg "decoder" . }}
{{- end }}
{{- toPrettyJson $cfg }}
{{- end }}

{{- define "audio-score.configMapName" -}}
{{- printf "%s-config" (include "audio-score.fullname" .) }}
{{- end }}

{{- define "audio-score.configPath" -}}
{{- printf "%s/config.json" (trimSuffix "/" .Values.config.mountPath) }}
{{- end }}

{{- define "audio-score.cacheClaimName" -}}
{{- default (printf "%s-cache" (include "audio-score.fullname" .)) .Values.storage.cache.existingClaim }}
{{- end }}

{{- define "audio-score.clipsClaimName" -}}
{{- default (printf "%s-clips" (include "audio-score.fullname" .)) .Values.storage.clips.existingClaim }}
{{- end }}

{{- define "audio-score.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "audio-score.containerSecurityContext" -}}
{{ toYaml .Values.containerSecurityContext }}
{{- end }}

{{/* Environment every part gets. Call with the root context. */}}
{{- define "audio-score.commonEnv" -}}
- name: AUDIO_SCORE_CONFIG
  value: {{ include "audio-score.configPath" . | quote }}
- name: HOME
  value: /tmp
- name: HF_HOME
  value: {{ .Values.hub.home.mountPath | quote }}
{{- if .Values.hub.offline }}
- name: HF_HUB_OFFLINE
  value: "1"
{{- end }}
{{- if .Values.hub.tokenSecret.name }}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.hub.tokenSecret.name }}
      key: {{ .Values.hub.tokenSecret.key }}
{{- end }}
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end }}

{{/*
Volumes of a model-running pod (Job, predictors): config, cache, clips, /tmp, HF_HOME, optional weights PVC.
*/}}
{{- define "audio-score.modelVolumes" -}}
- name: config
  configMap:
    name: {{ include "audio-score.configMapName" . }}
- name: cache
  persistentVolumeClaim:
    claimName: {{ include "audio-score.cacheClaimName" . }}
- name: clips
  persistentVolumeClaim:
    claimName: {{ include "audio-score.clipsClaimName" . }}
    readOnly: true
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- if .Values.hub.home.existingClaim }}
- name: hf-home
  persistentVolumeClaim:
    claimName: {{ .Values.hub.home.existingClaim }}
{{- else }}
- name: hf-home
  emptyDir:
    sizeLimit: {{ .Values.hub.home.sizeLimit }}
{{- end }}
{{- if .Values.modelWeights.existingClaim }}
- name: model-weights
  persistentVolumeClaim:
    claimName: {{ .Values.modelWeights.existingClaim }}
    readOnly: true
{{- end }}
{{- end }}

{{- define "audio-score.modelVolumeMounts" -}}
- name: config
  mountPath: {{ .Values.config.mountPath }}
  readOnly: true
- name: cache
  mountPath: {{ .Values.storage.cache.mountPath }}
- name: clips
  mountPath: {{ .Values.storage.clips.mountPath }}
  readOnly: true
- name: tmp
  mountPath: /tmp
- name: hf-home
  mountPath: {{ .Values.hub.home.mountPath }}
{{- if .Values.modelWeights.existingClaim }}
- name: model-weights
  mountPath: {{ .Values.modelWeights.mountPath }}
  readOnly: true
{{- end }}
{{- end }}

{{/*
GPU scheduling, shared by every InferenceService and the cache Job: two helpers because Kubernetes splits it
between the container (the limit) and the pod (where it may run). Both take (dict "ctx" $ "gpu" N ...) with the
component's own values, and add the GPU parts only when gpu > 0.

audio-score.gpuResources: the container's resources (dict ... "resources" R) plus the gpu.resourceName limit.
*/}}
{{- define "audio-score.gpuResources" -}}
{{- $res := deepCopy (default dict .resources) }}
{{- if gt (int .gpu) 0 }}
{{- $limits := deepCopy (default dict (get $res "limits")) }}
{{- $_ := set $limits .ctx.Values.gpu.resourceName (int .gpu) }}
{{- $_ := set $res "limits" $limits }}
{{- end }}
{{- toYaml $res }}
{{- end }}

{{/*
audio-score.gpuScheduling: the pod-spec fields nodeSelector, tolerations, affinity and runtimeClassName, from (dict
... "nodeSelector" NS "tolerations" T "affinity" A): with gpu > 0, gpu.nodeSelector is merged under NS (the
component's own keys win), gpu.tolerations are appended to T and gpu.runtimeClassName (when set) is the pod's.
Renders at column 0, nothing when all are empty: use it as
  {{- with include "audio-score.gpuScheduling" (dict ...) | trim }}{{ . | nindent N }}{{ end }}
*/}}
{{- define "audio-score.gpuScheduling" -}}
{{- $ns := .nodeSelector }}
{{- $tol := default list .tolerations }}
{{- if gt (int .gpu) 0 }}
{{- $ns = merge (deepCopy (default dict .nodeSelector)) .ctx.Values.gpu.nodeSelector }}
{{- $tol = concat $tol .ctx.Values.gpu.tolerations }}
{{- end }}
{{- with $ns }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $tol }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if and (gt (int .gpu) 0) .ctx.Values.gpu.runtimeClassName }}
runtimeClassName: {{ .ctx.Values.gpu.runtimeClassName }}
{{- end }}
{{- end }}

{{/*
AUDIO_SCORE_DEVICE of a pod, from (dict "device" D "gpu" N): "auto" becomes cuda when the pod gets a GPU and cpu
when it does not, so a GPU pod that cannot see its GPU fails at start instead of silently running on the CPU,
and a model moved to gpu 0 runs on the CPU without also changing its device. cpu / cuda pass through.
*/}}
{{- define "audio-score.device" -}}
{{- if eq (toString .device) "auto" }}{{ gt (int .gpu) 0 | ternary "cuda" "cpu" }}{{ else }}{{ .device }}{{ end }}
{{- end }}

{{/* The static hostPath PV of the clips (cluster-scoped, so the namespace is part of the name). */}}
{{- define "audio-score.clipsPvName" -}}
{{- printf "%s-%s-clips" .Release.Namespace (include "audio-score.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The cache Job's name: "<fullname>-cache-" + a hash of the Job's whole rendered spec (audio-score.cacheJobSpec),
so anything that changes the immutable pod template renames the Job, and identical values keep its name.
*/}}
{{- define "audio-score.cacheJobName" -}}
{{- printf "%s-cache-%s" (include "audio-score.fullname" .) (include "audio-score.cacheJobSpec" . | sha256sum | trunc 10) }}
{{- end }}

{{/*
The container's CPU limit in millicores (downward API), from which the predictor and the cache Job size torch's
intra-op threads (audio_score/threads.py). Without a limit Kubernetes passes the node's allocatable CPU.
AUDIO_SCORE_TORCH_THREADS in a component's env overrides it.
*/}}
{{- define "audio-score.cpuLimitEnv" -}}
- name: AUDIO_SCORE_CPU_LIMIT_MILLICORES
  valueFrom:
    resourceFieldRef:
      resource: limits.cpu
      divisor: 1m
{{- end }}
