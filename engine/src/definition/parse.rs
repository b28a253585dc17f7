//! Reading definitions from TOML and JSON, then validating them.

use super::error::{DefinitionError, Problem, ProblemKind};
use super::model::CaseDefinition;
use super::validate::validate;

/// The formats a definition can be authored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// TOML (the bundled definitions use it).
    Toml,
    /// JSON.
    Json,
}

impl CaseDefinition {
    /// Parses and validates a TOML definition.
    ///
    /// # Errors
    /// [`DefinitionError`] with one [`ProblemKind::Syntax`] problem (with line
    /// and column) when the TOML is malformed or not shaped like a definition,
    /// otherwise with every validation problem found.
    ///
    /// ```
    /// use casebook::definition::CaseDefinition;
    /// let def = CaseDefinition::from_toml(r#"
    ///     key = "lost_property"
    ///     name = "Lost property"
    ///     version = 1
    ///     retention = { group = "group3" }
    ///     [[activities]]
    ///     key = "record"
    ///     name = "Record the item"
    ///     kind = "automatic"
    /// "#).unwrap();
    /// assert_eq!(def.plan_items().len(), 1);
    /// ```
    pub fn from_toml(source: &str) -> Result<Self, DefinitionError> {
        Self::parse(source, Format::Toml)
    }

    /// Parses and validates a JSON definition.
    ///
    /// # Errors
    /// As [`CaseDefinition::from_toml`].
    pub fn from_json(source: &str) -> Result<Self, DefinitionError> {
        Self::parse(source, Format::Json)
    }

    /// Parses and validates a definition in `format`.
    ///
    /// # Errors
    /// As [`CaseDefinition::from_toml`].
    pub fn parse(source: &str, format: Format) -> Result<Self, DefinitionError> {
        let def = Self::parse_shape(source, format)?;
        def.validate()?;
        Ok(def)
    }

    /// Parses a definition an engine deployed earlier, as it reads it back
    /// from the log: validated, but not dry-run again (the dry run of
    /// opening is a deploy-time judgement; a definition deployed before it
    /// existed must keep loading, and loading must not pay for a trial
    /// opening). Its fingerprint is what the caller checks.
    pub(crate) fn parse_deployed(source: &str, format: Format) -> Result<Self, DefinitionError> {
        let def = Self::parse_shape(source, format)?;
        let problems = super::validate::validate_static(&def);
        if problems.is_empty() {
            Ok(def)
        } else {
            Err(DefinitionError { problems })
        }
    }

    fn parse_shape(source: &str, format: Format) -> Result<Self, DefinitionError> {
        let def: CaseDefinition = match format {
            Format::Toml => toml::from_str(source).map_err(|e| {
                let location = e.span().map(|span| line_col(source, span.start));
                syntax(e.message().trim().to_string(), location)
            })?,
            Format::Json => serde_json::from_str(source).map_err(|e| {
                let location = (e.line() > 0).then(|| (e.line(), e.column()));
                let full = e.to_string();
                let message = match full.rfind(" at line ") {
                    Some(i) => full[..i].to_string(),
                    None => full,
                };
                syntax(message, location)
            })?,
        };
        Ok(def)
    }

    /// Checks every rule a definition must follow (identifiers, references,
    /// duplicates, CEL compilation and types, control rules, deadlines).
    ///
    /// # Errors
    /// [`DefinitionError`] listing every problem, in document order.
    pub fn validate(&self) -> Result<(), DefinitionError> {
        let problems = validate(self);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(DefinitionError { problems })
        }
    }
}

fn syntax(message: String, location: Option<(usize, usize)>) -> DefinitionError {
    DefinitionError {
        problems: vec![Problem {
            location,
            ..Problem::new("", ProblemKind::Syntax, message)
        }],
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
