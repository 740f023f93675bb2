<?php
/**
 * Router of `php -S` for the test site: WordPress's files come from the Debian package
 * (/usr/share/wordpress), `wp-content` from the test's own directory, and every other path
 * goes to index.php as Apache's rewrite rules would send it.
 *
 * Debian's wp-config.php picks /etc/wordpress/config-<name>.php from the WORDPRESS_CONFIG
 * server variable (Apache's SetEnv); here the router sets it from the environment.
 */

declare(strict_types=1);

$_SERVER['WORDPRESS_CONFIG'] = getenv('FANOUT_TEST_WP_HOST');

$path = rawurldecode((string) parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH));
if (str_contains($path, '..')) {
    http_response_code(400);
    return true;
}

// A subdirectory network: /site2/wp-admin/... and /site2/wp-login.php are WordPress's own
// files for site2, as the rewrite rules of a multisite .htaccess say. REQUEST_URI keeps the
// site's path: WordPress finds the site by it.
if (getenv('FANOUT_TEST_WP_SUBDIRECTORIES')
    && preg_match('#^/([_0-9a-zA-Z-]+)(/(?:wp-(?:content|admin|includes)(?:/.*)?|[^/]+\.php))$#', $path, $m)
    && !file_exists('/usr/share/wordpress/' . $m[1])) {
    $path = $m[2];
}

$contentDir = getenv('FANOUT_TEST_WP_CONTENT');
if (str_starts_with($path, '/wp-content/')) {
    $file = $contentDir . substr($path, strlen('/wp-content'));
    if (!is_file($file) || str_ends_with($file, '.php')) {
        http_response_code(404);
        return true;
    }
    $types = ['js' => 'text/javascript', 'css' => 'text/css', 'png' => 'image/png', 'svg' => 'image/svg+xml'];
    header('Content-Type: ' . ($types[pathinfo($file, PATHINFO_EXTENSION)] ?? 'application/octet-stream'));
    // Cached for a year, as many production servers and CDNs serve static files: a browser
    // asks again only for a URL it has not seen (browser/version-bump.mjs relies on it).
    header('Cache-Control: public, max-age=31536000');
    readfile($file);
    return true;
}

$root = '/usr/share/wordpress';
$file = $root . $path;
if (is_dir($file)) {
    $file = rtrim($file, '/') . '/index.php';
}
if (is_file($file) && !str_ends_with($file, '.php')) {
    return false; // a static file of WordPress itself: php -S serves it
}
if (!is_file($file)) {
    $file = $root . '/index.php';
}
$_SERVER['SCRIPT_FILENAME'] = $file;
$_SERVER['SCRIPT_NAME'] = $_SERVER['PHP_SELF'] = substr($file, strlen($root));
chdir(dirname($file));
require $file;
