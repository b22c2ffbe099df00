"""Real peers for black-box tests of tpt: a throw-away PKI made with the `openssl` CLI, a
threaded TLS server (Python `ssl`) that records the SNI each handshake carried, and a threaded
plain TCP server whose per-connection behaviour is a handler function (echo, record, sink and
source). Every server binds port 0 on a loopback address (or, when a test must reuse one, the
port it is given) and is stopped by close(), which joins every thread it started."""
import hashlib
import socket
import ssl
import subprocess
import threading
from pathlib import Path

IO_TIMEOUT = 60.0  # per socket operation inside the peers; a bound, not a synchronisation


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=60)


class Pki:
    """A self-signed CA in `directory` and server certificates signed by it (EC P-256)."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca_cert = self.dir / "ca.pem"
        self.ca_key = self.dir / "ca.key"
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", str(self.ca_key), "-out", str(self.ca_cert), "-days", "2",
                 "-subj", "/CN=tpt e2e test CA", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=self.dir)
        self._certs = {}
        self._lock = threading.Lock()

    def server_cert(self, names):
        """(cert_path, key_path) valid for every DNS name in names, plus localhost/127.0.0.1/::1.
        Made once per distinct set of names."""
        key = tuple(sorted({n.lower() for n in names}))
        with self._lock:
            if key in self._certs:
                return self._certs[key]
            stem = self.dir / f"server{len(self._certs)}"
            sans = ",".join([f"DNS:{n}" for n in key] +
                            ["DNS:localhost", "IP:127.0.0.1", "IP:::1"])
            ext = stem.with_suffix(".ext")
            ext.write_text(f"subjectAltName={sans}\nbasicConstraints=CA:FALSE\n"
                           "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")
            _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                     "-nodes", "-keyout", str(stem.with_suffix(".key")),
                     "-out", str(stem.with_suffix(".csr")), "-subj", "/CN=tpt e2e server",
                     cwd=self.dir)
            _openssl("x509", "-req", "-in", str(stem.with_suffix(".csr")),
                     "-CA", str(self.ca_cert), "-CAkey", str(self.ca_key), "-CAcreateserial",
                     "-days", "2", "-extfile", str(ext), "-out", str(stem.with_suffix(".pem")),
                     cwd=self.dir)
            self._certs[key] = (stem.with_suffix(".pem"), stem.with_suffix(".key"))
            return self._certs[key]

    def client_context(self, check_hostname=True):
        """A TLS client context that trusts only this CA."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cafile=str(self.ca_cert))
        ctx.check_hostname = check_hostname
        return ctx


class _ThreadedServer:
    """Accept loop on its own thread, one thread per connection; close() stops and joins all.
    port 0 (the default) takes whatever port the kernel gives; SO_REUSEADDR lets a server bind
    a port that an earlier, closed server left connections in TIME_WAIT on."""

    def __init__(self, host="127.0.0.1", backlog=256, port=0):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.host = host
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.accepted = 0
        self.results = []  # one entry per finished connection, as the subclass defines it
        self.errors = []
        self._conns = set()
        self._threads = []
        self._closing = False
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self._acceptor.start()

    @property
    def url_host(self):
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def address(self):
        """host:port as tpt's `upstream` URLs and listen keys write it."""
        return f"{self.url_host}:{self.port}"

    def _accept_loop(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                if self._closing:
                    conn.close()
                    return
                self.accepted += 1
                self._conns.add(conn)
                t = threading.Thread(target=self._run_conn, args=(conn,), daemon=True)
                self._threads.append(t)
            t.start()

    def _run_conn(self, conn):
        try:
            conn.settimeout(IO_TIMEOUT)
            result = self.serve(conn)
            if result is not None:
                with self.lock:
                    self.results.append(result)
        except Exception as exc:  # noqa: BLE001 - recorded for the test to inspect
            with self.lock:
                self.errors.append(exc)
        finally:
            with self.lock:
                self._conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    def serve(self, conn):
        raise NotImplementedError

    def result_count(self):
        with self.lock:
            return len(self.results)

    def close(self):
        with self.lock:
            self._closing = True
            conns = list(self._conns)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for c in conns:  # unblock handlers still waiting on their peer
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._acceptor.join(10)
        with self.lock:
            threads = list(self._threads)
        for t in threads:
            t.join(10)


def recv_head(sock, limit=65536):
    """Reads an HTTP head (through its blank line, or `limit` bytes, or EOF); returns it."""
    head = b""
    while b"\r\n\r\n" not in head and len(head) < limit:
        data = sock.recv(65536)
        if not data:
            break
        head += data
    return head


def recv_all(sock, limit=None):
    """Reads until EOF (or `limit` bytes); returns the bytes."""
    chunks = []
    total = 0
    while limit is None or total < limit:
        data = sock.recv(65536 if limit is None else min(65536, limit - total))
        if not data:
            break
        chunks.append(data)
        total += len(data)
    return b"".join(chunks)


class TlsServer(_ThreadedServer):
    """A TLS server named `name`. For each handshake it records the SNI the client sent (as the
    sni_callback saw it; None without SNI). After the handshake: a request starting with
    `GET ` is answered with HTTP/1.1 200 and the body `upstream=<name> sni=<sni>`, then the
    connection is closed; any other bytes are echoed until the client's EOF.
    results: dicts {sni, version, echoed} per completed handshake."""

    def __init__(self, pki, name, names=(), host="127.0.0.1", port=0):
        self.name = name
        self.snis = []
        cert, key = pki.server_cert(list(names) + [name])
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(cert), str(key))
        self.ctx.sni_callback = self._on_sni
        self._tls_local = threading.local()
        super().__init__(host, port=port)

    def _on_sni(self, sslobj, server_name, ctx):
        self._tls_local.sni = server_name
        with self.lock:
            self.snis.append(server_name)

    def body_for(self, sni):
        return f"upstream={self.name} sni={sni}".encode()

    def serve(self, conn):
        self._tls_local.sni = None
        tls = self.ctx.wrap_socket(conn, server_side=True)
        sni = self._tls_local.sni
        try:
            first = tls.recv(65536)
            echoed = 0
            if first.startswith(b"GET "):
                head = first
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    more = tls.recv(65536)
                    if not more:
                        break
                    head += more
                body = self.body_for(sni)
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                            b"Content-Length: " + str(len(body)).encode() +
                            b"\r\nConnection: close\r\n\r\n" + body)
            else:
                data = first
                while data:
                    tls.sendall(data)
                    echoed += len(data)
                    data = tls.recv(65536)
            version = tls.version()
            try:
                tls.unwrap()  # close_notify, so clients see a clean end
            except (ssl.SSLError, OSError):
                pass
            return {"sni": sni, "version": version, "echoed": echoed}
        finally:
            tls.close()


class TcpServer(_ThreadedServer):
    """A plain TCP server running handler(conn) -> result for every connection."""

    def __init__(self, handler, host="127.0.0.1"):
        self.handler = handler
        super().__init__(host)

    def serve(self, conn):
        return self.handler(conn)


def echo_handler(conn):
    """Echo until EOF, then close. Result: the number of bytes echoed."""
    total = 0
    while True:
        data = conn.recv(65536)
        if not data:
            return total
        conn.sendall(data)
        total += len(data)


def record_then_reply(reply=b""):
    """Read everything until the client's EOF, then send `reply` and close.
    Result: the bytes received."""

    def handler(conn):
        data = recv_all(conn)
        if reply:
            conn.sendall(reply)
        return data

    return handler


def sink_and_source(payload):
    """Send `payload` while reading until EOF, both at once; half-close after sending.
    Result: {"received": n, "sha256": hex of the bytes received}."""

    def handler(conn):
        send_error = []

        def send():
            try:
                conn.sendall(payload)
                conn.shutdown(socket.SHUT_WR)
            except OSError as exc:
                send_error.append(exc)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        digest = hashlib.sha256()
        received = 0
        while True:
            data = conn.recv(1 << 20)
            if not data:
                break
            digest.update(data)
            received += len(data)
        sender.join(IO_TIMEOUT)
        if send_error:
            raise send_error[0]
        return {"received": received, "sha256": digest.hexdigest()}

    return handler


def client_hello(sni, alpn=None):
    """The bytes of a real ClientHello as Python's OpenSSL writes it for sni (None: no SNI);
    alpn: protocol names to offer (long lists make hellos larger than one MTU)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass  # it waits for a ServerHello that never comes; the hello is written by now
    hello = outgoing.read()
    assert hello[:1] == b"\x16", "not a TLS handshake record"
    return hello
