//! The Integrity service over gRPC: a tenant fetches the verifier key, a signed checkpoint, an inclusion proof for its own event and a consistency proof between two checkpoints, and checks them all with the engine's public verification code; another tenant's event and one above the caller's clearance are NOT_FOUND like a made-up one; bad sizes and ids are INVALID_ARGUMENT naming the field; a call without a token is UNAUTHENTICATED.

mod support;

use std::time::Duration;

use casebook_engine::log::checkpoint::{CheckpointVerifier, SignedCheckpoint};
use casebook_engine::log::merkle::{verify_consistency, verify_inclusion, Hash};
use casebook_proto::v1 as pb;
use support::*;
use tonic::Code;

fn hash(bytes: &[u8]) -> Hash {
    bytes.try_into().expect("a 32-byte hash")
}

fn hashes(list: &[Vec<u8>]) -> Vec<Hash> {
    list.iter().map(|h| hash(h)).collect()
}

/// Appends one event of `classification` to `stream`; returns its id.
async fn append(
    server: &Server,
    tenant: &str,
    stream: &str,
    classification: pb::Classification,
) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    server
        .events(&token(tenant, "storm-cad", &["integration"], "TOP SECRET"))
        .append(pb::AppendRequest {
            stream: stream.into(),
            events: vec![pb::NewEvent {
                id: id.clone(),
                event_type: "incident_logged".into(),
                payload: b"{\"grade\":\"immediate\"}".to_vec(),
                classification: classification as i32,
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    id
}

/// The proof of `event`, once a checkpoint covers it.
async fn proof(client: &mut Integrity, event: &str) -> pb::EventProof {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match client
            .get_event_proof(pb::GetEventProofRequest {
                event_id: event.into(),
            })
            .await
        {
            Ok(p) => return p.into_inner(),
            Err(s) if s.code() == Code::Unavailable && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => panic!("{s:?}"),
        }
    }
}

/// Checks a checkpoint's signature and returns its (size, root).
fn verified(key: &CheckpointVerifier, c: &pb::Checkpoint) -> (u64, Hash) {
    let signed = SignedCheckpoint::parse(&c.note).unwrap();
    let body = signed.verify(key).unwrap();
    assert_eq!(body.size, c.size);
    assert_eq!(body.root.to_vec(), c.root);
    assert_eq!(body.origin, c.origin);
    (body.size, body.root)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_checks_its_events_and_the_logs_growth_against_signed_checkpoints() {
    let server = start_with(|c| {
        c.tenants.push("kent".into());
        c.checkpoints.every_ms = 50;
    })
    .await;
    let reader = token("demo", "pc-1", &["caseworker"], "OFFICIAL");
    let mut integrity = server.integrity(&reader);

    let key = integrity
        .get_verifier_key(pb::GetVerifierKeyRequest {})
        .await
        .unwrap()
        .into_inner()
        .verifier_key;
    let key = CheckpointVerifier::parse(&key).unwrap();

    let first = append(
        &server,
        "demo",
        "cad/incident-1",
        pb::Classification::Official,
    )
    .await;
    let p1 = proof(&mut integrity, &first).await;
    let (size1, root1) = verified(&key, p1.checkpoint.as_ref().unwrap());
    assert_eq!(p1.event_id, first);
    assert_eq!(p1.tree_size, size1);
    verify_inclusion(
        &hash(&p1.leaf_hash),
        p1.leaf_index,
        p1.tree_size,
        &hashes(&p1.hashes),
        &root1,
    )
    .unwrap();
    // A proof checked against another root, or for another leaf, fails.
    let mut wrong = hash(&p1.leaf_hash);
    wrong[0] ^= 1;
    assert!(verify_inclusion(
        &wrong,
        p1.leaf_index,
        p1.tree_size,
        &hashes(&p1.hashes),
        &root1
    )
    .is_err());

    // Other tenants write; the log grows; the old checkpoint is extended.
    append(&server, "kent", "cad/k-1", pb::Classification::Official).await;
    let second = append(
        &server,
        "demo",
        "cad/incident-2",
        pb::Classification::Official,
    )
    .await;
    let p2 = proof(&mut integrity, &second).await;
    let (size2, root2) = verified(&key, p2.checkpoint.as_ref().unwrap());
    assert!(size2 > size1);
    let latest = integrity
        .get_latest_checkpoint(pb::GetLatestCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    let (latest_size, _) = verified(&key, &latest);
    assert!(latest_size >= size2);
    let consistency = integrity
        .get_consistency_proof(pb::GetConsistencyProofRequest {
            from_size: size1,
            to_size: size2,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((consistency.from_size, consistency.to_size), (size1, size2));
    verify_consistency(size1, size2, &root1, &root2, &hashes(&consistency.hashes)).unwrap();
    assert!(
        verify_consistency(size1, size2, &root2, &root2, &hashes(&consistency.hashes)).is_err()
    );

    // Another tenant's event, one above the caller's clearance and a
    // made-up one all read as not found, alike.
    let theirs = append(&server, "kent", "cad/k-2", pb::Classification::Official).await;
    let secret = append(
        &server,
        "demo",
        "cad/incident-3",
        pb::Classification::Secret,
    )
    .await;
    proof(
        &mut server.integrity(&token("demo", "dci", &["caseworker"], "SECRET")),
        &secret,
    )
    .await;
    let mut messages = Vec::new();
    for id in [theirs, secret, uuid::Uuid::new_v4().to_string()] {
        let refused = integrity
            .get_event_proof(pb::GetEventProofRequest {
                event_id: id.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
        messages.push(refused.message().replace(&id, "<id>"));
    }
    assert!(messages.windows(2).all(|w| w[0] == w[1]), "{messages:?}");

    // Bad input names the field.
    for (from_size, to_size, field) in [
        (0, size1, "from_size"),
        (size2, size1, "to_size"),
        (1, u64::MAX, "to_size"),
    ] {
        let refused = integrity
            .get_consistency_proof(pb::GetConsistencyProofRequest { from_size, to_size })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().starts_with(field), "{refused:?}");
    }
    let refused = integrity
        .get_event_proof(pb::GetEventProofRequest {
            event_id: "not-a-uuid".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().starts_with("event_id"), "{refused:?}");
    let anonymous =
        casebook_proto::v1::integrity_client::IntegrityClient::new(server.channel.clone())
            .get_latest_checkpoint(pb::GetLatestCheckpointRequest {})
            .await
            .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    server.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_checkpoint_interval_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir);
    config.checkpoints.every_ms = 0;
    match casebook_service::start(config, std::future::pending()).await {
        Ok(_) => panic!("a server that would never sign a checkpoint started"),
        Err(e) => assert!(e.to_string().contains("checkpoints.every_ms"), "{e}"),
    }
}
