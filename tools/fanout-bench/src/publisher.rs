//! Publishing at a fixed rate through Redis (`PUBLISH` or `FCALL`) or the HTTP API.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use indicatif::ProgressBar;

use crate::PublishVia;
use crate::clients::{Stats, unix_ns};

/// HTTP connections used in parallel by `--publish http`.
const HTTP_CONNECTIONS: usize = 4;
/// Most messages sent in one 1 ms tick (a catch-up burst is spread over later ticks).
const MAX_PER_TICK: u64 = 5_000;

#[derive(Debug, Default, Clone, Copy)]
pub struct Published {
    /// Messages accepted by Redis or the API.
    pub sent: u64,
    /// Deliveries those messages should make (their channels' subscribers).
    pub expected: u64,
    pub errors: u64,
}

pub struct Publisher {
    via: Via,
    pad: String,
}

enum Via {
    Redis {
        conn: redis::aio::MultiplexedConnection,
        prefix: String,
        fcall: bool,
    },
    Http {
        senders: Vec<SendRequest<Full<Bytes>>>,
        host: String,
        api_key: String,
    },
}

impl Publisher {
    pub async fn new(
        via: PublishVia,
        redis_url: &str,
        prefix: &str,
        http: &SocketAddr,
        api_key: Option<String>,
        payload_bytes: usize,
    ) -> Result<Publisher, String> {
        let via = match via {
            PublishVia::Redis | PublishVia::Fcall => {
                let client =
                    redis::Client::open(redis_url).map_err(|e| format!("redis url: {e}"))?;
                let conn = client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|e| format!("redis: {e}"))?;
                Via::Redis {
                    conn,
                    prefix: prefix.to_owned(),
                    fcall: via == PublishVia::Fcall,
                }
            }
            PublishVia::Http => {
                let mut senders = Vec::new();
                for _ in 0..HTTP_CONNECTIONS {
                    let tcp = tokio::net::TcpStream::connect(http)
                        .await
                        .map_err(|e| format!("http connect: {e}"))?;
                    let _ = tcp.set_nodelay(true);
                    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                        .await
                        .map_err(|e| format!("http handshake: {e}"))?;
                    tokio::spawn(conn);
                    senders.push(sender);
                }
                Via::Http {
                    senders,
                    host: http.to_string(),
                    api_key: api_key.unwrap_or_default(),
                }
            }
        };
        Ok(Publisher {
            via,
            pad: "x".repeat(payload_bytes),
        })
    }

    /// Publishes `rate` messages per second for `duration`, round-robin over the channels.
    pub async fn run(
        mut self,
        rate: f64,
        duration: Duration,
        channels: &[String],
        subscribers: &[u64],
        _stats: &Stats,
        bar: &ProgressBar,
    ) -> Result<Published, String> {
        let mut out = Published::default();
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let total = (rate * duration.as_secs_f64()).round() as u64;
        let mut seq = 0u64;
        while seq < total {
            tick.tick().await;
            let elapsed = start.elapsed();
            bar.set_position(elapsed.as_secs());
            let due = ((elapsed.as_secs_f64() * rate) as u64).min(total);
            let n = due.saturating_sub(seq).min(MAX_PER_TICK);
            if n == 0 {
                continue;
            }
            let batch: Vec<(usize, String)> = (seq..seq + n)
                .map(|s| {
                    let k = (s % channels.len() as u64) as usize;
                    let payload =
                        format!(r#"{{"t":{},"seq":{s},"pad":"{}"}}"#, unix_ns(), self.pad);
                    (k, payload)
                })
                .collect();
            seq += n;
            let ok = self.send(&batch, channels).await;
            for (sent_ok, (k, _)) in ok.iter().zip(&batch) {
                if *sent_ok {
                    out.sent += 1;
                    out.expected += subscribers[*k];
                } else {
                    out.errors += 1;
                }
            }
        }
        Ok(out)
    }

    /// Sends a batch; which messages were accepted.
    async fn send(&mut self, batch: &[(usize, String)], channels: &[String]) -> Vec<bool> {
        match &mut self.via {
            Via::Redis {
                conn,
                prefix,
                fcall,
            } => {
                let mut pipe = redis::pipe();
                for (k, payload) in batch {
                    if *fcall {
                        pipe.cmd("FCALL")
                            .arg("fanout_publish")
                            .arg(1)
                            .arg(&channels[*k])
                            .arg(payload);
                    } else {
                        pipe.cmd("PUBLISH")
                            .arg(format!("{prefix}{}", channels[*k]))
                            .arg(payload);
                    }
                }
                match pipe.query_async::<Vec<redis::Value>>(conn).await {
                    Ok(replies) => replies
                        .iter()
                        .map(|r| !matches!(r, redis::Value::ServerError(_)))
                        .collect(),
                    Err(_) => vec![false; batch.len()],
                }
            }
            Via::Http {
                senders,
                host,
                api_key,
            } => {
                let chunk = batch.len().div_ceil(senders.len());
                let mut jobs = Vec::new();
                for (sender, part) in senders.iter_mut().zip(batch.chunks(chunk.max(1))) {
                    let host = host.clone();
                    let api_key = api_key.clone();
                    jobs.push(async move {
                        let mut ok = Vec::with_capacity(part.len());
                        for (k, payload) in part {
                            let body =
                                format!(r#"{{"channel":"{}","data":{payload}}}"#, channels[*k]);
                            let request = Request::post("/api/publish")
                                .header("host", &host)
                                .header("authorization", format!("Bearer {api_key}"))
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body)));
                            let accepted = match request {
                                Ok(_) if sender.ready().await.is_err() => false,
                                Ok(r) => match sender.send_request(r).await {
                                    // The body must be read before the connection is reused.
                                    Ok(resp) => {
                                        let ok = resp.status() == 200;
                                        ok && resp.into_body().collect().await.is_ok()
                                    }
                                    Err(_) => false,
                                },
                                Err(_) => false,
                            };
                            ok.push(accepted);
                        }
                        ok
                    });
                }
                futures_util::future::join_all(jobs)
                    .await
                    .into_iter()
                    .flatten()
                    .collect()
            }
        }
    }
}
