{{/* Names and labels, the usual way. */}}
{{- define "dispatchd.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dispatchd.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "dispatchd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dispatchd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "dispatchd.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "dispatchd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "dispatchd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "dispatchd.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
Seconds the pod keeps serving after termination starts, before SIGTERM (a preStop sleep).
Default: 5 with backend redis (other replicas take the new calls meanwhile), 0 (no hook) with
embedded, where there is no other replica to go to.
*/}}
{{- define "dispatchd.preStopSleep" -}}
{{- $sleep := .Values.preStopSleepSeconds -}}
{{- if kindIs "invalid" $sleep -}}
{{- $sleep = ternary 5 0 (eq .Values.backend "redis") -}}
{{- end -}}
{{- int $sleep -}}
{{- end -}}

{{/*
The kubelet kills the container this long after termination starts (the preStop sleep counts
too): it must outlast the sleep plus the drain.
*/}}
{{- define "dispatchd.terminationGrace" -}}
{{- $drain := int (ceil .Values.server.drainGrace) -}}
{{- $sleep := int (include "dispatchd.preStopSleep" .) -}}
{{- $grace := .Values.terminationGracePeriodSeconds -}}
{{- if kindIs "invalid" $grace -}}
{{- $grace = add $drain $sleep 15 -}}
{{- end -}}
{{- if le (int $grace) (add $drain $sleep) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed server.drainGrace (%d) plus preStopSleepSeconds (%d), or the kubelet kills dispatchd mid-drain" (int $grace) $drain $sleep) -}}
{{- end -}}
{{- int $grace -}}
{{- end -}}

{{/* Refuses values that mix the two backends or leave redis mode without a Redis. */}}
{{- define "dispatchd.checkBackend" -}}
{{- $redis := .Values.redis -}}
{{- if eq .Values.backend "redis" -}}
{{- if and $redis.existingSecret $redis.bundled.enabled -}}
{{- fail "backend redis: set redis.existingSecret or redis.bundled.enabled, not both" -}}
{{- end -}}
{{- if not (or $redis.existingSecret $redis.bundled.enabled) -}}
{{- fail "backend redis needs a Redis: redis.existingSecret (a Secret holding the URL under redis.secretKey) or redis.bundled.enabled" -}}
{{- end -}}
{{- else if or $redis.existingSecret $redis.bundled.enabled -}}
{{- fail "redis.existingSecret and redis.bundled are only used with backend: redis" -}}
{{- end -}}
{{- end -}}

{{- define "dispatchd.redisName" -}}
{{- printf "%s-redis" (include "dispatchd.fullname" . | trunc 57 | trimSuffix "-") -}}
{{- end -}}

{{/* The bundled Redis's pods: not dispatchd's, so dispatchd's Services and PDB skip them. */}}
{{- define "dispatchd.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "dispatchd.name" . }}-redis
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "dispatchd.redisLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "dispatchd.redisSelectorLabels" . }}
app.kubernetes.io/component: redis
app.kubernetes.io/part-of: {{ include "dispatchd.name" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Where DISPATCHD_REDIS_URL comes from: the user's Secret, or the bundled Redis. */}}
{{- define "dispatchd.redisUrlSource" -}}
{{- if .Values.redis.existingSecret -}}
valueFrom:
  secretKeyRef:
    name: {{ .Values.redis.existingSecret }}
    key: {{ .Values.redis.secretKey }}
{{- else -}}
value: {{ printf "redis://%s:%d/0" (include "dispatchd.redisName" .) (int .Values.redis.bundled.port) | quote }}
{{- end -}}
{{- end -}}

{{- define "dispatchd.tlsSecret" -}}
{{- required "tls.secretName is required when tls.enabled is true" .Values.tls.secretName -}}
{{- end -}}

{{- define "dispatchd.authSecret" -}}
{{- if .Values.auth.existingSecret -}}
{{- .Values.auth.existingSecret -}}
{{- else -}}
{{- printf "%s-tokens" (include "dispatchd.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "dispatchd.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
A Kubernetes memory quantity ("512Mi", "1Gi", "1.5G", "800000000") in bytes; 0 when empty.
*/}}
{{- define "dispatchd.memoryBytes" -}}
{{- $q := toString . -}}
{{- $bytes := 0.0 -}}
{{- $units := list (list "Ki" 1024.0) (list "Mi" 1048576.0) (list "Gi" 1073741824.0) (list "Ti" 1099511627776.0) (list "k" 1000.0) (list "K" 1000.0) (list "M" 1000000.0) (list "G" 1000000000.0) (list "T" 1000000000000.0) -}}
{{- $matched := false -}}
{{- range $units -}}
{{- if and (not $matched) (hasSuffix (index . 0) $q) -}}
{{- $bytes = mulf (float64 (trimSuffix (index . 0) $q)) (index . 1) -}}
{{- $matched = true -}}
{{- end -}}
{{- end -}}
{{- if and (not $matched) $q -}}
{{- $bytes = float64 $q -}}
{{- end -}}
{{- int64 $bytes -}}
{{- end -}}

{{/*
DISPATCHD_MAX_PENDING_TOTAL: server.maxPendingTotal when set; else, with backend embedded and a
memory limit, the jobs that fit in server.pendingMemoryFraction of the limit at
server.pendingJobBytes each (docs/durability.md, "Memory"); else 0 (no bound: with backend
redis the jobs live in Redis, whose maxmemory bounds them).
*/}}
{{- define "dispatchd.maxPendingTotal" -}}
{{- $set := .Values.server.maxPendingTotal -}}
{{- if not (kindIs "invalid" $set) -}}
{{- int64 $set -}}
{{- else -}}
{{- $limit := 0 -}}
{{- with .Values.resources.limits -}}
{{- $limit = include "dispatchd.memoryBytes" .memory | int64 -}}
{{- end -}}
{{- if and (eq .Values.backend "embedded") (gt $limit 0) -}}
{{- int64 (divf (mulf (float64 $limit) .Values.server.pendingMemoryFraction) .Values.server.pendingJobBytes) -}}
{{- else -}}
0
{{- end -}}
{{- end -}}
{{- end -}}
