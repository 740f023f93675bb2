"""The gateway's HTTP API for backends (docs/publishing.md, docs/protocol.md "Presence over
HTTP") over httpx, sync and asyncio: publish, broadcast, history, presence and the status
of agents that hold no connection, plus ``/readyz``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Dict, Iterable, List, Mapping, Optional, Type, TypeVar, Union

import httpx

from . import _payload
from .channels import validate_channel, validate_user_id
from .errors import ApiError, InvalidArgumentError, TransportError
from .publisher import PublishResult, _distinct

__all__ = [
    "HttpPublisher",
    "AsyncHttpPublisher",
    "Presence",
    "AsyncPresence",
    "History",
    "HistoryMessage",
    "PresenceInfo",
    "PresenceMember",
    "Readiness",
]

DEFAULT_TIMEOUT = 5.0
MAX_STATUS_TTL_S = 86_400

Timeout = Union[float, httpx.Timeout]


@dataclass(frozen=True)
class HistoryMessage:
    """One message of a channel's history: ``offset``, ``data`` (the payload, decoded
    JSON) and ``user`` (only on messages a client published)."""

    offset: int
    data: Any
    user: Optional[str] = None


@dataclass(frozen=True)
class History:
    """A channel's recent messages, oldest first, with its current ``offset`` and
    ``epoch``. If ``epoch`` is not the one you know, or the first message is not
    ``since + 1``, messages were lost in between."""

    channel: str
    epoch: str
    offset: int
    messages: List[HistoryMessage] = field(default_factory=list)


@dataclass(frozen=True)
class PresenceMember:
    """A member of a channel's presence: a connection, or an agent set over HTTP (its
    ``conn_id`` is ``api:<user>``)."""

    user: str
    conn_id: str
    node: Optional[str] = None
    info: Any = None
    status: Any = None


@dataclass(frozen=True)
class PresenceInfo:
    """A channel's members, cluster-wide, with the counts."""

    channel: str
    connections: int
    users: int
    members: List[PresenceMember] = field(default_factory=list)


@dataclass(frozen=True)
class Readiness:
    """``GET /readyz``: whether the node should get traffic, and why not."""

    ready: bool
    reason: Optional[str]
    broker: Optional[str]
    node: Optional[str]
    connections: Optional[int]


# ------------------------------------------------------------------ requests and replies

@dataclass
class _Request:
    method: str
    path: str
    idempotent: bool
    json_body: Optional[str] = None
    params: Optional[Dict[str, Union[str, int]]] = None
    auth: bool = True


def _base_url(url: str) -> str:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise InvalidArgumentError("the gateway URL must start with http:// or https://")
    return url.rstrip("/")


def _check_api_key(api_key: str) -> str:
    if not isinstance(api_key, str) or not api_key:
        raise InvalidArgumentError("an API key is required (one of the gateway's api_key values)")
    return api_key


def _transport_error(request: _Request, error: httpx.HTTPError) -> TransportError:
    # Nothing reached the gateway when the connection could not even be made.
    not_sent = isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
    kind = "timed out" if isinstance(error, httpx.TimeoutException) else "failed"
    return TransportError(
        f"{request.method} {request.path} {kind}: {type(error).__name__}: {error}",
        retryable=True, retry_safe=not_sent or request.idempotent)


def _reply(request: _Request, response: httpx.Response, allow_503: bool = False) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = None
    if allow_503 and response.status_code == 503 and isinstance(body, dict) and "ready" in body:
        return body  # /readyz: not ready is an answer, not an error
    if response.status_code >= 400:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and isinstance(error.get("code"), str):
            raise ApiError(response.status_code, error["code"], str(error.get("message", "")))
        raise ApiError(response.status_code, f"http_{response.status_code}",
                       "the answer is not the gateway's (a proxy in between?)")
    if not isinstance(body, dict):
        raise TransportError(f"{request.method} {request.path}: the answer is not JSON",
                             retryable=True, retry_safe=request.idempotent)
    return body


def _publish_request(channel: str, data: Any, key: Union[str, bytes, None]) -> _Request:
    validate_channel(channel)
    checked = _payload.idempotency_key(key)
    body = '{"channel":' + json.dumps(channel) + ',"data":' + _payload.encode_json(data)
    if checked is not None:
        body += ',"idempotency_key":' + json.dumps(checked)
    return _Request("POST", "/api/publish", checked is not None, json_body=body + "}")


def _publish_result(body: Mapping[str, Any]) -> PublishResult:
    offset = body.get("offset", 0)
    return PublishResult(offset if isinstance(offset, int) else 0, None)


def _broadcast_request(channels: Iterable[str], data: Any) -> _Request:
    names = _distinct(channels)
    body = '{"channels":' + json.dumps(names) + ',"data":' + _payload.encode_json(data) + "}"
    return _Request("POST", "/api/broadcast", False, json_body=body)


def _history_request(channel: str, since: Optional[int], limit: Optional[int]) -> _Request:
    validate_channel(channel)
    params: Dict[str, Union[str, int]] = {"channel": channel}
    for name, value in (("since", since), ("limit", limit)):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidArgumentError(f"{name} must be a non-negative integer")
            params[name] = value
    return _Request("GET", "/api/history", True, params=params)


def _history(body: Mapping[str, Any]) -> History:
    messages = [HistoryMessage(int(m["offset"]), m.get("data"), m.get("user"))
                for m in body.get("messages", [])]
    return History(str(body["channel"]), str(body["epoch"]), int(body["offset"]), messages)


def _presence_request(channel: str) -> _Request:
    validate_channel(channel)
    return _Request("GET", "/api/presence", True, params={"channel": channel})


def _presence(body: Mapping[str, Any]) -> PresenceInfo:
    members = [PresenceMember(str(m["user"]), str(m["conn_id"]), m.get("node"), m.get("info"),
                              m.get("status")) for m in body.get("members", [])]
    return PresenceInfo(str(body["channel"]), int(body.get("connections", len(members))),
                        int(body.get("users", 0)), members)


def _status_request(channel: str, user: Union[str, int], status: Any, info: Any,
                    ttl: int) -> _Request:
    validate_channel(channel)
    user_id = validate_user_id(user)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= MAX_STATUS_TTL_S:
        raise InvalidArgumentError(f"ttl must be 1 to {MAX_STATUS_TTL_S} seconds")
    body: Dict[str, Any] = {"channel": channel, "user": user_id, "status": status, "ttl_s": ttl}
    if info is not None:
        body["info"] = info
    try:
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"status or info is not JSON-encodable: {e}") from None
    # Setting a status is an upsert: repeating it changes nothing.
    return _Request("POST", "/api/status", True, json_body=text)


def _readiness(body: Mapping[str, Any]) -> Readiness:
    return Readiness(bool(body.get("ready")), body.get("reason"), body.get("broker"),
                     body.get("node"), body.get("connections"))


# ------------------------------------------------------------------ sync

_S = TypeVar("_S", bound="_SyncApi")


class _SyncApi:
    def __init__(self, url: str, api_key: str, *, timeout: Timeout = DEFAULT_TIMEOUT,
                 client: Optional[httpx.Client] = None) -> None:
        self.url = _base_url(url)
        self._api_key = _check_api_key(api_key)
        self._own_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=timeout)
        self._timeout = timeout

    def _call(self, request: _Request, *, allow_error_status: bool = False) -> Any:
        headers = {"accept": "application/json"}
        if request.auth:
            headers["authorization"] = f"Bearer {self._api_key}"
        if request.json_body is not None:
            headers["content-type"] = "application/json"
        try:
            response = self._client.request(
                request.method, self.url + request.path, params=request.params,
                content=request.json_body.encode() if request.json_body is not None else None,
                headers=headers, timeout=self._timeout)
        except httpx.HTTPError as e:
            raise _transport_error(request, e) from e
        return _reply(request, response, allow_error_status)

    def ready(self) -> Readiness:
        """``GET /readyz``: whether this node is ready (reachable broker, not draining)."""
        return _readiness(self._call(_Request("GET", "/readyz", True, auth=False),
                                     allow_error_status=True))

    def close(self) -> None:
        """Closes the HTTP client, unless it was given to the constructor."""
        if self._own_client:
            self._client.close()

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


class Presence(_SyncApi):
    """Presence through the HTTP API: the members of a channel, and agents (anything
    that holds no connection of its own) entered into a channel's presence with a status.
    The channel's namespace must keep presence (``presence = true``).

    >>> presence = Presence("http://127.0.0.1:8080", api_key="...")
    >>> presence.set_status("room:agents", "summarizer", {"state": "thinking"}, ttl=60)
    'api:summarizer'
    """

    def set_status(self, channel: str, user: Union[str, int], status: Any, *, info: Any = None,
                   ttl: int = 60) -> str:
        """Sets the status of agent ``user`` on ``channel`` (``POST /api/status``): it is a
        member (conn id ``api:<user>``) until ``ttl`` seconds (1-86400) pass without another
        call. Subscribers get a ``join`` the first time (when the namespace announces joins)
        and a ``presence_update``. ``status=None`` removes it (see :meth:`remove`).
        Returns the member's conn id."""
        if status is None:
            self.remove(channel, user)
            return "api:" + validate_user_id(user)
        return str(self._call(_status_request(channel, user, status, info, ttl))["conn_id"])

    def remove(self, channel: str, user: Union[str, int]) -> bool:
        """Removes agent ``user`` from the channel's presence (subscribers get a ``leave``);
        whether it was there."""
        return bool(self._call(_status_request(channel, user, None, None, 60)).get("removed"))

    def members(self, channel: str) -> PresenceInfo:
        """``GET /api/presence``: every member of the channel, cluster-wide, with counts."""
        return _presence(self._call(_presence_request(channel)))


class HttpPublisher(_SyncApi):
    """Publishing and the rest of the HTTP API for backends without Redis access.

    >>> with HttpPublisher("http://127.0.0.1:8080", api_key="...") as publisher:
    ...     publisher.publish("dag:7", {"type": "node_state"}).offset
    42

    Errors are :class:`~fanout_gateway.ApiError` (the gateway refused: ``status``,
    ``code``) and :class:`~fanout_gateway.TransportError` (no usable answer); both say
    whether a retry may succeed (``retryable``) and whether it is safe (``retry_safe``: a
    publish without ``idempotency_key`` that may have reached the gateway is not).
    ``timeout`` (seconds, or an ``httpx.Timeout``) bounds each request; ``client`` is an
    ``httpx.Client`` of yours (then ``close()`` leaves it open).
    """

    def publish(self, channel: str, data: Any, *,
                idempotency_key: Union[str, bytes, None] = None) -> PublishResult:
        """``POST /api/publish``: kept in history on channels that keep one (``offset``
        then > 0; the API does not report the epoch); a plain publish elsewhere (offset 0)."""
        return _publish_result(self._call(_publish_request(channel, data, idempotency_key)))

    def publish_with_history(self, channel: str, data: Any, *,
                             idempotency_key: Union[str, bytes, None] = None) -> PublishResult:
        """The same as :meth:`publish`: the HTTP API keeps history wherever the channel has
        one. (Named like :meth:`Publisher.publish_with_history` so the two interchange.)"""
        return self.publish(channel, data, idempotency_key=idempotency_key)

    def broadcast(self, channels: Iterable[str], data: Any) -> int:
        """``POST /api/broadcast``: one message to 1-1000 channels, all or nothing (on a
        Redis Cluster each channel on its own). Returns the number of distinct channels."""
        return int(self._call(_broadcast_request(channels, data))["channels"])

    def history(self, channel: str, *, since: Optional[int] = None,
                limit: Optional[int] = None) -> History:
        """``GET /api/history``: the messages after offset ``since`` (or the latest
        ``limit``), oldest first. ``bad_request`` on a channel without history."""
        return _history(self._call(_history_request(channel, since, limit)))

    @property
    def presence(self) -> Presence:
        """:class:`Presence` on the same connection pool and key."""
        presence = Presence(self.url, self._api_key, timeout=self._timeout, client=self._client)
        return presence


# ------------------------------------------------------------------ asyncio

_A = TypeVar("_A", bound="_AsyncApi")


class _AsyncApi:
    def __init__(self, url: str, api_key: str, *, timeout: Timeout = DEFAULT_TIMEOUT,
                 client: Optional[httpx.AsyncClient] = None) -> None:
        self.url = _base_url(url)
        self._api_key = _check_api_key(api_key)
        self._own_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(timeout=timeout)
        self._timeout = timeout

    async def _call(self, request: _Request, *, allow_error_status: bool = False) -> Any:
        headers = {"accept": "application/json"}
        if request.auth:
            headers["authorization"] = f"Bearer {self._api_key}"
        if request.json_body is not None:
            headers["content-type"] = "application/json"
        try:
            response = await self._client.request(
                request.method, self.url + request.path, params=request.params,
                content=request.json_body.encode() if request.json_body is not None else None,
                headers=headers, timeout=self._timeout)
        except httpx.HTTPError as e:
            raise _transport_error(request, e) from e
        return _reply(request, response, allow_error_status)

    async def ready(self) -> Readiness:
        """See :meth:`HttpPublisher.ready`."""
        return _readiness(await self._call(_Request("GET", "/readyz", True, auth=False),
                                           allow_error_status=True))

    async def aclose(self) -> None:
        """Closes the HTTP client, unless it was given to the constructor."""
        if self._own_client:
            await self._client.aclose()

    async def __aenter__(self: _A) -> _A:
        return self

    async def __aexit__(self, exc_type: Optional[Type[BaseException]],
                        exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


class AsyncPresence(_AsyncApi):
    """:class:`Presence` for asyncio (``httpx.AsyncClient``); the same methods, awaited."""

    async def set_status(self, channel: str, user: Union[str, int], status: Any, *,
                         info: Any = None, ttl: int = 60) -> str:
        """See :meth:`Presence.set_status`."""
        if status is None:
            await self.remove(channel, user)
            return "api:" + validate_user_id(user)
        return str((await self._call(_status_request(channel, user, status, info, ttl)))["conn_id"])

    async def remove(self, channel: str, user: Union[str, int]) -> bool:
        """See :meth:`Presence.remove`."""
        return bool((await self._call(_status_request(channel, user, None, None, 60))).get("removed"))

    async def members(self, channel: str) -> PresenceInfo:
        """See :meth:`Presence.members`."""
        return _presence(await self._call(_presence_request(channel)))


class AsyncHttpPublisher(_AsyncApi):
    """:class:`HttpPublisher` for asyncio (``httpx.AsyncClient``); the same methods, awaited."""

    async def publish(self, channel: str, data: Any, *,
                      idempotency_key: Union[str, bytes, None] = None) -> PublishResult:
        """See :meth:`HttpPublisher.publish`."""
        return _publish_result(await self._call(_publish_request(channel, data, idempotency_key)))

    async def publish_with_history(self, channel: str, data: Any, *,
                                   idempotency_key: Union[str, bytes, None] = None) -> PublishResult:
        """See :meth:`HttpPublisher.publish_with_history`."""
        return await self.publish(channel, data, idempotency_key=idempotency_key)

    async def broadcast(self, channels: Iterable[str], data: Any) -> int:
        """See :meth:`HttpPublisher.broadcast`."""
        return int((await self._call(_broadcast_request(channels, data)))["channels"])

    async def history(self, channel: str, *, since: Optional[int] = None,
                      limit: Optional[int] = None) -> History:
        """See :meth:`HttpPublisher.history`."""
        return _history(await self._call(_history_request(channel, since, limit)))

    @property
    def presence(self) -> AsyncPresence:
        """:class:`AsyncPresence` on the same connection pool and key."""
        return AsyncPresence(self.url, self._api_key, timeout=self._timeout, client=self._client)
