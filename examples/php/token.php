<?php
// Mint a fanout connection token (HS256 JWT) in plain PHP, e.g. in a WordPress plugin for the
// logged-in user, and hand it to the browser. No library needed.
//
//   php token.php <secret> <user-id> [channels, comma-separated] [ttl-seconds]

function fanout_base64url(string $bytes): string {
    return rtrim(strtr(base64_encode($bytes), '+/', '-_'), '=');
}

function fanout_token(string $secret, string $user_id, array $channels = [], int $ttl = 3600, $info = null): string {
    $header = ['alg' => 'HS256', 'typ' => 'JWT'];
    $claims = ['sub' => $user_id, 'exp' => time() + $ttl, 'iat' => time(), 'channels' => $channels];
    if ($info !== null) {
        $claims['info'] = $info;
    }
    $signing_input = fanout_base64url(json_encode($header)) . '.' . fanout_base64url(json_encode($claims));
    $signature = hash_hmac('sha256', $signing_input, $secret, true);
    return $signing_input . '.' . fanout_base64url($signature);
}

if (PHP_SAPI === 'cli' && realpath($argv[0]) === __FILE__) {
    $secret = $argv[1] ?? getenv('FANOUT_JWT_SECRET');
    $user = $argv[2] ?? '1';
    $channels = isset($argv[3]) && $argv[3] !== '' ? explode(',', $argv[3]) : [];
    $ttl = (int) ($argv[4] ?? 3600);
    echo fanout_token($secret, $user, $channels, $ttl), PHP_EOL;
}
