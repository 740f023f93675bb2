"""The asyncio client: one logical connection to a fanout cluster that survives reconnects,
node deaths and token expiry, and delivers the messages of channels with history exactly
once, in order. The guarantees are those of the JavaScript client (docs/client-js.md),
over WebSocket only.

Layers, from the wire up: a ``websockets`` connection carries frames; :class:`Client`
speaks protocol v1 over it (authentication, request ids, token refresh, reconnects with
backoff, the durable ``send`` queue); one channel state per channel decides which messages
to deliver.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from types import TracebackType
from typing import (Any, Awaitable, Callable, Deque, Dict, List, Mapping, Optional, Set, Type,
                    Union)
from collections import deque

import websockets
import websockets.asyncio.client
import websockets.exceptions

from ._sync import ChannelSync, MessageMeta, Position, ReloadInfo
from .channels import validate_channel
from .errors import ClientError, InvalidArgumentError

__all__ = ["Client", "Subscription", "Position", "MessageMeta", "ReloadInfo", "ConnectionInfo",
           "SendReceipt", "Backoff"]

log = logging.getLogger("fanout_gateway.client")

#: Close codes after which the protocol asks for a long backoff: limits and client bugs.
PENALTY_CLOSE_CODES = frozenset({4010, 4029, 1002, 1007, 1009})
TOKEN_CLOSE_CODE = 4001
DRAIN_CLOSE_CODE = 1012
#: Subscribe errors that may pass when tried again; others end the subscription.
RETRYABLE_SUBSCRIBE_CODES = frozenset({"unavailable", "rate_limited", "internal"})

TokenSource = Callable[[], Union[str, Awaitable[str]]]
Callback = Callable[..., Any]


class Backoff:
    """Exponential backoff with full jitter: the n-th delay is drawn uniformly from
    ``[0, min(cap, base * 2**n))``, so that the clients of a restarted node do not come
    back in one wave."""

    def __init__(self, base: float = 1.0, cap: float = 30.0,
                 rand: Callable[[], float] = random.random) -> None:
        if not 0 < base <= cap:
            raise InvalidArgumentError(f"backoff needs 0 < base <= cap (got {base}, {cap})")
        self.base = base
        self.cap = cap
        self._random = rand
        self.attempts = 0

    def ceiling(self) -> float:
        """The ceiling of the next delay."""
        return float(min(self.cap, self.base * 2 ** min(self.attempts, 31)))

    def next(self) -> float:
        """The next delay, in seconds."""
        delay = self._random() * self.ceiling()
        self.attempts += 1
        return delay

    def reset(self) -> None:
        """Starts again from the first delay."""
        self.attempts = 0


def token_expiry(token: str) -> Optional[float]:
    """The ``exp`` claim of a JWT (Unix seconds), read without verifying it; None when the
    token is not a JWT or has no numeric ``exp``."""
    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != 3:
        return None
    try:
        payload = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, TypeError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        return None
    return float(exp)


@dataclass(frozen=True)
class ConnectionInfo:
    """The current connection, from its ``connection_ack``."""

    conn_id: str
    user: str
    node: str
    heartbeat_s: int
    expires_at: Optional[int]
    channels: List[str]


@dataclass(frozen=True)
class SendReceipt:
    """A ``send`` stored in the inbox: its ``stream_id`` and the client message id written
    into ``data`` (``msg_id``), for the backend to de-duplicate on."""

    channel: str
    stream_id: str
    msg_id: str


@dataclass(frozen=True)
class PublishReceipt:
    """A client ``publish`` accepted; ``offset`` on channels with history."""

    channel: str
    offset: Optional[int] = None


class Subscription:
    """A subscription, as returned by :meth:`Client.subscribe`."""

    def __init__(self, client: "Client", channel: str, handlers: Dict[str, Optional[Callback]]) -> None:
        self._client = client
        self.channel = channel
        self._handlers = handlers
        self.closed = False

    @property
    def position(self) -> Optional[Position]:
        """The position of the last message delivered (channels with history), to keep and
        give back as ``since``; None before the first."""
        return self._client._position(self.channel)

    def unsubscribe(self) -> None:
        """Stops this subscription; the channel is left when no other one needs it."""
        self._client._unsubscribe(self)

    def __repr__(self) -> str:
        return f"Subscription({self.channel!r}, closed={self.closed})"


@dataclass
class _Channel:
    subs: List[Subscription]
    sync: Optional[ChannelSync] = None
    subscribed: bool = False
    status: Optional[List[Any]] = None  # [value, connection that carries it]
    retry: Optional[asyncio.TimerHandle] = None
    backoff: Backoff = field(default_factory=Backoff)


@dataclass
class _Pending:
    kind: str  # subscribe, fill, refresh, send, request
    channel: Optional[str] = None
    entry: Optional[_Channel] = None
    token: Optional[str] = None
    future: Optional["asyncio.Future[Dict[str, Any]]"] = None


@dataclass
class _SendEntry:
    channel: str
    data: Any
    msg_id: str
    future: "asyncio.Future[SendReceipt]"


class _Conn:
    def __init__(self, ws: Any, token: str) -> None:
        self.ws = ws
        self.token = token
        self.ack: Optional[Dict[str, Any]] = None
        self.opened_at = 0.0
        self.expires_at: Optional[int] = None
        self.outbox: "asyncio.Queue[Optional[str]]" = asyncio.Queue()
        self.timers: Set[asyncio.TimerHandle] = set()
        self.tasks: Set["asyncio.Task[Any]"] = set()
        self.refresh_timer: Optional[asyncio.TimerHandle] = None
        self.closing_code: Optional[int] = None

    def send(self, frame: Mapping[str, Any]) -> None:
        self.outbox.put_nowait(json.dumps(frame, separators=(",", ":"), ensure_ascii=False))


def _ws_url(url: str) -> str:
    if not isinstance(url, str) or "://" not in url:
        raise InvalidArgumentError("the gateway URL must be absolute: ws(s)://host/ws")
    scheme, rest = url.split("://", 1)
    scheme = {"http": "ws", "https": "wss"}.get(scheme.lower(), scheme.lower())
    if scheme not in ("ws", "wss"):
        raise InvalidArgumentError("the gateway URL must start with ws://, wss://, http:// or https://")
    return f"{scheme}://{rest}"


class Client:
    """An asyncio client of the fanout gateway, for agents and workers that act as clients.

    >>> client = Client("wss://realtime.example.com/ws", get_token=fetch_token)
    >>> client.subscribe("dag:7", on_message=apply, on_reload=reload_state)
    >>> await client.connect()
    >>> await client.send("dag:7", {"type": "human_decision", "data": {...}})

    Args:
        url: the gateway's WebSocket endpoint (``ws(s)://host/ws``; ``http(s)://`` works).
        token: a token. Alone it cannot be renewed: the client stops once it is refused.
        get_token: a function (sync or async) returning a fresh token: called to connect
            when the token was refused or is about to expire, and to refresh it before it
            expires on an open connection.
        backoff_base, backoff_cap: reconnect delays, seconds (full jitter).
        stable_after: a connection that lasted this long resets the backoff.
        drain_retry: after a drain close (1012) the first retry comes within this.
        penalty: the delay (between half of it and all of it) after closes that ask for a
            long backoff (4010, 4029, 1002, 1007, 1009).
        connect_timeout: an attempt without ``connection_ack`` within this is abandoned.
        request_timeout: ``publish``, ``presence``, ``history``, ``set_status`` fail with
            ``timeout`` after this, counted from the call (they wait while disconnected).
        ping_interval, pong_timeout: WebSocket pings; no pong within ``pong_timeout`` means
            the connection is dead (a half-open TCP connection, a frozen proxy).
        refresh_margin: refresh the token this long before ``exp`` (at most a third of its
            remaining lifetime).
        client_msg_id_field: where ``send`` writes its client message id (None: nowhere).
        headers: extra HTTP headers for the upgrade request (e.g. ``Origin``).
        ssl: an ``ssl.SSLContext`` for ``wss://`` (default: the system's).

    Callbacks (``on_message``, ``on_reload``, ...) run in order on the client's reader
    task; one that returns an awaitable is awaited before the next frame is handled. An
    exception in one is reported as a ``callback_failed`` error; the client carries on.
    """

    def __init__(self, url: str, *, token: Optional[str] = None,
                 get_token: Optional[TokenSource] = None, backoff_base: float = 1.0,
                 backoff_cap: float = 30.0, stable_after: float = 10.0, drain_retry: float = 1.0,
                 penalty: float = 30.0, connect_timeout: float = 10.0,
                 request_timeout: float = 10.0, ping_interval: float = 20.0,
                 pong_timeout: float = 10.0, refresh_margin: float = 60.0,
                 client_msg_id_field: Optional[str] = "client_msg_id",
                 headers: Optional[Mapping[str, str]] = None, ssl: Any = None) -> None:
        self.url = _ws_url(url)
        if token is None and get_token is None:
            raise InvalidArgumentError("Client needs token= or get_token=")
        if token is not None and (not isinstance(token, str) or not token):
            raise InvalidArgumentError("token must be a non-empty string")
        if get_token is not None and not callable(get_token):
            raise InvalidArgumentError("get_token must be a function returning a token")
        self._token = token
        self._get_token = get_token
        self._backoff = Backoff(backoff_base, backoff_cap)
        self._retry_base, self._retry_cap = backoff_base, min(backoff_cap, 30.0)
        self._send_backoff = Backoff(self._retry_base, self._retry_cap)
        self.stable_after = stable_after
        self.drain_retry = drain_retry
        self.penalty = penalty
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.refresh_margin = refresh_margin
        self.client_msg_id_field = client_msg_id_field
        self._headers = dict(headers or {})
        self._ssl = ssl

        self._state = "disconnected"
        self._listeners: Dict[str, List[Callback]] = {}
        self._wanted = False
        self._conn: Optional[_Conn] = None
        self._runner: Optional["asyncio.Task[None]"] = None
        self._token_refused = False
        self._next_id = 1
        self._pending: Dict[int, _Pending] = {}
        self._deferred: List[Callable[[], None]] = []
        self._send_queue: Deque[_SendEntry] = deque()
        self._send_in_flight = False
        self._send_retry: Optional[asyncio.TimerHandle] = None
        self._channels: Dict[str, _Channel] = {}
        self._awaiting: List[Awaitable[Any]] = []
        self._connected_event: Optional[asyncio.Event] = None

    # ------------------------------------------------------------------ state and events

    @property
    def state(self) -> str:
        """``connecting``, ``connected`` (``connection_ack`` received) or ``disconnected``."""
        return self._state

    @property
    def connection(self) -> Optional[ConnectionInfo]:
        """The current connection, or None when not connected."""
        conn = self._conn
        if conn is None or conn.ack is None:
            return None
        ack = conn.ack
        return ConnectionInfo(str(ack.get("conn_id")), str(ack.get("user")), str(ack.get("node")),
                              int(ack.get("heartbeat_s") or 25), conn.expires_at,
                              list(ack.get("channels") or []))

    def on(self, event: str, fn: Callback) -> Callable[[], None]:
        """Listens to ``state`` (``fn(state)``), ``error`` (``fn(ClientError)``) or
        ``connected`` (``fn(ConnectionInfo)``, after each ``connection_ack``). Returns a
        function that removes the listener. Errors without a listener are logged."""
        if event not in ("state", "error", "connected"):
            raise InvalidArgumentError(f"unknown event {event!r}: state, error or connected")
        if not callable(fn):
            raise InvalidArgumentError("on(event, fn) needs a function")
        self._listeners.setdefault(event, []).append(fn)
        return lambda: self._listeners.get(event, []).remove(fn) if fn in self._listeners.get(event, []) else None

    def _emit(self, event: str, *args: Any) -> None:
        listeners = list(self._listeners.get(event, []))
        if event == "error" and not listeners:
            error = args[0]
            log.warning("fanout: %s: %s", getattr(error, "code", "error"), error)
            return
        for fn in listeners:
            self._invoke(fn, args, report=event != "error")

    def _invoke(self, fn: Callback, args: Any, *, report: bool = True) -> None:
        try:
            result = fn(*args)
            if inspect.isawaitable(result):
                self._awaiting.append(result)
        except Exception as e:  # noqa: BLE001 - a callback of the application
            if report:
                self._callback_failed(e)

    def _callback_failed(self, error: BaseException) -> None:
        failure = ClientError("callback_failed", f"a callback raised {type(error).__name__}: {error}",
                              retryable=False)
        failure.__cause__ = error
        self._emit("error", failure)

    def _set_state(self, state: str) -> None:
        if self._state != state:
            self._state = state
            self._emit("state", state)

    # ------------------------------------------------------------------ lifecycle

    async def connect(self) -> None:
        """Opens the connection and keeps it open, reconnecting, until :meth:`close`.
        Returns at once; see :meth:`wait_connected`."""
        if self._wanted:
            return
        self._wanted = True
        self._connected_event = asyncio.Event()
        self._runner = asyncio.ensure_future(self._run())

    async def wait_connected(self, timeout: Optional[float] = None) -> ConnectionInfo:
        """Waits for a ``connection_ack``; raises ``asyncio.TimeoutError`` after ``timeout``."""
        if not self._wanted:
            await self.connect()
        assert self._connected_event is not None
        await asyncio.wait_for(self._connected_event.wait(), timeout)
        info = self.connection
        if info is None:  # pragma: no cover - a race with a disconnect
            raise ClientError("disconnected", "the connection ended again")
        return info

    async def close(self) -> None:
        """Closes the connection and stops reconnecting. Pending requests and queued sends
        fail with ``closed``; subscriptions stay, and are resubscribed (with ``since``) by
        a later :meth:`connect`."""
        self._wanted = False
        runner, self._runner = self._runner, None
        conn = self._conn
        if conn is not None:
            conn.closing_code = 1000
        if runner is not None:
            runner.cancel()
            try:
                await runner
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        def closed() -> ClientError:
            return ClientError("closed", "the client was closed", retryable=False)

        for start in self._deferred[:]:
            start()  # with _wanted False, each fails itself
        self._deferred.clear()
        if self._send_retry is not None:
            self._send_retry.cancel()
            self._send_retry = None
        while self._send_queue:
            entry = self._send_queue.popleft()
            if not entry.future.done():
                entry.future.set_exception(closed())
        self._send_in_flight = False
        for pending in list(self._pending.values()):
            if pending.future is not None and not pending.future.done():
                pending.future.set_exception(closed())
        self._pending.clear()
        self._set_state("disconnected")

    async def __aenter__(self) -> "Client":
        await self.connect()
        return self

    async def __aexit__(self, exc_type: Optional[Type[BaseException]],
                        exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        await self.close()

    # ------------------------------------------------------------------ connecting

    async def _token_for_connect(self) -> str:
        exp = token_expiry(self._token) if self._token is not None else None
        expiring = exp is not None and exp - time.time() < 5
        if self._token is not None and not self._token_refused and not expiring:
            return self._token
        if self._get_token is None:
            reason = ("the token was refused and there is no get_token to get another"
                      if self._token_refused else "the token has expired and there is no get_token")
            raise ClientError("unauthorized", reason, retryable=False)
        token = await self._call_get_token()
        self._token = token
        self._token_refused = False
        return token

    async def _call_get_token(self) -> str:
        assert self._get_token is not None
        try:
            result = self._get_token()
            token = await result if inspect.isawaitable(result) else result
        except Exception as e:  # noqa: BLE001 - the application's function
            error = ClientError("unauthorized", f"get_token() failed: {type(e).__name__}: {e}",
                                retryable=True)
            error.__cause__ = e
            raise error from e
        if not isinstance(token, str) or not token:
            raise ClientError("unauthorized", "get_token() did not return a token", retryable=True)
        return token

    async def _run(self) -> None:
        try:
            while self._wanted:
                try:
                    delay = await self._attempt()
                except Exception:  # noqa: BLE001 - a bug must not end the reconnect loop
                    log.exception("fanout: unexpected error in the connection loop")
                    delay = self._backoff.next()
                if delay is None or not self._wanted:
                    break
                self._set_state("disconnected")
                await asyncio.sleep(delay)
        finally:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                await self._close_ws(conn, conn.closing_code or 1000, "client closed")
                self._connection_ended(conn)
            if not self._wanted:
                self._set_state("disconnected")

    async def _attempt(self) -> Optional[float]:
        """One connection, from opening to its end; the delay before the next (None: stop)."""
        self._set_state("connecting")
        try:
            token = await self._token_for_connect()
        except ClientError as e:
            self._emit("error", e)
            if not e.retryable:
                self._wanted = False
                return None
            return self._backoff.next()
        headers = dict(self._headers)
        headers["Authorization"] = f"Bearer {token}"
        try:
            ws = await websockets.asyncio.client.connect(
                self.url, additional_headers=headers, open_timeout=self.connect_timeout,
                ping_interval=self.ping_interval, ping_timeout=self.pong_timeout,
                close_timeout=2, max_size=None, compression=None, ssl=self._ssl)
        except websockets.exceptions.InvalidStatus as e:
            return self._refused(e.response.status_code, bytes(e.response.body or b""), e.response.headers)
        except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException) as e:
            log.debug("fanout: connection attempt failed: %s", e)
            return self._backoff.next()
        conn = _Conn(ws, token)
        self._conn = conn
        writer = asyncio.ensure_future(self._writer(conn))
        try:
            code, reason = await self._read(conn)
        finally:
            writer.cancel()
            self._conn = None
            was_connected = conn.ack is not None
            connected_for = time.monotonic() - conn.opened_at if was_connected else 0.0
            await self._close_ws(conn, conn.closing_code or 1000, "client closed")
            self._connection_ended(conn)
        if connected_for >= self.stable_after:
            self._backoff.reset()
        if code == TOKEN_CLOSE_CODE:
            self._token_refused = True
            self._emit("error", ClientError("unauthorized", f"connection closed (4001: {reason})",
                                            close_code=code))
            if self._get_token is None:
                self._wanted = False
                return None
            return self._backoff.next()
        if code == DRAIN_CLOSE_CODE and self._backoff.attempts == 0:
            self._backoff.attempts = 1  # the next failure backs off as usual
            return random.random() * self.drain_retry
        if code in PENALTY_CLOSE_CODES:
            self._emit("error", ClientError("disconnected", f"connection closed ({code}: {reason})",
                                            close_code=code))
            return max(self._backoff.next(), self.penalty / 2 + random.random() * self.penalty / 2)
        return self._backoff.next()

    def _refused(self, status: int, body: Optional[bytes], headers: Any) -> Optional[float]:
        message = f"HTTP {status}"
        try:
            detail = json.loads(body or b"{}").get("error", {}).get("message")
            if detail:
                message += f": {detail}"
        except (ValueError, AttributeError):
            pass
        if status == 401:
            self._token_refused = True
            self._emit("error", ClientError("unauthorized", f"connection refused ({message})",
                                            status=status))
            if self._get_token is None:
                self._wanted = False
                return None
            return self._backoff.next()
        if status == 429:
            self._emit("error", ClientError("limit_exceeded", f"connection refused ({message})",
                                            status=status))
            return max(self._backoff.next(), self.penalty / 2 + random.random() * self.penalty / 2)
        if status == 403:
            self._emit("error", ClientError("forbidden", f"connection refused ({message})",
                                            status=status, retryable=False))
            self._wanted = False
            return None
        log.debug("fanout: connection refused: %s", message)
        return self._backoff.next()

    async def _close_ws(self, conn: _Conn, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(conn.ws.close(code, reason), 3)
        except (Exception, asyncio.CancelledError):  # noqa: BLE001 - closing anyway
            pass

    async def _writer(self, conn: _Conn) -> None:
        try:
            while True:
                text = await conn.outbox.get()
                if text is None:
                    return
                await conn.ws.send(text)
        except websockets.exceptions.ConnectionClosed:
            return

    async def _read(self, conn: _Conn) -> tuple[int, str]:
        """Reads frames until the connection ends; its close code and reason."""
        ws = conn.ws
        def no_ack() -> None:
            if conn.ack is None:
                self._abort(conn, 4000)

        ack_timer = asyncio.get_running_loop().call_later(self.connect_timeout, no_ack)
        conn.timers.add(ack_timer)
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    continue  # binary messages are not part of protocol v1
                try:
                    frame = json.loads(message)
                except ValueError:
                    continue
                if not isinstance(frame, dict):
                    continue
                self._on_frame(conn, frame)
                while self._awaiting:
                    awaitable = self._awaiting.pop(0)
                    try:
                        await awaitable
                    except Exception as e:  # noqa: BLE001 - a callback of the application
                        self._callback_failed(e)
        except websockets.exceptions.ConnectionClosed:
            pass
        # The sans-I/O protocol's close code and reason (websockets 13 has them only there).
        protocol = ws.protocol
        code = protocol.close_code if protocol.close_code is not None else 1006
        if conn.closing_code is not None and conn.closing_code != 1000:
            code = conn.closing_code
        return code, protocol.close_reason or ""

    def _abort(self, conn: _Conn, code: int) -> None:
        """Gives up on a connection (no ack in time)."""
        conn.closing_code = code
        task = asyncio.ensure_future(self._close_ws(conn, 1000, "no connection_ack in time"))
        conn.tasks.add(task)

    def _timer(self, conn: _Conn, delay: float, fn: Callable[[], None]) -> asyncio.TimerHandle:
        def run() -> None:
            conn.timers.discard(handle)
            fn()
        handle = asyncio.get_running_loop().call_later(max(0.0, delay), run)
        conn.timers.add(handle)
        return handle

    def _connection_ended(self, conn: _Conn) -> None:
        for handle in conn.timers:
            handle.cancel()
        conn.timers.clear()
        for task in conn.tasks:
            task.cancel()
        def lost() -> ClientError:
            if not self._wanted:
                return ClientError("closed", "the client was closed", retryable=False)
            return ClientError("disconnected", "the connection ended before the reply")

        pending, self._pending = list(self._pending.values()), {}
        for p in pending:
            if p.kind == "request" and p.future is not None and not p.future.done():
                p.future.set_exception(lost())
            elif p.kind == "fill" and p.channel in self._channels:
                sync = self._channels[p.channel].sync
                if sync is not None:
                    sync.on_history_failed()
        # The send in flight stays first in the queue: it goes again on the next connection.
        self._send_in_flight = False
        for entry in self._channels.values():
            entry.subscribed = False
            if entry.retry is not None:
                entry.retry.cancel()
                entry.retry = None
            if entry.sync is not None:
                entry.sync.disconnected()
        if self._connected_event is not None:
            self._connected_event.clear()

    # ------------------------------------------------------------------ frames

    def _on_frame(self, conn: _Conn, frame: Dict[str, Any]) -> None:
        kind = frame.get("type")
        channel = frame.get("channel")
        entry = self._channels.get(channel) if isinstance(channel, str) else None
        if kind == "connection_ack":
            if conn.ack is None:
                self._on_ack(conn, frame)
        elif kind == "message":
            if entry is not None and entry.sync is not None:
                entry.sync.on_message(frame)
        elif kind == "resync":
            if entry is not None and entry.sync is not None:
                entry.sync.on_resync()
        elif kind in ("join", "leave", "presence_update"):
            if entry is not None:
                handler = {"join": "on_join", "leave": "on_leave"}.get(str(kind), "on_status")
                member = {k: v for k, v in frame.items() if k != "type"}
                for sub in list(entry.subs):
                    self._call(sub, handler, member)
        elif kind == "unsubscribed" and "reason" in frame and "id" not in frame:
            if entry is not None and isinstance(channel, str):
                reason = str(frame["reason"])
                self._end_channel(channel, entry, ClientError(
                    reason, f"the server ended the subscription to {channel} ({reason})",
                    channel=channel, retryable=False))
        elif "id" in frame:
            self._on_reply(conn, frame)
        elif kind == "error":
            self._emit("error", ClientError(str(frame.get("code", "internal")),
                                            str(frame.get("message", ""))))

    def _on_ack(self, conn: _Conn, ack: Dict[str, Any]) -> None:
        conn.ack = ack
        conn.opened_at = time.monotonic()
        expires = ack.get("expires_at")
        conn.expires_at = expires if isinstance(expires, int) else None
        self._schedule_refresh(conn)
        # Resubscribe every channel with `since` (the automatic ones recover in place), then
        # what waited for the connection, then the queued sends; all before listeners hear.
        for name, entry in self._channels.items():
            self._send_subscribe(name, entry)
        deferred, self._deferred = self._deferred, []
        for start in deferred:
            start()
        self._pump_sends()
        self._set_state("connected")
        if self._connected_event is not None:
            self._connected_event.set()
        self._emit("connected", self.connection)

    def _on_reply(self, conn: _Conn, frame: Dict[str, Any]) -> None:
        frame_id = frame.get("id")
        pending = self._pending.pop(frame_id, None) if isinstance(frame_id, int) else None
        if pending is None:
            return
        if pending.kind == "subscribe":
            self._on_subscribe_reply(pending, frame)
        elif pending.kind == "fill":
            entry = self._channels.get(pending.channel or "")
            if entry is not None and entry.sync is not None:
                if frame.get("type") == "history":
                    entry.sync.on_history(frame)
                else:
                    entry.sync.on_history_failed()
        elif pending.kind == "refresh":
            self._on_refresh_reply(conn, pending, frame)
        elif pending.kind == "send":
            self._on_send_reply(frame)
        elif pending.future is not None and not pending.future.done():
            if frame.get("type") == "error":
                pending.future.set_exception(self._frame_error(frame, pending.channel))
            else:
                pending.future.set_result(frame)

    @staticmethod
    def _frame_error(frame: Mapping[str, Any], channel: Optional[str] = None) -> ClientError:
        return ClientError(str(frame.get("code", "internal")),
                           str(frame.get("message", "error without a message")), channel=channel)

    # ------------------------------------------------------------------ subscriptions

    def subscribe(self, channel: str, *, on_message: Optional[Callable[[Any, MessageMeta], Any]] = None,
                  on_reload: Optional[Callable[[ReloadInfo], Any]] = None,
                  on_join: Optional[Callable[[Dict[str, Any]], Any]] = None,
                  on_leave: Optional[Callable[[Dict[str, Any]], Any]] = None,
                  on_status: Optional[Callable[[Dict[str, Any]], Any]] = None,
                  on_subscribed: Optional[Callable[[Dict[str, Any]], Any]] = None,
                  on_error: Optional[Callable[[ClientError], Any]] = None,
                  since: Union[Position, Mapping[str, Any], None] = None) -> Subscription:
        """Subscribes to a channel, now or before :meth:`connect`; the subscription follows
        the connection across reconnects.

        Args:
            on_message: ``f(data, meta)`` for each message; on channels with history each
                once, in order, across reconnects and node deaths.
            on_reload: ``f(info)``: (re)load the channel's state: once the subscription is
                in place (``reason="start"``), and whenever messages were lost
                (``"lost"``: gap no longer in history, a new epoch; on channels without
                history after every reconnect).
            on_join, on_leave, on_status: presence events (``join``, ``leave``,
                ``presence_update``) as dicts: ``user``, ``conn_id``, ``info``, ``status``.
            on_subscribed: every ``subscribed`` reply, after each reconnect too.
            on_error: the subscription was refused (forbidden, invalid) or ended by the
                server. ``unavailable`` and ``rate_limited`` refusals are retried.
            since: a position you kept (``Position`` or ``{"epoch":..., "offset":...}``):
                recover from it instead of starting afresh.
        """
        validate_channel(channel)
        handlers: Dict[str, Optional[Callback]] = {
            "on_message": on_message, "on_reload": on_reload, "on_join": on_join,
            "on_leave": on_leave, "on_status": on_status, "on_subscribed": on_subscribed,
            "on_error": on_error}
        position: Optional[Position] = None
        if isinstance(since, Position):
            position = Position(since.epoch, since.offset)
        elif since is not None:
            try:
                position = Position(str(since["epoch"]), int(since["offset"]))
            except (KeyError, TypeError, ValueError):
                raise InvalidArgumentError("since must be a Position or {'epoch': str, 'offset': int}") from None
        sub = Subscription(self, channel, handlers)
        entry = self._channels.get(channel)
        if entry is not None:
            entry.subs.append(sub)
            # The channel runs already: this subscription starts from now, with a reload.
            sync = entry.sync
            if sync is not None and sync.started:
                p = sync.position
                self._call(sub, "on_reload", ReloadInfo(channel, "start", p.epoch if p else None,
                                                        p.offset if p else None))
                if entry.subscribed:
                    self._call(sub, "on_subscribed", {"channel": channel})
            return sub
        entry = _Channel(subs=[sub], backoff=Backoff(self._retry_base, self._retry_cap))

        def deliver(data: Any, meta: MessageMeta) -> None:
            for s in list(entry.subs):
                self._call(s, "on_message", data, meta)

        def reload(info: ReloadInfo) -> None:
            for s in list(entry.subs):
                self._call(s, "on_reload", info)

        def fill(since_offset: int, limit: int) -> None:
            conn = self._conn
            if conn is None or conn.ack is None:
                return
            request_id = self._new_id()
            self._pending[request_id] = _Pending("fill", channel=channel)
            conn.send({"type": "history", "channel": channel, "since": since_offset,
                       "limit": limit, "id": request_id})

        def recover() -> None:
            if self._conn is not None and self._conn.ack is not None and self._channels.get(channel) is entry:
                self._send_subscribe(channel, entry)

        entry.sync = ChannelSync(channel, deliver=deliver, reload=reload, fill=fill,
                                 recover=recover, position=position)
        self._channels[channel] = entry
        if self._conn is not None and self._conn.ack is not None:
            self._send_subscribe(channel, entry)
        return sub

    def _new_id(self) -> int:
        request_id = self._next_id
        self._next_id += 1
        return request_id

    def _call(self, sub: Subscription, name: str, *args: Any) -> None:
        fn = sub._handlers.get(name)
        if fn is None or sub.closed:
            return
        self._invoke(fn, args)

    def _position(self, channel: str) -> Optional[Position]:
        entry = self._channels.get(channel)
        p = entry.sync.position if entry is not None and entry.sync is not None else None
        return Position(p.epoch, p.offset) if p is not None else None

    def _send_subscribe(self, channel: str, entry: _Channel) -> None:
        conn = self._conn
        assert conn is not None and entry.sync is not None
        request_id = self._new_id()
        entry.sync.subscribing()
        self._pending[request_id] = _Pending("subscribe", channel=channel, entry=entry)
        conn.send({"type": "subscribe", "channel": channel, "since": entry.sync.since(),
                   "id": request_id})

    def _on_subscribe_reply(self, pending: _Pending, frame: Dict[str, Any]) -> None:
        channel, entry = pending.channel, pending.entry
        if channel is None or entry is None or self._channels.get(channel) is not entry:
            return  # unsubscribed meanwhile
        assert entry.sync is not None
        if frame.get("type") == "subscribed":
            entry.subscribed = True
            entry.backoff.reset()
            entry.sync.on_subscribed(frame)
            info = {k: frame[k] for k in ("channel", "epoch", "offset", "recovered") if k in frame}
            for sub in list(entry.subs):
                self._call(sub, "on_subscribed", info)
            # A status belongs to the connection: set it again on a new one.
            conn = self._conn
            if entry.status is not None and conn is not None and entry.status[1] is not conn:
                entry.status[1] = conn
                conn.send({"type": "status", "channel": channel, "status": entry.status[0]})
            return
        entry.sync.recovering = False
        error = self._frame_error(frame, channel)
        if error.code in RETRYABLE_SUBSCRIBE_CODES:
            def retry() -> None:
                entry.retry = None
                if self._conn is not None and self._conn.ack is not None and self._channels.get(channel) is entry:
                    self._send_subscribe(channel, entry)
            entry.retry = asyncio.get_running_loop().call_later(entry.backoff.next(), retry)
            return
        self._end_channel(channel, entry, error)

    def _end_channel(self, channel: str, entry: _Channel, error: ClientError) -> None:
        self._channels.pop(channel, None)
        if entry.retry is not None:
            entry.retry.cancel()
        for sub in list(entry.subs):
            self._call(sub, "on_error", error)
            sub.closed = True
        self._emit("error", error)

    def _unsubscribe(self, sub: Subscription) -> None:
        if sub.closed:
            return
        sub.closed = True
        entry = self._channels.get(sub.channel)
        if entry is None or sub not in entry.subs:
            return
        entry.subs.remove(sub)
        if entry.subs:
            return
        del self._channels[sub.channel]
        if entry.retry is not None:
            entry.retry.cancel()
        conn = self._conn
        if conn is not None and conn.ack is not None:
            conn.send({"type": "unsubscribe", "channel": sub.channel, "id": self._new_id()})

    # ------------------------------------------------------------------ requests

    async def _request(self, frame: Dict[str, Any], channel: Optional[str],
                       on_sent: Optional[Callable[[], None]] = None) -> Dict[str, Any]:
        loop = asyncio.get_running_loop()
        future: "asyncio.Future[Dict[str, Any]]" = loop.create_future()
        sent_id: List[int] = []

        def start() -> None:
            if future.done():
                return
            conn = self._conn
            if not self._wanted or conn is None or conn.ack is None:
                future.set_exception(ClientError("closed", "the client was closed", retryable=False))
                return
            request_id = self._new_id()
            sent_id.append(request_id)
            self._pending[request_id] = _Pending("request", channel=channel, future=future)
            conn.send({**frame, "id": request_id})
            if on_sent is not None:
                on_sent()

        if self._conn is not None and self._conn.ack is not None:
            start()
        else:
            self._deferred.append(start)
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.request_timeout)
        except asyncio.TimeoutError:
            raise ClientError("timeout", f"no reply to {frame['type']} within "
                              f"{self.request_timeout} s", channel=channel) from None
        finally:
            if start in self._deferred:
                self._deferred.remove(start)
            for request_id in sent_id:
                self._pending.pop(request_id, None)
            if not future.done():
                future.cancel()

    async def publish(self, channel: str, data: Any) -> PublishReceipt:
        """Publishes ``data`` to the channel's subscribers as this user (needs the token's
        ``publish`` claim or a namespace with ``publish = true``)."""
        validate_channel(channel)
        reply = await self._request({"type": "publish", "channel": channel, "data": data}, channel)
        offset = reply.get("offset")
        return PublishReceipt(str(reply.get("channel", channel)), offset if isinstance(offset, int) else None)

    async def send(self, channel: str, data: Any, *, msg_id: Optional[str] = None) -> SendReceipt:
        """Hands ``data`` to your backend through the durable inbox. Queued while offline
        and sent once connected, one at a time, in order; sent again after a reconnect when
        no ``sent`` reply came (at least once); ``unavailable`` and ``rate_limited`` refusals
        are retried with backoff, others raise.

        A client message id (``msg_id``, a random UUID unless given) is written into
        ``data``: into ``data["data"]`` for a catalogue event ``{"type": ..., "data": {...}}``,
        else at the top level of a dict; other values go as they are. The backend
        de-duplicates on it (per user). Resolves once the entry is stored in the inbox."""
        validate_channel(channel)
        field_name = self.client_msg_id_field
        ident = msg_id if msg_id is not None else str(uuid.uuid4())
        payload = data
        if field_name:
            if isinstance(data, dict) and isinstance(data.get("type"), str) and isinstance(data.get("data"), dict):
                inner = data["data"]
                if msg_id is None and isinstance(inner.get(field_name), str):
                    ident = inner[field_name]
                payload = {**data, "data": {**inner, field_name: ident}}
            elif isinstance(data, dict):
                if msg_id is None and isinstance(data.get(field_name), str):
                    ident = data[field_name]
                payload = {**data, field_name: ident}
        future: "asyncio.Future[SendReceipt]" = asyncio.get_running_loop().create_future()
        self._send_queue.append(_SendEntry(channel, payload, ident, future))
        self._pump_sends()
        return await future

    def _pump_sends(self) -> None:
        conn = self._conn
        if (self._send_in_flight or self._send_retry is not None or conn is None
                or conn.ack is None or not self._send_queue):
            return
        entry = self._send_queue[0]
        request_id = self._new_id()
        self._send_in_flight = True
        self._pending[request_id] = _Pending("send")
        conn.send({"type": "send", "channel": entry.channel, "data": entry.data, "id": request_id})

    def _on_send_reply(self, frame: Mapping[str, Any]) -> None:
        self._send_in_flight = False
        if not self._send_queue:
            return
        entry = self._send_queue[0]
        if frame.get("type") == "sent":
            self._send_queue.popleft()
            self._send_backoff.reset()
            if not entry.future.done():
                entry.future.set_result(SendReceipt(str(frame.get("channel", entry.channel)),
                                                    str(frame.get("stream_id")), entry.msg_id))
            self._pump_sends()
            return
        error = self._frame_error(frame, entry.channel)
        if error.retryable:
            def retry() -> None:
                self._send_retry = None
                self._pump_sends()
            self._send_retry = asyncio.get_running_loop().call_later(self._send_backoff.next(), retry)
            return
        self._send_queue.popleft()
        if not entry.future.done():
            entry.future.set_exception(error)
        self._pump_sends()

    async def set_status(self, channel: str, status: Any) -> None:
        """Sets this connection's status on a subscribed channel of a namespace with
        presence (None clears it). It is set again after every reconnect."""
        validate_channel(channel)
        entry = self._channels.get(channel)
        kept: Optional[List[Any]] = None if status is None else [status, None]
        if entry is not None:
            entry.status = kept

        def sent() -> None:
            if kept is not None:
                kept[1] = self._conn

        await self._request({"type": "status", "channel": channel, "status": status}, channel, sent)

    async def presence(self, channel: str) -> Dict[str, Any]:
        """The members of a channel's presence, cluster-wide: ``{"channel", "members",
        "truncated"}``."""
        validate_channel(channel)
        reply = await self._request({"type": "presence", "channel": channel}, channel)
        return {"channel": reply.get("channel", channel), "members": list(reply.get("members") or []),
                "truncated": reply.get("truncated") is True}

    async def presence_stats(self, channel: str) -> Dict[str, Any]:
        """How many connections and distinct users are in a channel's presence."""
        validate_channel(channel)
        reply = await self._request({"type": "presence_stats", "channel": channel}, channel)
        return {"channel": reply.get("channel", channel), "connections": reply.get("connections", 0),
                "users": reply.get("users", 0)}

    async def history(self, channel: str, *, since: Union[int, Position, None] = None,
                      limit: Optional[int] = None) -> Dict[str, Any]:
        """A channel's recent messages without subscribing: ``{"channel", "epoch",
        "offset", "messages": [{"offset", "data", "user"?}]}``."""
        validate_channel(channel)
        frame: Dict[str, Any] = {"type": "history", "channel": channel}
        if since is not None:
            frame["since"] = since.offset if isinstance(since, Position) else since
        if limit is not None:
            frame["limit"] = limit
        reply = await self._request(frame, channel)
        return {"channel": reply.get("channel", channel), "epoch": reply.get("epoch"),
                "offset": reply.get("offset"), "messages": list(reply.get("messages") or [])}

    # ------------------------------------------------------------------ token refresh

    def _schedule_refresh(self, conn: _Conn) -> None:
        if self._get_token is None or conn.expires_at is None:
            return
        if conn.refresh_timer is not None:
            conn.refresh_timer.cancel()
        remaining = conn.expires_at - time.time()
        margin = min(self.refresh_margin, remaining / 3)
        conn.refresh_timer = self._timer(conn, remaining - margin, lambda: self._spawn(conn, self._refresh(conn)))

    def _spawn(self, conn: _Conn, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        conn.tasks.add(task)
        task.add_done_callback(conn.tasks.discard)

    async def _refresh(self, conn: _Conn) -> None:
        token: Optional[str] = None
        try:
            token = await self._call_get_token()
        except ClientError as e:
            self._emit("error", e)
        if self._conn is not conn or conn.expires_at is None:
            return
        exp = token_expiry(token) if token is not None else None
        if token is None or (exp is not None and exp <= conn.expires_at):
            # No token, or no later one yet: try again a bit later, while time is left.
            left = conn.expires_at - time.time()
            if left > 1:
                conn.refresh_timer = self._timer(conn, max(0.5, left / 4), lambda: self._schedule_refresh(conn))
            return
        request_id = self._new_id()
        self._pending[request_id] = _Pending("refresh", token=token)
        conn.send({"type": "refresh", "token": token, "id": request_id})

    def _on_refresh_reply(self, conn: _Conn, pending: _Pending, frame: Mapping[str, Any]) -> None:
        if frame.get("type") == "refreshed":
            self._token = pending.token
            conn.token = pending.token or conn.token
            expires = frame.get("expires_at")
            conn.expires_at = expires if isinstance(expires, int) else conn.expires_at
            self._schedule_refresh(conn)
            return
        error = self._frame_error(frame)
        self._emit("error", error)
        if error.code == "unauthorized":
            self._token_refused = True
        if conn.expires_at is not None and conn.expires_at - time.time() > 1:
            conn.refresh_timer = self._timer(conn, max(1.0, (conn.expires_at - time.time()) / 4),
                                             lambda: self._schedule_refresh(conn))

    def __repr__(self) -> str:
        return f"Client({self.url!r}, state={self._state!r})"
