<?php
/**
 * Deleting the plugin removes everything it stored, on every site of a network: its options
 * (settings, secrets, publishing status, schema version) and each site's consumer group on
 * the inbox stream (best effort, with short timeouts: the site's Redis may be gone).
 * Constants in wp-config.php are the site owner's to remove; the gateway's own data (channel
 * histories, the inbox stream itself, shared with other applications) belongs to the gateway.
 *
 * @package Fanout
 */

declare(strict_types=1);

if (!defined('WP_UNINSTALL_PLUGIN')) {
    exit;
}

require_once __DIR__ . '/includes/autoload.php';

/** Removes one site's data (the current blog). */
function fanout_uninstall_site(): void
{
    $settings = \FanoutWP\Settings::class;
    if (extension_loaded('redis') && \FanoutWP\library_dir() !== null && $settings::isSet('jwt_secret')) {
        try {
            $redis = \Fanout\Internal\RawRedis::connect($settings::redisUrl(), 0.5, 0.5);
            \Fanout\Internal\RawRedis::call($redis, 'XGROUP', 'DESTROY', (string) $settings::get('inbox_stream'), (string) $settings::get('inbox_group'));
            $redis->close();
        } catch (\Throwable $e) {
            error_log('fanout: uninstall could not remove the inbox consumer group: ' . $e->getMessage());
        }
    }
    foreach ([$settings::OPTION, $settings::SECRETS_OPTION, $settings::SCHEMA_OPTION, \FanoutWP\Publishing::STATUS_OPTION] as $option) {
        delete_option($option);
    }
}

if (is_multisite()) {
    foreach (get_sites(['fields' => 'ids', 'number' => 0]) as $blogId) {
        switch_to_blog((int) $blogId);
        try {
            fanout_uninstall_site();
        } finally {
            restore_current_blog();
        }
    }
} else {
    fanout_uninstall_site();
}
