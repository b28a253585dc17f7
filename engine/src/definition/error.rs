//! Problems found in a definition, and the error that carries them all.

use std::fmt;

use crate::error::ErrorKind;

/// What sort of problem a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// The TOML or JSON is malformed, or does not have the model's shape
    /// (unknown or missing keys, wrong value types).
    Syntax,
    /// A key or name is not a valid identifier.
    InvalidIdentifier,
    /// Two things share a key.
    Duplicate,
    /// A reference to an item, field, role, service, parameter or milestone
    /// that is not declared (or of the wrong kind).
    UnknownReference,
    /// A CEL source does not compile.
    InvalidCel,
    /// A CEL source reads a case-file field that is not declared.
    UnknownField,
    /// Types that cannot fit: a comparison that cannot succeed, a mapping into a
    /// field of another type, a value an enumeration does not allow.
    TypeMismatch,
    /// A sentry listens to its own item.
    SelfReference,
    /// A value would flow to a lower marking than the information it
    /// reveals (see `CaseDefinition::markings`).
    Downgrade,
    /// Anything else the rules forbid (a discretionary item with entry
    /// criteria, an empty sentry, a bad period...).
    Invalid,
}

/// One problem, with the path of the offending field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: e.g. `stages[1].activities[0].entry[0].if`; empty for the
    /// document as a whole.
    pub path: String,
    /// The sort of problem.
    pub kind: ProblemKind,
    /// What is wrong, and where possible how to fix it.
    pub message: String,
    /// 1-based line and column in the source, when the parser gives them.
    pub location: Option<(usize, usize)>,
}

impl Problem {
    pub(crate) fn new(
        path: impl Into<String>,
        kind: ProblemKind,
        message: impl Into<String>,
    ) -> Self {
        Problem {
            path: path.into(),
            kind,
            message: message.into(),
            location: None,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.location, self.path.is_empty()) {
            (Some((line, col)), _) => write!(f, "line {line}, column {col}: {}", self.message),
            (None, true) => write!(f, "{}", self.message),
            (None, false) => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// A definition that cannot be used, with every problem found.
///
/// ```
/// use casebook::definition::CaseDefinition;
/// let err = CaseDefinition::from_toml("key = 'Bad Key'").unwrap_err();
/// assert!(err.to_string().starts_with("invalid case definition"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DefinitionError {
    /// Every problem, in document order.
    pub problems: Vec<Problem>,
}

impl DefinitionError {
    /// Whether some problem sits at `path` with exactly `message`.
    pub fn has(&self, path: &str, message: &str) -> bool {
        self.problems
            .iter()
            .any(|p| p.path == path && p.message == message)
    }

    /// What the error means to a caller: [`ErrorKind::InvalidArgument`]
    /// naming the path of every problem, in document order, each once
    /// (problems about the document as a whole have no path and add none).
    pub fn kind(&self) -> ErrorKind {
        let mut paths: Vec<String> = Vec::new();
        for p in &self.problems {
            if !p.path.is_empty() && !paths.contains(&p.path) {
                paths.push(p.path.clone());
            }
        }
        ErrorKind::InvalidArgument { paths }
    }
}

impl fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "invalid case definition ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_names_every_problems_path_once() {
        let err = DefinitionError {
            problems: vec![
                Problem::new("", ProblemKind::Syntax, "not TOML"),
                Problem::new("key", ProblemKind::InvalidIdentifier, "bad key"),
                Problem::new("stages[0].entry", ProblemKind::InvalidCel, "bad CEL"),
                Problem::new("key", ProblemKind::Invalid, "again"),
            ],
        };
        assert_eq!(
            err.kind(),
            ErrorKind::InvalidArgument {
                paths: vec!["key".into(), "stages[0].entry".into()]
            }
        );
        let whole = DefinitionError {
            problems: vec![Problem::new("", ProblemKind::Syntax, "not TOML")],
        };
        assert_eq!(whole.kind(), ErrorKind::InvalidArgument { paths: vec![] });
    }

    #[test]
    fn a_parsed_definitions_problems_carry_their_paths() {
        let err = crate::definition::CaseDefinition::from_toml(
            "key = 'Bad Key'\nname = 'K'\nversion = 1\nretention = { group = 'group1' }\n\
             [[milestones]]\nkey = 'm'\nname = 'M'\nentry = [{ if = \"y == 1\" }]",
        )
        .unwrap_err();
        let ErrorKind::InvalidArgument { paths } = err.kind() else {
            panic!("{err}");
        };
        assert!(paths.contains(&"key".to_string()), "{err}: {paths:?}");
        assert!(paths.len() >= 2, "{err}: {paths:?}");
    }
}
