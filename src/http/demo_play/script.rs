//! The sample run the demo player plays (the simulator's): the DAG, its steps, the human
//! gate and what each decision does, the end of a run and its notifications.

use serde_json::{Value, json};
use tokio::time::Instant;

use super::{BUDGET_USD, GATE_WAIT, Player, RUN_CHANNEL, STEP, Stop, event, round4};
use crate::channel::Channel;
use crate::clock::unix_now_ms;

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
pub(super) const GATE: &str = "review";
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
pub(super) struct Decision {
    pub(super) decision: String,
    pub(super) user: Option<String>,
    pub(super) feedback: Option<String>,
}

impl Player {
    async fn publish_cost(&mut self) -> Result<(), Stop> {
        let spent = round4(self.spent);
        self.publish(
            "cost_update",
            json!({"spent": spent, "budget": BUDGET_USD, "remaining": round4(BUDGET_USD - spent), "currency": "USD"}),
        )
        .await
    }

    /// Plays one run; a cancel from the page ends it `cancelled`.
    pub(super) async fn play(&mut self, number: u64) -> Result<(), Stop> {
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
