"""Publisher and AsyncPublisher on a real redis-server and on a real 6-process Redis
Cluster, observed by a raw WebSocket client of the real gateway."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from fanout_gateway import (AsyncPublisher, InvalidArgumentError, LibraryNotLoadedError,
                            Publisher, RedisCommandError)
from support import Gateway, RawClient, RedisCluster, RedisServer, token


async def test_publish_reaches_subscribers_with_the_payload_rule(gateway: Gateway,
                                                                 redis_server: RedisServer,
                                                                 uid: str) -> None:
    publisher = Publisher(redis_server.client())
    channel = f"room:{uid}"
    client = await RawClient.connect(gateway.ws, token())
    try:
        await client.subscribe(channel)
        assert publisher.publish(channel, {"type": "chat", "text": "hi"}) == 1
        assert publisher.publish(channel, "hello") == 1          # a str is a JSON string
        assert publisher.publish(channel, b'{"raw": [1, 2]}') == 1  # bytes go as they are
        assert publisher.publish(channel, b"plain text") == 1
        messages = await client.wait_messages(channel, 4)
        assert [m["data"] for m in messages] == [{"type": "chat", "text": "hi"}, "hello",
                                                 {"raw": [1, 2]}, "plain text"]
        assert all("offset" not in m for m in messages)
        assert publisher.publish(f"room:{uid}-nobody", 1) == 0
    finally:
        await client.close()


async def test_publish_with_history_returns_the_offset_and_epoch_clients_see(
        gateway: Gateway, redis_server: RedisServer, uid: str) -> None:
    publisher = Publisher(redis_server.client(decode_responses=True))
    channel = f"dag:{uid}"
    client = await RawClient.connect(gateway.ws, token())
    try:
        await client.subscribe(channel)
        results = [publisher.publish_with_history(channel, {"n": n}) for n in range(1, 4)]
        assert [r.offset for r in results] == [1, 2, 3]
        assert all(r.kept for r in results)
        messages = await client.wait_messages(channel, 3)
        assert [(m["offset"], m["epoch"], m["data"]) for m in messages] == \
            [(r.offset, r.epoch, {"n": n}) for n, r in enumerate(results, 1)]
        # A fresh subscriber recovers from a position the publisher reported.
        late = await RawClient.connect(gateway.ws, token())
        reply = await late.subscribe(channel, since={"offset": results[0].offset,
                                                      "epoch": results[0].epoch})
        assert reply["recovered"] is True
        assert [m["data"] for m in await late.wait_messages(channel, 2)] == [{"n": 2}, {"n": 3}]
        await late.close()
        # No history on room:: offset 0, no epoch.
        plain = publisher.publish_with_history(f"room:{uid}", {"x": 1})
        assert (plain.offset, plain.epoch, plain.kept) == (0, None, False)
    finally:
        await client.close()


async def test_idempotency_key_publishes_once(gateway: Gateway, redis_server: RedisServer,
                                              uid: str) -> None:
    publisher = Publisher(redis_server.client())
    channel = f"dag:{uid}"
    client = await RawClient.connect(gateway.ws, token())
    try:
        await client.subscribe(channel)
        first = publisher.publish_with_history(channel, {"step": 1}, idempotency_key=f"job-{uid}:1")
        again = publisher.publish_with_history(channel, {"step": 1}, idempotency_key=f"job-{uid}:1")
        other = publisher.publish_with_history(channel, {"step": 2}, idempotency_key=f"job-{uid}:2")
        assert (first.offset, again.offset, other.offset) == (1, 1, 2)
        assert again.epoch == first.epoch
        messages = await client.wait_messages(channel, 2)
        assert [m["data"] for m in messages] == [{"step": 1}, {"step": 2}]
        with pytest.raises(InvalidArgumentError, match="1 to 256 bytes"):
            publisher.publish_with_history(channel, 1, idempotency_key="k" * 257)
    finally:
        await client.close()


async def test_broadcast_reaches_every_channel(gateway: Gateway, redis_server: RedisServer,
                                               uid: str) -> None:
    publisher = AsyncPublisher(redis.asyncio.Redis(port=redis_server.port))
    channels = [f"user:{uid}", f"dag:{uid}", f"room:{uid}"]
    client = await RawClient.connect(gateway.ws, token(sub=uid))
    try:
        for channel in channels[1:]:
            await client.subscribe(channel)
        await client.subscribe(channels[0], since={"offset": 0, "epoch": ""})
        assert await publisher.broadcast([*channels, channels[0]], {"type": "task_update"}) == 3
        for channel in channels:
            [message] = await client.wait_messages(channel, 1)
            assert message["data"] == {"type": "task_update"}
        assert (await publisher.publish_with_history(f"dag:{uid}", 2)).offset == 2
        assert await publisher.publish(f"room:{uid}", 3) == 1
        await client.wait_messages(f"room:{uid}", 2)
    finally:
        await client.close()
        await publisher._redis.aclose()


def test_errors_are_typed_and_nothing_is_published(redis_server: RedisServer, uid: str) -> None:
    publisher = Publisher(redis_server.client())
    with pytest.raises(InvalidArgumentError, match="invalid channel"):
        publisher.publish("Room:x", 1)
    with pytest.raises(InvalidArgumentError, match="NUL"):
        publisher.publish_with_history(f"dag:{uid}", b"\0forged")
    with pytest.raises(InvalidArgumentError, match="JSON-encodable"):
        publisher.publish(f"room:{uid}", {"x": object()})
    with pytest.raises(InvalidArgumentError, match="at least one"):
        publisher.broadcast([], 1)
    with pytest.raises(InvalidArgumentError):
        Publisher(redis.asyncio.Redis())  # type: ignore[arg-type]
    # The gateway's max_payload_bytes (256 KiB) is enforced by the library in Redis.
    with pytest.raises(RedisCommandError, match="max_payload_bytes") as too_large:
        publisher.publish_with_history(f"dag:{uid}", "x" * 300_000)
    assert not too_large.value.retryable


def test_a_redis_without_the_library_says_so() -> None:
    bare = RedisServer()
    try:
        publisher = Publisher(bare.client())
        with pytest.raises(LibraryNotLoadedError, match="start a fanout node") as missing:
            publisher.publish_with_history("dag:1", {"x": 1})
        assert missing.value.retryable and missing.value.retry_safe
        with pytest.raises(LibraryNotLoadedError):
            publisher.broadcast(["dag:1", "user:2"], 1)
        assert bare.client().xlen("fanout:{dag:1}:stream") == 0
    finally:
        bare.stop()


def test_an_unreachable_redis_is_a_retryable_error() -> None:
    from support import free_port
    publisher = Publisher(redis.Redis(port=free_port(), socket_connect_timeout=1))
    with pytest.raises(RedisCommandError) as down:
        publisher.publish_with_history("dag:1", 1)
    assert down.value.retryable and not down.value.retry_safe
    with pytest.raises(RedisCommandError) as keyed:
        publisher.publish_with_history("dag:1", 1, idempotency_key="k")
    assert keyed.value.retry_safe


# ---------------------------------------------------------------- Redis Cluster

@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    c = RedisCluster()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def cluster_gateway(cluster: RedisCluster) -> Iterator[Gateway]:
    gw = Gateway(cluster=cluster, name="py-cluster")
    yield gw
    gw.stop()


def _cluster_client(cluster: RedisCluster, **kwargs: Any) -> redis.cluster.RedisCluster:
    node: Any = redis.cluster.ClusterNode
    return redis.cluster.RedisCluster(
        startup_nodes=[node("127.0.0.1", p) for p in cluster.ports[:2]], **kwargs)


async def test_cluster_publisher(cluster: RedisCluster, cluster_gateway: Gateway, uid: str) -> None:
    publisher = Publisher(_cluster_client(cluster, decode_responses=True))
    assert publisher.is_cluster
    # Channels in many slots, hence on every shard.
    dags = [f"dag:{uid}-{i}" for i in range(8)]
    room = f"room:{uid}"
    client = await RawClient.connect(cluster_gateway.ws, token())
    try:
        for channel in [*dags, room]:
            await client.subscribe(channel)
        # Plain publish goes by SPUBLISH, which the nodes' SSUBSCRIBE receives.
        assert publisher.publish(room, {"hi": 1}) == 1
        assert (await client.wait_messages(room, 1))[0]["data"] == {"hi": 1}
        for i, channel in enumerate(dags):
            result = publisher.publish_with_history(channel, {"i": i},
                                                    idempotency_key=f"k-{i}")
            assert result.offset == 1 and result.epoch
            again = publisher.publish_with_history(channel, {"i": i}, idempotency_key=f"k-{i}")
            assert again == result
            [message] = await client.wait_messages(channel, 1)
            assert (message["offset"], message["epoch"], message["data"]) == (1, result.epoch, {"i": i})
        assert publisher.broadcast(dags, {"all": True}) == len(dags)
        for channel in dags:
            messages = await client.wait_messages(channel, 2)
            assert [m["offset"] for m in messages] == [1, 2]
    finally:
        await client.close()


async def test_async_cluster_publisher(cluster: RedisCluster, cluster_gateway: Gateway,
                                       uid: str) -> None:
    rc = redis.asyncio.cluster.RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    publisher = AsyncPublisher(rc)
    assert publisher.is_cluster
    channels = [f"user:{uid}-{i}" for i in range(4)]
    client = await RawClient.connect(cluster_gateway.ws, token())
    try:
        for channel in channels:
            await client.subscribe(channel)
        results = [await publisher.publish_with_history(c, {"c": c}) for c in channels]
        assert all(r.offset == 1 and r.epoch for r in results)
        assert await publisher.broadcast(channels, "all") == 4
        for channel, result in zip(channels, results):
            messages = await client.wait_messages(channel, 2)
            assert [(m["offset"], m["epoch"]) for m in messages] == [(1, result.epoch), (2, result.epoch)]
            assert messages[1]["data"] == "all"
        assert await publisher.publish(f"room:{uid}", 1) == 0
    finally:
        await client.close()
        await publisher.aclose()
        await rc.aclose()
