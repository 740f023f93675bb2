<?php

declare(strict_types=1);

namespace Fanout\Tests\Support;

/** A throwaway `redis-server` on a free loopback port, without persistence. */
final class RedisServer
{
    public readonly int $port;
    private Process $process;

    public function __construct()
    {
        $dir = Process::tempDir('fanout-php-redis');
        $this->port = Process::freePort();
        $this->process = new Process([
            'redis-server',
            '--port', (string) $this->port,
            '--bind', '127.0.0.1',
            '--save', '',
            '--appendonly', 'no',
            '--protected-mode', 'no',
            '--dir', $dir,
        ], "$dir/redis.log");
        $deadline = microtime(true) + 10;
        while (true) {
            try {
                if ($this->client()->ping()) {
                    return;
                }
            } catch (\RedisException) {
            }
            if (microtime(true) > $deadline || !$this->process->isRunning()) {
                $this->stop();
                throw new \RuntimeException("redis-server did not start:\n" . $this->process->log());
            }
            usleep(20_000);
        }
    }

    public function url(): string
    {
        return "redis://127.0.0.1:{$this->port}";
    }

    /** A new phpredis connection. */
    public function client(): \Redis
    {
        $redis = new \Redis();
        $redis->connect('127.0.0.1', $this->port, 2.0);
        return $redis;
    }

    public function stop(): void
    {
        $this->process->kill();
    }
}
