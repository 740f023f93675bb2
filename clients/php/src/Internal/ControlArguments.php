<?php

declare(strict_types=1);

namespace Fanout\Internal;

use Fanout\Channel;
use Fanout\Exception\InvalidArgumentException;

/**
 * The arguments of the session-control calls, checked the way the gateway checks them, so
 * that `Publisher` (Redis) and `HttpPublisher` (HTTP) refuse the same input with the same
 * message before anything is sent.
 *
 * @internal
 */
final class ControlArguments
{
    public const MAX_REASON = 100;
    public const MAX_CONN_ID = 128;
    public const MAX_JTI = 256;
    public const MAX_KEEP_S = 366 * 86_400;

    private function __construct()
    {
    }

    /** @return array{string, ?string, string, ?int} user, conn_id, reason, code */
    public static function disconnect(string|int $user, ?string $connId, string $reason, ?int $code): array
    {
        $user = Channel::assertValidUserId($user);
        if ($connId !== null && ($connId === '' || strlen($connId) > self::MAX_CONN_ID)) {
            throw new InvalidArgumentException('conn_id must be 1 to ' . self::MAX_CONN_ID . ' bytes');
        }
        if (strlen($reason) > self::MAX_REASON) {
            throw new InvalidArgumentException('the reason must be at most ' . self::MAX_REASON . ' bytes (a close frame carries it)');
        }
        if ($code !== null && ($code < 4100 || $code > 4499)) {
            throw new InvalidArgumentException("code must be an application close code from 4100 to 4499 (or null: 4004, or 4005 without reconnect), got $code");
        }
        return [$user, $connId, $reason, $code];
    }

    /** @return array{string, string} user, channel */
    public static function membership(string|int $user, string $channel): array
    {
        return [Channel::assertValidUserId($user), Channel::assertValid($channel)];
    }

    /** @return array{string, int, int} user, before, keep seconds */
    public static function revokeUser(string|int $user, ?int $before, int $keepSeconds): array
    {
        $user = Channel::assertValidUserId($user);
        // One second ahead: a token minted in this very second is issued "before" the call.
        $before ??= time() + 1;
        if ($before <= 0) {
            throw new InvalidArgumentException("before must be a time in Unix seconds, got $before");
        }
        if ($keepSeconds < 1 || $keepSeconds > self::MAX_KEEP_S) {
            throw new InvalidArgumentException('keepSeconds must be 1 to ' . self::MAX_KEEP_S . ", got $keepSeconds");
        }
        return [$user, $before, $keepSeconds];
    }

    public static function revokeToken(string $jti, int $expiresAt): void
    {
        if ($jti === '' || strlen($jti) > self::MAX_JTI) {
            throw new InvalidArgumentException('jti must be 1 to ' . self::MAX_JTI . ' bytes');
        }
        if ($expiresAt <= 0) {
            throw new InvalidArgumentException("expiresAt must be the token's exp in Unix seconds, got $expiresAt");
        }
    }
}
