{{- define "naiad.fullname" -}}
{{- if contains "naiad" .Release.Name -}}{{ .Release.Name | trunc 50 | trimSuffix "-" }}{{- else -}}{{ printf "%s-naiad" .Release.Name | trunc 50 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "naiad.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "naiad.labels" -}}
app.kubernetes.io/name: naiad
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "naiad.selector" -}}
app.kubernetes.io/name: naiad
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "naiad.registryAuthSecret" -}}
{{ .Values.registryAuth.existingSecret | default (printf "%s-registry-auth" (include "naiad.fullname" .)) }}
{{- end -}}

{{- define "naiad.tokensSecret" -}}
{{ .Values.tokens.existingSecret | default (printf "%s-tokens" (include "naiad.fullname" .)) }}
{{- end -}}
