//! Restriction of processing (issue 22 item 4, DPA 2018 s47(2)) on the embedded store: a restricted subject's data leaves the view, loaded state, returned events, timeline and search of an ordinary caseworker while other subjects' data stays; reads are refused without the evidential role and a purpose, allowed reads are audited with the purpose and the subject; a hold on a record awaiting disposal restricts it; lifting restores visibility, also across a restart; unreadable restrictions withhold every subject field.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use casebook::audit::{AuditError, AuditQuery, ReadContext, ReadKind, AUDITOR_ROLE};
use casebook::case::{CaseCommand, CaseEvent, CaseFile};
use casebook::definition::Format;
use casebook::engine::{CommandContext, EngineConfig, OpenCase};
use casebook::log::TenantId;
use casebook::projection::query::{FieldFilter, PageRequest, SearchQuery, WorkQueueQuery};
use casebook::projection::{Consistency, QueryError};
use casebook::records::{
    Decision, HoldKind, HoldTarget, SubjectId, SubjectState, EVIDENTIAL_ROLE, RECORDS_ROLE,
};
use casebook::rules::serde_json::{json, Value};
use casebook::security::{Classification, Principal};
use casebook::time::Timestamp;
use casebook::Engine;

/// Microseconds in a day.
const DAY: i64 = 86_400_000_000;

fn kent() -> TenantId {
    TenantId::new("kent").unwrap()
}

fn officer() -> Principal {
    Principal::new(kent(), "pc-1")
        .with_roles(["officer"])
        .with_clearance(Classification::Secret)
}

fn evidential() -> Principal {
    Principal::new(kent(), "dc-7")
        .with_roles(["officer", EVIDENTIAL_ROLE])
        .with_clearance(Classification::Secret)
}

fn records_officer() -> Principal {
    Principal::new(kent(), "rm-1").with_roles([RECORDS_ROLE])
}

fn auditor() -> Principal {
    Principal::new(kent(), "aud-1")
        .with_roles([AUDITOR_ROLE])
        .with_clearance(Classification::TopSecret)
}

/// A burglary naming a suspect (name, address, date of birth) and a
/// victim (address), with words of both searchable.
const DEFINITION: &str = include_str!("common/subjects.toml");

const SUSPECT_FIELDS: [&str; 4] = [
    "suspect_ref",
    "suspect_dob",
    "suspect_name",
    "suspect_address",
];

/// The engine on `dir`, opened but not started.
fn opened(dir: &std::path::Path) -> Engine {
    let config = EngineConfig {
        tenants: vec![kent()],
        ..EngineConfig::default()
    };
    Engine::open_with(dir, config).unwrap()
}

async fn engine(dir: &std::path::Path) -> Engine {
    let engine = opened(dir);
    engine.start().await.unwrap();
    engine
}

/// An engine with case `B-1` opened and updated, its views caught up.
async fn world(dir: &std::path::Path) -> Engine {
    let engine = engine(dir).await;
    let admin = Principal::new(kent(), "admin-1").with_roles(["administrator"]);
    engine
        .deploy(&admin, DEFINITION, Format::Toml)
        .await
        .unwrap();
    let mut open = OpenCase::new(
        "burglary",
        CaseFile::from_json(json!({
            "summary": "shed broken into overnight",
            "suspect_ref": "PNC-0001",
            "suspect_dob": "1990-04-01",
            "suspect_name": "Zebediah Quint",
            "suspect_address": "1 Canary Row",
            "victim_ref": "PNC-0002",
            "victim_address": "9 Orchard Lane",
        }))
        .unwrap(),
    );
    open.case_id = Some("B-1".parse().unwrap());
    engine.open_case(&officer(), open).await.unwrap();
    // An update of the suspect's data only, and one of the summary.
    update(&engine, json!({"suspect_address": "2 Canary Row"})).await;
    let last = update(
        &engine,
        json!({"summary": "shed broken into overnight, tools taken"}),
    )
    .await;
    engine
        .wait_for_projections(&officer(), last.position.unwrap(), Duration::from_secs(10))
        .await
        .unwrap();
    engine
}

async fn update(engine: &Engine, changes: Value) -> casebook::engine::CaseOutcome {
    engine
        .execute(
            &officer(),
            "B-1",
            CaseCommand::UpdateCaseFile {
                changes: CaseFile::from_json(changes).unwrap(),
            },
            CommandContext::because("enquiries"),
        )
        .await
        .unwrap()
}

async fn review(engine: &Engine, subject: &SubjectId, decision: Decision) {
    let next = (decision != Decision::Dispose)
        .then(|| casebook::calendar::parse_date("2099-01-01").unwrap());
    common::review(
        engine,
        &records_officer(),
        subject,
        decision,
        next,
        "erasure requested; data needed as evidence",
    )
    .await
    .unwrap();
}

async fn suspect(engine: &Engine) -> SubjectId {
    engine
        .subject_id(&records_officer(), "PNC-0001")
        .await
        .unwrap()
}

fn fields(view: &casebook::case::CaseView) -> BTreeSet<String> {
    view.case_file
        .keys()
        .map(|k| k.as_str().to_string())
        .collect()
}

async fn search(engine: &Engine, query: SearchQuery) -> Vec<String> {
    let page = engine
        .search_cases(&officer(), &query, Consistency::Eventual)
        .await
        .unwrap();
    assert_eq!(page.total.unwrap_or(page.items.len()), page.items.len());
    page.items.into_iter().map(|c| c.case_id).collect()
}

fn words(text: &str) -> SearchQuery {
    SearchQuery {
        text: Some(text.into()),
        ..SearchQuery::default()
    }
}

fn field_equals(field: &str, value: &str) -> SearchQuery {
    SearchQuery {
        case_type: Some("burglary".into()),
        fields: vec![FieldFilter::equals(field, json!(value))],
        ..SearchQuery::default()
    }
}

/// Every field name the officer's timeline of `B-1` lists, and its length.
async fn timeline(engine: &Engine) -> (BTreeSet<String>, usize) {
    let page = engine
        .timeline(
            &officer(),
            "B-1",
            PageRequest {
                offset: 0,
                limit: 100,
            },
            Consistency::Eventual,
        )
        .await
        .unwrap();
    let names = page.items.iter().flat_map(|e| e.fields.clone()).collect();
    (names, page.items.len())
}

/// The evidential view of `case_id` (its case view only).
async fn evidential_view(
    engine: &Engine,
    reader: ReadContext<'_>,
    case_id: &str,
) -> Result<casebook::case::CaseView, QueryError> {
    engine
        .case_view_evidential(reader, case_id, Consistency::Eventual)
        .await
        .map(|c| c.view)
}

/// How many of the suspect's fields the officer's view of `B-1` shows
/// (the victim's always show).
async fn suspect_fields_seen(engine: &Engine) -> usize {
    let seen = fields(&engine.view(&officer(), "B-1").await.unwrap());
    assert!(seen.contains("victim_address"));
    SUSPECT_FIELDS.iter().filter(|f| seen.contains(**f)).count()
}

fn none_of_the_suspects(names: &BTreeSet<String>) -> bool {
    SUSPECT_FIELDS.iter().all(|f| !names.contains(*f))
}

#[tokio::test]
async fn a_restricted_subjects_data_leaves_every_read_of_an_ordinary_caseworker() {
    let dir = tempfile::tempdir().unwrap();
    let engine = world(dir.path()).await;
    let before = engine.view(&officer(), "B-1").await.unwrap();
    assert!(fields(&before).contains("suspect_name"));
    assert_eq!(search(&engine, words("zebediah")).await, ["B-1"]);
    let (names, entries_before) = timeline(&engine).await;
    assert!(names.contains("suspect_address"));

    // Restricted after the views were built: none of them serves it.
    review(&engine, &suspect(&engine).await, Decision::Restrict).await;

    let view = engine.view(&officer(), "B-1").await.unwrap();
    let seen = fields(&view);
    assert!(none_of_the_suspects(&seen), "{seen:?}");
    assert!(seen.contains("victim_address") && seen.contains("summary"));
    assert_eq!(view.case_file["victim_address"], json!("9 Orchard Lane"));

    let projected = engine
        .case_view(&officer(), "B-1", Consistency::Eventual)
        .await
        .unwrap();
    assert_eq!(fields(&projected.view), seen);

    let loaded = engine.load(&officer(), "B-1").await.unwrap();
    let loaded_fields: BTreeSet<String> = loaded
        .state
        .case_file
        .keys()
        .map(|k| k.as_str().to_string())
        .collect();
    assert_eq!(loaded_fields, seen);

    // The timeline names none of the suspect's fields, and the update of
    // the suspect's address alone is gone; the rest stays.
    let (names, entries) = timeline(&engine).await;
    assert!(none_of_the_suspects(&names), "{names:?}");
    assert!(names.contains("victim_address") && names.contains("summary"));
    assert_eq!(entries, entries_before - 1);

    // Search: the suspect's words and values find nothing, not even a
    // count; the victim's and the summary's still find the case.
    for q in [
        words("zebediah"),
        words("canary"),
        words("zebediah orchard"),
        field_equals("suspect_name", "Zebediah Quint"),
        field_equals("suspect_ref", "PNC-0001"),
    ] {
        assert!(search(&engine, q.clone()).await.is_empty(), "{q:?}");
    }
    assert_eq!(search(&engine, words("orchard")).await, ["B-1"]);
    assert_eq!(search(&engine, words("tools")).await, ["B-1"]);
    assert_eq!(
        search(&engine, field_equals("victim_ref", "PNC-0002")).await,
        ["B-1"]
    );

    // The work stays in the queue (its items carry no case-file value).
    let queue = engine
        .work_queue(
            &officer(),
            &WorkQueueQuery {
                role: Some("officer".into()),
                ..WorkQueueQuery::default()
            },
            Consistency::Eventual,
        )
        .await
        .unwrap();
    assert!(queue.items.iter().any(|w| w.case_id == "B-1"));

    // What a command returns is read the same way.
    let outcome = update(
        &engine,
        json!({"suspect_address": "3 Canary Row", "summary": "tools recovered"}),
    )
    .await;
    for e in &outcome.events {
        if let CaseEvent::CaseFileUpdated { changes } = e {
            let names: BTreeSet<String> = changes.keys().map(|k| k.as_str().to_string()).collect();
            assert_eq!(names, BTreeSet::from(["summary".to_string()]));
        }
    }
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn restricted_data_is_read_only_with_the_evidential_role_and_a_purpose_and_each_read_is_audited(
) {
    let dir = tempfile::tempdir().unwrap();
    let engine = world(dir.path()).await;
    let subject = suspect(&engine).await;
    review(&engine, &subject, Decision::Restrict).await;
    let ordinary = engine
        .case_view(&officer(), "B-1", Consistency::Eventual)
        .await
        .unwrap()
        .view;

    // The role and a purpose: everything, audited with both.
    let purpose = "CPS file for the trial of R v Quint";
    let full = evidential_view(
        &engine,
        ReadContext::new(&evidential()).purpose(purpose),
        "B-1",
    )
    .await
    .unwrap();
    assert_eq!(full.case_file["suspect_name"], json!("Zebediah Quint"));
    assert_eq!(full.case_file["suspect_address"], json!("2 Canary Row"));

    // The role, no purpose (or a blank one): a typed error saying so.
    for reader in [
        ReadContext::new(&evidential()),
        ReadContext::new(&evidential()).purpose("   "),
    ] {
        let err = evidential_view(&engine, reader, "B-1").await.unwrap_err();
        assert!(
            matches!(
                err,
                QueryError::Audit(AuditError::EvidentialPurposeRequired { .. })
            ),
            "{err:?}"
        );
        assert_eq!(err.kind(), casebook::ErrorKind::PermissionDenied);
    }
    // A purpose too long is bad input.
    let long = "x".repeat(casebook::audit::MAX_PURPOSE + 1);
    let err = evidential_view(
        &engine,
        ReadContext::new(&evidential()).purpose(long),
        "B-1",
    )
    .await
    .unwrap_err();
    assert!(matches!(
        err,
        QueryError::Audit(AuditError::PurposeTooLong { .. })
    ));

    // No role, with a purpose: exactly an ordinary reader's view.
    let plain = evidential_view(
        &engine,
        ReadContext::new(&officer()).purpose(purpose),
        "B-1",
    )
    .await
    .unwrap();
    assert_eq!(plain, ordinary);
    // The role does not lift the restriction on the ordinary reads.
    let as_evidential = engine.view(&evidential(), "B-1").await.unwrap();
    assert_eq!(fields(&as_evidential), fields(&ordinary));
    // An unknown case reads as unknown, for both.
    for who in [evidential(), officer()] {
        let err = evidential_view(&engine, ReadContext::new(&who).purpose(purpose), "B-404")
            .await
            .unwrap_err();
        assert!(matches!(err, QueryError::UnknownCase { .. }), "{err:?}");
    }

    let now = engine.now().0;
    let audit = engine
        .audit_entries(
            &auditor(),
            &AuditQuery::between(
                Timestamp::from_micros(now - DAY),
                Timestamp::from_micros(now + DAY),
            )
            .for_case("B-1"),
        )
        .await
        .unwrap();
    let evidential_reads: Vec<_> = audit
        .entries
        .iter()
        .filter(|e| e.read == ReadKind::EvidentialView)
        .collect();
    assert_eq!(evidential_reads.len(), 5, "{evidential_reads:#?}");
    let allowed = evidential_reads[0];
    assert_eq!(allowed.subject, "dc-7");
    assert_eq!(allowed.purpose.as_deref(), Some(purpose));
    assert_eq!(allowed.outcome, casebook::audit::AuditOutcome::Answered);
    let query = allowed.query.as_deref().unwrap();
    assert!(query.contains(subject.as_str()), "{query}");
    // The entry holds the subject's keyed id, never its data.
    for entry in &audit.entries {
        let text = format!("{entry:?}");
        assert!(!text.contains("Zebediah") && !text.contains("PNC-0001"));
    }
    assert_eq!(
        evidential_reads[1].outcome,
        casebook::audit::AuditOutcome::Denied
    );
    let refused_role = evidential_reads[4];
    assert_eq!(refused_role.subject, "pc-1");
    assert!(refused_role.query.as_deref().unwrap().contains("without"));
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn lifting_the_restriction_restores_every_read_also_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let engine = world(dir.path()).await;
    let subject = suspect(&engine).await;
    review(&engine, &subject, Decision::Restrict).await;
    engine.shutdown().await.unwrap();
    drop(engine);

    // The restriction holds after a restart.
    let engine = self::engine(dir.path()).await;
    assert_eq!(suspect_fields_seen(&engine).await, 0);
    assert!(search(&engine, words("zebediah")).await.is_empty());

    // A later review retains the record: the data is visible again.
    review(&engine, &subject, Decision::Retain).await;
    let view = engine.view(&officer(), "B-1").await.unwrap();
    assert_eq!(view.case_file["suspect_name"], json!("Zebediah Quint"));
    assert_eq!(search(&engine, words("zebediah")).await, ["B-1"]);
    let (names, _) = timeline(&engine).await;
    assert!(names.contains("suspect_address"));
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_hold_landing_on_a_subject_awaiting_disposal_restricts_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let engine = world(dir.path()).await;
    let subject = suspect(&engine).await;
    review(&engine, &subject, Decision::Dispose).await;
    // Awaiting disposal is not restricted (erasure is another step).
    assert_eq!(suspect_fields_seen(&engine).await, SUSPECT_FIELDS.len());

    let hold = engine
        .place_hold(
            &records_officer(),
            HoldTarget::Case("B-1".into()),
            HoldKind::Litigation,
            "civil claim against the force",
        )
        .await
        .unwrap();
    let record = engine.subject(&records_officer(), &subject).await.unwrap();
    assert_eq!(record.state, SubjectState::Restricted);
    assert_eq!(suspect_fields_seen(&engine).await, 0);
    assert!(search(&engine, words("zebediah")).await.is_empty());

    // Releasing the hold does not lift the restriction: only a review does.
    engine
        .release_hold(&records_officer(), &hold.id, "claim settled")
        .await
        .unwrap();
    assert_eq!(suspect_fields_seen(&engine).await, 0);
    review(&engine, &subject, Decision::Retain).await;
    assert_eq!(suspect_fields_seen(&engine).await, SUSPECT_FIELDS.len());
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn when_the_restrictions_cannot_be_read_every_subject_field_is_withheld() {
    let dir = tempfile::tempdir().unwrap();
    let engine = world(dir.path()).await;
    engine.shutdown().await.unwrap();
    drop(engine);
    // Opened but not started: no projection says who is restricted.
    let engine = opened(dir.path());
    let seen = fields(&engine.view(&officer(), "B-1").await.unwrap());
    assert_eq!(seen, BTreeSet::from(["summary".to_string()]));
    engine.shutdown().await.unwrap();
}
