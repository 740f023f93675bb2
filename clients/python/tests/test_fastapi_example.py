"""The FastAPI example (examples/fastapi) end to end: uvicorn runs it against a real
gateway and redis-server; two devices of one user run the real JS client in Node, get their
tokens from the app's token endpoint (behind the app's auth), and receive what the app's
routes publish (to the user's every device, to all); a device's `send` reaches the app's
inbox consumer, whose answer reaches both devices."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List

import httpx
import pytest

from support import REPO, SECRET, Gateway, RedisServer, free_port, stop_process, wait_for

EXAMPLE = REPO / "examples" / "fastapi"
DEVICES = Path(__file__).parent / "js" / "devices.mjs"


def _node() -> List[str]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (scripts/test-python installs it)")
    probe = subprocess.run([node, "--experimental-websocket", "-e", ""], capture_output=True)
    return [node, "--experimental-websocket"] if probe.returncode == 0 else [node]


class App:
    def __init__(self, redis_server: RedisServer, gateway: Gateway) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "FANOUT_JWT_SECRET": SECRET, "REDIS_URL": redis_server.url,
               "FANOUT_PUBLIC_URL": gateway.ws,
               "DEMO_SESSIONS": "alice-session:alice,root-session:root", "DEMO_ADMINS": "root"}
        self.log_path = Path(gateway.dir) / f"uvicorn-{self.port}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port",
             str(self.port)], cwd=EXAMPLE, env=env, stdout=self.log, stderr=subprocess.STDOUT)

        def up() -> bool:
            assert self.proc.poll() is None, "uvicorn exited"
            try:
                return httpx.get(f"{self.url}/realtime-config", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for("the FastAPI app", up, timeout=30)

    def stop(self) -> str:
        """Stops uvicorn with SIGTERM (its shutdown runs the lifespan's exit, which stops
        the inbox worker); its log."""
        stop_process(self.proc)
        self.log.close()
        return self.log_path.read_text(errors="replace")


class Devices:
    def __init__(self, app: App, session: str) -> None:
        self.proc = subprocess.Popen([*_node(), str(DEVICES), app.url, session], cwd=REPO,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.events: "queue.Queue[Dict[str, Any]]" = queue.Queue()
        self.seen: List[Dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def wait(self, what: str, match: Any, count: int = 1, timeout: float = 20) -> List[Dict[str, Any]]:
        found = [e for e in self.seen if match(e)]
        while len(found) < count:
            try:
                event = self.events.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"timed out waiting for {what}; saw {self.seen}") from None
            self.seen.append(event)
            if match(event):
                found.append(event)
        return found

    def command(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.command("exit")
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        stop_process(self.proc)


@pytest.fixture
def app(redis_server: RedisServer, gateway: Gateway) -> Iterator[App]:
    a = App(redis_server, gateway)
    yield a
    log = a.stop()
    # A clean shutdown: the lifespan's exit stopped the inbox worker without an error.
    assert "Application shutdown complete." in log, log
    assert "Traceback" not in log and "ERROR" not in log, log


def test_routes_reach_every_device_and_sends_reach_the_app(app: App) -> None:
    # The token endpoint is behind the app's own auth.
    assert httpx.get(f"{app.url}/realtime-token").status_code == 401
    devices = Devices(app, "alice-session")
    try:
        ready = devices.wait("both devices ready", lambda e: e.get("ready"), count=2, timeout=30)
        assert {e["user"] for e in ready} == {"alice"}
        alice = {"authorization": "Bearer alice-session"}
        created = httpx.post(f"{app.url}/tasks", json={"title": "New Task"}, headers=alice).json()
        assert created["success"] and created["offset"] >= 1
        updates = devices.wait("the task update on both devices",
                               lambda e: e.get("data", {}).get("type") == "task_update", count=2)
        assert {e["device"] for e in updates} == {1, 2}
        for update in updates:
            assert update["channel"] == "user:alice" and update["offset"] == created["offset"]
            assert update["data"]["data"] == {"task_id": created["id"], "title": "New Task"}
        # Broadcast to all: an admin's route.
        assert httpx.post(f"{app.url}/announcements", json={"message": "hi"}, headers=alice).status_code == 403
        root = {"authorization": "Bearer root-session"}
        assert httpx.post(f"{app.url}/announcements", json={"message": "Maintenance at 22:00"},
                          headers=root).json()["nodes"] == 1
        announced = devices.wait("the announcement", lambda e: e.get("channel") == "broadcast", count=2)
        assert all(e["data"]["data"]["message"] == "Maintenance at 22:00" for e in announced)
        # Talking back: device 1 sends, the app's inbox consumer answers both devices.
        devices.command("send ntf-1")
        devices.wait("the send stored", lambda e: "sent" in e)
        read = devices.wait("notification_read on both devices",
                            lambda e: e.get("data", {}).get("type") == "notification_read", count=2)
        assert {e["device"] for e in read} == {1, 2}
        assert all(e["data"]["data"] == {"notification_id": "ntf-1"} for e in read)
        assert not [e for e in devices.seen if "error" in e]
    finally:
        devices.stop()
