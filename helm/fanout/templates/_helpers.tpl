{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "fanout.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects: the release name, prefixed by the chart name unless it contains it. */}}
{{- define "fanout.fullname" -}}
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

{{- define "fanout.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "fanout.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "fanout.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fanout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "fanout.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "fanout.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Name of the Secret the gateway reads: the user's, or the one this chart creates. */}}
{{- define "fanout.secretName" -}}
{{- default (include "fanout.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{- define "fanout.redisName" -}}
{{- printf "%s-redis" (include "fanout.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Whether the nodes share a Redis (and so may be more than one). */}}
{{- define "fanout.hasRedis" -}}
{{- if or .Values.redis.url .Values.redis.bundled.enabled .Values.secrets.redisUrlKey }}true{{ end }}
{{- end }}

{{/* Grace period: explicit, or long enough for the preStop sleep and the drain. */}}
{{- define "fanout.terminationGracePeriodSeconds" -}}
{{- $needed := add (int .Values.preStopSleepSeconds) (int (default 10 .Values.config.drain_s)) }}
{{- if .Values.terminationGracePeriodSeconds }}
{{- if le (int .Values.terminationGracePeriodSeconds) (int $needed) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds + config.drain_s (%d), or clients are killed mid-drain" (int .Values.terminationGracePeriodSeconds) (int $needed)) }}
{{- end }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- else }}
{{- add $needed 15 }}
{{- end }}
{{- end }}

{{/*
A TOML value. Helm reads every number as a float, and the gateway wants integers for
counts, so integral numbers are written without a fraction. Strings are JSON-quoted, which
is valid TOML (basic strings share JSON's escapes).
*/}}
{{- define "fanout.tomlValue" -}}
{{- if kindIs "string" . }}{{ toJson . }}
{{- else if kindIs "bool" . }}{{ . }}
{{- else if or (kindIs "float64" .) (kindIs "int" .) (kindIs "int64" .) }}
{{- if eq (float64 (int64 .)) (float64 .) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else if kindIs "slice" . }}[{{ range $i, $e := . }}{{ if $i }}, {{ end }}{{ include "fanout.tomlValue" $e }}{{ end }}]
{{- else }}{{ fail (printf "config: a value of kind %s cannot be written to TOML: %v" (kindOf .) .) }}
{{- end }}
{{- end }}

{{/*
A TOML table: its keys with plain values first, then each sub-table under [prefix.key].
Called with (dict "table" <map> "prefix" <dotted name or "">).
*/}}
{{- define "fanout.tomlTable" -}}
{{- $prefix := .prefix }}
{{- range $key, $value := .table }}
{{- if not (kindIs "map" $value) }}
{{ $key }} = {{ include "fanout.tomlValue" $value }}
{{- end }}
{{- end }}
{{- range $key, $value := .table }}
{{- if kindIs "map" $value }}
{{- $name := ternary $key (printf "%s.%s" $prefix $key) (eq $prefix "") }}

[{{ $name }}]
{{- include "fanout.tomlTable" (dict "table" $value "prefix" $name) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The gateway's configuration file: the config values plus what the chart derives. */}}
{{- define "fanout.configToml" -}}
{{- $config := deepCopy .Values.config }}
{{- $_ := set $config "listen" (printf "0.0.0.0:%d" (int .Values.containerPort)) }}
{{- if .Values.auth.jwtPublicKey }}
{{- $_ := set $config "jwt_public_key" "/etc/fanout/jwt-public-key.pem" }}
{{- end }}
{{- if .Values.redis.bundled.enabled }}
{{- $_ := set $config "redis_url" (printf "redis://%s:6379/0" (include "fanout.redisName" .)) }}
{{- else if .Values.redis.url }}
{{- $_ := set $config "redis_url" .Values.redis.url }}
{{- end }}
{{- with .Values.redis.tls }}
{{- if .existingSecret }}
{{- if .caKey }}
{{- $_ := set $config "redis_tls_ca_file" (printf "/etc/fanout-redis-tls/%s" .caKey) }}
{{- end }}
{{- if .certKey }}
{{- $_ := set $config "redis_tls_cert_file" (printf "/etc/fanout-redis-tls/%s" .certKey) }}
{{- $_ := set $config "redis_tls_key_file" (printf "/etc/fanout-redis-tls/%s" .keyKey) }}
{{- end }}
{{- end }}
{{- end -}}
# Generated by the fanout Helm chart from .Values.config; secrets come from the environment.
{{- include "fanout.tomlTable" (dict "table" $config "prefix" "") }}
{{ end }}
