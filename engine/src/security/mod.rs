//! Security in the core: classifications, vetting, and the [`Principal`] every
//! engine call takes (and, as the engine grows, the audit of who consulted or
//! disclosed what).

mod access;
mod classification;
pub mod positions;
mod principal;

pub use access::{
    is_platform_admin, is_platform_tenant, AccessError, PLATFORM_ADMIN_ROLE, PLATFORM_TENANT,
};
pub use classification::{Classification, ParseClassificationError};
pub use positions::{PositionKey, PositionToken, TenantPositions};
pub use principal::{
    check_role, check_subject, Principal, PrincipalError, Vetting, MAX_ROLES, MAX_ROLE_LEN,
    MAX_SUBJECT_LEN,
};
