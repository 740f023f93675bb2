<?php
/**
 * A small validator of a plugin's readme.txt, after the rules of wordpress.org's readme
 * validator (which is online only): the header fields and their forms, the short description
 * (at most 150 characters), the sections a listing needs (FAQ and Upgrade Notice included),
 * and that the readme agrees with the plugin's own header (versions, `Update URI`).
 */

declare(strict_types=1);

namespace FanoutWPTest;

final class Readme
{
    public const REQUIRED_HEADERS = ['Contributors', 'Tags', 'Requires at least', 'Tested up to', 'Requires PHP', 'Stable tag', 'License'];
    public const REQUIRED_SECTIONS = ['Description', 'Installation', 'Frequently Asked Questions', 'Changelog', 'Upgrade Notice'];
    public const MAX_SHORT_DESCRIPTION = 150;
    public const MAX_TAGS = 5;
    public const MAX_UPGRADE_NOTICE = 300;

    /**
     * What is wrong with a readme, one sentence each; empty when it passes.
     *
     * @param array<string, string> $plugin the plugin file's header fields (get_file_data style)
     * @return list<string>
     */
    public static function problems(string $readme, array $plugin): array
    {
        $problems = [];
        $lines = preg_split('/\R/', trim($readme)) ?: [];
        if (!preg_match('/^===\s*(.+?)\s*===$/', $lines[0] ?? '', $m) || $m[1] === '') {
            $problems[] = 'the first line must be the plugin name as === Name ===';
        }

        // The header: "Field: value" lines up to the first blank line.
        $headers = [];
        $i = 1;
        for (; $i < count($lines) && trim($lines[$i]) !== ''; $i++) {
            if (preg_match('/^([A-Za-z ]+):\s*(.*)$/', $lines[$i], $h)) {
                $headers[trim($h[1])] = trim($h[2]);
            }
        }
        foreach (self::REQUIRED_HEADERS as $field) {
            if (($headers[$field] ?? '') === '') {
                $problems[] = "no $field header";
            }
        }
        foreach (['Requires at least', 'Tested up to'] as $field) {
            if (isset($headers[$field]) && !preg_match('/^\d+\.\d+(\.\d+)?$/', $headers[$field])) {
                $problems[] = "$field must be a WordPress version such as 6.1, not {$headers[$field]}";
            }
        }
        if (isset($headers['Requires at least'], $headers['Tested up to']) && version_compare($headers['Tested up to'], $headers['Requires at least'], '<')) {
            $problems[] = 'Tested up to is older than Requires at least';
        }
        if (isset($headers['Tags']) && count(array_filter(array_map('trim', explode(',', $headers['Tags'])))) > self::MAX_TAGS) {
            $problems[] = 'more than ' . self::MAX_TAGS . ' tags (only the first five are used)';
        }
        if (($headers['Stable tag'] ?? '') === 'trunk') {
            $problems[] = 'Stable tag must be a version, not trunk';
        }
        foreach (['Stable tag' => 'Version', 'Requires at least' => 'RequiresWP', 'Requires PHP' => 'RequiresPHP'] as $field => $pluginField) {
            if (isset($headers[$field]) && ($plugin[$pluginField] ?? '') !== $headers[$field]) {
                $problems[] = "$field {$headers[$field]} differs from the plugin header's " . ($plugin[$pluginField] ?? 'nothing');
            }
        }
        if (($plugin['UpdateURI'] ?? '') === '') {
            $problems[] = 'the plugin header has no Update URI';
        }

        // The short description: the first paragraph after the header, before any section.
        $short = [];
        for (; $i < count($lines) && !str_starts_with(trim($lines[$i]), '=='); $i++) {
            if (trim($lines[$i]) === '' && $short !== []) {
                break;
            }
            if (trim($lines[$i]) !== '') {
                $short[] = trim($lines[$i]);
            }
        }
        $shortText = trim(strip_tags(implode(' ', $short)));
        if ($shortText === '') {
            $problems[] = 'no short description after the header';
        } elseif (mb_strlen($shortText) > self::MAX_SHORT_DESCRIPTION) {
            $problems[] = sprintf('the short description has %d characters, more than %d', mb_strlen($shortText), self::MAX_SHORT_DESCRIPTION);
        }

        // Sections and their entries.
        $sections = [];
        $current = null;
        foreach ($lines as $line) {
            if (preg_match('/^==\s*(.+?)\s*==$/', trim($line), $s) && !str_starts_with(trim($line), '===')) {
                $current = $s[1];
                $sections[$current] = [];
            } elseif ($current !== null) {
                $sections[$current][] = $line;
            }
        }
        foreach (self::REQUIRED_SECTIONS as $name) {
            if (!isset($sections[$name]) || trim(implode("\n", $sections[$name])) === '') {
                $problems[] = "no $name section";
            }
        }
        $entries = static function (array $section): array {
            $entries = [];
            $key = null;
            foreach ($section as $line) {
                if (preg_match('/^=\s*(.+?)\s*=$/', trim($line), $e)) {
                    $key = $e[1];
                    $entries[$key] = '';
                } elseif ($key !== null) {
                    $entries[$key] = trim($entries[$key] . ' ' . trim($line));
                }
            }
            return $entries;
        };
        if (isset($sections['Frequently Asked Questions']) && $entries($sections['Frequently Asked Questions']) === []) {
            $problems[] = 'the FAQ has no question (= Question? =)';
        }
        $stable = $headers['Stable tag'] ?? '';
        foreach (['Changelog', 'Upgrade Notice'] as $name) {
            if (isset($sections[$name]) && !array_key_exists($stable, $entries($sections[$name]))) {
                $problems[] = "the $name has no entry for the stable tag $stable";
            }
        }
        foreach ($entries($sections['Upgrade Notice'] ?? []) as $version => $notice) {
            if (mb_strlen(strip_tags($notice)) > self::MAX_UPGRADE_NOTICE) {
                $problems[] = sprintf('the upgrade notice of %s has %d characters, more than %d', $version, mb_strlen($notice), self::MAX_UPGRADE_NOTICE);
            }
        }
        return $problems;
    }

    /**
     * The header fields of a plugin's main file, as WordPress's get_plugin_data() reads them.
     *
     * @return array<string, string>
     */
    public static function pluginHeaders(string $file): array
    {
        $fields = ['Name' => 'Plugin Name', 'Version' => 'Version', 'RequiresWP' => 'Requires at least', 'RequiresPHP' => 'Requires PHP', 'UpdateURI' => 'Update URI', 'TextDomain' => 'Text Domain', 'DomainPath' => 'Domain Path'];
        $head = (string) file_get_contents($file, false, null, 0, 8192);
        $out = [];
        foreach ($fields as $key => $name) {
            $out[$key] = preg_match('/^[ \t\/*#@]*' . preg_quote($name, '/') . ':(.*)$/mi', $head, $m) ? trim($m[1]) : '';
        }
        return $out;
    }
}
