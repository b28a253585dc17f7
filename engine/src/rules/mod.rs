//! Rules: CEL conditions and expressions over a case file and the plan's state.
//!
//! A [`Condition`] is a CEL program that yields a boolean (sentry if-parts,
//! applicability rules, deadline conditions); an [`Expression`] yields any value
//! (service-task inputs, automatic-step assignments). Both are compiled once,
//! when they are parsed, and are cheap to clone and share across threads
//! (`cel::Program` is `Send + Sync`, checked by a test).
//!
//! # What a condition can see
//!
//! - Every **case-file field** as a top-level variable named by its key:
//!   `risk_level == 'high' && age < 18`. Text, enumeration, date, date-time
//!   and POLE references are strings (dates as `YYYY-MM-DD`, date-times as RFC 3339
//!   in UTC, so plain string comparison orders them); integers are `int`,
//!   decimals `double`, a geo point a map with `lat` and `lon`, a list a list.
//! - `state`: a map from plan-item key to its state name
//!   (`state.attend == 'completed'`); an item that does not exist yet is absent.
//! - `reached`: the list of milestone keys reached so far
//!   (`'supervisor_review' in reached`).
//!
//! # Absent values
//!
//! Per `docs/case-semantics.md`, a condition over a field that is absent evaluates to
//! **false**, not to an error: when evaluation needs a field (or a map entry)
//! that is not there, [`Condition::evaluate`] returns `Ok(false)`. CEL's
//! commutative `||` / `&&` still apply: `absent == 1 || grade == 'immediate'`
//! is true when the grade is immediate. [`Expression::evaluate`] returns
//! `Ok(None)` instead. Every other failure is a typed [`EvalError`].
//!
//! # Budget
//!
//! Evaluation is bounded: before a rule runs, an upper bound on its cost is
//! computed from its syntax tree and the actual sizes of the values it reads,
//! and charged to a [`Budget`] — [`RULE_BUDGET`] units for one evaluation
//! ([`Condition::evaluate`]), or a command's [`COMMAND_BUDGET`] shared by
//! every rule it evaluates ([`Condition::evaluate_within`]). A rule over it
//! fails with [`EvalError::BudgetExceeded`] without running. The cost model
//! and the numbers are in the `budget` module's docs (`rules/budget.rs`).
//!
//! # Static checks
//!
//! [`check_condition`] and [`check_expression`] walk a compiled program against a [`Schema`] (the case file's
//! fields, plan items and milestones) and reports unknown fields, unknown
//! functions, comparisons that cannot succeed (an integer field against a string,
//! an enumeration against a value it does not allow) and non-boolean conditions.
//! The definition validator uses it; a runtime does not need to.

mod budget;
mod check;
mod compiled;
mod error;
mod refs;
mod scope;
mod value;

pub(crate) use budget::check_bounds;
pub use budget::{Budget, COMMAND_BUDGET, INLINE_BUDGET, MAX_NESTING, RULE_BUDGET};
pub use check::{
    check_condition, check_expression, compatible, Expected, FieldInfo, LiteralFormat, Schema,
    StaticType,
};
pub use compiled::{Condition, Expression, SUPPORTED_FUNCTIONS};
pub use error::{CompileError, EvalError};
pub use refs::PlanRefs;
pub use scope::{ItemState, PlanState, Scope};
pub use value::{cel_to_json, json_to_cel, NoJsonForm};

/// Re-exported because [`Scope`] and [`Expression::evaluate`] speak
/// `serde_json::Value`: callers can build case files without a direct dependency.
pub use serde_json;
