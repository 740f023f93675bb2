//! Tokens: verifying them (every session) and minting them (`fanout token`).
//!
//! Two kinds, signed with the same key: a **connection token** (who the client is and what it
//! may subscribe to and publish), and a **channel token** (the right of one user to one
//! channel the connection token does not grant; it has a `channel` claim, and is accepted
//! only with a `subscribe` of that channel). Neither is accepted as the other.
//!
//! The algorithm is pinned by configuration: a token whose header names any other algorithm
//! (including `none`, or HS256 signed with an RSA public key as the secret) is rejected before
//! its signature is looked at. `exp` and `sub` are required; `jti` and `iat` are what a
//! revocation names (by token, and by user with a cut-off time).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{EncodingKey, Header, Validation};
use serde::{Deserialize, Deserializer};

use crate::channel::{Channel, ChannelPattern, parse_patterns};
use crate::config::JwtConfig;

/// The claims fanout reads from a token. Others are ignored; `aud`, `iss` and `nbf` are
/// checked by the JWT library from the raw claims (strings or arrays alike).
#[derive(Debug, Clone, Deserialize)]
struct Claims {
    /// The user id; a JSON string or number.
    #[serde(default, deserialize_with = "string_or_number")]
    sub: Option<String>,
    /// Required; optional here only so that its absence gets its own error message. A JSON
    /// number (fractions allowed, as RFC 7519 permits).
    #[serde(default)]
    exp: Option<f64>,
    /// Channels this token may subscribe to: exact names or prefixes ending in `*`.
    #[serde(default, deserialize_with = "list_or_string")]
    channels: Vec<String>,
    /// Channels this token may publish to (same patterns as `channels`).
    #[serde(default, deserialize_with = "list_or_string")]
    publish: Vec<String>,
    /// Application data about the user, shown to others in presence.
    #[serde(default)]
    info: Option<serde_json::Value>,
    /// The token's id, for revoking this one token.
    #[serde(default)]
    jti: Option<String>,
    /// When it was issued (seconds), for revoking a user's tokens issued before a time.
    #[serde(default)]
    iat: Option<f64>,
    /// Set on channel tokens only: the one channel it grants.
    #[serde(default)]
    channel: Option<String>,
}

/// Who a verified token says the client is, and what it may do.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: String,
    /// Seconds since the Unix epoch.
    pub expires_at: i64,
    pub channels: Vec<ChannelPattern>,
    /// Channels it may publish to.
    pub publish: Vec<ChannelPattern>,
    pub info: Option<serde_json::Value>,
    /// What a revocation may name it by.
    pub credential: Credential,
}

/// What a revocation can name a token by: its id, its user and when it was issued.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credential {
    pub jti: Option<String>,
    /// Seconds since the Unix epoch; a token without `iat` counts as issued at 0 (before any
    /// cut-off).
    pub issued_at: i64,
}

/// A verified channel token: `user` may subscribe to `channel` until `expires_at`.
#[derive(Debug, Clone)]
pub struct ChannelGrant {
    pub user: String,
    pub channel: Channel,
    /// Seconds since the Unix epoch.
    pub expires_at: i64,
    /// Shown in the channel's presence instead of the connection token's `info`, if set.
    pub info: Option<serde_json::Value>,
    pub credential: Credential,
}

impl Identity {
    /// Whether the token's `channels` claim grants this channel.
    pub fn grants(&self, channel: &Channel) -> bool {
        self.channels.iter().any(|p| p.matches(channel))
    }

    /// Whether the token's `publish` claim grants publishing to this channel.
    pub fn may_publish(&self, channel: &Channel) -> bool {
        self.publish.iter().any(|p| p.matches(channel))
    }
}

/// Why a token was refused. The message is safe to show to the client and to log: it never
/// contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthError(pub &'static str);

/// Checks tokens against the configured key and rules.
#[derive(Clone)]
pub struct Verifier {
    jwt: JwtConfig,
    validation: Validation,
}

impl Verifier {
    pub fn new(jwt: &JwtConfig) -> Verifier {
        let mut validation = Validation::new(jwt.algorithm);
        validation.leeway = jwt.leeway_s;
        // `sub` is checked below: jsonwebtoken only accepts it as a string.
        let mut required = vec!["exp"];
        validation.validate_nbf = true;
        if jwt.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&jwt.audience);
            required.push("aud");
        }
        if !jwt.issuer.is_empty() {
            validation.set_issuer(&jwt.issuer);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Verifier {
            jwt: jwt.clone(),
            validation,
        }
    }

    /// Verifies a connection token.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let claims = self.claims(token)?;
        if claims.channel.is_some() {
            return Err(AuthError(
                "this is a channel token (it has a `channel` claim): connect with a connection token, and send it with the `subscribe` of its channel",
            ));
        }
        let (user, expires_at, credential) = Self::subject(&claims)?;
        Ok(Identity {
            channels: parse_patterns(claims.channels.iter().map(String::as_str)),
            publish: parse_patterns(claims.publish.iter().map(String::as_str)),
            user,
            expires_at,
            info: claims.info,
            credential,
        })
    }

    /// Verifies a channel token (`sub`, `channel`, `exp`, optional `info`).
    pub fn verify_channel(&self, token: &str) -> Result<ChannelGrant, AuthError> {
        let claims = self.claims(token)?;
        let Some(channel) = claims.channel.as_deref() else {
            return Err(AuthError("not a channel token: it has no `channel` claim"));
        };
        let channel = Channel::parse(channel)
            .map_err(|_| AuthError("channel token `channel` is not a valid channel name"))?;
        let (user, expires_at, credential) = Self::subject(&claims)?;
        Ok(ChannelGrant {
            user,
            channel,
            expires_at,
            info: claims.info,
            credential,
        })
    }

    /// The user, expiry and revocation names of verified claims.
    fn subject(claims: &Claims) -> Result<(String, i64, Credential), AuthError> {
        let Some(exp) = claims.exp else {
            return Err(AuthError("token has no `exp` claim"));
        };
        let Some(sub) = claims.sub.clone() else {
            return Err(AuthError("token has no `sub` claim"));
        };
        if Channel::user(&sub).is_err() {
            return Err(AuthError(
                "token `sub` is not a valid user id (letters, digits, `_ - . : @`, at most 123 bytes)",
            ));
        }
        let credential = Credential {
            jti: claims
                .jti
                .clone()
                .filter(|j| !j.is_empty() && j.len() <= 256),
            issued_at: claims.iat.map_or(0, |t| t.floor() as i64),
        };
        Ok((sub, exp.floor() as i64, credential))
    }

    /// The claims of a token whose algorithm and signature check out.
    fn claims(&self, token: &str) -> Result<Claims, AuthError> {
        // The header first: an unknown algorithm (`none`) does not even parse as a header.
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::Json(_) => AuthError(
                "token header is malformed or names an unsupported algorithm (such as none)",
            ),
            _ => AuthError("token is malformed"),
        })?;
        if header.alg != self.jwt.algorithm {
            return Err(AuthError(
                "token algorithm is not the one this server accepts",
            ));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.jwt.decoding_key, &self.validation)
            .map_err(|e| AuthError(describe(e.kind())))?;
        Ok(data.claims)
    }
}

fn describe(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "token expired",
        ErrorKind::ImmatureSignature => "token not valid yet (nbf)",
        ErrorKind::InvalidSignature => "token signature does not verify",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "token algorithm is not the one this server accepts"
        }
        ErrorKind::InvalidAudience => "token audience (aud) not accepted",
        ErrorKind::InvalidIssuer => "token issuer (iss) not accepted",
        ErrorKind::MissingRequiredClaim(c) if c == "exp" => "token has no `exp` claim",
        ErrorKind::MissingRequiredClaim(c) if c == "sub" => "token has no `sub` claim",
        ErrorKind::MissingRequiredClaim(_) => "token lacks a required claim",
        ErrorKind::InvalidClaimFormat(_) | ErrorKind::Json(_) => "token claims are malformed",
        _ => "token is malformed",
    }
}

/// What `fanout token` puts in a development token.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    pub sub: String,
    pub channels: Vec<String>,
    pub publish: Vec<String>,
    pub ttl: Duration,
    pub info: Option<serde_json::Value>,
    pub audience: Option<String>,
    pub issuer: Option<String>,
    /// Mint a channel token for this one channel instead of a connection token.
    pub channel: Option<String>,
    /// A token id (`jti`), to revoke this token alone later.
    pub jti: Option<String>,
}

/// Signs a token with the configured algorithm.
pub fn mint(
    jwt: &JwtConfig,
    key: &EncodingKey,
    req: &TokenRequest,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let mut claims = serde_json::json!({
        "sub": req.sub,
        "exp": now + req.ttl.as_secs() as i64,
        "iat": now,
    });
    if let Some(channel) = &req.channel {
        claims["channel"] = channel.clone().into();
    }
    if let Some(jti) = &req.jti {
        claims["jti"] = jti.clone().into();
    }
    if !req.channels.is_empty() {
        claims["channels"] = serde_json::json!(req.channels);
    }
    if !req.publish.is_empty() {
        claims["publish"] = serde_json::json!(req.publish);
    }
    if let Some(info) = &req.info {
        claims["info"] = info.clone();
    }
    if let Some(aud) = req
        .audience
        .clone()
        .or_else(|| jwt.audience.first().cloned())
    {
        claims["aud"] = aud.into();
    }
    if let Some(iss) = req.issuer.clone().or_else(|| jwt.issuer.first().cloned()) {
        claims["iss"] = iss.into();
    }
    jsonwebtoken::encode(&Header::new(jwt.algorithm), &claims, key)
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Sub {
        S(String),
        N(serde_json::Number),
    }
    Ok(match Option::<Sub>::deserialize(d)? {
        Some(Sub::S(s)) => Some(s),
        Some(Sub::N(n)) => Some(n.to_string()),
        None => None,
    })
}

fn list_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum L {
        List(Vec<String>),
        One(String),
    }
    Ok(match L::deserialize(d)? {
        L::List(v) => v,
        L::One(s) => s.split(',').map(|x| x.trim().to_owned()).collect(),
    })
}

/// The credential from `Authorization: Bearer <credential>`, if any (a token on `/ws` and
/// `/sse`, an API key on `/api`). Other schemes are ignored.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<String> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}
