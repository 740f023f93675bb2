<?php

declare(strict_types=1);

namespace Fanout\Tests\Support;

/**
 * The real fanout binary (`$FANOUT_BIN`, default `target/debug/fanout` of the repository)
 * on a free loopback port.
 */
final class Gateway
{
    public const SECRET = 'php-client-test-secret-0123456789abcdef';
    public const API_KEY = 'php-client-test-api-key';

    public readonly int $port;
    private Process $process;

    /**
     * @param list<string> $args flags after `serve --listen ...`
     * @param bool $withSecret add `--jwt-secret SECRET` (no: the args give a public key)
     */
    public function __construct(array $args = [], bool $withSecret = true, string $nodeId = 'php-test')
    {
        $dir = Process::tempDir('fanout-php-gateway');
        $command = [self::binary(), 'serve', '--listen', '127.0.0.1:0', '--node-id', $nodeId,
            '--api-key', self::API_KEY, '--drain-s', '1', '--log-level', 'info',
            // As production should run: tokens are never taken from URLs.
            '--allow-query-token', 'false'];
        if ($withSecret) {
            array_push($command, '--jwt-secret', self::SECRET);
        }
        $env = getenv();
        unset($env['RUST_LOG'], $env['FANOUT_JWT_SECRET'], $env['FANOUT_API_KEY'], $env['FANOUT_REDIS_URL'], $env['FANOUT_CONFIG']);
        $this->process = new Process([...$command, ...$args], "$dir/gateway.log", $env);
        $deadline = microtime(true) + 15;
        while (preg_match('/listening addr=127\.0\.0\.1:(\d+)/', $this->process->log(), $m) !== 1) {
            if (microtime(true) > $deadline || !$this->process->isRunning()) {
                $this->stop();
                throw new \RuntimeException("fanout did not start:\n" . $this->process->log());
            }
            usleep(20_000);
        }
        $this->port = (int) $m[1];
        while ($this->get('/readyz')[0] !== 200) {
            if (microtime(true) > $deadline) {
                $this->stop();
                throw new \RuntimeException("fanout did not become ready:\n" . $this->process->log());
            }
            usleep(50_000);
        }
    }

    /** A gateway on the Redis broker, with presence and client publish on `room:`. */
    public static function onRedis(RedisServer $redis, array $args = []): self
    {
        $config = Process::tempDir('fanout-php-config') . '/fanout.toml';
        file_put_contents($config, <<<'TOML'
            [namespaces.room]
            presence = true
            join_leave = "connection"
            publish = true
            TOML);
        return new self(['--redis-url', $redis->url(), '--redis-probe-interval-s', '1', '--config', $config, ...$args]);
    }

    public static function binary(): string
    {
        $bin = getenv('FANOUT_BIN') ?: 'target/debug/fanout';
        if ($bin[0] !== '/') {
            // Relative to the repository root, like scripts/test.
            $bin = dirname(__DIR__, 4) . '/' . $bin;
        }
        if (!is_executable($bin)) {
            throw new \RuntimeException("fanout binary not found at $bin: build it (cargo build) or set FANOUT_BIN");
        }
        return $bin;
    }

    public function httpUrl(): string
    {
        return "http://127.0.0.1:{$this->port}";
    }

    /**
     * Opens a WebSocket with the token in an `Authorization` header (never in the URL, where
     * proxies log it); throws HandshakeRefused if the gateway refuses it.
     */
    public function connect(string $token): WebSocketClient
    {
        return WebSocketClient::connect('127.0.0.1', $this->port, '/ws', ['Authorization' => "Bearer $token"]);
    }

    /** @return array{int, string} status and body of a plain GET. */
    public function get(string $path): array
    {
        $context = stream_context_create(['http' => ['ignore_errors' => true, 'timeout' => 2]]);
        $body = @file_get_contents($this->httpUrl() . $path, false, $context);
        $status = isset($http_response_header[0]) && preg_match('#^HTTP/\S+ (\d+)#', $http_response_header[0], $m) ? (int) $m[1] : 0;
        return [$status, (string) $body];
    }

    public function log(): string
    {
        return $this->process->log();
    }

    public function stop(): void
    {
        $this->process->kill();
    }
}
