//! The demo's own backend (`--demo` with `demo_play`, the default on the embedded broker):
//! the gateway plays sample runs on `dag:demo` for the dashboard itself, the way
//! `examples/simulator` does through Redis, so that `fanout serve --demo` alone shows a
//! working product: the graph filling in, the agent console streaming, a human gate that
//! waits for a click, and a notification to whoever decided.
//!
//! Everything it says goes through [`Node::publish`] with history, like any backend's
//! publish. What the page answers (gate decisions, prompts, cancels) comes back as client
//! publishes on the run's channel: the player's events carry `"reply": "publish"` in their
//! `data` to ask for that, and the demo token grants publishing on `dag:*`. Client publishes
//! carry the user from the token, so the player knows who decided. It reads them from the
//! channel's history, where it also sees whether anyone else plays there: a message that it
//! did not publish and no client published comes from another backend (the simulator, or
//! the player of another node), and the player stops its run and steps aside until the
//! channel has been quiet for a while (longer while the other backend's run is open).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::time::{Instant, sleep};

use crate::broker::{BrokerError, HistoryQuery, Lease, PresenceMember};
use crate::channel::Channel;
use crate::clock::unix_now_ms;
use crate::node::Node;

/// The channel the dashboard watches by default.
pub const RUN_CHANNEL: &str = "dag:demo";
/// Where the dashboard shows who is here (when `room` keeps presence).
const PRESENCE_CHANNEL: &str = "room:demo";
const AGENT: &str = "demo-agent";
/// Pause between two events of a run.
const STEP: Duration = Duration::from_millis(500);
/// How often the channel is read for answers and other publishers while waiting.
const POLL: Duration = Duration::from_millis(200);
/// How long the gate waits for a click before the agent decides alone (approve).
const GATE_WAIT: Duration = Duration::from_secs(60);
const BETWEEN_RUNS: Duration = Duration::from_secs(5);
/// Quiet needed after another backend's last message before playing again (plus up to as
/// much at random, so that the players of several nodes do not all start at once) ...
const QUIET: Duration = Duration::from_secs(30);
/// ... or after its last message while its run is still open (it may wait at its gate).
const QUIET_OPEN_RUN: Duration = Duration::from_secs(15 * 60);
const BUDGET_USD: f64 = 0.5;
/// Messages read from history at a time.
const READ_LIMIT: usize = 100;

/// Plays runs until the node drains. Spawned by the server when `demo` and `demo_play` are on.
pub async fn run(node: Arc<Node>) {
    let channel = Channel::parse(RUN_CHANNEL).expect("a valid channel name");
    if node.config.history(&channel).is_none() {
        tracing::warn!(
            "demo_play: {RUN_CHANNEL} keeps no history (the dag namespace has history_size = 0); the demo player needs it and does not play"
        );
        return;
    }
    tracing::info!(
        channel = RUN_CHANNEL,
        "demo player on (demo_play): it plays sample runs while nothing else publishes there"
    );
    let mut player = Player::new(node, channel);
    let mut number = 0u64;
    loop {
        let outcome = async {
            player.catch_up().await?;
            player.until_quiet().await?;
            number += 1;
            player.play(number).await?;
            player.wait(BETWEEN_RUNS).await
        }
        .await;
        match outcome {
            Ok(()) => {}
            Err(Stop::Draining) => return,
            Err(Stop::Yield) => {
                tracing::info!(
                    channel = RUN_CHANNEL,
                    "another backend publishes here: the demo player steps aside"
                );
            }
            Err(Stop::Cancelled(_)) => {}
            Err(Stop::Broker(e)) => {
                tracing::warn!(error = %e, "demo player: the broker failed; trying again in 5 s");
                sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

/// Why a run (or a wait) ended early.
enum Stop {
    /// Another backend publishes on the channel.
    Yield,
    /// A user cancelled the run from the page.
    Cancelled(String),
    Broker(BrokerError),
    Draining,
}

impl From<BrokerError> for Stop {
    fn from(e: BrokerError) -> Stop {
        Stop::Broker(e)
    }
}

/// One node of the sample DAG and the work it pretends to do.
struct Step {
    id: &'static str,
    label: &'static str,
    depends_on: &'static [&'static str],
    tool: Option<(&'static str, Value)>,
    answer: &'static [&'static str],
    tokens: u64,
    cost_usd: f64,
}

/// The sample run, in waves of nodes that run side by side: fetch, then classify and embed,
/// then draft; the human review gate; then publish (the simulator's run).
fn waves() -> Vec<Vec<Step>> {
    vec![
        vec![Step {
            id: "fetch",
            label: "Fetch tickets",
            depends_on: &[],
            tool: Some((
                "http_get",
                json!({"url": "https://tickets.example.com/api/open?since=24h"}),
            )),
            answer: &["Fetched 128 open tickets ", "from the last 24 hours."],
            tokens: 420,
            cost_usd: 0.004,
        }],
        vec![
            Step {
                id: "classify",
                label: "Classify",
                depends_on: &["fetch"],
                tool: Some(("classify", json!({"labels": ["bug", "billing", "feature"]}))),
                answer: &["Classified: 71 bugs, ", "33 billing, 24 feature requests."],
                tokens: 2600,
                cost_usd: 0.031,
            },
            Step {
                id: "embed",
                label: "Embed & cluster",
                depends_on: &["fetch"],
                tool: Some(("vector_search", json!({"index": "tickets", "k": 8}))),
                answer: &[
                    "Found 6 clusters; ",
                    "the largest is \"login fails after update\".",
                ],
                tokens: 1900,
                cost_usd: 0.012,
            },
        ],
        vec![Step {
            id: "draft",
            label: "Draft report",
            depends_on: &["classify", "embed"],
            tool: Some(("write_file", json!({"path": "reports/daily.md"}))),
            answer: &[
                "Draft: login failures doubled since ",
                "release 4.2; billing is stable; ",
                "three feature asks repeat.",
            ],
            tokens: 5400,
            cost_usd: 0.064,
        }],
    ]
}

/// The human gate, after the draft.
const GATE: &str = "review";
const GATE_LABEL: &str = "Human review";

/// The node after the gate.
fn last_step() -> Step {
    Step {
        id: "publish",
        label: "Publish report",
        depends_on: &[GATE],
        tool: Some(("post_message", json!({"channel": "#support-daily"}))),
        answer: &["Report posted to #support-daily."],
        tokens: 300,
        cost_usd: 0.003,
    }
}

/// A decision taken at the gate.
struct Decision {
    decision: String,
    user: Option<String>,
    feedback: Option<String>,
}

struct Player {
    node: Arc<Node>,
    channel: Channel,
    /// The channel's epoch and the last offset read.
    epoch: Option<Arc<str>>,
    cursor: u64,
    /// Offsets this player published and has not read back yet.
    own: BTreeSet<u64>,
    /// When another backend last published here, and whether its run is still open.
    foreign_at: Option<Instant>,
    foreign_open: bool,
    /// A run of this player is under way (another backend's message then stops it).
    playing: bool,
    /// The gate waiting for a decision: the offset of its `human_gate_waiting`.
    gate_opened_at: Option<u64>,
    decision: Option<Decision>,
    cancelled_by: Option<String>,
    /// Prompts from the page, to answer: (user, text).
    prompts: Vec<(String, String)>,
    answered: u64,
    deciders: BTreeSet<String>,
    spent: f64,
}

impl Player {
    fn new(node: Arc<Node>, channel: Channel) -> Player {
        Player {
            node,
            channel,
            epoch: None,
            cursor: 0,
            own: BTreeSet::new(),
            foreign_at: None,
            foreign_open: false,
            playing: false,
            gate_opened_at: None,
            decision: None,
            cancelled_by: None,
            prompts: Vec::new(),
            answered: 0,
            deciders: BTreeSet::new(),
            spent: 0.0,
        }
    }

    /// On the first call: starts reading after the channel's latest message, which counts as
    /// another backend's when there is one (it was there before this player).
    async fn catch_up(&mut self) -> Result<(), Stop> {
        if self.epoch.is_some() {
            return Ok(());
        }
        let latest = self
            .node
            .broker()
            .history(&self.channel, HistoryQuery::Latest { limit: 1 })
            .await?;
        self.epoch = Some(latest.epoch.clone());
        self.cursor = latest.offset;
        if let Some(last) = latest.messages.last()
            && last.publisher.is_none()
        {
            self.foreign_at = Some(Instant::now());
            self.foreign_open = event_type(&last.payload).as_deref() != Some("execution_complete");
        }
        Ok(())
    }

    /// Waits (reading the channel) until no other backend has published for long enough.
    async fn until_quiet(&mut self) -> Result<(), Stop> {
        loop {
            self.read().await?;
            let Some(at) = self.foreign_at else {
                return Ok(());
            };
            let quiet = if self.foreign_open {
                QUIET_OPEN_RUN
            } else {
                QUIET + QUIET.mul_f64(rand::random::<f64>())
            };
            if at.elapsed() >= quiet {
                self.foreign_at = None;
                return Ok(());
            }
            self.prompts.clear(); // the other backend answers them
            self.stop_if_draining()?;
            sleep(Duration::from_secs(1)).await;
        }
    }

    /// Reads what was published on the channel since the last read: the page's answers
    /// (client publishes, with their user), this player's own messages, and anything else,
    /// which is another backend's.
    async fn read(&mut self) -> Result<(), Stop> {
        loop {
            let history = self
                .node
                .broker()
                .history(
                    &self.channel,
                    HistoryQuery::After {
                        offset: self.cursor,
                        limit: READ_LIMIT,
                    },
                )
                .await?;
            if self.epoch.as_deref() != Some(&*history.epoch) {
                // The history was lost (it expired, or Redis lost it): go on from its start.
                self.epoch = Some(history.epoch.clone());
                self.cursor = history.offset;
                self.own.clear();
                return Ok(());
            }
            let full = history.messages.len() >= READ_LIMIT;
            for message in &history.messages {
                self.cursor = self.cursor.max(message.offset);
                if let Some(user) = &message.publisher {
                    self.answer_from(user, message.offset, &message.payload);
                } else if !self.own.remove(&message.offset) {
                    self.foreign_at = Some(Instant::now());
                    self.foreign_open =
                        event_type(&message.payload).as_deref() != Some("execution_complete");
                }
            }
            self.own.retain(|o| *o > self.cursor);
            if self.playing && self.foreign_at.is_some() {
                return Err(Stop::Yield);
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// A message a client published on the channel: a decision, a prompt or a cancel.
    fn answer_from(&mut self, user: &str, offset: u64, payload: &[u8]) {
        let Ok(event) = serde_json::from_slice::<Value>(payload) else {
            return;
        };
        let data = &event["data"];
        match event["type"].as_str() {
            Some("human_decision") => {
                let decision = data["decision"].as_str().unwrap_or_default();
                // Only for the gate that waits, clicked after it opened.
                let open = self.gate_opened_at.is_some_and(|at| offset > at);
                if !open
                    || data["node_id"].as_str() != Some(GATE)
                    || !["approve", "reject", "modify"].contains(&decision)
                    || self.decision.is_some()
                {
                    return;
                }
                self.deciders.insert(user.to_owned());
                self.decision = Some(Decision {
                    decision: decision.to_owned(),
                    user: Some(user.to_owned()),
                    feedback: data["feedback"].as_str().map(str::to_owned),
                });
            }
            Some("prompt") => {
                if let Some(text) = data["text"].as_str() {
                    let text: String = text.chars().take(200).collect();
                    self.prompts.push((user.to_owned(), text));
                }
            }
            Some("cancel_execution") if self.playing => {
                self.deciders.insert(user.to_owned());
                self.cancelled_by.get_or_insert_with(|| user.to_owned());
            }
            _ => {}
        }
    }

    fn stop_if_draining(&self) -> Result<(), Stop> {
        if self.node.is_draining() {
            Err(Stop::Draining)
        } else {
            Ok(())
        }
    }

    /// Waits `duration`, reading the channel and answering prompts meanwhile; a cancel from
    /// the page ends the run.
    async fn wait(&mut self, duration: Duration) -> Result<(), Stop> {
        let until = Instant::now() + duration;
        loop {
            self.stop_if_draining()?;
            self.read().await?;
            self.answer_prompts().await?;
            if let Some(user) = self.cancelled_by.take() {
                return Err(Stop::Cancelled(user));
            }
            let now = Instant::now();
            if now >= until || (self.gate_opened_at.is_some() && self.decision.is_some()) {
                return Ok(());
            }
            sleep(POLL.min(until - now)).await;
        }
    }

    async fn answer_prompts(&mut self) -> Result<(), Stop> {
        for (user, text) in std::mem::take(&mut self.prompts) {
            self.answered += 1;
            let message_id = format!("p-{}", self.answered);
            self.publish(
                "status",
                json!({"state": "thinking", "detail": format!("answering {user}")}),
            )
            .await?;
            self.publish(
                "output",
                json!({"content": format!("@{user} asked: {text} — "), "message_id": message_id}),
            )
            .await?;
            self.publish(
                "output",
                json!({"content": "noted; the demo agent only pretends to think.", "message_id": message_id, "done": true}),
            )
            .await?;
        }
        Ok(())
    }

    /// Publishes a catalogue event on the run's channel, with history.
    async fn publish(&mut self, kind: &str, data: Value) -> Result<(), Stop> {
        self.stop_if_draining()?;
        let offset = self
            .node
            .publish(&self.channel, event(kind, data), "embedded")
            .await?;
        if let Some(offset) = offset {
            self.own.insert(offset);
        }
        Ok(())
    }

    async fn publish_cost(&mut self) -> Result<(), Stop> {
        let spent = round4(self.spent);
        self.publish(
            "cost_update",
            json!({"spent": spent, "budget": BUDGET_USD, "remaining": round4(BUDGET_USD - spent), "currency": "USD"}),
        )
        .await
    }

    /// Plays one run; a cancel from the page ends it `cancelled`.
    async fn play(&mut self, number: u64) -> Result<(), Stop> {
        let started = Instant::now();
        self.playing = true;
        self.spent = 0.0;
        self.deciders.clear();
        self.cancelled_by = None;
        let mut states: Vec<(&'static str, &'static str)> = Vec::new();
        let result = self.play_steps(&mut states).await;
        let status = match result {
            Ok(true) => "succeeded",
            Ok(false) => "cancelled",
            Err(Stop::Cancelled(user)) => {
                self.gate_opened_at = None;
                self.publish(
                    "error",
                    json!({"message": format!("cancelled by {user}"), "code": "run_stopped", "retryable": false}),
                )
                .await?;
                let open: Vec<&str> = unfinished(&states);
                for node_id in open {
                    self.publish(
                        "node_state",
                        json!({"node_id": node_id, "state": "cancelled"}),
                    )
                    .await?;
                }
                "cancelled"
            }
            Err(other) => {
                self.playing = false;
                self.gate_opened_at = None;
                return Err(other);
            }
        };
        self.publish(
            "status",
            json!({"state": if status == "succeeded" { "done" } else { "idle" }, "detail": format!("run {number} {status}")}),
        )
        .await?;
        self.publish(
            "execution_complete",
            json!({
                "status": status,
                "results": {},
                "duration_ms": started.elapsed().as_millis() as u64,
                "spent": round4(self.spent),
            }),
        )
        .await?;
        self.playing = false;
        self.agent_status(
            if status == "succeeded" {
                "done"
            } else {
                "idle"
            },
            &format!("run {number} {status}"),
        )
        .await;
        for user in std::mem::take(&mut self.deciders) {
            let Ok(channel) = Channel::user(&user) else {
                continue;
            };
            let notification = event(
                "notification",
                json!({
                    "id": format!("ntf-demo-{number}-{:04x}", rand::random::<u16>()),
                    "title": format!("Run demo {status}"),
                    "message": format!("Run {number} of {RUN_CHANNEL} {status}; spent ${:.3} of ${BUDGET_USD:.2}.", self.spent),
                    "level": if status == "succeeded" { "success" } else { "warning" },
                }),
            );
            self.node
                .publish(&channel, notification, "embedded")
                .await?;
        }
        self.cancelled_by = None;
        tracing::debug!(number, status, "demo player: run ended");
        Ok(())
    }

    /// The run's steps; `Ok(false)` when the gate rejected it.
    async fn play_steps(
        &mut self,
        states: &mut Vec<(&'static str, &'static str)>,
    ) -> Result<bool, Stop> {
        let waves = waves();
        let last = last_step();
        let all = waves
            .iter()
            .flatten()
            .map(|s| (s.id, s.label, s.depends_on));
        let gate = (GATE, GATE_LABEL, &["draft"][..]);
        for (id, label, depends_on) in all.chain([gate, (last.id, last.label, last.depends_on)]) {
            // `reply`: the page answers this run by publishing on its channel.
            self.publish(
                "node_state",
                json!({"node_id": id, "state": "pending", "label": label, "depends_on": depends_on, "reply": "publish"}),
            )
            .await?;
            states.push((id, "pending"));
        }
        self.publish_cost().await?;
        self.agent_status("working", "run demo").await;
        for wave in &waves {
            self.run_wave(wave, states).await?;
        }
        let draft = &waves[2][0];
        loop {
            let Decision {
                decision,
                user,
                feedback,
            } = self.pass_gate(states).await?;
            match decision.as_str() {
                "modify" => {
                    self.publish(
                        "node_state",
                        json!({"node_id": GATE, "state": "pending", "decided_by": user}),
                    )
                    .await?;
                    set(states, GATE, "pending");
                    self.publish("edge_active", json!({"from": GATE, "to": draft.id}))
                        .await?;
                    self.publish(
                        "node_state",
                        json!({"node_id": draft.id, "state": "running"}),
                    )
                    .await?;
                    let feedback = feedback.unwrap_or_default();
                    let feedback = feedback.trim();
                    let revised = if feedback.is_empty() {
                        "Revised draft.".to_owned()
                    } else {
                        format!(
                            "Revised draft (\"{}\")",
                            feedback.chars().take(200).collect::<String>()
                        )
                    };
                    self.work(
                        draft,
                        &[
                            revised.as_str(),
                            ": login failures doubled since release 4.2.",
                        ],
                    )
                    .await?;
                }
                "approve" => {
                    let mut data = json!({"node_id": GATE, "state": "completed", "output": {"decision": "approve"}});
                    match user {
                        Some(user) => data["decided_by"] = json!(user),
                        None => {
                            self.console(&format!(
                                "No decision within {} s: the agent approves by itself.",
                                GATE_WAIT.as_secs()
                            ))
                            .await?;
                        }
                    }
                    self.publish("node_state", data).await?;
                    set(states, GATE, "completed");
                    break;
                }
                _ => {
                    self.publish(
                        "node_state",
                        json!({"node_id": GATE, "state": "cancelled", "error": "rejected", "decided_by": user}),
                    )
                    .await?;
                    set(states, GATE, "cancelled");
                    self.publish(
                        "node_state",
                        json!({"node_id": last.id, "state": "skipped"}),
                    )
                    .await?;
                    set(states, last.id, "skipped");
                    return Ok(false);
                }
            }
        }
        self.agent_status("working", "run demo").await;
        self.run_wave(std::slice::from_ref(&last), states).await?;
        Ok(true)
    }

    /// Opens the gate and waits for a decision (the agent approves alone after GATE_WAIT).
    async fn pass_gate(
        &mut self,
        states: &mut [(&'static str, &'static str)],
    ) -> Result<Decision, Stop> {
        self.publish("edge_active", json!({"from": "draft", "to": GATE}))
            .await?;
        self.publish("node_state", json!({"node_id": GATE, "state": "waiting"}))
            .await?;
        set(states, GATE, "waiting");
        let expires_at = rfc3339_utc(unix_now_ms() / 1000 + GATE_WAIT.as_secs() as i64);
        let payload = event(
            "human_gate_waiting",
            json!({
                "node_id": GATE,
                "presentation": {
                    "title": "Publish the daily support report?",
                    "body": "The draft of node \"Draft report\" is ready. Approve to post it, reject to stop the run, or ask for changes.",
                    "options": ["approve", "reject", "modify"],
                },
                "expires_at": expires_at,
                "reply": "publish",
            }),
        );
        self.stop_if_draining()?;
        let offset = self
            .node
            .publish(&self.channel, payload, "embedded")
            .await?;
        if let Some(offset) = offset {
            self.own.insert(offset);
        }
        // Decisions count from the gate's own message on (offsets after it).
        self.gate_opened_at = Some(offset.unwrap_or(self.cursor));
        self.decision = None;
        self.publish(
            "status",
            json!({"state": "waiting", "detail": "waiting for a human decision"}),
        )
        .await?;
        self.publish(
            "inject_prompt",
            json!({"text": "What are the riskiest claims in the draft report?", "source": "review checklist"}),
        )
        .await?;
        self.agent_status("waiting", "human review of demo").await;
        let waited = self.wait(GATE_WAIT).await;
        self.gate_opened_at = None;
        waited?;
        Ok(self.decision.take().unwrap_or(Decision {
            decision: "approve".to_owned(),
            user: None,
            feedback: None,
        }))
    }

    /// Runs the nodes of one wave side by side: they start together and finish in turn.
    async fn run_wave(
        &mut self,
        wave: &[Step],
        states: &mut [(&'static str, &'static str)],
    ) -> Result<(), Stop> {
        for step in wave {
            for from in step.depends_on {
                self.publish("edge_active", json!({"from": from, "to": step.id}))
                    .await?;
            }
            self.publish("node_state", json!({"node_id": step.id, "state": "queued"}))
                .await?;
            set(states, step.id, "queued");
        }
        self.wait(STEP).await?;
        for step in wave {
            self.publish(
                "node_state",
                json!({"node_id": step.id, "state": "running"}),
            )
            .await?;
            set(states, step.id, "running");
            self.publish(
                "status",
                json!({"state": "working", "detail": format!("running {}", step.label)}),
            )
            .await?;
        }
        self.wait(STEP).await?;
        for step in wave {
            self.work(step, step.answer).await?;
            set(states, step.id, "completed");
        }
        Ok(())
    }

    /// One node's work: a tool call, the streamed answer, the cost, then `completed`.
    async fn work(&mut self, step: &Step, answer: &[&str]) -> Result<(), Stop> {
        let started = Instant::now();
        if let Some((name, input)) = &step.tool {
            self.publish(
                "tool_call",
                json!({"name": name, "input": input, "call_id": format!("c-{}", step.id)}),
            )
            .await?;
            self.wait(STEP).await?;
        }
        let message_id = format!("m-{}-{:06x}", step.id, rand::random::<u32>() & 0xff_ffff);
        for (i, piece) in answer.iter().enumerate() {
            self.publish(
                "output",
                json!({"content": piece, "message_id": message_id, "done": i + 1 == answer.len()}),
            )
            .await?;
            self.wait(STEP).await?;
        }
        self.spent += step.cost_usd;
        self.publish_cost().await?;
        self.publish(
            "node_state",
            json!({
                "node_id": step.id,
                "state": "completed",
                "output": {"summary": answer.concat()},
                "metrics": {"duration_ms": started.elapsed().as_millis() as u64, "tokens": step.tokens, "cost_usd": step.cost_usd},
            }),
        )
        .await
    }

    /// A line of the agent console.
    async fn console(&mut self, text: &str) -> Result<(), Stop> {
        let message_id = format!("n-{:06x}", rand::random::<u32>() & 0xff_ffff);
        self.publish(
            "output",
            json!({"content": text, "message_id": message_id, "done": true}),
        )
        .await
    }

    /// Shows the agent in `room:demo`'s presence with this status, when `room` keeps
    /// presence (as with examples/simulator/demo.toml); nothing otherwise.
    async fn agent_status(&self, state: &str, detail: &str) {
        if !self
            .node
            .config
            .namespace("room")
            .is_some_and(|n| n.presence)
        {
            return;
        }
        let Ok(channel) = Channel::parse(PRESENCE_CHANNEL) else {
            return;
        };
        let member = PresenceMember {
            user: AGENT.to_owned(),
            conn_id: format!("api:{AGENT}"),
            node: self.node.config.node_id.clone(),
            info: Some(json!({"name": "Demo agent", "kind": "agent"})),
            status: None,
        };
        let lease = Lease {
            duration: Duration::from_secs(120),
            renewed: false,
        };
        let status = json!({"state": state, "detail": detail});
        let presence = &self.node.presence;
        let shown = async {
            presence.join(&channel, &member, lease).await?;
            presence
                .set_status(&channel, &member.conn_id, &status)
                .await
        };
        if let Err(e) = shown.await {
            tracing::debug!(error = %e, "demo player: could not show the agent in presence");
        }
    }
}

/// A catalogue event: `{"type":…,"data":…,"timestamp":<Unix seconds>}`.
fn event(kind: &str, data: Value) -> Bytes {
    let timestamp = (unix_now_ms() as f64) / 1000.0;
    Bytes::from(json!({"type": kind, "data": data, "timestamp": timestamp}).to_string())
}

/// The `type` of a catalogue event, if the payload is one.
fn event_type(payload: &[u8]) -> Option<String> {
    let event: Value = serde_json::from_slice(payload).ok()?;
    event["type"].as_str().map(str::to_owned)
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

fn set(states: &mut [(&'static str, &'static str)], id: &str, state: &'static str) {
    if let Some(entry) = states.iter_mut().find(|(node, _)| *node == id) {
        entry.1 = state;
    }
}

fn unfinished<'a>(states: &[(&'a str, &'static str)]) -> Vec<&'a str> {
    states
        .iter()
        .filter(|(_, state)| !["completed", "failed", "skipped", "cancelled"].contains(state))
        .map(|(id, _)| *id)
        .collect()
}

/// Unix seconds as RFC 3339 UTC (`2026-01-02T03:04:05Z`), without a date library.
fn rfc3339_utc(unix_s: i64) -> String {
    let days = unix_s.div_euclid(86_400);
    let secs = unix_s.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates_from_unix_seconds() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_764_000_000), "2025-11-24T16:00:00Z");
        assert_eq!(rfc3339_utc(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn the_sample_run_is_a_dag_in_order() {
        let waves = waves();
        let mut seen: Vec<&str> = Vec::new();
        let last = last_step();
        for step in waves.iter().flatten().chain([&last]) {
            for dep in step.depends_on {
                assert!(
                    seen.contains(dep) || *dep == GATE,
                    "{} before {dep}",
                    step.id
                );
            }
            seen.push(step.id);
        }
    }
}
