<?php
/**
 * The browser side: loads the fanout JS client (`fanout-client`, copied into
 * `assets/js/fanout/` by build.sh) and the plugin's scripts for logged-in users, with the
 * admin-bar bell and, on post edit screens, the "who is here" indicator.
 *
 * The scripts are ES modules without a build step. WordPress 6.5 added script modules
 * (`wp_enqueue_script_module`), but Debian 12 ships 6.1: a classic registration whose tag
 * the `script_loader_tag` filter turns into `<script type="module">` works on both.
 *
 * @package Fanout
 */

declare(strict_types=1);

namespace FanoutWP;

if (!defined('ABSPATH')) {
    exit;
}

final class Assets
{
    /** Script handle of the plugin's entry module. */
    public const HANDLE = 'fanout-wp';

    public static function register(): void
    {
        add_action('admin_enqueue_scripts', [self::class, 'enqueueAdmin']);
        add_action('wp_enqueue_scripts', [self::class, 'enqueueFront']);
        add_action('admin_bar_menu', [self::class, 'addBell'], 95);
        add_filter('script_loader_tag', [self::class, 'moduleTag'], 10, 2);
    }

    /**
     * Whether the browser side can run: a gateway URL, a secret to sign tokens with, and the
     * JS client in the plugin (a development checkout needs `build.sh --dev`).
     */
    public static function ready(): bool
    {
        return is_user_logged_in()
            && TokenRoute::member()
            && Settings::get('gateway_url') !== ''
            && Settings::isSet('jwt_secret')
            && is_file(dirname(FANOUT_WP_FILE) . '/assets/js/fanout/index.js');
    }

    /** @param string $hookSuffix the admin page, e.g. `post.php`. */
    public static function enqueueAdmin(string $hookSuffix): void
    {
        $postId = null;
        if ($hookSuffix === 'post.php') {
            $post = get_post();
            if ($post instanceof \WP_Post && current_user_can('edit_post', $post->ID)) {
                $postId = (int) $post->ID;
            }
        }
        self::enqueue($postId);
    }

    /** On the front end the admin bar carries the bell; without the bar there is nothing to show. */
    public static function enqueueFront(): void
    {
        if (is_admin_bar_showing()) {
            self::enqueue(null);
        }
    }

    /**
     * Enqueues the entry module with its configuration (`window.fanoutWP`), printed before it
     * as a classic inline script: modules run deferred, after it.
     *
     * @param int|null $postId the post being edited, whose presence room the page joins.
     */
    private static function enqueue(?int $postId): void
    {
        if (!self::ready()) {
            return;
        }
        $base = plugins_url('assets/', FANOUT_WP_FILE);
        wp_enqueue_style(self::HANDLE, $base . 'css/fanout-wp.css', ['dashicons'], FANOUT_WP_VERSION);
        // Imported modules carry the version too: build.sh writes `?ver=<version>` into every
        // relative import, so that after an update a browser never mixes new and cached files.
        wp_enqueue_script(self::HANDLE, $base . 'js/fanout-wp.js', ['wp-i18n'], FANOUT_WP_VERSION, true);
        // The scripts' strings (plural forms included) from languages/fanout-<locale>-fanout-wp.json.
        wp_set_script_translations(self::HANDLE, 'fanout', dirname(FANOUT_WP_FILE) . '/languages');
        $userId = get_current_user_id();

        $config = [
            'url' => Settings::browserUrl(),
            'tokenUrl' => rest_url(TokenRoute::NAMESPACE . TokenRoute::ROUTE),
            // Channel tokens for post rooms, which the connection token does not grant.
            'channelTokenUrl' => rest_url(TokenRoute::NAMESPACE . TokenRoute::CHANNEL_ROUTE),
            'nonce' => wp_create_nonce('wp_rest'),
            // Where a tab whose nonce has expired (a tab open for days) gets a new one.
            'nonceUrl' => admin_url('admin-ajax.php?action=rest-nonce'),
            'userId' => (string) $userId,
            'user' => Channels::sub($userId),
            'userChannel' => Channels::userChannel($userId),
            'broadcastChannels' => array_values(array_unique([Channels::siteBroadcast(), Channels::GATEWAY_BROADCAST])),
            'postRoom' => $postId !== null ? Channels::postRoom($postId) : null,
            // The channels the client asks channel tokens for (when the gateway refuses them).
            'postRoomPrefix' => Channels::postRoomPrefix(),
            'version' => FANOUT_WP_VERSION,
            'i18n' => [
                'notifications' => __('Notifications', 'fanout'),
                'empty' => __('No notifications yet', 'fanout'),
                'here' => __('Also editing:', 'fanout'),
                'offline' => __('Live updates unavailable', 'fanout'),
            ],
        ];
        /**
         * Filters what the browser scripts get as `window.fanoutWP`.
         *
         * @param array<string,mixed> $config
         * @param int|null            $postId
         */
        $config = apply_filters('fanout_script_config', $config, $postId);
        wp_add_inline_script(self::HANDLE, 'window.fanoutWP = ' . wp_json_encode($config) . ';', 'before');
    }

    /**
     * `script_loader_tag`: marks the entry script as a module. Only the tag with the handle's
     * id is changed; the inline configuration script printed with it stays classic.
     */
    public static function moduleTag(string $tag, string $handle): string
    {
        if ($handle !== self::HANDLE) {
            return $tag;
        }
        return (string) preg_replace(
            '/<script(?![^>]*\btype=)([^>]*\bid=([\'"])' . preg_quote(self::HANDLE, '/') . '-js\2)/',
            '<script type="module"$1',
            $tag,
            1
        );
    }

    /**
     * The bell: a count and a dropdown, filled by assets/js/bell.js. The empty child makes the
     * admin bar render the dropdown container.
     */
    public static function addBell(\WP_Admin_Bar $bar): void
    {
        if (!self::ready()) {
            return;
        }
        $bar->add_node([
            'id' => 'fanout-notifications',
            'title' => '<span class="ab-icon" aria-hidden="true"></span>'
                . '<span class="fanout-bell-count" aria-hidden="true">0</span>'
                . '<span class="screen-reader-text">' . esc_html__('Notifications', 'fanout') . '</span>',
            'href' => false,
            'meta' => ['class' => 'fanout-bell', 'tabindex' => 0],
        ]);
        $bar->add_node([
            'parent' => 'fanout-notifications',
            'id' => 'fanout-notifications-empty',
            'title' => esc_html__('No notifications yet', 'fanout'),
            'href' => false,
        ]);
    }
}
