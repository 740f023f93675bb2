<?php

declare(strict_types=1);

namespace Fanout\Exception;

/**
 * An argument that the gateway would refuse (an invalid channel name or user id, a
 * non-positive TTL, a value that cannot be encoded as JSON, ...), caught before anything is
 * sent. Fix the calling code; retrying cannot help.
 */
final class InvalidArgumentException extends \InvalidArgumentException implements FanoutException
{
}
