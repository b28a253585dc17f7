//! The case runtime's typed errors: each says what was wrong and what to fix.

use std::fmt;

use crate::definition::{FieldKey, ItemKey, RoleKey};
use crate::error::ErrorKind;
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
    ///
    /// For an existing case ([`ClearanceSubject::Case`]) its
    /// [`CaseError::kind`] is [`ErrorKind::NotFound`]: a case above a
    /// principal's clearance must look to them like no case at all.
    #[error("clearance {held} does not cover {subject}, marked {needed}")]
    InsufficientClearance {
        /// The case, a case being opened, or a field.
        subject: ClearanceSubject,
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
    /// No invocation of that number is pending on the case (it ended, or
    /// never was).
    #[error("no service invocation {invocation} is pending on the case")]
    UnknownInvocation {
        /// The invocation named.
        invocation: super::event::InvocationId,
    },
    /// An outcome for an attempt that is not the one due (a late or
    /// repeated report).
    #[error("{invocation} is at attempt {current}, not {attempt}")]
    StaleAttempt {
        /// The invocation.
        invocation: super::event::InvocationId,
        /// The attempt reported.
        attempt: u32,
        /// The attempt due.
        current: u32,
    },
    /// The deadline is not running, or has escalated already.
    #[error("deadline {deadline} is not running or has fired already")]
    DeadlineNotRunning {
        /// The deadline.
        deadline: crate::definition::DeadlineKey,
    },
    /// The wait step instance is not waiting (it elapsed, ended, or is
    /// suspended).
    #[error("wait step {instance} is not waiting")]
    WaitNotRunning {
        /// The wait step's instance.
        instance: InstanceId,
    },
    /// No open alert by that number (or one the caller may not see).
    #[error("no open {alert}")]
    NoAlert {
        /// The alert named.
        alert: super::event::AlertId,
    },
    /// No open incident on that invocation.
    #[error("no open incident on {invocation}")]
    NoIncident {
        /// The invocation named.
        invocation: super::event::InvocationId,
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
    /// Someone else holds the activity (claimed or assigned to them): only
    /// they, or a role the definition's `permissions.supervise` names, may
    /// start, complete, fail, terminate, reassign or route it.
    #[error("'{item}' is claimed by {claimed_by}; only they or a supervising role (permissions.supervise) may act on it")]
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

/// What a principal's clearance fell short for
/// ([`CaseError::InsufficientClearance`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClearanceSubject {
    /// An existing case: the principal may not even know it exists.
    Case,
    /// A case being opened at a classification above the clearance.
    NewCase,
    /// A case-file field marked above the clearance.
    Field(FieldKey),
}

impl fmt::Display for ClearanceSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClearanceSubject::Case => f.write_str("the case"),
            ClearanceSubject::NewCase => f.write_str("the new case"),
            ClearanceSubject::Field(key) => write!(f, "field '{key}'"),
        }
    }
}

/// The request path of an item reference.
const ITEM: &str = "item";
/// The request path of an item's instance.
const INSTANCE: &str = "item.instance";

impl CaseError {
    /// What the error means to a caller.
    ///
    /// A case the principal may not see at all (not opened, another
    /// tenant's, above their clearance) is [`ErrorKind::NotFound`]; a missing
    /// role, or clearance short of a field or of the classification a new
    /// case asks for, is [`ErrorKind::PermissionDenied`]. A command that
    /// names an unknown or unsuitable item, instance or field is
    /// [`ErrorKind::InvalidArgument`] with that part's path (`item`,
    /// `item.instance`, or the field or output key); one the case's current
    /// state does not allow is [`ErrorKind::Conflict`]. Failures of the
    /// definition or of stored history are [`ErrorKind::Internal`].
    pub fn kind(&self) -> ErrorKind {
        let conflict = ErrorKind::Conflict {
            actual_version: None,
        };
        match self {
            CaseError::NotOpened | CaseError::WrongTenant { .. } => ErrorKind::NotFound,
            CaseError::InsufficientClearance { subject, .. } => match subject {
                ClearanceSubject::Case => ErrorKind::NotFound,
                ClearanceSubject::NewCase | ClearanceSubject::Field(_) => {
                    ErrorKind::PermissionDenied
                }
            },
            CaseError::Forbidden { .. } => ErrorKind::PermissionDenied,
            CaseError::AlreadyOpened | CaseError::AlreadyPlanned { .. } => ErrorKind::AlreadyExists,
            CaseError::UnknownItem { .. }
            | CaseError::WrongItemKind { .. }
            | CaseError::NotDiscretionary { .. } => ErrorKind::invalid(ITEM),
            CaseError::UnknownInvocation { .. } | CaseError::NoIncident { .. } => {
                ErrorKind::invalid("invocation")
            }
            CaseError::NoAlert { .. } => ErrorKind::invalid("alert"),
            CaseError::StaleAttempt { .. }
            | CaseError::DeadlineNotRunning { .. }
            | CaseError::WaitNotRunning { .. } => conflict.clone(),
            CaseError::UnknownInstance { .. } | CaseError::AmbiguousItem { .. } => {
                ErrorKind::invalid(INSTANCE)
            }
            CaseError::InvalidField { field, .. } => ErrorKind::invalid(field.clone()),
            CaseError::InvalidCommand { .. } => ErrorKind::InvalidArgument { paths: Vec::new() },
            CaseError::ItemNotInPlan { .. }
            | CaseError::IllegalTransition { .. }
            | CaseError::ClaimedByAnother { .. }
            | CaseError::NotApplicable { .. }
            | CaseError::NotCompletable { .. }
            | CaseError::CaseSuspended
            | CaseError::CaseClosed { .. }
            | CaseError::IllegalCaseTransition { .. } => conflict,
            CaseError::RuleFailed { error, .. } => error.kind(),
            CaseError::DefinitionMismatch { .. }
            | CaseError::CascadeLimit { .. }
            | CaseError::AutomaticStepFailed { .. }
            | CaseError::InconsistentHistory { .. } => ErrorKind::Internal,
        }
    }

    pub(crate) fn invalid_field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        CaseError::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::EvalError;
    use crate::security::Classification;

    fn item() -> ItemKey {
        ItemKey::new("grade_incident")
    }

    fn clearance(subject: ClearanceSubject) -> CaseError {
        CaseError::InsufficientClearance {
            subject,
            needed: Classification::Secret,
            held: Classification::Official,
        }
    }

    #[test]
    fn case_errors_map_to_their_kinds() {
        let conflict = ErrorKind::Conflict {
            actual_version: None,
        };
        let cases = [
            (CaseError::NotOpened, ErrorKind::NotFound),
            (
                CaseError::WrongTenant {
                    tenant: TenantId::new("essex").unwrap(),
                },
                ErrorKind::NotFound,
            ),
            (clearance(ClearanceSubject::Case), ErrorKind::NotFound),
            (
                clearance(ClearanceSubject::NewCase),
                ErrorKind::PermissionDenied,
            ),
            (
                clearance(ClearanceSubject::Field(FieldKey::new("informant"))),
                ErrorKind::PermissionDenied,
            ),
            (
                CaseError::Forbidden {
                    action: "complete grade_incident".into(),
                    needed: vec![RoleKey::new("supervisor")],
                },
                ErrorKind::PermissionDenied,
            ),
            (CaseError::AlreadyOpened, ErrorKind::AlreadyExists),
            (
                CaseError::AlreadyPlanned { item: item() },
                ErrorKind::AlreadyExists,
            ),
            (
                CaseError::UnknownItem {
                    item: "nope".into(),
                },
                ErrorKind::invalid("item"),
            ),
            (
                CaseError::WrongItemKind {
                    item: item(),
                    kind: "stage".into(),
                    action: "claim".into(),
                },
                ErrorKind::invalid("item"),
            ),
            (
                CaseError::NotDiscretionary { item: item() },
                ErrorKind::invalid("item"),
            ),
            (
                CaseError::UnknownInstance {
                    item: item(),
                    instance: InstanceId(7),
                },
                ErrorKind::invalid("item.instance"),
            ),
            (
                CaseError::AmbiguousItem {
                    item: item(),
                    instances: vec![InstanceId(2), InstanceId(3)],
                },
                ErrorKind::invalid("item.instance"),
            ),
            (
                CaseError::invalid_field("age", "expected an integer"),
                ErrorKind::invalid("age"),
            ),
            (
                CaseError::InvalidCommand {
                    reason: "empty note".into(),
                },
                ErrorKind::InvalidArgument { paths: vec![] },
            ),
            (CaseError::ItemNotInPlan { item: item() }, conflict.clone()),
            (
                CaseError::IllegalTransition {
                    item: item(),
                    from: ItemState::Completed,
                    action: "start".into(),
                },
                conflict.clone(),
            ),
            (
                CaseError::ClaimedByAnother {
                    item: item(),
                    claimed_by: "pc-2".into(),
                },
                conflict.clone(),
            ),
            (
                CaseError::NotApplicable {
                    item: item(),
                    condition: "false".into(),
                },
                conflict.clone(),
            ),
            (
                CaseError::NotCompletable {
                    item: "the case".into(),
                    reason: "a stage is active".into(),
                },
                conflict.clone(),
            ),
            (CaseError::CaseSuspended, conflict.clone()),
            (
                CaseError::CaseClosed {
                    status: CaseStatus::Closed,
                },
                conflict.clone(),
            ),
            (
                CaseError::IllegalCaseTransition {
                    from: CaseStatus::Active,
                    action: "resume".into(),
                },
                conflict,
            ),
            (
                CaseError::RuleFailed {
                    owner: "entry of 'locate'".into(),
                    error: EvalError::DivisionByZero {
                        expression: "a / b".into(),
                    },
                },
                ErrorKind::Internal,
            ),
            (
                CaseError::DefinitionMismatch {
                    expected: "foi v1".into(),
                    found: "foi v2".into(),
                },
                ErrorKind::Internal,
            ),
            (
                CaseError::CascadeLimit {
                    limit: 1000,
                    last: "loop".into(),
                },
                ErrorKind::Internal,
            ),
            (
                CaseError::AutomaticStepFailed {
                    item: item(),
                    reason: "x".into(),
                },
                ErrorKind::Internal,
            ),
            (
                CaseError::InconsistentHistory {
                    event: "ItemStarted".into(),
                    reason: "x".into(),
                },
                ErrorKind::Internal,
            ),
        ];
        for (err, kind) in cases {
            assert_eq!(err.kind(), kind, "{err}");
        }
    }

    #[test]
    fn clearance_subjects_read_as_before() {
        assert_eq!(
            clearance(ClearanceSubject::Case).to_string(),
            "clearance OFFICIAL does not cover the case, marked SECRET"
        );
        assert_eq!(
            ClearanceSubject::Field(FieldKey::new("informant")).to_string(),
            "field 'informant'"
        );
    }
}
