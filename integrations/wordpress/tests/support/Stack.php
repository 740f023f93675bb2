<?php
/**
 * Everything the WordPress tests run against, started on loopback in a temporary directory
 * and stopped again (also when a test fails or the runner is interrupted):
 *
 * - MariaDB (`mariadbd` from Debian's mariadb-server) as an unprivileged server on a unix
 *   socket, no TCP (`--skip-networking`), with a fresh data directory;
 * - redis-server on a free port, without persistence;
 * - the real gateway (`$FANOUT_BIN`) on that Redis, with presence on `room:` channels;
 * - WordPress from Debian's `wordpress` package (/usr/share/wordpress), configured the Debian
 *   way (/etc/wordpress/config-<host>.php), installed with wp_install(), the plugin built with
 *   build.sh and activated, served by `php -S`.
 */

declare(strict_types=1);

namespace FanoutWPTest;

final class Stack
{
    public readonly string $dir;
    public readonly string $host;
    public readonly string $secret;
    public readonly string $apiKey;
    public readonly string $password;
    public int $redisPort = 0;
    public int $gatewayPort = 0;
    public int $webPort = 0;
    public string $siteUrl = '';
    /** @var array{admin: int, editor: int, reader: int} */
    public array $users = [];

    /** @var array<string, array{proc: resource, log: string}> */
    private array $processes = [];
    /** @var list<string> the site configuration files written to /etc/wordpress, removed at the end */
    private array $etcConfigs = [];
    /** Port of nginx in front of PHP-FPM (startFpm), 0 when not started. */
    public int $fpmPort = 0;
    public string $fpmUrl = '';

    public function __construct(public readonly string $repo, public readonly string $fanoutBin)
    {
        $this->dir = rtrim(sys_get_temp_dir(), '/') . '/fanout-wp-' . getmypid() . '-' . bin2hex(random_bytes(3));
        mkdir($this->dir, 0700, true);
        $this->host = 'fanout-test-' . getmypid();
        $this->secret = bin2hex(random_bytes(24));
        $this->apiKey = 'test-api-key-' . bin2hex(random_bytes(8));
        $this->password = 'pw-' . bin2hex(random_bytes(6));
    }

    /** The multisite network (startNetwork): its port, URL and configuration name. */
    public int $netPort = 0;
    public string $netUrl = '';
    public string $netHost = '';
    /** @var array<string, int> users of the network */
    public array $netUsers = [];

    public function start(): void
    {
        // Every site's address is an accepted token issuer of the gateway: known before it starts.
        $this->webPort = self::freePort();
        $this->siteUrl = "http://127.0.0.1:$this->webPort";
        $this->netPort = self::freePort();
        $this->netUrl = "http://127.0.0.1:$this->netPort";
        $this->netHost = "$this->host-net";
        $this->startMariaDb();
        $this->startRedis();
        $this->startGateway();
        $this->installWordPress();
        $this->startWebServer();
        $this->startFpm();
        $this->startNetwork();
    }

    /** A free TCP port on 127.0.0.1 (the OS picks it; closed again at once). */
    public static function freePort(): int
    {
        $server = stream_socket_server('tcp://127.0.0.1:0', $errno, $errstr);
        $name = stream_socket_get_name($server, false);
        fclose($server);
        return (int) substr($name, strrpos($name, ':') + 1);
    }

    /**
     * Starts a process with its output in a log file of the test directory.
     *
     * @param list<string> $command
     * @param array<string, string> $env added to the runner's environment
     */
    public function spawn(string $name, array $command, array $env = []): void
    {
        $log = "$this->dir/$name.log";
        $proc = proc_open($command, [0 => ['file', '/dev/null', 'r'], 1 => ['file', $log, 'a'], 2 => ['file', $log, 'a']], $pipes, null, $env + getenv());
        if (!is_resource($proc)) {
            throw new \RuntimeException("cannot start $name");
        }
        $this->processes[$name] = ['proc' => $proc, 'log' => $log];
    }

    /**
     * Stops a process: SIGTERM, then SIGKILL after `$grace` seconds. Returns its exit code
     * (-1 when killed or unknown).
     */
    public function stop(string $name, float $grace = 10.0): int
    {
        if (!isset($this->processes[$name])) {
            return -1;
        }
        $proc = $this->processes[$name]['proc'];
        unset($this->processes[$name]);
        $status = proc_get_status($proc);
        // `php -S` with PHP_CLI_SERVER_WORKERS forks workers that outlive their parent:
        // found before the parent goes (they are then adopted by init), ended after it.
        $children = $status['running'] ? self::childrenOf($status['pid']) : [];
        try {
            return $this->terminate($proc, $status, $grace);
        } finally {
            foreach ($children as $child) {
                posix_kill($child, SIGTERM);
            }
        }
    }

    /** @return list<int> the processes whose parent is `$pid` */
    private static function childrenOf(int $pid): array
    {
        $children = [];
        foreach (glob('/proc/[0-9]*/stat') ?: [] as $file) {
            $stat = @file_get_contents($file);
            // pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'.
            if ($stat !== false && preg_match('/\)\s+\S+\s+(\d+)/', substr($stat, (int) strrpos($stat, ')')), $m) && (int) $m[1] === $pid) {
                $children[] = (int) basename(dirname($file));
            }
        }
        return $children;
    }

    /** @param resource $proc */
    private function terminate($proc, array $status, float $grace): int
    {
        if ($status['running']) {
            proc_terminate($proc, SIGTERM);
            $deadline = microtime(true) + $grace;
            while (($status = proc_get_status($proc))['running'] && microtime(true) < $deadline) {
                usleep(50_000);
            }
            if ($status['running']) {
                proc_terminate($proc, SIGKILL);
                while (proc_get_status($proc)['running']) {
                    usleep(20_000);
                }
                proc_close($proc);
                return -1;
            }
        }
        proc_close($proc);
        return $status['exitcode'];
    }

    /** Waits for a process to end by itself; returns its exit code, or null at the deadline. */
    public function waitExit(string $name, float $timeout): ?int
    {
        $proc = $this->processes[$name]['proc'];
        $deadline = microtime(true) + $timeout;
        while (microtime(true) < $deadline) {
            $status = proc_get_status($proc);
            if (!$status['running']) {
                unset($this->processes[$name]);
                proc_close($proc);
                return $status['exitcode'];
            }
            usleep(50_000);
        }
        return null;
    }

    public function isRunning(string $name): bool
    {
        return isset($this->processes[$name]) && proc_get_status($this->processes[$name]['proc'])['running'];
    }

    public function log(string $name): string
    {
        $file = "$this->dir/$name.log";
        return is_file($file) ? (string) file_get_contents($file) : '';
    }

    /** Stops everything started, removes the site's config file and the temporary directory. */
    public function shutdown(): void
    {
        foreach (array_reverse(array_keys($this->processes)) as $name) {
            $this->stop($name, 5.0);
        }
        foreach ($this->etcConfigs as $file) {
            if (is_file($file)) {
                unlink($file);
            }
        }
        $this->etcConfigs = [];
        if (getenv('FANOUT_WP_TEST_KEEP') === false && is_dir($this->dir)) {
            exec('rm -rf ' . escapeshellarg($this->dir));
        }
    }

    /**
     * Polls `$ready` until it returns true; throws after `$timeout` seconds with `$what` (or
     * what `$what()` says then, e.g. with a log as it is at that moment).
     *
     * @param callable(): bool $ready
     * @param string|callable(): string $what
     */
    public static function waitUntil(callable $ready, float $timeout, string|callable $what): void
    {
        $deadline = microtime(true) + $timeout;
        while (microtime(true) < $deadline) {
            if ($ready()) {
                return;
            }
            usleep(100_000);
        }
        $what = is_string($what) ? $what : $what();
        throw new \RuntimeException("timed out after {$timeout}s waiting for $what");
    }

    private function startMariaDb(): void
    {
        $data = "$this->dir/mysql";
        $user = posix_getpwuid(posix_geteuid())['name'];
        $output = [];
        exec(implode(' ', array_map('escapeshellarg', [
            'mariadb-install-db', '--no-defaults', "--datadir=$data", "--user=$user",
            '--auth-root-authentication-method=normal', '--skip-test-db',
        ])) . ' 2>&1', $output, $code);
        if ($code !== 0) {
            throw new \RuntimeException("mariadb-install-db failed:\n" . implode("\n", $output));
        }
        $socket = "$this->dir/mysql.sock";
        $this->spawn('mariadbd', [
            'mariadbd', '--no-defaults', "--datadir=$data", "--socket=$socket", '--skip-networking',
            "--user=$user", "--pid-file=$this->dir/mysql.pid", '--skip-log-bin', '--innodb-buffer-pool-size=32M',
        ]);
        self::waitUntil(function () use ($socket): bool {
            if (!$this->isRunning('mariadbd')) {
                throw new \RuntimeException("mariadbd exited:\n" . $this->log('mariadbd'));
            }
            try {
                $db = @new \mysqli('localhost', 'root', '', '', 0, $socket);
                $db->query('CREATE DATABASE IF NOT EXISTS wordpress CHARACTER SET utf8mb4');
                $db->close();
                return true;
            } catch (\mysqli_sql_exception) {
                return false;
            }
        }, 60, 'mariadbd');
    }

    private function startRedis(): void
    {
        $this->redisPort = self::freePort();
        $this->spawn('redis', [
            'redis-server', '--port', (string) $this->redisPort, '--bind', '127.0.0.1', '--save', '',
            '--appendonly', 'no', '--dir', $this->dir, '--protected-mode', 'yes',
        ]);
        self::waitUntil(function (): bool {
            $redis = new \Redis();
            try {
                return @$redis->connect('127.0.0.1', $this->redisPort, 0.5) && $redis->ping() !== false;
            } catch (\RedisException) {
                return false;
            }
        }, 20, 'redis-server');
    }

    private function startGateway(): void
    {
        $this->gatewayPort = self::freePort();
        // Presence with join/leave events on room:* channels: the "who is here" rooms of posts.
        file_put_contents("$this->dir/fanout.toml", "[namespaces.room]\npresence = true\njoin_leave = \"connection\"\n");
        $this->spawn('gateway', [
            $this->fanoutBin, 'serve', '--config', "$this->dir/fanout.toml",
            '--listen', "127.0.0.1:$this->gatewayPort", '--redis-url', "redis://127.0.0.1:$this->redisPort",
            '--node-id', 'wp-test',
            // Tokens must be minted by one of the test's sites, for fanout.
            '--jwt-audience', 'fanout',
            '--jwt-issuer', "$this->siteUrl/", '--jwt-issuer', "$this->netUrl/", '--jwt-issuer', "$this->netUrl/site2/",
            // The tests' own WebSocket connections (support/WebSocket.php) answer pings only while
            // a test reads from them; slow steps in between (a browser test) must not cost them
            // their connection. Heartbeats are not what these tests are about.
            '--heartbeat-s', '300',
            '--log-level', getenv('FANOUT_WP_TEST_GATEWAY_LOG') ?: 'info',
        ], ['FANOUT_JWT_SECRET' => $this->secret, 'FANOUT_API_KEY' => $this->apiKey]);
        self::waitUntil(function (): bool {
            if (!$this->isRunning('gateway')) {
                throw new \RuntimeException("the gateway exited:\n" . $this->log('gateway'));
            }
            return self::httpStatus("http://127.0.0.1:$this->gatewayPort/readyz") === 200;
        }, 30, 'the gateway to be ready');
    }

    private function installWordPress(): void
    {
        $content = "$this->dir/wp-content";
        foreach (['plugins', 'mu-plugins', 'themes', 'uploads'] as $sub) {
            mkdir("$content/$sub", 0755, true);
        }
        // The plugin as users get it: built by build.sh (library and JS client copied in).
        $build = [];
        exec(escapeshellarg("$this->repo/integrations/wordpress/build.sh") . ' --out ' . escapeshellarg("$this->dir/build") . ' 2>&1', $build, $code);
        if ($code !== 0) {
            throw new \RuntimeException("build.sh failed:\n" . implode("\n", $build));
        }
        symlink("$this->dir/build/fanout", "$content/plugins/fanout");
        copy(__DIR__ . '/../fixtures/fanout-test-hooks.php', "$content/mu-plugins/fanout-test-hooks.php");
        // Debian's bundled default theme, so that front-end pages render.
        foreach (glob('/usr/share/wordpress/wp-content/themes/*') ?: [] as $theme) {
            symlink($theme, "$content/themes/" . basename($theme));
        }

        $config = $this->baseConfig('wordpress', $content, $this->siteUrl, 'debug.log')
            . sprintf("define('FANOUT_JWT_SECRET', '%s');\n", $this->secret)
            . sprintf("define('FANOUT_REDIS_URL', 'redis://127.0.0.1:%d');\n", $this->redisPort)
            . sprintf("define('FANOUT_GATEWAY_URL', 'ws://127.0.0.1:%d');\n", $this->gatewayPort)
            . sprintf("define('FANOUT_TEST_INBOX_LOG', '%s/inbox.log');\n", $this->dir)
            . sprintf("define('FANOUT_TEST_ACCESS_LOG', '%s/access.log');\n", $this->dir);
        $this->writeConfig($this->host, $config);

        $this->users = $this->wp('install', $this->siteUrl, $this->password);
        $this->wp('activate');
    }

    private function startWebServer(): void
    {
        $this->spawn('php-server', [
            // No opcache (the built-in server uses opcache.enable, not enable_cli): the tests
            // change configuration files and replace the plugin while the server runs.
            PHP_BINARY, '-d', 'opcache.enable=0', '-S', "127.0.0.1:$this->webPort", '-t', '/usr/share/wordpress', __DIR__ . '/router.php',
        ], [
            'FANOUT_TEST_WP_HOST' => $this->host,
            'FANOUT_TEST_WP_CONTENT' => "$this->dir/wp-content",
            'PHP_CLI_SERVER_WORKERS' => '4',
        ]);
        self::waitUntil(fn (): bool => self::httpStatus("$this->siteUrl/wp-login.php") === 200, 30, 'php -S to serve WordPress');
    }

    /** The start of a test site's configuration file: database, content folder, salts, debugging. */
    private function baseConfig(string $database, string $content, string $url, string $debugLog): string
    {
        $salts = '';
        foreach (['AUTH_KEY', 'SECURE_AUTH_KEY', 'LOGGED_IN_KEY', 'NONCE_KEY', 'AUTH_SALT', 'SECURE_AUTH_SALT', 'LOGGED_IN_SALT', 'NONCE_SALT'] as $name) {
            $salts .= sprintf("define('%s', '%s');\n", $name, bin2hex(random_bytes(24)));
        }
        return "<?php\n// Test site of integrations/wordpress/tests (removed when the tests end).\n"
            . sprintf("define('DB_NAME', '%s');\ndefine('DB_USER', 'root');\ndefine('DB_PASSWORD', '');\n", $database)
            . sprintf("define('DB_HOST', 'localhost:%s');\n", "$this->dir/mysql.sock")
            . sprintf("define('WP_CONTENT_DIR', '%s');\ndefine('WP_CONTENT_URL', '%s/wp-content');\n", $content, $url)
            . $salts
            . "define('WP_DEBUG', true);\ndefine('WP_DEBUG_DISPLAY', false);\n"
            . sprintf("define('WP_DEBUG_LOG', '%s/%s');\n", $this->dir, $debugLog)
            . "define('DISABLE_WP_CRON', true);\ndefine('AUTOMATIC_UPDATER_DISABLED', true);\ndefine('WP_HTTP_BLOCK_EXTERNAL', true);\n";
    }

    /**
     * A multisite network (subdirectory sites) in a database of its own, on the same gateway
     * and Redis, served by `php -S` on its own port: the main site and `site2`. Its plugins
     * folder is empty: the tests install the plugin through the network admin's upload screen.
     * Its sites' keys have the prefix `net` (FANOUT_SITE_PREFIX), since the single test site
     * shares the gateway as `wp1`.
     */
    public function startNetwork(): void
    {
        $db = new \mysqli('localhost', 'root', '', '', 0, "$this->dir/mysql.sock");
        $db->query('CREATE DATABASE IF NOT EXISTS wordpress_net CHARACTER SET utf8mb4');
        $db->close();
        $content = "$this->dir/wp-content-net";
        foreach (['plugins', 'mu-plugins', 'themes', 'uploads', 'upgrade'] as $sub) {
            mkdir("$content/$sub", 0755, true);
        }
        copy(__DIR__ . '/../fixtures/fanout-test-hooks.php', "$content/mu-plugins/fanout-test-hooks.php");
        foreach (glob('/usr/share/wordpress/wp-content/themes/*') ?: [] as $theme) {
            symlink($theme, "$content/themes/" . basename($theme));
        }
        $domain = "127.0.0.1:$this->netPort";
        $config = $this->baseConfig('wordpress_net', $content, $this->netUrl, 'debug-net.log')
            . "define('FS_METHOD', 'direct');\n"
            . sprintf("define('FANOUT_JWT_SECRET', '%s');\n", $this->secret)
            . sprintf("define('FANOUT_REDIS_URL', 'redis://127.0.0.1:%d');\n", $this->redisPort)
            . sprintf("define('FANOUT_GATEWAY_URL', 'ws://127.0.0.1:%d');\n", $this->gatewayPort)
            . "define('FANOUT_SITE_PREFIX', 'net');\n"
            . sprintf("define('FANOUT_TEST_INBOX_LOG', '%s/inbox-net.log');\n", $this->dir);
        $this->writeConfig($this->netHost, $config);
        $net = ['FANOUT_TEST_WP_HOST' => $this->netHost, 'FANOUT_TEST_WP_DOMAIN' => $domain];
        $this->wpIn($net, 'install', $this->netUrl, $this->password);
        $this->wpIn($net, 'install-network', $domain);
        $this->writeConfig($this->netHost, $config
            . "define('MULTISITE', true);\ndefine('SUBDOMAIN_INSTALL', false);\n"
            . sprintf("define('DOMAIN_CURRENT_SITE', '%s');\n", $domain)
            . "define('PATH_CURRENT_SITE', '/');\ndefine('SITE_ID_CURRENT_SITE', 1);\ndefine('BLOG_ID_CURRENT_SITE', 1);\n");
        $this->netUsers = $this->wpIn($net, 'create-site', $domain, $this->password);
        $this->spawn('php-server-net', [
            PHP_BINARY, '-d', 'opcache.enable=0', '-d', 'upload_max_filesize=8M', '-d', 'post_max_size=8M',
            '-S', "127.0.0.1:$this->netPort", '-t', '/usr/share/wordpress', __DIR__ . '/router.php',
        ], [
            'FANOUT_TEST_WP_HOST' => $this->netHost,
            'FANOUT_TEST_WP_CONTENT' => $content,
            'FANOUT_TEST_WP_SUBDIRECTORIES' => '1',
            'PHP_CLI_SERVER_WORKERS' => '4',
        ]);
        self::waitUntil(fn (): bool => self::httpStatus("$this->netUrl/wp-login.php") === 200, 30, 'php -S to serve the network');
    }

    /** Runs a step of support/wp.php in one site of the network (`$path`: `/` or `/site2/`). */
    public function wpNet(string $path, string ...$args): mixed
    {
        return $this->wpIn(['FANOUT_TEST_WP_HOST' => $this->netHost, 'FANOUT_TEST_WP_DOMAIN' => "127.0.0.1:$this->netPort", 'FANOUT_TEST_WP_PATH' => $path], ...$args);
    }

    /** Writes /etc/wordpress/config-<name>.php (removed at shutdown). */
    private function writeConfig(string $name, string $config): void
    {
        $file = "/etc/wordpress/config-$name.php";
        if (!is_dir('/etc/wordpress') || file_put_contents($file, $config) === false) {
            throw new \RuntimeException("cannot write $file (run as root, with Debian's wordpress package)");
        }
        if (!in_array($file, $this->etcConfigs, true)) {
            $this->etcConfigs[] = $file;
        }
    }

    /**
     * Sets a constant of a site's configuration file, as its owner would edit wp-config.php:
     * read again by every later request (the file is included per request).
     */
    public function setConstant(string $name, string|int|bool $value, ?string $site = null): void
    {
        $file = '/etc/wordpress/config-' . ($site ?? $this->host) . '.php';
        $config = (string) file_get_contents($file);
        $line = sprintf("define('%s', %s);", $name, var_export($value, true));
        $pattern = '/^define\(\'' . preg_quote($name, '/') . '\', .*\);$/m';
        $config = preg_match($pattern, $config) ? preg_replace($pattern, $line, $config) : $config . $line . "\n";
        file_put_contents($file, $config);
        clearstatcache(true, $file);
    }

    /**
     * A loopback port that accepts connections and never answers: a listening socket nobody
     * accepts on (the kernel completes the handshake and keeps what is sent). Open until the
     * returned socket is closed.
     *
     * @return array{0: resource, 1: int}
     */
    public static function silentPort(): array
    {
        $server = stream_socket_server('tcp://127.0.0.1:0', $errno, $errstr);
        if ($server === false) {
            throw new \RuntimeException("cannot listen: $errstr");
        }
        $name = (string) stream_socket_get_name($server, false);
        return [$server, (int) substr($name, strrpos($name, ':') + 1)];
    }

    /**
     * Serves the site a second way, as most production sites run: nginx in front of PHP-FPM
     * (Debian's nginx and php8.2-fpm, both run in the foreground from this directory), where
     * `fastcgi_finish_request()` exists.
     */
    public function startFpm(): void
    {
        $this->fpmPort = self::freePort();
        $this->fpmUrl = "http://127.0.0.1:$this->fpmPort";
        $fpm = glob('/usr/sbin/php-fpm*')[0] ?? null;
        if ($fpm === null || !is_executable('/usr/sbin/nginx')) {
            throw new \RuntimeException('php-fpm and nginx are needed (Debian packages php-fpm, nginx)');
        }
        file_put_contents("$this->dir/php-fpm.conf", implode("\n", [
            '[global]', "pid = $this->dir/php-fpm.pid", "error_log = $this->dir/php-fpm-error.log", 'daemonize = no',
            '[www]', 'user = root', 'group = root', "listen = $this->dir/php-fpm.sock",
            'pm = static', 'pm.max_children = 4', 'clear_env = no', 'catch_workers_output = yes',
            // Configuration files change during the tests: no cached copy of them.
            'php_admin_value[opcache.enable] = 0',
            "php_admin_value[error_log] = $this->dir/php-fpm-php.log",
        ]) . "\n");
        $this->spawn('php-fpm', [$fpm, '--nodaemonize', '--allow-to-run-as-root', '--fpm-config', "$this->dir/php-fpm.conf"]);
        $nginx = "$this->dir/nginx";
        foreach (['', '/tmp'] as $sub) {
            is_dir("$nginx$sub") || mkdir("$nginx$sub", 0700, true);
        }
        $content = "$this->dir/wp-content";
        file_put_contents("$nginx/nginx.conf", <<<CONF
            daemon off;
            user root root;
            worker_processes 1;
            pid $nginx/nginx.pid;
            error_log $nginx/error.log;
            events { worker_connections 256; }
            http {
                include /etc/nginx/mime.types;
                access_log off;
                client_body_temp_path $nginx/tmp/body;
                fastcgi_temp_path $nginx/tmp/fastcgi;
                proxy_temp_path $nginx/tmp/proxy;
                uwsgi_temp_path $nginx/tmp/uwsgi;
                scgi_temp_path $nginx/tmp/scgi;
                client_max_body_size 8m;
                server {
                    listen 127.0.0.1:$this->fpmPort;
                    root /usr/share/wordpress;
                    index index.php;
                    location ^~ /wp-content/ { alias $content/; }
                    location / { try_files \$uri \$uri/ /index.php?\$args; }
                    location ~ \.php\$ {
                        try_files \$uri =404;
                        include /etc/nginx/fastcgi_params;
                        fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
                        fastcgi_param WORDPRESS_CONFIG $this->host;
                        fastcgi_pass unix:$this->dir/php-fpm.sock;
                    }
                }
            }
            CONF);
        $this->spawn('nginx', ['/usr/sbin/nginx', '-p', $nginx, '-c', "$nginx/nginx.conf"]);
        self::waitUntil(function (): bool {
            foreach (['php-fpm', 'nginx'] as $name) {
                if (!$this->isRunning($name)) {
                    throw new \RuntimeException("$name exited:\n" . $this->log($name) . @file_get_contents("$this->dir/php-fpm-error.log"));
                }
            }
            return self::httpStatus("$this->fpmUrl/wp-login.php") === 200;
        }, 30, 'nginx and PHP-FPM to serve WordPress');
    }

    /** Runs a step of support/wp.php in the test site and returns its JSON answer. */
    public function wp(string ...$args): mixed
    {
        return $this->wpIn(['FANOUT_TEST_WP_HOST' => $this->host], ...$args);
    }

    /** @param array<string, string> $env which site (FANOUT_TEST_WP_HOST, _DOMAIN, _PATH) */
    private function wpIn(array $env, string ...$args): mixed
    {
        $command = array_merge([PHP_BINARY, __DIR__ . '/wp.php'], $args);
        $proc = proc_open($command, [1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes, null, $env + getenv());
        $stdout = stream_get_contents($pipes[1]);
        $stderr = stream_get_contents($pipes[2]);
        $code = proc_close($proc);
        if ($code !== 0) {
            throw new \RuntimeException("wp.php $args[0] failed ($code): $stderr $stdout");
        }
        try {
            return json_decode(trim($stdout), true, 512, JSON_THROW_ON_ERROR);
        } catch (\JsonException) {
            throw new \RuntimeException("wp.php $args[0] answered no JSON: " . substr(strip_tags($stdout), 0, 3000) . ' ' . substr($stderr, 0, 2000));
        }
    }

    /** Status of a plain GET, 0 when nothing answers. */
    public static function httpStatus(string $url): int
    {
        $curl = curl_init($url);
        curl_setopt_array($curl, [CURLOPT_RETURNTRANSFER => true, CURLOPT_TIMEOUT => 2, CURLOPT_CONNECTTIMEOUT => 1]);
        curl_exec($curl);
        $status = (int) curl_getinfo($curl, CURLINFO_RESPONSE_CODE);
        curl_close($curl);
        return $status;
    }
}
