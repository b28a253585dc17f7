//! Identifiers several areas share — [`TenantId`], [`ActorId`], [`CaseId`] —
//! and [`IdError`], so that the log, security and the case runtime can use
//! them without depending on one another.

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::ErrorKind;

/// An identifier that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The part was empty.
    #[error("{kind} must not be empty")]
    Empty {
        /// Which identifier.
        kind: &'static str,
    },
    /// The part was too long.
    #[error("{kind} is {len} bytes long; the maximum is {max}")]
    TooLong {
        /// Which identifier.
        kind: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The part held a character that is not allowed.
    #[error("{kind} '{value}' contains '{character}'; allowed are {allowed}")]
    BadCharacter {
        /// Which identifier.
        kind: &'static str,
        /// The rejected value.
        value: String,
        /// The first bad character.
        character: char,
        /// What is allowed.
        allowed: &'static str,
    },
    /// A composite id did not have the expected shape.
    #[error("'{value}' is not of the form {expected}")]
    Malformed {
        /// The rejected value.
        value: String,
        /// The expected shape.
        expected: &'static str,
    },
}

impl IdError {
    /// What the error means to a caller: always
    /// [`ErrorKind::InvalidArgument`], naming the identifier at fault
    /// (`tenant_id`, `stream_category`, `stream_id`, or `stream` for a
    /// malformed composite id).
    pub fn kind(&self) -> ErrorKind {
        match self {
            IdError::Empty { kind }
            | IdError::TooLong { kind, .. }
            | IdError::BadCharacter { kind, .. } => ErrorKind::invalid(kind.replace(' ', "_")),
            IdError::Malformed { .. } => ErrorKind::invalid("stream"),
        }
    }
}

/// Longest tenant id, category or stream id part, in bytes.
pub const MAX_ID_PART_LEN: usize = 128;
pub(crate) fn validate_part(
    kind: &'static str,
    value: &str,
    extra: &[char],
) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > MAX_ID_PART_LEN {
        return Err(IdError::TooLong {
            kind,
            len: value.len(),
            max: MAX_ID_PART_LEN,
        });
    }
    if let Some(bad) = value.chars().find(|c| {
        !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || *c == '.' || extra.contains(c))
    }) {
        return Err(IdError::BadCharacter {
            kind,
            value: value.to_string(),
            character: bad,
            allowed: if extra.is_empty() {
                "ASCII letters, digits, '-', '_' and '.'"
            } else {
                "ASCII letters, digits, '-', '_', '.', ':' and '@'"
            },
        });
    }
    Ok(())
}

/// A tenant (one police force or other body): part of every stream's identity.
///
/// 1 to 128 bytes of ASCII letters, digits, `-`, `_` and `.`.
///
/// ```
/// use casebook::log::TenantId;
/// assert!(TenantId::new("met-police").is_ok());
/// assert!(TenantId::new("met/police").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct TenantId(Arc<str>);

impl TenantId {
    /// Validates and wraps a tenant id. Errors: [`IdError`] naming the problem.
    pub fn new(value: impl AsRef<str>) -> Result<Self, IdError> {
        let value = value.as_ref();
        validate_part("tenant id", value, &[])?;
        Ok(TenantId(Arc::from(value)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        TenantId::new(&*s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({})", self.0)
    }
}

/// The id of whoever caused an event: a person's or a system's principal id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ActorId(pub String);

impl ActorId {
    /// Wraps a principal id.
    pub fn new(id: impl Into<String>) -> Self {
        ActorId(id.into())
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of a case, unique within its tenant, e.g. `BUR-2026-000123`.
///
/// 1 to 128 bytes of ASCII letters, digits, `-`, `_`, `.`, `:` and `@` (it
/// is the last part of the case's stream id, `<tenant>/case/<case id>`).
/// It dereferences to `str`, so it compares with and passes as text.
///
/// ```
/// use casebook::case::CaseId;
/// let id: CaseId = "BUR-2026-000123".parse().unwrap();
/// assert_eq!(id, "BUR-2026-000123");
/// assert!(CaseId::new("BUR/1").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct CaseId(Arc<str>);

impl CaseId {
    /// Validates and wraps a case id. Errors: [`IdError`] naming the problem.
    pub fn new(value: impl AsRef<str>) -> Result<Self, IdError> {
        let value = value.as_ref();
        validate_part("case id", value, &[':', '@'])?;
        Ok(CaseId(Arc::from(value)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for CaseId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for CaseId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for CaseId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        CaseId::new(s)
    }
}

impl TryFrom<&str> for CaseId {
    type Error = IdError;
    fn try_from(s: &str) -> Result<Self, IdError> {
        CaseId::new(s)
    }
}

impl TryFrom<String> for CaseId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        CaseId::new(s)
    }
}

impl<'de> Deserialize<'de> for CaseId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        CaseId::new(&*s).map_err(serde::de::Error::custom)
    }
}

impl PartialEq<str> for CaseId {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for CaseId {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for CaseId {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl fmt::Display for CaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaseId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_like_a_stream_id_part() {
        assert!(CaseId::new("kent:BUR@2026.1_a-b").is_ok());
        assert!(matches!(CaseId::new(""), Err(IdError::Empty { .. })));
        assert!(matches!(
            CaseId::new("a b"),
            Err(IdError::BadCharacter { character: ' ', .. })
        ));
        assert!(CaseId::new("x".repeat(129)).is_err());
        let bad: Result<CaseId, _> = rmp_serde::from_slice(&rmp_serde::to_vec("a/b").unwrap());
        assert!(bad.is_err());
        let id = CaseId::new("BUR-1").unwrap();
        let back: CaseId = rmp_serde::from_slice(&rmp_serde::to_vec(&id).unwrap()).unwrap();
        assert_eq!(back, id);
    }
}
