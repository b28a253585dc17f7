//! Tamper evidence through the engine: the log's signed checkpoints, and
//! proofs that a tenant's own events are in them.
//!
//! A tenant sees the checkpoints (origin, size, root: no event content) and
//! inclusion proofs for its own events within its clearance (case events
//! included: a proof shows no content); an event of another tenant, or
//! above the caller's clearance, reads as not found, exactly like one that
//! does not exist. A proof carries the event's global position and the
//! log's size — how much was logged in all, never what.

use super::{Engine, EngineError};
use crate::log::checkpoint::{CheckpointVerifier, SignedCheckpoint};
use crate::log::merkle::{ConsistencyProof, InclusionProof};
use crate::log::EventId;
use crate::security::Principal;

/// That an event is in the log under a signed checkpoint.
#[derive(Debug, Clone)]
pub struct EventProof {
    /// The event.
    pub event: EventId,
    /// The checkpoint (verify it with [`Engine::checkpoint_verifier`], or a
    /// verifier key kept apart from the engine).
    pub checkpoint: SignedCheckpoint,
    /// The event's leaf and the proof that it is in the checkpoint's tree:
    /// `proof.verify(&checkpoint.checkpoint().root)`.
    pub proof: InclusionProof,
}

impl Engine {
    /// What checks the log's checkpoint signatures (`None` for an engine
    /// without a durable log).
    pub fn checkpoint_verifier(&self) -> Option<CheckpointVerifier> {
        self.inner.log.as_ref().map(|l| l.checkpoint_verifier())
    }

    /// The log's latest signed checkpoint, for a tenant to keep (a later
    /// [`Engine::consistency_proof`] shows the log still extends it).
    /// `None` until the first is signed, and for an in-memory engine.
    ///
    /// Errors: the caller's tenant unknown or suspended
    /// ([`EngineError::Access`]).
    pub async fn latest_checkpoint(
        &self,
        principal: &Principal,
    ) -> Result<Option<SignedCheckpoint>, EngineError> {
        self.admit(principal).await?;
        Ok(self.inner.log.as_ref().and_then(|l| l.latest_checkpoint()))
    }

    /// The proof that `event`, an event of the caller's tenant that they
    /// may see, is in the log under its latest checkpoint.
    ///
    /// Errors: [`EngineError::UnknownEvent`] for an event that does not
    /// exist, is another tenant's or above the caller's clearance (alike);
    /// [`EngineError::NotYetSigned`] for an event newer than the latest
    /// checkpoint (ask again within `CheckpointConfig::every`) or an engine
    /// without a durable log; [`EngineError::Access`]; log errors.
    pub async fn event_proof(
        &self,
        principal: &Principal,
        event: EventId,
    ) -> Result<EventProof, EngineError> {
        self.admit(principal).await?;
        let unknown = || EngineError::UnknownEvent {
            tenant: principal.tenant.clone(),
            event,
        };
        let recorded = self
            .inner
            .store
            .read_event(event)
            .await?
            // A proof shows hashes and a position, never content: the
            // caller's tenant and clearance decide, not the raw-read
            // rule that keeps engine streams (cases) to their own API.
            .filter(|e| {
                e.tenant() == &principal.tenant && principal.may_see(e.metadata.classification)
            })
            .ok_or_else(unknown)?;
        let log = self.signed_log()?;
        let checkpoint = log
            .latest_checkpoint()
            .ok_or_else(|| EngineError::NotYetSigned {
                reason: "the log has signed no checkpoint yet".into(),
            })?;
        let size = checkpoint.checkpoint().size;
        if recorded.position.0 >= size {
            return Err(EngineError::NotYetSigned {
                reason: format!("event {event} is newer than the latest checkpoint"),
            });
        }
        let proof = log.inclusion_proof(recorded.position, size).await?;
        Ok(EventProof {
            event,
            checkpoint,
            proof,
        })
    }

    /// The proof that the log of `to` events extends the log of `from`
    /// events (two checkpoints' sizes): what a tenant holding an older
    /// checkpoint checks a newer one with.
    ///
    /// Errors: [`EngineError::Log`] with [`crate::log::LogError::Proof`]
    /// unless `0 < from <= to <=` the signed log; [`EngineError::NotYetSigned`]
    /// for an engine without a durable log; [`EngineError::Access`].
    pub async fn consistency_proof(
        &self,
        principal: &Principal,
        from: u64,
        to: u64,
    ) -> Result<ConsistencyProof, EngineError> {
        self.admit(principal).await?;
        let log = self.signed_log()?;
        Ok(log.consistency_proof(from, to).await?)
    }

    /// The durable log, whose tree is signed.
    ///
    /// Errors: [`EngineError::NotYetSigned`] for an engine without one.
    fn signed_log(&self) -> Result<&crate::log::LogStore, EngineError> {
        self.inner
            .log
            .as_ref()
            .ok_or_else(|| EngineError::NotYetSigned {
                reason: "this engine keeps no signed log".into(),
            })
    }
}
