//! The case runtime's typed errors: each says what was wrong and what to fix.

use crate::definition::{FieldKey, ItemKey, RoleKey};
use crate::log::TenantId;
use crate::rules::{EvalError, ItemState};
use crate::security::Classification;

use super::state::{CaseStatus, InstanceId};

/// Why a command was rejected (or a history could not be replayed).
///
/// A rejected command produces no events.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CaseError {
    /// The case has not been opened: the only legal command is `Open`.
    #[error("the case has not been opened; open it first")]
    NotOpened,
    /// `Open` on a case that exists already.
    #[error("the case is already open")]
    AlreadyOpened,
    /// The principal belongs to another tenant than the case.
    #[error("principal of tenant '{tenant}' cannot act on another tenant's case")]
    WrongTenant {
        /// The principal's tenant.
        tenant: TenantId,
    },
    /// The principal's clearance does not cover the case or a field.
    #[error("clearance {held} does not cover {subject}, marked {needed}")]
    InsufficientClearance {
        /// `the case` or `field 'x'`.
        subject: String,
        /// The marking that must be covered.
        needed: Classification,
        /// The principal's clearance.
        held: Classification,
    },
    /// The principal holds none of the roles the action needs.
    #[error("'{action}' needs one of the roles [{}]", needed.iter().map(RoleKey::as_str).collect::<Vec<_>>().join(", "))]
    Forbidden {
        /// The action, e.g. `complete grade_incident`.
        action: String,
        /// Roles that would allow it (empty: no one may).
        needed: Vec<RoleKey>,
    },
    /// The definition passed in is not the one the case was opened with.
    #[error("the case runs definition {expected}, not {found}")]
    DefinitionMismatch {
        /// `key v<version>` recorded on the case.
        expected: String,
        /// `key v<version>` passed in.
        found: String,
    },
    /// The definition has no plan item with this key.
    #[error("unknown plan item '{item}'")]
    UnknownItem {
        /// The key given.
        item: String,
    },
    /// The item is not of a kind the command applies to.
    #[error("'{item}' is a {kind}; '{action}' does not apply to it")]
    WrongItemKind {
        /// The item.
        item: ItemKey,
        /// `activity`, `stage`, `milestone`, `automatic step`...
        kind: String,
        /// The command.
        action: String,
    },
    /// The item is defined but has no instance in the plan yet (its stage is
    /// not active, or it is discretionary and not planned).
    #[error("'{item}' is not in the case plan yet")]
    ItemNotInPlan {
        /// The item.
        item: ItemKey,
    },
    /// The instance id does not name an instance of the item.
    #[error("'{item}' has no instance {instance}")]
    UnknownInstance {
        /// The item.
        item: ItemKey,
        /// The instance given.
        instance: InstanceId,
    },
    /// Several instances of a repeatable item qualify; name one.
    #[error("'{item}' has several instances that qualify ({}); give the instance", instances.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    AmbiguousItem {
        /// The item.
        item: ItemKey,
        /// The qualifying instances.
        instances: Vec<InstanceId>,
    },
    /// The lifecycle does not allow the action from the item's state.
    #[error("cannot {action} '{item}' while it is {from}")]
    IllegalTransition {
        /// The item.
        item: ItemKey,
        /// Its current state.
        from: ItemState,
        /// The action attempted.
        action: String,
    },
    /// Someone else has claimed the activity.
    #[error("'{item}' is claimed by {claimed_by}")]
    ClaimedByAnother {
        /// The activity.
        item: ItemKey,
        /// Who holds it.
        claimed_by: String,
    },
    /// A case-file value is unknown, of the wrong type, missing or not allowed.
    #[error("field '{field}': {reason}")]
    InvalidField {
        /// The field (or service result key).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The command is malformed in another way.
    #[error("invalid command: {reason}")]
    InvalidCommand {
        /// What is wrong.
        reason: String,
    },
    /// Only discretionary items can be planned.
    #[error("'{item}' is not discretionary: it is part of the plan already")]
    NotDiscretionary {
        /// The item.
        item: ItemKey,
    },
    /// The discretionary item's applicability rule does not hold.
    #[error("'{item}' cannot be planned now: its applicability rule `{condition}` does not hold")]
    NotApplicable {
        /// The item.
        item: ItemKey,
        /// The CEL rule.
        condition: String,
    },
    /// A non-repeatable discretionary item is planned already.
    #[error("'{item}' is planned already and is not repeatable")]
    AlreadyPlanned {
        /// The item.
        item: ItemKey,
    },
    /// A stage or the case cannot be completed by a person yet.
    #[error("{item} cannot be completed: {reason}")]
    NotCompletable {
        /// `stage 'x'` or `the case`.
        item: String,
        /// What still blocks it.
        reason: String,
    },
    /// The case is suspended; resume it first.
    #[error("the case is suspended; resume it first")]
    CaseSuspended,
    /// The case has ended; reopen it first.
    #[error("the case is {status}; reopen it first")]
    CaseClosed {
        /// Its status.
        status: CaseStatus,
    },
    /// The case lifecycle does not allow the action.
    #[error("cannot {action} a case that is {from}")]
    IllegalCaseTransition {
        /// Current status.
        from: CaseStatus,
        /// The action attempted.
        action: String,
    },
    /// The command's cascade of transitions did not reach a fixpoint within
    /// the per-command bound: the definition loops (e.g. a repeatable
    /// automatic step that retriggers itself).
    #[error("the command caused more than {limit} events without settling; the definition loops (last item: {last})")]
    CascadeLimit {
        /// The bound.
        limit: usize,
        /// The last item the cascade touched.
        last: String,
    },
    /// A sentry, applicability or deadline condition failed to evaluate.
    #[error("rule of {owner} failed: {error}")]
    RuleFailed {
        /// Where the rule sits, e.g. `entry of 'locate'`.
        owner: String,
        /// The evaluation error.
        error: EvalError,
    },
    /// An automatic step's `set` produced a value its field cannot hold.
    #[error("automatic step '{item}' failed: {reason}")]
    AutomaticStepFailed {
        /// The step.
        item: ItemKey,
        /// What went wrong.
        reason: String,
    },
    /// A stored event does not fit the case's state (corrupt or foreign history).
    #[error("inconsistent case history at {event}: {reason}")]
    InconsistentHistory {
        /// The event type.
        event: String,
        /// What did not fit.
        reason: String,
    },
}

impl CaseError {
    pub(crate) fn invalid_field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        CaseError::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

pub(crate) fn field_display(f: &FieldKey) -> String {
    format!("field '{f}'")
}
