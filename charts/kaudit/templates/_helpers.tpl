{{/* Name of every object the chart creates: the release name, or "<release>-kaudit". */}}
{{- define "kaudit.fullname" -}}
{{- if contains "kaudit" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-kaudit" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object; the selector labels are the stable subset. */}}
{{- define "kaudit.selectorLabels" -}}
app.kubernetes.io/name: kaudit
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "kaudit.labels" -}}
{{ include "kaudit.selectorLabels" . }}
{{ include "kaudit.commonLabels" . }}
{{- end -}}

{{/* Labels of objects that are not part of the operator workload (the AuditCollection). */}}
{{- define "kaudit.commonLabels" -}}
app.kubernetes.io/part-of: kaudit
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* repository:tag or repository@digest. */}}
{{- define "kaudit.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}
