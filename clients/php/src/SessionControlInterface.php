<?php

declare(strict_types=1);

namespace Fanout;

/**
 * The backend's control of connected users, on every gateway node at once
 * (docs/publishing.md, "Controlling sessions"): through Redis (`Publisher`, the nodes'
 * Redis Functions) or the HTTP API (`HttpPublisher`), with the same effects. Each call
 * returns once the command is accepted; every node applies it to its own sessions within
 * a second.
 *
 * ```php
 * $control->disconnect('42', reason: 'logged out');             // clients reconnect (4004)
 * $control->disconnect('42', reason: 'account deleted', reconnect: false); // they stay away (4005)
 * $control->revokeUser('42');          // every token of 42 issued until now is refused
 * $control->unsubscribe('42', 'room:ops');
 * ```
 */
interface SessionControlInterface
{
    /** How long a user's revocation is kept by default: 30 days (mint no token longer-lived). */
    public const DEFAULT_REVOCATION_KEEP_S = 2_592_000;

    /**
     * Ends the user's connections on every node (or the one `$connId`): they receive a
     * `disconnect` frame, then a close with 4004 (`$reconnect`: clients come back by
     * themselves), 4005 (not `$reconnect`) or your own `$code` (4100 to 4499). A user with
     * no connection is not an error.
     *
     * @param string $reason at most 100 bytes, shown to the client; empty: "disconnected by the server".
     */
    public function disconnect(string|int $user, ?string $connId = null, string $reason = '', bool $reconnect = true, ?int $code = null): void;

    /**
     * Takes `$channel` away from the user's open connections (they receive `unsubscribed`
     * with `"server": true`). A client whose token grants the channel may subscribe again:
     * to keep a user out, revoke their tokens or mint narrower ones.
     */
    public function unsubscribe(string|int $user, string $channel): void;

    /**
     * Subscribes the user's open connections to `$channel`, whatever their tokens grant.
     * Connections opened later start from their token: to keep the channel across
     * reconnects, also grant it in the tokens you mint (or a channel token).
     */
    public function subscribe(string|int $user, string $channel): void;

    /**
     * Revokes every token of the user issued before `$before` (Unix seconds; null: now):
     * refused at connect, refresh and channel-token use, and live sessions holding one are
     * closed with 4003. Kept `$keepSeconds`: at least as long as your longest-lived token.
     */
    public function revokeUser(string|int $user, ?int $before = null, int $keepSeconds = self::DEFAULT_REVOCATION_KEEP_S): void;

    /**
     * Revokes the one token whose `jti` is `$jti`, until `$expiresAt` (its `exp`).
     */
    public function revokeToken(string $jti, int $expiresAt): void;

    /**
     * The live gateway nodes (those that sent a heartbeat in the last six seconds).
     *
     * @return list<array{id: string, version: string, uptime_s: int, connections: int, subscriptions: int, channels: int}>
     */
    public function nodes(): array;
}
