//! Deciding: a command, checked against the definition, the case's state and
//! the principal, becomes events — with the whole cascade of transitions its
//! sentries cause, run to a fixpoint within a per-command bound.
//!
//! The cascade works on a copy of the state: every event is applied the moment
//! it is decided (with the same [`CaseState::apply`] replay uses), so the events
//! returned replay to exactly the state the decision saw.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use crate::definition::{
    check_identifier, Activity, ActivityKind, CaseDefinition, Deadline, FieldDef, FieldKey,
    ItemKey, Occurrence, OnPart, PlanItem, RoleKey, SlaPeriod,
};
use crate::log::Timestamp;
use crate::rules::{Budget, Condition, EvalError, ItemState, PlanState, Scope, COMMAND_BUDGET};
use crate::security::{Classification, Principal};

use super::command::{CaseCommand, ItemRef, ServiceOutcome};
use super::error::{CaseError, ClearanceSubject};
use super::event::{
    CaseEvent, DeadlineDue, DefinitionRef, EntityRole, InvocationId, InvocationRequest, PoleRef,
    SuspendedBy,
};
use super::file::CaseFile;
use super::state::{CaseState, CaseStatus, InstanceId, ItemInstance, Occurred};
use super::values::check_value;

/// Most events one command may produce, cascade included. A definition that
/// loops (a repeatable automatic step retriggering itself) fails the command
/// with [`CaseError::CascadeLimit`] instead of running forever.
pub const CASCADE_LIMIT: usize = 10_000;

/// The role the orchestration layer's principal holds: it alone completes or
/// fails service tasks and automatic steps that declare no candidate roles.
pub const SYSTEM_ROLE: &str = "casebook_system";

/// The administrators' role: it alone completes a service task by hand
/// (the engine also asks for a reason, recorded on the events).
pub const ADMIN_ROLE: &str = "administrator";

/// Longest note accepted, in bytes.
pub const MAX_NOTE_LEN: usize = 20_000;

/// Most disclosures one service answer may record.
pub const MAX_DISCLOSURES: usize = 64;

/// Longest recipient, description or purpose of a disclosure, in bytes.
const MAX_DISCLOSURE_TEXT: usize = 1_000;

fn clip_to(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Keeps a disclosure's texts within [`MAX_DISCLOSURE_TEXT`].
fn clip_disclosure(d: super::DisclosureRecord) -> super::DisclosureRecord {
    super::DisclosureRecord {
        recipient: clip_to(d.recipient, MAX_DISCLOSURE_TEXT),
        what: clip_to(d.what, MAX_DISCLOSURE_TEXT),
        why: clip_to(d.why, MAX_DISCLOSURE_TEXT),
        channel: clip_to(d.channel, 64),
    }
}

/// Keeps a service's error message within a note's length.
fn clip(mut text: String) -> String {
    if text.len() > MAX_NOTE_LEN {
        let mut end = MAX_NOTE_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    if text.trim().is_empty() {
        text = "no reason given".into();
    }
    text
}

/// Longest principal id, entity id or reason accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Decides a command: returns every event it causes (the command's own facts,
/// then the transitions, milestones and deadlines its cascade causes, in the
/// order they happened), or an error and no events.
///
/// `def` must be the definition the case was opened with (for `Open`: the one
/// to open it with); `now` is the clock value recorded in the events (notes,
/// opening time, deadline starts).
///
/// # Who may do what
/// The principal's tenant must be the case's; their clearance must cover the
/// case's classification, and every field they write. Roles:
/// `Open`, `UpdateCaseFile`, `AddNote`, `LinkEntity`, `Suspend`, `Resume`,
/// `Close`, `Reopen` need the definition's case permission of the same name;
/// `CompleteCase` needs `close`. Activity actions (start, claim, complete,
/// fail, disable) need one of the activity's `roles` ([`SYSTEM_ROLE`] when it
/// declares none); stage and milestone actions need `update_case_file`;
/// `Terminate` and `Assign` also allow `close` roles; `SuspendItem` /
/// `ResumeItem` need `suspend` / `resume`; `AddDiscretionary` needs an
/// `add_discretionary` role that is also among the item's `planners` (when
/// it lists any). A task someone else holds (claimed or assigned) may be
/// started, completed, failed, terminated, reassigned or routed only by a
/// role in `permissions.supervise` ([`CaseError::ClaimedByAnother`]).
///
/// # Errors
/// Every [`CaseError`] but `InconsistentHistory`: a principal whose subject
/// or roles break [`crate::security::PrincipalError`]'s rule
/// ([`CaseError::InvalidCommand`]) first, then tenant, clearance and role
/// errors first, then the case's status, then the command's validity against
/// the definition and the plan, then anything the cascade runs into
/// ([`CaseError::CascadeLimit`], [`CaseError::RuleFailed`],
/// [`CaseError::AutomaticStepFailed`]).
///
/// The command's rules share one [`Budget`] of [`COMMAND_BUDGET`] units
/// (see [`decide_within`]).
pub fn decide(
    def: &CaseDefinition,
    state: &CaseState,
    principal: &Principal,
    command: CaseCommand,
    now: Timestamp,
) -> Result<Vec<CaseEvent>, CaseError> {
    decide_within(
        def,
        state,
        principal,
        command,
        now,
        &Budget::new(COMMAND_BUDGET),
    )
}

/// [`decide`], with every rule the command evaluates (sentries,
/// applicability rules, deadline conditions, automatic steps, service
/// inputs) charged to `budget`. A rule whose cost bound exceeds what is left
/// fails the command with [`CaseError::RuleFailed`] holding
/// [`EvalError::BudgetExceeded`](crate::rules::EvalError::BudgetExceeded),
/// before the rule runs. `decide` is pure, so a command refused for a small
/// budget can be decided again with a larger one.
///
/// # Errors
/// As [`decide`].
pub fn decide_within(
    def: &CaseDefinition,
    state: &CaseState,
    principal: &Principal,
    command: CaseCommand,
    now: Timestamp,
    budget: &Budget,
) -> Result<Vec<CaseEvent>, CaseError> {
    decide_to_state(def, state, principal, command, now, budget).map(|(events, _)| events)
}

/// A discretionary item a principal could plan into a case now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlannableItem {
    /// The item.
    pub item: ItemKey,
    /// Its name.
    pub name: String,
    /// The stage it is planned into (`None`: the case plan).
    pub stage: Option<ItemKey>,
    /// Whether its applicability rule holds now (planning is refused
    /// while it does not).
    pub applicable: bool,
    /// The rule, as written, if it has one.
    pub applicability: Option<String>,
    /// Its stage is not active yet: planned now, it starts when the stage
    /// does.
    pub pending: bool,
    /// It may be planned again after this.
    pub repeatable: bool,
}

/// The discretionary items `principal` could plan into the case now, with
/// whether each one's applicability rule holds: those their role allows,
/// whose stage accepts planning, not planned already (unless repeatable)
/// and within their instance limits; items above their clearance are left
/// out, as everywhere. Empty when the case is not active.
pub fn plannable(
    def: &CaseDefinition,
    state: &CaseState,
    principal: &Principal,
) -> Vec<PlannableItem> {
    let budget = Budget::new(COMMAND_BUDGET);
    let cx = Cx::new(def, state.clone(), principal, Timestamp(0), &budget);
    if cx.guard().is_err() {
        return Vec::new();
    }
    cx.plannable()
}

/// [`decide_within`], also returning the state the events lead to (what
/// applying them to `state` gives), so a caller need not apply them again.
///
/// # Errors
/// As [`decide`].
pub fn decide_to_state(
    def: &CaseDefinition,
    state: &CaseState,
    principal: &Principal,
    command: CaseCommand,
    now: Timestamp,
    budget: &Budget,
) -> Result<(Vec<CaseEvent>, CaseState), CaseError> {
    // The subject is recorded on events and shown in timelines: a forged
    // one (a line break, a control character) never gets that far.
    principal
        .validate()
        .map_err(|e| CaseError::InvalidCommand {
            reason: e.to_string(),
        })?;
    let mut cx = Cx::new(def, state.clone(), principal, now, budget);
    cx.command(command)?;
    cx.run()?;
    // The unit tests check that the working state is what the events give.
    #[cfg(test)]
    {
        let mut again = state.clone();
        for e in &cx.events {
            again.apply(def, e).expect("a decided event applies");
        }
        assert_eq!(again, cx.state, "decide's state and its events disagree");
    }
    Ok((cx.events, cx.state))
}

struct Cx<'a> {
    def: &'a CaseDefinition,
    deadlines: Vec<(Option<&'a ItemKey>, &'a Deadline)>,
    state: CaseState,
    principal: &'a Principal,
    now: Timestamp,
    events: Vec<CaseEvent>,
    queue: VecDeque<InstanceId>,
    queued: BTreeSet<InstanceId>,
    case_exit_dirty: bool,
    /// On-parts that occurred in this command so far (for items created later in it).
    seen: Vec<OnPart>,
    /// Repetitions to create, deferred to the end of the cascade (see
    /// `run`): a looping definition meets the bound instead of recursing,
    /// exit criteria take effect before another repetition is made, and a
    /// new instance sees only occurrences that happen after it exists.
    repeats: VecDeque<Repeat>,
    /// What the command's rules may still cost.
    budget: &'a Budget,
    /// The case file and plan as conditions see them, built at the first
    /// evaluation and kept up to date as events apply (rebuilding them for
    /// every evaluation made opening a large plan quadratic).
    scope: RefCell<Option<ScopeCache>>,
}

/// A repetition waiting to be created.
#[derive(Debug, Clone)]
struct Repeat {
    key: ItemKey,
    parent: Option<InstanceId>,
    discretionary: bool,
    /// It has no entry criteria, so it is entered as soon as it is created:
    /// until then it holds its stage open like an active child would.
    entered_at_once: bool,
}

/// What conditions read, kept in step with the working state.
struct ScopeCache {
    file: serde_json::Value,
    plan: PlanState,
    /// The latest instance of each item (the one `plan` reports).
    latest: HashMap<String, InstanceId>,
}

impl ScopeCache {
    fn build(state: &CaseState) -> ScopeCache {
        let latest = state
            .items
            .iter()
            .map(|i| (i.key.as_str().to_string(), i.id))
            .collect();
        ScopeCache {
            file: state.case_file_json(),
            plan: state.plan_state(),
            latest,
        }
    }

    /// Follows one applied event (`occurred`: what it caused). Returns
    /// false when the event changes too much to follow (the case's own
    /// lifecycle): the cache is then rebuilt on next use.
    fn follow(&mut self, state: &CaseState, event: &CaseEvent, occurred: &[Occurred]) -> bool {
        match event {
            CaseEvent::CaseOpened { .. }
            | CaseEvent::CaseSuspended {}
            | CaseEvent::CaseResumed {}
            | CaseEvent::CaseCompleted {}
            | CaseEvent::CaseTerminated {}
            | CaseEvent::CaseClosed { .. }
            | CaseEvent::CaseReopened { .. } => return false,
            CaseEvent::PlanItemCreated { instance, item, .. } => {
                self.latest.insert(item.as_str().to_string(), *instance);
            }
            _ => {}
        }
        if let CaseEvent::MilestoneReached { item, .. } = event {
            self.plan.reached.insert(item.as_str().to_string());
        }
        if let Some(inst) = event.instance().and_then(|id| state.item(id)) {
            if self.latest.get(inst.key.as_str()) == Some(&inst.id) {
                self.plan
                    .states
                    .insert(inst.key.as_str().to_string(), inst.state);
            }
        }
        for occ in occurred {
            if let Occurred::Changed(field) = occ {
                let serde_json::Value::Object(file) = &mut self.file else {
                    return false;
                };
                match state.case_file.get(field) {
                    Some(v) => {
                        file.insert(field.as_str().to_string(), v.clone());
                    }
                    None => {
                        file.remove(field.as_str());
                    }
                }
            }
        }
        true
    }
}

fn occurrence_matches(o: &Occurrence, occ: &Occurred) -> bool {
    match (o, occ) {
        (Occurrence::CaseOpened, Occurred::CaseOpened)
        | (Occurrence::CaseClosed, Occurred::CaseEnded) => true,
        (Occurrence::Activated(k), Occurred::Activated(x, _))
        | (Occurrence::Completed(k), Occurred::Completed(x, _))
        | (Occurrence::Reached(k), Occurred::Reached(x, _)) => k == x,
        (Occurrence::Changed(f), Occurred::Changed(g)) => f == g,
        _ => false,
    }
}

fn roles_of(a: &Activity) -> Vec<RoleKey> {
    if a.roles.is_empty() {
        vec![RoleKey::new(SYSTEM_ROLE)]
    } else {
        a.roles.clone()
    }
}

fn check_text(what: &str, text: &str, max: usize) -> Result<(), CaseError> {
    if text.trim().is_empty() {
        return Err(CaseError::InvalidCommand {
            reason: format!("{what} must not be empty"),
        });
    }
    if text.len() > max {
        return Err(CaseError::InvalidCommand {
            reason: format!("{what} is longer than {max} bytes"),
        });
    }
    Ok(())
}

impl<'a> Cx<'a> {
    fn new(
        def: &'a CaseDefinition,
        state: CaseState,
        principal: &'a Principal,
        now: Timestamp,
        budget: &'a Budget,
    ) -> Self {
        let mut deadlines: Vec<(Option<&'a ItemKey>, &'a Deadline)> =
            def.deadlines.iter().map(|d| (None, d)).collect();
        def.each_plan_item(|item, _| {
            for d in item.deadlines() {
                deadlines.push((Some(item.key()), d));
            }
        });
        Cx {
            def,
            deadlines,
            state,
            principal,
            now,
            events: Vec::new(),
            queue: VecDeque::new(),
            queued: BTreeSet::new(),
            case_exit_dirty: false,
            seen: Vec::new(),
            repeats: VecDeque::new(),
            budget,
            scope: RefCell::new(None),
        }
    }

    // ------------------------------------------------------------ helpers

    fn entry(&self, key: &str) -> Result<(PlanItem<'a>, Option<&'a ItemKey>), CaseError> {
        self.def
            .plan_item(key)
            .ok_or_else(|| CaseError::UnknownItem {
                item: key.to_string(),
            })
    }

    fn inst(&self, id: InstanceId) -> Result<ItemInstance, CaseError> {
        self.state
            .item(id)
            .cloned()
            .ok_or_else(|| CaseError::InconsistentHistory {
                event: "decide".into(),
                reason: format!("no instance {id}"),
            })
    }

    fn require(&self, action: String, roles: &[RoleKey]) -> Result<(), CaseError> {
        if roles.iter().any(|r| self.principal.has_role(r.as_str())) {
            Ok(())
        } else {
            Err(CaseError::Forbidden {
                action,
                needed: roles.to_vec(),
            })
        }
    }

    fn item_roles(&self, item: PlanItem<'_>) -> Vec<RoleKey> {
        match item {
            PlanItem::Activity(a) => roles_of(a),
            _ => self.def.permissions.update_case_file.clone(),
        }
    }

    fn with_close(&self, mut roles: Vec<RoleKey>) -> Vec<RoleKey> {
        for r in &self.def.permissions.close {
            if !roles.contains(r) {
                roles.push(r.clone());
            }
        }
        roles
    }

    fn require_active(&self) -> Result<(), CaseError> {
        match self.state.status {
            CaseStatus::Active => Ok(()),
            CaseStatus::Suspended => Err(CaseError::CaseSuspended),
            CaseStatus::NotOpened => Err(CaseError::NotOpened),
            status => Err(CaseError::CaseClosed { status }),
        }
    }

    fn require_running(&self) -> Result<(), CaseError> {
        match self.state.status {
            CaseStatus::Active | CaseStatus::Suspended => Ok(()),
            CaseStatus::NotOpened => Err(CaseError::NotOpened),
            status => Err(CaseError::CaseClosed { status }),
        }
    }

    /// Runs `f` with the scope conditions are evaluated against.
    fn with_scope<R>(&self, f: impl FnOnce(&Scope<'_>) -> R) -> R {
        let mut slot = self.scope.borrow_mut();
        let cache = slot.get_or_insert_with(|| ScopeCache::build(&self.state));
        f(&Scope::case_file(&cache.file).with_plan(&cache.plan))
    }

    fn eval(&self, c: &Condition, owner: impl FnOnce() -> String) -> Result<bool, CaseError> {
        self.with_scope(|scope| c.evaluate_within(scope, self.budget))
            .map_err(|error| CaseError::RuleFailed {
                owner: owner(),
                error,
            })
    }

    /// Checks a value a principal writes into a field.
    fn check_write(
        &self,
        key: &FieldKey,
        value: &serde_json::Value,
        case_class: Classification,
    ) -> Result<&'a FieldDef, CaseError> {
        let fd = self
            .def
            .field(key.as_str())
            .ok_or_else(|| CaseError::invalid_field(key.as_str(), "unknown field"))?;
        let needed = fd.classification.unwrap_or_default().max(case_class);
        if !self.principal.may_see(needed) {
            return Err(CaseError::InsufficientClearance {
                subject: ClearanceSubject::Field(key.clone()),
                needed,
                held: self.principal.clearance,
            });
        }
        if value.is_null() {
            if fd.required {
                return Err(CaseError::invalid_field(
                    key.as_str(),
                    "the field is required and cannot be cleared",
                ));
            }
        } else {
            check_value(fd, value)
                .map_err(|r| CaseError::invalid_field(key.as_str(), r.to_string()))?;
        }
        Ok(fd)
    }

    /// Finds the instance a command means.
    fn resolve(
        &self,
        r: &ItemRef,
        allowed: &[ItemState],
        action: &str,
    ) -> Result<InstanceId, CaseError> {
        self.entry(r.key.as_str())?;
        if let Some(id) = r.instance {
            let inst = self
                .state
                .item(id)
                .filter(|i| i.key == r.key)
                .ok_or_else(|| CaseError::UnknownInstance {
                    item: r.key.clone(),
                    instance: id,
                })?;
            if !allowed.contains(&inst.state) {
                return Err(CaseError::IllegalTransition {
                    item: r.key.clone(),
                    from: inst.state,
                    action: action.to_string(),
                });
            }
            return Ok(id);
        }
        let all: Vec<&ItemInstance> = self.state.instances(r.key.as_str()).collect();
        let ok: Vec<InstanceId> = all
            .iter()
            .filter(|i| allowed.contains(&i.state))
            .map(|i| i.id)
            .collect();
        match (ok.as_slice(), all.last()) {
            ([one], _) => Ok(*one),
            ([], Some(latest)) => Err(CaseError::IllegalTransition {
                item: r.key.clone(),
                from: latest.state,
                action: action.to_string(),
            }),
            ([], None) => Err(CaseError::ItemNotInPlan {
                item: r.key.clone(),
            }),
            (many, _) => Err(CaseError::AmbiguousItem {
                item: r.key.clone(),
                instances: many.to_vec(),
            }),
        }
    }

    /// A task someone else holds may be acted on only by a supervising role
    /// (`permissions.supervise`).
    fn check_claim(&self, inst: &ItemInstance) -> Result<(), CaseError> {
        let supervises = || {
            self.def
                .permissions
                .supervise
                .iter()
                .any(|r| self.principal.has_role(r.as_str()))
        };
        match &inst.claimed_by {
            Some(by) if by != &self.principal.subject && !supervises() => {
                Err(CaseError::ClaimedByAnother {
                    item: inst.key.clone(),
                    claimed_by: by.clone(),
                })
            }
            _ => Ok(()),
        }
    }

    fn queue(&mut self, id: InstanceId) {
        if self.queued.insert(id) {
            self.queue.push_back(id);
        }
    }

    fn descendants(&self, id: InstanceId) -> Vec<InstanceId> {
        let mut set = BTreeSet::from([id]);
        let mut out = Vec::new();
        for i in &self.state.items {
            if let Some(p) = i.parent {
                if set.contains(&p) {
                    set.insert(i.id);
                    out.push(i.id);
                }
            }
        }
        out
    }

    fn parent_active(&self, parent: Option<InstanceId>) -> bool {
        match parent {
            None => self.state.status == CaseStatus::Active,
            Some(p) => self
                .state
                .item(p)
                .is_some_and(|i| i.state == ItemState::Active),
        }
    }

    // ------------------------------------------------------------ emitting

    fn emit(&mut self, event: CaseEvent) -> Result<(), CaseError> {
        if self.events.len() >= CASCADE_LIMIT {
            let last = match &event {
                CaseEvent::PlanItemCreated { item, .. }
                | CaseEvent::PlanItemActivated { item, .. }
                | CaseEvent::PlanItemCompleted { item, .. }
                | CaseEvent::PlanItemEnabled { item, .. } => item.to_string(),
                other => other.type_name().to_string(),
            };
            return Err(CaseError::CascadeLimit {
                limit: CASCADE_LIMIT,
                last,
            });
        }
        let occurred = self.state.apply_inner(self.def, &event)?;
        {
            let mut slot = self.scope.borrow_mut();
            if let Some(cache) = slot.as_mut() {
                if !cache.follow(&self.state, &event, &occurred) {
                    *slot = None;
                }
            }
            // The unit tests (random command sequences among them) check
            // that following events keeps what a rebuild would give.
            #[cfg(test)]
            if let Some(cache) = slot.as_ref() {
                let rebuilt = ScopeCache::build(&self.state);
                assert_eq!(cache.file, rebuilt.file, "case file after {event:?}");
                assert_eq!(cache.plan, rebuilt.plan, "plan after {event:?}");
            }
        }
        let follow = matches!(
            event,
            CaseEvent::PlanItemCompleted { .. }
                | CaseEvent::PlanItemTerminated { .. }
                | CaseEvent::PlanItemFailed { .. }
                | CaseEvent::PlanItemSuspended { .. }
                | CaseEvent::PlanItemResumed { .. }
        )
        .then(|| event.clone());
        self.events.push(event);
        if let Some(event) = follow {
            self.follow_invocations(&event)?;
        }
        for occ in &occurred {
            self.react(occ)?;
        }
        Ok(())
    }

    /// Queues the sentries an occurrence may fire, and runs deadline clocks.
    fn react(&mut self, occ: &Occurred) -> Result<(), CaseError> {
        if let Some(on) = occ.on_part() {
            if !self.seen.contains(&on) {
                self.seen.push(on);
            }
        }
        let mut to_queue = Vec::new();
        match occ {
            Occurred::Changed(_) => {
                for i in &self.state.items {
                    if i.is_terminal() {
                        continue;
                    }
                    if let Some((item, _)) = self.def.plan_item(i.key.as_str()) {
                        if !item.exit().is_empty() || (i.is_waiting() && !item.entry().is_empty()) {
                            to_queue.push(i.id);
                        }
                    }
                }
                if !self.def.exit.is_empty() {
                    self.case_exit_dirty = true;
                }
            }
            Occurred::Completed(..) | Occurred::Terminated(..) | Occurred::Reached(..) => {
                let listens = |s: &crate::definition::Sentry| {
                    s.on.iter().any(|on| {
                        matches!(
                            (occ, on),
                            (Occurred::Completed(k, _), crate::definition::OnPart::Completed(o))
                                | (Occurred::Terminated(k, _), crate::definition::OnPart::Terminated(o))
                                | (Occurred::Reached(k, _), crate::definition::OnPart::Reached(o))
                                if k == o
                        )
                    })
                };
                for i in &self.state.items {
                    if i.is_terminal() {
                        continue;
                    }
                    if let Some((item, _)) = self.def.plan_item(i.key.as_str()) {
                        if item.entry().iter().chain(item.exit()).any(listens) {
                            to_queue.push(i.id);
                        }
                    }
                }
                if self.def.exit.iter().any(listens) {
                    self.case_exit_dirty = true;
                }
            }
            _ => {}
        }
        // An instance of an item with a concurrency limit ended: its
        // waiting siblings may enter now.
        if let Occurred::Completed(_, id) | Occurred::Terminated(_, id) | Occurred::Ended(id) = occ
        {
            if let Some(ended) = self.state.item(*id) {
                let limited = self
                    .def
                    .plan_item(ended.key.as_str())
                    .is_some_and(|(item, _)| item.max_concurrent().is_some());
                if limited {
                    to_queue.extend(
                        self.state
                            .children(ended.parent)
                            .filter(|i| i.key == ended.key && i.is_waiting())
                            .map(|i| i.id),
                    );
                }
            }
        }
        for id in to_queue {
            self.queue(id);
        }
        self.run_deadlines(occ)
    }

    fn run_deadlines(&mut self, occ: &Occurred) -> Result<(), CaseError> {
        let mut out = Vec::new();
        // Met or cancelled first: an occurrence ends clocks before it starts any.
        for running in &self.state.deadlines {
            let Some((owner, d)) = self
                .deadlines
                .iter()
                .find(|(_, d)| d.key == running.deadline)
            else {
                continue;
            };
            let met = match (&d.until, owner) {
                (Some(u), _) => occurrence_matches(u, occ),
                (None, None) => *occ == Occurred::CaseEnded,
                (None, Some(key)) => matches!(occ, Occurred::Completed(k, id)
                    if k == *key && running.instance.is_none_or(|r| r == *id)),
            };
            let owner_ended = matches!(occ, Occurred::Terminated(_, id) | Occurred::Ended(id)
                if running.instance == Some(*id));
            if met {
                out.push(CaseEvent::DeadlineMet {
                    deadline: running.deadline.clone(),
                    instance: running.instance,
                });
            } else if owner_ended || *occ == Occurred::CaseEnded {
                out.push(CaseEvent::DeadlineCancelled {
                    deadline: running.deadline.clone(),
                    instance: running.instance,
                });
            }
        }
        for (owner, d) in self.deadlines.clone() {
            let instance = match (&d.from, owner) {
                (Some(from), _) => occurrence_matches(from, occ).then_some(None),
                (None, None) => (*occ == Occurred::CaseOpened).then_some(None),
                (None, Some(key)) => match occ {
                    Occurred::Activated(k, id) if k == key => Some(Some(*id)),
                    _ => None,
                },
            };
            let Some(instance) = instance else { continue };
            if self
                .state
                .deadlines
                .iter()
                .any(|r| r.deadline == d.key && r.instance == instance)
            {
                continue;
            }
            if let Some(c) = &d.condition {
                if !self.eval(c, || format!("deadline '{}'", d.key))? {
                    continue;
                }
            }
            let Some(due) = d.period().map(|p| self.due_after(p)) else {
                continue;
            };
            out.push(CaseEvent::DeadlineSet {
                deadline: d.key.clone(),
                item: owner.cloned(),
                instance,
                due,
            });
        }
        for e in out {
            self.emit(e)?;
        }
        Ok(())
    }

    /// When a clock started now and running `period` falls due (working
    /// days stay working days: the tenant's calendar times them).
    fn due_after(&self, period: SlaPeriod) -> DeadlineDue {
        match period {
            SlaPeriod::Fixed(dur) => {
                let micros = i64::try_from(dur.whole_microseconds()).unwrap_or(i64::MAX);
                DeadlineDue::At {
                    due: Timestamp(self.now.0.saturating_add(micros)),
                }
            }
            SlaPeriod::WorkingDays(days) => DeadlineDue::WorkingDays {
                days,
                from: self.now,
            },
        }
    }

    // ------------------------------------------------------------ lifecycle

    /// Creates an instance in `parent`; enters it at once when it has no entry
    /// criteria. A repetition's new instance is not evaluated at creation, so
    /// a condition-only sentry fires at most once per occurrence.
    fn create(
        &mut self,
        key: &ItemKey,
        parent: Option<InstanceId>,
        discretionary: bool,
        repetition: bool,
    ) -> Result<InstanceId, CaseError> {
        let (item, _) = self.entry(key.as_str())?;
        let id = self.state.next_instance_id();
        // Earlier occurrences of this command are visible to a new item,
        // except to a repetition's new instance: it listens only for later ones.
        let seen: Vec<OnPart> = if repetition {
            Vec::new()
        } else {
            self.seen
                .iter()
                .filter(|on| {
                    item.entry()
                        .iter()
                        .chain(item.exit())
                        .any(|s| s.on.contains(on))
                })
                .cloned()
                .collect()
        };
        self.emit(CaseEvent::PlanItemCreated {
            instance: id,
            item: key.clone(),
            parent,
            discretionary,
            seen,
        })?;
        if item.entry().is_empty() {
            self.enter(id)?;
            if !item.exit().is_empty() {
                self.queue(id);
            }
        } else if !repetition {
            self.queue(id);
        }
        Ok(id)
    }

    /// An entry criterion fired (or a person reached a milestone).
    fn fire_entry(&mut self, id: InstanceId) -> Result<(), CaseError> {
        let inst = self.inst(id)?;
        let (item, _) = self.entry(inst.key.as_str())?;
        if item.repeatable()
            && !item.entry().is_empty()
            && self.parent_active(inst.parent)
            && self.repetition_allowed(item, &inst.key, inst.parent)?
        {
            self.repeats.push_back(Repeat {
                key: inst.key.clone(),
                parent: inst.parent,
                discretionary: inst.discretionary,
                entered_at_once: false,
            });
        }
        self.enter(id)
    }

    /// Instances of `key` in the stage instance `parent` (or the case plan).
    fn siblings<'s>(
        &'s self,
        key: &'s ItemKey,
        parent: Option<InstanceId>,
    ) -> impl Iterator<Item = &'s ItemInstance> + 's {
        self.state.children(parent).filter(move |i| &i.key == key)
    }

    /// Whether the repetition rule lets another instance of `key` be made
    /// in `parent`: fewer than `max_instances` so far (pending ones
    /// counted), and `repeat_while` holds with `repetition` the number so
    /// far.
    fn repetition_allowed(
        &self,
        item: PlanItem<'_>,
        key: &ItemKey,
        parent: Option<InstanceId>,
    ) -> Result<bool, CaseError> {
        let pending = self
            .repeats
            .iter()
            .filter(|r| &r.key == key && r.parent == parent)
            .count();
        let count = self.siblings(key, parent).count() + pending;
        if item
            .max_instances()
            .is_some_and(|max| count >= max as usize)
        {
            return Ok(false);
        }
        let Some(rule) = item.repeat_while() else {
            return Ok(true);
        };
        let owner = || format!("repeat_while of '{key}'");
        self.with_scope(|scope| {
            let mut file = scope.case_file.clone();
            if let serde_json::Value::Object(map) = &mut file {
                map.insert(
                    crate::definition::REPETITION.to_string(),
                    serde_json::Value::from(count as u64),
                );
            }
            let scope = Scope {
                case_file: &file,
                ..*scope
            };
            rule.evaluate_within(&scope, self.budget)
        })
        .map_err(|error| CaseError::RuleFailed {
            owner: owner(),
            error,
        })
    }

    /// Whether as many instances of the item as `max_concurrent` allows
    /// are entered (enabled, active, or suspended from those) in its stage.
    fn at_capacity(&self, item: PlanItem<'_>, inst: &ItemInstance) -> bool {
        let Some(max) = item.max_concurrent() else {
            return false;
        };
        let running = self
            .siblings(&inst.key, inst.parent)
            .filter(|i| !i.is_terminal() && !i.is_waiting())
            .count();
        running >= max as usize
    }

    /// Whether the item is required: `required`, or its `required_if` holds.
    fn is_required(&self, item: PlanItem<'_>) -> Result<bool, CaseError> {
        if item.required() {
            return Ok(true);
        }
        match item.required_if() {
            Some(c) => self.eval(c, || format!("required_if of '{}'", item.key())),
            None => Ok(false),
        }
    }

    fn enter(&mut self, id: InstanceId) -> Result<(), CaseError> {
        let inst = self.inst(id)?;
        let (item, _) = self.entry(inst.key.as_str())?;
        match item {
            PlanItem::Milestone(_) => {
                self.emit(CaseEvent::MilestoneReached {
                    instance: id,
                    item: inst.key.clone(),
                })?;
                Ok(())
            }
            _ if self.manual(item)? => self.emit(CaseEvent::PlanItemEnabled {
                instance: id,
                item: inst.key.clone(),
            }),
            _ => self.activate(id),
        }
    }

    /// Whether an entered item waits for a person: `manual_activation`, or
    /// its `manual_activation_if` holds as it is entered.
    fn manual(&self, item: PlanItem<'_>) -> Result<bool, CaseError> {
        if item.manual_activation() {
            return Ok(true);
        }
        match item.manual_activation_if() {
            Some(c) => self.eval(c, || format!("manual_activation_if of '{}'", item.key())),
            None => Ok(false),
        }
    }

    fn activate(&mut self, id: InstanceId) -> Result<(), CaseError> {
        let inst = self.inst(id)?;
        let (item, _) = self.entry(inst.key.as_str())?;
        self.emit(CaseEvent::PlanItemActivated {
            instance: id,
            item: inst.key.clone(),
        })?;
        match item {
            PlanItem::Stage(s) => {
                for child in self.def.child_items(Some(s.key.as_str())) {
                    if !child.discretionary() {
                        self.create(child.key(), Some(id), false, false)?;
                    }
                }
                let planned: Vec<ItemKey> = self
                    .state
                    .planned
                    .iter()
                    .filter(|p| p.stage.as_ref() == Some(&s.key))
                    .map(|p| p.item.clone())
                    .collect();
                for key in planned {
                    self.create(&key, Some(id), true, false)?;
                }
                Ok(())
            }
            PlanItem::Activity(a) if a.kind == ActivityKind::Automatic => self.run_automatic(id, a),
            PlanItem::Activity(a) if a.kind == ActivityKind::ServiceTask => {
                self.request_invocation(id, a)
            }
            PlanItem::Activity(a) if a.kind == ActivityKind::Wait => self.start_wait(id, a),
            _ => Ok(()),
        }
    }

    // ------------------------------------------------------------ alerts

    /// A member of an alert's queue acknowledges it. An alert the caller
    /// may not see (its message is marked above their clearance) is
    /// answered as one that does not exist.
    fn acknowledge_alert(&mut self, alert: crate::case::AlertId) -> Result<(), CaseError> {
        let open = self
            .state
            .alerts
            .iter()
            .find(|a| a.alert == alert && self.principal.may_see(a.marking))
            .cloned()
            .ok_or(CaseError::NoAlert { alert })?;
        self.require(format!("acknowledge {alert}"), &open.record.acknowledged_by)?;
        self.emit(CaseEvent::AlertAcknowledged {
            alert,
            item: open.item,
            by: self.principal.subject.clone(),
        })
    }

    // ------------------------------------------------------------ waits

    /// Starts a wait step's timer (in the append that activates it).
    fn start_wait(&mut self, id: InstanceId, a: &Activity) -> Result<(), CaseError> {
        // Unreachable for a validated definition.
        let period = a.wait.as_ref().and_then(|w| w.period()).ok_or_else(|| {
            CaseError::AutomaticStepFailed {
                item: a.key.clone(),
                reason: "the wait step has no valid wait".into(),
            }
        })?;
        self.emit(CaseEvent::WaitStarted {
            instance: id,
            item: a.key.clone(),
            due: self.due_after(period),
        })
    }

    /// A wait step's timer fired: the step completes, and what waits for
    /// it follows in the same append.
    fn fire_wait(&mut self, instance: InstanceId) -> Result<(), CaseError> {
        self.require("fire a wait step".into(), &[RoleKey::new(SYSTEM_ROLE)])?;
        self.require_active()?;
        let waiting = self.state.wait_of(instance).map(|w| w.item.clone());
        let active = self
            .inst(instance)
            .is_ok_and(|i| i.state == ItemState::Active);
        let (Some(item), true) = (waiting, active) else {
            return Err(CaseError::WaitNotRunning { instance });
        };
        self.emit(CaseEvent::WaitElapsed {
            instance,
            item: item.clone(),
        })?;
        self.emit(CaseEvent::PlanItemCompleted {
            instance,
            item,
            outputs: BTreeMap::new(),
        })?;
        self.after_complete(instance)
    }

    // ------------------------------------------------------------ services

    /// Records a service task's invocation request (in the append that
    /// activates it). An input that cannot be built fails the invocation at
    /// once, with the reason recorded.
    fn request_invocation(&mut self, id: InstanceId, a: &'a Activity) -> Result<(), CaseError> {
        let Some(service) = a.service.clone() else {
            return Ok(());
        };
        let policy = a.retry.clone().unwrap_or_default();
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let invocation = InvocationId(self.state.last_invocation + 1);
        let (input, problem) = self.map_inputs(a)?;
        self.emit(CaseEvent::ServiceInvocationRequested {
            invocation,
            instance: id,
            item: a.key.clone(),
            request: InvocationRequest {
                service,
                input,
                max_attempts: policy.attempts(),
                timeout_ms: ms(policy.attempt_timeout()),
                backoff_ms: ms(policy.first_backoff()),
                max_backoff_ms: ms(policy.longest_backoff()),
            },
            not_before: self.now,
        })?;
        match problem {
            Some(error) => self.fail_invocation(invocation, id, &a.key, 0, error),
            None => Ok(()),
        }
    }

    /// Evaluates a service task's input mapping: the values, and the first
    /// problem (an expression that fails, a required input with no value).
    /// A mapping over its budget fails the command instead: retrying the
    /// invocation could not help, while deciding again with a larger budget
    /// can.
    #[allow(clippy::type_complexity)]
    fn map_inputs(
        &self,
        a: &Activity,
    ) -> Result<(BTreeMap<String, serde_json::Value>, Option<String>), CaseError> {
        let evaluated: Vec<_> = self.with_scope(|scope| {
            a.input
                .iter()
                .map(|(param, expr)| (param, expr.evaluate_within(scope, self.budget)))
                .collect()
        });
        let mut input = BTreeMap::new();
        let mut problem = None;
        for (param, evaluated) in evaluated {
            match evaluated {
                Ok(Some(v)) if !v.is_null() => {
                    input.insert(param.clone(), v);
                }
                Ok(_) => {}
                Err(error @ EvalError::BudgetExceeded { .. }) => {
                    return Err(CaseError::RuleFailed {
                        owner: format!("input.{param} of '{}'", a.key),
                        error,
                    })
                }
                Err(e) => {
                    problem.get_or_insert_with(|| format!("input '{param}': {e}"));
                }
            }
        }
        let declared = a
            .service
            .as_ref()
            .and_then(|name| self.def.services.iter().find(|s| &s.name == name));
        if let Some(service) = declared {
            for (param, p) in &service.inputs {
                if p.required && !input.contains_key(param) {
                    let mapping = a
                        .input
                        .get(param)
                        .map_or_else(|| "nothing".to_string(), |e| format!("'{}'", e.source()));
                    problem.get_or_insert_with(|| {
                        format!(
                            "required input '{param}' has no value: its mapping {mapping} \
                             reads fields the case file does not have"
                        )
                    });
                }
            }
        }
        Ok((input, problem))
    }

    /// Fails an invocation for good: an incident, and the task fails.
    fn fail_invocation(
        &mut self,
        invocation: InvocationId,
        id: InstanceId,
        item: &ItemKey,
        attempt: u32,
        error: String,
    ) -> Result<(), CaseError> {
        let error = clip(error);
        self.emit(CaseEvent::ServiceInvocationFailed {
            invocation,
            attempt,
            error: error.clone(),
        })?;
        self.emit(CaseEvent::PlanItemFailed {
            instance: id,
            item: item.clone(),
            reason: format!("service invocation {invocation} failed: {error}"),
        })
    }

    fn record_outcome(
        &mut self,
        invocation: InvocationId,
        attempt: u32,
        outcome: ServiceOutcome,
    ) -> Result<(), CaseError> {
        self.require(
            "record a service outcome".into(),
            &[RoleKey::new(SYSTEM_ROLE)],
        )?;
        self.require_active()?;
        let pending = self
            .state
            .invocations
            .iter()
            .find(|p| p.invocation == invocation)
            .cloned()
            .ok_or(CaseError::UnknownInvocation { invocation })?;
        if pending.attempt != attempt {
            return Err(CaseError::StaleAttempt {
                invocation,
                attempt,
                current: pending.attempt,
            });
        }
        let (item, _) = self.entry(pending.item.as_str())?;
        let PlanItem::Activity(a) = item else {
            return Err(CaseError::WrongItemKind {
                item: pending.item.clone(),
                kind: item.kind_name().into(),
                action: "record a service outcome".into(),
            });
        };
        match outcome {
            ServiceOutcome::Completed {
                output,
                disclosures,
                alerts,
            } => match self.map_service_output(a, &output) {
                Ok(mapped) => {
                    let marking = self.invocation_marking(&pending.item);
                    for disclosure in disclosures.into_iter().take(MAX_DISCLOSURES) {
                        self.emit(CaseEvent::DisclosureRecorded {
                            invocation,
                            disclosure: clip_disclosure(disclosure),
                            marking,
                        })?;
                    }
                    for mut record in alerts.into_iter().take(MAX_DISCLOSURES) {
                        record.message = clip_to(record.message, MAX_DISCLOSURE_TEXT);
                        self.emit(CaseEvent::AlertRaised {
                            alert: crate::case::AlertId(self.state.last_alert + 1),
                            invocation,
                            item: pending.item.clone(),
                            record,
                            marking,
                        })?;
                    }
                    self.emit(CaseEvent::ServiceInvocationCompleted {
                        invocation,
                        attempt,
                        output,
                    })?;
                    self.emit(CaseEvent::PlanItemCompleted {
                        instance: pending.instance,
                        item: pending.item.clone(),
                        outputs: mapped,
                    })?;
                    self.after_complete(pending.instance)
                }
                Err(problem) => self.fail_invocation(
                    invocation,
                    pending.instance,
                    &pending.item,
                    attempt,
                    format!("malformed output: {problem}"),
                ),
            },
            ServiceOutcome::Failed { error, retry_at } => match retry_at {
                Some(retry_at) if attempt < pending.request.max_attempts => {
                    self.emit(CaseEvent::ServiceAttemptFailed {
                        invocation,
                        attempt,
                        error: clip(error),
                        retry_at,
                    })
                }
                _ => self.fail_invocation(
                    invocation,
                    pending.instance,
                    &pending.item,
                    attempt,
                    error,
                ),
            },
        }
    }

    /// Checks a service's output against its declared contract and maps it
    /// into case-file fields; the error says what is wrong.
    /// The marking of what a service task's invocation may carry: its
    /// effective marking (which covers the fields its input reads) and the
    /// case's.
    fn invocation_marking(&self, item: &ItemKey) -> Classification {
        self.def
            .markings()
            .item(item.as_str())
            .max(self.state.classification)
    }

    fn map_service_output(
        &self,
        a: &Activity,
        output: &BTreeMap<String, serde_json::Value>,
    ) -> Result<BTreeMap<FieldKey, serde_json::Value>, String> {
        let service = a
            .service
            .as_ref()
            .and_then(|name| self.def.services.iter().find(|s| &s.name == name))
            .ok_or_else(|| format!("service task '{}' names no declared service", a.key))?;
        let mut mapped = BTreeMap::new();
        for (key, value) in output {
            let param = service
                .outputs
                .get(key)
                .ok_or_else(|| format!("'{key}' is not an output of service '{}'", service.name))?;
            if value.is_null() {
                continue;
            }
            let as_field = FieldDef {
                key: FieldKey::new(key.clone()),
                ty: param.ty,
                values: param.values.clone(),
                element: param.element,
                required: false,
                classification: None,
                label: None,
                description: None,
                search: None,
            };
            check_value(&as_field, value).map_err(|e| format!("output '{key}': {e}"))?;
            let Some(target) = a.output.get(key) else {
                continue;
            };
            self.check_write(target, value, self.state.classification)
                .map_err(|e| format!("output '{key}' into field '{target}': {e}"))?;
            mapped.insert(target.clone(), value.clone());
        }
        Ok(mapped)
    }

    fn fire_deadline(
        &mut self,
        deadline: crate::definition::DeadlineKey,
        instance: Option<InstanceId>,
    ) -> Result<(), CaseError> {
        self.require("fire a deadline".into(), &[RoleKey::new(SYSTEM_ROLE)])?;
        self.require_active()?;
        let running = self
            .state
            .deadlines
            .iter()
            .any(|d| d.deadline == deadline && d.instance == instance && !d.escalated);
        let def = self
            .deadlines
            .iter()
            .find(|(_, d)| d.key == deadline)
            .map(|(_, d)| *d);
        let (true, Some(def)) = (running, def) else {
            return Err(CaseError::DeadlineNotRunning { deadline });
        };
        self.emit(CaseEvent::DeadlineMissed {
            deadline: deadline.clone(),
            instance,
        })?;
        for e in &def.escalate {
            match e {
                crate::definition::Escalation::Notify(roles) => {
                    self.emit(CaseEvent::EscalationNotified {
                        deadline: deadline.clone(),
                        roles: roles.clone(),
                    })?
                }
                crate::definition::Escalation::RaisePriority(p) => {
                    if self.state.priority.is_none_or(|now| now < *p) {
                        self.emit(CaseEvent::PriorityRaised {
                            priority: *p,
                            deadline: deadline.clone(),
                        })?
                    }
                }
                crate::definition::Escalation::Start(key) => self.start_for_escalation(key)?,
            }
        }
        Ok(())
    }

    /// An escalation's `start`: activates the item's waiting instance, or
    /// plans a discretionary one into its active stage and activates it.
    /// Nothing to start (it is running or done, its stage is not active)
    /// is not an error: the escalation's other effects stand.
    fn start_for_escalation(&mut self, key: &ItemKey) -> Result<(), CaseError> {
        let (item, parent) = self.entry(key.as_str())?;
        if matches!(item, PlanItem::Milestone(_)) {
            return Ok(());
        }
        let waiting = self
            .state
            .instances(key.as_str())
            .filter(|i| matches!(i.state, ItemState::Available | ItemState::Enabled))
            .map(|i| i.id)
            .last();
        let id = match waiting {
            Some(id) => id,
            None if item.discretionary() => {
                let target = match parent {
                    None => None,
                    Some(stage) => match self.state.latest(stage.as_str()) {
                        Some(s) if s.state == ItemState::Active => Some(s.id),
                        _ => return Ok(()),
                    },
                };
                let busy = self
                    .state
                    .children(target)
                    .any(|i| &i.key == key && !i.is_terminal());
                if busy {
                    return Ok(());
                }
                self.emit(CaseEvent::DiscretionaryItemPlanned {
                    item: key.clone(),
                    stage: parent.cloned(),
                    by: self.principal.subject.clone(),
                })?;
                self.create(key, target, true, false)?
            }
            None => return Ok(()),
        };
        match self.state.item(id).map(|i| i.state) {
            Some(ItemState::Available | ItemState::Enabled) => self.activate(id),
            _ => Ok(()),
        }
    }

    fn retry_incident(&mut self, invocation: InvocationId) -> Result<(), CaseError> {
        let incident = self
            .state
            .incidents
            .iter()
            .find(|i| i.invocation == invocation)
            .cloned()
            .ok_or(CaseError::NoIncident { invocation })?;
        let (item, _) = self.entry(incident.item.as_str())?;
        let PlanItem::Activity(a) = item else {
            return Err(CaseError::WrongItemKind {
                item: incident.item.clone(),
                kind: item.kind_name().into(),
                action: "retry".into(),
            });
        };
        let mut roles = roles_of(a);
        roles.push(RoleKey::new(ADMIN_ROLE));
        self.require(format!("retry {}", incident.item), &roles)?;
        self.require_active()?;
        let inst = self.inst(incident.instance)?;
        if inst.state != ItemState::Failed {
            return Err(CaseError::IllegalTransition {
                item: incident.item.clone(),
                from: inst.state,
                action: "retry".into(),
            });
        }
        if !self.parent_active(inst.parent) {
            return Err(CaseError::IllegalTransition {
                item: incident.item.clone(),
                from: inst.state,
                action: "retry (its stage is no longer active)".into(),
            });
        }
        self.emit(CaseEvent::IncidentRetried {
            invocation,
            by: self.principal.subject.clone(),
        })?;
        self.activate(incident.instance)
    }

    /// Keeps invocations in step with their tasks: a task that leaves
    /// *active* another way cancels its invocation; one resumed to *active*
    /// asks again.
    fn follow_invocations(&mut self, event: &CaseEvent) -> Result<(), CaseError> {
        match event {
            CaseEvent::PlanItemCompleted { instance, .. }
            | CaseEvent::PlanItemTerminated { instance, .. }
            | CaseEvent::PlanItemFailed { instance, .. }
            | CaseEvent::PlanItemSuspended { instance, .. } => {
                if let Some(p) = self.state.invocation_of(*instance) {
                    let invocation = p.invocation;
                    self.emit(CaseEvent::ServiceInvocationCancelled { invocation })?;
                }
                // A suspended wait keeps its timer: the case refuses to fire
                // it while suspended, and it fires on resume if due by then.
                let ended = !matches!(event, CaseEvent::PlanItemSuspended { .. });
                if let Some(w) = self.state.wait_of(*instance).filter(|_| ended) {
                    let item = w.item.clone();
                    self.emit(CaseEvent::WaitCancelled {
                        instance: *instance,
                        item,
                    })?;
                }
                Ok(())
            }
            CaseEvent::PlanItemResumed {
                instance,
                item,
                restored: ItemState::Active,
            } => match self.entry(item.as_str())?.0 {
                PlanItem::Activity(a)
                    if a.kind == ActivityKind::ServiceTask
                        && self.state.invocation_of(*instance).is_none() =>
                {
                    self.request_invocation(*instance, a)
                }
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    fn run_automatic(&mut self, id: InstanceId, a: &'a Activity) -> Result<(), CaseError> {
        let outputs = self.with_scope(|scope| {
            let mut outputs = BTreeMap::new();
            for (field, expr) in &a.set {
                let value = expr.evaluate_within(scope, self.budget).map_err(|error| {
                    CaseError::RuleFailed {
                        owner: format!("set.{field} of '{}'", a.key),
                        error,
                    }
                })?;
                let Some(value) = value.filter(|v| !v.is_null()) else {
                    continue;
                };
                let fd = self.def.field(field.as_str()).ok_or_else(|| {
                    CaseError::AutomaticStepFailed {
                        item: a.key.clone(),
                        reason: format!("unknown field '{field}'"),
                    }
                })?;
                check_value(fd, &value)
                    .map_err(|r| r.to_string())
                    .map_err(|r| CaseError::AutomaticStepFailed {
                        item: a.key.clone(),
                        reason: format!("field '{field}': {r}"),
                    })?;
                outputs.insert(field.clone(), value);
            }
            Ok::<_, CaseError>(outputs)
        })?;
        self.emit(CaseEvent::PlanItemCompleted {
            instance: id,
            item: a.key.clone(),
            outputs,
        })?;
        self.after_complete(id)
    }

    /// Repetition without entry criteria: a new instance when one completes.
    fn after_complete(&mut self, id: InstanceId) -> Result<(), CaseError> {
        let inst = self.inst(id)?;
        let (item, _) = self.entry(inst.key.as_str())?;
        if item.repeatable()
            && item.entry().is_empty()
            && !inst.discretionary
            && !matches!(item, PlanItem::Milestone(_))
            && self.repetition_allowed(item, &inst.key, inst.parent)?
        {
            self.repeats.push_back(Repeat {
                key: inst.key,
                parent: inst.parent,
                discretionary: false,
                entered_at_once: true,
            });
        }
        Ok(())
    }

    /// Terminates an item and every non-terminal descendant (innermost first).
    fn terminate(&mut self, id: InstanceId) -> Result<(), CaseError> {
        let mut ids = self.descendants(id);
        ids.reverse();
        ids.push(id);
        for d in ids {
            let inst = self.inst(d)?;
            if !inst.is_terminal() {
                self.emit(CaseEvent::PlanItemTerminated {
                    instance: d,
                    item: inst.key,
                })?;
            }
        }
        Ok(())
    }

    fn terminate_children(&mut self, parent: Option<InstanceId>) -> Result<(), CaseError> {
        let ids: Vec<InstanceId> = self
            .state
            .children(parent)
            .filter(|i| !i.is_terminal())
            .map(|i| i.id)
            .collect();
        for id in ids {
            self.terminate(id)?;
        }
        Ok(())
    }

    /// Why a container (a stage instance, or the case plan) cannot complete.
    /// `by_person`: the rule for a person completing it; otherwise the
    /// autocomplete rule given by `autocomplete`.
    ///
    /// Autocomplete on: nothing active or suspended, every required child
    /// terminal. Autocomplete off, by itself: besides, it has children,
    /// every one terminal, and no discretionary item could still be planned
    /// into it. A person: nothing active, required children terminal.
    /// Repetitions still to be made in this command count as the children
    /// they will be.
    fn completion_blocker(
        &self,
        parent: Option<InstanceId>,
        autocomplete: bool,
        by_person: bool,
    ) -> Result<Option<String>, CaseError> {
        let children: Vec<&ItemInstance> = self.state.children(parent).collect();
        // The reason reaches the principal: an item they may not see is not named.
        let see =
            super::disclose::Disclosure::new(self.def, self.state.classification, self.principal);
        let name = |key: &ItemKey, what: &str, state: &str| {
            if see.item(key.as_str()) {
                format!("{what}'{key}' is {state}")
            } else {
                "work in it is not finished".to_string()
            }
        };
        let named = |c: &ItemInstance, what: &str| name(&c.key, what, c.state.as_str());
        if let Some(c) = children
            .iter()
            .find(|c| matches!(c.state, ItemState::Active | ItemState::Suspended))
        {
            return Ok(Some(named(c, "")));
        }
        let pending = self.repeats.iter().filter(|r| r.parent == parent);
        if let Some(r) = pending.clone().find(|r| r.entered_at_once) {
            return Ok(Some(name(&r.key, "", "repeating")));
        }
        // Children come in creation order: an item's first instance is the
        // first one seen.
        let mut seen = HashSet::new();
        for c in &children {
            let first = seen.insert(c.key.as_str());
            if !first || c.is_terminal() {
                continue;
            }
            if let Some((item, _)) = self.def.plan_item(c.key.as_str()) {
                if self.is_required(item)? {
                    return Ok(Some(named(c, "required ")));
                }
            }
        }
        if by_person || autocomplete {
            return Ok(None);
        }
        if let Some(c) = children.iter().find(|c| !c.is_terminal()) {
            return Ok(Some(named(c, "")));
        }
        if let Some(r) = pending.clone().next() {
            return Ok(Some(name(&r.key, "", "repeating")));
        }
        if children.is_empty() {
            return Ok(Some(
                "nothing has been planned in it yet (it does not complete by itself)".into(),
            ));
        }
        if let Some(key) = self.plannable_into(parent) {
            return Ok(Some(name(key, "discretionary ", "still to be planned")));
        }
        Ok(None)
    }

    /// A discretionary item that could still be planned into the container
    /// (a repeatable one always can; another until it has been planned).
    fn plannable_into(&self, parent: Option<InstanceId>) -> Option<&'a ItemKey> {
        let container = match parent {
            None => None,
            Some(id) => Some(self.state.item(id)?.key.clone()),
        };
        self.def
            .child_items(container.as_ref().map(|k| k.as_str()))
            .into_iter()
            .filter(|c| c.discretionary())
            .find(|c| {
                c.repeatable()
                    || !(self.state.children(parent).any(|i| &i.key == c.key())
                        || self
                            .state
                            .planned
                            .iter()
                            .any(|p| &p.item == c.key() && p.stage == container))
            })
            .map(|c| c.key())
    }

    fn complete_stage(&mut self, id: InstanceId) -> Result<(), CaseError> {
        self.terminate_children(Some(id))?;
        let inst = self.inst(id)?;
        self.emit(CaseEvent::PlanItemCompleted {
            instance: id,
            item: inst.key,
            outputs: BTreeMap::new(),
        })?;
        self.after_complete(id)
    }

    /// The innermost active stage that completes by itself now.
    fn completable_stage(&self) -> Result<Option<InstanceId>, CaseError> {
        for i in self.state.items.iter().rev() {
            if i.state != ItemState::Active {
                continue;
            }
            if let Some((PlanItem::Stage(s), _)) = self.def.plan_item(i.key.as_str()) {
                if self
                    .completion_blocker(Some(i.id), s.autocomplete, false)?
                    .is_none()
                {
                    return Ok(Some(i.id));
                }
            }
        }
        Ok(None)
    }

    fn case_exit_holds(&self) -> Result<bool, CaseError> {
        for (j, s) in self.def.exit.iter().enumerate() {
            let latched = self
                .state
                .case_exit_latches
                .get(j)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            if self.sentry_holds(s, latched, || format!("case exit[{j}]"))? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn sentry_holds(
        &self,
        s: &crate::definition::Sentry,
        latched: &[bool],
        owner: impl FnOnce() -> String,
    ) -> Result<bool, CaseError> {
        if s.on.is_empty() && s.condition.is_none() {
            return Ok(false);
        }
        if latched.len() != s.on.len() || !latched.iter().all(|b| *b) {
            return Ok(false);
        }
        match &s.condition {
            None => Ok(true),
            Some(c) => self.eval(c, owner),
        }
    }

    fn evaluate(&mut self, id: InstanceId) -> Result<(), CaseError> {
        let inst = self.inst(id)?;
        if inst.is_terminal() {
            return Ok(());
        }
        let (item, _) = self.entry(inst.key.as_str())?;
        for (j, s) in item.exit().iter().enumerate() {
            let latched = inst.exit_latches.get(j).map(Vec::as_slice).unwrap_or(&[]);
            if self.sentry_holds(s, latched, || format!("exit[{j}] of '{}'", inst.key))? {
                return self.terminate(id);
            }
        }
        if inst.state == ItemState::Available && !self.at_capacity(item, &inst) {
            for (j, s) in item.entry().iter().enumerate() {
                let latched = inst.entry_latches.get(j).map(Vec::as_slice).unwrap_or(&[]);
                if self.sentry_holds(s, latched, || format!("entry[{j}] of '{}'", inst.key))? {
                    return self.fire_entry(id);
                }
            }
        }
        Ok(())
    }

    /// Runs the cascade to a fixpoint: sentries first, then stage
    /// autocompletion (innermost first), then the case's completion, then its
    /// exit criteria — so a command that both completes the case and fires
    /// its exit criterion completes it — and only then the next repetition.
    /// Exit criteria therefore take effect before another repetition is
    /// made, and a repetition's new instance, made when everything its
    /// predecessor caused has settled, sees only what happens after it.
    fn run(&mut self) -> Result<(), CaseError> {
        loop {
            if self.state.status != CaseStatus::Active {
                return Ok(());
            }
            if let Some(id) = self.queue.pop_front() {
                self.queued.remove(&id);
                self.evaluate(id)?;
                continue;
            }
            if let Some(id) = self.completable_stage()? {
                self.complete_stage(id)?;
                continue;
            }
            if !self.state.reopened {
                if self
                    .completion_blocker(None, self.def.autocomplete, false)?
                    .is_none()
                {
                    self.terminate_children(None)?;
                    return self.emit(CaseEvent::CaseCompleted {});
                }
                if std::mem::take(&mut self.case_exit_dirty) {
                    if self.case_exit_holds()? {
                        self.repeats.clear();
                        self.terminate_children(None)?;
                        self.emit(CaseEvent::CaseTerminated {})?;
                    }
                    continue;
                }
            }
            if let Some(r) = self.repeats.pop_front() {
                if self.parent_active(r.parent) {
                    self.create(&r.key, r.parent, r.discretionary, true)?;
                }
                continue;
            }
            return Ok(());
        }
    }

    // ------------------------------------------------------------ commands

    fn command(&mut self, command: CaseCommand) -> Result<(), CaseError> {
        if let CaseCommand::Open {
            case_file,
            classification,
        } = command
        {
            return self.open(case_file.into_inner(), classification);
        }
        self.guard()?;
        self.conceal_hidden(&command)?;
        let def = self.def;
        let p = &def.permissions;
        match command {
            CaseCommand::Open { .. } => Err(CaseError::AlreadyOpened),
            CaseCommand::UpdateCaseFile { changes } => {
                self.require("update the case file".into(), &p.update_case_file)?;
                self.require_active()?;
                if changes.is_empty() {
                    return Err(CaseError::InvalidCommand {
                        reason: "no fields to update".into(),
                    });
                }
                let mut changed = BTreeMap::new();
                for (k, v) in changes {
                    self.check_write(&k, &v, self.state.classification)?;
                    let current = self.state.case_file.get(&k);
                    let same = match current {
                        None => v.is_null(),
                        Some(c) => *c == v,
                    };
                    if !same {
                        changed.insert(k, v);
                    }
                }
                if changed.is_empty() {
                    return Ok(());
                }
                self.emit(CaseEvent::CaseFileUpdated { changes: changed })
            }
            CaseCommand::Start { item } => self.start(&item),
            CaseCommand::Claim { item } => self.claim(&item, None),
            CaseCommand::Assign { item, assignee } => self.claim(&item, Some(assignee)),
            CaseCommand::AssignTeam { item, team } => self.assign_team(&item, team),
            CaseCommand::Complete { item, outputs } => self.complete(&item, outputs),
            CaseCommand::Fail { item, reason } => self.fail(&item, reason),
            CaseCommand::Terminate { item } => {
                let (def_item, _) = self.entry(item.key.as_str())?;
                let roles = self.with_close(self.item_roles(def_item));
                self.require(format!("terminate {}", item.key), &roles)?;
                self.require_active()?;
                let id = self.resolve(
                    &item,
                    &[
                        ItemState::Available,
                        ItemState::Enabled,
                        ItemState::Active,
                        ItemState::Suspended,
                    ],
                    "terminate",
                )?;
                self.check_claim(&self.inst(id)?)?;
                self.terminate(id)
            }
            CaseCommand::Disable { item } => {
                let (def_item, _) = self.entry(item.key.as_str())?;
                self.require(format!("disable {}", item.key), &self.item_roles(def_item))?;
                self.require_active()?;
                let id = self.resolve(&item, &[ItemState::Enabled], "disable")?;
                self.emit(CaseEvent::PlanItemDisabled {
                    instance: id,
                    item: item.key.clone(),
                })
            }
            CaseCommand::Reenable { item } => {
                let (def_item, _) = self.entry(item.key.as_str())?;
                self.require(
                    format!("re-enable {}", item.key),
                    &self.item_roles(def_item),
                )?;
                self.require_active()?;
                let id = self.resolve(&item, &[ItemState::Disabled], "re-enable")?;
                let inst = self.inst(id)?;
                if !self.parent_active(inst.parent) {
                    return Err(CaseError::InvalidCommand {
                        reason: format!(
                            "'{}' cannot be re-enabled: its stage is no longer active",
                            item.key
                        ),
                    });
                }
                self.emit(CaseEvent::PlanItemEnabled {
                    instance: id,
                    item: item.key.clone(),
                })
            }
            CaseCommand::SuspendItem { item } => self.suspend_item(&item),
            CaseCommand::ResumeItem { item } => self.resume_item(&item),
            CaseCommand::AddDiscretionary { item, stage } => self.add_discretionary(&item, stage),
            CaseCommand::ReachMilestone { item } => {
                let (def_item, _) = self.entry(item.key.as_str())?;
                if !matches!(def_item, PlanItem::Milestone(_)) {
                    return Err(CaseError::WrongItemKind {
                        item: item.key.clone(),
                        kind: def_item.kind_name().into(),
                        action: "reach".into(),
                    });
                }
                self.require(format!("reach {}", item.key), &p.update_case_file)?;
                self.require_active()?;
                let id = self.resolve(&item, &[ItemState::Available], "reach")?;
                self.fire_entry(id)
            }
            CaseCommand::LinkEntity { entity, role } => self.link(entity, role),
            CaseCommand::AddNote { text } => {
                self.require("add a note".into(), &p.add_note)?;
                self.require_running()?;
                check_text("a note", &text, MAX_NOTE_LEN)?;
                self.emit(CaseEvent::NoteAdded {
                    text,
                    by: self.principal.subject.clone(),
                    at: self.now,
                })
            }
            CaseCommand::Suspend => {
                self.require("suspend the case".into(), &p.suspend)?;
                self.require_active()?;
                let ids: Vec<(InstanceId, ItemKey)> = self
                    .state
                    .items
                    .iter()
                    .filter(|i| !i.is_terminal() && i.state != ItemState::Suspended)
                    .map(|i| (i.id, i.key.clone()))
                    .collect();
                for (id, key) in ids {
                    self.emit(CaseEvent::PlanItemSuspended {
                        instance: id,
                        item: key,
                        by: SuspendedBy::Case,
                    })?;
                }
                self.emit(CaseEvent::CaseSuspended {})
            }
            CaseCommand::Resume => {
                self.require("resume the case".into(), &p.resume)?;
                if self.state.status != CaseStatus::Suspended {
                    return Err(CaseError::IllegalCaseTransition {
                        from: self.state.status,
                        action: "resume".into(),
                    });
                }
                self.emit(CaseEvent::CaseResumed {})?;
                self.resume_where(|i| i.suspended_by == Some(SuspendedBy::Case))?;
                self.case_exit_dirty = !self.def.exit.is_empty();
                Ok(())
            }
            CaseCommand::CompleteCase => {
                self.require("complete the case".into(), &p.close)?;
                self.require_active()?;
                if let Some(reason) = self.completion_blocker(None, self.def.autocomplete, true)? {
                    return Err(CaseError::NotCompletable {
                        item: "the case".into(),
                        reason,
                    });
                }
                self.terminate_children(None)?;
                self.emit(CaseEvent::CaseCompleted {})
            }
            CaseCommand::Close { reason } => {
                self.require("close the case".into(), &p.close)?;
                if let Some(r) = &reason {
                    check_text("a reason", r, MAX_NOTE_LEN)?;
                }
                match self.state.status {
                    CaseStatus::Active | CaseStatus::Suspended => {
                        self.terminate_children(None)?;
                    }
                    CaseStatus::Completed | CaseStatus::Terminated => {}
                    from => {
                        return Err(CaseError::IllegalCaseTransition {
                            from,
                            action: "close".into(),
                        })
                    }
                }
                self.emit(CaseEvent::CaseClosed { reason })
            }
            CaseCommand::RecordServiceOutcome {
                invocation,
                attempt,
                outcome,
            } => self.record_outcome(invocation, attempt, outcome),
            CaseCommand::RetryIncident { invocation } => self.retry_incident(invocation),
            CaseCommand::FireDeadline { deadline, instance } => {
                self.fire_deadline(deadline, instance)
            }
            CaseCommand::FireWait { instance } => self.fire_wait(instance),
            CaseCommand::AcknowledgeAlert { alert } => self.acknowledge_alert(alert),
            CaseCommand::Reopen { reason } => {
                self.require("reopen the case".into(), &p.reopen)?;
                if let Some(r) = &reason {
                    check_text("a reason", r, MAX_NOTE_LEN)?;
                }
                if !self.state.status.is_ended() {
                    return Err(CaseError::IllegalCaseTransition {
                        from: self.state.status,
                        action: "reopen".into(),
                    });
                }
                self.emit(CaseEvent::CaseReopened { reason })
            }
        }
    }

    /// A command naming a plan item (or an incident of one) the principal
    /// may not see is answered exactly as if the item did not exist, before
    /// any rule about it is checked: an item's state, its applicability rule
    /// and its roles are all information its marking protects.
    fn conceal_hidden(&self, command: &CaseCommand) -> Result<(), CaseError> {
        let see =
            super::disclose::Disclosure::new(self.def, self.state.classification, self.principal);
        let named: Vec<&str> = match command {
            CaseCommand::Start { item }
            | CaseCommand::Claim { item }
            | CaseCommand::Assign { item, .. }
            | CaseCommand::AssignTeam { item, .. }
            | CaseCommand::Complete { item, .. }
            | CaseCommand::Fail { item, .. }
            | CaseCommand::Terminate { item }
            | CaseCommand::Disable { item }
            | CaseCommand::Reenable { item }
            | CaseCommand::SuspendItem { item }
            | CaseCommand::ResumeItem { item }
            | CaseCommand::ReachMilestone { item } => vec![item.key.as_str()],
            CaseCommand::AddDiscretionary { item, stage } => std::iter::once(item.as_str())
                .chain(stage.as_ref().map(ItemKey::as_str))
                .collect(),
            CaseCommand::RetryIncident { invocation } => {
                let hidden = self
                    .state
                    .incidents
                    .iter()
                    .any(|i| i.invocation == *invocation && !see.item(i.item.as_str()));
                if hidden {
                    return Err(CaseError::NoIncident {
                        invocation: *invocation,
                    });
                }
                Vec::new()
            }
            _ => Vec::new(),
        };
        match named.into_iter().find(|k| !see.item(k)) {
            Some(key) => Err(CaseError::UnknownItem {
                item: key.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// Tenant, definition and clearance checks for every command but `Open`.
    fn guard(&self) -> Result<(), CaseError> {
        if self.state.status == CaseStatus::NotOpened {
            return Err(CaseError::NotOpened);
        }
        if self.state.tenant.as_ref() != Some(&self.principal.tenant) {
            return Err(CaseError::WrongTenant {
                tenant: self.principal.tenant.clone(),
            });
        }
        if let Some(d) = &self.state.definition {
            if d.key != self.def.key || d.version != self.def.version {
                return Err(CaseError::DefinitionMismatch {
                    expected: d.to_string(),
                    found: format!("{} v{}", self.def.key, self.def.version),
                });
            }
        }
        if !self.principal.may_see(self.state.classification) {
            return Err(CaseError::InsufficientClearance {
                subject: ClearanceSubject::Case,
                needed: self.state.classification,
                held: self.principal.clearance,
            });
        }
        Ok(())
    }

    fn open(
        &mut self,
        case_file: BTreeMap<FieldKey, serde_json::Value>,
        classification: Option<Classification>,
    ) -> Result<(), CaseError> {
        if self.state.status != CaseStatus::NotOpened {
            return Err(CaseError::AlreadyOpened);
        }
        self.require(
            format!("open a {} case", self.def.key),
            &self.def.permissions.open,
        )?;
        let class = classification.unwrap_or(self.def.default_classification);
        if class < self.def.default_classification {
            return Err(CaseError::InvalidCommand {
                reason: format!(
                    "a {} case is at least {}; {class} is below it",
                    self.def.key, self.def.default_classification
                ),
            });
        }
        if !self.principal.may_see(class) {
            return Err(CaseError::InsufficientClearance {
                subject: ClearanceSubject::NewCase,
                needed: class,
                held: self.principal.clearance,
            });
        }
        let mut file = BTreeMap::new();
        for (k, v) in case_file {
            self.check_write(&k, &v, class)?;
            if !v.is_null() {
                file.insert(k, v);
            }
        }
        if let Some(missing) = self
            .def
            .fields
            .iter()
            .find(|f| f.required && !file.contains_key(&f.key))
        {
            return Err(CaseError::invalid_field(
                missing.key.as_str(),
                "required when the case is opened",
            ));
        }
        self.emit(CaseEvent::CaseOpened {
            tenant: self.principal.tenant.clone(),
            definition: DefinitionRef {
                key: self.def.key.clone(),
                version: self.def.version,
                fingerprint: self.def.fingerprint(),
            },
            case_file: file,
            classification: class,
            opened_at: self.now,
        })?;
        for child in self.def.child_items(None) {
            if !child.discretionary() {
                self.create(child.key(), None, false, false)?;
            }
        }
        Ok(())
    }

    fn start(&mut self, r: &ItemRef) -> Result<(), CaseError> {
        let (item, _) = self.entry(r.key.as_str())?;
        if matches!(item, PlanItem::Milestone(_)) {
            return Err(CaseError::WrongItemKind {
                item: r.key.clone(),
                kind: "milestone".into(),
                action: "start".into(),
            });
        }
        self.require(format!("start {}", r.key), &self.item_roles(item))?;
        self.require_active()?;
        let id = self.resolve(r, &[ItemState::Enabled], "start")?;
        self.check_claim(&self.inst(id)?)?;
        self.activate(id)
    }

    fn claim(&mut self, r: &ItemRef, assignee: Option<String>) -> Result<(), CaseError> {
        let (item, _) = self.entry(r.key.as_str())?;
        let PlanItem::Activity(a) = item else {
            return Err(CaseError::WrongItemKind {
                item: r.key.clone(),
                kind: item.kind_name().into(),
                action: if assignee.is_some() {
                    "assign"
                } else {
                    "claim"
                }
                .into(),
            });
        };
        let allowed = [ItemState::Enabled, ItemState::Active];
        match assignee {
            None => {
                self.require(format!("claim {}", r.key), &roles_of(a))?;
                self.require_active()?;
                let id = self.resolve(r, &allowed, "claim")?;
                let inst = self.inst(id)?;
                // Taking over someone else's task is a reassignment (`Assign`).
                if let Some(by) = inst
                    .claimed_by
                    .as_ref()
                    .filter(|by| **by != self.principal.subject)
                {
                    return Err(CaseError::ClaimedByAnother {
                        item: inst.key.clone(),
                        claimed_by: by.clone(),
                    });
                }
                if inst.claimed_by.as_deref() == Some(self.principal.subject.as_str()) {
                    return Ok(());
                }
                self.emit(CaseEvent::ActivityClaimed {
                    instance: id,
                    item: r.key.clone(),
                    by: self.principal.subject.clone(),
                })
            }
            Some(assignee) => {
                self.require(format!("assign {}", r.key), &self.with_close(roles_of(a)))?;
                self.require_active()?;
                crate::security::check_subject("assignee", &assignee).map_err(|e| {
                    CaseError::InvalidCommand {
                        reason: e.to_string(),
                    }
                })?;
                let id = self.resolve(r, &allowed, "assign")?;
                self.check_claim(&self.inst(id)?)?;
                self.emit(CaseEvent::ActivityAssigned {
                    instance: id,
                    item: r.key.clone(),
                    assignee,
                    by: self.principal.subject.clone(),
                })
            }
        }
    }

    fn assign_team(&mut self, r: &ItemRef, team: String) -> Result<(), CaseError> {
        let (item, _) = self.entry(r.key.as_str())?;
        let a = match item {
            PlanItem::Activity(a) if a.kind == ActivityKind::HumanTask => a,
            other => {
                return Err(CaseError::WrongItemKind {
                    item: r.key.clone(),
                    kind: other.kind_name().into(),
                    action: "route to a team (only human tasks have a team)".into(),
                })
            }
        };
        self.require(format!("assign {}", r.key), &self.with_close(roles_of(a)))?;
        self.require_active()?;
        check_identifier(&team)
            .map_err(|e| e.to_string())
            .map_err(|reason| CaseError::InvalidCommand {
                reason: format!("team: {reason}"),
            })?;
        let id = self.resolve(r, &[ItemState::Enabled, ItemState::Active], "assign")?;
        let inst = self.inst(id)?;
        self.check_claim(&inst)?;
        let current = inst
            .team
            .as_deref()
            .or(self.def.team_of(a).map(|t| t.as_str()));
        if current == Some(team.as_str()) && inst.claimed_by.is_none() {
            return Ok(());
        }
        self.emit(CaseEvent::ActivityTeamAssigned {
            instance: id,
            item: r.key.clone(),
            team,
            by: self.principal.subject.clone(),
        })
    }

    fn complete(&mut self, r: &ItemRef, outputs: CaseFile) -> Result<(), CaseError> {
        let (item, _) = self.entry(r.key.as_str())?;
        match item {
            PlanItem::Milestone(_) => Err(CaseError::WrongItemKind {
                item: r.key.clone(),
                kind: "milestone".into(),
                action: "complete (use reach)".into(),
            }),
            PlanItem::Stage(s) => {
                self.require(format!("complete {}", r.key), &self.item_roles(item))?;
                self.require_active()?;
                if !outputs.is_empty() {
                    return Err(CaseError::InvalidCommand {
                        reason: "a stage has no outputs".into(),
                    });
                }
                let id = self.resolve(r, &[ItemState::Active], "complete")?;
                if let Some(reason) = self.completion_blocker(Some(id), s.autocomplete, true)? {
                    return Err(CaseError::NotCompletable {
                        item: format!("stage '{}'", r.key),
                        reason,
                    });
                }
                self.complete_stage(id)
            }
            PlanItem::Activity(a) => {
                if a.kind == ActivityKind::ServiceTask {
                    // Its service completes it; by hand, only an administrator.
                    self.require(
                        format!("complete service task {} by hand", r.key),
                        &[RoleKey::new(ADMIN_ROLE)],
                    )?;
                } else {
                    self.require(format!("complete {}", r.key), &roles_of(a))?;
                }
                self.require_active()?;
                if matches!(a.kind, ActivityKind::Automatic | ActivityKind::Wait) {
                    return Err(CaseError::WrongItemKind {
                        item: r.key.clone(),
                        kind: match a.kind {
                            ActivityKind::Wait => "wait step",
                            _ => "automatic step",
                        }
                        .into(),
                        action: "complete (it completes by itself)".into(),
                    });
                }
                let id = self.resolve(r, &[ItemState::Active], "complete")?;
                self.check_claim(&self.inst(id)?)?;
                let mapped = self.map_outputs(a, outputs)?;
                self.emit(CaseEvent::PlanItemCompleted {
                    instance: id,
                    item: r.key.clone(),
                    outputs: mapped,
                })?;
                self.after_complete(id)
            }
        }
    }

    /// Checks a completion's outputs against the task's form or the service
    /// task's output mapping, and maps them to case-file fields.
    fn map_outputs(
        &self,
        a: &Activity,
        outputs: CaseFile,
    ) -> Result<BTreeMap<FieldKey, serde_json::Value>, CaseError> {
        let mut mapped = BTreeMap::new();
        match a.kind {
            ActivityKind::HumanTask => {
                for (k, v) in outputs {
                    let form = a
                        .form
                        .iter()
                        .find(|f| f.field == k.as_str())
                        .ok_or_else(|| {
                            CaseError::invalid_field(
                                k.as_str(),
                                format!("not on the form of '{}'", a.key),
                            )
                        })?;
                    if form.read_only {
                        return Err(CaseError::invalid_field(
                            k.as_str(),
                            format!("read-only on the form of '{}'", a.key),
                        ));
                    }
                    self.check_write(&k, &v, self.state.classification)?;
                    mapped.insert(k, v);
                }
                for f in a.form.iter().filter(|f| f.required) {
                    let present = match mapped.get(&f.field) {
                        Some(v) => !v.is_null(),
                        None => self.state.case_file.contains_key(&f.field),
                    };
                    if !present {
                        return Err(CaseError::invalid_field(
                            f.field.as_str(),
                            format!("required by the form of '{}'", a.key),
                        ));
                    }
                }
            }
            ActivityKind::ServiceTask => {
                for (k, v) in outputs {
                    let target = a.output.get(k.as_str()).ok_or_else(|| {
                        CaseError::invalid_field(
                            k.as_str(),
                            format!("not a result '{}' maps into the case file", a.key),
                        )
                    })?;
                    if v.is_null() {
                        continue;
                    }
                    self.check_write(target, &v, self.state.classification)?;
                    mapped.insert(target.clone(), v);
                }
            }
            ActivityKind::Automatic | ActivityKind::Wait => {}
        }
        Ok(mapped)
    }

    fn fail(&mut self, r: &ItemRef, reason: String) -> Result<(), CaseError> {
        let (item, _) = self.entry(r.key.as_str())?;
        let PlanItem::Activity(a) = item else {
            return Err(CaseError::WrongItemKind {
                item: r.key.clone(),
                kind: item.kind_name().into(),
                action: "fail".into(),
            });
        };
        self.require(format!("fail {}", r.key), &roles_of(a))?;
        self.require_active()?;
        check_text("a failure reason", &reason, MAX_NOTE_LEN)?;
        let id = self.resolve(r, &[ItemState::Active], "fail")?;
        self.check_claim(&self.inst(id)?)?;
        self.emit(CaseEvent::PlanItemFailed {
            instance: id,
            item: r.key.clone(),
            reason,
        })
    }

    fn suspend_item(&mut self, r: &ItemRef) -> Result<(), CaseError> {
        let (item, _) = self.entry(r.key.as_str())?;
        if matches!(item, PlanItem::Milestone(_)) {
            return Err(CaseError::WrongItemKind {
                item: r.key.clone(),
                kind: "milestone".into(),
                action: "suspend".into(),
            });
        }
        self.require(format!("suspend {}", r.key), &self.def.permissions.suspend)?;
        self.require_active()?;
        let id = self.resolve(
            r,
            &[ItemState::Available, ItemState::Enabled, ItemState::Active],
            "suspend",
        )?;
        self.emit(CaseEvent::PlanItemSuspended {
            instance: id,
            item: r.key.clone(),
            by: SuspendedBy::Command,
        })?;
        for d in self.descendants(id) {
            let inst = self.inst(d)?;
            if !inst.is_terminal() && inst.state != ItemState::Suspended {
                self.emit(CaseEvent::PlanItemSuspended {
                    instance: d,
                    item: inst.key,
                    by: SuspendedBy::Stage { instance: id },
                })?;
            }
        }
        Ok(())
    }

    fn resume_item(&mut self, r: &ItemRef) -> Result<(), CaseError> {
        self.entry(r.key.as_str())?;
        self.require(format!("resume {}", r.key), &self.def.permissions.resume)?;
        self.require_active()?;
        let id = self.resolve(r, &[ItemState::Suspended], "resume")?;
        let inst = self.inst(id)?;
        if inst.suspended_by != Some(SuspendedBy::Command) {
            return Err(CaseError::InvalidCommand {
                reason: format!(
                    "'{}' was suspended with its stage; resume the stage instead",
                    r.key
                ),
            });
        }
        self.resume_where(|i| i.id == id)?;
        self.resume_where(|i| i.suspended_by == Some(SuspendedBy::Stage { instance: id }))
    }

    /// Resumes every suspended instance matching `which` to its previous
    /// state, and queues its sentries (a sentry that targeted it while it was
    /// suspended takes effect now).
    fn resume_where(&mut self, which: impl Fn(&ItemInstance) -> bool) -> Result<(), CaseError> {
        let ids: Vec<(InstanceId, ItemKey, ItemState)> = self
            .state
            .items
            .iter()
            .filter(|i| i.state == ItemState::Suspended && which(i))
            .map(|i| (i.id, i.key.clone(), i.previous.unwrap_or(ItemState::Active)))
            .collect();
        for (id, key, restored) in ids {
            self.emit(CaseEvent::PlanItemResumed {
                instance: id,
                item: key,
                restored,
            })?;
            self.queue(id);
        }
        Ok(())
    }

    fn add_discretionary(
        &mut self,
        key: &ItemKey,
        stage: Option<ItemKey>,
    ) -> Result<(), CaseError> {
        let (item, parent) = self.entry(key.as_str())?;
        let target = self.plan_target(key, item, parent, stage.as_ref())?;
        if let Some(c) = item.applicability() {
            if !self.eval(c, || format!("applicability of '{key}'"))? {
                return Err(CaseError::NotApplicable {
                    item: key.clone(),
                    condition: c.source().to_string(),
                });
            }
        }
        self.emit(CaseEvent::DiscretionaryItemPlanned {
            item: key.clone(),
            stage: parent.cloned(),
            by: self.principal.subject.clone(),
        })?;
        if let Some(parent_id) = target {
            self.create(key, parent_id, true, false)?;
        }
        Ok(())
    }

    /// Whether the principal may plan the discretionary `item` (whose
    /// container is `parent`) now, its applicability aside: their role, the
    /// case, its container, whether it was planned already, its limits.
    /// Where it goes: `Some(instance)` into the case plan or the stage's
    /// active instance, `None` pending until the stage activates.
    fn plan_target(
        &self,
        key: &ItemKey,
        item: PlanItem<'_>,
        parent: Option<&ItemKey>,
        stage: Option<&ItemKey>,
    ) -> Result<Option<Option<InstanceId>>, CaseError> {
        if !item.discretionary() {
            return Err(CaseError::NotDiscretionary { item: key.clone() });
        }
        let planners = match item {
            PlanItem::Activity(a) => a.planners.as_slice(),
            PlanItem::Stage(s) => s.planners.as_slice(),
            PlanItem::Milestone(_) => &[][..],
        };
        let needed: Vec<RoleKey> = if planners.is_empty() {
            self.def.permissions.add_discretionary.clone()
        } else {
            self.def
                .permissions
                .add_discretionary
                .iter()
                .filter(|r| planners.contains(r))
                .cloned()
                .collect()
        };
        self.require(format!("plan {key}"), &needed)?;
        self.require_active()?;
        if let Some(s) = stage {
            if Some(s) != parent {
                return Err(CaseError::InvalidCommand {
                    reason: match parent {
                        Some(p) => format!("'{key}' is planned into stage '{p}', not '{s}'"),
                        None => format!("'{key}' is planned into the case plan, not '{s}'"),
                    },
                });
            }
        }
        // Where it goes: the case plan, the stage's active instance, or
        // pending until the stage activates.
        let target: Option<Option<InstanceId>> = match parent {
            None => Some(None),
            Some(stage_key) => match self.state.latest(stage_key.as_str()) {
                Some(s) if s.state == ItemState::Active => Some(Some(s.id)),
                Some(s) if s.state == ItemState::Suspended => {
                    return Err(CaseError::IllegalTransition {
                        item: stage_key.clone(),
                        from: s.state,
                        action: format!("plan '{key}' into"),
                    })
                }
                Some(s)
                    if s.is_terminal()
                        && !self
                            .def
                            .plan_item(stage_key.as_str())
                            .is_some_and(|(i, _)| i.repeatable()) =>
                {
                    return Err(CaseError::IllegalTransition {
                        item: stage_key.clone(),
                        from: s.state,
                        action: format!("plan '{key}' into"),
                    })
                }
                _ => None,
            },
        };
        if !item.repeatable() {
            let pending = self.state.planned.iter().any(|p| &p.item == key);
            let existing = match target {
                Some(parent_id) => self.state.children(parent_id).any(|i| &i.key == key),
                None => false,
            };
            if pending || existing {
                return Err(CaseError::AlreadyPlanned { item: key.clone() });
            }
        }
        let count = match target {
            Some(parent_id) => self.siblings(key, parent_id).count(),
            None => self.state.planned.iter().filter(|p| &p.item == key).count(),
        };
        if let Some(max) = item.max_instances().filter(|m| count >= *m as usize) {
            return Err(CaseError::InvalidCommand {
                reason: format!(
                    "'{key}' is planned {count} times already, its max_instances is {max}"
                ),
            });
        }
        if let (Some(parent_id), Some(max)) = (target, item.max_concurrent()) {
            let running = self
                .siblings(key, parent_id)
                .filter(|i| !i.is_terminal())
                .count();
            if running >= max as usize {
                return Err(CaseError::InvalidCommand {
                    reason: format!(
                        "{running} instances of '{key}' are not finished, its max_concurrent is \
                         {max}: finish one first"
                    ),
                });
            }
        }
        Ok(target)
    }

    /// What the principal could plan now (see [`plannable`]).
    fn plannable(&self) -> Vec<PlannableItem> {
        let see =
            super::disclose::Disclosure::new(self.def, self.state.classification, self.principal);
        let mut out = Vec::new();
        self.def.each_plan_item(|item, parent| {
            let key = item.key();
            if !item.discretionary() || !see.item(key.as_str()) {
                return;
            }
            let Ok(target) = self.plan_target(key, item, parent, None) else {
                return;
            };
            let applicable = match item.applicability() {
                // A rule that cannot be evaluated now does not hold.
                Some(c) => self.eval(c, String::new).unwrap_or(false),
                None => true,
            };
            out.push(PlannableItem {
                item: key.clone(),
                name: item.name().to_string(),
                stage: parent.cloned(),
                applicable,
                applicability: item.applicability().map(|c| c.source().to_string()),
                pending: target.is_none(),
                repeatable: item.repeatable(),
            });
        });
        out
    }

    fn link(&mut self, entity: PoleRef, role: EntityRole) -> Result<(), CaseError> {
        self.require("link an entity".into(), &self.def.permissions.link_entity)?;
        self.require_running()?;
        check_text("an entity id", &entity.id, MAX_ID_LEN)?;
        if let EntityRole::Other(name) = &role {
            crate::definition::check_identifier(name).map_err(|reason| {
                CaseError::InvalidCommand {
                    reason: reason.to_string(),
                }
            })?;
        }
        if let Some(kind) = role.required_kind() {
            if kind != entity.kind {
                return Err(CaseError::InvalidCommand {
                    reason: format!(
                        "the role {role:?} needs a {kind:?} entity, not a {:?}",
                        entity.kind
                    ),
                });
            }
        }
        if self
            .state
            .entities
            .iter()
            .any(|l| l.entity == entity && l.role == role)
        {
            return Ok(());
        }
        self.emit(CaseEvent::EntityLinked {
            entity,
            role,
            by: self.principal.subject.clone(),
        })
    }
}
