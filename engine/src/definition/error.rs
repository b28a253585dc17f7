//! Problems found in a definition, and the error that carries them all.

use std::fmt;

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
/// use casebook_engine::definition::CaseDefinition;
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
