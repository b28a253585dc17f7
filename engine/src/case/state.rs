//! Case state: the fold of a case's events, and the one place events change it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use imbl::Vector;
use serde::{Deserialize, Serialize};

use crate::definition::{
    ActivityKind, CaseDefinition, DeadlineKey, FieldKey, ItemKey, OnPart, PlanItem, Priority,
    Sentry, ServiceName,
};
use crate::log::{TenantId, Timestamp};
use crate::rules::{ItemState, PlanState};
use crate::security::Classification;

use super::error::CaseError;
use super::event::{
    CaseEvent, DeadlineDue, DefinitionRef, EntityRole, InvocationId, InvocationRequest, PoleRef,
    SuspendedBy,
};

/// A plan item instance's id, unique within its case (1, 2, 3 ... in
/// creation order, so a child's id is always above its stage's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceId(pub u32);

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// The case's own lifecycle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseStatus {
    /// No `CaseOpened` yet.
    #[default]
    NotOpened,
    /// Open and being worked.
    Active,
    /// Suspended by a person.
    Suspended,
    /// Completed (autocomplete or a person).
    Completed,
    /// Ended by a case exit criterion.
    Terminated,
    /// Closed by a person.
    Closed,
}

impl CaseStatus {
    /// Whether the case has ended (completed, terminated or closed).
    pub fn is_ended(self) -> bool {
        matches!(
            self,
            CaseStatus::Completed | CaseStatus::Terminated | CaseStatus::Closed
        )
    }

    /// The status name, e.g. `active`.
    pub fn as_str(self) -> &'static str {
        match self {
            CaseStatus::NotOpened => "not opened",
            CaseStatus::Active => "active",
            CaseStatus::Suspended => "suspended",
            CaseStatus::Completed => "completed",
            CaseStatus::Terminated => "terminated",
            CaseStatus::Closed => "closed",
        }
    }
}

impl fmt::Display for CaseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a plan item state is terminal (completed, terminated, failed, disabled).
pub fn is_terminal(state: ItemState) -> bool {
    matches!(
        state,
        ItemState::Completed | ItemState::Terminated | ItemState::Failed | ItemState::Disabled
    )
}

/// One instance of a plan item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemInstance {
    /// The instance id.
    pub id: InstanceId,
    /// The definition key.
    pub key: ItemKey,
    /// The enclosing stage instance (`None`: the case plan).
    pub parent: Option<InstanceId>,
    /// The lifecycle state.
    pub state: ItemState,
    /// While suspended: the state to restore.
    pub previous: Option<ItemState>,
    /// While suspended: what suspended it.
    pub suspended_by: Option<SuspendedBy>,
    /// Whether a caseworker planned it.
    pub discretionary: bool,
    /// Who claimed (or was assigned) it.
    pub claimed_by: Option<String>,
    /// Latched on-parts of each entry criterion (`[sentry][on-part]`).
    pub entry_latches: Vec<Vec<bool>>,
    /// Latched on-parts of each exit criterion.
    pub exit_latches: Vec<Vec<bool>>,
    /// The team it was routed to at run time (`None`: the definition's).
    /// Always written (as nil when `None`), so the state also encodes as
    /// a positional array; older named snapshots without it still read.
    #[serde(default)]
    pub team: Option<String>,
}

impl ItemInstance {
    /// The team whose work queue the instance is in: the team it was routed
    /// to, else (for a human task) its definition's `team`.
    pub fn team<'d>(&'d self, def: &'d CaseDefinition) -> Option<&'d str> {
        if let Some(t) = &self.team {
            return Some(t);
        }
        match def.plan_item(self.key.as_str()).map(|(item, _)| item) {
            Some(PlanItem::Activity(a)) if a.kind == ActivityKind::HumanTask => {
                def.team_of(a).map(|t| t.as_str())
            }
            _ => None,
        }
    }

    /// Whether the instance is terminal.
    pub fn is_terminal(&self) -> bool {
        is_terminal(self.state)
    }

    /// Whether the instance waits for its entry criteria (available, or
    /// suspended while available).
    pub fn is_waiting(&self) -> bool {
        self.state == ItemState::Available
            || (self.state == ItemState::Suspended && self.previous == Some(ItemState::Available))
    }
}

/// A discretionary item planned into a stage that is not active yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedItem {
    /// The item.
    pub item: ItemKey,
    /// The stage (`None`: the case plan).
    pub stage: Option<ItemKey>,
}

/// A POLE entity linked to the case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityLink {
    /// The entity.
    pub entity: PoleRef,
    /// Its role.
    pub role: EntityRole,
    /// Who linked it.
    pub by: String,
}

/// A note on the case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// The text.
    pub text: String,
    /// The author.
    pub by: String,
    /// When.
    pub at: Timestamp,
}

/// A service invocation still wanted: its next attempt is due.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingInvocation {
    /// The invocation.
    pub invocation: InvocationId,
    /// The service task's instance.
    pub instance: InstanceId,
    /// Its key.
    pub item: ItemKey,
    /// Service, input and retry policy.
    pub request: InvocationRequest,
    /// The attempt due next (from 1).
    pub attempt: u32,
    /// When it may start.
    pub not_before: Timestamp,
    /// Why the previous attempt failed, if one did.
    pub last_error: Option<String>,
}

/// An open incident: a service invocation that failed for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// The failed invocation.
    pub invocation: InvocationId,
    /// The service task's instance.
    pub instance: InstanceId,
    /// Its key.
    pub item: ItemKey,
    /// The service.
    pub service: ServiceName,
    /// Attempts made.
    pub attempts: u32,
    /// What went wrong.
    pub error: String,
}

/// A running SLA clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningDeadline {
    /// The deadline.
    pub deadline: DeadlineKey,
    /// Its owning item.
    pub item: Option<ItemKey>,
    /// Its owning instance.
    pub instance: Option<InstanceId>,
    /// When it falls due.
    pub due: DeadlineDue,
    /// Its timer fired and its escalations ran (it is overdue).
    #[serde(default)]
    pub escalated: bool,
}

/// An alert in a work queue, not yet acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAlert {
    /// The alert.
    pub alert: super::event::AlertId,
    /// The service task that raised it.
    pub item: ItemKey,
    /// Its instance.
    pub instance: InstanceId,
    /// Where it goes, what it says, who may acknowledge it.
    pub record: super::event::AlertRecord,
    /// The marking of its message.
    pub marking: Classification,
}

/// A wait step's running timer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningWait {
    /// The wait step's instance.
    pub instance: InstanceId,
    /// Its key.
    pub item: ItemKey,
    /// When it has waited long enough.
    pub due: DeadlineDue,
}

/// Something that happened, as sentries and deadlines see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Occurred {
    CaseOpened,
    CaseEnded,
    Activated(ItemKey, InstanceId),
    Completed(ItemKey, InstanceId),
    Terminated(ItemKey, InstanceId),
    /// Failed or disabled: ends the instance without an on-part.
    Ended(InstanceId),
    Reached(ItemKey, InstanceId),
    Changed(FieldKey),
}

impl Occurred {
    /// The on-part this occurrence satisfies, if any.
    pub(crate) fn on_part(&self) -> Option<OnPart> {
        match self {
            Occurred::Completed(k, _) => Some(OnPart::Completed(k.clone())),
            Occurred::Terminated(k, _) => Some(OnPart::Terminated(k.clone())),
            Occurred::Reached(k, _) => Some(OnPart::Reached(k.clone())),
            Occurred::Changed(f) => Some(OnPart::Changed(f.clone())),
            _ => None,
        }
    }

    fn matches(&self, on: &OnPart) -> bool {
        match (self, on) {
            (Occurred::Completed(k, _), OnPart::Completed(o))
            | (Occurred::Terminated(k, _), OnPart::Terminated(o))
            | (Occurred::Reached(k, _), OnPart::Reached(o)) => k == o,
            (Occurred::Changed(f), OnPart::Changed(o)) => f == o,
            _ => false,
        }
    }
}

/// The state of one case: a pure fold of its events.
///
/// Serializable with named fields, so an engine can snapshot it (e.g. with
/// `rmp_serde::to_vec_named`) and resume applying events after the snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CaseState {
    /// The case's lifecycle.
    pub status: CaseStatus,
    /// The owning tenant (from `CaseOpened`).
    pub tenant: Option<TenantId>,
    /// The definition version the case runs.
    pub definition: Option<DefinitionRef>,
    /// The case's classification.
    pub classification: Classification,
    /// When it was opened.
    pub opened_at: Option<Timestamp>,
    /// The case file: field key -> value (absent fields are missing).
    pub case_file: BTreeMap<FieldKey, serde_json::Value>,
    /// Every plan item instance, in creation order (`id` n at index n-1).
    /// A persistent vector: a copy of the state shares it until one side
    /// changes an instance, so a command's working copy costs O(log n).
    pub items: Vector<ItemInstance>,
    /// Milestones reached at least once.
    pub reached: BTreeSet<ItemKey>,
    /// Discretionary items planned into stages not yet active.
    pub planned: Vec<PlannedItem>,
    /// Linked POLE entities (shared between copies, like `items`).
    pub entities: Vector<EntityLink>,
    /// Notes, oldest first (shared between copies, like `items`).
    pub notes: Vector<Note>,
    /// Running SLA clocks.
    pub deadlines: Vec<RunningDeadline>,
    /// Latched on-parts of the case's exit criteria.
    pub case_exit_latches: Vec<Vec<bool>>,
    /// Set by a reopen: the case then completes or ends only by a person.
    pub reopened: bool,
    /// Service invocations still wanted.
    #[serde(default)]
    pub invocations: Vec<PendingInvocation>,
    /// Open incidents (failed invocations nobody has retried yet).
    #[serde(default)]
    pub incidents: Vec<Incident>,
    /// The number of the last invocation requested (0: none yet).
    #[serde(default)]
    pub last_invocation: u32,
    /// The priority escalations raised the case to (`None`: normal).
    #[serde(default)]
    pub priority: Option<Priority>,
    /// Wait steps' running timers.
    #[serde(default)]
    pub waits: Vec<RunningWait>,
    /// Alerts raised and not yet acknowledged.
    #[serde(default)]
    pub alerts: Vec<OpenAlert>,
    /// The number of the last alert raised (0: none yet).
    #[serde(default)]
    pub last_alert: u32,
}

fn latches(sentries: &[Sentry]) -> Vec<Vec<bool>> {
    sentries.iter().map(|s| vec![false; s.on.len()]).collect()
}

fn latch(latches: &mut [Vec<bool>], sentries: &[Sentry], occ: &Occurred) {
    for (row, sentry) in latches.iter_mut().zip(sentries) {
        for (slot, on) in row.iter_mut().zip(&sentry.on) {
            if occ.matches(on) {
                *slot = true;
            }
        }
    }
}

/// Whether `occ` would set a latch not set yet.
fn would_latch(latches: &[Vec<bool>], sentries: &[Sentry], occ: &Occurred) -> bool {
    latches.iter().zip(sentries).any(|(row, sentry)| {
        row.iter()
            .zip(&sentry.on)
            .any(|(slot, on)| !*slot && occ.matches(on))
    })
}

fn latch_on(latches: &mut [Vec<bool>], sentries: &[Sentry], seen: &OnPart) {
    for (row, sentry) in latches.iter_mut().zip(sentries) {
        for (slot, on) in row.iter_mut().zip(&sentry.on) {
            if on == seen {
                *slot = true;
            }
        }
    }
}

fn clear(latches: &mut [Vec<bool>]) {
    for row in latches {
        row.iter_mut().for_each(|s| *s = false);
    }
}

impl CaseState {
    /// Rebuilds a case's state from all its events, oldest first.
    ///
    /// # Errors
    /// [`CaseError::DefinitionMismatch`] if the case was opened with another
    /// definition (key, version or fingerprint); [`CaseError::InconsistentHistory`]
    /// if an event does not fit the state (corrupt or foreign history).
    pub fn replay<'e>(
        def: &CaseDefinition,
        events: impl IntoIterator<Item = &'e CaseEvent>,
    ) -> Result<CaseState, CaseError> {
        let mut state = CaseState::default();
        for event in events {
            if let CaseEvent::CaseOpened { definition, .. } = event {
                if definition.key != def.key
                    || definition.version != def.version
                    || definition.fingerprint != def.fingerprint()
                {
                    return Err(CaseError::DefinitionMismatch {
                        expected: definition.to_string(),
                        found: format!("{} v{} (or its fingerprint)", def.key, def.version),
                    });
                }
            }
            state.apply(def, event)?;
        }
        Ok(state)
    }

    /// Applies one event. `def` must be the case's definition.
    ///
    /// # Errors
    /// [`CaseError::InconsistentHistory`] if the event does not fit (an
    /// unknown instance or item, a second `CaseOpened`, an event before
    /// `CaseOpened`); the state is then unspecified and should be discarded.
    pub fn apply(&mut self, def: &CaseDefinition, event: &CaseEvent) -> Result<(), CaseError> {
        self.apply_inner(def, event).map(|_| ())
    }

    /// The instance with this id.
    pub fn item(&self, id: InstanceId) -> Option<&ItemInstance> {
        let idx = usize::try_from(id.0).ok()?.checked_sub(1)?;
        self.items.get(idx).filter(|i| i.id == id)
    }

    fn item_mut(&mut self, id: InstanceId) -> Option<&mut ItemInstance> {
        let idx = usize::try_from(id.0).ok()?.checked_sub(1)?;
        self.items.get_mut(idx).filter(|i| i.id == id)
    }

    /// Every instance of an item, oldest first.
    pub fn instances<'s>(&'s self, key: &'s str) -> impl Iterator<Item = &'s ItemInstance> + 's {
        self.items.iter().filter(move |i| i.key == key)
    }

    /// The latest instance of an item.
    pub fn latest(&self, key: &str) -> Option<&ItemInstance> {
        self.items.iter().rev().find(|i| i.key == key)
    }

    /// The direct children of a stage instance (`None`: of the case plan).
    pub fn children(&self, parent: Option<InstanceId>) -> impl Iterator<Item = &ItemInstance> {
        self.items.iter().filter(move |i| i.parent == parent)
    }

    /// The state of the latest instance of an item.
    pub fn state_of(&self, key: &str) -> Option<ItemState> {
        self.latest(key).map(|i| i.state)
    }

    /// The plan as conditions see it (latest instance per item).
    pub fn plan_state(&self) -> PlanState {
        let mut states = BTreeMap::new();
        for i in &self.items {
            states.insert(i.key.as_str().to_string(), i.state);
        }
        PlanState {
            states,
            reached: self
                .reached
                .iter()
                .map(|k| k.as_str().to_string())
                .collect(),
        }
    }

    /// The case file as the JSON object conditions are evaluated against.
    pub fn case_file_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.case_file
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.clone()))
                .collect(),
        )
    }

    fn next_id(&self) -> InstanceId {
        InstanceId(u32::try_from(self.items.len() + 1).unwrap_or(u32::MAX))
    }

    /// The id the next created instance will get.
    pub fn next_instance_id(&self) -> InstanceId {
        self.next_id()
    }

    fn latch_all(&mut self, def: &CaseDefinition, occ: &Occurred) {
        if !matches!(
            occ,
            Occurred::Completed(..)
                | Occurred::Terminated(..)
                | Occurred::Reached(..)
                | Occurred::Changed(_)
        ) {
            // Only these satisfy on-parts (see `Occurred::matches`).
            return;
        }
        // One pass over the instances, each finding its item through the
        // definition's index: linear in the case's instances, and an
        // instance is copied (out of the shared vector) only when one of its
        // latches flips.
        let mut flips = Vec::new();
        for (idx, inst) in self.items.iter().enumerate() {
            if inst.is_terminal() {
                continue;
            }
            let Some((item, _)) = def.plan_item(inst.key.as_str()) else {
                continue;
            };
            let entry = inst.is_waiting() && would_latch(&inst.entry_latches, item.entry(), occ);
            if entry || would_latch(&inst.exit_latches, item.exit(), occ) {
                flips.push((idx, item));
            }
        }
        for (idx, item) in flips {
            if let Some(inst) = self.items.get_mut(idx) {
                if inst.is_waiting() {
                    latch(&mut inst.entry_latches, item.entry(), occ);
                }
                latch(&mut inst.exit_latches, item.exit(), occ);
            }
        }
        if !self.status.is_ended() {
            latch(&mut self.case_exit_latches, &def.exit, occ);
        }
    }

    fn set_state(
        &mut self,
        event: &CaseEvent,
        id: InstanceId,
        to: ItemState,
    ) -> Result<(), CaseError> {
        let inst = self
            .item_mut(id)
            .ok_or_else(|| inconsistent(event, format!("no instance {id}")))?;
        if inst.state == ItemState::Available && to != ItemState::Suspended {
            clear(&mut inst.entry_latches);
        }
        inst.state = to;
        Ok(())
    }

    /// Applies an event and says what occurred (for sentries and deadlines).
    pub(crate) fn apply_inner(
        &mut self,
        def: &CaseDefinition,
        event: &CaseEvent,
    ) -> Result<Vec<Occurred>, CaseError> {
        if self.status == CaseStatus::NotOpened && !matches!(event, CaseEvent::CaseOpened { .. }) {
            return Err(inconsistent(event, "the case has not been opened"));
        }
        let mut occurred = Vec::new();
        match event {
            CaseEvent::CaseOpened {
                tenant,
                definition,
                case_file,
                classification,
                opened_at,
            } => {
                if self.status != CaseStatus::NotOpened {
                    return Err(inconsistent(event, "the case is already open"));
                }
                self.status = CaseStatus::Active;
                self.tenant = Some(tenant.clone());
                self.definition = Some(definition.clone());
                self.classification = *classification;
                self.opened_at = Some(*opened_at);
                self.case_file = case_file
                    .iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                self.case_exit_latches = latches(&def.exit);
                occurred.push(Occurred::CaseOpened);
            }
            CaseEvent::CaseFileUpdated { changes } => {
                for (k, v) in changes {
                    if self.write_field(k, v) {
                        occurred.push(Occurred::Changed(k.clone()));
                    }
                }
            }
            CaseEvent::PlanItemCreated {
                instance,
                item,
                parent,
                discretionary,
                seen,
            } => {
                if *instance != self.next_id() {
                    return Err(inconsistent(
                        event,
                        format!("expected instance {}", self.next_id()),
                    ));
                }
                let (entry_item, entry_parent) = def
                    .plan_item(item.as_str())
                    .ok_or_else(|| inconsistent(event, format!("unknown plan item '{item}'")))?;
                if let Some(p) = parent {
                    if self.item(*p).is_none() {
                        return Err(inconsistent(event, format!("no parent instance {p}")));
                    }
                }
                if *discretionary {
                    let stage = entry_parent.cloned();
                    if let Some(pos) = self
                        .planned
                        .iter()
                        .position(|p| &p.item == item && p.stage == stage)
                    {
                        self.planned.remove(pos);
                    }
                }
                let mut inst = ItemInstance {
                    id: *instance,
                    key: item.clone(),
                    parent: *parent,
                    state: ItemState::Available,
                    previous: None,
                    suspended_by: None,
                    discretionary: *discretionary,
                    claimed_by: None,
                    entry_latches: latches(entry_item.entry()),
                    exit_latches: latches(entry_item.exit()),
                    team: None,
                };
                for on in seen {
                    latch_on(&mut inst.entry_latches, entry_item.entry(), on);
                    latch_on(&mut inst.exit_latches, entry_item.exit(), on);
                }
                self.items.push_back(inst);
            }
            CaseEvent::PlanItemEnabled { instance, .. } => {
                self.set_state(event, *instance, ItemState::Enabled)?;
            }
            CaseEvent::PlanItemActivated { instance, item } => {
                self.set_state(event, *instance, ItemState::Active)?;
                occurred.push(Occurred::Activated(item.clone(), *instance));
            }
            CaseEvent::PlanItemCompleted {
                instance,
                item,
                outputs,
            } => {
                self.set_state(event, *instance, ItemState::Completed)?;
                for (k, v) in outputs {
                    if self.write_field(k, v) {
                        occurred.push(Occurred::Changed(k.clone()));
                    }
                }
                // The completion is the occurrence; field changes it carries
                // are seen first so that `on completed, if field` sees them.
                occurred.push(Occurred::Completed(item.clone(), *instance));
            }
            CaseEvent::PlanItemTerminated { instance, item } => {
                self.set_state(event, *instance, ItemState::Terminated)?;
                occurred.push(Occurred::Terminated(item.clone(), *instance));
            }
            CaseEvent::PlanItemFailed { instance, .. } => {
                self.set_state(event, *instance, ItemState::Failed)?;
                occurred.push(Occurred::Ended(*instance));
            }
            CaseEvent::PlanItemDisabled { instance, .. } => {
                self.set_state(event, *instance, ItemState::Disabled)?;
                occurred.push(Occurred::Ended(*instance));
            }
            CaseEvent::PlanItemSuspended { instance, by, .. } => {
                let inst = self
                    .item_mut(*instance)
                    .ok_or_else(|| inconsistent(event, format!("no instance {instance}")))?;
                inst.previous = Some(inst.state);
                inst.suspended_by = Some(*by);
                inst.state = ItemState::Suspended;
            }
            CaseEvent::PlanItemResumed {
                instance, restored, ..
            } => {
                let inst = self
                    .item_mut(*instance)
                    .ok_or_else(|| inconsistent(event, format!("no instance {instance}")))?;
                inst.state = *restored;
                inst.previous = None;
                inst.suspended_by = None;
                if *restored != ItemState::Available {
                    clear(&mut inst.entry_latches);
                }
            }
            CaseEvent::MilestoneReached { instance, item } => {
                self.set_state(event, *instance, ItemState::Completed)?;
                self.reached.insert(item.clone());
                occurred.push(Occurred::Reached(item.clone(), *instance));
            }
            CaseEvent::ActivityClaimed { instance, by, .. } => {
                let inst = self
                    .item_mut(*instance)
                    .ok_or_else(|| inconsistent(event, format!("no instance {instance}")))?;
                inst.claimed_by = Some(by.clone());
            }
            CaseEvent::ActivityAssigned {
                instance, assignee, ..
            } => {
                let inst = self
                    .item_mut(*instance)
                    .ok_or_else(|| inconsistent(event, format!("no instance {instance}")))?;
                inst.claimed_by = Some(assignee.clone());
            }
            CaseEvent::ActivityTeamAssigned { instance, team, .. } => {
                let inst = self
                    .item_mut(*instance)
                    .ok_or_else(|| inconsistent(event, format!("no instance {instance}")))?;
                inst.team = Some(team.clone());
                inst.claimed_by = None;
            }
            CaseEvent::DiscretionaryItemPlanned { item, stage, .. } => {
                self.planned.push(PlannedItem {
                    item: item.clone(),
                    stage: stage.clone(),
                });
            }
            CaseEvent::EntityLinked { entity, role, by } => {
                self.entities.push_back(EntityLink {
                    entity: entity.clone(),
                    role: role.clone(),
                    by: by.clone(),
                });
            }
            CaseEvent::NoteAdded { text, by, at } => {
                self.notes.push_back(Note {
                    text: text.clone(),
                    by: by.clone(),
                    at: *at,
                });
            }
            CaseEvent::CaseSuspended {} => self.status = CaseStatus::Suspended,
            CaseEvent::CaseResumed {} => self.status = CaseStatus::Active,
            CaseEvent::CaseCompleted {} => {
                self.status = CaseStatus::Completed;
                occurred.push(Occurred::CaseEnded);
            }
            CaseEvent::CaseTerminated {} => {
                self.status = CaseStatus::Terminated;
                occurred.push(Occurred::CaseEnded);
            }
            CaseEvent::CaseClosed { .. } => {
                let was_running = !self.status.is_ended();
                self.status = CaseStatus::Closed;
                if was_running {
                    occurred.push(Occurred::CaseEnded);
                }
            }
            CaseEvent::CaseReopened { .. } => {
                self.status = CaseStatus::Active;
                self.reopened = true;
            }
            CaseEvent::DeadlineSet {
                deadline,
                item,
                instance,
                due,
            } => {
                self.deadlines.push(RunningDeadline {
                    deadline: deadline.clone(),
                    item: item.clone(),
                    instance: *instance,
                    due: *due,
                    escalated: false,
                });
            }
            CaseEvent::DeadlineMet { deadline, instance }
            | CaseEvent::DeadlineCancelled { deadline, instance } => {
                self.deadlines
                    .retain(|d| !(&d.deadline == deadline && d.instance == *instance));
            }
            CaseEvent::ServiceInvocationRequested {
                invocation,
                instance,
                item,
                request,
                not_before,
            } => {
                if invocation.0 != self.last_invocation + 1 {
                    return Err(inconsistent(
                        event,
                        format!("expected invocation {}", self.last_invocation + 1),
                    ));
                }
                self.last_invocation = invocation.0;
                self.invocations.push(PendingInvocation {
                    invocation: *invocation,
                    instance: *instance,
                    item: item.clone(),
                    request: request.clone(),
                    attempt: 1,
                    not_before: *not_before,
                    last_error: None,
                });
            }
            CaseEvent::ServiceAttemptFailed {
                invocation,
                attempt,
                error,
                retry_at,
            } => {
                let p = self
                    .invocations
                    .iter_mut()
                    .find(|p| p.invocation == *invocation && p.attempt == *attempt)
                    .ok_or_else(|| inconsistent(event, format!("no pending {invocation}")))?;
                p.attempt += 1;
                p.not_before = *retry_at;
                p.last_error = Some(error.clone());
            }
            CaseEvent::ServiceInvocationCompleted { invocation, .. }
            | CaseEvent::ServiceInvocationCancelled { invocation } => {
                self.take_invocation(event, *invocation)?;
            }
            CaseEvent::ServiceInvocationFailed {
                invocation,
                attempt,
                error,
            } => {
                let p = self.take_invocation(event, *invocation)?;
                self.incidents.push(Incident {
                    invocation: *invocation,
                    instance: p.instance,
                    item: p.item,
                    service: p.request.service,
                    attempts: *attempt,
                    error: error.clone(),
                });
            }
            CaseEvent::DeadlineMissed { deadline, instance } => {
                let d = self
                    .deadlines
                    .iter_mut()
                    .find(|d| &d.deadline == deadline && d.instance == *instance)
                    .ok_or_else(|| {
                        inconsistent(event, format!("deadline {deadline} not running"))
                    })?;
                d.escalated = true;
            }
            CaseEvent::EscalationNotified { .. } => {}
            CaseEvent::PriorityRaised { priority, .. } => self.priority = Some(*priority),
            // Recorded for the record of disclosures; the state has nothing
            // to keep of it.
            CaseEvent::DisclosureRecorded { .. } => {}
            CaseEvent::AlertRaised {
                alert,
                invocation,
                item,
                record,
                marking,
            } => {
                if alert.0 != self.last_alert + 1 {
                    return Err(inconsistent(
                        event,
                        format!("expected alert {}", self.last_alert + 1),
                    ));
                }
                let instance = self
                    .invocation_of_any(*invocation)
                    .ok_or_else(|| inconsistent(event, format!("no pending {invocation}")))?;
                self.last_alert = alert.0;
                self.alerts.push(OpenAlert {
                    alert: *alert,
                    item: item.clone(),
                    instance,
                    record: record.clone(),
                    marking: *marking,
                });
            }
            CaseEvent::AlertAcknowledged { alert, .. } => {
                let before = self.alerts.len();
                self.alerts.retain(|a| a.alert != *alert);
                if self.alerts.len() == before {
                    return Err(inconsistent(event, format!("no open {alert}")));
                }
            }
            CaseEvent::WaitStarted {
                instance,
                item,
                due,
            } => {
                self.waits.retain(|w| w.instance != *instance);
                self.waits.push(RunningWait {
                    instance: *instance,
                    item: item.clone(),
                    due: *due,
                });
            }
            CaseEvent::WaitElapsed { instance, .. } | CaseEvent::WaitCancelled { instance, .. } => {
                let before = self.waits.len();
                self.waits.retain(|w| w.instance != *instance);
                if self.waits.len() == before {
                    return Err(inconsistent(
                        event,
                        format!("no wait running on {instance}"),
                    ));
                }
            }
            CaseEvent::IncidentRetried { invocation, .. } => {
                let before = self.incidents.len();
                self.incidents.retain(|i| i.invocation != *invocation);
                if self.incidents.len() == before {
                    return Err(inconsistent(event, format!("no incident on {invocation}")));
                }
            }
        }
        for occ in &occurred {
            self.latch_all(def, occ);
        }
        Ok(occurred)
    }

    /// Removes a pending invocation (it ended).
    fn take_invocation(
        &mut self,
        event: &CaseEvent,
        invocation: InvocationId,
    ) -> Result<PendingInvocation, CaseError> {
        let at = self
            .invocations
            .iter()
            .position(|p| p.invocation == invocation)
            .ok_or_else(|| inconsistent(event, format!("no pending {invocation}")))?;
        Ok(self.invocations.remove(at))
    }

    /// The instance of the service task a pending invocation is for.
    fn invocation_of_any(&self, invocation: InvocationId) -> Option<InstanceId> {
        self.invocations
            .iter()
            .find(|p| p.invocation == invocation)
            .map(|p| p.instance)
    }

    /// The running timer of a wait step's instance, if it waits.
    pub fn wait_of(&self, instance: InstanceId) -> Option<&RunningWait> {
        self.waits.iter().find(|w| w.instance == instance)
    }

    /// The pending invocation of a service task instance, if one is wanted.
    pub fn invocation_of(&self, instance: InstanceId) -> Option<&PendingInvocation> {
        self.invocations.iter().find(|p| p.instance == instance)
    }

    /// Writes a field; returns whether its value changed.
    fn write_field(&mut self, key: &FieldKey, value: &serde_json::Value) -> bool {
        if value.is_null() {
            self.case_file.remove(key).is_some()
        } else if self.case_file.get(key) == Some(value) {
            false
        } else {
            self.case_file.insert(key.clone(), value.clone());
            true
        }
    }
}

fn inconsistent(event: &CaseEvent, reason: impl Into<String>) -> CaseError {
    CaseError::InconsistentHistory {
        event: event.type_name().to_string(),
        reason: reason.into(),
    }
}
