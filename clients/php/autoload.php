<?php

/**
 * Autoloader for the fanout PHP library without Composer: `require __DIR__ . '/clients/php/autoload.php';`
 * (or wherever this folder was copied). Maps the `Fanout\` namespace to `src/`, as the
 * PSR-4 rule in composer.json does.
 */

declare(strict_types=1);

spl_autoload_register(static function (string $class): void {
    $prefix = 'Fanout\\';
    if (strncmp($class, $prefix, strlen($prefix)) !== 0) {
        return;
    }
    $file = __DIR__ . '/src/' . str_replace('\\', '/', substr($class, strlen($prefix))) . '.php';
    if (is_file($file)) {
        require $file;
    }
});
