//! The `timeline` projection: each case's history in human terms, with actor,
//! time, provenance and reason for every entry.
//!
//! Tree layout: `K` + case id -> [`TimelineCase`] (the case's definition and
//! current classification); `E` + case id + position -> a stored entry. The
//! text never contains case-file values; changed fields are listed by name
//! with their classification so a reader only sees the names they may see.
//!
//! An entry is stored with the marking of what it tells: the case's, raised
//! to the effective marking of the plan item or deadline it is about (see
//! `CaseDefinition::markings`) — an invocation's entries take its task's —
//! and, for a case-file update, to the lowest marking among the fields it
//! changed (so an update of hidden fields only is withheld, and the names of
//! hidden fields are left out of the others).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::builtin::{DefinitionCache, DefinitionResolver};
use super::error::HandlerError;
use super::error::QueryError;
use super::keys::{prefix_end, Key};
use super::query::{Page, PageRequest, TimelineEntry};
use super::{Changes, Handler, Projection, Rows};
use crate::case::disclose::About;
use crate::case::{CaseEvent, DefinitionRef, Disclosure, InvocationId};
use crate::definition::CaseDefinition;
use crate::log::{GlobalPosition, RecordedEvent, StreamVersion, Timestamp};
use crate::security::{Classification, Principal};

/// The projection's name.
pub const NAME: &str = "timeline";
/// The projection's version.
pub const VERSION: u32 = 2;

const P_CASE: u8 = b'K';
const P_ENTRY: u8 = b'E';

/// What the timeline keeps about a case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineCase {
    /// Its definition.
    pub definition: DefinitionRef,
    /// Its classification now.
    pub classification: Classification,
    /// The task of every invocation requested (by invocation number), so
    /// an invocation's later entries take its task's marking.
    #[serde(default)]
    pub invocations: std::collections::BTreeMap<u32, crate::definition::ItemKey>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stored {
    position: GlobalPosition,
    version: StreamVersion,
    at: Timestamp,
    actor: String,
    event_type: String,
    summary: String,
    fields: Vec<(String, Classification)>,
    source: String,
    source_reference: Option<String>,
    reason: Option<String>,
    correlation_id: String,
    classification: Classification,
}

/// The `timeline` projection.
pub struct TimelineProjection {
    resolver: Arc<dyn DefinitionResolver>,
}

impl TimelineProjection {
    /// The projection, naming items with definitions from `resolver`.
    pub fn new(resolver: Arc<dyn DefinitionResolver>) -> Self {
        TimelineProjection { resolver }
    }
}

impl Projection for TimelineProjection {
    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> u32 {
        VERSION
    }

    fn handler(&self, rows: Rows) -> Box<dyn Handler> {
        Box::new(TimelineHandler {
            rows,
            defs: DefinitionCache::new(Arc::clone(&self.resolver)),
            cases: HashMap::new(),
            pending_cases: HashMap::new(),
            entries: Vec::new(),
        })
    }
}

struct TimelineHandler {
    rows: Rows,
    defs: DefinitionCache,
    cases: HashMap<String, TimelineCase>,
    pending_cases: HashMap<String, TimelineCase>,
    entries: Vec<(Vec<u8>, Vec<u8>)>,
}

fn item_name(def: &CaseDefinition, key: &str) -> String {
    def.item(key)
        .map_or_else(|| key.to_string(), |e| e.item.name().to_string())
}

fn describe(def: &CaseDefinition, event: &CaseEvent) -> String {
    let name = |k: &crate::definition::ItemKey| format!("'{}'", item_name(def, k.as_str()));
    match event {
        CaseEvent::CaseOpened {
            definition,
            classification,
            ..
        } => format!(
            "{} opened ({} version {}, {classification})",
            def.name, definition.key, definition.version
        ),
        CaseEvent::CaseFileUpdated { .. } => "Case file updated".into(),
        CaseEvent::PlanItemCreated {
            item,
            discretionary,
            ..
        } => format!(
            "{} {} added to the plan",
            if *discretionary {
                "Discretionary item"
            } else {
                "Item"
            },
            name(item)
        ),
        CaseEvent::PlanItemEnabled { item, .. } => format!("{} is ready to start", name(item)),
        CaseEvent::PlanItemActivated { item, .. } => format!("{} started", name(item)),
        CaseEvent::PlanItemCompleted { item, .. } => format!("{} completed", name(item)),
        CaseEvent::PlanItemTerminated { item, .. } => format!("{} ended", name(item)),
        CaseEvent::PlanItemFailed { item, reason, .. } => {
            format!("{} failed: {reason}", name(item))
        }
        CaseEvent::PlanItemSuspended { item, .. } => format!("{} suspended", name(item)),
        CaseEvent::PlanItemResumed { item, .. } => format!("{} resumed", name(item)),
        CaseEvent::PlanItemDisabled { item, .. } => format!("{} will not be done", name(item)),
        CaseEvent::MilestoneReached { item, .. } => format!("Milestone {} reached", name(item)),
        CaseEvent::ActivityClaimed { item, by, .. } => format!("{} claimed by {by}", name(item)),
        CaseEvent::ActivityAssigned {
            item, assignee, by, ..
        } => format!("{} assigned to {assignee} by {by}", name(item)),
        CaseEvent::ActivityTeamAssigned { item, team, by, .. } => {
            format!("{} routed to team {team} by {by}", name(item))
        }
        CaseEvent::DiscretionaryItemPlanned { item, by, .. } => {
            format!("{} planned by {by}", name(item))
        }
        CaseEvent::EntityLinked { entity, role, by } => {
            format!(
                "{:?} {} linked as {:?} by {by}",
                entity.kind, entity.id, role
            )
        }
        CaseEvent::NoteAdded { text, by, .. } => format!("Note by {by}: {text}"),
        CaseEvent::CaseSuspended {} => "Case suspended".into(),
        CaseEvent::CaseResumed {} => "Case resumed".into(),
        CaseEvent::CaseCompleted {} => "Case completed".into(),
        CaseEvent::CaseTerminated {} => "Case ended by an exit criterion".into(),
        CaseEvent::CaseClosed { reason } => match reason {
            Some(r) => format!("Case closed: {r}"),
            None => "Case closed".into(),
        },
        CaseEvent::CaseReopened { reason } => match reason {
            Some(r) => format!("Case reopened: {r}"),
            None => "Case reopened".into(),
        },
        CaseEvent::DeadlineSet { deadline, .. } => format!("Deadline {deadline} started"),
        CaseEvent::DeadlineMet { deadline, .. } => format!("Deadline {deadline} met"),
        CaseEvent::DeadlineCancelled { deadline, .. } => {
            format!("Deadline {deadline} no longer applies")
        }
        CaseEvent::ServiceInvocationRequested {
            invocation,
            item,
            request,
            ..
        } => format!("{item} asked {} ({invocation})", request.service),
        CaseEvent::ServiceAttemptFailed {
            invocation,
            attempt,
            error,
            retry_at,
        } => format!("Attempt {attempt} of {invocation} failed: {error}; retry at {retry_at}"),
        CaseEvent::ServiceInvocationCompleted {
            invocation,
            attempt,
            ..
        } => format!("{invocation} answered (attempt {attempt})"),
        CaseEvent::ServiceInvocationFailed {
            invocation, error, ..
        } => format!("Incident: {invocation} failed: {error}"),
        CaseEvent::ServiceInvocationCancelled { invocation } => {
            format!("{invocation} no longer wanted")
        }
        CaseEvent::IncidentRetried { invocation, by } => {
            format!("Incident on {invocation} retried by {by}")
        }
        CaseEvent::DeadlineMissed { deadline, .. } => format!("Deadline {deadline} missed"),
        CaseEvent::EscalationNotified { deadline, roles } => format!(
            "Deadline {deadline} escalated to {}",
            roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        CaseEvent::DisclosureRecorded {
            invocation,
            disclosure,
            marking,
        } => {
            format!(
                "Disclosed by {} to {}: {} ({marking}); why: {}",
                match disclosure.channel.as_str() {
                    "" => "a service".to_string(),
                    c => c.to_string(),
                },
                disclosure.recipient,
                disclosure.what,
                disclosure.why
            ) + &format!(" [{invocation}]")
        }
        CaseEvent::PriorityRaised { priority, deadline } => {
            format!("Priority raised to {priority:?} (deadline {deadline})")
        }
        CaseEvent::WaitStarted { item, due, .. } => match due {
            crate::case::DeadlineDue::At { due } => format!("{} waits until {due}", name(item)),
            crate::case::DeadlineDue::WorkingDays { days, .. } => {
                format!("{} waits {days} working day(s)", name(item))
            }
        },
        CaseEvent::AlertRaised { alert, record, .. } => format!(
            "Alert {alert} ({:?}) raised to {}: {}",
            record.priority, record.queue, record.message
        ),
        CaseEvent::AlertAcknowledged { alert, by, .. } => {
            format!("Alert {alert} acknowledged by {by}")
        }
        CaseEvent::WaitElapsed { item, .. } => format!("{} has waited its time", name(item)),
        CaseEvent::WaitCancelled { item, .. } => format!("{} no longer waits", name(item)),
    }
}

fn changed_fields(event: &CaseEvent) -> Vec<&crate::definition::FieldKey> {
    match event {
        CaseEvent::CaseOpened { case_file, .. } => case_file.keys().collect(),
        CaseEvent::CaseFileUpdated { changes } => changes.keys().collect(),
        CaseEvent::PlanItemCompleted { outputs, .. } => outputs.keys().collect(),
        _ => vec![],
    }
}

/// The marking of what `event` tells, above the case's (see the module docs).
fn marking_of(def: &CaseDefinition, case: &mut TimelineCase, event: &CaseEvent) -> Classification {
    let see = Disclosure::for_clearance(def, case.classification, Classification::TopSecret);
    let of_invocation = |case: &TimelineCase, i: &InvocationId| {
        case.invocations
            .get(&i.0)
            .map_or(case.classification, |k| see.item_marking(k.as_str()))
    };
    match event {
        CaseEvent::CaseFileUpdated { changes } => changes
            .keys()
            .map(|k| see.field_marking(k.as_str()))
            .min()
            .unwrap_or(case.classification),
        CaseEvent::ServiceInvocationRequested {
            invocation, item, ..
        } => {
            case.invocations.insert(invocation.0, item.clone());
            see.item_marking(item.as_str())
        }
        CaseEvent::DisclosureRecorded { marking, .. } => (*marking).max(case.classification),
        CaseEvent::ServiceInvocationCompleted { invocation, .. }
        | CaseEvent::ServiceInvocationCancelled { invocation } => {
            let m = of_invocation(case, invocation);
            case.invocations.remove(&invocation.0);
            m
        }
        other => match other.about() {
            About::Item(item) => see.item_marking(item.as_str()),
            About::Deadline(deadline) => see.deadline_marking(deadline.as_str()),
            About::Invocation(i) => of_invocation(case, &i),
            About::Fields | About::Case => case.classification,
        },
    }
}

impl TimelineHandler {
    fn case(&mut self, case_id: &str) -> Result<Option<TimelineCase>, HandlerError> {
        if let Some(c) = self.pending_cases.get(case_id).or(self.cases.get(case_id)) {
            return Ok(Some(c.clone()));
        }
        match self.rows.get(&Key::new(P_CASE).raw(case_id.as_bytes()).0)? {
            None => Ok(None),
            Some(b) => rmp_serde::from_slice(&b)
                .map(Some)
                .map_err(|e| HandlerError::decode(format!("stored timeline case {case_id}"), e)),
        }
    }
}

#[async_trait]
impl Handler for TimelineHandler {
    async fn apply(&mut self, event: &RecordedEvent) -> Result<(), HandlerError> {
        if event.stream.category() != crate::streams::CASE {
            return Ok(());
        }
        let case_id = event.stream.id();
        let decoded = self.defs.open(event).await?.event;
        let mut case = match &decoded {
            CaseEvent::CaseOpened {
                definition,
                classification,
                ..
            } => TimelineCase {
                definition: definition.clone(),
                classification: *classification,
                invocations: Default::default(),
            },
            other => {
                if !self.pending_cases.contains_key(case_id) && !self.cases.contains_key(case_id) {
                    // A read of the tree: the commits in flight land first.
                    self.rows.settled().await?;
                }
                self.case(case_id)?
            }
            .ok_or_else(|| {
                HandlerError::Inconsistent(format!(
                    "{} at version {} of case {case_id} comes before CaseOpened",
                    other.type_name(),
                    event.version.0
                ))
            })?,
        };
        case.classification = event.metadata.classification.max(case.classification);
        let def = self
            .defs
            .get(
                event.stream.tenant(),
                case.definition.key.as_str(),
                case.definition.version,
            )
            .await?;
        let fields = changed_fields(&decoded)
            .into_iter()
            .map(|k| {
                let c = def
                    .field(k.as_str())
                    .and_then(|f| f.classification)
                    .unwrap_or_default();
                (k.as_str().to_string(), c)
            })
            .collect();
        let m = &event.metadata;
        let about = marking_of(&def, &mut case, &decoded);
        let stored = Stored {
            position: event.position,
            version: event.version,
            at: event.recorded,
            actor: m.actor.0.clone(),
            event_type: event.event_type.to_string(),
            summary: describe(&def, &decoded),
            fields,
            source: m.source.system.clone(),
            source_reference: m.source.reference.clone(),
            reason: m.reason.clone(),
            correlation_id: m.correlation_id.0.to_string(),
            classification: m.classification.max(about),
        };
        let bytes = rmp_serde::to_vec_named(&stored).map_err(HandlerError::other)?;
        let key = Key::new(P_ENTRY)
            .str(case_id)
            .raw(&event.position.0.to_be_bytes())
            .0;
        self.entries.push((key, bytes));
        self.pending_cases.insert(case_id.to_string(), case);
        Ok(())
    }

    fn write(&mut self, changes: &mut Changes) -> Result<(), HandlerError> {
        for (k, v) in self.entries.drain(..) {
            changes.insert(&k, v)?;
        }
        for (id, case) in &self.pending_cases {
            let bytes = rmp_serde::to_vec_named(case).map_err(HandlerError::other)?;
            changes.insert(&Key::new(P_CASE).raw(id.as_bytes()).0, bytes)?;
        }
        Ok(())
    }

    fn queued(&mut self) {
        if self.cases.len() > 50_000 {
            self.cases.clear();
        }
        self.cases.extend(self.pending_cases.drain());
    }

    fn discarded(&mut self) {
        self.entries.clear();
        self.pending_cases.clear();
    }
}

/// A case's timeline as `principal` may read it, oldest first, each
/// entry's position as the tenant's token (`positions`). The names of
/// `withheld` fields (a restricted subject's, see
/// [`crate::records::restriction`]) are left out like those above the
/// reader's clearance, and an update of withheld fields only is left out
/// altogether.
///
/// Errors: [`QueryError::UnknownCase`] for a case the projection does not
/// have or the reader may not see; [`QueryError::PageSize`],
/// [`QueryError::Offset`]; [`QueryError::Damaged`].
pub fn read(
    rows: &Rows,
    case_id: &str,
    principal: &Principal,
    page: &PageRequest,
    positions: &crate::security::TenantPositions,
    withheld: &std::collections::BTreeSet<String>,
) -> Result<Page<TimelineEntry>, QueryError> {
    page.check()?;
    let unknown = || QueryError::UnknownCase {
        tenant: principal.tenant.clone(),
        case_id: case_id.to_string(),
    };
    let case: TimelineCase = match rows.get(&Key::new(P_CASE).raw(case_id.as_bytes()).0)? {
        Some(b) => rmp_serde::from_slice(&b).map_err(|e| QueryError::Damaged {
            what: format!("timeline case {case_id}: {e}"),
        })?,
        None => return Err(unknown()),
    };
    if !principal.may_see(case.classification) {
        return Err(unknown());
    }
    let start = Key::new(P_ENTRY).str(case_id).0;
    let end = prefix_end(&start);
    let mut items = Vec::new();
    let mut seen = 0usize;
    let mut more = false;
    for kv in rows.range(start..end) {
        let (_, v) = kv?;
        let s: Stored = rmp_serde::from_slice(&v).map_err(|e| QueryError::Damaged {
            what: format!("timeline entry: {e}"),
        })?;
        if !principal.may_see(s.classification) {
            continue;
        }
        let fields: Vec<String> = s
            .fields
            .iter()
            .filter(|(_, c)| principal.may_see((*c).max(s.classification)))
            .map(|(f, _)| f.clone())
            .collect();
        let shown = fields.len();
        let fields: Vec<String> = fields
            .into_iter()
            .filter(|f| !withheld.contains(f))
            .collect();
        if shown > 0 && fields.is_empty() && s.event_type == "CaseFileUpdated" {
            // It tells only that a restricted subject's data changed.
            continue;
        }
        seen += 1;
        if seen <= page.offset {
            continue;
        }
        if items.len() == page.limit {
            more = true;
            break;
        }
        items.push(TimelineEntry {
            position: positions.encode(s.position)?,
            version: s.version,
            at: s.at,
            actor: s.actor,
            event_type: s.event_type,
            summary: s.summary,
            fields,
            source: s.source,
            source_reference: s.source_reference,
            reason: s.reason,
            correlation_id: s.correlation_id,
            classification: s.classification,
        });
    }
    let next = page.offset + items.len();
    Ok(Page {
        items,
        next_offset: more.then_some(next),
        total: None,
    })
}
