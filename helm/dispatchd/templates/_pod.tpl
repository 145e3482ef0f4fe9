{{/*
The pod of the StatefulSet (backend embedded) and of the Deployment (backend redis): the same
container, probes, security and secrets; only the data dir (embedded) or the Redis URL
(redis) differ.
*/}}
{{- define "dispatchd.podTemplate" -}}
{{- $dataDir := "/var/lib/dispatchd" -}}
{{- $embedded := eq .Values.backend "embedded" -}}
metadata:
  labels:
    {{- include "dispatchd.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- $chartTokens := and .Values.auth.enabled (not .Values.auth.existingSecret) }}
  {{- if or $chartTokens .Values.podAnnotations }}
  annotations:
    {{- if $chartTokens }}
    # Tokens are read at start-up: a changed token list rolls the pod.
    checksum/tokens: {{ include (print $.Template.BasePath "/secret-tokens.yaml") . | sha256sum }}
    {{- end }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
spec:
  serviceAccountName: {{ include "dispatchd.serviceAccountName" . }}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: {{ include "dispatchd.terminationGrace" . }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: dispatchd
      image: {{ include "dispatchd.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      {{- with .Values.server.extraArgs }}
      args:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      env:
        - name: DISPATCHD_LISTEN
          value: "0.0.0.0:{{ .Values.server.port }}"
        - name: DISPATCHD_HEALTH_LISTEN
          value: "0.0.0.0:{{ .Values.server.healthPort }}"
        {{- if $embedded }}
        - name: DISPATCHD_DATA_DIR
          value: {{ $dataDir | quote }}
        {{- else }}
        # The queues live in Redis: no data dir, nothing to snapshot on drain. Empty
        # overrides the image's DISPATCHD_DATA_DIR, so no replica keeps a journal of its own.
        - name: DISPATCHD_DATA_DIR
          value: ""
        - name: DISPATCHD_BACKEND
          value: redis
        - name: DISPATCHD_REDIS_URL
          {{- include "dispatchd.redisUrlSource" . | nindent 10 }}
        {{- end }}
        - name: DISPATCHD_DRAIN_GRACE
          value: {{ .Values.server.drainGrace | quote }}
        - name: DISPATCHD_MAX_PAYLOAD_BYTES
          value: {{ .Values.server.maxPayloadBytes | int64 | quote }}
        - name: DISPATCHD_MAX_BATCH_BYTES
          value: {{ .Values.server.maxBatchBytes | int64 | quote }}
        - name: DISPATCHD_DEFAULT_WIDTH
          value: {{ .Values.server.defaultWidth | int64 | quote }}
        - name: DISPATCHD_DEFAULT_LEASE
          value: {{ .Values.server.defaultLease | quote }}
        - name: DISPATCHD_FINISHED_RETENTION
          value: {{ .Values.server.finishedRetention | quote }}
        - name: DISPATCHD_MAX_FINISHED_JOBS
          value: {{ .Values.server.maxFinishedJobs | int64 | quote }}
        - name: DISPATCHD_MAX_QUEUES
          value: {{ .Values.server.maxQueues | int64 | quote }}
        - name: DISPATCHD_MAX_PENDING_TOTAL
          value: {{ include "dispatchd.maxPendingTotal" . | quote }}
        - name: DISPATCHD_LOG_LEVEL
          value: {{ .Values.server.logLevel | quote }}
        {{- with .Values.server.httpAllowCidr }}
        - name: DISPATCHD_HTTP_ALLOW_CIDR
          value: {{ . | quote }}
        {{- end }}
        {{- if .Values.metrics.enabled }}
        - name: DISPATCHD_METRICS_LISTEN
          value: "0.0.0.0:{{ .Values.metrics.port }}"
        {{- end }}
        {{- if .Values.tls.enabled }}
        - name: DISPATCHD_TLS_CERT
          value: /etc/dispatchd/tls/tls.crt
        - name: DISPATCHD_TLS_KEY
          value: /etc/dispatchd/tls/tls.key
        {{- if .Values.tls.clientCA.enabled }}
        - name: DISPATCHD_TLS_CLIENT_CA
          value: /etc/dispatchd/client-ca/{{ .Values.tls.clientCA.key }}
        {{- end }}
        {{- end }}
        {{- if .Values.auth.enabled }}
        - name: DISPATCHD_AUTH_TOKENS
          value: /etc/dispatchd/auth/{{ .Values.auth.secretKey }}
        {{- end }}
        {{- with .Values.server.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: grpc
          containerPort: {{ .Values.server.port }}
          protocol: TCP
        - name: health
          containerPort: {{ .Values.server.healthPort }}
          protocol: TCP
        {{- if .Values.metrics.enabled }}
        - name: metrics
          containerPort: {{ .Values.metrics.port }}
          protocol: TCP
        {{- end }}
      # gRPC health on the plaintext health port: readiness is the overall status, which
      # a drain turns NOT_SERVING; liveness asks for "liveness", which a drain keeps up.
      startupProbe:
        grpc:
          port: {{ .Values.server.healthPort }}
          service: liveness
        periodSeconds: {{ .Values.startupProbe.periodSeconds }}
        failureThreshold: {{ .Values.startupProbe.failureThreshold }}
      readinessProbe:
        grpc:
          port: {{ .Values.server.healthPort }}
          service: ""
        periodSeconds: {{ .Values.readinessProbe.periodSeconds }}
        failureThreshold: {{ .Values.readinessProbe.failureThreshold }}
        timeoutSeconds: {{ .Values.readinessProbe.timeoutSeconds }}
      livenessProbe:
        grpc:
          port: {{ .Values.server.healthPort }}
          service: liveness
        periodSeconds: {{ .Values.livenessProbe.periodSeconds }}
        failureThreshold: {{ .Values.livenessProbe.failureThreshold }}
        timeoutSeconds: {{ .Values.livenessProbe.timeoutSeconds }}
      {{- with include "dispatchd.preStopSleep" . | int }}
      # Endpoints and kube-proxy learn of the termination a moment after the kubelet: the
      # pod keeps serving that long before SIGTERM starts its drain, so new calls go elsewhere.
      lifecycle:
        preStop:
          exec:
            command: ["sleep", "{{ . }}"]
      {{- end }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        {{- if $embedded }}
        - name: data
          mountPath: {{ $dataDir }}
        {{- end }}
        - name: tmp
          mountPath: /tmp
        {{- if .Values.tls.enabled }}
        - name: tls
          mountPath: /etc/dispatchd/tls
          readOnly: true
        {{- if .Values.tls.clientCA.enabled }}
        - name: client-ca
          mountPath: /etc/dispatchd/client-ca
          readOnly: true
        {{- end }}
        {{- end }}
        {{- if .Values.auth.enabled }}
        - name: auth
          mountPath: /etc/dispatchd/auth
          readOnly: true
        {{- end }}
  volumes:
    # The root filesystem is read-only; anything that wants a scratch file gets /tmp.
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    {{- if and $embedded (not .Values.persistence.enabled) }}
    # No persistence: the snapshot lives as long as the pod (a restart keeps it, a
    # reschedule does not).
    - name: data
      emptyDir: {}
    {{- end }}
    {{- if .Values.tls.enabled }}
    - name: tls
      secret:
        secretName: {{ include "dispatchd.tlsSecret" . }}
        defaultMode: 0440
        items:
          - key: tls.crt
            path: tls.crt
          - key: tls.key
            path: tls.key
    {{- if .Values.tls.clientCA.enabled }}
    - name: client-ca
      secret:
        secretName: {{ default (include "dispatchd.tlsSecret" .) .Values.tls.clientCA.secretName }}
        defaultMode: 0440
        items:
          - key: {{ .Values.tls.clientCA.key }}
            path: {{ .Values.tls.clientCA.key }}
    {{- end }}
    {{- end }}
    {{- if .Values.auth.enabled }}
    - name: auth
      secret:
        secretName: {{ include "dispatchd.authSecret" . }}
        defaultMode: 0440
        items:
          - key: {{ .Values.auth.secretKey }}
            path: {{ .Values.auth.secretKey }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- $spread := .Values.topologySpreadConstraints }}
  {{- if and (kindIs "invalid" $spread) (not $embedded) }}
  # Replicas on different nodes where possible: one node's failure takes one replica.
  topologySpreadConstraints:
    - maxSkew: 1
      topologyKey: kubernetes.io/hostname
      whenUnsatisfiable: ScheduleAnyway
      labelSelector:
        matchLabels:
          {{- include "dispatchd.selectorLabels" . | nindent 10 }}
  {{- else if $spread }}
  topologySpreadConstraints:
    {{- toYaml $spread | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
