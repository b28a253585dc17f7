//! Records lifecycle (issue 22): the tenant's record of subjects
//! (nominals), MoPI retention review and legal holds.
//!
//! - **Subjects.** A definition's `[[subjects]]` say which case-file field
//!   holds a person's reference; whenever a case event gives it a value the
//!   `nominals` projection ([`projection`]) records that the person appears
//!   in the case: when (the event's recorded day, from the engine clock),
//!   under which retention class (`retention.class`, else the group's),
//!   whether it was police contact (restarting the clear period), and the
//!   date of birth where a field holds it. The subject is known by a
//!   [`SubjectId`], a keyed hash of the reference under a per-tenant key
//!   derived from the engine's secret ([`SubjectIds`]), so ids, stream
//!   names and event types hold no personal data.
//! - **Governance streams.** Reviews and holds on a subject are events in
//!   `<tenant>/governance/<subject id>`; holds on a case in
//!   `<tenant>/case-hold/<case id>` ([`events`]). One stream per subject
//!   (rather than one per tenant) gives each subject its own optimistic
//!   concurrency: a review decided on a stale record is refused.
//! - **Schedule.** When a subject falls due and when it may be disposed of
//!   are pure functions of its record and the tenant's retention policy
//!   ([`schedule`], [`crate::resources::retention`]), computed when asked,
//!   so a new policy version applies at once without a rebuild.
//! - **Commands and queries** on [`crate::Engine`] ([`engine`]):
//!   `review_subject`, `place_hold`, `release_hold`, `review_due`,
//!   `subject`, `subject_id`, `retention_policy`,
//!   `deploy_retention_policy`. Each command waits until the projection
//!   has read the whole log, decides on that record, and appends one event
//!   at the governance stream's version it read. Every decision and hold is
//!   thus an event carrying who, when, why (the s62 record of alteration);
//!   every query is recorded in the audit of reads.
//!
//! Access: the [`RECORDS_ROLE`] role. A subject is visible to a principal
//! whose clearance covers every case it appears in (and its date of birth
//! field): a reviewer must see the whole record to decide on it, and a
//! subject outside the caller's clearance reads exactly as one that does not
//! exist.

pub mod engine;
pub mod erasure;
pub mod error;
pub mod events;
pub mod kms;
#[cfg(feature = "postgres")]
pub mod pg_kms;
pub mod projection;
pub mod restriction;
pub mod schedule;
pub mod sealing;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use erasure::{EraseSubject, ErasureCertificate};
pub use error::RecordsError;
pub use events::{Decision, ErasureBasis, HoldKind, HoldTarget, NracAnswer};
pub use restriction::{RestrictedCase, EVIDENTIAL_ROLE};
pub use schedule::SubjectState;
pub use sealing::ErasedField;

use crate::calendar::Date;
use crate::log::TenantId;
use crate::resources::retention::AtDue;
use crate::security::{Classification, PositionKey};

/// The role that reviews subjects, places and releases holds and reads the
/// review-due list.
pub const RECORDS_ROLE: &str = "records_officer";

/// A subject's (nominal's) id: `n` and 32 hex digits, a keyed hash of the
/// person's reference. Holds no personal data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SubjectId(String);

impl SubjectId {
    /// Checks the form of an id given by a caller.
    ///
    /// Errors: [`RecordsError::InvalidSubjectId`].
    pub fn parse(s: &str) -> Result<Self, RecordsError> {
        let ok = s.len() == 33
            && s.starts_with('n')
            && s[1..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(SubjectId(s.to_string()))
        } else {
            Err(RecordsError::InvalidSubjectId {
                id: s.chars().take(40).collect(),
            })
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SubjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One tenant's subject-id derivation.
#[derive(Clone)]
pub struct SubjectIds {
    key: [u8; 32],
}

impl fmt::Debug for SubjectIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubjectIds(..)")
    }
}

impl SubjectIds {
    /// The derivation of `tenant` under the engine's secret.
    pub(crate) fn new(secret: &PositionKey, tenant: &TenantId) -> Self {
        SubjectIds {
            key: secret.subject_key(tenant),
        }
    }

    /// The id of the person with reference `reference` (trimmed).
    pub fn id(&self, reference: &str) -> SubjectId {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(reference.trim().as_bytes());
        let bytes = mac.finalize().into_bytes();
        let mut id = String::with_capacity(33);
        id.push('n');
        for b in &bytes[..16] {
            id.push_str(&format!("{b:02x}"));
        }
        SubjectId(id)
    }
}

/// A review decision to record ([`crate::Engine::review_subject`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewSubject {
    /// The subject.
    pub subject: SubjectId,
    /// The reviewer's role in the review (e.g. `reviewing officer`).
    pub reviewer_role: String,
    /// An answer to every NRAC question of the policy in force.
    pub nrac: Vec<NracAnswer>,
    /// The decision.
    pub decision: Decision,
    /// The next review date (for retain, restrict and archive; default:
    /// today plus the class's `review_every`, when it has one). Not for
    /// dispose.
    pub next_review: Option<Date>,
    /// Why.
    pub rationale: String,
    /// The subject's version the reviewer decided on (see
    /// [`SubjectRecord::version`]); `None`: whatever is current.
    pub expected_version: Option<u64>,
}

/// What [`crate::Engine::review_subject`] recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewOutcome {
    /// The subject.
    pub subject: SubjectId,
    /// The decision.
    pub decision: Decision,
    /// The next review date recorded.
    pub next_review: Option<Date>,
    /// The subject's version now.
    pub version: u64,
}

/// A hold in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// Its id (the id of the event that placed it).
    pub id: String,
    /// What it holds.
    pub target: HoldTarget,
    /// Why, by kind.
    pub kind: HoldKind,
    /// Why, in words.
    pub reason: String,
    /// Who placed it.
    pub placed_by: String,
    /// When (the engine clock's day).
    pub placed_on: Date,
}

/// A subject's record as a records officer reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectRecord {
    /// The subject.
    pub id: SubjectId,
    /// Date of birth, where a case recorded it.
    pub date_of_birth: Option<Date>,
    /// The cases it appears in.
    pub cases: Vec<String>,
    /// The retention class in force (the most serious of its cases').
    pub class: String,
    /// The day the clear period runs from: the last police contact (or the
    /// first record, without any contact).
    pub clear_period_start: Date,
    /// The first day it was recorded.
    pub first_recorded: Date,
    /// Holds in force, on the subject or on one of its cases.
    pub holds: Vec<Hold>,
    /// Its state.
    pub state: SubjectState,
    /// The last review's decision and day, if any.
    pub last_review: Option<(Decision, Date)>,
    /// When it falls due (none: the class has no rule that makes it due).
    pub due: Option<Date>,
    /// The first day a dispose decision is allowed by the class's
    /// `retain_until_age` (`None` with `retain_until_age` and no date of
    /// birth: never; without the rule: no limit, see `age_limited`).
    pub disposable_from: Option<Date>,
    /// Whether `retain_until_age` applies.
    pub age_limited: bool,
    /// Its governance stream's version (the reviews and holds recorded on
    /// the subject; new police contact does not move it): give it back as
    /// [`ReviewSubject::expected_version`]. 0: nothing recorded yet.
    pub version: u64,
    /// The highest marking of what the record draws on.
    pub marking: Classification,
}

/// The review-due query ([`crate::Engine::review_due`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReviewDueQuery {
    /// Only subjects of this class (`None`: every class).
    pub class: Option<String>,
    /// Subjects due on or before this day (`None`: today, by the engine
    /// clock).
    pub due_by: Option<Date>,
    /// The page.
    pub page: crate::projection::query::PageRequest,
}

/// One subject due for review or disposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewDueItem {
    /// The subject.
    pub subject: SubjectId,
    /// Its class.
    pub class: String,
    /// When it fell (or falls) due.
    pub due: Date,
    /// What falls due (the class's `at_due`; a `dispose` class whose
    /// subject is held or below its retain-until age needs a review).
    pub action: AtDue,
    /// Whether a hold is in force.
    pub held: bool,
    /// Its state.
    pub state: SubjectState,
}
