{{/* Names ------------------------------------------------------------------------ */}}

{{- define "voice-llm-proxy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "voice-llm-proxy.fullname" -}}
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

{{- define "voice-llm-proxy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "voice-llm-proxy.labels" -}}
helm.sh/chart: {{ include "voice-llm-proxy.chart" . }}
{{ include "voice-llm-proxy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "voice-llm-proxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "voice-llm-proxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "voice-llm-proxy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "voice-llm-proxy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "voice-llm-proxy.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "voice-llm-proxy.configPath" -}}/etc/proxy/config.yaml{{- end }}

{{/* Replicas the release keeps at least (for the PDB). */}}
{{- define "voice-llm-proxy.minReplicas" -}}
{{- if .Values.autoscaling.enabled }}{{ .Values.autoscaling.minReplicas }}{{ else }}{{ .Values.replicaCount }}{{ end }}
{{- end }}

{{/* Secrets ---------------------------------------------------------------------- */}}

{{/* The Secret an entry names, or secrets.existingSecret. Argument: (list $ "name"). */}}
{{- define "voice-llm-proxy.secretName" -}}
{{- $root := index . 0 }}
{{- default $root.Values.secrets.existingSecret (index . 1) }}
{{- end }}

{{/*
One env entry from a Secret. Argument: dict with root, env, secret (may be ""), key,
optional, what (for the error message). Fails when the Secret name is missing.
*/}}
{{- define "voice-llm-proxy.secretEnv" -}}
{{- $name := include "voice-llm-proxy.secretName" (list .root .secret) }}
{{- if not $name }}
{{- fail (printf "%s: no Secret name. Set secrets.existingSecret (or the entry's own existingSecret/secretName) to a Secret that exists in the namespace" .what) }}
{{- end }}
{{- if not .key }}
{{- fail (printf "%s: no Secret key given" .what) }}
{{- end -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ $name | quote }}
      key: {{ .key | quote }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end }}

{{/* The database URL env entry (Deployment and migrations Job). */}}
{{- define "voice-llm-proxy.databaseEnv" -}}
{{- include "voice-llm-proxy.secretEnv" (dict "root" . "env" "PROXY_DATABASE_URL" "secret" .Values.database.existingSecret "key" .Values.database.urlKey "what" "database.urlKey") }}
{{- end }}

{{/* Every env entry the proxy takes from Secrets. */}}
{{- define "voice-llm-proxy.secretEnvs" -}}
{{- $keys := .Values.secrets.keys }}
{{- if not $keys.apiKeys }}
{{- fail "secrets.keys.apiKeys: the proxy refuses to listen beyond loopback without caller keys (PROXY_API_KEYS)" }}
{{- end }}
{{- if not $keys.adminToken }}
{{- fail "secrets.keys.adminToken: PROXY_ENV=production requires PROXY_ADMIN_TOKEN" }}
{{- end }}
{{ include "voice-llm-proxy.secretEnv" (dict "root" . "env" "PROXY_API_KEYS" "secret" "" "key" $keys.apiKeys "what" "secrets.keys.apiKeys") }}
{{ include "voice-llm-proxy.secretEnv" (dict "root" . "env" "PROXY_ADMIN_TOKEN" "secret" "" "key" $keys.adminToken "what" "secrets.keys.adminToken") }}
{{- if $keys.upstreamApiKey }}
{{ include "voice-llm-proxy.secretEnv" (dict "root" . "env" "PROXY_UPSTREAM_API_KEY" "secret" "" "key" $keys.upstreamApiKey "optional" true "what" "secrets.keys.upstreamApiKey") }}
{{- end }}
{{- if $keys.callbackSignKey }}
{{ include "voice-llm-proxy.secretEnv" (dict "root" . "env" "PROXY_CALLBACK_SIGN_KEY" "secret" "" "key" $keys.callbackSignKey "optional" true "what" "secrets.keys.callbackSignKey") }}
{{- end }}
{{- if .Values.database.enabled }}
{{ include "voice-llm-proxy.databaseEnv" . }}
{{- end }}
{{- with .Values.redis }}
{{- if .enabled }}
{{- if and (ne .mode "sentinel") (not .url) }}
{{ include "voice-llm-proxy.secretEnv" (dict "root" $ "env" "PROXY_REDIS_URL" "secret" .existingSecret "key" .urlKey "what" "redis.urlKey") }}
{{- end }}
{{- if .passwordKey }}
{{ include "voice-llm-proxy.secretEnv" (dict "root" $ "env" "PROXY_REDIS_PASSWORD" "secret" .existingSecret "key" .passwordKey "what" "redis.passwordKey") }}
{{- end }}
{{- if and (eq .mode "sentinel") .sentinel.passwordKey }}
{{ include "voice-llm-proxy.secretEnv" (dict "root" $ "env" "PROXY_REDIS_SENTINEL_PASSWORD" "secret" .existingSecret "key" .sentinel.passwordKey "what" "redis.sentinel.passwordKey") }}
{{- end }}
{{- end }}
{{- end }}
{{- range $i, $extra := .Values.secrets.extraEnv }}
{{ include "voice-llm-proxy.secretEnv" (dict "root" $ "env" $extra.name "secret" $extra.secretName "key" $extra.key "optional" $extra.optional "what" (printf "secrets.extraEnv[%d] (%s)" $i $extra.name)) }}
{{- end }}
{{- end }}

{{/* Checks that need more than the schema ------------------------------------------- */}}

{{- define "voice-llm-proxy.validate" -}}
{{- $v := .Values }}
{{- $budget := add $v.server.preStopSleepSeconds $v.server.gracefulTimeoutSeconds }}
{{- if le (int $v.terminationGracePeriodSeconds) (int $budget) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed server.preStopSleepSeconds + server.gracefulTimeoutSeconds (%v): streams would be killed mid-answer" $v.terminationGracePeriodSeconds $budget) }}
{{- end }}
{{- $secretish := "(?i)(_KEYS?$|TOKEN$|PASSWORD|PASSWD|SECRET|DATABASE_URL$|REDIS_URL$)" }}
{{- range $name, $_ := $v.env }}
{{- if regexMatch $secretish $name }}
{{- fail (printf "env.%s looks like a secret: reference it from a Secret with secrets.extraEnv instead of a plain value" $name) }}
{{- end }}
{{- end }}
{{- if and $v.redis.enabled (eq $v.redis.mode "sentinel") }}
{{- if not $v.redis.sentinel.hosts }}
{{- fail "redis.mode=sentinel needs redis.sentinel.hosts (host:port of each Sentinel)" }}
{{- end }}
{{- if not $v.redis.sentinel.masterName }}
{{- fail "redis.mode=sentinel needs redis.sentinel.masterName" }}
{{- end }}
{{- end }}
{{- if and $v.redis.url (regexMatch "^rediss?://[^/@]*:[^/@]*@" $v.redis.url) }}
{{- fail "redis.url carries a password: put the URL in a Secret (redis.existingSecret + redis.urlKey) or the password under redis.passwordKey" }}
{{- end }}
{{- if eq $v.server.environment "production" }}
{{- if not (or $v.upstream.baseUrl $v.config.routes) }}
{{- fail "upstream.baseUrl or config.routes is required: with neither, the built-in echo model would answer every call (PROXY_ENV=production refuses to start; server.environment=development is for trying the chart)" }}
{{- end }}
{{- if not $v.redis.enabled }}
{{- fail "redis.enabled=false keeps history in each pod's memory: PROXY_ENV=production refuses it (set server.environment=development to try the chart)" }}
{{- end }}
{{- if not $v.database.enabled }}
{{- fail "database.enabled=false puts SQLite on an emptyDir: PROXY_ENV=production refuses it (set server.environment=development to try the chart)" }}
{{- end }}
{{- end }}
{{- if and $v.podDisruptionBudget.enabled $v.podDisruptionBudget.minAvailable $v.podDisruptionBudget.maxUnavailable }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both" }}
{{- end }}
{{- end }}
