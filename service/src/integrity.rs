//! The `casebook.v1.Integrity` service: the log's verifier key, its signed checkpoints and Merkle proofs, through the engine's integrity API (`Engine::latest_checkpoint`, `event_proof`, `consistency_proof`), which admits the caller's tenant and hides other tenants' events and those above the caller's clearance.

use casebook_engine::engine::Engine;
use casebook_engine::log::checkpoint::SignedCheckpoint;
use casebook_engine::log::EventId;
use casebook_engine::security::Principal;
use casebook_proto::v1 as pb;
use casebook_proto::v1::integrity_server::Integrity;
use tonic::{Request, Response, Status};

use crate::auth::caller;
use crate::status::{invalid, status};

/// Said while the log has signed no checkpoint.
const NOT_YET_SIGNED: &str =
    "the log has signed no checkpoint yet; ask again within the checkpoint interval";

/// The Integrity service over an engine.
#[derive(Clone)]
pub struct IntegrityService {
    engine: Engine,
}

impl IntegrityService {
    /// The service for `engine`.
    pub fn new(engine: Engine) -> Self {
        IntegrityService { engine }
    }

    /// The latest checkpoint, for `principal`'s tenant to see.
    async fn latest(&self, principal: &Principal) -> Result<SignedCheckpoint, Status> {
        self.engine
            .latest_checkpoint(principal)
            .await
            .map_err(|e| status(&e))?
            .ok_or_else(|| Status::unavailable(NOT_YET_SIGNED))
    }
}

fn checkpoint(signed: &SignedCheckpoint) -> pb::Checkpoint {
    let c = signed.checkpoint();
    pb::Checkpoint {
        note: signed.note(),
        origin: c.origin.clone(),
        size: c.size,
        root: c.root.to_vec(),
    }
}

fn hashes(hashes: &[[u8; 32]]) -> Vec<Vec<u8>> {
    hashes.iter().map(|h| h.to_vec()).collect()
}

#[tonic::async_trait]
impl Integrity for IntegrityService {
    async fn get_verifier_key(
        &self,
        request: Request<pb::GetVerifierKeyRequest>,
    ) -> Result<Response<pb::GetVerifierKeyResponse>, Status> {
        let principal = caller(&request)?;
        // Admits the caller's tenant as every other call does.
        self.engine
            .latest_checkpoint(&principal)
            .await
            .map_err(|e| status(&e))?;
        let key = self
            .engine
            .checkpoint_verifier()
            .ok_or_else(|| Status::unavailable("this server keeps no signed log"))?;
        Ok(Response::new(pb::GetVerifierKeyResponse {
            verifier_key: key.to_string(),
        }))
    }

    async fn get_latest_checkpoint(
        &self,
        request: Request<pb::GetLatestCheckpointRequest>,
    ) -> Result<Response<pb::Checkpoint>, Status> {
        let signed = self.latest(&caller(&request)?).await?;
        Ok(Response::new(checkpoint(&signed)))
    }

    async fn get_event_proof(
        &self,
        request: Request<pb::GetEventProofRequest>,
    ) -> Result<Response<pb::EventProof>, Status> {
        let principal = caller(&request)?;
        let id = &request.get_ref().event_id;
        let event = uuid::Uuid::parse_str(id)
            .map(EventId)
            .map_err(|e| invalid("event_id", format!("'{id}' is not a UUID: {e}")))?;
        let proof = self
            .engine
            .event_proof(&principal, event)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::EventProof {
            event_id: proof.event.to_string(),
            checkpoint: Some(checkpoint(&proof.checkpoint)),
            leaf_index: proof.proof.index,
            tree_size: proof.proof.size,
            leaf_hash: proof.proof.leaf.to_vec(),
            hashes: hashes(&proof.proof.hashes),
        }))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<pb::GetConsistencyProofRequest>,
    ) -> Result<Response<pb::ConsistencyProof>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        if r.from_size == 0 {
            return Err(invalid("from_size", "must be at least 1"));
        }
        if r.from_size > r.to_size {
            return Err(invalid(
                "to_size",
                format!("{} is less than from_size {}", r.to_size, r.from_size),
            ));
        }
        let size = self.latest(&principal).await?.checkpoint().size;
        if r.to_size > size {
            return Err(invalid(
                "to_size",
                format!("{} is past the latest checkpoint's size {size}", r.to_size),
            ));
        }
        let proof = self
            .engine
            .consistency_proof(&principal, r.from_size, r.to_size)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::ConsistencyProof {
            from_size: proof.from,
            to_size: proof.to,
            hashes: hashes(&proof.hashes),
        }))
    }
}
