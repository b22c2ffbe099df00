#!/usr/bin/python3
"""Every figure of bench/RESULTS.md in one run: tpt side by side with HAProxy, nginx stream and
squid on loopback, with the same backends and load; 2 threads or workers each. Started by
bench/run.sh, which installs the tools and builds tpt_loadgen first; the knobs are environment
variables (run.sh's header lists them). Prints the tables (bench/report.py) at the end.

Phases, each starting and stopping its own processes (TESTS picks them):
  rss iperf wrk sni syscalls   the peers' main comparison (one set of processes)
  http                         HTTP Host routing: tpt (http: true) vs HAProxy req.hdr(host)
  connect                      tpt -> squid vs client -> squid; tpt accept_connect vs squid
  reload                       10,000 routes: POST /reload time; p99 with reloads vs without
  capture                      captured (SPEC §11) vs explicit path, in an `unshare -n` netns
A phase whose tpt feature is missing (tpt -t rejects its config) records why and is skipped.
"""
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import lib
import peers
import report

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ALL_TESTS = "rss iperf wrk sni syscalls http connect reload capture"
WILD_SUFFIX = ".wild.bench.example"


def env_num(name, default):
    return type(default)(os.environ.get(name, default))


class Run:
    """The knobs, the temp dir, the processes and the results file of one run."""

    def __init__(self, work):
        self.work = work
        self.procs = peers.Procs(work)
        self.results = os.path.join(work, "results.jsonl")
        self.duration = env_num("DURATION", 10.0)
        self.repeat = env_num("REPEAT", 1)
        self.tests = os.environ.get("TESTS", ALL_TESTS).split()
        self.tpt = os.environ["TPT_BIN"]
        self.tpt_base = os.environ.get("TPT_BASE_BIN", "")
        self.loadgen = os.environ["LOADGEN"]
        self.threads = env_num("LOADGEN_THREADS", 2)
        self.answer = env_num("ANSWER_BYTES", 512)
        self.backends = env_num("BACKENDS", 4)
        self.names = sni_names(env_num("NAMES", 1000), env_num("WILD_NAMES", 100))
        with open(os.environ.get("HELLO", os.path.join(ROOT, "tests/data/hello/curl_sni.bin")),
                  "rb") as f:
            self.hello = f.read()
        proxies = os.environ.get("PROXIES", "tpt haproxy haproxy-splice nginx").split()
        if self.tpt_base and "tpt-base" not in proxies:
            proxies.insert(proxies.index("tpt") + 1 if "tpt" in proxies else 0, "tpt-base")
        self.proxies = proxies
        self.profile = os.environ.get("PROFILE", "").split()

    def want(self, *tests):
        return any(t in self.tests for t in tests)

    def record(self, figure, who, value):
        with open(self.results, "a") as f:
            f.write(json.dumps({"figure": figure, "who": who, "value": value}) + "\n")

    def skip(self, phase, why):
        print(f"skipped {phase}: {why}", flush=True)
        self.record("skip", phase, why)

    def ports(self, n):
        return lib.free_ports(n)


def sni_names(exact, wild):
    """(name, backend index) pairs: `exact` names that the tables list one by one, and `wild`
    names that only the one wildcard "*.wild.bench.example" matches."""
    names = [f"app{i:04d}.bench.example" for i in range(exact)]
    return names + [f"h{j:03d}{WILD_SUFFIX}" for j in range(wild)]


def backend_of(run, i):
    return i % run.backends


def exact_routes(run, upstream_of):
    """The exact routes of the table: (name, upstream_of(backend index))."""
    return [(n, upstream_of(backend_of(run, i))) for i, n in enumerate(run.names)
            if not n.endswith(WILD_SUFFIX)]


def hello_requests(run, path, prelude_of=None, backend=None):
    """tpt_loadgen's request file: one ClientHello per name, each preceded by prelude_of(name)
    when given (a CONNECT head), answered by `backend` or by the name's own backend."""
    entries = []
    for i, name in enumerate(run.names):
        b = backend if backend is not None else (0 if name.endswith(WILD_SUFFIX)
                                                 else backend_of(run, i))
        prelude = prelude_of(name) if prelude_of else b""
        entries.append((b, prelude, lib.hello_with_sni(run.hello, name)))
    lib.write_requests(path, entries)
    return path


# --- the load generator -------------------------------------------------------------------------

def loadgen(run, targets, requests, concurrency, measured=(), rate=0.0, duration=None,
            warmup=0.5):
    """Runs tpt_loadgen's client and returns its report, with the CPU seconds of each measured
    peer and of the whole machine over the same counted window (sampled at its markers)."""
    argv = [run.loadgen, "client", "--target", ",".join(targets), "--requests", requests,
            "--threads", str(min(run.threads, concurrency)), "--concurrency", str(concurrency),
            "--rate", str(rate), "--warmup", str(warmup),
            "--duration", str(duration or run.duration), "--answer-bytes", str(run.answer)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    samples = []
    for line in proc.stdout:
        if line.startswith("window"):
            samples.append(({p.name: p.cpu() for p in measured}, lib.machine_busy_seconds()))
        elif line.startswith("{"):
            rep = json.loads(line)
    if proc.wait() != 0 or len(samples) != 2:
        raise SystemExit(f"tpt_loadgen failed: {' '.join(argv)}")
    (cpu0, m0), (cpu1, m1) = samples
    n = max(rep["connections"], 1)
    rep["cpu_us"] = {name: (cpu1[name] - cpu0[name]) * 1e6 / n for name in cpu0}
    rep["machine_us"] = (m1 - m0) * 1e6 / n
    rep["error_count"] = sum(rep["errors"].values())
    return rep


def record_load(run, prefix, who, rep, cpu_of=None):
    """Records a loadgen report under prefix_{rate,p50,p99,errors,cpu_us,machine_us,client_us}
    and prints one line."""
    run.record(f"{prefix}_rate", who, rep["conn_per_s"])
    run.record(f"{prefix}_p50", who, rep["p50_ms"])
    run.record(f"{prefix}_p99", who, rep["p99_ms"])
    run.record(f"{prefix}_errors", who, rep["error_count"])
    run.record(f"{prefix}_machine_us", who, rep["machine_us"])
    run.record(f"{prefix}_client_us", who, rep["cpu_us_per_conn"])
    cpu = rep["cpu_us"].get(cpu_of or who)
    if cpu is not None:
        run.record(f"{prefix}_cpu_us", who, cpu)
    errors = {k: v for k, v in rep["errors"].items() if v}
    peers_cpu = ", ".join(f"{k} {v:.1f}" for k, v in rep["cpu_us"].items()) or "-"
    print(f"{prefix:14s} {who:14s} {rep['conn_per_s']:9.0f} conn/s  p50 {rep['p50_ms']:.3f} ms"
          f"  p99 {rep['p99_ms']:.3f} ms  cpu/conn {peers_cpu} us  machine "
          f"{rep['machine_us']:.1f} us  client {rep['cpu_us_per_conn']:.1f} us"
          f"  errors {errors or 0}", flush=True)


def rotate(items, n):
    """items starting n further along: no peer always runs right after the same neighbour."""
    return items[n % len(items):] + items[:n % len(items)] if items else items


# --- phase: the peers' main comparison ----------------------------------------------------------

def start_backends(run):
    """iperf3, nginx http serving 1 KiB (2 workers), the idle backend, tpt_loadgen's backend."""
    p_iperf, p_http, p_idle = run.ports(3)
    sni_ports = run.ports(run.backends)
    www = os.path.join(run.work, "www")
    os.makedirs(www, exist_ok=True)
    os.chmod(www, 0o755)
    with open(os.path.join(www, "1k.bin"), "wb") as f:
        f.write(os.urandom(1024))
    os.chmod(os.path.join(www, "1k.bin"), 0o644)
    iperf = run.procs.start("iperf3-server", ["iperf3", "-s", "-B", "127.0.0.1", "-p",
                                              str(p_iperf)])
    http_body = (f"    access_log off;\n    keepalive_requests 1000000;\n"
                 f"    client_body_temp_path {run.work}/nginx-http/body;\n"
                 f"    server {{ listen 127.0.0.1:{p_http} backlog=4096; root {www}; }}\n")
    nginx = peers.start_nginx(run.procs, "nginx-http",
                              peers.nginx_config(run.work, "nginx-http", 4096, "", http_body),
                              {"http": p_http})
    idle_status = os.path.join(run.work, "idle.count")
    idle = run.procs.start("idle-backend", [sys.executable, os.path.join(HERE, "lib.py"),
                                            "idle-backend", str(p_idle), idle_status])
    sni = peers.start_loadgen_backend(run.procs, run.loadgen, "sni-backend", sni_ports,
                                      run.threads, run.answer)
    run.procs.wait_listening(iperf, [p_iperf])
    run.procs.wait_listening(idle, [p_idle])
    return {"iperf": p_iperf, "http": p_http, "idle": p_idle, "sni": sni_ports,
            "idle_status": idle_status, "nginx": nginx, "sni_backend": sni}


def tpt_main_config(run, ports, be):
    up = {"iperf_up": f"tcp://127.0.0.1:{be['iperf']}", "http_up": f"tcp://127.0.0.1:{be['http']}",
          "idle_up": f"tcp://127.0.0.1:{be['idle']}"}
    up.update({f"sni_up{k}": f"tcp://127.0.0.1:{p}" for k, p in enumerate(be["sni"])})
    plain = {"maxclients": 20000}
    routes = exact_routes(run, lambda b: f"sni_up{b}") + [(f"*{WILD_SUFFIX}", "sni_up0")]
    servers = [(role, {"listen": f'["127.0.0.1:{ports[role]}"]', "default": f"{role}_up",
                       **plain}) for role in ("iperf", "http", "idle")]
    servers.append(("sni", {"listen": f'["127.0.0.1:{ports["sni"]}"]', "tls": "true",
                            "default": "ban", "sni": routes, **plain}))
    return peers.tpt_config(servers, up)


def haproxy_main_config(run, ports, be, splice):
    exact_map = os.path.join(run.work, "sni-exact.map")
    with open(exact_map, "w") as f:
        f.writelines(f"{n} sni_up{b}\n" for n, b in exact_routes(run, lambda b: b))
    parts = [peers.haproxy_global(run_maxconn(run), splice),
             peers.haproxy_plain("iperf", ports["iperf"], "iperf_up"),
             peers.haproxy_plain("http", ports["http"], "http_up"),
             peers.haproxy_plain("idle", ports["idle"], "idle_up", client_first=False),
             peers.haproxy_routed("sni", ports["sni"], "req.ssl_sni", "{ req.ssl_hello_type 1 }",
                                  exact_map, WILD_SUFFIX, "sni_up0"),
             peers.haproxy_backend("iperf_up", f"127.0.0.1:{be['iperf']}"),
             peers.haproxy_backend("http_up", f"127.0.0.1:{be['http']}"),
             peers.haproxy_backend("idle_up", f"127.0.0.1:{be['idle']}"),
             peers.haproxy_backend("ban", "")]
    parts += [peers.haproxy_backend(f"sni_up{k}", f"127.0.0.1:{p}")
              for k, p in enumerate(be["sni"])]
    return "".join(parts)


def run_maxconn(run):
    """HAProxy's maxconn: the idle tunnels and some room (it needs 2 descriptors each, and
    refuses to start when the hard RLIMIT_NOFILE cannot hold them)."""
    return env_num("TUNNELS", 9000) + 100


def nginx_main_config(run, ports, be):
    routes = exact_routes(run, lambda b: f"127.0.0.1:{be['sni'][b]}")
    routes.append((f"*{WILD_SUFFIX}", f"127.0.0.1:{be['sni'][0]}"))
    body = ("    map_hash_max_size 65536;\n    map_hash_bucket_size 128;\n"
            f"    proxy_timeout {peers.PEER_TIMEOUT};\n    preread_timeout 5s;\n"
            + peers.nginx_sni_map("sni_upstream", routes, "127.0.0.1:1")
            + peers.nginx_stream_server(ports["iperf"], f"127.0.0.1:{be['iperf']}")
            + peers.nginx_stream_server(ports["http"], f"127.0.0.1:{be['http']}")
            + peers.nginx_stream_server(ports["idle"], f"127.0.0.1:{be['idle']}")
            + peers.nginx_stream_server(ports["sni"], "$sni_upstream", preread=True))
    return peers.nginx_config(run.work, "nginx", 2 * env_num("TUNNELS", 9000) + 500, body)


def start_proxy(run, who, be):
    """Starts one peer of the main comparison with its four listeners."""
    ports = dict(zip(("iperf", "http", "idle", "sni"), run.ports(4)))
    if who in ("tpt", "tpt-base", "tpt-splice"):
        binary = run.tpt_base if who == "tpt-base" else run.tpt
        # tpt-splice: TPT_SPLICE=1 splices streams even between loopback peers (tpt copies
        # there by default), the setting to compare with HAProxy's forced splice
        env = dict(os.environ, TPT_SPLICE="1") if who == "tpt-splice" else None
        return peers.start_tpt(run.procs, who, binary, tpt_main_config(run, ports, be), ports,
                               env=env)
    if who in ("haproxy", "haproxy-splice"):
        splice = "auto" if who == "haproxy" else "forced"
        return peers.start_haproxy(run.procs, who, haproxy_main_config(run, ports, be, splice),
                                   ports)
    if who == "nginx":
        return peers.start_nginx(run.procs, "nginx", nginx_main_config(run, ports, be), ports)
    raise SystemExit(f"unknown proxy {who} (tpt tpt-base tpt-splice haproxy haproxy-splice "
                     "nginx)")


def measure_rss(run, proxies, be):
    tunnels = env_num("TUNNELS", 9000)
    for p in proxies:
        before, after, n = lib.idle_tunnels_rss(p.ports["idle"], tunnels, be["idle_status"], 60,
                                                p.pids())
        per = (after - before) / n
        print(f"idle tunnels  {p.name}: {n} tunnels, RSS {before} -> {after} B, {per:.0f} "
              f"B/tunnel", flush=True)
        run.record("rss_per_tunnel", p.name, per)


def measure_iperf(run, who, port, peer):
    out = os.path.join(run.work, f"iperf-{who}-{time.monotonic_ns()}.json")
    cpu0 = peer.cpu() if peer else 0
    with open(out, "w") as f:
        subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t",
                        str(int(run.duration)), "-J"], stdout=f, check=True)
    bps, nbytes = lib.parse_iperf(out)
    run.record("throughput", who, bps)
    line = f"iperf3        {who}: {bps / 1e9:.2f} Gbit/s"
    if peer:
        cpu_gb = (peer.cpu() - cpu0) / (nbytes / 1e9)
        run.record("cpu_per_gb", who, cpu_gb)
        line += f", {cpu_gb:.3f} CPU s/GB"
    print(line, flush=True)


def wrk(run, port, close):
    """(requests/s, p99 ms, errors) of wrk -t2 -c64 for the 1 KiB file, keep-alive or with
    `Connection: close` (a new connection per request)."""
    argv = ["wrk", "-t2", "-c64", f"-d{int(run.duration)}s", "--latency"]
    argv += ["-H", "Connection: close"] if close else []
    text = subprocess.run(argv + [f"http://127.0.0.1:{port}/1k.bin"], capture_output=True,
                          text=True, check=True).stdout
    return lib.parse_wrk(text)


def measure_wrk(run, who, port):
    rps, p99, errors = wrk(run, port, close=False)
    run.record("rps_keepalive", who, rps)
    run.record("p99_keepalive", who, p99)
    print(f"wrk keepalive {who}: {rps:.0f} req/s, p99 {p99:.2f} ms, {errors} errors", flush=True)
    rps, _, errors = wrk(run, port, close=True)
    run.record("rps_close", who, rps)
    print(f"wrk close     {who}: {rps:.0f} conn/s, {errors} errors", flush=True)


def phase_main(run):
    be = start_backends(run)
    proxies = [start_proxy(run, who, be) for who in run.proxies]
    by_name = {p.name: p for p in proxies}
    requests = hello_requests(run, os.path.join(run.work, "sni.req"))
    sni_c = env_num("SNI_CONCURRENCY", 64)
    if run.want("rss"):
        measure_rss(run, proxies, be)
    direct = ["direct"] if env_num("DIRECT", 1) else []
    for rep in range(run.repeat):
        order = direct + rotate(run.proxies, rep)
        for who in order if run.want("iperf") else []:
            peer = by_name.get(who)
            measure_iperf(run, who, peer.ports["iperf"] if peer else be["iperf"], peer)
        for who in order if run.want("wrk") else []:
            measure_wrk(run, who, by_name[who].ports["http"] if who in by_name else be["http"])
        for who in order if run.want("sni") else []:
            peer = by_name.get(who)
            targets = ([f"127.0.0.1:{peer.ports['sni']}"] if peer else
                       [f"127.0.0.1:{p}" for p in be["sni"]])
            rep_ = loadgen(run, targets, requests, sni_c, [peer] if peer else [])
            record_load(run, "sni", who, rep_)
    if run.want("syscalls"):
        for p in proxies:
            syscalls_per_connection(run, p, requests, sni_c)
    for p in proxies:
        if p.name in run.profile:
            profiled(run, p, "sni", lambda p=p: loadgen(run, [f"127.0.0.1:{p.ports['sni']}"],
                                                         requests, sni_c))
            profiled(run, p, "close", lambda p=p: wrk(run, p.ports["http"], close=True))
    run.procs.stop_all()


# --- profiles ---------------------------------------------------------------------------------

def profiled(run, peer, label, action):
    """Runs action() (an extra, unrecorded run of a load) under `perf record -e cpu-clock -g`
    on the peer's processes (this VM has no PMU: cpu-clock is the event that works) and
    writes the flat profile by dso and symbol next to the data; prints its top lines."""
    data = os.path.join(run.work, f"perf-{label}-{peer.name}.data")
    pids = ",".join(str(p) for p in peer.pids())
    rec = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-g", "-o", data, "-p", pids],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not lib.wait_for(lambda: os.path.exists(data), 30):
        raise SystemExit(f"perf record did not start on {peer.name}")
    try:
        result = action()
    finally:
        rec.send_signal(signal.SIGINT)
        rec.wait(60)
    if isinstance(result, dict) and "connections" in result:  # a loadgen report
        label += f" ({result['connections']} connections)"  # to compare profiles per connection
    views = [perf_report(data, "dso"), perf_report(data, "dso,sym")]
    with open(data[:-5] + ".txt", "w") as f:
        f.write("\n\n".join("\n".join(v) for v in views) + "\n")
    dsos = views[0][:6]
    user = [line for line in views[1] if "[k]" not in line][:8]
    print(f"profile       {peer.name} under the {label} load: {data[:-5]}.txt (and .data)\n  "
          + "\n  ".join(line[:140] for line in dsos + ["user space:"] + user), flush=True)


def perf_report(data, sort):
    """The lines of a flat `perf report` sorted by `sort`, samples above 0.3 %."""
    out = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "-g",
                          "none", "--sort", sort, "--percent-limit", "0.3"],
                         capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.strip() and not line.startswith("#")]


# --- system calls per SNI connection ----------------------------------------------------------

def perf_works():
    out = subprocess.run(["perf", "stat", "-x,", "-e", "syscalls:sys_enter_close", "true"],
                         capture_output=True, text=True)
    return out.returncode == 0 and "syscalls:sys_enter_close" in out.stderr \
        and "<not supported>" not in out.stderr


def syscalls_per_connection(run, peer, requests, concurrency):
    """Counts the peer's system calls (all its processes and threads) during a run of the SNI
    load: perf's syscall tracepoints where they work, else strace -c (which slows the peer,
    so its rate is not recorded). Records sys:<name> and sys_total per connection."""
    out = os.path.join(run.work, f"syscalls-{peer.name}.txt")
    pids = ",".join(str(p) for p in peer.pids())
    seconds = run.duration + 2
    if perf_works() and os.environ.get("SYSCALLS") != "strace":
        argv = ["perf", "stat", "-x,", "-o", out, "-e", "syscalls:sys_enter_*", "-p", pids,
                "--", "sleep", str(seconds)]
    else:
        argv = ["strace", "-c", "-f", "-o", out] + [a for p in peer.pids()
                                                      for a in ("-p", str(p))]
    tracer = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # perf starts its `sleep` once every counter is attached; strace is attached at once.
    if argv[0] == "perf" and not lib.wait_for(lambda: lib.children(tracer.pid), 30):
        raise SystemExit(f"perf did not attach to {peer.name}")
    rep = loadgen(run, [f"127.0.0.1:{peer.ports['sni']}"], requests, concurrency, [],
                  warmup=0)
    if argv[0] == "strace":
        tracer.send_signal(signal.SIGINT)
    tracer.wait(seconds + 30)
    counts = (lib.parse_perf_syscalls(out) if argv[0] == "perf"
              else lib.parse_strace_summary(out))
    n = max(rep["connections"], 1)
    for name, count in counts.items():
        run.record(f"sys:{name}", peer.name, count / n)
    run.record("sys_total", peer.name, sum(counts.values()) / n)
    run.record("sys_tool", peer.name, argv[0])
    print(f"syscalls      {peer.name}: {sum(counts.values()) / n:.2f} per connection "
          f"({argv[0]}, {n} connections)", flush=True)


# --- phase: HTTP Host routing -------------------------------------------------------------------

def phase_http(run):
    """HTTP Host routing through the same 1,000 names: tpt `http: true` (SPEC §12; the tpt
    row is skipped with a message until tpt accepts the key) against HAProxy."""
    be_ports = run.ports(run.backends)
    port_tpt, port_hap = run.ports(2)
    up = {f"up{k}": f"tcp://127.0.0.1:{p}" for k, p in enumerate(be_ports)}
    routes = exact_routes(run, lambda b: f"up{b}") + [(f"*{WILD_SUFFIX}", "up0")]
    text = peers.tpt_config([("http", {"listen": f'["127.0.0.1:{port_tpt}"]', "http": "true",
                                       "default": "ban", "maxclients": 20000,
                                       "sni": routes})], up)
    peers.start_loadgen_backend(run.procs, run.loadgen, "http-backend", be_ports, run.threads,
                                run.answer)
    rows = {"haproxy": http_haproxy(run, port_hap, be_ports)}
    ok, why = peers.tpt_accepts(run.tpt, text, run.work, "tpt-http")
    if ok:
        rows["tpt"] = peers.start_tpt(run.procs, "tpt", run.tpt, text, {"http": port_tpt})
    else:
        run.skip("http (tpt)", f"tpt -t rejects `http: true` (SPEC §12 not in this binary): "
                               f"{why}")
    entries = [(0 if n.endswith(WILD_SUFFIX) else backend_of(run, i), b"",
                lib.http_request_head(n)) for i, n in enumerate(run.names)]
    requests = os.path.join(run.work, "http.req")
    lib.write_requests(requests, entries)
    direct = ["direct"] if env_num("DIRECT", 1) else []
    for rep in range(run.repeat):
        for who in direct + rotate(sorted(rows), rep):
            peer = rows.get(who)
            targets = ([f"127.0.0.1:{peer.ports['http']}"] if peer else
                       [f"127.0.0.1:{p}" for p in be_ports])
            r = loadgen(run, targets, requests, env_num("SNI_CONCURRENCY", 64),
                        [peer] if peer else [])
            record_load(run, "http", who, r)
    run.procs.stop_all()


def http_haproxy(run, port, be_ports):
    """HAProxy routing by `req.hdr(host)` in tcp mode, waiting (inspect-delay) until the
    buffer holds an HTTP request (the predefined ACL HTTP)."""
    exact_map = os.path.join(run.work, "host-exact.map")
    with open(exact_map, "w") as f:
        f.writelines(f"{n} up{b}\n" for n, b in exact_routes(run, lambda b: b))
    cfg = "".join([peers.haproxy_global(run_maxconn(run), "auto"),
                   peers.haproxy_routed("http", port, "req.hdr(host)", "HTTP", exact_map,
                                        WILD_SUFFIX, "up0"),
                   peers.haproxy_backend("ban", "")] +
                  [peers.haproxy_backend(f"up{k}", f"127.0.0.1:{p}")
                   for k, p in enumerate(be_ports)])
    return peers.start_haproxy(run.procs, "haproxy", cfg, {"http": port})


# --- phase: CONNECT ----------------------------------------------------------------------------

def phase_connect(run):
    """tpt routing by SNI to squid with CONNECT {sni}:{port}, against a client doing that
    CONNECT to squid itself; then tpt's CONNECT listener against squid as the proxy."""
    backend_port, squid_port = run.ports(2)
    peers.start_loadgen_backend(run.procs, run.loadgen, "connect-backend", [backend_port],
                                run.threads, run.answer)
    squid = peers.start_squid(run.procs, "squid", squid_port, run.names,
                              env_num("SQUID_WORKERS", 2))
    target = f"127.0.0.1:{squid_port}"
    via_clients = hello_requests(run, os.path.join(run.work, "connect-via.req"),
                                 lambda n: lib.connect_prelude(f"{n}:{backend_port}"), 0)
    plain_hellos = hello_requests(run, os.path.join(run.work, "connect-plain.req"), backend=0)
    rows = {"squid": ([target], via_clients, None)}
    for who, binary in (("tpt", run.tpt), ("tpt-base", run.tpt_base)):
        if binary:
            peer = start_tpt_via_squid(run, who, binary, squid_port, backend_port)
            rows[f"{who}+squid"] = ([f"127.0.0.1:{peer.ports['sni']}"], plain_hellos, peer)
    # One connection at a time: the time a connection takes; CONNECT_CONCURRENCY at once: the
    # rate and the CPU per connection under load.
    loads = (("connect-serial", 1), ("connect", env_num("CONNECT_CONCURRENCY", 16)))
    for rep in range(run.repeat):
        for who in rotate(list(rows), rep):
            targets, requests, peer = rows[who]
            for prefix, c in loads:
                r = loadgen(run, targets, requests, c, [squid] + ([peer] if peer else []))
                run.record(f"{prefix}_squid_us", who, r["cpu_us"]["squid"])
                record_load(run, prefix, who, r, cpu_of=peer.name if peer else "squid")
    if "tpt" in run.profile:
        targets, requests, peer = rows["tpt+squid"]
        profiled(run, peer, "connect-serial", lambda: loadgen(run, targets, requests, 1))
    connect_listener(run, squid, backend_port, via_clients)
    run.procs.stop_all()


def start_tpt_via_squid(run, who, binary, squid_port, backend_port):
    port = run.ports(1)[0]
    routes = [(n, "squid") for n in run.names if not n.endswith(WILD_SUFFIX)]
    routes.append((f"*{WILD_SUFFIX}", "squid"))
    text = peers.tpt_config(
        [("sni", {"listen": f'["127.0.0.1:{port}"]', "tls": "true", "default": "ban",
                  "maxclients": 20000,
                  "via": f"{{ use_sni_as_target: true, target_port: {backend_port} }}",
                  "sni": routes})],
        {"squid": f"tcp://127.0.0.1:{squid_port}"})
    return peers.start_tpt(run.procs, who, binary, text, {"sni": port})


def connect_listener(run, squid, backend_port, requests):
    """SPEC §12 accept_connect: tpt as the explicit proxy, against squid in the same role."""
    port = run.ports(1)[0]
    routes = exact_routes(run, lambda b: "backend") + [(f"*{WILD_SUFFIX}", "backend")]
    text = peers.tpt_config([("explicit", {"listen": f'["127.0.0.1:{port}"]',
                                           "accept_connect": "true", "default": "ban",
                                           "maxclients": 20000, "sni": routes})],
                            {"backend": f"tcp://127.0.0.1:{backend_port}"})
    ok, why = peers.tpt_accepts(run.tpt, text, run.work, "tpt-listener")
    if not ok:
        run.skip("connect-listener",
                 f"tpt -t rejects `accept_connect: true` (SPEC §12 not in this binary): {why}")
        return
    tpt = peers.start_tpt(run.procs, "tpt-listener", run.tpt, text, {"connect": port})
    c = env_num("CONNECT_CONCURRENCY", 16)
    for rep in range(run.repeat):
        for peer in rotate([tpt, squid], rep):
            r = loadgen(run, [f"127.0.0.1:{peer.ports['connect']}"], requests, c, [peer])
            record_load(run, "listener", "tpt" if peer is tpt else "squid", r, cpu_of=peer.name)


# --- phase: reload at scale -------------------------------------------------------------------

def reload_configs(run, port, admin_port, be_ports, log):
    """Two configs of RELOAD_ROUTES exact routes (+ the wildcard) that differ in the last
    route's upstream, so that each reload changes the server as an edit would."""
    n = env_num("RELOAD_ROUTES", 10000)
    names = [f"app{i:04d}.bench.example" for i in range(n)]
    up = {f"up{k}": f"tcp://127.0.0.1:{p}" for k, p in enumerate(be_ports)}
    texts = []
    for flip in (0, 1):
        routes = [(name, f"up{(i + (flip if i == n - 1 else 0)) % len(be_ports)}")
                  for i, name in enumerate(names)]
        routes.append((f"*{WILD_SUFFIX}", "up0"))
        text = peers.tpt_config([("sni", {"listen": f'["127.0.0.1:{port}"]', "tls": "true",
                                          "default": "ban", "maxclients": 20000,
                                          "sni": routes})], up, admin=f"127.0.0.1:{admin_port}")
        texts.append(text.replace("log: warn", f"log: {log}"))
    return texts


def post_reload(admin_port, path, text):
    """Replaces the config and POSTs /reload; returns (seconds to the answer, status)."""
    with open(path, "w") as f:
        f.write(text)
    conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=30)
    try:
        t0 = time.perf_counter()
        conn.request("POST", "/reload")
        resp = conn.getresponse()
        resp.read()
        return time.perf_counter() - t0, resp.status
    finally:
        conn.close()


def phase_reload(run):
    be_ports = run.ports(run.backends)
    peers.start_loadgen_backend(run.procs, run.loadgen, "reload-backend", be_ports, run.threads,
                                run.answer)
    reload_timing(run, be_ports)
    reload_latency(run, be_ports)
    run.procs.stop_all()


def reload_timing(run, be_ports):
    """POST /reload to the answer, RELOADS times on an idle tpt with info logs; and tpt's CPU
    per reload (all threads; the workers are idle meanwhile)."""
    port, admin_port = run.ports(2)
    texts = reload_configs(run, port, admin_port, be_ports, "info")
    tpt = peers.start_tpt(run.procs, "tpt-reload-timing", run.tpt, texts[0],
                          {"sni": port, "admin": admin_port})
    path = os.path.join(run.work, "tpt-reload-timing.yaml")
    count = env_num("RELOADS", 20)
    cpu0 = tpt.cpu()
    for k in range(count):
        seconds, status = post_reload(admin_port, path, texts[(k + 1) % 2])
        if status != 200:
            raise SystemExit(f"POST /reload answered {status}:\n{run.procs.log_text(tpt.name)}")
        run.record("reload_ms", "tpt", seconds * 1e3)
    run.record("reload_cpu_ms", "tpt", (tpt.cpu() - cpu0) * 1e3 / count)
    if "tpt" in run.profile:
        profiled(run, tpt, "reload", lambda: [post_reload(admin_port, path, texts[k % 2])
                                              for k in range(count)])
    timed = report.reload_log_timings(run.procs.log_text(tpt.name))
    for ms in timed:
        run.record("reload_log_ms", "tpt", ms)
    print(f"reload        {count} POST /reload of {env_num('RELOAD_ROUTES', 10000)} routes; "
          f"timings in the log line: {timed or 'none'}", flush=True)
    run.procs.stop(tpt.proc)


def reload_latency(run, be_ports):
    """New-connection latency at a fixed rate, without reloads and with one POST /reload per
    second, alternating in one run."""
    port, admin_port = run.ports(2)
    texts = reload_configs(run, port, admin_port, be_ports, "warn")
    tpt = peers.start_tpt(run.procs, "tpt-reload", run.tpt, texts[0],
                          {"sni": port, "admin": admin_port})
    path = os.path.join(run.work, "tpt-reload.yaml")
    requests = hello_requests(run, os.path.join(run.work, "reload.req"))
    rate = env_num("RELOAD_RATE", 2000.0)
    for rep in range(run.repeat):
        for mode in rotate(["quiet", "reloading"], rep):
            stop = threading.Event()
            reloader = threading.Thread(target=reload_every_second,
                                        args=(admin_port, path, texts, stop))
            if mode == "reloading":
                reloader.start()
            try:
                r = loadgen(run, [f"127.0.0.1:{port}"], requests, 256, [tpt], rate=rate)
            finally:
                stop.set()
                if reloader.is_alive():
                    reloader.join()
            record_load(run, f"reload-{mode}", "tpt", r, cpu_of="tpt-reload")
    run.procs.stop(tpt.proc)


def reload_every_second(admin_port, path, texts, stop):
    k = 0
    while not stop.wait(1.0):
        k += 1
        post_reload(admin_port, path, texts[k % 2])


# --- phase: captured vs explicit path -----------------------------------------------------------

CAPTURE_ADDR = "10.77.0.1"  # the "remote" server's address inside the namespace (on lo)
CAPTURE_UID = 65532


def capture_config(run):
    routes_orig = exact_routes(run, lambda b: "original") + [(f"*{WILD_SUFFIX}", "original")]
    routes_target = exact_routes(run, lambda b: "target") + [(f"*{WILD_SUFFIX}", "target")]
    return peers.tpt_config(
        [("captured", {"listen": '["127.0.0.1:15001"]', "transparent": "true", "tls": "true",
                       "default": "ban", "maxclients": 20000, "sni": routes_orig}),
         ("explicit", {"listen": '["127.0.0.1:15002"]', "tls": "true", "default": "ban",
                       "maxclients": 20000, "sni": routes_target})],
        {"target": f"tcp://{CAPTURE_ADDR}:8443"})


def phase_capture(run):
    text = capture_config(run)
    ok, why = peers.tpt_accepts(run.tpt, text, run.work, "tpt-capture")
    if ok:
        out = subprocess.run([run.tpt, "capture", "--ports", "8443", "--to", "15001", "--uid",
                              str(CAPTURE_UID), "--print"], capture_output=True, text=True)
        ok, why = out.returncode == 0, peers.first_line(out.stderr + out.stdout)
    if not ok:
        run.skip("capture", f"tpt has no transparent listener or `tpt capture` (SPEC §11 not "
                            f"in this binary): {why}")
        return
    inside = subprocess.run(["unshare", "-n", sys.executable, os.path.abspath(__file__),
                             "--capture-inside", run.work])
    if inside.returncode != 0:
        raise SystemExit("the capture phase failed inside its network namespace")


def capture_inside(run):
    """In a fresh network namespace: lo up with CAPTURE_ADDR, the backend there, tpt as
    CAPTURE_UID (its own connections are not captured), `tpt capture --apply`."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "addr", "add", f"{CAPTURE_ADDR}/32", "dev", "lo"], check=True)
    peers.start_loadgen_backend(run.procs, run.loadgen, "capture-backend", [8443], run.threads,
                                run.answer, host=CAPTURE_ADDR)
    path = os.path.join(run.work, "tpt-capture.yaml")
    with open(path, "w") as f:
        f.write(capture_config(run))
    os.chmod(path, 0o644)
    proc = run.procs.start("tpt-capture", ["setpriv", f"--reuid={CAPTURE_UID}",
                                           f"--regid={CAPTURE_UID}", "--clear-groups",
                                           run.tpt, "-c", path])
    run.procs.wait_listening(proc, [15001, 15002])
    tpt = peers.Peer("tpt-capture", proc, {})
    subprocess.run([run.tpt, "capture", "--ports", "8443", "--to", "15001", "--uid",
                    str(CAPTURE_UID), "--apply"], check=True)
    requests = hello_requests(run, os.path.join(run.work, "capture.req"), backend=0)
    rows = {"captured": f"{CAPTURE_ADDR}:8443", "explicit": "127.0.0.1:15002"}
    for rep in range(run.repeat):
        for who in rotate(list(rows), rep):
            r = loadgen(run, [rows[who]], requests, env_num("SNI_CONCURRENCY", 64), [tpt])
            record_load(run, "capture", who, r, cpu_of="tpt-capture")
    run.procs.stop_all()


# --- the run ----------------------------------------------------------------------------------

PHASES = [(("rss", "iperf", "wrk", "sni", "syscalls"), phase_main), (("http",), phase_http),
          (("connect",), phase_connect), (("reload",), phase_reload),
          (("capture",), phase_capture)]


def main(argv):
    if len(argv) == 3 and argv[1] == "--capture-inside":
        run = Run(argv[2])
        try:
            capture_inside(run)
        finally:
            run.procs.stop_all()
        return 0
    work = tempfile.mkdtemp(prefix="tpt-bench.")
    os.chmod(work, 0o755)  # nginx workers run as nobody, squid as proxy, tpt as 65532
    run = Run(work)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load_start = open("/proc/loadavg").read().split()[:3]
    try:
        for tests, phase in PHASES:
            if run.want(*tests):
                phase(run)
        report.print_report(run.results, {
            "load_start": " ".join(load_start),
            "load_end": " ".join(open("/proc/loadavg").read().split()[:3]),
            "tpt": run.tpt, "tpt_base": run.tpt_base, "duration": run.duration,
            "repeat": run.repeat, "tunnels": env_num("TUNNELS", 9000)})
    finally:
        run.procs.stop_all()
        if os.environ.get("KEEP") == "1":
            print(f"raw outputs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
