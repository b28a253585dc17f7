//! A given/when/then harness for the case runtime: given these events (or
//! the events of these commands), when this command, then these events or
//! this error. Events are compared in a compact form (`activated grade#3`)
//! so that specifications read like the rules they check.

use crate::definition::CaseDefinition;
use crate::log::{TenantId, Timestamp};
use crate::security::{Classification, Principal};

use super::{decide, CaseCommand, CaseError, CaseEvent, CaseState};

/// The clock value every harness command runs at (2026-01-05T09:00:00Z).
pub(crate) const NOW: Timestamp = Timestamp(1_767_603_600_000_000);

/// A principal of tenant `kent` with the given roles and SECRET clearance.
pub(crate) fn who(roles: &[&str]) -> Principal {
    Principal::new(TenantId::new("kent").expect("valid tenant"), "pc-1")
        .with_roles(roles.iter().copied())
        .with_clearance(Classification::Secret)
}

/// Parses a test definition (panics with every problem if it is invalid).
pub(crate) fn definition(toml: &str) -> CaseDefinition {
    CaseDefinition::from_toml(toml).unwrap_or_else(|e| panic!("test definition: {e}"))
}

/// One event in compact form, e.g. `activated grade#3`, `case completed`.
pub(crate) fn brief(e: &CaseEvent) -> String {
    match e {
        CaseEvent::CaseOpened { .. } => "case opened".into(),
        CaseEvent::CaseFileUpdated { changes } => format!(
            "updated {}",
            changes
                .keys()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(",")
        ),
        CaseEvent::PlanItemCreated { instance, item, .. } => format!("created {item}{instance}"),
        CaseEvent::PlanItemEnabled { instance, item } => format!("enabled {item}{instance}"),
        CaseEvent::PlanItemActivated { instance, item } => format!("activated {item}{instance}"),
        CaseEvent::PlanItemCompleted { instance, item, .. } => {
            format!("completed {item}{instance}")
        }
        CaseEvent::PlanItemTerminated { instance, item } => {
            format!("terminated {item}{instance}")
        }
        CaseEvent::PlanItemFailed { instance, item, .. } => format!("failed {item}{instance}"),
        CaseEvent::PlanItemSuspended { instance, item, .. } => {
            format!("suspended {item}{instance}")
        }
        CaseEvent::PlanItemResumed {
            instance,
            item,
            restored,
        } => format!("resumed {item}{instance} to {restored}"),
        CaseEvent::PlanItemDisabled { instance, item } => format!("disabled {item}{instance}"),
        CaseEvent::MilestoneReached { instance, item } => format!("reached {item}{instance}"),
        CaseEvent::ActivityClaimed { instance, item, by } => {
            format!("claimed {item}{instance} by {by}")
        }
        CaseEvent::ActivityAssigned {
            instance,
            item,
            assignee,
            ..
        } => format!("assigned {item}{instance} to {assignee}"),
        CaseEvent::ActivityTeamAssigned {
            instance,
            item,
            team,
            ..
        } => format!("routed {item}{instance} to team {team}"),
        CaseEvent::DiscretionaryItemPlanned { item, .. } => format!("planned {item}"),
        CaseEvent::EntityLinked { entity, role, .. } => format!("linked {} as {role:?}", entity.id),
        CaseEvent::NoteAdded { .. } => "note added".into(),
        CaseEvent::CaseSuspended {} => "case suspended".into(),
        CaseEvent::CaseResumed {} => "case resumed".into(),
        CaseEvent::CaseCompleted {} => "case completed".into(),
        CaseEvent::CaseTerminated {} => "case terminated".into(),
        CaseEvent::CaseClosed { .. } => "case closed".into(),
        CaseEvent::CaseReopened { .. } => "case reopened".into(),
        CaseEvent::DeadlineSet { deadline, .. } => format!("deadline set {deadline}"),
        CaseEvent::DeadlineMet { deadline, .. } => format!("deadline met {deadline}"),
        CaseEvent::DeadlineCancelled { deadline, .. } => format!("deadline cancelled {deadline}"),
        CaseEvent::ServiceInvocationRequested {
            invocation,
            request,
            ..
        } => format!("requested {} {invocation}", request.service),
        CaseEvent::ServiceAttemptFailed {
            invocation,
            attempt,
            ..
        } => format!("attempt {attempt} of {invocation} failed"),
        CaseEvent::ServiceInvocationCompleted { invocation, .. } => {
            format!("{invocation} completed")
        }
        CaseEvent::ServiceInvocationFailed { invocation, .. } => format!("{invocation} failed"),
        CaseEvent::ServiceInvocationCancelled { invocation } => {
            format!("{invocation} cancelled")
        }
        CaseEvent::IncidentRetried { invocation, .. } => format!("{invocation} retried"),
        CaseEvent::DeadlineMissed { deadline, .. } => format!("deadline missed {deadline}"),
        CaseEvent::EscalationNotified { roles, .. } => format!(
            "notified {}",
            roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(",")
        ),
        CaseEvent::PriorityRaised { priority, .. } => format!("priority {priority:?}"),
        CaseEvent::DisclosureRecorded {
            invocation,
            disclosure,
            ..
        } => format!("disclosed {invocation} to {}", disclosure.recipient),
        CaseEvent::WaitStarted { item, instance, .. } => format!("wait started {item}{instance}"),
        CaseEvent::AlertRaised { alert, record, .. } => {
            format!("alert {alert} to {}", record.queue)
        }
        CaseEvent::AlertAcknowledged { alert, by, .. } => {
            format!("alert {alert} acknowledged by {by}")
        }
        CaseEvent::WaitElapsed { item, instance } => format!("wait elapsed {item}{instance}"),
        CaseEvent::WaitCancelled { item, instance } => format!("wait cancelled {item}{instance}"),
    }
}

/// A specification: a definition and a history.
pub(crate) struct Given {
    pub def: CaseDefinition,
    pub events: Vec<CaseEvent>,
    pub principal: Principal,
}

/// The outcome of `when`.
pub(crate) struct Then<'g> {
    given: &'g Given,
    pub result: Result<Vec<CaseEvent>, CaseError>,
}

impl Given {
    /// A case of `toml`'s definition with no history; commands run as a
    /// principal holding `roles`.
    pub fn definition(toml: &str, roles: &[&str]) -> Self {
        Given {
            def: definition(toml),
            events: Vec::new(),
            principal: who(roles),
        }
    }

    /// Adds events to the history.
    pub fn events(mut self, events: impl IntoIterator<Item = CaseEvent>) -> Self {
        self.events.extend(events);
        self
    }

    /// Adds the events of a command (which must succeed) to the history.
    pub fn command(mut self, command: CaseCommand) -> Self {
        let new = decide(
            &self.def,
            &self.state(),
            &self.principal,
            command.clone(),
            NOW,
        )
        .unwrap_or_else(|e| panic!("given {command:?}: {e}"));
        self.events.extend(new);
        self
    }

    /// Opens the case with this case file (JSON object).
    pub fn opened(self, case_file: serde_json::Value) -> Self {
        self.command(open(case_file))
    }

    /// The state the history replays to.
    pub fn state(&self) -> CaseState {
        CaseState::replay(&self.def, &self.events).unwrap_or_else(|e| panic!("replay: {e}"))
    }

    /// Decides `command` as the harness principal.
    pub fn when(&self, command: CaseCommand) -> Then<'_> {
        self.when_as(&self.principal, command)
    }

    /// Decides `command` as `principal`.
    pub fn when_as(&self, principal: &Principal, command: CaseCommand) -> Then<'_> {
        let state = self.state();
        let result = decide(&self.def, &state, principal, command, NOW);
        if let Ok(new) = &result {
            // Incremental application and full replay agree.
            let mut incremental = state.clone();
            for e in new {
                incremental
                    .apply(&self.def, e)
                    .unwrap_or_else(|err| panic!("apply {}: {err}", brief(e)));
            }
            let all: Vec<CaseEvent> = self.events.iter().chain(new).cloned().collect();
            let replayed = CaseState::replay(&self.def, &all).expect("replay");
            assert_eq!(
                incremental, replayed,
                "replay differs from incremental state"
            );
        }
        Then {
            given: self,
            result,
        }
    }
}

impl Then<'_> {
    /// The new events in compact form (panics on an error).
    pub fn briefs(&self) -> Vec<String> {
        match &self.result {
            Ok(events) => events.iter().map(brief).collect(),
            Err(e) => panic!("expected events, got error: {e}"),
        }
    }

    /// Asserts the exact events.
    #[track_caller]
    pub fn then(&self, expected: &[&str]) {
        assert_eq!(self.briefs(), expected);
    }

    /// Asserts the events include these, in this order (others may interleave).
    #[track_caller]
    pub fn then_includes(&self, expected: &[&str]) {
        let got = self.briefs();
        let mut it = got.iter();
        for e in expected {
            assert!(
                it.any(|g| g == e),
                "expected `{e}` (in order) among {got:#?}"
            );
        }
    }

    /// Asserts the events include none of these.
    #[track_caller]
    pub fn then_excludes(&self, unexpected: &[&str]) {
        let got = self.briefs();
        for u in unexpected {
            assert!(!got.iter().any(|g| g == u), "unexpected `{u}` in {got:#?}");
        }
    }

    /// Asserts the command was rejected with this error.
    #[track_caller]
    pub fn then_error(&self, expected: CaseError) {
        match &self.result {
            Err(e) => assert_eq!(e, &expected),
            Ok(events) => panic!(
                "expected error {expected}, got events {:?}",
                events.iter().map(brief).collect::<Vec<_>>()
            ),
        }
    }

    /// Asserts the command was rejected, and returns the error.
    #[track_caller]
    pub fn error(&self) -> CaseError {
        match &self.result {
            Err(e) => e.clone(),
            Ok(events) => panic!(
                "expected an error, got events {:?}",
                events.iter().map(brief).collect::<Vec<_>>()
            ),
        }
    }

    /// The state after the command (panics on an error).
    pub fn state(&self) -> CaseState {
        let mut state = self.given.state();
        if let Ok(events) = &self.result {
            for e in events {
                state.apply(&self.given.def, e).expect("apply");
            }
        }
        state
    }

    /// Continues the history with this command's events (panics on an error).
    pub fn and(self) -> Given {
        let events = match self.result {
            Ok(events) => events,
            Err(e) => panic!("expected events, got error: {e}"),
        };
        Given {
            def: self.given.def.clone(),
            events: self.given.events.iter().cloned().chain(events).collect(),
            principal: self.given.principal.clone(),
        }
    }
}

/// `Open` with a JSON object as the case file.
pub(crate) fn open(case_file: serde_json::Value) -> CaseCommand {
    CaseCommand::Open {
        case_file: fields(case_file),
        classification: None,
    }
}

/// A JSON object as case-file changes.
pub(crate) fn fields(v: serde_json::Value) -> super::CaseFile {
    super::CaseFile::from_json(v).expect("a JSON object")
}

/// A JSON object as outputs.
pub(crate) fn outputs(v: serde_json::Value) -> super::CaseFile {
    fields(v)
}

/// `UpdateCaseFile`.
pub(crate) fn update(v: serde_json::Value) -> CaseCommand {
    CaseCommand::UpdateCaseFile { changes: fields(v) }
}

/// `Complete` with outputs.
pub(crate) fn complete(key: &str, out: serde_json::Value) -> CaseCommand {
    CaseCommand::Complete {
        item: key.into(),
        outputs: outputs(out),
    }
}

/// `Start`.
pub(crate) fn start(key: &str) -> CaseCommand {
    CaseCommand::Start { item: key.into() }
}
