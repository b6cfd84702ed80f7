{{- define "moat.name" -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}

{{- define "moat.labels" -}}
app.kubernetes.io/name: moat
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "moat.selector" -}}
app.kubernetes.io/name: moat
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
{{- $secretName := printf "%s-tls" (include "moat.name" .) -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $secretName -}}
{{- if and $existing (index $existing.data "ca.crt") (index $existing.data "tls.crt") (index $existing.data "tls.key") -}}
ca.crt: {{ index $existing.data "ca.crt" }}
tls.crt: {{ index $existing.data "tls.crt" }}
tls.key: {{ index $existing.data "tls.key" }}
{{- else -}}
{{- $svc := include "moat.name" . -}}
{{- $ca := genCA (printf "%s-ca" $svc) (int .Values.certificates.validityDays) -}}
{{- $dns := list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) -}}
{{- $cert := genSignedCert (printf "%s.%s.svc" $svc .Release.Namespace) nil $dns (int .Values.certificates.validityDays) $ca -}}
ca.crt: {{ $ca.Cert | b64enc }}
tls.crt: {{ $cert.Cert | b64enc }}
tls.key: {{ $cert.Key | b64enc }}
{{- end -}}
{{- end -}}

{{/* The scanner engine's flags, shared by `serve --scanner embedded` and `moat scanner`. */}}
{{- define "moat.engineArgs" -}}
{{- $db := .Values.scanner.database -}}
- --db-dir=/var/lib/moat/vulndb
- --db-max-age={{ $db.maxAge }}
{{- if $db.url }}
- --db-url={{ $db.url }}
- --db-update-interval={{ $db.updateInterval }}
{{- end }}
{{- if $db.path }}
- --db-path={{ $db.path }}
{{- end }}
{{- with .Values.provider.insecureRegistries }}
- --insecure-registries={{ join "," . }}
{{- end }}
{{- if .Values.provider.registryCredentialsSecret }}
- --registry-config=/etc/moat/registry/.dockerconfigjson
{{- end }}
{{- end -}}

{{/* The scan queue and policy flags of `serve`. */}}
{{- define "moat.scanArgs" -}}
{{- $s := .Values.scanner -}}
{{- $max := list -}}
{{- range $k, $v := $s.policy.max }}{{ $max = append $max (printf "%s=%v" $k $v) }}{{ end -}}
- --scan-workers={{ $s.workers }}
- --scan-queue={{ $s.queue }}
- --scan-timeout={{ $s.timeout }}
- --scan-wait={{ $s.wait }}
- --report-ttl={{ $s.reportTTL }}
- --scan-failed-ttl={{ $s.failedTTL }}
- --scan-max-findings={{ $s.maxFindings }}
- --scan-max={{ join "," $max }}
{{- if $s.policy.ignoreUnfixed }}
- --scan-ignore-unfixed
{{- end }}
{{- with $s.policy.ignoreIDs }}
- --scan-ignore-ids={{ join "," . }}
{{- end }}
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
{{- $secretName := printf "%s-scanner-tls" (include "moat.name" .) -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $secretName -}}
{{- if and $existing (index $existing.data "ca.crt") (index $existing.data "tls.crt") (index $existing.data "client.crt") -}}
{{- range $k := list "ca.crt" "tls.crt" "tls.key" "client.crt" "client.key" }}
{{ $k }}: {{ index $existing.data $k }}
{{- end }}
{{- else -}}
{{- $svc := printf "%s-scanner" (include "moat.name" .) -}}
{{- $ca := genCA (printf "%s-ca" $svc) (int .Values.certificates.validityDays) -}}
{{- $dns := list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) -}}
{{- $cert := genSignedCert (printf "%s.%s.svc" $svc .Release.Namespace) nil $dns (int .Values.certificates.validityDays) $ca -}}
{{- $client := genSignedCert (printf "%s-provider" (include "moat.name" .)) nil nil (int .Values.certificates.validityDays) $ca -}}
ca.crt: {{ $ca.Cert | b64enc }}
tls.crt: {{ $cert.Cert | b64enc }}
tls.key: {{ $cert.Key | b64enc }}
client.crt: {{ $client.Cert | b64enc }}
client.key: {{ $client.Key | b64enc }}
{{- end -}}
{{- end -}}

{{- define "moat.scannerSelector" -}}
app.kubernetes.io/name: moat-scanner
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "moat.scannerLabels" -}}
{{ include "moat.scannerSelector" . }}
app.kubernetes.io/component: scanner
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The signature flags of `serve`. */}}
{{- define "moat.signatureArgs" -}}
{{- $s := .Values.signatures -}}
{{- if $s.enabled -}}
{{- if not (or $s.keys $s.identities) }}{{ fail "signatures.enabled needs signatures.keys or signatures.identities" }}{{ end -}}
{{- if not (or $s.rekorKey $s.ignoreTlog) }}{{ fail "signatures: set rekorKey (Rekor bundles required), or ignoreTlog: true to turn transparency-log checks off" }}{{ end -}}
{{- if and $s.identities (not $s.fulcioRoots) }}{{ fail "signatures.identities need signatures.fulcioRoots" }}{{ end -}}
{{- if not $s.secret }}{{ fail "signatures.secret: the Secret holding the keys" }}{{ end -}}
{{- $keys := list -}}
{{- range $s.keys }}{{ $keys = append $keys (printf "/etc/moat/signatures/%s" .) }}{{ end -}}
{{- with $keys }}
- --signature-keys={{ join "," . }}
{{- end }}
{{- range $s.identities }}
{{- $f := list -}}
{{- with .issuer }}{{ $f = append $f (printf "issuer=%s" .) }}{{ end -}}
{{- with .issuerRegExp }}{{ $f = append $f (printf "issuer-regexp=%s" .) }}{{ end -}}
{{- with .subject }}{{ $f = append $f (printf "subject=%s" .) }}{{ end -}}
{{- with .subjectRegExp }}{{ $f = append $f (printf "subject-regexp=%s" .) }}{{ end }}
- {{ printf "--signature-identity=%s" (join "," $f) | quote }}
{{- end }}
{{- with $s.fulcioRoots }}
- --signature-fulcio-roots=/etc/moat/signatures/{{ . }}
{{- end }}
{{- with $s.rekorKey }}
- --signature-rekor-key=/etc/moat/signatures/{{ . }}
{{- end }}
{{- if $s.ignoreTlog }}
- --signature-ignore-tlog
{{- end }}
{{- if $s.attestations }}
- --scan-attestations
{{- end }}
{{- end -}}
{{- end -}}

{{/* cert-manager mode without an issuerRef: the chart's CA, with its key, reused on upgrade. */}}
{{- define "moat.certManagerCA" -}}
{{- $secretName := printf "%s-ca" (include "moat.name" .) -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $secretName -}}
{{- if and $existing (index $existing.data "tls.crt") (index $existing.data "tls.key") -}}
tls.crt: {{ index $existing.data "tls.crt" }}
tls.key: {{ index $existing.data "tls.key" }}
{{- else -}}
{{- $ca := genCA (printf "%s-ca" (include "moat.name" .)) (int .Values.certificates.validityDays) -}}
tls.crt: {{ $ca.Cert | b64enc }}
tls.key: {{ $ca.Key | b64enc }}
{{- end -}}
{{- end -}}
