//! Who is asking: the [`Principal`] every engine call takes, and vetting levels.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::Classification;
use crate::ids::{ActorId, TenantId};

/// Police and national vetting levels, ordered by what they clear a person to see.
///
/// Casebook compares clearance with classification through
/// [`Vetting::max_classification`]; the mapping is a default a force may
/// override by issuing principals with an explicit clearance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Vetting {
    /// Non-Police Personnel Vetting level 1 (and recruit vetting).
    Nppv1,
    /// NPPV level 2.
    Nppv2,
    /// NPPV level 3.
    Nppv3,
    /// Counter-Terrorist Check.
    Ctc,
    /// Security Check.
    Sc,
    /// Developed Vetting.
    Dv,
}

impl Vetting {
    /// The highest classification this vetting level may see by default.
    pub fn max_classification(self) -> Classification {
        match self {
            Vetting::Nppv1 => Classification::Official,
            Vetting::Nppv2 | Vetting::Nppv3 | Vetting::Ctc => Classification::OfficialSensitive,
            Vetting::Sc => Classification::Secret,
            Vetting::Dv => Classification::TopSecret,
        }
    }
}

/// An authenticated caller: tenant, subject, roles and clearance.
///
/// Every engine call that reads or changes a case takes one. The engine
/// enforces tenant, role and clearance rules itself, so an embedding user
/// gets the same protection as a gRPC client.
///
/// ```
/// use casebook::security::{Classification, Principal};
/// use casebook::log::TenantId;
/// let p = Principal::new(TenantId::new("kent").unwrap(), "pc-4521")
///     .with_roles(["investigator"])
///     .with_clearance(Classification::OfficialSensitive);
/// assert!(p.has_role("investigator"));
/// assert!(p.may_see(Classification::Official));
/// assert!(!p.may_see(Classification::Secret));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The tenant (force) the caller belongs to.
    pub tenant: TenantId,
    /// The caller's stable id, recorded as the actor of every event they cause.
    pub subject: String,
    /// Role names, e.g. `investigator`, `supervisor`.
    pub roles: BTreeSet<String>,
    /// The highest classification the caller may see.
    pub clearance: Classification,
}

impl Principal {
    /// A principal with no roles and OFFICIAL clearance.
    pub fn new(tenant: TenantId, subject: impl Into<String>) -> Self {
        Principal {
            tenant,
            subject: subject.into(),
            roles: BTreeSet::new(),
            clearance: Classification::Official,
        }
    }

    /// Adds roles.
    pub fn with_roles<I, S>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.roles.extend(roles.into_iter().map(Into::into));
        self
    }

    /// Sets the clearance.
    pub fn with_clearance(mut self, clearance: Classification) -> Self {
        self.clearance = clearance;
        self
    }

    /// Whether the principal holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.contains(role)
    }

    /// Whether the principal holds any of `roles`.
    pub fn has_any_role<'a>(&self, roles: impl IntoIterator<Item = &'a str>) -> bool {
        roles.into_iter().any(|r| self.has_role(r))
    }

    /// Whether the principal's clearance covers `classification`.
    pub fn may_see(&self, classification: Classification) -> bool {
        self.clearance >= classification
    }

    /// The actor id recorded on events this principal causes.
    pub fn actor(&self) -> ActorId {
        ActorId::new(self.subject.clone())
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.subject, self.tenant)
    }
}
