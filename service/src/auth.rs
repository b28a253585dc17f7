//! Authentication: a bearer JWT (HS256 shared secret or RS256 public key)
//! carrying tenant, subject, roles and clearance becomes the caller's
//! [`Principal`]. Missing, malformed, forged and expired tokens are
//! UNAUTHENTICATED; nothing of the engine is reached without a principal.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use casebook_engine::case::SYSTEM_ROLE;
use casebook_engine::log::TenantId;
use casebook_engine::security::{Classification, Principal};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tonic::{Request, Status};

use crate::config::{AuthConfig, DEV_SECRET_FILE};

/// The claims Casebook reads from a token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The caller (an officer's or a system's id).
    pub sub: String,
    /// The force (tenant) the caller acts for.
    pub tenant: String,
    /// The caller's roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// The caller's clearance (`OFFICIAL`, `OFFICIAL-SENSITIVE`, `SECRET`,
    /// `TOP SECRET`; `_` for the separators is accepted). Default OFFICIAL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clearance: Option<String>,
    /// Expiry, seconds since the Unix epoch (required).
    pub exp: u64,
    /// Issued at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

impl Claims {
    /// Claims for `sub` of `tenant`, valid for `ttl` from now.
    pub fn new(tenant: &str, sub: &str, ttl: Duration) -> Self {
        let now = unix_now();
        Claims {
            sub: sub.to_string(),
            tenant: tenant.to_string(),
            roles: Vec::new(),
            clearance: None,
            exp: now.saturating_add(ttl.as_secs()),
            iat: Some(now),
            iss: None,
            aud: None,
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A key or secret that could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// A key file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A key is not valid.
    #[error("{what}: {message}")]
    InvalidKey {
        /// Which key.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// Both an HS256 secret and an RS256 key are configured.
    #[error("configure either auth.hs256_secret_file or auth.rs256_public_key_file, not both")]
    Ambiguous,
}

/// Checks bearer tokens. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    key: DecodingKey,
    validation: Validation,
}

/// The caller, put in a request's extensions by [`Authenticator::intercept`].
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

/// Reads the HS256 secret configured, or the one generated in the data
/// directory (creating it, readable by the owner only, on first use).
///
/// Errors: [`AuthSetupError::Io`]; [`AuthSetupError::InvalidKey`] for a
/// secret shorter than 32 bytes.
pub fn hs256_secret(config: &AuthConfig, data: &Path) -> Result<Vec<u8>, AuthSetupError> {
    let path = match &config.hs256_secret_file {
        Some(p) => p.clone(),
        None => data.join(DEV_SECRET_FILE),
    };
    let io = |source| AuthSetupError::Io {
        path: path.clone(),
        source,
    };
    if config.hs256_secret_file.is_none() && !path.exists() {
        std::fs::create_dir_all(data).map_err(io)?;
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| io(std::io::Error::other(e.to_string())))?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        write_private(&path, hex.as_bytes()).map_err(io)?;
    }
    let secret = std::fs::read(&path).map_err(io)?;
    let secret = secret.trim_ascii().to_vec();
    if secret.len() < 32 {
        return Err(AuthSetupError::InvalidKey {
            what: path.display().to_string(),
            message: "an HS256 secret must be at least 32 bytes".into(),
        });
    }
    Ok(secret)
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

impl Authenticator {
    /// An authenticator for the configuration; `data` is where the
    /// development secret lives when no key is configured.
    ///
    /// Errors: [`AuthSetupError`].
    pub fn from_config(config: &AuthConfig, data: &Path) -> Result<Self, AuthSetupError> {
        let (key, algorithm) = match (&config.hs256_secret_file, &config.rs256_public_key_file) {
            (Some(_), Some(_)) => return Err(AuthSetupError::Ambiguous),
            (_, Some(pem)) => {
                let bytes = std::fs::read(pem).map_err(|source| AuthSetupError::Io {
                    path: pem.clone(),
                    source,
                })?;
                let key =
                    DecodingKey::from_rsa_pem(&bytes).map_err(|e| AuthSetupError::InvalidKey {
                        what: pem.display().to_string(),
                        message: e.to_string(),
                    })?;
                (key, Algorithm::RS256)
            }
            (_, None) => {
                let key = DecodingKey::from_secret(&hs256_secret(config, data)?).map_err(|e| {
                    AuthSetupError::InvalidKey {
                        what: "HS256 secret".into(),
                        message: e.to_string(),
                    }
                })?;
                (key, Algorithm::HS256)
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.leeway_seconds.unwrap_or(30);
        validation.set_required_spec_claims(&["exp", "sub"]);
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
        }
        match &config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Ok(Authenticator {
            inner: Arc::new(Inner { key, validation }),
        })
    }

    /// The principal a bearer token stands for.
    ///
    /// Errors: UNAUTHENTICATED saying what is wrong with the token (never
    /// which part of a forged signature failed).
    pub fn principal(&self, token: &str) -> Result<Principal, Status> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.inner.key, &self.inner.validation)
            .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            let why = match e.kind() {
                K::ExpiredSignature => "the token has expired",
                K::InvalidSignature => "the token's signature is not valid",
                K::InvalidIssuer => "the token's issuer is not accepted",
                K::InvalidAudience => "the token's audience is not accepted",
                K::ImmatureSignature => "the token is not valid yet",
                K::InvalidAlgorithm => "the token is signed with another algorithm",
                K::MissingRequiredClaim(_) => "the token lacks a required claim (exp, sub)",
                _ => "the token is malformed",
            };
            Status::unauthenticated(why)
        })?;
        let claims = data.claims;
        let tenant = TenantId::new(&claims.tenant)
            .map_err(|e| Status::unauthenticated(format!("the token's tenant claim: {e}")))?;
        if claims.sub.is_empty() {
            return Err(Status::unauthenticated("the token's sub claim is empty"));
        }
        if claims.roles.iter().any(|r| r == SYSTEM_ROLE) {
            return Err(Status::unauthenticated(format!(
                "the role {SYSTEM_ROLE} is the engine's own and cannot be granted by a token"
            )));
        }
        let clearance = match &claims.clearance {
            None => Classification::Official,
            Some(c) => parse_clearance(c).ok_or_else(|| {
                Status::unauthenticated(format!(
                    "the token's clearance {c:?} is not one of OFFICIAL, OFFICIAL-SENSITIVE, SECRET, TOP SECRET"
                ))
            })?,
        };
        let principal = Principal::checked(tenant, claims.sub)
            .map_err(|e| Status::unauthenticated(format!("the token's sub claim: {e}")))?
            .with_roles(claims.roles)
            .with_clearance(clearance);
        principal
            .validate()
            .map_err(|e| Status::unauthenticated(format!("the token's roles claim: {e}")))?;
        Ok(principal)
    }

    /// Checks the request's `authorization: Bearer <token>` and puts the
    /// [`Caller`] in its extensions (a tonic interceptor).
    ///
    /// Errors: UNAUTHENTICATED for a missing or bad header or token.
    pub fn intercept(&self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| {
                Status::unauthenticated(
                    "missing authorization metadata: send `authorization: Bearer <token>`",
                )
            })?
            .to_str()
            .map_err(|_| Status::unauthenticated("the authorization metadata is not text"))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| {
                Status::unauthenticated("the authorization metadata must be `Bearer <token>`")
            })?;
        let principal = self.principal(token.trim())?;
        request.extensions_mut().insert(Caller(principal));
        Ok(request)
    }
}

/// Parses a clearance claim.
pub fn parse_clearance(s: &str) -> Option<Classification> {
    match s
        .trim()
        .to_ascii_uppercase()
        .replace(['_', '-'], " ")
        .as_str()
    {
        "OFFICIAL" => Some(Classification::Official),
        "OFFICIAL SENSITIVE" => Some(Classification::OfficialSensitive),
        "SECRET" => Some(Classification::Secret),
        "TOP SECRET" => Some(Classification::TopSecret),
        _ => None,
    }
}

/// Signs claims with an HS256 secret (what `casebook token` does).
///
/// Errors: the signing library's, as text.
pub fn mint_hs256(secret: &[u8], claims: &Claims) -> Result<String, AuthSetupError> {
    let invalid = |e: jsonwebtoken::errors::Error| AuthSetupError::InvalidKey {
        what: "HS256 secret".into(),
        message: e.to_string(),
    };
    let key = EncodingKey::from_secret(secret).map_err(invalid)?;
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).map_err(invalid)
}

/// The caller of an authenticated request.
///
/// Errors: UNAUTHENTICATED if the request did not pass the interceptor.
pub fn caller<T>(request: &Request<T>) -> Result<Principal, Status> {
    request
        .extensions()
        .get::<Caller>()
        .map(|c| c.0.clone())
        .ok_or_else(|| Status::unauthenticated("no authenticated caller"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(secret: &[u8]) -> Authenticator {
        let dir = std::env::temp_dir().join(format!("casebook-auth-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, secret).unwrap();
        let config = AuthConfig {
            hs256_secret_file: Some(file),
            ..AuthConfig::default()
        };
        let a = Authenticator::from_config(&config, &dir).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
        a
    }

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_signed_token_becomes_a_principal() {
        let a = auth(SECRET);
        let mut claims = Claims::new("kent", "pc-1234", Duration::from_secs(60));
        claims.roles = vec!["investigator".into()];
        claims.clearance = Some("official_sensitive".into());
        let p = a.principal(&mint_hs256(SECRET, &claims).unwrap()).unwrap();
        assert_eq!(p.tenant.as_str(), "kent");
        assert_eq!(p.subject, "pc-1234");
        assert!(p.has_role("investigator"));
        assert_eq!(p.clearance, Classification::OfficialSensitive);
    }

    #[test]
    fn forged_expired_and_odd_tokens_are_unauthenticated() {
        let a = auth(SECRET);
        let claims = Claims::new("kent", "pc-1", Duration::from_secs(60));
        let forged = mint_hs256(b"another-secret-another-secret-xx", &claims).unwrap();
        let err = a.principal(&forged).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(err.message().contains("signature"), "{}", err.message());
        let mut old = claims.clone();
        old.exp = unix_now() - 3600;
        let err = a.principal(&mint_hs256(SECRET, &old).unwrap()).unwrap_err();
        assert!(err.message().contains("expired"), "{}", err.message());
        let mut system = claims.clone();
        system.roles = vec![SYSTEM_ROLE.into()];
        assert!(a.principal(&mint_hs256(SECRET, &system).unwrap()).is_err());
        let mut bad_clearance = claims.clone();
        bad_clearance.clearance = Some("COSMIC".into());
        assert!(a
            .principal(&mint_hs256(SECRET, &bad_clearance).unwrap())
            .is_err());
        let mut forged_subject = claims.clone();
        forged_subject.sub = "pc-1\n2026-01-05 09:00 case closed by ps-9".into();
        let err = a
            .principal(&mint_hs256(SECRET, &forged_subject).unwrap())
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(err.message().contains("sub claim"), "{}", err.message());
        assert!(!err.message().contains('\n'), "{}", err.message());
        let mut bad_role = claims.clone();
        bad_role.roles = vec!["investigator\r\nsupervisor".into()];
        let err = a
            .principal(&mint_hs256(SECRET, &bad_role).unwrap())
            .unwrap_err();
        assert!(err.message().contains("roles claim"), "{}", err.message());
        let mut bad_tenant = claims;
        bad_tenant.tenant = "../etc".into();
        assert!(a
            .principal(&mint_hs256(SECRET, &bad_tenant).unwrap())
            .is_err());
        assert!(a.principal("not.a.jwt").is_err());
    }

    #[test]
    fn a_short_secret_is_refused() {
        let dir = std::env::temp_dir().join(format!("casebook-auth-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, "short").unwrap();
        let config = AuthConfig {
            hs256_secret_file: Some(file),
            ..AuthConfig::default()
        };
        assert!(Authenticator::from_config(&config, &dir).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
