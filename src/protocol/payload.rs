//! Published payloads as the gateway sees them: is it JSON, does it carry a `timestamp`, and
//! how it is embedded in a frame (verbatim when it is JSON, as a string otherwise).

use serde::Deserialize;

/// What the gateway reads from a published payload, in one pass over it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PayloadInfo {
    /// The payload is one complete JSON value.
    pub is_json: bool,
    /// The top-level `timestamp` of a JSON object payload, in Unix milliseconds: a number
    /// (seconds, or milliseconds when above 10^11) or an RFC 3339 string.
    pub timestamp_ms: Option<f64>,
}

impl PayloadInfo {
    pub fn of(payload: &[u8]) -> PayloadInfo {
        #[derive(Deserialize)]
        struct Envelope {
            #[serde(default)]
            timestamp: Option<Timestamp>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Timestamp {
            Number(f64),
            Text(String),
        }
        let is_object = payload
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'{');
        if is_object && let Ok(envelope) = serde_json::from_slice::<Envelope>(payload) {
            let timestamp_ms = match envelope.timestamp {
                Some(Timestamp::Number(n)) if n > 1e11 => Some(n),
                Some(Timestamp::Number(n)) => Some(n * 1000.0),
                Some(Timestamp::Text(t)) => humantime::parse_rfc3339_weak(&t)
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs_f64() * 1000.0),
                None => None,
            };
            return PayloadInfo {
                is_json: true,
                timestamp_ms,
            };
        }
        PayloadInfo {
            is_json: is_json(payload),
            timestamp_ms: None,
        }
    }
}

/// Appends the payload as a JSON value: verbatim when it is JSON, as a string otherwise.
pub fn push_data(out: &mut Vec<u8>, payload: &[u8], payload_is_json: bool) {
    if payload_is_json {
        out.extend_from_slice(payload);
    } else {
        let text = String::from_utf8_lossy(payload);
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &*text);
    }
}

/// True when the bytes are one complete JSON value.
pub fn is_json(payload: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok()
}
