//! The `nominals` projection: the tenant's record of subjects, folded from
//! case events (who appears where, dates of birth, police contact) and
//! governance events (reviews, holds), rebuilt from the log like every
//! other read model.
//!
//! Tree layout (rmp-serde, named): `S` + subject id -> [`SubjectRow`];
//! `C` + case id -> [`CaseRow`] (the case's marking, definition, the
//! subject each of its `[[subjects]]` currently names, its holds); `H` +
//! hold id -> the hold's target; `R` + case id -> the case's
//! [`RestrictedCase`] (the fields its restricted subjects' data is in, see
//! [`super::restriction`]), only for cases with a restricted subject. Dates
//! are day numbers of the events' recorded times (the engine clock).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::events::{Decision, GovernanceEvent, HoldKind, HoldTarget};
use super::restriction::{self, RestrictedCase, P_RESTRICTED};
use super::schedule::SubjectState;
use super::SubjectIds;
use crate::case::{CaseEvent, DefinitionRef};
use crate::definition::{CaseDefinition, FieldKey};
use crate::log::codec::DomainEvent;
use crate::log::{RecordedEvent, TenantId};
use crate::projection::builtin::{DefinitionCache, DefinitionResolver};
use crate::projection::keys::Key;
use crate::projection::{Changes, Handler, HandlerError, Projection, QueryError, Rows};
use crate::security::{Classification, PositionKey};

/// The projection's name.
pub const NAME: &str = "nominals";
/// The projection's version.
pub const VERSION: u32 = 2;

pub(crate) const P_SUBJECT: u8 = b'S';
pub(crate) const P_CASE: u8 = b'C';
pub(crate) const P_HOLD: u8 = b'H';

/// A case a subject appears in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appearance {
    /// The subject's role (the definition's subject key).
    pub role: String,
    /// The retention class of the case's definition.
    pub class: String,
    /// Whether it was police contact.
    pub contact: bool,
    /// The day it was recorded.
    pub day: i64,
    /// The marking of the field naming the subject (the case's is in its
    /// [`CaseRow`]).
    pub field_marking: Classification,
}

/// A hold as the projection keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRow {
    /// Its kind.
    pub kind: HoldKind,
    /// Why.
    pub reason: String,
    /// Who placed it.
    pub placed_by: String,
    /// The day.
    pub day: i64,
}

/// The last review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewRow {
    /// The day.
    pub day: i64,
    /// The decision.
    pub decision: Decision,
    /// The next review day set.
    pub next_review: Option<i64>,
}

/// A subject's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectRow {
    /// The first day recorded.
    pub first_recorded: i64,
    /// The last police contact (`None`: none yet).
    pub last_contact: Option<i64>,
    /// Date of birth, if recorded.
    pub date_of_birth: Option<i64>,
    /// The marking of the field that recorded it.
    pub dob_marking: Classification,
    /// The cases it appears in.
    pub appearances: BTreeMap<String, Appearance>,
    /// Holds on the subject itself, by id.
    pub holds: BTreeMap<String, HoldRow>,
    /// The last review.
    pub last_review: Option<ReviewRow>,
    /// Its state.
    pub state: SubjectState,
    /// Its governance stream's event count (0: none).
    pub version: u64,
    /// The erasure certificate (the `SubjectErased` event's id), once
    /// erased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

impl SubjectRow {
    /// The clear period's start: the last contact, else the first record.
    pub fn clear_start(&self) -> i64 {
        self.last_contact.unwrap_or(self.first_recorded)
    }
}

/// What the projection keeps of a case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseRow {
    /// Its definition.
    pub definition: DefinitionRef,
    /// Its marking (the highest its events carried).
    pub marking: Classification,
    /// The subject each subject role names now.
    pub subjects: BTreeMap<String, String>,
    /// Every subject that has appeared in the case (a role may have named
    /// another person before).
    #[serde(default)]
    pub appeared: BTreeSet<String>,
    /// Holds on the case, by id.
    pub holds: BTreeMap<String, HoldRow>,
    /// Fields whose values were erased (their subject's key destroyed),
    /// by field: what a view shows in their place.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub erased: BTreeMap<String, crate::records::sealing::ErasedField>,
}

/// The `nominals` projection.
pub struct NominalsProjection {
    resolver: Arc<dyn DefinitionResolver>,
    secret: PositionKey,
}

impl NominalsProjection {
    /// The projection, reading definitions from `resolver` and deriving
    /// subject ids from `secret`.
    pub(crate) fn new(resolver: Arc<dyn DefinitionResolver>, secret: PositionKey) -> Self {
        NominalsProjection { resolver, secret }
    }
}

impl Projection for NominalsProjection {
    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> u32 {
        VERSION
    }

    fn handler(&self, rows: Rows) -> Box<dyn Handler> {
        Box::new(NominalsHandler {
            rows,
            defs: DefinitionCache::new(Arc::clone(&self.resolver)),
            secret: self.secret.clone(),
            ids: None,
            subjects: HashMap::new(),
            cases: HashMap::new(),
            known: HashMap::new(),
            holds: HashMap::new(),
            restricted: restriction::Changed::new(),
        })
    }
}

struct NominalsHandler {
    rows: Rows,
    defs: DefinitionCache,
    secret: PositionKey,
    ids: Option<(TenantId, SubjectIds)>,
    subjects: HashMap<String, SubjectRow>,
    /// Case rows changed by the batch in progress.
    cases: HashMap<String, CaseRow>,
    /// Case rows of earlier batches, so most case events read no row.
    known: HashMap<String, CaseRow>,
    holds: HashMap<String, HoldTarget>,
    /// Restriction rows of cases the batch in progress recomputed.
    restricted: restriction::Changed,
}

/// Case rows [`NominalsHandler`] keeps in memory (cleared when full).
const KNOWN_CASES: usize = 50_000;

fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, HandlerError> {
    rmp_serde::from_slice(bytes).map_err(|e| HandlerError::decode(what.to_string(), e))
}

/// A stored row of `prefix` + `id`, read from `rows`.
pub(crate) fn load<T: serde::de::DeserializeOwned>(
    rows: &Rows,
    prefix: u8,
    id: &str,
) -> Result<Option<T>, QueryError> {
    match rows.get(&Key::new(prefix).raw(id.as_bytes()).0)? {
        None => Ok(None),
        Some(b) => rmp_serde::from_slice(&b)
            .map(Some)
            .map_err(|e| QueryError::Corrupt(format!("nominals row {id}: {e}"))),
    }
}

fn text(value: &serde_json::Value) -> Option<&str> {
    value.as_str().map(str::trim).filter(|s| !s.is_empty())
}

impl NominalsHandler {
    fn ids(&mut self, tenant: &TenantId) -> SubjectIds {
        match &self.ids {
            Some((t, ids)) if t == tenant => ids.clone(),
            _ => {
                let ids = SubjectIds::new(&self.secret, tenant);
                self.ids = Some((tenant.clone(), ids.clone()));
                ids
            }
        }
    }

    async fn subject(&mut self, id: &str) -> Result<Option<SubjectRow>, HandlerError> {
        if let Some(s) = self.subjects.get(id) {
            return Ok(Some(s.clone()));
        }
        self.rows.settled().await?;
        match self.rows.get(&Key::new(P_SUBJECT).raw(id.as_bytes()).0)? {
            None => Ok(None),
            Some(b) => decode("stored subject", &b).map(Some),
        }
    }

    async fn case(&mut self, id: &str) -> Result<Option<CaseRow>, HandlerError> {
        if let Some(c) = self.cases.get(id).or_else(|| self.known.get(id)) {
            return Ok(Some(c.clone()));
        }
        self.rows.settled().await?;
        match self.rows.get(&Key::new(P_CASE).raw(id.as_bytes()).0)? {
            None => Ok(None),
            Some(b) => {
                let row: CaseRow = decode("stored case", &b)?;
                if self.known.len() >= KNOWN_CASES {
                    self.known.clear();
                }
                self.known.insert(id.to_string(), row.clone());
                Ok(Some(row))
            }
        }
    }

    /// Records what `changes` say about the case's subjects.
    async fn touch(
        &mut self,
        event: &RecordedEvent,
        case_id: &str,
        case: &mut CaseRow,
        def: &CaseDefinition,
        changes: &BTreeMap<FieldKey, serde_json::Value>,
        erased: &[crate::records::sealing::ErasedField],
    ) -> Result<(), HandlerError> {
        let day = crate::streams::day_of(event.recorded);
        let ids = self.ids(event.stream.tenant());
        let marking = |key: &FieldKey| {
            def.field(key.as_str())
                .and_then(|f| f.classification)
                .unwrap_or_default()
        };
        for decl in &def.subjects {
            // An erased reference still names its subject: it was sealed
            // under the subject's own key.
            let named = changes
                .get(&decl.id)
                .and_then(text)
                .map(|r| ids.id(r).as_str().to_string())
                .or_else(|| {
                    erased
                        .iter()
                        .find(|e| e.field == decl.id)
                        .map(|e| e.subject.clone())
                });
            if let Some(id) = named {
                case.subjects.insert(decl.key.clone(), id.clone());
                case.appeared.insert(id.clone());
                let mut row = self.subject(&id).await?.unwrap_or(SubjectRow {
                    first_recorded: day,
                    last_contact: None,
                    date_of_birth: None,
                    dob_marking: Classification::default(),
                    appearances: BTreeMap::new(),
                    holds: BTreeMap::new(),
                    last_review: None,
                    state: SubjectState::Active,
                    version: 0,
                    certificate: None,
                });
                if !row.appearances.contains_key(case_id) {
                    row.appearances.insert(
                        case_id.to_string(),
                        Appearance {
                            role: decl.key.clone(),
                            class: def.retention.class_key().to_string(),
                            contact: decl.contact,
                            day,
                            field_marking: marking(&decl.id),
                        },
                    );
                    if decl.contact {
                        // New police contact: the clear period starts again.
                        row.last_contact = Some(row.last_contact.map_or(day, |d| d.max(day)));
                    }
                }
                self.subjects.insert(id, row);
            }
            let Some(dob_field) = &decl.date_of_birth else {
                continue;
            };
            let Some(dob) = changes
                .get(dob_field)
                .and_then(text)
                .and_then(|s| crate::calendar::parse_date(s).ok())
            else {
                continue;
            };
            if let Some(id) = case.subjects.get(&decl.key).cloned() {
                if let Some(mut row) = self.subject(&id).await? {
                    row.date_of_birth = Some(crate::calendar::day_number(dob));
                    row.dob_marking = marking(dob_field);
                    self.subjects.insert(id, row);
                }
            }
        }
        Ok(())
    }

    /// Recomputes what case `case_id` withholds for its restricted
    /// subjects (after its subjects or one of their states changed).
    async fn refresh_restriction(
        &mut self,
        tenant: &TenantId,
        case_id: &str,
    ) -> Result<(), HandlerError> {
        let Some(case) = self.case(case_id).await? else {
            return Ok(());
        };
        let mut roles = HashMap::new();
        let named: BTreeSet<String> = case
            .subjects
            .values()
            .chain(case.appeared.iter())
            .cloned()
            .collect();
        for subject in named {
            if let Some(row) = self.subject(&subject).await? {
                if row.state == SubjectState::Restricted {
                    let role = row
                        .appearances
                        .get(case_id)
                        .map(|a| a.role.clone())
                        .unwrap_or_default();
                    roles.insert(subject, role);
                }
            }
        }
        let withheld = if roles.is_empty() {
            RestrictedCase::default()
        } else {
            let def = self
                .defs
                .get(
                    tenant,
                    case.definition.key.as_str(),
                    case.definition.version,
                )
                .await?;
            restriction::withheld(&def, &case, |s| roles.get(s).cloned())
        };
        if !withheld.is_empty() {
            self.restricted.insert(case_id.to_string(), Some(withheld));
        } else if self.restricted.contains_key(case_id) || {
            self.rows.settled().await?;
            self.rows
                .get(&Key::new(P_RESTRICTED).raw(case_id.as_bytes()).0)?
                .is_some()
        } {
            self.restricted.insert(case_id.to_string(), None);
        }
        Ok(())
    }

    /// [`Self::refresh_restriction`] of every case `subjects` appear in.
    async fn refresh_cases_of(
        &mut self,
        tenant: &TenantId,
        subjects: &[String],
    ) -> Result<(), HandlerError> {
        let mut cases = BTreeSet::new();
        for s in subjects {
            if let Some(row) = self.subject(s).await? {
                cases.extend(row.appearances.keys().cloned());
            }
        }
        for case_id in cases {
            self.refresh_restriction(tenant, &case_id).await?;
        }
        Ok(())
    }

    async fn apply_case(&mut self, event: &RecordedEvent) -> Result<(), HandlerError> {
        let case_id = event.stream.id();
        let opened = self.defs.open(event).await?;
        let decoded = opened.event;
        let mut before = None;
        if !matches!(decoded, CaseEvent::CaseOpened { .. })
            && event.metadata.classification <= Classification::default()
            && !matches!(
                decoded,
                CaseEvent::CaseFileUpdated { .. } | CaseEvent::PlanItemCompleted { .. }
            )
        {
            // Nothing this projection keeps can change.
            return Ok(());
        }
        let mut case = match &decoded {
            CaseEvent::CaseOpened {
                definition,
                classification,
                ..
            } => CaseRow {
                definition: definition.clone(),
                marking: *classification,
                subjects: BTreeMap::new(),
                appeared: BTreeSet::new(),
                holds: BTreeMap::new(),
                erased: BTreeMap::new(),
            },
            other => match self.case(case_id).await? {
                Some(c) => {
                    before = Some(c.clone());
                    c
                }
                None => {
                    return Err(HandlerError::Inconsistent(format!(
                        "{} at version {} of case {case_id} comes before CaseOpened",
                        other.type_name(),
                        event.version.0
                    )))
                }
            },
        };
        case.marking = case.marking.max(event.metadata.classification);
        let def = self
            .defs
            .get(
                event.stream.tenant(),
                case.definition.key.as_str(),
                case.definition.version,
            )
            .await?;
        let changes = match &decoded {
            CaseEvent::CaseOpened { case_file, .. } => Some(case_file),
            CaseEvent::CaseFileUpdated { changes } => Some(changes),
            CaseEvent::PlanItemCompleted { outputs, .. } => Some(outputs),
            _ => None,
        };
        if let Some(changes) = changes {
            if !def.subjects.is_empty() {
                self.touch(event, case_id, &mut case, &def, changes, &opened.erased)
                    .await?;
                for f in changes.keys() {
                    case.erased.remove(f.as_str());
                }
                for e in &opened.erased {
                    case.erased.insert(e.field.as_str().to_string(), e.clone());
                }
            }
        }
        let subjects_changed = before
            .as_ref()
            .is_none_or(|b| b.subjects != case.subjects || b.appeared != case.appeared);
        if before.as_ref() != Some(&case) {
            self.cases.insert(case_id.to_string(), case);
        }
        if subjects_changed && !def.subjects.is_empty() {
            // A restricted subject named anew, or a role naming another.
            self.refresh_restriction(event.stream.tenant(), case_id)
                .await?;
        }
        Ok(())
    }

    async fn apply_governance(
        &mut self,
        event: &RecordedEvent,
        on_case: bool,
    ) -> Result<(), HandlerError> {
        let id = event.stream.id().to_string();
        let decoded = GovernanceEvent::from_recorded(event).map_err(|e| {
            HandlerError::decode(format!("governance event {}", event.locator()), e)
        })?;
        let missing = || {
            HandlerError::Inconsistent(format!(
                "{} names {id}, which the projection does not know",
                event.locator()
            ))
        };
        if on_case {
            let mut case = self.case(&id).await?.ok_or_else(missing)?;
            let placed = match decoded {
                GovernanceEvent::HoldPlaced {
                    hold,
                    target,
                    kind,
                    reason,
                    placed_by,
                    day,
                } => {
                    self.holds.insert(hold.clone(), target);
                    case.holds.insert(
                        hold,
                        HoldRow {
                            kind,
                            reason,
                            placed_by,
                            day,
                        },
                    );
                    true
                }
                GovernanceEvent::HoldReleased { hold, .. } => {
                    case.holds.remove(&hold);
                    false
                }
                GovernanceEvent::SubjectReviewed { .. } | GovernanceEvent::SubjectErased { .. } => {
                    false
                }
            };
            let mut now_restricted = Vec::new();
            if placed {
                // A hold turns a pending disposal into restriction.
                for subject in case.appeared.iter().cloned().collect::<Vec<_>>() {
                    if let Some(mut row) = self.subject(&subject).await? {
                        if row.state == SubjectState::AwaitingDisposal {
                            row.state = SubjectState::Restricted;
                            self.subjects.insert(subject.clone(), row);
                            now_restricted.push(subject);
                        }
                    }
                }
            }
            self.cases.insert(id, case);
            return self
                .refresh_cases_of(event.stream.tenant(), &now_restricted)
                .await;
        }
        let mut row = self.subject(&id).await?.ok_or_else(missing)?;
        let was_restricted = row.state == SubjectState::Restricted;
        row.version = event.version.0 + 1;
        match decoded {
            GovernanceEvent::SubjectReviewed {
                day,
                decision,
                next_review,
                ..
            } => {
                // A hold in force when the decision lands (on the subject or
                // one of its cases) wins: the engine refuses such a
                // decision, and one decided concurrently with a case hold
                // restricts the record instead of disposing of it.
                let held = !row.holds.is_empty() || {
                    let mut any = false;
                    for case_id in row.appearances.keys().cloned().collect::<Vec<_>>() {
                        if self
                            .case(&case_id)
                            .await?
                            .is_some_and(|c| !c.holds.is_empty())
                        {
                            any = true;
                            break;
                        }
                    }
                    any
                };
                row.state = match decision {
                    // Erasure is final: a review decided on a stale record
                    // changes nothing.
                    _ if row.state == SubjectState::Erased => SubjectState::Erased,
                    Decision::Retain => SubjectState::Retained,
                    Decision::Dispose if held => SubjectState::Restricted,
                    Decision::Dispose => SubjectState::AwaitingDisposal,
                    Decision::Restrict => SubjectState::Restricted,
                    Decision::Archive => SubjectState::Archived,
                };
                row.last_review = Some(ReviewRow {
                    day,
                    decision,
                    next_review,
                });
            }
            GovernanceEvent::HoldPlaced {
                hold,
                target,
                kind,
                reason,
                placed_by,
                day,
            } => {
                self.holds.insert(hold.clone(), target);
                row.holds.insert(
                    hold,
                    HoldRow {
                        kind,
                        reason,
                        placed_by,
                        day,
                    },
                );
                if row.state == SubjectState::AwaitingDisposal {
                    row.state = SubjectState::Restricted;
                }
            }
            GovernanceEvent::HoldReleased { hold, .. } => {
                row.holds.remove(&hold);
            }
            GovernanceEvent::SubjectErased { .. } => {
                row.state = SubjectState::Erased;
                row.certificate = Some(event.id.to_string());
            }
        }
        let restriction_changed = was_restricted != (row.state == SubjectState::Restricted);
        self.subjects.insert(id.clone(), row);
        if restriction_changed {
            self.refresh_cases_of(event.stream.tenant(), &[id]).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Handler for NominalsHandler {
    async fn apply(&mut self, event: &RecordedEvent) -> Result<(), HandlerError> {
        match event.stream.category() {
            crate::streams::CASE => self.apply_case(event).await,
            crate::streams::GOVERNANCE => self.apply_governance(event, false).await,
            crate::streams::CASE_HOLD => self.apply_governance(event, true).await,
            _ => Ok(()),
        }
    }

    fn write(&mut self, changes: &mut Changes) -> Result<(), HandlerError> {
        for (id, row) in &self.subjects {
            let bytes = rmp_serde::to_vec_named(row).map_err(HandlerError::other)?;
            changes.insert(&Key::new(P_SUBJECT).raw(id.as_bytes()).0, bytes)?;
        }
        for (id, row) in &self.cases {
            let bytes = rmp_serde::to_vec_named(row).map_err(HandlerError::other)?;
            changes.insert(&Key::new(P_CASE).raw(id.as_bytes()).0, bytes)?;
        }
        for (id, target) in &self.holds {
            let bytes = rmp_serde::to_vec_named(target).map_err(HandlerError::other)?;
            changes.insert(&Key::new(P_HOLD).raw(id.as_bytes()).0, bytes)?;
        }
        for (id, row) in &self.restricted {
            let key = Key::new(P_RESTRICTED).raw(id.as_bytes()).0;
            match row {
                Some(row) => {
                    let bytes = rmp_serde::to_vec_named(row).map_err(HandlerError::other)?;
                    changes.insert(&key, bytes)?;
                }
                None => changes.remove(&key)?,
            }
        }
        Ok(())
    }

    fn queued(&mut self) {
        if self.known.len() >= KNOWN_CASES {
            self.known.clear();
        }
        self.known.extend(self.cases.drain());
        self.subjects.clear();
        self.holds.clear();
        self.restricted.clear();
    }

    fn discarded(&mut self) {
        self.subjects.clear();
        self.cases.clear();
        self.known.clear();
        self.holds.clear();
        self.restricted.clear();
    }
}
