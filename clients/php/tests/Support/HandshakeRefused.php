<?php

declare(strict_types=1);

namespace Fanout\Tests\Support;

/** The server answered the WebSocket upgrade with another status than 101. */
final class HandshakeRefused extends \RuntimeException
{
    public function __construct(public readonly int $status, public readonly string $body)
    {
        parent::__construct("WebSocket upgrade refused with HTTP $status: $body");
    }
}
