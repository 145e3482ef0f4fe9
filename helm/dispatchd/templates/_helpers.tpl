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

{{/* The kubelet kills the container this long after SIGTERM: it must outlast the drain. */}}
{{- define "dispatchd.terminationGrace" -}}
{{- $drain := int (ceil .Values.server.drainGrace) -}}
{{- $grace := .Values.terminationGracePeriodSeconds -}}
{{- if kindIs "invalid" $grace -}}
{{- $grace = add $drain 15 -}}
{{- end -}}
{{- if le (int $grace) $drain -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed server.drainGrace (%d), or the kubelet kills dispatchd mid-drain" (int $grace) $drain) -}}
{{- end -}}
{{- int $grace -}}
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
