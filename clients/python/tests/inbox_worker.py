"""An inbox worker process for the tests: handles entries, writing each handled entry's id
to a log file (flushed and synced) before the handler returns, so that a test can kill it
mid-batch and know exactly what it had done.

    python inbox_worker.py PORT GROUP CONSUMER LOG MODE [HANDLE_SECONDS]

MODE: ``sync`` (Inbox.run) or ``async`` (AsyncInbox.run). Prints ``ready`` once the group
exists, and ``stopped <handled>`` when run() returns (after SIGTERM).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import redis
import redis.asyncio

from fanout_gateway import AsyncInbox, Inbox, InboxMessage


def main() -> None:
    port, group, consumer, log_path, mode = sys.argv[1:6]
    handle_s = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    log = open(log_path, "a", buffering=1)

    def record(message: InboxMessage) -> None:
        log.write(f"{message.id} {message.deliveries}\n")
        log.flush()
        os.fsync(log.fileno())

    if mode == "sync":
        inbox = Inbox(redis.Redis(port=int(port)), group, consumer=consumer, batch_size=10,
                      block_ms=1000, claim_idle_ms=60_000)
        inbox.ensure_group()
        print("ready", flush=True)

        def handle(message: InboxMessage) -> None:
            time.sleep(handle_s)
            record(message)

        handled = inbox.run(handle)
    else:
        async def run() -> int:
            ainbox = AsyncInbox(redis.asyncio.Redis(port=int(port)), group, consumer=consumer,
                                batch_size=10, block_ms=30_000, claim_idle_ms=60_000)
            await ainbox.ensure_group()
            print("ready", flush=True)

            async def handle(message: InboxMessage) -> None:
                await asyncio.sleep(handle_s)
                record(message)

            return await ainbox.run(handle)

        handled = asyncio.run(run())
    print(f"stopped {handled}", flush=True)


if __name__ == "__main__":
    main()
