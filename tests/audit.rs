//! The audit of reads (DPA 2018 s62): each read kind records exactly one entry naming the right cases, refused attempts included; a definition may require a purpose; entries survive SIGKILL; auditors (and no one else) query them.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use casebook::audit::{
    AuditEntry, AuditError, AuditOutcome, AuditQuery, AuditRecord, ReadContext, ReadKind,
    AUDITOR_ROLE,
};
use casebook::case::CaseFile;
use casebook::definition::Format;
use casebook::engine::{EngineConfig, EngineError, OpenCase};
use casebook::log::codec::DomainEvent;
use casebook::log::{
    CorrelationId, Direction, EventStore, GlobalPosition, StreamId, StreamVersion,
    SubscriptionStart, TenantId,
};
use casebook::projection::query::{DeadlineQuery, PageRequest, SearchQuery, WorkQueueQuery};
use casebook::projection::{Consistency, QueryError};
use casebook::rules::serde_json::json;
use casebook::security::{Classification, PositionToken, Principal};
use casebook::time::{ManualClock, Timestamp};
use casebook::{streams, Engine, ErrorKind};

const INCIDENT: &str = include_str!("common/incident.toml");
const WAIT: Duration = Duration::from_secs(10);
/// 2026-03-02T10:00:00Z.
const T0: i64 = 1_772_445_600_000_000;

fn kent() -> TenantId {
    TenantId::new("kent").unwrap()
}

fn admin() -> Principal {
    Principal::new(kent(), "admin-1").with_roles(["administrator"])
}

fn handler() -> Principal {
    Principal::new(kent(), "pc-101").with_roles(["handler"])
}

fn supervisor() -> Principal {
    Principal::new(kent(), "sgt-7")
        .with_roles(["supervisor", "handler"])
        .with_clearance(Classification::Secret)
}

fn auditor(clearance: Classification) -> Principal {
    Principal::new(kent(), "aud-1")
        .with_roles([AUDITOR_ROLE])
        .with_clearance(clearance)
}

/// The tenants these tests use, registered at the engine's first use.
fn registered() -> Vec<casebook::log::TenantId> {
    ["kent", "essex"]
        .map(|t| casebook::log::TenantId::new(t).unwrap())
        .to_vec()
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Timestamp::from_micros(T0)))
}

async fn engine_with(clock: Arc<ManualClock>) -> Engine {
    let engine = Engine::in_memory_with(EngineConfig {
        clock,
        tenants: registered(),
        ..EngineConfig::default()
    })
    .unwrap();
    engine.start().await.unwrap();
    engine
        .deploy(&admin(), INCIDENT, Format::Toml)
        .await
        .unwrap();
    engine
}

/// Opens case `id`, marked `marking`; returns the position of its events.
async fn open(engine: &Engine, id: &str, marking: Classification) -> PositionToken {
    let mut request = OpenCase::new(
        "incident",
        CaseFile::from_json(json!({
            "summary": format!("bike stolen {id}"),
            "ward": "north",
            "informant": "Jo Bloggs",
        }))
        .unwrap(),
    );
    request.case_id = Some(id.parse().unwrap());
    request.classification = Some(marking);
    engine
        .open_case(&supervisor(), request)
        .await
        .unwrap()
        .position
        .unwrap()
}

/// Every audit entry of the tenant on the test's day, oldest first.
async fn entries(store: &dyn EventStore) -> Vec<AuditEntry> {
    let stream = streams::audit(&kent(), Timestamp::from_micros(T0)).unwrap();
    // Entries are answered once written; reading them raw needs them synced.
    store.sync_written().await.unwrap();
    store
        .read_stream(&stream, Direction::Forward, StreamVersion::START, 10_000)
        .await
        .unwrap()
        .iter()
        .flat_map(|e| {
            AuditRecord::decode_payload(&e.event_type, &e.payload)
                .unwrap()
                .entries
        })
        .collect()
}

/// Runs `read`, then returns the one entry it added (failing if it added
/// none or more than one).
async fn one_entry<F, Fut, T>(engine: &Engine, read: F) -> (T, AuditEntry)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let before = entries(
        &*engine
            .store(&casebook::security::Principal::platform_administrator(
                "ops",
            ))
            .unwrap(),
    )
    .await
    .len();
    let out = read().await;
    let after = entries(
        &*engine
            .store(&casebook::security::Principal::platform_administrator(
                "ops",
            ))
            .unwrap(),
    )
    .await;
    assert_eq!(after.len(), before + 1, "exactly one entry per read");
    (out, after.last().unwrap().clone())
}

/// How many of `entries` record views.
fn views(entries: &[AuditEntry]) -> usize {
    entries.iter().filter(|e| e.read == ReadKind::View).count()
}

fn fresh(position: PositionToken) -> Consistency {
    Consistency::AtLeast {
        position,
        timeout: WAIT,
    }
}

#[tokio::test]
async fn each_read_kind_records_exactly_one_entry_naming_its_cases() {
    let engine = engine_with(clock()).await;
    open(&engine, "INC-1", Classification::Official).await;
    let last = open(&engine, "INC-2", Classification::Official).await;
    let at = fresh(last);
    let h = handler();
    let why = || ReadContext::new(&h).purpose("victim asked for an update");

    let (view, e) = one_entry(&engine, || engine.view(why(), "INC-1")).await;
    view.unwrap();
    assert_eq!(e.read, ReadKind::View);
    assert_eq!(e.cases, ["INC-1"]);
    assert_eq!(e.subject, "pc-101");
    assert_eq!(e.purpose.as_deref(), Some("victim asked for an update"));
    assert_eq!(e.outcome, AuditOutcome::Answered);
    assert_eq!(e.at, Timestamp::from_micros(T0));

    // `load` returns the whole state: it needs clearance for the SECRET field.
    let cleared = handler().with_clearance(Classification::Secret);
    let (loaded, e) = one_entry(&engine, || engine.load(&cleared, "INC-2")).await;
    loaded.unwrap();
    assert_eq!(
        (e.read, e.cases.clone(), e.purpose),
        (ReadKind::Load, vec!["INC-2".to_string()], None)
    );

    let (found, e) = one_entry(&engine, || engine.case_view(why(), "INC-1", at)).await;
    found.unwrap();
    assert_eq!(
        (e.read, e.cases),
        (ReadKind::CaseView, vec!["INC-1".to_string()])
    );

    let (timeline, e) = one_entry(&engine, || {
        engine.timeline(why(), "INC-2", PageRequest::default(), at)
    })
    .await;
    assert!(!timeline.unwrap().items.is_empty());
    assert_eq!(
        (e.read, e.cases),
        (ReadKind::Timeline, vec!["INC-2".to_string()])
    );

    let query = SearchQuery {
        case_type: Some("incident".into()),
        ..SearchQuery::default()
    };
    let (found, e) = one_entry(&engine, || engine.search_cases(why(), &query, at)).await;
    let found: BTreeSet<String> = found
        .unwrap()
        .items
        .into_iter()
        .map(|c| c.case_id)
        .collect();
    assert_eq!(e.read, ReadKind::Search);
    assert_eq!(e.cases.iter().cloned().collect::<BTreeSet<_>>(), found);
    assert_eq!(found.len(), 2);
    assert!(e.query.unwrap().contains("incident"));

    let queue = WorkQueueQuery {
        role: Some("handler".into()),
        ..WorkQueueQuery::default()
    };
    let (items, e) = one_entry(&engine, || engine.work_queue(why(), &queue, at)).await;
    let items: BTreeSet<String> = items
        .unwrap()
        .items
        .into_iter()
        .map(|w| w.case_id)
        .collect();
    assert_eq!(e.read, ReadKind::WorkQueue);
    assert_eq!(items.len(), 2);
    assert_eq!(e.cases.iter().cloned().collect::<BTreeSet<_>>(), items);

    let deadlines = DeadlineQuery {
        due_before: Timestamp::from_micros(T0 + 30 * 86_400_000_000),
        now: Timestamp::from_micros(T0),
        case_type: None,
        page: PageRequest::default(),
    };
    let (due, e) = one_entry(&engine, || engine.deadlines(why(), &deadlines, at)).await;
    let due: BTreeSet<String> = due.unwrap().items.into_iter().map(|d| d.case_id).collect();
    assert_eq!(e.read, ReadKind::Deadlines);
    assert_eq!(due.len(), 2);
    assert_eq!(e.cases.iter().cloned().collect::<BTreeSet<_>>(), due);

    let (incidents, e) = one_entry(&engine, || {
        engine.incidents(why(), PageRequest::default(), at)
    })
    .await;
    assert!(incidents.unwrap().items.is_empty());
    assert_eq!((e.read, e.cases.len()), (ReadKind::Incidents, 0));

    // Raw reads (a TOP SECRET auditor may read the engine's streams).
    let raw = auditor(Classification::TopSecret);
    let case_stream = StreamId::new(kent(), "case", "INC-1").unwrap();
    let (events, e) = one_entry(&engine, || {
        engine.read_stream(
            &raw,
            &case_stream,
            Direction::Forward,
            StreamVersion::START,
            100,
        )
    })
    .await;
    assert!(!events.unwrap().is_empty());
    assert_eq!(
        (e.read, e.cases),
        (ReadKind::RawStream, vec!["INC-1".to_string()])
    );

    let (all, e) = one_entry(&engine, || {
        engine.read_all(&raw, PositionToken::NONE, 1_000)
    })
    .await;
    let (events, _) = all.unwrap();
    assert!(!events.is_empty());
    assert_eq!(e.read, ReadKind::RawLog);
    assert!(e.cases.contains(&"INC-1".to_string()) && e.cases.contains(&"INC-2".to_string()));

    let (subscription, e) = one_entry(&engine, || {
        engine.subscribe_all(&raw, SubscriptionStart::Beginning)
    })
    .await;
    subscription.unwrap();
    assert_eq!(e.read, ReadKind::RawSubscription);

    let range = AuditQuery::between(
        Timestamp::from_micros(T0 - 1),
        Timestamp::from_micros(T0 + 1),
    );
    let (page, e) = one_entry(&engine, || engine.audit_entries(&raw, &range)).await;
    assert_eq!(
        page.unwrap().entries.len(),
        11,
        "the eleven reads before it"
    );
    assert_eq!(e.read, ReadKind::AuditQuery);
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn refused_reads_are_recorded_and_look_like_missing_cases() {
    let engine = engine_with(clock()).await;
    let last = open(&engine, "SEC-1", Classification::Secret).await;
    let h = handler();

    let (missing, e) = one_entry(&engine, || engine.view(&h, "NOPE-1")).await;
    assert_eq!(missing.unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(
        (e.outcome, e.cases, e.marking),
        (
            AuditOutcome::NotFound,
            vec!["NOPE-1".to_string()],
            Classification::Official
        )
    );

    // Above the reader's clearance: the same answer, and an entry marked
    // as the case is (so lower-cleared auditors do not learn of it).
    let (hidden, e) = one_entry(&engine, || engine.view(&h, "SEC-1")).await;
    assert_eq!(hidden.unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(
        (e.outcome, e.marking),
        (AuditOutcome::NotFound, Classification::Secret)
    );

    let (hidden, e) = one_entry(&engine, || engine.case_view(&h, "SEC-1", fresh(last))).await;
    assert!(matches!(hidden, Err(QueryError::UnknownCase { .. })));
    assert_eq!(
        (e.read, e.outcome, e.marking),
        (
            ReadKind::CaseView,
            AuditOutcome::NotFound,
            Classification::Secret
        )
    );

    let (hidden, e) = one_entry(&engine, || {
        engine.timeline(&h, "SEC-1", PageRequest::default(), fresh(last))
    })
    .await;
    assert_eq!(hidden.unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(
        (e.read, e.outcome, e.marking),
        (
            ReadKind::Timeline,
            AuditOutcome::NotFound,
            Classification::Secret
        )
    );

    // Raw case events without being a TOP SECRET auditor: empty, like a
    // stream that does not exist, and recorded as denied.
    let stream = StreamId::new(kent(), "case", "SEC-1").unwrap();
    let (events, e) = one_entry(&engine, || {
        engine.read_stream(&h, &stream, Direction::Forward, StreamVersion::START, 10)
    })
    .await;
    assert!(events.unwrap().is_empty());
    assert_eq!(
        (e.read, e.outcome),
        (ReadKind::RawStream, AuditOutcome::Denied)
    );

    // Bad input is recorded too.
    let bad = WorkQueueQuery {
        page: PageRequest {
            offset: 0,
            limit: 0,
        },
        ..WorkQueueQuery::default()
    };
    let (refused, e) = one_entry(&engine, || engine.work_queue(&h, &bad, fresh(last))).await;
    assert!(refused.is_err());
    assert!(matches!(e.outcome, AuditOutcome::Failed { .. }));

    // A non-auditor asking the audit.
    let range = AuditQuery::between(Timestamp::from_micros(0), Timestamp::from_micros(T0 + 1));
    let sgt = supervisor();
    let (refused, e) = one_entry(&engine, || engine.audit_entries(&sgt, &range)).await;
    assert!(matches!(
        refused,
        Err(EngineError::Audit(AuditError::NotAuditor { .. }))
    ));
    assert_eq!(refused.unwrap_err().kind(), ErrorKind::PermissionDenied);
    assert_eq!(
        (e.read, e.outcome),
        (ReadKind::AuditQuery, AuditOutcome::Denied)
    );
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn auditors_query_by_case_user_and_time_within_their_clearance_and_page() {
    let clock = clock();
    let engine = engine_with(Arc::clone(&clock)).await;
    open(&engine, "INC-1", Classification::Official).await;
    open(&engine, "SEC-1", Classification::Secret).await;
    let h = handler();
    let s = supervisor();
    engine.view(&h, "INC-1").await.unwrap();
    clock.advance(Duration::from_secs(60));
    engine.view(&s, "SEC-1").await.unwrap();
    engine.view(&s, "INC-1").await.unwrap();
    clock.advance(Duration::from_secs(60));
    engine.view(&h, "INC-1").await.unwrap();
    let t = |secs: i64| Timestamp::from_micros(T0 + secs * 1_000_000);
    let day = AuditQuery::between(t(0), t(3600));

    // An OFFICIAL auditor does not see the entry about the SECRET case.
    // (Each query is an entry too: count the views.)
    let low = auditor(Classification::Official);
    let high = auditor(Classification::Secret);
    let seen = engine.audit_entries(&low, &day).await.unwrap();
    assert_eq!(seen.entries.len(), 3);
    assert!(seen
        .entries
        .iter()
        .all(|e| !e.cases.contains(&"SEC-1".to_string())));
    assert!(seen.next.is_none());
    let all = engine.audit_entries(&high, &day).await.unwrap();
    assert_eq!(views(&all.entries), 4);
    // Nor by asking for it by name.
    let sec = day.clone().for_case("SEC-1");
    let low_sec = engine.audit_entries(&low, &sec).await.unwrap();
    assert_eq!(views(&low_sec.entries), 0);
    let high_sec = engine.audit_entries(&high, &sec).await.unwrap();
    assert_eq!(views(&high_sec.entries), 1);

    // By user, by case, by time.
    let by_sgt = engine
        .audit_entries(&high, &day.clone().by_subject("sgt-7"))
        .await
        .unwrap();
    assert_eq!(by_sgt.entries.len(), 2);
    assert!(by_sgt.entries.iter().all(|e| e.subject == "sgt-7"));
    let inc = engine
        .audit_entries(&high, &day.clone().for_case("INC-1"))
        .await
        .unwrap();
    assert_eq!(views(&inc.entries), 3);
    assert!(inc
        .entries
        .iter()
        .all(|e| e.cases.contains(&"INC-1".to_string())));
    let middle = AuditQuery::between(t(30), t(90));
    let mid = engine.audit_entries(&high, &middle).await.unwrap();
    assert_eq!(mid.entries.len(), 2);
    assert!(mid.entries.iter().all(|e| e.at == t(60)));

    // Paged, one entry a page (pc-101 made two reads).
    let mut page = day.clone().by_subject("pc-101");
    page.limit = 1;
    let first = engine.audit_entries(&high, &page).await.unwrap();
    assert_eq!(first.entries.len(), 1);
    page.after = first.next;
    let second = engine.audit_entries(&high, &page).await.unwrap();
    assert_eq!(second.entries.len(), 1);
    assert_ne!(first.entries[0].at, second.entries[0].at);
    page.after = second.next;
    assert!(engine
        .audit_entries(&high, &page)
        .await
        .unwrap()
        .entries
        .is_empty());

    // No one else: not the case's own readers, not an administrator.
    for p in [h, s, admin()] {
        let refused = engine.audit_entries(&p, &day).await.unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::PermissionDenied);
    }
    // Another tenant's auditor sees none of kent's entries.
    let surrey = Principal::new(TenantId::new("surrey").unwrap(), "aud-9")
        .with_roles([AUDITOR_ROLE])
        .with_clearance(Classification::TopSecret);
    assert!(engine
        .audit_entries(&surrey, &day)
        .await
        .unwrap()
        .entries
        .is_empty());
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_definition_may_require_a_purpose_above_a_marking() {
    let engine = engine_with(clock()).await;
    let strict = INCIDENT
        .replace("key = \"incident\"", "key = \"strict\"")
        .replace(
            "team = \"response\"",
            "team = \"response\"\n\n[audit]\npurpose_required_above = \"OFFICIAL\"",
        );
    engine
        .deploy(&admin(), &strict, Format::Toml)
        .await
        .unwrap();
    let file = CaseFile::from_json(json!({
        "summary": "x", "ward": "north", "informant": "Jo Bloggs"
    }))
    .unwrap();
    let s = supervisor();
    let mut request = OpenCase::new("strict", file.clone());
    request.case_id = Some("STR-1".parse().unwrap());
    engine.open_case(&s, request).await.unwrap();

    let (bare, e) = one_entry(&engine, || engine.view(&s, "STR-1")).await;
    let bare = bare.unwrap();
    assert!(
        !bare.case_file.keys().any(|k| k.as_str() == "informant"),
        "withheld without a purpose"
    );
    assert!(bare.case_file.keys().any(|k| k.as_str() == "summary"));
    assert_eq!(e.purpose, None);
    let why = ReadContext::new(&s).purpose("informant handling review");
    let (full, e) = one_entry(&engine, || engine.view(why.clone(), "STR-1")).await;
    assert!(full
        .unwrap()
        .case_file
        .keys()
        .any(|k| k.as_str() == "informant"));
    assert_eq!(e.purpose.as_deref(), Some("informant handling review"));

    // The whole state only with a purpose; the refusal is recorded.
    let (refused, e) = one_entry(&engine, || engine.load(&s, "STR-1")).await;
    assert!(matches!(
        refused,
        Err(EngineError::Audit(AuditError::PurposeRequired { .. }))
    ));
    assert_eq!(e.outcome, AuditOutcome::Denied);
    engine.load(why.clone(), "STR-1").await.unwrap();

    // A case itself marked above it is refused without a purpose.
    let mut request = OpenCase::new("strict", file);
    request.case_id = Some("STR-2".parse().unwrap());
    request.classification = Some(Classification::Secret);
    engine.open_case(&s, request).await.unwrap();
    let refused = engine.view(&s, "STR-2").await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::PermissionDenied);
    engine.view(why, "STR-2").await.unwrap();
    // ...but one above the reader's clearance still reads as missing.
    assert_eq!(
        engine.view(&handler(), "STR-2").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );

    // Definitions without [audit] keep their stored form (and fingerprint).
    let plain = engine.definition(&admin(), "incident", None).await.unwrap();
    assert!(!plain.canonical_json().contains("\"audit\""));
    let def = engine.definition(&admin(), "strict", None).await.unwrap();
    assert_eq!(def.purpose_required_above(), Some(Classification::Official));
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn many_concurrent_readers_each_get_their_entry() {
    let engine = engine_with(clock()).await;
    open(&engine, "INC-1", Classification::Official).await;
    let before = entries(
        &*engine
            .store(&casebook::security::Principal::platform_administrator(
                "ops",
            ))
            .unwrap(),
    )
    .await
    .len();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let h = handler();
            let id = CorrelationId::new();
            let context = ReadContext::new(&h)
                .purpose(format!("reader {i}"))
                .correlation(id);
            engine.view(context, "INC-1").await.unwrap();
            id
        }));
    }
    let mut ids = BTreeSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap().0.to_string());
    }
    let after = entries(
        &*engine
            .store(&casebook::security::Principal::platform_administrator(
                "ops",
            ))
            .unwrap(),
    )
    .await;
    assert_eq!(after.len(), before + 64);
    let recorded: BTreeSet<String> = after.iter().filter_map(|e| e.correlation.clone()).collect();
    assert_eq!(recorded, ids);
    engine.shutdown().await.unwrap();
}

const CHILD_ENV: &str = "CASEBOOK_AUDIT_CHILD_DIR";

/// The child of `acknowledged_reads_keep_their_entries_after_sigkill`:
/// reads a case from many tasks and prints each read's correlation id once
/// the read has answered.
#[test]
fn audit_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let engine = Engine::open_with(
            &dir,
            EngineConfig {
                tenants: registered(),
                ..EngineConfig::default()
            },
        )
        .expect("child opens the engine");
        engine.start().await.unwrap();
        engine
            .deploy(&admin(), INCIDENT, Format::Toml)
            .await
            .unwrap();
        let mut request = OpenCase::new(
            "incident",
            CaseFile::from_json(json!({"summary": "x", "ward": "north"})).unwrap(),
        );
        request.case_id = Some("INC-1".parse().unwrap());
        let _ = engine.open_case(&supervisor(), request).await;
        println!("READY");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        for _ in 0..16 {
            let engine = engine.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let h = handler();
                loop {
                    let id = CorrelationId::new();
                    let context = ReadContext::new(&h).purpose("crash test").correlation(id);
                    engine.view(context, "INC-1").await.unwrap();
                    let _ = tx.send(id.0.to_string());
                }
            });
        }
        while let Some(id) = rx.recv().await {
            println!("READ {id}");
        }
    });
}

#[test]
fn acknowledged_reads_keep_their_entries_after_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["audit_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut ready = false;
        let mut read = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.ends_with("READY") {
                ready = true;
            } else if let Some(id) = line.strip_prefix("READ ") {
                read.push(id.to_string());
            }
        }
        (ready, read)
    });
    // Kill once a few hundred reads have answered (or after 20 s).
    let started = std::time::Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let stream = dir.path().join("log");
        if started.elapsed() > Duration::from_secs(20)
            || (stream.exists() && started.elapsed() > Duration::from_secs(3))
        {
            break;
        }
    }
    child.kill().expect("SIGKILL the child");
    assert!(!child.wait().unwrap().success(), "the child was killed");
    let (ready, read) = reader.join().unwrap();
    assert!(ready, "the child never got going");
    assert!(
        read.len() >= 10,
        "only {} reads answered before the kill",
        read.len()
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let engine = Engine::open_with(
            dir.path(),
            EngineConfig {
                tenants: registered(),
                ..EngineConfig::default()
            },
        )
        .expect("reopen after SIGKILL");
        let store = engine
            .store(&casebook::security::Principal::platform_administrator(
                "ops",
            ))
            .unwrap();
        let mut recorded = BTreeSet::new();
        let mut from = GlobalPosition::START;
        loop {
            let events = store.read_all(&kent(), from, 1_000).await.unwrap();
            let Some(last) = events.last() else { break };
            from = GlobalPosition(last.position.0 + 1);
            for e in events
                .iter()
                .filter(|e| e.stream.category() == streams::AUDIT)
            {
                let record = AuditRecord::decode_payload(&e.event_type, &e.payload).unwrap();
                for entry in record.entries {
                    assert_eq!(entry.read, ReadKind::View);
                    recorded.extend(entry.correlation);
                }
            }
        }
        for id in &read {
            assert!(
                recorded.contains(id),
                "read {id} answered but its entry is lost"
            );
        }
        engine.shutdown().await.unwrap();
    });
}
