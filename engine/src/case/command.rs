//! Case commands: what a person (or the orchestration layer) asks of a case.

use serde::{Deserialize, Serialize};

use crate::definition::ItemKey;
use crate::security::Classification;

use super::error::CaseError;
use super::event::{EntityRole, InvocationId, PoleRef};
use super::file::CaseFile;
use super::state::InstanceId;

/// A plan item as a command names it: by key, and by instance when the item
/// is repeatable and several instances qualify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemRef {
    /// The item's key in the definition.
    pub key: ItemKey,
    /// A specific instance; `None` picks the one instance the action applies to.
    #[serde(default)]
    pub instance: Option<InstanceId>,
}

impl ItemRef {
    /// The single instance of `key` the action applies to.
    pub fn key(key: impl Into<String>) -> Self {
        ItemRef {
            key: ItemKey::new(key.into()),
            instance: None,
        }
    }

    /// A specific instance.
    pub fn instance(key: impl Into<String>, instance: InstanceId) -> Self {
        ItemRef {
            key: ItemKey::new(key.into()),
            instance: Some(instance),
        }
    }
}

impl From<&str> for ItemRef {
    fn from(key: &str) -> Self {
        ItemRef::key(key)
    }
}

/// A request to change a case. See [`super::decide`] for who may issue each
/// command and from which states.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseCommand {
    /// Open the case with an initial case file (every `required` field).
    /// The tenant is the principal's.
    Open {
        /// Initial values by field key.
        case_file: CaseFile,
        /// A classification above the definition's default, if needed.
        classification: Option<Classification>,
    },
    /// Change case-file fields outside a task's form (`null` clears a field
    /// that is not required).
    UpdateCaseFile {
        /// New values by field key.
        changes: CaseFile,
    },
    /// Start an enabled item (manual activation): enabled -> active.
    Start {
        /// The activity or stage.
        item: ItemRef,
    },
    /// Claim an enabled or active activity for oneself.
    Claim {
        /// The activity.
        item: ItemRef,
    },
    /// Assign an enabled or active activity to someone.
    Assign {
        /// The activity.
        item: ItemRef,
        /// The assignee's principal id.
        assignee: String,
    },
    /// Route an enabled or active human task to another team's work queue
    /// (whoever held it is released: the new team picks it up).
    AssignTeam {
        /// The human task.
        item: ItemRef,
        /// The team's key (an identifier, e.g. `missing_persons`).
        team: String,
    },
    /// Complete an active human or service task (with outputs), or a stage
    /// whose required work is done.
    Complete {
        /// The activity or stage.
        item: ItemRef,
        /// Human task: form field -> value. Service task: result key -> value
        /// (mapped into the case file by the task's `output`). Stage: empty.
        outputs: CaseFile,
    },
    /// Record that an active activity failed.
    Fail {
        /// The activity.
        item: ItemRef,
        /// Why.
        reason: String,
    },
    /// End a non-terminal item (and its descendants): terminated.
    Terminate {
        /// The item.
        item: ItemRef,
    },
    /// Choose not to do an enabled item: disabled.
    Disable {
        /// The item.
        item: ItemRef,
    },
    /// Change one's mind about a disabled item: enabled again, waiting for
    /// a person to start it (while its stage is still active).
    Reenable {
        /// The item.
        item: ItemRef,
    },
    /// Suspend an activity or a stage (and its non-terminal children).
    SuspendItem {
        /// The item.
        item: ItemRef,
    },
    /// Resume a suspended activity or stage, restoring previous states.
    ResumeItem {
        /// The item.
        item: ItemRef,
    },
    /// Plan a discretionary activity or stage into its stage (or the case).
    AddDiscretionary {
        /// The discretionary item.
        item: ItemKey,
        /// The stage it goes into, if the caller wants it checked; it must be
        /// the stage the definition places it in (`None`: use that stage).
        stage: Option<ItemKey>,
    },
    /// Reach a milestone that is waiting for its entry criteria by hand.
    ReachMilestone {
        /// The milestone.
        item: ItemRef,
    },
    /// Link a POLE entity with a role.
    LinkEntity {
        /// The entity.
        entity: PoleRef,
        /// Its role in the case.
        role: EntityRole,
    },
    /// Add a note.
    AddNote {
        /// The text.
        text: String,
    },
    /// Suspend the case: every non-terminal item is suspended.
    Suspend,
    /// Resume the case: every item the case suspension suspended returns to
    /// its previous state.
    Resume,
    /// Complete the case by hand (nothing active, required work terminal).
    CompleteCase,
    /// Close the case: every non-terminal item is terminated.
    Close {
        /// Why, if given.
        reason: Option<String>,
    },
    /// Reopen a completed, terminated or closed case.
    Reopen {
        /// Why, if given.
        reason: Option<String>,
    },
    /// Record what an attempt of a service invocation came to (the
    /// orchestration layer's own command: `casebook_system` only).
    RecordServiceOutcome {
        /// The invocation.
        invocation: InvocationId,
        /// The attempt (from 1) this outcome is for.
        attempt: u32,
        /// What it came to.
        outcome: ServiceOutcome,
    },
    /// Fire a deadline's timer: it is missed and its escalations run (the
    /// orchestration layer's own command: `casebook_system` only).
    FireDeadline {
        /// The deadline.
        deadline: crate::definition::DeadlineKey,
        /// The owning instance, as set.
        instance: Option<InstanceId>,
    },
    /// Acknowledge an alert in a work queue: it leaves the queue (a holder
    /// of one of the roles the alert names).
    AcknowledgeAlert {
        /// The alert.
        alert: super::AlertId,
    },
    /// Fire a wait step's timer: it has waited long enough and completes
    /// (the orchestration layer's own command: `casebook_system` only).
    FireWait {
        /// The wait step's instance.
        instance: InstanceId,
    },
    /// Retry a failed service invocation: its incident is resolved and the
    /// task is active again with a new invocation (the task's roles, or an
    /// administrator).
    RetryIncident {
        /// The failed invocation.
        invocation: InvocationId,
    },
}

/// What an attempt of a service invocation came to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceOutcome {
    /// The service answered with this output (result key -> value).
    Completed {
        /// The output.
        output: std::collections::BTreeMap<String, serde_json::Value>,
        /// What the service disclosed outside the engine while doing it
        /// (each becomes a `DisclosureRecorded` event on the case).
        disclosures: Vec<super::DisclosureRecord>,
        /// The alerts it raised (each becomes an `AlertRaised` event).
        #[serde(default)]
        alerts: Vec<super::AlertRecord>,
    },
    /// The attempt failed.
    Failed {
        /// What went wrong.
        error: String,
        /// When to try again, for a retryable error (ignored after the last
        /// attempt); `None`: the error is permanent.
        retry_at: Option<crate::log::Timestamp>,
    },
}

impl CaseCommand {
    /// Refuses a command carrying a case-file value (or service output)
    /// nested deeper than [`MAX_VALUE_DEPTH`](super::MAX_VALUE_DEPTH),
    /// naming its key; the check uses no recursion, so it is safe before
    /// anything clones, compares or encodes the command. A refused command
    /// is taken apart without recursion too (its values may be too deep for
    /// an ordinary drop).
    ///
    /// # Errors
    /// [`CaseError::InvalidField`] naming the field (or output) key.
    pub fn check_nesting(self) -> Result<Self, CaseError> {
        let mut too_deep = None;
        self.for_each_value(|key, value| {
            if too_deep.is_none() {
                if let Err(e) = super::values::check_depth(value) {
                    too_deep = Some(CaseError::invalid_field(key, e.to_string()));
                }
            }
        });
        match too_deep {
            None => Ok(self),
            Some(e) => {
                self.discard();
                Err(e)
            }
        }
    }

    fn for_each_value(&self, mut f: impl FnMut(&str, &serde_json::Value)) {
        match self {
            CaseCommand::Open {
                case_file: file, ..
            }
            | CaseCommand::UpdateCaseFile { changes: file }
            | CaseCommand::Complete { outputs: file, .. } => {
                file.iter().for_each(|(k, v)| f(k.as_str(), v))
            }
            CaseCommand::RecordServiceOutcome {
                outcome: ServiceOutcome::Completed { output, .. },
                ..
            } => output.iter().for_each(|(k, v)| f(k, v)),
            _ => {}
        }
    }

    /// Drops the command's values without recursion.
    fn discard(self) {
        let values: Vec<serde_json::Value> = match self {
            CaseCommand::Open {
                case_file: file, ..
            }
            | CaseCommand::UpdateCaseFile { changes: file }
            | CaseCommand::Complete { outputs: file, .. } => {
                file.into_iter().map(|(_, v)| v).collect()
            }
            CaseCommand::RecordServiceOutcome {
                outcome: ServiceOutcome::Completed { output, .. },
                ..
            } => output.into_values().collect(),
            _ => Vec::new(),
        };
        values.into_iter().for_each(super::values::discard);
    }
}
