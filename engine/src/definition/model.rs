//! The case definition model: plain data, keyed items, compiled conditions.
//!
//! Every type here deserializes from TOML or JSON with unknown fields denied,
//! and serializes to the same shape (the runtime stores definitions as events).
//! Nothing is checked on deserialization beyond shape;
//! [`CaseDefinition::validate`] checks the rest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::keys::{CaseTypeKey, DeadlineKey, FieldKey, ItemKey, RoleKey, ServiceName, TeamKey};
use super::period::Period;
use crate::rules::{Condition, Expression};
use crate::security::Classification;

/// The name a `repeat_while` rule reads the number of instances so far by.
pub const REPETITION: &str = "repetition";

/// A case type: its case file, its plan (stages, activities, milestones),
/// deadlines and permissions.
///
/// The case plan is the root stage: activities, stages and milestones may sit
/// directly in the case or inside (nested) stages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseDefinition {
    /// The case type's key, e.g. `burglary`.
    pub key: CaseTypeKey,
    /// Human-readable name.
    pub name: String,
    /// Author-given version; a runtime keeps every deployed version.
    pub version: u32,
    /// What the case type is for.
    #[serde(default)]
    pub description: Option<String>,
    /// The classification a new case carries.
    #[serde(default)]
    pub default_classification: Classification,
    /// How long cases are kept (MoPI).
    pub retention: Retention,
    /// The roles this definition refers to. When non-empty, every role
    /// reference must be one of these.
    #[serde(default)]
    pub roles: Vec<RoleKey>,
    /// Who may perform each case-level action.
    #[serde(default)]
    pub permissions: CasePermissions,
    /// The case file's fields.
    #[serde(default)]
    pub fields: Vec<FieldDef>,
    /// The external services service tasks may call, with their contracts.
    #[serde(default)]
    pub services: Vec<ServiceDef>,
    /// Whether the case completes by itself (see `docs/case-semantics.md`).
    #[serde(default)]
    pub autocomplete: bool,
    /// Exit criteria of the case as a whole.
    #[serde(default)]
    pub exit: Vec<Sentry>,
    /// Case-level deadlines (measured from case opening unless `from` says
    /// otherwise; met when the case completes unless `until` says otherwise).
    #[serde(default)]
    pub deadlines: Vec<Deadline>,
    /// Activities directly in the case plan.
    #[serde(default)]
    pub activities: Vec<Activity>,
    /// Stages directly in the case plan.
    #[serde(default)]
    pub stages: Vec<Stage>,
    /// Milestones directly in the case plan.
    #[serde(default)]
    pub milestones: Vec<Milestone>,
    /// The team whose work queue a human task goes to when the task names
    /// none, e.g. `cid`. (Last, and left out when absent, so definitions
    /// written before teams keep their fingerprint and stored form.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<TeamKey>,
    /// What reading its cases requires (DPA 2018 s62; see
    /// [`crate::audit`]). Last and left out when absent, like `team`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditPolicy>,
    /// The people (nominals) whose personal data the case file holds:
    /// which field names each one, which fields are theirs (see
    /// [`SubjectDef`] and `docs/RETENTION.md`). Last and left out when
    /// empty, like `team`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<SubjectDef>,
    /// The derived markings, computed on first use (not part of the
    /// definition's content: never serialized, never compared).
    #[serde(skip)]
    pub(crate) markings: super::markings::MarkingsCache,
    /// Where each plan item sits, indexed on first use (like `markings`).
    #[serde(skip)]
    pub(crate) plan_index: super::plan::PlanIndexCache,
    /// The fingerprint, computed on first use (like `markings`).
    #[serde(skip)]
    pub(crate) fingerprint: super::fingerprint::FingerprintCache,
}

/// A case type's audit requirements (`[audit]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditPolicy {
    /// Reading fields marked above this classification needs a stated
    /// purpose: without one, a view withholds them (and a case marked above
    /// it, or a load of the whole state, is refused). None: no requirement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose_required_above: Option<Classification>,
}

impl CaseDefinition {
    /// The marking above which reading needs a purpose, if any.
    pub fn purpose_required_above(&self) -> Option<Classification> {
        self.audit.as_ref().and_then(|a| a.purpose_required_above)
    }
}

impl CaseDefinition {
    /// The team a human task is routed to: its own `team`, else the
    /// definition's.
    pub fn team_of<'a>(&'a self, activity: &'a Activity) -> Option<&'a TeamKey> {
        activity.team.as_ref().or(self.team.as_ref())
    }
}

/// A Management of Police Information retention group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MopiGroup {
    /// Serious offences / public protection: retain until the subject is 100,
    /// review every 10 years.
    Group1,
    /// Other sexual or violent offences: review after a 10-year clear period.
    Group2,
    /// Everything else: review after 6 years.
    Group3,
}

impl MopiGroup {
    /// The default review period for the group (a tenant may configure it).
    pub fn default_review(self) -> Period {
        match self {
            MopiGroup::Group1 | MopiGroup::Group2 => Period::new("P10Y"),
            MopiGroup::Group3 => Period::new("P6Y"),
        }
    }
}

/// The retention class of a case type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// The MoPI group.
    pub group: MopiGroup,
    /// Overrides the group's review period, e.g. `P3Y`.
    #[serde(default)]
    pub review_after: Option<Period>,
    /// The tenant's retention class the case type's subjects fall in, by
    /// key (e.g. `undetected`, or one the tenant defined); absent: the
    /// group's class (`mopi_group_1` ...). Classes and their rules are the
    /// tenant's retention policy ([`crate::resources::retention`]). (Last,
    /// and left out when absent, so earlier definitions keep their
    /// fingerprint.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
}

impl Retention {
    /// The key of the retention class in force: `class`, else the group's
    /// default class.
    pub fn class_key(&self) -> &str {
        match &self.class {
            Some(c) => c,
            None => self.group.class_key(),
        }
    }
}

impl MopiGroup {
    /// The key of the shipped retention class of the group.
    pub fn class_key(self) -> &'static str {
        match self {
            MopiGroup::Group1 => "mopi_group_1",
            MopiGroup::Group2 => "mopi_group_2",
            MopiGroup::Group3 => "mopi_group_3",
        }
    }
}

/// A person (nominal) the case file holds personal data about
/// (`[[subjects]]`): the engine keeps a record of each such person per
/// tenant for retention review (see [`crate::records`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectDef {
    /// The subject's role in the case, e.g. `suspect`.
    pub key: String,
    /// The field holding the person's reference (a `person` or `text`
    /// field): a case names a subject when this field has a value. The
    /// engine never uses the reference as an id: subject ids are keyed
    /// hashes of it.
    pub id: FieldKey,
    /// A `date` field holding the person's date of birth, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_of_birth: Option<FieldKey>,
    /// The other fields holding this person's personal data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldKey>,
    /// Whether appearing in such a case is police contact that (re)starts
    /// the subject's clear period (an offender's role: `true`; a victim's
    /// or witness's: `false`).
    #[serde(default)]
    pub contact: bool,
}

impl CaseDefinition {
    /// The subject whose personal data field `field` holds (its id, date
    /// of birth or one of its `fields`), if any.
    pub fn subject_of(&self, field: &str) -> Option<&SubjectDef> {
        self.subjects.iter().find(|s| {
            s.id.as_str() == field
                || s.date_of_birth
                    .as_ref()
                    .is_some_and(|d| d.as_str() == field)
                || s.fields.iter().any(|f| f.as_str() == field)
        })
    }
}

impl Retention {
    /// The review period in force: `review_after`, else the group's default.
    pub fn review_period(&self) -> Period {
        self.review_after
            .clone()
            .unwrap_or_else(|| self.group.default_review())
    }
}

/// Roles allowed to perform each case-level action. An action with no roles
/// may be performed by no one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasePermissions {
    /// Open a case of this type.
    #[serde(default)]
    pub open: Vec<RoleKey>,
    /// Change case-file fields outside a task's form.
    #[serde(default)]
    pub update_case_file: Vec<RoleKey>,
    /// Plan a discretionary item (each item may narrow this with `planners`).
    #[serde(default)]
    pub add_discretionary: Vec<RoleKey>,
    /// Add a note.
    #[serde(default)]
    pub add_note: Vec<RoleKey>,
    /// Suspend the case.
    #[serde(default)]
    pub suspend: Vec<RoleKey>,
    /// Resume a suspended case.
    #[serde(default)]
    pub resume: Vec<RoleKey>,
    /// Close the case.
    #[serde(default)]
    pub close: Vec<RoleKey>,
    /// Reopen a closed case.
    #[serde(default)]
    pub reopen: Vec<RoleKey>,
    /// Link a POLE entity to the case.
    #[serde(default)]
    pub link_entity: Vec<RoleKey>,
    /// Supervise claimed tasks: complete, fail, terminate, start or
    /// reassign (or route to a team) a task someone else holds. Without one
    /// of these roles only the task's assignee may. (Last, and left out when
    /// empty, so definitions written before it keep their fingerprint.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supervise: Vec<RoleKey>,
}

impl CasePermissions {
    /// Each action's name and its roles, in declaration order.
    pub fn actions(&self) -> [(&'static str, &[RoleKey]); 10] {
        [
            ("open", &self.open),
            ("update_case_file", &self.update_case_file),
            ("add_discretionary", &self.add_discretionary),
            ("add_note", &self.add_note),
            ("suspend", &self.suspend),
            ("resume", &self.resume),
            ("close", &self.close),
            ("reopen", &self.reopen),
            ("link_entity", &self.link_entity),
            ("supervise", &self.supervise),
        ]
    }
}

/// The type of a case-file field (or a service parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// Free text (a CEL string).
    Text,
    /// A whole number (CEL int).
    Integer,
    /// A decimal number (CEL double).
    Decimal,
    /// True or false.
    Boolean,
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// An instant, RFC 3339 in UTC.
    DateTime,
    /// One of the field's `values`.
    Enumeration,
    /// A WGS84 point: `{ lat, lon }`.
    GeoPoint,
    /// A list of `element`s.
    List,
    /// A reference to a POLE person (its id, a string).
    Person,
    /// A reference to a POLE object.
    Object,
    /// A reference to a POLE location.
    Location,
}

impl FieldType {
    /// The name used in definitions and messages, e.g. `date_time`.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::Text => "text",
            FieldType::Integer => "integer",
            FieldType::Decimal => "decimal",
            FieldType::Boolean => "boolean",
            FieldType::Date => "date",
            FieldType::DateTime => "date_time",
            FieldType::Enumeration => "enumeration",
            FieldType::GeoPoint => "geo_point",
            FieldType::List => "list",
            FieldType::Person => "person",
            FieldType::Object => "object",
            FieldType::Location => "location",
        }
    }
}

/// A case-file field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDef {
    /// The key conditions and mappings use.
    pub key: FieldKey,
    /// The field's type.
    #[serde(rename = "type")]
    pub ty: FieldType,
    /// Allowed values, for an enumeration or a list of enumeration values.
    #[serde(default)]
    pub values: Vec<String>,
    /// The element type of a list (not itself a list).
    #[serde(default)]
    pub element: Option<FieldType>,
    /// Whether the field must be supplied when a case is opened.
    #[serde(default)]
    pub required: bool,
    /// A classification above the case's, for restricted fields.
    #[serde(default)]
    pub classification: Option<Classification>,
    /// Label for forms.
    #[serde(default)]
    pub label: Option<String>,
    /// Help text.
    #[serde(default)]
    pub description: Option<String>,
    /// How case search indexes the field beyond its value: `text` indexes
    /// its words for text search. (Last, and left out when absent, so older
    /// definitions keep their fingerprint and stored form.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<FieldSearch>,
}

impl FieldDef {
    /// Whether text search covers the field (`search = "text"`).
    pub fn text_searchable(&self) -> bool {
        self.search == Some(FieldSearch::Text)
    }
}

/// How case search indexes a field beyond its value (which every field of an
/// indexable type gets, for filters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldSearch {
    /// Its words are indexed for text search (`SearchQuery::text`).
    Text,
}

/// An external service's contract, as service tasks use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceDef {
    /// The service's name, e.g. `gis.locate_ward`.
    pub name: ServiceName,
    /// What it does.
    #[serde(default)]
    pub description: Option<String>,
    /// Parameters it accepts, by name.
    #[serde(default)]
    pub inputs: BTreeMap<String, ParamDef>,
    /// Result keys it returns, by name.
    #[serde(default)]
    pub outputs: BTreeMap<String, ParamDef>,
}

/// A service parameter or result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamDef {
    /// Its type.
    #[serde(rename = "type")]
    pub ty: FieldType,
    /// Allowed values, for an enumeration.
    #[serde(default)]
    pub values: Vec<String>,
    /// Element type, for a list.
    #[serde(default)]
    pub element: Option<FieldType>,
    /// For an input: whether every service task must map it.
    #[serde(default)]
    pub required: bool,
}

/// What kind of work an activity is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivityKind {
    /// Active until a person completes it (using its `form`).
    HumanTask,
    /// Calls `service`; active until the invocation completes or fails.
    ServiceTask,
    /// Completes within the command that activates it, after applying `set`.
    Automatic,
    /// A durable wait: completes by itself once its `wait` has elapsed
    /// (a timer recorded on the case, fired by the orchestration layer).
    Wait,
}

/// A case-file field shown on a human task's form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormField {
    /// The case-file field.
    pub field: FieldKey,
    /// Whether the task cannot be completed without it.
    #[serde(default)]
    pub required: bool,
    /// Shown but not editable.
    #[serde(default)]
    pub read_only: bool,
}

/// A unit of work in the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Activity {
    /// Key, unique across the plan.
    pub key: ItemKey,
    /// Human-readable name.
    pub name: String,
    /// What the work is.
    #[serde(default)]
    pub description: Option<String>,
    /// Human task, service task or automatic step.
    pub kind: ActivityKind,
    /// Candidate roles: who may claim, start and complete it.
    #[serde(default)]
    pub roles: Vec<RoleKey>,
    /// Human task: the case-file fields on its form.
    #[serde(default)]
    pub form: Vec<FormField>,
    /// Service task: the service to call.
    #[serde(default)]
    pub service: Option<ServiceName>,
    /// Service task: parameter -> CEL expression over the case file.
    #[serde(default)]
    pub input: BTreeMap<String, Expression>,
    /// Service task: result key -> case-file field it is stored in.
    #[serde(default)]
    pub output: BTreeMap<String, FieldKey>,
    /// Automatic step: case-file field -> CEL expression whose value it takes.
    #[serde(default)]
    pub set: BTreeMap<FieldKey, Expression>,
    /// Must complete (or be terminal) before its stage can autocomplete.
    #[serde(default)]
    pub required: bool,
    /// May run more than once (see `docs/case-semantics.md`, Repetition).
    #[serde(default)]
    pub repeatable: bool,
    /// Entered items wait in *enabled* for a person to start them.
    #[serde(default)]
    pub manual_activation: bool,
    /// Not in the plan until a caseworker plans it.
    #[serde(default)]
    pub discretionary: bool,
    /// Discretionary: when it may be planned.
    #[serde(default)]
    pub applicability: Option<Condition>,
    /// Discretionary: roles that may plan it.
    #[serde(default)]
    pub planners: Vec<RoleKey>,
    /// Entry criteria (ORed).
    #[serde(default)]
    pub entry: Vec<Sentry>,
    /// Exit criteria (ORed).
    #[serde(default)]
    pub exit: Vec<Sentry>,
    /// SLA deadlines (from activation, met on completion, by default).
    #[serde(default)]
    pub deadlines: Vec<Deadline>,
    /// Human task: the team whose work queue it goes to (default: the
    /// definition's `team`). A supervisor can route a task to another team
    /// at run time. (Last, and left out when absent: see
    /// [`CaseDefinition::team`].)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<TeamKey>,
    /// Service task: how its invocations are timed out and retried
    /// (defaults: [`RetryPolicy`]). (Last, and left out when absent: see
    /// [`CaseDefinition::team`].)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// A marking the author gives the item, raising what its rules already
    /// make it (see [`CaseDefinition::markings`]); never lowers it. (Last,
    /// and left out when absent: see [`CaseDefinition::team`].)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<Classification>,
    /// Repeatable: the rule that must hold for another instance to be
    /// created, over the case file and `repetition` (the number of
    /// instances of the item so far in its stage), e.g. `repetition < 5`.
    /// Without it a repeatable item repeats for as long as it may. (Last,
    /// and left out when absent: see [`CaseDefinition::team`].)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_while: Option<Condition>,
    /// Repeatable: the most instances of the item one stage instance (or
    /// the case plan) may ever hold. (Left out when absent.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u32>,
    /// Repeatable: the most instances that may be entered (enabled, active
    /// or suspended) at once; an instance whose entry criterion fires while
    /// that many run waits, its criterion still satisfied, until one ends.
    /// (Left out when absent.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// Required only when this holds (evaluated whenever its stage's
    /// completion is checked); instead of `required = true`. (Left out when
    /// absent.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_if: Option<Condition>,
    /// Manual activation only when this holds as the item is entered;
    /// instead of `manual_activation = true`. (Left out when absent.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual_activation_if: Option<Condition>,
    /// Wait step: how long it waits from its activation, written
    /// `wait = { working_days = 5 }` or `wait = { within = "PT48H" }`.
    /// (Left out when absent.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<Wait>,
}

/// How long a wait step waits: a fixed period (`within`) or a number of
/// working days (`working_days`, counted with the tenant's calendar, as a
/// deadline's), exactly one of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wait {
    /// A fixed period, e.g. `PT48H` or `P3D` (no years or months).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<Period>,
    /// A number of working days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_days: Option<u32>,
}

impl Wait {
    /// The wait's period, if exactly one of `within` / `working_days` is
    /// set and valid (always so in a validated definition).
    pub fn period(&self) -> Option<SlaPeriod> {
        SlaPeriod::of(self.within.as_ref(), self.working_days)
    }
}

/// How a service task's invocations are timed out and retried. Written
/// `retry = { max_attempts = 3, timeout = "PT10S", backoff = "PT1S" }`.
///
/// Attempt `n` (from 1) that fails with a retryable error is retried after
/// `backoff * 2^(n-1)`, at most `max_backoff`, with up to a quarter of it
/// added at random (jitter); after `max_attempts` the activity fails and an
/// incident is raised.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (default 5, at most 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// How long one attempt may take (default 30 seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Period>,
    /// The wait before the first retry (default 1 second).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Period>,
    /// The longest wait between attempts (default 5 minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backoff: Option<Period>,
}

impl RetryPolicy {
    /// Attempts when a policy does not say.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
    /// Most attempts a policy may ask for.
    pub const MAX_ATTEMPTS_LIMIT: u32 = 100;
    /// Timeout of one attempt when a policy does not say.
    pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
    /// First backoff when a policy does not say.
    pub const DEFAULT_BACKOFF: std::time::Duration = std::time::Duration::from_secs(1);
    /// Longest backoff when a policy does not say.
    pub const DEFAULT_MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(300);

    /// The attempts in force.
    pub fn attempts(&self) -> u32 {
        self.max_attempts.unwrap_or(Self::DEFAULT_MAX_ATTEMPTS)
    }

    /// The timeout of one attempt in force.
    pub fn attempt_timeout(&self) -> std::time::Duration {
        period_or(&self.timeout, Self::DEFAULT_TIMEOUT)
    }

    /// The first backoff in force.
    pub fn first_backoff(&self) -> std::time::Duration {
        period_or(&self.backoff, Self::DEFAULT_BACKOFF)
    }

    /// The longest backoff in force.
    pub fn longest_backoff(&self) -> std::time::Duration {
        period_or(&self.max_backoff, Self::DEFAULT_MAX_BACKOFF)
    }
}

fn period_or(p: &Option<Period>, default: std::time::Duration) -> std::time::Duration {
    p.as_ref()
        .and_then(Period::duration)
        .and_then(|d| std::time::Duration::try_from(d).ok())
        .unwrap_or(default)
}

/// A container of plan items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// Key, unique across the plan.
    pub key: ItemKey,
    /// Human-readable name.
    pub name: String,
    /// What the stage covers.
    #[serde(default)]
    pub description: Option<String>,
    /// Must complete before its parent can autocomplete.
    #[serde(default)]
    pub required: bool,
    /// May run more than once.
    #[serde(default)]
    pub repeatable: bool,
    /// Entered stages wait in *enabled* for a person to start them.
    #[serde(default)]
    pub manual_activation: bool,
    /// Not in the plan until a caseworker plans it.
    #[serde(default)]
    pub discretionary: bool,
    /// Discretionary: when it may be planned.
    #[serde(default)]
    pub applicability: Option<Condition>,
    /// Discretionary: roles that may plan it.
    #[serde(default)]
    pub planners: Vec<RoleKey>,
    /// Completes by itself when nothing required remains (see `docs/case-semantics.md`).
    #[serde(default)]
    pub autocomplete: bool,
    /// Entry criteria (ORed).
    #[serde(default)]
    pub entry: Vec<Sentry>,
    /// Exit criteria (ORed).
    #[serde(default)]
    pub exit: Vec<Sentry>,
    /// SLA deadlines (from activation, met on completion, by default).
    #[serde(default)]
    pub deadlines: Vec<Deadline>,
    /// Activities in the stage.
    #[serde(default)]
    pub activities: Vec<Activity>,
    /// Nested stages.
    #[serde(default)]
    pub stages: Vec<Stage>,
    /// Milestones in the stage.
    #[serde(default)]
    pub milestones: Vec<Milestone>,
    /// A marking the author gives the stage (see [`Activity::classification`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<Classification>,
    /// Repeatable: the rule that must hold for another instance to be
    /// created, over the case file and `repetition` (the number of
    /// instances of the item so far in its stage), e.g. `repetition < 5`.
    /// Without it a repeatable item repeats for as long as it may. (Last,
    /// and left out when absent: see [`CaseDefinition::team`].)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_while: Option<Condition>,
    /// Repeatable: the most instances of the item one stage instance (or
    /// the case plan) may ever hold. (Left out when absent.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u32>,
    /// Repeatable: the most instances that may be entered (enabled, active
    /// or suspended) at once; an instance whose entry criterion fires while
    /// that many run waits, its criterion still satisfied, until one ends.
    /// (Left out when absent.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// Required only when this holds (evaluated whenever its stage's
    /// completion is checked); instead of `required = true`. (Left out when
    /// absent.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_if: Option<Condition>,
    /// Manual activation only when this holds as the item is entered;
    /// instead of `manual_activation = true`. (Left out when absent.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual_activation_if: Option<Condition>,
}

/// A point of progress: *reached*, never completed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Milestone {
    /// Key, unique across the plan.
    pub key: ItemKey,
    /// Human-readable name.
    pub name: String,
    /// What reaching it means.
    #[serde(default)]
    pub description: Option<String>,
    /// Must be reached before its stage can autocomplete.
    #[serde(default)]
    pub required: bool,
    /// May be reached more than once.
    #[serde(default)]
    pub repeatable: bool,
    /// When it is reached (ORed). Without any, it is reached as soon as its
    /// stage is active.
    #[serde(default)]
    pub entry: Vec<Sentry>,
    /// When it stops waiting (ORed).
    #[serde(default)]
    pub exit: Vec<Sentry>,
    /// A marking the author gives the milestone (see [`Activity::classification`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<Classification>,
    /// Repeatable: the rule that must hold for another instance to be
    /// created, over the case file and `repetition` (the number of
    /// instances of the item so far in its stage), e.g. `repetition < 5`.
    /// Without it a repeatable item repeats for as long as it may. (Last,
    /// and left out when absent: see [`CaseDefinition::team`].)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_while: Option<Condition>,
    /// Repeatable: the most instances of the item one stage instance (or
    /// the case plan) may ever hold. (Left out when absent.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u32>,
    /// Repeatable: the most instances that may be entered (enabled, active
    /// or suspended) at once; an instance whose entry criterion fires while
    /// that many run waits, its criterion still satisfied, until one ends.
    /// (Left out when absent.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// Required only when this holds (evaluated whenever its stage's
    /// completion is checked); instead of `required = true`. (Left out when
    /// absent.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_if: Option<Condition>,
}

/// An entry or exit criterion: on-parts ANDed, plus an optional condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sentry {
    /// Occurrences that must all have happened (they latch).
    #[serde(default)]
    pub on: Vec<OnPart>,
    /// A CEL condition that must hold when the sentry is evaluated (never
    /// latches).
    #[serde(default, rename = "if")]
    pub condition: Option<Condition>,
}

/// An occurrence a sentry listens for. Written `{ completed = "grade" }`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnPart {
    /// An activity or stage completed.
    Completed(ItemKey),
    /// An activity or stage was terminated.
    Terminated(ItemKey),
    /// A milestone was reached.
    Reached(ItemKey),
    /// A case-file field changed.
    Changed(FieldKey),
}

/// An occurrence a deadline is measured from or until. Written
/// `"case_opened"`, `"case_closed"` or `{ reached = "charged" }`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Occurrence {
    /// The case was opened.
    CaseOpened,
    /// The case was completed or closed.
    CaseClosed,
    /// An activity or stage became active.
    Activated(ItemKey),
    /// An activity or stage completed.
    Completed(ItemKey),
    /// A milestone was reached.
    Reached(ItemKey),
    /// A case-file field changed.
    Changed(FieldKey),
}

/// A priority a case can be raised to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Routine.
    Low,
    /// The default.
    Normal,
    /// Ahead of normal work.
    High,
    /// Now.
    Urgent,
}

/// What happens when a deadline passes. Written `{ notify = ["supervisor"] }`,
/// `{ raise_priority = "urgent" }` or `{ start = "supervisor_review" }`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Escalation {
    /// Alert everyone holding these roles.
    Notify(Vec<RoleKey>),
    /// Raise the case's priority to this level (never lowers it).
    RaisePriority(Priority),
    /// Start (plan and activate) this activity or stage.
    Start(ItemKey),
}

/// An SLA deadline.
///
/// The clock runs `within` (a fixed period) or `working_days` (counting only
/// working days, so bank holidays come from the tenant's calendar) from `from`;
/// the deadline is met when `until` occurs. Defaults: `from` is the owning
/// item's activation (case opening for a case-level deadline); `until` is the
/// owning item's completion (case closure for a case-level deadline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deadline {
    /// Key, unique across the definition.
    pub key: DeadlineKey,
    /// Human-readable name.
    #[serde(default)]
    pub name: Option<String>,
    /// A fixed period, e.g. `PT1H` or `48h` (no years or months).
    #[serde(default)]
    pub within: Option<Period>,
    /// A number of working days.
    #[serde(default)]
    pub working_days: Option<u32>,
    /// When the clock starts (see the type's docs for the default).
    #[serde(default)]
    pub from: Option<Occurrence>,
    /// When the deadline is met (see the type's docs for the default).
    #[serde(default)]
    pub until: Option<Occurrence>,
    /// The deadline applies only when this holds as the clock starts.
    #[serde(default, rename = "if")]
    pub condition: Option<Condition>,
    /// What to do when it passes.
    pub escalate: Vec<Escalation>,
}

/// How long a deadline runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlaPeriod {
    /// A fixed duration.
    Fixed(time::Duration),
    /// Working days.
    WorkingDays(u32),
}

impl SlaPeriod {
    /// The longest a deadline or a wait may run, in working days (about
    /// ten years): anything longer is a mistake in the definition.
    pub const MAX_WORKING_DAYS: u32 = 2_610;
    /// The longest fixed period a deadline or a wait may run, in days.
    pub const MAX_DAYS: i64 = 3_660;

    /// The period that `within` or `working_days` says, if exactly one is
    /// set and valid.
    pub fn of(within: Option<&Period>, working_days: Option<u32>) -> Option<SlaPeriod> {
        match (within, working_days) {
            (Some(p), None) => p.duration().map(SlaPeriod::Fixed),
            (None, Some(d)) => Some(SlaPeriod::WorkingDays(d)),
            _ => None,
        }
    }
}

impl Deadline {
    /// The deadline's period, if exactly one of `within` / `working_days` is
    /// set and valid (always so in a validated definition).
    pub fn period(&self) -> Option<SlaPeriod> {
        SlaPeriod::of(self.within.as_ref(), self.working_days)
    }
}
