"""`tpt capture` (SPEC §11, the rule-installing half of transparent egress capture) against the
kernel: every test makes its own network namespaces (`unshare -n`, entered with `nsenter`), so
nothing on the machine's own ruleset is read or changed.

- what --apply installs (`nft list ruleset` before/after): --print is exactly that script,
  --apply twice leaves one copy and replaces the old rules, --no-ipv6 drops the IPv6 table,
  --remove takes away tpt's tables and nothing else;
- real traffic: a listener on 127.0.0.1:15001 / [::1]:15001 standing in for tpt reads
  SO_ORIGINAL_DST; clients run as another UID (setpriv) and connect to addresses on the
  namespace's loopback: listed ports are redirected with their original destination, while
  127.0.0.1, ::1, excluded CIDRs, the excluded UID, unlisted ports and UDP go where they were
  sent;
- errors: no CAP_NET_ADMIN (exit 3, also as root without the capability), usage (exit 2);
  NET_ADMIN alone is enough (no NET_RAW);
- the image: tpt from the scratch root that scripts/image-rootfs.sh lays out applies the rules
  (libnftables needs no file of the image);
- a node whose own netfilter rules are iptables-legacy: the pod's namespace has its own
  tables, so the capture rules and the node's rules never see each other.

Needs root (namespaces, nft) and a kernel with nftables NAT; skipped with the reason
otherwise.
"""
import json
import os
import shutil
import subprocess

import pytest

from helpers import REPO_ROOT, capture_skip_reason, end_holder, wait_until

PY = "/usr/bin/python3"
APP_UID = 1000
TPT_UID = 65532
LISTENER = 15001
ARGS = ["--ports", "443,80", "--to", str(LISTENER), "--uid", str(TPT_UID),
        "--exclude-cidr", "10.8.0.0/16", "--exclude-cidr", "fd00:8::/64"]

pytestmark = pytest.mark.capture


_SKIP = capture_skip_reason()
if _SKIP:
    pytestmark = [pytest.mark.capture, pytest.mark.skip(reason=_SKIP)]


class Netns:
    """A private network namespace, held by a process that lives until close() (or until the
    test process dies: it exits when its stdin closes). `parent` nests it in another one."""

    def __init__(self, parent=None):
        enter = parent.enter if parent else []
        self.holder = subprocess.Popen(
            [*enter, "unshare", "-n", "--", PY, "-c", "import sys; sys.stdin.read()"],
            stdin=subprocess.PIPE)
        mine = os.readlink(f"/proc/{os.getpid()}/ns/net")
        outer = os.readlink(f"/proc/{parent.holder.pid}/ns/net") if parent else mine
        wait_until(lambda: os.readlink(f"/proc/{self.holder.pid}/ns/net") not in (mine, outer),
                   10, "the namespace holder to unshare")
        self.enter = ["nsenter", f"--net=/proc/{self.holder.pid}/ns/net", "--"]
        self.check(["ip", "link", "set", "lo", "up"])

    def run(self, cmd, **kw):
        return subprocess.run([*self.enter, *map(str, cmd)], capture_output=True, text=True,
                              timeout=60, **kw)

    def check(self, cmd, **kw):
        proc = self.run(cmd, **kw)
        assert proc.returncode == 0, f"{cmd}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
        return proc.stdout

    def ruleset(self):
        return self.check(["nft", "list", "ruleset"])

    def close(self):
        end_holder(self.holder)


@pytest.fixture
def netns():
    made = []

    def make(parent=None):
        made.append(Netns(parent))
        return made[-1]

    yield make
    for ns in reversed(made):
        ns.close()


def capture(ns, tpt_bin, *args, prefix=()):
    return ns.run([*prefix, tpt_bin, "capture", *args])


def apply(ns, tpt_bin, *args):
    proc = capture(ns, tpt_bin, *args, "--apply")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


# --- the rules ---------------------------------------------------------------------------


def test_print_is_exactly_what_apply_installs(netns, tpt_bin):
    applied, loaded = netns(), netns()
    assert applied.ruleset() == "" and loaded.ruleset() == ""
    apply(applied, tpt_bin, *ARGS)
    script = capture(loaded, tpt_bin, *ARGS, "--print")
    assert script.returncode == 0, script.stderr
    loaded.check(["nft", "-f", "-"], input=script.stdout)
    installed = applied.ruleset()
    assert installed == loaded.ruleset()
    for family, loopback, excluded in (("ip", "127.0.0.1", "10.8.0.0/16"),
                                       ("ip6", "::1", "fd00:8::/64")):
        table = installed[installed.index(f"table {family} tpt_capture"):]
        table = table[:table.index("\n}\n")]
        assert "type nat hook output priority" in table
        assert f"meta skuid {TPT_UID} return" in table
        assert f"{family} daddr {loopback} return" in table
        assert f"{family} daddr {excluded} return" in table
        assert f"tcp dport {{ 80, 443 }} redirect to :{LISTENER}" in table


def test_apply_twice_leaves_one_copy_and_a_rerun_replaces_the_rules(netns, tpt_bin):
    ns = netns()
    apply(ns, tpt_bin, *ARGS)
    once = ns.ruleset()
    apply(ns, tpt_bin, *ARGS)
    assert ns.ruleset() == once
    assert once.count("table ip tpt_capture") == 1 and once.count("table ip6 tpt_capture") == 1
    assert once.count("redirect to") == 2

    apply(ns, tpt_bin, "--ports", "8443", "--to", "15002")
    changed = ns.ruleset()
    assert changed.count("redirect to") == 2
    assert "tcp dport 8443 redirect to :15002" in changed
    assert "443, " not in changed and "10.8.0.0/16" not in changed

    apply(ns, tpt_bin, *ARGS, "--no-ipv6")
    ipv4_only = ns.ruleset()
    assert "table ip tpt_capture" in ipv4_only and "table ip6" not in ipv4_only


def test_remove_takes_tpt_rules_away_and_leaves_foreign_rules(netns, tpt_bin):
    ns = netns()
    # Someone else's rules in the same namespace, also in the nat OUTPUT hook.
    ns.check(["nft", "-f", "-"], input=(
        "table ip istio_like {\n chain output {\n"
        "  type nat hook output priority -100; policy accept;\n"
        "  tcp dport 9080 redirect to :15006\n }\n}\n"
        "table inet filter {\n chain out {\n  type filter hook output priority 0;\n"
        "  udp dport 9 drop\n }\n}\n"))
    before = ns.ruleset()
    assert capture(ns, tpt_bin, "--remove").returncode == 0, "removing nothing is fine"
    assert ns.ruleset() == before
    apply(ns, tpt_bin, *ARGS)
    assert "tpt_capture" in ns.ruleset()
    removed = capture(ns, tpt_bin, "--remove")
    assert removed.returncode == 0, removed.stderr
    assert "removed" in removed.stdout
    assert ns.ruleset() == before
    assert capture(ns, tpt_bin, "--remove").returncode == 0
    assert ns.ruleset() == before


# --- real traffic ------------------------------------------------------------------------

# Runs as root inside the namespace: a stand-in for tpt's transparent listener on
# 127.0.0.1/[::1]:LISTENER that reads SO_ORIGINAL_DST, plus listeners on the clients' real
# destinations; for each case it starts the client as the case's UID (setpriv) and reports
# which listener got the connection (or datagram), and the original destination.
AGENT = r"""
import json, select, socket, struct, subprocess, sys, time
LISTENER, cases = int(sys.argv[1]), json.loads(sys.argv[2])
SO_ORIGINAL_DST = 80                      # linux/netfilter_ipv4.h; IP6T_SO_ORIGINAL_DST = 80

def listen(family, host, port, kind=socket.SOCK_STREAM):
    s = socket.socket(family, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((host, port))
    if kind == socket.SOCK_STREAM:
        s.listen(16)
    return s

def original_dst(conn, family):
    if family == socket.AF_INET:
        raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
        return socket.inet_ntop(family, raw[4:8]), struct.unpack("!H", raw[2:4])[0]
    raw = conn.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
    return socket.inet_ntop(family, raw[8:24]), struct.unpack("!H", raw[2:4])[0]

capture = {}
for fam, loopback in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        capture[listen(fam, loopback, LISTENER, kind)] = "capture"
direct = {}
for port in {c["port"] for c in cases}:
    for fam, any_addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            direct[listen(fam, any_addr, port, kind)] = "direct"
CLIENT = ("import socket, sys; h, p, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]\n"
          "if kind == 'tcp': socket.create_connection((h, p), 5).recv(1)\n"
          "else: socket.socket(socket.AF_INET6 if ':' in h else socket.AF_INET,"
          " socket.SOCK_DGRAM).sendto(b'x', (h, p))")
results = []
for case in cases:
    client = subprocess.Popen(["setpriv", "--reuid", str(case["uid"]), "--regid",
                               str(case["uid"]), "--clear-groups", sys.executable, "-c", CLIENT,
                               case["host"], str(case["port"]), case.get("kind", "tcp")])
    deadline, got = time.monotonic() + 10, None
    while got is None and time.monotonic() < deadline:
        ready, _, _ = select.select(list(capture) + list(direct), [], [], 0.5)
        for s in ready:
            where = capture.get(s) or direct[s]
            if s.type == socket.SOCK_DGRAM:
                _, peer = s.recvfrom(64)
                got = {"where": where}
            else:
                conn, peer = s.accept()
                # Only a redirected connection has a NAT mapping to ask about (ENOENT else).
                got = {"where": where, "original": list(original_dst(conn, s.family))
                       if where == "capture" else list(conn.getsockname()[:2])}
                conn.close()
            break
    client.wait(10)
    results.append(got or {"where": "nowhere", "client_exit": client.returncode})
print(json.dumps(results))
"""


def run_agent(ns, cases):
    out = ns.check([PY, "-c", AGENT, str(LISTENER), json.dumps(cases)])
    return json.loads(out)


def test_listed_tcp_ports_are_redirected_with_their_original_destination(netns, tpt_bin):
    ns = netns()
    # Destinations on the namespace's loopback: the nat OUTPUT hook sees them like any other
    # (127.0.0.5 too: only 127.0.0.1/32 is excluded, as Istio does).
    for addr in ("10.9.0.5/32", "10.8.0.5/32", "fd00::5/128", "fd00:8::5/128"):
        ns.check(["ip", "addr", "add", addr, "dev", "lo"] + (["nodad"] if ":" in addr else []))
    apply(ns, tpt_bin, *ARGS)
    redirected = "capture"
    cases = [
        # (uid, host, port, kind) -> where it must arrive
        ((APP_UID, "127.0.0.5", 443, "tcp"), redirected),
        ((APP_UID, "10.9.0.5", 80, "tcp"), redirected),
        ((APP_UID, "fd00::5", 443, "tcp"), redirected),
        ((0, "10.9.0.5", 443, "tcp"), redirected),          # root is an app like any other
        ((APP_UID, "127.0.0.1", 443, "tcp"), "direct"),     # 127.0.0.1/32 excluded
        ((APP_UID, "::1", 443, "tcp"), "direct"),           # ::1/128 excluded
        ((TPT_UID, "127.0.0.5", 443, "tcp"), "direct"),     # tpt's own upstream connections
        ((TPT_UID, "fd00::5", 80, "tcp"), "direct"),
        ((APP_UID, "10.8.0.5", 443, "tcp"), "direct"),      # --exclude-cidr 10.8.0.0/16
        ((APP_UID, "fd00:8::5", 443, "tcp"), "direct"),     # --exclude-cidr fd00:8::/64
        ((APP_UID, "127.0.0.5", 8443, "tcp"), "direct"),    # port not listed
        ((APP_UID, "fd00::5", 8443, "tcp"), "direct"),
        ((APP_UID, "127.0.0.5", 443, "udp"), "direct"),     # UDP (QUIC) is never captured
        ((APP_UID, "fd00::5", 443, "udp"), "direct"),
    ]
    results = run_agent(ns, [{"uid": u, "host": h, "port": p, "kind": k}
                             for (u, h, p, k), _ in cases])
    for ((uid, host, port, kind), where), got in zip(cases, results):
        label = f"{kind} from UID {uid} to {host}:{port}"
        assert got["where"] == where, f"{label}: {got}"
        if where == redirected:
            assert got["original"] == [host, port], f"{label}: {got}"

    # Removed: the same connection goes where it was sent.
    assert capture(ns, tpt_bin, "--remove").returncode == 0
    [after] = run_agent(ns, [{"uid": APP_UID, "host": "127.0.0.5", "port": 443}])
    assert after["where"] == "direct", after


# --- errors and privileges -----------------------------------------------------------------


@pytest.mark.parametrize("prefix, code", [
    (["setpriv", "--reuid", str(APP_UID), "--regid", str(APP_UID), "--clear-groups"], 3),
    (["setpriv", "--bounding-set", "-net_admin", "--inh-caps", "-all"], 3),
    # Root with NET_ADMIN and nothing else (the chart's init container): enough, no NET_RAW.
    (["setpriv", "--bounding-set", "-all,+net_admin", "--inh-caps", "-all"], 0),
], ids=["non-root", "root-without-net-admin", "root-with-only-net-admin"])
def test_apply_needs_net_admin_and_nothing_more(netns, tpt_bin, prefix, code):
    ns = netns()
    for mode in ("--apply", "--remove"):
        proc = capture(ns, tpt_bin, *ARGS, mode, prefix=prefix)
        assert proc.returncode == code, proc.stdout + proc.stderr
        if code == 3:
            assert "CAP_NET_ADMIN" in proc.stderr and "runAsUser 0" in proc.stderr
            assert ns.ruleset() == ""
        elif mode == "--apply":
            assert "redirect to :15001" in ns.ruleset()
    assert ns.ruleset() == ""


@pytest.mark.parametrize("args, message", [
    (["--ports", "443,0", "--to", "15001"], '--ports: "0" is not a TCP port'),
    (["--ports", "443", "--to", "15001", "--exclude-cidr", "10.0.0.1/8"], "bits set"),
    (["--ports", "443", "--to", "15001", "--exclude-cidr", "10.0.0.0/40"], "prefix length"),
    (["--ports", "443", "--to", "15001", "--uid", "nobody"], "numeric UID"),
    (["--to", "15001", "--apply"], "--ports P,P... is required"),
    (["--ports", "443", "--to", "15001", "--apply", "--remove"], "choose one of"),
    (["--ports", "443", "--to", "15001", "--bogus"], "bogus"),
])
def test_usage_errors_exit_2_and_change_nothing(netns, tpt_bin, args, message):
    ns = netns()
    proc = capture(ns, tpt_bin, *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert proc.stdout == "" and ns.ruleset() == ""


def test_help_names_every_option(tpt_bin):
    proc = subprocess.run([tpt_bin, "capture", "--help"], capture_output=True, text=True,
                          timeout=10)
    assert proc.returncode == 0
    for option in ("--ports", "--to", "--uid", "--exclude-cidr", "--no-ipv6", "--apply",
                   "--remove", "--print"):
        assert option in proc.stdout


# --- the image and the node ---------------------------------------------------------------


@pytest.mark.no_sanitizer
def test_capture_runs_from_the_scratch_image_root(netns, tpt_bin, tmp_path):
    if shutil.which("readelf") is None:
        pytest.skip("readelf (binutils) is missing")
    root = tmp_path / "rootfs"
    stripped = tmp_path / "tpt"
    subprocess.run(["strip", "-o", stripped, tpt_bin], check=True, timeout=60)
    laid = subprocess.run(["bash", REPO_ROOT / "scripts" / "image-rootfs.sh", stripped, root],
                          capture_output=True, text=True, timeout=120)
    assert laid.returncode == 0, laid.stderr
    assert any("libnftables.so" in f for f in laid.stdout.split()), laid.stdout
    ns, reference = netns(), netns()
    # chroot itself needs SYS_CHROOT; tpt then runs with that and NET_ADMIN only.
    only_net_admin = ["setpriv", "--bounding-set", "-all,+net_admin,+sys_chroot", "--inh-caps",
                      "-all"]
    proc = ns.run([*only_net_admin, "chroot", root, "/usr/local/bin/tpt", "capture", *ARGS,
                   "--apply"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == "", "libnftables complained about a file missing from the image"
    apply(reference, tpt_bin, *ARGS)
    assert ns.ruleset() == reference.ruleset()


def test_pod_namespace_is_independent_of_the_nodes_iptables_legacy_rules(netns, tpt_bin):
    if shutil.which("iptables-legacy") is None:
        pytest.skip("iptables-legacy is missing (Debian package iptables)")
    node = netns()
    node.check(["iptables-legacy", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "443",
                "-j", "REDIRECT", "--to-ports", "9000"])
    legacy_nat = ["iptables-legacy-save", "-t", "nat"]
    node_rules = [r for r in node.check(legacy_nat).splitlines() if not r.startswith("#")]
    pod = netns(parent=node)
    assert "REDIRECT" not in pod.check(legacy_nat)
    apply(pod, tpt_bin, *ARGS)
    assert "tpt_capture" in pod.ruleset()
    assert node.ruleset() == "", "the pod's nft tables are not in the node's namespace"
    assert [r for r in node.check(legacy_nat).splitlines() if not r.startswith("#")] == \
        node_rules  # (the comments carry timestamps)
    # Each namespace redirects by its own rules.
    [in_pod] = run_agent(pod, [{"uid": APP_UID, "host": "127.0.0.5", "port": 443}])
    assert in_pod == {"where": "capture", "original": ["127.0.0.5", 443]}
