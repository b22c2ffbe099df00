#!/usr/bin/python3
"""Capture real TLS ClientHellos into tests/data/hello/*.bin.

How the captures were made: a TCP listener on 127.0.0.1 (port chosen by the kernel) accepts one
connection, records the bytes until the TLS record framing says a whole ClientHello has arrived
(RFC 8446 §5.1 records of type 22 carrying the handshake message), writes them to
<name>.bin and closes the connection; the client then fails its handshake, which is expected.
The clients are the openssl, curl and Python ssl found on the machine.

Run from anywhere with Debian's python:  /usr/bin/python3 tests/data/hello/capture.py
Each hello contains fresh random bytes and key shares, so re-running changes the files but not
what the tests expect of them (the SNI and the framing).
"""

import os
import socket
import ssl
import subprocess
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
MAX_CAPTURE = 128 * 1024  # more than any hello made here; a bound for the listener
TIMEOUT = 10.0

# ALPN protocol names are at most 255 bytes (RFC 7301 §3.1); repeating a long one grows the
# hello past one Ethernet MTU (and, with enough of them, past the parser's 16 KiB limit).
LONG_PROTO = "x" * 200


def alpn_list(count):
    return ",".join(f"{LONG_PROTO}{i:02d}" for i in range(count))


def hello_complete(data):
    """True once data holds whole records carrying a whole handshake message."""
    payload = bytearray()
    pos = 0
    while pos + 5 <= len(data):
        if data[pos] != 22:
            return True  # not a handshake record: nothing more to wait for
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        if pos + 5 + length > len(data):
            return False
        payload += data[pos + 5 : pos + 5 + length]
        pos += 5 + length
        if len(payload) >= 4 and len(payload) >= 4 + int.from_bytes(payload[1:4], "big"):
            return True
    return False


class Listener:
    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.sock.settimeout(TIMEOUT)
        self.port = self.sock.getsockname()[1]
        self.data = b""
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self):
        try:
            conn, _ = self.sock.accept()
        except socket.timeout:
            return
        with conn:
            conn.settimeout(TIMEOUT)
            data = b""
            while len(data) < MAX_CAPTURE and not hello_complete(data):
                try:
                    chunk = conn.recv(65536)
                except socket.timeout:
                    break
                if not chunk:
                    break
                data += chunk
            self.data = data

    def finish(self):
        self.thread.join(TIMEOUT + 1)
        self.sock.close()
        return self.data


def run_openssl(port, args):
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}"] + args
    subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=TIMEOUT, check=False)


def run_curl(port, host):
    cmd = ["curl", "-sk", "-m", str(int(TIMEOUT)), "--resolve", f"{host}:{port}:127.0.0.1",
           f"https://{host}:{port}/"]
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=TIMEOUT + 1, check=False)


def run_python(port, server_hostname):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname=server_hostname):
                pass
        except (ssl.SSLError, OSError):
            pass  # the listener hangs up after the hello


CAPTURES = {
    "openssl_tls12_sni": lambda p: run_openssl(p, ["-tls1_2", "-servername", "tls12.example.com"]),
    # Mixed case on purpose: the parser lower-cases.
    "openssl_tls13_sni": lambda p: run_openssl(p, ["-tls1_3", "-servername", "TLS13.Example.COM"]),
    "openssl_tls13_nosni": lambda p: run_openssl(p, ["-tls1_3", "-noservername"]),
    "openssl_tls12_nosni": lambda p: run_openssl(p, ["-tls1_2", "-noservername"]),
    "python_sni": lambda p: run_python(p, "python.example.org"),
    "python_nosni": lambda p: run_python(p, None),
    "curl_sni": lambda p: run_curl(p, "curl.example.net"),
    # About 2.2 KB: more than one Ethernet MTU, one record.
    "openssl_large_alpn": lambda p: run_openssl(
        p, ["-servername", "large.example.com", "-alpn", alpn_list(10)]),
    # The same kind of hello cut by OpenSSL into records of at most 512 bytes.
    "openssl_multi_record": lambda p: run_openssl(
        p, ["-servername", "records.example.com", "-max_send_frag", "512", "-alpn",
            alpn_list(10)]),
    # About 20 KB: more than one record of 2^14 bytes and more than the 16 KiB limit.
    "openssl_too_large": lambda p: run_openssl(
        p, ["-servername", "huge.example.com", "-alpn", alpn_list(95)]),
}


def main():
    names = sys.argv[1:] or list(CAPTURES)
    for name in names:
        listener = Listener()
        CAPTURES[name](listener.port)
        data = listener.finish()
        if not hello_complete(data):
            print(f"{name}: no whole hello captured ({len(data)} bytes)", file=sys.stderr)
            return 1
        with open(os.path.join(HERE, f"{name}.bin"), "wb") as f:
            f.write(data)
        print(f"{name}: {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
