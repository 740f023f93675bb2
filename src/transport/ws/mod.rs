//! WebSocket transport: the `/ws` upgrade, and the tasks that move bytes for one session.
//!
//! Admission (shared with every transport: origin, rates, limits, a token given with the
//! request) happens before the 101, so refused clients get a plain HTTP status and JSON body.
//! After the upgrade, each connection (`transport::connection`) runs:
//! - a **reader** task (`reader`): reassembles messages with a total-size cap and hands
//!   them to the session;
//! - the connection's own task runs the **driver** (`transport::driver`) over the WebSocket
//!   `writer`: it drains the session's outbox in batches, framing each shared protocol
//!   frame with a WebSocket header in front of its JSON (one vectored write per batch), sends
//!   heartbeat pings, and closes a client that neither answers nor reads, or whose token
//!   expired. The `socket` is shared with the outbox for direct writes.
//!
//! `read_frame` is not cancel-safe, so the reader is only ever cancelled when the connection
//! is finished with; the driver drops a write only to end the connection.

mod framing;
mod reader;
mod socket;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use fastwebsockets::upgrade::{IncomingUpgrade, UpgradeFut};
use fastwebsockets::{Role, WebSocketRead};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use self::reader::{MessageReader, read_loop};
use self::socket::Socket;
use self::writer::WsWire;
use super::admission::{self, Admitted, Peer};
use super::connection::Connection;
use crate::node::Node;
use crate::protocol::ClientError;
use crate::session::ConnState;

pub use self::framing::{close_frame, encode_frame, ping_frame};
pub use self::reader::{Inbound, ReadError};

/// What the reader reads: bytes hyper had buffered, then the socket.
type ReadStream = tokio::io::Chain<std::io::Cursor<Bytes>, tokio::net::tcp::OwnedReadHalf>;

/// Initial capacity of a connection's read buffer.
const READ_BUFFER_BYTES: usize = 512;

/// After the server sends its close frame, how long it waits for the client's.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Deserialize)]
pub struct WsParams {
    token: Option<String>,
}

/// `GET /ws`: admission checks, then the upgrade.
pub async fn upgrade(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    remote: Option<axum::Extension<crate::limits::RemoteAddr>>,
    params: Result<Query<WsParams>, axum::extract::rejection::QueryRejection>,
    ws: Result<IncomingUpgrade, StatusCode>,
) -> Response {
    let peer = Peer::of(&headers, remote.map(|r| r.0), &node.config.trusted_proxies);
    let reject = |reason: &'static str, error: ClientError| {
        node.metrics
            .connections_rejected
            .with_label_values(&[reason])
            .inc();
        error.into_response()
    };
    let Ok(ws) = ws else {
        return reject(
            "bad_request",
            ClientError::bad_request(
                "expected a WebSocket upgrade request (Sec-WebSocket-Key, Sec-WebSocket-Version: 13)",
            ),
        );
    };
    let query_token = params.ok().and_then(|q| q.0.token);
    let admitted = match admission::admit(&node, &headers, query_token) {
        Ok(admitted) => admitted,
        Err(refused) => {
            let reason = refused.reason;
            let error = refused.counted(&node);
            peer.refused("ws", reason, &error);
            return error.into_response();
        }
    };
    if let Err(refused) = admitted.not_revoked(&node).await {
        let reason = refused.reason;
        let error = refused.counted(&node);
        peer.refused("ws", reason, &error);
        return error.into_response();
    }
    let (response, fut) = match ws.upgrade() {
        Ok(pair) => pair,
        Err(_) => {
            return reject(
                "bad_request",
                ClientError::bad_request("WebSocket upgrade failed"),
            );
        }
    };
    node.metrics.connections_accepted.inc();
    let task_node = node.clone();
    node.tasks
        .spawn(async move { run(task_node, fut, admitted, peer).await });
    response.into_response()
}

/// One connection, from the finished handshake to the last byte.
///
/// This task lives as long as the connection, and its future's size is what every connection
/// costs for its whole life: the steps before and after the driver's loop run boxed, so only
/// the loop's own state is held meanwhile.
async fn run(node: Arc<Node>, fut: UpgradeFut, admitted: Admitted, peer: Peer) {
    let Some((mut ws_read, write_half)) = Box::pin(finish_upgrade(fut)).await else {
        return;
    };
    let max = node.config.limits.max_message_bytes;
    // Per frame; the total of a fragmented message is checked by `MessageReader`.
    ws_read.set_max_message_size(max + 1);
    // Clients send small requests and pongs; the buffer grows for a larger message and
    // keeps that size. Most connections are idle: 8 KiB each (the crate's default) would be
    // most of their memory.
    ws_read.set_read_buffer_capacity(READ_BUFFER_BYTES);

    let user = admitted.user.as_ref().map(|(i, _)| i.user.clone());
    let connection = Connection::open(&node, "ws", ConnState::new(&node), peer, user.as_deref());
    // Small fan-outs write from the fan-out itself (see `Outbox::push`).
    let socket = Arc::new(Socket::new(write_half));
    connection.outbox.attach_socket(socket.clone());
    let session = connection.session(admitted.node_slot);
    let authenticated = admitted.user;
    let reader = connection.spawn_reader(session, move |mut session, cancel| async move {
        let started = match authenticated {
            Some((identity, slot)) => Box::pin(session.start(identity, slot, None)).await,
            None => true,
        };
        if started {
            read_loop(MessageReader::new(ws_read, max), &mut session, &cancel).await;
        }
        session
    });

    let ending = connection
        .drive(&WsWire::new(&socket, node.config.write_timeout))
        .await;

    // Give the client a moment to answer our close frame, then stop reading.
    let session = Box::pin(reader.stop(CLOSE_GRACE)).await;
    // The last reference to the socket shuts its write side (the outbox held the other).
    connection.outbox.detach_socket();
    drop(socket);
    Box::pin(connection.close(session, ending)).await;
}

/// Completes the upgrade and splits the connection: the reading half for fastwebsockets (with
/// any bytes hyper read past the handshake in front), the writing half for our writer.
async fn finish_upgrade(
    fut: UpgradeFut,
) -> Option<(WebSocketRead<ReadStream>, tokio::net::tcp::OwnedWriteHalf)> {
    let ws = match fut.await {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return None;
        }
    };
    // The server hands hyper a plain TcpStream, so the upgraded connection is one again:
    // split it without a lock, keeping any bytes hyper read past the handshake.
    let parts = match ws
        .into_inner()
        .into_inner()
        .downcast::<TokioIo<TcpStream>>()
    {
        Ok(parts) => parts,
        Err(_) => {
            tracing::error!("upgraded connection is not a TCP stream; dropping it");
            return None;
        }
    };
    let (read_half, write_half) = parts.io.into_inner().into_split();
    // `read_buf` is a view into hyper's read buffer; copying what it holds (usually nothing)
    // lets that buffer go instead of keeping it alive for the whole connection.
    let early = Bytes::copy_from_slice(&parts.read_buf);
    drop(parts.read_buf);
    let read_half = std::io::Cursor::new(early).chain(read_half);
    // The write side of fastwebsockets is not used: frames are pre-encoded bytes.
    let (ws_read, _) =
        fastwebsockets::after_handshake_split(read_half, tokio::io::sink(), Role::Server);
    Some((ws_read, write_half))
}
