//! What can go wrong at the broker seam, and what a client is told of it.

use crate::channel::Channel;
use crate::protocol::{ClientError, ErrorCode};

#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The broker cannot be reached or is not ready; the caller may retry later. The text is
    /// for logs (it may name Redis internals); clients get a generic message.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker refused this request's arguments (it is reachable; the request was wrong).
    /// The text is for logs; clients get a generic `bad_request`.
    #[error("broker refused the request: {0}")]
    Rejected(String),
    /// This broker does not offer the feature (the inbox on the embedded broker).
    #[error("{0}")]
    Unsupported(&'static str),
    /// The channel keeps no history.
    #[error("channel {0} keeps no history")]
    NoHistory(Channel),
}

impl From<BrokerError> for ClientError {
    /// What a client is told. Details of the broker's own failures stay in the node's logs.
    fn from(e: BrokerError) -> ClientError {
        match e {
            BrokerError::Unavailable(_) => {
                ClientError::unavailable("the message broker is unavailable; retry shortly")
            }
            BrokerError::Rejected(_) => {
                ClientError::bad_request("the request's arguments were refused by the broker")
            }
            BrokerError::Unsupported(what) => ClientError::new(ErrorCode::Unsupported, what),
            BrokerError::NoHistory(c) => {
                ClientError::bad_request(format!("channel {c} keeps no history"))
            }
        }
    }
}
