<?php

declare(strict_types=1);

namespace Fanout\Internal;

use Fanout\Exception\ApiException;
use Fanout\Exception\InvalidArgumentException;
use Fanout\Exception\TransportException;

/**
 * JSON requests to the gateway's HTTP API (`/api/*`) with the API key, over the curl
 * extension when it is loaded and PHP's http stream wrapper otherwise, so that the library
 * works on hosts with either.
 *
 * @internal not part of the library's API; may change in any version.
 */
final class HttpClient
{
    public const TRANSPORT_CURL = 'curl';
    public const TRANSPORT_STREAM = 'stream';

    private readonly string $baseUrl;
    private readonly string $transport;

    /**
     * @param string $baseUrl the gateway's HTTP address, e.g. `http://127.0.0.1:8080` (a path
     *        prefix is kept: `https://example.com/fanout` calls `https://example.com/fanout/api/...`).
     * @param string $apiKey one of the gateway's `api_key` values.
     * @param float $timeout seconds for the whole request, connecting included.
     * @param string|null $transport `curl`, `stream`, or null: curl when loaded.
     * @param float|null $connectTimeout seconds to connect (curl only; the stream wrapper has
     *        one timeout); null: `$timeout`.
     */
    public function __construct(
        string $baseUrl,
        private readonly string $apiKey,
        private readonly float $timeout = 5.0,
        ?string $transport = null,
        private readonly ?float $connectTimeout = null,
    ) {
        if (preg_match('#^https?://[^/]+#i', $baseUrl) !== 1) {
            throw new InvalidArgumentException('the gateway URL must start with http:// or https:// (e.g. http://127.0.0.1:8080), got ' . json_encode($baseUrl));
        }
        if ($apiKey === '' || preg_match('/[\r\n]/', $apiKey) === 1) {
            throw new InvalidArgumentException('the API key must be a non-empty string on one line');
        }
        if ($timeout <= 0 || ($connectTimeout !== null && $connectTimeout <= 0)) {
            throw new InvalidArgumentException('timeout must be positive');
        }
        $transport ??= extension_loaded('curl') ? self::TRANSPORT_CURL : self::TRANSPORT_STREAM;
        if ($transport === self::TRANSPORT_CURL && !extension_loaded('curl')) {
            throw new InvalidArgumentException('the curl transport needs the PHP curl extension (php-curl)');
        }
        if (!in_array($transport, [self::TRANSPORT_CURL, self::TRANSPORT_STREAM], true)) {
            throw new InvalidArgumentException('transport must be "curl" or "stream"');
        }
        $this->baseUrl = rtrim($baseUrl, '/');
        $this->transport = $transport;
    }

    /** The transport in use: `curl` or `stream`. */
    public function transport(): string
    {
        return $this->transport;
    }

    /**
     * Sends a request and returns the decoded JSON object of a 2xx answer.
     *
     * @param array<string, string|int> $query
     * @return array<string, mixed>
     * @throws ApiException when the gateway answers with an error.
     * @throws TransportException when there is no usable answer.
     */
    public function request(string $method, string $path, array $query = [], ?string $jsonBody = null): array
    {
        $url = $this->baseUrl . $path . ($query === [] ? '' : '?' . http_build_query($query, '', '&', PHP_QUERY_RFC3986));
        $headers = ['Authorization: Bearer ' . $this->apiKey, 'Accept: application/json'];
        if ($jsonBody !== null) {
            $headers[] = 'Content-Type: application/json';
        }
        [$status, $body] = $this->transport === self::TRANSPORT_CURL
            ? $this->viaCurl($method, $url, $headers, $jsonBody)
            : $this->viaStream($method, $url, $headers, $jsonBody);
        $decoded = json_decode($body, true, 512, JSON_BIGINT_AS_STRING);
        if ($status >= 200 && $status < 300) {
            if (!is_array($decoded)) {
                throw new TransportException("$method $path answered $status with a body that is not a JSON object");
            }
            return $decoded;
        }
        $error = is_array($decoded) ? ($decoded['error'] ?? null) : null;
        if (is_array($error) && is_string($error['code'] ?? null) && is_string($error['message'] ?? null)) {
            throw new ApiException($status, $error['code'], $error['message']);
        }
        // Not the gateway's error body: a proxy, a load balancer, or something else at that URL.
        $text = trim(preg_replace('/\s+/', ' ', strip_tags($body)) ?? '');
        throw new ApiException($status, "http_$status", $text === '' ? 'no error body' : substr($text, 0, 200));
    }

    /**
     * @param list<string> $headers
     * @return array{int, string}
     */
    private function viaCurl(string $method, string $url, array $headers, ?string $body): array
    {
        $curl = curl_init($url);
        $options = [
            CURLOPT_CUSTOMREQUEST => $method,
            CURLOPT_HTTPHEADER => $headers,
            CURLOPT_RETURNTRANSFER => true,
            CURLOPT_FOLLOWLOCATION => false,
            CURLOPT_TIMEOUT_MS => (int) ceil($this->timeout * 1000),
            CURLOPT_CONNECTTIMEOUT_MS => (int) ceil(min($this->connectTimeout ?? $this->timeout, $this->timeout) * 1000),
            CURLOPT_PROTOCOLS => CURLPROTO_HTTP | CURLPROTO_HTTPS,
        ];
        if ($body !== null) {
            $options[CURLOPT_POSTFIELDS] = $body;
        }
        curl_setopt_array($curl, $options);
        $response = curl_exec($curl);
        if ($response === false) {
            $error = curl_error($curl);
            curl_close($curl);
            throw new TransportException("$method $url failed: $error");
        }
        $status = (int) curl_getinfo($curl, CURLINFO_RESPONSE_CODE);
        curl_close($curl);
        return [$status, (string) $response];
    }

    /**
     * @param list<string> $headers
     * @return array{int, string}
     */
    private function viaStream(string $method, string $url, array $headers, ?string $body): array
    {
        if (!filter_var(ini_get('allow_url_fopen'), FILTER_VALIDATE_BOOLEAN)) {
            throw new TransportException('the HTTP API needs the PHP curl extension or allow_url_fopen = On');
        }
        $context = stream_context_create(['http' => [
            'method' => $method,
            'header' => implode("\r\n", [...$headers, 'Connection: close']),
            'content' => $body ?? '',
            'timeout' => $this->timeout,
            'ignore_errors' => true,   // read the body of 4xx/5xx answers too
            'follow_location' => 0,
            'protocol_version' => 1.1,
        ]]);
        $warning = null;
        set_error_handler(static function (int $level, string $message) use (&$warning): bool {
            $warning = $message;
            return true;
        });
        try {
            $response = file_get_contents($url, false, $context);
        } finally {
            restore_error_handler();
        }
        $statusLine = $http_response_header[0] ?? '';
        if ($response === false || preg_match('#^HTTP/\S+\s+(\d{3})#', $statusLine, $m) !== 1) {
            throw new TransportException("$method $url failed: " . ($warning ?? 'no HTTP response'));
        }
        return [(int) $m[1], $response];
    }
}
