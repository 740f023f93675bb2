"""The asyncio Client against the real gateway: exactly once and in order across a node
SIGKILLed behind HAProxy, durable send with acknowledgements, presence status set again
after a reconnect, token refresh, lost history reported, refused tokens."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import redis.asyncio

from fanout_gateway import (AsyncPublisher, Client, ClientError, MessageMeta, Position, Presence,
                            ReloadInfo, Token)
from support import (API_KEY, SECRET, Gateway, Haproxy, RedisServer, async_wait_for, token)


class Recorder:
    """What a subscription saw."""

    def __init__(self) -> None:
        self.data: List[Any] = []
        self.metas: List[MessageMeta] = []
        self.reloads: List[ReloadInfo] = []
        self.errors: List[ClientError] = []

    def on_message(self, data: Any, meta: MessageMeta) -> None:
        self.data.append(data)
        self.metas.append(meta)

    def on_reload(self, info: ReloadInfo) -> None:
        self.reloads.append(info)

    def kwargs(self) -> Dict[str, Any]:
        return {"on_message": self.on_message, "on_reload": self.on_reload,
                "on_error": self.errors.append}


class Stack:
    def __init__(self) -> None:
        self.redis = RedisServer()
        self.gateways = [Gateway(redis_url=self.redis.url, name=f"py-n{i}") for i in (1, 2)]
        self.haproxy = Haproxy(self.gateways)

    def gateway(self, name: str) -> Gateway:
        return next(g for g in self.gateways if g.name == name)

    def stop(self) -> None:
        self.haproxy.stop()
        for g in self.gateways:
            g.stop()
        self.redis.stop()


@pytest.fixture
def stack() -> Iterator[Stack]:
    s = Stack()
    yield s
    s.stop()


async def test_subscribe_publish_requests(gateway: Gateway, redis_server: RedisServer, uid: str) -> None:
    publisher = AsyncPublisher(redis.asyncio.Redis(port=redis_server.port))
    dag, user = Recorder(), Recorder()
    subscribed: List[Dict[str, Any]] = []
    async with Client(gateway.ws, token=token(sub=uid, publish=[f"dag:{uid}"])) as client:
        client.subscribe(f"dag:{uid}", on_subscribed=subscribed.append, **dag.kwargs())
        client.subscribe(f"user:{uid}", **user.kwargs())
        info = await client.wait_connected(10)
        assert info.user == uid and f"user:{uid}" in info.channels
        await async_wait_for("both subscriptions to start", lambda: len(dag.reloads) == 1 == len(user.reloads))
        assert dag.reloads[0].reason == "start" and dag.reloads[0].offset == 0
        for n in range(1, 6):
            await publisher.publish_with_history(f"dag:{uid}", {"n": n})
            await publisher.publish_with_history(f"user:{uid}", {"n": n})
        mine = await client.publish(f"dag:{uid}", {"n": 6})
        assert mine.offset == 6
        await async_wait_for("messages", lambda: len(dag.data) == 6 and len(user.data) == 5)
        assert dag.data == [{"n": n} for n in range(1, 7)] and user.data == dag.data[:5]
        assert [m.offset for m in dag.metas] == list(range(1, 7))
        assert dag.metas[-1].user == uid and dag.metas[0].user is None
        history = await client.history(f"dag:{uid}", since=4)
        assert [m["offset"] for m in history["messages"]] == [5, 6]
        assert subscribed and subscribed[0]["channel"] == f"dag:{uid}"
        with pytest.raises(ClientError) as forbidden:
            await client.publish(f"user:{uid}", 1)
        assert forbidden.value.code == "forbidden" and not forbidden.value.retryable
        with pytest.raises(ClientError) as no_presence:
            await client.presence(f"dag:{uid}")
        assert no_presence.value.code == "bad_request"
        assert client.state == "connected"
    assert client.state == "disconnected"
    await publisher._redis.aclose()


async def test_position_kept_across_clients_and_lost_history(gateway: Gateway,
                                                             redis_server: RedisServer, uid: str) -> None:
    channel = f"dag:{uid}"
    publisher = AsyncPublisher(redis.asyncio.Redis(port=redis_server.port))
    first = Recorder()
    client = Client(gateway.ws, token=token())
    sub = client.subscribe(channel, **first.kwargs())
    await client.connect()
    await async_wait_for("start", lambda: first.reloads)
    for n in range(1, 4):
        await publisher.publish_with_history(channel, n)
    await async_wait_for("3 messages", lambda: len(first.data) == 3)
    kept = sub.position
    assert kept is not None and kept.offset == 3
    await client.close()
    # Published while no client runs: a new client with the kept position recovers them.
    for n in range(4, 7):
        await publisher.publish_with_history(channel, n)
    second = Recorder()
    async with Client(gateway.ws, token=token()) as again:
        again.subscribe(channel, since={"epoch": kept.epoch, "offset": kept.offset}, **second.kwargs())
        await async_wait_for("the missed messages", lambda: len(second.data) == 3)
        assert second.data == [4, 5, 6] and second.reloads == []
    # The history is lost (Redis lost its data): a new epoch is reported as a reload.
    await client.connect()  # the first client again, with its subscription and position
    await async_wait_for("the first client's recovery", lambda: len(first.data) == 6)
    assert first.data == [1, 2, 3, 4, 5, 6] and len(first.reloads) == 1
    await client.close()
    r = redis_server.client()
    r.delete(f"fanout:{{{channel}}}:meta", f"fanout:{{{channel}}}:stream")
    result = await publisher.publish_with_history(channel, "new")
    assert result.offset == 1 and result.epoch != kept.epoch
    await client.connect()
    await async_wait_for("a reload", lambda: len(first.reloads) == 2)
    assert first.reloads[1].reason == "lost" and first.reloads[1].epoch == result.epoch
    assert first.reloads[1].offset == 1
    await publisher.publish_with_history(channel, "after")
    await async_wait_for("the next message", lambda: first.data[-1:] == ["after"])
    # Nothing of the old epoch's gap was invented: 1..6 of the old epoch, then "after".
    assert first.data == [1, 2, 3, 4, 5, 6, "after"]
    await client.close()
    await publisher._redis.aclose()


async def test_node_killed_behind_haproxy_every_message_once_in_order(stack: Stack, uid: str) -> None:
    """The test of the issue: the node the client is on is SIGKILLed while a numbered
    stream is published, with a burst while the client is away; every number arrives
    once, in order, without a reload, on a dag: channel and on the user's own channel."""
    total = 300
    publisher = AsyncPublisher(redis.asyncio.Redis(port=stack.redis.port))
    dag, user = Recorder(), Recorder()
    errors: List[ClientError] = []
    client = Client(stack.haproxy.ws, get_token=lambda: token(sub=uid), backoff_base=0.2,
                    backoff_cap=1.0)
    client.on("error", errors.append)
    client.subscribe(f"dag:{uid}", **dag.kwargs())
    client.subscribe(f"user:{uid}", **user.kwargs())
    nodes: List[str] = []
    client.on("connected", lambda info: nodes.append(info.node))
    await client.connect()
    await async_wait_for("both started", lambda: dag.reloads and user.reloads)

    async def publish_all() -> None:
        for n in range(1, total + 1):
            await publisher.publish_with_history(f"dag:{uid}", {"n": n})
            await publisher.publish_with_history(f"user:{uid}", {"n": n})
            await asyncio.sleep(0.005)

    publishing = asyncio.ensure_future(publish_all())
    try:
        await async_wait_for("a third of the stream", lambda: len(dag.data) >= total // 3)
        victim = stack.gateway(nodes[0])
        await asyncio.get_running_loop().run_in_executor(None, victim.kill, signal.SIGKILL)
        await async_wait_for("a reconnect to the other node", lambda: len(nodes) >= 2, timeout=30)
        await asyncio.wait_for(publishing, 60)
        await async_wait_for("every message", lambda: len(dag.data) >= total and len(user.data) >= total,
                             timeout=60)
        await asyncio.sleep(0.3)  # anything extra would show now
    finally:
        publishing.cancel()
        await client.close()
        await publisher._redis.aclose()
    assert nodes[1] != nodes[0]
    expected = [{"n": n} for n in range(1, total + 1)]
    assert dag.data == expected
    assert user.data == expected
    assert [m.offset for m in dag.metas] == list(range(1, total + 1))
    assert [r.reason for r in dag.reloads] == ["start"]
    assert [r.reason for r in user.reloads] == ["start"]
    assert not dag.errors and not user.errors


async def test_send_is_queued_acknowledged_and_survives_a_node_death(stack: Stack, uid: str) -> None:
    count = 30
    client = Client(stack.haproxy.ws, get_token=lambda: token(sub=uid), backoff_base=0.2,
                    backoff_cap=1.0)
    nodes: List[str] = []
    client.on("connected", lambda info: nodes.append(info.node))
    # Sends made before connecting wait for the connection, in order.
    early = [asyncio.ensure_future(client.send(f"dag:{uid}", {"type": "prompt", "data": {"n": n}}))
             for n in range(3)]
    await asyncio.sleep(0.2)
    assert not any(f.done() for f in early)
    await client.connect()
    receipts = list(await asyncio.wait_for(asyncio.gather(*early), 15))
    sends = [asyncio.ensure_future(client.send(f"dag:{uid}", {"n": n}, msg_id=f"m-{n}"))
             for n in range(3, count)]
    await asyncio.sleep(0.05)
    await asyncio.get_running_loop().run_in_executor(None, stack.gateway(nodes[0]).kill, signal.SIGKILL)
    receipts += await asyncio.wait_for(asyncio.gather(*sends), 60)
    await client.close()
    assert len(nodes) >= 2
    assert [r.msg_id for r in receipts[3:]] == [f"m-{n}" for n in range(3, count)]
    entries = stack.redis.client(decode_responses=True).xrange("fanout:inbox")
    import json
    seen: List[Tuple[str, Any]] = []
    for entry_id, fields in entries:
        assert fields["user"] == uid and fields["channel"] == f"dag:{uid}"
        data = json.loads(fields["data"])
        msg_id = data["data"]["client_msg_id"] if "type" in data else data["client_msg_id"]
        n = data["data"]["n"] if "type" in data else data["n"]
        seen.append((msg_id, n))
    # At least once: every send is in the inbox, each receipt names its entry, and the first
    # copies come in the order the sends were made.
    firsts: List[int] = []
    for msg_id, n in seen:
        if n not in firsts:
            firsts.append(n)
    assert firsts == list(range(count))
    stored = {entry_id for entry_id, _ in entries}
    assert all(r.stream_id in stored for r in receipts)
    assert receipts[0].msg_id == seen[0][0]


async def test_status_is_set_again_after_a_reconnect(stack: Stack, uid: str) -> None:
    channel = f"room:{uid}"
    client = Client(stack.haproxy.ws, get_token=lambda: token(sub=f"agent-{uid}"),
                    backoff_base=0.2, backoff_cap=1.0)
    nodes: List[str] = []
    client.on("connected", lambda info: nodes.append(info.node))
    client.subscribe(channel)
    await client.connect()
    await async_wait_for("subscribed", lambda: client._channels[channel].subscribed)
    await client.set_status(channel, {"state": "thinking", "detail": "flow X"})
    survivor = next(g for g in stack.gateways if g.name != nodes[0])
    presence = Presence(survivor.http, API_KEY)

    def status_on(conn_id: str) -> Any:
        return next((m.status for m in presence.members(channel).members if m.conn_id == conn_id), None)

    first_conn = client.connection.conn_id if client.connection else ""
    assert status_on(first_conn) == {"state": "thinking", "detail": "flow X"}
    await asyncio.get_running_loop().run_in_executor(None, stack.gateway(nodes[0]).kill, signal.SIGKILL)
    await async_wait_for("the reconnect", lambda: len(nodes) == 2 and client.state == "connected", timeout=30)
    second_conn = client.connection.conn_id if client.connection else ""
    assert second_conn != first_conn
    await async_wait_for("the status on the new connection",
                         lambda: status_on(second_conn) == {"state": "thinking", "detail": "flow X"})
    # Cleared: not set again.
    await client.set_status(channel, None)
    assert status_on(second_conn) is None
    await client.close()
    presence.close()


async def test_token_refresh_keeps_the_connection_open(gateway: Gateway, redis_server: RedisServer,
                                                       uid: str) -> None:
    tokens = Token(secret=SECRET)
    minted: List[float] = []

    async def get_token() -> str:
        minted.append(time.time())
        return tokens.mint(uid, channels=[f"dag:{uid}"], ttl=6)

    publisher = AsyncPublisher(redis.asyncio.Redis(port=redis_server.port))
    seen = Recorder()
    errors: List[ClientError] = []
    async with Client(gateway.ws, get_token=get_token) as client:
        client.on("error", errors.append)
        client.subscribe(f"dag:{uid}", **seen.kwargs())
        info = await client.wait_connected(10)
        await asyncio.sleep(13)  # past two expiries of a 6 s token
        assert client.connection is not None and client.connection.conn_id == info.conn_id
        assert len(minted) >= 3
        await publisher.publish_with_history(f"dag:{uid}", "still here")
        await async_wait_for("a message", lambda: seen.data == ["still here"])
    assert not errors
    await publisher._redis.aclose()


async def test_a_refused_token_without_get_token_stops(gateway: Gateway) -> None:
    errors: List[ClientError] = []
    client = Client(gateway.ws, token=Token(secret="another-secret-0123456789abcdef-xyz").mint("42"))
    client.on("error", errors.append)
    await client.connect()
    await async_wait_for("the refusal", lambda: errors)
    assert errors[0].code == "unauthorized" and errors[0].status == 401
    assert "token signature does not verify" in str(errors[0])
    await async_wait_for("the stop", lambda: client.state == "disconnected" and client._runner is not None
                         and client._runner.done())
    with pytest.raises(ClientError) as waiting:
        await Client(gateway.ws, token="x", request_timeout=0.2).history("dag:1")
    assert waiting.value.code == "timeout"
    await client.close()


async def test_presence_events_and_unsubscribe(gateway: Gateway, uid: str) -> None:
    room = f"room:{uid}"
    joins: List[Dict[str, Any]] = []
    leaves: List[Dict[str, Any]] = []
    statuses: List[Dict[str, Any]] = []
    watcher_messages = Recorder()
    async with Client(gateway.ws, token=token(sub=f"w{uid}")) as watcher, \
            Client(gateway.ws, token=token(sub=f"a{uid}", info={"kind": "agent"})) as agent:
        watcher.subscribe(room, on_join=joins.append, on_leave=leaves.append,
                          on_status=statuses.append, **watcher_messages.kwargs())
        await async_wait_for("the watcher in", lambda: watcher_messages.reloads)
        sub = agent.subscribe(room)
        await async_wait_for("the agent's join", lambda: any(j["user"] == f"a{uid}" for j in joins))
        await agent.set_status(room, {"state": "thinking"})
        await async_wait_for("its status", lambda: statuses)
        assert statuses[0]["user"] == f"a{uid}" and statuses[0]["status"] == {"state": "thinking"}
        members = await watcher.presence(room)
        assert {m["user"] for m in members["members"]} == {f"w{uid}", f"a{uid}"}
        assert (await watcher.presence_stats(room))["connections"] == 2
        # A client publish on a namespace with publish = true carries its user.
        await agent.publish(room, {"text": "hi"})
        await async_wait_for("the agent's message", lambda: watcher_messages.data)
        assert watcher_messages.metas[0].user == f"a{uid}"
        sub.unsubscribe()
        await async_wait_for("the agent's leave", lambda: any(x["user"] == f"a{uid}" for x in leaves))
        assert sub.closed and sub.position is None
        with pytest.raises(ClientError) as not_subscribed:
            await agent.set_status(room, "idle")
        assert not_subscribed.value.code == "bad_request"
