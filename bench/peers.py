"""The processes of a benchmark run and their configurations: tpt, HAProxy, nginx stream,
squid, and the backends. Each config is written into the run's temp dir with the settings
that bench/RESULTS.md names as each peer's strongest for the figure; every process is a child
of bench.py (one scheduler autogroup with the load generators) and is stopped at exit.
"""
import os
import pwd
import signal
import subprocess

import lib

NGINX_STREAM = "/usr/lib/nginx/modules/ngx_stream_module.so"
SQUID_USER = "proxy"  # Debian's squid user; squid refuses to run as root without one

# Connection timeouts of every peer: long enough never to cut a benchmark's connection.
PEER_TIMEOUT = "1h"


class Procs:
    """Starts processes with their output in WORK/NAME.log and stops them: SIGTERM, then
    SIGKILL after 5 s. stop_all() runs at the end of every phase and at exit."""

    def __init__(self, work):
        self.work = work
        self.running = []

    def start(self, name, argv, env=None, stdout=None):
        log = open(os.path.join(self.work, f"{name}.log"), "ab")
        proc = subprocess.Popen(argv, stdout=stdout or log, stderr=log, env=env,
                                stdin=subprocess.DEVNULL)
        proc.bench_name = name
        self.running.append(proc)
        return proc

    def log_text(self, name):
        try:
            with open(os.path.join(self.work, f"{name}.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self, proc):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc in self.running:
            self.running.remove(proc)

    def stop_all(self):
        for proc in reversed(list(self.running)):
            self.stop(proc)

    def wait_listening(self, proc, ports, seconds=15, host="127.0.0.1"):
        """Waits until every port listens; exits with the process's log if it does not."""
        ok = lib.wait_for(lambda: proc.poll() is None and
                          all(lib.listening(p, host) for p in ports), seconds)
        if not ok:
            raise SystemExit(f"{proc.bench_name} did not listen on {ports}:\n"
                             f"{self.log_text(proc.bench_name)}")


class Peer:
    """One proxy (or backend) under test: its processes and its port per listener role."""

    def __init__(self, name, proc, ports):
        self.name = name
        self.proc = proc
        self.ports = ports  # role -> port

    def pids(self):
        """The main process and its direct children (nginx's and squid's workers)."""
        return [self.proc.pid] + lib.children(self.proc.pid)

    def cpu(self):
        return lib.cpu_seconds(self.pids())


def wait_children(proc, count, seconds=10):
    """nginx's and squid's masters listen before their workers exist: wait for them."""
    lib.wait_for(lambda: len(lib.children(proc.pid)) >= count, seconds)


# --- tpt ------------------------------------------------------------------------------------

def yaml_quote(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def tpt_sni_lines(routes, indent):
    """The `sni:` table's lines: routes is [(name or wildcard, upstream name)]."""
    pad = " " * indent
    return [f"{pad}{yaml_quote(name)}: {up}" for name, up in routes]


def tpt_config(servers, upstreams, admin=""):
    """A tpt config: servers is [(name, {key: yaml text} plus optional "sni" routes)],
    upstreams {name: url}. Warn-level logs (no access line per connection: the peers log
    nothing either), no reload triggers but the ones a benchmark sends."""
    lines = ["version: 1", "log: warn", f"admin: {{ listen: {yaml_quote(admin)} }}",
             "reload: { watch: false, poll_interval: 0s }", "servers:"]
    for name, keys in servers:
        lines.append(f"  {name}:")
        for key, value in keys.items():
            if key != "sni":
                lines.append(f"    {key}: {value}")
        if keys.get("sni"):
            lines.append("    sni:")
            lines += tpt_sni_lines(keys["sni"], 6)
    lines.append("upstream:")
    lines += [f"  {name}: {yaml_quote(url)}" for name, url in upstreams.items()]
    return "\n".join(lines) + "\n"


def tpt_accepts(binary, config_text, work, name):
    """(True, "") when `tpt -t` accepts the config, else (False, its first line): how a
    benchmark of a feature that has not landed yet skips with a message."""
    path = os.path.join(work, f"{name}.check.yaml")
    with open(path, "w") as f:
        f.write(config_text)
    out = subprocess.run([binary, "-t", "-c", path], capture_output=True, text=True, timeout=30)
    text = (out.stdout + out.stderr).strip()
    return out.returncode == 0, "" if out.returncode == 0 else first_line(text)


def first_line(text):
    return next((line for line in text.splitlines() if line.strip()), "")[:300]


def start_tpt(procs, name, binary, config_text, ports, env=None):
    path = os.path.join(procs.work, f"{name}.yaml")
    with open(path, "w") as f:
        f.write(config_text)
    proc = procs.start(name, [binary, "-c", path], env=env)
    procs.wait_listening(proc, list(ports.values()))
    return Peer(name, proc, ports)


# --- HAProxy ----------------------------------------------------------------------------------

def haproxy_global(maxconn, splice):
    """HAProxy's process and defaults: 2 threads, tcp mode; `splice` is "auto" (option
    splice-auto) or "forced" (option splice-request + splice-response). tcp-smart-connect
    saves the ACK of the upstream handshake (the request goes with it), as tpt does."""
    splice_opts = ("    option splice-auto" if splice == "auto" else
                   "    option splice-request\n    option splice-response")
    return f"""global
    nbthread 2
    maxconn {maxconn}
    maxpipes 256
defaults
    mode tcp
{splice_opts}
    option tcp-smart-connect
    timeout connect 5s
    timeout client {PEER_TIMEOUT}
    timeout server {PEER_TIMEOUT}
"""


def haproxy_plain(name, port, backend, client_first=True):
    """A frontend relaying to `backend`; for protocols where the client speaks first,
    defer-accept (TCP_DEFER_ACCEPT) and tcp-smart-accept (no lone ACK of the request)."""
    if not client_first:
        return f"frontend {name}\n    bind 127.0.0.1:{port}\n    default_backend {backend}\n"
    return (f"frontend {name}\n    bind 127.0.0.1:{port} defer-accept\n"
            f"    option tcp-smart-accept\n    default_backend {backend}\n")


def haproxy_routed(name, port, fetch, ready, exact_map, wild_suffix, wild_backend):
    """A frontend routing by a name: `fetch` (req.ssl_sni, req.hdr(host)) looked up in an
    exact map (an ebtree: O(log n)), then the one wildcard suffix, else the `ban` backend
    (no server: the connection is closed). inspect-delay holds the connection until `ready`
    (the whole hello, or an HTTP request) is in the buffer."""
    key = f"{fetch},lower"
    return f"""frontend {name}
    bind 127.0.0.1:{port} defer-accept
    option tcp-smart-accept
    tcp-request inspect-delay 5s
    tcp-request content accept if {ready}
    use_backend %[{key},map({exact_map})] if {{ {key},map({exact_map}) -m found }}
    use_backend {wild_backend} if {{ {key} -m end {wild_suffix} }}
    default_backend ban
"""


def haproxy_backend(name, address):
    return f"backend {name}\n    server s {address}\n" if address else f"backend {name}\n"


def start_haproxy(procs, name, config_text, ports):
    path = os.path.join(procs.work, f"{name}.cfg")
    with open(path, "w") as f:
        f.write(config_text)
    proc = procs.start(name, ["haproxy", "-db", "-f", path])
    procs.wait_listening(proc, list(ports.values()))
    return Peer(name, proc, ports)


# --- nginx ----------------------------------------------------------------------------------

def nginx_config(work, name, connections, stream_body, http_body=""):
    """nginx with 2 workers; stream_body holds the stream{} servers (and maps)."""
    d = os.path.join(work, name)
    os.makedirs(os.path.join(d, "logs"), exist_ok=True)
    nofile = os.sysconf("SC_OPEN_MAX")
    stream = f"stream {{\n{stream_body}}}\n" if stream_body else ""
    http = f"http {{\n{http_body}}}\n" if http_body else ""
    load = f"load_module {NGINX_STREAM};\n" if stream_body else ""
    return f"""{load}daemon off;
worker_processes 2;
worker_rlimit_nofile {nofile};
pid {d}/nginx.pid;
error_log {d}/logs/error.log crit;
events {{ worker_connections {connections}; multi_accept on; }}
{stream}{http}"""


def nginx_stream_server(port, upstream, preread=False):
    """A stream server: reuseport (a listening socket per worker, as tpt binds one per
    worker). nginx 1.22's stream listen has no `deferred` (TCP_DEFER_ACCEPT): only its http
    listen has."""
    pre = "ssl_preread on; " if preread else ""
    return (f"    server {{ listen 127.0.0.1:{port} reuseport backlog=4096; {pre}"
            f"proxy_pass {upstream}; }}\n")


def nginx_sni_map(variable, routes, default):
    """map $ssl_preread_server_name with `hostnames`: exact names in a hash, "*.suffix"
    wildcards in their own hash (nginx's strongest form of the lookup)."""
    lines = [f"    map $ssl_preread_server_name ${variable} {{", "        hostnames;",
             f"        default {default};"]
    lines += [f"        {name} {up};" for name, up in routes]
    return "\n".join(lines) + "\n    }\n"


def start_nginx(procs, name, config_text, ports):
    d = os.path.join(procs.work, name)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(config_text)
    proc = procs.start(name, ["nginx", "-p", d, "-c", path, "-e", f"{d}/logs/error.log"])
    procs.wait_listening(proc, list(ports.values()))
    wait_children(proc, 2)
    return Peer(name, proc, ports)


# --- squid ----------------------------------------------------------------------------------

def start_squid(procs, name, port, hosts, workers=1):
    """squid allowing CONNECT to any port from loopback, names from its own hosts_file (no
    DNS query leaves the machine), no cache, no access log; `workers` > 1 is SMP mode."""
    d = os.path.join(procs.work, name)
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)
    hosts_file = os.path.join(d, "hosts")
    with open(hosts_file, "w") as f:
        f.write("".join(f"127.0.0.1 {h}\n" for h in hosts))
    as_root = os.geteuid() == 0
    conf = os.path.join(d, "squid.conf")
    with open(conf, "w") as f:
        f.write(f"""http_port 127.0.0.1:{port}
workers {workers}
pid_filename {d}/squid.pid
{f"cache_effective_user {SQUID_USER}" if as_root else "# not root: squid runs as us"}
cache deny all
cache_mem 8 MB
access_log none
cache_log {d}/cache.log
cache_store_log none
coredump_dir {d}
netdb_filename none
pinger_enable off
client_db off
max_filedescriptors 16384
hosts_file {hosts_file}
dns_nameservers 127.0.0.1
shutdown_lifetime 0 seconds
acl CONNECT method CONNECT
acl local src 127.0.0.0/8
http_access allow CONNECT local
http_access deny all
""")
    if as_root:  # squid drops to SQUID_USER, who must own its files
        user = pwd.getpwnam(SQUID_USER)
        for p in [d] + [os.path.join(d, e) for e in os.listdir(d)]:
            os.chown(p, user.pw_uid, user.pw_gid)
    # -N runs one process that is also the worker; SMP (workers > 1) needs --foreground,
    # which keeps the master in the foreground and forks the kids and a coordinator.
    proc = procs.start(name, ["squid", "--foreground" if workers > 1 else "-N", "-f", conf])
    procs.wait_listening(proc, [port], seconds=30)
    if workers > 1:
        # SMP: the coordinator (kid squid-coord-N, which holds the port too) opens the port
        # and hands it to each worker; wait until every worker holds it (a worker without it
        # would leave the load to the others).
        ok = lib.wait_for(lambda: len(lib.holding(squid_workers(proc.pid),
                                                  lib.listen_inodes(port))) >= workers, 30)
        if not ok:
            raise SystemExit(f"squid's {workers} workers did not all take port {port}:\n"
                             f"{procs.log_text(name)}")
    return Peer(name, proc, {"connect": port})


def squid_workers(pid):
    """The SMP kids of squid's master that are workers (not the coordinator)."""
    found = []
    for kid in lib.children(pid):
        try:
            with open(f"/proc/{kid}/cmdline", "rb") as f:
                if b"-coord-" not in f.read():
                    found.append(kid)
        except OSError:
            continue
    return found


# --- backends -------------------------------------------------------------------------------

def start_loadgen_backend(procs, loadgen, name, ports, threads, answer_bytes, host="127.0.0.1"):
    """tpt_loadgen's backend: listen address k answers as backend k."""
    listen = ",".join(f"{host}:{p}" for p in ports)
    proc = procs.start(name, [loadgen, "serve", "--listen", listen, "--threads", str(threads),
                              "--answer-bytes", str(answer_bytes)])
    procs.wait_listening(proc, ports, host=host)
    return Peer(name, proc, {f"b{k}": p for k, p in enumerate(ports)})
