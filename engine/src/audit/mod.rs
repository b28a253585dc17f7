//! The audit of consultation and disclosure (DPA 2018 s62): every read of case data through the engine records who read what, when, why, and how it was answered.
//!
//! A read takes a [`ReadContext`]: the [`Principal`] and the purpose
//! (justification) they gave, and optionally a correlation id. `&Principal`
//! converts into a context without a purpose, so `engine.view(&p, id)` still
//! works; `ReadContext::new(&p).purpose("…")` states one.
//!
//! Every read — [`Engine::view`], [`Engine::load`], [`Engine::case_view`],
//! [`Engine::timeline`], [`Engine::search_cases`] (with the ids of the cases
//! it returned), [`Engine::work_queue`] and [`Engine::deadlines`] (with their
//! case ids), [`Engine::incidents`], the raw event reads
//! ([`Engine::read_stream`], [`Engine::read_all`], [`Engine::subscribe_all`])
//! and the auditors' own [`Engine::audit_entries`] — records **exactly one**
//! [`AuditEntry`], answered or refused (not found, not permitted, bad
//! input). Entries are held in events `ReadsAudited` ([`AuditRecord`], the
//! entries recorded together) in the tenant's audit stream of the day,
//! `<tenant>/audit/<YYYY-MM-DD>` (UTC, by the engine's clock), a category
//! the engine alone writes (see [`crate::streams`]): no API appends to or
//! alters it. Reads the engine makes for its own work (a command loading its
//! case, the dispatcher checking an invocation) are not consultations and
//! are not recorded; what a command discloses to a service is recorded in
//! the case's own events.
//!
//! **Logged before disclosed.** A read's data is returned only after its
//! entry is written to the log: if the entry cannot be recorded, the read
//! fails with [`AuditError::Unavailable`] and returns nothing. The read
//! path never waits for an `fdatasync`: entries are appended with
//! [`EventStore::append_written`](crate::log::EventStore::append_written),
//! which answers once the bytes are in the segment file — where killing the
//! process cannot lose them — and the log syncs them with its next group
//! commit, at the latest 20 ms later (a power cut inside that window may
//! lose the entries of reads answered in it; that is the price of not
//! making every read wait for the disk). A per-engine recorder task
//! (`recorder.rs`) takes every entry queued while its last batch was being
//! written — up to [`MAX_BATCH`] at once, no waiting for more, so a lone
//! reader never waits for company — groups them by tenant and day, packs
//! each group into events of at most [`ENTRIES_PER_EVENT`] entries, appends
//! each group in one append (the groups concurrently), and wakes every
//! waiting reader with the result. The queue holds [`QUEUE`] entries; a
//! reader finding it full waits (asynchronously) for room. An auditor's
//! query first syncs what was written, so it sees every read answered
//! before it.
//!
//! **Markings.** An entry carries the highest classification among the
//! cases it names (for a refused read of an existing case, that case's own
//! marking) and, for a search, the fields its filters name. An auditor sees
//! only entries within their clearance: an entry about a case above it is
//! withheld, exactly as if it did not exist.
//!
//! **Purpose required.** A definition may require a purpose for fields
//! above a marking (`[audit] purpose_required_above = "OFFICIAL-SENSITIVE"`).
//! A view ([`Engine::view`], [`Engine::case_view`]) read without a purpose
//! then withholds those fields, as if the reader's clearance stopped at that
//! marking; a case itself marked above it is refused with
//! [`AuditError::PurposeRequired`] (the reader may know that it exists);
//! [`Engine::load`], which returns the whole state, is refused the same way
//! for such a definition without a purpose. The refusal is recorded.
//!
//! **Auditors.** [`Engine::audit_entries`] answers the [`AUDITOR_ROLE`] only,
//! for their own tenant, filtered by case, by user and by time range,
//! paged. It scans the day streams the range covers (at most
//! [`SCAN_BUDGET`] entries per call; a page that stops early returns a
//! cursor to continue from).
//!
//! [`EngineConfig::audit_reads`](crate::engine::EngineConfig::audit_reads)
//! turns recording off. It exists only to measure the cost of auditing
//! (`benches/audit.rs`) and must never be off in service.
//!
//! [`Engine::view`]: crate::engine::Engine::view
//! [`Engine::load`]: crate::engine::Engine::load
//! [`Engine::case_view`]: crate::engine::Engine::case_view
//! [`Engine::timeline`]: crate::engine::Engine::timeline
//! [`Engine::search_cases`]: crate::engine::Engine::search_cases
//! [`Engine::work_queue`]: crate::engine::Engine::work_queue
//! [`Engine::deadlines`]: crate::engine::Engine::deadlines
//! [`Engine::incidents`]: crate::engine::Engine::incidents
//! [`Engine::read_stream`]: crate::engine::Engine::read_stream
//! [`Engine::read_all`]: crate::engine::Engine::read_all
//! [`Engine::subscribe_all`]: crate::engine::Engine::subscribe_all
//! [`Engine::audit_entries`]: crate::engine::Engine::audit_entries

pub(crate) mod query;
mod recorder;

use serde::{Deserialize, Serialize};

pub use query::{AuditCursor, AuditPage, AuditQuery, MAX_PAGE};
pub(crate) use recorder::Recorder;

use crate::error::ErrorKind;
use crate::log::codec::DomainEvent;
use crate::log::CorrelationId;
use crate::security::{Classification, Principal};
use crate::time::Timestamp;

/// The role that may query the audit (its own tenant's, within its
/// clearance); the same role, with TOP SECRET clearance, reads the engine's
/// own streams raw.
pub use crate::engine::AUDITOR_ROLE;

/// The most entries the recorder takes in one batch.
pub const MAX_BATCH: usize = 1024;

/// The most entries one [`AuditRecord`] event holds.
pub const ENTRIES_PER_EVENT: usize = 256;

/// The entries that may wait for the recorder before readers wait for room.
pub const QUEUE: usize = 16_384;

/// The most entries one [`AuditQuery`] examines before returning a cursor.
pub const SCAN_BUDGET: usize = 20_000;

/// The longest purpose accepted, in bytes.
pub const MAX_PURPOSE: usize = 1_000;

/// Who reads, and why: what every read of case data takes.
///
/// ```
/// use casebook::audit::ReadContext;
/// use casebook::security::Principal;
/// use casebook::log::TenantId;
/// let p = Principal::new(TenantId::new("kent").unwrap(), "pc-4521");
/// let plain: ReadContext = (&p).into();
/// assert_eq!(plain.purpose, None);
/// let stated = ReadContext::new(&p).purpose("victim update call, CR/123/26");
/// assert_eq!(stated.purpose.as_deref(), Some("victim update call, CR/123/26"));
/// ```
#[derive(Debug, Clone)]
pub struct ReadContext<'a> {
    /// Who reads.
    pub principal: &'a Principal,
    /// The justification they gave (none if blank).
    pub purpose: Option<String>,
    /// Ties the read to a wider request.
    pub correlation: Option<CorrelationId>,
}

impl<'a> ReadContext<'a> {
    /// A read by `principal` with no stated purpose.
    pub fn new(principal: &'a Principal) -> Self {
        ReadContext {
            principal,
            purpose: None,
            correlation: None,
        }
    }

    /// This context with a purpose (a blank one counts as none).
    pub fn purpose(mut self, purpose: impl Into<String>) -> Self {
        let purpose = purpose.into();
        self.purpose = (!purpose.trim().is_empty()).then_some(purpose);
        self
    }

    /// This context tied to a wider request.
    pub fn correlation(mut self, id: CorrelationId) -> Self {
        self.correlation = Some(id);
        self
    }

    /// Whether a purpose was stated.
    pub fn has_purpose(&self) -> bool {
        self.purpose.is_some()
    }

    /// Checks what the caller gave. Errors: [`AuditError::PurposeTooLong`].
    pub(crate) fn check(&self) -> Result<(), AuditError> {
        match &self.purpose {
            Some(p) if p.len() > MAX_PURPOSE => Err(AuditError::PurposeTooLong {
                length: p.len(),
                max: MAX_PURPOSE,
            }),
            _ => Ok(()),
        }
    }
}

impl<'a> From<&'a Principal> for ReadContext<'a> {
    fn from(principal: &'a Principal) -> Self {
        ReadContext::new(principal)
    }
}

impl<'a> From<&ReadContext<'a>> for ReadContext<'a> {
    fn from(context: &ReadContext<'a>) -> Self {
        context.clone()
    }
}

/// Which read an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadKind {
    /// [`crate::engine::Engine::view`].
    View,
    /// [`crate::engine::Engine::load`] (the whole state).
    Load,
    /// [`crate::engine::Engine::case_view`].
    CaseView,
    /// [`crate::engine::Engine::timeline`].
    Timeline,
    /// [`crate::engine::Engine::search_cases`].
    Search,
    /// [`crate::engine::Engine::work_queue`].
    WorkQueue,
    /// [`crate::engine::Engine::deadlines`].
    Deadlines,
    /// [`crate::engine::Engine::incidents`].
    Incidents,
    /// [`crate::engine::Engine::read_stream`].
    RawStream,
    /// [`crate::engine::Engine::read_all`].
    RawLog,
    /// [`crate::engine::Engine::subscribe_all`] (recorded when it starts).
    RawSubscription,
    /// [`crate::engine::Engine::audit_entries`].
    AuditQuery,
    /// [`crate::engine::Engine::subject`] (a subject's record, issue 22).
    Subject,
    /// [`crate::engine::Engine::review_due`].
    ReviewDue,
    /// [`crate::engine::Engine::case_view_evidential`]: a case read with
    /// its restricted subjects' data, for evidence (DPA 2018 s47(2)).
    EvidentialView,
}

impl ReadKind {
    /// The name used in entries and over the API (`view`, `search`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ReadKind::View => "view",
            ReadKind::Load => "load",
            ReadKind::CaseView => "case_view",
            ReadKind::Timeline => "timeline",
            ReadKind::Search => "search",
            ReadKind::WorkQueue => "work_queue",
            ReadKind::Deadlines => "deadlines",
            ReadKind::Incidents => "incidents",
            ReadKind::RawStream => "raw_stream",
            ReadKind::RawLog => "raw_log",
            ReadKind::RawSubscription => "raw_subscription",
            ReadKind::AuditQuery => "audit_query",
            ReadKind::Subject => "subject",
            ReadKind::ReviewDue => "review_due",
            ReadKind::EvidentialView => "evidential_view",
        }
    }
}

/// How a read was answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// Data was returned.
    Answered,
    /// Refused as not found (which includes "not visible to you").
    NotFound,
    /// Refused for a missing role, clearance or purpose.
    Denied,
    /// Not answered for another reason (bad input, unavailable); the
    /// error's kind, e.g. `invalid argument`.
    Failed {
        /// The error's kind.
        kind: String,
    },
}

impl AuditOutcome {
    /// The outcome of a read that failed with an error of `kind`.
    pub fn of(kind: &ErrorKind) -> Self {
        match kind {
            ErrorKind::NotFound => AuditOutcome::NotFound,
            ErrorKind::PermissionDenied => AuditOutcome::Denied,
            other => AuditOutcome::Failed {
                kind: other.to_string(),
            },
        }
    }

    /// `answered`, `not_found`, `denied` or `failed: <kind>`.
    pub fn describe(&self) -> String {
        match self {
            AuditOutcome::Answered => "answered".into(),
            AuditOutcome::NotFound => "not_found".into(),
            AuditOutcome::Denied => "denied".into(),
            AuditOutcome::Failed { kind } => format!("failed: {kind}"),
        }
    }
}

/// One consultation of case data, held in an [`AuditRecord`] in the
/// tenant's audit stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When (the engine's clock).
    pub at: Timestamp,
    /// Who (the principal's subject).
    pub subject: String,
    /// Their roles at the time.
    pub roles: Vec<String>,
    /// Their clearance at the time.
    pub clearance: Classification,
    /// Which read.
    pub read: ReadKind,
    /// The cases it named or returned, in the order returned.
    pub cases: Vec<String>,
    /// The query, for reads that are not of one case (search, work queue,
    /// deadlines, raw reads), in a readable form.
    pub query: Option<String>,
    /// The justification the reader gave.
    pub purpose: Option<String>,
    /// The correlation id the reader gave.
    pub correlation: Option<String>,
    /// How it was answered.
    pub outcome: AuditOutcome,
    /// The highest marking among the cases (and searched fields) it names:
    /// an auditor below it does not see the entry.
    pub marking: Classification,
}

impl AuditEntry {
    /// Roughly how many bytes the entry takes encoded (never less).
    pub(crate) fn encoded_size(&self) -> usize {
        let strings = self.subject.len()
            + self.roles.iter().map(|r| r.len() + 2).sum::<usize>()
            + self.cases.iter().map(|c| c.len() + 2).sum::<usize>()
            + self.query.as_ref().map_or(0, String::len)
            + self.purpose.as_ref().map_or(0, String::len)
            + self.correlation.as_ref().map_or(0, String::len);
        strings + 256
    }
}

/// The event holding the entries the recorder wrote together:
/// `ReadsAudited` in the tenant's audit stream of the day. One event per
/// batch (at most [`ENTRIES_PER_EVENT`]) rather than one per read keeps the
/// log, its index and the projections that pass over it from paying per
/// read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The entries, in the order they were recorded.
    pub entries: Vec<AuditEntry>,
}

impl DomainEvent for AuditRecord {
    const SCHEMA_VERSION: u16 = 1;

    fn event_type(&self) -> &'static str {
        "ReadsAudited"
    }
}

/// What a read disclosed or asked for, to be recorded.
#[derive(Debug, Clone, Default)]
pub(crate) struct Subject {
    /// The cases named or returned.
    pub cases: Vec<String>,
    /// The query, if not a single case.
    pub query: Option<String>,
    /// The highest marking among them.
    pub marking: Classification,
}

impl Subject {
    /// One case, of a known marking if it exists.
    pub fn case(case_id: &str, marking: Option<Classification>) -> Self {
        Subject {
            cases: vec![case_id.to_string()],
            query: None,
            marking: marking.unwrap_or_default(),
        }
    }

    /// A query, with the marking of what it names.
    pub fn query(query: impl Into<String>, marking: Classification) -> Self {
        Subject {
            cases: Vec::new(),
            query: Some(query.into()),
            marking,
        }
    }

    /// Adds returned cases (each once, in order) and their markings.
    pub fn with_cases<'c>(
        mut self,
        cases: impl IntoIterator<Item = (&'c str, Classification)>,
    ) -> Self {
        for (id, marking) in cases {
            if !self.cases.iter().any(|c| c == id) {
                self.cases.push(id.to_string());
            }
            self.marking = self.marking.max(marking);
        }
        self
    }
}

/// Auditing a read failed or refused it. Each variant says what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// The stated purpose is longer than allowed.
    #[error("the purpose is {length} bytes long; state it in at most {max}")]
    PurposeTooLong {
        /// Its length.
        length: usize,
        /// The most allowed.
        max: usize,
    },
    /// The case's definition requires a purpose to read it (or the whole of
    /// it): state one in the read's `ReadContext`.
    #[error("reading case {case_id} in full requires a purpose (its definition requires one above {above}); state it with ReadContext::purpose")]
    PurposeRequired {
        /// The case.
        case_id: String,
        /// The marking above which a purpose is required.
        above: Classification,
    },
    /// An evidential read of restricted data (DPA 2018 s47(2)) was asked
    /// for without a purpose: state it in the read's `ReadContext`.
    #[error("an evidential read of case {case_id} needs a stated purpose (DPA 2018 s47(2)): state it with ReadContext::purpose, at most {MAX_PURPOSE} bytes")]
    EvidentialPurposeRequired {
        /// The case.
        case_id: String,
    },
    /// The caller lacks the auditor role.
    #[error("{principal} may not query the audit: it needs the role {AUDITOR_ROLE}")]
    NotAuditor {
        /// Who asked.
        principal: String,
    },
    /// A malformed audit query.
    #[error("invalid {parameter}: {message}")]
    InvalidQuery {
        /// The parameter.
        parameter: String,
        /// What is wrong.
        message: String,
    },
    /// The entry could not be recorded, so nothing was disclosed; retry.
    #[error("the read was not answered because its audit entry could not be recorded: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// A stored audit entry could not be read.
    #[error("audit data: {0}")]
    Corrupt(String),
}

impl AuditError {
    /// What the error means to a caller: a bad purpose or query is
    /// [`ErrorKind::InvalidArgument`] (`purpose`, or the query parameter);
    /// a missing purpose or role is [`ErrorKind::PermissionDenied`]; a
    /// failed recording is [`ErrorKind::Unavailable`]; damaged entries are
    /// [`ErrorKind::Internal`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            AuditError::PurposeTooLong { .. } => ErrorKind::invalid("purpose"),
            AuditError::InvalidQuery { parameter, .. } => ErrorKind::invalid(parameter.clone()),
            AuditError::PurposeRequired { .. }
            | AuditError::EvidentialPurposeRequired { .. }
            | AuditError::NotAuditor { .. } => ErrorKind::PermissionDenied,
            AuditError::Unavailable { .. } => ErrorKind::Unavailable,
            AuditError::Corrupt(_) => ErrorKind::Internal,
        }
    }
}

/// Whether `principal` may query the audit.
pub fn is_auditor(principal: &Principal) -> bool {
    principal.has_role(AUDITOR_ROLE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TenantId;

    #[test]
    fn a_principal_reads_without_a_purpose_and_blank_is_none() {
        let p = Principal::new(TenantId::new("kent").unwrap(), "pc-1");
        assert!(!ReadContext::from(&p).has_purpose());
        assert!(!ReadContext::new(&p).purpose("  ").has_purpose());
        let long = ReadContext::new(&p).purpose("x".repeat(MAX_PURPOSE + 1));
        assert_eq!(
            long.check().unwrap_err().kind(),
            ErrorKind::invalid("purpose")
        );
        assert!(ReadContext::new(&p).purpose("ok").check().is_ok());
    }

    #[test]
    fn outcomes_follow_error_kinds() {
        assert_eq!(
            AuditOutcome::of(&ErrorKind::NotFound),
            AuditOutcome::NotFound
        );
        assert_eq!(
            AuditOutcome::of(&ErrorKind::PermissionDenied),
            AuditOutcome::Denied
        );
        assert!(matches!(
            AuditOutcome::of(&ErrorKind::Unavailable),
            AuditOutcome::Failed { .. }
        ));
    }

    #[test]
    fn a_subject_names_each_case_once_with_the_highest_marking() {
        let s = Subject::query("q", Classification::Official).with_cases([
            ("a", Classification::Official),
            ("b", Classification::Secret),
            ("a", Classification::Official),
        ]);
        assert_eq!(s.cases, ["a", "b"]);
        assert_eq!(s.marking, Classification::Secret);
    }
}
