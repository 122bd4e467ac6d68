{{/* Chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "arbiter-model.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: RELEASE-arbiter-model unless the release name already contains it. */}}
{{- define "arbiter-model.fullname" -}}
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

{{- define "arbiter-model.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "arbiter-model.selectorLabels" -}}
app.kubernetes.io/name: {{ include "arbiter-model.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "arbiter-model.labels" -}}
helm.sh/chart: {{ include "arbiter-model.chart" . }}
{{ include "arbiter-model.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: model
arbiter.dev/model: {{ regexReplaceAll "[^A-Za-z0-9]+$" (.Values.model.name | trunc 63) "" | quote }}
arbiter.dev/framework: {{ .Values.model.framework }}
{{- end }}

{{- define "arbiter-model.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "arbiter-model.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "arbiter-model.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Path passed to --model: mountPath/file, the file defaulting by framework. */}}
{{- define "arbiter-model.modelPath" -}}
{{- $defaults := dict "sklearn" "model.joblib" "onnx" "model.onnx" "torch" "model.pt" }}
{{- $file := default (get $defaults .Values.model.framework) .Values.artifact.file }}
{{- printf "%s/%s" (trimSuffix "/" .Values.artifact.mountPath) $file }}
{{- end }}

{{- define "arbiter-model.settingsPath" -}}
/etc/arbiter/settings.yaml
{{- end }}

{{/*
The wrapper settings file (wrappers/settings.py ModelSettings): model.settings plus
name, version, framework and uri from the chart, which win over the same keys.
*/}}
{{- define "arbiter-model.settings" -}}
{{- $s := deepCopy .Values.model.settings }}
{{- $_ := set $s "name" .Values.model.name }}
{{- $_ := set $s "framework" .Values.model.framework }}
{{- $_ := set $s "uri" (include "arbiter-model.modelPath" .) }}
{{- $version := toString (default "" .Values.model.version) }}
{{- if $version }}
{{- $_ := set $s "version" $version }}
{{- end }}
{{- toYaml $s }}
{{- end }}

{{/*
terminationGracePeriodSeconds. Kubernetes counts the preStop hook inside the grace
period, so the pod must get preStop sleep + server drain + slack before SIGKILL.
An explicit override that leaves no room for the drain fails the render.
*/}}
{{- define "arbiter-model.gracePeriodSeconds" -}}
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

{{/* --auth-tokens-file and --tls-* flags from .Values.security (Secrets mounted by the Deployment). */}}
{{- define "arbiter-model.securityArgs" -}}
{{- with .Values.security.auth.tokensSecret -}}
- --auth-tokens-file
- {{ printf "/etc/arbiter-auth/%s" $.Values.security.auth.tokensKey | quote }}
{{- end }}
{{- if .Values.security.tls.secretName }}
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
{{- define "arbiter-model.probe" -}}
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
