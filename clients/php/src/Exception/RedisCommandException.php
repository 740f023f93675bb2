<?php

declare(strict_types=1);

namespace Fanout\Exception;

/**
 * Redis refused a command or could not be reached. The message is Redis's own error
 * (e.g. `payload larger than 262144 bytes (max_payload_bytes)` from `fanout_publish`) or
 * phpredis's connection error; the phpredis exception, if any, is the previous one.
 *
 * `connectionFailed()` tells the two apart: true when Redis could not be reached or the
 * connection failed during the command (refused, lost, timed out), so that whether the
 * command took effect is unknown; false when Redis answered with an error, which is about
 * the command (another command on the same connection may well succeed).
 */
final class RedisCommandException extends \RuntimeException implements FanoutException
{
    public function __construct(string $message = '', int $code = 0, ?\Throwable $previous = null, private readonly bool $connectionFailed = false)
    {
        parent::__construct($message, $code, $previous);
    }

    /** Whether the connection failed (true) rather than Redis refusing the command (false). */
    public function connectionFailed(): bool
    {
        return $this->connectionFailed;
    }
}
