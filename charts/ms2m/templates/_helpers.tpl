{{- define "ms2m.labels" -}}
app.kubernetes.io/part-of: ms2m
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}
{{- define "ms2m.image" -}}
{{ .image.repository }}:{{ .image.tag | default .appVersion }}
{{- end }}
