"""The gateway's channel grammar (docs/protocol.md, "Channels"), checked before anything is
sent, with the gateway's own wording.

A channel is ``broadcast`` or ``<namespace>:<name>``: a namespace of 1-32 characters
``a-z 0-9 _ -``, a name of ``A-Z a-z 0-9 _ - . : @``, 128 bytes at most in all. Whether a
namespace is configured on the gateway is known only there.
"""

from __future__ import annotations

import re
from typing import Union

from .errors import InvalidArgumentError

__all__ = [
    "MAX_CHANNEL_BYTES",
    "MAX_USER_ID_BYTES",
    "is_valid_channel",
    "validate_channel",
    "validate_user_id",
    "user_channel",
]

MAX_CHANNEL_BYTES = 128
"""Longest channel name, in bytes."""
MAX_USER_ID_BYTES = MAX_CHANNEL_BYTES - len("user:")
"""Longest user id (``sub``): ``user:<id>`` must be a valid channel."""

_NAMESPACE = re.compile(r"[a-z0-9_-]+")
_NAME = re.compile(r"[A-Za-z0-9_.:@-]+")


def _problem(name: object) -> str | None:
    if not isinstance(name, str):
        return f"channel name must be a string, not {type(name).__name__}"
    if name == "broadcast":
        return None
    if len(name.encode()) > MAX_CHANNEL_BYTES:
        return f"channel name is longer than {MAX_CHANNEL_BYTES} bytes"
    namespace, sep, rest = name.partition(":")
    if not sep or not namespace:
        return "channel name must be `broadcast` or `<namespace>:<name>`"
    if namespace == "broadcast":
        return "`broadcast` is a channel of its own, not a namespace"
    if not rest:
        return "channel name has an empty part after the namespace"
    if len(namespace) > 32:
        return "channel namespace is longer than 32 characters"
    for part, pattern in ((namespace, _NAMESPACE), (rest, _NAME)):
        if not pattern.fullmatch(part):
            bad = next(c for c in part if not pattern.fullmatch(c))
            return (f"channel name contains {bad!r}; allowed: letters, digits and `_ - . : @` "
                    "(namespace: lowercase letters, digits, `_ -`)")
    return None


def is_valid_channel(name: object) -> bool:
    """Whether ``name`` follows the channel grammar."""
    return _problem(name) is None


def validate_channel(name: object) -> str:
    """Returns ``name`` if it is a valid channel name, else raises
    :class:`InvalidArgumentError` saying why (``invalid channel: ...``)."""
    problem = _problem(name)
    if problem is not None:
        raise InvalidArgumentError(f"invalid channel: {problem}")
    assert isinstance(name, str)
    return name


def validate_user_id(user_id: Union[str, int]) -> str:
    """Returns the user id as a string if it is valid (1-123 bytes of letters, digits and
    ``_ - . : @``, so that ``user:<id>`` is a channel), else raises
    :class:`InvalidArgumentError`."""
    if isinstance(user_id, bool) or not isinstance(user_id, (str, int)):
        raise InvalidArgumentError(f"a user id must be a string or an int, not {type(user_id).__name__}")
    text = str(user_id)
    if not text or len(text.encode()) > MAX_USER_ID_BYTES or not _NAME.fullmatch(text):
        raise InvalidArgumentError(
            f"invalid user id: 1 to {MAX_USER_ID_BYTES} bytes of letters, digits and `_ - . : @`")
    return text


def user_channel(user_id: Union[str, int]) -> str:
    """The personal channel of a user: ``user:<id>``."""
    return "user:" + validate_user_id(user_id)
