<?php
/**
 * Settings > fanout: the settings form (through the Settings API, which brings the nonce and
 * the `manage_options` check of options.php) and a "send me a test notification" button.
 *
 * @package Fanout
 */

declare(strict_types=1);

namespace FanoutWP;

if (!defined('ABSPATH')) {
    exit;
}

final class SettingsPage
{
    /** Menu slug of the page, also the Settings API group and page id. */
    public const SLUG = 'fanout';

    /** admin-post.php action of the test-notification button. */
    public const TEST_ACTION = 'fanout_test_notification';

    /** Field of its nonce (not `_wpnonce`: the settings form on the same page has that one). */
    public const TEST_NONCE = 'fanout_test_nonce';

    /**
     * Who may open the page: `manage_options` on a single site; on a multisite network only
     * super admins (`manage_network_options`), since the page holds the gateway's secrets and
     * makes the server connect where it says.
     */
    public static function capability(): string
    {
        return is_multisite() ? 'manage_network_options' : 'manage_options';
    }

    public static function register(): void
    {
        add_action('admin_menu', [self::class, 'addPage']);
        add_filter('option_page_capability_' . self::SLUG, [self::class, 'capability']);
        add_action('admin_init', [self::class, 'registerSettings']);
        add_action('admin_post_' . self::TEST_ACTION, [self::class, 'sendTestNotification']);
        add_filter('plugin_action_links_' . plugin_basename(FANOUT_WP_FILE), [self::class, 'actionLinks']);
    }

    public static function addPage(): void
    {
        add_options_page(__('fanout', 'fanout'), __('fanout', 'fanout'), self::capability(), self::SLUG, [self::class, 'render']);
    }

    /** @param array<string, string> $links */
    public static function actionLinks(array $links): array
    {
        $url = admin_url('options-general.php?page=' . self::SLUG);
        array_unshift($links, '<a href="' . esc_url($url) . '">' . esc_html__('Settings', 'fanout') . '</a>');
        return $links;
    }

    public static function registerSettings(): void
    {
        register_setting(self::SLUG, Settings::OPTION, [
            'type' => 'array',
            'sanitize_callback' => [Settings::class, 'sanitize'],
            'show_in_rest' => false,
            'default' => [],
        ]);
        // Secrets in an option of their own, not autoloaded (created so before the Settings
        // API's update_option() could create it autoloaded).
        Settings::ensureSecretsOption();
        // No registered default: update_option() takes a stored value equal to the default for
        // a missing option, and would re-add it autoloaded.
        register_setting(self::SLUG, Settings::SECRETS_OPTION, [
            'type' => 'array',
            'sanitize_callback' => [Settings::class, 'sanitizeSecrets'],
            'show_in_rest' => false,
        ]);

        add_settings_section('fanout_browser', __('Browsers', 'fanout'), static function (): void {
            echo '<p>' . esc_html__('Where browsers connect, and how long their tokens last. Tokens are signed with the JWT secret the gateway is started with (FANOUT_JWT_SECRET).', 'fanout') . '</p>';
        }, self::SLUG);
        self::field('gateway_url', __('Gateway URL', 'fanout'), 'fanout_browser', 'url', __('The public URL of the gateway as browsers reach it, e.g. wss://realtime.example.com/ws (/ws is added to a URL without a path).', 'fanout'));
        self::field('jwt_secret', __('JWT secret', 'fanout'), 'fanout_browser', 'password', __('The gateway\'s FANOUT_JWT_SECRET (at least 32 random characters).', 'fanout'));
        self::field('token_ttl', __('Token lifetime (seconds)', 'fanout'), 'fanout_browser', 'number', __('The browser fetches a new token before it expires. Default 600.', 'fanout'));
        self::field('token_audience', __('Token audience', 'fanout'), 'fanout_browser', 'text', __('The aud claim of tokens; give the gateway the same value in jwt_audience, and the site\'s address in jwt_issuer, so that it accepts only tokens minted for it by this site.', 'fanout'));
        self::field('network_broadcast', __('Broadcasts', 'fanout'), 'fanout_browser', 'checkbox', __('Send broadcasts (a new post\'s "New: ..." notification, fanout_broadcast([\'broadcast\'])) to every connection of the gateway, every site of the network included, instead of this site\'s users only.', 'fanout'));

        add_settings_section('fanout_publishing', __('Publishing', 'fanout'), static function (): void {
            echo '<p>' . esc_html__('How WordPress publishes to the gateway: through the Redis the gateway uses (fastest), or through the gateway\'s HTTP API when WordPress cannot reach that Redis.', 'fanout') . '</p>';
        }, self::SLUG);
        self::field('publish_mode', __('Publish through', 'fanout'), 'fanout_publishing', 'mode');
        if (Settings::redisUrlFromConstant()) {
            add_settings_field('fanout_redis_url', __('Redis', 'fanout'), static function (): void {
                echo '<p class="description">' . esc_html__('Set in wp-config.php (FANOUT_REDIS_URL).', 'fanout') . '</p>';
            }, self::SLUG, 'fanout_publishing');
        } else {
            self::field('redis_host', __('Redis host', 'fanout'), 'fanout_publishing', 'text');
            self::field('redis_port', __('Redis port', 'fanout'), 'fanout_publishing', 'number');
            self::field('redis_password', __('Redis password', 'fanout'), 'fanout_publishing', 'password');
        }
        self::field('redis_prefix', __('Redis prefix', 'fanout'), 'fanout_publishing', 'text', __('The gateway\'s --redis-prefix; fanout: by default.', 'fanout'));
        self::field('api_url', __('Gateway API URL', 'fanout'), 'fanout_publishing', 'url', __('For HTTP publishing: the gateway as this server reaches it, e.g. http://127.0.0.1:8080.', 'fanout'));
        self::field('api_key', __('API key', 'fanout'), 'fanout_publishing', 'password', __('For HTTP publishing: one of the gateway\'s --api-key values.', 'fanout'));
        self::field('timeout_ms', __('Timeout (milliseconds)', 'fanout'), 'fanout_publishing', 'number', __('For connecting and for each answer, 50 to 1000. Publishing happens after the response is sent, but a server without fastcgi_finish_request() (mod_php) still waits this long once when the gateway is unreachable.', 'fanout'));
        self::field('breaker_seconds', __('Pause after a failure (seconds)', 'fanout'), 'fanout_publishing', 'number', __('After a publishing failure, nothing is published for this long (messages are skipped and counted), so that an unreachable gateway costs one timeout, not one per message. 1 to 3600.', 'fanout'));

        add_settings_section('fanout_inbox', __('Inbox worker', 'fanout'), static function (): void {
            echo '<p>' . esc_html__('What browsers send (send frames) waits in a Redis stream; bin/inbox-worker.php reads it and runs the WordPress action fanout_inbox_<type> for each message.', 'fanout') . '</p>';
        }, self::SLUG);
        self::field('inbox_stream', __('Inbox stream', 'fanout'), 'fanout_inbox', 'text');
        self::field('inbox_group', __('Consumer group', 'fanout'), 'fanout_inbox', 'text');
    }

    /** Adds one field whose input is rendered by `renderField`. */
    private static function field(string $key, string $label, string $section, string $kind, string $help = ''): void
    {
        add_settings_field('fanout_' . $key, $label, [self::class, 'renderField'], self::SLUG, $section, [
            'key' => $key,
            'kind' => $kind,
            'help' => $help,
            'label_for' => 'fanout_' . $key,
        ]);
    }

    /**
     * Renders one input. A value from a constant is shown read-only (a secret masked), and a
     * secret's input is always empty, with the stored value shown masked beside it: a blank
     * submission keeps the stored value.
     *
     * @param array{key: string, kind: string, help: string} $args
     */
    public static function renderField(array $args): void
    {
        $key = $args['key'];
        $secret = Settings::FIELDS[$key]['secret'];
        $name = ($secret ? Settings::SECRETS_OPTION : Settings::OPTION) . '[' . $key . ']';
        $id = 'fanout_' . $key;

        if (Settings::fromConstant($key)) {
            $shown = $secret ? Settings::masked($key) : (string) Settings::get($key);
            if ($args['kind'] === 'checkbox') {
                $shown = Settings::get($key) ? __('on', 'fanout') : __('off', 'fanout');
            }
            if ($shown !== '') {
                printf('<code id="%s" class="fanout-value">%s</code> ', esc_attr($id), esc_html($shown));
            }
            printf(
                '<p class="description">%s</p>',
                esc_html(sprintf(
                    /* translators: %s: a PHP constant name */
                    __('Set in wp-config.php (%s).', 'fanout'),
                    Settings::FIELDS[$key]['constant']
                ))
            );
            return;
        }

        switch ($args['kind']) {
            case 'password':
                $isSet = Settings::isSet($key);
                printf(
                    '<input type="password" id="%s" name="%s" value="" class="regular-text" autocomplete="new-password" placeholder="%s">',
                    esc_attr($id),
                    esc_attr($name),
                    esc_attr($isSet ? __('stored; leave blank to keep it', 'fanout') : __('not set', 'fanout'))
                );
                if ($isSet) {
                    printf(' <code class="fanout-value">%s</code>', esc_html(Settings::masked($key)));
                    printf(
                        ' <label><input type="checkbox" name="%s" value="1"> %s</label>',
                        esc_attr(Settings::SECRETS_OPTION . '[clear_' . $key . ']'),
                        esc_html__('Remove the stored value', 'fanout')
                    );
                }
                printf(
                    '<p class="description">%s</p>',
                    esc_html(sprintf(
                        /* translators: %s: a PHP constant name */
                        __('Better: define %s in wp-config.php, which keeps it out of the database.', 'fanout'),
                        Settings::FIELDS[$key]['constant']
                    ))
                );
                break;
            case 'mode':
                $mode = (string) Settings::get($key);
                foreach (['redis' => __('Redis', 'fanout'), 'http' => __('HTTP API', 'fanout')] as $value => $label) {
                    printf(
                        '<label><input type="radio" name="%s" value="%s" %s> %s</label><br>',
                        esc_attr($name),
                        esc_attr($value),
                        checked($mode, $value, false),
                        esc_html($label)
                    );
                }
                break;
            case 'checkbox':
                printf(
                    '<label><input type="checkbox" id="%s" name="%s" value="1" %s> %s</label>',
                    esc_attr($id),
                    esc_attr($name),
                    checked((bool) Settings::get($key), true, false),
                    esc_html__('Network-wide', 'fanout')
                );
                break;
            default:
                printf(
                    '<input type="%s" id="%s" name="%s" value="%s" class="%s">',
                    $args['kind'] === 'number' ? 'number' : 'text',
                    esc_attr($id),
                    esc_attr($name),
                    esc_attr((string) Settings::get($key)),
                    $args['kind'] === 'number' ? 'small-text' : 'regular-text'
                );
        }
        if ($args['help'] !== '') {
            printf('<p class="description">%s</p>', esc_html($args['help']));
        }
    }

    /** The publishing status: working, or paused after a failure, and what was skipped. */
    private static function renderStatus(): void
    {
        $status = Publishing::status();
        echo '<h2>' . esc_html__('Status', 'fanout') . '</h2><p id="fanout-status">';
        if (Publishing::paused()) {
            echo esc_html(sprintf(
                /* translators: 1: a time, 2: an error message */
                __('Publishing is paused until %1$s after a failure: %2$s', 'fanout'),
                wp_date(get_option('time_format') ?: 'H:i:s', $status['open_until']),
                $status['last_error']
            )) . ' ';
        } else {
            echo esc_html__('Publishing works, as far as this site knows.', 'fanout') . ' ';
        }
        if ($status['failures'] > 0 || $status['skipped'] > 0) {
            echo esc_html(sprintf(
                /* translators: %s: number of failed publishing attempts */
                _n('%s failure', '%s failures', $status['failures'], 'fanout'),
                number_format_i18n($status['failures'])
            )) . ', ' . esc_html(sprintf(
                /* translators: %s: number of messages not published */
                _n('%s message skipped', '%s messages skipped', $status['skipped'], 'fanout'),
                number_format_i18n($status['skipped'])
            )) . '.';
        }
        echo '</p><p>' . esc_html(sprintf(
            /* translators: 1: a user's channel, 2: the site's broadcast channel, 3: a post's room */
            __('This site\'s channels: %1$s (each user), %2$s (everyone on the site), %3$s (who is here on a post).', 'fanout'),
            Channels::userChannel(get_current_user_id()),
            Channels::siteBroadcast(),
            Channels::postRoom(1)
        )) . '</p>';
    }

    public static function render(): void
    {
        if (!current_user_can(self::capability())) {
            return;
        }
        echo '<div class="wrap"><h1>' . esc_html__('fanout', 'fanout') . '</h1>';
        if (\FanoutWP\library_dir() === null) {
            echo '<div class="notice notice-error"><p>' . esc_html__('The fanout PHP library is missing from the plugin (lib/). Build the plugin with integrations/wordpress/build.sh.', 'fanout') . '</p></div>';
        }
        if (!is_file(dirname(FANOUT_WP_FILE) . '/assets/js/fanout/index.js')) {
            echo '<div class="notice notice-error"><p>' . esc_html__('The fanout JS client is missing from the plugin (assets/js/fanout/), so browsers get no live updates. Build the plugin with integrations/wordpress/build.sh (in a development checkout: build.sh --dev).', 'fanout') . '</p></div>';
        }
        if (isset($_GET['fanout_test'])) { // phpcs:ignore WordPress.Security.NonceVerification.Recommended -- only selects a message
            $ok = $_GET['fanout_test'] === 'sent'; // phpcs:ignore WordPress.Security.NonceVerification.Recommended
            printf(
                '<div class="notice notice-%s is-dismissible"><p>%s</p></div>',
                $ok ? 'success' : 'error',
                esc_html($ok
                    ? __('Test notification published to your channel. With this page open, the bell in the admin bar shows it.', 'fanout')
                    : __('The test notification could not be published; the PHP error log has the reason.', 'fanout'))
            );
        }
        settings_errors(Settings::OPTION);
        echo '<form action="options.php" method="post">';
        settings_fields(self::SLUG);
        do_settings_sections(self::SLUG);
        submit_button();
        echo '</form>';
        self::renderStatus();

        echo '<h2>' . esc_html__('Try it', 'fanout') . '</h2>';
        echo '<form action="' . esc_url(admin_url('admin-post.php')) . '" method="post">';
        echo '<input type="hidden" name="action" value="' . esc_attr(self::TEST_ACTION) . '">';
        wp_nonce_field(self::TEST_ACTION, self::TEST_NONCE);
        submit_button(__('Send me a test notification', 'fanout'), 'secondary', 'submit', false);
        echo '</form></div>';
    }

    /** admin-post handler of the test button: publishes a notification to the current user. */
    public static function sendTestNotification(): void
    {
        if (!current_user_can(self::capability())) {
            wp_die(esc_html__('Sorry, you are not allowed to do that.', 'fanout'), 403);
        }
        check_admin_referer(self::TEST_ACTION, self::TEST_NONCE);
        // At once rather than after the response: the page says whether it worked.
        $result = Publishing::publishNow(Channels::userChannel(get_current_user_id()), fanout_notification_event([
            'title' => __('fanout works', 'fanout'),
            'message' => __('This notification came from Settings > fanout.', 'fanout'),
            'level' => 'success',
        ]));
        $status = is_wp_error($result) ? 'failed' : 'sent';
        wp_safe_redirect(add_query_arg('fanout_test', $status, admin_url('options-general.php?page=' . self::SLUG)));
        exit;
    }
}
