{{/* The chart's name (app.kubernetes.io/name): nameOverride or "moat". */}}
{{- define "moat.name" -}}{{ default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}{{- end -}}

{{/* The prefix of every object's name: fullnameOverride, else the release name when it holds the chart's
name, else "<release>-<name>" (the helm create convention). */}}
{{- define "moat.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{ .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else -}}
{{- $name := include "moat.name" . -}}
{{- if contains $name .Release.Name -}}
{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else -}}
{{ printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "moat.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{ default (include "moat.fullname" .) .Values.serviceAccount.name }}
{{- else -}}
{{ default "default" .Values.serviceAccount.name }}
{{- end -}}
{{- end -}}

{{- define "moat.labels" -}}
app.kubernetes.io/name: {{ include "moat.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "moat.selector" -}}
app.kubernetes.io/name: {{ include "moat.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "moat.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* Namespaces no Moat constraint judges. */}}
{{- define "moat.exemptNamespaces" -}}
{{- $ns := list "kube-system" .Release.Namespace -}}
{{- range .Values.policies.exemptNamespaces }}{{ $ns = append $ns . }}{{ end -}}
{{ toJson (uniq $ns) }}
{{- end -}}

{{/* The serving certificate: reused from the existing secret on upgrade. */}}
{{- define "moat.certs" -}}
{{- $secretName := printf "%s-tls" (include "moat.fullname" .) -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $secretName -}}
{{- if and $existing (index $existing.data "ca.crt") (index $existing.data "tls.crt") (index $existing.data "tls.key") -}}
ca.crt: {{ index $existing.data "ca.crt" }}
tls.crt: {{ index $existing.data "tls.crt" }}
tls.key: {{ index $existing.data "tls.key" }}
{{- else -}}
{{- $svc := include "moat.fullname" . -}}
{{- $ca := genCA (printf "%s-ca" $svc) (int .Values.certificates.validityDays) -}}
{{- $dns := list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) -}}
{{- $cert := genSignedCert (printf "%s.%s.svc" $svc .Release.Namespace) nil $dns (int .Values.certificates.validityDays) $ca -}}
ca.crt: {{ $ca.Cert | b64enc }}
tls.crt: {{ $cert.Cert | b64enc }}
tls.key: {{ $cert.Key | b64enc }}
{{- end -}}
{{- end -}}

{{/* Volumes a scanning pod needs: the database directory, and the offline database. */}}
{{- define "moat.engineVolumes" -}}
- name: vulndb
  emptyDir: {sizeLimit: {{ .Values.scanner.database.storageSizeLimit }}}
- name: tmp   # image layers are unpacked here while scanned
  emptyDir: {sizeLimit: {{ .Values.scanner.database.storageSizeLimit }}}
{{- with .Values.scanner.database.volume }}
- name: offline-db
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "moat.engineMounts" -}}
- {name: vulndb, mountPath: /var/lib/moat/vulndb}
- {name: tmp, mountPath: /tmp}
{{- if .Values.scanner.database.volume }}
- {name: offline-db, mountPath: /var/lib/moat/offline, readOnly: true}
{{- end }}
{{- end -}}

{{/* The scanner service's certificates: their own CA, reused on upgrade. */}}
{{- define "moat.scannerCerts" -}}
{{- $secretName := printf "%s-scanner-tls" (include "moat.fullname" .) -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $secretName -}}
{{- if and $existing (index $existing.data "ca.crt") (index $existing.data "tls.crt") (index $existing.data "client.crt") -}}
{{- range $k := list "ca.crt" "tls.crt" "tls.key" "client.crt" "client.key" }}
{{ $k }}: {{ index $existing.data $k }}
{{- end }}
{{- else -}}
{{- $svc := printf "%s-scanner" (include "moat.fullname" .) -}}
{{- $ca := genCA (printf "%s-ca" $svc) (int .Values.certificates.validityDays) -}}
{{- $dns := list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) -}}
{{- $cert := genSignedCert (printf "%s.%s.svc" $svc .Release.Namespace) nil $dns (int .Values.certificates.validityDays) $ca -}}
{{- $client := genSignedCert (printf "%s-provider" (include "moat.fullname" .)) nil nil (int .Values.certificates.validityDays) $ca -}}
ca.crt: {{ $ca.Cert | b64enc }}
tls.crt: {{ $cert.Cert | b64enc }}
tls.key: {{ $cert.Key | b64enc }}
client.crt: {{ $client.Cert | b64enc }}
client.key: {{ $client.Key | b64enc }}
{{- end -}}
{{- end -}}

{{/* The node scanners' certificates: a CA of their own (only it opens the provider's node-report listener),
and their client certificate, reused on upgrade. */}}
{{- define "moat.nodeScanCerts" -}}
{{- $secretName := printf "%s-node-scan-tls" (include "moat.fullname" .) -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $secretName -}}
{{- if and $existing (index $existing.data "ca.crt") (index $existing.data "tls.crt") (index $existing.data "tls.key") -}}
{{- range $k := list "ca.crt" "tls.crt" "tls.key" }}
{{ $k }}: {{ index $existing.data $k }}
{{- end }}
{{- else -}}
{{- $ca := genCA (printf "%s-node-scan-ca" (include "moat.fullname" .)) (int .Values.certificates.validityDays) -}}
{{- $client := genSignedCert (printf "%s-node-scan" (include "moat.fullname" .)) nil nil (int .Values.certificates.validityDays) $ca -}}
ca.crt: {{ $ca.Cert | b64enc }}
tls.crt: {{ $client.Cert | b64enc }}
tls.key: {{ $client.Key | b64enc }}
{{- end -}}
{{- end -}}

{{- define "moat.nodeScanSelector" -}}
app.kubernetes.io/name: {{ include "moat.name" . }}-node-scan
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "moat.nodeScanLabels" -}}
{{ include "moat.nodeScanSelector" . }}
app.kubernetes.io/component: node-scan
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "moat.constraintsSelector" -}}
app.kubernetes.io/name: {{ include "moat.name" . }}-constraints
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "moat.constraintsLabels" -}}
{{ include "moat.constraintsSelector" . }}
app.kubernetes.io/component: constraints
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "moat.testSelector" -}}
app.kubernetes.io/name: {{ include "moat.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The helm test pod's: not the provider's selector, so the Service never routes to it. */}}
{{- define "moat.testLabels" -}}
{{ include "moat.testSelector" . }}
app.kubernetes.io/component: test
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* `moat node-scan --config`, for nodeScan.enabled. */}}
{{- define "moat.nodeScanConfig" -}}
{{- $n := .Values.nodeScan -}}
{{- $c := dict "metrics-addr" ":8080" "root" "/host" "tls-cert" "/etc/moat/node-scan/tls.crt" "tls-key" "/etc/moat/node-scan/tls.key"
  "provider-ca" "/etc/moat/provider-ca/ca.crt" "provider-url" (printf "https://%s.%s.svc:8444/v1/node-report" (include "moat.fullname" .) .Release.Namespace)
  "interval" $n.interval "resend" $n.resend "nice" $n.nice "log-level" .Values.provider.logLevel -}}
{{- $c = merge $c (include "moat.engineSettings" . | fromJson) -}}
{{- toYaml $c }}
{{- end -}}

{{- define "moat.scannerSelector" -}}
app.kubernetes.io/name: {{ include "moat.name" . }}-scanner
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "moat.scannerLabels" -}}
{{ include "moat.scannerSelector" . }}
app.kubernetes.io/component: scanner
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* cert-manager mode without an issuerRef: the chart's CA, with its key, reused on upgrade. */}}
{{- define "moat.certManagerCA" -}}
{{- $secretName := printf "%s-ca" (include "moat.fullname" .) -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $secretName -}}
{{- if and $existing (index $existing.data "tls.crt") (index $existing.data "tls.key") -}}
tls.crt: {{ index $existing.data "tls.crt" }}
tls.key: {{ index $existing.data "tls.key" }}
{{- else -}}
{{- $ca := genCA (printf "%s-ca" (include "moat.fullname" .)) (int .Values.certificates.validityDays) -}}
tls.crt: {{ $ca.Cert | b64enc }}
tls.key: {{ $ca.Key | b64enc }}
{{- end -}}
{{- end -}}

{{/* Settings the chart sets itself (file paths, addresses, the scanner's wiring): provider.config and
scanner.config may not set them. */}}
{{- define "moat.ownedSettings" -}}
{{ list "config" "check-config" "addr" "metrics-addr" "tls-cert" "tls-key" "client-ca" "scanner" "scanner-url" "scanner-ca" "scanner-cert" "scanner-key" "db-dir" "registry-config" "signature-keys" "signature-fulcio-roots" "signature-rekor-key" "redis-url" "redis-password-file" "redis-mac-key-file" "redis-ca" "redis-cert" "redis-key" "redis-prefix" "redis-budget" "pull-secrets" "pull-secrets-of-service-account" "namespace-credentials" "kubeconfig" "azure-identity" "aws-identity" "gcp-identity" "node-report-ca" "node-report-addr" | toJson }}
{{- end -}}

{{/* extra merged over base, refusing a setting the chart owns. */}}
{{- define "moat.mergeSettings" -}}
{{- $owned := include "moat.ownedSettings" .root | fromJsonArray -}}
{{- range $k, $v := .extra }}
{{- if has $k $owned }}{{ fail (printf "%s.%s is set by the chart; use the chart's own values for it (see the chart README)" $.from $k) }}{{ end }}
{{- $_ := set $.base $k $v }}
{{- end }}
{{- toYaml .base }}
{{- end -}}

{{/* The engine's settings, shared by `serve --scanner embedded` and `moat scanner`. */}}
{{- define "moat.engineSettings" -}}
{{- $db := .Values.scanner.database -}}
{{- $c := dict "db-dir" "/var/lib/moat/vulndb" "db-max-age" $db.maxAge -}}
{{- if $db.url }}{{ $_ := set $c "db-url" $db.url }}{{ $_ := set $c "db-update-interval" $db.updateInterval }}{{ end -}}
{{- with $db.path }}{{ $_ := set $c "db-path" . }}{{ end -}}
{{- toJson $c -}}
{{- end -}}

{{/* Registry access, shared by both commands. */}}
{{- define "moat.registrySettings" -}}
{{- $c := dict "registry-concurrency" .Values.provider.registryConcurrency -}}
{{- with .Values.provider.insecureRegistries }}{{ $_ := set $c "insecure-registries" . }}{{ end -}}
{{- if .Values.provider.registryCredentialsSecret }}{{ $_ := set $c "registry-config" "/etc/moat/registry/.dockerconfigjson" }}{{ end -}}
{{- with .Values.provider.pullSecrets }}{{ $_ := set $c "pull-secrets" . }}{{ end -}}
{{- if .Values.provider.serviceAccountPullSecrets }}{{ $_ := set $c "pull-secrets-of-service-account" (printf "%s/%s" .Release.Namespace (include "moat.serviceAccountName" .)) }}{{ end -}}
{{- with .Values.provider.namespaceCredentials }}{{ $_ := set $c "namespace-credentials" . }}{{ end -}}
{{- range $cloud, $mode := .Values.provider.identities }}{{ $_ := set $c (printf "%s-identity" $cloud) $mode }}{{ end -}}
{{- toJson $c -}}
{{- end -}}

{{/* Whether Moat's pods read the Kubernetes API (pull secrets): then they mount a token, and nothing else does. */}}
{{- define "moat.readsTheAPI" -}}
{{- if or .Values.provider.pullSecrets .Values.provider.serviceAccountPullSecrets .Values.provider.namespaceCredentials }}true{{ else }}false{{ end -}}
{{- end -}}

{{/* `moat serve --config`: every setting by its flag name (docs/reference/flags.md). */}}
{{- define "moat.serveConfig" -}}
{{- $p := .Values.provider -}}
{{- $c := dict "addr" ":8443" "metrics-addr" ":8080" "tls-cert" "/etc/moat/tls/tls.crt" "tls-key" "/etc/moat/tls/tls.key"
  "client-ca" "/etc/moat/gatekeeper-ca/ca.crt" "validate-deadline" $p.validateDeadline "mutate-deadline" $p.mutateDeadline
  "digest-ttl" $p.digestTTL "error-ttl" $p.errorTTL "cache-size" $p.cacheSize "log-level" $p.logLevel "shutdown-delay" "5s"
  "scanner" .Values.scanner.mode -}}
{{- $c = merge $c (include "moat.registrySettings" . | fromJson) -}}
{{- $s := .Values.scanner -}}
{{- if ne $s.mode "off" }}
{{- $max := list -}}
{{- range $k, $v := $s.policy.max }}{{ $max = append $max (printf "%s=%v" $k $v) }}{{ end -}}
{{- $_ := set $c "scan-workers" $s.workers }}{{ $_ := set $c "scan-queue" $s.queue }}{{ $_ := set $c "scan-timeout" $s.timeout }}
{{- $_ := set $c "scan-wait" $s.wait }}{{ $_ := set $c "report-ttl" $s.reportTTL }}{{ $_ := set $c "scan-failed-ttl" $s.failedTTL }}
{{- $_ := set $c "scan-max-findings" $s.maxFindings }}{{ $_ := set $c "scan-max" (ternary (join "," $max) "none" (gt (len $max) 0)) }}
{{- if $s.policy.ignoreUnfixed }}{{ $_ := set $c "scan-ignore-unfixed" true }}{{ end }}
{{- with $s.policy.ignoreIDs }}{{ $_ := set $c "scan-ignore-ids" . }}{{ end }}
{{- with $s.policy.grace }}{{ $_ := set $c "scan-grace" . }}{{ end }}
{{- if $s.vex.configMap }}{{ $_ := set $c "vex-dir" "/etc/moat/vex" }}{{ end }}
{{- if $s.vex.attestations }}
{{- if not .Values.signatures.enabled }}{{ fail "scanner.vex.attestations are verified under the signature trust: set signatures.enabled" }}{{ end }}
{{- $_ := set $c "vex-attestations" true }}
{{- end }}
{{- end }}
{{- if eq $s.mode "embedded" }}
{{- $c = merge $c (include "moat.engineSettings" . | fromJson) -}}
{{- else if eq $s.mode "service" }}
{{- $_ := set $c "scanner-url" (printf "https://%s-scanner.%s.svc:8443" (include "moat.fullname" .) .Release.Namespace) }}
{{- $_ := set $c "scanner-ca" "/etc/moat/scanner-tls/ca.crt" }}{{ $_ := set $c "scanner-cert" "/etc/moat/scanner-tls/client.crt" }}
{{- $_ := set $c "scanner-key" "/etc/moat/scanner-tls/client.key" }}
{{- end }}
{{- $g := .Values.signatures -}}
{{- if $g.enabled }}
{{- if not (or $g.keys $g.identities) }}{{ fail "signatures.enabled needs signatures.keys or signatures.identities" }}{{ end -}}
{{- if not (or $g.rekorKey $g.ignoreTlog) }}{{ fail "signatures: set rekorKey (Rekor bundles required), or ignoreTlog: true to turn transparency-log checks off" }}{{ end -}}
{{- if and $g.identities (not $g.fulcioRoots) }}{{ fail "signatures.identities need signatures.fulcioRoots" }}{{ end -}}
{{- if not $g.secret }}{{ fail "signatures.secret: the Secret holding the keys" }}{{ end -}}
{{- $keys := list -}}
{{- range $g.keys }}{{ $keys = append $keys (printf "/etc/moat/signatures/%s" .) }}{{ end -}}
{{- with $keys }}{{ $_ := set $c "signature-keys" . }}{{ end }}
{{- $ids := list -}}
{{- range $g.identities }}
{{- $f := list -}}
{{- with .issuer }}{{ $f = append $f (printf "issuer=%s" .) }}{{ end -}}
{{- with .issuerRegExp }}{{ $f = append $f (printf "issuer-regexp=%s" .) }}{{ end -}}
{{- with .subject }}{{ $f = append $f (printf "subject=%s" .) }}{{ end -}}
{{- with .subjectRegExp }}{{ $f = append $f (printf "subject-regexp=%s" .) }}{{ end -}}
{{- $ids = append $ids (join "," $f) }}
{{- end }}
{{- with $ids }}{{ $_ := set $c "signature-identity" . }}{{ end }}
{{- with $g.fulcioRoots }}{{ $_ := set $c "signature-fulcio-roots" (printf "/etc/moat/signatures/%s" .) }}{{ end }}
{{- with $g.rekorKey }}{{ $_ := set $c "signature-rekor-key" (printf "/etc/moat/signatures/%s" .) }}{{ end }}
{{- if $g.ignoreTlog }}{{ $_ := set $c "signature-ignore-tlog" true }}{{ end }}
{{- if $g.attestations }}{{ $_ := set $c "scan-attestations" true }}{{ end }}
{{- end }}
{{- $c = merge $c (include "moat.sharedStateSettings" . | fromJson) -}}
{{- if .Values.nodeScan.enabled }}
{{- if and (eq .Values.sharedState.mode "none") (gt (int .Values.replicaCount) 1) }}{{ fail "nodeScan.enabled with several provider replicas needs sharedState (bundled or external): a node's report reaches one replica, the shared tier gives it to all" }}{{ end -}}
{{- $_ := set $c "node-report-ca" "/etc/moat/node-scan-ca/ca.crt" }}{{ $_ := set $c "node-report-addr" ":8444" }}{{ $_ := set $c "node-report-max-age" .Values.nodeScan.maxAge }}
{{- end }}
{{- include "moat.mergeSettings" (dict "root" . "base" $c "extra" $p.config "from" "provider.config") }}
{{- end -}}

{{/* `moat scanner --config`, for scanner.mode service. */}}
{{- define "moat.scannerConfig" -}}
{{- $c := dict "addr" ":8443" "metrics-addr" ":8080" "tls-cert" "/etc/moat/tls/tls.crt" "tls-key" "/etc/moat/tls/tls.key"
  "client-ca" "/etc/moat/tls/ca.crt" "workers" .Values.scanner.workers "log-level" .Values.provider.logLevel -}}
{{- $c = merge $c (include "moat.registrySettings" .| fromJson) (include "moat.engineSettings" . | fromJson) -}}
{{- include "moat.mergeSettings" (dict "root" . "base" $c "extra" .Values.scanner.config "from" "scanner.config") }}
{{- end -}}

{{/* Pod settings every Moat pod takes: pull secrets, priority, scheduling. */}}
{{- define "moat.podScheduling" -}}
{{- with .root.Values.image.pullSecrets }}
imagePullSecrets: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The shared tier's settings (sharedState), for `moat serve`. */}}
{{- define "moat.sharedStateSettings" -}}
{{- $s := .Values.sharedState -}}
{{- $c := dict -}}
{{- if ne $s.mode "none" }}
{{- $_ := set $c "redis-password-file" "/etc/moat/redis/password" }}{{ $_ := set $c "redis-mac-key-file" "/etc/moat/redis/mac-key" }}
{{- $_ := set $c "redis-prefix" $s.prefix }}{{ $_ := set $c "redis-budget" $s.budget }}
{{- if eq $s.mode "bundled" }}
{{- $_ := set $c "redis-url" (printf "redis://%s-redis.%s.svc:6379" (include "moat.fullname" .) .Release.Namespace) }}
{{- else }}
{{- if not $s.external.url }}{{ fail "sharedState.mode external needs sharedState.external.url (redis://host:6379 or rediss://host:6380)" }}{{ end -}}
{{- if not $s.external.passwordSecret }}{{ fail "sharedState.mode external needs sharedState.external.passwordSecret: a Secret with the key password" }}{{ end -}}
{{- $_ := set $c "redis-url" $s.external.url }}
{{- if $s.external.tlsSecret }}
{{- $_ := set $c "redis-ca" "/etc/moat/redis-tls/ca.crt" }}
{{- if $s.external.clientCertificate }}{{ $_ := set $c "redis-cert" "/etc/moat/redis-tls/tls.crt" }}{{ $_ := set $c "redis-key" "/etc/moat/redis-tls/tls.key" }}{{ end }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson $c }}
{{- end -}}

{{/* The provider's mounts of the shared tier's secrets. */}}
{{- define "moat.sharedStateMounts" -}}
{{- if ne .Values.sharedState.mode "none" }}
- {name: redis, mountPath: /etc/moat/redis, readOnly: true}
{{- if and (eq .Values.sharedState.mode "external") .Values.sharedState.external.tlsSecret }}
- {name: redis-tls, mountPath: /etc/moat/redis-tls, readOnly: true}
{{- end }}
{{- end }}
{{- end -}}

{{- define "moat.sharedStateVolumes" -}}
{{- $s := .Values.sharedState -}}
{{- if ne $s.mode "none" }}
- name: redis
  projected:
    sources:
    - secret:
        name: {{ include "moat.fullname" . }}-shared-state
        items: [{key: mac-key, path: mac-key}]
    - secret:
        {{- if eq $s.mode "bundled" }}
        name: {{ include "moat.fullname" . }}-shared-state
        items: [{key: password, path: password}]
        {{- else }}
        name: {{ $s.external.passwordSecret }}
        items: [{key: password, path: password}]
        {{- end }}
{{- if and (eq $s.mode "external") $s.external.tlsSecret }}
- name: redis-tls
  secret: {secretName: {{ $s.external.tlsSecret }}}
{{- end }}
{{- end }}
{{- end -}}
