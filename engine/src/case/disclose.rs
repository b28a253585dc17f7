//! What one reader may learn of a case: fields, plan items, deadlines and events.
//!
//! A field is visible when the reader's clearance covers the higher of its
//! marking and the case's; a plan item or deadline when it covers the higher
//! of its *effective* marking (see [`CaseDefinition::markings`]) and the
//! case's. Every output built from a case — its view, the events a command
//! returns, the timeline, work queues, deadlines — asks a [`Disclosure`],
//! so the rule is written once.
//!
//! A disclosure may also **withhold** fields whatever the clearance
//! ([`Disclosure::withholding`]): the fields holding a restricted subject's
//! data (DPA 2018 s47(2), see [`crate::records::restriction`]). A withheld
//! field reads exactly as a field above the reader's clearance.

use std::collections::{BTreeMap, BTreeSet};

use crate::definition::CaseDefinition;
use crate::security::{Classification, Principal};

use super::event::{CaseEvent, InvocationId};
use super::state::CaseState;

/// What a case event tells about, for deciding who may see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum About<'e> {
    /// A plan item's state, claim or routing.
    Item(&'e crate::definition::ItemKey),
    /// A deadline.
    Deadline(&'e crate::definition::DeadlineKey),
    /// A service invocation (its task is the item it is about).
    Invocation(InvocationId),
    /// Case-file fields (`CaseOpened`, `CaseFileUpdated`).
    Fields,
    /// The case as a whole: status, notes, entities.
    Case,
}

impl CaseEvent {
    /// What the event tells about.
    pub(crate) fn about(&self) -> About<'_> {
        match self {
            CaseEvent::PlanItemCreated { item, .. }
            | CaseEvent::PlanItemEnabled { item, .. }
            | CaseEvent::PlanItemActivated { item, .. }
            | CaseEvent::PlanItemCompleted { item, .. }
            | CaseEvent::PlanItemTerminated { item, .. }
            | CaseEvent::PlanItemFailed { item, .. }
            | CaseEvent::PlanItemSuspended { item, .. }
            | CaseEvent::PlanItemResumed { item, .. }
            | CaseEvent::PlanItemDisabled { item, .. }
            | CaseEvent::MilestoneReached { item, .. }
            | CaseEvent::ActivityClaimed { item, .. }
            | CaseEvent::ActivityAssigned { item, .. }
            | CaseEvent::ActivityTeamAssigned { item, .. }
            | CaseEvent::DiscretionaryItemPlanned { item, .. }
            | CaseEvent::ServiceInvocationRequested { item, .. }
            | CaseEvent::WaitStarted { item, .. }
            | CaseEvent::WaitElapsed { item, .. }
            | CaseEvent::WaitCancelled { item, .. }
            | CaseEvent::AlertRaised { item, .. }
            | CaseEvent::AlertAcknowledged { item, .. } => About::Item(item),
            CaseEvent::DeadlineSet { deadline, .. }
            | CaseEvent::DeadlineMet { deadline, .. }
            | CaseEvent::DeadlineCancelled { deadline, .. }
            | CaseEvent::DeadlineMissed { deadline, .. }
            | CaseEvent::EscalationNotified { deadline, .. }
            | CaseEvent::PriorityRaised { deadline, .. } => About::Deadline(deadline),
            CaseEvent::ServiceAttemptFailed { invocation, .. }
            | CaseEvent::ServiceInvocationCompleted { invocation, .. }
            | CaseEvent::ServiceInvocationFailed { invocation, .. }
            | CaseEvent::ServiceInvocationCancelled { invocation }
            | CaseEvent::IncidentRetried { invocation, .. }
            | CaseEvent::DisclosureRecorded { invocation, .. } => About::Invocation(*invocation),
            CaseEvent::CaseOpened { .. } | CaseEvent::CaseFileUpdated { .. } => About::Fields,
            CaseEvent::EntityLinked { .. }
            | CaseEvent::NoteAdded { .. }
            | CaseEvent::CaseSuspended {}
            | CaseEvent::CaseResumed {}
            | CaseEvent::CaseCompleted {}
            | CaseEvent::CaseTerminated {}
            | CaseEvent::CaseClosed { .. }
            | CaseEvent::CaseReopened { .. } => About::Case,
        }
    }
}

/// One reader's view of one case's markings.
#[derive(Clone, Copy)]
pub struct Disclosure<'a> {
    def: &'a CaseDefinition,
    case: Classification,
    clearance: Classification,
    withheld: Option<&'a BTreeSet<String>>,
}

impl<'a> Disclosure<'a> {
    /// What `principal` may see of a case of `def` marked `case`.
    pub fn new(def: &'a CaseDefinition, case: Classification, principal: &Principal) -> Self {
        Disclosure::for_clearance(def, case, principal.clearance)
    }

    /// What a reader cleared for `clearance` may see.
    pub fn for_clearance(
        def: &'a CaseDefinition,
        case: Classification,
        clearance: Classification,
    ) -> Self {
        Disclosure {
            def,
            case,
            clearance,
            withheld: None,
        }
    }

    /// This disclosure with `fields` withheld whatever the clearance (the
    /// fields of restricted subjects).
    pub fn withholding(self, fields: &'a BTreeSet<String>) -> Self {
        Disclosure {
            withheld: (!fields.is_empty()).then_some(fields),
            ..self
        }
    }

    /// Whether the case itself is visible.
    pub fn case(&self) -> bool {
        self.clearance >= self.case
    }

    /// The marking of field `key` in this case (the higher of its own and
    /// the case's; an unknown field: the case's).
    pub fn field_marking(&self, key: &str) -> Classification {
        self.def
            .field(key)
            .and_then(|f| f.classification)
            .unwrap_or_default()
            .max(self.case)
    }

    /// Whether field `key` is visible: within the clearance and not
    /// withheld.
    pub fn field(&self, key: &str) -> bool {
        self.clearance >= self.field_marking(key) && self.withheld.is_none_or(|w| !w.contains(key))
    }

    /// The effective marking of plan item `key` in this case.
    pub fn item_marking(&self, key: &str) -> Classification {
        self.def.markings().item(key).max(self.case)
    }

    /// Whether plan item `key` is visible.
    pub fn item(&self, key: &str) -> bool {
        self.clearance >= self.item_marking(key)
    }

    /// The effective marking of deadline `key` in this case.
    pub fn deadline_marking(&self, key: &str) -> Classification {
        self.def.markings().deadline(key).max(self.case)
    }

    /// Whether deadline `key` is visible.
    pub fn deadline(&self, key: &str) -> bool {
        self.clearance >= self.deadline_marking(key)
    }

    /// The events of `events` the reader may see, with hidden fields taken
    /// out of those that carry several. `state` (before or after the
    /// events) names the items of invocations the events do not.
    pub fn events(&self, events: Vec<CaseEvent>, state: &CaseState) -> Vec<CaseEvent> {
        self.events_with(events, Disclosure::invocation_items(state))
    }

    /// The item of every invocation `state` still knows (pending, or an
    /// open incident), for [`Disclosure::events_with`].
    pub fn invocation_items(state: &CaseState) -> BTreeMap<InvocationId, String> {
        state
            .invocations
            .iter()
            .map(|p| (p.invocation, p.item.as_str().to_string()))
            .chain(
                state
                    .incidents
                    .iter()
                    .map(|i| (i.invocation, i.item.as_str().to_string())),
            )
            .collect()
    }

    /// [`Disclosure::events`] with the invocations' items given.
    pub fn events_with(
        &self,
        events: Vec<CaseEvent>,
        mut invocations: BTreeMap<InvocationId, String>,
    ) -> Vec<CaseEvent> {
        if !self.case() {
            return Vec::new();
        }
        for e in &events {
            if let CaseEvent::ServiceInvocationRequested {
                invocation, item, ..
            } = e
            {
                invocations.insert(*invocation, item.as_str().to_string());
            }
        }
        events
            .into_iter()
            .filter_map(|e| self.event(e, &invocations))
            .collect()
    }

    fn fields(
        &self,
        map: BTreeMap<crate::definition::FieldKey, serde_json::Value>,
    ) -> BTreeMap<crate::definition::FieldKey, serde_json::Value> {
        map.into_iter()
            .filter(|(k, _)| self.field(k.as_str()))
            .collect()
    }

    fn event(
        &self,
        e: CaseEvent,
        invocations: &BTreeMap<InvocationId, String>,
    ) -> Option<CaseEvent> {
        let invocation = |id: &InvocationId| invocations.get(id).is_some_and(|k| self.item(k));
        let keep = match &e {
            CaseEvent::CaseOpened { .. } => {
                return Some(match e {
                    CaseEvent::CaseOpened {
                        tenant,
                        definition,
                        case_file,
                        classification,
                        opened_at,
                    } => CaseEvent::CaseOpened {
                        tenant,
                        definition,
                        case_file: self.fields(case_file),
                        classification,
                        opened_at,
                    },
                    other => other,
                })
            }
            CaseEvent::CaseFileUpdated { changes } => {
                let changes = self.fields(changes.clone());
                return (!changes.is_empty()).then_some(CaseEvent::CaseFileUpdated { changes });
            }
            CaseEvent::PlanItemCompleted { item, .. } => {
                if !self.item(item.as_str()) {
                    return None;
                }
                return Some(match e {
                    CaseEvent::PlanItemCompleted {
                        instance,
                        item,
                        outputs,
                    } => CaseEvent::PlanItemCompleted {
                        instance,
                        item,
                        outputs: self.fields(outputs),
                    },
                    other => other,
                });
            }
            other => match other.about() {
                About::Item(item) => self.item(item.as_str()),
                About::Deadline(deadline) => self.deadline(deadline.as_str()),
                About::Invocation(i) => invocation(&i),
                About::Fields | About::Case => true,
            },
        };
        keep.then_some(e)
    }
}
