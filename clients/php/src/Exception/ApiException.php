<?php

declare(strict_types=1);

namespace Fanout\Exception;

/**
 * The gateway's HTTP API answered with an error: `{"error":{"code":"...","message":"..."}}`.
 *
 * The error code is one of the protocol's codes (docs/protocol.md "Error codes"):
 * `bad_request` (400), `unauthorized` (401: missing or wrong API key), `forbidden` (403: the
 * API is disabled, no API key configured), `too_large` (413), `unavailable` (503: the
 * gateway cannot reach its broker; retry later). A response that is not the gateway's
 * (e.g. a proxy's 502 page) gets the code `http_<status>`.
 */
final class ApiException extends \RuntimeException implements FanoutException
{
    public function __construct(
        /** The HTTP status, e.g. 400. */
        public readonly int $status,
        /** The gateway's error code, e.g. `bad_request`. */
        public readonly string $errorCode,
        /** The gateway's error message, e.g. `invalid channel: channel name is longer than 128 bytes`. */
        public readonly string $errorMessage,
    ) {
        parent::__construct(sprintf('fanout HTTP API: %d %s: %s', $status, $errorCode, $errorMessage), $status);
    }

    /** Whether retrying later may succeed (the gateway or its broker is unavailable). */
    public function isRetryable(): bool
    {
        return $this->errorCode === 'unavailable' || in_array($this->status, [502, 503, 504], true);
    }
}
