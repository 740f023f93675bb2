<?php
/**
 * Wires the plugin's parts into WordPress.
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
    public static function boot(): void
    {
        TokenRoute::register();
        Assets::register();
        Events::register();
        if (is_admin()) {
            SettingsPage::register();
        }
    }
}
