//! [`CaseId`]: the validated id of a case within its tenant.

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::log::IdError;

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
        crate::log::types::validate_part("case id", value, &[':', '@'])?;
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
