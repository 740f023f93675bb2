<?php
/**
 * Runs one step inside the test site's WordPress, from the command line, with WordPress's own
 * functions (the way WP-CLI would, without WP-CLI):
 *
 *     php wp.php install <site url> <admin password>   wp_install() plus two more users
 *     php wp.php activate                              activate_plugin('fanout/fanout.php')
 *     php wp.php notify <user id> <title>              fanout_notify_user() with the current settings
 *                                                      (queued, published when this process ends)
 *     php wp.php set-settings <json> [<secrets json>]  replaces the fanout_settings (and fanout_secrets) option
 *     php wp.php get-settings                          both options, their autoload flags, wp_load_alloptions()
 *     php wp.php publish-status                        the breaker: paused, failures, skipped
 *     php wp.php reset-publish-status                  closes the breaker
 *     php wp.php create-drafts <n> <title prefix>      n draft posts by the admin; prints their ids
 *     php wp.php post-statuses <json ids>              how many of them have each status
 *
 * The site is chosen the Debian way: FANOUT_TEST_WP_HOST is the host name that selects
 * /etc/wordpress/config-<host>.php. Prints one JSON value on stdout.
 */

declare(strict_types=1);

$host = getenv('FANOUT_TEST_WP_HOST') ?: exit("FANOUT_TEST_WP_HOST is not set\n");
$_SERVER['HTTP_HOST'] = $host;
$_SERVER['SERVER_NAME'] = $host;
$_SERVER['REQUEST_URI'] = '/';
$_SERVER['REQUEST_METHOD'] = 'GET';

$command = $argv[1] ?? '';
if ($command === 'install') {
    define('WP_INSTALLING', true);
}
require '/usr/share/wordpress/wp-load.php';

function out(mixed $value): never
{
    echo json_encode($value, JSON_UNESCAPED_SLASHES), "\n";
    exit(0);
}

switch ($command) {
    case 'install':
        require_once ABSPATH . 'wp-admin/includes/upgrade.php';
        [$url, $password] = [$argv[2], $argv[3]];
        $result = wp_install('fanout test', 'admin', 'admin@example.test', false, '', wp_slash($password));
        update_option('siteurl', $url);
        update_option('home', $url);
        $editor = wp_insert_user(['user_login' => 'editor2', 'user_pass' => $password, 'role' => 'editor', 'display_name' => 'Eddie Editor', 'user_email' => 'editor2@example.test']);
        $reader = wp_insert_user(['user_login' => 'reader', 'user_pass' => $password, 'role' => 'subscriber', 'display_name' => 'Rita Reader', 'user_email' => 'reader@example.test']);
        $longtab = wp_insert_user(['user_login' => 'longtab', 'user_pass' => $password, 'role' => 'subscriber', 'display_name' => 'Lena Longtab', 'user_email' => 'longtab@example.test']);
        $longtab2 = wp_insert_user(['user_login' => 'longtab2', 'user_pass' => $password, 'role' => 'subscriber', 'display_name' => 'Lars Longtab', 'user_email' => 'longtab2@example.test']);
        if (is_wp_error($editor) || is_wp_error($reader) || is_wp_error($longtab) || is_wp_error($longtab2)) {
            fwrite(STDERR, "could not create users\n");
            exit(1);
        }
        wp_update_user(['ID' => $result['user_id'], 'display_name' => 'Ada Admin']);
        out(['admin' => $result['user_id'], 'editor' => $editor, 'reader' => $reader, 'longtab' => $longtab, 'longtab2' => $longtab2]);
    case 'activate':
        require_once ABSPATH . 'wp-admin/includes/plugin.php';
        $result = activate_plugin('fanout/fanout.php');
        if (is_wp_error($result)) {
            fwrite(STDERR, $result->get_error_message() . "\n");
            exit(1);
        }
        out(get_option('active_plugins'));
    case 'notify':
        $result = fanout_notify_user((int) $argv[2], ['title' => $argv[3], 'level' => 'info']);
        out([
            'result' => is_wp_error($result) ? ['error' => $result->get_error_code(), 'message' => $result->get_error_message()] : $result,
            'pending' => \FanoutWP\Publishing::pending(),
        ]);
    case 'set-settings':
        update_option('fanout_settings', json_decode($argv[2], true));
        if (isset($argv[3])) {
            update_option('fanout_secrets', json_decode($argv[3], true));
        }
        out(true);
    case 'get-settings':
        global $wpdb;
        $autoload = [];
        foreach ($wpdb->get_results("SELECT option_name, autoload FROM $wpdb->options WHERE option_name IN ('fanout_settings', 'fanout_secrets') ORDER BY option_name") as $row) {
            $autoload[$row->option_name] = $row->autoload;
        }
        wp_cache_flush();
        out(['settings' => get_option('fanout_settings'), 'secrets' => get_option('fanout_secrets'), 'autoload' => $autoload, 'alloptions' => wp_load_alloptions()]);
    case 'publish-status':
        out(\FanoutWP\Publishing::status() + ['paused' => \FanoutWP\Publishing::paused()]);
    case 'create-drafts':
        $ids = [];
        for ($i = 1; $i <= (int) $argv[2]; $i++) {
            $ids[] = wp_insert_post(['post_title' => "$argv[3] $i", 'post_status' => 'draft', 'post_author' => 1], true);
        }
        out($ids);
    case 'post-statuses':
        $counts = [];
        foreach (json_decode($argv[2], true) as $id) {
            $status = get_post_status((int) $id);
            $counts[$status] = ($counts[$status] ?? 0) + 1;
        }
        out($counts);
    case 'reset-publish-status':
        delete_option(\FanoutWP\Publishing::STATUS_OPTION);
        out(true);
}
fwrite(STDERR, "unknown command $command\n");
exit(2);
