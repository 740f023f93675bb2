<?php
/**
 * When a user's access changes (logout, deletion, a role change), their open connections
 * should not keep receiving what they may no longer read.
 *
 * Waiting for issue 24: the gateway's `POST /api/disconnect {"user": ...}` will cut a user's
 * live connections; until it exists, nothing is cut (a connection lives until its token
 * expires, at most the token lifetime, 10 minutes by default; a refresh after a logout fails
 * because the token route needs a logged-in user). This class is the seam: it announces each
 * such change with the `fanout_user_access_changed` action, with the user's fanout identity,
 * which is what the disconnect call will take.
 *
 * @package Fanout
 */

declare(strict_types=1);

namespace FanoutWP;

if (!defined('ABSPATH')) {
    exit;
}

final class UserAccess
{
    public static function register(): void
    {
        add_action('wp_logout', [self::class, 'loggedOut']);
        add_action('delete_user', [self::class, 'deleted']);
        add_action('set_user_role', [self::class, 'roleChanged']);
    }

    public static function loggedOut(int $userId = 0): void
    {
        self::changed($userId, 'logout');
    }

    public static function deleted(int $userId): void
    {
        self::changed($userId, 'deleted');
    }

    public static function roleChanged(int $userId): void
    {
        self::changed($userId, 'role_changed');
    }

    private static function changed(int $userId, string $reason): void
    {
        if ($userId <= 0) {
            return;
        }
        /**
         * Fires when a user's access changed: `logout`, `deleted` or `role_changed`. Issue 24
         * will make the plugin cut the user's live connections here.
         *
         * @param string $sub     the user's fanout identity on this site (`wp1.42`).
         * @param int    $userId  the WordPress user id.
         * @param string $reason  what changed.
         */
        do_action('fanout_user_access_changed', Channels::sub($userId), $userId, $reason);
    }
}
