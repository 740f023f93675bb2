//! SSE transport: protocol v1 over Server-Sent Events, for clients behind proxies or hosts
//! that break WebSockets.
//!
//! `GET /sse` opens one session's stream: every server frame is one event whose `data` is
//! the frame's JSON and whose `event` is its type (`stream`). The client's frames arrive as
//! `POST /sse/frames?conn_id=...` ([`frames`]) and go to the same session, so replies come back
//! on the stream in order, as on a WebSocket. Messages of history channels carry an `id` with
//! the stream's positions ([`resume`]): a browser reconnecting with `Last-Event-ID` recovers
//! exactly what it missed. Admission, limits, heartbeats, the slow-consumer cut, the write
//! timeout and drain are the WebSocket's, through the same session and outbox.

pub mod cors;
pub mod frames;
pub mod resume;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::resume::Positions;
use super::admission::{self, Peer, Refused};
use super::connection::Connection;
use crate::auth::Identity;
use crate::channel::Channel;
use crate::limits::{NodeSlot, UserSlot};
use crate::node::{InboundSession, Node};
use crate::protocol::{ClientError, Since};
use crate::session::{ConnState, Session};

/// Client frames that may wait for one session before POSTs are refused (429).
pub const INBOUND_QUEUE: usize = 64;
/// Body chunks buffered between the stream writer and hyper.
const BODY_CHUNKS: usize = 4;

/// What `GET /sse` asks for.
#[derive(Debug, Default)]
struct StreamParams {
    token: Option<String>,
    channels: Vec<String>,
    /// `lastEventId` in the query: for EventSource polyfills that cannot set the header.
    last_event_id: Option<String>,
}

impl StreamParams {
    fn parse(query: Option<&str>) -> StreamParams {
        let mut params = StreamParams::default();
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*key {
                "token" => params.token = Some(value.into_owned()),
                "channel" => params.channels.push(value.into_owned()),
                "lastEventId" => params.last_event_id = Some(value.into_owned()),
                _ => {}
            }
        }
        params
    }
}

/// `GET /sse?token=...&channel=dag:7&channel=room:lobby`: admission, then the event stream.
pub async fn open(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    remote: Option<axum::Extension<crate::limits::RemoteAddr>>,
    RawQuery(query): RawQuery,
) -> Response {
    let peer = Peer::of(&headers, remote.map(|r| r.0), &node.config.trusted_proxies);
    let params = StreamParams::parse(query.as_deref());
    let cors = cors::allow(&node, &headers);
    let refuse = |error: ClientError| cors::with(cors.clone(), error.into_response());
    let admitted = match admission::admit(&node, &headers, params.token) {
        Ok(admitted) => admitted,
        Err(refused) => {
            let reason = refused.reason;
            let error = refused.counted(&node);
            peer.refused("sse", reason, &error);
            return refuse(error);
        }
    };
    if let Err(refused) = admitted.not_revoked(&node).await {
        let reason = refused.reason;
        let error = refused.counted(&node);
        peer.refused("sse", reason, &error);
        return refuse(error);
    }
    let Some((identity, user_slot)) = admitted.user else {
        let refused = Refused {
            reason: "unauthorized",
            error: ClientError::unauthorized(
                "a token is required: ?token=<jwt> or Authorization: Bearer <jwt>",
            ),
        };
        let error = refused.counted(&node);
        peer.refused("sse", "unauthorized", &error);
        return refuse(error);
    };
    // Channels asked for by name, then those a reconnecting browser was reading.
    let max = node.config.limits.max_subscriptions;
    let mut start: Vec<(Channel, Option<Since>)> = Vec::new();
    for name in &params.channels {
        match Channel::parse(name) {
            Ok(c) => start.push((c, None)),
            Err(e) => {
                node.metrics
                    .connections_rejected
                    .with_label_values(&["bad_request"])
                    .inc();
                return refuse(ClientError::bad_request(format!("invalid channel: {e}")));
            }
        }
    }
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(params.last_event_id);
    if let Some(id) = last_event_id {
        for (channel, since) in Positions::decode(&id) {
            match start.iter_mut().find(|(c, _)| *c == channel) {
                Some(entry) => entry.1 = Some(since),
                None => start.push((channel, Some(since))),
            }
        }
    }
    if start.len() > max {
        return refuse(ClientError::new(
            crate::protocol::ErrorCode::LimitExceeded,
            format!("at most {max} subscriptions per connection"),
        ));
    }
    node.metrics.connections_accepted.inc();
    let (body_tx, body_rx) = mpsc::channel::<Bytes>(BODY_CHUNKS);
    let task_node = node.clone();
    node.tasks.spawn(async move {
        run(
            task_node,
            body_tx,
            admitted.node_slot,
            identity,
            user_slot,
            start,
            peer,
        )
        .await
    });
    let body = Body::from_stream(futures_util::stream::unfold(body_rx, |mut rx| async {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), rx))
    }));
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    cors::with(cors, response)
}

/// One stream, from the first event to the last.
async fn run(
    node: Arc<Node>,
    body: mpsc::Sender<Bytes>,
    node_slot: NodeSlot,
    identity: Identity,
    user_slot: UserSlot,
    start: Vec<(Channel, Option<Since>)>,
    peer: Peer,
) {
    let user = identity.user.clone();
    let connection = Connection::open(&node, "sse", ConnState::routable(&node), peer, Some(&user));
    let (frames_tx, frames_rx) = mpsc::channel::<String>(INBOUND_QUEUE);
    let _inbound = node.attach_inbound(
        &connection.conn.conn_id,
        InboundSession {
            user,
            frames: frames_tx,
        },
    );
    let session = connection.session(node_slot);
    let reader = connection.spawn_reader(session, |session, cancel| {
        read_loop(session, identity, user_slot, start, frames_rx, cancel)
    });
    // Jittered, so that the streams of a node that went away do not all return at once.
    let retry_ms = 1000 + u64::from(rand::random::<u16>() % 2000);
    let ending = stream::run(&body, &connection, retry_ms).await;
    drop(body);
    // The stream is over: no frame POSTed for it can be answered any more.
    let session = reader.stop(Duration::ZERO).await;
    connection.close(session, ending).await;
}

/// Starts the session and hands it the client frames POSTed for it until the stream ends.
async fn read_loop(
    mut session: Session,
    identity: Identity,
    user_slot: UserSlot,
    start: Vec<(Channel, Option<Since>)>,
    mut frames: mpsc::Receiver<String>,
    cancel: CancellationToken,
) -> Session {
    if !Box::pin(session.start(identity, user_slot, None)).await {
        return session;
    }
    for (channel, since) in start {
        Box::pin(session.subscribe_at_start(channel, since)).await;
    }
    loop {
        let text = tokio::select! {
            _ = cancel.cancelled() => break,
            _ = session.woken() => {
                if !Box::pin(session.on_wake()).await {
                    break;
                }
                continue;
            }
            text = frames.recv() => text,
        };
        let Some(text) = text else { break };
        session.conn().touch();
        if !Box::pin(session.on_text(&text)).await {
            break;
        }
    }
    session
}
