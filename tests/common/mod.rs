//! Helpers shared by the integration tests: stores on temp dirs, event builders and a records review.

#![allow(dead_code)]

use std::sync::Arc;

use casebook::log::{
    ActorId, EventData, EventStore, LogStore, LogStoreConfig, MemoryStore, Metadata, Source,
    StreamId, TenantId,
};
use casebook::security::Classification;
use tempfile::TempDir;

/// A store under test, with the temp dir it lives in (if any).
pub struct Fixture {
    pub store: Arc<dyn EventStore>,
    pub dir: Option<TempDir>,
}

pub async fn memory() -> Fixture {
    Fixture {
        store: Arc::new(MemoryStore::new()),
        dir: None,
    }
}

/// A log store with small segments, so tests cross segment boundaries.
pub async fn log_store() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = LogStoreConfig {
        segment_size: 64 * 1024,
        // Small index tables, flushed often: every test also reads across
        // entries in memory and in sled while flushes and merges run.
        index_table_events: 5,
        index_flush_after: std::time::Duration::from_millis(1),
        ..LogStoreConfig::default()
    };
    let store = LogStore::open_with(dir.path(), config).expect("open log store");
    Fixture {
        store: Arc::new(store),
        dir: Some(dir),
    }
}

pub fn tenant(name: &str) -> TenantId {
    TenantId::new(name).expect("valid tenant")
}

pub fn stream(tenant_name: &str, id: &str) -> StreamId {
    StreamId::new(tenant(tenant_name), "case", id).expect("valid stream")
}

pub fn meta() -> Metadata {
    Metadata::new(
        ActorId::new("pc-4521"),
        Source::with_reference("command-and-control", "CAD-77"),
    )
    .with_reason("test")
    .with_classification(Classification::OfficialSensitive)
}

/// An event whose payload names it, so content can be checked after reads.
pub fn event(label: &str) -> EventData {
    EventData::new("TestEvent", label.as_bytes().to_vec(), meta())
}

pub fn events(prefix: &str, n: usize) -> Vec<EventData> {
    (0..n).map(|i| event(&format!("{prefix}-{i}"))).collect()
}

/// Records a review of `subject` by `reviewer`, every NRAC question of the
/// tenant's policy answered "no concern".
pub async fn review(
    engine: &casebook::Engine,
    reviewer: &casebook::security::Principal,
    subject: &casebook::records::SubjectId,
    decision: casebook::records::Decision,
    next_review: Option<casebook::calendar::Date>,
    rationale: &str,
) -> Result<casebook::records::ReviewOutcome, casebook::records::RecordsError> {
    let (_, policy) = engine.retention_policy(reviewer).await.unwrap();
    let nrac = policy
        .nrac
        .iter()
        .map(|q| casebook::records::NracAnswer {
            question: q.key.clone(),
            answer: false,
            rationale: "no concern on record".into(),
        })
        .collect();
    let review = casebook::records::ReviewSubject {
        subject: subject.clone(),
        reviewer_role: "reviewing officer".into(),
        nrac,
        decision,
        next_review,
        rationale: rationale.into(),
        expected_version: None,
    };
    engine.review_subject(reviewer, review).await
}
