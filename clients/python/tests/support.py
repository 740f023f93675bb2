"""Test harness: the real gateway binary, real redis-server processes (one server, or a
6-process Redis Cluster), a real HAProxy, each started on free loopback ports by the test
that needs them and stopped when it ends; plus a raw WebSocket observer that does not use
the library under test."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, TypeVar

import jwt
import redis
import websockets
import websockets.asyncio.client

REPO = Path(__file__).resolve().parents[3]
PYTHON_DIR = REPO / "clients" / "python"
SECRET = "fanout-python-tests-secret-0123456789abcdef"
API_KEY = "python-test-api-key"

# Presence (with joins and leaves) on room:, an agent: namespace with history: what the
# presence and status tests need. Channels with history keep their defaults (dag:, user:).
GATEWAY_CONFIG = """
[namespaces.room]
presence = true
join_leave = "connection"
publish = true

[namespaces.agent]
presence = true
join_leave = "connection"
history_size = 1000
history_ttl_s = 600
"""

T = TypeVar("T")


def fanout_bin() -> Path:
    path = Path(os.environ.get("FANOUT_BIN", "target/debug/fanout"))
    if not path.is_absolute():
        path = REPO / path
    if not path.is_file():
        raise RuntimeError(f"gateway binary not found at {path}: build it or set FANOUT_BIN")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], Optional[T]], timeout: float = 20.0,
             interval: float = 0.05) -> T:
    """Polls ``check`` until it returns something truthy; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


async def async_wait_for(what: str, check: Callable[[], Any], timeout: float = 20.0,
                         interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


def stop_process(proc: "subprocess.Popen[Any]", sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def token(sub: str = "42", channels: Sequence[str] = ("*",), ttl: int = 3600,
          **claims: Any) -> str:
    """An HS256 token signed with PyJWT directly (not with the library under test)."""
    now = int(time.time())
    body: Dict[str, Any] = {"sub": sub, "exp": now + ttl, "iat": now, "channels": list(channels)}
    body.update(claims)
    return jwt.encode(body, SECRET, algorithm="HS256")


class RedisServer:
    """A redis-server of the test's own, without persistence, on a free loopback port."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="fanout-py-redis-")
        for _ in range(5):
            self.port = free_port()
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--protected-mode", "no", "--dir", self.dir,
                 "--logfile", ""], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if self._answers():
                break
            stop_process(self.proc, signal.SIGKILL)
        else:
            raise RuntimeError("redis-server did not start (apt-get install redis-server)")
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def _answers(self) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                info = redis.Redis(port=self.port, socket_timeout=1).info("server")
                if int(info.get("process_id", 0)) == self.proc.pid:
                    return True
            except redis.RedisError:
                pass
            time.sleep(0.05)
        return False

    def client(self, **kwargs: Any) -> Any:
        """A redis-py client (typed Any: its stubs make every reply Optional)."""
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisCluster:
    """A real 6-process Redis Cluster (3 masters, 3 replicas), as tests/redis_cluster does."""

    def __init__(self) -> None:
        self.nodes: List["subprocess.Popen[Any]"] = []
        self.ports: List[int] = []
        self.dirs: List[str] = []
        try:
            for _ in range(6):
                self._spawn()
            out = subprocess.run(
                ["timeout", "60", "redis-cli", "--cluster", "create",
                 *[f"127.0.0.1:{p}" for p in self.ports], "--cluster-replicas", "1",
                 "--cluster-yes"], stdin=subprocess.DEVNULL, capture_output=True, text=True)
            assert out.returncode == 0, f"redis-cli --cluster create failed: {out.stdout}{out.stderr}"
            wait_for("the cluster to be healthy", self._healthy, timeout=40, interval=0.1)
        except BaseException:
            self.stop()
            raise

    def _spawn(self) -> None:
        for _ in range(5):
            port, bus = free_port(), free_port()
            d = tempfile.mkdtemp(prefix=f"fanout-py-cluster-{port}-")
            proc = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-port", str(bus), "--cluster-node-timeout", "1000", "--save", "",
                 "--appendonly", "no", "--protected-mode", "no", "--dir", d, "--logfile", ""],
                cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    info = redis.Redis(port=port, socket_timeout=1).info("server")
                    if int(info.get("process_id", 0)) == proc.pid:
                        self.nodes.append(proc)
                        self.ports.append(port)
                        self.dirs.append(d)
                        return
                except redis.RedisError:
                    pass
                time.sleep(0.05)
            stop_process(proc, signal.SIGKILL)
            shutil.rmtree(d, ignore_errors=True)
        raise RuntimeError("a cluster redis-server did not start")

    def _healthy(self) -> bool:
        masters = 0
        for port in self.ports:
            try:
                r: Any = redis.Redis(port=port, socket_timeout=1)
                if "cluster_state:ok" not in r.execute_command("CLUSTER", "INFO").decode():
                    return False
                repl = r.info("replication")
                if repl.get("role") == "master":
                    masters += 1
                elif repl.get("master_link_status") != "up":
                    return False
            except redis.RedisError:
                return False
        return masters == 3

    def seed_flags(self) -> List[str]:
        flags: List[str] = []
        for port in self.ports:
            flags += ["--redis-cluster-url", f"redis://127.0.0.1:{port}"]
        return flags

    def stop(self) -> None:
        for proc in self.nodes:
            stop_process(proc, signal.SIGKILL)
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)


class Gateway:
    """The real ``fanout serve`` on a loopback port, ready (``/readyz`` 200) when built."""

    def __init__(self, *, redis_url: Optional[str] = None, cluster: Optional[RedisCluster] = None,
                 name: str = "py-node", port: Optional[int] = None, args: Sequence[str] = (),
                 config: Optional[str] = GATEWAY_CONFIG, secret: Optional[str] = SECRET,
                 api_key: Optional[str] = API_KEY) -> None:
        self.name = name
        self.dir = tempfile.mkdtemp(prefix="fanout-py-gw-")
        self.log_path = Path(self.dir) / "fanout.log"
        argv = [str(fanout_bin()), "serve", "--node-id", name,
                "--log-level", "info", "--drain-s", "1", *args]
        if secret is not None:
            argv += ["--jwt-secret", secret]
        if api_key is not None:
            argv += ["--api-key", api_key]
        if config is not None:
            path = Path(self.dir) / "fanout.toml"
            path.write_text(config)
            argv += ["--config", str(path)]
        if redis_url is not None:
            argv += ["--redis-url", redis_url, "--redis-probe-interval-s", "1"]
        if cluster is not None:
            argv += cluster.seed_flags()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FANOUT_") and k != "RUST_LOG"}
        for attempt in range(5):
            self.port = port if port is not None else free_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen([*argv, "--listen", f"127.0.0.1:{self.port}"],
                                             stdout=log, stderr=subprocess.STDOUT, env=env)
            if self._ready() or port is not None:
                break
        self.http = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}/ws"
        wait_for(f"gateway {name} to be ready", self.is_ready, timeout=30)

    def _ready(self) -> bool:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False  # e.g. the port was taken meanwhile: try another
            if self.is_ready():
                return True
            time.sleep(0.05)
        raise AssertionError(f"gateway {self.name} not ready in 30 s:\n{self.logs()}")

    def is_ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"gateway {self.name} exited:\n{self.logs()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        stop_process(self.proc, sig)

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


class Haproxy:
    """A real HAProxy in front of gateways: round robin, /readyz checks every 200 ms,
    WebSocket tunnels, redispatch on refusal (as clients/js's harness)."""

    def __init__(self, gateways: Sequence[Gateway]) -> None:
        self.dir = tempfile.mkdtemp(prefix="fanout-py-haproxy-")
        self.port = free_port()
        servers = "".join(f"  server n{i + 1} 127.0.0.1:{g.port} check\n" for i, g in enumerate(gateways))
        cfg = Path(self.dir) / "haproxy.cfg"
        cfg.write_text(
            "global\n  maxconn 2000\n"
            "defaults\n  mode http\n  timeout connect 2s\n  timeout client 60s\n"
            "  timeout server 60s\n  timeout tunnel 1h\n  option redispatch\n  retries 3\n"
            f"frontend ws\n  bind 127.0.0.1:{self.port}\n  default_backend fanout\n"
            "backend fanout\n  balance roundrobin\n  option httpchk GET /readyz\n"
            "  http-check expect status 200\n  default-server inter 200ms fall 1 rise 2\n" + servers)
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.ws = f"ws://127.0.0.1:{self.port}/ws"

        def up() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                    return bool(r.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        wait_for("haproxy to route", up)

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


class RawClient:
    """A bare protocol client over ``websockets`` that records every frame: the observer of
    the publisher tests, independent of the library's :class:`Client`."""

    def __init__(self, ws: Any, ack: Dict[str, Any]) -> None:
        self.ws = ws
        self.ack = ack
        self.frames: List[Dict[str, Any]] = []
        self._reader = asyncio.ensure_future(self._read())
        self._next = 1

    @classmethod
    async def connect(cls, url: str, jwt_token: str) -> "RawClient":
        ws = await websockets.asyncio.client.connect(
            url, additional_headers={"Authorization": f"Bearer {jwt_token}"}, open_timeout=10)
        ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert ack["type"] == "connection_ack", ack
        return cls(ws, ack)

    async def _read(self) -> None:
        try:
            async for text in self.ws:
                self.frames.append(json.loads(text))
        except websockets.exceptions.ConnectionClosed:
            pass

    async def request(self, frame: Dict[str, Any]) -> Dict[str, Any]:
        frame_id = self._next
        self._next += 1
        await self.ws.send(json.dumps({**frame, "id": frame_id}))
        return dict(await async_wait_for(
            f"reply to {frame['type']}",
            lambda: next((f for f in self.frames if f.get("id") == frame_id), None), timeout=15))

    async def subscribe(self, channel: str, **extra: Any) -> Dict[str, Any]:
        reply = await self.request({"type": "subscribe", "channel": channel, **extra})
        assert reply["type"] == "subscribed", reply
        return reply

    def messages(self, channel: str) -> List[Dict[str, Any]]:
        return [f for f in self.frames if f.get("type") == "message" and f.get("channel") == channel]

    async def wait_messages(self, channel: str, count: int, timeout: float = 15) -> List[Dict[str, Any]]:
        await async_wait_for(f"{count} messages on {channel}",
                             lambda: len(self.messages(channel)) >= count, timeout=timeout)
        return self.messages(channel)

    def events(self, kind: str, channel: str) -> List[Dict[str, Any]]:
        return [f for f in self.frames if f.get("type") == kind and f.get("channel") == channel]

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
