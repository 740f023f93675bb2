"""Shared fixtures of the deployment tests: the repository root, the gateway binary, and
starting real processes (the gateway, redis-server) on free loopback ports that are always
stopped again."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]

# A fixed HS256 secret for the gateways these tests start; they never mint tokens with it.
TEST_JWT_SECRET = "deploy-tests-secret-0123456789abcdef"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """GET `url`; returns (status, body) for any HTTP status, raises on connection errors."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def stop(proc: subprocess.Popen) -> None:
    """Terminates `proc` (SIGTERM, then SIGKILL after 10 s) and reaps it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def fanout_bin() -> Path:
    """The gateway binary under test: $FANOUT_BIN, by default target/debug/fanout."""
    path = Path(os.environ.get("FANOUT_BIN", "target/debug/fanout"))
    if not path.is_absolute():
        path = REPO / path
    assert path.is_file(), f"gateway binary not found at {path}; build it or set FANOUT_BIN"
    return path


@contextmanager
def redis_server(tmp_path: Path) -> Iterator[int]:
    """A throwaway redis-server on a free loopback port without persistence; yields the port."""
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, "redis-server exited at start"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "redis-server did not answer PING within 15 s"
            time.sleep(0.1)
        yield port
    finally:
        stop(proc)


@contextmanager
def gateway(fanout_bin: Path, tmp_path: Path, *extra_args: str,
            settings: dict[str, str] | None = None) -> Iterator[str]:
    """A running `fanout serve` on a free loopback port; yields its base URL once /readyz
    answers 200. `settings` are its FANOUT_* environment variables (default: a test JWT
    secret and API key); none are inherited. Its log goes to a file in tmp_path, shown if it
    does not become ready."""
    with _gateway(fanout_bin, tmp_path, extra_args, settings, internal=False) as (base, _):
        yield base


@contextmanager
def gateway_with_internal(fanout_bin: Path, tmp_path: Path, *extra_args: str,
                          settings: dict[str, str] | None = None) -> Iterator[tuple[str, str]]:
    """As `gateway`, with the internal listener on a second free loopback port
    (`--internal-listen`); yields (public base URL, internal base URL) once the internal
    /readyz answers 200."""
    with _gateway(fanout_bin, tmp_path, extra_args, settings, internal=True) as urls:
        yield urls


@contextmanager
def _gateway(fanout_bin: Path, tmp_path: Path, extra_args, settings, internal: bool):
    port = free_port()
    log_path = tmp_path / f"fanout-{port}.log"
    if settings is None:
        settings = {"FANOUT_JWT_SECRET": TEST_JWT_SECRET, "FANOUT_API_KEY": "deploy-test-key"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("FANOUT_")} | settings
    args = [str(fanout_bin), "serve", "--listen", f"127.0.0.1:{port}"]
    base = internal_base = f"http://127.0.0.1:{port}"
    if internal:
        internal_port = free_port()
        args += ["--internal-listen", f"127.0.0.1:{internal_port}"]
        internal_base = f"http://127.0.0.1:{internal_port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([*args, *extra_args], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"gateway exited at start:\n{log_path.read_text()}"
            try:
                if http_get(f"{internal_base}/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"gateway not ready in 30 s:\n{log_path.read_text()}"
            time.sleep(0.1)
        yield base, internal_base
    finally:
        stop(proc)
