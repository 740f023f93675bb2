"""Unit tests without servers: the exactly-once channel algorithm against made-up frames,
backoff bounds, reading a token's expiry, channel names and payloads."""

from __future__ import annotations

import base64
import json
from typing import Any, Dict, List, Tuple

import pytest

from fanout_gateway import (Backoff, InvalidArgumentError, Position, is_valid_channel,
                            token_expiry, user_channel, validate_channel)
from fanout_gateway._payload import encode
from fanout_gateway._sync import ChannelSync, MessageMeta, ReloadInfo


class Hooks:
    def __init__(self) -> None:
        self.delivered: List[Tuple[Any, MessageMeta]] = []
        self.reloads: List[ReloadInfo] = []
        self.fills: List[Tuple[int, int]] = []
        self.recovers = 0

    def sync(self, position: "Position | None" = None) -> ChannelSync:
        def recover() -> None:
            self.recovers += 1

        return ChannelSync("dag:7", deliver=lambda d, m: self.delivered.append((d, m)),
                           reload=self.reloads.append, fill=lambda s, n: self.fills.append((s, n)),
                           recover=recover, position=position)

    def offsets(self) -> List[int]:
        return [m.offset for _, m in self.delivered if m.offset is not None]


def msg(offset: int, epoch: str = "e1", **extra: Any) -> Dict[str, Any]:
    return {"type": "message", "channel": "dag:7", "offset": offset, "epoch": epoch,
            "data": {"n": offset}, **extra}


def test_start_then_in_order_with_duplicates_dropped() -> None:
    h = Hooks()
    sync = h.sync()
    sync.subscribing()
    assert sync.since() == {"offset": 0, "epoch": ""}
    sync.on_message(msg(3))  # before the reply: at or before its position, ignored
    sync.on_subscribed({"type": "subscribed", "channel": "dag:7", "offset": 3, "epoch": "e1",
                        "recovered": False})
    assert [(r.reason, r.offset) for r in h.reloads] == [("start", 3)]
    for o in (4, 4, 5, 3, 6):
        sync.on_message(msg(o))
    assert h.offsets() == [4, 5, 6]
    sync.on_message({"type": "message", "channel": "dag:7", "data": "plain"})
    assert h.delivered[-1][0] == "plain" and h.delivered[-1][1].offset is None


def test_a_gap_is_held_and_filled_from_history_with_paging() -> None:
    h = Hooks()
    sync = h.sync(Position("e1", 10))
    sync.on_message(msg(14, user="42"))
    sync.on_message(msg(15))
    assert h.fills == [(10, 3)] and h.offsets() == []
    sync.on_history({"epoch": "e1", "messages": [{"offset": 11, "data": 11}]})  # a short page
    assert h.fills == [(10, 3), (11, 2)] and h.offsets() == [11]
    sync.on_history({"epoch": "e1", "messages": [{"offset": 12, "data": 12}, {"offset": 13, "data": 13}]})
    assert h.offsets() == [11, 12, 13, 14, 15]
    assert h.delivered[3][1].user == "42" and h.recovers == 0


def test_unfillable_gaps_and_new_epochs_recover_once() -> None:
    h = Hooks()
    sync = h.sync(Position("e1", 10))
    sync.on_message(msg(13))
    sync.on_history({"epoch": "e1", "messages": [{"offset": 12, "data": 12}]})  # 11 trimmed
    assert h.recovers == 1
    sync.on_message(msg(1, epoch="e2"))  # a recovery is under way: not asked again
    sync.on_resync()
    assert h.recovers == 1
    sync.on_subscribed({"type": "subscribed", "offset": 2, "epoch": "e2", "recovered": False})
    assert [(r.reason, r.epoch, r.offset) for r in h.reloads] == [("lost", "e2", 2)]
    sync.on_message(msg(3, epoch="e2"))
    assert h.offsets() == [3]
    sync.on_message(msg(4, epoch="e1"))
    assert h.recovers == 2


def test_recovered_replay_after_reconnect() -> None:
    h = Hooks()
    sync = h.sync(Position("e1", 5))
    sync.disconnected()
    sync.subscribing()
    assert sync.since() == {"offset": 5, "epoch": "e1"}
    sync.on_subscribed({"type": "subscribed", "offset": 8, "epoch": "e1", "recovered": True})
    for o in (6, 7, 8, 9):
        sync.on_message(msg(o))
    assert h.offsets() == [6, 7, 8, 9] and h.reloads == []


def test_backoff_is_bounded_full_jitter() -> None:
    b = Backoff(1.0, 8.0, rand=lambda: 0.999)
    ceilings = []
    for _ in range(6):
        ceilings.append(b.ceiling())
        assert 0 <= b.next() < ceilings[-1]
    assert ceilings == [1, 2, 4, 8, 8, 8]
    b.reset()
    assert b.ceiling() == 1
    with pytest.raises(InvalidArgumentError):
        Backoff(2.0, 1.0)


def test_token_expiry_is_read_without_verifying() -> None:
    body = base64.urlsafe_b64encode(json.dumps({"exp": 1700000000}).encode()).rstrip(b"=").decode()
    assert token_expiry(f"e30.{body}.sig") == 1700000000
    assert token_expiry("not-a-jwt") is None
    assert token_expiry("a.b.c") is None


def test_channel_names_and_payloads() -> None:
    assert is_valid_channel("broadcast") and is_valid_channel("room:org-1.team_a:general")
    for bad, why in (("lobby", "must be `broadcast`"), ("broadcast:x", "channel of its own"),
                     ("room:", "empty part"), ("Room:x", "contains 'R'"),
                     ("room:a b", "contains ' '"), ("room:" + "x" * 124, "longer than 128"),
                     ("n" * 33 + ":x", "longer than 32")):
        with pytest.raises(InvalidArgumentError, match=why):
            validate_channel(bad)
    assert user_channel(42) == "user:42"
    assert encode({"a": "é"}) == '{"a":"é"}'.encode()
    assert encode("hello") == b'"hello"' and encode(b"raw") == b"raw"
    with pytest.raises(InvalidArgumentError):
        encode(float("nan"))
