{{/* Names ------------------------------------------------------------------------------------------- */}}

{{- define "fraudstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "fraudstream.fullname" -}}
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

{{/* "<fullname>-<component>", e.g. fraudstream.component (dict "root" $ "component" "worker") */}}
{{- define "fraudstream.componentName" -}}
{{- printf "%s-%s" (include "fraudstream.fullname" .root | trunc 50 | trimSuffix "-") .component }}
{{- end }}

{{- define "fraudstream.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "fraudstream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "fraudstream.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "fraudstream.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Labels ------------------------------------------------------------------------------------------ */}}

{{- define "fraudstream.labels" -}}
helm.sh/chart: {{ include "fraudstream.chart" . }}
app.kubernetes.io/name: {{ include "fraudstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fraudstream
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of one component: fraudstream.componentLabels (dict "root" $ "component" "worker") */}}
{{- define "fraudstream.componentLabels" -}}
{{ include "fraudstream.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "fraudstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fraudstream.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Secrets ----------------------------------------------------------------------------------------- */}}

{{/* The Secret this chart creates (for the values not taken from existing Secrets). */}}
{{- define "fraudstream.secretName" -}}
{{- include "fraudstream.fullname" . }}
{{- end }}

{{- define "fraudstream.kafkaSasl" -}}
{{- if hasPrefix "SASL" .Values.kafka.securityProtocol }}true{{ end }}
{{- end }}

{{- define "fraudstream.kafkaTls" -}}
{{- if has .Values.kafka.securityProtocol (list "SSL" "SASL_SSL") }}true{{ end }}
{{- end }}

{{/* Secret and key of the SASL password: kafka.sasl.existingSecret, else the Strimzi KafkaUser's Secret,
     else the chart's Secret. */}}
{{- define "fraudstream.kafkaPasswordSecret" -}}
{{- if .Values.kafka.sasl.existingSecret }}
{{- .Values.kafka.sasl.existingSecret }}
{{- else if .Values.strimzi.user.create }}
{{- .Values.kafka.sasl.username }}
{{- else }}
{{- include "fraudstream.secretName" . }}
{{- end }}
{{- end }}

{{- define "fraudstream.kafkaPasswordKey" -}}
{{- if or .Values.kafka.sasl.existingSecret .Values.strimzi.user.create }}
{{- .Values.kafka.sasl.existingSecretPasswordKey }}
{{- else }}kafka-sasl-password{{ end }}
{{- end }}

{{- define "fraudstream.redisPasswordSecret" -}}
{{- default (include "fraudstream.secretName" .) .Values.redis.existingSecret }}
{{- end }}

{{- define "fraudstream.redisPasswordKey" -}}
{{- if .Values.redis.existingSecret }}{{ .Values.redis.existingSecretPasswordKey }}{{ else }}redis-password{{ end }}
{{- end }}

{{- define "fraudstream.redisAuth" -}}
{{- if or .Values.redis.existingSecret .Values.redis.password }}true{{ end }}
{{- end }}

{{- define "fraudstream.cardHashSecret" -}}
{{- default (include "fraudstream.secretName" .) .Values.secrets.cardHash.existingSecret }}
{{- end }}

{{- define "fraudstream.cardHashKey" -}}
{{- if .Values.secrets.cardHash.existingSecret }}{{ .Values.secrets.cardHash.existingSecretKey }}{{ else }}card-hash-secret{{ end }}
{{- end }}

{{- define "fraudstream.apiTokenSecret" -}}
{{- default (include "fraudstream.secretName" .) .Values.secrets.apiToken.existingSecret }}
{{- end }}

{{- define "fraudstream.apiTokenKey" -}}
{{- if .Values.secrets.apiToken.existingSecret }}{{ .Values.secrets.apiToken.existingSecretKey }}{{ else }}api-token{{ end }}
{{- end }}

{{/* Environment ------------------------------------------------------------------------------------- */}}

{{/* Secret environment of a fraudstream container: fraudstream.secretEnv (dict "root" $ "cardHash" true
     "redis" true "apiToken" false) */}}
{{- define "fraudstream.secretEnv" -}}
{{- $root := .root }}
{{- if include "fraudstream.kafkaSasl" $root }}
- name: FRAUD_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "fraudstream.kafkaPasswordSecret" $root }}
      key: {{ include "fraudstream.kafkaPasswordKey" $root }}
{{- end }}
{{- if and .redis (include "fraudstream.redisAuth" $root) }}
- name: FRAUD_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "fraudstream.redisPasswordSecret" $root }}
      key: {{ include "fraudstream.redisPasswordKey" $root }}
{{- end }}
{{- if .cardHash }}
- name: FRAUD_CARD_HASH_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "fraudstream.cardHashSecret" $root }}
      key: {{ include "fraudstream.cardHashKey" $root }}
{{- end }}
{{- if .apiToken }}
- name: FRAUD_API_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "fraudstream.apiTokenSecret" $root }}
      key: {{ include "fraudstream.apiTokenKey" $root }}
{{- end }}
{{- end }}

{{/* The model backend URI the workers use. */}}
{{- define "fraudstream.modelBackend" -}}
{{- if .Values.tfserving.enabled }}
{{- printf "tfserving://%s:%d/%s?label=%s" (include "fraudstream.componentName" (dict "root" . "component" "tfserving")) (int .Values.tfserving.grpcPort) .Values.model.name .Values.model.label }}
{{- else }}
{{- printf "local:///data/models/%s" .Values.model.name }}
{{- end }}
{{- end }}

{{/* Pod-level pieces ------------------------------------------------------------------------------- */}}

{{/* Checksums of the configuration a fraudstream pod reads: a change rolls the pods. The secret one covers
     the values the chart's Secret is made from (the rendered Secret holds generated values that differ
     between renderings until the Secret exists). */}}
{{- define "fraudstream.configChecksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secret: {{ list .Values.secrets .Values.kafka.sasl .Values.redis | toJson | sha256sum }}
{{- end }}

{{- define "fraudstream.podAnnotations" -}}
{{- $root := .root }}
{{- include "fraudstream.configChecksums" $root }}
{{- if and $root.Values.metrics.podAnnotations .metricsPort }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .metricsPort | quote }}
prometheus.io/path: {{ default "/metrics" .metricsPath | quote }}
{{- end }}
{{- with $root.Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Volumes of a fraudstream pod: FRAUD_HOME (/data) and /tmp as emptyDirs, the model repository, the
     Kafka CA. */}}
{{- define "fraudstream.volumes" -}}
- name: home
  emptyDir:
    sizeLimit: {{ .Values.scratch.homeSizeLimit }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.scratch.tmpSizeLimit }}
- name: models
  persistentVolumeClaim:
    claimName: {{ include "fraudstream.modelClaim" . }}
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.tls.caSecret }}
    items:
      - key: {{ .Values.kafka.tls.caSecretKey }}
        path: ca.crt
{{- end }}
{{- end }}

{{/* Mounts matching fraudstream.volumes: fraudstream.volumeMounts (dict "root" $ "modelsReadOnly" true) */}}
{{- define "fraudstream.volumeMounts" -}}
- name: home
  mountPath: /data
- name: tmp
  mountPath: /tmp
- name: models
  mountPath: /data/models
  readOnly: {{ .modelsReadOnly }}
{{- if .root.Values.kafka.tls.caSecret }}
- name: kafka-ca
  mountPath: /etc/fraudstream/kafka-ca
  readOnly: true
{{- end }}
{{- end }}

{{- define "fraudstream.modelClaim" -}}
{{- default (include "fraudstream.componentName" (dict "root" . "component" "models")) .Values.modelRepository.existingClaim }}
{{- end }}

{{/* Environment every fraudstream container has besides the ConfigMap. */}}
{{- define "fraudstream.baseEnv" -}}
# Python, TensorFlow and matplotlib caches go to the writable /tmp (the root filesystem is read-only).
- name: HOME
  value: /tmp
- name: TMPDIR
  value: /tmp
- name: MPLCONFIGDIR
  value: /tmp/matplotlib
{{- end }}

{{/* Topology spread of one component over nodes (soft). */}}
{{- define "fraudstream.spread" -}}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "fraudstream.selectorLabels" . | nindent 8 }}
{{- end }}

{{/* The pod spec lines every Deployment shares: service account, pull secrets, pod security context. */}}
{{- define "fraudstream.podCommon" -}}
serviceAccountName: {{ include "fraudstream.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountToken }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/* Node placement of one component, falling back to the chart-wide values:
     fraudstream.placement (dict "root" $ "values" .Values.worker) */}}
{{- define "fraudstream.placement" -}}
{{- with (.values.nodeSelector | default .root.Values.nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (.values.tolerations | default .root.Values.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (.values.affinity | default .root.Values.affinity) }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
