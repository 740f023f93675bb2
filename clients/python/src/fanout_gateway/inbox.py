"""A worker of a Redis consumer group on the inbox stream, where the gateway appends what
clients ``send`` (docs/publishing.md, "Reading what clients send").

Each entry goes to one worker of the group. An entry is acknowledged (``XACK``) only after
it was handled; a handler that raises leaves it pending, and so does a worker that dies.
Pending entries idle for ``claim_idle_ms`` are taken over (``XAUTOCLAIM``) by a running
worker of the group and handled again: every entry is handled at least once. An entry
delivered ``max_deliveries`` times without being acknowledged is moved to a dead-letter
stream instead of being handed out again.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import random
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import (Any, AsyncGenerator, AsyncIterator, Awaitable, Callable, Dict, Iterator, List, Optional,
                    Sequence, Tuple, Union)

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
import redis.exceptions

from .errors import InvalidArgumentError, RedisCommandError

__all__ = ["InboxMessage", "Inbox", "AsyncInbox", "DEFAULT_STREAM"]

DEFAULT_STREAM = "fanout:inbox"
"""The inbox stream of the default prefix: ``<redis_prefix>inbox``."""

log = logging.getLogger("fanout_gateway.inbox")


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class InboxMessage:
    """One entry of the inbox.

    Attributes:
        id: the stream entry id (the client's ``sent.stream_id``), e.g. ``1732226400123-0``.
        stream: the stream it came from.
        channel: the channel the client sent on.
        user: the sender's user id, from its token: act as this user, never as a user id
            found in ``data``.
        conn_id: the sender's connection; node: the node that received it.
        received_at: Unix milliseconds.
        data: the client's ``data``, JSON-decoded.
        raw_data: the same, as the JSON text the client wrote.
        deliveries: how many times the group handed this entry out, this time included
            (1 the first time).
        fields: every field of the stream entry.
    """

    id: str
    stream: str
    channel: str
    user: str
    conn_id: str
    node: str
    received_at: int
    data: Any
    raw_data: str
    deliveries: int = 1
    fields: Dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def type(self) -> Optional[str]:
        """``data["type"]`` when it is a string (the event catalogue's convention)."""
        if isinstance(self.data, dict) and isinstance(self.data.get("type"), str):
            return str(self.data["type"])
        return None

    @property
    def redelivered(self) -> bool:
        """It was handed out before without being acknowledged."""
        return self.deliveries > 1

    def age(self) -> float:
        """Seconds since the gateway received it."""
        return max(0.0, time.time() - self.received_at / 1000)

    @classmethod
    def _from_entry(cls, stream: str, entry_id: str, raw: Any, deliveries: int) -> "InboxMessage":
        fields: Dict[str, str] = {}
        if isinstance(raw, dict):
            fields = {_text(k): _text(v) for k, v in raw.items()}
        elif isinstance(raw, (list, tuple)):
            fields = {_text(raw[i]): _text(raw[i + 1]) for i in range(0, len(raw) - 1, 2)}
        raw_data = fields.get("data", "null")
        try:
            data = json.loads(raw_data)
        except ValueError:
            data = raw_data
        try:
            received_at = int(fields.get("received_at", "0"))
        except ValueError:
            received_at = 0
        return cls(entry_id, stream, fields.get("channel", ""), fields.get("user", ""),
                   fields.get("conn_id", ""), fields.get("node", ""), received_at, data,
                   raw_data, deliveries, fields)


def _socket_timeout(client: Any) -> Optional[float]:
    """The socket timeout of a redis-py client (single server or cluster), if any."""
    kwargs: Any = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None)
    if kwargs is None:
        kwargs = getattr(client, "connection_kwargs", None)
    if kwargs is None:
        kwargs = getattr(getattr(client, "nodes_manager", None), "connection_kwargs", None)
    timeout = kwargs.get("socket_timeout") if isinstance(kwargs, dict) else None
    return float(timeout) if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) else None


def _default_on_error(error: BaseException, message: InboxMessage) -> None:
    # The entry id, channel and user; never the data.
    log.error("fanout inbox: handler failed for entry %s (channel %s, user %s, delivery %d), "
              "left pending: %s: %s", message.id, message.channel, message.user,
              message.deliveries, type(error).__name__, error)


Entries = List[Tuple[str, Any]]


class _Core:
    """What both workers share: settings, commands, replies."""

    def __init__(self, redis_client: Any, group: str, *, consumer: Optional[str], stream: str,
                 batch_size: int, block_ms: int, claim_idle_ms: int,
                 max_deliveries: Optional[int], dead_letter_stream: Optional[str],
                 delete_after_ack: bool, start_id: str, handle_signals: bool,
                 on_error: Optional[Callable[[BaseException, InboxMessage], Any]]) -> None:
        for name, value in (("group", group), ("stream", stream), ("start_id", start_id)):
            if not isinstance(value, str) or not value:
                raise InvalidArgumentError(f"{name} must be a non-empty string")
        for name, number in (("batch_size", batch_size), ("block_ms", block_ms),
                             ("claim_idle_ms", claim_idle_ms)):
            if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                raise InvalidArgumentError(f"{name} must be a positive integer")
        if max_deliveries is not None and (isinstance(max_deliveries, bool)
                                           or not isinstance(max_deliveries, int)
                                           or max_deliveries < 1):
            raise InvalidArgumentError("max_deliveries must be a positive integer or None")
        # A blocked XREADGROUP must return before the client's socket timeout (redis-py 8
        # sets 5 s by default): block a little less than it.
        timeout = _socket_timeout(redis_client)
        if timeout is not None:
            if timeout < 1:
                raise InvalidArgumentError(
                    f"the Redis client's socket_timeout ({timeout} s) is too short for blocking "
                    "reads: give the inbox a client of its own with socket_timeout of 1 s or more "
                    "(or None)")
            block_ms = min(block_ms, int(timeout * 1000) - max(500, int(timeout * 200)))
        self._redis = redis_client
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.stream = stream
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.max_deliveries = max_deliveries
        self.dead_letter_stream = dead_letter_stream or f"{stream}:dead"
        if self.dead_letter_stream == stream:
            raise InvalidArgumentError("the dead-letter stream must differ from the inbox stream")
        self.delete_after_ack = delete_after_ack
        self.start_id = start_id
        self.handle_signals = handle_signals
        self.on_error = on_error or _default_on_error
        # Sweep for stale entries twice per idle period, but not in a busy loop.
        self.claim_every_s = min(max(claim_idle_ms / 2000, 0.1), 30.0)
        self.handled = 0

    def _group_create(self) -> Sequence[Any]:
        return ("XGROUP", "CREATE", self.stream, self.group, self.start_id, "MKSTREAM")

    def _read(self, after: str, count: int, block_ms: Optional[int]) -> Sequence[Any]:
        args: List[Any] = ["XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count]
        if block_ms is not None:
            args += ["BLOCK", block_ms]
        return args + ["STREAMS", self.stream, after]

    def _claim(self, cursor: str, count: int) -> Sequence[Any]:
        return ("XAUTOCLAIM", self.stream, self.group, self.consumer, self.claim_idle_ms, cursor,
                "COUNT", count)

    @staticmethod
    def _read_reply(reply: Any) -> Entries:
        # RESP2: [[stream, [[id, fields], ...]]]; RESP3: {stream: [[id, fields], ...]}.
        if not reply:
            return []
        if isinstance(reply, dict):
            batches = list(reply.values())
        else:
            batches = [b[1] for b in reply if isinstance(b, (list, tuple)) and len(b) > 1]
        out: Entries = []
        for batch in batches:
            for entry in batch or []:
                out.append((_text(entry[0]), entry[1]))
        return out

    @staticmethod
    def _claim_reply(reply: Any) -> Tuple[str, Entries]:
        if not isinstance(reply, (list, tuple)) or len(reply) < 2:
            raise RedisCommandError("unexpected XAUTOCLAIM reply (Redis 6.2 or later is needed)")
        entries: Entries = [(_text(e[0]), e[1]) for e in reply[1] or [] if e]
        return _text(reply[0]), entries

    @staticmethod
    def _deliveries_reply(reply: Any) -> Optional[int]:
        for row in reply or []:
            if isinstance(row, dict):
                return int(row.get("times_delivered", 1))
            if isinstance(row, (list, tuple)) and len(row) >= 4:
                return int(row[3])
        return None

    def _dead_letter_fields(self, entry_id: str, raw: Any, deliveries: int) -> Dict[str, Any]:
        message = InboxMessage._from_entry(self.stream, entry_id, raw, deliveries)
        fields: Dict[str, Any] = dict(message.fields)
        fields.update({"dead_stream": self.stream, "dead_id": entry_id, "dead_group": self.group,
                       "dead_deliveries": str(deliveries),
                       "dead_at": str(int(time.time() * 1000))})
        return fields

    def _room(self, max_messages: Optional[int]) -> int:
        if max_messages is None:
            return self.batch_size
        return max(1, min(self.batch_size, max_messages - self.handled))

    @staticmethod
    def _group_gone(error: Exception) -> bool:
        text = str(error)
        return "NOGROUP" in text or "UNBLOCKED" in text

    @staticmethod
    def _transient(error: Exception) -> bool:
        return isinstance(error, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(stream={self.stream!r}, group={self.group!r}, "
                f"consumer={self.consumer!r})")


class _Signals:
    """Stops a worker on SIGTERM/SIGINT while it runs, chaining any other handler (a web
    server's) and restoring the previous handlers afterwards. Main thread only."""

    def __init__(self, stop: Callable[[], None]) -> None:
        self._stop = stop
        self._previous: Dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(signum)
            self._previous[signum] = previous

            def handler(signo: int, frame: Optional[FrameType], previous: Any = previous) -> None:
                self._stop()
                if callable(previous) and previous is not signal.default_int_handler:
                    previous(signo, frame)

            signal.signal(signum, handler)

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()


class Inbox(_Core):
    """A synchronous inbox worker over ``redis.Redis`` (or ``RedisCluster``).

    >>> inbox = Inbox(redis.Redis(), group="decisions")
    >>> inbox.run(handle)            # handle(message) -> None; acknowledged when it returns

    or, acknowledging yourself::

        for message in inbox:
            ...
            inbox.ack(message)

    Args:
        redis_client: a client of its own (it blocks in ``XREADGROUP`` for ``block_ms``),
            to the Redis the gateway nodes use, with ``socket_timeout`` None or above
            ``block_ms``.
        group: the consumer group, one per application.
        consumer: this worker's name in the group, unique among running workers. Default
            ``<hostname>-<pid>``; a stable name lets a restarted worker take back its
            pending entries at once.
        stream: ``<redis_prefix>inbox`` (``fanout:inbox``), or a namespace's ``inbox``.
        batch_size: entries per read. block_ms: longest wait per read (and the longest a
            stop may take while blocked, in this synchronous worker); kept below the
            client's ``socket_timeout`` (redis-py 8 sets 5 s by default).
        claim_idle_ms: entries pending this long are taken over: longer than your slowest
            handler.
        max_deliveries: an entry handed out this many times without being acknowledged is
            moved to ``dead_letter_stream`` (default ``<stream>:dead``) the next time,
            with its fields and ``dead_stream``, ``dead_id``, ``dead_group``,
            ``dead_deliveries``, ``dead_at``. None: retried forever.
        delete_after_ack: ``XDEL`` after ``XACK`` (the gateway never trims the inbox).
        start_id: where a group this worker creates starts: ``0`` every entry already
            there, ``$`` only new ones.
        handle_signals: stop gracefully on SIGTERM/SIGINT while running (main thread only;
            other handlers, e.g. a web server's, are still called).
        on_error: ``f(error, message)``, told of every handler failure; by default logged
            (entry id, channel, user; never the data) to the ``fanout_gateway.inbox`` logger.
    """

    def __init__(self, redis_client: Union[redis.Redis, redis.cluster.RedisCluster], group: str, *,
                 consumer: Optional[str] = None, stream: str = DEFAULT_STREAM, batch_size: int = 10,
                 block_ms: int = 5000, claim_idle_ms: int = 60_000, max_deliveries: Optional[int] = 5,
                 dead_letter_stream: Optional[str] = None, delete_after_ack: bool = False,
                 start_id: str = "0", handle_signals: bool = True,
                 on_error: Optional[Callable[[BaseException, InboxMessage], Any]] = None) -> None:
        if isinstance(redis_client, (redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster)):
            raise InvalidArgumentError("Inbox takes a synchronous client: use AsyncInbox")
        super().__init__(redis_client, group, consumer=consumer, stream=stream,
                         batch_size=batch_size, block_ms=block_ms, claim_idle_ms=claim_idle_ms,
                         max_deliveries=max_deliveries, dead_letter_stream=dead_letter_stream,
                         delete_after_ack=delete_after_ack, start_id=start_id,
                         handle_signals=handle_signals, on_error=on_error)
        self._stopping = threading.Event()

    def stop(self) -> None:
        """Asks the worker to stop after the current entry; safe from a handler, another
        thread or a signal handler."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called (or a signal received) since the run started."""
        return self._stopping.is_set()

    def _command(self, *args: Any) -> Any:
        try:
            return self._redis.execute_command(*args)
        except redis.exceptions.ResponseError as e:
            if not self._group_gone(e):
                raise
        # The stream and group are gone (deleted, or Redis lost its data): create them again.
        self.ensure_group()
        return self._redis.execute_command(*args)

    def ensure_group(self) -> None:
        """Creates the consumer group (and the stream) unless it exists."""
        try:
            self._redis.execute_command(*self._group_create())
        except redis.exceptions.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise RedisCommandError(f"XGROUP CREATE failed: {e}") from e

    def ack(self, message: InboxMessage) -> None:
        """Acknowledges an entry (and deletes it with ``delete_after_ack``)."""
        try:
            self._redis.execute_command("XACK", self.stream, self.group, message.id)
        except redis.exceptions.ResponseError as e:
            if "NOGROUP" in str(e):
                return  # the stream went away meanwhile: nothing left to acknowledge
            raise
        if self.delete_after_ack:
            self._redis.execute_command("XDEL", self.stream, message.id)

    def _deliveries(self, entry_id: str) -> int:
        try:
            reply = self._redis.xpending_range(self.stream, self.group, entry_id, entry_id, 1)
        except redis.exceptions.ResponseError as e:
            if not self._group_gone(e):
                raise
            return 1
        return self._deliveries_reply(reply) or 1

    def _dead_letter(self, entry_id: str, raw: Any, deliveries: int) -> None:
        fields = self._dead_letter_fields(entry_id, raw, deliveries)
        with self._redis.pipeline(transaction=not isinstance(self._redis, redis.cluster.RedisCluster)) as pipe:
            pipe.xadd(self.dead_letter_stream, fields)
            pipe.xack(self.stream, self.group, entry_id)
            if self.delete_after_ack:
                pipe.xdel(self.stream, entry_id)
            pipe.execute()
        log.warning("fanout inbox: entry %s (channel %s, user %s) moved to %s after %d deliveries",
                    entry_id, fields.get("channel"), fields.get("user"), self.dead_letter_stream,
                    deliveries)

    def _messages(self, entries: Entries, redelivered: bool) -> Iterator[InboxMessage]:
        for entry_id, raw in entries:
            if raw is None:
                # Deleted (XDEL, XTRIM) while pending: nothing left to handle.
                self._command("XACK", self.stream, self.group, entry_id)
                continue
            deliveries = self._deliveries(entry_id) if redelivered else 1
            if self.max_deliveries is not None and deliveries > self.max_deliveries:
                self._dead_letter(entry_id, raw, deliveries)
                continue
            yield InboxMessage._from_entry(self.stream, entry_id, raw, deliveries)

    def _batches(self, max_messages: Optional[int], deadline: Optional[float]) -> Iterator[Tuple[Entries, bool]]:
        def going() -> bool:
            return (not self._stopping.is_set()
                    and (max_messages is None or self.handled < max_messages)
                    and (deadline is None or time.monotonic() < deadline))

        self.ensure_group()
        # First the entries this consumer name was given before and never acknowledged.
        after = "0"
        while going():
            entries = self._read_reply(self._command(*self._read(after, self._room(max_messages), None)))
            if not entries:
                break
            yield entries, True
            after = entries[-1][0]
        cursor, next_claim = "0-0", 0.0
        failures = 0
        while going():
            try:
                if time.monotonic() >= next_claim:
                    cursor, entries = self._claim_reply(self._command(*self._claim(cursor, self._room(max_messages))))
                    if cursor == "0-0":
                        next_claim = time.monotonic() + self.claim_every_s
                    failures = 0
                    yield entries, True
                    continue
                until = next_claim if deadline is None else min(next_claim, deadline)
                block = max(1, min(self.block_ms, int((until - time.monotonic()) * 1000) + 1))
                entries = self._read_reply(self._command(*self._read(">", self._room(max_messages), block)))
                failures = 0
                yield entries, False
            except redis.exceptions.RedisError as e:
                if not self._transient(e):
                    raise RedisCommandError(f"the inbox worker failed: {e}") from e
                failures += 1
                delay = random.uniform(0, min(5.0, 0.1 * 2 ** min(failures, 6)))
                log.warning("fanout inbox: Redis unreachable (%s); retrying in %.1f s", e, delay)
                self._stopping.wait(delay)

    def __iter__(self) -> Iterator[InboxMessage]:
        """The entries, as they come, until :meth:`stop`; acknowledge each with :meth:`ack`
        (an entry not acknowledged is handed out again after ``claim_idle_ms``)."""
        self._stopping.clear()
        self.handled = 0
        for entries, redelivered in self._batches(None, None):
            for message in self._messages(entries, redelivered):
                yield message
                if self._stopping.is_set():
                    return

    def run(self, handler: Callable[[InboxMessage], Any], *, max_messages: Optional[int] = None,
            max_seconds: Optional[float] = None) -> int:
        """Handles entries until stopped: calls ``handler(message)`` for each and
        acknowledges it when the handler returns; an entry whose handler raises stays
        pending (``on_error`` is told) and is handed out again after ``claim_idle_ms``.

        Stops on :meth:`stop`, SIGTERM/SIGINT (``handle_signals``), after ``max_messages``
        handled entries or about ``max_seconds``; the entry being handled is finished and
        acknowledged first, entries read but not handled stay pending for the next worker.
        Returns how many entries were handled and acknowledged.
        """
        self._stopping.clear()
        self.handled = 0
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        signals = _Signals(self.stop)
        if self.handle_signals:
            signals.install()
        try:
            for entries, redelivered in self._batches(max_messages, deadline):
                for message in self._messages(entries, redelivered):
                    try:
                        handler(message)
                    except Exception as error:  # noqa: BLE001 - reported, entry left pending
                        self.on_error(error, message)
                    else:
                        self.ack(message)
                        self.handled += 1
                    if (self._stopping.is_set()
                            or (max_messages is not None and self.handled >= max_messages)
                            or (deadline is not None and time.monotonic() >= deadline)):
                        break
            return self.handled
        finally:
            signals.restore()


AsyncHandler = Callable[[InboxMessage], Union[Awaitable[Any], Any]]


class AsyncInbox(_Core):
    """The inbox worker for asyncio, over ``redis.asyncio.Redis`` (or ``RedisCluster``);
    the arguments of :class:`Inbox`.

    >>> inbox = AsyncInbox(redis.asyncio.Redis(), group="decisions")
    >>> await inbox.run(handle)     # handle may be a coroutine function

    or::

        async for message in inbox:
            ...
            await inbox.ack(message)

    :meth:`stop` interrupts a blocked read at once (an entry Redis handed out meanwhile
    stays pending, for this consumer's next start or another worker's claim).
    """

    def __init__(self, redis_client: Union[redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster],
                 group: str, *, consumer: Optional[str] = None, stream: str = DEFAULT_STREAM,
                 batch_size: int = 10, block_ms: int = 5000, claim_idle_ms: int = 60_000,
                 max_deliveries: Optional[int] = 5, dead_letter_stream: Optional[str] = None,
                 delete_after_ack: bool = False, start_id: str = "0", handle_signals: bool = True,
                 on_error: Optional[Callable[[BaseException, InboxMessage], Any]] = None) -> None:
        if not isinstance(redis_client, (redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster)):
            raise InvalidArgumentError("AsyncInbox takes a redis.asyncio client: use Inbox")
        super().__init__(redis_client, group, consumer=consumer, stream=stream,
                         batch_size=batch_size, block_ms=block_ms, claim_idle_ms=claim_idle_ms,
                         max_deliveries=max_deliveries, dead_letter_stream=dead_letter_stream,
                         delete_after_ack=delete_after_ack, start_id=start_id,
                         handle_signals=handle_signals, on_error=on_error)
        self._stopped = False
        self._wakeup: Optional[asyncio.Event] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    def stop(self) -> None:
        """Asks the worker to stop after the current entry; safe from a handler, another
        thread or a signal handler. A blocked read is interrupted."""
        self._stopped = True
        loop, wakeup = self._loop, self._wakeup
        if loop is not None and wakeup is not None and not loop.is_closed():
            # Safe from a signal handler and from other threads: the loop sets the event.
            loop.call_soon_threadsafe(wakeup.set)

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called (or a signal received) since the run started."""
        return self._stopped

    async def _command(self, *args: Any) -> Any:
        try:
            return await self._redis.execute_command(*args)
        except redis.exceptions.ResponseError as e:
            if not self._group_gone(e):
                raise
        await self.ensure_group()
        return await self._redis.execute_command(*args)

    async def _interruptible(self, *args: Any) -> Any:
        """A blocking command that :meth:`stop` cancels (None then)."""
        assert self._wakeup is not None
        task = asyncio.ensure_future(self._command(*args))
        waiter = asyncio.ensure_future(self._wakeup.wait())
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if task.done():
            return task.result()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        except redis.exceptions.RedisError:
            pass
        return None

    async def ensure_group(self) -> None:
        """Creates the consumer group (and the stream) unless it exists."""
        try:
            await self._redis.execute_command(*self._group_create())
        except redis.exceptions.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise RedisCommandError(f"XGROUP CREATE failed: {e}") from e

    async def ack(self, message: InboxMessage) -> None:
        """Acknowledges an entry (and deletes it with ``delete_after_ack``)."""
        try:
            await self._redis.execute_command("XACK", self.stream, self.group, message.id)
        except redis.exceptions.ResponseError as e:
            if "NOGROUP" in str(e):
                return
            raise
        if self.delete_after_ack:
            await self._redis.execute_command("XDEL", self.stream, message.id)

    async def _dead_letter(self, entry_id: str, raw: Any, deliveries: int) -> None:
        fields = self._dead_letter_fields(entry_id, raw, deliveries)
        cluster = isinstance(self._redis, redis.asyncio.cluster.RedisCluster)
        async with self._redis.pipeline(transaction=not cluster) as pipe:
            pipe.xadd(self.dead_letter_stream, fields)
            pipe.xack(self.stream, self.group, entry_id)
            if self.delete_after_ack:
                pipe.xdel(self.stream, entry_id)
            await pipe.execute()
        log.warning("fanout inbox: entry %s (channel %s, user %s) moved to %s after %d deliveries",
                    entry_id, fields.get("channel"), fields.get("user"), self.dead_letter_stream,
                    deliveries)

    async def _messages(self, entries: Entries, redelivered: bool) -> List[InboxMessage]:
        out: List[InboxMessage] = []
        for entry_id, raw in entries:
            if raw is None:
                await self._command("XACK", self.stream, self.group, entry_id)
                continue
            deliveries = 1
            if redelivered:
                try:
                    reply = await self._redis.xpending_range(self.stream, self.group, entry_id,
                                                             entry_id, 1)
                except redis.exceptions.ResponseError as e:
                    if not self._group_gone(e):
                        raise
                    reply = None
                deliveries = self._deliveries_reply(reply) or 1
            if self.max_deliveries is not None and deliveries > self.max_deliveries:
                await self._dead_letter(entry_id, raw, deliveries)
                continue
            out.append(InboxMessage._from_entry(self.stream, entry_id, raw, deliveries))
        return out

    async def _batches(self, max_messages: Optional[int],
                       deadline: Optional[float]) -> AsyncGenerator[List[InboxMessage], None]:
        def going() -> bool:
            return (not self._stopped
                    and (max_messages is None or self.handled < max_messages)
                    and (deadline is None or time.monotonic() < deadline))

        await self.ensure_group()
        after = "0"
        while going():
            entries = self._read_reply(await self._command(*self._read(after, self._room(max_messages), None)))
            if not entries:
                break
            yield await self._messages(entries, True)
            after = entries[-1][0]
        cursor, next_claim = "0-0", 0.0
        failures = 0
        while going():
            try:
                if time.monotonic() >= next_claim:
                    cursor, entries = self._claim_reply(
                        await self._command(*self._claim(cursor, self._room(max_messages))))
                    if cursor == "0-0":
                        next_claim = time.monotonic() + self.claim_every_s
                    failures = 0
                    yield await self._messages(entries, True)
                    continue
                until = next_claim if deadline is None else min(next_claim, deadline)
                block = max(1, min(self.block_ms, int((until - time.monotonic()) * 1000) + 1))
                reply = await self._interruptible(*self._read(">", self._room(max_messages), block))
                failures = 0
                yield await self._messages(self._read_reply(reply), False)
            except redis.exceptions.RedisError as e:
                if not self._transient(e):
                    raise RedisCommandError(f"the inbox worker failed: {e}") from e
                failures += 1
                delay = random.uniform(0, min(5.0, 0.1 * 2 ** min(failures, 6)))
                log.warning("fanout inbox: Redis unreachable (%s); retrying in %.1f s", e, delay)
                assert self._wakeup is not None
                try:
                    await asyncio.wait_for(self._wakeup.wait(), delay)
                except asyncio.TimeoutError:
                    pass

    def _begin(self) -> None:
        self._stopped = False
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self.handled = 0

    async def __aiter__(self) -> AsyncIterator[InboxMessage]:
        """The entries, as they come, until :meth:`stop`; acknowledge each with
        :meth:`ack` (an entry not acknowledged is handed out again after
        ``claim_idle_ms``)."""
        self._begin()
        batches = self._batches(None, None)
        try:
            async for messages in batches:
                for message in messages:
                    yield message
                    if self._stopped:
                        return
        finally:
            await batches.aclose()

    async def run(self, handler: AsyncHandler, *, max_messages: Optional[int] = None,
                  max_seconds: Optional[float] = None) -> int:
        """See :meth:`Inbox.run`; ``handler`` may be a coroutine function."""
        self._begin()
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        signals = _Signals(self.stop)
        if self.handle_signals:
            signals.install()
        batches = self._batches(max_messages, deadline)
        try:
            async for messages in batches:
                for message in messages:
                    try:
                        result = handler(message)
                        if inspect.isawaitable(result):
                            await result
                    except Exception as error:  # noqa: BLE001 - reported, entry left pending
                        self.on_error(error, message)
                    else:
                        await self.ack(message)
                        self.handled += 1
                    if (self._stopped
                            or (max_messages is not None and self.handled >= max_messages)
                            or (deadline is not None and time.monotonic() >= deadline)):
                        break
            return self.handled
        finally:
            await batches.aclose()
            signals.restore()
