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

{{/* Whether the chart creates the Secret (from secrets.jwtSecret and secrets.apiKeys). */}}
{{- define "fanout.ownsSecret" -}}
{{- if and (not .Values.secrets.existingSecret) (or .Values.secrets.jwtSecret .Values.secrets.apiKeys) }}true{{ end }}
{{- end }}

{{- define "fanout.redisName" -}}
{{- printf "%s-redis" (include "fanout.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Whether the nodes share a Redis (and so may be more than one). */}}
{{- define "fanout.hasRedis" -}}
{{- if or .Values.redis.url .Values.redis.cluster.seeds .Values.redis.bundled.enabled .Values.secrets.redisUrlKey .Values.secrets.redisClusterUrlKey }}true{{ end }}
{{- end }}

{{/* The Redis sources that are set, by value name (at most one may be). */}}
{{- define "fanout.redisSources" -}}
{{- $sources := list }}
{{- if .Values.redis.url }}{{ $sources = append $sources "redis.url" }}{{ end }}
{{- if .Values.redis.cluster.seeds }}{{ $sources = append $sources "redis.cluster.seeds" }}{{ end }}
{{- if .Values.redis.bundled.enabled }}{{ $sources = append $sources "redis.bundled.enabled" }}{{ end }}
{{- if .Values.secrets.redisUrlKey }}{{ $sources = append $sources "secrets.redisUrlKey" }}{{ end }}
{{- if .Values.secrets.redisClusterUrlKey }}{{ $sources = append $sources "secrets.redisClusterUrlKey" }}{{ end }}
{{- join ", " $sources }}
{{- end }}

{{/*
A Redis URL (redis.url or a cluster seed) with the password of redis.auth spliced in as the
container variable $(REDIS_PASSWORD), which the kubelet expands from the Secret: the password
is in no manifest and no ConfigMap.
*/}}
{{- define "fanout.redisUrlWithAuth" -}}
{{- $parts := splitList "://" .url }}
{{- printf "%s://%s:$(REDIS_PASSWORD)@%s" (first $parts) .username (join "://" (rest $parts)) }}
{{- end }}

{{/* The Service the operations endpoints and the API are reached through, and its port. */}}
{{- define "fanout.internalServiceName" -}}
{{- if .Values.internal.enabled }}
{{- printf "%s-internal" (include "fanout.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- include "fanout.fullname" . }}
{{- end }}
{{- end }}

{{/* The container port (by name) of the operations endpoints: internal, or http without it. */}}
{{- define "fanout.opsPort" -}}
{{- ternary "internal" "http" .Values.internal.enabled }}
{{- end }}

{{/* The image: registry/repository, by digest when one is given, else by tag. */}}
{{- define "fanout.image" -}}
{{- $repository := .image.repository }}
{{- if .image.registry }}
{{- $repository = printf "%s/%s" (trimSuffix "/" .image.registry) .image.repository }}
{{- end }}
{{- if .image.digest }}
{{- printf "%s@%s" $repository .image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (.image.tag | default .appVersion) }}
{{- end }}
{{- end }}

{{/*
The paths of the public listener that the Ingress and the HTTPRoute route: the client paths
(/ws, /sse, /sse/frames), /demo with config.demo, and /api/ when asked (`api`). A list of
dicts {path, ingressType, routeType}, as JSON.
*/}}
{{- define "fanout.publicPaths" -}}
{{- $paths := list
  (dict "path" "/ws" "ingressType" "Exact" "routeType" "Exact")
  (dict "path" "/sse" "ingressType" "Exact" "routeType" "Exact")
  (dict "path" "/sse/frames" "ingressType" "Exact" "routeType" "Exact")
  (dict "path" "/sse/ticket" "ingressType" "Exact" "routeType" "Exact") }}
{{- if .root.Values.config.demo }}
{{- $paths = append $paths (dict "path" "/demo" "ingressType" "Prefix" "routeType" "PathPrefix") }}
{{- end }}
{{- if .api }}
{{- $paths = append $paths (dict "path" "/api" "ingressType" "Prefix" "routeType" "PathPrefix") }}
{{- end }}
{{- toJson $paths }}
{{- end }}

{{/* Fails unless /api/ is served on the public port, for an Ingress or HTTPRoute that routes it. */}}
{{- define "fanout.checkPublicApi" -}}
{{- if and .root.Values.internal.enabled (not .root.Values.internal.apiOnPublic) }}
{{- fail (printf "%s.api routes /api/ to the public port, where the gateway serves it only with internal.apiOnPublic (or internal.enabled: false)" .what) }}
{{- end }}
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

{{/* Whether the Redis URLs go to the environment (with the password of redis.auth). */}}
{{- define "fanout.redisAuth" -}}
{{- if .Values.redis.auth.existingSecret }}true{{ end }}
{{- end }}

{{/* The gateway's configuration file: the config values plus what the chart derives. */}}
{{- define "fanout.configToml" -}}
{{- $config := deepCopy .Values.config }}
{{- $_ := set $config "listen" (printf "0.0.0.0:%d" (int .Values.containerPort)) }}
{{- if .Values.internal.enabled }}
{{- $_ := set $config "internal_listen" (printf "0.0.0.0:%d" (int .Values.internal.port)) }}
{{- if .Values.internal.apiOnPublic }}
{{- $_ := set $config "api_on_public" true }}
{{- end }}
{{- end }}
{{- if .Values.auth.jwtPublicKey }}
{{- $_ := set $config "jwt_public_key" "/etc/fanout/jwt-public-key.pem" }}
{{- end }}
{{- if .Values.redis.bundled.enabled }}
{{- $_ := set $config "redis_url" (printf "redis://%s:6379/0" (include "fanout.redisName" .)) }}
{{- else if not (include "fanout.redisAuth" .) }}
{{- /* Without a password the URLs are plain settings; with one they go to the environment. */}}
{{- if .Values.redis.url }}
{{- $_ := set $config "redis_url" .Values.redis.url }}
{{- end }}
{{- if .Values.redis.cluster.seeds }}
{{- $_ := set $config "redis_cluster_url" .Values.redis.cluster.seeds }}
{{- end }}
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

{{/*
Kubernetes quantity (512Mi, 3Gi, 1.5G, 2000000000) to bytes, for the memory alert.
*/}}
{{- define "fanout.bytes" -}}
{{- $q := toString . }}
{{- $units := dict "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 }}
{{- $bytes := "" }}
{{- range $suffix, $factor := $units }}
{{- if and (not $bytes) (hasSuffix $suffix $q) (regexMatch "^[0-9]+(\\.[0-9]+)?$" (trimSuffix $suffix $q)) }}
{{- $bytes = mulf (float64 (trimSuffix $suffix $q)) (float64 $factor) | int64 | toString }}
{{- end }}
{{- end }}
{{- if not $bytes }}
{{- if regexMatch "^[0-9]+$" $q }}
{{- $bytes = $q }}
{{- else }}
{{- fail (printf "resources.limits.memory %q: use a plain number of bytes or a suffix Ki, Mi, Gi, Ti, k, M, G, T" $q) }}
{{- end }}
{{- end }}
{{- $bytes }}
{{- end }}

{{/* The gateway container's environment: secrets, Redis URLs with a password, extraEnv. */}}
{{- define "fanout.env" -}}
{{- if not .Values.auth.jwtPublicKey }}
- name: FANOUT_JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "fanout.secretName" . }}
      key: {{ .Values.secrets.jwtSecretKey }}
{{- end }}
{{- if or .Values.secrets.existingSecret .Values.secrets.apiKeys }}
- name: FANOUT_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "fanout.secretName" . }}
      key: {{ .Values.secrets.apiKeysKey }}
      # No API keys: the HTTP publish API is off.
      optional: true
{{- end }}
{{- with .Values.secrets.redisUrlKey }}
- name: FANOUT_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "fanout.secretName" $ }}
      key: {{ . }}
{{- end }}
{{- with .Values.secrets.redisClusterUrlKey }}
# Comma-separated seed nodes, each with its password.
- name: FANOUT_REDIS_CLUSTER_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "fanout.secretName" $ }}
      key: {{ . }}
{{- end }}
{{- if include "fanout.redisAuth" . }}
# The password of redis.auth, spliced into the URLs below by the kubelet.
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.auth.existingSecret }}
      key: {{ .Values.redis.auth.passwordKey }}
{{- $auth := .Values.redis.auth }}
{{- with .Values.redis.url }}
- name: FANOUT_REDIS_URL
  value: {{ include "fanout.redisUrlWithAuth" (dict "url" . "username" $auth.username) | quote }}
{{- end }}
{{- with .Values.redis.cluster.seeds }}
{{- $seeds := list }}
{{- range . }}
{{- $seeds = append $seeds (include "fanout.redisUrlWithAuth" (dict "url" . "username" $auth.username)) }}
{{- end }}
- name: FANOUT_REDIS_CLUSTER_URL
  value: {{ join "," $seeds | quote }}
{{- end }}
{{- end }}
{{- with .Values.extraEnv }}
{{- tpl (toYaml .) $ | nindent 0 }}
{{- end }}
{{- end }}
