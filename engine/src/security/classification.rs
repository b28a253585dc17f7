//! Government Security Classifications, ordered from least to most protected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ErrorKind;

/// A Government Security Classification marking.
///
/// The variants are ordered: `Official < OfficialSensitive < Secret < TopSecret`,
/// so "does this clearance cover that marking" is a plain comparison.
/// OFFICIAL-SENSITIVE is, strictly, a handling caveat on OFFICIAL; Casebook treats
/// it as its own step because access to it is restricted the same way.
///
/// ```
/// use casebook::security::Classification;
/// let c: Classification = "OFFICIAL-SENSITIVE".parse().unwrap();
/// assert!(c > Classification::Official);
/// assert_eq!(c.to_string(), "OFFICIAL-SENSITIVE");
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub enum Classification {
    /// The default for routine public-sector business.
    #[default]
    #[serde(rename = "OFFICIAL")]
    Official,
    /// OFFICIAL information that needs need-to-know handling.
    #[serde(rename = "OFFICIAL-SENSITIVE")]
    OfficialSensitive,
    /// Serious threats, e.g. from organised crime.
    #[serde(rename = "SECRET")]
    Secret,
    /// The most sensitive information.
    #[serde(rename = "TOP SECRET")]
    TopSecret,
}

impl Classification {
    /// Every marking, least protected first.
    pub const ALL: [Classification; 4] = [
        Classification::Official,
        Classification::OfficialSensitive,
        Classification::Secret,
        Classification::TopSecret,
    ];

    /// The marking as written on documents, e.g. `OFFICIAL-SENSITIVE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Classification::Official => "OFFICIAL",
            Classification::OfficialSensitive => "OFFICIAL-SENSITIVE",
            Classification::Secret => "SECRET",
            Classification::TopSecret => "TOP SECRET",
        }
    }
}

impl fmt::Display for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of the four markings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown classification '{0}': expected OFFICIAL, OFFICIAL-SENSITIVE, SECRET or TOP SECRET"
)]
pub struct ParseClassificationError(pub String);

impl ParseClassificationError {
    /// What the error means to a caller: [`ErrorKind::InvalidArgument`]
    /// (the caller knows which classification it parsed).
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument { paths: Vec::new() }
    }
}

impl FromStr for Classification {
    type Err = ParseClassificationError;

    /// Accepts the markings in any case, with `-`, `_` or a space between words.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let normal: String = s
            .trim()
            .chars()
            .map(|c| {
                if c == '_' || c == ' ' {
                    '-'
                } else {
                    c.to_ascii_uppercase()
                }
            })
            .collect();
        match normal.as_str() {
            "OFFICIAL" => Ok(Classification::Official),
            "OFFICIAL-SENSITIVE" => Ok(Classification::OfficialSensitive),
            "SECRET" => Ok(Classification::Secret),
            "TOP-SECRET" => Ok(Classification::TopSecret),
            _ => Err(ParseClassificationError(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markings_are_ordered_and_round_trip() {
        for pair in Classification::ALL.windows(2) {
            assert!(pair[0] < pair[1]);
        }
        for c in Classification::ALL {
            assert_eq!(c.as_str().parse::<Classification>(), Ok(c));
            let bytes = rmp_serde::to_vec(&c).unwrap();
            assert_eq!(rmp_serde::from_slice::<Classification>(&bytes).unwrap(), c);
        }
        assert_eq!("top_secret".parse(), Ok(Classification::TopSecret));
    }

    #[test]
    fn unknown_marking_is_a_clear_error() {
        let err = "RESTRICTED".parse::<Classification>().unwrap_err();
        assert!(err.to_string().contains("RESTRICTED"));
        assert!(err.to_string().contains("OFFICIAL-SENSITIVE"));
    }

    #[test]
    fn an_unknown_marking_is_an_invalid_argument() {
        let err = "RESTRICTED".parse::<Classification>().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument { paths: vec![] });
    }
}
