"""A real Prometheus (the Debian `prometheus` binary) on loopback for the black-box tests.

    with PrometheusServer([("127.0.0.1:9901", {"pod": "tpt-0"})], tmp_path) as prom:
        prom.wait_target_up()
        prom.wait_for_data('tpt_build_info')
        result = prom.query('sum(rate(tpt_route_connections_total[1m]))')

Every scrape target is in one job (`tpt` unless told), scraped every second from
`/metrics`; rule files, when given, are evaluated every second too. The TSDB and the log live
in the given work directory; stop() (or leaving the `with`) ends the process.
"""
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from helpers import free_port

PROMETHEUS_BIN = os.environ.get("PROMETHEUS_BIN", "prometheus")


class PromQueryError(AssertionError):
    """Prometheus answered a query with status "error" (bad PromQL, bad parameters...)."""

    def __init__(self, expr, error_type, error):
        super().__init__(f"{error_type}: {error}\n  in: {expr}")
        self.expr = expr
        self.error_type = error_type
        self.error = error


def _poll(predicate, timeout, what, interval=0.1):
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, ValueError) as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                                 + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval)


def _yaml_str(s):
    # JSON strings are valid YAML flow scalars.
    return json.dumps(str(s))


class PrometheusServer:
    """targets: list of "host:port" or ("host:port", {extra target labels}).

    Extra labels stand in for what Kubernetes service discovery adds (namespace, pod).
    """

    def __init__(self, targets, workdir, job="tpt", rule_files=(), scrape_interval="1s",
                 metrics_path="/metrics", binary=None):
        self.targets = [(t, {}) if isinstance(t, str) else (t[0], dict(t[1])) for t in targets]
        self.workdir = Path(workdir)
        self.job = job
        self.rule_files = [Path(p) for p in rule_files]
        self.scrape_interval = scrape_interval
        self.metrics_path = metrics_path
        self.binary = binary or shutil.which(PROMETHEUS_BIN) or PROMETHEUS_BIN
        self.popen = None
        self.port = None
        self.url = None
        self.log_path = self.workdir / "prometheus.log"
        self._log = None

    # -- lifecycle ---------------------------------------------------------------------------

    def config_text(self):
        lines = [
            "global:",
            f"  scrape_interval: {self.scrape_interval}",
            f"  scrape_timeout: {self.scrape_interval}",
            f"  evaluation_interval: {self.scrape_interval}",
        ]
        if self.rule_files:
            lines.append("rule_files:")
            lines += [f"  - {_yaml_str(p)}" for p in self.rule_files]
        lines += [
            "scrape_configs:",
            f"  - job_name: {_yaml_str(self.job)}",
            f"    metrics_path: {_yaml_str(self.metrics_path)}",
            "    static_configs:",
        ]
        for address, labels in self.targets:
            lines.append(f"      - targets: [{_yaml_str(address)}]")
            if labels:
                lines.append("        labels:")
                lines += [f"          {k}: {_yaml_str(v)}" for k, v in labels.items()]
        return "\n".join(lines) + "\n"

    def start(self, timeout=30.0):
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(self.config_text())
        self._log = open(self.log_path, "ab")
        # free_port() keeps clear of the ports the kernel hands out, but another test run may
        # bind the same one first: then try the next.
        for _attempt in range(5):
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self.popen = subprocess.Popen(
                [self.binary,
                 f"--config.file={config}",
                 f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                 "--storage.tsdb.retention.time=1h",
                 f"--web.listen-address=127.0.0.1:{self.port}",
                 f"--web.console.templates={self.workdir}",
                 f"--web.console.libraries={self.workdir}",
                 "--log.level=info"],
                stdout=self._log, stderr=subprocess.STDOUT, cwd=self.workdir)
            try:
                _poll(self._ready, timeout, "prometheus /-/ready")
                return self
            except AssertionError:
                exited = self.popen.poll() is not None
                self._kill()
                if not (exited and "address already in use" in self.log_text()):
                    raise AssertionError("prometheus did not start:\n" + self.log_text()[-4000:])
        raise AssertionError("prometheus: no free port after 5 attempts")

    def _ready(self):
        if self.popen.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.popen.returncode}")
        with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as resp:
            return resp.status == 200

    def _kill(self):
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)

    def stop(self):
        self._kill()
        if self._log:
            self._log.close()
            self._log = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def log_text(self):
        if self._log:
            self._log.flush()
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- HTTP API ----------------------------------------------------------------------------

    def api(self, path, params=None, timeout=10.0):
        """GET /api/v1/<path>; returns the decoded JSON envelope (status success or error)."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as err:  # 400/422/503 carry a JSON error body
            body = err.read()
            try:
                return json.loads(body)
            except ValueError:
                raise AssertionError(f"GET {url}: HTTP {err.code}: {body[:500]!r}") from err

    def query_raw(self, expr, at=None):
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self.api("query", params)

    def query(self, expr, at=None):
        """Instant query; returns `data` ({resultType, result}) or raises PromQueryError."""
        answer = self.query_raw(expr, at)
        if answer.get("status") != "success":
            raise PromQueryError(expr, answer.get("errorType"), answer.get("error"))
        return answer["data"]

    def samples(self, expr):
        """Instant query as a list of (labels dict, float value); [] when there is no data."""
        data = self.query(expr)
        kind, result = data["resultType"], data["result"]
        if kind == "vector":
            return [(r["metric"], float(r["value"][1])) for r in result]
        if kind == "scalar":
            return [({}, float(result[1]))]
        if kind == "matrix":
            return [(r["metric"], float(r["values"][-1][1])) for r in result if r["values"]]
        return [({}, result[1])]

    def series(self, match):
        answer = self.api("series", {"match[]": match})
        if answer.get("status") != "success":
            raise PromQueryError(match, answer.get("errorType"), answer.get("error"))
        return answer["data"]

    def targets_state(self):
        return self.api("targets", {"state": "active"})["data"]["activeTargets"]

    def rules(self):
        return self.api("rules")["data"]["groups"]

    def alerts(self):
        return self.api("alerts")["data"]["alerts"]

    # -- waiting -----------------------------------------------------------------------------

    def wait_target_up(self, timeout=30.0, address=None):
        """Until every target (or the one at address) has been scraped with health "up"."""
        def up():
            targets = [t for t in self.targets_state()
                       if address is None or t["labels"].get("instance") == address]
            return targets and all(t["health"] == "up" for t in targets)
        return _poll(up, timeout, f"scrape target {address or 'all'} up; targets: "
                     + self._targets_summary())

    def _targets_summary(self):
        try:
            return ", ".join(f"{t['scrapeUrl']}={t['health']} {t['lastError']}".strip()
                             for t in self.targets_state())
        except (OSError, ValueError, KeyError) as exc:
            return repr(exc)

    def wait_for_data(self, expr, timeout=30.0, predicate=None):
        """Until the instant query returns at least one sample (passing predicate(value))."""
        def has():
            got = self.samples(expr)
            if predicate is not None:
                got = [s for s in got if predicate(s[1])]
            return got
        return _poll(has, timeout, f"data for {expr}")
