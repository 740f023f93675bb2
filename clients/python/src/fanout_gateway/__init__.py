"""fanout_gateway: the Python library of the fanout real-time gateway.

- :class:`Token`: connection and channel tokens (JWT: HS256, RS256, ES256, ...).
- :class:`Publisher` / :class:`AsyncPublisher`: publishing through Redis (redis-py), single
  server or Redis Cluster, with history, broadcast and idempotency keys.
- :class:`HttpPublisher` / :class:`AsyncHttpPublisher`: the gateway's HTTP API (httpx).
- :class:`Inbox` / :class:`AsyncInbox`: the consumer-group worker of what clients ``send``.
- :class:`Presence` / :class:`AsyncPresence`: presence over HTTP, agents' status.
- :class:`Client`: the asyncio client (websockets), exactly once and in order.

See docs/client-python.md.
"""

from __future__ import annotations

from ._sync import MessageMeta, Position, ReloadInfo
from .channels import (MAX_CHANNEL_BYTES, MAX_USER_ID_BYTES, is_valid_channel, user_channel,
                       validate_channel, validate_user_id)
from .client import (Backoff, Client, ConnectionInfo, PublishReceipt, SendReceipt, Subscription,
                     token_expiry)
from .errors import (ApiError, ClientError, FanoutError, InvalidArgumentError,
                     LibraryNotLoadedError, RedisCommandError, TransportError)
from .http import (AsyncHttpPublisher, AsyncPresence, History, HistoryMessage, HttpPublisher,
                   Presence, PresenceInfo, PresenceMember, Readiness)
from .inbox import DEFAULT_STREAM, AsyncInbox, Inbox, InboxMessage
from .publisher import AsyncPublisher, Publisher, PublishResult
from .token import Token

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # tokens
    "Token",
    # publishing
    "Publisher",
    "AsyncPublisher",
    "PublishResult",
    "HttpPublisher",
    "AsyncHttpPublisher",
    "History",
    "HistoryMessage",
    "Readiness",
    # presence
    "Presence",
    "AsyncPresence",
    "PresenceInfo",
    "PresenceMember",
    # inbox
    "Inbox",
    "AsyncInbox",
    "InboxMessage",
    "DEFAULT_STREAM",
    # client
    "Client",
    "Subscription",
    "Position",
    "MessageMeta",
    "ReloadInfo",
    "ConnectionInfo",
    "SendReceipt",
    "PublishReceipt",
    "Backoff",
    "token_expiry",
    # channels
    "is_valid_channel",
    "validate_channel",
    "validate_user_id",
    "user_channel",
    "MAX_CHANNEL_BYTES",
    "MAX_USER_ID_BYTES",
    # errors
    "FanoutError",
    "InvalidArgumentError",
    "LibraryNotLoadedError",
    "RedisCommandError",
    "ApiError",
    "TransportError",
    "ClientError",
]
