"""The exceptions of fanout_gateway.

Every exception the library raises on purpose is a :class:`FanoutError`. Each says whether
trying again may succeed (``retryable``) and, for requests that publish, whether trying
again is *safe* (``retry_safe``): a retry that cannot publish the same message twice.

Messages never contain tokens, API keys, secrets or published data.
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "FanoutError",
    "InvalidArgumentError",
    "LibraryNotLoadedError",
    "RedisCommandError",
    "ApiError",
    "TransportError",
    "ClientError",
]


class FanoutError(Exception):
    """Base class of every error of this library.

    Attributes:
        retryable: whether the same request may succeed when tried again later.
        retry_safe: whether trying again cannot repeat an effect (a publish done twice).
    """

    retryable: bool = False
    retry_safe: bool = True

    def __init__(self, message: str, *, retryable: Optional[bool] = None,
                 retry_safe: Optional[bool] = None) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable
        if retry_safe is not None:
            self.retry_safe = retry_safe


class InvalidArgumentError(FanoutError, ValueError):
    """An argument the gateway would refuse (channel name, user id, TTL, payload, key),
    caught before anything was sent. Fix the calling code; retrying cannot help."""

    retryable = False
    retry_safe = True


class LibraryNotLoadedError(FanoutError):
    """``FCALL fanout_publish`` found no ``fanout`` Redis Function library: no fanout node
    has loaded it into this Redis yet (it was restarted without persistence, or this is
    not the nodes' Redis). Nothing was published. Nodes load it within about a second of
    (re)connecting, so a retry after a short pause usually succeeds."""

    retryable = True
    retry_safe = True


class RedisCommandError(FanoutError):
    """Redis refused a command (e.g. a payload above ``max_payload_bytes``) or could not be
    reached. ``retryable`` is true for connection problems and timeouts; ``retry_safe`` is
    false when the command may have been carried out (the reply was lost) and no
    idempotency key protects it. The redis-py exception is the ``__cause__``."""


class ApiError(FanoutError):
    """The gateway's HTTP API answered with an error.

    Attributes:
        status: the HTTP status (400, 401, 403, 413, 503, ...).
        code: the gateway's error code (``bad_request``, ``unauthorized``, ``forbidden``,
            ``too_large``, ``unavailable``), or ``http_<status>`` for an answer that is not
            the gateway's (a proxy's 502, say).
        detail: the gateway's human-readable message (do not parse it).
    """

    def __init__(self, status: int, code: str, detail: str) -> None:
        retryable = code == "unavailable" or status in (429, 502, 503, 504)
        # A 503 of the gateway means it did not publish; a proxy's 502/504 may come after
        # the gateway did. Other errors are refusals: nothing was done.
        retry_safe = status not in (502, 504)
        super().__init__(f"fanout API error {status} {code}: {detail}",
                         retryable=retryable, retry_safe=retry_safe)
        self.status = status
        self.code = code
        self.detail = detail


class TransportError(FanoutError):
    """No usable HTTP answer: connection refused, timeout, TLS failure, or a body that is
    not the gateway's JSON. ``retry_safe`` says whether the request can have had an effect
    (false only for a publish without idempotency key that may have reached the gateway)."""

    retryable = True


class ClientError(FanoutError):
    """An error of the asyncio :class:`~fanout_gateway.Client`: an ``error`` frame of the
    gateway (``code`` is the protocol's error code) or a condition the client detected:
    ``disconnected`` (the connection ended before the reply; the request may or may not
    have been carried out), ``timeout``, ``closed`` (``close()`` was called),
    ``transport`` (a connection could not be opened), ``callback_failed`` (one of your
    callbacks raised; the client carries on).

    Attributes:
        code: the error code; switch on it.
        close_code: the WebSocket close code that ended the connection, if any.
        status: the HTTP status of a refused connection, if any.
        channel: the channel the failed request was about, if any.
    """

    RETRYABLE_CODES = frozenset({"unavailable", "rate_limited", "disconnected", "timeout",
                                 "internal", "transport"})

    def __init__(self, code: str, message: str, *, retryable: Optional[bool] = None,
                 close_code: Optional[int] = None, status: Optional[int] = None,
                 channel: Optional[str] = None) -> None:
        if retryable is None:
            retryable = code in self.RETRYABLE_CODES
        super().__init__(message, retryable=retryable,
                         retry_safe=code not in ("disconnected", "timeout"))
        self.code = code
        self.close_code = close_code
        self.status = status
        self.channel = channel

    def __repr__(self) -> str:
        return f"ClientError(code={self.code!r}, message={self.message!r})"
