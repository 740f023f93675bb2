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
        // JSON text is UTF-8: a payload that is not is carried as a string (see `is_json`).
        let Ok(text) = std::str::from_utf8(payload) else {
            return PayloadInfo {
                is_json: false,
                timestamp_ms: None,
            };
        };
        let is_object = payload
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'{');
        if is_object && let Ok(envelope) = serde_json::from_str::<Envelope>(text) {
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

/// True when the bytes are one complete JSON value, in UTF-8. (serde_json does not check
/// the bytes of strings it skips: without the UTF-8 check, `{"a":"<invalid bytes>"}` would be
/// embedded as is, and a frame that is not UTF-8 is no WebSocket text message nor SSE event.)
pub fn is_json(payload: &[u8]) -> bool {
    std::str::from_utf8(payload)
        .is_ok_and(|text| serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_with_bytes_that_are_not_utf8_is_not_json() {
        let payload = b"{\"a\":\"\xff\xfe\"}";
        assert!(!is_json(payload));
        assert!(!PayloadInfo::of(payload).is_json);
        let mut out = Vec::new();
        push_data(&mut out, payload, is_json(payload));
        let text = std::str::from_utf8(&out).expect("embedded as UTF-8");
        assert_eq!(
            serde_json::from_str::<String>(text).unwrap(),
            "{\"a\":\"\u{fffd}\u{fffd}\"}"
        );
    }
}
