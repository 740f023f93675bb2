//! API keys: every `/api` request carries `Authorization: Bearer <api key>`, compared in
//! constant time against every configured key.

use subtle::ConstantTimeEq;

use axum::http::HeaderMap;

use crate::auth::bearer_token;
use crate::node::Node;
use crate::protocol::{ClientError, ErrorCode};

pub fn authorize(node: &Node, headers: &HeaderMap) -> Result<(), ClientError> {
    if node.config.api_keys.is_empty() {
        return Err(ClientError::new(
            ErrorCode::Forbidden,
            "the HTTP API is disabled: no api_key is configured",
        ));
    }
    let Some(given) = bearer_token(headers) else {
        return Err(ClientError::new(
            ErrorCode::Unauthorized,
            "missing `Authorization: Bearer <api key>`",
        ));
    };
    // Compare against every key in constant time, without stopping at the first match.
    let matched = node.config.api_keys.iter().fold(0u8, |acc, key| {
        acc | key.as_bytes().ct_eq(given.as_bytes()).unwrap_u8()
    });
    if matched == 1 {
        Ok(())
    } else {
        Err(ClientError::new(ErrorCode::Unauthorized, "invalid API key"))
    }
}
