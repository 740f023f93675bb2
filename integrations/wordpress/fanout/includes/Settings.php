<?php
/**
 * The plugin's configuration, edited on Settings > fanout, each value overridable by a
 * `wp-config.php` constant: the option `fanout_settings` (autoloaded: the browser side needs
 * it on every page) and, for secrets, `fanout_secrets`, which is not autoloaded, so that
 * secrets are read from the database only by the requests that use them.
 *
 * @package Fanout
 */

declare(strict_types=1);

namespace FanoutWP;

if (!defined('ABSPATH')) {
    exit;
}

/**
 * Reads the settings, constants first.
 *
 * Why constants win: secrets in `wp-config.php` stay out of the database (and so out of
 * database dumps, staging copies and any plugin that can read options), and a site managed
 * as code can pin its configuration. A setting given by a constant is shown read-only on
 * the settings page; a secret is never shown at all, wherever it comes from.
 */
final class Settings
{
    /** Name of the option holding the values saved on the settings page, secrets excepted. */
    public const OPTION = 'fanout_settings';

    /** Name of the option holding the secrets saved on the settings page (not autoloaded). */
    public const SECRETS_OPTION = 'fanout_secrets';

    /** The version of what the plugin stores, for upgrades (`Plugin::upgrade`). */
    public const SCHEMA_OPTION = 'fanout_schema';

    /**
     * Every setting: its `wp-config.php` constant, whether it is a secret (write-only on the
     * page, never printed), and its default.
     *
     * @var array<string, array{constant: string, secret: bool, default: string|int}>
     */
    public const FIELDS = [
        'gateway_url'    => ['constant' => 'FANOUT_GATEWAY_URL', 'secret' => false, 'default' => ''],
        'publish_mode'   => ['constant' => 'FANOUT_PUBLISH_MODE', 'secret' => false, 'default' => 'redis'],
        'redis_host'     => ['constant' => 'FANOUT_REDIS_HOST', 'secret' => false, 'default' => '127.0.0.1'],
        'redis_port'     => ['constant' => 'FANOUT_REDIS_PORT', 'secret' => false, 'default' => 6379],
        'redis_prefix'   => ['constant' => 'FANOUT_REDIS_PREFIX', 'secret' => false, 'default' => 'fanout:'],
        'redis_password' => ['constant' => 'FANOUT_REDIS_PASSWORD', 'secret' => true, 'default' => ''],
        'api_url'        => ['constant' => 'FANOUT_API_URL', 'secret' => false, 'default' => ''],
        'api_key'        => ['constant' => 'FANOUT_API_KEY', 'secret' => true, 'default' => ''],
        'jwt_secret'     => ['constant' => 'FANOUT_JWT_SECRET', 'secret' => true, 'default' => ''],
        'token_ttl'      => ['constant' => 'FANOUT_TOKEN_TTL', 'secret' => false, 'default' => 600],
        'token_audience' => ['constant' => 'FANOUT_TOKEN_AUDIENCE', 'secret' => false, 'default' => 'fanout'],
        'timeout_ms'     => ['constant' => 'FANOUT_TIMEOUT_MS', 'secret' => false, 'default' => 500],
        'breaker_seconds' => ['constant' => 'FANOUT_BREAKER_SECONDS', 'secret' => false, 'default' => 60],
        'network_broadcast' => ['constant' => 'FANOUT_NETWORK_BROADCAST', 'secret' => false, 'default' => 0],
        'inbox_stream'   => ['constant' => 'FANOUT_INBOX_STREAM', 'secret' => false, 'default' => 'fanout:inbox'],
        'inbox_group'    => ['constant' => 'FANOUT_INBOX_GROUP', 'secret' => false, 'default' => ''],
    ];

    /** Bounds of the publishing timeout (each of connecting and waiting for a reply), milliseconds. */
    public const TIMEOUT_MS_MIN = 50;
    public const TIMEOUT_MS_MAX = 1000;

    /** Bounds of the pause after a publishing failure, seconds. */
    public const BREAKER_MIN = 1;
    public const BREAKER_MAX = 3600;

    /**
     * `FANOUT_REDIS_URL` (`redis://:password@host:6379/0`, `rediss://...`, `unix:///path`)
     * replaces the Redis host, port and password settings at once; a constant only, since it
     * usually carries the password.
     */
    public const REDIS_URL_CONSTANT = 'FANOUT_REDIS_URL';

    /** Shortest and longest token lifetime, seconds: long enough to connect, short enough to limit a leaked token. */
    public const TOKEN_TTL_MIN = 60;
    public const TOKEN_TTL_MAX = 86400;

    /**
     * The value of a setting: its constant when defined, else the saved option, else the
     * default. Numbers are kept within their bounds, whatever their source.
     */
    public static function get(string $key): string|int
    {
        $field = self::FIELDS[$key] ?? null;
        if ($field === null) {
            throw new \InvalidArgumentException("unknown fanout setting $key");
        }
        $value = $field['default'];
        if (defined($field['constant'])) {
            $constant = constant($field['constant']);
            $value = is_int($field['default']) ? (int) $constant : (string) $constant;
        } else {
            $saved = get_option($field['secret'] ? self::SECRETS_OPTION : self::OPTION, []);
            if (is_array($saved) && array_key_exists($key, $saved) && $saved[$key] !== '') {
                $value = is_int($field['default']) ? (int) $saved[$key] : (string) $saved[$key];
            }
        }
        return match ($key) {
            'timeout_ms' => max(self::TIMEOUT_MS_MIN, min(self::TIMEOUT_MS_MAX, (int) $value)),
            'breaker_seconds' => max(self::BREAKER_MIN, min(self::BREAKER_MAX, (int) $value)),
            'network_broadcast' => $value ? 1 : 0,
            // One consumer group per site: every site's worker reads the shared inbox stream
            // and handles only what its own users sent.
            'inbox_group' => $value !== '' ? $value : 'wordpress-' . Channels::siteKey(),
            default => $value,
        };
    }

    /**
     * A secret shown masked: its last four characters (only for secrets long enough that
     * four characters give little away) and its length, e.g. `••••••••3f9a (48 characters)`.
     */
    public static function masked(string $key): string
    {
        $value = (string) self::get($key);
        if ($value === '') {
            return '';
        }
        $tail = strlen($value) >= 24 ? substr($value, -4) : '';
        return str_repeat('•', 8) . $tail;
    }

    /**
     * Makes sure the secrets option exists and is not autoloaded: the Settings API saves it
     * with update_option(), which would create a missing option autoloaded.
     */
    public static function ensureSecretsOption(): void
    {
        if (get_option(self::SECRETS_OPTION, null) === null) {
            add_option(self::SECRETS_OPTION, [], '', 'no');
        }
    }

    /** Whether a setting comes from a `wp-config.php` constant (and cannot be edited on the page). */
    public static function fromConstant(string $key): bool
    {
        return defined(self::FIELDS[$key]['constant']);
    }

    /** Whether a secret has a value (from its constant or the database), without revealing it. */
    public static function isSet(string $key): bool
    {
        return self::get($key) !== '';
    }

    /**
     * The gateway's WebSocket endpoint for browsers: the gateway URL setting, with the path
     * `/ws` added when it has none (`wss://realtime.example.com` becomes
     * `wss://realtime.example.com/ws`), since the JS client connects to the URL as given.
     * Empty when not configured.
     */
    public static function browserUrl(): string
    {
        $url = (string) self::get('gateway_url');
        if ($url === '') {
            return '';
        }
        $path = (string) parse_url($url, PHP_URL_PATH);
        return $path === '' || $path === '/' ? rtrim($url, '/') . '/ws' : $url;
    }

    /**
     * The Redis URL the publisher and the inbox worker connect to: `FANOUT_REDIS_URL` when
     * defined, else built from the host, port and password settings.
     */
    public static function redisUrl(): string
    {
        if (defined(self::REDIS_URL_CONSTANT) && (string) constant(self::REDIS_URL_CONSTANT) !== '') {
            return (string) constant(self::REDIS_URL_CONSTANT);
        }
        $password = (string) self::get('redis_password');
        $auth = $password === '' ? '' : ':' . rawurlencode($password) . '@';
        $host = (string) self::get('redis_host');
        if (str_contains($host, ':') && !str_starts_with($host, '[')) {
            $host = '[' . $host . ']'; // an IPv6 address
        }
        return 'redis://' . $auth . $host . ':' . (int) self::get('redis_port');
    }

    /** Whether the Redis location comes from `FANOUT_REDIS_URL`. */
    public static function redisUrlFromConstant(): bool
    {
        return defined(self::REDIS_URL_CONSTANT) && (string) constant(self::REDIS_URL_CONSTANT) !== '';
    }

    /**
     * Cleans the non-secret values the settings page submitted (the `sanitize_callback` of
     * `fanout_settings`). Values given by constants are not stored.
     *
     * @param mixed $input the submitted `fanout_settings[...]` array.
     * @return array<string, string|int>
     */
    public static function sanitize(mixed $input): array
    {
        $input = is_array($input) ? wp_unslash($input) : [];
        $clean = [];
        foreach (self::FIELDS as $key => $field) {
            if ($field['secret'] || defined($field['constant'])) {
                continue;
            }
            $raw = isset($input[$key]) && is_scalar($input[$key]) ? trim((string) $input[$key]) : '';
            $clean[$key] = self::sanitizeValue($key, $raw);
        }
        return $clean;
    }

    /**
     * Cleans the secrets the settings page submitted (the `sanitize_callback` of
     * `fanout_secrets`): a blank field keeps the stored secret, so that secrets never have to
     * be printed back into the form; a ticked "remove" box clears it.
     *
     * @param mixed $input the submitted `fanout_secrets[...]` array.
     * @return array<string, string>
     */
    public static function sanitizeSecrets(mixed $input): array
    {
        $input = is_array($input) ? wp_unslash($input) : [];
        $stored = get_option(self::SECRETS_OPTION, []);
        $stored = is_array($stored) ? $stored : [];
        $clean = [];
        foreach (self::FIELDS as $key => $field) {
            if (!$field['secret'] || defined($field['constant'])) {
                continue;
            }
            $submitted = isset($input[$key]) && is_string($input[$key]) ? trim($input[$key]) : '';
            if (!empty($input['clear_' . $key])) {
                $clean[$key] = '';
            } elseif ($submitted !== '') {
                $clean[$key] = $submitted;
            } else {
                $clean[$key] = (string) ($stored[$key] ?? '');
            }
        }
        if (!defined(self::FIELDS['jwt_secret']['constant'])
            && ($clean['jwt_secret'] ?? '') !== '' && strlen($clean['jwt_secret']) < 32) {
            add_settings_error(self::OPTION, 'fanout_short_secret', __('The JWT secret should be at least 32 characters (the gateway recommends 32 random bytes).', 'fanout'), 'warning');
        }
        return $clean;
    }

    /** Cleans one non-secret value; an invalid value falls back to the default, with a notice. */
    private static function sanitizeValue(string $key, string $raw): string|int
    {
        $default = self::FIELDS[$key]['default'];
        switch ($key) {
            case 'gateway_url':
                $url = esc_url_raw($raw, ['https', 'http', 'wss', 'ws']);
                return untrailingslashit($url);
            case 'api_url':
                return untrailingslashit(esc_url_raw($raw, ['https', 'http']));
            case 'publish_mode':
                return in_array($raw, ['redis', 'http'], true) ? $raw : $default;
            case 'redis_host':
                return preg_match('/^[A-Za-z0-9.:\[\]_-]+$/', $raw) ? $raw : $default;
            case 'redis_port':
                $port = (int) $raw;
                return $port >= 1 && $port <= 65535 ? $port : $default;
            case 'token_ttl':
                $ttl = (int) $raw;
                if ($ttl < self::TOKEN_TTL_MIN || $ttl > self::TOKEN_TTL_MAX) {
                    add_settings_error(self::OPTION, 'fanout_ttl', sprintf(
                        /* translators: 1: shortest, 2: longest token lifetime in seconds */
                        __('The token lifetime must be between %1$d and %2$d seconds; the default was kept.', 'fanout'),
                        self::TOKEN_TTL_MIN,
                        self::TOKEN_TTL_MAX
                    ));
                    return $default;
                }
                return $ttl;
            case 'timeout_ms':
                $ms = (int) $raw;
                return $ms >= self::TIMEOUT_MS_MIN && $ms <= self::TIMEOUT_MS_MAX ? $ms : $default;
            case 'breaker_seconds':
                $seconds = (int) $raw;
                return $seconds >= self::BREAKER_MIN && $seconds <= self::BREAKER_MAX ? $seconds : $default;
            case 'network_broadcast':
                return $raw === '1' ? 1 : 0;
            case 'token_audience':
                return preg_match('/^[\x21-\x7e]{1,200}$/', $raw) ? $raw : $default;
            case 'inbox_group':
                return preg_match('/^[A-Za-z0-9_:.@{}-]*$/', $raw) ? $raw : $default;
            case 'redis_prefix':
            case 'inbox_stream':
                // Redis keys and group names as the gateway writes them: no spaces, no control characters.
                return preg_match('/^[A-Za-z0-9_:.@{}-]*$/', $raw) && $raw !== '' ? $raw : $default;
        }
        return sanitize_text_field($raw);
    }
}
