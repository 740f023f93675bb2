"""What a publish carries: the payload rules shared by every publishing path."""

from __future__ import annotations

import json
from typing import Any, Union

from .errors import InvalidArgumentError

MAX_IDEMPOTENCY_KEY_BYTES = 256


def encode(data: Any) -> bytes:
    """The payload bytes for ``data``.

    ``bytes`` (and ``bytearray``/``memoryview``) are taken as an already encoded payload
    and sent as they are; everything else is encoded as compact JSON (a ``str`` becomes a
    JSON string). A payload must not start with a NUL byte (it marks fanout's envelopes).
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        payload = bytes(data)
    else:
        try:
            payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False,
                                 allow_nan=False).encode()
        except (TypeError, ValueError) as e:
            raise InvalidArgumentError(f"data is not JSON-encodable: {e}") from None
    if payload[:1] == b"\0":
        raise InvalidArgumentError("a payload must not start with a NUL byte")
    return payload


def encode_json(data: Any) -> str:
    """``data`` as JSON text for the HTTP API, whose ``data`` must be a JSON value: bytes
    must already be valid JSON."""
    payload = encode(data)
    try:
        text = payload.decode()
        json.loads(text)
    except (UnicodeDecodeError, ValueError):
        raise InvalidArgumentError("bytes given as data must be valid UTF-8 JSON over HTTP") from None
    return text


def idempotency_key(key: Union[str, bytes, None]) -> str | None:
    """Checks an idempotency key: 1 to 256 bytes."""
    if key is None:
        return None
    text = key.decode() if isinstance(key, bytes) else key
    if not isinstance(text, str) or not 1 <= len(text.encode()) <= MAX_IDEMPOTENCY_KEY_BYTES:
        raise InvalidArgumentError(
            f"an idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes")
    return text
