<?php

declare(strict_types=1);

namespace Fanout;

/**
 * Where a message published with history was kept: its offset in the channel's history and
 * the history's epoch. Clients see both on the `message` frame and use them to recover what
 * they missed (docs/protocol.md "History and recovery").
 */
final class PublishResult
{
    public function __construct(
        /** The message's offset, 1, 2, 3, ... per epoch; 0 when the channel keeps no history (a plain publish). */
        public readonly int $offset,
        /** The channel's epoch; null without history, or when the transport does not report it (the HTTP API). */
        public readonly ?string $epoch = null,
    ) {
    }

    /** Whether the message was kept in the channel's history. */
    public function isKept(): bool
    {
        return $this->offset > 0;
    }
}
