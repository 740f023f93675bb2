"""Minting the JWTs browsers and other clients connect with (docs/protocol.md, "Tokens")."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import jwt

from .channels import validate_channel, validate_user_id
from .errors import InvalidArgumentError

__all__ = ["Token"]

_HMAC = ("HS256", "HS384", "HS512")
_RSA = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC = {"secp256r1": "ES256", "secp384r1": "ES384"}

Ttl = Union[int, float, timedelta]


def _seconds(ttl: Ttl) -> int:
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else ttl
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
        raise InvalidArgumentError("ttl must be a positive number of seconds or a timedelta")
    return max(1, int(seconds))


def _patterns(name: str, patterns: Optional[Iterable[str]]) -> Optional[list[str]]:
    if patterns is None:
        return None
    if isinstance(patterns, str):
        raise InvalidArgumentError(f"{name} must be a list of patterns, not a string")
    out = list(patterns)
    for p in out:
        if not isinstance(p, str) or not p.strip():
            raise InvalidArgumentError(f"{name} entries must be non-empty strings")
    return out


class Token:
    """Signs connection tokens (and channel tokens) with the gateway's key.

    ``Token(secret=...)`` signs with HS256, the gateway's ``jwt_secret``. With
    ``private_key=`` (PEM text or bytes) the algorithm follows the key as the gateway's
    does: RS256 for RSA, ES256 for EC P-256, ES384 for P-384; pass ``algorithm=`` when the
    gateway pins another (``RS384``, ``PS256``, ``HS512``, ...). RSA and EC keys need the
    ``cryptography`` package (``pip install fanout-gateway[crypto]``).

    ``audience`` and ``issuer`` set ``aud`` and ``iss``: give the values the gateway's
    ``jwt_audience``/``jwt_issuer`` accept.

    >>> tokens = Token(secret="change-me-to-32-random-bytes-please")
    >>> jwt = tokens.mint("42", channels=["dag:*"], ttl=3600, info={"name": "Alice"})
    """

    def __init__(self, *, secret: Union[str, bytes, None] = None,
                 private_key: Union[str, bytes, None] = None, passphrase: Union[str, bytes, None] = None,
                 algorithm: Optional[str] = None, audience: Union[str, Sequence[str], None] = None,
                 issuer: Optional[str] = None) -> None:
        if (secret is None) == (private_key is None):
            raise InvalidArgumentError("Token needs exactly one of secret= and private_key=")
        self._audience: Union[str, list[str], None] = (
            audience if audience is None or isinstance(audience, str) else list(audience))
        self._issuer = issuer
        self._key: Any
        if secret is not None:
            if not secret:
                raise InvalidArgumentError("the secret must not be empty")
            self._key = secret.encode() if isinstance(secret, str) else bytes(secret)
            self.algorithm = (algorithm or "HS256").upper()
            if self.algorithm not in _HMAC:
                raise InvalidArgumentError(f"a secret signs {', '.join(_HMAC)}, not {self.algorithm}")
            return
        assert private_key is not None
        self._key, natural, allowed = self._load_key(private_key, passphrase)
        self.algorithm = (algorithm or natural).upper()
        if self.algorithm not in allowed:
            raise InvalidArgumentError(
                f"this key signs {', '.join(allowed)}, not {self.algorithm}")

    @staticmethod
    def _load_key(pem: Union[str, bytes], passphrase: Union[str, bytes, None]) -> tuple[Any, str, tuple[str, ...]]:
        try:
            from cryptography.hazmat.primitives.asymmetric import ec, rsa
            from cryptography.hazmat.primitives.serialization import load_pem_private_key
        except ImportError:  # pragma: no cover - depends on the installation
            raise InvalidArgumentError(
                "RSA and EC keys need the cryptography package: pip install fanout-gateway[crypto]"
            ) from None
        data = pem.encode() if isinstance(pem, str) else pem
        password = passphrase.encode() if isinstance(passphrase, str) else passphrase
        try:
            key = load_pem_private_key(data, password=password)
        except (ValueError, TypeError) as e:
            # The error text of cryptography does not contain the key.
            raise InvalidArgumentError(f"cannot read the private key (PEM expected): {e}") from None
        if isinstance(key, rsa.RSAPrivateKey):
            return key, "RS256", _RSA
        if isinstance(key, ec.EllipticCurvePrivateKey):
            alg = _EC.get(key.curve.name)
            if alg is None:
                raise InvalidArgumentError(f"EC keys must be P-256 or P-384, not {key.curve.name}")
            return key, alg, (alg,)
        raise InvalidArgumentError(f"unsupported key type {type(key).__name__}: use RSA or EC")

    def _sign(self, claims: dict[str, Any], ttl: Ttl) -> str:
        now = int(time.time())
        claims["iat"] = now
        claims["exp"] = now + _seconds(ttl)
        if self._audience is not None:
            claims["aud"] = self._audience
        if self._issuer is not None:
            claims["iss"] = self._issuer
        try:
            return jwt.encode(claims, self._key, algorithm=self.algorithm,
                              headers={"typ": "JWT"})
        except TypeError as e:
            raise InvalidArgumentError(f"a claim is not JSON-encodable: {e}") from None

    def mint(self, sub: Union[str, int], *, channels: Optional[Iterable[str]] = None,
             publish: Optional[Iterable[str]] = None, ttl: Ttl = 3600, info: Any = None,
             claims: Optional[Mapping[str, Any]] = None) -> str:
        """A connection token for user ``sub``.

        Args:
            sub: the user id: 1-123 bytes of letters, digits and ``_ - . : @``.
            channels: channels it may subscribe to besides ``user:<sub>`` and ``broadcast``:
                exact names or prefixes ending in ``*`` (``"room:*"``). Grant only what the
                user may read.
            publish: channels it may publish to (same patterns).
            ttl: lifetime, in seconds or a ``timedelta``.
            info: any JSON value shown to others in presence (keep it small).
            claims: further claims, added as they are (the gateway ignores unknown ones).
        """
        body: dict[str, Any] = dict(claims or {})
        body["sub"] = validate_user_id(sub)
        granted = _patterns("channels", channels)
        if granted is not None:
            body["channels"] = granted
        publishable = _patterns("publish", publish)
        if publishable is not None:
            body["publish"] = publishable
        if info is not None:
            body["info"] = info
        return self._sign(body, ttl)

    def mint_channel(self, sub: Union[str, int], channel: str, *, ttl: Ttl = 3600,
                     info: Any = None) -> str:
        """A channel token: claims ``sub``, ``channel``, ``exp`` (and ``iat``, ``info``,
        ``aud``, ``iss`` as configured), granting user ``sub`` the one channel ``channel``.

        Channel tokens follow the gateway's channel-token contract; gateways that do not
        check them yet ignore them.
        """
        body: dict[str, Any] = {"sub": validate_user_id(sub), "channel": validate_channel(channel)}
        if info is not None:
            body["info"] = info
        return self._sign(body, ttl)

    def __repr__(self) -> str:
        return f"Token(algorithm={self.algorithm!r})"
