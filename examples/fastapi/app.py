"""The FastAPI service of the seed, without its WebSocketManager: fanout holds the browsers'
WebSockets, this app only mints tokens, publishes, and reads what browsers send back.

Run it (with a gateway and Redis running, see README.md):

    FANOUT_JWT_SECRET=... REDIS_URL=redis://127.0.0.1:6379/0 \\
    FANOUT_PUBLIC_URL=ws://127.0.0.1:8080/ws uvicorn app:app --port 8000
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Dict, Optional

import redis.asyncio
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from fanout_gateway import AsyncInbox, AsyncPublisher, InboxMessage, Token, user_channel

log = logging.getLogger("example")

JWT_SECRET = os.environ["FANOUT_JWT_SECRET"]
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
PUBLIC_URL = os.environ.get("FANOUT_PUBLIC_URL", "ws://127.0.0.1:8080/ws")

# ---------------------------------------------------------------- the app's own auth
# Stand-in for your real authentication (sessions, OAuth, ...): a session token in the
# Authorization header names a user. DEMO_SESSIONS="alice-session:alice,bob-session:bob".
SESSIONS: Dict[str, str] = dict(
    pair.split(":", 1) for pair in os.environ.get("DEMO_SESSIONS", "").split(",") if ":" in pair)
ADMINS = set(filter(None, os.environ.get("DEMO_ADMINS", "").split(",")))


def current_user(authorization: str = Header(default="")) -> str:
    session = authorization.removeprefix("Bearer ").strip()
    user = SESSIONS.get(session)
    if user is None:
        raise HTTPException(status_code=401, detail="not logged in")
    return user


# ---------------------------------------------------------------- fanout
tokens = Token(secret=JWT_SECRET)


async def handle_inbox(message: InboxMessage, publisher: AsyncPublisher) -> None:
    """What browsers `send`: here, a notification marked as read on one device is marked
    read on all of the user's devices. message.user comes from the sender's token."""
    if message.type == "mark_read" and isinstance(message.data.get("data"), dict):
        await publisher.publish_with_history(user_channel(message.user), {
            "type": "notification_read",
            "data": {"notification_id": message.data["data"].get("notification_id")},
            "timestamp": time.time(),
        })


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    redis_client = redis.asyncio.Redis.from_url(REDIS_URL)
    publisher = AsyncPublisher(redis_client)
    # The inbox blocks in XREADGROUP: it gets a connection of its own. Uvicorn handles
    # SIGTERM itself and runs the shutdown below, which stops the worker.
    inbox = AsyncInbox(redis.asyncio.Redis.from_url(REDIS_URL), group="fastapi-app",
                       handle_signals=False)
    worker = asyncio.create_task(inbox.run(lambda m: handle_inbox(m, publisher)))
    app.state.publisher = publisher
    try:
        yield
    finally:
        inbox.stop()
        await worker
        await inbox._redis.aclose()
        await redis_client.aclose()


app = FastAPI(lifespan=lifespan)


def publisher_of(request: Request) -> AsyncPublisher:
    publisher: AsyncPublisher = request.app.state.publisher
    return publisher


@app.get("/realtime-token", response_class=PlainTextResponse)
def realtime_token(user: str = Depends(current_user)) -> str:
    """A short-lived fanout token for the logged-in user: user:<id> and broadcast are
    subscribed automatically; grant more with channels=[...]."""
    return tokens.mint(user, ttl=600)


@app.get("/realtime-config")
def realtime_config() -> Dict[str, str]:
    return {"url": PUBLIC_URL}


class NewTask(BaseModel):
    title: str


@app.post("/tasks")
async def create_task(task: NewTask, user: str = Depends(current_user),
                      publisher: AsyncPublisher = Depends(publisher_of)) -> Dict[str, Any]:
    task_id = uuid.uuid4().hex[:8]
    # ... store the task ...
    # Before: await websocket_manager.send_to_user(user_id, {...})
    result = await publisher.publish_with_history(user_channel(user), {
        "type": "task_update",
        "action": "created",
        "data": {"task_id": task_id, "title": task.title},
        "timestamp": time.time(),
    })
    return {"success": True, "id": task_id, "offset": result.offset}


class Announcement(BaseModel):
    message: str
    level: Optional[str] = None


@app.post("/announcements")
async def announce(announcement: Announcement, user: str = Depends(current_user),
                   publisher: AsyncPublisher = Depends(publisher_of)) -> Dict[str, Any]:
    if user not in ADMINS:
        raise HTTPException(status_code=403, detail="admins only")
    # Before: await websocket_manager.broadcast({...})
    nodes = await publisher.publish("broadcast", {
        "type": "system_announcement",
        "data": {"message": announcement.message, "level": announcement.level},
        "timestamp": time.time(),
    })
    return {"success": True, "nodes": nodes}
