//! [`AccessError`]: why a caller may not use the engine at all — a bad
//! principal, a tenant that is not registered or is suspended, or a
//! platform call by someone who is not a platform administrator.

use super::PrincipalError;
use crate::error::ErrorKind;
use crate::ids::TenantId;

/// The role of a platform administrator: registers, suspends and
/// reactivates tenants, and may use the unscoped raw store and projection
/// host. It is held by a principal of the reserved platform tenant
/// ([`PLATFORM_TENANT`]); the role in any other tenant grants nothing.
pub const PLATFORM_ADMIN_ROLE: &str = "platform_administrator";

/// The reserved tenant that platform administrators belong to and whose
/// `tenant` streams record tenant registrations. It is never registered as
/// a tenant and holds no cases.
pub const PLATFORM_TENANT: &str = "casebook.platform";

/// Why a caller was refused before anything was read, written or started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// The caller's subject or roles (or an assignee) break the rule of
    /// [`PrincipalError`].
    #[error("invalid principal: {0}")]
    InvalidPrincipal(#[from] PrincipalError),
    /// The caller's tenant is not registered.
    #[error("tenant {tenant} is not registered; a platform administrator registers tenants")]
    UnknownTenant {
        /// The tenant named.
        tenant: TenantId,
    },
    /// The caller's tenant is registered but suspended.
    #[error("tenant {tenant} is suspended; a platform administrator may reactivate it")]
    TenantSuspended {
        /// The tenant named.
        tenant: TenantId,
    },
    /// A platform call (tenant registry, unscoped store or projection host)
    /// by someone who is not a platform administrator.
    #[error("{action} needs the role '{PLATFORM_ADMIN_ROLE}' in the platform tenant '{PLATFORM_TENANT}'")]
    NotPlatformAdministrator {
        /// What was attempted.
        action: String,
    },
    /// A stream of another tenant, or one the caller may not read: it is
    /// answered as one that does not exist.
    #[error("stream {stream} does not exist")]
    UnknownStream {
        /// The stream named.
        stream: String,
    },
    /// Only the engine writes streams of this category.
    #[error("streams of category {category} are written by the engine only")]
    EngineStream {
        /// The category.
        category: String,
    },
    /// An event to append is marked above the caller's clearance.
    #[error("events[{index}] is marked above your clearance")]
    AboveClearance {
        /// Which event.
        index: usize,
    },
    /// The tenant id is reserved for the platform and cannot be registered
    /// or used for cases.
    #[error("tenant id {tenant} is reserved for the platform")]
    ReservedTenant {
        /// The tenant named.
        tenant: TenantId,
    },
    /// A position given by the caller is not a position token of the
    /// caller's tenant (another tenant's, or made up): pass back a token
    /// the engine gave this tenant (see [`crate::security::PositionToken`]).
    #[error("{field} {token} is not a position token of this tenant; pass back a token the engine returned to this tenant")]
    NotAPositionToken {
        /// Where the token was given (`position`, `min_position`, …).
        field: String,
        /// The token as given.
        token: u64,
    },
    /// A global position too large for a position token (the log would
    /// need 2^48 events).
    #[error("global position {position} is beyond what a position token can carry")]
    PositionOutOfRange {
        /// The position.
        position: u64,
    },
}

impl AccessError {
    /// A bad principal is [`ErrorKind::InvalidArgument`] (naming the part);
    /// an unregistered or suspended tenant is [`ErrorKind::NotFound`] (the
    /// caller names the tenant, so the message may say which); a platform
    /// call without the role, an append to an engine stream or above the
    /// caller's clearance are [`ErrorKind::PermissionDenied`]; a stream the
    /// caller may not read is [`ErrorKind::NotFound`]; a reserved
    /// tenant id is [`ErrorKind::InvalidArgument`] at `tenant`; a position
    /// that is not a token of the caller's tenant is
    /// [`ErrorKind::InvalidArgument`] at the field that carried it; a
    /// position too large for a token is [`ErrorKind::Internal`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            AccessError::InvalidPrincipal(e) => e.kind(),
            AccessError::UnknownTenant { .. } | AccessError::TenantSuspended { .. } => {
                ErrorKind::NotFound
            }
            AccessError::NotPlatformAdministrator { .. }
            | AccessError::EngineStream { .. }
            | AccessError::AboveClearance { .. } => ErrorKind::PermissionDenied,
            AccessError::UnknownStream { .. } => ErrorKind::NotFound,
            AccessError::ReservedTenant { .. } => ErrorKind::invalid("tenant"),
            AccessError::NotAPositionToken { field, .. } => ErrorKind::invalid(field.clone()),
            AccessError::PositionOutOfRange { .. } => ErrorKind::Internal,
        }
    }
}

/// Whether `tenant` is the reserved platform tenant.
pub fn is_platform_tenant(tenant: &TenantId) -> bool {
    tenant.as_str() == PLATFORM_TENANT
}

/// Whether `principal` is a platform administrator: the role
/// [`PLATFORM_ADMIN_ROLE`] held in the platform tenant, with a valid
/// subject.
pub fn is_platform_admin(principal: &super::Principal) -> bool {
    is_platform_tenant(&principal.tenant)
        && principal.has_role(PLATFORM_ADMIN_ROLE)
        && principal.validate().is_ok()
}
