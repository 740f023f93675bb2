"""The nginx example deploy/nginx.conf: `nginx -t` accepts it, and the same file, moved to
loopback, proxies WebSockets, SSE streams, tickets and frames to the real gateway while its
access log keeps no token and no ticket (older clients put their token in the URL)."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from conftest import REPO, free_port, gateway, stop
from test_haproxy import mint_token

CONFIG = REPO / "deploy" / "nginx.conf"


def loopback_config(tmp_path: Path, port: int, servers: list[int]) -> str:
    """The shipped configuration listening on a loopback port, logging into tmp_path, with
    the given loopback servers in place of the example nodes."""
    text = CONFIG.read_text()
    text, logs = re.subn(r"access_log /var/log/nginx/fanout-access.log",
                         f"access_log {tmp_path}/access.log", text)
    text, listens = re.subn(r"^(\s*listen) 8080;$", rf"\1 127.0.0.1:{port};", text, flags=re.M)
    text, example_servers = re.subn(r"^\s*server fanout\d.*\n", "", text, flags=re.M)
    assert (logs, listens) == (1, 1) and example_servers >= 1
    nodes = "".join(f"        server 127.0.0.1:{p};\n" for p in servers)
    return text.replace("        least_conn;\n", "        least_conn;\n" + nodes)


@contextmanager
def nginx(tmp_path: Path, servers: list[int]) -> Iterator[int]:
    port = free_port()
    config = tmp_path / "nginx.conf"
    config.write_text(loopback_config(tmp_path, port, servers))
    globals_ = f"daemon off; pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;"
    check = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-c", str(config), "-g", globals_],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(["nginx", "-p", str(tmp_path), "-c", str(config), "-g", globals_],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, (tmp_path / "error.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not listen within 20 s"
                time.sleep(0.1)
        yield port
    finally:
        stop(proc)


def read_event(stream, event_type: str) -> dict:
    current = None
    for _ in range(200):
        line = stream.readline().decode().rstrip("\n")
        if line.startswith("event: "):
            current = line[len("event: "):]
        elif line.startswith("data: ") and current == event_type:
            return json.loads(line[len("data: "):])
    raise AssertionError(f"no {event_type} event")


def test_the_access_log_keeps_no_token_or_ticket(fanout_bin, tmp_path):
    token = mint_token(fanout_bin)
    with gateway(fanout_bin, tmp_path) as base, \
            nginx(tmp_path, [int(base.rsplit(":", 1)[1])]) as port:
        proxy = f"http://127.0.0.1:{port}"
        # WebSocket, token in the URL (an old client): upgraded through nginx.
        key = base64.b64encode(os.urandom(16)).decode()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as ws:
            ws.sendall((f"GET /ws?token={token} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
            head = b""
            while b"\r\n\r\n" not in head:
                head += ws.recv(1)
            assert head.split()[1] == b"101", head
        # SSE: a ticket, a stream with it and one with the token, a frame with the token.
        request = urllib.request.Request(f"{proxy}/sse/ticket", method="POST",
                                         headers={"authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=5) as r:
            ticket = json.loads(r.read())["ticket"]
        conn_ids = []
        for query in (f"ticket={ticket}", f"token={token}"):
            with urllib.request.urlopen(f"{proxy}/sse?{query}&channel=room:lobby", timeout=5) as stream:
                conn_ids.append(read_event(stream, "connection_ack")["conn_id"])
        frames = urllib.request.Request(
            f"{proxy}/sse/frames?{urllib.parse.urlencode({'conn_id': conn_ids[1], 'token': token})}",
            data=b'{"type":"ping"}', method="POST")
        try:
            urllib.request.urlopen(frames, timeout=5).close()
        except urllib.error.HTTPError as e:
            # The stream was closed above: the session may be gone (404). Logged either way.
            assert e.code == 404, e
    deadline = time.monotonic() + 10
    while (tmp_path / "access.log").read_text().count("\n") < 5:
        assert time.monotonic() < deadline, (tmp_path / "access.log").read_text()
        time.sleep(0.1)
    log = (tmp_path / "access.log").read_text()
    for secret in (token, ticket, "token=", "ticket="):
        assert secret not in log, f"the access log holds {secret[:12]!r}…:\n{log}"
    for path in ('"GET /ws ', '"POST /sse/ticket ', '"GET /sse ', '"POST /sse/frames '):
        assert path in log, f"{path!r} is not logged:\n{log}"
