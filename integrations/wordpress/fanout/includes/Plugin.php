<?php
/**
 * Wires the plugin's parts into WordPress, and upgrades what an older version stored.
 *
 * @package Fanout
 */

declare(strict_types=1);

namespace FanoutWP;

if (!defined('ABSPATH')) {
    exit;
}

final class Plugin
{
    /**
     * The version of what the plugin stores. 2 (plugin 0.2.0): secrets moved from
     * `fanout_settings` to `fanout_secrets`, which is not autoloaded.
     */
    public const SCHEMA = 2;

    public static function boot(): void
    {
        self::upgrade();
        TokenRoute::register();
        Assets::register();
        Events::register();
        UserAccess::register();
        if (is_admin()) {
            SettingsPage::register();
        }
    }

    /** Activation (on a network: network activation runs it for the main site; `upgrade` covers the others on first use). */
    public static function activate(): void
    {
        self::upgrade();
    }

    /**
     * Brings this site's stored data to the current schema, once: one autoloaded option
     * read per request, a write only when something changes.
     */
    public static function upgrade(): void
    {
        $schema = (int) get_option(Settings::SCHEMA_OPTION, 0);
        if ($schema >= self::SCHEMA) {
            return;
        }
        Settings::ensureSecretsOption();
        $settings = get_option(Settings::OPTION, null);
        if (is_array($settings)) {
            $secrets = get_option(Settings::SECRETS_OPTION, []);
            $secrets = is_array($secrets) ? $secrets : [];
            foreach (Settings::FIELDS as $key => $field) {
                if ($field['secret'] && array_key_exists($key, $settings)) {
                    if (!isset($secrets[$key]) || $secrets[$key] === '') {
                        $secrets[$key] = (string) $settings[$key];
                    }
                    unset($settings[$key]);
                }
            }
            update_option(Settings::SECRETS_OPTION, $secrets, false);
            update_option(Settings::OPTION, $settings);
        }
        update_option(Settings::SCHEMA_OPTION, self::SCHEMA);
    }
}
