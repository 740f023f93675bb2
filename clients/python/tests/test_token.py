"""Tokens minted by Token, checked by the real gateway: HS256, RS256, ES256 (and ES384),
aud/iss, the channels and publish claims; and the claims of channel tokens."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import jwt
import pytest
import websockets
import websockets.asyncio.client
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fanout_gateway import InvalidArgumentError, Token
from support import SECRET, Gateway, RawClient



def _pems(key: "rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey", tmp: Path) -> "tuple[str, Path]":
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = tmp / "public.pem"
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


async def _refusal(url: str, jwt_token: str) -> str:
    """The gateway's reason for refusing a token (HTTP 401 body)."""
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        await websockets.asyncio.client.connect(
            url, additional_headers={"Authorization": f"Bearer {jwt_token}"}, open_timeout=10)
    assert refused.value.response.status_code == 401
    return str(json.loads(refused.value.response.body)["error"]["message"])


@pytest.fixture(scope="module")
def secret_gateway() -> Iterator[Gateway]:
    gw = Gateway(name="py-token", args=["--jwt-audience", "my-app", "--jwt-issuer", "backend"])
    yield gw
    gw.stop()


async def test_hs256_token_is_accepted_with_its_grants(secret_gateway: Gateway) -> None:
    tokens = Token(secret=SECRET, audience="my-app", issuer="backend")
    minted = tokens.mint("alice@example.com", channels=["dag:*"], publish=["room:lobby"],
                         ttl=600, info={"name": "Alice"})
    client = await RawClient.connect(secret_gateway.ws, minted)
    try:
        assert client.ack["user"] == "alice@example.com"
        assert abs(client.ack["expires_at"] - (time.time() + 600)) < 5
        assert (await client.request({"type": "subscribe", "channel": "dag:7"}))["type"] == "subscribed"
        refused = await client.request({"type": "subscribe", "channel": "room:secret-x"})
        assert refused["type"] == "error" and refused["code"] == "forbidden", refused
        published = await client.request({"type": "publish", "channel": "room:lobby", "data": 1})
        assert published["type"] == "published", published
        denied = await client.request({"type": "publish", "channel": "dag:7", "data": 1})
        assert denied["type"] == "error" and denied["code"] == "forbidden", denied
    finally:
        await client.close()


async def test_aud_and_iss_are_required_when_configured(secret_gateway: Gateway) -> None:
    assert await _refusal(secret_gateway.ws, Token(secret=SECRET).mint("42")) == \
        "token lacks a required claim"
    other = Token(secret=SECRET, audience="other-app", issuer="backend").mint("42")
    assert await _refusal(secret_gateway.ws, other) == "token audience (aud) not accepted"
    forged = Token(secret=SECRET + "x", audience="my-app", issuer="backend").mint("42")
    assert await _refusal(secret_gateway.ws, forged) == "token signature does not verify"


async def test_expired_token_is_refused(secret_gateway: Gateway) -> None:
    tokens = Token(secret=SECRET, audience=["x", "my-app"], issuer="backend")
    minted = tokens.mint(42, ttl=1)
    time.sleep(2.1)
    assert await _refusal(secret_gateway.ws, minted) == "token expired"


@pytest.mark.parametrize("kind", ["rsa", "p256", "p384"])
async def test_asymmetric_tokens_are_accepted(kind: str, tmp_path: Path) -> None:
    key = (rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "rsa"
           else ec.generate_private_key(ec.SECP256R1() if kind == "p256" else ec.SECP384R1()))
    private, public = _pems(key, tmp_path)
    args = ["--jwt-public-key", str(public)]
    if kind == "p384":
        args += ["--jwt-algorithm", "ES384"]
    gw = Gateway(name=f"py-{kind}", args=args, secret=None)
    try:
        tokens = Token(private_key=private)
        assert tokens.algorithm == {"rsa": "RS256", "p256": "ES256", "p384": "ES384"}[kind]
        client = await RawClient.connect(gw.ws, tokens.mint("bob", channels=["room:*"]))
        assert client.ack["user"] == "bob"
        await client.close()
        # A token of another key of the same kind does not pass.
        stranger = (rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "rsa"
                    else ec.generate_private_key(ec.SECP256R1() if kind == "p256" else ec.SECP384R1()))
        (tmp_path / "other").mkdir()
        other_private, _ = _pems(stranger, tmp_path / "other")
        assert await _refusal(gw.ws, Token(private_key=other_private).mint("bob")) == \
            "token signature does not verify"
        if kind == "rsa":
            pss = Token(private_key=private, algorithm="PS256").mint("bob")
            assert await _refusal(gw.ws, pss) == "token algorithm is not the one this server accepts"
    finally:
        gw.stop()


def test_channel_tokens_carry_the_contracts_claims() -> None:
    tokens = Token(secret=SECRET)
    minted = tokens.mint_channel("42", "dag:7", ttl=120, info={"role": "viewer"})
    claims = jwt.decode(minted, SECRET, algorithms=["HS256"])
    assert set(claims) == {"sub", "channel", "exp", "iat", "info"}
    assert claims["sub"] == "42" and claims["channel"] == "dag:7"
    assert claims["info"] == {"role": "viewer"}
    assert 115 <= claims["exp"] - time.time() <= 121
    assert jwt.get_unverified_header(minted)["alg"] == "HS256"


def test_bad_input_is_refused_clearly() -> None:
    with pytest.raises(InvalidArgumentError, match="exactly one of"):
        Token()
    with pytest.raises(InvalidArgumentError, match="exactly one of"):
        Token(secret="s", private_key="k")
    with pytest.raises(InvalidArgumentError, match="not RS256"):
        Token(secret="s", algorithm="RS256")
    with pytest.raises(InvalidArgumentError, match="cannot read the private key"):
        Token(private_key="not a pem")
    tokens = Token(secret=SECRET)
    for bad in ("", "a b", "x" * 124, "é"):
        with pytest.raises(InvalidArgumentError, match="invalid user id"):
            tokens.mint(bad)
    with pytest.raises(InvalidArgumentError, match="ttl"):
        tokens.mint("42", ttl=0)
    with pytest.raises(InvalidArgumentError, match="list of patterns"):
        tokens.mint("42", channels="room:*")
    with pytest.raises(InvalidArgumentError, match="invalid channel"):
        tokens.mint_channel("42", "Room:x")
    with pytest.raises(InvalidArgumentError, match="JSON"):
        tokens.mint("42", info=object())
    # The secret never shows in what a Token prints.
    assert SECRET not in repr(tokens)
