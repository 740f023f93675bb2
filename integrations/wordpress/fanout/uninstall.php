<?php
/**
 * Deleting the plugin removes its settings. Constants in wp-config.php are the site owner's
 * to remove; the gateway's data (Redis streams, histories) belongs to the gateway.
 *
 * @package Fanout
 */

if (!defined('WP_UNINSTALL_PLUGIN')) {
    exit;
}

delete_option('fanout_settings');
