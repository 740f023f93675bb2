<?php
// A backend worker for fanout's durable inbox (phpredis).
//
// Clients `send` frames such as
//   {"type":"send","channel":"dag:7","data":{"type":"human_decision","node_id":"n3","decision":"approve"}}
// and fanout appends them to the Redis stream `fanout:inbox` with the channel, the
// authenticated user, conn_id, node, receive time and data. This worker reads them with a
// consumer group (so several workers share the load and nothing is lost while none runs),
// handles human decisions by publishing a `node_state` update back to the run's channel
// (with history, through the fanout function), and acknowledges each entry.
//
//   php worker.php [--host 127.0.0.1] [--port 6379] [--stream fanout:inbox]
//                  [--group dag-workers] [--max N] [--timeout SECONDS]

$opts = getopt('', ['host:', 'port:', 'stream:', 'group:', 'max:', 'timeout:']);
$host = $opts['host'] ?? '127.0.0.1';
$port = (int) ($opts['port'] ?? 6379);
$stream = $opts['stream'] ?? 'fanout:inbox';
$group = $opts['group'] ?? 'dag-workers';
$max = (int) ($opts['max'] ?? 0);          // 0: run until stopped
$timeout = (int) ($opts['timeout'] ?? 0);  // 0: no time limit
$consumer = gethostname() . '-' . getmypid();

$redis = new Redis();
$redis->connect($host, $port, 2.0);
$redis->setOption(Redis::OPT_READ_TIMEOUT, -1);

// Create the group (and the stream) once; "BUSYGROUP" means it exists already.
try {
    $redis->xGroup('CREATE', $stream, $group, '0', true);
} catch (RedisException $e) {
    if (strpos($e->getMessage(), 'BUSYGROUP') === false) {
        throw $e;
    }
}

function handle(Redis $redis, string $channel, string $user, array $event): void {
    if (($event['type'] ?? '') !== 'human_decision') {
        return;
    }
    // The catalogue's envelope carries the fields in `data`; accept them flat too.
    $data = is_array($event['data'] ?? null) ? $event['data'] : $event;
    $approved = ($data['decision'] ?? '') === 'approve';
    $update = [
        'type' => 'node_state',
        'data' => [
            'node_id' => $data['node_id'] ?? null,
            'state' => $approved ? 'running' : 'cancelled',
            'decided_by' => $user,
        ],
        'timestamp' => time(),
    ];
    $redis->rawCommand('FCALL', 'fanout_publish', 1, $channel, json_encode($update));
}

$started = time();
$handled = 0;
while (($max === 0 || $handled < $max) && ($timeout === 0 || time() - $started < $timeout)) {
    // Entries never delivered to this group ('>'), at most 10, waiting up to 1 s.
    $batch = $redis->xReadGroup($group, $consumer, [$stream => '>'], 10, 1000);
    if (!$batch) {
        continue;
    }
    foreach ($batch[$stream] as $id => $fields) {
        $data = json_decode($fields['data'] ?? 'null', true);
        if (is_array($data)) {
            handle($redis, $fields['channel'], $fields['user'], $data);
        }
        $redis->xAck($stream, $group, [$id]);
        $handled++;
        fwrite(STDOUT, "handled $id from {$fields['user']} on {$fields['channel']}\n");
    }
}
exit($max > 0 && $handled < $max ? 1 : 0);
