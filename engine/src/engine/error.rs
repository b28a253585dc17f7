//! Errors of the [`super::Engine`]: one enum that says what to fix.

use crate::case::CaseError;
use crate::definition::{DefinitionError, RoleKey};
use crate::error::{storage_kind, ErrorKind};
use crate::log::codec::CodecError;
use crate::log::{IdError, LogError, TenantId};

/// The error a [`super::SnapshotStore`] reports, whatever its backing.
pub type SnapshotSource = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything an [`super::Engine`] call can report.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The definition document is invalid; every problem is listed with its path.
    #[error("{0}")]
    InvalidDefinition(#[from] DefinitionError),
    /// A resource (boundary set, decision table, reference data, contacts)
    /// is invalid, unknown or unreadable.
    #[error("{0}")]
    Resource(#[from] crate::resources::ResourceError),
    /// This version of the case type is already deployed with other content.
    #[error("{key} version {version} is already deployed with different content; deploy it as a new version")]
    DefinitionVersionConflict {
        /// The case type.
        key: String,
        /// The version in the document.
        version: u32,
    },
    /// Versions of a case type must increase.
    #[error("{key} version {version} is older than the latest deployed version {latest}; deploy it as version {} or later", u64::from(*latest) + 1)]
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
    /// No event with this id in the caller's tenant (or one they may not
    /// see: the two read alike).
    #[error("event {event} does not exist in tenant {tenant}")]
    UnknownEvent {
        /// The caller's tenant.
        tenant: TenantId,
        /// The event id asked for.
        event: crate::log::EventId,
    },
    /// The log has not signed a checkpoint covering what was asked yet (the
    /// newest events are signed within `CheckpointConfig::every`), or the
    /// engine keeps no signed log (in memory).
    #[error("no signed checkpoint covers it yet: {reason}")]
    NotYetSigned {
        /// What is missing.
        reason: String,
    },
    /// A case with this id already exists.
    #[error("case {case_id} already exists; choose another id or leave it to the engine")]
    CaseExists {
        /// The case id.
        case_id: String,
    },
    /// A case or definition id that is not a valid identifier.
    #[error("invalid id: {0}")]
    InvalidId(#[from] IdError),
    /// The case runtime rejected the command (nothing was appended), or the
    /// caller lacks the role for an engine action
    /// ([`CaseError::Forbidden`], the one "forbidden" error of the engine).
    #[error(transparent)]
    Case(#[from] CaseError),
    /// The event log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A stored event could not be decoded.
    #[error("a stored event could not be decoded: {0}")]
    Codec(#[from] CodecError),
    /// A subject's personal fields could not be sealed or opened
    /// (crypto-shredding: the key store failed, a key is missing, a sealed
    /// value is damaged, or new data names an erased subject).
    #[error(transparent)]
    Seal(#[from] crate::records::sealing::SealError),
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
    #[error("snapshot store error while {context}: {source}")]
    SnapshotStore {
        /// What the store was doing.
        context: String,
        /// The store's error (sled's, for the engine's own store).
        #[source]
        source: SnapshotSource,
    },
    /// A deployed definition's stored document no longer parses to the
    /// definition that was deployed (a newer build reads it differently):
    /// cases of that version cannot be loaded until this is resolved.
    #[error("the stored document of {key} version {version} no longer parses to the deployed definition{}", if .source.is_some() { "" } else { " (its fingerprint changed)" })]
    StoredDefinitionChanged {
        /// The case type.
        key: String,
        /// The deployed version.
        version: u32,
        /// Why it no longer parses, if it does not parse at all.
        #[source]
        source: Option<DefinitionError>,
    },
    /// The stored working-day calendar holds something that is not a date
    /// (the log was written by a defective or newer build).
    #[error("the stored working-day calendar is invalid: {reason}")]
    InvalidStoredCalendar {
        /// What is wrong.
        reason: String,
    },
    /// The projection store failed (projections are derived; the log is intact).
    #[error(transparent)]
    Projection(#[from] crate::projection::ProjectionError),
    /// The caller may not use the engine at all: a bad subject or role, an
    /// unregistered or suspended tenant, or a platform call without the
    /// platform administrator's role. Nothing was done or started.
    #[error(transparent)]
    Access(#[from] crate::security::AccessError),
    /// The secret of the position tokens (`<data>/position.key`) cannot be
    /// read or made.
    #[error("position token key: {0}")]
    PositionKey(#[source] std::io::Error),
    /// The read's audit refused it or could not record it (see [`crate::audit`]).
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// A definition declares a service this engine runs in process with
    /// another contract than the registered service's (refused at deploy).
    #[error("service '{service}' does not match the registered service: {}", problems.iter().map(|(p, m)| format!("{p}: {m}")).collect::<Vec<_>>().join("; "))]
    ServiceContractMismatch {
        /// The service.
        service: String,
        /// Each difference: its path in the definition and what is wrong.
        problems: Vec<(String, String)>,
    },
}

impl EngineError {
    /// A snapshot store failure, for [`super::SnapshotStore`] implementations.
    pub fn snapshot_store(context: impl Into<String>, source: impl Into<SnapshotSource>) -> Self {
        EngineError::SnapshotStore {
            context: context.into(),
            source: source.into(),
        }
    }

    /// The caller lacks one of the roles an engine action needs.
    pub(crate) fn forbidden(action: impl Into<String>, needed: &[&str]) -> Self {
        EngineError::Case(CaseError::Forbidden {
            action: action.into(),
            needed: needed.iter().map(|r| RoleKey::new(*r)).collect(),
        })
    }

    /// What the error means to a caller.
    ///
    /// Wrapped errors keep their own kind (an invalid definition is
    /// [`ErrorKind::InvalidArgument`] naming every problem's path, a case the
    /// caller may not see is [`ErrorKind::NotFound`], a failing log is what
    /// [`LogError::kind`] says). An unknown case or case type is
    /// [`ErrorKind::NotFound`], an existing case id
    /// [`ErrorKind::AlreadyExists`], a definition version that clashes with
    /// the deployed ones [`ErrorKind::Conflict`], and a case contended by
    /// other commands or a shut-down engine [`ErrorKind::Unavailable`]
    /// (retry, or reopen); a command id another principal used
    /// [`ErrorKind::Conflict`]. A failing snapshot
    /// store is [`ErrorKind::Internal`] (a full disk:
    /// [`ErrorKind::ResourceExhausted`]), as is a stored definition that
    /// changed. Access errors keep [`crate::security::AccessError::kind`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::InvalidDefinition(e) => e.kind(),
            EngineError::Resource(e) => e.kind(),
            EngineError::InvalidId(e) => e.kind(),
            EngineError::Case(e) => e.kind(),
            EngineError::Log(e) => e.kind(),
            EngineError::Codec(e) => e.kind(),
            EngineError::Seal(e) => e.kind(),
            EngineError::DefinitionVersionConflict { .. }
            | EngineError::DefinitionVersionNotIncreasing { .. } => ErrorKind::Conflict {
                actual_version: None,
            },
            EngineError::UnknownDefinition { .. }
            | EngineError::UnknownCase { .. }
            | EngineError::UnknownEvent { .. } => ErrorKind::NotFound,
            EngineError::NotYetSigned { .. } => ErrorKind::Unavailable,
            EngineError::CaseExists { .. } => ErrorKind::AlreadyExists,
            EngineError::Access(e) => e.kind(),
            EngineError::PositionKey(e) => crate::error::io_kind(e),
            EngineError::Contended { .. } | EngineError::ShutDown => ErrorKind::Unavailable,
            EngineError::CommandIdReused { .. } => ErrorKind::Conflict {
                actual_version: None,
            },
            EngineError::SnapshotStore { source, .. } => storage_kind(source.as_ref()),
            EngineError::StoredDefinitionChanged { .. }
            | EngineError::InvalidStoredCalendar { .. } => ErrorKind::Internal,
            EngineError::Projection(e) => e.kind(),
            EngineError::Audit(e) => e.kind(),
            EngineError::ServiceContractMismatch { problems, .. } => ErrorKind::InvalidArgument {
                paths: problems.iter().map(|(p, _)| p.clone()).collect(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::ClearanceSubject;
    use crate::definition::CaseDefinition;
    use crate::log::StreamVersion;
    use crate::security::Classification;

    fn kent() -> TenantId {
        TenantId::new("kent").unwrap()
    }

    #[test]
    fn engine_errors_map_to_their_kinds() {
        let invalid = CaseDefinition::from_toml("key = 'Bad Key'").unwrap_err();
        let invalid_kind = invalid.kind();
        let disk_full = || std::io::Error::from(std::io::ErrorKind::StorageFull);
        let cases = [
            (EngineError::InvalidDefinition(invalid), invalid_kind),
            (
                EngineError::DefinitionVersionConflict {
                    key: "foi".into(),
                    version: 2,
                },
                ErrorKind::Conflict {
                    actual_version: None,
                },
            ),
            (
                EngineError::DefinitionVersionNotIncreasing {
                    key: "foi".into(),
                    version: 1,
                    latest: 2,
                },
                ErrorKind::Conflict {
                    actual_version: None,
                },
            ),
            (
                EngineError::UnknownDefinition {
                    tenant: kent(),
                    key: "foi".into(),
                    version: Some(3),
                },
                ErrorKind::NotFound,
            ),
            (
                EngineError::UnknownCase {
                    tenant: kent(),
                    case_id: "FOI-404".into(),
                },
                ErrorKind::NotFound,
            ),
            (
                EngineError::CaseExists {
                    case_id: "FOI-1".into(),
                },
                ErrorKind::AlreadyExists,
            ),
            (
                EngineError::forbidden("deploy case definitions", &["administrator"]),
                ErrorKind::PermissionDenied,
            ),
            (
                EngineError::Case(CaseError::InsufficientClearance {
                    subject: ClearanceSubject::Case,
                    needed: Classification::Secret,
                    held: Classification::Official,
                }),
                ErrorKind::NotFound,
            ),
            (
                EngineError::InvalidId(IdError::Empty { kind: "stream id" }),
                ErrorKind::invalid("stream_id"),
            ),
            (
                EngineError::Log(LogError::WrongExpectedVersion {
                    stream: "kent/case/FOI-1".parse().unwrap(),
                    expected: crate::log::ExpectedVersion::NoStream,
                    actual: Some(StreamVersion(0)),
                }),
                ErrorKind::Conflict {
                    actual_version: Some(0),
                },
            ),
            (EngineError::Log(LogError::Closed), ErrorKind::Unavailable),
            (
                EngineError::Codec(CodecError::UnsupportedFormat {
                    found: 9,
                    supported: 1,
                }),
                ErrorKind::Internal,
            ),
            (
                EngineError::Contended {
                    case_id: "FOI-1".into(),
                    attempts: 8,
                },
                ErrorKind::Unavailable,
            ),
            (
                EngineError::snapshot_store("storing", sled::Error::Io(disk_full())),
                ErrorKind::ResourceExhausted,
            ),
            (
                EngineError::snapshot_store("storing", disk_full()),
                ErrorKind::ResourceExhausted,
            ),
            (
                EngineError::snapshot_store("reading", "a custom store failed"),
                ErrorKind::Internal,
            ),
            (
                EngineError::StoredDefinitionChanged {
                    key: "foi".into(),
                    version: 1,
                    source: None,
                },
                ErrorKind::Internal,
            ),
            (
                EngineError::InvalidStoredCalendar {
                    reason: "'2026-02-30' is not a date".into(),
                },
                ErrorKind::Internal,
            ),
            (
                EngineError::Projection(crate::projection::ProjectionError::ShutDown),
                ErrorKind::Unavailable,
            ),
            (EngineError::ShutDown, ErrorKind::Unavailable),
            (
                EngineError::CommandIdReused {
                    command_id: "c-1".into(),
                },
                ErrorKind::Conflict {
                    actual_version: None,
                },
            ),
        ];
        for (err, kind) in cases {
            assert_eq!(err.kind(), kind, "{err}");
        }
    }

    #[test]
    fn forbidden_is_the_case_runtimes_variant() {
        let err = EngineError::forbidden("deploy case definitions", &["administrator"]);
        assert!(
            matches!(&err, EngineError::Case(CaseError::Forbidden { needed, .. }) if needed == &[RoleKey::new("administrator")]),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "'deploy case definitions' needs one of the roles [administrator]"
        );
    }

    #[test]
    fn snapshot_store_errors_keep_their_source() {
        use std::error::Error as _;
        let err = EngineError::snapshot_store("opening", sled::Error::Unsupported("no".into()));
        assert!(err.source().is_some_and(|s| s.is::<sled::Error>()));
        let changed = EngineError::StoredDefinitionChanged {
            key: "foi".into(),
            version: 1,
            source: Some(CaseDefinition::from_toml("key = 'Bad Key'").unwrap_err()),
        };
        assert!(changed.source().is_some());
    }
}
