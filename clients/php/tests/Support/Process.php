<?php

declare(strict_types=1);

namespace Fanout\Tests\Support;

/**
 * A child process started without a shell (so that its pid is the program's own), with
 * stdout and stderr in a log file. Every process still running when PHP exits is killed,
 * even after a fatal error, so a failed test leaves nothing behind.
 */
final class Process
{
    /** @var array<int, self> */
    private static array $running = [];
    private static bool $shutdownHook = false;

    /** @var resource */
    private $handle;
    public readonly int $pid;

    /**
     * @param list<string> $command
     * @param array<string, string>|null $env null: inherit this process's environment
     */
    public function __construct(array $command, public readonly string $logFile, ?array $env = null)
    {
        $handle = proc_open(
            $command,
            [0 => ['file', '/dev/null', 'r'], 1 => ['file', $logFile, 'a'], 2 => ['file', $logFile, 'a']],
            $pipes,
            null,
            $env,
        );
        if (!is_resource($handle)) {
            throw new \RuntimeException('cannot start ' . $command[0]);
        }
        $this->handle = $handle;
        $this->pid = proc_get_status($handle)['pid'];
        self::$running[$this->pid] = $this;
        if (!self::$shutdownHook) {
            self::$shutdownHook = true;
            register_shutdown_function(static function (): void {
                foreach (self::$running as $process) {
                    $process->kill();
                }
            });
        }
    }

    public function isRunning(): bool
    {
        return is_resource($this->handle) && proc_get_status($this->handle)['running'];
    }

    /** Sends a signal (SIGTERM by default) and waits up to `$within` seconds; returns the exit code, or null if still running. */
    public function signal(int $signal = 15, float $within = 5.0): ?int
    {
        if (!is_resource($this->handle)) {
            return null;
        }
        proc_terminate($this->handle, $signal);
        return $this->waitExit($within);
    }

    /** Waits for the process to exit by itself; returns its exit code, or null if it is still running. */
    public function waitExit(float $within): ?int
    {
        $deadline = microtime(true) + $within;
        while (is_resource($this->handle)) {
            $status = proc_get_status($this->handle);
            if (!$status['running']) {
                unset(self::$running[$this->pid]);
                $code = $status['signaled'] ? 128 + $status['termsig'] : $status['exitcode'];
                proc_close($this->handle);
                return $code;
            }
            if (microtime(true) >= $deadline) {
                return null;
            }
            usleep(20_000);
        }
        return null;
    }

    /** Stops it for good: SIGTERM, then SIGKILL after a short grace period. */
    public function kill(float $grace = 2.0): void
    {
        if ($this->signal(15, $grace) === null && is_resource($this->handle)) {
            $this->signal(9, 5.0);
        }
    }

    public function log(): string
    {
        return (string) @file_get_contents($this->logFile);
    }

    /** A loopback port nothing listens on right now. */
    public static function freePort(): int
    {
        $server = stream_socket_server('tcp://127.0.0.1:0', $errno, $error);
        if ($server === false) {
            throw new \RuntimeException("cannot find a free port: $error");
        }
        $name = stream_socket_get_name($server, false);
        fclose($server);
        return (int) substr($name, strrpos($name, ':') + 1);
    }

    /** A fresh temporary directory, removed when PHP exits. */
    public static function tempDir(string $prefix): string
    {
        $dir = sys_get_temp_dir() . "/$prefix-" . getmypid() . '-' . bin2hex(random_bytes(4));
        mkdir($dir, 0700, true);
        register_shutdown_function(static function () use ($dir): void {
            foreach (glob("$dir/*") ?: [] as $file) {
                @unlink($file);
            }
            @rmdir($dir);
        });
        return $dir;
    }
}
