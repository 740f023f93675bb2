<?php
/**
 * A logged-in (or anonymous) visitor of the test site over real HTTP: cookies kept in a jar,
 * the way a browser tab keeps them.
 */

declare(strict_types=1);

namespace FanoutWPTest;

final class Browser
{
    private readonly string $jar;

    public function __construct(private readonly string $siteUrl, string $jarDir)
    {
        $this->jar = $jarDir . '/cookies-' . bin2hex(random_bytes(4)) . '.txt';
        touch($this->jar);
    }

    /** Logs in through wp-login.php, as a person would. */
    public function login(string $user, string $password): void
    {
        // wp-login.php refuses a login without its test cookie ("cookies are blocked").
        file_put_contents($this->jar, implode("\t", ['127.0.0.1', 'FALSE', '/', 'FALSE', '0', 'wordpress_test_cookie', 'WP+Cookie+check']) . "\n", FILE_APPEND);
        $response = $this->request('POST', '/wp-login.php', ['log' => $user, 'pwd' => $password, 'wp-submit' => 'Log In', 'testcookie' => '1']);
        if ($response['status'] !== 302 || !str_contains(file_get_contents($this->jar), 'wordpress_logged_in_')) {
            throw new \RuntimeException("login of $user failed: HTTP {$response['status']}");
        }
    }

    /** The `Cookie` header a browser would send to the site, from the jar. */
    public function cookieHeader(): string
    {
        $pairs = [];
        foreach (file($this->jar, FILE_IGNORE_NEW_LINES) as $line) {
            $line = preg_replace('/^#HttpOnly_/', '', $line);
            if ($line === '' || $line[0] === '#') {
                continue;
            }
            $fields = explode("\t", $line);
            if (count($fields) === 7) {
                $pairs[$fields[5]] = $fields[5] . '=' . $fields[6];
            }
        }
        return implode('; ', $pairs);
    }

    /**
     * @param array<string, string>|string|null $body form fields, or a raw (JSON) body
     * @param array<string, string> $headers
     * @return array{status: int, body: string, headers: string}
     */
    public function request(string $method, string $path, array|string|null $body = null, array $headers = []): array
    {
        $curl = curl_init($this->siteUrl . $path);
        $lines = [];
        foreach ($headers as $name => $value) {
            $lines[] = "$name: $value";
        }
        curl_setopt_array($curl, [
            CURLOPT_CUSTOMREQUEST => $method,
            CURLOPT_RETURNTRANSFER => true,
            CURLOPT_HEADER => true,
            CURLOPT_COOKIEJAR => $this->jar,
            CURLOPT_COOKIEFILE => $this->jar,
            CURLOPT_HTTPHEADER => $lines,
            CURLOPT_TIMEOUT => 30,
            CURLOPT_FOLLOWLOCATION => false,
        ]);
        if ($body !== null) {
            curl_setopt($curl, CURLOPT_POSTFIELDS, is_array($body) ? http_build_query($body) : $body);
        }
        $raw = curl_exec($curl);
        if ($raw === false) {
            throw new \RuntimeException("$method $path failed: " . curl_error($curl));
        }
        $headerSize = curl_getinfo($curl, CURLINFO_HEADER_SIZE);
        $status = (int) curl_getinfo($curl, CURLINFO_RESPONSE_CODE);
        curl_close($curl);
        return ['status' => $status, 'headers' => substr($raw, 0, $headerSize), 'body' => substr($raw, $headerSize)];
    }

    /**
     * A form with a file, as a browser posts it (multipart/form-data).
     *
     * @param array<string, string> $fields
     * @return array{status: int, body: string, headers: string}
     */
    public function upload(string $path, array $fields, string $fileField, string $file, string $type): array
    {
        $curl = curl_init($this->siteUrl . $path);
        curl_setopt_array($curl, [
            CURLOPT_POST => true,
            CURLOPT_RETURNTRANSFER => true,
            CURLOPT_HEADER => true,
            CURLOPT_COOKIEJAR => $this->jar,
            CURLOPT_COOKIEFILE => $this->jar,
            CURLOPT_TIMEOUT => 60,
            CURLOPT_POSTFIELDS => $fields + [$fileField => new \CURLFile($file, $type, basename($file))],
        ]);
        $raw = curl_exec($curl);
        if ($raw === false) {
            throw new \RuntimeException("POST $path failed: " . curl_error($curl));
        }
        $headerSize = curl_getinfo($curl, CURLINFO_HEADER_SIZE);
        $status = (int) curl_getinfo($curl, CURLINFO_RESPONSE_CODE);
        curl_close($curl);
        return ['status' => $status, 'headers' => substr($raw, 0, $headerSize), 'body' => substr($raw, $headerSize)];
    }

    /**
     * A REST call (`?rest_route=`, which works without pretty permalinks), JSON in and out.
     *
     * @return array{status: int, json: mixed, headers: string}
     */
    public function rest(string $method, string $route, ?array $json = null, ?string $nonce = null, string $site = ''): array
    {
        $headers = ['Accept' => 'application/json'];
        if ($nonce !== null) {
            $headers['X-WP-Nonce'] = $nonce;
        }
        if ($json !== null) {
            $headers['Content-Type'] = 'application/json';
        }
        $response = $this->request($method, $site . '/?rest_route=' . rawurlencode($route), $json === null ? null : json_encode($json), $headers);
        return ['status' => $response['status'], 'json' => json_decode($response['body'], true), 'headers' => $response['headers']];
    }
}
