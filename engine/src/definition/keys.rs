//! Keys: the validated identifiers a definition uses to name things.

use std::borrow::Borrow;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ErrorKind;

/// Longest identifier accepted.
pub const MAX_IDENTIFIER_LEN: usize = 64;

/// Words CEL reserves; a field or plan item named like one could not be
/// written in a condition.
const CEL_RESERVED: [&str; 21] = [
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// Names conditions already use for plan state and CEL types.
const CONDITION_NAMES: [&str; 12] = [
    "state",
    "reached",
    "int",
    "uint",
    "double",
    "string",
    "bool",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
];

/// A name a definition (or a request) cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not a lower-case identifier of at most [`MAX_IDENTIFIER_LEN`] characters.
    #[error("'{name}' is not a valid identifier: use a lower-case letter followed by lower-case letters, digits or '_' (at most {MAX_IDENTIFIER_LEN})")]
    InvalidIdentifier {
        /// The rejected name.
        name: String,
    },
    /// A CEL reserved word or a name conditions already use.
    #[error("'{name}' is reserved in conditions; choose another name")]
    ReservedInConditions {
        /// The rejected name.
        name: String,
    },
    /// Not identifiers separated by dots.
    #[error("'{name}' is not a valid service name: use identifiers separated by dots, e.g. 'gis.locate_ward'")]
    InvalidServiceName {
        /// The rejected name.
        name: String,
    },
}

impl NameError {
    /// What the error means to a caller: [`ErrorKind::InvalidArgument`]
    /// (the caller knows where the name sits; a definition's
    /// [`crate::definition::DefinitionError`] gives the path).
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument { paths: Vec::new() }
    }
}

fn identifier(s: &str) -> Result<(), NameError> {
    let mut chars = s.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !first_ok || !rest_ok || s.len() > MAX_IDENTIFIER_LEN {
        return Err(NameError::InvalidIdentifier {
            name: s.to_string(),
        });
    }
    Ok(())
}

/// Checks an identifier: a lower-case letter, then lower-case letters, digits
/// or `_`, at most [`MAX_IDENTIFIER_LEN`] characters.
///
/// # Errors
/// [`NameError::InvalidIdentifier`], whose message reads e.g.
/// `'Grade' is not a valid identifier: ...`.
pub fn check_identifier(s: &str) -> Result<(), NameError> {
    identifier(s)
}

/// Like [`check_identifier`], and also rejects names that conditions cannot
/// refer to (CEL reserved words, `state`, `reached`, CEL type names).
///
/// # Errors
/// [`NameError::InvalidIdentifier`] or [`NameError::ReservedInConditions`].
pub fn check_condition_name(s: &str) -> Result<(), NameError> {
    identifier(s)?;
    if CEL_RESERVED.contains(&s) || CONDITION_NAMES.contains(&s) {
        return Err(NameError::ReservedInConditions {
            name: s.to_string(),
        });
    }
    Ok(())
}

/// Checks a service name: identifiers separated by dots, e.g. `gis.locate_ward`.
///
/// # Errors
/// [`NameError::InvalidServiceName`].
pub fn check_service_name(s: &str) -> Result<(), NameError> {
    if s.split('.').all(|part| identifier(part).is_ok()) {
        Ok(())
    } else {
        Err(NameError::InvalidServiceName {
            name: s.to_string(),
        })
    }
}

macro_rules! key_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Deserializing does not validate; [`crate::definition::CaseDefinition::validate`] does.
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a string (unvalidated).
            pub fn new(s: impl Into<String>) -> Self {
                $name(s.into())
            }

            /// The key as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_string())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

key_type!(
    /// The key of a case type, e.g. `burglary`.
    CaseTypeKey
);
key_type!(
    /// The key of a plan item (activity, stage or milestone), unique across the
    /// whole plan.
    ItemKey
);
key_type!(
    /// The key of a case-file field; conditions refer to the field by it.
    FieldKey
);
key_type!(
    /// The key of a role, e.g. `investigator`.
    RoleKey
);
key_type!(
    /// The key of a team, e.g. `cid` or `missing_persons`: a work queue that
    /// human tasks are routed to.
    TeamKey
);
key_type!(
    /// The key of an SLA deadline, unique in the definition.
    DeadlineKey
);
key_type!(
    /// The name of an external service, e.g. `gis.locate_ward`.
    ServiceName
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(check_identifier("house_to_house2").is_ok());
        assert!(check_identifier("Grade").is_err());
        assert!(check_identifier("2nd").is_err());
        assert!(check_identifier("").is_err());
        assert!(check_identifier("a-b").is_err());
        assert!(check_identifier(&"a".repeat(65)).is_err());
        let reserved = check_condition_name("in").unwrap_err();
        assert_eq!(
            reserved,
            NameError::ReservedInConditions { name: "in".into() }
        );
        assert_eq!(
            reserved.to_string(),
            "'in' is reserved in conditions; choose another name"
        );
        assert_eq!(
            check_condition_name("Grade"),
            Err(NameError::InvalidIdentifier {
                name: "Grade".into()
            })
        );
        assert!(check_condition_name("state").is_err());
        assert!(check_service_name("gis.locate_ward").is_ok());
        assert_eq!(
            check_service_name("gis..x"),
            Err(NameError::InvalidServiceName {
                name: "gis..x".into()
            })
        );
        assert_eq!(
            reserved.kind(),
            ErrorKind::InvalidArgument { paths: vec![] }
        );
    }
}
