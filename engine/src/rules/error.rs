//! Errors raised while compiling or evaluating CEL.

use crate::error::ErrorKind;

/// A CEL source that does not compile.
///
/// Carries the first syntax error's position (1-based, within the expression)
/// and the parser's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CEL at column {column}: {message}")]
pub struct CompileError {
    /// 1-based line within the expression.
    pub line: u32,
    /// 1-based column within the expression.
    pub column: u32,
    /// What the parser objected to.
    pub message: String,
}

impl CompileError {
    /// What the error means to a caller: [`ErrorKind::InvalidArgument`].
    /// The expression does not know where it sits; a definition's error
    /// ([`crate::definition::DefinitionError`]) gives the path.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument { paths: Vec::new() }
    }

    pub(crate) fn from_parse(errors: &cel::ParseErrors) -> Self {
        match errors.errors.first() {
            Some(first) => CompileError {
                line: u32::try_from(first.pos.0).unwrap_or(1).max(1),
                column: u32::try_from(first.pos.1).unwrap_or(1).max(1),
                message: first.msg.clone(),
            },
            None => CompileError {
                line: 1,
                column: 1,
                message: "the expression does not parse".to_string(),
            },
        }
    }
}

/// Why a condition or expression could not be evaluated.
///
/// An absent case-file field is *not* an error (see the module docs); these
/// are the failures a runtime should record against the command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// The source never compiled (only possible for a definition that was not
    /// validated, e.g. built in code).
    #[error("`{expression}` cannot be evaluated: {error}")]
    NotCompiled {
        /// The CEL source.
        expression: String,
        /// The compile error.
        error: CompileError,
    },
    /// A condition produced something other than a boolean.
    #[error("condition `{expression}` produced a {got}, not a boolean")]
    NotABoolean {
        /// The CEL source.
        expression: String,
        /// The CEL type name of the value it produced.
        got: String,
    },
    /// An operator or function was applied to values of types it does not
    /// accept, e.g. `age > 'ten'` when `age` is an integer.
    #[error("type error in `{expression}`: '{function}' cannot be applied to ({})", argument_types.join(", "))]
    TypeMismatch {
        /// The CEL source.
        expression: String,
        /// The operator or function, e.g. `_>_` or `contains`.
        function: String,
        /// The runtime types of its arguments (receiver first for methods).
        argument_types: Vec<String>,
    },
    /// The expression called a function this engine does not provide.
    #[error("`{expression}` calls unknown function '{function}'")]
    UnknownFunction {
        /// The CEL source.
        expression: String,
        /// The function name.
        function: String,
    },
    /// Division or remainder by zero.
    #[error("division by zero in `{expression}`")]
    DivisionByZero {
        /// The CEL source.
        expression: String,
    },
    /// A value could not be passed in or out of CEL (e.g. a NaN decimal, or
    /// bytes where JSON is expected).
    #[error("value not representable in `{expression}`: {reason}")]
    Unrepresentable {
        /// The CEL source.
        expression: String,
        /// What could not be represented.
        #[source]
        reason: super::value::NoJsonForm,
    },
    /// The rule's cost bound exceeds what is left of its budget (see
    /// `rules::budget`): it was refused before it ran.
    #[error("`{expression}` is over its evaluation budget: {reason}")]
    BudgetExceeded {
        /// The CEL source.
        expression: String,
        /// The bound in units, or `None` when no bound could be computed
        /// (comprehensions nested too deep, an accumulator that grows).
        cost: Option<u64>,
        /// The units that were available to it.
        limit: u64,
        /// Why, in words a definition author can act on.
        reason: String,
    },
    /// Any other runtime failure reported by the CEL interpreter.
    #[error("`{expression}` failed: {message}")]
    Failed {
        /// The CEL source.
        expression: String,
        /// The interpreter's message.
        message: String,
    },
}

impl EvalError {
    /// What the error means to a caller: [`ErrorKind::Internal`]. Rules
    /// come from a deployed definition, not from the request, so a rule that
    /// cannot be evaluated is a defect of the definition that no caller of a
    /// command can fix by changing the request. Except
    /// [`EvalError::BudgetExceeded`]: [`ErrorKind::ResourceExhausted`], a
    /// limit the case's data (long lists) made the rule exceed.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EvalError::BudgetExceeded { .. } => ErrorKind::ResourceExhausted,
            EvalError::NotCompiled { .. }
            | EvalError::NotABoolean { .. }
            | EvalError::TypeMismatch { .. }
            | EvalError::UnknownFunction { .. }
            | EvalError::DivisionByZero { .. }
            | EvalError::Unrepresentable { .. }
            | EvalError::Failed { .. } => ErrorKind::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_error() -> CompileError {
        CompileError {
            line: 1,
            column: 3,
            message: "unexpected token".into(),
        }
    }

    #[test]
    fn compile_errors_are_invalid_arguments() {
        assert_eq!(
            compile_error().kind(),
            ErrorKind::InvalidArgument { paths: vec![] }
        );
    }

    #[test]
    fn evaluation_errors_are_internal() {
        let e = || "a / b".to_string();
        let cases = [
            EvalError::NotCompiled {
                expression: e(),
                error: compile_error(),
            },
            EvalError::NotABoolean {
                expression: e(),
                got: "int".into(),
            },
            EvalError::TypeMismatch {
                expression: e(),
                function: "_/_".into(),
                argument_types: vec!["int".into(), "string".into()],
            },
            EvalError::UnknownFunction {
                expression: e(),
                function: "f".into(),
            },
            EvalError::DivisionByZero { expression: e() },
            EvalError::Unrepresentable {
                expression: e(),
                reason: super::super::value::NoJsonForm::NonFiniteDecimal {
                    value: "NaN".into(),
                },
            },
            EvalError::Failed {
                expression: e(),
                message: "x".into(),
            },
        ];
        let over = EvalError::BudgetExceeded {
            expression: e(),
            cost: Some(5),
            limit: 4,
            reason: "r".into(),
        };
        assert_eq!(over.kind(), ErrorKind::ResourceExhausted);
        for err in cases {
            assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
        }
    }
}
