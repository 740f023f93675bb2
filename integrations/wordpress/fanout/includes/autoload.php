<?php
/**
 * PSR-4 autoloader for the two namespaces the plugin uses, so that it works without Composer:
 *
 * - `Fanout\`   the fanout PHP library (clients/php/src). A built plugin carries a copy in
 *               `lib/` (integrations/wordpress/build.sh); in the repository, where `lib/` is
 *               absent, the library is loaded from `clients/php/src` next to the plugin.
 * - `FanoutWP\` the plugin's own classes, in `includes/`.
 *
 * If another plugin already loaded a `Fanout\` library (through Composer, say), its classes
 * win: an autoloader only runs for classes that are not defined yet.
 *
 * @package Fanout
 */

declare(strict_types=1);

namespace FanoutWP;

if (!defined('ABSPATH')) {
    exit;
}

/**
 * Where the fanout library's `src/` folder is: the bundled copy, else the repository's.
 * Null when neither exists (a broken build): the plugin then reports it on its settings page.
 */
function library_dir(): ?string
{
    $candidates = [
        dirname(__DIR__) . '/lib',
        dirname(__DIR__, 4) . '/clients/php/src',
    ];
    foreach ($candidates as $dir) {
        if (is_file($dir . '/Token.php')) {
            return $dir;
        }
    }
    return null;
}

spl_autoload_register(static function (string $class): void {
    static $roots = null;
    if ($roots === null) {
        $roots = ['FanoutWP\\' => __DIR__];
        $library = library_dir();
        if ($library !== null) {
            $roots['Fanout\\'] = $library;
        }
    }
    foreach ($roots as $prefix => $dir) {
        if (strncmp($class, $prefix, strlen($prefix)) !== 0) {
            continue;
        }
        $file = $dir . '/' . str_replace('\\', '/', substr($class, strlen($prefix))) . '.php';
        if (is_file($file)) {
            require $file;
        }
        return;
    }
});
