{{/* Names, labels, and the broker config the chart owns. */}}

{{- define "tessera.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tessera.fullname" -}}
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

{{- define "tessera.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tessera.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tessera.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tessera.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "tessera.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tessera.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tessera.secretName" -}}
{{- default (printf "%s-secrets" (include "tessera.fullname" .)) .Values.secrets.existingSecret }}
{{- end }}

{{/* Whether a secret volume is mounted at all. */}}
{{- define "tessera.hasSecret" -}}
{{- if or .Values.secrets.existingSecret .Values.secrets.files }}true{{ end }}
{{- end }}

{{/* The issuer's path without a trailing slash: every route, probe and the metrics path sit under it. */}}
{{- define "tessera.basePath" -}}
{{- (urlParse .Values.issuer).path | trimSuffix "/" }}
{{- end }}

{{- define "tessera.scheme" -}}
{{- if .Values.tls.enabled }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}

{{- define "tessera.portName" -}}
{{- if .Values.tls.enabled }}https{{ else }}http{{ end }}
{{- end }}

{{- define "tessera.pdbEnabled" -}}
{{- $enabled := .Values.podDisruptionBudget.enabled }}
{{- if or (eq (toString $enabled) "true") (and (eq (toString $enabled) "auto") (gt (int .Values.replicaCount) 1)) }}true{{ end }}
{{- end }}

{{/* The user's config as a map, whichever form it was given in (for the checks only; it is rendered as written). */}}
{{- define "tessera.userConfig" -}}
{{- if kindIs "string" .Values.config }}
{{- $parsed := fromYaml .Values.config }}
{{- if hasKey $parsed "Error" }}
{{- fail (printf "config: not YAML: %s" (get $parsed "Error")) }}
{{- end }}
{{- toJson $parsed }}
{{- else }}
{{- toJson (default (dict) .Values.config) }}
{{- end }}
{{- end }}

{{/*
The render-time checks. Each failure names the value to change, because a bad combination would
otherwise surface only as a pod that never gets ready.
*/}}
{{- define "tessera.validate" -}}
{{- $v := .Values }}
{{- $replicas := int $v.replicaCount }}
{{- if and (gt $replicas 1) (not $v.redis.url) }}
{{- fail (printf "replicaCount %d needs redis.url: the broker refuses a fleet on a memory store, since each replica would keep its own replay records and revocations" $replicas) }}
{{- end }}
{{- $user := include "tessera.userConfig" . | fromJson }}
{{- $userKeys := and (hasKey $user "keys") (hasKey (get $user "keys") "files") }}
{{- if and (gt $replicas 1) (not $v.signingKeys) (not $userKeys) }}
{{- fail (printf "replicaCount %d needs signingKeys: without them each pod generates a key of its own, and replicas could not verify each other's tokens" $replicas) }}
{{- end }}
{{- if not (hasPrefix "https://" $v.issuer) }}
{{- fail (printf "issuer %q must be an https URL: the broker accepts http only on loopback" $v.issuer) }}
{{- end }}
{{- if and $v.secrets.existingSecret $v.secrets.files }}
{{- fail "set secrets.files (a Secret made by the chart) or secrets.existingSecret, not both" }}
{{- end }}
{{- if $v.secrets.files }}
{{- range $i, $key := $v.signingKeys }}
{{- if not (hasKey $v.secrets.files $key.file) }}
{{- fail (printf "signingKeys[%d].file: %q is not a key of secrets.files" $i $key.file) }}
{{- end }}
{{- end }}
{{- if and $v.redis.passwordFile (not (hasKey $v.secrets.files $v.redis.passwordFile)) }}
{{- fail (printf "redis.passwordFile: %q is not a key of secrets.files" $v.redis.passwordFile) }}
{{- end }}
{{- end }}
{{- if and (or $v.signingKeys $v.redis.passwordFile) (not (include "tessera.hasSecret" .)) }}
{{- fail "signingKeys and redis.passwordFile name files of a secret: set secrets.files or secrets.existingSecret" }}
{{- end }}
{{- if and $v.tls.enabled (eq $v.tls.source "secret") (not $v.tls.secretName) }}
{{- fail "tls.enabled with tls.source secret needs tls.secretName (a kubernetes.io/tls Secret)" }}
{{- end }}
{{- if and $v.tls.enabled (eq $v.tls.source "spiffe") (not $v.spiffe.csi.enabled) }}
{{- fail "tls.source spiffe serves the broker's X.509-SVID from the Workload API: set spiffe.csi.enabled" }}
{{- end }}
{{- $needed := add (int $v.preStopSleepSeconds) (int $v.drainTimeoutSeconds) }}
{{- if le (int $v.terminationGracePeriodSeconds) $needed }}
{{- fail (printf "terminationGracePeriodSeconds %d must exceed preStopSleepSeconds + drainTimeoutSeconds (%d), or the kubelet kills the broker mid-drain" (int $v.terminationGracePeriodSeconds) $needed) }}
{{- end }}
{{- if and (not (kindIs "invalid" $v.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" $v.podDisruptionBudget.maxUnavailable)) }}
{{- fail "podDisruptionBudget: set maxUnavailable or minAvailable (null the other)" }}
{{- end }}
{{- range $key := list "issuer" "listen" "dataDir" }}
{{- if hasKey $user $key }}
{{- fail (printf "config.%s is rendered by the chart: remove it from config (see values.yaml)" $key) }}
{{- end }}
{{- end }}
{{- $store := default (dict) (get $user "store") }}
{{- range $key := list "kind" "url" "username" "password" "replicas" }}
{{- if hasKey $store $key }}
{{- fail (printf "config.store.%s is rendered by the chart from redis.* and replicaCount: remove it from config" $key) }}
{{- end }}
{{- end }}
{{- $endpoints := default (dict) (get $user "endpoints") }}
{{- range $door, $value := dict "token" "oauth.enabled" "spiffeExchange" "spiffeExchange.enabled" "metrics" "metrics.enabled" }}
{{- if hasKey (default (dict) (get $endpoints $door)) "enabled" }}
{{- fail (printf "config.endpoints.%s.enabled is rendered by the chart: set %s instead" $door $value) }}
{{- end }}
{{- end }}
{{- if hasKey (default (dict) (get $user "lifecycle")) "drainTimeoutMs" }}
{{- fail "config.lifecycle.drainTimeoutMs is rendered by the chart: set drainTimeoutSeconds instead" }}
{{- end }}
{{- if and $v.signingKeys $userKeys }}
{{- fail "signing keys are given twice: in signingKeys and in config.keys.files; keep one" }}
{{- end }}
{{- end }}

{{/* The config file the chart renders, merged by the broker after the user's (later files win). */}}
{{- define "tessera.chartConfig" -}}
{{- $v := .Values }}
{{- $listen := dict "host" "0.0.0.0" "port" (int $v.port) }}
{{- if $v.tls.enabled }}
{{- if eq $v.tls.source "spiffe" }}
{{- $spiffe := dict "socket" (printf "unix://%s/%s" $v.spiffe.csi.mountPath $v.spiffe.csi.socketName) }}
{{- if $v.tls.spiffeId }}{{ $_ := set $spiffe "spiffeId" $v.tls.spiffeId }}{{ end }}
{{- $_ := set $listen "tls" (dict "spiffe" $spiffe) }}
{{- else }}
{{- $tls := dict "certFile" (printf "%s/tls.crt" $v.paths.tls) "keyFile" (printf "%s/tls.key" $v.paths.tls) }}
{{- if $v.tls.caFile }}{{ $_ := set $tls "caFile" (printf "%s/ca.crt" $v.paths.tls) }}{{ end }}
{{- $_ := set $listen "tls" $tls }}
{{- end }}
{{- end }}
{{- $config := dict "issuer" $v.issuer "listen" $listen "dataDir" $v.paths.data }}
{{- $store := dict "kind" "memory" "replicas" 1 }}
{{- if $v.redis.url }}
{{- $store = dict "kind" "redis" "url" $v.redis.url "replicas" (int $v.replicaCount) }}
{{- if $v.redis.username }}{{ $_ := set $store "username" $v.redis.username }}{{ end }}
{{- if $v.redis.passwordFile }}{{ $_ := set $store "password" (printf "${file:%s/%s}" $v.paths.secrets $v.redis.passwordFile) }}{{ end }}
{{- end }}
{{- $_ := set $config "store" $store }}
{{- $_ := set $config "endpoints" (dict "token" (dict "enabled" $v.oauth.enabled) "spiffeExchange" (dict "enabled" $v.spiffeExchange.enabled) "metrics" (dict "enabled" $v.metrics.enabled)) }}
{{- $_ := set $config "lifecycle" (dict "drainTimeoutMs" (mul (int $v.drainTimeoutSeconds) 1000)) }}
{{- if $v.signingKeys }}
{{- $files := list }}
{{- range $v.signingKeys }}
{{- $file := dict "path" (printf "%s/%s" $v.paths.secrets .file) }}
{{- if .kid }}{{ $_ := set $file "kid" .kid }}{{ end }}
{{- if .algorithm }}{{ $_ := set $file "algorithm" .algorithm }}{{ end }}
{{- if .use }}{{ $_ := set $file "use" .use }}{{ end }}
{{- $files = append $files $file }}
{{- end }}
{{- $_ := set $config "keys" (dict "files" $files) }}
{{- else if not (include "tessera.devKey" . | fromJson).userKeys }}
{{- $_ := set $config "keys" (dict "generate" true) }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/* Whether the pod generates a development key (no signingKeys, no keys.files in config). */}}
{{- define "tessera.devKey" -}}
{{- $user := include "tessera.userConfig" . | fromJson }}
{{- $userKeys := and (hasKey $user "keys") (hasKey (get $user "keys") "files") }}
{{- toJson (dict "userKeys" $userKeys "generate" (and (not .Values.signingKeys) (not $userKeys))) }}
{{- end }}

{{- define "tessera.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
