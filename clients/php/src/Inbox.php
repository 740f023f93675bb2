<?php

declare(strict_types=1);

namespace Fanout;

use Fanout\Exception\InvalidArgumentException;
use Fanout\Exception\RedisCommandException;
use Fanout\Internal\RawRedis;

/**
 * A worker of a Redis consumer group on the inbox stream, where fanout appends what clients
 * `send` (docs/publishing.md "Reading what clients send (the inbox)").
 *
 * ```php
 * $inbox = Inbox::connect('redis://127.0.0.1:6379', group: 'wordpress');
 * $inbox->run(function (InboxMessage $message) {
 *     if ($message->type === 'human_decision') { ... act as $message->user ... }
 * });
 * ```
 *
 * Each entry goes to one worker of the group. An entry is acknowledged (`XACK`) only after
 * the handler returns; a handler that throws leaves it pending, and so does a worker that
 * dies. Pending entries idle for `claimIdleMs` are taken over (`XAUTOCLAIM`) by a running
 * worker of the group and handled again, so every entry is handled, at least once: an entry
 * is handled twice only when a handler fails or a worker dies after the handler's effect and
 * before the `XACK`. `InboxMessage::$redelivered` tells such entries.
 *
 * The worker stops on `stop()` (e.g. from the handler), on SIGTERM or SIGINT when the pcntl
 * extension is loaded, or at the bounds given to `run()`. It stops between two entries:
 * the current handler finishes and its entry is acknowledged; entries it had read and not
 * handled yet stay pending for the next worker of the group (a worker that keeps its
 * consumer name takes them back at once when it starts).
 *
 * Use a connection of its own: it blocks in `XREADGROUP` for up to `blockMs`. Redis errors
 * (a lost connection) end `run()` with `RedisCommandException`; run the worker under a
 * supervisor that restarts it (systemd `Restart=always`).
 */
final class Inbox
{
    private readonly string $consumer;
    /** @var \Closure(\Throwable, InboxMessage): void */
    private readonly \Closure $onError;
    private bool $stopping = false;
    /** State of the current `run()`: its bounds and how many entries it handled. */
    private int $maxMessages = 0;
    private ?float $deadline = null;
    private int $handled = 0;

    /**
     * @param \Redis $redis a connection of its own to the Redis the fanout nodes use.
     * @param string $group the consumer group, one per application (e.g. `wordpress`).
     * @param string|null $consumer this worker's name in the group; unique among running
     *        workers. Default: `<hostname>-<pid>`. A stable name (e.g. `web1-inbox`) lets a
     *        restarted worker take back its pending entries immediately.
     * @param string $stream the inbox stream: `<redis_prefix>inbox`, `fanout:inbox` by default, or a
     *        namespace's own `inbox` setting.
     * @param int $batchSize entries read per call.
     * @param int $blockMs longest wait for new entries per `XREADGROUP`; also the longest a stop
     *        request waits when no entry arrives.
     * @param int $claimIdleMs a pending entry idle this long is taken over from its consumer (which
     *        died, or whose handler failed): longer than your slowest handler.
     * @param bool $deleteAfterAck `XDEL` entries once acknowledged (fanout never trims the inbox;
     *        without this, trim it yourself, e.g. `XTRIM fanout:inbox MINID <id>`). Only for a
     *        stream that one group reads.
     * @param string $startId where a group created by this worker starts: `0` every entry already
     *        in the stream, `$` only those to come.
     * @param callable(\Throwable, InboxMessage): void|null $onError told of every handler failure;
     *        default: `error_log` with the entry id, channel, user and the exception's message
     *        (never the data).
     * @param bool $handleSignals stop gracefully on SIGTERM and SIGINT (needs pcntl; the previous
     *        handlers are restored when `run()` returns).
     */
    public function __construct(
        private readonly \Redis $redis,
        private readonly string $group,
        ?string $consumer = null,
        private readonly string $stream = 'fanout:inbox',
        private readonly int $batchSize = 10,
        private readonly int $blockMs = 5000,
        private readonly int $claimIdleMs = 60000,
        private readonly bool $deleteAfterAck = false,
        private readonly string $startId = '0',
        ?callable $onError = null,
        private readonly bool $handleSignals = true,
    ) {
        if ($group === '' || $stream === '') {
            throw new InvalidArgumentException('group and stream must not be empty');
        }
        if ($batchSize < 1 || $blockMs < 1 || $claimIdleMs < 1) {
            throw new InvalidArgumentException('batchSize, blockMs and claimIdleMs must be positive');
        }
        $this->consumer = $consumer ?? (gethostname() ?: 'worker') . '-' . getmypid();
        if ($this->consumer === '') {
            throw new InvalidArgumentException('consumer must not be empty');
        }
        $this->onError = $onError !== null ? $onError(...) : static function (\Throwable $error, InboxMessage $message): void {
            error_log(sprintf(
                'fanout inbox: handler failed for entry %s (channel %s, user %s), left pending: %s: %s',
                $message->id,
                $message->channel,
                $message->user,
                $error::class,
                $error->getMessage(),
            ));
        };
    }

    /**
     * An inbox worker on a new connection; `$options` are the constructor's named arguments
     * after `$group` (e.g. `consumer:`, `claimIdleMs:`).
     *
     * @param string $url `redis://[[user]:password@]host[:port][/db]`, `rediss://...` or `unix:///path`.
     * @throws RedisCommandException when Redis cannot be reached.
     */
    public static function connect(string $url, string $group, mixed ...$options): self
    {
        return new self(RawRedis::connect($url, 2.0), $group, ...$options);
    }

    /** This worker's consumer name in the group. */
    public function consumer(): string
    {
        return $this->consumer;
    }

    /**
     * Creates the consumer group (and the stream, if no client has sent anything yet) unless
     * it exists. `run()` calls it.
     *
     * @throws RedisCommandException
     */
    public function ensureGroup(): void
    {
        try {
            RawRedis::call($this->redis, 'XGROUP', 'CREATE', $this->stream, $this->group, $this->startId, 'MKSTREAM');
        } catch (RedisCommandException $e) {
            if (!str_starts_with($e->getMessage(), 'BUSYGROUP')) {
                throw $e;
            }
        }
    }

    /** Asks `run()` to return after the entry being handled; safe from a handler or a signal handler. */
    public function stop(): void
    {
        $this->stopping = true;
    }

    /**
     * Handles entries until stopped: first the entries this consumer had read and not
     * acknowledged (a restart under the same name), then, in turn, stale entries of other
     * consumers (`XAUTOCLAIM`) and new entries (`XREADGROUP ... >`).
     *
     * @param callable(InboxMessage): mixed $handler called once per entry; the entry is acknowledged
     *        when it returns, and left pending (to be handled again after `claimIdleMs`) when it throws.
     * @param int $maxMessages return after this many entries were handled and acknowledged; 0: no limit.
     * @param float $maxSeconds return after about this many seconds; 0: no limit.
     * @return int how many entries were handled and acknowledged.
     * @throws RedisCommandException when Redis fails; entries handled so far are acknowledged.
     */
    public function run(callable $handler, int $maxMessages = 0, float $maxSeconds = 0): int
    {
        if ($maxMessages < 0 || $maxSeconds < 0) {
            throw new InvalidArgumentException('maxMessages and maxSeconds must not be negative');
        }
        $this->stopping = false;
        $this->ensureGroup();
        $this->allowBlockingReads();
        $restoreSignals = $this->installSignalHandlers();
        $this->maxMessages = $maxMessages;
        $this->deadline = $maxSeconds > 0 ? microtime(true) + $maxSeconds : null;
        $this->handled = 0;
        try {
            // Entries this consumer name was given before and never acknowledged.
            $after = '0';
            while ($this->shouldContinue()) {
                $entries = $this->withGroup(fn () => $this->read($after, $this->room(), null));
                if ($entries === []) {
                    break;
                }
                $this->handleAll($entries, $handler, true);
                $after = (string) array_key_last($entries);
            }

            $claimCursor = '0-0';
            $nextClaimAt = 0.0;
            // Sweep for stale entries twice per idle period, but not in a busy loop.
            $claimEvery = min(max($this->claimIdleMs / 2000, 0.1), 30.0);
            while ($this->shouldContinue()) {
                if (microtime(true) >= $nextClaimAt) {
                    [$claimCursor, $entries] = $this->withGroup(fn () => $this->claim($claimCursor, $this->room()));
                    if ($claimCursor === '0-0') {
                        $nextClaimAt = microtime(true) + $claimEvery;
                    }
                    $this->handleAll($entries, $handler, true);
                    continue;
                }
                // Block no longer than until the next sweep or the deadline (BLOCK 0 would wait forever).
                $until = $this->deadline === null ? $nextClaimAt : min($nextClaimAt, $this->deadline);
                $block = max(1, min($this->blockMs, (int) ceil(($until - microtime(true)) * 1000)));
                $this->handleAll($this->withGroup(fn () => $this->read('>', $this->room(), $block)), $handler, false);
            }
            return $this->handled;
        } finally {
            $restoreSignals();
        }
    }

    /**
     * Runs a group command; when the group is gone (the stream was deleted, or Redis
     * restarted without persistence: `NOGROUP`, or `UNBLOCKED` for a blocked read),
     * creates it again and retries once, so that a worker outlives such a reset.
     *
     * @template T
     * @param \Closure(): T $command
     * @return T
     */
    private function withGroup(\Closure $command): mixed
    {
        try {
            return $command();
        } catch (RedisCommandException $e) {
            if (!str_contains($e->getMessage(), 'NOGROUP') && !str_contains($e->getMessage(), 'UNBLOCKED')) {
                throw $e;
            }
            $this->ensureGroup();
            return $command();
        }
    }

    /** Whether `run()` goes on: not stopped, and within its bounds. */
    private function shouldContinue(): bool
    {
        return !$this->stopping
            && ($this->maxMessages === 0 || $this->handled < $this->maxMessages)
            && ($this->deadline === null || microtime(true) < $this->deadline);
    }

    /** How many entries to ask for: a batch, or fewer when `maxMessages` is near. */
    private function room(): int
    {
        return $this->maxMessages === 0 ? $this->batchSize : min($this->batchSize, $this->maxMessages - $this->handled);
    }

    /**
     * `XREADGROUP`: new entries (`>`), or this consumer's pending ones after an id.
     *
     * @return array<string, array<string, string>|null> entry id => fields (null: deleted meanwhile).
     */
    private function read(string $after, int $count, ?int $blockMs): array
    {
        $args = ['XREADGROUP', 'GROUP', $this->group, $this->consumer, 'COUNT', (string) $count];
        if ($blockMs !== null) {
            array_push($args, 'BLOCK', (string) $blockMs);
        }
        array_push($args, 'STREAMS', $this->stream, $after);
        $reply = RawRedis::call($this->redis, ...$args);
        // [[stream, [[id, [field, value, ...]], ...]]], or nil (empty) when nothing came.
        return is_array($reply) && isset($reply[0][1]) && is_array($reply[0][1]) ? self::entries($reply[0][1]) : [];
    }

    /**
     * `XAUTOCLAIM`: takes over entries pending for longer than `claimIdleMs`, whoever had them.
     *
     * @return array{string, array<string, array<string, string>|null>} the next cursor (`0-0`: swept to the end) and the entries.
     */
    private function claim(string $cursor, int $count): array
    {
        $reply = RawRedis::call(
            $this->redis,
            'XAUTOCLAIM',
            $this->stream,
            $this->group,
            $this->consumer,
            (string) $this->claimIdleMs,
            $cursor,
            'COUNT',
            (string) $count,
        );
        if (!is_array($reply) || !is_string($reply[0] ?? null) || !is_array($reply[1] ?? null)) {
            throw new RedisCommandException('unexpected XAUTOCLAIM reply (Redis 6.2 or later is needed)');
        }
        return [$reply[0], self::entries($reply[1])];
    }

    /**
     * @param list<mixed> $raw `[[id, [field, value, ...] or nil], ...]`
     * @return array<string, array<string, string>|null>
     */
    private static function entries(array $raw): array
    {
        $entries = [];
        foreach ($raw as $entry) {
            if (!is_array($entry) || !is_string($entry[0] ?? null)) {
                continue;
            }
            $fields = null;
            if (is_array($entry[1] ?? null)) {
                $fields = [];
                for ($i = 0; $i + 1 < count($entry[1]); $i += 2) {
                    $fields[(string) $entry[1][$i]] = (string) $entry[1][$i + 1];
                }
            }
            $entries[$entry[0]] = $fields;
        }
        return $entries;
    }

    /**
     * Hands entries to the handler one by one, acknowledging each that it handled, until
     * they run out or the run should stop.
     *
     * @param array<string, array<string, string>|null> $entries
     */
    private function handleAll(array $entries, callable $handler, bool $redelivered): void
    {
        foreach ($entries as $id => $fields) {
            $id = (string) $id;
            if ($fields === null) {
                // Deleted (XDEL, XTRIM) while pending: nothing left to handle.
                $this->acknowledge($id);
                continue;
            }
            if (!$this->shouldContinue()) {
                break;
            }
            $message = InboxMessage::fromEntry($this->stream, $id, $fields, $redelivered);
            try {
                $handler($message);
            } catch (\Throwable $error) {
                ($this->onError)($error, $message);
                continue;
            }
            $this->acknowledge($id);
            $this->handled++;
        }
    }

    private function acknowledge(string $id): void
    {
        try {
            RawRedis::call($this->redis, 'XACK', $this->stream, $this->group, $id);
        } catch (RedisCommandException $e) {
            // The stream or group was deleted while the handler ran: nothing is left to acknowledge.
            if (!str_contains($e->getMessage(), 'NOGROUP')) {
                throw $e;
            }
            return;
        }
        if ($this->deleteAfterAck) {
            RawRedis::call($this->redis, 'XDEL', $this->stream, $id);
        }
    }

    /** Makes sure the connection's read timeout outlasts `XREADGROUP ... BLOCK`. */
    private function allowBlockingReads(): void
    {
        $timeout = (float) $this->redis->getOption(\Redis::OPT_READ_TIMEOUT);
        if ($timeout == 0) {
            // phpredis then uses PHP's default_socket_timeout.
            $timeout = (float) ini_get('default_socket_timeout');
        }
        $needed = $this->blockMs / 1000 + 5;
        if ($timeout > 0 && $timeout < $needed) {
            $this->redis->setOption(\Redis::OPT_READ_TIMEOUT, $needed);
        }
    }

    /**
     * Stops the worker on SIGTERM/SIGINT while it runs, when pcntl is available.
     *
     * @return \Closure(): void restores the previous handlers.
     */
    private function installSignalHandlers(): \Closure
    {
        if (!$this->handleSignals || !function_exists('pcntl_signal') || !function_exists('pcntl_async_signals')) {
            return static function (): void {
            };
        }
        $wasAsync = pcntl_async_signals(true);
        $previous = [];
        foreach ([SIGTERM, SIGINT] as $signal) {
            $previous[$signal] = pcntl_signal_get_handler($signal);
            pcntl_signal($signal, function (): void {
                $this->stop();
            });
        }
        return static function () use ($previous, $wasAsync): void {
            foreach ($previous as $signal => $handler) {
                pcntl_signal($signal, $handler);
            }
            pcntl_async_signals($wasAsync);
        };
    }
}
