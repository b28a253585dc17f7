//! Deployments: how a deployed definition version is stored (one
//! `DefinitionDeployed` event per version in `<tenant>/definition/<case
//! type>`), read back, and the rules a new deployment must follow — the
//! same content twice is a no-op, a version's content never changes,
//! versions only increase. [`crate::engine::Engine::deploy`] does the I/O
//! around these rules (roles, reading the stream, appending, retries).

use serde::{Deserialize, Serialize};

use super::{CaseDefinition, Fingerprint, Format};
use crate::log::codec::{CodecError, DomainEvent};
use crate::log::RecordedEvent;

/// A deployed case definition version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// The case type.
    pub key: String,
    /// The version.
    pub version: u32,
    /// Its content hash.
    pub fingerprint: Fingerprint,
    /// Whether this deployment stored it (false: it was deployed already by
    /// another request). A retry with the same command id reports what the
    /// first attempt did.
    pub newly_deployed: bool,
}

/// One stored deployment, as read back from its stream.
#[derive(Debug, Clone)]
pub(crate) struct Deployed {
    pub version: u32,
    pub fingerprint: Fingerprint,
    pub format: Format,
    pub source: String,
}

/// The stored form of a deployment (schema version 1).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum DefinitionEvent {
    Deployed {
        key: String,
        version: u32,
        fingerprint: Fingerprint,
        format: String,
        source: String,
    },
}

impl DomainEvent for DefinitionEvent {
    const SCHEMA_VERSION: u16 = 1;
    fn event_type(&self) -> &'static str {
        "DefinitionDeployed"
    }
}

impl DefinitionEvent {
    /// The event that deploys `def`, parsed from `source` in `format`.
    pub(crate) fn deploying(def: &CaseDefinition, source: &str, format: Format) -> Self {
        DefinitionEvent::Deployed {
            key: def.key.as_str().to_string(),
            version: def.version,
            fingerprint: def.fingerprint(),
            format: match format {
                Format::Toml => "toml".into(),
                Format::Json => "json".into(),
            },
            source: source.to_string(),
        }
    }

    /// What a stored deployment event says, as the outcome of deploying it.
    pub(crate) fn outcome(event: &RecordedEvent) -> Result<Deployment, CodecError> {
        let DefinitionEvent::Deployed {
            key,
            version,
            fingerprint,
            ..
        } = DefinitionEvent::from_recorded(event)?;
        Ok(Deployment {
            key,
            version,
            fingerprint,
            newly_deployed: true,
        })
    }
}

/// Reads every deployment of a definition stream, oldest first.
///
/// Errors: [`CodecError`] for an event that does not decode.
pub(crate) fn read(events: &[RecordedEvent]) -> Result<Vec<Deployed>, CodecError> {
    events
        .iter()
        .map(|e| {
            let DefinitionEvent::Deployed {
                version,
                fingerprint,
                format,
                source,
                ..
            } = DefinitionEvent::from_recorded(e)?;
            let format = if format == "json" {
                Format::Json
            } else {
                Format::Toml
            };
            Ok(Deployed {
                version,
                fingerprint,
                format,
                source,
            })
        })
        .collect()
}

/// What deploying a definition against the existing deployments means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// This version is deployed with the same content: nothing to do.
    AlreadyDeployed,
    /// This version is deployed with other content.
    VersionConflict,
    /// A later version is deployed.
    NotIncreasing {
        /// The latest deployed version.
        latest: u32,
    },
    /// Append it after the existing ones.
    Deploy,
}

/// Applies the deployment rules to `def` given what is deployed.
pub(crate) fn decide(deployed: &[Deployed], def: &CaseDefinition) -> Decision {
    if let Some(d) = deployed.iter().find(|d| d.version == def.version) {
        return if d.fingerprint == def.fingerprint() {
            Decision::AlreadyDeployed
        } else {
            Decision::VersionConflict
        };
    }
    match deployed.iter().map(|d| d.version).max() {
        Some(latest) if def.version < latest => Decision::NotIncreasing { latest },
        _ => Decision::Deploy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOI: &str = include_str!("../../../examples/definitions/foi-request.toml");

    fn stored(version: u32, fingerprint: Fingerprint) -> Deployed {
        Deployed {
            version,
            fingerprint,
            format: Format::Toml,
            source: String::new(),
        }
    }

    #[test]
    fn the_rules_of_deploying() {
        let def = CaseDefinition::parse(FOI, Format::Toml).unwrap();
        assert_eq!(def.version, 1);
        let same = def.fingerprint();
        let other = Fingerprint([7; 32]);
        assert_eq!(decide(&[], &def), Decision::Deploy);
        assert_eq!(decide(&[stored(1, same)], &def), Decision::AlreadyDeployed);
        assert_eq!(decide(&[stored(1, other)], &def), Decision::VersionConflict);
        assert_eq!(
            decide(&[stored(2, other)], &def),
            Decision::NotIncreasing { latest: 2 }
        );
        let v2 =
            CaseDefinition::parse(&FOI.replacen("version = 1", "version = 2", 1), Format::Toml)
                .unwrap();
        assert_eq!(decide(&[stored(1, same)], &v2), Decision::Deploy);
    }

    #[test]
    fn a_stored_deployment_reads_back() {
        use crate::log::{ActorId, Metadata, Source, StreamId};
        let def = CaseDefinition::parse(FOI, Format::Toml).unwrap();
        let data = DefinitionEvent::deploying(&def, FOI, Format::Toml)
            .to_event_data(Metadata::new(ActorId::new("a"), Source::system("t")))
            .unwrap();
        let stream: StreamId = "kent/definition/foi_request".parse().unwrap();
        let recorded = RecordedEvent::from_data(
            stream,
            crate::log::StreamVersion(0),
            crate::log::GlobalPosition(0),
            crate::time::Timestamp(0),
            data,
        );
        let read = read(std::slice::from_ref(&recorded)).unwrap();
        assert_eq!(read[0].version, 1);
        assert_eq!(read[0].fingerprint, def.fingerprint());
        assert_eq!(read[0].source, FOI);
        let outcome = DefinitionEvent::outcome(&recorded).unwrap();
        assert_eq!(outcome.key, "foi_request");
        assert!(outcome.newly_deployed);
    }
}
