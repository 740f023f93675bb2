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
//!
//! This file is the player (reading the channel, waiting, stepping aside); `script` is the
//! run it plays.

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

mod script;

use script::{Decision, GATE};

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
                json!({"content": format!("@{user} asked: {text} \u{2014} "), "message_id": message_id}),
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
