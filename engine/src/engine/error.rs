//! Errors of the [`super::Engine`]: one enum that says what to fix.

use crate::case::CaseError;
use crate::definition::DefinitionError;
use crate::log::codec::CodecError;
use crate::log::{IdError, LogError, TenantId};

/// Everything an [`super::Engine`] call can report.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The definition document is invalid; every problem is listed with its path.
    #[error("{0}")]
    InvalidDefinition(#[from] DefinitionError),
    /// This version of the case type is already deployed with other content.
    #[error("{key} version {version} is already deployed with different content; deploy it as a new version")]
    DefinitionVersionConflict {
        /// The case type.
        key: String,
        /// The version in the document.
        version: u32,
    },
    /// Versions of a case type must increase.
    #[error("{key} version {version} is older than the latest deployed version {latest}; deploy it as version {} or later", latest + 1)]
    DefinitionVersionNotIncreasing {
        /// The case type.
        key: String,
        /// The version in the document.
        version: u32,
        /// The latest deployed version.
        latest: u32,
    },
    /// No such case type (or version) is deployed for the caller's tenant.
    #[error("case type {key}{} is not deployed for tenant {tenant}", .version.map(|v| format!(" version {v}")).unwrap_or_default())]
    UnknownDefinition {
        /// The caller's tenant.
        tenant: TenantId,
        /// The case type.
        key: String,
        /// The version asked for, if any.
        version: Option<u32>,
    },
    /// No such case in the caller's tenant.
    #[error("case {case_id} does not exist in tenant {tenant}")]
    UnknownCase {
        /// The caller's tenant.
        tenant: TenantId,
        /// The case id asked for.
        case_id: String,
    },
    /// A case with this id already exists.
    #[error("case {case_id} already exists; choose another id or leave it to the engine")]
    CaseExists {
        /// The case id.
        case_id: String,
    },
    /// The caller may not do this.
    #[error("{principal} may not {action}: it needs one of the roles {needed:?}")]
    Forbidden {
        /// Who asked.
        principal: String,
        /// What they tried.
        action: String,
        /// Roles that would allow it.
        needed: Vec<String>,
    },
    /// A case or definition id that is not a valid identifier.
    #[error("invalid id: {0}")]
    InvalidId(#[from] IdError),
    /// The case runtime rejected the command (nothing was appended).
    #[error(transparent)]
    Case(#[from] CaseError),
    /// The event log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A stored event could not be decoded.
    #[error("a stored event could not be decoded: {0}")]
    Codec(#[from] CodecError),
    /// Other writers kept changing the case; the command was not applied.
    #[error("case {case_id} kept changing under concurrent commands ({attempts} attempts); retry")]
    Contended {
        /// The case id.
        case_id: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The engine has been shut down ([`super::Engine::shutdown`]).
    #[error("the engine has been shut down; open it again to continue")]
    ShutDown,
    /// The command id was used by another principal on this case.
    #[error("command id {command_id} was already used on this case by someone else; use a fresh command id for each command")]
    CommandIdReused {
        /// The command id.
        command_id: String,
    },
    /// The snapshot store failed (snapshots are derived; the log is intact).
    #[error("snapshot store error: {0}")]
    Snapshot(String),
    /// The projection store failed (projections are derived; the log is intact).
    #[error(transparent)]
    Projection(#[from] crate::projection::ProjectionError),
}
