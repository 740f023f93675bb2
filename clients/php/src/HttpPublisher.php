<?php

declare(strict_types=1);

namespace Fanout;

use Fanout\Exception\ApiException;
use Fanout\Exception\InvalidArgumentException;
use Fanout\Exception\TransportException;
use Fanout\Internal\ControlArguments;
use Fanout\Internal\HttpClient;
use Fanout\Internal\Payload;

/**
 * Publishes through the gateway's HTTP API, for hosts that cannot reach Redis:
 * `POST /api/publish` and `POST /api/broadcast` with `Authorization: Bearer <api key>`.
 *
 * ```php
 * $publisher = new HttpPublisher('http://127.0.0.1:8080', apiKey: FANOUT_API_KEY);
 * $publisher->publish('room:lobby', ['type' => 'chat', 'text' => 'hi']);
 * $offset = $publisher->publishWithHistory('dag:7', ['type' => 'node_state'])->offset;
 * ```
 *
 * The HTTP API keeps every message in the channel's history when the channel has one, so
 * `publish` and `publishWithHistory` differ only in what they return. Errors raise
 * `ApiException` with the gateway's error code (`bad_request`, `unauthorized`, `forbidden`,
 * `too_large`, `unavailable`) and message; no answer raises `TransportException`.
 *
 * It also controls sessions (`SessionControlInterface`: `POST /api/disconnect`,
 * `/api/subscribe`, `/api/unsubscribe`, `/api/revoke`, `GET /api/info`) and lists the active
 * channels of the cluster (`channels()`, `GET /api/channels`).
 */
final class HttpPublisher implements PublisherInterface, SessionControlInterface
{
    private readonly HttpClient $http;

    /**
     * @param string $baseUrl the gateway's HTTP address, e.g. `http://127.0.0.1:8080` or
     *        `https://realtime.example.com` (a path prefix is kept).
     * @param string $apiKey one of the gateway's `api_key` values (`--api-key`, `FANOUT_API_KEY`).
     * @param float $timeout seconds per request.
     * @param string|null $transport `curl` or `stream` to choose; null: curl when the extension
     *        is loaded, else PHP's http stream wrapper.
     * @param float|null $connectTimeout seconds to connect, within `$timeout` (curl only); null: `$timeout`.
     * @throws InvalidArgumentException for a URL that is not http(s), an empty key or timeout.
     */
    public function __construct(string $baseUrl, string $apiKey, float $timeout = 5.0, ?string $transport = null, ?float $connectTimeout = null)
    {
        $this->http = new HttpClient($baseUrl, $apiKey, $timeout, $transport, $connectTimeout);
    }

    /**
     * `POST /api/publish`.
     *
     * @return int the message's offset on a channel with history, else 0.
     * @throws InvalidArgumentException|ApiException|TransportException
     */
    public function publish(string $channel, mixed $data): int
    {
        return $this->publishWithHistory($channel, $data)->offset;
    }

    /**
     * `POST /api/publish`: kept in the channel's history where it has one. The API does not
     * report the epoch: `PublishResult::$epoch` is null.
     *
     * @throws InvalidArgumentException|ApiException|TransportException
     */
    public function publishWithHistory(string $channel, mixed $data, ?string $idempotencyKey = null): PublishResult
    {
        Channel::assertValid($channel);
        $key = '';
        if ($idempotencyKey !== null) {
            if ($idempotencyKey === '' || strlen($idempotencyKey) > 256) {
                throw new InvalidArgumentException('an idempotency key must be 1 to 256 bytes');
            }
            $key = ',"idempotency_key":' . Payload::json($idempotencyKey, 'idempotency key');
        }
        $body = '{"channel":' . Payload::json($channel, 'channel') . ',"data":' . Payload::jsonForHttp($data) . $key . '}';
        $reply = $this->http->request('POST', '/api/publish', [], $body);
        return new PublishResult((int) ($reply['offset'] ?? 0));
    }

    /**
     * `POST /api/broadcast`: all or nothing, the gateway validates every channel before
     * publishing any, and publishes them in one Redis transaction.
     *
     * @param list<string> $channels 1 to 1000 channels.
     * @return int the number of distinct channels published to.
     * @throws InvalidArgumentException|ApiException|TransportException
     */
    public function broadcast(array $channels, mixed $data): int
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
        $body = '{"channels":' . Payload::json(array_values($channels), 'channels') . ',"data":' . Payload::jsonForHttp($data) . '}';
        $reply = $this->http->request('POST', '/api/broadcast', [], $body);
        return (int) ($reply['channels'] ?? 0);
    }

    /**
     * `GET /api/history`: a channel's recent messages, oldest first.
     *
     * @param int|null $since return the messages after this offset; null: the latest `$limit`.
     * @param int|null $limit at most this many (the gateway caps it at `max_recovery_messages`);
     *        0 returns only the position.
     * @return array{channel: string, epoch: string, offset: int, messages: list<array{offset: int, user?: string, data: mixed}>}
     * @throws InvalidArgumentException|ApiException|TransportException (`bad_request` for a channel without history)
     */
    public function history(string $channel, ?int $since = null, ?int $limit = null): array
    {
        Channel::assertValid($channel);
        if (($since !== null && $since < 0) || ($limit !== null && $limit < 0)) {
            throw new InvalidArgumentException('since and limit must not be negative');
        }
        $query = ['channel' => $channel];
        if ($since !== null) {
            $query['since'] = $since;
        }
        if ($limit !== null) {
            $query['limit'] = $limit;
        }
        return $this->http->request('GET', '/api/history', $query);
    }
    /**
     * `POST /api/disconnect`.
     *
     * @throws InvalidArgumentException|ApiException|TransportException
     */
    public function disconnect(string|int $user, ?string $connId = null, string $reason = '', bool $reconnect = true, ?int $code = null): void
    {
        [$user, $connId, $reason, $code] = ControlArguments::disconnect($user, $connId, $reason, $code);
        $body = ['user' => $user, 'reconnect' => $reconnect];
        if ($connId !== null) {
            $body['conn_id'] = $connId;
        }
        if ($reason !== '') {
            $body['reason'] = $reason;
        }
        if ($code !== null) {
            $body['code'] = $code;
        }
        $this->post('/api/disconnect', $body);
    }

    /**
     * `POST /api/unsubscribe`.
     *
     * @throws InvalidArgumentException|ApiException|TransportException
     */
    public function unsubscribe(string|int $user, string $channel): void
    {
        [$user, $channel] = ControlArguments::membership($user, $channel);
        $this->post('/api/unsubscribe', ['user' => $user, 'channel' => $channel]);
    }

    /**
     * `POST /api/subscribe`.
     *
     * @throws InvalidArgumentException|ApiException|TransportException
     */
    public function subscribe(string|int $user, string $channel): void
    {
        [$user, $channel] = ControlArguments::membership($user, $channel);
        $this->post('/api/subscribe', ['user' => $user, 'channel' => $channel]);
    }

    /**
     * `POST /api/revoke {"user", "before", "keep_s"}`.
     *
     * @throws InvalidArgumentException|ApiException|TransportException
     */
    public function revokeUser(string|int $user, ?int $before = null, int $keepSeconds = self::DEFAULT_REVOCATION_KEEP_S): void
    {
        [$user, $before, $keepSeconds] = ControlArguments::revokeUser($user, $before, $keepSeconds);
        $this->post('/api/revoke', ['user' => $user, 'before' => $before, 'keep_s' => $keepSeconds]);
    }

    /**
     * `POST /api/revoke {"jti", "expires_at"}`.
     *
     * @throws InvalidArgumentException|ApiException|TransportException
     */
    public function revokeToken(string $jti, int $expiresAt): void
    {
        ControlArguments::revokeToken($jti, $expiresAt);
        $this->post('/api/revoke', ['jti' => $jti, 'expires_at' => $expiresAt]);
    }

    /**
     * `GET /api/info`.
     *
     * @throws ApiException|TransportException
     */
    public function nodes(): array
    {
        $reply = $this->http->request('GET', '/api/info');
        return array_values(array_filter((array) ($reply['nodes'] ?? []), 'is_array'));
    }

    /**
     * `GET /api/channels`: the channels with subscribers now, summed over the nodes, and the
     * nodes that did not answer within a second (their subscribers are missing).
     *
     * @param string $pattern a channel name, or a prefix followed by `*` (`room:*`); `*`: all.
     * @return array{pattern: string, channels: list<array{channel: string, subscribers: int}>, missing_nodes: list<string>}
     * @throws ApiException|TransportException (`bad_request` for a malformed pattern)
     */
    public function channels(string $pattern = '*'): array
    {
        return $this->http->request('GET', '/api/channels', ['pattern' => $pattern]);
    }

    /** @param array<string, mixed> $body */
    private function post(string $path, array $body): void
    {
        $this->http->request('POST', $path, [], Payload::json($body, 'request'));
    }
}
