//! Reading API requests: the body (bounded by the payload limit), its JSON, the channel it
//! names and the payload it carries, each refused with the same messages on every endpoint;
//! and [`Deadline`], the time limit (`body_timeout_s`) and connection slots of every request
//! body the server reads, API or not.

use std::future::Future;

use axum::body::Body;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::channel::Channel;
use crate::node::Node;
use crate::protocol::{ClientError, ErrorCode};

/// Room for the JSON envelope around `data` in a request body.
const ENVELOPE_BYTES: usize = 64 * 1024;

pub async fn read_body(node: &Node, body: Body) -> Result<Bytes, ClientError> {
    let limit = node.config.limits.max_payload_bytes + ENVELOPE_BYTES;
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ClientError::new(
            ErrorCode::TooLarge,
            format!(
                "request body too large (payload limit {} bytes)",
                node.config.limits.max_payload_bytes
            ),
        )
    })
}

pub fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body)
        .map_err(|e| ClientError::bad_request(format!("invalid request body: {e}")))
}

pub fn channel(node: &Node, name: &str) -> Result<Channel, ClientError> {
    let channel = Channel::parse(name)
        .map_err(|e| ClientError::bad_request(format!("invalid channel: {e}")))?;
    node.check_namespace(&channel)?;
    Ok(channel)
}

pub fn payload(node: &Node, data: &RawValue) -> Result<Bytes, ClientError> {
    let max = node.config.limits.max_payload_bytes;
    if data.get().len() > max {
        return Err(ClientError::new(
            ErrorCode::TooLarge,
            format!("\"data\" is larger than {max} bytes"),
        ));
    }
    Ok(Bytes::copy_from_slice(data.get().as_bytes()))
}

/// A request body with a deadline, holding the connection slots its client takes while it
/// is read (see `limits`): a client that sends part of a body and goes quiet is cut at the
/// deadline, and counts against `max_connections` and `max_connections_per_ip` until then.
/// Past the deadline the body fails, and `timed_out` tells the server to answer 408.
pub struct Deadline<B> {
    inner: B,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    slot: Option<crate::limits::NodeSlot>,
    timed_out: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// The error of a body that did not arrive within its deadline.
#[derive(Debug, thiserror::Error)]
#[error("request body not received in time")]
pub struct BodyTimedOut;

impl<B> Deadline<B> {
    pub fn new(
        inner: B,
        within: std::time::Duration,
        slot: crate::limits::NodeSlot,
        timed_out: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Deadline<B> {
        Deadline {
            inner,
            sleep: Box::pin(tokio::time::sleep(within)),
            slot: Some(slot),
            timed_out,
        }
    }
}

impl<B> hyper::body::Body for Deadline<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        if this.slot.is_none() {
            // Read to its end (or failed) already.
            return Poll::Ready(None);
        }
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Some(Err(e))) => {
                this.slot = None;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.slot = None;
                Poll::Ready(None)
            }
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.slot = None;
                    this.timed_out
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    Poll::Ready(Some(Err(Box::new(BodyTimedOut))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.slot.is_none() || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
