<?php

/**
 * An inbox worker process for InboxTest: handles `send` frames the way an application
 * would, publishing a `handled` message back to the channel (with history) and appending
 * `handled <seq> <entry id> <redelivered>` to a record file, then prints `stopped <count>`.
 *
 *   php inbox-worker.php --redis URL --group G --consumer C --record FILE
 *       [--claim-idle-ms N] [--block-ms N] [--max N] [--seconds S] [--hang-on SEQ]
 *
 * --hang-on SEQ: on the entry whose data.seq is SEQ, append `started <seq>` and hang (the
 * test kills the worker there, mid-entry, before it acknowledges).
 */

declare(strict_types=1);

use Fanout\Inbox;
use Fanout\InboxMessage;
use Fanout\Publisher;

require __DIR__ . '/../../autoload.php';

$options = getopt('', ['redis:', 'group:', 'consumer:', 'record:', 'claim-idle-ms:', 'block-ms:', 'max:', 'seconds:', 'hang-on:']);
$record = $options['record'];
$hangOn = isset($options['hang-on']) ? (int) $options['hang-on'] : null;

$publisher = Publisher::connect($options['redis']);
$inbox = Inbox::connect(
    $options['redis'],
    $options['group'],
    consumer: $options['consumer'],
    claimIdleMs: (int) ($options['claim-idle-ms'] ?? 60000),
    blockMs: (int) ($options['block-ms'] ?? 5000),
);
file_put_contents($record, "ready {$inbox->consumer()}\n", FILE_APPEND | LOCK_EX);

$handled = $inbox->run(function (InboxMessage $message) use ($publisher, $record, $hangOn): void {
    $seq = (int) ($message->data['seq'] ?? 0);
    if ($seq === $hangOn) {
        file_put_contents($record, "started $seq\n", FILE_APPEND | LOCK_EX);
        sleep(60);
    }
    $publisher->publishWithHistory($message->channel, ['type' => 'handled', 'seq' => $seq, 'by' => $message->user]);
    file_put_contents($record, sprintf("handled %d %s %s\n", $seq, $message->id, $message->redelivered ? 'redelivered' : 'first'), FILE_APPEND | LOCK_EX);
}, maxMessages: (int) ($options['max'] ?? 0), maxSeconds: (float) ($options['seconds'] ?? 0));

file_put_contents($record, "stopped $handled\n", FILE_APPEND | LOCK_EX);
