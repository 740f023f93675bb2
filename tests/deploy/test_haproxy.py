"""The HAProxy TLS example deploy/haproxy-tls.cfg: `haproxy -c` accepts it with a certificate
made here by openssl, and the same file, its listeners moved to loopback, terminates TLS in
front of the real gateway for WebSockets, SSE streams and their POSTed frames, and forwards
the client address in X-Forwarded-For (spoofed values dropped)."""

from __future__ import annotations

import base64
import hashlib
import http.client
import http.server
import json
import os
import re
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from conftest import REPO, TEST_JWT_SECRET, free_port, gateway, stop

CONFIG = REPO / "deploy" / "haproxy-tls.cfg"
INSTALLED_CERT = "/etc/haproxy/certs/fanout.pem"
API_KEY = "deploy-test-key"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost: (HAProxy's PEM bundle, the CA file)."""
    tmp = tmp_path_factory.mktemp("tls")
    key, cert = tmp / "key.pem", tmp / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", key, "-out", cert, "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    bundle = tmp / "fanout.pem"
    bundle.write_text(cert.read_text() + key.read_text())
    return bundle, cert


def loopback_config(bundle: Path, https_port: int, http_port: int, servers: list[int]) -> str:
    """The shipped configuration with its listeners on loopback ports, the test certificate,
    a smaller connection limit, and the given loopback servers in place of the example nodes."""
    text = CONFIG.read_text().replace(INSTALLED_CERT, str(bundle))
    # maxconn 100000 needs twice as many file descriptors as a test machine may grant.
    text, maxconns = re.subn(r"^(\s*maxconn) \d+$", r"\1 1000", text, flags=re.M)
    text, https_binds = re.subn(r"^(\s*bind) :443 ", rf"\1 127.0.0.1:{https_port} ", text, flags=re.M)
    text, http_binds = re.subn(r"^(\s*bind) :80$", rf"\1 127.0.0.1:{http_port}", text, flags=re.M)
    text, example_servers = re.subn(r"^\s*server .*\n", "", text, flags=re.M)
    assert (https_binds, http_binds, maxconns) == (1, 1, 1) and example_servers >= 1
    nodes = "".join(f"    server node{i} 127.0.0.1:{port} check inter 200ms\n" for i, port in enumerate(servers))
    return text.rstrip("\n") + "\n" + nodes


@contextmanager
def haproxy(tmp_path: Path, bundle: Path, servers: list[int]) -> Iterator[tuple[int, int]]:
    """HAProxy running the loopback form of the example; yields (https port, http port) once
    it answers /readyz through TLS."""
    https_port, http_port = free_port(), free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(loopback_config(bundle, https_port, http_port, servers))
    log = open(tmp_path / "haproxy.log", "wb")
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, (tmp_path / "haproxy.log").read_text()
            try:
                if https_get(https_port, bundle.parent / "cert.pem", "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "HAProxy did not route /readyz within 20 s"
            time.sleep(0.2)
        yield https_port, http_port
    finally:
        stop(proc)
        log.close()


def tls_context(ca: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["http/1.1"])
    return context


def https_get(port: int, ca: Path, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPSConnection("localhost", port, context=tls_context(ca), timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def https_post(port: int, ca: Path, path: str, body: dict, bearer: str) -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection("localhost", port, context=tls_context(ca), timeout=5)
    try:
        conn.request("POST", path, body=json.dumps(body),
                     headers={"content-type": "application/json", "authorization": f"Bearer {bearer}"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def mint_token(fanout_bin: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FANOUT_")}
    result = subprocess.run([fanout_bin, "token", "--sub", "42", "--channels", "room:*", "--ttl", "10m"],
                            env=env | {"FANOUT_JWT_SECRET": TEST_JWT_SECRET},
                            capture_output=True, text=True, timeout=30, check=True)
    return result.stdout.strip()


def read_sse_event(response: http.client.HTTPResponse, event_type: str) -> dict:
    """Reads the stream until an event of `event_type`; returns its data (bounded by the
    socket timeout and a line count)."""
    current = None
    for _ in range(200):
        line = response.readline().decode().rstrip("\n")
        if line.startswith("event: "):
            current = line[len("event: "):]
        elif line.startswith("data: ") and current == event_type:
            return json.loads(line[len("data: "):])
    raise AssertionError(f"no {event_type} event on the stream")


def test_haproxy_accepts_the_tls_example(certificate, tmp_path):
    bundle, _ = certificate
    config = tmp_path / "haproxy-tls.cfg"
    config.write_text(CONFIG.read_text().replace(INSTALLED_CERT, str(bundle)))
    result = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    # The example's node names do not resolve here; nothing else may be warned about.
    warnings = [line for line in (result.stdout + result.stderr).splitlines()
                if "WARNING" in line and "could not resolve address" not in line]
    assert not warnings, warnings


def test_websocket_and_sse_through_tls(certificate, fanout_bin, tmp_path):
    bundle, ca = certificate
    token = mint_token(fanout_bin)
    with gateway(fanout_bin, tmp_path) as base, \
            haproxy(tmp_path, bundle, [int(base.rsplit(":", 1)[1])]) as (https_port, http_port):
        # Plain HTTP is redirected to HTTPS.
        plain = http.client.HTTPConnection("127.0.0.1", http_port, timeout=5)
        plain.request("GET", "/ws")
        redirect = plain.getresponse()
        assert redirect.status == 301 and redirect.getheader("location").startswith("https://")
        plain.close()

        # WebSocket: the upgrade passes TLS termination and the session starts.
        key = base64.b64encode(os.urandom(16)).decode()
        with socket.create_connection(("127.0.0.1", https_port), timeout=5) as raw, \
                tls_context(ca).wrap_socket(raw, server_hostname="localhost") as ws:
            ws.sendall((f"GET /ws?token={token} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 8192:
                head += ws.recv(1)
            status_line, *header_lines = head.decode().strip().split("\r\n")
            assert status_line.split()[1] == "101", head
            headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
            accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
            assert headers["sec-websocket-accept"] == accept
            first, length = ws.recv(2)
            assert first == 0x81, "a final text frame"
            if length == 126:
                length = int.from_bytes(ws.recv(2), "big")
            payload = b""
            while len(payload) < length:
                payload += ws.recv(length - len(payload))
            assert json.loads(payload)["type"] == "connection_ack"

        # SSE: a long-lived stream through TLS, a publish reaching it, a POSTed frame answered on it.
        query = urllib.parse.urlencode({"token": token, "channel": "room:lobby"})
        stream = http.client.HTTPSConnection("localhost", https_port, context=tls_context(ca), timeout=10)
        try:
            stream.request("GET", f"/sse?{query}")
            response = stream.getresponse()
            assert response.status == 200
            assert response.getheader("content-type").startswith("text/event-stream")
            conn_id = read_sse_event(response, "connection_ack")["conn_id"]
            read_sse_event(response, "subscribed")

            status, _ = https_post(https_port, ca, "/api/publish",
                                   {"channel": "room:lobby", "data": {"type": "hello-through-tls"}}, API_KEY)
            assert status == 200
            assert read_sse_event(response, "message")["data"] == {"type": "hello-through-tls"}

            status, body = https_post(https_port, ca, f"/sse/frames?conn_id={conn_id}",
                                      {"type": "ping", "id": 7}, token)
            assert status == 202, body
            assert read_sse_event(response, "pong")["id"] == 7
        finally:
            stream.close()


class _HeaderRecorder(http.server.BaseHTTPRequestHandler):
    """A backend that answers 200 and keeps the headers of every request but health checks."""

    seen: list[dict] = []

    def do_GET(self):  # noqa: N802 (the standard library's name)
        if self.path != "/readyz":
            type(self).seen.append({k.lower(): v for k, v in self.headers.items()})
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_client_address_is_forwarded_and_spoofing_dropped(certificate, tmp_path):
    bundle, ca = certificate
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HeaderRecorder)
    thread = threading.Thread(target=backend.serve_forever, daemon=True)
    thread.start()
    try:
        with haproxy(tmp_path, bundle, [backend.server_address[1]]) as (https_port, _):
            _HeaderRecorder.seen.clear()
            status, _, _ = https_get(https_port, ca, "/api/presence?channel=room:lobby",
                                     headers={"X-Forwarded-For": "203.0.113.9"})
            assert status == 200
    finally:
        backend.shutdown()
        thread.join(timeout=10)
    (request,) = _HeaderRecorder.seen
    assert request["x-forwarded-for"] == "127.0.0.1"
    assert request["x-forwarded-proto"] == "https"


def tls_websocket_ack(port: int, ca: Path, path: str) -> dict:
    """Opens a WebSocket through TLS on `path` and returns its first frame (connection_ack)."""
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            tls_context(ca).wrap_socket(raw, server_hostname="localhost") as ws:
        ws.sendall((f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 8192:
            head += ws.recv(1)
        assert head.split()[1] == b"101", head
        first, length = ws.recv(2)
        assert first == 0x81
        if length == 126:
            length = int.from_bytes(ws.recv(2), "big")
        payload = b""
        while len(payload) < length:
            payload += ws.recv(length - len(payload))
        return json.loads(payload)


def test_the_access_log_keeps_no_token_or_ticket(certificate, fanout_bin, tmp_path):
    """Old clients put their token in the URL (`/ws?token=`, `/sse?token=`,
    `/sse/frames?token=`), new ones a single-use ticket (`/sse?ticket=`): HAProxy with the
    shipped configuration logs every one of those requests, and none of those credentials."""
    bundle, ca = certificate
    token = mint_token(fanout_bin)
    # Heartbeats every second: HAProxy notices a closed stream when it next writes to it.
    with gateway(fanout_bin, tmp_path, "--heartbeat-s", "1") as base, \
            haproxy(tmp_path, bundle, [int(base.rsplit(":", 1)[1])]) as (https_port, _):
        assert tls_websocket_ack(https_port, ca, f"/ws?token={token}")["type"] == "connection_ack"

        conn = http.client.HTTPSConnection("localhost", https_port, context=tls_context(ca), timeout=10)
        conn.request("POST", "/sse/ticket", headers={"authorization": f"Bearer {token}"})
        answer = conn.getresponse()
        assert answer.status == 200
        ticket = json.loads(answer.read())["ticket"]
        conn.close()

        streams = []
        for query in (f"ticket={ticket}", f"token={token}"):
            stream = http.client.HTTPSConnection("localhost", https_port, context=tls_context(ca), timeout=10)
            stream.request("GET", f"/sse?{query}&channel=room:lobby")
            response = stream.getresponse()
            assert response.status == 200, response.read()
            streams.append((stream, response, read_sse_event(response, "connection_ack")["conn_id"]))
        frames = http.client.HTTPSConnection("localhost", https_port, context=tls_context(ca), timeout=10)
        frames.request("POST", f"/sse/frames?conn_id={streams[1][2]}&token={token}", body='{"type":"ping"}')
        assert frames.getresponse().status == 202
        frames.close()
        for stream, response, _ in streams:
            response.close()
            stream.close()
        # A stream is logged when it ends: give HAProxy the moment it takes to see it end.
        deadline = time.monotonic() + 15
        while (tmp_path / "haproxy.log").read_text().count("GET /sse") < 2:
            assert time.monotonic() < deadline, (tmp_path / "haproxy.log").read_text()
            time.sleep(0.1)
    log = (tmp_path / "haproxy.log").read_text()
    for secret in (token, ticket, "token=", "ticket="):
        assert secret not in log, f"the access log holds {secret[:12]!r}…:\n{log}"
    for path in ("GET /ws ", "POST /sse/ticket ", "GET /sse ", "POST /sse/frames "):
        assert path in log, f"{path!r} is not logged:\n{log}"
