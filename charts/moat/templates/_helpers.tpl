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
