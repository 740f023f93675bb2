<?php
/**
 * Runs one step inside the test site's WordPress, from the command line, with WordPress's own
 * functions (the way WP-CLI would, without WP-CLI):
 *
 *     php wp.php install <site url> <admin password>   wp_install() plus two more users
 *     php wp.php activate                              activate_plugin('fanout/fanout.php')
 *     php wp.php notify <user id> <title>              fanout_notify_user() with the current settings
 *                                                      (queued, published when this process ends)
 *     php wp.php notify-sized <user id> <json [[title, bytes], ...]>  notifications with long messages, in one request
 *     php wp.php set-settings <json> [<secrets json>]  replaces the fanout_settings (and fanout_secrets) option
 *     php wp.php get-settings                          both options, their autoload flags, wp_load_alloptions()
 *     php wp.php publish-status                        the breaker: paused, failures, skipped
 *     php wp.php reset-publish-status                  closes the breaker
 *     php wp.php create-drafts <n> <title prefix>      n draft posts by the admin; prints their ids
 *     php wp.php post-statuses <json ids>              how many of them have each status
 *     php wp.php site                                  the current site's id and address
 *     php wp.php set-option <name> <json> [yes|no]     an option written anew, autoloaded or not
 *     php wp.php delete-option <name>
 *     php wp.php set-role <user id> <role>
 *     php wp.php create-user <login> <password> <role> [<display name>]
 *     php wp.php delete-user <id>
 *     php wp.php set-locale <login> <locale>           a user's language (empty: the site's)
 *     php wp.php install-network <domain>              makes the site a subdirectory multisite network
 *     php wp.php create-site <domain> <password>       site2, and users bob (editor of site2), alice (editor of the main site)
 *     php wp.php network-plugins                       the network-activated plugins
 *     php wp.php fanout-options                        every site's fanout_* options
 *     php wp.php uninstall                             deactivates and deletes the plugin as the Plugins screen does
 *
 * FANOUT_TEST_WP_DOMAIN and FANOUT_TEST_WP_PATH choose a site of a network.
 *
 * The site is chosen the Debian way: FANOUT_TEST_WP_HOST is the host name that selects
 * /etc/wordpress/config-<host>.php. Prints one JSON value on stdout.
 */

declare(strict_types=1);

$host = getenv('FANOUT_TEST_WP_HOST') ?: exit("FANOUT_TEST_WP_HOST is not set\n");
// A network's site is found by its domain and path, its configuration file by this name.
$_SERVER['WORDPRESS_CONFIG'] = $host;
$_SERVER['HTTP_HOST'] = getenv('FANOUT_TEST_WP_DOMAIN') ?: $host;
$_SERVER['SERVER_NAME'] = $_SERVER['HTTP_HOST'];
$_SERVER['REQUEST_URI'] = getenv('FANOUT_TEST_WP_PATH') ?: '/';
$_SERVER['REQUEST_METHOD'] = 'GET';

$command = $argv[1] ?? '';
if ($command === 'install') {
    define('WP_INSTALLING', true);
}
if ($command === 'install-network') {
    define('WP_INSTALLING_NETWORK', true); // as wp-admin/network.php does
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
    case 'notify-sized':
        // Several notifications in one request: [title, bytes of message text] each.
        foreach (json_decode($argv[3], true) as [$title, $bytes]) {
            fanout_notify_user((int) $argv[2], ['title' => $title, 'message' => str_repeat('x', $bytes)]);
        }
        out(\FanoutWP\Publishing::pending());
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
    case 'set-locale':
        $user = get_user_by('login', $argv[2]);
        update_user_meta($user->ID, 'locale', $argv[3]);
        out(true);
    case 'set-option':
        // An option as an older version left it: `autoload` yes, as update_option() makes it.
        delete_option($argv[2]);
        add_option($argv[2], json_decode($argv[3], true), '', $argv[4] ?? 'yes');
        out(true);
    case 'delete-option':
        out(delete_option($argv[2]));
    case 'set-role':
        (new WP_User((int) $argv[2]))->set_role($argv[3]);
        out(true);
    case 'create-user':
        out(wp_insert_user(['user_login' => $argv[2], 'user_pass' => $argv[3], 'role' => $argv[4], 'display_name' => $argv[5] ?? $argv[2], 'user_email' => "$argv[2]@example.test"]));
    case 'delete-user':
        require_once ABSPATH . 'wp-admin/includes/user.php';
        out(wp_delete_user((int) $argv[2]));
    case 'site':
        out(['blog' => get_current_blog_id(), 'home' => home_url('/')]);
    case 'install-network':
        require_once ABSPATH . 'wp-admin/includes/upgrade.php';
        // As wp-admin/network.php: the network's tables are named before they exist.
        foreach ($GLOBALS['wpdb']->tables('ms_global') as $table => $prefixed) {
            $GLOBALS['wpdb']->$table = $prefixed;
        }
        install_network();
        $result = populate_network(1, $argv[2], 'admin@example.test', 'fanout network', '/', false);
        if (is_wp_error($result)) {
            fwrite(STDERR, $result->get_error_message() . "\n");
            exit(1);
        }
        out(true);
    case 'create-site':
        $site2 = wpmu_create_blog($argv[2], '/site2/', 'Site two', 1);
        $bob = wpmu_create_user('bob', $argv[3], 'bob@example.test');
        $alice = wpmu_create_user('alice', $argv[3], 'alice@example.test');
        if (is_wp_error($site2) || !$bob || !$alice) {
            fwrite(STDERR, "could not create the site or its users\n");
            exit(1);
        }
        // WordPress keeps only letters, digits, dots and dashes of a new site's domain (a
        // network is meant to run on ports 80 and 443); the test network runs on a port of its
        // own, which its main site's domain kept: site2 gets the same domain back.
        $GLOBALS['wpdb']->update($GLOBALS['wpdb']->blogs, ['domain' => $argv[2]], ['blog_id' => $site2]);
        clean_blog_cache($site2);
        update_blog_option($site2, 'siteurl', "http://$argv[2]/site2");
        update_blog_option($site2, 'home', "http://$argv[2]/site2");
        add_user_to_blog($site2, $bob, 'editor');
        add_user_to_blog(1, $alice, 'editor');
        wp_update_user(['ID' => $bob, 'display_name' => 'Bob Builder']);
        wp_update_user(['ID' => $alice, 'display_name' => 'Alice Author']);
        out(['admin' => 1, 'bob' => $bob, 'alice' => $alice, 'site2' => $site2]);
    case 'network-plugins':
        out(array_keys((array) get_site_option('active_sitewide_plugins', [])));
    case 'fanout-options':
        $options = [];
        foreach (get_sites(['fields' => 'ids']) as $blogId) {
            switch_to_blog($blogId);
            $options[$blogId] = $GLOBALS['wpdb']->get_col("SELECT option_name FROM {$GLOBALS['wpdb']->options} WHERE option_name LIKE 'fanout\\_%' ORDER BY option_name");
            restore_current_blog();
        }
        out($options);
    case 'uninstall':
        require_once ABSPATH . 'wp-admin/includes/plugin.php';
        require_once ABSPATH . 'wp-admin/includes/file.php';
        deactivate_plugins('fanout/fanout.php', false, is_multisite());
        $result = delete_plugins(['fanout/fanout.php']);
        out(is_wp_error($result) ? ['error' => $result->get_error_message()] : $result);
    case 'reset-publish-status':
        delete_option(\FanoutWP\Publishing::STATUS_OPTION);
        out(true);
}
fwrite(STDERR, "unknown command $command\n");
exit(2);
