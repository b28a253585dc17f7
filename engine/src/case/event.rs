//! Case events: every fact about a case, one variant per fact.
//!
//! Events are what the log stores; [`super::CaseState::apply`] folds them into
//! state. A command's events include every transition its cascade caused, so
//! replaying them reproduces the state exactly.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::definition::{
    CaseTypeKey, DeadlineKey, FieldKey, Fingerprint, ItemKey, OnPart, Priority, RoleKey,
    ServiceName,
};
use crate::log::codec::DomainEvent;
use crate::log::{TenantId, Timestamp};
use crate::rules::ItemState;
use crate::security::Classification;

use super::state::InstanceId;

/// Which definition version a case runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefinitionRef {
    /// The case type.
    pub key: CaseTypeKey,
    /// The definition version.
    pub version: u32,
    /// The definition's content hash.
    pub fingerprint: Fingerprint,
}

impl fmt::Display for DefinitionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} v{}", self.key, self.version)
    }
}

/// When a deadline falls due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadlineDue {
    /// A fixed instant (the clock start plus a fixed period).
    At {
        /// The due instant.
        due: Timestamp,
    },
    /// A number of working days from a start; the tenant's working-day
    /// calendar (`projection::calendar`) turns it into an instant.
    WorkingDays {
        /// Working days allowed.
        days: u32,
        /// When the clock started.
        from: Timestamp,
    },
}

/// A service invocation of one case: its number within the case (1, 2, …).
/// With the case's stream it names the invocation everywhere (idempotency
/// keys, command ids, jobs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InvocationId(pub u32);

impl fmt::Display for InvocationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "inv-{}", self.0)
    }
}

/// What a service task asks of its service, and how the attempts are
/// timed out and retried (the task's retry policy, resolved when asked).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationRequest {
    /// The service called.
    pub service: ServiceName,
    /// Its input: parameter -> value (the task's `input` mapping, evaluated).
    pub input: BTreeMap<String, serde_json::Value>,
    /// Attempts in all.
    pub max_attempts: u32,
    /// How long one attempt may take, in milliseconds.
    pub timeout_ms: u64,
    /// The wait before the first retry, in milliseconds.
    pub backoff_ms: u64,
    /// The longest wait between attempts, in milliseconds.
    pub max_backoff_ms: u64,
}

/// Why an item was suspended (and so what resumes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuspendedBy {
    /// A person suspended this item.
    Command,
    /// Its enclosing stage (this instance) was suspended.
    Stage {
        /// The stage instance.
        instance: InstanceId,
    },
    /// The case was suspended.
    Case,
}

/// The POLE entity kinds a case links to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoleKind {
    /// A person.
    Person,
    /// An object (property, vehicle, weapon...).
    Object,
    /// A location.
    Location,
    /// An event (another incident).
    Event,
}

/// A reference to a POLE entity held elsewhere (the entity store).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PoleRef {
    /// What kind of entity.
    pub kind: PoleKind,
    /// Its id in the entity store.
    pub id: String,
}

/// The role an entity plays in a case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityRole {
    /// A person harmed (person).
    Victim,
    /// A person who saw or knows something (person).
    Witness,
    /// A person suspected of the offence (person).
    Suspect,
    /// The person who reported the matter (person).
    ReportingPerson,
    /// The officer responsible for the investigation (person).
    OfficerInCase,
    /// The person who is missing (person).
    MissingPerson,
    /// Where it happened (location).
    Scene,
    /// Property stolen, damaged or recovered (object).
    Property,
    /// Any other role, named by an identifier.
    Other(String),
}

impl EntityRole {
    /// The entity kind the role requires, if it requires one.
    pub fn required_kind(&self) -> Option<PoleKind> {
        match self {
            EntityRole::Victim
            | EntityRole::Witness
            | EntityRole::Suspect
            | EntityRole::ReportingPerson
            | EntityRole::OfficerInCase
            | EntityRole::MissingPerson => Some(PoleKind::Person),
            EntityRole::Scene => Some(PoleKind::Location),
            EntityRole::Property => Some(PoleKind::Object),
            EntityRole::Other(_) => None,
        }
    }
}

/// Every fact about a case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseEvent {
    /// The case was opened.
    CaseOpened {
        /// The owning tenant.
        tenant: TenantId,
        /// The definition version the case runs for its whole life.
        definition: DefinitionRef,
        /// The initial case file.
        case_file: BTreeMap<FieldKey, serde_json::Value>,
        /// The case's classification.
        classification: Classification,
        /// When it was opened.
        opened_at: Timestamp,
    },
    /// Case-file fields were changed outside a task (only changed values;
    /// `null` clears a field).
    CaseFileUpdated {
        /// The new values.
        changes: BTreeMap<FieldKey, serde_json::Value>,
    },
    /// A plan item instance was created, *available*.
    PlanItemCreated {
        /// The new instance.
        instance: InstanceId,
        /// Its definition key.
        item: ItemKey,
        /// Its enclosing stage instance (`None`: the case plan).
        parent: Option<InstanceId>,
        /// Whether a caseworker planned it.
        discretionary: bool,
        /// On-parts of its sentries that already occurred earlier in the same
        /// command: the new instance starts with them latched. (Occurrences
        /// of earlier commands are never replayed to it.)
        #[serde(default)]
        seen: Vec<OnPart>,
    },
    /// Entered an item with manual activation: *enabled*.
    PlanItemEnabled {
        /// The instance.
        instance: InstanceId,
        /// Its key.
        item: ItemKey,
    },
    /// The item became *active*.
    PlanItemActivated {
        /// The instance.
        instance: InstanceId,
        /// Its key.
        item: ItemKey,
    },
    /// The item *completed*; `outputs` are written to the case file (a
    /// task's form values, a service's mapped results, an automatic step's `set`).
    PlanItemCompleted {
        /// The instance.
        instance: InstanceId,
        /// Its key.
        item: ItemKey,
        /// Case-file values the completion writes.
        outputs: BTreeMap<FieldKey, serde_json::Value>,
    },
    /// The item was *terminated* (exit criterion, container end, person).
    PlanItemTerminated {
        /// The instance.
        instance: InstanceId,
        /// Its key.
        item: ItemKey,
    },
    /// The item *failed* (e.g. a service invocation failed).
    PlanItemFailed {
        /// The instance.
        instance: InstanceId,
        /// Its key.
        item: ItemKey,
        /// Why.
        reason: String,
    },
    /// The item was *suspended*.
    PlanItemSuspended {
        /// The instance.
        instance: InstanceId,
        /// Its key.
        item: ItemKey,
        /// What suspended it.
        by: SuspendedBy,
    },
    /// The item was resumed to the state it had before suspension.
    PlanItemResumed {
        /// The instance.
        instance: InstanceId,
        /// Its key.
        item: ItemKey,
        /// The state it returns to.
        restored: ItemState,
    },
    /// A person chose not to do an enabled item: *disabled*.
    PlanItemDisabled {
        /// The instance.
        instance: InstanceId,
        /// Its key.
        item: ItemKey,
    },
    /// A milestone was reached.
    MilestoneReached {
        /// The instance.
        instance: InstanceId,
        /// Its key.
        item: ItemKey,
    },
    /// A person claimed an activity.
    ActivityClaimed {
        /// The instance.
        instance: InstanceId,
        /// Its key.
        item: ItemKey,
        /// Who claimed it.
        by: String,
    },
    /// An activity was assigned to someone.
    ActivityAssigned {
        /// The instance.
        instance: InstanceId,
        /// Its key.
        item: ItemKey,
        /// Who it is assigned to.
        assignee: String,
        /// Who assigned it.
        by: String,
    },
    /// A human task was routed to a team's work queue (and released by
    /// whoever held it).
    ActivityTeamAssigned {
        /// The instance.
        instance: InstanceId,
        /// Its key.
        item: ItemKey,
        /// The team.
        team: String,
        /// Who routed it.
        by: String,
    },
    /// A caseworker planned a discretionary item; it materialises (a
    /// `PlanItemCreated`) when its stage is active.
    DiscretionaryItemPlanned {
        /// The item.
        item: ItemKey,
        /// The stage it goes into (`None`: the case plan).
        stage: Option<ItemKey>,
        /// Who planned it.
        by: String,
    },
    /// A POLE entity was linked to the case.
    EntityLinked {
        /// The entity.
        entity: PoleRef,
        /// Its role.
        role: EntityRole,
        /// Who linked it.
        by: String,
    },
    /// A note was added.
    NoteAdded {
        /// The text.
        text: String,
        /// The author.
        by: String,
        /// When.
        at: Timestamp,
    },
    /// The case was suspended.
    CaseSuspended {},
    /// The case was resumed.
    CaseResumed {},
    /// The case completed (autocomplete or a person).
    CaseCompleted {},
    /// A case exit criterion ended the case.
    CaseTerminated {},
    /// The case was closed.
    CaseClosed {
        /// Why, if given.
        reason: Option<String>,
    },
    /// The case was reopened.
    CaseReopened {
        /// Why, if given.
        reason: Option<String>,
    },
    /// An SLA clock started.
    DeadlineSet {
        /// The deadline.
        deadline: DeadlineKey,
        /// Its owning item, for an item deadline.
        item: Option<ItemKey>,
        /// The owning instance, for a deadline measured from the owner's activation.
        instance: Option<InstanceId>,
        /// When it falls due.
        due: DeadlineDue,
    },
    /// A deadline was met (its `until` occurred).
    DeadlineMet {
        /// The deadline.
        deadline: DeadlineKey,
        /// The owning instance, as set.
        instance: Option<InstanceId>,
    },
    /// A deadline stopped running without being met (its owner ended).
    DeadlineCancelled {
        /// The deadline.
        deadline: DeadlineKey,
        /// The owning instance, as set.
        instance: Option<InstanceId>,
    },
    /// A service task asked for its service to be invoked (recorded in the
    /// append that activates the task; the dispatcher or an external worker
    /// takes it from there).
    ServiceInvocationRequested {
        /// The invocation.
        invocation: InvocationId,
        /// The service task's instance.
        instance: InstanceId,
        /// Its key.
        item: ItemKey,
        /// Service, input and retry policy.
        request: InvocationRequest,
        /// When the first attempt may start.
        not_before: Timestamp,
    },
    /// An attempt failed with a retryable error; the next attempt waits
    /// until `retry_at` (a durable timer).
    ServiceAttemptFailed {
        /// The invocation.
        invocation: InvocationId,
        /// The attempt that failed (from 1).
        attempt: u32,
        /// What went wrong.
        error: String,
        /// When the next attempt may start.
        retry_at: Timestamp,
    },
    /// The service answered; the task completes with its mapped outputs
    /// (the `PlanItemCompleted` that follows).
    ServiceInvocationCompleted {
        /// The invocation.
        invocation: InvocationId,
        /// The attempt that succeeded.
        attempt: u32,
        /// The service's output, as returned.
        output: BTreeMap<String, serde_json::Value>,
    },
    /// The invocation failed for good (a permanent error, the last attempt,
    /// a malformed output or input): an incident is open on the case until
    /// someone retries it; the task fails (the `PlanItemFailed` that follows).
    ServiceInvocationFailed {
        /// The invocation.
        invocation: InvocationId,
        /// The last attempt (0: none was made, the input could not be built).
        attempt: u32,
        /// What went wrong.
        error: String,
    },
    /// The task left *active* another way (completed by hand, terminated,
    /// suspended): the invocation is no longer wanted.
    ServiceInvocationCancelled {
        /// The invocation.
        invocation: InvocationId,
    },
    /// Someone retried a failed invocation: its incident is resolved and the
    /// task is active again with a new invocation.
    IncidentRetried {
        /// The failed invocation whose incident this resolves.
        invocation: InvocationId,
        /// Who retried it.
        by: String,
    },
    /// A deadline passed unmet: its timer fired and its escalations run
    /// (the events that follow). It stays running — overdue — until met
    /// or cancelled, and does not fire again.
    DeadlineMissed {
        /// The deadline.
        deadline: DeadlineKey,
        /// The owning instance, as set.
        instance: Option<InstanceId>,
    },
    /// An escalation alerted everyone holding these roles.
    EscalationNotified {
        /// The deadline that escalated.
        deadline: DeadlineKey,
        /// The roles alerted.
        roles: Vec<RoleKey>,
    },
    /// The case's priority was raised.
    PriorityRaised {
        /// The new priority.
        priority: Priority,
        /// The deadline that escalated.
        deadline: DeadlineKey,
    },
    /// A service disclosed case information outside the engine (an email
    /// sent, an alert raised): recorded in the append that records the
    /// service's answer, just before its `ServiceInvocationCompleted`
    /// (DPA 2018 s62: who received what, and why).
    DisclosureRecorded {
        /// The invocation that disclosed it.
        invocation: InvocationId,
        /// What was disclosed, to whom and why.
        disclosure: DisclosureRecord,
        /// The marking of what was disclosed: the service task's effective
        /// marking (the highest of what its input may carry).
        marking: Classification,
    },
    /// A service raised an alert to a work queue (recorded in the append
    /// that records its answer, just before its `ServiceInvocationCompleted`).
    AlertRaised {
        /// The alert.
        alert: AlertId,
        /// The invocation that raised it.
        invocation: InvocationId,
        /// The service task.
        item: ItemKey,
        /// Where it goes, what it says, who may acknowledge it.
        record: AlertRecord,
        /// The marking of its message: the service task's effective marking.
        marking: Classification,
    },
    /// Someone in the alert's queue acknowledged it: it leaves the queue.
    AlertAcknowledged {
        /// The alert.
        alert: AlertId,
        /// The service task that raised it.
        item: ItemKey,
        /// Who acknowledged it.
        by: String,
    },
    /// A wait step became active: its timer runs until `due` (recorded in
    /// the append that activates it; the orchestration layer fires it).
    WaitStarted {
        /// The wait step's instance.
        instance: InstanceId,
        /// Its key.
        item: ItemKey,
        /// When it has waited long enough.
        due: DeadlineDue,
    },
    /// A wait step's timer fired: the step completes (the
    /// `PlanItemCompleted` that follows).
    WaitElapsed {
        /// The wait step's instance.
        instance: InstanceId,
        /// Its key.
        item: ItemKey,
    },
    /// A wait step ended another way (terminated): its timer no longer runs.
    WaitCancelled {
        /// The wait step's instance.
        instance: InstanceId,
        /// Its key.
        item: ItemKey,
    },
}

/// An alert of one case: its number within the case (1, 2, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AlertId(pub u32);

impl fmt::Display for AlertId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "alert-{}", self.0)
    }
}

/// The work queue an alert is raised to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertQueue {
    /// Everyone holding this role.
    Role(String),
    /// This team.
    Team(String),
}

impl fmt::Display for AlertQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AlertQueue::Role(r) => write!(f, "role {r}"),
            AlertQueue::Team(t) => write!(f, "team {t}"),
        }
    }
}

/// An alert a service raises (e.g. `alert.raise`): a message in a role's or
/// a team's work queue until someone there acknowledges it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRecord {
    /// The queue it goes to.
    pub queue: AlertQueue,
    /// The message (filled from case fields: marked like the service task).
    pub message: String,
    /// How urgent it is.
    pub priority: Priority,
    /// The roles whose holders may acknowledge it (the queue's members).
    pub acknowledged_by: Vec<RoleKey>,
}

/// One disclosure a service reports: who received what, and why. No case
/// values: `what` names the fields and template sent, not their content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisclosureRecord {
    /// Who received it: an address, a contact id, a queue.
    pub recipient: String,
    /// What was sent, by name: e.g. `email 'burglary_acknowledgement'
    /// (fields: ward, grade)`.
    pub what: String,
    /// Why: the purpose the definition gives.
    pub why: String,
    /// How: `email`, `file`, `alert`.
    pub channel: String,
}

impl CaseEvent {
    /// The plan item instance whose lifecycle state the event changes, if
    /// it changes one.
    pub fn instance(&self) -> Option<InstanceId> {
        match self {
            CaseEvent::PlanItemCreated { instance, .. }
            | CaseEvent::PlanItemEnabled { instance, .. }
            | CaseEvent::PlanItemActivated { instance, .. }
            | CaseEvent::PlanItemCompleted { instance, .. }
            | CaseEvent::PlanItemTerminated { instance, .. }
            | CaseEvent::PlanItemFailed { instance, .. }
            | CaseEvent::PlanItemSuspended { instance, .. }
            | CaseEvent::PlanItemResumed { instance, .. }
            | CaseEvent::PlanItemDisabled { instance, .. }
            | CaseEvent::MilestoneReached { instance, .. } => Some(*instance),
            _ => None,
        }
    }

    /// The event's type name as stored in the log, e.g. `CaseOpened`.
    pub fn type_name(&self) -> &'static str {
        match self {
            CaseEvent::CaseOpened { .. } => "CaseOpened",
            CaseEvent::CaseFileUpdated { .. } => "CaseFileUpdated",
            CaseEvent::PlanItemCreated { .. } => "PlanItemCreated",
            CaseEvent::PlanItemEnabled { .. } => "PlanItemEnabled",
            CaseEvent::PlanItemActivated { .. } => "PlanItemActivated",
            CaseEvent::PlanItemCompleted { .. } => "PlanItemCompleted",
            CaseEvent::PlanItemTerminated { .. } => "PlanItemTerminated",
            CaseEvent::PlanItemFailed { .. } => "PlanItemFailed",
            CaseEvent::PlanItemSuspended { .. } => "PlanItemSuspended",
            CaseEvent::PlanItemResumed { .. } => "PlanItemResumed",
            CaseEvent::PlanItemDisabled { .. } => "PlanItemDisabled",
            CaseEvent::MilestoneReached { .. } => "MilestoneReached",
            CaseEvent::ActivityClaimed { .. } => "ActivityClaimed",
            CaseEvent::ActivityAssigned { .. } => "ActivityAssigned",
            CaseEvent::ActivityTeamAssigned { .. } => "ActivityTeamAssigned",
            CaseEvent::DiscretionaryItemPlanned { .. } => "DiscretionaryItemPlanned",
            CaseEvent::EntityLinked { .. } => "EntityLinked",
            CaseEvent::NoteAdded { .. } => "NoteAdded",
            CaseEvent::CaseSuspended {} => "CaseSuspended",
            CaseEvent::CaseResumed {} => "CaseResumed",
            CaseEvent::CaseCompleted {} => "CaseCompleted",
            CaseEvent::CaseTerminated {} => "CaseTerminated",
            CaseEvent::CaseClosed { .. } => "CaseClosed",
            CaseEvent::CaseReopened { .. } => "CaseReopened",
            CaseEvent::DeadlineSet { .. } => "DeadlineSet",
            CaseEvent::DeadlineMet { .. } => "DeadlineMet",
            CaseEvent::DeadlineCancelled { .. } => "DeadlineCancelled",
            CaseEvent::ServiceInvocationRequested { .. } => "ServiceInvocationRequested",
            CaseEvent::ServiceAttemptFailed { .. } => "ServiceAttemptFailed",
            CaseEvent::ServiceInvocationCompleted { .. } => "ServiceInvocationCompleted",
            CaseEvent::ServiceInvocationFailed { .. } => "ServiceInvocationFailed",
            CaseEvent::ServiceInvocationCancelled { .. } => "ServiceInvocationCancelled",
            CaseEvent::IncidentRetried { .. } => "IncidentRetried",
            CaseEvent::DeadlineMissed { .. } => "DeadlineMissed",
            CaseEvent::EscalationNotified { .. } => "EscalationNotified",
            CaseEvent::PriorityRaised { .. } => "PriorityRaised",
            CaseEvent::DisclosureRecorded { .. } => "DisclosureRecorded",
            CaseEvent::WaitStarted { .. } => "WaitStarted",
            CaseEvent::AlertRaised { .. } => "AlertRaised",
            CaseEvent::AlertAcknowledged { .. } => "AlertAcknowledged",
            CaseEvent::WaitElapsed { .. } => "WaitElapsed",
            CaseEvent::WaitCancelled { .. } => "WaitCancelled",
        }
    }
}

impl DomainEvent for CaseEvent {
    const SCHEMA_VERSION: u16 = 1;

    fn event_type(&self) -> &'static str {
        self.type_name()
    }
}
