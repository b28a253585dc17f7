//! The governance events: reviews of a subject and legal holds, as stored
//! in `<tenant>/governance/<subject id>` and `<tenant>/case-hold/<case id>`
//! (schema version 2: `SubjectErased` added; version 1 events still read). Dates are day numbers (days since 1970-01-01, from
//! the engine clock); no event holds a person's reference.

use serde::{Deserialize, Serialize};

use crate::log::codec::DomainEvent;

/// A review's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Keep the record (and review it again on the next review date).
    Retain,
    /// Dispose of the record (erasure follows; refused under a hold or
    /// before the class's retain-until age).
    Dispose,
    /// Restrict processing (DPA 2018 s47(2)).
    Restrict,
    /// Archive the record (of historical value only).
    Archive,
}

impl Decision {
    /// `retain`, `dispose`, `restrict` or `archive`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Retain => "retain",
            Decision::Dispose => "dispose",
            Decision::Restrict => "restrict",
            Decision::Archive => "archive",
        }
    }

    /// The decision of that name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Decision::Retain,
            Decision::Dispose,
            Decision::Restrict,
            Decision::Archive,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }
}

/// Why a hold is placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldKind {
    /// An investigation is ongoing.
    Investigation,
    /// Material may need disclosure (CPIA).
    Disclosure,
    /// Litigation is pending or in progress.
    Litigation,
    /// A public inquiry's moratorium (or IOPC).
    Inquiry,
}

impl HoldKind {
    /// `investigation`, `disclosure`, `litigation` or `inquiry`.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldKind::Investigation => "investigation",
            HoldKind::Disclosure => "disclosure",
            HoldKind::Litigation => "litigation",
            HoldKind::Inquiry => "inquiry",
        }
    }

    /// The kind of that name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            HoldKind::Investigation,
            HoldKind::Disclosure,
            HoldKind::Litigation,
            HoldKind::Inquiry,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// What a hold applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldTarget {
    /// One subject (by id).
    Subject(String),
    /// One case: every subject appearing in it.
    Case(String),
}

/// One NRAC answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NracAnswer {
    /// The question's key in the policy.
    pub question: String,
    /// Yes (a risk) or no.
    pub answer: bool,
    /// Why.
    pub rationale: String,
}

/// A governance event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GovernanceEvent {
    /// A subject was reviewed.
    SubjectReviewed {
        /// The reviewer (principal subject).
        reviewer: String,
        /// Their role in the review.
        reviewer_role: String,
        /// The day of the review.
        day: i64,
        /// The class in force.
        class: String,
        /// The retention policy version applied (0: shipped defaults).
        policy_version: u32,
        /// The clear period's start at the review.
        clear_period_start: i64,
        /// The NRAC answers.
        nrac: Vec<NracAnswer>,
        /// The decision.
        decision: Decision,
        /// The next review day.
        next_review: Option<i64>,
        /// The holds in force (ids).
        holds: Vec<String>,
        /// Why.
        rationale: String,
    },
    /// A hold was placed.
    HoldPlaced {
        /// Its id.
        hold: String,
        /// What it holds.
        target: HoldTarget,
        /// Its kind.
        kind: HoldKind,
        /// Why.
        reason: String,
        /// Who.
        placed_by: String,
        /// The day.
        day: i64,
    },
    /// The erasure certificate (issue 22 item 5): the subject's data key
    /// was destroyed. Holds no personal data (ICO: "do not record the data
    /// itself in your logs of erasure"): who, under which basis, which keys,
    /// which cases, when. Its event id is the certificate's reference.
    SubjectErased {
        /// Who authorised it (principal subject).
        erased_by: String,
        /// The role they acted in.
        role: String,
        /// The legal basis.
        basis: ErasureBasis,
        /// The disposal review it carries out, if any (its event id).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        review: Option<String>,
        /// The data keys destroyed (key ids).
        key_ids: Vec<String>,
        /// The cases the subject appeared in (ids): the scope.
        cases: Vec<String>,
        /// The day (from the engine clock; the event's recorded time is
        /// the instant).
        day: i64,
    },
    /// A hold was released.
    HoldReleased {
        /// Its id.
        hold: String,
        /// Why.
        reason: String,
        /// Who.
        released_by: String,
        /// The day.
        day: i64,
    },
}

/// The legal basis of an erasure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErasureBasis {
    /// DPA 2018 s47(1)(a): processing would infringe the data protection
    /// principles (ss35-40) or safeguards (ss41-42).
    Infringement,
    /// DPA 2018 s47(1)(b): a legal obligation to erase.
    LegalObligation,
    /// A MoPI review decided to dispose of the record.
    DisposalReview,
}

impl ErasureBasis {
    /// `infringement`, `legal_obligation` or `disposal_review`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErasureBasis::Infringement => "infringement",
            ErasureBasis::LegalObligation => "legal_obligation",
            ErasureBasis::DisposalReview => "disposal_review",
        }
    }
}

impl DomainEvent for GovernanceEvent {
    /// 2: `SubjectErased` added.
    const SCHEMA_VERSION: u16 = 2;
    fn event_type(&self) -> &'static str {
        match self {
            GovernanceEvent::SubjectReviewed { .. } => "SubjectReviewed",
            GovernanceEvent::HoldPlaced { .. } => "HoldPlaced",
            GovernanceEvent::HoldReleased { .. } => "HoldReleased",
            GovernanceEvent::SubjectErased { .. } => "SubjectErased",
        }
    }
}
