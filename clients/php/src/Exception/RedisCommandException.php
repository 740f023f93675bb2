<?php

declare(strict_types=1);

namespace Fanout\Exception;

/**
 * Redis refused a command or could not be reached. The message is Redis's own error
 * (e.g. `payload larger than 262144 bytes (max_payload_bytes)` from `fanout_publish`) or
 * phpredis's connection error; the phpredis exception, if any, is the previous one.
 */
final class RedisCommandException extends \RuntimeException implements FanoutException
{
}
