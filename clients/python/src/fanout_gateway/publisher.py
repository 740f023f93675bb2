"""Publishing through Redis with redis-py, the way docs/publishing.md describes: a plain
``PUBLISH`` (``SPUBLISH`` on a Redis Cluster) for fire-and-forget messages, and
``FCALL fanout_publish`` (the Redis Function library every fanout node loads) for messages
kept in the channel's history."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
import redis.exceptions

from . import _payload
from .channels import validate_channel
from .errors import InvalidArgumentError, LibraryNotLoadedError, RedisCommandError

__all__ = ["PublishResult", "Publisher", "AsyncPublisher"]

DEFAULT_PREFIX = "fanout:"

SyncRedis = Union[redis.Redis, redis.cluster.RedisCluster]
AsyncRedis = Union[redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster]


@dataclass(frozen=True)
class PublishResult:
    """The outcome of a publish with history.

    Attributes:
        offset: the message's offset in the channel's history (what clients see on the
            ``message`` frame); 0 when the channel keeps no history (a plain publish).
        epoch: the history's epoch the offset belongs to; ``None`` when the channel keeps
            no history, or when the HTTP API published it (it does not report the epoch).
    """

    offset: int
    epoch: Optional[str] = None

    @property
    def kept(self) -> bool:
        """Whether the message is kept in the channel's history."""
        return self.offset > 0


def _text(value: Any) -> Optional[str]:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _redis_error(error: Exception, *, idempotent: bool) -> Exception:
    """The library's exception for a redis-py one."""
    message = str(error)
    if isinstance(error, redis.exceptions.ResponseError):
        if "Function not found" in message:
            return LibraryNotLoadedError(
                "the fanout Redis Function library is not loaded on this Redis (Redis answered "
                f'"{message}"). fanout nodes load it when they start and when they reconnect to '
                "Redis: start a fanout node with --redis-url pointing at this Redis (or check that "
                "this code uses the same Redis as the nodes), then retry. Nothing was published.")
        if "unknown command" in message.lower() and "fcall" in message.lower():
            return RedisCommandError(
                f'publishing with history needs Redis 7 or later (Redis answered "{message}")',
                retryable=False)
        return RedisCommandError(f"Redis refused the command: {message}", retryable=False)
    if isinstance(error, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        return RedisCommandError(
            f"Redis could not be reached or did not answer: {message}", retryable=True,
            retry_safe=idempotent)
    return RedisCommandError(f"Redis error: {message}", retryable=False, retry_safe=idempotent)


def _offset(reply: Any, *, idempotent: bool) -> int:
    if isinstance(reply, Exception):
        raise _redis_error(reply, idempotent=idempotent) from reply
    if isinstance(reply, bool) or not isinstance(reply, int):
        raise RedisCommandError(f"unexpected reply from fanout_publish: {type(reply).__name__}")
    return reply


def _distinct(channels: Iterable[str]) -> List[str]:
    if isinstance(channels, str):
        raise InvalidArgumentError("broadcast takes a list of channels, not a string")
    out: List[str] = []
    for channel in channels:
        validate_channel(channel)
        if channel not in out:
            out.append(channel)
    if not out:
        raise InvalidArgumentError("broadcast needs at least one channel")
    return out


class _Base:
    def __init__(self, client: Any, prefix: str, cluster: bool) -> None:
        if not isinstance(prefix, str):
            raise InvalidArgumentError("prefix must be a string")
        self._redis = client
        self.prefix = prefix
        self.is_cluster = cluster

    def _fcall(self, channel: str, payload: bytes, key: Optional[str]) -> Sequence[Any]:
        if key is None:
            return ("FCALL", "fanout_publish", 1, channel, payload)
        # The fourth argument is the publishing user: empty for a backend.
        return ("FCALL", "fanout_publish", 1, channel, payload, "", key)

    def _meta_key(self, channel: str) -> str:
        return f"{self.prefix}{{{channel}}}:meta"

    def _plain(self, channel: str) -> tuple[str, str]:
        # Nodes on a Redis Cluster listen with SSUBSCRIBE, which classic PUBLISH misses.
        return ("SPUBLISH" if self.is_cluster else "PUBLISH", self.prefix + channel)

    def __repr__(self) -> str:
        kind = "cluster" if self.is_cluster else "redis"
        return f"{type(self).__name__}({kind}, prefix={self.prefix!r})"


class Publisher(_Base):
    """Publishes through a redis-py client: ``redis.Redis`` or ``redis.cluster.RedisCluster``.

    >>> publisher = Publisher(redis.Redis(host="127.0.0.1", port=6379))
    >>> publisher.publish("room:lobby", {"type": "chat", "text": "hi"})
    >>> publisher.publish_with_history("dag:7", {"type": "node_state"}).offset
    42

    ``data`` is what subscribers receive as ``data``: any JSON-encodable value, encoded
    as compact JSON; ``bytes`` are sent as they are (valid JSON arrives as that value,
    other text as a JSON string). ``prefix`` must be the nodes' ``redis_prefix``.

    The client may be your application's. Its ``decode_responses`` setting does not
    matter. redis-py retries commands after connection errors by default: give publishes
    that must not be repeated an ``idempotency_key``.
    """

    def __init__(self, redis_client: SyncRedis, prefix: str = DEFAULT_PREFIX) -> None:
        if isinstance(redis_client, (redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster)):
            raise InvalidArgumentError("Publisher takes a synchronous client: use AsyncPublisher")
        super().__init__(redis_client, prefix, isinstance(redis_client, redis.cluster.RedisCluster))

    @classmethod
    def from_url(cls, url: str, prefix: str = DEFAULT_PREFIX, **kwargs: Any) -> "Publisher":
        """A publisher on a new client: ``redis://[[user]:password@]host[:port][/db]``,
        ``rediss://`` (TLS) or ``unix://``; ``kwargs`` go to ``redis.Redis.from_url``."""
        return cls(redis.Redis.from_url(url, **kwargs), prefix)

    def publish(self, channel: str, data: Any) -> int:
        """``PUBLISH <prefix><channel>`` (``SPUBLISH`` on a cluster): delivered to the
        subscribers connected right now, at most once, never kept in history.

        Returns the number of gateway *nodes* subscribed to the channel (0: nobody listens).
        """
        validate_channel(channel)
        payload = _payload.encode(data)
        try:
            return int(self._redis.execute_command(*self._plain(channel), payload))
        except redis.exceptions.RedisError as e:
            raise _redis_error(e, idempotent=False) from e

    def publish_with_history(self, channel: str, data: Any, *,
                             idempotency_key: Union[str, bytes, None] = None) -> PublishResult:
        """``FCALL fanout_publish``: keeps the message in the channel's history and
        publishes it with its offset and epoch, atomically in Redis. On a channel without
        history it is a plain publish (offset 0).

        ``idempotency_key`` (1-256 bytes) makes the publish safe to retry: repeated with the
        same key on the same channel within the gateway's ``idempotency_window_s`` (300 s by
        default) it publishes nothing and returns the first publish's offset.

        Raises:
            LibraryNotLoadedError: no fanout node has loaded its library into this Redis.
            RedisCommandError: Redis refused it (e.g. payload too large) or was unreachable.
        """
        validate_channel(channel)
        payload = _payload.encode(data)
        key = _payload.idempotency_key(idempotency_key)
        try:
            # The epoch is read in the same transaction, so it is the offset's.
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.execute_command(*self._fcall(channel, payload, key))
                pipe.execute_command("HGET", self._meta_key(channel), "epoch")
                offset_reply, epoch_reply = pipe.execute(raise_on_error=False)
        except redis.exceptions.RedisError as e:
            raise _redis_error(e, idempotent=key is not None) from e
        offset = _offset(offset_reply, idempotent=key is not None)
        epoch = None if offset == 0 or isinstance(epoch_reply, Exception) else _text(epoch_reply)
        return PublishResult(offset, epoch)

    def broadcast(self, channels: Iterable[str], data: Any) -> int:
        """Publishes ``data`` with history (``fanout_publish``) to every channel: in one
        ``MULTI``/``EXEC`` on a single Redis; each channel on its own on a cluster (channels
        live in different slots), where an error means some may have been published.
        Every channel name is checked first. Returns the number of distinct channels."""
        names = _distinct(channels)
        payload = _payload.encode(data)
        try:
            with self._redis.pipeline(transaction=not self.is_cluster) as pipe:
                for channel in names:
                    pipe.execute_command(*self._fcall(channel, payload, None))
                replies = pipe.execute(raise_on_error=False)
        except redis.exceptions.RedisError as e:
            raise _redis_error(e, idempotent=False) from e
        for reply in replies:
            _offset(reply, idempotent=False)
        return len(names)


class AsyncPublisher(_Base):
    """:class:`Publisher` for asyncio: ``redis.asyncio.Redis`` or
    ``redis.asyncio.cluster.RedisCluster``; the same methods, awaited."""

    def __init__(self, redis_client: AsyncRedis, prefix: str = DEFAULT_PREFIX) -> None:
        if not isinstance(redis_client, (redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster)):
            raise InvalidArgumentError("AsyncPublisher takes a redis.asyncio client: use Publisher")
        super().__init__(redis_client, prefix,
                         isinstance(redis_client, redis.asyncio.cluster.RedisCluster))
        # Cluster: one small client per master, for the transactions of publish_with_history.
        self._node_clients: Dict[str, redis.asyncio.Redis] = {}

    async def _slot_transaction(self, channel: str, commands: List[Sequence[Any]]) -> List[Any]:
        """``MULTI``/``EXEC`` on the master that owns the channel's slot.

        redis-py's asyncio cluster pipelines run transactions on a private event loop in a
        thread before redis-py 8, which fails for ``FCALL`` (its keys are found with
        ``COMMAND GETKEYS``, on a connection of the caller's loop). So the transaction goes to
        the slot's master directly, on a client made from that node's own connection
        settings; a slot that moved meanwhile (MOVED) refreshes the slot map and tries again.
        """
        rc = self._redis
        await rc.initialize()
        for attempt in range(3):
            node = rc.get_node_from_key(channel)
            if node is None:  # pragma: no cover - every slot is covered once initialized
                raise redis.exceptions.ClusterError(f"no node serves the slot of {channel}")
            client = self._node_clients.get(node.name)
            if client is None:
                pool = redis.asyncio.ConnectionPool(connection_class=node.connection_class,
                                                    max_connections=4, **node.connection_kwargs)
                client = self._node_clients[node.name] = redis.asyncio.Redis(connection_pool=pool)
            try:
                async with client.pipeline(transaction=True) as pipe:
                    for command in commands:
                        pipe.execute_command(*command)
                    return list(await pipe.execute(raise_on_error=False))
            except (redis.exceptions.ResponseError, redis.exceptions.ConnectionError) as e:
                text = str(e)
                moved = "MOVED" in text or "ASK" in text or "EXECABORT" in text
                if attempt == 2 or not (moved or isinstance(e, redis.exceptions.ConnectionError)):
                    raise
                # Let the cluster client follow the redirection and learn the new slot map.
                await rc.execute_command("EXISTS", self._meta_key(channel))
                stale = self._node_clients.pop(node.name, None)
                if stale is not None:
                    await stale.aclose()
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        """Closes the per-node clients of a cluster publisher (not the client you gave)."""
        clients, self._node_clients = list(self._node_clients.values()), {}
        for client in clients:
            await client.aclose()

    @classmethod
    def from_url(cls, url: str, prefix: str = DEFAULT_PREFIX, **kwargs: Any) -> "AsyncPublisher":
        """A publisher on a new ``redis.asyncio.Redis`` client (see :meth:`Publisher.from_url`)."""
        return cls(redis.asyncio.Redis.from_url(url, **kwargs), prefix)

    async def publish(self, channel: str, data: Any) -> int:
        """See :meth:`Publisher.publish`."""
        validate_channel(channel)
        payload = _payload.encode(data)
        try:
            return int(await self._redis.execute_command(*self._plain(channel), payload))
        except redis.exceptions.RedisError as e:
            raise _redis_error(e, idempotent=False) from e

    async def publish_with_history(self, channel: str, data: Any, *,
                                   idempotency_key: Union[str, bytes, None] = None) -> PublishResult:
        """See :meth:`Publisher.publish_with_history`."""
        validate_channel(channel)
        payload = _payload.encode(data)
        key = _payload.idempotency_key(idempotency_key)
        commands = [self._fcall(channel, payload, key), ("HGET", self._meta_key(channel), "epoch")]
        try:
            if self.is_cluster:
                offset_reply, epoch_reply = await self._slot_transaction(channel, commands)
            else:
                async with self._redis.pipeline(transaction=True) as pipe:
                    for command in commands:
                        pipe.execute_command(*command)
                    offset_reply, epoch_reply = await pipe.execute(raise_on_error=False)
        except redis.exceptions.RedisError as e:
            raise _redis_error(e, idempotent=key is not None) from e
        offset = _offset(offset_reply, idempotent=key is not None)
        epoch = None if offset == 0 or isinstance(epoch_reply, Exception) else _text(epoch_reply)
        return PublishResult(offset, epoch)

    async def broadcast(self, channels: Iterable[str], data: Any) -> int:
        """See :meth:`Publisher.broadcast`."""
        names = _distinct(channels)
        payload = _payload.encode(data)
        try:
            async with self._redis.pipeline(transaction=not self.is_cluster) as pipe:
                for channel in names:
                    pipe.execute_command(*self._fcall(channel, payload, None))
                replies = await pipe.execute(raise_on_error=False)
        except redis.exceptions.RedisError as e:
            raise _redis_error(e, idempotent=False) from e
        for reply in replies:
            _offset(reply, idempotent=False)
        return len(names)
