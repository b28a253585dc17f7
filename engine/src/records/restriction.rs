//! Restriction of processing (DPA 2018 s47(2)): which case-file fields a
//! restricted subject's data withholds, and where the engine looks it up.
//!
//! A subject is *restricted* when its state is
//! [`SubjectState::Restricted`](super::SubjectState::Restricted) (a
//! `restrict` review, or a hold landing on a record awaiting disposal).
//! The fields a case holds about it are the fields of the `[[subjects]]`
//! declarations that name it in that case: its `id`, its `date_of_birth`
//! and its `fields`. The `nominals` projection keeps, for every case with
//! at least one restricted subject, one row `R` + case id →
//! [`RestrictedCase`] (those fields and the subject ids), recomputed
//! whenever a subject's state or a case's subjects change; a case with no
//! restricted subject has no row.
//!
//! Reads check that row **when they read** (one lookup for a case, one
//! prefix scan of the few restricted cases for a search), so a view,
//! timeline or search index built before the restriction never serves the
//! withheld data: nothing derived needs rebuilding, and lifting the
//! restriction (a `retain` review) makes the data visible again at once.
//! The fields are withheld through [`crate::case::Disclosure::withholding`],
//! the one rule every output of a case asks.
//!
//! Only a principal with [`EVIDENTIAL_ROLE`] who states a purpose reads the
//! withheld data, through [`crate::Engine::case_view_evidential`]; every
//! such read is one audit entry naming the purpose and the restricted
//! subjects' ids (keyed hashes, no personal data).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::projection::CaseRow;
use crate::definition::CaseDefinition;
use crate::projection::keys::{prefix_end, Key};
use crate::projection::{QueryError, Rows};

/// The role granted for evidential use of restricted data.
pub const EVIDENTIAL_ROLE: &str = "evidential_reader";

/// The prefix of the `nominals` rows of restricted cases.
pub(crate) const P_RESTRICTED: u8 = b'R';

/// What a case withholds because of its restricted subjects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestrictedCase {
    /// The restricted subjects appearing in the case (their ids).
    pub subjects: BTreeSet<String>,
    /// The case-file fields holding their data.
    pub fields: BTreeSet<String>,
}

impl RestrictedCase {
    /// Whether nothing is withheld.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.subjects.is_empty()
    }

    /// Every field of every `[[subjects]]` declaration of `def`: what a
    /// reader is shown when the restrictions cannot be read (fail closed).
    pub(crate) fn every_subject_field(def: &CaseDefinition) -> Self {
        let mut out = RestrictedCase::default();
        for decl in &def.subjects {
            out.fields.extend(subject_fields(decl));
        }
        out
    }
}

/// The fields of one subject declaration: id, date of birth, the rest.
fn subject_fields(decl: &crate::definition::SubjectDef) -> impl Iterator<Item = String> + '_ {
    std::iter::once(decl.id.as_str().to_string())
        .chain(decl.date_of_birth.iter().map(|f| f.as_str().to_string()))
        .chain(decl.fields.iter().map(|f| f.as_str().to_string()))
}

/// What `case` (of `def`) withholds, given the role each restricted
/// subject appears under: the fields of the role currently naming a
/// restricted subject, and of the role under which a restricted subject
/// that a role no longer names first appeared (its data is still in the
/// case's history).
///
/// `restricted(subject)` is `Some(first role in this case)` for a
/// restricted subject, `None` for any other.
pub(crate) fn withheld(
    def: &CaseDefinition,
    case: &CaseRow,
    restricted: impl Fn(&str) -> Option<String>,
) -> RestrictedCase {
    let mut roles: BTreeSet<String> = BTreeSet::new();
    let mut subjects = BTreeSet::new();
    for (role, subject) in &case.subjects {
        if restricted(subject).is_some() {
            roles.insert(role.clone());
            subjects.insert(subject.clone());
        }
    }
    for subject in &case.appeared {
        if let Some(role) = restricted(subject) {
            roles.insert(role);
            subjects.insert(subject.clone());
        }
    }
    let fields = def
        .subjects
        .iter()
        .filter(|d| roles.contains(&d.key))
        .flat_map(subject_fields)
        .collect();
    RestrictedCase { subjects, fields }
}

/// The restriction row of `case_id`, if the case withholds anything.
///
/// Errors: [`QueryError::Corrupt`] for a row that does not decode; storage
/// errors.
pub(crate) fn load(rows: &Rows, case_id: &str) -> Result<Option<RestrictedCase>, QueryError> {
    super::projection::load(rows, P_RESTRICTED, case_id)
}

/// Every restricted case of the tenant: case id (as stored in index keys)
/// → withheld fields.
///
/// Errors: as [`load`].
pub(crate) fn all(rows: &Rows) -> Result<HashMap<Vec<u8>, BTreeSet<String>>, QueryError> {
    let start = Key::new(P_RESTRICTED).0;
    let end = prefix_end(&start);
    let mut out = HashMap::new();
    for kv in rows.range(start..end) {
        let (k, v) = kv?;
        let row: RestrictedCase = rmp_serde::from_slice(&v)
            .map_err(|e| QueryError::Corrupt(format!("nominals restriction row: {e}")))?;
        out.insert(k[1..].to_vec(), row.fields);
    }
    Ok(out)
}

/// The rows of restricted cases a batch changed: `Some` to write, `None`
/// to remove.
pub(crate) type Changed = BTreeMap<String, Option<RestrictedCase>>;

impl crate::Engine {
    /// The tenant's `nominals` tree as it serves, if it is of a version
    /// that keeps restriction rows (while an older one still serves during
    /// an upgrade's rebuild, the restrictions are not known).
    ///
    /// Errors: [`QueryError::NotReady`] for an older generation; the
    /// host's errors.
    async fn restrictions(
        &self,
        tenant: &crate::log::TenantId,
    ) -> Result<std::sync::Arc<crate::projection::Generation>, QueryError> {
        let gen = self.serving_tree(super::projection::NAME, tenant).await?;
        if gen.version < super::projection::VERSION {
            return Err(QueryError::NotReady {
                projection: super::projection::NAME.to_string(),
            });
        }
        Ok(gen)
    }

    /// What case `case_id` (of `def`) withholds now for its restricted
    /// subjects, read from the `nominals` projection as it serves. Fails
    /// closed: when the restrictions cannot be read (the engine not
    /// started, the projection not ready or failing), every subject field
    /// of the definition is withheld.
    pub(crate) async fn withheld_in(
        &self,
        tenant: &crate::log::TenantId,
        def: &CaseDefinition,
        case_id: &str,
    ) -> RestrictedCase {
        if def.subjects.is_empty() {
            return RestrictedCase::default();
        }
        let read = async {
            let gen = self.restrictions(tenant).await?;
            load(&gen.rows, case_id)
        };
        match read.await {
            Ok(row) => row.unwrap_or_default(),
            Err(e) => {
                tracing::debug!(
                    target: "casebook::records",
                    case_id,
                    error = %e,
                    "restrictions unreadable: every subject field withheld"
                );
                RestrictedCase::every_subject_field(def)
            }
        }
    }

    /// The fields of `case_id` whose values were erased (crypto-shredding),
    /// each with its certificate, of those `principal` may know of (the
    /// field's own marking within their clearance): what a view shows in
    /// their place. Empty when the `nominals` record cannot be read (the
    /// values are gone either way; only the notice is missing).
    pub(crate) async fn erased_in(
        &self,
        principal: &crate::security::Principal,
        def: &CaseDefinition,
        case_id: &str,
    ) -> Vec<crate::records::ErasedField> {
        if def.subjects.is_empty() {
            return Vec::new();
        }
        let read = async {
            let gen = self.restrictions(&principal.tenant).await?;
            super::projection::load::<CaseRow>(&gen.rows, super::projection::P_CASE, case_id)
        };
        let Ok(Some(row)) = read.await else {
            return Vec::new();
        };
        row.erased
            .into_values()
            .filter(|e| {
                def.field(e.field.as_str())
                    .is_some_and(|f| principal.may_see(f.classification.unwrap_or_default()))
            })
            .collect()
    }

    /// The restriction row of `case_id`, for a query that already reads
    /// projections (no fallback: its error is the query's).
    ///
    /// Errors: the host's errors; [`QueryError::Corrupt`].
    pub(crate) async fn restricted_case(
        &self,
        tenant: &crate::log::TenantId,
        case_id: &str,
    ) -> Result<RestrictedCase, QueryError> {
        let gen = self.restrictions(tenant).await?;
        Ok(load(&gen.rows, case_id)?.unwrap_or_default())
    }

    /// Every restricted case of `tenant` with its withheld fields (for
    /// search).
    ///
    /// Errors: as [`crate::Engine::restricted_case`].
    pub(crate) async fn restricted_cases(
        &self,
        tenant: &crate::log::TenantId,
    ) -> Result<HashMap<Vec<u8>, BTreeSet<String>>, QueryError> {
        let gen = self.restrictions(tenant).await?;
        all(&gen.rows)
    }

    /// The case as [`crate::Engine::case_view`] shows it, **with** the data
    /// of its restricted subjects (DPA 2018 s47(2)), for evidential use.
    ///
    /// Needs the [`EVIDENTIAL_ROLE`] role and a purpose stated in the
    /// read's [`crate::audit::ReadContext`] (non-blank, at most
    /// [`crate::audit::MAX_PURPOSE`] bytes). Every call is one audit entry
    /// ([`crate::audit::ReadKind::EvidentialView`]) with the purpose and
    /// the ids of the restricted subjects read (keyed hashes: no personal
    /// data). A caller without the role gets exactly what
    /// [`crate::Engine::case_view`] gives them — restricted data withheld,
    /// no sign that any exists — and the entry says so. Clearance and the
    /// definition's markings apply as to any read.
    ///
    /// Errors: [`crate::audit::AuditError::EvidentialPurposeRequired`]
    /// (with the role, no purpose); those of [`crate::Engine::case_view`].
    pub async fn case_view_evidential<'a>(
        &self,
        reader: impl Into<crate::audit::ReadContext<'a>>,
        case_id: &str,
        consistency: crate::projection::Consistency,
    ) -> Result<crate::projection::query::ProjectedCase, QueryError> {
        let reader = reader.into();
        let evidential = reader.principal.has_role(EVIDENTIAL_ROLE);
        let mut marking = None;
        let result = if evidential && !reader.has_purpose() {
            Err(crate::audit::AuditError::EvidentialPurposeRequired {
                case_id: case_id.to_string(),
            }
            .into())
        } else {
            self.case_view_inner(&reader, case_id, consistency, &mut marking, !evidential)
                .await
        };
        let query = match (&result, evidential) {
            (_, false) => format!(
                "evidential view of case {case_id} without the {EVIDENTIAL_ROLE} role: restricted data withheld"
            ),
            (Ok((_, r)), true) if !r.subjects.is_empty() => format!(
                "evidential view of case {case_id}: restricted subjects {}",
                r.subjects.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
            (Ok(_), true) => format!("evidential view of case {case_id}: no restricted subject"),
            (Err(_), true) => format!("evidential view of case {case_id}"),
        };
        let marking = marking.unwrap_or_default();
        let subject = crate::audit::Subject::query(query, marking).with_cases([(case_id, marking)]);
        let result = result.map(|(case, _)| case);
        self.audited(
            &reader,
            crate::audit::ReadKind::EvidentialView,
            subject,
            result,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::Format;

    fn def() -> CaseDefinition {
        CaseDefinition::parse(
            r#"
key = "offence"
name = "Offence"
version = 1
roles = ["officer"]
retention = { group = "group3" }
permissions = { open = ["officer"] }
fields = [
  { key = "suspect_ref", type = "person" }, { key = "suspect_dob", type = "date" },
  { key = "suspect_name", type = "text" }, { key = "victim_ref", type = "person" },
  { key = "victim_address", type = "text" },
]
subjects = [
  { key = "suspect", id = "suspect_ref", date_of_birth = "suspect_dob", fields = ["suspect_name"] },
  { key = "victim", id = "victim_ref", fields = ["victim_address"] },
]
activities = [{ key = "investigate", name = "Investigate", kind = "human_task", roles = ["officer"] }]
"#,
            Format::Toml,
        )
        .unwrap()
    }

    fn case(subjects: &[(&str, &str)], appeared: &[&str]) -> CaseRow {
        CaseRow {
            definition: crate::case::DefinitionRef {
                key: crate::definition::CaseTypeKey::new("offence"),
                version: 1,
                fingerprint: crate::definition::Fingerprint([0; 32]),
            },
            marking: Default::default(),
            subjects: subjects
                .iter()
                .map(|(r, s)| (r.to_string(), s.to_string()))
                .collect(),
            appeared: appeared.iter().map(|s| s.to_string()).collect(),
            holds: BTreeMap::new(),
            erased: BTreeMap::new(),
        }
    }

    #[test]
    fn a_restricted_subject_withholds_its_roles_fields_only() {
        let def = def();
        let c = case(&[("suspect", "nA"), ("victim", "nB")], &["nA", "nB"]);
        let w = withheld(&def, &c, |s| (s == "nA").then(|| "suspect".to_string()));
        assert_eq!(
            w.fields,
            ["suspect_dob", "suspect_name", "suspect_ref"]
                .map(String::from)
                .into()
        );
        assert_eq!(w.subjects, ["nA".to_string()].into());
        let none = withheld(&def, &c, |_| None);
        assert!(none.is_empty());
    }

    #[test]
    fn a_restricted_subject_no_longer_named_still_withholds_its_history() {
        let def = def();
        // The victim role named nA first, then nB.
        let c = case(&[("victim", "nB")], &["nA", "nB"]);
        let w = withheld(&def, &c, |s| (s == "nA").then(|| "victim".to_string()));
        assert_eq!(
            w.fields,
            ["victim_address", "victim_ref"].map(String::from).into()
        );
    }

    #[test]
    fn a_disclosure_withholding_fields_hides_them_in_views_and_events() {
        use crate::case::{CaseEvent, Disclosure};
        use crate::security::Classification;
        let def = def();
        let withheld: BTreeSet<String> = ["suspect_name".to_string()].into();
        let see = Disclosure::for_clearance(&def, Classification::Official, Classification::Secret)
            .withholding(&withheld);
        assert!(!see.field("suspect_name"));
        assert!(see.field("victim_address"));
        let update = |fields: &[&str]| CaseEvent::CaseFileUpdated {
            changes: fields
                .iter()
                .map(|f| (crate::definition::FieldKey::new(*f), serde_json::json!("x")))
                .collect(),
        };
        let kept = see.events_with(
            vec![
                update(&["suspect_name"]),
                update(&["suspect_name", "victim_address"]),
            ],
            BTreeMap::new(),
        );
        assert_eq!(kept, vec![update(&["victim_address"])]);
        // An empty set withholds nothing.
        let none = BTreeSet::new();
        let all = Disclosure::for_clearance(&def, Classification::Official, Classification::Secret)
            .withholding(&none);
        assert!(all.field("suspect_name"));
    }

    #[test]
    fn failing_closed_withholds_every_subject_field() {
        let all = RestrictedCase::every_subject_field(&def());
        assert_eq!(all.fields.len(), 5);
    }
}
