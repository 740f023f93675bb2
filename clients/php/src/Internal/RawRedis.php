<?php

declare(strict_types=1);

namespace Fanout\Internal;

use Fanout\Exception\InvalidArgumentException;
use Fanout\Exception\RedisCommandException;

/**
 * The Redis plumbing shared by the publisher and the inbox.
 *
 * Every command goes through phpredis's `rawCommand`, never its typed methods: those apply
 * the connection's `OPT_PREFIX`, `OPT_SERIALIZER` and `OPT_COMPRESSION`, which an
 * application may have set for its own cache use and which would change fanout's channel
 * names and payloads. `rawCommand` sends exactly the bytes given.
 *
 * @internal not part of the library's API; may change in any version.
 */
final class RawRedis
{
    private function __construct()
    {
    }

    /**
     * Opens a connection from a URL: `redis://[[user]:password@]host[:port][/db]`,
     * `rediss://...` (TLS) or `unix:///path/to/redis.sock[?db=N]` (with `password` and
     * `user` query parameters for authentication).
     *
     * `$timeout` bounds connecting; `$readTimeout` bounds waiting for each reply (AUTH and
     * SELECT included). Without a read timeout phpredis would wait PHP's
     * `default_socket_timeout` (60 s by default) for a server that accepts connections and
     * never answers.
     *
     * @throws InvalidArgumentException for a URL of another form, or a timeout that is not positive.
     * @throws RedisCommandException when Redis cannot be reached or refuses the password.
     */
    public static function connect(string $url, float $timeout, ?float $readTimeout = null): \Redis
    {
        $readTimeout ??= $timeout;
        if ($timeout <= 0 || $readTimeout <= 0) {
            throw new InvalidArgumentException('Redis timeouts must be positive numbers of seconds');
        }
        if (!extension_loaded('redis')) {
            throw new RedisCommandException('the PHP redis extension (phpredis, Debian package php-redis) is not loaded');
        }
        $parts = parse_url($url);
        $scheme = is_array($parts) ? strtolower($parts['scheme'] ?? '') : '';
        if (!in_array($scheme, ['redis', 'rediss', 'unix'], true)) {
            throw new InvalidArgumentException('Redis URL must be redis://host:port/db, rediss://... or unix:///path/to/socket');
        }
        parse_str($parts['query'] ?? '', $query);
        if ($scheme === 'unix') {
            $host = $parts['path'] ?? '';
            $port = 0;
            $db = (int) ($query['db'] ?? 0);
        } else {
            $host = ($scheme === 'rediss' ? 'tls://' : '') . ($parts['host'] ?? '127.0.0.1');
            $port = (int) ($parts['port'] ?? 6379);
            $db = (int) ltrim($parts['path'] ?? '', '/');
        }
        $user = isset($parts['user']) ? rawurldecode($parts['user']) : ($query['user'] ?? '');
        $password = isset($parts['pass']) ? rawurldecode($parts['pass']) : ($query['password'] ?? null);
        $redis = new \Redis();
        try {
            if (!$redis->connect($host, $port, $timeout, null, 0, $readTimeout)) {
                throw new RedisCommandException("cannot connect to Redis at $host" . ($port ? ":$port" : ''), connectionFailed: true);
            }
            if ($password !== null && $password !== '') {
                if (!$redis->auth($user !== '' ? [$user, $password] : $password)) {
                    throw new RedisCommandException('Redis refused the password: ' . ($redis->getLastError() ?? 'AUTH failed'));
                }
            }
            if ($db !== 0) {
                self::call($redis, 'SELECT', (string) $db);
            }
        } catch (\RedisException $e) {
            throw new RedisCommandException("cannot connect to Redis at $host" . ($port ? ":$port" : '') . ': ' . $e->getMessage(), 0, $e, connectionFailed: true);
        }
        return $redis;
    }

    /**
     * After a phpredis exception: whether it was the connection that failed rather than Redis
     * answering with an error. phpredis throws `RedisException` for both (an error reply
     * inside `EXEC`, too) and may still call the connection connected after a read timeout
     * (phpredis 5.3), so its own messages for network failures tell them apart.
     */
    private static function lost(\Redis $redis, \RedisException $e): bool
    {
        if (preg_match('/socket error|read error on connection|connection (?:lost|closed|refused|reset)|went away|protocol error|timed out/i', $e->getMessage()) === 1) {
            return true;
        }
        try {
            return !$redis->isConnected();
        } catch (\Throwable) {
            return true;
        }
    }

    /**
     * Runs one command and returns its reply.
     *
     * @throws RedisCommandException with Redis's error text, or phpredis's connection error.
     */
    public static function call(\Redis $redis, string ...$args): mixed
    {
        try {
            $redis->clearLastError();
            $reply = $redis->rawCommand(...$args);
        } catch (\RedisException $e) {
            throw new RedisCommandException("Redis $args[0] failed: " . $e->getMessage(), 0, $e, connectionFailed: self::lost($redis, $e));
        }
        // phpredis returns false both for an error reply and for a nil reply; only the
        // former leaves an error behind.
        if ($reply === false && $redis->getLastError() !== null) {
            throw new RedisCommandException($redis->getLastError());
        }
        return $reply;
    }

    /**
     * Runs commands in one `MULTI`/`EXEC` transaction and returns their replies, with
     * `RedisCommandException` objects in place of the replies of commands Redis refused
     * (Redis runs the others all the same: a transaction is atomic, not all-or-nothing).
     *
     * @param list<list<string>> $commands
     * @return list<mixed>
     * @throws RedisCommandException when the transaction itself fails.
     */
    public static function transaction(\Redis $redis, array $commands): array
    {
        try {
            $redis->clearLastError();
            $redis->multi(\Redis::MULTI);
            foreach ($commands as $command) {
                $redis->rawCommand(...$command);
            }
            $replies = $redis->exec();
        } catch (\RedisException $e) {
            throw new RedisCommandException('Redis transaction failed: ' . $e->getMessage(), 0, $e, connectionFailed: self::lost($redis, $e));
        }
        if (!is_array($replies)) {
            throw new RedisCommandException('Redis transaction failed: ' . ($redis->getLastError() ?? 'EXEC was aborted'));
        }
        // phpredis keeps only the last error text of a transaction; it stands for every
        // refused command (in practice they all fail for the same reason).
        $error = $redis->getLastError();
        return array_map(
            static fn (mixed $reply) => $reply === false && $error !== null ? new RedisCommandException($error) : $reply,
            $replies,
        );
    }
}
