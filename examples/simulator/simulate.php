<?php
/**
 * Plays DAG runs through fanout, for the live demo dashboard (`fanout serve --demo`, page /demo/).
 *
 * It behaves like an execution engine would: it publishes the run's progress on `dag:<run id>`
 * with history (`FCALL fanout_publish`, so a dashboard that reconnects recovers what it
 * missed), stops at a human gate, and reads what dashboards `send` from the inbox stream with
 * a consumer group: the gate's `human_decision` (approve, reject or modify), `prompt`s typed
 * in the agent console, and `cancel_execution`. Every event follows docs/events.md.
 *
 * The graph travels in the events themselves: the first `node_state` of each node (`pending`)
 * carries two extra `data` fields the catalogue allows, `label` and `depends_on`, from which
 * the dashboard draws nodes and edges. A run ends with `execution_complete`; the next run
 * replays on the same channel (dashboards start over on the first event after it).
 *
 * Usage: php simulate.php [options]   (php simulate.php --help lists them)
 *
 * Needs PHP 8.1+ with phpredis (Debian: php-cli php-redis) and Redis 7+ shared with the
 * gateway (the gateway loads the `fanout` function library into it).
 */

declare(strict_types=1);

const USAGE = <<<'TXT'
Plays DAG runs through fanout for the live demo dashboard.

  php simulate.php [--redis-url redis://127.0.0.1:6379/0] [--prefix fanout:] [--run demo]
                   [--runs 1] [--max-seconds 900] [--step-ms 600] [--gate-timeout-s 600]
                   [--pause-between-s 5] [--inbox <prefix>inbox] [--group dag-simulator]
                   [--notify <user id>] [--api-url http://127.0.0.1:8080 --api-key KEY]
                   [--presence-channel room:demo] [--wait-s 30]

  --redis-url        Redis the gateway uses (redis://[:password@]host[:port][/db])
  --prefix           the gateway's redis_prefix; the inbox stream is <prefix>inbox
  --run              run id: events go to dag:<run>
  --runs             how many runs to play (0: until --max-seconds)
  --max-seconds      stop after this long (0: no limit); a run in progress ends cancelled
  --step-ms          pause between two events of a run
  --gate-timeout-s   how long the human gate waits before the run decides alone (reject)
  --pause-between-s  pause between two runs
  --inbox            inbox stream to read (default <prefix>inbox)
  --group            consumer group on the inbox
  --notify           also notify this user (user:<id>) when a run ends; deciders always are
  --api-url/--api-key  optional: show the simulated agent in the presence of
                       --presence-channel with its status (POST /api/status); the key
                       defaults to $FANOUT_API_KEY
  --wait-s           wait this long at start for a gateway to load its function library
                     into Redis (the gateway may start after the simulator)

Exit status: 0 when done (every run played, or --max-seconds reached), 1 on a Redis
error, 2 on bad options.
TXT;

/** Command-line options, validated. */
final class Options
{
    public string $redisHost = '127.0.0.1';
    public int $redisPort = 6379;
    public ?string $redisPassword = null;
    public int $redisDb = 0;
    public string $prefix = 'fanout:';
    public string $runId = 'demo';
    public int $runs = 1;
    public int $maxSeconds = 900;
    public int $stepMs = 600;
    public int $gateTimeoutS = 600;
    public int $pauseBetweenS = 5;
    public string $inbox = '';
    public string $group = 'dag-simulator';
    public ?string $notify = null;
    public ?string $apiUrl = null;
    public ?string $apiKey = null;
    public string $presenceChannel = 'room:demo';
    public int $waitS = 30;

    /** Parses argv; throws InvalidArgumentException with a message for the user. */
    public static function parse(): self
    {
        $given = getopt('h', [
            'help', 'redis-url:', 'prefix:', 'run:', 'runs:', 'max-seconds:', 'step-ms:',
            'gate-timeout-s:', 'pause-between-s:', 'inbox:', 'group:', 'notify:', 'api-url:',
            'api-key:', 'presence-channel:', 'wait-s:',
        ], $rest);
        if (isset($given['h']) || isset($given['help'])) {
            fwrite(STDOUT, USAGE . "\n");
            exit(0);
        }
        if ($rest < count($GLOBALS['argv'])) {
            throw new InvalidArgumentException('unexpected argument ' . $GLOBALS['argv'][$rest]);
        }
        $o = new self();
        if (isset($given['redis-url'])) {
            $o->applyRedisUrl(self::single($given, 'redis-url'));
        }
        $o->prefix = $given['prefix'] ?? $o->prefix;
        $o->runId = $given['run'] ?? $o->runId;
        if (!preg_match('/^[A-Za-z0-9_.:@-]{1,100}$/', $o->runId)) {
            throw new InvalidArgumentException('--run: letters, digits and _ - . : @ only');
        }
        $o->runs = self::integer($given, 'runs', $o->runs, 0);
        $o->maxSeconds = self::integer($given, 'max-seconds', $o->maxSeconds, 0);
        $o->stepMs = self::integer($given, 'step-ms', $o->stepMs, 1);
        $o->gateTimeoutS = self::integer($given, 'gate-timeout-s', $o->gateTimeoutS, 1);
        $o->pauseBetweenS = self::integer($given, 'pause-between-s', $o->pauseBetweenS, 0);
        $o->inbox = $given['inbox'] ?? $o->prefix . 'inbox';
        $o->group = $given['group'] ?? $o->group;
        $o->notify = $given['notify'] ?? null;
        $o->apiUrl = isset($given['api-url']) ? rtrim(self::single($given, 'api-url'), '/') : null;
        $o->apiKey = $given['api-key'] ?? (getenv('FANOUT_API_KEY') ?: null);
        $o->presenceChannel = $given['presence-channel'] ?? $o->presenceChannel;
        $o->waitS = self::integer($given, 'wait-s', $o->waitS, 0);
        if ($o->apiUrl !== null && ($o->apiKey === null || $o->apiKey === '')) {
            fwrite(STDERR, "simulate: --api-url without an API key (--api-key or FANOUT_API_KEY): the agent stays out of presence\n");
            $o->apiUrl = null;
        }
        if ($o->runs === 0 && $o->maxSeconds === 0) {
            fwrite(STDERR, "simulate: --runs 0 --max-seconds 0 plays until stopped\n");
        }
        return $o;
    }

    public function channel(): string
    {
        return 'dag:' . $this->runId;
    }

    private function applyRedisUrl(string $url): void
    {
        $parts = parse_url($url);
        if ($parts === false || ($parts['scheme'] ?? '') !== 'redis' || !isset($parts['host'])) {
            throw new InvalidArgumentException("--redis-url: expected redis://host:port/db, got $url");
        }
        $this->redisHost = $parts['host'];
        $this->redisPort = $parts['port'] ?? 6379;
        if (isset($parts['pass'])) {
            $this->redisPassword = urldecode($parts['pass']);
        }
        $db = trim($parts['path'] ?? '', '/');
        if ($db !== '') {
            if (!ctype_digit($db)) {
                throw new InvalidArgumentException("--redis-url: database must be a number, got $db");
            }
            $this->redisDb = (int) $db;
        }
    }

    private static function single(array $given, string $name): string
    {
        if (is_array($given[$name])) {
            throw new InvalidArgumentException("--$name given twice");
        }
        return $given[$name];
    }

    private static function integer(array $given, string $name, int $default, int $min): int
    {
        if (!isset($given[$name])) {
            return $default;
        }
        $value = self::single($given, $name);
        if (!preg_match('/^\d+$/', $value) || (int) $value < $min) {
            throw new InvalidArgumentException("--$name: expected an integer >= $min, got $value");
        }
        return (int) $value;
    }
}

/** One node of the simulated DAG, with the work it pretends to do. */
final class Step
{
    /**
     * @param list<string> $dependsOn nodes that must complete first
     * @param ?array{name:string,input:array} $tool the tool the agent calls, if any
     * @param list<string> $answer pieces of the agent's streamed output
     */
    public function __construct(
        public readonly string $id,
        public readonly string $label,
        public readonly array $dependsOn,
        public readonly ?array $tool,
        public readonly array $answer,
        public readonly int $tokens,
        public readonly float $costUsd,
        public readonly bool $isGate = false,
    ) {
    }
}

/**
 * The run's graph, in waves: the nodes of one wave depend only on earlier waves and run
 * side by side.
 *
 * @return list<list<Step>>
 */
function demo_waves(): array
{
    return [
        [new Step('fetch', 'Fetch tickets', [], ['name' => 'http_get', 'input' => ['url' => 'https://tickets.example.com/api/open?since=24h']],
            ['Fetched 128 open tickets ', 'from the last 24 hours.'], 420, 0.004)],
        [
            new Step('classify', 'Classify', ['fetch'], ['name' => 'classify', 'input' => ['labels' => ['bug', 'billing', 'feature']]],
                ['Classified: 71 bugs, ', '33 billing, 24 feature requests.'], 2600, 0.031),
            new Step('embed', 'Embed & cluster', ['fetch'], ['name' => 'vector_search', 'input' => ['index' => 'tickets', 'k' => 8]],
                ['Found 6 clusters; ', 'the largest is "login fails after update".'], 1900, 0.012),
        ],
        [new Step('draft', 'Draft report', ['classify', 'embed'], ['name' => 'write_file', 'input' => ['path' => 'reports/daily.md']],
            ['Draft: login failures doubled since ', 'release 4.2; billing is stable; ', 'three feature asks repeat.'], 5400, 0.064)],
        [new Step('review', 'Human review', ['draft'], null, [], 0, 0.0, true)],
        [new Step('publish', 'Publish report', ['review'], ['name' => 'post_message', 'input' => ['channel' => '#support-daily']],
            ['Report posted to #support-daily.'], 300, 0.003)],
    ];
}

/** Why a run stopped before its end. */
final class RunStopped extends RuntimeException
{
    /** @param string $status the execution_complete status: cancelled or failed */
    public function __construct(public readonly string $status, string $reason)
    {
        parent::__construct($reason);
    }
}

/** Plays runs: publishes events, waits, and handles what dashboards send. */
final class Simulator
{
    private const BUDGET_USD = 0.5;

    private readonly string $consumer;
    private readonly float $deadline;
    private float $spent = 0.0;
    /** @var array<string,true> users who decided something in the current run */
    private array $deciders = [];
    /** @var ?array{step:Step,opened_ms:int} the gate waiting for a decision, and since when */
    private ?array $openGate = null;
    /** @var ?array{decision:string,user:?string,feedback:?string} the first valid decision */
    private ?array $gateDecision = null;
    private ?string $cancelledBy = null;
    /** @var array<string,string> the last state published for each node of the current run */
    private array $nodeStates = [];
    private int $promptsAnswered = 0;
    /**
     * Client message ids already handled (the JS client puts one in each event's data as
     * `client_msg_id`, and may send an event again after a reconnect), oldest first.
     * @var array<string,true>
     */
    private array $handledMessageIds = [];

    public function __construct(private readonly Redis $redis, private readonly Options $options)
    {
        $this->consumer = gethostname() . '-' . getmypid();
        $this->deadline = $options->maxSeconds > 0 ? microtime(true) + $options->maxSeconds : INF;
    }

    /**
     * Waits until a gateway has loaded the `fanout` function library into Redis (every node
     * does at start): before that, FCALL fanout_publish does not exist.
     */
    public function waitForLibrary(): void
    {
        $until = microtime(true) + $this->options->waitS;
        while (true) {
            $libraries = $this->redis->rawCommand('FUNCTION', 'LIST', 'LIBRARYNAME', 'fanout');
            if (is_array($libraries) && $libraries !== []) {
                return;
            }
            if (microtime(true) >= $until) {
                throw new RuntimeException('no fanout function library in Redis after ' . $this->options->waitS
                    . ' s: start a gateway on this Redis (fanout serve --redis-url ...)');
            }
            usleep(500_000);
        }
    }

    /**
     * Creates the consumer group (and the stream) unless it exists: phpredis answers false
     * with BUSYGROUP then. '$': decisions sent before the group existed are stale.
     */
    public function prepareInbox(): void
    {
        if (!$this->redis->xGroup('CREATE', $this->options->inbox, $this->options->group, '$', true)
            && !str_contains((string) $this->redis->getLastError(), 'BUSYGROUP')) {
            throw new RuntimeException('XGROUP CREATE failed: ' . $this->redis->getLastError());
        }
        $this->redis->clearLastError();
    }

    /** Plays the configured number of runs, within --max-seconds. */
    public function playAll(): void
    {
        for ($n = 1; $this->options->runs === 0 || $n <= $this->options->runs; $n++) {
            if ($this->timeLeft() <= 0) {
                return;
            }
            $this->playOne($n);
            if ($this->options->runs !== 0 && $n >= $this->options->runs) {
                return;
            }
            try {
                $this->wait($this->options->pauseBetweenS * 1000);
            } catch (RunStopped) {
                // Out of time (checked above), or a cancel for the run that already ended.
            }
        }
    }

    private function playOne(int $number): void
    {
        $started = microtime(true);
        $this->spent = 0.0;
        $this->deciders = [];
        $this->cancelledBy = null;
        $this->nodeStates = [];
        $this->log("run $number on {$this->options->channel()} starts");
        $waves = demo_waves();
        foreach ($waves as $wave) {
            foreach ($wave as $step) {
                $this->publish('node_state', ['node_id' => $step->id, 'state' => 'pending',
                    'label' => $step->label, 'depends_on' => $step->dependsOn]);
            }
        }
        $this->publishCost();
        $this->agentStatus('working', 'run ' . $this->options->runId);
        $status = 'succeeded';
        $results = [];
        try {
            $remaining = $waves;
            while ($remaining !== []) {
                $wave = array_shift($remaining);
                if ($wave[0]->isGate) {
                    if (!$this->passGate($wave[0], $waves)) {
                        foreach (array_merge(...$remaining) as $skipped) {
                            $this->publish('node_state', ['node_id' => $skipped->id, 'state' => 'skipped']);
                        }
                        $status = 'cancelled';
                        break;
                    }
                    continue;
                }
                $this->runWave($wave);
                foreach ($wave as $step) {
                    $results[$step->id] = ['summary' => implode('', $step->answer)];
                }
            }
        } catch (RunStopped $stop) {
            $status = $stop->status;
            $this->publish('error', ['message' => $stop->getMessage(), 'code' => 'run_stopped', 'retryable' => false]);
            foreach ($this->nodeStates as $nodeId => $state) {
                if (!in_array($state, ['completed', 'failed', 'skipped', 'cancelled'], true)) {
                    $this->publish('node_state', ['node_id' => $nodeId, 'state' => 'cancelled']);
                }
            }
        }
        $this->publish('status', ['state' => $status === 'succeeded' ? 'done' : 'idle', 'detail' => "run $number $status"]);
        $this->publish('execution_complete', [
            'status' => $status,
            'results' => (object) $results,
            'duration_ms' => (int) round((microtime(true) - $started) * 1000),
            'spent' => round($this->spent, 4),
        ]);
        $this->agentStatus($status === 'succeeded' ? 'done' : 'idle', "run $number $status");
        $this->notifyEnd($number, $status);
        $this->log("run $number $status");
    }

    /** Runs the nodes of one wave side by side: they start together and finish in turn. */
    private function runWave(array $wave): void
    {
        foreach ($wave as $step) {
            foreach ($step->dependsOn as $from) {
                $this->publish('edge_active', ['from' => $from, 'to' => $step->id]);
            }
            $this->publish('node_state', ['node_id' => $step->id, 'state' => 'queued']);
        }
        $this->pace();
        foreach ($wave as $step) {
            $this->publish('node_state', ['node_id' => $step->id, 'state' => 'running']);
            $this->publish('status', ['state' => 'working', 'detail' => "running {$step->label}"]);
        }
        $this->pace();
        foreach ($wave as $step) {
            $this->work($step, $step->answer);
        }
    }

    /** One node's work: a tool call, the streamed answer, the cost, then `completed`. */
    private function work(Step $step, array $answer): void
    {
        $startedMs = microtime(true);
        if ($step->tool !== null) {
            $this->publish('tool_call', ['name' => $step->tool['name'], 'input' => $step->tool['input'],
                'call_id' => 'c-' . $step->id]);
            $this->pace();
        }
        $messageId = 'm-' . $step->id . '-' . bin2hex(random_bytes(3));
        foreach ($answer as $i => $piece) {
            $this->publish('output', ['content' => $piece, 'message_id' => $messageId,
                'done' => $i === count($answer) - 1]);
            $this->pace();
        }
        $this->spent += $step->costUsd;
        $this->publishCost();
        $this->publish('node_state', [
            'node_id' => $step->id,
            'state' => 'completed',
            'output' => ['summary' => implode('', $answer)],
            'metrics' => ['duration_ms' => (int) round((microtime(true) - $startedMs) * 1000),
                'tokens' => $step->tokens, 'cost_usd' => $step->costUsd],
        ]);
    }

    /**
     * Waits at the gate for a decision from the inbox: approve passes, reject (or no decision
     * before the gate expires) stops the run, modify redoes the gate's upstream node with the
     * feedback and asks again.
     */
    private function passGate(Step $gate, array $waves): bool
    {
        $upstream = $this->findStep($waves, $gate->dependsOn[0]);
        while (true) {
            foreach ($gate->dependsOn as $from) {
                $this->publish('edge_active', ['from' => $from, 'to' => $gate->id]);
            }
            $expires = time() + $this->options->gateTimeoutS;
            $this->publish('node_state', ['node_id' => $gate->id, 'state' => 'waiting']);
            $this->publish('human_gate_waiting', [
                'node_id' => $gate->id,
                'presentation' => [
                    'title' => 'Publish the daily support report?',
                    'body' => 'The draft of node "' . $upstream->label . '" is ready. Approve to post it, reject to stop the run, or ask for changes.',
                    'options' => ['approve', 'reject', 'modify'],
                ],
                'expires_at' => gmdate('Y-m-d\TH:i:s\Z', $expires),
            ]);
            $this->publish('status', ['state' => 'waiting', 'detail' => 'waiting for a human decision']);
            $this->publish('inject_prompt', ['text' => 'What are the riskiest claims in the draft report?',
                'source' => 'review checklist']);
            $this->agentStatus('waiting', 'human review of ' . $this->options->runId);
            $this->log("gate {$gate->id} waits for a decision (until " . gmdate('H:i:s', $expires) . ' UTC)');

            $this->openGate = ['step' => $gate, 'opened_ms' => (int) (microtime(true) * 1000)];
            $this->gateDecision = null;
            $waitUntil = min(microtime(true) + $this->options->gateTimeoutS, $this->deadline);
            while ($this->gateDecision === null && microtime(true) < $waitUntil) {
                $this->wait((int) min(1000, ($waitUntil - microtime(true)) * 1000) + 1);
            }
            $this->openGate = null;
            $decision = $this->gateDecision ?? ['decision' => 'reject', 'user' => null,
                'feedback' => null];
            $by = $decision['user'];
            $this->log("gate {$gate->id}: {$decision['decision']}" . ($by === null ? ' (no decision in time)' : " by $by"));
            $decidedBy = $by === null ? [] : ['decided_by' => $by];
            switch ($decision['decision']) {
                case 'approve':
                    $this->publish('node_state', ['node_id' => $gate->id, 'state' => 'completed',
                        'output' => ['decision' => 'approve']] + $decidedBy);
                    $this->agentStatus('working', 'run ' . $this->options->runId);
                    return true;
                case 'modify':
                    $feedback = trim((string) ($decision['feedback'] ?? ''));
                    $this->publish('node_state', ['node_id' => $gate->id, 'state' => 'pending'] + $decidedBy);
                    $this->publish('edge_active', ['from' => $gate->id, 'to' => $upstream->id]);
                    $this->publish('node_state', ['node_id' => $upstream->id, 'state' => 'running']);
                    $this->work($upstream, ['Revised draft', $feedback === '' ? '.' : " (\"$feedback\")", ': login failures doubled since release 4.2.']);
                    break;
                default:
                    $this->publish('node_state', ['node_id' => $gate->id, 'state' => 'cancelled',
                        'error' => $by === null ? 'no decision before the gate expired' : 'rejected'] + $decidedBy);
                    return false;
            }
        }
    }

    private function findStep(array $waves, string $id): Step
    {
        foreach (array_merge(...$waves) as $step) {
            if ($step->id === $id) {
                return $step;
            }
        }
        throw new LogicException("no step $id");
    }

    /** The pause between two events, during which the inbox is served. */
    private function pace(): void
    {
        $this->wait($this->options->stepMs);
    }

    /**
     * Waits $ms milliseconds while reading the inbox, so that decisions, prompts and
     * cancellations are handled as they come. Throws RunStopped when the run must end.
     */
    private function wait(int $ms): void
    {
        $until = microtime(true) + $ms / 1000;
        do {
            if ($this->timeLeft() <= 0) {
                throw new RunStopped('cancelled', 'the simulator reached --max-seconds');
            }
            $block = (int) max(1, min(($until - microtime(true)) * 1000, $this->timeLeft() * 1000));
            $batch = $this->redis->xReadGroup($this->options->group, $this->consumer,
                [$this->options->inbox => '>'], 10, $block);
            if ($batch === false) {
                throw new RuntimeException('XREADGROUP failed: ' . $this->redis->getLastError());
            }
            foreach ($batch[$this->options->inbox] ?? [] as $id => $fields) {
                $this->handleInboxEntry($fields);
                // Handled (or not ours): acknowledged in this group; other groups still see it.
                $this->redis->xAck($this->options->inbox, $this->options->group, [$id]);
            }
            if ($this->cancelledBy !== null) {
                $by = $this->cancelledBy;
                $this->cancelledBy = null;
                throw new RunStopped('cancelled', "cancelled by $by");
            }
        } while (microtime(true) < $until);
    }

    /**
     * Acts on one inbox entry of this run's channel. The sender is the entry's `user`
     * (authenticated by the gateway), never a field of the event.
     */
    private function handleInboxEntry(array $fields): void
    {
        if (($fields['channel'] ?? '') !== $this->options->channel()) {
            return;
        }
        $user = (string) ($fields['user'] ?? '');
        $event = json_decode($fields['data'] ?? 'null', true);
        if (!is_array($event) || !is_array($event['data'] ?? null)) {
            return;
        }
        $data = $event['data'];
        $type = is_string($event['type'] ?? null) ? $event['type'] : '';
        if (is_string($data['client_msg_id'] ?? null)) {
            $key = 'id:' . $data['client_msg_id'];  // never an integer key
            if (isset($this->handledMessageIds[$key])) {
                $this->log("ignored a repeated $type from $user");
                return;
            }
            $this->handledMessageIds[$key] = true;
            if (count($this->handledMessageIds) > 1000) {
                array_shift($this->handledMessageIds);
            }
        }
        switch ($type) {
            case 'human_decision':
                $gate = $this->openGate;
                $decision = $data['decision'] ?? '';
                // A decision for another node, a closed gate, or sent before the gate opened
                // (a stale click) is ignored.
                if ($gate === null || ($data['node_id'] ?? '') !== $gate['step']->id
                    || (int) ($fields['received_at'] ?? 0) < $gate['opened_ms']
                    || !in_array($decision, ['approve', 'reject', 'modify'], true)) {
                    $this->log("ignored a human_decision from $user (no such gate waiting)");
                    return;
                }
                $this->deciders[$user] = true;
                $this->gateDecision ??= ['decision' => $decision, 'user' => $user,
                    'feedback' => is_string($data['feedback'] ?? null) ? $data['feedback'] : null];
                return;
            case 'prompt':
                $text = is_string($data['text'] ?? null) ? $data['text'] : '';
                $this->promptsAnswered++;
                $messageId = 'p-' . $this->promptsAnswered;
                $this->publish('status', ['state' => 'thinking', 'detail' => "answering $user"]);
                $this->publish('output', ['content' => "@$user asked: " . mb_substr($text, 0, 200) . ' — ',
                    'message_id' => $messageId]);
                $this->publish('output', ['content' => 'noted; the simulator only pretends to think.',
                    'message_id' => $messageId, 'done' => true]);
                return;
            case 'cancel_execution':
                $this->deciders[$user] = true;
                $this->cancelledBy = $user;
                return;
        }
    }

    private function publishCost(): void
    {
        $this->publish('cost_update', ['spent' => round($this->spent, 4), 'budget' => self::BUDGET_USD,
            'remaining' => round(self::BUDGET_USD - $this->spent, 4), 'currency' => 'USD']);
    }

    /** Publishes one catalogue event on the run's channel, with history. */
    private function publish(string $type, array $data): int
    {
        $offset = $this->fcall($this->options->channel(), $type, $data);
        if ($type === 'node_state') {
            $this->nodeStates[$data['node_id']] = $data['state'];
        }
        return $offset;
    }

    private function fcall(string $channel, string $type, array $data): int
    {
        $payload = json_encode(['type' => $type, 'data' => $data, 'timestamp' => round(microtime(true), 3)],
            JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_THROW_ON_ERROR);
        $offset = $this->redis->rawCommand('FCALL', 'fanout_publish', 1, $channel, $payload);
        if (!is_int($offset)) {
            throw new RuntimeException("FCALL fanout_publish on $channel failed: " . ($this->redis->getLastError()
                ?? 'no answer') . ' (is a fanout node running on this Redis? It loads the function library)');
        }
        return $offset;
    }

    /** Tells whoever decided in this run (and --notify) how it ended, on user:<id>. */
    private function notifyEnd(int $number, string $status): void
    {
        $users = $this->deciders;
        if ($this->options->notify !== null) {
            $users[$this->options->notify] = true;
        }
        foreach (array_keys($users) as $user) {
            $this->fcall('user:' . $user, 'notification', [
                'id' => 'ntf-' . $this->options->runId . '-' . $number . '-' . bin2hex(random_bytes(2)),
                'title' => "Run {$this->options->runId} $status",
                'message' => sprintf('Run %d of %s %s; spent $%.3f of $%.2f.', $number,
                    $this->options->channel(), $status, $this->spent, self::BUDGET_USD),
                'level' => $status === 'succeeded' ? 'success' : 'warning',
            ]);
        }
    }

    /**
     * Shows the simulated agent in the presence of --presence-channel with its status, over
     * the gateway's HTTP API (optional: without --api-url nothing is done; failures only warn).
     */
    private function agentStatus(string $state, string $detail): void
    {
        if ($this->options->apiUrl === null) {
            return;
        }
        $body = json_encode(['channel' => $this->options->presenceChannel, 'user' => 'sim-agent',
            'status' => ['state' => $state, 'detail' => $detail],
            'info' => ['name' => 'Simulator agent', 'kind' => 'agent'], 'ttl_s' => 120]);
        $context = stream_context_create(['http' => [
            'method' => 'POST',
            'header' => "Content-Type: application/json\r\nAuthorization: Bearer " . ($this->options->apiKey ?? ''),
            'content' => $body,
            'timeout' => 2,
            'ignore_errors' => true,
        ]]);
        $answer = @file_get_contents($this->options->apiUrl . '/api/status', false, $context);
        $statusLine = $http_response_header[0] ?? 'no answer';
        if ($answer === false || !str_contains($statusLine, ' 200')) {
            fwrite(STDERR, "simulate: POST /api/status: $statusLine " . ($answer ?: '') . "\n");
        }
    }

    private function timeLeft(): float
    {
        return $this->deadline - microtime(true);
    }

    private function log(string $line): void
    {
        fwrite(STDOUT, gmdate('H:i:s') . " $line\n");
    }
}

try {
    $options = Options::parse();
} catch (InvalidArgumentException $e) {
    fwrite(STDERR, 'simulate: ' . $e->getMessage() . "\n\n" . USAGE . "\n");
    exit(2);
}

try {
    $redis = new Redis();
    $redis->connect($options->redisHost, $options->redisPort, 3.0);
    if ($options->redisPassword !== null) {
        $redis->auth($options->redisPassword);
    }
    $redis->select($options->redisDb);
    // XREADGROUP BLOCK must not trip the client's read timeout.
    $redis->setOption(Redis::OPT_READ_TIMEOUT, -1);
    $simulator = new Simulator($redis, $options);
    $simulator->waitForLibrary();
    $simulator->prepareInbox();
    $simulator->playAll();
} catch (RedisException | RuntimeException $e) {
    fwrite(STDERR, 'simulate: ' . $e->getMessage() . "\n");
    exit(1);
}
exit(0);
