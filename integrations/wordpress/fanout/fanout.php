<?php
/**
 * Plugin Name:       fanout
 * Plugin URI:        https://github.com/fanout-gateway/fanout
 * Description:       Real-time for WordPress through the fanout WebSocket gateway: live notifications, an admin-bar bell, "who is here" on edit screens, a PHP API to publish, and an inbox worker for what browsers send back.
 * Version:           0.2.0
 * Requires at least: 6.1
 * Requires PHP:      8.2
 * Author:            The fanout authors
 * License:           Apache-2.0
 * License URI:       https://www.apache.org/licenses/LICENSE-2.0
 * Text Domain:       fanout
 * Domain Path:       /languages
 * Update URI:        https://github.com/fanout-gateway/fanout
 *
 * Apache-2.0 is compatible with GPL-3.0-or-later, so the plugin can be combined with
 * WordPress (GPL-2.0-or-later, distributed under GPL-3.0 when combined).
 *
 * @package Fanout
 */

declare(strict_types=1);

if (!defined('ABSPATH')) {
    exit; // Loaded only by WordPress.
}

const FANOUT_WP_VERSION = '0.2.0';
const FANOUT_WP_FILE = __FILE__;

require_once __DIR__ . '/includes/autoload.php';
require_once __DIR__ . '/includes/functions.php';

register_activation_hook(__FILE__, [\FanoutWP\Plugin::class, 'activate']);
\FanoutWP\Plugin::boot();
