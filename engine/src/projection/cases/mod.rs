//! The `cases` projection: each case's current state, and the rows derived
//! from it — the case search index, the work queue and the deadline list.
//!
//! One fold per case feeds all four views, so each event is decoded and
//! applied once. For every case a batch touches, the handler derives the full
//! set of rows the case should have (summary, index keys, work items,
//! deadlines) before and after the batch and writes only the difference.
//!
//! Tree layout (one tree per tenant and generation; `+` joins encoded parts,
//! see `keys`):
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `C` | case id | [`CaseRecord`] (state, version, position) |
//! | `S` | case id | [`CaseSummary`], each active stage with its effective marking |
//! | `I` | attribute + value + case id | — (`t` type, `s` status, `o` opened, `u` updated); for `g` (active stage): the stage's effective marking |
//! | `F` | case type + field + value + case id | the field's marking when written (one per list element) |
//! | `T` | word + case id | lowest classification of the fields holding it, then those fields' keys |
//! | `W` | role + due + case id + instance | [`WorkItem`] |
//! | `A` | assignee + due + case id + instance | [`WorkItem`] |
//! | `M` | team + due + case id + instance | [`WorkItem`] |
//! | `L` | due + case id + deadline + instance | [`DeadlineEntry`] |
//! | `K` | case id | — (its rows depend on the working-day calendar) |
//! | `Y` | — | the tenant's [`WorkingCalendar`] as of the checkpoint |
//! | `D` | kind (`r` role, `m` team, `t` case type) + name | — (declared by a deployed definition) |
//!
//! Values are MessagePack with fields in declaration order (no names: a
//! case record is about half the size); reads also accept the named form
//! earlier versions wrote.
//!
//! Working-day deadlines are turned into instants with the tenant's
//! [`WorkingCalendar`] (see [`crate::calendar`]), which the handler follows
//! from the tenant's calendar events: when it changes, every case listed
//! under `K` is re-derived in the same batch.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::builtin::{DefinitionCache, DefinitionResolver};
use super::error::{ChangesError, HandlerError, QueryError};
use super::keys::{self, f64_bytes, prefix_end, Key};
use super::pages::{Rows, RowsError};
use super::query::{
    AlertItem, CaseSummary, DeadlineEntry, DeadlineQuery, FieldCondition, Page, SearchOrder,
    SearchQuery, TimeRange, WorkItem, WorkQueueQuery,
};
use super::{Changes, Generation, Handler, Projection};
use crate::calendar::{self, CalendarEvent, WorkingCalendar};
use crate::case::{
    AlertQueue, CaseEvent, CaseState, CaseStatus, DeadlineDue, Disclosure, EntityLink, InstanceId,
    Note,
};
use crate::definition::{
    ActivityKind, CaseDefinition, DeadlineKey, FieldDef, FieldType, ItemKey, PlanItem,
};
use crate::log::codec::DomainEvent;
use crate::log::{GlobalPosition, RecordedEvent, StreamVersion, TenantId, Timestamp};
use crate::recent::Recent;
use crate::rules::ItemState;
use crate::security::{Classification, Principal};

mod deadlines;
mod rows;
mod search;
mod work_queue;

pub use deadlines::deadlines;
use rows::*;
pub use rows::{load_case, load_case_head, words};
pub use search::search;
pub use work_queue::{case_types, work_queue};

/// The projection's name.
pub const NAME: &str = "cases";
/// The projection's version (bump when its rows change shape or meaning).
/// 4: working-day deadlines use bank holidays computed by rule for every
/// year (before: a list for 2025 to 2028), so due times beyond it change.
/// 5: rows carry effective markings (work items, deadlines, active stages)
/// and field-index values the marking they were written under.
/// 6: notes and entity links are rows of their own (`N`, `E`), so a batch
/// writes only the new ones instead of re-encoding them all with the case.
pub const VERSION: u32 = 6;

/// Longest string value put in the field index (longer values are found by
/// text search only).
pub const MAX_INDEXED_STRING: usize = 256;
/// Cases kept decoded in memory by a handler between batches (the least
/// recently used go first).
const CACHE_CASES: usize = 20_000;

const P_CASE: u8 = b'C';
const P_NOTE: u8 = b'N';
const P_LINK: u8 = b'E';
const P_SUMMARY: u8 = b'S';
const P_INDEX: u8 = b'I';
const P_FIELD: u8 = b'F';
const P_TEXT: u8 = b'T';
const P_ROLE: u8 = b'W';
const P_ASSIGNEE: u8 = b'A';
const P_TEAM: u8 = b'M';
const P_DEADLINE: u8 = b'L';
const P_WORKDAYS: u8 = b'K';
const CALENDAR_KEY: &[u8] = b"Y";
/// Names deployed definitions declare: `D` + kind + name.
const P_DECLARED: u8 = b'D';
const D_ROLE: u8 = b'r';
const D_TEAM: u8 = b'm';
const D_TYPE: u8 = b't';

const A_TYPE: &[u8] = b"t";
const A_STATUS: &[u8] = b"s";
const A_STAGE: &[u8] = b"g";
const A_OPENED: &[u8] = b"o";
const A_UPDATED: &[u8] = b"u";

/// A case as stored: its state and where it is in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseRecord {
    /// The folded state.
    pub state: CaseState,
    /// The version of its last event.
    pub version: StreamVersion,
    /// The global position of its last event.
    pub position: GlobalPosition,
    /// When its last event was recorded.
    pub updated_at: Timestamp,
}

/// What the projection reads of the engine's `DefinitionDeployed` events
/// (named MessagePack: the other fields are skipped).
#[derive(Serialize, Deserialize)]
enum DefinitionDeployed {
    Deployed { key: String, version: u32 },
}

impl DomainEvent for DefinitionDeployed {
    const SCHEMA_VERSION: u16 = 1;
    fn event_type(&self) -> &'static str {
        "DefinitionDeployed"
    }
}

/// The `cases` projection (case view, search, work queue, deadlines).
///
/// Text search covers the case-file fields each definition marks
/// `search = "text"`.
pub struct CasesProjection {
    resolver: Arc<dyn DefinitionResolver>,
}

impl CasesProjection {
    /// The projection, resolving definitions with `resolver`.
    pub fn new(resolver: Arc<dyn DefinitionResolver>) -> Self {
        CasesProjection { resolver }
    }
}

impl Projection for CasesProjection {
    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> u32 {
        VERSION
    }

    fn handler(&self, rows: Rows) -> Box<dyn Handler> {
        let (calendar, fault) = match load_calendar(&rows) {
            Ok(c) => (c, None),
            Err(e) => (WorkingCalendar::default(), Some(e.to_string())),
        };
        Box::new(CasesHandler {
            rows,
            calendar: Arc::new(calendar),
            calendar_changed: false,
            fault,
            defs: DefinitionCache::new(Arc::clone(&self.resolver)),
            infos: Vec::new(),
            cache: Recent::new(CACHE_CASES),
            pending: HashMap::new(),
            written: Vec::new(),
            declared: BTreeSet::new(),
            evicted: Vec::new(),
        })
    }
}

/// What entry derivation needs of a definition, computed once per version.
struct DefInfo {
    def: Arc<CaseDefinition>,
    stages: HashSet<String>,
    /// Human task key -> its name, roles and default team.
    tasks: HashMap<String, TaskInfo>,
    deadline_names: HashMap<String, String>,
    text_fields: Vec<String>,
}

impl DefInfo {
    fn new(def: Arc<CaseDefinition>) -> Self {
        let mut stages = HashSet::new();
        let mut tasks = HashMap::new();
        let mut deadline_names = HashMap::new();
        for d in &def.deadlines {
            if let Some(n) = &d.name {
                deadline_names.insert(d.key.as_str().to_string(), n.clone());
            }
        }
        for entry in def.plan_items() {
            match entry.item {
                PlanItem::Stage(s) => {
                    stages.insert(s.key.as_str().to_string());
                }
                PlanItem::Activity(a) if a.kind == ActivityKind::HumanTask => {
                    let roles = a.roles.iter().map(|r| r.as_str().to_string()).collect();
                    let team = def.team_of(a).map(|t| t.as_str().to_string());
                    tasks.insert(
                        a.key.as_str().to_string(),
                        TaskInfo {
                            name: a.name.clone(),
                            roles,
                            team,
                        },
                    );
                }
                _ => {}
            }
            for d in entry.item.deadlines() {
                if let Some(n) = &d.name {
                    deadline_names.insert(d.key.as_str().to_string(), n.clone());
                }
            }
        }
        let text_fields = def
            .fields
            .iter()
            .filter(|f| f.text_searchable())
            .map(|f| f.key.as_str().to_string())
            .collect();
        DefInfo {
            def,
            stages,
            tasks,
            deadline_names,
            text_fields,
        }
    }
}

/// What the work queue shows of a human task's definition.
struct TaskInfo {
    name: String,
    roles: Vec<String>,
    team: Option<String>,
}

/// A case as the handler keeps it: record and definition. Its rows are
/// derived again from them when needed, rather than kept. The record's
/// state holds no notes or links (they are rows of their own), only their
/// counts here.
struct Held {
    record: CaseRecord,
    info: Option<Arc<DefInfo>>,
    notes: u64,
    links: u64,
}

/// A case as committed, with the calendar its rows were derived with.
type Before = (Arc<Held>, Arc<WorkingCalendar>);

/// A case this batch changes: as committed (none: a new case), its record
/// now, its definition.
type Pending = (Option<Before>, CaseRecord, Option<Arc<DefInfo>>);

struct CasesHandler {
    rows: Rows,
    /// The tenant's working-day calendar (as committed, or as this batch
    /// changed it).
    calendar: Arc<WorkingCalendar>,
    calendar_changed: bool,
    /// The stored calendar could not be read: every event fails with this.
    fault: Option<String>,
    defs: DefinitionCache,
    /// Per definition (case type, version) met: a handful, so a list.
    infos: Vec<((String, u32), Arc<DefInfo>)>,
    /// Committed cases (what the tree holds).
    cache: Recent<String, Arc<Held>>,
    /// Cases this batch changed: (as committed, record now).
    pending: HashMap<String, Pending>,
    /// Written but not yet committed.
    written: Vec<(String, Arc<Held>)>,
    /// Names declared by definitions deployed in this batch (kind, name).
    declared: BTreeSet<(u8, String)>,
    /// Cases the cache let go of, dropped off the runner's thread by the
    /// next batch's deferred work.
    evicted: Vec<HashMap<String, Arc<Held>>>,
}

impl CasesHandler {
    /// The tenant's calendar changes: every committed case whose rows it
    /// shapes joins the batch with its rows as committed (derived with the
    /// old calendar), so that `write` replaces them with rows derived with
    /// the new one.
    async fn calendar_changes(
        &mut self,
        tenant: &TenantId,
        calendar: WorkingCalendar,
    ) -> Result<(), HandlerError> {
        let prefix = [P_WORKDAYS];
        self.rows.settled().await?;
        let mut ids = Vec::new();
        for row in self.rows.scan_prefix(&prefix) {
            let (k, _) = row?;
            let id = String::from_utf8(k[1..].to_vec())
                .map_err(|e| HandlerError::decode("a stored case id", e))?;
            ids.push(id);
        }
        for id in ids {
            if self.pending.contains_key(&id) {
                continue;
            }
            if let Some(held) = self.held(tenant, &id).await? {
                // Its rows as committed: derived with the old calendar.
                let record = held.record.clone();
                let info = held.info.clone();
                let before = (held, Arc::clone(&self.calendar));
                self.pending.insert(id, (Some(before), record, info));
            }
        }
        self.calendar = Arc::new(calendar);
        self.calendar_changed = true;
        Ok(())
    }

    /// A definition was deployed: the roles, teams and case type it
    /// declares become known to work-queue queries.
    async fn deployed(&mut self, event: &RecordedEvent) -> Result<(), HandlerError> {
        let DefinitionDeployed::Deployed { key, version } =
            DefinitionDeployed::from_recorded(event).map_err(|e| {
                HandlerError::decode(format!("definition event {}", event.locator()), e)
            })?;
        let def = self.defs.get(event.stream.tenant(), &key, version).await?;
        self.declared.insert((D_TYPE, key));
        for r in &def.roles {
            self.declared.insert((D_ROLE, r.as_str().to_string()));
        }
        if let Some(t) = &def.team {
            self.declared.insert((D_TEAM, t.as_str().to_string()));
        }
        for entry in def.plan_items() {
            if let PlanItem::Activity(a) = entry.item {
                for r in &a.roles {
                    self.declared.insert((D_ROLE, r.as_str().to_string()));
                }
                if let Some(t) = def.team_of(a) {
                    self.declared.insert((D_TEAM, t.as_str().to_string()));
                }
            }
        }
        Ok(())
    }

    async fn info(
        &mut self,
        tenant: &TenantId,
        state: &CaseState,
    ) -> Result<Option<Arc<DefInfo>>, HandlerError> {
        let Some(r) = &state.definition else {
            return Ok(None);
        };
        let known = self
            .infos
            .iter()
            .find(|((key, version), _)| key == r.key.as_str() && *version == r.version);
        if let Some((_, i)) = known {
            return Ok(Some(Arc::clone(i)));
        }
        let def = self.defs.get(tenant, r.key.as_str(), r.version).await?;
        let info = Arc::new(DefInfo::new(def));
        self.infos
            .push(((r.key.as_str().to_string(), r.version), Arc::clone(&info)));
        Ok(Some(info))
    }

    /// The committed state of a case: from memory, else from the tree.
    async fn held(
        &mut self,
        tenant: &TenantId,
        case_id: &str,
    ) -> Result<Option<Arc<Held>>, HandlerError> {
        if let Some(h) = self.cache.get(case_id) {
            return Ok(Some(Arc::clone(h)));
        }
        // The commits in flight land first (an asynchronous wait).
        self.rows.settled().await?;
        let Some(bytes) = self.rows.get(&Key::new(P_CASE).raw(case_id.as_bytes()).0)? else {
            return Ok(None);
        };
        let stored: StoredCase = rmp_serde::from_slice(&bytes)
            .map_err(|e| HandlerError::decode(format!("stored case {case_id}"), e))?;
        let info = self.info(tenant, &stored.record.state).await?;
        Ok(Some(Arc::new(Held {
            record: stored.record,
            info,
            notes: stored.notes,
            links: stored.links,
        })))
    }
}

#[async_trait]
impl Handler for CasesHandler {
    async fn apply(&mut self, event: &RecordedEvent) -> Result<(), HandlerError> {
        if let Some(e) = &self.fault {
            return Err(HandlerError::Inconsistent(e.clone()));
        }
        let tenant = event.stream.tenant();
        if event.stream.category() == calendar::CATEGORY {
            let what = || format!("calendar event {}", event.locator());
            let decoded =
                CalendarEvent::from_recorded(event).map_err(|e| HandlerError::decode(what(), e))?;
            let new = WorkingCalendar::from_event(&decoded)
                .map_err(|e| HandlerError::decode(what(), e))?;
            return Box::pin(self.calendar_changes(tenant, new)).await;
        }
        if event.stream.category() == crate::streams::DEFINITION
            && &*event.event_type == "DefinitionDeployed"
        {
            return Box::pin(self.deployed(event)).await;
        }
        if event.stream.category() != crate::streams::CASE {
            return Ok(());
        }
        let case_id = event.stream.id();
        let decoded = self.defs.open(event).await?.event;
        // An opening names the definition the case runs from then on.
        let opened = match &decoded {
            CaseEvent::CaseOpened { definition, .. } => {
                let state = CaseState {
                    definition: Some(definition.clone()),
                    ..CaseState::default()
                };
                // Boxed: the future `apply` returns stays small (see below).
                Some(Box::pin(self.info(tenant, &state)).await?)
            }
            _ => None,
        };
        if !self.pending.contains_key(case_id) {
            // A stream's first event: the projection cannot hold the case yet.
            let held = if event.version == StreamVersion::START {
                None
            } else {
                // Boxed, so that `apply`'s own future (allocated for every
                // event) does not embed this rarer one's state: allocations
                // of 1 KiB and more make glibc's malloc consolidate its
                // free lists.
                Box::pin(self.held(tenant, case_id)).await?
            };
            let (record, info, before) = match held {
                Some(h) => (
                    h.record.clone(),
                    h.info.clone(),
                    // A case not in a calendar change keeps rows that do
                    // not depend on the calendar: derived with today's.
                    Some((h, Arc::clone(&self.calendar))),
                ),
                None => (
                    CaseRecord {
                        state: CaseState::default(),
                        version: event.version,
                        position: event.position,
                        updated_at: event.recorded,
                    },
                    None,
                    None,
                ),
            };
            self.pending
                .insert(case_id.to_string(), (before, record, info));
        }
        let Some(p) = self.pending.get_mut(case_id) else {
            return Err(HandlerError::Inconsistent(
                "internal: pending case vanished".into(),
            ));
        };
        let Some(info) = opened.unwrap_or_else(|| p.2.clone()) else {
            return Err(HandlerError::Inconsistent(format!(
                "{} at version {} of case {case_id} comes before CaseOpened",
                decoded.type_name(),
                event.version.0
            )));
        };
        p.1.state
            .apply(&info.def, &decoded)
            .map_err(|e| HandlerError::Inconsistent(format!("case {case_id}: {e}")))?;
        p.1.version = event.version;
        p.1.position = event.position;
        p.1.updated_at = event.recorded;
        p.2 = Some(info);
        Ok(())
    }

    fn write(&mut self, changes: &mut Changes) -> Result<(), HandlerError> {
        if self.calendar_changed {
            let bytes = rmp_serde::to_vec_named(&self.calendar).map_err(HandlerError::other)?;
            changes.insert(CALENDAR_KEY, bytes)?;
        }
        // Rows are derived and encoded off the runner's thread, from the
        // records as this batch leaves them (shared with the cache).
        let calendar = Arc::clone(&self.calendar);
        for (kind, name) in &self.declared {
            changes.insert(&Key::new(P_DECLARED).raw(&[*kind]).str(name).0, [])?;
        }
        let evicted = std::mem::take(&mut self.evicted);
        let mut cases = Vec::with_capacity(self.pending.len());
        for (case_id, (before, mut record, info)) in self.pending.drain() {
            // The notes and links this batch added (the held state has none).
            let added = Added {
                notes: std::mem::take(&mut record.state.notes),
                links: std::mem::take(&mut record.state.entities),
            };
            let (notes, links) = before
                .as_ref()
                .map_or((0, 0), |(held, _)| (held.notes, held.links));
            let after = Arc::new(Held {
                record,
                info,
                notes: notes + added.notes.len() as u64,
                links: links + added.links.len() as u64,
            });
            self.written.push((case_id.clone(), Arc::clone(&after)));
            cases.push((case_id, before, after, added));
        }
        changes.defer(move |changes| {
            drop(evicted);
            for (case_id, before, after, added) in cases {
                write_case(changes, &case_id, before, &after, &added, &calendar)?;
            }
            Ok(())
        });
        Ok(())
    }

    fn queued(&mut self) {
        self.declared.clear();
        self.calendar_changed = false;
        for (id, held) in self.written.drain(..) {
            self.evicted.extend(self.cache.insert_evicting(id, held));
        }
    }

    fn discarded(&mut self) {
        self.declared.clear();
        self.pending.clear();
        self.written.clear();
        if self.calendar_changed {
            self.calendar_changed = false;
            match load_calendar(&self.rows) {
                Ok(c) => self.calendar = Arc::new(c),
                Err(e) => self.fault = Some(e.to_string()),
            }
        }
        // The tree is the truth; cases cached from a failed batch are not.
        self.cache = Recent::new(CACHE_CASES);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_written_positionally_and_named_ones_still_read() {
        let mut state = CaseState {
            status: CaseStatus::Active,
            opened_at: Some(Timestamp(7)),
            ..CaseState::default()
        };
        state.case_file.insert(
            crate::definition::FieldKey::new("ward".to_string()),
            serde_json::json!("north"),
        );
        let record = CaseRecord {
            state,
            version: StreamVersion(3),
            position: GlobalPosition(42),
            updated_at: Timestamp(9),
        };
        let positional = rmp_serde::to_vec(&record).unwrap();
        let named = rmp_serde::to_vec_named(&record).unwrap();
        assert!(positional.len() < named.len());
        for bytes in [positional, named] {
            let back: CaseRecord = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(back, record);
        }
    }

    #[test]
    fn case_rows_of_this_version_and_of_version_5_both_read() {
        let mut state = CaseState {
            status: CaseStatus::Active,
            ..CaseState::default()
        };
        state.notes.push_back(crate::case::Note {
            text: "called back".into(),
            by: "pc-1".into(),
            at: Timestamp(5),
        });
        let record = CaseRecord {
            state,
            version: StreamVersion(3),
            position: GlobalPosition(42),
            updated_at: Timestamp(9),
        };
        // Version 5 wrote the record itself, notes inside (positional or named).
        for old in [
            rmp_serde::to_vec(&record).unwrap(),
            rmp_serde::to_vec_named(&record).unwrap(),
        ] {
            let (back, inline) = rows::decode_head(&old).unwrap();
            assert!(inline);
            assert_eq!(back, record);
        }
        // Version 6 writes it without notes, with their count.
        let mut head = record.clone();
        head.state.notes.clear();
        let new = rmp_serde::to_vec(&StoredCaseRef {
            record: &head,
            notes: 1,
            links: 0,
        })
        .unwrap();
        let (back, inline) = rows::decode_head(&new).unwrap();
        assert!(!inline);
        assert_eq!(back, head);
        assert!(rows::decode_head(b"\x93\x01").is_err());
    }
}
