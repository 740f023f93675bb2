"""Inbox and AsyncInbox on entries the real gateway appended for real `send` frames: a
worker killed mid-batch loses nothing, SIGTERM stops a worker gracefully, a failing entry
is retried and then dead-lettered, the async iterator, a stream that vanishes."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest
import redis
import redis.asyncio

from fanout_gateway import AsyncInbox, Client, Inbox, InboxMessage, InvalidArgumentError
from support import PYTHON_DIR, Gateway, RedisServer, async_wait_for, stop_process, token, wait_for

WORKER = Path(__file__).with_name("inbox_worker.py")


async def _send(gateway: Gateway, user: str, channel: str, payloads: List[Any]) -> List[str]:
    """Sends each payload with a real client; the inbox entry ids, in order."""
    async with Client(gateway.ws, token=token(sub=user)) as client:
        receipts = [await client.send(channel, p, msg_id=f"{user}-{i}") for i, p in enumerate(payloads)]
    return [r.stream_id for r in receipts]


def _worker(redis_server: RedisServer, group: str, consumer: str, log: Path, mode: str,
            handle_s: float) -> "subprocess.Popen[str]":
    proc = subprocess.Popen([sys.executable, str(WORKER), str(redis_server.port), group, consumer,
                             str(log), mode, str(handle_s)], stdout=subprocess.PIPE, text=True,
                            cwd=PYTHON_DIR)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _log(path: Path) -> List[str]:
    return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []


def _pending(redis_server: RedisServer, stream: str, group: str) -> int:
    return int(redis_server.client().xpending(stream, group)["pending"])


async def test_messages_carry_the_sender_and_data(gateway: Gateway, redis_server: RedisServer,
                                                  uid: str) -> None:
    stream = f"inbox-{uid}"
    r = redis_server.client()
    # The gateway writes to fanout:inbox; copy this test's entries to a stream of its own
    # so that other tests' entries do not mix in.
    ids = await _send(gateway, f"u{uid}", f"dag:{uid}",
                      [{"type": "human_decision", "data": {"node_id": "n3", "decision": "approve"}},
                       "plain", [1, 2]])
    for entry_id, fields in r.xrange("fanout:inbox", min=ids[0], max=ids[-1]):
        r.xadd(stream, fields, id=entry_id)
    inbox = AsyncInbox(redis.asyncio.Redis(port=redis_server.port), "backend", stream=stream,
                       consumer="w1", handle_signals=False)
    got: List[InboxMessage] = []
    assert await inbox.run(got.append, max_messages=3) == 3
    assert [m.id for m in got] == ids
    first = got[0]
    assert (first.channel, first.user, first.type, first.deliveries) == (f"dag:{uid}", f"u{uid}",
                                                                         "human_decision", 1)
    assert first.data["data"] == {"node_id": "n3", "decision": "approve",
                                  "client_msg_id": f"u{uid}-0"}
    assert json.loads(first.raw_data) == first.data
    assert first.node == gateway.name and first.conn_id and 0 <= first.age() < 60
    assert got[1].data == "plain" and got[1].type is None and got[2].data == [1, 2]
    assert _pending(redis_server, stream, "backend") == 0
    await inbox._redis.aclose()


async def test_worker_killed_mid_batch_loses_nothing(gateway: Gateway, redis_server: RedisServer,
                                                     uid: str, tmp_path: Path) -> None:
    count = 25
    group = f"g-{uid}"
    r = redis_server.client()
    r.xgroup_create("fanout:inbox", group, id="$", mkstream=True)
    log1, log2 = tmp_path / "w1.log", tmp_path / "w2.log"
    ids = await _send(gateway, f"k{uid}", f"dag:{uid}", [{"n": n} for n in range(count)])
    worker = _worker(redis_server, group, "doomed", log1, "sync", 0.15)
    try:
        # Kill it in the middle of its first batch of 10.
        wait_for("a few entries handled", lambda: len(_log(log1)) >= 3, timeout=30)
        worker.kill()
        worker.wait(10)
    finally:
        stop_process(worker, signal.SIGKILL)
    done_by_first = _log(log1)
    assert 3 <= len(done_by_first) < 10
    # What it had read and not acknowledged is pending, not lost.
    stalled = {str(p["message_id"].decode()) for p in r.xpending_range("fanout:inbox", group, "-", "+", 100)}
    assert stalled and stalled <= set(ids[:10]) and not stalled & set(done_by_first[:-1])
    # Another worker of the group takes over the stalled entries (XAUTOCLAIM) and the rest.
    inbox = AsyncInbox(redis.asyncio.Redis(port=redis_server.port), group, consumer="rescuer",
                       claim_idle_ms=300, block_ms=200, handle_signals=False)
    handled: List[InboxMessage] = []

    async def handle(message: InboxMessage) -> None:
        handled.append(message)
        with open(log2, "a") as f:
            f.write(message.id + "\n")

    async def until_all() -> None:
        await async_wait_for("every entry handled",
                             lambda: set(done_by_first) | {m.id for m in handled} >= set(ids), timeout=30)
        inbox.stop()

    stopper = asyncio.ensure_future(until_all())
    await asyncio.wait_for(inbox.run(handle), 40)
    await stopper
    everything = done_by_first + [m.id for m in handled]
    assert set(everything) == set(ids)
    # At least once: only an entry whose handler had finished when the worker was killed,
    # before its acknowledgement, is handled twice.
    assert len(everything) - len(set(everything)) <= 1
    assert all(m.redelivered == (m.id in stalled) for m in handled)
    assert {m.id for m in handled} == stalled | set(ids[10:])
    assert _pending(redis_server, "fanout:inbox", group) == 0
    await inbox._redis.aclose()


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_sigterm_stops_a_worker_gracefully(mode: str, gateway: Gateway, redis_server: RedisServer,
                                                 uid: str, tmp_path: Path) -> None:
    group = f"t-{mode}-{uid}"
    redis_server.client().xgroup_create("fanout:inbox", group, id="$", mkstream=True)
    log = tmp_path / "w.log"
    # Idle, blocked in XREADGROUP: SIGTERM ends it cleanly.
    idle = _worker(redis_server, group, "idle", log, mode, 0.0)
    time.sleep(0.3)
    started = time.monotonic()
    idle.send_signal(signal.SIGTERM)
    out, _ = idle.communicate(timeout=15)
    assert idle.returncode == 0 and out.strip().endswith("stopped 0")
    if mode == "async":
        # The async worker interrupts its read at once (its block_ms is 30 s).
        assert time.monotonic() - started < 10
    # Busy: the entry being handled is finished and acknowledged, the rest of the batch stays
    # pending for this consumer name, which takes it back first thing when it starts again.
    ids = await _send(gateway, f"s{uid}", f"dag:{uid}", [{"n": n} for n in range(4)])
    busy = _worker(redis_server, group, "busy", log, mode, 1.0)
    wait_for("the batch to be read", lambda: _pending(redis_server, "fanout:inbox", group) == 4)
    busy.send_signal(signal.SIGTERM)
    out, _ = busy.communicate(timeout=15)
    assert busy.returncode == 0 and out.strip().endswith("stopped 1")
    assert _log(log) == ids[:1]
    again = _worker(redis_server, group, "busy", log, mode, 0.0)
    try:
        wait_for("the rest", lambda: len(_log(log)) == 4, timeout=20)
        assert _log(log) == ids
        assert [line.split()[1] for line in log.read_text().splitlines()][1:] == ["2", "2", "2"]
    finally:
        again.send_signal(signal.SIGTERM)
        again.communicate(timeout=15)
    assert _pending(redis_server, "fanout:inbox", group) == 0


async def test_failing_entries_are_retried_then_dead_lettered(redis_server: RedisServer, uid: str) -> None:
    stream = f"inbox-{uid}"
    r = redis_server.client(decode_responses=True)
    good = r.xadd(stream, {"channel": "dag:1", "user": "7", "data": '{"ok":true}', "received_at": "1"})
    poison = r.xadd(stream, {"channel": "dag:1", "user": "7", "data": '"poison"', "received_at": "1"})
    attempts: Dict[str, int] = {}
    failures: List[str] = []

    def handle(message: InboxMessage) -> None:
        attempts[message.id] = attempts.get(message.id, 0) + 1
        if message.data == "poison":
            raise RuntimeError("cannot handle this one")

    inbox = Inbox(redis_server.client(), "workers", stream=stream, consumer="w", claim_idle_ms=200,
                  block_ms=100, max_deliveries=3, handle_signals=False,
                  on_error=lambda e, m: failures.append(f"{m.id}:{e}"))
    inbox.run(handle, max_seconds=4)
    assert attempts == {good: 1, poison: 3}
    assert failures == [f"{poison}:cannot handle this one"] * 3
    [(dead_id, dead)] = r.xrange(f"{stream}:dead")
    assert dead["data"] == '"poison"' and dead["dead_id"] == poison and dead["dead_deliveries"] == "4"
    assert (dead["dead_stream"], dead["dead_group"], dead["user"]) == (stream, "workers", "7")
    assert r.xpending(stream, "workers")["pending"] == 0
    assert inbox.handled == 1


async def test_async_iterator_with_explicit_acks_and_a_vanished_stream(redis_server: RedisServer,
                                                                        uid: str) -> None:
    stream = f"inbox-{uid}"
    r = redis_server.client()
    for n in range(3):
        r.xadd(stream, {"channel": "dag:1", "user": "7", "data": json.dumps({"n": n}), "received_at": "1"})
    inbox = AsyncInbox(redis.asyncio.Redis(port=redis_server.port, decode_responses=True), "it",
                       stream=stream, block_ms=100, handle_signals=False, delete_after_ack=True)
    seen: List[Any] = []
    async for message in inbox:
        seen.append(message.data["n"])
        await inbox.ack(message)
        if len(seen) == 3:
            break
    assert seen == [0, 1, 2] and r.xlen(stream) == 0
    # The stream and its group are deleted (as by a Redis that lost its data): the worker
    # creates them again and goes on.
    r.delete(stream)
    late: List[Any] = []

    async def produce() -> None:
        await asyncio.sleep(0.3)
        r.xadd(stream, {"channel": "dag:1", "user": "7", "data": "4", "received_at": "1"})

    producer = asyncio.ensure_future(produce())
    assert await asyncio.wait_for(inbox.run(lambda m: late.append(m.data), max_messages=1), 10) == 1
    await producer
    assert late == [4]
    await inbox._redis.aclose()


def test_bad_settings_are_refused(redis_server: RedisServer) -> None:
    with pytest.raises(InvalidArgumentError, match="socket_timeout"):
        Inbox(redis.Redis(port=redis_server.port, socket_timeout=0.5), "g")
    # A read blocks less long than the client's socket timeout.
    assert Inbox(redis.Redis(port=redis_server.port, socket_timeout=3), "g").block_ms == 2400
    assert Inbox(redis.Redis(port=redis_server.port, socket_timeout=None), "g").block_ms == 5000
    with pytest.raises(InvalidArgumentError):
        Inbox(redis_server.client(), "")
    with pytest.raises(InvalidArgumentError):
        Inbox(redis_server.client(), "g", max_deliveries=0)
    with pytest.raises(InvalidArgumentError):
        AsyncInbox(redis_server.client(), "g")
