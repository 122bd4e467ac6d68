{{/* Chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "arbiter-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: RELEASE-arbiter-gateway unless the release name already contains it. */}}
{{- define "arbiter-gateway.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "arbiter-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "arbiter-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "arbiter-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "arbiter-gateway.labels" -}}
helm.sh/chart: {{ include "arbiter-gateway.chart" . }}
{{ include "arbiter-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "arbiter-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "arbiter-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "arbiter-gateway.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
terminationGracePeriodSeconds. Kubernetes counts the preStop hook inside the grace
period, so the pod must get preStop sleep + server drain + slack before SIGKILL.
An explicit override that leaves no room for the drain fails the render.
*/}}
{{- define "arbiter-gateway.gracePeriodSeconds" -}}
{{- $floor := add (int .Values.termination.preStopSleepSeconds) (int .Values.server.drainTimeoutSeconds) }}
{{- $grace := add $floor (int .Values.termination.bufferSeconds) }}
{{- with .Values.termination.gracePeriodSeconds }}
{{- if le (int .) (int $floor) }}
{{- fail (printf "termination.gracePeriodSeconds (%d) must be greater than termination.preStopSleepSeconds + server.drainTimeoutSeconds (%d)" (int .) (int $floor)) }}
{{- end }}
{{- $grace = int . }}
{{- end }}
{{- $grace }}
{{- end }}

{{- define "arbiter-gateway.configPath" -}}
/etc/arbiter/gateway.yaml
{{- end }}

{{/*
The gateway config file: .Values.config plus the store block rendered from
.Values.store. The SQLite file defaults onto persistence.mountPath and must sit on
that writable data volume (a relative path would resolve into the read-only config
folder), so a path outside it fails the render. A PostgreSQL DSN never enters the
config: the gateway reads it from ARBITER_STORE_DSN, set from a Secret.
*/}}
{{- define "arbiter-gateway.config" -}}
{{- $cfg := deepCopy .Values.config }}
{{- $_ := set $cfg "store" (include "arbiter-gateway.store" . | fromYaml) }}
{{- $security := .Values.security }}
{{- with $security.auth.tokensSecret }}
{{- $auth := dict "tokens_file" (printf "/etc/arbiter-auth/%s" $security.auth.tokensKey) }}
{{- if $security.auth.protectMetrics }}
{{- $_ := set $auth "protect_metrics" true }}
{{- end }}
{{- $_ := set $cfg "auth" $auth }}
{{- end }}
{{- if $security.feedback.requireDecisionToken }}
{{- $_ := set $cfg "feedback" (dict "require_decision_token" true) }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/* The config's store block: kind, the SQLite path, and the options that are set. */}}
{{- define "arbiter-gateway.store" -}}
{{- $values := .Values.store }}
{{- $store := dict "kind" $values.kind }}
{{- if eq $values.kind "sqlite" }}
{{- $_ := set $store "path" (include "arbiter-gateway.sqlitePath" .) }}
{{- end }}
{{- $options := dict
  "decisionWrites" "decision_writes"
  "writeQueue" "write_queue"
  "flushIntervalMs" "flush_interval_ms"
  "refreshIntervalMs" "refresh_interval_ms"
  "poolSize" "pool_size"
  "memorySize" "memory_size"
  "idempotencyWindowSeconds" "idempotency_window_s"
  "inputs" "inputs"
  "retentionDays" "retention_days" }}
{{- range $value, $option := $options }}
{{- if not (kindIs "invalid" (get $values $value)) }}
{{- $_ := set $store $option (get $values $value) }}
{{- end }}
{{- end }}
{{- toYaml $store }}
{{- end }}

{{/* The SQLite file: store.path, else <persistence.mountPath>/arbiter.sqlite. */}}
{{- define "arbiter-gateway.sqlitePath" -}}
{{- $mount := trimSuffix "/" .Values.persistence.mountPath }}
{{- $path := .Values.store.path | default (printf "%s/arbiter.sqlite" $mount) }}
{{- if not (hasPrefix (printf "%s/" $mount) $path) }}
{{- fail (printf "store.path (%s) must be inside persistence.mountPath (%s), the gateway's only writable data volume" $path $mount) }}
{{- end }}
{{- $path }}
{{- end }}

{{/*
Fail on combinations that would split decisions and router state: a SQLite file is
shared only by the processes of one pod, so more replicas need PostgreSQL
(values.schema.json refuses these too; this guards a render without the schema).
*/}}
{{- define "arbiter-gateway.validate" -}}
{{- $store := .Values.store }}
{{- if eq $store.kind "sqlite" }}
{{- if or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) }}
{{- fail "replicaCount > 1 and autoscaling.enabled need store.kind postgres: a SQLite store is shared only by the processes of one pod" }}
{{- end }}
{{- else if eq $store.kind "postgres" }}
{{- if not (and $store.dsnSecret $store.dsnSecret.name $store.dsnSecret.key) }}
{{- fail "store.kind postgres needs store.dsnSecret.name and store.dsnSecret.key: the Secret holding the DSN" }}
{{- end }}
{{- if .Values.persistence.enabled }}
{{- fail "persistence.enabled is for store.kind sqlite: with postgres the pod keeps no data" }}
{{- end }}
{{- end }}
{{- end }}

{{/* --tls-* flags from .Values.security.tls (the Secret mounted at /etc/arbiter-tls). */}}
{{- define "arbiter-gateway.tlsArgs" -}}
{{- if .Values.security.tls.secretName -}}
- --tls-cert
- /etc/arbiter-tls/tls.crt
- --tls-key
- /etc/arbiter-tls/tls.key
{{- if .Values.security.tls.clientAuth }}
- --tls-client-ca
- /etc/arbiter-tls/ca.crt
{{- end }}
{{- end }}
{{- end }}

{{/* A probe on PATH: HTTP(S) GET, or a TCP check under mTLS (the kubelet has no client certificate). */}}
{{- define "arbiter-gateway.probe" -}}
{{- $ := index . 0 }}
{{- $tls := $.Values.security.tls }}
{{- if and $tls.secretName $tls.clientAuth -}}
tcpSocket:
  port: http
{{- else -}}
httpGet:
  path: {{ index . 1 }}
  port: http
  {{- if $tls.secretName }}
  scheme: HTTPS
  {{- end }}
{{- end }}
{{- end }}
