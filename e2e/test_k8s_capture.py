"""Kubernetes delivery of transparent egress capture (SPEC §11): the chart's `capture.*` values,
the `tpt.sidecarCaptureContainer` helper in a parent chart (deploy/helm-sidecar-example) and
the kustomize overlay deploy/overlays/capture.

- the init container runs `tpt capture --apply` from tpt's image in exec form, as UID 0 with
  exactly NET_ADMIN added and ALL dropped, read-only root, no privilege escalation; it comes
  before the native sidecar; no other container of the pod adds a capability;
- its arguments follow the values and are accepted by the tpt binary (`--print` with them);
- the config carries a transparent listener on the capture port (the chart adds a pass-through
  server when the values have none); settings that would break the pod's egress fail;
- the renders pass `helm lint --strict` and the strict Kubernetes schema check.
The generic checks of every render (hardened tpt container, no subPath, config check) run on
these renders too, in e2e/test_k8s_render.py.
"""
import subprocess

import pytest
import yaml

from test_k8s_render import (CHART, REPO, helm, helm_template_fails, kubectl,  # noqa: F401
                             node_modules, parent_chart, parse_manifests, pod_specs, run,
                             tpt_configs, validate_k8s)

CAPTURE_VALUES = CHART / "ci" / "capture-values.yaml"
OVERLAY = REPO / "deploy" / "overlays" / "capture"
HARDENED = {"runAsNonRoot": False, "runAsUser": 0, "runAsGroup": 0, "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False, "privileged": False,
            "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]},
            "seccompProfile": {"type": "RuntimeDefault"}}


def parent(helm, parent_chart, *sets):  # noqa: F811
    args = [a for s in sets for a in ("--set", s)]
    text = run([helm, "template", "rel", parent_chart, *args]).stdout
    return parse_manifests(text, " ".join(sets))


def pod(docs):
    [(_, template)] = list(pod_specs(docs))
    return template["spec"]


def capture_container(spec):
    found = [c for c in spec.get("initContainers") or [] if (c.get("args") or [""])[0] == "capture"]
    assert len(found) == 1, spec.get("initContainers")
    return found[0]


def option_values(args, option):
    return [args[i + 1] for i, a in enumerate(args) if a == option]


def check_init_container(spec, image_of_tpt):
    init = capture_container(spec)
    assert "command" not in init, "exec form through the image's ENTRYPOINT (no shell)"
    assert init["args"][:2] == ["capture", "--apply"]
    assert init["image"] == image_of_tpt
    assert init["securityContext"] == HARDENED
    others = [c for c in spec["containers"] + (spec.get("initContainers") or []) if c is not init]
    assert others
    for c in others:
        caps = (c.get("securityContext") or {}).get("capabilities") or {}
        assert not caps.get("add"), f"{c['name']} adds capabilities"
        assert (c.get("securityContext") or {}).get("runAsUser") != 0, c["name"]
    return init


def tpt_image(spec):
    return next(c["image"] for c in spec["containers"] + (spec.get("initContainers") or [])
                if "--config" in (c.get("args") or []))


@pytest.mark.parametrize("native", [False, True], ids=["classic", "native"])
def test_parent_chart_runs_capture_before_everything_with_only_net_admin(
        helm, parent_chart, native):  # noqa: F811
    docs = parent(helm, parent_chart, "tpt.capture.enabled=true", f"tpt.sidecar.native={native}")
    spec = pod(docs)
    init = check_init_container(spec, tpt_image(spec))
    assert spec["initContainers"][0] is init, "the rules exist before any other container runs"
    if native:
        assert [c["name"] for c in spec["initContainers"]] == ["tpt-capture", "tpt"]
    assert init["args"] == ["capture", "--apply", "--ports", "443,80", "--to", "15001",
                            "--uid", "65532"]
    # The pod-level runAsNonRoot stays; only the init container overrides it.
    assert spec["securityContext"]["runAsNonRoot"] is True


def test_capture_off_renders_no_init_container(helm, parent_chart):  # noqa: F811
    spec = pod(parent(helm, parent_chart))
    assert "initContainers" not in spec
    [(_, config, _)] = tpt_configs(parent(helm, parent_chart))
    assert "capture" not in config["servers"]


def test_values_reach_the_arguments_and_tpt_accepts_them(helm, parent_chart, tpt_bin):  # noqa: F811
    docs = parent(helm, parent_chart, "tpt.capture.enabled=true", "tpt.capture.ports={443,8443}",
                  "tpt.capture.listenerPort=15006", "tpt.capture.ipv6=false",
                  "tpt.capture.excludeCIDRs={10.96.0.0/12,fd00:10:96::/112}")
    args = capture_container(pod(docs))["args"]
    assert option_values(args, "--ports") == ["443,8443"]
    assert option_values(args, "--to") == ["15006"]
    assert option_values(args, "--exclude-cidr") == ["10.96.0.0/12", "fd00:10:96::/112"]
    assert "--no-ipv6" in args
    printed = subprocess.run([tpt_bin, *["--print" if a == "--apply" else a for a in args]],
                             capture_output=True, text=True, timeout=30)
    assert printed.returncode == 0, printed.stderr
    assert "tcp dport { 443, 8443 } redirect to :15006" in printed.stdout
    assert "ip daddr 10.96.0.0/12 return" in printed.stdout
    assert "table ip6 tpt_capture {" not in printed.stdout
    # The chart's pass-through listener follows the port, IPv4 only without capture.ipv6.
    [(_, config, _)] = tpt_configs(docs)
    assert config["servers"]["capture"] == {
        "listen": ["127.0.0.1:15006"], "transparent": True, "tls": True, "http": True,
        "default": "original"}


def test_chart_adds_the_transparent_listener_only_when_none_is_given(helm, parent_chart):  # noqa: F811
    [(_, added, _)] = tpt_configs(parent(helm, parent_chart, "tpt.capture.enabled=true"))
    assert added["servers"]["capture"]["listen"] == ["127.0.0.1:15001", "[::1]:15001"]
    assert added["servers"]["egress"]["listen"] == ["127.0.0.1:8443"], "the app's server stays"
    docs = run([helm, "template", "rel", CHART, "-f", CAPTURE_VALUES]).stdout
    [(_, given, _)] = tpt_configs(parse_manifests(docs, "capture-values"))
    assert set(given["servers"]) == {"egress"}
    egress = given["servers"]["egress"]
    assert egress["transparent"] is True and egress["sni"]["*"] == "corp_proxy"
    assert egress["listen"] == ["127.0.0.1:15001", "[::1]:15001"]


@pytest.mark.parametrize("sets, message", [
    (["capture.enabled=true"], "capture.enabled needs mode: sidecar"),
    (["mode=sidecar", "capture.enabled=true", "capture.uid=1000"],
     "capture.uid 1000 is not tpt's UID"),
    (["mode=sidecar", "capture.enabled=true",
      "configText=servers:\n  x:\n    listen: [\"127.0.0.1:8443\"]\n    default: ban\n"],
     "no server of the config listens on 127.0.0.1:15001"),
    (["mode=sidecar", "capture.enabled=true", "config.servers.p.listen={127.0.0.1:15001}",
      "config.servers.p.default=ban"], "config.servers.p listens on the capture port but is not"
                                       " transparent: true"),
    (["mode=sidecar", "capture.enabled=true", "config.servers.p.listen={127.0.0.1:15001}",
      "config.servers.p.transparent=true", "config.servers.p.default=original"],
     "capture.ipv6 redirects IPv6 to [::1]:15001, where no server listens"),
    (["mode=sidecar", "capture.enabled=true", "config.servers.capture.listen={127.0.0.1:9000}",
      "config.servers.capture.default=ban"], "config.servers.capture exists"),
    (["capture.excludeCIDRs={example.com}"], "capture.excludeCIDRs"),
    (["capture.ports={0}"], "capture.ports"),
    (["capture.listenerPort=70000"], "capture.listenerPort"),
    (["capture.bogus=1"], "bogus"),
], ids=["deployment-mode", "uid-mismatch", "no-listener", "not-transparent", "no-ipv6-listener",
        "name-taken", "bad-cidr", "bad-port", "bad-listener-port", "unknown-key"])
def test_chart_refuses_capture_settings_that_break_egress(helm, sets, message):  # noqa: F811
    args = [a for s in sets for a in ("--set", s)]
    assert message in helm_template_fails(helm, *args)


def test_capture_values_lint_and_the_parent_lints_with_capture(helm, parent_chart):  # noqa: F811
    assert "0 chart(s) failed" in run([helm, "lint", "--strict", CHART, "-f",
                                       CAPTURE_VALUES]).stdout
    assert "0 chart(s) failed" in run([helm, "lint", "--strict", parent_chart, "--set",
                                       "tpt.capture.enabled=true"]).stdout


def test_kustomize_overlay_adds_the_init_container_and_a_transparent_listener(kubectl):  # noqa: F811
    docs = parse_manifests(run([kubectl, "kustomize", OVERLAY]).stdout, "overlay/capture")
    spec = pod(docs)
    init = check_init_container(spec, tpt_image(spec))
    assert init["image"] == "ghcr.io/tpt-proxy/tpt:0.1.0", "the base's image mapping reaches it"
    assert option_values(init["args"], "--to") == ["15001"]
    assert option_values(init["args"], "--uid") == [str(
        next(c for c in spec["containers"] if c["name"] == "tpt")["securityContext"]["runAsUser"])]
    [(_, config, _)] = tpt_configs(docs)
    [server] = [s for s in config["servers"].values() if s.get("transparent")]
    assert server["listen"] == ["127.0.0.1:15001", "[::1]:15001"]


def test_capture_renders_pass_the_strict_kubernetes_schema(helm, kubectl, parent_chart,
                                                           node_modules):  # noqa: F811
    renders = {
        "parent": parent(helm, parent_chart, "tpt.capture.enabled=true",
                         "tpt.capture.excludeCIDRs={10.96.0.0/12}"),
        "parent-native": parent(helm, parent_chart, "tpt.capture.enabled=true",
                                "tpt.sidecar.native=true"),
        "overlay": parse_manifests(run([kubectl, "kustomize", OVERLAY]).stdout, "overlay"),
    }
    for label, docs in renders.items():
        bad = [r for r in validate_k8s(node_modules, docs) if r["errors"]]
        assert not bad, f"{label}: {bad}"


def test_values_file_documents_every_capture_value():
    values = yaml.safe_load((CHART / "values.yaml").read_text())["capture"]
    assert values["enabled"] is False and values["ports"] == [443, 80]
    assert values["uid"] == 65532 and values["listenerPort"] == 15001
    readme = (CHART / "README.md").read_text()
    for key in values:
        assert f"`capture.{key}`" in readme, key
