<?php
/**
 * When a user's access changes (logout, deletion, a role change, on a network removal from a
 * site), their open connections must not keep receiving what they may no longer read: after
 * the response, their connections are closed and every token of the user issued until then
 * is revoked on the gateway (`Publishing::cutUser`, through the gateway's session control:
 * `POST /api/disconnect` and `/api/revoke`, or the same Redis Functions). After a logout or a
 * role change the clients reconnect by themselves and get a new token if the user still may
 * (other devices stay logged in; a new role brings its own channels); a deleted or removed
 * user's stay away. The revocation covers the user's channel tokens too: a post's room comes
 * back only with a new channel token, which TokenRoute::mintChannel gives only if the user
 * can still edit the post.
 *
 * Each change is also announced with the `fanout_user_access_changed` action.
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
        add_action('set_user_role', [self::class, 'roleChanged'], 10, 3);
        add_action('remove_user_from_blog', [self::class, 'removedFromSite'], 10, 2);
    }

    public static function loggedOut(int $userId = 0): void
    {
        self::changed($userId, 'logout');
    }

    public static function deleted(int $userId): void
    {
        self::changed($userId, 'deleted');
    }

    /** @param list<string> $oldRoles empty for a user just created, who has no connection yet */
    public static function roleChanged(int $userId, string $role = '', array $oldRoles = []): void
    {
        if ($oldRoles !== []) {
            self::changed($userId, 'role_changed');
        }
    }

    /** On a network: the user is no member of that site any more. */
    public static function removedFromSite(int $userId, int $blogId): void
    {
        self::changed($userId, 'removed', $blogId);
    }

    private static function changed(int $userId, string $reason, ?int $blogId = null): void
    {
        if ($userId <= 0) {
            return;
        }
        $sub = Channels::siteKey($blogId) . '.' . $userId;
        Publishing::cutUser($sub, match ($reason) {
            'logout' => 'logged out',
            'deleted' => 'account deleted',
            'removed' => 'removed from the site',
            default => 'role changed',
        }, in_array($reason, ['logout', 'role_changed'], true));
        /**
         * Fires when a user's access changed: `logout`, `deleted`, `role_changed` or (on a
         * network) `removed` from a site (the plugin cuts the user's live connections after
         * the response).
         *
         * @param string $sub     the user's fanout identity on this site (`wp1.42`).
         * @param int    $userId  the WordPress user id.
         * @param string $reason  what changed.
         */
        do_action('fanout_user_access_changed', $sub, $userId, $reason);
    }
}
