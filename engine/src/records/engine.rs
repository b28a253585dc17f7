//! The records API on [`Engine`]: the retention policy, subject reviews,
//! legal holds, the review-due query and a subject's record.
//!
//! Commands wait until the `nominals` projection has applied the whole log
//! (so they decide on every contact, review and hold already acknowledged),
//! then append one governance event at the version they read: a decision
//! taken on a record that changed meanwhile is refused
//! ([`RecordsError::WrongVersion`]), never half-applied.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::error::RecordsError;
use super::events::{Decision, GovernanceEvent, HoldKind, HoldTarget};
use super::projection::{self, CaseRow, SubjectRow, P_CASE, P_HOLD, P_SUBJECT};
use super::schedule::{self, Disposable, Facts, SubjectState};
use super::{
    Hold, ReviewDueItem, ReviewDueQuery, ReviewOutcome, ReviewSubject, SubjectId, SubjectIds,
    SubjectRecord, RECORDS_ROLE,
};
use crate::audit::{ReadContext, ReadKind, Subject};
use crate::calendar::{date_of, day_number, format_date, Date};
use crate::engine::{Engine, EngineError};
use crate::log::codec::DomainEvent;
use crate::log::{EventId, ExpectedVersion, LogError, Metadata, Source, StreamVersion, TenantId};
use crate::projection::keys::{prefix_end, Key};
use crate::projection::query::Page;
use crate::projection::{Generation, Rows};
use crate::resources::retention::{AtDue, RetentionClass, RetentionPolicy, POLICY_NAME};
use crate::resources::{ResourceDeployment, ResourceError, ResourceKind, ResourceProblem};
use crate::security::{Classification, Principal};

/// Longest reason or rationale accepted (bytes).
pub const MAX_REASON_BYTES: usize = 4096;

/// A subject's row with the rows of the cases it appears in.
pub(super) struct Loaded {
    pub(super) id: String,
    pub(super) row: SubjectRow,
    pub(super) cases: Vec<(String, Option<CaseRow>)>,
}

impl Loaded {
    fn marking(&self) -> Classification {
        let cases = self.cases.iter().map(|(id, c)| {
            let field = self.row.appearances.get(id).map(|a| a.field_marking);
            c.as_ref()
                .map(|c| c.marking)
                .unwrap_or_default()
                .max(field.unwrap_or_default())
        });
        cases.fold(self.row.dob_marking, Classification::max)
    }

    pub(super) fn holds(&self) -> Vec<Hold> {
        let mut out = Vec::new();
        let day = |d: i64| date_of(d).unwrap_or(Date::MIN);
        for (id, h) in &self.row.holds {
            out.push(Hold {
                id: id.clone(),
                target: HoldTarget::Subject(self.id.clone()),
                kind: h.kind,
                reason: h.reason.clone(),
                placed_by: h.placed_by.clone(),
                placed_on: day(h.day),
            });
        }
        for (case_id, c) in &self.cases {
            for (id, h) in c.iter().flat_map(|c| &c.holds) {
                out.push(Hold {
                    id: id.clone(),
                    target: HoldTarget::Case(case_id.clone()),
                    kind: h.kind,
                    reason: h.reason.clone(),
                    placed_by: h.placed_by.clone(),
                    placed_on: day(h.day),
                });
            }
        }
        out
    }

    fn facts(&self) -> Facts {
        Facts {
            first_recorded: self.row.first_recorded,
            clear_start: self.row.clear_start(),
            date_of_birth: self.row.date_of_birth,
            last_review: self
                .row
                .last_review
                .as_ref()
                .map(|r| (r.day, r.next_review)),
        }
    }

    /// The class in force: the most serious of its cases' in `policy`.
    fn class<'p>(
        &self,
        policy: &'p RetentionPolicy,
        version: u32,
    ) -> Result<&'p RetentionClass, RecordsError> {
        let mut best: Option<(usize, &RetentionClass)> = None;
        for a in self.row.appearances.values() {
            let Some(found) = policy.class(&a.class) else {
                return Err(RecordsError::ClassNotInPolicy {
                    subject: self.id.clone(),
                    class: a.class.clone(),
                    policy_version: version,
                });
            };
            if best.is_none_or(|(rank, _)| found.0 < rank) {
                best = Some(found);
            }
        }
        best.map(|(_, c)| c)
            .ok_or_else(|| RecordsError::ClassNotInPolicy {
                subject: self.id.clone(),
                class: String::new(),
                policy_version: version,
            })
    }
}

fn load_subject(rows: &Rows, id: &str) -> Result<Option<Loaded>, RecordsError> {
    let Some(row) = projection::load::<SubjectRow>(rows, P_SUBJECT, id)? else {
        return Ok(None);
    };
    let mut cases = Vec::new();
    for case_id in row.appearances.keys() {
        let case = projection::load::<CaseRow>(rows, P_CASE, case_id)?;
        cases.push((case_id.clone(), case));
    }
    Ok(Some(Loaded {
        id: id.to_string(),
        row,
        cases,
    }))
}

fn query(e: crate::projection::RowsError) -> RecordsError {
    RecordsError::Query(e.into())
}

pub(super) fn require_role(principal: &Principal, action: &str) -> Result<(), RecordsError> {
    if principal.has_role(RECORDS_ROLE) {
        Ok(())
    } else {
        Err(RecordsError::Forbidden {
            principal: principal.to_string(),
            action: action.to_string(),
            needed: RECORDS_ROLE.to_string(),
        })
    }
}

fn check_text(path: &str, text: &str, problems: &mut Vec<ResourceProblem>) {
    if text.trim().is_empty() {
        problems.push(ResourceProblem::new(path, "must not be empty"));
    } else if text.len() > MAX_REASON_BYTES {
        problems.push(ResourceProblem::new(
            path,
            format!("at most {MAX_REASON_BYTES} bytes"),
        ));
    }
}

fn expected(version: u64) -> ExpectedVersion {
    match version {
        0 => ExpectedVersion::NoStream,
        v => ExpectedVersion::Exact(StreamVersion(v - 1)),
    }
}

fn day_date(day: i64) -> Date {
    date_of(day).unwrap_or(Date::MAX)
}

impl Engine {
    /// The subject-id derivation of `tenant`.
    pub(crate) fn subject_ids(&self, tenant: &TenantId) -> SubjectIds {
        SubjectIds::new(self.position_secret(), tenant)
    }

    /// The id the engine knows the person with POLE reference `reference`
    /// by in the principal's tenant (a keyed hash: it reveals nothing of
    /// the reference). Needs the `records_officer` role.
    ///
    /// Errors: access errors, [`RecordsError::Forbidden`],
    /// [`RecordsError::Invalid`] for an empty reference.
    pub async fn subject_id(
        &self,
        principal: &Principal,
        reference: &str,
    ) -> Result<SubjectId, RecordsError> {
        self.admit(principal).await?;
        require_role(principal, "derive subject ids")?;
        if reference.trim().is_empty() {
            return Err(RecordsError::invalid("reference", "must not be empty"));
        }
        Ok(self.subject_ids(&principal.tenant).id(reference))
    }

    /// The retention policy in force for the principal's tenant and its
    /// version (0: the shipped defaults, until one is deployed).
    ///
    /// Errors: access errors; a stored policy that no longer parses
    /// ([`ResourceError::Invalid`]); store errors.
    pub async fn retention_policy(
        &self,
        principal: &Principal,
    ) -> Result<(u32, Arc<RetentionPolicy>), RecordsError> {
        match self
            .resource(principal, ResourceKind::Retention, POLICY_NAME, None)
            .await
        {
            Ok(r) => {
                let policy = RetentionPolicy::parse(&r.source).map_err(|problems| {
                    EngineError::from(ResourceError::Invalid {
                        kind: ResourceKind::Retention,
                        name: POLICY_NAME.into(),
                        problems,
                    })
                })?;
                Ok((r.version, Arc::new(policy)))
            }
            Err(EngineError::Resource(ResourceError::Unknown { .. })) => {
                Ok((0, Arc::new(RetentionPolicy::defaults())))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Deploys the principal's tenant's retention policy (administrator
    /// role), validated first; the same content again is a no-op. See
    /// [`crate::resources::retention`] and `docs/RETENTION.md`.
    ///
    /// Errors: those of [`Engine::deploy_resource`].
    pub async fn deploy_retention_policy(
        &self,
        principal: &Principal,
        source: &str,
    ) -> Result<ResourceDeployment, EngineError> {
        self.deploy_resource(principal, ResourceKind::Retention, POLICY_NAME, source)
            .await
    }

    /// The `nominals` tree, caught up with the log.
    pub(super) async fn nominals(
        &self,
        tenant: &TenantId,
    ) -> Result<Arc<Generation>, RecordsError> {
        Ok(self.caught_up_tree(projection::NAME, tenant).await?)
    }

    /// The subject, if the principal may see it (else `UnknownSubject`).
    pub(super) fn visible_subject(
        &self,
        principal: &Principal,
        rows: &Rows,
        id: &str,
    ) -> Result<Loaded, RecordsError> {
        let unknown = || RecordsError::UnknownSubject {
            tenant: principal.tenant.clone(),
            subject: id.to_string(),
        };
        let loaded = load_subject(rows, id)?.ok_or_else(unknown)?;
        if principal.may_see(loaded.marking()) {
            Ok(loaded)
        } else {
            Err(unknown())
        }
    }

    /// Records a review of a subject: the reviewer (the principal), their
    /// role, the NRAC answers (one per question of the policy in force),
    /// the decision and the next review date, in one `SubjectReviewed`
    /// event. Needs the `records_officer` role and the engine started.
    ///
    /// Errors: [`RecordsError::Invalid`] listing every problem of the
    /// request (paths `nrac[i].question`, `nrac`, `next_review`,
    /// `rationale`, `reviewer_role`); [`RecordsError::UnknownSubject`] (also
    /// for a subject above the caller's clearance);
    /// [`RecordsError::WrongVersion`]; for a dispose decision
    /// [`RecordsError::UnderHold`] and [`RecordsError::RetainedUntil`];
    /// [`RecordsError::AwaitingDisposal`]; [`RecordsError::AlreadyErased`];
    /// [`RecordsError::ClassNotInPolicy`];
    /// access, role, projection and store errors.
    pub async fn review_subject(
        &self,
        principal: &Principal,
        review: ReviewSubject,
    ) -> Result<ReviewOutcome, RecordsError> {
        self.admit(principal).await?;
        require_role(principal, "review subjects")?;
        let (policy_version, policy) = self.retention_policy(principal).await?;
        let today = crate::streams::day_of(self.now());
        let mut problems = Vec::new();
        check_text("reviewer_role", &review.reviewer_role, &mut problems);
        check_text("rationale", &review.rationale, &mut problems);
        let mut answered = BTreeSet::new();
        for (i, a) in review.nrac.iter().enumerate() {
            let path = format!("nrac[{i}].question");
            if !policy.nrac.iter().any(|q| q.key == a.question) {
                problems.push(ResourceProblem::new(
                    path,
                    format!("the policy has no NRAC question '{}'", a.question),
                ));
            } else if !answered.insert(a.question.as_str()) {
                problems.push(ResourceProblem::new(
                    path,
                    format!("'{}' is answered twice", a.question),
                ));
            }
            check_text(&format!("nrac[{i}].rationale"), &a.rationale, &mut problems);
        }
        for q in &policy.nrac {
            if !answered.contains(q.key.as_str()) && review.nrac.iter().all(|a| a.question != q.key)
            {
                problems.push(ResourceProblem::new(
                    "nrac",
                    format!("answer the NRAC question '{}'", q.key),
                ));
            }
        }
        let next_review = review.next_review.map(day_number);
        match (review.decision, next_review) {
            (Decision::Dispose, Some(_)) => problems.push(ResourceProblem::new(
                "next_review",
                "a dispose decision sets no next review",
            )),
            (_, Some(next)) if next <= today => problems.push(ResourceProblem::new(
                "next_review",
                format!("must be after today ({})", format_date(day_date(today))),
            )),
            _ => {}
        }
        if !problems.is_empty() {
            return Err(RecordsError::Invalid { problems });
        }
        let gen = self.nominals(&principal.tenant).await?;
        let subject = self.visible_subject(principal, &gen.rows, review.subject.as_str())?;
        if let Some(expected) = review.expected_version {
            if expected != subject.row.version {
                return Err(RecordsError::WrongVersion {
                    subject: subject.id.clone(),
                    expected,
                    actual: subject.row.version,
                });
            }
        }
        if subject.row.state == SubjectState::Erased {
            return Err(RecordsError::AlreadyErased {
                subject: subject.id.clone(),
                certificate: subject.row.certificate.clone().unwrap_or_default(),
            });
        }
        if subject.row.state == SubjectState::AwaitingDisposal {
            return Err(RecordsError::AwaitingDisposal {
                subject: subject.id.clone(),
            });
        }
        let class = subject.class(&policy, policy_version)?;
        let facts = subject.facts();
        let holds = subject.holds();
        let next_review = if review.decision == Decision::Dispose {
            if !holds.is_empty() {
                return Err(RecordsError::UnderHold {
                    subject: subject.id.clone(),
                    holds: holds
                        .iter()
                        .map(|h| format!("{} {}", h.kind.as_str(), h.id))
                        .collect(),
                });
            }
            let allowed = schedule::disposable(class, &facts);
            if !allowed.allows(today) {
                return Err(RecordsError::RetainedUntil {
                    subject: subject.id.clone(),
                    age: class.retain_until_age.unwrap_or_default(),
                    until: match allowed {
                        Disposable::From(d) => date_of(d),
                        _ => None,
                    },
                });
            }
            None
        } else {
            match next_review {
                Some(n) => Some(n),
                None => match &class.review_every {
                    Some(p) => schedule::add(today, p),
                    None => {
                        return Err(RecordsError::invalid(
                            "next_review",
                            format!(
                                "class '{}' has no review_every: give the next review date",
                                class.key
                            ),
                        ))
                    }
                },
            }
        };
        let event = GovernanceEvent::SubjectReviewed {
            reviewer: principal.subject.clone(),
            reviewer_role: review.reviewer_role.clone(),
            day: today,
            class: class.key.clone(),
            policy_version,
            clear_period_start: facts.clear_start,
            nrac: review.nrac.clone(),
            decision: review.decision,
            next_review,
            holds: holds.iter().map(|h| h.id.clone()).collect(),
            rationale: review.rationale.clone(),
        };
        let version = self
            .append_governance(
                principal,
                &subject,
                EventId::new(),
                event,
                &review.rationale,
            )
            .await?;
        Ok(ReviewOutcome {
            subject: review.subject,
            decision: review.decision,
            next_review: next_review.and_then(date_of),
            version,
        })
    }

    /// Appends `event` to the subject's governance stream at the version
    /// read; returns the version after it.
    pub(super) async fn append_governance(
        &self,
        principal: &Principal,
        subject: &Loaded,
        id: EventId,
        event: GovernanceEvent,
        reason: &str,
    ) -> Result<u64, RecordsError> {
        let stream = crate::streams::governance(&principal.tenant, &subject.id)?;
        let mut metadata = Metadata::new(principal.actor(), Source::system("casebook"));
        metadata.reason = Some(reason.to_string());
        metadata.classification = subject.marking();
        let data = event.to_event_data_with_id(id, metadata)?;
        match self
            .raw_store()
            .append(&stream, expected(subject.row.version), vec![data])
            .await
        {
            Ok(_) => {
                self.follow_tenant(&principal.tenant);
                self.in_force(&principal.tenant).await?;
                Ok(subject.row.version + 1)
            }
            Err(LogError::WrongExpectedVersion { actual, .. }) => Err(RecordsError::WrongVersion {
                subject: subject.id.clone(),
                expected: subject.row.version,
                actual: actual.map_or(0, |v| v.0 + 1),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Places a legal hold on a subject or a case (every subject appearing
    /// in it), with its kind and reason: while it is in force no dispose
    /// decision is accepted, and a subject awaiting disposal becomes
    /// restricted. Needs the `records_officer` role.
    ///
    /// Errors: [`RecordsError::Invalid`] (`reason`);
    /// [`RecordsError::UnknownSubject`] / [`RecordsError::UnknownCase`]
    /// (also for one above the caller's clearance);
    /// [`RecordsError::WrongVersion`] when the subject changed meanwhile;
    /// access, role, projection and store errors.
    pub async fn place_hold(
        &self,
        principal: &Principal,
        target: HoldTarget,
        kind: HoldKind,
        reason: &str,
    ) -> Result<Hold, RecordsError> {
        self.admit(principal).await?;
        require_role(principal, "place holds")?;
        let mut problems = Vec::new();
        check_text("reason", reason, &mut problems);
        if !problems.is_empty() {
            return Err(RecordsError::Invalid { problems });
        }
        if let HoldTarget::Subject(id) = &target {
            SubjectId::parse(id)?;
        }
        let today = crate::streams::day_of(self.now());
        // The hold's id is the id of the event that places it.
        let event_id = EventId::new();
        let hold_id = event_id.to_string();
        let event = GovernanceEvent::HoldPlaced {
            hold: hold_id.clone(),
            target: target.clone(),
            kind,
            reason: reason.to_string(),
            placed_by: principal.subject.clone(),
            day: today,
        };
        let gen = self.nominals(&principal.tenant).await?;
        match &target {
            HoldTarget::Subject(id) => {
                let subject = self.visible_subject(principal, &gen.rows, id)?;
                self.append_governance(principal, &subject, event_id, event, reason)
                    .await?;
            }
            HoldTarget::Case(case_id) => {
                let case = self.visible_case(principal, &gen.rows, case_id)?;
                self.append_case_hold(principal, case_id, &case, event_id, event, reason)
                    .await?;
            }
        }
        Ok(Hold {
            id: hold_id,
            target,
            kind,
            reason: reason.to_string(),
            placed_by: principal.subject.clone(),
            placed_on: day_date(today),
        })
    }

    fn visible_case(
        &self,
        principal: &Principal,
        rows: &Rows,
        case_id: &str,
    ) -> Result<CaseRow, RecordsError> {
        let unknown = || RecordsError::UnknownCase {
            tenant: principal.tenant.clone(),
            case_id: case_id.to_string(),
        };
        crate::streams::case(&principal.tenant, case_id).map_err(|_| unknown())?;
        let case = projection::load::<CaseRow>(rows, P_CASE, case_id)?.ok_or_else(unknown)?;
        if principal.may_see(case.marking) {
            Ok(case)
        } else {
            Err(unknown())
        }
    }

    async fn append_case_hold(
        &self,
        principal: &Principal,
        case_id: &str,
        case: &CaseRow,
        id: EventId,
        event: GovernanceEvent,
        reason: &str,
    ) -> Result<(), RecordsError> {
        let stream = crate::streams::case_hold(&principal.tenant, case_id)?;
        let mut metadata = Metadata::new(principal.actor(), Source::system("casebook"));
        metadata.reason = Some(reason.to_string());
        metadata.classification = case.marking;
        let data = event.to_event_data_with_id(id, metadata)?;
        self.raw_store()
            .append(&stream, ExpectedVersion::Any, vec![data])
            .await?;
        self.follow_tenant(&principal.tenant);
        self.in_force(&principal.tenant).await
    }

    /// Waits until the `nominals` projection has applied what was just
    /// appended, so a restriction (or its lifting) is in force for every
    /// read that starts after the command returns — reads check it there
    /// (see [`super::restriction`]).
    ///
    /// Errors: [`RecordsError::Query`]-wrapped projection errors (the event
    /// is recorded; it takes effect once the projection catches up).
    async fn in_force(&self, tenant: &TenantId) -> Result<(), RecordsError> {
        self.nominals(tenant).await.map(|_| ())
    }

    /// Releases a hold, with a reason. Needs the `records_officer` role.
    ///
    /// Errors: [`RecordsError::Invalid`] (`reason`);
    /// [`RecordsError::UnknownHold`] (also for a hold on something above
    /// the caller's clearance); [`RecordsError::HoldReleased`];
    /// [`RecordsError::WrongVersion`]; access, role, projection and store
    /// errors.
    pub async fn release_hold(
        &self,
        principal: &Principal,
        hold: &str,
        reason: &str,
    ) -> Result<(), RecordsError> {
        self.admit(principal).await?;
        require_role(principal, "release holds")?;
        let mut problems = Vec::new();
        check_text("reason", reason, &mut problems);
        if !problems.is_empty() {
            return Err(RecordsError::Invalid { problems });
        }
        let unknown = || RecordsError::UnknownHold {
            tenant: principal.tenant.clone(),
            hold: hold.chars().take(64).collect(),
        };
        let gen = self.nominals(&principal.tenant).await?;
        let target = match hold.len() <= 64 {
            true => projection::load::<HoldTarget>(&gen.rows, P_HOLD, hold)?,
            false => None,
        }
        .ok_or_else(unknown)?;
        let event = GovernanceEvent::HoldReleased {
            hold: hold.to_string(),
            reason: reason.to_string(),
            released_by: principal.subject.clone(),
            day: crate::streams::day_of(self.now()),
        };
        match &target {
            HoldTarget::Subject(id) => {
                let subject = self
                    .visible_subject(principal, &gen.rows, id)
                    .map_err(|_| unknown())?;
                if !subject.row.holds.contains_key(hold) {
                    return Err(RecordsError::HoldReleased {
                        hold: hold.to_string(),
                    });
                }
                self.append_governance(principal, &subject, EventId::new(), event, reason)
                    .await?;
            }
            HoldTarget::Case(case_id) => {
                let case = self
                    .visible_case(principal, &gen.rows, case_id)
                    .map_err(|_| unknown())?;
                if !case.holds.contains_key(hold) {
                    return Err(RecordsError::HoldReleased {
                        hold: hold.to_string(),
                    });
                }
                self.append_case_hold(principal, case_id, &case, EventId::new(), event, reason)
                    .await?;
            }
        }
        Ok(())
    }

    /// A subject's record (recorded in the audit of reads). Needs the
    /// `records_officer` role.
    ///
    /// Errors: [`RecordsError::UnknownSubject`] (also above the caller's
    /// clearance); [`RecordsError::ClassNotInPolicy`]; access, role,
    /// projection errors.
    pub async fn subject<'a>(
        &self,
        reader: impl Into<ReadContext<'a>>,
        id: &SubjectId,
    ) -> Result<SubjectRecord, RecordsError> {
        let reader = reader.into();
        let mut marking = Classification::default();
        let result = self.subject_inner(&reader, id, &mut marking).await;
        self.audited(
            &reader,
            ReadKind::Subject,
            Subject::query(format!("subject {id}"), marking),
            result,
        )
        .await
    }

    async fn subject_inner(
        &self,
        reader: &ReadContext<'_>,
        id: &SubjectId,
        marking: &mut Classification,
    ) -> Result<SubjectRecord, RecordsError> {
        let principal = reader.principal;
        self.admit(principal).await?;
        require_role(principal, "read subject records")?;
        let (version, policy) = self.retention_policy(principal).await?;
        let gen = self.nominals(&principal.tenant).await?;
        let s = self.visible_subject(principal, &gen.rows, id.as_str())?;
        *marking = s.marking();
        let class = s.class(&policy, version)?;
        let facts = s.facts();
        let disposable = schedule::disposable(class, &facts);
        Ok(SubjectRecord {
            id: id.clone(),
            date_of_birth: s.row.date_of_birth.and_then(date_of),
            cases: s.row.appearances.keys().cloned().collect(),
            class: class.key.clone(),
            clear_period_start: day_date(facts.clear_start),
            first_recorded: day_date(facts.first_recorded),
            holds: s.holds(),
            state: s.row.state,
            last_review: s
                .row
                .last_review
                .as_ref()
                .map(|r| (r.decision, day_date(r.day))),
            due: schedule::due(class, &facts).and_then(date_of),
            disposable_from: match disposable {
                Disposable::From(d) => date_of(d),
                _ => None,
            },
            age_limited: class.retain_until_age.is_some(),
            version: s.row.version,
            marking: *marking,
        })
    }

    /// The subjects due for review (or time-based disposal) on or before
    /// `query.due_by` (default: today, by the engine clock), earliest
    /// first, optionally of one class; only subjects the reader may see;
    /// paged. Subjects awaiting disposal are not listed. Recorded in the
    /// audit of reads. Needs the `records_officer` role.
    ///
    /// Cost: one pass over the tenant's subjects (due dates follow the
    /// policy in force, so they are computed when asked).
    ///
    /// Errors: [`RecordsError::UnknownClass`];
    /// [`RecordsError::ClassNotInPolicy`] when a subject's class is not in
    /// the policy; page errors ([`crate::projection::QueryError::PageSize`]);
    /// access, role, projection errors.
    pub async fn review_due<'a>(
        &self,
        reader: impl Into<ReadContext<'a>>,
        query: &ReviewDueQuery,
    ) -> Result<Page<ReviewDueItem>, RecordsError> {
        let reader = reader.into();
        let result = self.review_due_inner(&reader, query).await;
        let describe = format!(
            "review due by {} class {}",
            query.due_by.map_or("today".into(), format_date),
            query.class.as_deref().unwrap_or("any")
        );
        self.audited(
            &reader,
            ReadKind::ReviewDue,
            Subject::query(describe, Classification::default()),
            result,
        )
        .await
    }

    async fn review_due_inner(
        &self,
        reader: &ReadContext<'_>,
        query: &ReviewDueQuery,
    ) -> Result<Page<ReviewDueItem>, RecordsError> {
        let principal = reader.principal;
        self.admit(principal).await?;
        require_role(principal, "list subjects due for review")?;
        query.page.check()?;
        let (version, policy) = self.retention_policy(principal).await?;
        if let Some(class) = &query.class {
            if policy.class(class).is_none() {
                return Err(RecordsError::UnknownClass {
                    class: class.chars().take(64).collect(),
                    policy_version: version,
                    known: policy.classes.iter().map(|c| c.key.clone()).collect(),
                });
            }
        }
        let due_by = query
            .due_by
            .map(day_number)
            .unwrap_or_else(|| crate::streams::day_of(self.now()));
        let today = crate::streams::day_of(self.now());
        let gen = self.nominals(&principal.tenant).await?;
        let start = Key::new(P_SUBJECT).0;
        let end = prefix_end(&start);
        let mut due = Vec::new();
        for kv in gen.rows.range(start..end) {
            let (key, _) = kv.map_err(query_err)?;
            let id = String::from_utf8_lossy(&key[1..]).into_owned();
            let Some(s) = load_subject(&gen.rows, &id)? else {
                continue;
            };
            if s.row.state == SubjectState::AwaitingDisposal || !principal.may_see(s.marking()) {
                continue;
            }
            let class = s.class(&policy, version)?;
            if query.class.as_deref().is_some_and(|c| c != class.key) {
                continue;
            }
            let facts = s.facts();
            let Some(day) = schedule::due(class, &facts) else {
                continue;
            };
            if day > due_by {
                continue;
            }
            let held = !s.holds().is_empty();
            let action = match class.at_due {
                AtDue::Dispose
                    if !held && schedule::disposable(class, &facts).allows(today.max(day)) =>
                {
                    AtDue::Dispose
                }
                _ => AtDue::Review,
            };
            due.push(ReviewDueItem {
                subject: SubjectId(id),
                class: class.key.clone(),
                due: day_date(day),
                action,
                held,
                state: s.row.state,
            });
        }
        due.sort_by(|a, b| (a.due, &a.subject).cmp(&(b.due, &b.subject)));
        Ok(Page::of(due, &query.page, true))
    }
}

fn query_err(e: crate::projection::RowsError) -> RecordsError {
    query(e)
}
