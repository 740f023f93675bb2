<?php
// Publish a message to every fanout subscriber of a channel, through Redis (phpredis).
//
//   php publish.php <channel> [json-payload] [redis-host] [redis-port] [prefix]
//   php publish.php room:lobby '{"type":"chat","text":"hi"}'
//
// The payload reaches subscribers as the `data` of
// {"type":"message","channel":"room:lobby","data":{...}}. Prints the number of gateway
// nodes that had a subscriber for the channel (Redis PUBLISH's answer).

$channel = $argv[1] ?? 'room:lobby';
$payload = $argv[2] ?? json_encode(['type' => 'chat', 'text' => 'hello from PHP', 'timestamp' => time()]);
$host = $argv[3] ?? '127.0.0.1';
$port = (int) ($argv[4] ?? 6379);
$prefix = $argv[5] ?? 'fanout:';

$redis = new Redis();
if (!$redis->connect($host, $port, 2.0)) {
    fwrite(STDERR, "cannot connect to Redis at $host:$port\n");
    exit(1);
}
$nodes = $redis->publish($prefix . $channel, $payload);
echo $nodes, PHP_EOL;
