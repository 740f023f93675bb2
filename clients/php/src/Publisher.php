<?php

declare(strict_types=1);

namespace Fanout;

use Fanout\Exception\InvalidArgumentException;
use Fanout\Exception\LibraryNotLoadedException;
use Fanout\Exception\RedisCommandException;
use Fanout\Internal\ControlArguments;
use Fanout\Internal\Payload;
use Fanout\Internal\RawRedis;

/**
 * Publishes through Redis (phpredis), the way docs/publishing.md describes: a plain
 * `PUBLISH <prefix><channel>` for fire-and-forget messages, and `FCALL fanout_publish`
 * (the Redis Function library every fanout node loads) for messages kept in the channel's
 * history.
 *
 * ```php
 * $publisher = Publisher::connect('redis://127.0.0.1:6379');
 * $publisher->publish('room:lobby', ['type' => 'chat', 'text' => 'hi']);
 * $result = $publisher->publishWithHistory('user:42', ['type' => 'notification', 'data' => [...]]);
 * $result->offset; // 7
 * $publisher->broadcast(['user:42', 'user:43'], ['type' => 'task_update']);
 * ```
 *
 * It also controls sessions (`SessionControlInterface`) with the nodes' `fanout_disconnect`,
 * `fanout_subscribe`, `fanout_unsubscribe`, `fanout_revoke_user`, `fanout_revoke_token` and
 * `fanout_nodes` functions.
 *
 * The `\Redis` connection may be shared with the application: commands are sent raw,
 * unaffected by its `OPT_PREFIX` or `OPT_SERIALIZER`.
 */
final class Publisher implements PublisherInterface, SessionControlInterface
{
    /**
     * @param \Redis $redis a connected phpredis client, to the Redis the fanout nodes use.
     * @param string $prefix the nodes' `redis_prefix` (`--redis-prefix`), `fanout:` by default.
     */
    public function __construct(
        private readonly \Redis $redis,
        private readonly string $prefix = 'fanout:',
    ) {
    }

    /**
     * A publisher on a new connection.
     *
     * @param string $url `redis://[[user]:password@]host[:port][/db]`, `rediss://...` (TLS) or
     *        `unix:///path/to/redis.sock`.
     * @param float $timeout seconds to connect.
     * @param float|null $readTimeout seconds to wait for each reply; null: `$timeout`. A Redis
     *        that accepts the connection and never answers fails the command after this long.
     * @throws RedisCommandException when Redis cannot be reached.
     */
    public static function connect(
        string $url = 'redis://127.0.0.1:6379',
        string $prefix = 'fanout:',
        float $timeout = 2.0,
        ?float $readTimeout = null,
    ): self {
        return new self(RawRedis::connect($url, $timeout, $readTimeout), $prefix);
    }

    /**
     * `PUBLISH <prefix><channel> <payload>`: delivered to the channel's subscribers connected
     * right now, at most once, and not kept in history (even on channels that keep one).
     *
     * @return int the number of gateway nodes subscribed to the channel (not of clients).
     * @throws InvalidArgumentException for an invalid channel name or payload.
     * @throws RedisCommandException
     */
    public function publish(string $channel, mixed $data): int
    {
        Channel::assertValid($channel);
        return (int) RawRedis::call($this->redis, 'PUBLISH', $this->prefix . $channel, Payload::encode($data));
    }

    /**
     * `FCALL fanout_publish 1 <channel> <payload>`: keeps the message in the channel's
     * history and publishes it with its offset and epoch, atomically in Redis.
     *
     * @param string|null $idempotencyKey see PublisherInterface; passed as `fanout_publish`'s
     *        third argument.
     * @throws InvalidArgumentException for an invalid channel name, payload or idempotency key.
     * @throws LibraryNotLoadedException when no fanout node has loaded its function library
     *         into this Redis (nothing is published).
     * @throws RedisCommandException for other Redis errors, e.g. a payload above the nodes'
     *         `max_payload_bytes`.
     */
    public function publishWithHistory(string $channel, mixed $data, ?string $idempotencyKey = null): PublishResult
    {
        Channel::assertValid($channel);
        $payload = Payload::encode($data);
        // The epoch is read in the same transaction, so it is the one the offset belongs to.
        [$offset, $epoch] = RawRedis::transaction($this->redis, [
            $this->fcall($channel, $payload, $idempotencyKey),
            ['HGET', $this->prefix . '{' . $channel . '}:meta', 'epoch'],
        ]);
        $offset = self::offset($offset);
        return new PublishResult($offset, $offset > 0 && is_string($epoch) ? $epoch : null);
    }

    /**
     * `fanout_publish` to every channel in one `MULTI`/`EXEC` transaction: all channels are
     * validated first, and no other command runs in between. (A transaction is atomic but
     * not all-or-nothing; the errors `fanout_publish` can give, a missing library or a
     * payload too large, hit every channel alike, so in practice none or all are published.)
     *
     * @param list<string> $channels
     * @return int the number of distinct channels.
     * @throws InvalidArgumentException for an empty list, an invalid channel name or payload.
     * @throws LibraryNotLoadedException
     * @throws RedisCommandException
     */
    public function broadcast(array $channels, mixed $data): int
    {
        $channels = self::distinctChannels($channels);
        $payload = Payload::encode($data);
        $replies = RawRedis::transaction(
            $this->redis,
            array_map(fn (string $channel) => $this->fcall($channel, $payload, null), $channels),
        );
        foreach ($replies as $reply) {
            self::offset($reply);
        }
        return count($channels);
    }

    /**
     * `FCALL fanout_disconnect 1 control <user> <conn_id> <reason> <reconnect> <code>`.
     *
     * @throws InvalidArgumentException|LibraryNotLoadedException|RedisCommandException
     */
    public function disconnect(string|int $user, ?string $connId = null, string $reason = '', bool $reconnect = true, ?int $code = null): void
    {
        [$user, $connId, $reason, $code] = ControlArguments::disconnect($user, $connId, $reason, $code);
        $this->control('fanout_disconnect', $user, $connId ?? '', $reason, $reconnect ? '1' : '0', $code === null ? '' : (string) $code);
    }

    /**
     * `FCALL fanout_unsubscribe 1 control <user> <channel>`.
     *
     * @throws InvalidArgumentException|LibraryNotLoadedException|RedisCommandException
     */
    public function unsubscribe(string|int $user, string $channel): void
    {
        $this->control('fanout_unsubscribe', ...ControlArguments::membership($user, $channel));
    }

    /**
     * `FCALL fanout_subscribe 1 control <user> <channel>`.
     *
     * @throws InvalidArgumentException|LibraryNotLoadedException|RedisCommandException
     */
    public function subscribe(string|int $user, string $channel): void
    {
        $this->control('fanout_subscribe', ...ControlArguments::membership($user, $channel));
    }

    /**
     * `FCALL fanout_revoke_user 1 control <user> <before> <keep_s>`.
     *
     * @throws InvalidArgumentException|LibraryNotLoadedException|RedisCommandException
     */
    public function revokeUser(string|int $user, ?int $before = null, int $keepSeconds = self::DEFAULT_REVOCATION_KEEP_S): void
    {
        [$user, $before, $keepSeconds] = ControlArguments::revokeUser($user, $before, $keepSeconds);
        $this->control('fanout_revoke_user', $user, (string) $before, (string) $keepSeconds);
    }

    /**
     * `FCALL fanout_revoke_token 1 control <jti> <expires_at>`.
     *
     * @throws InvalidArgumentException|LibraryNotLoadedException|RedisCommandException
     */
    public function revokeToken(string $jti, int $expiresAt): void
    {
        ControlArguments::revokeToken($jti, $expiresAt);
        $this->control('fanout_revoke_token', $jti, (string) $expiresAt);
    }

    /**
     * `FCALL fanout_nodes 1 control`.
     *
     * @throws LibraryNotLoadedException|RedisCommandException
     */
    public function nodes(): array
    {
        $nodes = [];
        foreach ((array) $this->control('fanout_nodes') as $info) {
            $node = is_string($info) ? json_decode($info, true) : null;
            if (is_array($node)) {
                $nodes[] = $node;
            }
        }
        usort($nodes, static fn (array $a, array $b) => strcmp((string) ($a['id'] ?? ''), (string) ($b['id'] ?? '')));
        return $nodes;
    }

    /**
     * Calls a control function. Its one key is always `control`: the slot of the control
     * channel, so `redis-cli -c` and cluster clients route every call to one shard.
     *
     * @throws LibraryNotLoadedException|RedisCommandException
     */
    private function control(string $function, string ...$args): mixed
    {
        try {
            return RawRedis::call($this->redis, 'FCALL', $function, '1', 'control', ...$args);
        } catch (RedisCommandException $e) {
            throw self::functionError($e, 'controlling sessions', 'Nothing was done.');
        }
    }

    /** @return list<string> */
    private function fcall(string $channel, string $payload, ?string $idempotencyKey): array
    {
        if ($idempotencyKey === null) {
            return ['FCALL', 'fanout_publish', '1', $channel, $payload];
        }
        if ($idempotencyKey === '' || strlen($idempotencyKey) > 256) {
            throw new InvalidArgumentException('an idempotency key must be 1 to 256 bytes');
        }
        // The second argument is the publishing user: empty for a backend.
        return ['FCALL', 'fanout_publish', '1', $channel, $payload, '', $idempotencyKey];
    }

    /**
     * The offset from a `fanout_publish` reply, or the exception its error calls for.
     *
     * @throws LibraryNotLoadedException
     * @throws RedisCommandException
     */
    private static function offset(mixed $reply): int
    {
        if ($reply instanceof RedisCommandException) {
            throw self::functionError($reply, 'publishing with history', 'Nothing was published.');
        }
        if (!is_int($reply)) {
            throw new RedisCommandException('unexpected reply from fanout_publish: ' . get_debug_type($reply));
        }
        return $reply;
    }

    /**
     * What to throw for a refused `FCALL`: a missing library, a Redis too old for functions,
     * or Redis's own error (a bad argument, a payload too large).
     */
    private static function functionError(RedisCommandException $error, string $what, string $consequence): \RuntimeException
    {
        $message = $error->getMessage();
        if (str_contains($message, 'Function not found')) {
            return new LibraryNotLoadedException(
                'the fanout Redis Function library is not loaded on this Redis (Redis answered "'
                . $message . '"). fanout nodes load it when they start and when they reconnect to '
                . 'Redis: start a fanout node with --redis-url pointing at this Redis (or check that '
                . 'this code uses the same Redis as the nodes), then retry. ' . $consequence,
                0,
                $error,
            );
        }
        if (stripos($message, "unknown command") !== false && stripos($message, 'fcall') !== false) {
            return new RedisCommandException("$what needs Redis 7 or later (Redis answered \"$message\")", 0, $error);
        }
        return $error;
    }

    /**
     * @param array<mixed> $channels
     * @return list<string>
     */
    private static function distinctChannels(array $channels): array
    {
        if ($channels === []) {
            throw new InvalidArgumentException('broadcast needs at least one channel');
        }
        foreach ($channels as $channel) {
            if (!is_string($channel)) {
                throw new InvalidArgumentException('channel names must be strings, got ' . get_debug_type($channel));
            }
            Channel::assertValid($channel);
        }
        return array_values(array_unique($channels));
    }
}
