<?php

declare(strict_types=1);

namespace Fanout\Internal;

use Fanout\Exception\InvalidArgumentException;

/**
 * What a publish sends as the message's `data`.
 *
 * Strings go as they are, as with `redis-cli PUBLISH`: subscribers get a string that is
 * valid JSON as that JSON value, any other string as a JSON string. Everything else
 * (arrays, objects, `JsonSerializable`, numbers, booleans, null) is JSON-encoded. An empty
 * PHP array encodes as `[]`; pass `new \stdClass()` or `(object) []` for `{}`.
 *
 * @internal not part of the library's API; may change in any version.
 */
final class Payload
{
    private const FLAGS = JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_PRESERVE_ZERO_FRACTION | JSON_THROW_ON_ERROR;

    private function __construct()
    {
    }

    /**
     * The bytes to publish through Redis.
     *
     * @throws InvalidArgumentException when `$data` cannot be encoded, or is a string starting
     *         with a NUL byte (which marks fanout's internal envelope: nodes drop it).
     */
    public static function encode(mixed $data): string
    {
        if (is_string($data)) {
            if (str_starts_with($data, "\0")) {
                throw new InvalidArgumentException('a payload must not start with a NUL byte (it marks fanout\'s internal envelope)');
            }
            return $data;
        }
        return self::json($data, 'data');
    }

    /**
     * The JSON text of `data` for the HTTP API, which delivers JSON values as they are:
     * a string that is valid JSON is sent as that JSON, another string as a JSON string,
     * so that a payload arrives the same over HTTP as through Redis.
     *
     * @throws InvalidArgumentException when `$data` cannot be encoded.
     */
    public static function jsonForHttp(mixed $data): string
    {
        if (is_string($data)) {
            json_decode($data);
            if (json_last_error() === JSON_ERROR_NONE) {
                return $data;
            }
            // Bytes that are not UTF-8 become U+FFFD, as the gateway does with such a payload.
            return self::json($data, 'data', JSON_INVALID_UTF8_SUBSTITUTE);
        }
        return self::json($data, 'data');
    }

    /**
     * JSON text of a value, with slashes and Unicode unescaped.
     *
     * @throws InvalidArgumentException naming `$what` when it cannot be encoded.
     */
    public static function json(mixed $value, string $what, int $extraFlags = 0): string
    {
        try {
            return json_encode($value, self::FLAGS | $extraFlags);
        } catch (\JsonException $e) {
            throw new InvalidArgumentException("$what cannot be encoded as JSON: " . $e->getMessage(), 0, $e);
        }
    }
}
