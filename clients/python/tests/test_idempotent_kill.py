"""Idempotent publish across a Redis connection kill: the publisher's connection is killed
with CLIENT KILL after Redis carried out the publish and before its reply reached the
publisher. redis-py retries on the next connection; with an idempotency key the retry
publishes nothing and returns the first offset, without one the message is published
twice (the control that shows the kill does what it should)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any, List, Optional

import pytest
import redis
import redis.asyncio
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.asyncio.retry import Retry as AsyncRetry

from fanout_gateway import AsyncPublisher, Publisher
from support import Gateway, RawClient, RedisServer, token


class ReplyLosingProxy:
    """A loopback TCP proxy to Redis. Once armed, it forwards the next request that calls
    ``fanout_publish``, waits for Redis's complete reply to the transaction (so the publish
    was carried out), throws the reply away, and has Redis kill the connection with
    ``CLIENT KILL ADDR``; the publisher sees its connection drop without a reply."""

    def __init__(self, redis_port: int) -> None:
        self.redis_port = redis_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed = threading.Event()
        self.kills = 0
        self.closed = False
        self.threads: List[threading.Thread] = []
        self.sockets: List[socket.socket] = []
        self._spawn(self._accept)

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _accept(self) -> None:
        while not self.closed:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.redis_port))
            self.sockets += [downstream, upstream]
            pair = _Pair()
            self._spawn(self._client_to_redis, downstream, upstream, pair)
            self._spawn(self._redis_to_client, upstream, downstream, pair)

    def _client_to_redis(self, downstream: socket.socket, upstream: socket.socket, pair: "_Pair") -> None:
        while True:
            try:
                data = downstream.recv(65536)
            except OSError:
                data = b""
            if not data:
                _close(upstream)
                return
            if self.armed.is_set() and b"fanout_publish" in data:
                self.armed.clear()
                self._lose_reply(data, downstream, upstream, pair)
                return
            try:
                upstream.sendall(data)
            except OSError:
                return

    def _lose_reply(self, request: bytes, downstream: socket.socket, upstream: socket.socket,
                    pair: "_Pair") -> None:
        pair.swallow = True
        upstream.sendall(request)
        # MULTI/FCALL/HGET/EXEC: +OK, +QUEUED, +QUEUED, then EXEC's two-element array.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and b"*2\r\n" not in pair.seen:
            time.sleep(0.005)
        assert b"*2\r\n" in pair.seen, "Redis did not answer the publish"
        addr = "%s:%d" % upstream.getsockname()
        admin: Any = redis.Redis(port=self.redis_port)
        killed = admin.execute_command("CLIENT", "KILL", "ADDR", addr)
        assert killed in (b"OK", "OK", 1, True), killed
        self.kills += 1
        _close(downstream)

    def _redis_to_client(self, upstream: socket.socket, downstream: socket.socket, pair: "_Pair") -> None:
        while True:
            try:
                data = upstream.recv(65536)
            except OSError:
                data = b""
            if not data:
                _close(downstream)
                return
            if pair.swallow:
                pair.seen += data
                continue
            try:
                downstream.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.closed = True
        _close(self.listener)
        for s in self.sockets:
            _close(s)


class _Pair:
    """One proxied connection: whether Redis's replies are being thrown away."""

    def __init__(self) -> None:
        self.swallow = False
        self.seen = b""


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()


def _retry() -> Retry:
    return Retry(ExponentialBackoff(cap=0.2, base=0.02), 3)


@pytest.fixture
def proxy(redis_server: RedisServer) -> Any:
    p = ReplyLosingProxy(redis_server.port)
    yield p
    p.close()


@pytest.mark.parametrize("keyed", [True, False], ids=["with-key", "without-key-control"])
async def test_publish_retried_after_client_kill(keyed: bool, proxy: ReplyLosingProxy,
                                                 gateway: Gateway, redis_server: RedisServer,
                                                 uid: str) -> None:
    channel = f"dag:{uid}"
    publisher = Publisher(redis.Redis(port=proxy.port, retry=_retry(), socket_timeout=5))
    observer = await RawClient.connect(gateway.ws, token())
    try:
        await observer.subscribe(channel)
        assert publisher.publish_with_history(channel, {"n": 0}).offset == 1
        proxy.armed.set()
        key: Optional[str] = f"run-{uid}:step-1" if keyed else None
        result = await asyncio.get_running_loop().run_in_executor(
            None, lambda: publisher.publish_with_history(channel, {"n": 1}, idempotency_key=key))
        assert proxy.kills == 1, "the connection was not killed"
        stream = redis_server.client().xrange(f"fanout:{{{channel}}}:stream")
        if keyed:
            # Carried out once: the retry returned the first publish's offset.
            assert result.offset == 2 and len(stream) == 2
            after = publisher.publish_with_history(channel, {"n": 2})
            assert after.offset == 3 and after.epoch == result.epoch
            messages = await observer.wait_messages(channel, 3)
            assert [(m["offset"], m["data"]) for m in messages] == [(1, {"n": 0}), (2, {"n": 1}),
                                                                    (3, {"n": 2})]
        else:
            # The control: the same kill without a key publishes the message twice.
            assert result.offset == 3 and len(stream) == 3
            messages = await observer.wait_messages(channel, 3)
            assert [m["data"] for m in messages] == [{"n": 0}, {"n": 1}, {"n": 1}]
    finally:
        await observer.close()


async def test_async_publish_retried_after_client_kill(proxy: ReplyLosingProxy, gateway: Gateway,
                                                       redis_server: RedisServer, uid: str) -> None:
    channel = f"user:{uid}"
    client = redis.asyncio.Redis(port=proxy.port, socket_timeout=5,
                                 retry=AsyncRetry(ExponentialBackoff(cap=0.2, base=0.02), 3))
    publisher = AsyncPublisher(client)
    try:
        first = await publisher.publish_with_history(channel, "a", idempotency_key="a")
        proxy.armed.set()
        second = await publisher.publish_with_history(channel, "b", idempotency_key="b")
        assert proxy.kills == 1
        assert (first.offset, second.offset) == (1, 2)
        assert second.epoch == first.epoch
        assert redis_server.client().xlen(f"fanout:{{{channel}}}:stream") == 2
    finally:
        await client.aclose()
