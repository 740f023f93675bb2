<?php
// Publish to fanout subscribers on a Redis Cluster (phpredis `RedisCluster`).
//
//   php publish_cluster.php <channel> <json-payload> <seed host:port>[,<host:port>...] [fcall|spublish] [prefix]
//   php publish_cluster.php dag:7 '{"step":3}' 10.0.0.1:7000,10.0.0.2:7000 fcall
//
// fcall (the default): `FCALL fanout_publish 1 <channel> <payload>`, which keeps the message
// in the channel's history when its namespace has one and works for every channel; it runs
// in the channel's slot, so it is routed by the channel name. Prints the offset (0 without
// history).
// spublish: `SPUBLISH <prefix><channel> <payload>`, sharded pub/sub without history, routed
// by that Redis channel's slot. Prints the number of gateway nodes that had a subscriber.
//
// A plain PUBLISH reaches no fanout node on a cluster: the nodes listen with SSUBSCRIBE.

$channel = $argv[1] ?? 'room:lobby';
$payload = $argv[2] ?? json_encode(['type' => 'chat', 'text' => 'hello from PHP']);
$seeds = explode(',', $argv[3] ?? '127.0.0.1:7000');
$mode = $argv[4] ?? 'fcall';
$prefix = $argv[5] ?? 'fanout:';

try {
    $cluster = new RedisCluster(null, $seeds, 2.0, 2.0);
    if ($mode === 'spublish') {
        // rawCommand's first argument routes the command: the Redis channel itself.
        $result = $cluster->rawCommand($prefix . $channel, 'SPUBLISH', $prefix . $channel, $payload);
    } else {
        $result = $cluster->rawCommand($channel, 'FCALL', 'fanout_publish', 1, $channel, $payload);
    }
} catch (RedisClusterException $e) {
    fwrite(STDERR, 'Redis Cluster: ' . $e->getMessage() . PHP_EOL);
    exit(1);
}
if ($result === false) {
    fwrite(STDERR, 'Redis Cluster refused it: ' . $cluster->getLastError() . PHP_EOL);
    exit(1);
}
echo $result, PHP_EOL;
