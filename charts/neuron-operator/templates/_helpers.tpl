{{/*
Names, labels and shared fragments. Names are cut at 63 characters (DNS label limit) minus room for the
longest suffix the templates add ("-metrics", "-kopf").
*/}}

{{- define "neuron-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 55 | trimSuffix "-" }}
{{- end }}

{{/* <release>-neuron-operator, or the release name alone when it already contains the chart name. */}}
{{- define "neuron-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 55 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "neuron-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object the chart renders. */}}
{{- define "neuron-operator.labels" -}}
helm.sh/chart: {{ include "neuron-operator.chart" . }}
{{ include "neuron-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: neuron-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Immutable subset used in the Deployment selector and the metrics Service selector. */}}
{{- define "neuron-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "neuron-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "neuron-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "neuron-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository@digest when a digest is set, else repository:tag (tag defaults to the chart's appVersion). */}}
{{- define "neuron-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
What the operator does with the API in the namespaces it watches (the "application" half of kopf's
docs/deployment-rbac.yaml split). Rendered into a ClusterRole (all namespaces) or one Role per watched
namespace. Deliberately absent: secrets (pods mount the HF token Secret by reference; the operator never reads
it), nodes (scheduling is the scheduler's job), configmaps.
*/}}
{{- define "neuron-operator.applicationRules" -}}
# Watch the NeuronInferenceServices it reconciles (kopf watches; reconcile reads the latest copy).
- apiGroups: ["inference.neuron-operator.io"]
  resources: ["neuroninferenceservices"]
  verbs: ["get", "list", "watch"]
# Write observedGeneration, phase and conditions through the status subresource only.
- apiGroups: ["inference.neuron-operator.io"]
  resources: ["neuroninferenceservices/status"]
  verbs: ["get", "patch", "update"]
# Serving workloads: a Deployment (single node) or one StatefulSet per replica group (multi-node), server-side applied.
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Compile Jobs, one per compile key.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The OpenAI-compatible endpoint Service and the headless Service of multi-node groups.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Pods: read failure reasons of compile and serving pods; delete a multi-node group's pods so it restarts together.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "delete"]
# Events on the service for compile started/succeeded/failed, stalled and ready transitions.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
# PodDisruptionBudgets that keep serving replicas up during node drains.
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The autoscaler of spec.autoscaling (provider hpa), server-side applied; deleted when the provider or spec changes.
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# The same for provider keda: KEDA ScaledObjects (unused, and nothing to grant on, where KEDA is not installed).
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["list", "watch", "create", "patch", "delete"]
{{- end }}
