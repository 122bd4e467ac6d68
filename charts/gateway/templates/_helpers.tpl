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
The gateway config file: .Values.config with decisions.sqlite_path (and, for a
sqlite router state, state.sqlite_path) defaulted onto persistence.mountPath.
SQLite files must sit on that writable data volume (a relative path would resolve
into the read-only config folder), so a path outside it fails the render.
*/}}
{{- define "arbiter-gateway.config" -}}
{{- $cfg := deepCopy .Values.config }}
{{- $mount := trimSuffix "/" .Values.persistence.mountPath }}
{{- $decisions := get $cfg "decisions" | default dict }}
{{- if not (get $decisions "sqlite_path") }}
{{- $_ := set $decisions "sqlite_path" (printf "%s/decisions.sqlite" $mount) }}
{{- end }}
{{- if not (hasPrefix (printf "%s/" $mount) (get $decisions "sqlite_path")) }}
{{- fail (printf "config.decisions.sqlite_path (%s) must be inside persistence.mountPath (%s), the gateway's only writable data volume" (get $decisions "sqlite_path") $mount) }}
{{- end }}
{{- $_ := set $cfg "decisions" $decisions }}
{{- $state := get $cfg "state" | default dict }}
{{- if eq (get $state "kind") "sqlite" }}
{{- if not (get $state "sqlite_path") }}
{{- $_ := set $state "sqlite_path" (printf "%s/router-state.sqlite" $mount) }}
{{- end }}
{{- if not (hasPrefix (printf "%s/" $mount) (get $state "sqlite_path")) }}
{{- fail (printf "config.state.sqlite_path (%s) must be inside persistence.mountPath (%s), the gateway's only writable data volume" (get $state "sqlite_path") $mount) }}
{{- end }}
{{- $_ := set $cfg "state" $state }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/* Fail on combinations that would corrupt or split the decision log. */}}
{{- define "arbiter-gateway.validate" -}}
{{- if .Values.persistence.enabled }}
{{- if or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) }}
{{- fail "persistence.enabled needs replicaCount <= 1 and autoscaling.enabled=false: one SQLite decision log cannot have several writers" }}
{{- end }}
{{- end }}
{{- end }}
