//! Admission: the checks every transport makes before a session starts, in the order
//! `docs/protocol.md` gives (draining, origin, new-connection rate, node limit, token, user
//! limit). Refusals are [`ClientError`]s, answered as HTTP statuses with JSON bodies, and
//! counted by reason.

use axum::http::{HeaderMap, header};

use crate::auth::{Identity, bearer_token};
use crate::limits::{NodeSlot, Refusal, UserSlot};
use crate::node::Node;
use crate::protocol::{ClientError, ErrorCode};

/// What admission granted.
pub struct Admitted {
    pub node_slot: NodeSlot,
    /// Present when the token came with the request; otherwise the session expects an
    /// `auth` frame (WebSocket only).
    pub user: Option<(Identity, UserSlot)>,
}

impl Admitted {
    /// Refuses a token that came with the request if the backend revoked it (its user's
    /// tokens issued before a time, or this token's `jti`). Without an answer from the
    /// broker, refuses too: a revoked token must not get in while Redis is away.
    pub async fn not_revoked(&self, node: &Node) -> Result<(), Refused> {
        let Some((identity, _)) = &self.user else {
            return Ok(());
        };
        match node.is_revoked(&identity.user, &identity.credential).await {
            Ok(false) => Ok(()),
            Ok(true) => Err(Refused::new(
                "revoked",
                ClientError::unauthorized("token revoked"),
            )),
            Err(e) => Err(Refused::new("broker_unavailable", e.into())),
        }
    }
}

/// Why a request was refused, with its metric label.
pub struct Refused {
    pub reason: &'static str,
    pub error: ClientError,
}

impl Refused {
    fn new(reason: &'static str, error: ClientError) -> Refused {
        Refused { reason, error }
    }

    /// Counts the refusal and turns it into the error to answer.
    pub fn counted(self, node: &Node) -> ClientError {
        node.metrics
            .connections_rejected
            .with_label_values(&[self.reason])
            .inc();
        self.error
    }
}

/// Runs the admission checks for a new session. The token is taken from the
/// `Authorization: Bearer` header if present, else from `query_token`.
pub fn admit(
    node: &Node,
    headers: &HeaderMap,
    query_token: Option<String>,
) -> Result<Admitted, Refused> {
    if node.is_draining() {
        return Err(Refused::new(
            "draining",
            ClientError::unavailable("this node is shutting down; connect to another"),
        ));
    }
    if !node.config.allowed_origins.is_empty()
        && let Some(origin) = headers.get(header::ORIGIN)
    {
        let allowed = origin
            .to_str()
            .is_ok_and(|o| node.config.allowed_origins.iter().any(|r| r.allows(o)));
        if !allowed {
            return Err(Refused::new(
                "origin",
                ClientError::forbidden("origin not allowed"),
            ));
        }
    }
    let node_slot = node.admission.admit().map_err(|refusal| {
        let msg = match refusal {
            Refusal::RateLimited => "too many new connections; retry shortly",
            _ => "this node is at its connection limit; connect to another",
        };
        Refused::new(
            refusal.label(),
            ClientError::unavailable(msg).retry_after(1),
        )
    })?;
    let user = match bearer_token(headers).or(query_token) {
        None => None,
        Some(token) => {
            let identity = node
                .verifier
                .verify(&token)
                .map_err(|e| Refused::new("unauthorized", ClientError::unauthorized(e.0)))?;
            let slot = node.admission.admit_user(&identity.user).map_err(|_| {
                Refused::new(
                    "user_full",
                    ClientError::new(
                        ErrorCode::LimitExceeded,
                        "this user has too many open connections",
                    ),
                )
            })?;
            Some((identity, slot))
        }
    };
    Ok(Admitted { node_slot, user })
}

/// Who is at the other end of a session, for the log lines an operator reads.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// `ip:port` of a direct peer, or the client's IP as a trusted proxy forwarded it.
    pub remote: Option<String>,
    pub origin: Option<String>,
}

impl Peer {
    /// The peer of a request. When the request comes from a trusted proxy, the client is the
    /// last address that proxy appended to `X-Forwarded-For` (earlier entries are whatever the
    /// client claimed, and are not believed).
    pub fn of(
        headers: &HeaderMap,
        remote: Option<crate::limits::RemoteAddr>,
        trusted_proxies: &[std::net::IpAddr],
    ) -> Peer {
        let peer = remote.map(|r| r.0);
        let mut remote = peer.map(|a| a.to_string());
        if let Some(proxy) = peer
            && trusted_proxies.contains(&proxy.ip())
            && let Some(client) = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
                .next_back()
        {
            remote = Some(client.to_string());
        }
        let origin = headers
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            // A header is client-controlled: bound what reaches the logs.
            .map(|o| o.chars().take(200).collect());
        Peer { remote, origin }
    }

    fn remote(&self) -> &str {
        self.remote.as_deref().unwrap_or("-")
    }

    fn origin(&self) -> &str {
        self.origin.as_deref().unwrap_or("-")
    }

    /// A refused session: why (the message never contains a token), and from where.
    pub fn refused(&self, transport: &'static str, reason: &'static str, error: &ClientError) {
        tracing::info!(
            transport,
            reason,
            remote = %self.remote(),
            origin = %self.origin(),
            message = %error.message,
            "connection refused"
        );
    }

    pub fn opened(&self, transport: &'static str, conn: &str, user: Option<&str>) {
        tracing::info!(
            transport,
            conn,
            user = user.unwrap_or("-"),
            remote = %self.remote(),
            origin = %self.origin(),
            "connection opened"
        );
    }

    pub fn closed(
        &self,
        transport: &'static str,
        conn: &str,
        user: Option<&str>,
        since: std::time::Instant,
        ending: &crate::outbox::Ending,
    ) {
        let reason = match ending {
            crate::outbox::Ending::Close { reason, .. } => reason.as_str(),
            _ => "",
        };
        tracing::info!(
            transport,
            conn,
            user = user.unwrap_or("-"),
            remote = %self.remote(),
            duration_ms = since.elapsed().as_millis() as u64,
            close = ending.label(),
            reason,
            "connection closed"
        );
    }
}
