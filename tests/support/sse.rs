//! An SSE client written from the specification (line parsing, `event`/`id`/`data`, comments),
//! reading a real `/sse` stream with reqwest, and POSTing frames to `/sse/frames`.

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::Value;

use super::*;

/// One event of the stream.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: Value,
}

/// An open `/sse` stream.
pub struct SseClient {
    response: reqwest::Response,
    base: String,
    token: String,
    buffer: String,
    events: VecDeque<SseEvent>,
    /// Heartbeat comments seen so far.
    pub comments: usize,
    /// The `retry:` the server asked for, in ms.
    pub retry_ms: Option<u64>,
    /// The last `id:` seen (what a browser would send back as `Last-Event-ID`).
    pub last_id: Option<String>,
    /// From the `connection_ack`.
    pub conn_id: String,
    pub ack: Value,
}

impl SseClient {
    /// Opens `GET <base>/sse?<query>` as a browser does: the token exchanged for a ticket
    /// (`POST /sse/ticket` with the token in a header), the ticket in the URL; reads up to
    /// `connection_ack`.
    pub async fn open(
        base: &str,
        token: &str,
        query: &str,
        last_event_id: Option<&str>,
    ) -> Result<SseClient, Refused> {
        let ticket = sse_ticket(base, token).await?;
        SseClient::open_url(
            base,
            token,
            &format!("ticket={ticket}&{query}"),
            last_event_id,
        )
        .await
    }

    /// Opens the stream the way older clients do, with the token itself in the URL.
    pub async fn open_with_query_token(
        base: &str,
        token: &str,
        query: &str,
        last_event_id: Option<&str>,
    ) -> Result<SseClient, Refused> {
        SseClient::open_url(
            base,
            token,
            &format!("token={token}&{query}"),
            last_event_id,
        )
        .await
    }

    /// Opens `GET <base>/sse?<query>` (with its credential in `query`); `token` is what
    /// the client POSTs frames with.
    pub async fn open_url(
        base: &str,
        token: &str,
        query: &str,
        last_event_id: Option<&str>,
    ) -> Result<SseClient, Refused> {
        let url = format!("{base}/sse?{query}");
        let mut request = reqwest::Client::new().get(url);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("GET /sse");
        let status = response.status().as_u16();
        if status != 200 {
            let body = response.text().await.unwrap_or_default();
            return Err(Refused { status, body });
        }
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream; charset=utf-8"
        );
        assert_eq!(response.headers()["cache-control"], "no-cache");
        assert_eq!(response.headers()["x-accel-buffering"], "no");
        let mut client = SseClient {
            response,
            base: base.to_owned(),
            token: token.to_owned(),
            buffer: String::new(),
            events: VecDeque::new(),
            comments: 0,
            retry_ms: None,
            last_id: None,
            conn_id: String::new(),
            ack: Value::Null,
        };
        let ack = client.next().await.expect("connection_ack");
        assert_eq!(ack.event, "connection_ack", "{ack:?}");
        client.conn_id = ack.data["conn_id"].as_str().unwrap().to_owned();
        client.ack = ack.data;
        Ok(client)
    }

    /// The next event, or `None` if the stream ended; panics after [`WAIT`].
    pub async fn next(&mut self) -> Option<SseEvent> {
        self.next_within(WAIT)
            .await
            .expect("timed out waiting for an SSE event")
    }

    /// The next event within `within`: `Err(())` on time-out, `Ok(None)` when the stream ended.
    pub async fn next_within(&mut self, within: Duration) -> Result<Option<SseEvent>, ()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(Some(event));
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .map_err(|_| ())?;
            match chunk {
                Ok(Some(bytes)) => {
                    self.buffer
                        .push_str(std::str::from_utf8(&bytes).expect("UTF-8"));
                    self.parse();
                }
                _ => return Ok(None),
            }
        }
    }

    /// The data of the next event that is not a heartbeat.
    pub async fn recv(&mut self) -> Value {
        self.next().await.expect("stream ended").data
    }

    /// Parses complete events (blocks ending with a blank line) out of the buffer.
    fn parse(&mut self) {
        while let Some(end) = self.buffer.find("\n\n") {
            let block: String = self.buffer.drain(..end + 2).collect();
            let (mut event, mut id, mut data) = (None, None, Vec::new());
            for line in block.lines().filter(|l| !l.is_empty()) {
                if line.starts_with(':') {
                    self.comments += 1;
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => event = Some(value.to_owned()),
                    "id" => id = Some(value.to_owned()),
                    "data" => data.push(value.to_owned()),
                    "retry" => self.retry_ms = value.parse().ok(),
                    other => panic!("unexpected SSE field {other:?} in {block:?}"),
                }
            }
            if data.is_empty() {
                continue;
            }
            if id.is_some() {
                self.last_id = id.clone();
            }
            let data: Value = serde_json::from_str(&data.join("\n")).expect("data is JSON");
            self.events.push_back(SseEvent {
                event: event.unwrap_or_else(|| "message".into()),
                id,
                data,
            });
        }
    }

    /// POSTs frames (one per line) for this session; the HTTP status and JSON answer.
    pub async fn post(&self, frames: &[Value]) -> (u16, Value) {
        let body: Vec<String> = frames.iter().map(Value::to_string).collect();
        post_frames(&self.base, &self.conn_id, &self.token, body.join("\n")).await
    }

    /// Sends one frame and returns the data of the next event (its reply).
    pub async fn request(&mut self, frame: Value) -> Value {
        let (status, body) = self.post(&[frame]).await;
        assert_eq!(status, 202, "{body}");
        self.recv().await
    }
}

/// `POST <base>/sse/frames?conn_id=...` with the token as a bearer header.
pub async fn post_frames(base: &str, conn_id: &str, token: &str, body: String) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/sse/frames?conn_id={conn_id}"))
        .bearer_auth(token)
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
        .expect("POST /sse/frames");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// `POST <base>/sse/ticket` with `token` as a bearer header: the ticket, or the refusal.
pub async fn sse_ticket(base: &str, token: &str) -> Result<String, Refused> {
    let response = reqwest::Client::new()
        .post(format!("{base}/sse/ticket"))
        .bearer_auth(token)
        .send()
        .await
        .expect("POST /sse/ticket");
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    if status != 200 {
        return Err(Refused { status, body });
    }
    let answer: Value = serde_json::from_str(&body).expect("ticket answer is JSON");
    assert_eq!(answer["expires_in_s"], 30, "{answer}");
    Ok(answer["ticket"].as_str().expect("a ticket").to_owned())
}
