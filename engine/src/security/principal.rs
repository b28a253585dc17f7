//! Who is asking: the [`Principal`] every engine call takes, and vetting levels.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::Classification;
use crate::error::ErrorKind;
use crate::ids::{ActorId, TenantId};

/// Longest subject (and assignee), in bytes.
pub const MAX_SUBJECT_LEN: usize = 128;
/// Longest role name, in bytes.
pub const MAX_ROLE_LEN: usize = 64;
/// Most roles one principal may hold.
pub const MAX_ROLES: usize = 64;

/// A principal's subject, a role name or an assignee that may not be used.
///
/// The rule: a subject (or an assignee, which names a subject) is 1 to
/// [`MAX_SUBJECT_LEN`] bytes of printable text with no leading or trailing
/// white space and no control character, line or paragraph separator or
/// bidirectional-formatting character (so it cannot break a line of the
/// timeline or an access log, or reorder what is shown around it). A role
/// is 1 to [`MAX_ROLE_LEN`] bytes of ASCII letters, digits, `_`, `-` and
/// `.`; a principal holds at most [`MAX_ROLES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrincipalError {
    /// The subject (or assignee) breaks the rule.
    #[error("{what} {reason}; it must be 1 to {MAX_SUBJECT_LEN} bytes of printable text without control characters, line breaks or leading/trailing spaces")]
    Subject {
        /// `subject` or `assignee`.
        what: &'static str,
        /// What is wrong (never the value itself: it may be a forgery attempt).
        reason: String,
    },
    /// A role name breaks the rule.
    #[error("role {reason}; a role is 1 to {MAX_ROLE_LEN} bytes of ASCII letters, digits, '_', '-' and '.'")]
    Role {
        /// What is wrong.
        reason: String,
    },
    /// Too many roles.
    #[error("a principal holds {count} roles; the maximum is {MAX_ROLES}")]
    TooManyRoles {
        /// How many were given.
        count: usize,
    },
}

impl PrincipalError {
    /// Always [`ErrorKind::InvalidArgument`], naming `principal.subject`,
    /// `principal.roles` or `assignee`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PrincipalError::Subject { what, .. } if *what == "assignee" => {
                ErrorKind::invalid("assignee")
            }
            PrincipalError::Subject { .. } => ErrorKind::invalid("principal.subject"),
            PrincipalError::Role { .. } | PrincipalError::TooManyRoles { .. } => {
                ErrorKind::invalid("principal.roles")
            }
        }
    }
}

/// Whether `c` may not appear in a subject: control characters, line and
/// paragraph separators, and bidirectional formatting characters.
fn forbidden_in_subject(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}' | '\u{FEFF}'
        )
}

/// Checks a subject or an assignee (`what` names which) against the rule of
/// [`PrincipalError`].
///
/// ```
/// use casebook::security::check_subject;
/// assert!(check_subject("subject", "pc-4521@kent.police.uk").is_ok());
/// assert!(check_subject("subject", "pc-1\n09:00 case closed").is_err());
/// ```
pub fn check_subject(what: &'static str, value: &str) -> Result<(), PrincipalError> {
    let bad = |reason: String| Err(PrincipalError::Subject { what, reason });
    if value.is_empty() {
        return bad("is empty".into());
    }
    if value.len() > MAX_SUBJECT_LEN {
        return bad(format!("is {} bytes long", value.len()));
    }
    if let Some(c) = value.chars().find(|c| forbidden_in_subject(*c)) {
        return bad(format!("contains the character U+{:04X}", c as u32));
    }
    if value.trim() != value {
        return bad("starts or ends with white space".into());
    }
    Ok(())
}

/// Checks a role name against the rule of [`PrincipalError`].
pub fn check_role(role: &str) -> Result<(), PrincipalError> {
    let bad = |reason: String| Err(PrincipalError::Role { reason });
    if role.is_empty() {
        return bad("is empty".into());
    }
    if role.len() > MAX_ROLE_LEN {
        return bad(format!("is {} bytes long", role.len()));
    }
    if let Some(c) = role
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return bad(format!("contains the character U+{:04X}", c as u32));
    }
    Ok(())
}

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
    ///
    /// Infallible, for code that builds principals from trusted values; the
    /// engine checks every principal it is given ([`Principal::validate`])
    /// and refuses a bad one with an invalid-argument error. Code building
    /// principals from outside input (tokens, headers) should use
    /// [`Principal::checked`].
    pub fn new(tenant: TenantId, subject: impl Into<String>) -> Self {
        Principal {
            tenant,
            subject: subject.into(),
            roles: BTreeSet::new(),
            clearance: Classification::Official,
        }
    }

    /// A principal with no roles and OFFICIAL clearance, its subject
    /// checked. Errors: [`PrincipalError::Subject`].
    ///
    /// ```
    /// use casebook::security::Principal;
    /// use casebook::log::TenantId;
    /// let kent = TenantId::new("kent").unwrap();
    /// assert!(Principal::checked(kent.clone(), "pc-4521").is_ok());
    /// assert!(Principal::checked(kent, "pc-1\r\nforged line").is_err());
    /// ```
    pub fn checked(tenant: TenantId, subject: impl Into<String>) -> Result<Self, PrincipalError> {
        let subject = subject.into();
        check_subject("subject", &subject)?;
        Ok(Principal::new(tenant, subject))
    }

    /// A platform administrator: the role
    /// [`super::PLATFORM_ADMIN_ROLE`] in the reserved platform tenant
    /// [`super::PLATFORM_TENANT`], OFFICIAL clearance. It registers and
    /// suspends tenants and may use the engine's unscoped handles; it can
    /// read or change no tenant's cases.
    pub fn platform_administrator(subject: impl Into<String>) -> Self {
        Principal::new(
            TenantId::new(super::PLATFORM_TENANT)
                .unwrap_or_else(|_| unreachable!("PLATFORM_TENANT is a valid tenant id")),
            subject,
        )
        .with_roles([super::PLATFORM_ADMIN_ROLE])
    }

    /// Checks the subject and every role (see [`PrincipalError`] for the
    /// rule). The engine calls this at every entry point.
    pub fn validate(&self) -> Result<(), PrincipalError> {
        check_subject("subject", &self.subject)?;
        if self.roles.len() > MAX_ROLES {
            return Err(PrincipalError::TooManyRoles {
                count: self.roles.len(),
            });
        }
        self.roles.iter().try_for_each(|r| check_role(r))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn kent() -> TenantId {
        TenantId::new("kent").unwrap()
    }

    #[test]
    fn subjects_cannot_carry_line_breaks_controls_or_bidi_overrides() {
        for bad in [
            "",
            " pc-1",
            "pc-1 ",
            "pc-1\nforged",
            "pc-1\r",
            "pc\u{0}1",
            "pc-1\u{2028}x",
            "pc-1\u{202E}x",
            "pc\u{1b}[31m",
        ] {
            let e = Principal::checked(kent(), bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::invalid("principal.subject"));
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        assert!(Principal::checked(kent(), "x".repeat(129)).is_err());
        for good in ["pc-4521", "Jane O'Brien", "j.smith@kent.police.uk", "Zoë"] {
            assert!(Principal::checked(kent(), good).is_ok(), "{good}");
        }
    }

    #[test]
    fn roles_are_plain_names() {
        let ok = Principal::new(kent(), "pc-1").with_roles(["investigator", "cid-kent.lead"]);
        assert!(ok.validate().is_ok());
        for bad in ["", "in vestigator", "role\n", &"r".repeat(65)] {
            let p = Principal::new(kent(), "pc-1").with_roles([bad]);
            assert_eq!(
                p.validate().unwrap_err().kind(),
                ErrorKind::invalid("principal.roles")
            );
        }
        let many = Principal::new(kent(), "pc-1").with_roles((0..65).map(|i| format!("r{i}")));
        assert!(matches!(
            many.validate(),
            Err(PrincipalError::TooManyRoles { count: 65 })
        ));
        let forged = Principal::new(kent(), "pc-1\n2026-01-05 09:00 case closed by ps-9");
        assert!(forged.validate().is_err());
    }
}
