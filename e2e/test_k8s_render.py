"""Kubernetes delivery (SPEC §10): the Helm chart (helm/, with every helm/ci/*.yaml values
file), the sidecar example chart (deploy/helm-sidecar-example) and every kustomization
(deploy/base, deploy/overlays/*) render; every manifest parses and passes a Kubernetes
schema check; the tpt config they carry passes `tpt --check-config`; and the delivery
guarantees hold: ConfigMap mounted as a directory (no subPath anywhere), hot reload by
default (no checksum annotation unless rollOnConfigChange), hardened securityContext,
probes on the named admin port, a grace period longer than shutdown.delay + drain_timeout,
credentials only through env from a Secret.

Tools: helm and kubectl come from scripts/helm.sh (fetched once into .tools/bin). The
Kubernetes schema check uses the npm packages kubernetes-models and
@kubernetes-models/prometheus-operator (installed once into .tools/), which validate types,
required fields and enums of the Kubernetes/Prometheus Operator OpenAPI schemas; they do not
reject unknown fields (no kubeconform/kubeval is installable here). That test is skipped
when npm cannot install them.
"""
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "helm"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
SIDECAR_EXAMPLE = REPO / "deploy" / "helm-sidecar-example"
KUSTOMIZATIONS = [REPO / "deploy" / "base"] + sorted(
    p.parent for p in (REPO / "deploy" / "overlays").glob("*/kustomization.yaml"))
IMAGE_CONFIG = REPO / "deploy" / "image" / "tpt.yaml"
TOOL_TIMEOUT = 180

# Environment the rendered configs reference as ${VAR} (what the Secrets would provide).
CONFIG_ENV = {"PROXY_AUTHORIZATION": "Basic dXNlcjpwYXNzd29yZA=="}

MODELS_VERSION = "kubernetes-models@5.1.0"
OPERATOR_MODELS_VERSION = "@kubernetes-models/prometheus-operator@6.0.0"

# label -> how to render it
RENDERS = {f"chart/{p.stem}": ("chart", ["-f", str(p)]) for p in CI_VALUES}
RENDERS.update({
    "parent/classic": ("parent", []),
    "parent/native": ("parent", ["--set", "tpt.sidecar.native=true"]),
})
RENDERS.update({f"kustomize/{p.name}": ("kustomize", [str(p)]) for p in KUSTOMIZATIONS})

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


def run(cmd, check=True, env=None, cwd=None):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          timeout=TOOL_TIMEOUT, env=env, cwd=cwd)
    if check:
        assert proc.returncode == 0, (
            f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}")
    return proc


def parse_manifests(text, label):
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    assert docs, f"{label}: rendered nothing"
    for d in docs:
        assert isinstance(d, dict), f"{label}: a document is not a mapping: {d!r}"
        for key in ("apiVersion", "kind"):
            assert d.get(key), f"{label}: document without {key}: {d}"
        assert d.get("metadata", {}).get("name"), f"{label}: {d['kind']} without a name"
    return docs


def duration_seconds(value):
    """SPEC §3 durations (500ms, 10s, 5m, 1h, 1h30m, bare integers = seconds) in seconds."""
    if isinstance(value, int):
        return float(value)
    text = str(value)
    if re.fullmatch(r"[0-9]+", text):
        return float(text)
    assert re.fullmatch(r"([0-9]+(ms|h|m|s))+", text), f"bad duration {text!r}"
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(int(n) * scale[u] for n, u in re.findall(r"([0-9]+)(ms|h|m|s)", text))


def walk(node, path=""):
    """Yields (path, key, value) for every mapping entry in a parsed document."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield path, k, v
            yield from walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}[{i}]")


def pod_specs(docs):
    for d in docs:
        if d["kind"] in WORKLOAD_KINDS:
            yield d, d["spec"]["template"]
        elif d["kind"] == "Pod":
            yield d, {"metadata": d["metadata"], "spec": d["spec"]}


def is_tpt(container):
    args = container.get("args") or []
    return "/etc/tpt/tpt.yaml" in args


def tpt_containers(spec):
    """(list name, container) of every tpt container of a pod spec."""
    return [(where, c) for where in ("containers", "initContainers")
            for c in spec.get(where) or [] if is_tpt(c)]


def tpt_configs(docs):
    """(ConfigMap name, parsed tpt.yaml, raw text) of every ConfigMap carrying a tpt config."""
    return [(d["metadata"]["name"], yaml.safe_load(d["data"]["tpt.yaml"]), d["data"]["tpt.yaml"])
            for d in docs if d["kind"] == "ConfigMap" and "tpt.yaml" in (d.get("data") or {})]


def workloads_with_tpt(docs):
    """(workload, pod template, [(list name, container)]) for each workload running tpt."""
    out = []
    for d, template in pod_specs(docs):
        found = tpt_containers(template["spec"])
        if found:
            out.append((d, template, found))
    return out


@pytest.fixture(scope="session")
def helm():
    return Path(run(["bash", REPO / "scripts" / "helm.sh", "helm"]).stdout.strip())


@pytest.fixture(scope="session")
def kubectl():
    return Path(run(["bash", REPO / "scripts" / "helm.sh", "kubectl"]).stdout.strip())


@pytest.fixture(scope="session")
def parent_chart(helm, tmp_path_factory):
    """The sidecar example chart with its file:// dependency built, in a scratch copy that
    keeps the relative layout (deploy/helm-sidecar-example -> ../../helm)."""
    root = tmp_path_factory.mktemp("parent")
    shutil.copytree(CHART, root / "helm", ignore=shutil.ignore_patterns("ci"))
    example = root / "deploy" / SIDECAR_EXAMPLE.name
    shutil.copytree(SIDECAR_EXAMPLE, example, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    run([helm, "dependency", "build", example])
    return example


@pytest.fixture(scope="session")
def renders(helm, kubectl, parent_chart):
    out = {}
    for label, (how, args) in RENDERS.items():
        if how == "chart":
            text = run([helm, "template", "rel", CHART, "--namespace", "tpt-system", *args]).stdout
        elif how == "parent":
            text = run([helm, "template", "rel", parent_chart, *args]).stdout
        else:
            text = run([kubectl, "kustomize", *args]).stdout
        out[label] = parse_manifests(text, label)
    return out


def helm_template_fails(helm, *args):
    proc = run([helm, "template", "rel", CHART, *args], check=False)
    assert proc.returncode != 0, f"helm template {' '.join(args)} should have failed"
    return proc.stderr


# --- rendering and schemas -------------------------------------------------------------


def test_ci_values_files_and_overlays_exist():
    names = {p.stem for p in CI_VALUES}
    assert {"default-values", "roll-on-config-change-values", "sidecar-values"} <= names
    assert {p.name for p in KUSTOMIZATIONS} == {"base", "native-sidecar", "corporate-proxy"}


@pytest.mark.parametrize("values", CI_VALUES, ids=[p.stem for p in CI_VALUES])
def test_helm_lint_strict_passes(helm, values):
    out = run([helm, "lint", "--strict", CHART, "-f", values]).stdout
    assert "0 chart(s) failed" in out


def test_sidecar_example_chart_lints(helm, parent_chart):
    run([helm, "lint", "--strict", parent_chart])
    run([helm, "lint", "--strict", parent_chart, "--set", "tpt.sidecar.native=true"])


@pytest.mark.parametrize("label", list(RENDERS))
def test_render_parses_and_carries_one_tpt_config(renders, label):
    docs = renders[label]
    configs = tpt_configs(docs)
    assert len(configs) == 1, f"{label}: expected one tpt ConfigMap, got {configs}"
    kinds = {d["kind"] for d in docs}
    if label != "chart/sidecar-values":
        assert workloads_with_tpt(docs), f"{label}: no workload runs tpt ({kinds})"
    else:
        assert not kinds & WORKLOAD_KINDS, "sidecar mode renders no workload of its own"


@pytest.mark.parametrize("sets, message", [
    (["--set", "bogus=1"], "Additional property bogus is not allowed"),
    (["--set", "mode=daemonset"], "mode"),
    (["--set", "config.version=3"], "config.version"),
    (["--set", "config.servrs.x.listen=0.0.0.0:1"], "servrs"),
    (["--set", "config.shutdown.delay=5 seconds"], "config.shutdown.delay"),
    (["--set", "securityContext.readOnlyRootFilesystem=false"], "readOnlyRootFilesystem"),
    (["--set", "securityContext.runAsNonRoot=false"], "runAsNonRoot"),
    (["--set", "rollOnConfigChange=yes"], "rollOnConfigChange"),
    (["--set", "adminPortName=Admin_Port"], "adminPortName"),
], ids=["unknown-key", "mode", "config-version", "config-typo", "duration",
        "rw-rootfs", "root", "bool", "port-name"])
def test_values_schema_rejects_bad_values(helm, sets, message):
    err = helm_template_fails(helm, *sets)
    assert "don't meet the specifications of the schema" in err, err
    assert message in err, err


def test_values_schema_rejects_bad_values_on_lint(helm):
    proc = run([helm, "lint", CHART, "--set", "config.log=loud"], check=False)
    assert proc.returncode != 0
    assert "config.log" in proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def k8s_validator(tmp_path_factory):
    """node script validating manifests with kubernetes-models; installed once in .tools/."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm missing: no Kubernetes schema validator available")
    home = REPO / ".tools" / f"k8s-models-{MODELS_VERSION.split('@')[-1]}"
    if not (home / "node_modules" / "@kubernetes-models" / "prometheus-operator").is_dir():
        (REPO / ".tools").mkdir(exist_ok=True)
        staging = Path(tmp_path_factory.mktemp("npm")) / "models"
        staging.mkdir()
        proc = run(["npm", "install", "--prefix", staging, "--no-audit", "--no-fund",
                    "--loglevel=error", MODELS_VERSION, OPERATOR_MODELS_VERSION], check=False)
        if proc.returncode != 0:
            pytest.skip(f"npm could not install {MODELS_VERSION}: {proc.stderr[-500:]}")
        if not home.exists():
            shutil.move(str(staging), str(home))
    script = home / "validate.mjs"
    script.write_text(VALIDATOR_JS)
    return script


VALIDATOR_JS = r"""
// Reads a JSON array of manifests on stdin; prints [{kind, name, error}] for each.
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
const here = path.dirname(fileURLToPath(import.meta.url));
const mods = path.join(here, "node_modules");
function modulePath(apiVersion, kind) {
  if (apiVersion.startsWith("monitoring.coreos.com/"))
    return path.join(mods, "@kubernetes-models", "prometheus-operator", apiVersion, kind + ".js");
  return path.join(mods, "kubernetes-models", apiVersion, kind + ".js");
}
let input = "";
for await (const chunk of process.stdin) input += chunk;
const out = [];
for (const doc of JSON.parse(input)) {
  const entry = { kind: doc.kind, name: doc.metadata && doc.metadata.name, error: null };
  try {
    const mod = await import(pathToFileURL(modulePath(doc.apiVersion, doc.kind)).href);
    new mod[doc.kind](doc).validate();
  } catch (e) {
    entry.error = String(e && e.message ? e.message : e);
  }
  out.push(entry);
}
console.log(JSON.stringify(out));
"""


def validate_k8s(script, docs):
    proc = subprocess.run(["node", str(script)], input=json.dumps(docs), capture_output=True,
                          text=True, timeout=TOOL_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_k8s_validator_rejects_a_broken_manifest(k8s_validator):
    broken = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
              "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"spec": {
                  "containers": [{"name": "c", "ports": [{"containerPort": "admin"}]}]}}}}
    missing = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
               "spec": {"ports": [{"name": "admin"}]}}
    results = validate_k8s(k8s_validator, [broken, missing])
    assert "containerPort" in (results[0]["error"] or ""), results
    assert "port" in (results[1]["error"] or ""), results


@pytest.mark.parametrize("label", list(RENDERS))
def test_manifests_pass_kubernetes_schema(renders, k8s_validator, label):
    results = validate_k8s(k8s_validator, renders[label])
    bad = [r for r in results if r["error"]]
    assert not bad, f"{label}: {bad}"


# --- the tpt config inside -------------------------------------------------------------


def check_config(tpt_bin, path):
    env = {"PATH": "/usr/bin:/bin", **CONFIG_ENV}
    proc = subprocess.run([str(tpt_bin), "-t", "-c", str(path)], capture_output=True, text=True,
                          timeout=30, env=env)
    assert proc.returncode == 0, f"{path}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
    assert "configuration OK" in proc.stdout + proc.stderr


@pytest.mark.parametrize("label", list(RENDERS))
def test_rendered_config_passes_check_config(renders, tpt_bin, tmp_path, label):
    [(_, _, text)] = tpt_configs(renders[label])
    path = tmp_path / "tpt.yaml"
    path.write_text(text)
    check_config(tpt_bin, path)


def test_image_config_passes_check_config(tpt_bin):
    check_config(tpt_bin, IMAGE_CONFIG)


# --- SPEC §10 guarantees -----------------------------------------------------------------


@pytest.mark.parametrize("label", list(RENDERS))
def test_no_subpath_anywhere(renders, label):
    for doc in renders[label]:
        hits = [p for p, k, _ in walk(doc) if k in ("subPath", "subPathExpr")]
        assert not hits, f"{label}: {doc['kind']}/{doc['metadata']['name']} uses subPath at {hits}"


@pytest.mark.parametrize("label", list(RENDERS))
def test_config_is_mounted_as_directory_from_the_rendered_configmap(renders, label):
    docs = renders[label]
    [(cm_name, _, _)] = tpt_configs(docs)
    for _, template, found in workloads_with_tpt(docs):
        volumes = {v["name"]: v for v in template["spec"].get("volumes") or []}
        for _, c in found:
            args = c["args"]
            assert args[args.index("/etc/tpt/tpt.yaml") - 1] in ("--config", "-c")
            mounts = [m for m in c.get("volumeMounts") or [] if m["mountPath"] == "/etc/tpt"]
            assert len(mounts) == 1, f"{label}: /etc/tpt not mounted once: {c.get('volumeMounts')}"
            assert mounts[0].get("readOnly") is True
            volume = volumes[mounts[0]["name"]]
            assert volume.get("configMap", {}).get("name") == cm_name, volume


@pytest.mark.parametrize("label", list(RENDERS))
def test_tpt_container_is_hardened(renders, label):
    for d, template, found in workloads_with_tpt(renders[label]):
        pod_sc = template["spec"].get("securityContext") or {}
        for _, c in found:
            sc = c.get("securityContext") or {}
            where = f"{label}: {d['metadata']['name']}/{c['name']}"
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
            uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
            assert isinstance(uid, int) and uid > 0, f"{where}: runAsUser {uid!r}"
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert "ALL" in (sc.get("capabilities") or {}).get("drop", []), where
            assert not (sc.get("capabilities") or {}).get("add"), where
            seccomp = sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}
            assert seccomp.get("type") == "RuntimeDefault", where
            assert sc.get("privileged") in (None, False), where


@pytest.mark.parametrize("label", list(RENDERS))
def test_probes_use_the_named_admin_port_of_the_config(renders, label):
    docs = renders[label]
    [(_, config, _)] = tpt_configs(docs)
    admin_listen = (config.get("admin") or {}).get("listen", "0.0.0.0:9901")
    admin_port = int(admin_listen.rsplit(":", 1)[1])
    for _, _, found in workloads_with_tpt(docs):
        for _, c in found:
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
            ready = c["readinessProbe"]["httpGet"]
            live = c["livenessProbe"]["httpGet"]
            assert ready["path"] == "/ready" and live["path"] == "/healthz"
            assert ready["port"] == live["port"] == "admin"
            assert ports.get(ready["port"]) == admin_port, (ports, admin_port)


@pytest.mark.parametrize("label", list(RENDERS))
def test_grace_period_exceeds_shutdown_delay_plus_drain(renders, label):
    docs = renders[label]
    [(_, config, _)] = tpt_configs(docs)
    shutdown = config.get("shutdown") or {}
    needed = duration_seconds(shutdown.get("delay", "0s")) + duration_seconds(
        shutdown.get("drain_timeout", "30s"))
    for d, template, _ in workloads_with_tpt(docs):
        grace = template["spec"].get("terminationGracePeriodSeconds")
        assert grace is not None, f"{label}: {d['metadata']['name']} relies on the 30 s default"
        assert grace > needed, f"{label}: grace {grace} <= delay + drain {needed}"
        lifecycle = [c.get("lifecycle") for _, c in tpt_containers(template["spec"])]
        assert not any(lc and lc.get("preStop") for lc in lifecycle), "no preStop sleep needed"


def test_grace_period_follows_the_config(helm):
    text = run([helm, "template", "rel", CHART, "--set", "config.shutdown.delay=10s",
                "--set", "config.shutdown.drain_timeout=2m"]).stdout
    [(_, template, _)] = workloads_with_tpt(parse_manifests(text, "grace"))
    assert template["spec"]["terminationGracePeriodSeconds"] == 10 + 120 + 5


@pytest.mark.parametrize("sets, message", [
    (["--set", "terminationGracePeriodSeconds=30"], "must exceed"),
    (["--set", "config.shutdown.drain_timeout=0s"], "drain_timeout is 0s"),
    (["--set", "config.admin.listen=127.0.0.1:9901"], "loopback"),
    (["--set", "config.admin.listen="], "admin.listen is empty"),
    (["-f", str(CHART / "ci" / "sidecar-values.yaml"), "--set", "podMonitor.selector=null"],
     "podMonitor.selector is required"),
    (["-f", str(CHART / "ci" / "sidecar-values.yaml"), "--set", "serviceMonitor.enabled=true"],
     "use podMonitor"),
])
def test_chart_refuses_inconsistent_settings(helm, sets, message):
    assert message in helm_template_fails(helm, *sets)


def pod_annotations(docs):
    [(_, template, _)] = workloads_with_tpt(docs)
    return template["metadata"].get("annotations") or {}


@pytest.mark.parametrize("label", [lbl for lbl in RENDERS if lbl not in (
    "chart/sidecar-values", "chart/roll-on-config-change-values")])
def test_hot_reload_by_default_no_checksum_annotation(renders, label):
    annotations = pod_annotations(renders[label])
    assert not [k for k in annotations if "checksum" in k], annotations


def test_roll_on_config_change_adds_the_config_checksum(renders, helm):
    docs = renders["chart/roll-on-config-change-values"]
    [(_, _, text)] = tpt_configs(docs)
    annotations = pod_annotations(docs)
    # The sha256 of the mounted file: the same value as tpt_config_info{sha256}.
    assert annotations.get("checksum/tpt-config") == hashlib.sha256(text.encode()).hexdigest()
    changed = run([helm, "template", "rel", CHART, "--set", "rollOnConfigChange=true",
                   "--set", "config.log=debug"]).stdout
    other = pod_annotations(parse_manifests(changed, "changed"))["checksum/tpt-config"]
    assert other != annotations["checksum/tpt-config"]


def test_roll_on_config_change_reaches_a_parent_pod(helm, parent_chart):
    text = run([helm, "template", "rel", parent_chart, "--set",
                "tpt.rollOnConfigChange=true"]).stdout
    assert "checksum/tpt-config" in pod_annotations(parse_manifests(text, "parent-roll"))


def test_kustomize_configmaps_keep_their_name_for_hot_reload(renders):
    for label in (lbl for lbl in RENDERS if lbl.startswith("kustomize/")):
        [(name, _, _)] = tpt_configs(renders[label])
        assert name == "tpt-config", f"{label}: a hash suffix ({name}) would defeat hot reload"


def sidecar_placement(docs):
    [(_, template, found)] = workloads_with_tpt(docs)
    return template["spec"], found


@pytest.mark.parametrize("label", ["parent/classic", "kustomize/base",
                                   "kustomize/corporate-proxy"])
def test_classic_sidecar_is_an_extra_container(renders, label):
    spec, found = sidecar_placement(renders[label])
    assert [w for w, _ in found] == ["containers"]
    assert "restartPolicy" not in found[0][1]
    assert len(spec["containers"]) >= 2, "the app and tpt share the pod"


@pytest.mark.parametrize("label", ["parent/native", "kustomize/native-sidecar"])
def test_native_sidecar_is_a_restartable_init_container(renders, label):
    spec, found = sidecar_placement(renders[label])
    assert [w for w, _ in found] == ["initContainers"]
    assert found[0][1]["restartPolicy"] == "Always"
    # The kubelet gates the app's start on a native sidecar's startup probe.
    startup = found[0][1]["startupProbe"]["httpGet"]
    assert startup == {"path": "/ready", "port": "admin"}
    assert all(not is_tpt(c) for c in spec["containers"])
    assert spec["containers"], "the app container stays"


def test_native_sidecar_needs_kubernetes_1_29(helm, parent_chart):
    proc = run([helm, "template", "rel", parent_chart, "--set", "tpt.sidecar.native=true",
                "--kube-version", "1.28.0"], check=False)
    assert proc.returncode != 0 and "1.29" in proc.stderr
    run([helm, "template", "rel", parent_chart, "--set", "tpt.sidecar.native=true",
         "--kube-version", "1.29.0"])


def test_sidecar_mode_renders_configmap_and_podmonitor_only(renders):
    docs = renders["chart/sidecar-values"]
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "PodMonitor"]
    [monitor] = [d for d in docs if d["kind"] == "PodMonitor"]
    assert monitor["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/name": "myapp"}}
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "admin"


def test_parent_volume_points_at_the_subchart_configmap(renders):
    for label in ("parent/classic", "parent/native"):
        docs = renders[label]
        [(cm_name, _, _)] = tpt_configs(docs)
        assert cm_name == "rel-tpt-config"
        image = sidecar_placement(docs)[1][0][1]["image"]
        assert image.endswith(":0.1.0"), f"tpt's appVersion, not the parent's: {image}"


@pytest.mark.parametrize("label", ["chart/corporate-proxy-values", "kustomize/corporate-proxy"])
def test_proxy_credentials_come_from_a_secret_through_env(renders, label):
    docs = renders[label]
    [(_, config, text)] = tpt_configs(docs)
    headers = [h for s in config["servers"].values() for h in
               ((s.get("via") or {}).get("headers") or {}).values()]
    assert headers and all(re.fullmatch(r".*\$\{[A-Z_][A-Z0-9_]*\}.*", str(h)) for h in headers)
    assert not re.search(r"Basic [A-Za-z0-9+/=]{6,}", text), "a literal credential in the ConfigMap"
    assert not [d for d in docs if d["kind"] == "Secret"], "the Secret is not part of the manifests"
    referenced = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    [(_, _, found)] = workloads_with_tpt(docs)
    env = {e["name"]: e for e in found[0][1].get("env") or []}
    for var in referenced:
        assert "secretKeyRef" in env[var]["valueFrom"], env[var]


def test_monitoring_targets_the_admin_port(renders):
    docs = renders["chart/monitoring-values"]
    by_kind = {d["kind"]: d for d in docs}
    admin_ports = [p for p in by_kind["Service"]["spec"]["ports"] if p["name"] == "admin"]
    assert admin_ports and admin_ports[0]["port"] == 9000 and admin_ports[0]["targetPort"] == "admin"
    assert by_kind["ServiceMonitor"]["spec"]["endpoints"][0]["port"] == "admin"
    assert by_kind["ServiceMonitor"]["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert by_kind["PodMonitor"]["spec"]["podMetricsEndpoints"][0]["port"] == "admin"
    assert by_kind["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    annotations = pod_annotations(docs)
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9000"
    # Every non-loopback listener is a Service port; the loopback one is not.
    service_ports = {p["port"] for p in by_kind["Service"]["spec"]["ports"]}
    assert service_ports == {9000, 8443, 8080}


def test_values_carry_the_observability_keys():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["prometheusRule"] == {"enabled": False, "labels": {}, "additionalRuleLabels": {}}
    assert values["grafanaDashboard"] == {"enabled": False, "labels": {"grafana_dashboard": "1"},
                                          "annotations": {}}
    schema = json.loads((CHART / "values.schema.json").read_text())
    for key in ("prometheusRule", "grafanaDashboard"):
        assert key in schema["properties"]


def render_notes(helm, tmp_path, *args):
    """NOTES.txt is not rendered by `helm template` and `helm install --dry-run` needs a
    cluster: render the same text through a scratch copy where it is a named template."""
    chart = tmp_path / "tpt"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "NOTES.txt").unlink()
    (chart / "templates" / "_notes.tpl").write_text(
        '{{- define "tpt.test.notes" -}}\n' + notes + '\n{{- end -}}\n')
    (chart / "templates" / "notes-check.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n"
        "  notes: {{ include \"tpt.test.notes\" . | toJson }}\n")
    text = run([helm, "template", "rel", chart, "--show-only", "templates/notes-check.yaml",
                *args]).stdout
    return yaml.safe_load(text)["data"]["notes"]


def test_notes_render_for_both_modes(helm, tmp_path):
    notes = render_notes(helm, tmp_path, "-f", str(CHART / "ci" / "example-server-values.yaml"))
    assert "port-forward service/rel-tpt 9901:9901" in notes
    assert "Hot reload" in notes and "rel-tpt-config" in notes
    sidecar = render_notes(helm, tmp_path / "s", "-f", str(CHART / "ci" / "sidecar-values.yaml"))
    assert 'include "tpt.sidecarContainer"' in sidecar


def test_sidecar_helpers_work_with_an_aliased_dependency(helm, tmp_path):
    """A parent that aliases the dependency passes (dict "root" $ "values" .Values.<alias>)."""
    parent = tmp_path / "aliased"
    (parent / "templates").mkdir(parents=True)
    shutil.copytree(CHART, parent / "charts" / "tpt", ignore=shutil.ignore_patterns("ci"))
    (parent / "Chart.yaml").write_text(
        "apiVersion: v2\nname: aliased\nversion: 0.1.0\n"
        "dependencies:\n  - name: tpt\n    version: 0.1.0\n    alias: egress\n")
    (parent / "values.yaml").write_text(
        "egress:\n  mode: sidecar\n  sidecar: {native: true, containerName: egress}\n")
    (parent / "templates" / "pod.yaml").write_text(
        '{{- $t := dict "root" $ "values" .Values.egress }}\n'
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n"
        "  terminationGracePeriodSeconds: "
        '{{ include "tpt.sidecarTerminationGracePeriodSeconds" $t }}\n'
        "  initContainers:\n"
        '    {{- include "tpt.sidecarContainer" $t | nindent 4 }}\n'
        "  containers:\n    - name: app\n      image: app\n"
        "  volumes:\n"
        '    {{- include "tpt.sidecarVolume" $t | nindent 4 }}\n')
    docs = parse_manifests(run([helm, "template", "rel", parent]).stdout, "aliased")
    [(cm_name, _, _)] = tpt_configs(docs)
    [pod] = [d for d in docs if d["kind"] == "Pod"]
    [sidecar] = pod["spec"]["initContainers"]
    assert sidecar["name"] == "egress" and sidecar["restartPolicy"] == "Always"
    assert sidecar["image"] == "tpt:0.1.0"
    [volume] = pod["spec"]["volumes"]
    assert volume["configMap"]["name"] == cm_name
    assert [m["name"] for m in sidecar["volumeMounts"]] == [volume["name"]]
    assert pod["spec"]["terminationGracePeriodSeconds"] == 40
