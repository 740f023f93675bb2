"""HttpPublisher, AsyncHttpPublisher, Presence and AsyncPresence against the real gateway's
HTTP API: results, typed errors (and whether a retry is safe), timeouts."""

from __future__ import annotations

import socket
import threading
from typing import Any, Iterator

import httpx
import pytest

from fanout_gateway import (ApiError,
                            AsyncHttpPublisher, AsyncPresence, HttpPublisher,
                            InvalidArgumentError, Presence, TransportError)
from support import API_KEY, Gateway, RawClient, RedisServer, async_wait_for, free_port, token


async def test_publish_history_broadcast(gateway: Gateway, uid: str) -> None:
    client = await RawClient.connect(gateway.ws, token())
    try:
        await client.subscribe(f"dag:{uid}")
        await client.subscribe(f"room:{uid}")
        with HttpPublisher(gateway.http, API_KEY) as api:
            first = api.publish(f"dag:{uid}", {"type": "node_state", "n": 1})
            again = api.publish(f"dag:{uid}", {"type": "node_state", "n": 1}, idempotency_key="n1")
            repeat = api.publish_with_history(f"dag:{uid}", {"other": 1}, idempotency_key="n1")
            assert (first.offset, again.offset, repeat.offset) == (1, 2, 2)
            assert first.epoch is None  # the API does not report it
            assert api.publish(f"room:{uid}", "hi").offset == 0
            assert api.broadcast([f"dag:{uid}", f"room:{uid}", f"dag:{uid}"], [1, 2]) == 2
            history = api.history(f"dag:{uid}", since=1)
            assert history.channel == f"dag:{uid}" and history.offset == 3
            assert [(m.offset, m.data) for m in history.messages] == \
                [(2, {"type": "node_state", "n": 1}), (3, [1, 2])]
            latest = api.history(f"dag:{uid}", limit=1)
            assert [m.offset for m in latest.messages] == [3] and latest.epoch == history.epoch
            ready = api.ready()
            assert ready.ready and ready.node == "py-a" and ready.broker
        dag = await client.wait_messages(f"dag:{uid}", 3)
        assert [(m["offset"], m["epoch"]) for m in dag] == [(1, history.epoch), (2, history.epoch),
                                                            (3, history.epoch)]
        assert [m["data"] for m in await client.wait_messages(f"room:{uid}", 2)] == ["hi", [1, 2]]
    finally:
        await client.close()


async def test_async_http_publisher(gateway: Gateway, uid: str) -> None:
    async with AsyncHttpPublisher(gateway.http + "/", API_KEY, timeout=5) as api:
        result = await api.publish_with_history(f"user:{uid}", {"type": "notification"})
        assert result.offset == 1 and result.kept
        assert await api.broadcast([f"user:{uid}", "broadcast"], {"type": "system_announcement"}) == 2
        history = await api.history(f"user:{uid}")
        assert [m.data for m in history.messages] == [{"type": "notification"},
                                                      {"type": "system_announcement"}]
        assert (await api.ready()).ready
        with pytest.raises(ApiError) as refused:
            await api.history(f"room:{uid}")
        assert refused.value.status == 400 and "keeps no history" in refused.value.detail


def test_api_errors_are_typed(gateway: Gateway, uid: str) -> None:
    with HttpPublisher(gateway.http, "wrong-key") as api:
        with pytest.raises(ApiError) as wrong:
            api.publish(f"room:{uid}", 1)
        assert (wrong.value.status, wrong.value.code) == (401, "unauthorized")
        assert not wrong.value.retryable and wrong.value.retry_safe
        assert "wrong-key" not in str(wrong.value)
    with HttpPublisher(gateway.http, API_KEY) as api:
        with pytest.raises(ApiError) as unknown:
            api.publish(f"chat:{uid}", 1)
        assert (unknown.value.status, unknown.value.code) == (400, "bad_request")
        assert 'unknown channel namespace "chat"' in unknown.value.detail
        with pytest.raises(ApiError) as too_large:
            api.publish(f"room:{uid}", "x" * 300_000)
        assert (too_large.value.status, too_large.value.code) == (413, "too_large")
        with pytest.raises(InvalidArgumentError):
            api.publish("Room:x", 1)
        with pytest.raises(InvalidArgumentError):
            api.history(f"dag:{uid}", since=-1)
        with pytest.raises(InvalidArgumentError, match="valid UTF-8 JSON"):
            api.publish(f"room:{uid}", b"not json")
    with pytest.raises(InvalidArgumentError):
        HttpPublisher("127.0.0.1:8080", API_KEY)
    with pytest.raises(InvalidArgumentError):
        HttpPublisher(gateway.http, "")


def test_api_disabled_without_keys() -> None:
    gw = Gateway(name="py-nokey", api_key=None)
    try:
        with HttpPublisher(gw.http, API_KEY) as api:
            with pytest.raises(ApiError) as disabled:
                api.publish("room:x", 1)
            assert (disabled.value.status, disabled.value.code) == (403, "forbidden")
    finally:
        gw.stop()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts and reads but never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    conns = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                conns.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    for c in conns:
        c.close()
    server.close()


def test_timeouts_and_unreachable_gateways_say_whether_a_retry_is_safe(silent_server: int) -> None:
    with HttpPublisher(f"http://127.0.0.1:{silent_server}", API_KEY, timeout=0.5) as api:
        with pytest.raises(TransportError) as unkeyed:
            api.publish("dag:1", 1)
        # The request went out: it may have been published.
        assert unkeyed.value.retryable and not unkeyed.value.retry_safe
        assert "timed out" in str(unkeyed.value) and API_KEY not in str(unkeyed.value)
        with pytest.raises(TransportError) as keyed:
            api.publish("dag:1", 1, idempotency_key="k")
        assert keyed.value.retry_safe
        with pytest.raises(TransportError) as reading:
            api.history("dag:1")
        assert reading.value.retry_safe
    with HttpPublisher(f"http://127.0.0.1:{free_port()}", API_KEY,
                       timeout=httpx.Timeout(2.0)) as api:
        with pytest.raises(TransportError) as refused:
            api.broadcast(["dag:1"], 1)
        # Nothing was sent: safe to retry, even a broadcast.
        assert refused.value.retryable and refused.value.retry_safe


async def test_presence_of_an_agent(gateway: Gateway, uid: str) -> None:
    channel = f"room:{uid}"
    watcher = await RawClient.connect(gateway.ws, token(sub=f"w{uid}", info={"name": "Watcher"}))
    try:
        await watcher.subscribe(channel)
        with Presence(gateway.http, API_KEY) as presence:
            conn_id = presence.set_status(channel, "summarizer", {"state": "thinking"},
                                          info={"kind": "agent"}, ttl=30)
            assert conn_id == "api:summarizer"
            await async_wait_for("join and presence_update",
                                 lambda: watcher.events("join", channel) and
                                 any(e["user"] == "summarizer" for e in watcher.events("presence_update", channel)))
            join = next(e for e in watcher.events("join", channel) if e["user"] == "summarizer")
            assert join["conn_id"] == "api:summarizer" and join["info"] == {"kind": "agent"}
            info = presence.members(channel)
            assert (info.connections, info.users) == (2, 2)
            agent = next(m for m in info.members if m.user == "summarizer")
            assert agent.status == {"state": "thinking"} and agent.info == {"kind": "agent"}
            human = next(m for m in info.members if m.user == f"w{uid}")
            assert human.info == {"name": "Watcher"} and human.conn_id == watcher.ack["conn_id"]
            assert presence.remove(channel, "summarizer") is True
            assert presence.remove(channel, "summarizer") is False
            await async_wait_for("leave", lambda: any(e["user"] == "summarizer"
                                                      for e in watcher.events("leave", channel)))
            with pytest.raises(ApiError) as no_presence:
                presence.set_status(f"dag:{uid}", "summarizer", "x")
            assert "presence is not kept" in no_presence.value.detail
            with pytest.raises(InvalidArgumentError):
                presence.set_status(channel, "bad user", "x")
            with pytest.raises(InvalidArgumentError):
                presence.set_status(channel, "agent", "x", ttl=0)
        async with AsyncPresence(gateway.http, API_KEY) as apresence:
            await apresence.set_status(channel, "agent-2", "idle", ttl=5)
            members = await apresence.members(channel)
            assert {m.user for m in members.members} == {f"w{uid}", "agent-2"}
            assert await apresence.set_status(channel, "agent-2", None) == "api:agent-2"
            assert [m.user for m in (await apresence.members(channel)).members] == [f"w{uid}"]
        with HttpPublisher(gateway.http, API_KEY) as api:
            assert api.presence.members(channel).connections == 1
    finally:
        await watcher.close()


async def test_ready_reports_a_node_without_its_broker() -> None:
    server = RedisServer()
    gw = Gateway(redis_url=server.url, name="py-ready")
    try:
        async with AsyncHttpPublisher(gw.http, API_KEY) as api:
            assert (await api.ready()).ready
            server.stop()
            readiness = await async_wait_for_value(api)
            assert not readiness.ready and readiness.reason == "broker unavailable"
            assert readiness.node == "py-ready"
            with pytest.raises(ApiError) as down:
                await api.publish("dag:1", 1)
            assert (down.value.status, down.value.code) == (503, "unavailable")
            assert down.value.retryable and down.value.retry_safe
    finally:
        gw.stop()
        server.stop()


async def async_wait_for_value(api: AsyncHttpPublisher) -> Any:
    import asyncio
    import time
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        readiness = await api.ready()
        if not readiness.ready:
            return readiness
        await asyncio.sleep(0.1)
    raise AssertionError("the node stayed ready without its Redis")
