"""Fixtures: a redis-server and a gateway on it, shared by the tests of one module (each
test uses channels of its own), and stopped afterwards."""

from __future__ import annotations

import uuid
from typing import Iterator

import pytest

from support import Gateway, RedisServer


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(redis_server: RedisServer) -> Iterator[Gateway]:
    gw = Gateway(redis_url=redis_server.url, name="py-a")
    yield gw
    gw.stop()


@pytest.fixture
def uid() -> str:
    """A suffix that makes a test's channels its own."""
    return uuid.uuid4().hex[:10]
