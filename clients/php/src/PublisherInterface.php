<?php

declare(strict_types=1);

namespace Fanout;

/**
 * Publishing to fanout channels, through Redis (`Publisher`) or the HTTP API
 * (`HttpPublisher`), so that an application can choose per deployment.
 *
 * `$data` is what subscribers receive as the message's `data`: arrays, objects and scalars
 * are JSON-encoded; a string is sent as it is (valid JSON arrives as that JSON value, other
 * text as a JSON string).
 */
interface PublisherInterface
{
    /**
     * Publishes a message to one channel, fire-and-forget.
     *
     * @return int what the transport reports: `Publisher` the number of gateway nodes with
     *         a subscriber of the channel (0: nobody listens right now); `HttpPublisher` the
     *         message's offset (the HTTP API keeps history where the channel has it), else 0.
     */
    public function publish(string $channel, mixed $data): int;

    /**
     * Publishes a message and keeps it in the channel's history (on channels whose
     * namespace keeps one: `dag:` and `user:` by default), so that clients that were away
     * recover it. On other channels it is a plain publish with offset 0.
     *
     * @param string|null $idempotencyKey a key of yours per message (1 to 256 bytes): a publish
     *        repeated with the same key within the gateway's `idempotency_window_s` (300 s by
     *        default) publishes nothing and returns the first publish's offset, so a retry
     *        after a timeout or a lost reply publishes once.
     */
    public function publishWithHistory(string $channel, mixed $data, ?string $idempotencyKey = null): PublishResult;

    /**
     * Publishes one message to several channels at once, with history where kept: every
     * channel is checked first, and all are published in one transaction.
     *
     * @param list<string> $channels
     * @return int the number of distinct channels published to.
     */
    public function broadcast(array $channels, mixed $data): int;
}
