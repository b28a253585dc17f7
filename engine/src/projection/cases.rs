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
//! | `S` | case id | [`CaseSummary`] |
//! | `I` | attribute + value + case id | — (`t` type, `s` status, `g` active stage, `o` opened, `u` updated) |
//! | `F` | case type + field + value + case id | — (one per list element) |
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
    CaseSummary, DeadlineEntry, DeadlineQuery, FieldCondition, Page, SearchOrder, SearchQuery,
    TimeRange, WorkItem, WorkQueueQuery,
};
use super::{Changes, Handler, Projection};
use crate::calendar::{self, CalendarEvent, WorkingCalendar};
use crate::case::{CaseEvent, CaseState, CaseStatus, DeadlineDue, InstanceId};
use crate::definition::{
    ActivityKind, CaseDefinition, DeadlineKey, FieldDef, FieldType, ItemKey, PlanItem,
};
use crate::engine::recent::Recent;
use crate::log::codec::DomainEvent;
use crate::log::{GlobalPosition, RecordedEvent, StreamVersion, TenantId, Timestamp};
use crate::rules::ItemState;
use crate::security::{Classification, Principal};

/// The projection's name.
pub const NAME: &str = "cases";
/// The projection's version (bump when its rows change shape or meaning).
pub const VERSION: u32 = 3;

/// Longest string value put in the field index (longer values are found by
/// text search only).
pub const MAX_INDEXED_STRING: usize = 256;
/// Most distinct words indexed per case.
pub const MAX_WORDS_PER_CASE: usize = 2_000;
/// Cases kept decoded in memory by a handler between batches (the least
/// recently used go first).
const CACHE_CASES: usize = 20_000;

const P_CASE: u8 = b'C';
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
/// derived again from them when needed, rather than kept.
struct Held {
    record: CaseRecord,
    info: Option<Arc<DefInfo>>,
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
                HandlerError::decode(format!("definition event at {}", event.position), e)
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
        let record: CaseRecord = rmp_serde::from_slice(&bytes)
            .map_err(|e| HandlerError::decode(format!("stored case {case_id}"), e))?;
        let info = self.info(tenant, &record.state).await?;
        Ok(Some(Arc::new(Held { record, info })))
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
            let what = || format!("calendar event at {}", event.position);
            let decoded =
                CalendarEvent::from_recorded(event).map_err(|e| HandlerError::decode(what(), e))?;
            let new = WorkingCalendar::from_event(&decoded)
                .map_err(|e| HandlerError::decode(what(), e))?;
            return Box::pin(self.calendar_changes(tenant, new)).await;
        }
        if event.stream.category() == "definition" && &*event.event_type == "DefinitionDeployed" {
            return Box::pin(self.deployed(event)).await;
        }
        if event.stream.category() != "case" {
            return Ok(());
        }
        let case_id = event.stream.id();
        let decoded = CaseEvent::from_recorded(event)
            .map_err(|e| HandlerError::decode(format!("case event at {}", event.position), e))?;
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
        for (case_id, (before, record, info)) in self.pending.drain() {
            let after = Arc::new(Held { record, info });
            self.written.push((case_id.clone(), Arc::clone(&after)));
            cases.push((case_id, before, after));
        }
        changes.defer(move |changes| {
            drop(evicted);
            for (case_id, before, after) in cases {
                write_case(changes, &case_id, before, &after, &calendar)?;
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

// Borrowing twins of the stored value types: the same fields in the same
// order, so they encode (positionally) to the very bytes the owned types
// decode from, without copying every string of a case into them first.

/// [`CaseSummary`], borrowed.
#[derive(Serialize)]
struct SummaryOut<'a> {
    case_id: &'a str,
    case_type: &'a str,
    definition_version: u32,
    status: CaseStatus,
    classification: Classification,
    opened_at: Timestamp,
    updated_at: Timestamp,
    active_stages: &'a [&'a str],
    version: StreamVersion,
}

/// [`WorkItem`], borrowed.
#[derive(Serialize)]
struct WorkItemOut<'a> {
    case_id: &'a str,
    case_type: &'a str,
    instance: InstanceId,
    item: &'a ItemKey,
    name: &'a str,
    state: ItemState,
    roles: &'a [String],
    team: Option<&'a str>,
    assignee: Option<&'a str>,
    due: Option<Timestamp>,
    classification: Classification,
}

/// [`DeadlineEntry`], borrowed.
#[derive(Serialize)]
struct DeadlineOut<'a> {
    case_id: &'a str,
    case_type: &'a str,
    deadline: &'a DeadlineKey,
    name: Option<&'a str>,
    item: Option<&'a ItemKey>,
    instance: Option<InstanceId>,
    due: DeadlineDue,
    due_at: Timestamp,
    overdue: bool,
    classification: Classification,
}

/// Builds keys in one reused buffer (a case has tens of rows).
#[derive(Default)]
struct Keys(Vec<u8>);

impl Keys {
    /// The key `prefix` + what `build` adds.
    fn make(&mut self, prefix: u8, build: impl FnOnce(Key) -> Key) -> &[u8] {
        let mut buf = std::mem::take(&mut self.0);
        buf.clear();
        buf.push(prefix);
        self.0 = build(Key(buf)).0;
        &self.0
    }
}

/// Encodes `v` (positionally) into `buf`, replacing what it held; false if
/// it does not encode.
fn encode(buf: &mut Vec<u8>, v: &impl Serialize) -> bool {
    buf.clear();
    rmp_serde::encode::write(buf, v).is_ok()
}

/// Writes every row of a case (see [`rows`]) into `changes`.
fn rows_into(
    changes: &mut Changes,
    case_id: &str,
    record: &CaseRecord,
    info: Option<&DefInfo>,
    calendar: &WorkingCalendar,
) -> Result<(), ChangesError> {
    let mut failed = None;
    rows(case_id, record, info, calendar, &mut |k, v| {
        if let Err(e) = changes.insert(k, v) {
            failed.get_or_insert(e);
        }
    });
    failed.map_or(Ok(()), Err)
}

/// Writes the difference between a case's rows as committed and as `after`
/// leaves them, and its record.
fn write_case(
    changes: &mut Changes,
    case_id: &str,
    before: Option<Before>,
    after: &Held,
    calendar: &WorkingCalendar,
) -> Result<(), HandlerError> {
    let (record, info) = (&after.record, after.info.as_deref());
    match before {
        // A new case: every row is new.
        None => rows_into(changes, case_id, record, info, calendar)?,
        Some((held, then)) => {
            let derive = |record: &CaseRecord, info: Option<&DefInfo>, cal: &WorkingCalendar| {
                let mut set = Changes::default();
                rows_into(&mut set, case_id, record, info, cal).map(|()| set.into_sorted())
            };
            let old_rows = derive(&held.record, held.info.as_deref(), &then)?;
            let new_rows = derive(record, info, calendar)?;
            for (k, _) in old_rows.iter() {
                if new_rows.get(k).is_none() {
                    changes.remove(k)?;
                }
            }
            for (k, v) in new_rows.iter() {
                if let Some(v) = v.filter(|v| old_rows.get(k) != Some(Some(v))) {
                    changes.insert(k, v)?;
                }
            }
        }
    }
    let bytes = rmp_serde::to_vec(record).map_err(HandlerError::other)?;
    Ok(changes.insert(&Key::new(P_CASE).raw(case_id.as_bytes()).0, bytes)?)
}

fn class_byte(c: Classification) -> u8 {
    Classification::ALL
        .iter()
        .position(|x| *x == c)
        .unwrap_or(Classification::ALL.len() - 1) as u8
}

/// Encodes a field value for the index, or `None` if it is not indexed.
fn encode_value(ty: FieldType, v: &serde_json::Value) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match ty {
        FieldType::Boolean => {
            out.push(keys::TAG_BOOL);
            out.push(u8::from(v.as_bool()?));
        }
        FieldType::Integer | FieldType::Decimal => {
            let x = v.as_f64()?;
            if x.is_nan() {
                return None;
            }
            out.push(keys::TAG_NUMBER);
            out.extend_from_slice(&f64_bytes(x));
        }
        FieldType::DateTime => {
            let s = v.as_str()?;
            let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .ok()?;
            out.push(keys::TAG_INSTANT);
            let micros = (t.unix_timestamp_nanos() / 1000) as i64;
            out.extend_from_slice(&Key::default().i64(micros).0);
        }
        FieldType::Text
        | FieldType::Enumeration
        | FieldType::Date
        | FieldType::Person
        | FieldType::Object
        | FieldType::Location => {
            let s = v.as_str()?;
            if s.len() > MAX_INDEXED_STRING {
                return None;
            }
            out.push(keys::TAG_STRING);
            keys::push_str(&mut out, s);
        }
        FieldType::GeoPoint | FieldType::List => return None,
    }
    Some(out)
}

/// Lower-case words of 2 to 40 letters or digits.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| (2..=40).contains(&w.chars().count()))
        .map(str::to_lowercase)
}

fn due_at(due: &DeadlineDue, calendar: &WorkingCalendar) -> Timestamp {
    match *due {
        DeadlineDue::At { due } => due,
        DeadlineDue::WorkingDays { days, from } => calendar.add_working_days(from, days),
    }
}

fn field_class(def: &FieldDef, case: Classification) -> Classification {
    def.classification.unwrap_or_default().max(case)
}

/// The tenant's calendar as a tree stores it (none stored: the default).
fn load_calendar(rows: &Rows) -> Result<WorkingCalendar, HandlerError> {
    match rows.get(CALENDAR_KEY)? {
        None => Ok(WorkingCalendar::default()),
        Some(bytes) => rmp_serde::from_slice(&bytes)
            .map_err(|e| HandlerError::decode("the stored working-day calendar", e)),
    }
}

/// Every row a case should have, derived from its record.
fn rows(
    case_id: &str,
    record: &CaseRecord,
    info: Option<&DefInfo>,
    calendar: &WorkingCalendar,
    out: &mut dyn FnMut(&[u8], &[u8]),
) {
    let state = &record.state;
    let (Some(info), Some(dref), Some(opened)) = (info, &state.definition, state.opened_at) else {
        return;
    };
    let def = &info.def;
    let case_type = dref.key.as_str();
    let id = case_id.as_bytes();
    let active_stages: BTreeSet<&str> = state
        .items
        .iter()
        .filter(|i| i.state == ItemState::Active && info.stages.contains(i.key.as_str()))
        .map(|i| i.key.as_str())
        .collect();
    let stage_list: Vec<&str> = active_stages.iter().copied().collect();
    let summary = SummaryOut {
        case_id,
        case_type,
        definition_version: dref.version,
        status: state.status,
        classification: state.classification,
        opened_at: opened,
        updated_at: record.updated_at,
        active_stages: &stage_list,
        version: record.version,
    };
    // Keys and values are built in two buffers reused for every row.
    let mut keys = Keys::default();
    let mut value = Vec::with_capacity(256);
    if encode(&mut value, &summary) {
        out(keys.make(P_SUMMARY, |k| k.raw(id)), &value);
    }
    out(
        keys.make(P_INDEX, |k| k.raw(A_TYPE).str(case_type).raw(id)),
        &[],
    );
    let status = state.status.as_str();
    out(
        keys.make(P_INDEX, |k| k.raw(A_STATUS).str(status).raw(id)),
        &[],
    );
    for s in &active_stages {
        out(keys.make(P_INDEX, |k| k.raw(A_STAGE).str(s).raw(id)), &[]);
    }
    out(
        keys.make(P_INDEX, |k| k.raw(A_OPENED).i64(opened.0).raw(id)),
        &[],
    );
    let updated = record.updated_at.0;
    out(
        keys.make(P_INDEX, |k| k.raw(A_UPDATED).i64(updated).raw(id)),
        &[],
    );

    // Case-file fields and words (with the fields holding each word).
    // Per word: the lowest classification of the fields holding it, and
    // those fields (a word is mostly in one).
    let mut words_seen: BTreeMap<String, (Classification, Vec<&str>)> = BTreeMap::new();
    for (key, value) in &state.case_file {
        let Some(fdef) = def.field(key.as_str()) else {
            continue;
        };
        let (elements, ty) = match (fdef.ty, value) {
            (FieldType::List, serde_json::Value::Array(items)) => {
                (items.as_slice(), fdef.element.unwrap_or(FieldType::Text))
            }
            (ty, v) => (std::slice::from_ref(v), ty),
        };
        for v in elements {
            if let Some(enc) = encode_value(ty, v) {
                let field = key.as_str();
                let k = keys.make(P_FIELD, |k| k.str(case_type).str(field).raw(&enc).raw(id));
                out(k, &[]);
            }
        }
        if info.text_fields.iter().any(|f| f == key.as_str()) {
            let class = field_class(fdef, state.classification);
            let text = match value {
                serde_json::Value::String(s) => std::borrow::Cow::Borrowed(s.as_str()),
                other => std::borrow::Cow::Owned(other.to_string()),
            };
            for w in words(&text) {
                if words_seen.len() >= MAX_WORDS_PER_CASE && !words_seen.contains_key(&w) {
                    break;
                }
                let e = words_seen.entry(w).or_insert((class, Vec::new()));
                e.0 = e.0.min(class);
                if !e.1.contains(&key.as_str()) {
                    e.1.push(key.as_str());
                }
            }
        }
    }
    for (w, (class, mut in_fields)) in words_seen {
        in_fields.sort_unstable();
        value.clear();
        value.push(class_byte(class));
        for f in in_fields {
            keys::push_str(&mut value, f);
        }
        out(keys.make(P_TEXT, |k| k.str(&w).raw(id)), &value);
    }

    // Deadlines (while the case runs).
    if !state.status.is_ended() {
        if state
            .deadlines
            .iter()
            .any(|d| matches!(d.due, DeadlineDue::WorkingDays { .. }))
        {
            out(keys.make(P_WORKDAYS, |k| k.raw(id)), &[]);
        }
        for d in &state.deadlines {
            let at = due_at(&d.due, calendar);
            let entry = DeadlineOut {
                case_id,
                case_type,
                deadline: &d.deadline,
                name: info
                    .deadline_names
                    .get(d.deadline.as_str())
                    .map(String::as_str),
                item: d.item.as_ref(),
                instance: d.instance,
                due: d.due,
                due_at: at,
                overdue: false,
                classification: state.classification,
            };
            if encode(&mut value, &entry) {
                let key = keys.make(P_DEADLINE, |k| {
                    k.i64(at.0)
                        .str(case_id)
                        .str(d.deadline.as_str())
                        .u32(d.instance.map_or(0, |i| i.0))
                });
                out(key, &value);
            }
        }
    }

    // Open human tasks (while the case is active).
    if state.status == CaseStatus::Active {
        for inst in &state.items {
            if !matches!(inst.state, ItemState::Enabled | ItemState::Active) {
                continue;
            }
            let Some(task) = info.tasks.get(inst.key.as_str()) else {
                continue;
            };
            let team = inst.team.as_deref().or(task.team.as_deref());
            let due = state
                .deadlines
                .iter()
                .filter(|d| d.instance == Some(inst.id))
                .map(|d| due_at(&d.due, calendar))
                .min();
            let item = WorkItemOut {
                case_id,
                case_type,
                instance: inst.id,
                item: &inst.key,
                name: &task.name,
                state: inst.state,
                roles: &task.roles,
                team,
                assignee: inst.claimed_by.as_deref(),
                due,
                classification: state.classification,
            };
            if !encode(&mut value, &item) {
                continue;
            }
            let due_key = due.map_or(i64::MAX, |d| d.0);
            let queue = |k: Key, by: &str| k.str(by).i64(due_key).str(case_id).u32(inst.id.0);
            for role in &task.roles {
                out(keys.make(P_ROLE, |k| queue(k, role)), &value);
            }
            if let Some(who) = &inst.claimed_by {
                out(keys.make(P_ASSIGNEE, |k| queue(k, who)), &value);
            }
            if let Some(team) = team {
                out(keys.make(P_TEAM, |k| queue(k, team)), &value);
            }
        }
    }
}

// ------------------------------------------------------------------ reads

fn corrupt(what: &str, e: impl std::fmt::Display) -> QueryError {
    QueryError::Corrupt(format!("{what}: {e}"))
}

/// The stored record of a case, if the projection has it.
///
/// Errors: [`QueryError::Corrupt`] for an undecodable row.
pub fn load_case(rows: &Rows, case_id: &str) -> Result<Option<CaseRecord>, QueryError> {
    match rows.get(&Key::new(P_CASE).raw(case_id.as_bytes()).0)? {
        None => Ok(None),
        Some(bytes) => rmp_serde::from_slice(&bytes)
            .map(Some)
            .map_err(|e| corrupt(case_id, e)),
    }
}

fn load_summary(rows: &Rows, case_id: &[u8]) -> Result<Option<CaseSummary>, QueryError> {
    match rows.get(&Key::new(P_SUMMARY).raw(case_id).0)? {
        None => Ok(None),
        Some(bytes) => rmp_serde::from_slice(&bytes)
            .map(Some)
            .map_err(|e| corrupt("case summary", e)),
    }
}

/// Case ids of the keys in `[from, to)`, each key being `prefix_len` bytes of
/// index part and then the case id.
fn ids_in_range(
    rows: &Rows,
    from: Vec<u8>,
    to: Vec<u8>,
    skip: impl Fn(&[u8]) -> Option<usize>,
    out: &mut HashSet<Vec<u8>>,
    within: Option<&HashSet<Vec<u8>>>,
    value_ok: impl Fn(&[u8]) -> bool,
) -> Result<(), QueryError> {
    for kv in rows.range(from..to) {
        let (k, v) = kv?;
        if !value_ok(&v) {
            continue;
        }
        let Some(n) = skip(&k) else {
            continue;
        };
        let id = &k[n..];
        if within.is_none_or(|w| w.contains(id)) {
            out.insert(id.to_vec());
        }
    }
    Ok(())
}

/// One search condition as key ranges (any range matches) over keys whose
/// case id starts at a computable offset.
struct Predicate {
    ranges: Vec<(Vec<u8>, Vec<u8>)>,
    /// Where the case id starts, given a key in the range.
    id_at: IdAt,
    /// Minimum clearance byte check on the value (text index).
    max_class: Option<u8>,
    /// Text index: the word must be in this field (encoded key).
    in_field: Option<Vec<u8>>,
}

#[derive(Clone, Copy)]
enum IdAt {
    /// Fixed prefix length (every key the same length before the id).
    Fixed(usize),
    /// After one encoded string following a fixed prefix.
    AfterString(usize),
}

impl IdAt {
    fn offset(self, key: &[u8]) -> Option<usize> {
        match self {
            IdAt::Fixed(n) => Some(n).filter(|n| *n <= key.len()),
            IdAt::AfterString(n) => {
                let (_, rest) = keys::take_str(key.get(n..)?)?;
                Some(key.len() - rest.len())
            }
        }
    }
}

fn eq_predicate(prefix: Vec<u8>, values: &[Vec<u8>]) -> Predicate {
    let len = prefix.len();
    let mut ranges = Vec::new();
    let mut id_at = IdAt::Fixed(len);
    for v in values {
        let mut start = prefix.clone();
        start.extend_from_slice(v);
        id_at = IdAt::Fixed(start.len());
        let end = prefix_end(&start);
        ranges.push((start, end));
    }
    Predicate {
        ranges,
        id_at,
        max_class: None,
        in_field: None,
    }
}

/// Whether a text-index value (class byte, then field keys) lists `field`.
fn word_in_field(value: &[u8], field: &[u8]) -> bool {
    let mut rest = value.get(1..).unwrap_or_default();
    while !rest.is_empty() {
        let Some((_, after)) = keys::take_str(rest) else {
            return false;
        };
        if &rest[..rest.len() - after.len()] == field {
            return true;
        }
        rest = after;
    }
    false
}

/// One predicate per word, over the text index.
fn word_predicates(
    text: &str,
    parameter: &str,
    principal: &Principal,
    in_field: Option<&str>,
) -> Result<Vec<Predicate>, QueryError> {
    let ws: BTreeSet<String> = words(text).collect();
    if ws.is_empty() {
        return Err(QueryError::Invalid {
            parameter: parameter.into(),
            message: "give at least one word of 2 to 40 letters or digits".into(),
        });
    }
    let in_field = in_field.map(|f| Key::default().str(f).0);
    Ok(ws
        .into_iter()
        .map(|w| {
            let start = Key::new(P_TEXT).str(&w).0;
            let n = start.len();
            Predicate {
                ranges: vec![(start.clone(), prefix_end(&start))],
                id_at: IdAt::Fixed(n),
                max_class: Some(class_byte(principal.clearance)),
                in_field: in_field.clone(),
            }
        })
        .collect())
}

fn time_predicate(attr: &[u8], range: &TimeRange) -> Predicate {
    let prefix = Key::new(P_INDEX).raw(attr).0;
    let from = Key(prefix.clone())
        .i64(range.from.map_or(i64::MIN, |t| t.0))
        .0;
    let to = match range.to {
        Some(t) if t.0 < i64::MAX => Key(prefix.clone()).i64(t.0 + 1).0,
        _ => prefix_end(&prefix),
    };
    Predicate {
        ranges: vec![(from, to)],
        id_at: IdAt::Fixed(prefix.len() + 8),
        max_class: None,
        in_field: None,
    }
}

fn check_field_value(
    case_type: &str,
    fdef: &FieldDef,
    v: &serde_json::Value,
) -> Result<Vec<u8>, QueryError> {
    let ty = match fdef.ty {
        FieldType::List => fdef.element.unwrap_or(FieldType::Text),
        t => t,
    };
    let as_field = FieldDef {
        ty,
        element: None,
        ..fdef.clone()
    };
    crate::case::check_value(&as_field, v).map_err(|message| QueryError::WrongType {
        field: fdef.key.as_str().to_string(),
        message,
    })?;
    encode_value(ty, v).ok_or_else(|| QueryError::Unsupported {
        field: fdef.key.as_str().to_string(),
        field_type: fdef.ty.as_str().to_string(),
        operation: format!("searching ({case_type}: this value is not indexed)"),
    })
}

/// Above this many candidates (or with no condition that bounds them),
/// search walks the index of its sort order and stops at the page's end
/// rather than loading and sorting every candidate; such a page has no
/// `total`.
const ORDERED_WALK_OVER: usize = 1_000;

/// One page of a search by walking the sort order's index: cases in order,
/// kept if they are candidates (all are, when `candidates` is `None`) and
/// pass `keep`, until the page and one more are found.
fn ordered_page(
    rows: &Rows,
    query: &SearchQuery,
    candidates: Option<&HashSet<Vec<u8>>>,
    keep: &dyn Fn(&CaseSummary) -> bool,
) -> Result<Page<CaseSummary>, QueryError> {
    let want = query.page.offset + query.page.limit + 1;
    let (prefix, descending) = match query.order {
        SearchOrder::OpenedDescending => (Key::new(P_INDEX).raw(A_OPENED).0, true),
        SearchOrder::OpenedAscending => (Key::new(P_INDEX).raw(A_OPENED).0, false),
        SearchOrder::UpdatedDescending => (Key::new(P_INDEX).raw(A_UPDATED).0, true),
        SearchOrder::UpdatedAscending => (Key::new(P_INDEX).raw(A_UPDATED).0, false),
        SearchOrder::CaseId => (vec![P_SUMMARY], false),
    };
    // Summary keys are the case id; time index keys add the time.
    let id_at = if prefix == [P_SUMMARY] {
        1
    } else {
        prefix.len() + 8
    };
    let scan = rows.scan_prefix(&prefix);
    let scan = if descending { scan.reversed() } else { scan };
    let mut found = Vec::new();
    for row in scan {
        let (k, v) = row?;
        let Some(id) = k.get(id_at..) else { continue };
        if candidates.is_some_and(|c| !c.contains(id)) {
            continue;
        }
        let summary = if id_at == 1 {
            Some(rmp_serde::from_slice(&v).map_err(|e| corrupt("case summary", e))?)
        } else {
            load_summary(rows, id)?
        };
        if let Some(s) = summary.filter(|s| keep(s)) {
            found.push(s);
            if found.len() == want {
                break;
            }
        }
    }
    let more = found.len() == want;
    Ok(page_of(found, &query.page, more, None))
}

/// The requested page of `found` (results in order from the first);
/// `more`: results follow the page.
fn page_of(
    found: Vec<CaseSummary>,
    page: &super::query::PageRequest,
    more: bool,
    total: Option<usize>,
) -> Page<CaseSummary> {
    Page {
        items: found
            .into_iter()
            .skip(page.offset)
            .take(page.limit)
            .collect(),
        next_offset: more.then_some(page.offset + page.limit),
        total,
    }
}

/// Runs a case search against a `cases` tree. `def` is the latest definition
/// of the query's case type (needed when it filters on fields or text).
///
/// Errors: [`QueryError::PageSize`], [`QueryError::Offset`],
/// [`QueryError::FieldNeedsCaseType`], [`QueryError::UnknownField`],
/// [`QueryError::WrongType`], [`QueryError::Unsupported`],
/// [`QueryError::FieldNotVisible`], [`QueryError::Invalid`].
pub fn search(
    rows: &Rows,
    query: &SearchQuery,
    def: Option<&CaseDefinition>,
    principal: &Principal,
) -> Result<Page<CaseSummary>, QueryError> {
    query.page.check()?;
    let mut preds: Vec<Predicate> = Vec::new();
    // Most selective conditions first: they bound the candidate set.
    if let Some(text) = &query.text {
        if let Some(def) = def {
            if !def.fields.iter().any(|f| f.text_searchable()) {
                return Err(QueryError::Invalid {
                    parameter: "text".into(),
                    message: format!("case type {} marks no field search = \"text\"", def.key),
                });
            }
        }
        preds.extend(word_predicates(text, "text", principal, None)?);
    }
    for filter in &query.fields {
        let Some(case_type) = &query.case_type else {
            return Err(QueryError::FieldNeedsCaseType {
                field: filter.field.clone(),
            });
        };
        let Some(def) = def else {
            return Err(QueryError::FieldNeedsCaseType {
                field: filter.field.clone(),
            });
        };
        let Some(fdef) = def.field(&filter.field) else {
            return Err(QueryError::UnknownField {
                case_type: case_type.clone(),
                field: filter.field.clone(),
                known: def
                    .fields
                    .iter()
                    .map(|f| f.key.as_str().to_string())
                    .collect(),
            });
        };
        let needed = fdef.classification.unwrap_or_default();
        if !principal.may_see(needed) {
            return Err(QueryError::FieldNotVisible {
                field: filter.field.clone(),
                needed,
            });
        }
        if fdef.ty == FieldType::GeoPoint {
            return Err(QueryError::Unsupported {
                field: filter.field.clone(),
                field_type: fdef.ty.as_str().to_string(),
                operation: "filtering".into(),
            });
        }
        let prefix = Key::new(P_FIELD).str(case_type).str(&filter.field).0;
        match &filter.condition {
            FieldCondition::Words(text) => {
                if !fdef.text_searchable() {
                    return Err(QueryError::NotTextSearchable {
                        case_type: case_type.clone(),
                        field: filter.field.clone(),
                        searchable: def
                            .fields
                            .iter()
                            .filter(|f| f.text_searchable())
                            .map(|f| f.key.as_str().to_string())
                            .collect(),
                    });
                }
                preds.extend(word_predicates(
                    text,
                    &format!("words in {}", filter.field),
                    principal,
                    Some(&filter.field),
                )?);
            }
            FieldCondition::Equals(v) => {
                let enc = check_field_value(case_type, fdef, v)?;
                preds.push(eq_predicate(prefix, &[enc]));
            }
            FieldCondition::OneOf(vs) => {
                if vs.is_empty() || vs.len() > 100 {
                    return Err(QueryError::Invalid {
                        parameter: format!("one_of on {}", filter.field),
                        message: "give 1 to 100 values".into(),
                    });
                }
                let encs = vs
                    .iter()
                    .map(|v| check_field_value(case_type, fdef, v))
                    .collect::<Result<Vec<_>, _>>()?;
                // Equal-length encodings share one id offset; strings differ,
                // so each range gets its own predicate pass below.
                let mut p = eq_predicate(prefix.clone(), &encs);
                if encs.iter().any(|e| e.len() != encs[0].len()) {
                    p.id_at = IdAt::AfterString(prefix.len() + 1);
                }
                preds.push(p);
            }
            FieldCondition::Between { from, to } => {
                let ty = match fdef.ty {
                    FieldType::List => fdef.element.unwrap_or(FieldType::Text),
                    t => t,
                };
                if matches!(ty, FieldType::Boolean | FieldType::GeoPoint) {
                    return Err(QueryError::Unsupported {
                        field: filter.field.clone(),
                        field_type: fdef.ty.as_str().to_string(),
                        operation: "ranges".into(),
                    });
                }
                if from.is_none() && to.is_none() {
                    return Err(QueryError::Invalid {
                        parameter: format!("range on {}", filter.field),
                        message: "give a lower bound, an upper bound or both".into(),
                    });
                }
                let lo = from
                    .as_ref()
                    .map(|v| check_field_value(case_type, fdef, v))
                    .transpose()?;
                let hi = to
                    .as_ref()
                    .map(|v| check_field_value(case_type, fdef, v))
                    .transpose()?;
                if let (Some(a), Some(b)) = (&lo, &hi) {
                    if a > b {
                        return Err(QueryError::Invalid {
                            parameter: format!("range on {}", filter.field),
                            message: "the lower bound is above the upper bound".into(),
                        });
                    }
                }
                let tag = lo.as_ref().or(hi.as_ref()).map_or(0, |e| e[0]);
                let mut start = prefix.clone();
                match lo {
                    Some(l) => start.extend_from_slice(&l),
                    None => start.push(tag),
                }
                let end = match hi {
                    Some(h) => prefix_end(&[prefix.as_slice(), &h].concat()),
                    None => prefix_end(&[prefix.as_slice(), &[tag]].concat()),
                };
                let id_at = if tag == keys::TAG_STRING {
                    IdAt::AfterString(prefix.len() + 1)
                } else if tag == keys::TAG_BOOL {
                    IdAt::Fixed(prefix.len() + 2)
                } else {
                    IdAt::Fixed(prefix.len() + 9)
                };
                preds.push(Predicate {
                    ranges: vec![(start, end)],
                    id_at,
                    max_class: None,
                    in_field: None,
                });
            }
        }
    }
    if let Some(stage) = &query.stage {
        if let Some(def) = def {
            if !def
                .plan_items()
                .iter()
                .any(|e| matches!(e.item, PlanItem::Stage(_)) && e.item.key().as_str() == stage)
            {
                return Err(QueryError::Invalid {
                    parameter: "stage".into(),
                    message: format!("case type {} has no stage {stage}", def.key),
                });
            }
        }
        preds.push(eq_predicate(
            Key::new(P_INDEX).raw(A_STAGE).0,
            &[Key::default().str(stage).0],
        ));
    }
    if let Some(r) = &query.opened {
        check_range("opened", r)?;
        preds.push(time_predicate(A_OPENED, r));
    }
    if let Some(r) = &query.updated {
        check_range("updated", r)?;
        preds.push(time_predicate(A_UPDATED, r));
    }
    // Type and status match most cases: when another condition already
    // bounds the candidates, check them on each candidate's summary instead
    // of collecting their (large) index ranges.
    let post_filter = !preds.is_empty();
    if !post_filter {
        if !query.status.is_empty() {
            let vals: Vec<Vec<u8>> = query
                .status
                .iter()
                .map(|s| Key::default().str(s.as_str()).0)
                .collect();
            let mut p = eq_predicate(Key::new(P_INDEX).raw(A_STATUS).0, &vals);
            p.id_at = IdAt::AfterString(1 + A_STATUS.len());
            preds.push(p);
        }
        if let Some(t) = &query.case_type {
            preds.push(eq_predicate(
                Key::new(P_INDEX).raw(A_TYPE).0,
                &[Key::default().str(t).0],
            ));
        }
    }
    let keep = |s: &CaseSummary| {
        principal.may_see(s.classification)
            && (!post_filter
                || (query.case_type.as_ref().is_none_or(|t| *t == s.case_type)
                    && (query.status.is_empty() || query.status.contains(&s.status))))
    };
    // Intersect the candidate sets, most selective first.
    let mut candidates: Option<HashSet<Vec<u8>>> = None;
    for p in &preds {
        let mut found = HashSet::new();
        for (from, to) in &p.ranges {
            let max = p.max_class;
            ids_in_range(
                rows,
                from.clone(),
                to.clone(),
                |k| p.id_at.offset(k),
                &mut found,
                candidates.as_ref(),
                |v| {
                    max.is_none_or(|m| v.first().is_some_and(|c| *c <= m))
                        && p.in_field.as_ref().is_none_or(|f| word_in_field(v, f))
                },
            )?;
        }
        if found.is_empty() {
            return Ok(Page {
                items: vec![],
                next_offset: None,
                total: Some(0),
            });
        }
        candidates = Some(found);
    }
    if candidates
        .as_ref()
        .is_none_or(|c| c.len() > ORDERED_WALK_OVER)
    {
        return ordered_page(rows, query, candidates.as_ref(), &keep);
    }
    let mut hits: Vec<CaseSummary> = Vec::new();
    match candidates {
        Some(ids) => {
            for id in ids {
                if let Some(s) = load_summary(rows, &id)? {
                    if keep(&s) {
                        hits.push(s);
                    }
                }
            }
        }
        None => {
            let start = vec![P_SUMMARY];
            for kv in rows.range(start.clone()..prefix_end(&start)) {
                let (_, v) = kv?;
                let s: CaseSummary =
                    rmp_serde::from_slice(&v).map_err(|e| corrupt("case summary", e))?;
                if keep(&s) {
                    hits.push(s);
                }
            }
        }
    }
    match query.order {
        SearchOrder::OpenedDescending => {
            hits.sort_by(|a, b| (b.opened_at, &b.case_id).cmp(&(a.opened_at, &a.case_id)))
        }
        SearchOrder::OpenedAscending => {
            hits.sort_by(|a, b| (a.opened_at, &a.case_id).cmp(&(b.opened_at, &b.case_id)))
        }
        SearchOrder::UpdatedDescending => {
            hits.sort_by(|a, b| (b.updated_at, &b.case_id).cmp(&(a.updated_at, &a.case_id)))
        }
        SearchOrder::UpdatedAscending => {
            hits.sort_by(|a, b| (a.updated_at, &a.case_id).cmp(&(b.updated_at, &b.case_id)))
        }
        SearchOrder::CaseId => hits.sort_by(|a, b| a.case_id.cmp(&b.case_id)),
    }
    let total = hits.len();
    let more = query.page.offset + query.page.limit < total;
    Ok(page_of(hits, &query.page, more, Some(total)))
}

fn check_range(name: &str, r: &TimeRange) -> Result<(), QueryError> {
    if let (Some(a), Some(b)) = (r.from, r.to) {
        if a > b {
            return Err(QueryError::Invalid {
                parameter: name.into(),
                message: "the range starts after it ends".into(),
            });
        }
    }
    Ok(())
}

/// Scans rows of one prefix in key order, keeping those `keep` accepts,
/// until a page (plus one, to know whether there is more) is full.
fn scan_page<T: serde::de::DeserializeOwned>(
    iter: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), RowsError>>,
    page: &super::query::PageRequest,
    mut keep: impl FnMut(&T) -> bool,
) -> Result<Page<T>, QueryError> {
    let mut items = Vec::new();
    let mut matched = 0usize;
    let mut more = false;
    for kv in iter {
        let (_, v) = kv?;
        let item: T = rmp_serde::from_slice(&v).map_err(|e| corrupt("row", e))?;
        if !keep(&item) {
            continue;
        }
        matched += 1;
        if matched <= page.offset {
            continue;
        }
        if items.len() == page.limit {
            more = true;
            break;
        }
        items.push(item);
    }
    let next = page.offset + items.len();
    Ok(Page {
        items,
        next_offset: more.then_some(next),
        total: None,
    })
}

/// Lists open human tasks (ordered by due date, undated last).
///
/// Errors: [`QueryError::PageSize`], [`QueryError::Offset`];
/// [`QueryError::Invalid`] for a team that is not an identifier, or a
/// role, team or case type no deployed definition declares.
pub fn work_queue(
    rows: &Rows,
    query: &WorkQueueQuery,
    principal: &Principal,
) -> Result<Page<WorkItem>, QueryError> {
    query.page.check()?;
    if let Some(team) = &query.team {
        crate::definition::check_identifier(team).map_err(|message| QueryError::Invalid {
            parameter: "team".into(),
            message,
        })?;
    }
    check_declared(rows, query)?;
    let keep = |w: &WorkItem| {
        principal.may_see(w.classification)
            && query.case_type.as_ref().is_none_or(|t| *t == w.case_type)
            && query
                .team
                .as_ref()
                .is_none_or(|t| w.team.as_ref() == Some(t))
            && (!query.unassigned_only || w.assignee.is_none())
            && query
                .assignee
                .as_ref()
                .is_none_or(|a| w.assignee.as_ref() == Some(a))
    };
    let scan = |prefix: Vec<u8>| {
        let end = prefix_end(&prefix);
        rows.range(prefix..end)
    };
    match (&query.role, &query.assignee, &query.team) {
        (Some(role), _, _) => scan_page(scan(Key::new(P_ROLE).str(role).0), &query.page, keep),
        (None, Some(who), _) => scan_page(scan(Key::new(P_ASSIGNEE).str(who).0), &query.page, keep),
        (None, None, Some(team)) => {
            scan_page(scan(Key::new(P_TEAM).str(team).0), &query.page, keep)
        }
        (None, None, None) => {
            // The caller's roles: merge their queues by due date.
            let mut all: BTreeMap<(i64, String, u32), WorkItem> = BTreeMap::new();
            // Each role's first offset + limit + 1 tasks are enough to fill
            // the merged page and know whether there is more.
            let cap = super::query::PageRequest {
                offset: 0,
                limit: query.page.offset + query.page.limit + 1,
            };
            for role in &principal.roles {
                let p: Page<WorkItem> = scan_page(scan(Key::new(P_ROLE).str(role).0), &cap, keep)?;
                for w in p.items {
                    let k = (
                        w.due.map_or(i64::MAX, |d| d.0),
                        w.case_id.clone(),
                        w.instance.0,
                    );
                    all.insert(k, w);
                }
            }
            let total = all.len();
            let items: Vec<WorkItem> = all
                .into_values()
                .skip(query.page.offset)
                .take(query.page.limit)
                .collect();
            let next = query.page.offset + items.len();
            Ok(Page {
                items,
                next_offset: (next < total).then_some(next),
                total: None,
            })
        }
    }
}

/// A role, team or case type that no deployed definition declares is a
/// mistake in the query, not an empty queue.
///
/// Errors: [`QueryError::Invalid`] naming the parameter (`role`, `team`,
/// `case_type`). A generation without declarations (built by version 2,
/// serving while version 3 rebuilds) checks nothing.
fn check_declared(rows: &Rows, query: &WorkQueueQuery) -> Result<(), QueryError> {
    let checks = [
        ("role", D_ROLE, &query.role),
        ("team", D_TEAM, &query.team),
        ("case_type", D_TYPE, &query.case_type),
    ];
    if checks.iter().all(|(_, _, v)| v.is_none()) {
        return Ok(());
    }
    if rows
        .scan_prefix(&[P_DECLARED])
        .next()
        .transpose()?
        .is_none()
    {
        return Ok(());
    }
    for (parameter, kind, value) in checks {
        let Some(name) = value else { continue };
        if rows
            .get(&Key::new(P_DECLARED).raw(&[kind]).str(name).0)?
            .is_none()
        {
            return Err(QueryError::Invalid {
                parameter: parameter.into(),
                message: format!("no deployed definition declares {parameter} {name}"),
            });
        }
    }
    Ok(())
}

/// Lists running deadlines due by `query.due_before`, earliest first.
///
/// Errors: [`QueryError::PageSize`], [`QueryError::Offset`].
pub fn deadlines(
    rows: &Rows,
    query: &DeadlineQuery,
    principal: &Principal,
) -> Result<Page<DeadlineEntry>, QueryError> {
    query.page.check()?;
    let start = vec![P_DEADLINE];
    let end = match query.due_before.0.checked_add(1) {
        Some(t) => Key::new(P_DEADLINE).i64(t).0,
        None => prefix_end(&start),
    };
    let mut page = scan_page(rows.range(start..end), &query.page, |d: &DeadlineEntry| {
        principal.may_see(d.classification)
            && query.case_type.as_ref().is_none_or(|t| *t == d.case_type)
    })?;
    for d in &mut page.items {
        d.overdue = d.due_at < query.now;
    }
    Ok(page)
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
    fn borrowed_value_twins_encode_to_the_owned_types_bytes() {
        let summary = CaseSummary {
            case_id: "BUR-1".into(),
            case_type: "incident".into(),
            definition_version: 2,
            status: CaseStatus::Active,
            classification: Classification::Secret,
            opened_at: Timestamp(1),
            updated_at: Timestamp(2),
            active_stages: vec!["triage".into(), "investigation".into()],
            version: StreamVersion(5),
        };
        let twin = SummaryOut {
            case_id: "BUR-1",
            case_type: "incident",
            definition_version: 2,
            status: CaseStatus::Active,
            classification: Classification::Secret,
            opened_at: Timestamp(1),
            updated_at: Timestamp(2),
            active_stages: &["triage", "investigation"],
            version: StreamVersion(5),
        };
        fn enc<T: Serialize>(v: &T) -> Vec<u8> {
            rmp_serde::to_vec(v).unwrap()
        }
        assert_eq!(enc(&summary), enc(&twin));
        for (team, assignee, due) in [
            (None, None, None),
            (Some("cid-north"), Some("pc-7"), Some(Timestamp(99))),
        ] {
            let item = WorkItem {
                case_id: "BUR-1".into(),
                case_type: "incident".into(),
                instance: InstanceId(3),
                item: ItemKey::new("review".to_string()),
                name: "Review".into(),
                state: ItemState::Enabled,
                roles: vec!["supervisor".into()],
                team: team.map(str::to_string),
                assignee: assignee.map(str::to_string),
                due,
                classification: Classification::Official,
            };
            let twin = WorkItemOut {
                case_id: "BUR-1",
                case_type: "incident",
                instance: InstanceId(3),
                item: &item.item,
                name: "Review",
                state: ItemState::Enabled,
                roles: &item.roles,
                team,
                assignee,
                due,
                classification: Classification::Official,
            };
            assert_eq!(enc(&item), enc(&twin));
        }
        let key = DeadlineKey::new("victim-update".to_string());
        for (name, item, instance) in [
            (None, None, None),
            (
                Some("Victim update"),
                Some(ItemKey::new("call".to_string())),
                Some(InstanceId(4)),
            ),
        ] {
            let due = DeadlineDue::At { due: Timestamp(50) };
            let entry = DeadlineEntry {
                case_id: "BUR-1".into(),
                case_type: "incident".into(),
                deadline: key.clone(),
                name: name.map(str::to_string),
                item: item.clone(),
                instance,
                due,
                due_at: Timestamp(50),
                overdue: false,
                classification: Classification::Official,
            };
            let twin = DeadlineOut {
                case_id: "BUR-1",
                case_type: "incident",
                deadline: &key,
                name,
                item: item.as_ref(),
                instance,
                due,
                due_at: Timestamp(50),
                overdue: false,
                classification: Classification::Official,
            };
            assert_eq!(enc(&entry), enc(&twin));
        }
    }

    #[test]
    fn text_rows_list_the_fields_holding_the_word() {
        let mut value = vec![0u8];
        keys::push_str(&mut value, "informant");
        keys::push_str(&mut value, "summary");
        let enc = |f: &str| Key::default().str(f).0;
        assert!(word_in_field(&value, &enc("summary")));
        assert!(word_in_field(&value, &enc("informant")));
        assert!(!word_in_field(&value, &enc("summ")));
        assert!(!word_in_field(&value, &enc("notes")));
        assert!(!word_in_field(&[0u8], &enc("summary")));
        assert!(
            !word_in_field(&[0u8, b'x'], &enc("x")),
            "garbage reads as absent"
        );
    }

    #[test]
    fn words_are_lowercased_and_bounded() {
        let w: Vec<String> = words("Break-in at 12 HIGH St; x").collect();
        assert_eq!(w, ["break", "in", "at", "12", "high", "st"]);
    }
}
