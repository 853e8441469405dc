{{/*
Chart name, truncated to the 63 characters Kubernetes allows in names.
*/}}
{{- define "fleetpulse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name prefix of every resource: <release>-<chart> unless the release
name already contains the chart name.
*/}}
{{- define "fleetpulse.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
chart label value: name-version.
*/}}
{{- define "fleetpulse.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels of one component. Call with (dict "ctx" $ "component" "edge").
*/}}
{{- define "fleetpulse.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fleetpulse.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
All labels of one component. Call with (dict "ctx" $ "component" "edge").
*/}}
{{- define "fleetpulse.labels" -}}
helm.sh/chart: {{ include "fleetpulse.chart" .ctx }}
{{ include "fleetpulse.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: fleetpulse
{{- end }}

{{/*
The image reference; the tag defaults to the chart's appVersion.
*/}}
{{- define "fleetpulse.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Name of the Secret holding the keys (created, or secrets.existingSecret).
*/}}
{{- define "fleetpulse.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else }}
{{- printf "%s-secrets" (include "fleetpulse.fullname" .) }}
{{- end }}
{{- end }}

{{/*
Environment of a container: the log filter, plus the secret env vars named
in .names (FLEETPULSE_CONNECTOR_SECRET, FLEETPULSE_PSEUDONYM_KEY).
Call with (dict "ctx" $ "names" (list "FLEETPULSE_CONNECTOR_SECRET")).
*/}}
{{- define "fleetpulse.env" -}}
- name: FLEETPULSE_LOG
  value: {{ .ctx.Values.logLevel | quote }}
{{- range .names }}
- name: {{ . }}
  valueFrom:
    secretKeyRef:
      name: {{ include "fleetpulse.secretName" $.ctx }}
      {{- if eq . "FLEETPULSE_CONNECTOR_SECRET" }}
      key: {{ $.ctx.Values.secrets.keys.connectorSecret }}
      {{- else }}
      key: {{ $.ctx.Values.secrets.keys.pseudonymKey }}
      {{- end }}
{{- end }}
{{- end }}

{{/*
The [kafka] table of every service config; must come after the top-level keys.
*/}}
{{- define "fleetpulse.kafkaToml" -}}
[kafka]
brokers = {{ required "kafka.brokers is required" .Values.kafka.brokers | quote }}
topic_prefix = {{ required "kafka.topicPrefix is required" .Values.kafka.topicPrefix | quote }}

[kafka.tls]
enabled = {{ .Values.kafka.tls.enabled }}
{{- with .Values.kafka.tls.caFile }}
ca_file = {{ . | quote }}
{{- end }}

[kafka.properties]
{{- range $k, $v := .Values.kafka.properties }}
{{ $k | quote }} = {{ $v | toString | quote }}
{{- end }}
{{- end }}

{{/*
Probes on /healthz at the metrics port, shared by every container.
*/}}
{{- define "fleetpulse.probes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: metrics
  initialDelaySeconds: 10
  periodSeconds: 10
  timeoutSeconds: 2
  failureThreshold: 6
readinessProbe:
  httpGet:
    path: /healthz
    port: metrics
  initialDelaySeconds: 2
  periodSeconds: 5
  timeoutSeconds: 2
  failureThreshold: 3
{{- end }}

{{/*
Scheduling constraints shared by every pod.
*/}}
{{- define "fleetpulse.scheduling" -}}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
