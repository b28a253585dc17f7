//! Rows of the `cases` projection: the stored values (borrowing twins of
//! the public views, encoding to their bytes), keys, every row a case should
//! have, the diff a batch writes, and the reads of stored records.

use super::*;

// Borrowing twins of the stored rows below: the same fields in the same
// order, so they encode (positionally) to the very bytes the owned rows
// decode from, without copying every string of a case into them first.

/// [`CaseSummary`], borrowed.
#[derive(Serialize)]
pub(super) struct SummaryOut<'a> {
    case_id: &'a str,
    case_type: &'a str,
    definition_version: u32,
    status: CaseStatus,
    classification: Classification,
    opened_at: Timestamp,
    updated_at: Timestamp,
    active_stages: &'a [(&'a str, Classification)],
    version: StreamVersion,
}

/// [`WorkItem`], borrowed.
#[derive(Serialize)]
pub(super) struct WorkItemOut<'a> {
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
    alert: Option<&'a AlertItem>,
}

/// [`DeadlineEntry`], borrowed.
#[derive(Serialize)]
pub(super) struct DeadlineOut<'a> {
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

// Owned stored rows: what the projection decodes, converted to the public
// views. The stored bytes are these structs' (positional MessagePack), so a
// field added to a public view never changes what is on disk; a change
// here is a change of the projection's version.

/// A public view the projection stores as its own private row type.
pub(super) trait Stored: Sized {
    /// The stored row, decoded and then converted.
    type Row: serde::de::DeserializeOwned + Into<Self>;
}

/// Decodes a stored row into its public view.
///
/// Errors: [`QueryError::Damaged`] naming `what` for undecodable bytes.
pub(super) fn decode<T: Stored>(bytes: &[u8], what: &str) -> Result<T, QueryError> {
    rmp_serde::from_slice::<T::Row>(bytes)
        .map(Into::into)
        .map_err(|e| corrupt(what, e))
}

/// [`CaseSummary`] as stored: each active stage with its effective marking.
#[derive(Deserialize)]
pub(super) struct SummaryRow {
    case_id: String,
    case_type: String,
    definition_version: u32,
    status: CaseStatus,
    classification: Classification,
    opened_at: Timestamp,
    updated_at: Timestamp,
    active_stages: Vec<(String, Classification)>,
    version: StreamVersion,
}

impl SummaryRow {
    /// The summary as a reader cleared for `clearance` sees it: the stages
    /// above it are left out (which stage is active can tell a restricted
    /// field's value).
    fn for_clearance(self, clearance: Classification) -> CaseSummary {
        CaseSummary {
            case_id: self.case_id,
            case_type: self.case_type,
            definition_version: self.definition_version,
            status: self.status,
            classification: self.classification,
            opened_at: self.opened_at,
            updated_at: self.updated_at,
            active_stages: self
                .active_stages
                .into_iter()
                .filter(|(_, c)| *c <= clearance)
                .map(|(s, _)| s)
                .collect(),
            version: self.version,
        }
    }
}

/// Decodes a stored summary for a reader cleared for `clearance`.
///
/// Errors: [`QueryError::Damaged`] for undecodable bytes.
pub(super) fn decode_summary(
    bytes: &[u8],
    clearance: Classification,
) -> Result<CaseSummary, QueryError> {
    rmp_serde::from_slice::<SummaryRow>(bytes)
        .map(|r| r.for_clearance(clearance))
        .map_err(|e| corrupt("case summary", e))
}

/// [`WorkItem`] as stored.
#[derive(Deserialize)]
pub(super) struct WorkItemRow {
    case_id: String,
    case_type: String,
    instance: InstanceId,
    item: ItemKey,
    name: String,
    state: ItemState,
    roles: Vec<String>,
    team: Option<String>,
    assignee: Option<String>,
    due: Option<Timestamp>,
    classification: Classification,
    // Absent from rows written before alerts.
    #[serde(default)]
    alert: Option<AlertItem>,
}

impl From<WorkItemRow> for WorkItem {
    fn from(r: WorkItemRow) -> Self {
        WorkItem {
            case_id: r.case_id,
            case_type: r.case_type,
            instance: r.instance,
            item: r.item,
            name: r.name,
            state: r.state,
            roles: r.roles,
            team: r.team,
            assignee: r.assignee,
            due: r.due,
            classification: r.classification,
            alert: r.alert,
        }
    }
}

impl Stored for WorkItem {
    type Row = WorkItemRow;
}

/// [`DeadlineEntry`] as stored.
#[derive(Deserialize)]
pub(super) struct DeadlineRow {
    case_id: String,
    case_type: String,
    deadline: DeadlineKey,
    name: Option<String>,
    item: Option<ItemKey>,
    instance: Option<InstanceId>,
    due: DeadlineDue,
    due_at: Timestamp,
    overdue: bool,
    classification: Classification,
}

impl From<DeadlineRow> for DeadlineEntry {
    fn from(r: DeadlineRow) -> Self {
        DeadlineEntry {
            case_id: r.case_id,
            case_type: r.case_type,
            deadline: r.deadline,
            name: r.name,
            item: r.item,
            instance: r.instance,
            due: r.due,
            due_at: r.due_at,
            overdue: r.overdue,
            classification: r.classification,
        }
    }
}

impl Stored for DeadlineEntry {
    type Row = DeadlineRow;
}

/// Builds keys in one reused buffer (a case has tens of rows).
#[derive(Default)]
pub(super) struct Keys(Vec<u8>);

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
pub(super) fn encode(buf: &mut Vec<u8>, v: &impl Serialize) -> bool {
    buf.clear();
    rmp_serde::encode::write(buf, v).is_ok()
}

/// Writes every row of a case (see [`rows`]) into `changes`.
pub(super) fn rows_into(
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
pub(super) fn write_case(
    changes: &mut Changes,
    case_id: &str,
    before: Option<Before>,
    after: &Held,
    added: &Added,
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
    // Notes and links are written once each, numbered from the count the
    // case had: a batch's cost does not grow with the case's history.
    let first_note = after.notes - added.notes.len() as u64;
    for (i, note) in added.notes.iter().enumerate() {
        let bytes = rmp_serde::to_vec(note).map_err(HandlerError::other)?;
        changes.insert(&numbered(P_NOTE, case_id, first_note + i as u64), bytes)?;
    }
    let first_link = after.links - added.links.len() as u64;
    for (i, link) in added.links.iter().enumerate() {
        let bytes = rmp_serde::to_vec(link).map_err(HandlerError::other)?;
        changes.insert(&numbered(P_LINK, case_id, first_link + i as u64), bytes)?;
    }
    let stored = StoredCaseRef {
        record,
        notes: after.notes,
        links: after.links,
    };
    let bytes = rmp_serde::to_vec(&stored).map_err(HandlerError::other)?;
    Ok(changes.insert(&Key::new(P_CASE).raw(case_id.as_bytes()).0, bytes)?)
}

/// The notes and links a batch added to a case.
pub(super) struct Added {
    pub notes: imbl::Vector<Note>,
    pub links: imbl::Vector<EntityLink>,
}

/// A case's `C` row: its record (without notes and links) and how many
/// notes and links it has.
#[derive(Deserialize)]
pub(super) struct StoredCase {
    pub record: CaseRecord,
    pub notes: u64,
    pub links: u64,
}

#[derive(Serialize)]
pub(super) struct StoredCaseRef<'a> {
    pub record: &'a CaseRecord,
    pub notes: u64,
    pub links: u64,
}

/// The key of a case's `n`th note or link: prefix + case id + n.
fn numbered(prefix: u8, case_id: &str, n: u64) -> Vec<u8> {
    Key::new(prefix).str(case_id).raw(&n.to_be_bytes()).0
}

/// Every note or link of a case, in order.
fn numbered_rows<T: serde::de::DeserializeOwned + Clone>(
    rows: &Rows,
    prefix: u8,
    case_id: &str,
) -> Result<imbl::Vector<T>, QueryError> {
    let mut out = imbl::Vector::new();
    for row in rows.scan_prefix(&Key::new(prefix).str(case_id).0) {
        let (_, v) = row?;
        out.push_back(rmp_serde::from_slice(&v).map_err(|e| corrupt(case_id, e))?);
    }
    Ok(out)
}

pub(super) fn class_byte(c: Classification) -> u8 {
    Classification::ALL
        .iter()
        .position(|x| *x == c)
        .unwrap_or(Classification::ALL.len() - 1) as u8
}

/// Encodes a field value for the index, or `None` if it is not indexed.
pub(super) fn encode_value(ty: FieldType, v: &serde_json::Value) -> Option<Vec<u8>> {
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

pub(super) fn due_at(due: &DeadlineDue, calendar: &WorkingCalendar) -> Timestamp {
    match *due {
        DeadlineDue::At { due } => due,
        DeadlineDue::WorkingDays { days, from } => calendar.add_working_days(from, days),
    }
}

pub(super) fn field_class(def: &FieldDef, case: Classification) -> Classification {
    def.classification.unwrap_or_default().max(case)
}

/// The tenant's calendar as a tree stores it (none stored: the default).
pub(super) fn load_calendar(rows: &Rows) -> Result<WorkingCalendar, HandlerError> {
    match rows.get(CALENDAR_KEY)? {
        None => Ok(WorkingCalendar::default()),
        Some(bytes) => rmp_serde::from_slice(&bytes)
            .map_err(|e| HandlerError::decode("the stored working-day calendar", e)),
    }
}

/// Every row a case should have, derived from its record.
pub(super) fn rows(
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
    // What each row tells is marked like the item it is about (see
    // `CaseDefinition::markings`): queries compare it with the reader's clearance.
    let marks = Disclosure::for_clearance(def, state.classification, Classification::TopSecret);
    let active_stages: BTreeSet<&str> = state
        .items
        .iter()
        .filter(|i| i.state == ItemState::Active && info.stages.contains(i.key.as_str()))
        .map(|i| i.key.as_str())
        .collect();
    let stage_list: Vec<(&str, Classification)> = active_stages
        .iter()
        .map(|s| (*s, marks.item_marking(s)))
        .collect();
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
    for (s, mark) in &stage_list {
        out(
            keys.make(P_INDEX, |k| k.raw(A_STAGE).str(s).raw(id)),
            &[class_byte(*mark)],
        );
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
        // Each value keeps the marking it was written under, so a later
        // definition version that lowers the field does not expose it.
        let written = [class_byte(field_class(fdef, state.classification))];
        for v in elements {
            if let Some(enc) = encode_value(ty, v) {
                let field = key.as_str();
                let k = keys.make(P_FIELD, |k| k.str(case_type).str(field).raw(&enc).raw(id));
                out(k, &written);
            }
        }
        if info.text_fields.iter().any(|f| f == key.as_str()) {
            let class = field_class(fdef, state.classification);
            let text = match value {
                serde_json::Value::String(s) => std::borrow::Cow::Borrowed(s.as_str()),
                other => std::borrow::Cow::Owned(other.to_string()),
            };
            // Every word: a field's text is bounded by the case runtime
            // (`MAX_SEARCH_TEXT`), so there is no cap here to miss words by.
            for w in words(&text) {
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
                classification: marks.deadline_marking(d.deadline.as_str()),
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
            // Only deadlines the task's own marking covers set its due time:
            // a deadline marked higher (its condition reads a restricted
            // field) must not show through the task.
            let task_mark = marks.item_marking(inst.key.as_str());
            let due = state
                .deadlines
                .iter()
                .filter(|d| d.instance == Some(inst.id))
                .filter(|d| marks.deadline_marking(d.deadline.as_str()) <= task_mark)
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
                classification: marks.item_marking(inst.key.as_str()),
                alert: None,
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
        // Alerts, in the queues of the roles that may acknowledge them
        // and of their team, after the tasks of no due date (instance 0
        // never names a plan item).
        for a in &state.alerts {
            let alert = AlertItem {
                alert: a.alert,
                message: a.record.message.clone(),
                priority: a.record.priority,
            };
            let roles: Vec<String> = a
                .record
                .acknowledged_by
                .iter()
                .map(|r| r.as_str().to_string())
                .collect();
            let team = match &a.record.queue {
                AlertQueue::Team(t) => Some(t.as_str()),
                AlertQueue::Role(_) => None,
            };
            let item = WorkItemOut {
                case_id,
                case_type,
                instance: a.instance,
                item: &a.item,
                name: &a.record.message,
                state: ItemState::Active,
                roles: &roles,
                team,
                assignee: None,
                due: None,
                classification: a.marking,
                alert: Some(&alert),
            };
            if !encode(&mut value, &item) {
                continue;
            }
            let queue =
                |k: Key, by: &str| k.str(by).i64(i64::MAX).str(case_id).u32(0).u32(a.alert.0);
            for role in &roles {
                out(keys.make(P_ROLE, |k| queue(k, role)), &value);
            }
            if let Some(team) = team {
                out(keys.make(P_TEAM, |k| queue(k, team)), &value);
            }
        }
    }
}

/// A stored row that cannot be decoded: the database is damaged.
pub(super) fn corrupt(what: &str, e: impl std::fmt::Display) -> QueryError {
    QueryError::Damaged {
        what: format!("{what}: {e}"),
    }
}

/// The stored record of a case, if the projection has it.
///
/// Errors: [`QueryError::Damaged`] for an undecodable row.
pub fn load_case(rows: &Rows, case_id: &str) -> Result<Option<CaseRecord>, QueryError> {
    let Some((mut record, inline)) = load_head(rows, case_id)? else {
        return Ok(None);
    };
    if !inline {
        record.state.notes = numbered_rows(rows, P_NOTE, case_id)?;
        record.state.entities = numbered_rows(rows, P_LINK, case_id)?;
    }
    Ok(Some(record))
}

/// The stored record of a case without its notes and links (for what
/// needs only its status, marking or plan).
///
/// Errors: [`QueryError::Damaged`] for an undecodable row.
pub fn load_case_head(rows: &Rows, case_id: &str) -> Result<Option<CaseRecord>, QueryError> {
    Ok(load_head(rows, case_id)?.map(|(record, _)| record))
}

/// A case's `C` row, and whether it holds its notes and links itself (a
/// generation of version 5 or older, served while version 6 builds).
fn load_head(rows: &Rows, case_id: &str) -> Result<Option<(CaseRecord, bool)>, QueryError> {
    let Some(bytes) = rows.get(&Key::new(P_CASE).raw(case_id.as_bytes()).0)? else {
        return Ok(None);
    };
    decode_head(&bytes)
        .map(Some)
        .map_err(|e| corrupt(case_id, e))
}

/// Decodes a `C` row of this version, or of version 5 and older (whose
/// record holds the notes and links: the `bool`).
pub(super) fn decode_head(bytes: &[u8]) -> Result<(CaseRecord, bool), rmp_serde::decode::Error> {
    match rmp_serde::from_slice::<StoredCase>(bytes) {
        Ok(stored) => Ok((stored.record, false)),
        Err(e) => rmp_serde::from_slice::<CaseRecord>(bytes)
            .map(|record| (record, true))
            .map_err(|_| e),
    }
}

pub(super) fn load_summary(
    rows: &Rows,
    case_id: &[u8],
    clearance: Classification,
) -> Result<Option<CaseSummary>, QueryError> {
    match rows.get(&Key::new(P_SUMMARY).raw(case_id).0)? {
        None => Ok(None),
        Some(bytes) => decode_summary(&bytes, clearance).map(Some),
    }
}

/// Scans rows of one prefix in key order, keeping those `keep` accepts,
/// until a page (plus one, to know whether there is more) is full.
pub(super) fn scan_page<T: Stored>(
    iter: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), RowsError>>,
    page: &crate::projection::query::PageRequest,
    mut keep: impl FnMut(&T) -> bool,
) -> Result<Page<T>, QueryError> {
    let mut items = Vec::new();
    let mut matched = 0usize;
    let mut more = false;
    for kv in iter {
        let (_, v) = kv?;
        let item: T = decode(&v, "row")?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_rows_decode_to_the_public_views() {
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
            active_stages: &[
                ("triage", Classification::Secret),
                ("investigation", Classification::TopSecret),
            ],
            version: StreamVersion(5),
        };
        fn enc<T: Serialize>(v: &T) -> Vec<u8> {
            rmp_serde::to_vec(v).unwrap()
        }
        let top = decode_summary(&enc(&twin), Classification::TopSecret).unwrap();
        assert_eq!(top, summary);
        let secret = decode_summary(&enc(&twin), Classification::Secret).unwrap();
        assert_eq!(
            secret.active_stages,
            ["triage"],
            "a stage above the reader is left out"
        );
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
                alert: None,
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
                alert: None,
            };
            assert_eq!(decode::<WorkItem>(&enc(&twin), "w").unwrap(), item);
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
            assert_eq!(decode::<DeadlineEntry>(&enc(&twin), "d").unwrap(), entry);
        }
    }

    #[test]
    fn words_are_lowercased_and_bounded() {
        let w: Vec<String> = words("Break-in at 12 HIGH St; x").collect();
        assert_eq!(w, ["break", "in", "at", "12", "high", "st"]);
    }
}
