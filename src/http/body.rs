//! Reading API requests: the body (bounded by the payload limit), its JSON, the channel it
//! names and the payload it carries, each refused with the same messages on every endpoint.

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
