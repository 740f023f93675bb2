<?php

declare(strict_types=1);

namespace Fanout\Tests;

use Fanout\Inbox;
use Fanout\InboxMessage;
use Fanout\Tests\Support\Process;
use Fanout\Tests\Support\WebSocketClient;

/**
 * `Inbox` consuming what real WebSocket clients `send` through the real gateway into Redis.
 * Each test reads with a consumer group of its own, created at `$` before its clients send.
 */
final class InboxTest extends GatewayTestCase
{
    private const STREAM = 'fanout:inbox';

    private function newGroup(): string
    {
        $group = 'g' . bin2hex(random_bytes(4));
        (new Inbox(static::$redis->client(), $group, startId: '$'))->ensureGroup();
        return $group;
    }

    /** Sends `{"type":"job","seq":N}` for every N and waits for each `sent`; returns the stream ids. */
    private static function send(WebSocketClient $ws, string $channel, array $seqs): array
    {
        $ids = [];
        foreach ($seqs as $seq) {
            $reply = $ws->request(['type' => 'send', 'channel' => $channel, 'data' => ['type' => 'job', 'seq' => $seq]]);
            self::assertSame('sent', $reply['type'], json_encode($reply));
            $ids[$seq] = $reply['stream_id'];
        }
        return $ids;
    }

    private function pendingCount(string $group): int
    {
        return (int) static::$redis->client()->rawCommand('XPENDING', self::STREAM, $group)[0];
    }

    public function testHandsEachSendToTheHandlerWithItsSenderAndAcknowledgesIt(): void
    {
        $group = $this->newGroup();
        $channel = self::unique('dag');
        $ws = $this->client('sender-1');
        $ids = self::send($ws, $channel, [1, 2, 3, 4]);
        $received = [];
        $inbox = new Inbox(static::$redis->client(), $group, blockMs: 200);
        $handled = $inbox->run(function (InboxMessage $m) use (&$received): void {
            $received[] = $m;
        }, maxMessages: 3, maxSeconds: 10);

        self::assertSame(3, $handled);
        self::assertSame(array_slice(array_values($ids), 0, 3), array_map(fn (InboxMessage $m) => $m->id, $received));
        foreach ($received as $i => $m) {
            self::assertSame(self::STREAM, $m->stream);
            self::assertSame($channel, $m->channel);
            self::assertSame('sender-1', $m->user);
            self::assertSame('job', $m->type);
            self::assertSame(['type' => 'job', 'seq' => $i + 1], $m->data);
            self::assertSame('{"type":"job","seq":' . ($i + 1) . '}', $m->rawData);
            self::assertSame('php-test', $m->node);
            self::assertMatchesRegularExpression('/^[0-9a-f]{16}$/', $m->connId);
            self::assertEqualsWithDelta(time() * 1000, $m->receivedAt, 60_000);
            self::assertFalse($m->redelivered);
        }
        self::assertSame(0, $this->pendingCount($group), 'maxMessages: 3 read no more than 3');

        $fourth = null;
        self::assertSame(1, $inbox->run(function (InboxMessage $m) use (&$fourth): void {
            $fourth = $m->id;
        }, maxMessages: 1, maxSeconds: 10));
        self::assertSame($ids[4], $fourth);
        // Nothing new: a bounded run returns at its deadline.
        self::assertSame(0, $inbox->run(fn () => self::fail('nothing to handle'), maxSeconds: 0.5));
    }

    public function testAFailingHandlerLeavesTheEntryPendingUntilItIsClaimedAgain(): void
    {
        $group = $this->newGroup();
        $ws = $this->client('sender-2');
        self::send($ws, self::unique('dag'), [1, 2]);
        $errors = [];
        $attempts = [];
        $inbox = new Inbox(
            static::$redis->client(),
            $group,
            blockMs: 100,
            claimIdleMs: 300,
            onError: function (\Throwable $e, InboxMessage $m) use (&$errors): void {
                $errors[] = [$e->getMessage(), $m->data['seq']];
            },
        );
        $handled = $inbox->run(function (InboxMessage $m) use (&$attempts): void {
            $attempts[] = [$m->data['seq'], $m->redelivered];
            if ($m->data['seq'] === 1 && !$m->redelivered) {
                throw new \RuntimeException('database is down');
            }
        }, maxMessages: 2, maxSeconds: 10);

        self::assertSame(2, $handled);
        self::assertSame([['database is down', 1]], $errors);
        self::assertSame([[1, false], [2, false], [1, true]], $attempts);
        self::assertSame(0, $this->pendingCount($group));
    }

    public function testEveryEntryIsHandledExactlyOnceAcrossAWorkerKilledMidway(): void
    {
        $group = $this->newGroup();
        $channel = self::unique('dag');
        $ws = $this->client('sender-3', [$channel]);
        self::send($ws, $channel, [1, 2, 3, 4, 5, 6]);
        $dir = Process::tempDir('fanout-php-inbox');
        $record = "$dir/record.txt";
        touch($record);

        // Worker A reads the six entries, handles 1 and 2, and is killed while handling 3.
        $a = $this->worker($dir, $group, 'worker-a', $record, ['--hang-on', '3']);
        try {
            $this->waitForRecord($record, 'started 3', $a);
        } finally {
            $a->signal(9);
        }
        self::assertSame(4, $this->pendingCount($group), 'entries 3-6 were delivered to A and not acknowledged');

        // Worker B takes them over once idle for 500 ms, and handles each once.
        $b = $this->worker($dir, $group, 'worker-b', $record, ['--claim-idle-ms', '500', '--max', '4', '--seconds', '20']);
        $exit = $b->waitExit(30);
        if ($exit === null) {
            $b->kill();
        }
        self::assertSame(0, $exit, $b->log());

        preg_match_all('/^handled (\d+) \S+ (\w+)$/m', file_get_contents($record), $m, PREG_SET_ORDER);
        $handled = array_map(fn (array $line) => [(int) $line[1], $line[2]], $m);
        self::assertSame(
            [[1, 'first'], [2, 'first'], [3, 'redelivered'], [4, 'redelivered'], [5, 'redelivered'], [6, 'redelivered']],
            $handled,
        );
        self::assertStringContainsString('stopped 4', file_get_contents($record));
        self::assertSame(0, $this->pendingCount($group));

        // The dashboard saw each outcome exactly once, in order.
        $seen = $ws->drain(fn (array $f) => $f['type'] === 'message' && $f['channel'] === $channel, 2.0);
        self::assertSame([1, 2, 3, 4, 5, 6], array_map(fn (array $f) => $f['data']['seq'], $seen));
        self::assertSame([1, 2, 3, 4, 5, 6], array_map(fn (array $f) => $f['offset'], $seen));
        self::assertSame(['sender-3'], array_values(array_unique(array_map(fn (array $f) => $f['data']['by'], $seen))));
    }

    public function testSigtermStopsAWorkerBlockedOnAnEmptyInbox(): void
    {
        $group = $this->newGroup();
        $dir = Process::tempDir('fanout-php-inbox');
        $record = "$dir/record.txt";
        touch($record);
        $worker = $this->worker($dir, $group, 'worker-term', $record, ['--block-ms', '1000']);
        $this->waitForRecord($record, 'ready worker-term', $worker);
        usleep(300_000); // into XREADGROUP ... BLOCK
        $exit = $worker->signal(15, 10.0);
        if ($exit === null) {
            $worker->kill();
        }
        self::assertSame(0, $exit, 'the worker exits by itself, cleanly: ' . $worker->log());
        self::assertStringContainsString('stopped 0', file_get_contents($record));
    }

    public function testAWorkerOutlivesTheDeletionOfTheStreamAndItsGroup(): void
    {
        $group = $this->newGroup();
        $dir = Process::tempDir('fanout-php-inbox');
        $record = "$dir/record.txt";
        touch($record);
        $worker = $this->worker($dir, $group, 'worker-reset', $record, ['--block-ms', '2000', '--max', '1', '--seconds', '20']);
        $this->waitForRecord($record, 'ready worker-reset', $worker);
        usleep(300_000); // into XREADGROUP ... BLOCK
        // As after a Redis restart without persistence: the stream and every group are gone.
        static::$redis->client()->rawCommand('DEL', self::STREAM);
        usleep(300_000);
        $channel = self::unique('dag');
        self::send($this->client('sender-5'), $channel, [1]);
        $exit = $worker->waitExit(25);
        if ($exit === null) {
            $worker->kill();
        }
        self::assertSame(0, $exit, $worker->log());
        self::assertMatchesRegularExpression('/^handled 1 \S+ first$/m', file_get_contents($record));
    }

    public function testStopFromTheHandlerLeavesTheRestToTheSameConsumerName(): void
    {
        $group = $this->newGroup();
        $ws = $this->client('sender-4');
        self::send($ws, self::unique('room'), [1, 2, 3]);
        $first = new Inbox(static::$redis->client(), $group, consumer: 'stable', blockMs: 100);
        $handled = $first->run(function (InboxMessage $m) use ($first): void {
            $first->stop();
        }, maxSeconds: 10);
        self::assertSame(1, $handled);
        self::assertSame(2, $this->pendingCount($group));

        // A restart under the same name takes its pending entries back at once (no claim delay).
        $seqs = [];
        $again = new Inbox(static::$redis->client(), $group, consumer: 'stable', blockMs: 100, deleteAfterAck: true);
        $lengthBefore = (int) static::$redis->client()->rawCommand('XLEN', self::STREAM);
        self::assertSame(2, $again->run(function (InboxMessage $m) use (&$seqs): void {
            $seqs[] = [$m->data['seq'], $m->redelivered];
        }, maxMessages: 2, maxSeconds: 1));
        self::assertSame([[2, true], [3, true]], $seqs);
        self::assertSame(0, $this->pendingCount($group));
        self::assertSame($lengthBefore - 2, (int) static::$redis->client()->rawCommand('XLEN', self::STREAM), 'deleteAfterAck removed them');
    }

    private function worker(string $dir, string $group, string $consumer, string $record, array $args): Process
    {
        return new Process([
            PHP_BINARY, __DIR__ . '/bin/inbox-worker.php',
            '--redis', static::$redis->url(), '--group', $group, '--consumer', $consumer, '--record', $record, ...$args,
        ], "$dir/$consumer.log");
    }

    private function waitForRecord(string $record, string $line, Process $process): void
    {
        $deadline = microtime(true) + 15;
        while (!str_contains((string) file_get_contents($record), $line)) {
            if (microtime(true) > $deadline || !$process->isRunning()) {
                self::fail("no '$line' in the record:\n" . file_get_contents($record) . "\nworker log:\n" . $process->log());
            }
            usleep(20_000);
        }
    }
}
