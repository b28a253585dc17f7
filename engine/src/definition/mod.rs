//! Case definitions: the metadata that describes a case type.
//!
//! A [`CaseDefinition`] is authored as TOML or JSON (see
//! `docs/definition-format.md`), parsed and validated in one step by
//! [`CaseDefinition::from_toml`] / [`CaseDefinition::from_json`], which either
//! return the model or a [`DefinitionError`] listing *every* problem with the
//! path of the offending field.
//!
//! Layout:
//! - `model`: the plain-data model — case file ([`FieldDef`]),
//!   plan ([`Activity`], [`Stage`], [`Milestone`]), [`Sentry`]s, [`Deadline`]s,
//!   [`CasePermissions`]. Items refer to each other by key.
//! - `plan`: navigation for a runtime — [`CaseDefinition::plan_items`],
//!   [`CaseDefinition::item`], [`CaseDefinition::children`], [`PlanItem`].
//! - `validate`: the rules; `parse`: the formats; `stored`: MessagePack for
//!   events ([`CaseDefinition::to_msgpack`]); `fingerprint`: a stable
//!   content hash ([`CaseDefinition::fingerprint`]).
//!
//! Conditions and expressions in the model are [`crate::rules::Condition`] and
//! [`crate::rules::Expression`] values, compiled when the definition is
//! parsed (or deserialized from its stored form), so a runtime evaluates them
//! directly.

pub(crate) mod deployment;
mod error;
mod fingerprint;
mod keys;
mod markings;
mod model;
mod parse;
mod period;
mod plan;
mod stored;
mod validate;
pub(crate) use validate::opening_too_large;

pub use deployment::Deployment;
pub use error::{DefinitionError, Problem, ProblemKind};
pub use fingerprint::Fingerprint;
pub use keys::{
    check_condition_name, check_identifier, check_service_name, CaseTypeKey, DeadlineKey, FieldKey,
    ItemKey, NameError, RoleKey, ServiceName, TeamKey, MAX_IDENTIFIER_LEN,
};
pub use markings::Markings;
pub use model::{
    Activity, ActivityKind, AuditPolicy, CaseDefinition, CasePermissions, Deadline, Escalation,
    FieldDef, FieldSearch, FieldType, FormField, Milestone, MopiGroup, Occurrence, OnPart,
    ParamDef, Priority, Retention, RetryPolicy, Sentry, ServiceDef, SlaPeriod, Stage, SubjectDef,
    Wait, REPETITION,
};
pub use parse::Format;
pub use period::{Period, PeriodError, PeriodParts};
pub use plan::{PlanEntry, PlanItem};
