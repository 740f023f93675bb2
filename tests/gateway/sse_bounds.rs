//! SSE bounded in every dimension (issue 23): every event is valid whatever bytes a payload
//! holds, read by a parser that follows the specification to the letter (lines end at CR,
//! LF or CRLF); and a stream's memory is bounded by `queue_max_bytes`, measured as the
//! node's resident memory while streams with long `id:` lines do not read.

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::support::*;

/// A small deterministic generator (xorshift64*), so that a failure names its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Text made of pieces that break line-based formats, and some plain characters.
    fn nasty_text(&mut self, max_pieces: usize) -> String {
        const PIECES: &[&str] = &[
            "\r",
            "\n",
            "\r\n",
            "\n\n",
            "\r\r",
            "\0",
            "\u{2028}",
            "\u{2029}",
            "\u{85}",
            "\u{feff}",
            "data: {}",
            "event: close",
            "id: 1",
            ": comment",
            "retry: 1",
            "\t",
            "\"",
            "\\",
            "é",
            "日本",
            "🎉",
            "</script>",
            "{",
            "}",
            "x",
        ];
        let n = self.below(max_pieces) + 1;
        (0..n).map(|_| PIECES[self.below(PIECES.len())]).collect()
    }

    /// JSON whitespace, line breaks included.
    fn space(&mut self) -> &'static str {
        ["", " ", "\n", "\r", "\r\n", "\t", "\n  ", "\r\n\r\n"][self.below(8)]
    }

    /// A JSON text with nasty strings and line breaks between its tokens.
    fn json(&mut self, depth: usize) -> String {
        let kind = if depth == 0 {
            self.below(4)
        } else {
            self.below(6)
        };
        match kind {
            0 => serde_json::to_string(&self.nasty_text(6)).unwrap(),
            1 => ["0", "-1.5e3", "true", "null", "12345678901234"][self.below(5)].to_owned(),
            2 => format!(
                "{}{}{}",
                self.space(),
                serde_json::to_string(&self.nasty_text(3)).unwrap(),
                self.space()
            ),
            3 => "\"plain\"".to_owned(),
            4 => {
                let n = self.below(4);
                let items: Vec<String> = (0..n)
                    .map(|_| format!("{}{}{}", self.space(), self.json(depth - 1), self.space()))
                    .collect();
                format!("[{}]", items.join(","))
            }
            _ => {
                let n = self.below(4);
                let items: Vec<String> = (0..n)
                    .map(|i| {
                        let key =
                            serde_json::to_string(&format!("{i}{}", self.nasty_text(2))).unwrap();
                        format!(
                            "{}{key}{}:{}{}",
                            self.space(),
                            self.space(),
                            self.space(),
                            self.json(depth - 1)
                        )
                    })
                    .collect();
                format!("{{{}{}}}", items.join(","), self.space())
            }
        }
    }
}

/// An SSE reader that follows the WHATWG algorithm: the stream must be UTF-8, lines end at
/// CRLF, LF or CR, `data` lines join with LF, a blank line dispatches. Every event's data
/// must be one JSON value.
struct StrictSse {
    response: reqwest::Response,
    raw: Vec<u8>,
    data: Vec<String>,
    event: Option<String>,
    events: VecDeque<(String, Value)>,
    /// What was read, for failure messages.
    seen: usize,
}

impl StrictSse {
    fn new(response: reqwest::Response) -> StrictSse {
        assert_eq!(response.status(), 200);
        StrictSse {
            response,
            raw: Vec::new(),
            data: Vec::new(),
            event: None,
            events: VecDeque::new(),
            seen: 0,
        }
    }

    async fn next(&mut self, seed: u64) -> (String, Value) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(e) = self.events.pop_front() {
                return e;
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("seed {seed}: no event in time"))
                .expect("stream")
                .unwrap_or_else(|| panic!("seed {seed}: the stream ended"));
            self.raw.extend_from_slice(&chunk);
            self.parse(seed);
        }
    }

    /// The next event of `kind`, skipping others (each checked all the same).
    async fn next_of(&mut self, kind: &str, seed: u64) -> Value {
        for _ in 0..1000 {
            let (event, data) = self.next(seed).await;
            if event == kind {
                return data;
            }
        }
        panic!("seed {seed}: no {kind} event");
    }

    fn parse(&mut self, seed: u64) {
        loop {
            let Some(end) = self.raw.iter().position(|b| *b == b'\r' || *b == b'\n') else {
                return;
            };
            // A CR at the end of what arrived may be the first half of a CRLF.
            if self.raw[end] == b'\r' && end + 1 == self.raw.len() {
                return;
            }
            let skip = if self.raw[end] == b'\r' && self.raw[end + 1] == b'\n' {
                2
            } else {
                1
            };
            let line: Vec<u8> = self.raw.drain(..end + skip).take(end).collect();
            self.seen += 1;
            let line = String::from_utf8(line)
                .unwrap_or_else(|e| panic!("seed {seed}: a line of the stream is not UTF-8: {e}"));
            if line.is_empty() {
                if !self.data.is_empty() {
                    let text = self.data.join("\n");
                    let data: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
                        panic!(
                            "seed {seed}: event {:?} carries data that is not JSON ({e}): {text:?}",
                            self.event
                        )
                    });
                    let event = self.event.take().unwrap_or_else(|| "message".into());
                    assert_eq!(data["type"], event.as_str(), "seed {seed}: {data}");
                    self.events.push_back((event, data));
                }
                self.data.clear();
                self.event = None;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "data" => self.data.push(value.to_owned()),
                "event" => self.event = Some(value.to_owned()),
                "id" => assert!(
                    !value.contains('\0'),
                    "seed {seed}: an id with NUL is ignored by browsers"
                ),
                "retry" => {}
                other => panic!(
                    "seed {seed}: a line that is not a field of ours: {other:?} (line {line:?})"
                ),
            }
        }
    }
}

fn presence_config() -> String {
    let path = std::env::temp_dir().join(format!("fanout-sse-bounds-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "[namespaces.room]\npresence = true\njoin_leave = \"connection\"\npublish = true\n",
    )
    .unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn every_event_is_valid_sse_whatever_the_payloads_hold() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut rng = Rng(seed);
    let config = presence_config();
    let gw = Gateway::start(&["--config", &config]);
    let base = gw.http("");
    let info: Value = serde_json::from_str(&rng.json(2)).unwrap();
    let viewer_token = token_with(json!({
        "sub": "viewer", "exp": unix_now() + 3600, "channels": ["dag:*", "room:*"], "info": info,
    }));
    let ticket = sse_ticket(&base, &viewer_token).await.unwrap();
    let response = reqwest::get(format!(
        "{base}/sse?ticket={ticket}&channel=dag:p&channel=room:p"
    ))
    .await
    .unwrap();
    let mut sse = StrictSse::new(response);
    let ack = sse.next_of("connection_ack", seed).await;
    let conn_id = ack["conn_id"].as_str().unwrap().to_owned();
    let post = |frame: String| {
        let (base, conn_id, tok) = (base.clone(), conn_id.clone(), viewer_token.clone());
        async move {
            let (status, body) = post_frames(&base, &conn_id, &tok, frame).await;
            assert_eq!(status, 202, "seed {seed}: {body}");
        }
    };
    // The viewer's own join carries its token's info.
    let join = sse.next_of("join", seed).await;
    assert_eq!(join["info"], info, "seed {seed}");

    // Published through the API with line breaks in their JSON: message events, live.
    let count = 25;
    let mut expected = Vec::new();
    for _ in 0..count {
        let text = rng.json(3);
        expected.push(serde_json::from_str::<Value>(&text).unwrap());
        for channel in ["dag:p", "room:p"] {
            let body = format!("{{\"channel\":\"{channel}\",\"data\":{text}}}");
            let (status, answer) = gw.post_with_key("/api/publish", Some(API_KEY), body).await;
            assert_eq!(status, 200, "seed {seed}: {answer} for {text:?}");
        }
    }
    for want in &expected {
        for channel in ["dag:p", "room:p"] {
            let m = sse.next_of("message", seed).await;
            assert_eq!(
                (&m["channel"], &m["data"]),
                (&json!(channel), want),
                "seed {seed}"
            );
        }
    }

    // The history reply and a recovery's replay carry the same payloads, from the store.
    let id = serde_json::to_string(&rng.nasty_text(8)).unwrap();
    post(format!(
        "{{\"type\":\"history\",\"channel\":\"dag:p\",\"id\":{id}}}"
    ))
    .await;
    let history = sse.next_of("history", seed).await;
    assert_eq!(history["id"], serde_json::from_str::<Value>(&id).unwrap());
    let stored: Vec<Value> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(stored, expected, "seed {seed}");
    let since = json!({"offset": 0, "epoch": history["epoch"]});
    post(json!({"type": "subscribe", "channel": "dag:p", "since": since}).to_string()).await;
    let reply = sse.next_of("subscribed", seed).await;
    assert_eq!(reply["recovered"], true, "seed {seed}: {reply}");
    for want in &expected {
        assert_eq!(
            &sse.next_of("message", seed).await["data"],
            want,
            "seed {seed}"
        );
    }

    // Another connection (WebSocket) joins, sets statuses and publishes raw JSON with line
    // breaks; its info, statuses and messages reach the viewer's stream as events.
    let other_info: Value = serde_json::from_str(&rng.json(2)).unwrap();
    let (mut ws, _) = gw
        .connect(&token_with(json!({
            "sub": "writer", "exp": unix_now() + 3600, "channels": ["room:*"], "info": other_info,
        })))
        .await;
    ws.subscribe("room:p").await;
    let join = sse.next_of("join", seed).await;
    assert_eq!(
        (&join["user"], &join["info"]),
        (&json!("writer"), &other_info),
        "seed {seed}"
    );
    for _ in 0..5 {
        let status = rng.json(2);
        ws.send_text(&format!(
            "{{\"type\":\"status\",\"channel\":\"room:p\",\"status\":{status}}}"
        ))
        .await;
        let mut reply = ws.recv().await;
        // Its own events and the replies of the round before come first.
        for _ in 0..100 {
            if reply["type"] == "status_updated" {
                break;
            }
            reply = ws.recv().await;
        }
        assert_eq!(reply["type"], "status_updated", "{reply}");
        let update = sse.next_of("presence_update", seed).await;
        assert_eq!(
            update["status"],
            serde_json::from_str::<Value>(&status).unwrap(),
            "seed {seed}"
        );
        let data = rng.json(3);
        ws.send_text(&format!(
            "{{\"type\":\"publish\",\"channel\":\"room:p\",\"data\":{data}}}"
        ))
        .await;
        let m = sse.next_of("message", seed).await;
        assert_eq!(
            (&m["user"], &m["data"]),
            (
                &json!("writer"),
                &serde_json::from_str::<Value>(&data).unwrap()
            ),
            "seed {seed}"
        );
    }
    // The presence reply lists both members, info and status as they were given.
    post(json!({"type": "presence", "channel": "room:p", "id": 1}).to_string()).await;
    let presence = sse.next_of("presence", seed).await;
    let members = presence["members"].as_array().unwrap();
    assert!(
        members
            .iter()
            .any(|m| m["user"] == "writer" && m["info"] == other_info),
        "seed {seed}"
    );
    assert!(
        members
            .iter()
            .any(|m| m["user"] == "viewer" && m["info"] == info),
        "seed {seed}"
    );
    // Error messages quote what the client sent; a frame's id comes back as it was.
    for _ in 0..5 {
        // Never a valid name: a NUL is no channel character.
        let channel = serde_json::to_string(&format!("room:\0{}", rng.nasty_text(3))).unwrap();
        let id = serde_json::to_string(&rng.nasty_text(5)).unwrap();
        post(format!(
            "{{\"type\":\"subscribe\",\"channel\":{channel},\"id\":{id}}}"
        ))
        .await;
        let error = sse.next_of("error", seed).await;
        assert_eq!(
            error["id"],
            serde_json::from_str::<Value>(&id).unwrap(),
            "seed {seed}"
        );
        post(format!("{{\"type\":\"ping\",\"id\":{id}}}")).await;
        assert_eq!(
            sse.next_of("pong", seed).await["id"],
            serde_json::from_str::<Value>(&id).unwrap()
        );
    }

    // Bytes that are not UTF-8 are refused where they are published.
    let mut body = br#"{"channel":"room:p","data":"a"#.to_vec();
    body.extend_from_slice(b"\xff\xfe\"}");
    let response = reqwest::Client::new()
        .post(gw.http("/api/publish"))
        .bearer_auth(API_KEY)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400, "the API refuses it");
    let response = reqwest::Client::new()
        .post(format!("{base}/sse/frames?conn_id={conn_id}"))
        .bearer_auth(&viewer_token)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400, "so do frames POSTed for a stream");
    post(json!({"type": "ping", "id": "end"}).to_string()).await;
    assert_eq!(sse.next_of("pong", seed).await["id"], "end");
}

/// The node's resident memory, from `/proc/<pid>/status`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// Sockets the process holds open.
fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

#[tokio::test]
async fn streams_that_do_not_read_hold_at_most_what_queue_max_bytes_allows() {
    const STREAMS: usize = 5;
    const CHANNELS: usize = 100;
    const QUEUE_BYTES: u64 = 262_144;
    let gw = Gateway::start(&[
        "--queue-max-bytes",
        "262144",
        "--max-payload-bytes",
        "65536",
        "--write-timeout-s",
        "10",
        // Batches as large as they get (256 frames), as a burst of publishes makes them on a
        // busy node.
        "--write-delay-ms",
        "1000",
    ]);
    // Long channel names: every history message's `id:` lists all 100 (about 14 KB).
    let channels: Vec<String> = (0..CHANNELS)
        .map(|i| format!("dag:{i:03}-{}", "x".repeat(116)))
        .collect();
    let query: String = channels.iter().map(|c| format!("&channel={c}")).collect();
    let tok = token("reader", &["dag:*"], 3600);
    let idle_sockets = sockets(gw.pid());
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        let ticket = sse_ticket(&gw.http(""), &tok).await.unwrap();
        // A client that asks for the stream and never reads it, with a small receive buffer.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(gw.addr).await.unwrap();
        stream
            .write_all(
                format!("GET /sse?ticket={ticket}{query} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
        streams.push(stream);
    }
    gw.wait_metric("fanout_connections_open", STREAMS as f64)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss(gw.pid());
    // 2,400 history messages, 24 per channel, about 400 a second: each stream is sent 2,400
    // events of ~14 KB, in batches of up to 256 (one per write delay).
    let mut publishers = Vec::new();
    for part in channels.chunks(CHANNELS / 10) {
        let (part, url) = (part.to_vec(), gw.http("/api/publish"));
        publishers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut pace = tokio::time::interval(Duration::from_millis(25));
            for round in 0..24 {
                for channel in &part {
                    pace.tick().await;
                    let response = client
                        .post(&url)
                        .bearer_auth(API_KEY)
                        .json(&json!({"channel": channel, "data": {"round": round}}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200);
                }
            }
        }));
    }
    let mut peak = before;
    while publishers.iter().any(|p| !p.is_finished()) {
        peak = peak.max(rss(gw.pid()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for p in publishers {
        p.await.unwrap();
    }
    for _ in 0..20 {
        peak = peak.max(rss(gw.pid()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let grown = peak.saturating_sub(before);
    // Per stream: its unsent bytes (queue_max_bytes) and its outbox (queue_max_bytes), plus
    // one 64 KiB piece; 16 MiB for the allocator, the 2,400 publishes and their history.
    let bound = STREAMS as u64 * (2 * QUEUE_BYTES + 64 * 1024) + 16 * 1024 * 1024;
    assert!(
        grown <= bound,
        "{STREAMS} streams that do not read grew the node by {} KiB (bound {} KiB)",
        grown / 1024,
        bound / 1024
    );
    eprintln!(
        "{STREAMS} streams grew the node by {} KiB (bound {} KiB)",
        grown / 1024,
        bound / 1024
    );
    // They are cut (slow consumer, the write timeout, or the socket's write deadline, which
    // drops the connection), and so are their connections: the node holds no socket for
    // them once the write timeout has passed.
    gw.wait_metrics(
        &[
            "fanout_disconnects_total{reason=\"slow_consumer\"}",
            "fanout_disconnects_total{reason=\"write_timeout\"}",
            "fanout_disconnects_total{reason=\"connection_lost\"}",
        ],
        STREAMS as f64,
        Duration::from_secs(60),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while sockets(gw.pid()) > idle_sockets {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node still holds {} sockets (idle: {idle_sockets})",
            sockets(gw.pid())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(streams);
}
