{{/*
The cache Job's spec (everything under `spec:`, indented for it, starting with a newline). A helper so that the
Job's name can carry a hash of it: a Job's pod template is immutable, so any change in it (image, resources,
env, config.json, shards, runId, ...) must create a Job under a new name instead of patching the old one, and
identical values must keep the finished Job.
*/}}
{{- define "audio-score.cacheJobSpec" -}}
{{- $j := .Values.cacheJob }}
{{- $gpu := int $j.gpu }}
{{- $keys := $j.models }}
{{- if not $keys }}{{ $keys = list }}{{ range .Values.models }}{{ $keys = append $keys .key }}{{ end }}{{ end }}
  completionMode: Indexed
  completions: {{ $j.shards }}
  parallelism: {{ default $j.shards $j.parallelism }}
  backoffLimitPerIndex: {{ $j.backoffLimitPerIndex }}
  backoffLimit: {{ $j.backoffLimit }}
  {{- if not (kindIs "invalid" $j.ttlSecondsAfterFinished) }}
  ttlSecondsAfterFinished: {{ $j.ttlSecondsAfterFinished }}
  {{- end }}
  {{- if not (kindIs "invalid" $j.activeDeadlineSeconds) }}
  activeDeadlineSeconds: {{ $j.activeDeadlineSeconds }}
  {{- end }}
  template:
    metadata:
      labels:
        {{- include "audio-score.selectorLabels" (dict "ctx" . "component" "cache-job") | nindent 8 }}
      {{- $own := dict "checksum/config" (include "audio-score.configJson" . | sha256sum) }}
      {{- with $j.runId }}{{ $_ := set $own "audio-score/run-id" (toString .) }}{{ end }}
      annotations:
        {{- include "audio-score.mergedMap" (list $own $j.podAnnotations) | nindent 8 }}
    spec:
      restartPolicy: Never
      automountServiceAccountToken: false
      {{- with .Values.predictor.serviceAccountName }}
      serviceAccountName: {{ . }}
      {{- end }}
      securityContext:
        {{- include "audio-score.podSecurityContext" . | nindent 8 }}
      {{- with .Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- $si := list }}
      {{- range .Values.models }}{{ if and .storageUri (has .key $keys) }}{{ $si = append $si . }}{{ end }}{{ end }}
      {{- if $si }}
      # KServe's storage initializer, once per model with storageUri, into the folder config.json names.
      initContainers:
        {{- range $si }}
        - name: {{ printf "weights-%s" .key | trunc 63 | trimSuffix "-" }}
          image: {{ printf "%s:%s" $.Values.storageInitializer.image.repository $.Values.storageInitializer.image.tag }}
          imagePullPolicy: {{ $.Values.storageInitializer.image.pullPolicy }}
          args:
            - {{ .storageUri | quote }}
            - {{ include "audio-score.storageMountPath" (dict "ctx" $ "key" .key) | quote }}
          env:
            - name: HOME
              value: /tmp
            - name: HF_HOME
              value: /tmp/hf
            {{- if $.Values.hub.tokenSecret.name }}
            - name: HF_TOKEN
              valueFrom:
                secretKeyRef:
                  name: {{ $.Values.hub.tokenSecret.name }}
                  key: {{ $.Values.hub.tokenSecret.key }}
            {{- end }}
          resources:
            {{- toYaml $.Values.storageInitializer.resources | nindent 12 }}
          securityContext:
            {{- include "audio-score.containerSecurityContext" $ | nindent 12 }}
          volumeMounts:
            - name: weights
              mountPath: {{ $.Values.storageInitializer.mountRoot }}
            - name: tmp
              mountPath: /tmp
        {{- end }}
      {{- end }}
      containers:
        - name: cache-build
          image: {{ include "audio-score.cacheJobImage" . }}
          imagePullPolicy: {{ default .Values.images.predictor.pullPolicy .Values.images.cacheJob.pullPolicy }}
          command: ["audio-score", "cache-build"]
          args:
            - --config
            - {{ include "audio-score.configPath" . }}
            - --shards
            - {{ $j.shards | quote }}
            - --models
            - {{ join "," $keys | quote }}
            - --no-progress
            {{- if $j.force }}
            - --force
            {{- end }}
          env:
            {{- include "audio-score.commonEnv" . | nindent 12 }}
            - name: AUDIO_SCORE_DEVICE
              value: {{ include "audio-score.device" (dict "device" $j.device "gpu" $gpu) | quote }}
            {{- include "audio-score.cpuLimitEnv" . | nindent 12 }}
            {{- if $j.disableCacheFlush }}
            - name: AUDIO_SCORE_DISABLE_CACHE_FLUSH
              value: "1"
            {{- end }}
            {{- with $j.env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          resources:
            {{- include "audio-score.gpuResources" (dict "ctx" . "gpu" $gpu "resources" $j.resources) | nindent 12 }}
          securityContext:
            {{- include "audio-score.containerSecurityContext" . | nindent 12 }}
          volumeMounts:
            {{- include "audio-score.modelVolumeMounts" . | nindent 12 }}
            {{- if $si }}
            - name: weights
              mountPath: {{ .Values.storageInitializer.mountRoot }}
              readOnly: true
            {{- end }}
      volumes:
        {{- include "audio-score.modelVolumes" . | nindent 8 }}
        {{- if $si }}
        - name: weights
          emptyDir:
            sizeLimit: {{ .Values.storageInitializer.sizeLimit }}
        {{- end }}
      {{- with include "audio-score.gpuScheduling" (dict "ctx" . "gpu" $gpu "nodeSelector" $j.nodeSelector "tolerations" $j.tolerations "affinity" $j.affinity) | trim }}
      {{- . | nindent 6 }}
      {{- end }}
{{- end }}
