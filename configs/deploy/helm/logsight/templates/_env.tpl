{{- define "logsight.commonEnv" -}}
- name: KAFKA_HOST
  value: {{ .Values.kafka.host | quote }}
- name: KAFKA_PORT
  value: {{ .Values.kafka.port | quote }}
- name: KAFKA_TOPIC
  value: {{ .Values.kafka.topic | quote }}
- name: KAFKA_RESULTS_TOPIC
  value: {{ .Values.kafka.resultsTopic | quote }}
- name: ELASTICSEARCH_SCHEME
  value: {{ .Values.elasticsearch.scheme | quote }}
- name: ELASTICSEARCH_HOST
  value: {{ .Values.elasticsearch.host | quote }}
- name: ELASTICSEARCH_PORT
  value: {{ .Values.elasticsearch.port | quote }}
- name: ELASTICSEARCH_USERNAME
  value: {{ .Values.elasticsearch.username | quote }}
- name: ELASTICSEARCH_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.elasticsearch.passwordSecret }}
      key: password
- name: PREDICTION_THRESHOLD
  value: {{ .Values.analytics.predictionThreshold | quote }}
{{- end -}}
