{{/*
Helpers of the tpt chart.

Public (usable from a parent chart that has tpt as a dependency):
  tpt.sidecarContainer       one container list item: tpt as a sidecar
  tpt.sidecarVolume          one volume list item: the ConfigMap as a directory
  tpt.sidecarCaptureContainer
                             one initContainers item: `tpt capture --apply` (SPEC §11),
                             empty unless capture.enabled; put it before the native sidecar
  tpt.sidecarPodAnnotations  pod template annotations (scrape annotations, config checksum)
  tpt.sidecarNative          "true" when sidecar.native is set, else empty
  tpt.sidecarTerminationGracePeriodSeconds
                             the least grace the pod needs for tpt's drain (SPEC §10)
Each takes either the parent's root context `$` (tpt's values are then `.Values.tpt`) or
(dict "root" $ "values" .Values.<alias>) when the dependency has an alias.

Internal helpers take (dict "root" <root context> "v" <tpt values>), built by tpt.ctx*.
*/}}

{{/* The chart's name (nameOverride or "tpt"); never the parent's. */}}
{{- define "tpt.name" -}}
{{- default "tpt" .v.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The resource name prefix, as `helm create` does it, computed the same from a parent. */}}
{{- define "tpt.fullname" -}}
{{- if .v.fullnameOverride -}}
{{- .v.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "tpt.name" . -}}
{{- if contains $name .root.Release.Name -}}
{{- .root.Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .root.Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tpt.configMapName" -}}
{{- printf "%s-config" (include "tpt.fullname" . | trunc 56 | trimSuffix "-") -}}
{{- end -}}

{{- define "tpt.serviceAccountName" -}}
{{- if .v.serviceAccount.create -}}
{{- default (include "tpt.fullname" .) .v.serviceAccount.name -}}
{{- else -}}
{{- default "default" .v.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tpt.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tpt.name" . }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/*
Labels of a resource this chart renders, as one YAML map: the chart's own, then
commonLabels, then .extra (a resource's own labels value, e.g. podLabels) over them, merged
as dicts so that a key the chart also sets appears once. The selector labels cannot be
changed (the Deployment's selector and the monitors rely on them): a different value fails.
Takes (dict "root" "v" ["extra" map]).
*/}}
{{- define "tpt.labels" -}}
{{- $chart := dict
    "helm.sh/chart" (printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-")
    "app.kubernetes.io/version" (toString .root.Chart.AppVersion)
    "app.kubernetes.io/managed-by" .root.Release.Service
    "app.kubernetes.io/component" "proxy" -}}
{{- $selector := include "tpt.selectorLabels" . | fromYaml -}}
{{- $user := merge (dict) (deepCopy (default dict .extra)) (deepCopy (default dict .v.commonLabels)) -}}
{{- range $key, $value := $selector -}}
{{- if and (hasKey $user $key) (ne (toString (index $user $key)) (toString $value)) -}}
{{- fail (printf "label %s is the chart's selector label (%s); it cannot be set to %q in commonLabels or a resource's labels (use nameOverride)" $key $value (toString (index $user $key))) -}}
{{- end -}}
{{- end -}}
{{- toYaml (merge (dict) $selector $user $chart) -}}
{{- end -}}

{{/*
"true" when the given root context is the tpt chart itself. By annotation, not by name: an
aliased dependency's .Chart.Name is its alias.
*/}}
{{- define "tpt.isTptChart" -}}
{{- if eq (index (default dict .Chart.Annotations) "tpt/chart" | toString) "tpt" -}}true{{- end -}}
{{- end -}}

{{/* tpt's appVersion, also when .root is a parent chart (found among its .Subcharts). */}}
{{- define "tpt.appVersion" -}}
{{- $version := "" -}}
{{- if include "tpt.isTptChart" .root -}}
{{- $version = .root.Chart.AppVersion -}}
{{- else -}}
{{- range $name, $sub := (default dict .root.Subcharts) -}}
{{- if include "tpt.isTptChart" $sub -}}
{{- $version = $sub.Chart.AppVersion -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $version -}}
{{- end -}}

{{/* Global values: the chart's own, or a parent's (Helm copies them into .v.global). */}}
{{- define "tpt.global" -}}
{{- toYaml (merge (dict) (deepCopy (default dict .v.global)) (deepCopy (default dict .root.Values.global))) -}}
{{- end -}}

{{/* registry/repository:tag (or @digest); global.imageRegistry wins over image.registry. */}}
{{- define "tpt.image" -}}
{{- $global := include "tpt.global" . | fromYaml -}}
{{- $registry := default .v.image.registry $global.imageRegistry -}}
{{- $repository := .v.image.repository -}}
{{- /* A repository that starts with a registry host (a first component with "." or ":", or
       localhost, as Docker reads references) is already whole: no registry in front. */ -}}
{{- $first := splitList "/" $repository | first -}}
{{- if and $registry (not (and (contains "/" $repository) (or (contains "." $first) (contains ":" $first) (eq $first "localhost")))) -}}
{{- $repository = printf "%s/%s" (trimSuffix "/" $registry) $repository -}}
{{- end -}}
{{- $tag := .v.image.tag | default (include "tpt.appVersion" .) -}}
{{- if not (or $tag .v.image.digest) -}}
{{- fail "image.tag: cannot find tpt's appVersion from this chart; set image.tag or image.digest" -}}
{{- end -}}
{{- if .v.image.digest -}}
{{- printf "%s@%s" $repository .v.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}
{{- end -}}

{{/* imagePullSecrets as a YAML list: imagePullSecrets plus global.imagePullSecrets. */}}
{{- define "tpt.imagePullSecrets" -}}
{{- $global := include "tpt.global" . | fromYaml -}}
{{- $secrets := list -}}
{{- range (concat (default list .v.imagePullSecrets) (default list $global.imagePullSecrets)) -}}
{{- $name := kindIs "string" . | ternary . (get (kindIs "map" . | ternary . dict) "name") -}}
{{- if and $name (not (has (dict "name" $name) $secrets)) -}}
{{- $secrets = append $secrets (dict "name" $name) -}}
{{- end -}}
{{- end -}}
{{- if $secrets -}}
{{- toYaml $secrets -}}
{{- end -}}
{{- end -}}

{{/*
The config file's text as mounted at /etc/tpt/tpt.yaml, ending in one newline: configText
(the whole file) when set, else the `config` map as YAML.
*/}}
{{- define "tpt.configText" -}}
{{- if .v.configText -}}
{{- if (default dict .v.config).servers -}}
{{- fail "configText and config.servers are both set: give the routes in one of them (configText replaces config)" -}}
{{- end -}}
{{- include "tpt.captureCheck" . -}}
{{- printf "%s\n" (trimSuffix "\n" .v.configText) -}}
{{- else if include "tpt.captureAddsServer" . -}}
{{- $servers := deepCopy (default dict .v.config.servers) -}}
{{- $listen := list (printf "127.0.0.1:%d" (int .v.capture.listenerPort)) -}}
{{- if .v.capture.ipv6 -}}
{{- $listen = append $listen (printf "[::1]:%d" (int .v.capture.listenerPort)) -}}
{{- end -}}
{{- $_ := set $servers "capture" (dict "listen" $listen "transparent" true "tls" true "http" true "default" "original") -}}
{{- printf "%s\n" (toYaml (merge (dict "servers" $servers) (deepCopy .v.config))) -}}
{{- else -}}
{{- printf "%s\n" (toYaml .v.config) -}}
{{- end -}}
{{- end -}}

{{/*
Transparent egress capture (SPEC §11). The servers of the config that listen on the capture
listener's port on loopback, as a YAML list of {name, v4, v6, transparent}.
*/}}
{{- define "tpt.captureListeners" -}}
{{- $port := int .v.capture.listenerPort -}}
{{- $config := include "tpt.config" . | fromYaml -}}
{{- $found := list -}}
{{- range $name, $spec := (default dict $config.servers) -}}
{{- $listen := default list $spec.listen -}}
{{- if kindIs "string" $listen -}}
{{- $listen = list $listen -}}
{{- end -}}
{{- $v4 := has (printf "127.0.0.1:%d" $port) $listen -}}
{{- $v6 := has (printf "[::1]:%d" $port) $listen -}}
{{- if or $v4 $v6 -}}
{{- $found = append $found (dict "name" $name "v4" $v4 "v6" $v6 "transparent" (eq (toString $spec.transparent) "true")) -}}
{{- end -}}
{{- end -}}
{{- toYaml $found -}}
{{- end -}}

{{/*
"true" when capture is on, the config is the `config` map and no server listens on the
capture port: the chart then adds the pass-through server `capture` (a pod whose traffic is
redirected to nothing would lose all its egress).
*/}}
{{- define "tpt.captureAddsServer" -}}
{{- include "tpt.captureCheck" . -}}
{{- if and (default dict .v.capture).enabled (not .v.configText) (not .v.existingConfigMap) (not (include "tpt.captureListeners" . | fromYamlArray)) -}}
{{- if hasKey (default dict .v.config.servers) "capture" -}}
{{- fail (printf "capture.enabled: config.servers.capture exists but does not listen on 127.0.0.1:%d, where the chart would add the transparent listener; give it that address (and transparent: true) or rename it" (int .v.capture.listenerPort)) -}}
{{- end -}}
true
{{- end -}}
{{- end -}}

{{/* Fails on capture settings that would break the pod's egress; prints nothing. */}}
{{- define "tpt.captureCheck" -}}
{{- $c := default dict .v.capture -}}
{{- if $c.enabled -}}
{{- if ne .v.mode "sidecar" -}}
{{- fail "capture.enabled needs mode: sidecar: it redirects the traffic of the application containers in tpt's pod, and a tpt Deployment has none (see docs/kubernetes.md, transparent egress capture)" -}}
{{- end -}}
{{- if ne (int $c.uid) (int .v.securityContext.runAsUser) -}}
{{- fail (printf "capture.uid %d is not tpt's UID (securityContext.runAsUser %d): tpt's own upstream connections would be redirected back to tpt" (int $c.uid) (int .v.securityContext.runAsUser)) -}}
{{- end -}}
{{- $found := include "tpt.captureListeners" . | fromYamlArray -}}
{{- if and (not $found) (or .v.configText .v.existingConfigMap) -}}
{{- fail (printf "capture.enabled: no server of the config listens on 127.0.0.1:%d (capture.listenerPort); add a transparent server there" (int $c.listenerPort)) -}}
{{- end -}}
{{- $v6 := false -}}
{{- range $found -}}
{{- if not .transparent -}}
{{- fail (printf "capture.enabled: config.servers.%s listens on the capture port but is not transparent: true" .name) -}}
{{- end -}}
{{- if .v6 -}}{{- $v6 = true -}}{{- end -}}
{{- end -}}
{{- if and $found $c.ipv6 (not $v6) -}}
{{- fail (printf "capture.ipv6 redirects IPv6 to [::1]:%d, where no server listens: add it to the transparent server's listen, or set capture.ipv6: false" (int $c.listenerPort)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The capture init container as one list item (empty when capture is off): `tpt capture
--apply` from tpt's image, exec form. UID 0 with NET_ADMIN and no other capability: the
kubelet gives added capabilities to a non-root user only in its bounding set, not its
effective one, and the scratch image has no file capabilities. NET_RAW is not needed (nft
talks netlink). Takes (dict "root" "v").
*/}}
{{- define "tpt.captureContainer" -}}
{{- $c := default dict .v.capture -}}
{{- if $c.enabled -}}
{{- include "tpt.captureCheck" . -}}
- name: {{ .v.sidecar.containerName | default "tpt" }}-capture
  image: {{ include "tpt.image" . | quote }}
  imagePullPolicy: {{ .v.image.pullPolicy }}
  args:
    - capture
    - --apply
    - --ports
    - {{ join "," $c.ports | quote }}
    - --to
    - {{ $c.listenerPort | quote }}
    - --uid
    - {{ $c.uid | int | toString | quote }}
    {{- range $c.excludeCIDRs }}
    - --exclude-cidr
    - {{ . | quote }}
    {{- end }}
    {{- if not $c.ipv6 }}
    - --no-ipv6
    {{- end }}
  {{- with $c.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    runAsNonRoot: false
    runAsUser: 0
    runAsGroup: 0
    readOnlyRootFilesystem: true
    allowPrivilegeEscalation: false
    privileged: false
    capabilities:
      drop: [ALL]
      add: [NET_ADMIN]
    seccompProfile:
      type: RuntimeDefault
{{- end -}}
{{- end -}}

{{/* The config as a map (YAML), parsed from configText when that is set. */}}
{{- define "tpt.config" -}}
{{- if .v.configText -}}
{{- $parsed := fromYaml .v.configText -}}
{{- if hasKey $parsed "Error" -}}
{{- fail (printf "configText is not a YAML map: %s" $parsed.Error) -}}
{{- end -}}
{{- toYaml $parsed -}}
{{- else -}}
{{- toYaml (default dict .v.config) -}}
{{- end -}}
{{- end -}}

{{/* sha256 of the file's bytes, as tpt reports it in tpt_config_info{sha256}. */}}
{{- define "tpt.configChecksum" -}}
{{- include "tpt.configText" . | sha256sum -}}
{{- end -}}

{{/* The ConfigMap the pods mount: existingConfigMap, or the one this chart renders. */}}
{{- define "tpt.mountedConfigMapName" -}}
{{- .v.existingConfigMap | default (include "tpt.configMapName" .) -}}
{{- end -}}

{{/* The config file's key in that ConfigMap. */}}
{{- define "tpt.configKey" -}}
{{- if .v.existingConfigMap -}}{{ .v.existingConfigMapKey | default "tpt.yaml" }}{{- else -}}tpt.yaml{{- end -}}
{{- end -}}

{{/* admin.listen of the config (SPEC §3 default when absent), checked for probes. */}}
{{- define "tpt.adminListen" -}}
{{- $config := include "tpt.config" . | fromYaml -}}
{{- $admin := default dict $config.admin -}}
{{- $listen := "0.0.0.0:9901" -}}
{{- if hasKey $admin "listen" -}}
{{- $listen = toString $admin.listen -}}
{{- end -}}
{{- if eq $listen "" -}}
{{- fail "config.admin.listen is empty: the chart's probes and metrics need the admin server" -}}
{{- end -}}
{{- if regexMatch "^(127\\.|\\[::1\\]|localhost:)" $listen -}}
{{- fail (printf "config.admin.listen %q is loopback: the kubelet probes and Prometheus reach the pod address, use [::]:PORT" $listen) -}}
{{- end -}}
{{- if not (regexMatch ":[0-9]+$" $listen) -}}
{{- fail (printf "config.admin.listen %q has no :PORT" $listen) -}}
{{- end -}}
{{- $listen -}}
{{- end -}}

{{- define "tpt.adminPort" -}}
{{- include "tpt.adminListen" . | regexFind "[0-9]+$" -}}
{{- end -}}

{{/*
The distinct non-loopback ports of config.servers.*.listen, as a YAML list of
{name: tcp-PORT, port: PORT}. Loopback listeners serve only the pod itself.
*/}}
{{- define "tpt.proxyPorts" -}}
{{- $ports := dict -}}
{{- $admin := include "tpt.adminPort" . -}}
{{- $config := include "tpt.config" . | fromYaml -}}
{{- range $server, $spec := (default dict $config.servers) -}}
{{- $listen := default list $spec.listen -}}
{{- if kindIs "string" $listen -}}
{{- $listen = list $listen -}}
{{- end -}}
{{- range $listen -}}
{{- $addr := toString . -}}
{{- if and (regexMatch ":[0-9]+$" $addr) (not (regexMatch "^(127\\.|\\[::1\\]|localhost:)" $addr)) -}}
{{- $port := regexFind "[0-9]+$" $addr -}}
{{- if ne $port $admin -}}
{{- $_ := set $ports $port true -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $port, $_ := $ports }}
- name: tcp-{{ $port }}
  port: {{ $port }}
{{- end -}}
{{- end -}}

{{/*
A tpt duration (SPEC §3: 500ms, 10s, 5m, 1h, 1h30m, bare integers are seconds) in whole
seconds, rounded up. Takes the value.
*/}}
{{- define "tpt.durationSeconds" -}}
{{- $d := . -}}
{{- if or (kindIs "float64" $d) (kindIs "int" $d) (kindIs "int64" $d) -}}
{{- int $d -}}
{{- else if and (kindIs "string" $d) (regexMatch "^[0-9]+$" $d) -}}
{{- atoi $d -}}
{{- else if and (kindIs "string" $d) (regexMatch "^([0-9]+(ms|h|m|s))+$" $d) -}}
{{- $ms := 0 -}}
{{- range regexFindAll "[0-9]+(ms|h|m|s)" $d -1 -}}
{{- $digits := regexFind "^[0-9]+" . -}}
{{- $n := atoi $digits -}}
{{- $unit := trimPrefix $digits . -}}
{{- if eq $unit "ms" -}}{{- $ms = add $ms $n -}}
{{- else if eq $unit "s" -}}{{- $ms = add $ms (mul $n 1000) -}}
{{- else if eq $unit "m" -}}{{- $ms = add $ms (mul $n 60000) -}}
{{- else -}}{{- $ms = add $ms (mul $n 3600000) -}}
{{- end -}}
{{- end -}}
{{- div (add $ms 999) 1000 -}}
{{- else -}}
{{- fail (printf "%v is not a tpt duration (500ms, 10s, 5m, 1h30m or whole seconds)" $d) -}}
{{- end -}}
{{- end -}}

{{/*
terminationGracePeriodSeconds: it must exceed shutdown.delay + shutdown.drain_timeout
(SPEC §10), or the kubelet kills tpt while tunnels still drain. Computed from the config
unless set, and checked when set.
*/}}
{{- define "tpt.terminationGracePeriodSeconds" -}}
{{- $config := include "tpt.config" . | fromYaml -}}
{{- $shutdown := default dict $config.shutdown -}}
{{- $delay := include "tpt.durationSeconds" (hasKey $shutdown "delay" | ternary $shutdown.delay "0s") | atoi -}}
{{- $drain := include "tpt.durationSeconds" (hasKey $shutdown "drain_timeout" | ternary $shutdown.drain_timeout "30s") | atoi -}}
{{- $needed := add $delay $drain -}}
{{- $set := .v.terminationGracePeriodSeconds -}}
{{- if kindIs "invalid" $set -}}
{{- if eq $drain 0 -}}
{{- fail "config.shutdown.drain_timeout is 0s (wait for tunnels forever): set terminationGracePeriodSeconds to the longest drain you accept" -}}
{{- end -}}
{{- add $needed (default 5 .v.terminationGraceMarginSeconds | int) -}}
{{- else -}}
{{- $grace := int $set -}}
{{- if le $grace $needed -}}
{{- fail (printf "terminationGracePeriodSeconds %d must exceed config.shutdown.delay + drain_timeout = %d s" $grace $needed) -}}
{{- end -}}
{{- $grace -}}
{{- end -}}
{{- end -}}

{{/*
"true" when the pods are scraped through the prometheus.io annotations: one scrape mechanism
at a time, so a ServiceMonitor or PodMonitor replaces them. Both monitors fail rendering.
*/}}
{{- define "tpt.scrapeByAnnotations" -}}
{{- if and .v.serviceMonitor.enabled .v.podMonitor.enabled -}}
{{- fail "serviceMonitor.enabled and podMonitor.enabled: choose one, or Prometheus scrapes every pod twice" -}}
{{- end -}}
{{- if and .v.metrics.podAnnotations (not .v.serviceMonitor.enabled) (not .v.podMonitor.enabled) -}}true{{- end -}}
{{- end -}}

{{/* Pod template annotations for tpt: scrape annotations and, when asked, the config checksum. */}}
{{- define "tpt.podAnnotations" -}}
{{- if include "tpt.scrapeByAnnotations" . }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ include "tpt.adminPort" . | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- if and .v.rollOnConfigChange (not .v.existingConfigMap) }}
checksum/tpt-config: {{ include "tpt.configChecksum" . | quote }}
{{- end }}
{{- end -}}

{{/* The configMap volume, mounted as a directory (never subPath: the kubelet never updates it). */}}
{{- define "tpt.volume" -}}
- name: {{ .v.sidecar.containerName | default "tpt" }}-config
  configMap:
    name: {{ include "tpt.mountedConfigMapName" . }}
{{- include "tpt.secretVolumes" (dict "v" .v "prefix" (.v.sidecar.containerName | default "tpt")) }}
{{- end -}}

{{/*
secretMounts as volumes and as volumeMounts (SPEC §13: credential files). Whole directories,
never subPath: the kubelet's `..data` swap then reaches tpt, which reloads on it. Takes
(dict "v" values "prefix" volume-name-prefix).
*/}}
{{- define "tpt.secretVolumes" -}}
{{- range $i, $m := .v.secretMounts }}
- name: {{ $.prefix }}-secret-{{ $i }}
  secret:
    secretName: {{ $m.secretName }}
{{- end }}
{{- end -}}

{{- define "tpt.secretVolumeMounts" -}}
{{- range $i, $m := .v.secretMounts }}
- name: {{ $.prefix }}-secret-{{ $i }}
  mountPath: {{ $m.mountPath }}
  readOnly: true
{{- end }}
{{- end -}}

{{/*
The tpt container as one list item. Takes (dict "root" "v" "native" bool "name" string).
*/}}
{{- define "tpt.container" -}}
{{- $v := .v -}}
{{- $adminName := $v.adminPortName | default "admin" -}}
- name: {{ .name }}
  image: {{ include "tpt.image" . | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  {{- if .native }}
  # Native sidecar: started and ready before the app's containers, stopped after them.
  restartPolicy: Always
  {{- end }}
  args:
    - --config
    - /etc/tpt/{{ include "tpt.configKey" . }}
    {{- range $v.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  ports:
    - name: {{ $adminName }}
      containerPort: {{ include "tpt.adminPort" . }}
      protocol: TCP
    {{- range (include "tpt.proxyPorts" . | fromYamlArray) }}
    - name: {{ .name }}
      containerPort: {{ .port }}
      protocol: TCP
    {{- end }}
  {{- with $v.env }}
  env:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.envFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  readinessProbe:
    httpGet:
      path: /ready
      port: {{ $adminName }}
    {{- with $v.readinessProbe }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: {{ $adminName }}
    {{- with $v.livenessProbe }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- /* A native sidecar gates the app's start on its startup probe (not on readiness):
         probe /ready, so the app starts once every listener is bound. */}}
  {{- $startup := $v.startupProbe | default (eq (toString .native) "true" | ternary (dict "periodSeconds" 1 "failureThreshold" 30) dict) }}
  {{- with $startup }}
  startupProbe:
    httpGet:
      path: /ready
      port: {{ $adminName }}
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
  volumeMounts:
    - name: {{ $v.sidecar.containerName | default "tpt" }}-config
      mountPath: /etc/tpt
      readOnly: true
    {{- include "tpt.secretVolumeMounts" (dict "v" $v "prefix" ($v.sidecar.containerName | default "tpt")) | nindent 4 }}
{{- end -}}

{{- define "tpt.sidecarValues" -}}
{{- if not . -}}
{{- fail "tpt sidecar helpers: no tpt values found; pass (dict \"root\" $ \"values\" .Values.<alias>) when the dependency has an alias" -}}
{{- end -}}
{{- end -}}

{{- define "tpt.sidecarContainer" -}}
{{- $root := . -}}
{{- $v := .Values -}}
{{- if hasKey . "root" -}}
{{- $root = .root -}}{{- $v = .values -}}
{{- else if not (include "tpt.isTptChart" .) -}}
{{- $v = index .Values "tpt" -}}
{{- end -}}
{{- include "tpt.sidecarValues" $v -}}
{{- if and $v.sidecar.native (semverCompare "<1.29.0-0" $root.Capabilities.KubeVersion.Version) -}}
{{- fail (printf "sidecar.native needs Kubernetes >= 1.29 (initContainers with restartPolicy: Always); this cluster is %s" $root.Capabilities.KubeVersion.Version) -}}
{{- end -}}
{{- include "tpt.container" (dict "root" $root "v" $v "native" $v.sidecar.native "name" ($v.sidecar.containerName | default "tpt")) -}}
{{- end -}}

{{- define "tpt.sidecarCaptureContainer" -}}
{{- $root := . -}}
{{- $v := .Values -}}
{{- if hasKey . "root" -}}
{{- $root = .root -}}{{- $v = .values -}}
{{- else if not (include "tpt.isTptChart" .) -}}
{{- $v = index .Values "tpt" -}}
{{- end -}}
{{- include "tpt.sidecarValues" $v -}}
{{- include "tpt.captureContainer" (dict "root" $root "v" $v) -}}
{{- end -}}

{{- define "tpt.sidecarVolume" -}}
{{- $root := . -}}
{{- $v := .Values -}}
{{- if hasKey . "root" -}}
{{- $root = .root -}}{{- $v = .values -}}
{{- else if not (include "tpt.isTptChart" .) -}}
{{- $v = index .Values "tpt" -}}
{{- end -}}
{{- include "tpt.sidecarValues" $v -}}
{{- include "tpt.volume" (dict "root" $root "v" $v) -}}
{{- end -}}

{{- define "tpt.sidecarPodAnnotations" -}}
{{- $root := . -}}
{{- $v := .Values -}}
{{- if hasKey . "root" -}}
{{- $root = .root -}}{{- $v = .values -}}
{{- else if not (include "tpt.isTptChart" .) -}}
{{- $v = index .Values "tpt" -}}
{{- end -}}
{{- include "tpt.sidecarValues" $v -}}
{{- include "tpt.podAnnotations" (dict "root" $root "v" $v) | trim -}}
{{- end -}}

{{- define "tpt.sidecarNative" -}}
{{- $v := .Values -}}
{{- if hasKey . "root" -}}
{{- $v = .values -}}
{{- else if not (include "tpt.isTptChart" .) -}}
{{- $v = index .Values "tpt" -}}
{{- end -}}
{{- include "tpt.sidecarValues" $v -}}
{{- if $v.sidecar.native -}}true{{- end -}}
{{- end -}}

{{- define "tpt.sidecarTerminationGracePeriodSeconds" -}}
{{- $root := . -}}
{{- $v := .Values -}}
{{- if hasKey . "root" -}}
{{- $root = .root -}}{{- $v = .values -}}
{{- else if not (include "tpt.isTptChart" .) -}}
{{- $v = index .Values "tpt" -}}
{{- end -}}
{{- include "tpt.sidecarValues" $v -}}
{{- include "tpt.terminationGracePeriodSeconds" (dict "root" $root "v" $v) -}}
{{- end -}}

{{/*
Pod affinity: `affinity` as given, else the podAntiAffinityPreset: replicas on different
nodes, preferred (soft, weight 1, as bitnami's preset) or required (hard).
*/}}
{{- define "tpt.affinity" -}}
{{- if .v.affinity -}}
{{- toYaml .v.affinity -}}
{{- else if eq .v.podAntiAffinityPreset "soft" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 1
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "tpt.selectorLabels" . | nindent 12 }}
{{- else if eq .v.podAntiAffinityPreset "hard" -}}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "tpt.selectorLabels" . | nindent 10 }}
{{- end -}}
{{- end -}}
