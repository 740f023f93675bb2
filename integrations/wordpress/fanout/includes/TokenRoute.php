<?php
/**
 * REST routes `fanout/v1/token`, a short-lived connection token for the logged-in user, and
 * `fanout/v1/channel-token`, a channel token for the room of one post the user can edit.
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
    public const CHANNEL_ROUTE = '/channel-token';

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
        register_rest_route(self::NAMESPACE, self::CHANNEL_ROUTE, [
            'methods' => \WP_REST_Server::CREATABLE,
            'callback' => [self::class, 'mintChannel'],
            'permission_callback' => [self::class, 'permission'],
            'args' => [
                'channel' => [
                    'description' => __('The room of a post the user can edit, e.g. room:wp1.post-17.', 'fanout'),
                    'type' => 'string',
                    'required' => true,
                ],
            ],
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
        $tokens = self::tokens();
        if ($tokens instanceof \WP_Error) {
            return $tokens;
        }
        $user = wp_get_current_user();
        $ttl = self::ttl($user);
        $channels = self::channels($user);
        /**
         * Filters the channels the user may publish to from the browser (the token's
         * `publish` claim). Empty by default: browsers only read, and talk back with `send`.
         *
         * @param list<string> $publish
         * @param \WP_User     $user
         */
        $publish = array_values(array_filter((array) apply_filters('fanout_token_publish', [], $user), 'is_string'));

        try {
            $token = $tokens->mint(Channels::sub((int) $user->ID), channels: $channels, publish: $publish, ttl: $ttl, info: self::info($user));
        } catch (\Throwable $e) {
            error_log('fanout: could not mint a token: ' . $e->getMessage());
            return new \WP_Error('fanout_token_failed', __('The token could not be made; the PHP error log has the reason.', 'fanout'), ['status' => 500]);
        }
        self::noStore();
        return new \WP_REST_Response([
            'token' => $token,
            'expires_at' => time() + $ttl,
            'url' => Settings::browserUrl(),
            'user' => Channels::sub((int) $user->ID),
            'site' => Channels::siteKey(),
            'channels' => $channels,
        ]);
    }

    /**
     * Mints a channel token (`Fanout\Token::forChannel`) for the room of one post,
     * `{token, expires_at, channel}`: only for this site's room name of an existing post
     * (`room:wp1.post-17`, exactly as `Channels::postRoom()` makes it) that the user can edit
     * (`current_user_can('edit_post', 17)`); anything else is refused with 403
     * `fanout_channel_forbidden`, the same answer whether the post does not exist or the user
     * may not edit it. The JS client asks for it when the gateway refuses the room's subscribe
     * (`getChannelToken`), and again before it expires; same lifetime, `iss`, `aud` and `info`
     * as the connection token. The user's revocation (a role change, a logout: UserAccess)
     * covers these tokens too.
     */
    public static function mintChannel(\WP_REST_Request $request): \WP_REST_Response|\WP_Error
    {
        $tokens = self::tokens();
        if ($tokens instanceof \WP_Error) {
            return $tokens;
        }
        $channel = (string) $request->get_param('channel');
        $postId = Channels::postIdFromRoom($channel);
        $post = $postId !== null ? get_post($postId) : null;
        if (!$post instanceof \WP_Post || !current_user_can('edit_post', $post->ID)) {
            return new \WP_Error(
                'fanout_channel_forbidden',
                __('No channel token: only the room of a post of this site that you can edit (room:<site>.post-<id>) gets one.', 'fanout'),
                ['status' => 403]
            );
        }
        $user = wp_get_current_user();
        $ttl = self::ttl($user);
        try {
            $token = $tokens->forChannel(Channels::sub((int) $user->ID), $channel, ttl: $ttl, info: self::info($user));
        } catch (\Throwable $e) {
            error_log('fanout: could not mint a channel token: ' . $e->getMessage());
            return new \WP_Error('fanout_token_failed', __('The token could not be made; the PHP error log has the reason.', 'fanout'), ['status' => 500]);
        }
        self::noStore();
        return new \WP_REST_Response([
            'token' => $token,
            'expires_at' => time() + $ttl,
            'channel' => $channel,
        ]);
    }

    /** The site's token minter, or 503 when no JWT secret (or no PHP library) is there. */
    private static function tokens(): Token|\WP_Error
    {
        $secret = (string) Settings::get('jwt_secret');
        if ($secret === '' || library_dir() === null) {
            return new \WP_Error('fanout_not_configured', __('fanout is not configured: set FANOUT_JWT_SECRET in wp-config.php.', 'fanout'), ['status' => 503]);
        }
        return new Token(secret: $secret, audience: (string) Settings::get('token_audience'), issuer: self::issuer());
    }

    /** A token's lifetime for the user: the setting, through `fanout_token_ttl`, kept within bounds. */
    private static function ttl(\WP_User $user): int
    {
        $ttl = (int) apply_filters('fanout_token_ttl', (int) Settings::get('token_ttl'), $user);
        return max(Settings::TOKEN_TTL_MIN, min(Settings::TOKEN_TTL_MAX, $ttl));
    }

    /** @return mixed what others see of the user in presence, through `fanout_token_info` */
    private static function info(\WP_User $user): mixed
    {
        /**
         * Filters the `info` others see in presence ("who is here") for this user. Keep it
         * small: it is copied into every presence event.
         *
         * @param array<string,mixed> $info name and avatar URL.
         * @param \WP_User            $user
         */
        return apply_filters('fanout_token_info', [
            'name' => $user->display_name,
            'avatar' => get_avatar_url($user->ID, ['size' => 48]),
        ], $user);
    }

    /**
     * A token is a credential: no cache may keep it. The REST server sends WordPress's
     * no-cache headers to logged-in users after the response's own, so no-store goes there.
     */
    private static function noStore(): void
    {
        add_filter('nocache_headers', static function (array $headers): array {
            $headers['Cache-Control'] = 'no-store, no-cache, must-revalidate, max-age=0, private';
            return $headers;
        });
    }

    /**
     * The channels a user's token grants, through the `fanout_token_channels` filter.
     * Defaults, all of this site (FanoutWP\Channels): the user's own channel (which the
     * gateway grants anyway, listed so the filter sees the whole picture), the site's
     * broadcast channel and the gateway's `broadcast` (granted anyway). No post room: each is
     * granted by a channel token of its own, for a post the user can edit (`mintChannel`).
     *
     * @return list<string>
     */
    public static function channels(\WP_User $user): array
    {
        $channels = [Channels::userChannel((int) $user->ID), Channels::siteBroadcast(), Channels::GATEWAY_BROADCAST];
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
