//! The token keys: a shared secret or a public key, the algorithms, and how they fit.

use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

use super::{Validator, name};
use crate::config::JwtConfig;

impl Validator {
    /// `None` when a value is wrong (already reported) or the keys do not fit together.
    pub(super) fn jwt(
        &mut self,
        secret: Option<Option<String>>,
        public_key: Option<Option<PathBuf>>,
        algorithm: Option<Option<Algorithm>>,
        (audience, issuer, leeway_s): (Option<Vec<String>>, Option<Vec<String>>, Option<u64>),
    ) -> Option<JwtConfig> {
        // A wrong value is already reported; a missing key is reported even so.
        let (secret, public_key) = (secret?, public_key?);
        let (algorithm, decoding_key, encoding_key) = match (secret, public_key) {
            (Some(_), Some(_)) => {
                self.problems.push(
                    "jwt_secret and jwt_public_key are both set: choose one, so the token algorithm is unambiguous".into(),
                );
                return None;
            }
            (None, None) => {
                self.problems.push(
                    "no token verification key: set jwt_secret (--jwt-secret / FANOUT_JWT_SECRET) or jwt_public_key (--jwt-public-key / FANOUT_JWT_PUBLIC_KEY)".into(),
                );
                return None;
            }
            (Some(secret), None) => {
                let alg = algorithm?.unwrap_or(Algorithm::HS256);
                if !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                    self.problems.push(format!(
                        "jwt_algorithm {} needs jwt_public_key; a secret only works with HS256/HS384/HS512",
                        name(alg)
                    ));
                    return None;
                }
                if secret.is_empty() {
                    self.problems.push("jwt_secret is empty".into());
                    return None;
                }
                if secret.len() < 32 {
                    self.warnings.push(format!(
                        "jwt_secret is {} bytes; use at least 32 random bytes in production",
                        secret.len()
                    ));
                }
                (
                    alg,
                    DecodingKey::from_secret(secret.as_bytes()),
                    Some(EncodingKey::from_secret(secret.as_bytes())),
                )
            }
            (None, Some(path)) => {
                let (alg, key) = self.public_key(&path, algorithm?)?;
                (alg, key, None)
            }
        };
        Some(JwtConfig {
            algorithm,
            decoding_key,
            encoding_key,
            audience: audience?,
            issuer: issuer?,
            leeway_s: leeway_s?,
        })
    }

    fn public_key(
        &mut self,
        path: &Path,
        algorithm: Option<Algorithm>,
    ) -> Option<(Algorithm, DecodingKey)> {
        let pem = match std::fs::read(path) {
            Ok(p) => p,
            Err(e) => {
                self.problems.push(format!(
                    "jwt_public_key {}: cannot read: {e}",
                    path.display()
                ));
                return None;
            }
        };
        let rsa = DecodingKey::from_rsa_pem(&pem).ok();
        let ec = DecodingKey::from_ec_pem(&pem).ok();
        let found = match (algorithm, rsa, ec) {
            (None | Some(Algorithm::RS256), Some(k), _) => Some((Algorithm::RS256, k)),
            (None | Some(Algorithm::ES256), None, Some(k)) => Some((Algorithm::ES256, k)),
            (
                Some(
                    a @ (Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512),
                ),
                Some(k),
                _,
            ) => Some((a, k)),
            (Some(a @ Algorithm::ES384), None, Some(k)) => Some((a, k)),
            _ => None,
        };
        if found.is_none() {
            self.problems.push(format!(
                "jwt_public_key {}: not a PEM public key that fits {}",
                path.display(),
                algorithm.map_or("RS256 (RSA) or ES256 (EC P-256)", name)
            ));
        }
        found
    }
}
