<?php
/**
 * The names this site uses on the gateway: one namespace per site, so that the sites of a
 * multisite network (or separate WordPress installs) sharing a gateway never see each
 * other's events.
 *
 * Every site has a key, `<prefix><blog id>` (`wp1`, `wp2`, ...; the prefix is
 * `FANOUT_SITE_PREFIX`, `wp` by default), and its names carry it:
 *
 * | what                         | name                         |
 * |------------------------------|------------------------------|
 * | a user's fanout identity     | `wp2.42` (token `sub`)       |
 * | that user's channel          | `user:wp2.42`                |
 * | the site's broadcast channel | `user:wp2`                   |
 * | a post's "who is here" room  | `room:wp2.post-17`           |
 *
 * The site's broadcast lives in the `user` namespace because that namespace keeps history,
 * has no presence (a presence event per page view to every user would be wasteful) and can
 * never be made public on the gateway. The gateway's own `broadcast` reaches every
 * connection of the gateway, every site of a network included: the plugin uses it only when
 * the network-wide broadcast option is on, or through `fanout_network_broadcast()`.
 *
 * @package Fanout
 */

declare(strict_types=1);

namespace FanoutWP;

if (!defined('ABSPATH')) {
    exit;
}

final class Channels
{
    /** The gateway's broadcast channel: every connection of the gateway gets it. */
    public const GATEWAY_BROADCAST = 'broadcast';

    /** The default prefix of site keys. */
    public const DEFAULT_PREFIX = 'wp';

    /**
     * A prefix: lowercase letters, digits, `_` and `-`, starting with a letter and not ending
     * with a digit, so that `<prefix><blog id>` can never be read two ways (`wp1` + `2` would
     * be `wp12`, site 12's key with the prefix `wp`).
     */
    public const PREFIX_PATTERN = '/^[a-z](?:[a-z0-9_-]{0,14}[a-z_-])?$/';

    /**
     * This site's key, e.g. `wp1`: `FANOUT_SITE_PREFIX` (default `wp`) and the blog id,
     * through the `fanout_site_key` filter.
     */
    public static function siteKey(?int $blogId = null): string
    {
        $prefix = defined('FANOUT_SITE_PREFIX') ? (string) constant('FANOUT_SITE_PREFIX') : self::DEFAULT_PREFIX;
        if (!preg_match(self::PREFIX_PATTERN, $prefix)) {
            $prefix = self::DEFAULT_PREFIX;
        }
        $blogId ??= get_current_blog_id();
        $key = $prefix . $blogId;
        /**
         * Filters a site's key, the namespace of its channel names. Letters, digits, `_` and
         * `-`, up to 40 characters; another value is ignored. Two sites must never share one.
         *
         * @param string $key     e.g. `wp1`.
         * @param int    $blogId  the site.
         */
        $filtered = apply_filters('fanout_site_key', $key, $blogId);
        return is_string($filtered) && preg_match('/^[A-Za-z0-9_-]{1,40}$/', $filtered) ? $filtered : $key;
    }

    /** A WordPress user's fanout identity on this site (the token's `sub`): `wp1.42`. */
    public static function sub(int $userId): string
    {
        return self::siteKey() . '.' . $userId;
    }

    /**
     * The WordPress user id of a fanout identity minted by this site, or null for anything
     * else (another site's user, a token minted by another application).
     */
    public static function userIdFromSub(string $sub): ?int
    {
        $prefix = self::siteKey() . '.';
        if (!str_starts_with($sub, $prefix)) {
            return null;
        }
        $id = substr($sub, strlen($prefix));
        return ctype_digit($id) && $id[0] !== '0' && strlen($id) <= 19 ? (int) $id : null;
    }

    /** A user's own channel: `user:wp1.42`, every tab and device of that user on this site. */
    public static function userChannel(int $userId): string
    {
        return 'user:' . self::sub($userId);
    }

    /** This site's broadcast channel, `user:wp1`: every logged-in user of this site. */
    public static function siteBroadcast(): string
    {
        return 'user:' . self::siteKey();
    }

    /** Whether `broadcast` means the whole gateway (the network-wide option) rather than this site. */
    public static function networkWide(): bool
    {
        return (bool) Settings::get('network_broadcast');
    }

    /** Where the plugin's `broadcast` goes: this site's channel, or the gateway's with the network-wide option. */
    public static function broadcast(): string
    {
        return self::networkWide() ? self::GATEWAY_BROADCAST : self::siteBroadcast();
    }

    /** The "who is here" room of a post: `room:wp1.post-17`. */
    public static function postRoom(int $postId): string
    {
        return self::postRoomPrefix() . $postId;
    }

    /** What every post room of this site starts with, `room:wp1.post-`. */
    public static function postRoomPrefix(): string
    {
        return 'room:' . self::siteKey() . '.post-';
    }

    /**
     * The post id in this site's room name of a post, `room:wp1.post-17` -> 17; null for any
     * other name: another site's room, a pattern, an id with a leading zero or out of range,
     * anything before or after it. Strict, since channel tokens are granted by it: only the
     * one name `postRoom()` gives for the id passes.
     */
    public static function postIdFromRoom(string $channel): ?int
    {
        $prefix = self::postRoomPrefix();
        if (!str_starts_with($channel, $prefix)) {
            return null;
        }
        $id = substr($channel, strlen($prefix));
        if (!ctype_digit($id) || $id[0] === '0' || strlen($id) > 19) {
            return null;
        }
        // 19 digits may be more than PHP_INT_MAX: the name must come back the same.
        return self::postRoom((int) $id) === $channel ? (int) $id : null;
    }

    /**
     * A channel name as the plugin's PHP functions take it: `broadcast` is this site's
     * broadcast (see `broadcast()`); any other name is used as it is.
     */
    public static function resolve(string $channel): string
    {
        return $channel === self::GATEWAY_BROADCAST ? self::broadcast() : $channel;
    }
}
