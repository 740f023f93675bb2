<?php
/**
 * REST route `fanout/v1/token`: a short-lived connection token for the logged-in user.
 *
 * Authentication is WordPress's own: the logged-in cookie plus the `wp_rest` nonce in
 * `X-WP-Nonce`. The nonce matters because the cookie alone would let any page on another
 * site make the browser fetch a token (cross-site request forgery); WordPress's REST
 * server treats a cookie request without a valid nonce as anonymous (no nonce: 401 here) or
 * refuses it (a wrong nonce: 403 `rest_cookie_invalid_nonce`). Application passwords also
 * work, for non-browser clients.
 *
 * @package Fanout
 */

declare(strict_types=1);

namespace FanoutWP;

use Fanout\Token;

if (!defined('ABSPATH')) {
    exit;
}

final class TokenRoute
{
    public const NAMESPACE = 'fanout/v1';
    public const ROUTE = '/token';

    public static function register(): void
    {
        add_action('rest_api_init', [self::class, 'registerRoute']);
    }

    public static function registerRoute(): void
    {
        register_rest_route(self::NAMESPACE, self::ROUTE, [
            'methods' => \WP_REST_Server::READABLE . ', ' . \WP_REST_Server::CREATABLE,
            'callback' => [self::class, 'mint'],
            'permission_callback' => [self::class, 'permission'],
        ]);
    }

    /**
     * Only logged-in users get a token (anonymous requests get 401); on a multisite network,
     * only users of this site (and super admins): a user of the network who is no member of
     * the site would otherwise read its broadcasts (403).
     */
    public static function permission(): bool|\WP_Error
    {
        if (!is_user_logged_in()) {
            return new \WP_Error('rest_not_logged_in', __('You must be logged in to connect to fanout.', 'fanout'), ['status' => 401]);
        }
        if (!self::member()) {
            return new \WP_Error('fanout_not_a_member', __('You are not a user of this site.', 'fanout'), ['status' => 403]);
        }
        return true;
    }

    /** Whether the current user belongs to this site (always on a single site). */
    public static function member(): bool
    {
        return !is_multisite() || is_super_admin() || is_user_member_of_blog();
    }

    /**
     * The token's `iss`: the site, as its home URL (`https://example.com/`, or
     * `https://example.com/site2/` on a subdirectory network), through the
     * `fanout_token_issuer` filter. Give the gateway the same values in `jwt_issuer` so that
     * it accepts only tokens minted by the site(s).
     */
    public static function issuer(): string
    {
        /**
         * Filters the `iss` claim of the site's tokens.
         *
         * @param string $issuer the site's home URL.
         */
        $issuer = apply_filters('fanout_token_issuer', home_url('/'));
        return is_string($issuer) && $issuer !== '' ? $issuer : home_url('/');
    }

    /**
     * Mints the token: `{token, expires_at, url, user, site, channels}`. `url` is the gateway
     * URL browsers connect to, so a script can be configured by this answer alone; `user` is
     * the user's fanout identity on this site (`wp1.7`), `site` the site's key.
     */
    public static function mint(): \WP_REST_Response|\WP_Error
    {
        $secret = (string) Settings::get('jwt_secret');
        if ($secret === '' || library_dir() === null) {
            return new \WP_Error('fanout_not_configured', __('fanout is not configured: set FANOUT_JWT_SECRET in wp-config.php.', 'fanout'), ['status' => 503]);
        }
        $user = wp_get_current_user();
        $ttl = (int) apply_filters('fanout_token_ttl', (int) Settings::get('token_ttl'), $user);
        $ttl = max(Settings::TOKEN_TTL_MIN, min(Settings::TOKEN_TTL_MAX, $ttl));
        $channels = self::channels($user);
        /**
         * Filters the channels the user may publish to from the browser (the token's
         * `publish` claim). Empty by default: browsers only read, and talk back with `send`.
         *
         * @param list<string> $publish
         * @param \WP_User     $user
         */
        $publish = array_values(array_filter((array) apply_filters('fanout_token_publish', [], $user), 'is_string'));
        /**
         * Filters the `info` others see in presence ("who is here") for this user. Keep it
         * small: it is copied into every presence event.
         *
         * @param array<string,mixed> $info name and avatar URL.
         * @param \WP_User            $user
         */
        $info = apply_filters('fanout_token_info', [
            'name' => $user->display_name,
            'avatar' => get_avatar_url($user->ID, ['size' => 48]),
        ], $user);

        try {
            $tokens = new Token(secret: $secret, audience: (string) Settings::get('token_audience'), issuer: self::issuer());
            $token = $tokens->mint(Channels::sub((int) $user->ID), channels: $channels, publish: $publish, ttl: $ttl, info: $info);
        } catch (\Throwable $e) {
            error_log('fanout: could not mint a token: ' . $e->getMessage());
            return new \WP_Error('fanout_token_failed', __('The token could not be made; the PHP error log has the reason.', 'fanout'), ['status' => 500]);
        }
        $response = new \WP_REST_Response([
            'token' => $token,
            'expires_at' => time() + $ttl,
            'url' => Settings::browserUrl(),
            'user' => Channels::sub((int) $user->ID),
            'site' => Channels::siteKey(),
            'channels' => $channels,
        ]);
        // A token is a credential: no cache may keep it. The REST server sends WordPress's
        // no-cache headers to logged-in users after the response's own, so no-store goes there.
        add_filter('nocache_headers', static function (array $headers): array {
            $headers['Cache-Control'] = 'no-store, no-cache, must-revalidate, max-age=0, private';
            return $headers;
        });
        return $response;
    }

    /**
     * The channels a user's token grants, through the `fanout_token_channels` filter.
     * Defaults, all of this site (FanoutWP\Channels): the user's own channel (which the
     * gateway grants anyway, listed so the filter sees the whole picture), the site's
     * broadcast channel, the gateway's `broadcast` (granted anyway), and the site's post
     * rooms `room:wp1.post-*` for users who can edit posts (the "who is here" indicator of the
     * edit screen).
     *
     * Still to come: a grant of one post's room per post the user can edit (a channel token on
     * the room's subscribe, which the JS client does not send yet), instead of the pattern.
     *
     * @return list<string>
     */
    public static function channels(\WP_User $user): array
    {
        $channels = [Channels::userChannel((int) $user->ID), Channels::siteBroadcast(), Channels::GATEWAY_BROADCAST];
        if (user_can($user, 'edit_posts')) {
            $channels[] = Channels::postRoomPattern();
        }
        /**
         * Filters the channels (exact names or prefixes ending in `*`) a user may subscribe
         * to. Grant only what the user may read: a `room:*` entry reads every room.
         *
         * @param list<string> $channels
         * @param \WP_User     $user
         */
        $channels = (array) apply_filters('fanout_token_channels', $channels, $user);
        return array_values(array_unique(array_filter($channels, static fn ($c) => is_string($c) && $c !== '')));
    }
}
