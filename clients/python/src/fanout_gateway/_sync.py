"""Exactly-once, in-order delivery on one channel: the "client algorithm" of
docs/protocol.md, kept apart from the connection (a port of clients/js/src/channel.js).

On a channel with history every message carries a position (epoch, offset), offsets going
up by exactly 1 per message within an epoch. The channel remembers the position of the
last message it delivered and delivers a message only when it is the next one:

- an offset at or below the position is a duplicate: dropped;
- the next offset is delivered, then any held messages that now follow;
- an offset that skips ahead is held, and the gap asked of ``history``; when history
  cannot fill it, the channel recovers with a ``subscribe`` carrying ``since``, whose reply
  replays the missing messages (``recovered: true``) or tells the application to reload;
- a message of another epoch means the history was lost: recover.

Messages without an offset are delivered as they come.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional


@dataclass
class Position:
    """Where a channel with history stands: the ``epoch`` and ``offset`` of the last
    message processed. Keep it to resume after a restart (``subscribe(..., since=...)``)."""

    epoch: str
    offset: int


@dataclass(frozen=True)
class MessageMeta:
    """What comes with a message: its ``channel``, and on channels with history its
    ``offset`` and ``epoch``; ``user`` on messages a client published (from its token)."""

    channel: str
    offset: Optional[int] = None
    epoch: Optional[str] = None
    user: Optional[str] = None


@dataclass(frozen=True)
class ReloadInfo:
    """Why the application must (re)load a channel's state: ``reason`` is ``"start"`` (the
    subscription is in place) or ``"lost"`` (messages may have been missed); ``epoch`` and
    ``offset`` are the position delivery goes on from (channels with history)."""

    channel: str
    reason: str
    epoch: Optional[str] = None
    offset: Optional[int] = None


Frame = Mapping[str, Any]


class ChannelSync:
    def __init__(self, channel: str, *, deliver: Callable[[Any, MessageMeta], None],
                 reload: Callable[[ReloadInfo], None], fill: Callable[[int, int], None],
                 recover: Callable[[], None], position: Optional[Position] = None,
                 max_held: int = 1000) -> None:
        self.channel = channel
        self._deliver_hook = deliver
        self._reload_hook = reload
        self._fill_hook = fill
        self._recover_hook = recover
        self.max_held = max_held
        self.position = Position(str(position.epoch), int(position.offset)) if position else None
        self.started = self.position is not None
        self.recovering = False
        self.filling = False
        self.held: Dict[int, Frame] = {}

    def since(self) -> Dict[str, Any]:
        if self.position is None:
            return {"offset": 0, "epoch": ""}
        return {"offset": self.position.offset, "epoch": self.position.epoch}

    def subscribing(self) -> None:
        self.recovering = True

    def disconnected(self) -> None:
        self.recovering = False
        self.filling = False
        self.held.clear()

    def on_message(self, frame: Frame) -> None:
        offset = frame.get("offset")
        if not isinstance(offset, int) or isinstance(offset, bool):
            self._deliver(frame)
            return
        position = self.position
        if position is None:
            return
        if frame.get("epoch") != position.epoch:
            self.recover()
            return
        if offset <= position.offset:
            return
        if offset == position.offset + 1:
            self._advance(frame)
            self._drain()
            return
        if len(self.held) >= self.max_held:
            self.held.clear()
            self.recover()
            return
        self.held[offset] = frame
        if not self.recovering and not self.filling:
            self.filling = True
            self._fill_hook(position.offset, min(self.held) - position.offset - 1)

    def on_history(self, reply: Frame) -> None:
        self.filling = False
        position = self.position
        if position is None or not self.held:
            return
        if reply.get("epoch") != position.epoch:
            self.recover()
            return
        before = position.offset
        for message in reply.get("messages") or []:
            offset = message.get("offset")
            if not isinstance(offset, int) or offset <= position.offset:
                continue
            if offset != position.offset + 1:
                break  # trimmed in between
            self._advance({**message, "channel": self.channel, "epoch": reply.get("epoch")})
        self._drain()
        if not self.held or self.recovering:
            return
        if position.offset > before:
            # A reply may hold fewer messages than asked: page on.
            self.filling = True
            self._fill_hook(position.offset, min(self.held) - position.offset - 1)
        else:
            self.recover()

    def on_history_failed(self) -> None:
        self.filling = False
        if self.held:
            self.recover()

    def on_resync(self) -> None:
        self.recover()

    def recover(self) -> None:
        if self.recovering:
            return
        self.recovering = True
        self._recover_hook()

    def on_subscribed(self, reply: Frame) -> None:
        self.recovering = False
        recovered = reply.get("recovered")
        if recovered is True:
            self._drain()
            return
        offset = reply.get("offset")
        has_offset = isinstance(offset, int) and not isinstance(offset, bool)
        if recovered is None and not has_offset:
            return  # a plain acknowledgement
        reason = "lost" if self.started else "start"
        self.started = True
        self.position = Position(str(reply.get("epoch")), int(offset)) if has_offset else None  # type: ignore[arg-type]
        p = self.position
        self._reload_hook(ReloadInfo(self.channel, reason, p.epoch if p else None,
                                     p.offset if p else None))
        self._drain()

    def _advance(self, frame: Frame) -> None:
        assert self.position is not None
        self.position.offset = int(frame["offset"])
        self._deliver(frame)

    def _deliver(self, frame: Frame) -> None:
        offset = frame.get("offset")
        has_offset = isinstance(offset, int) and not isinstance(offset, bool)
        user = frame.get("user")
        meta = MessageMeta(self.channel, offset if has_offset else None,
                           str(frame.get("epoch")) if has_offset else None,
                           user if isinstance(user, str) else None)
        self._deliver_hook(frame.get("data"), meta)

    def _drain(self) -> None:
        position = self.position
        if position is None:
            self.held.clear()
            return
        for offset in [o for o, f in self.held.items()
                       if o <= position.offset or f.get("epoch") != position.epoch]:
            del self.held[offset]
        nxt = self.held.pop(position.offset + 1, None)
        while nxt is not None:
            self._advance(nxt)
            nxt = self.held.pop(position.offset + 1, None)
