//! Projections end to end: the built-in views follow the log, answer
//! read-your-writes queries, stay inside the caller's tenant and clearance,
//! reject bad queries with typed errors, rebuild without downtime (swapping
//! only once caught up), fault alone and retry, and are exactly right after a
//! rebuild (property test) and after the process is killed during catch-up
//! or during a rebuild (crash test: the child is this test binary re-run with
//! `CASEBOOK_PROJ_CRASH_DIR` set and filtered to `projection_crash_child`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use casebook::case::{CaseCommand, CaseFile, CaseStatus, ItemRef};
use casebook::definition::Format;
use casebook::engine::{CommandContext, EngineConfig, OpenCase, TenantRunState};
use casebook::log::{
    ActorId, Direction, EventData, EventStore, ExpectedVersion, GlobalPosition, MemoryStore,
    Metadata, RecordedEvent, Source, StreamId, StreamVersion, TenantId, Timestamp,
};
use casebook::projection::query::{
    DeadlineQuery, FieldCondition, FieldFilter, PageRequest, SearchOrder, SearchQuery, TimeRange,
    WorkQueueQuery,
};
use casebook::projection::{
    Changes, Consistency, Freshness, Handler, HandlerError, Projection, ProjectionHost, QueryError,
    Rows, RunState,
};
use casebook::rules::serde_json::{json, Value};
use casebook::security::{Classification, PositionToken, Principal};
use casebook::Engine;
use proptest::prelude::*;

/// The tenants these tests use, registered when the engine first needs its
/// tenant registry (calls for any other tenant are refused).
fn registered() -> casebook::engine::EngineConfig {
    casebook::engine::EngineConfig::with_tenants(
        ["kent", "essex", "surrey"].map(|t| TenantId::new(t).expect("valid tenant")),
    )
}

/// The platform administrator: the only caller of the engine's unscoped
/// store and projection host.
fn platform_admin() -> casebook::security::Principal {
    casebook::security::Principal::platform_administrator("ops")
}

const INCIDENT: &str = include_str!("common/incident.toml");
const WAIT: Duration = Duration::from_secs(20);

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

fn admin(t: &str) -> Principal {
    Principal::new(tenant(t), "admin-1").with_roles(["administrator"])
}

fn handler(t: &str) -> Principal {
    Principal::new(tenant(t), "pc-101").with_roles(["handler"])
}

fn supervisor(t: &str) -> Principal {
    Principal::new(tenant(t), "sgt-7")
        .with_roles(["supervisor"])
        .with_clearance(Classification::Secret)
}

fn fields(v: Value) -> CaseFile {
    CaseFile::from_json(v).unwrap()
}

fn ctx(reason: &str) -> CommandContext {
    CommandContext::because(reason)
}

async fn open_incident(engine: &Engine, t: &str, id: &str, file: Value) -> PositionToken {
    let mut req = OpenCase::new("incident", fields(file));
    req.case_id = Some(id.parse().unwrap());
    req.context = ctx("reported by phone");
    let opener = handler(t).with_clearance(Classification::Secret);
    engine
        .open_case(&opener, req)
        .await
        .unwrap()
        .position
        .unwrap()
}

async fn setup(engine: &Engine, t: &str) {
    engine
        .deploy(&admin(t), INCIDENT, Format::Toml)
        .await
        .unwrap();
}

/// The unscoped host's wait for a global position.
fn fresh(p: GlobalPosition) -> Freshness {
    Freshness::AtLeast {
        position: p,
        timeout: WAIT,
    }
}

/// A tenant's wait for one of its position tokens.
fn after(p: PositionToken) -> Consistency {
    Consistency::AtLeast {
        position: p,
        timeout: WAIT,
    }
}

/// The tenant's token for a global position (as a platform administrator
/// would hand it on).
fn token(engine: &Engine, t: &str, p: GlobalPosition) -> PositionToken {
    engine
        .position_token(&platform_admin(), &tenant(t), p)
        .unwrap()
}

/// Every key and value of the tenant's serving generation of `name`.
async fn dump(engine: &Engine, t: &str, name: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let gen = engine
        .projections(&platform_admin())
        .unwrap()
        .read(name, &tenant(t), Freshness::Eventual)
        .await
        .unwrap();
    gen.rows.iter().map(|kv| kv.unwrap()).collect()
}

async fn wait_head(engine: &Engine, t: &str) {
    if let Some(head) = engine.store(&platform_admin()).unwrap().head_position() {
        engine
            .wait_for_projections(&admin(t), token(engine, t, head), WAIT)
            .await
            .unwrap();
    }
}

/// Rebuilds every projection of the tenant and waits for the swap.
async fn rebuild_all(engine: &Engine, t: &str) {
    let before: Vec<u64> = engine
        .projection_status(&admin(t))
        .await
        .unwrap()
        .iter()
        .map(|s| s.generation)
        .collect();
    for name in engine.projections(&platform_admin()).unwrap().names() {
        engine.rebuild_projection(&admin(t), &name).await.unwrap();
    }
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let status = engine.projection_status(&admin(t)).await.unwrap();
        let swapped = status
            .iter()
            .zip(&before)
            .all(|(s, b)| s.generation != *b && s.rebuild.is_none());
        if swapped {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rebuild never swapped: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_in_views_follow_the_log_with_read_your_writes() {
    let engine = Engine::in_memory_with(registered()).unwrap();
    engine.start().await.unwrap();
    setup(&engine, "kent").await;
    let p = open_incident(
        &engine,
        "kent",
        "INC-1",
        json!({"summary": "Shed break-in, bicycle taken", "ward": "north", "informant": "Source X"}),
    )
    .await;
    let opened_later = open_incident(
        &engine,
        "kent",
        "INC-2",
        json!({"summary": "Graffiti on the bus shelter", "ward": "south", "loss": 120.5}),
    )
    .await;
    assert_ne!(opened_later, p, "tokens are distinct");

    // Case view: the same as the engine's own (log-replayed) view.
    let projected = engine
        .case_view(&handler("kent"), "INC-1", after(opened_later))
        .await
        .unwrap();
    let direct = engine.view(&handler("kent"), "INC-1").await.unwrap();
    assert_eq!(projected.view, direct);
    assert!(!projected.view.case_file.contains_key("informant"));
    let secret = engine
        .case_view(&supervisor("kent"), "INC-1", Consistency::Eventual)
        .await
        .unwrap();
    assert_eq!(secret.view.case_file["informant"], json!("Source X"));

    // Work queue: the open assessment tasks, by role; then claim and reassign.
    let q = WorkQueueQuery {
        role: Some("handler".into()),
        ..Default::default()
    };
    let queue = engine
        .work_queue(&handler("kent"), &q, Consistency::Eventual)
        .await
        .unwrap();
    assert_eq!(queue.items.len(), 2, "{queue:?}");
    assert!(queue.items.iter().all(|w| w.item.as_str() == "assess"));
    assert!(queue.items.iter().all(|w| w.due.is_some()));
    assert!(queue.items[0].due <= queue.items[1].due);
    let task = queue.items[0].clone();
    assert_eq!(task.case_id, "INC-1", "the earliest due comes first");
    let out = engine
        .claim_task(&handler("kent"), &task.case_id, task.instance, ctx("mine"))
        .await
        .unwrap();
    let mine = WorkQueueQuery {
        assignee: Some("pc-101".into()),
        ..Default::default()
    };
    let claimed = engine
        .work_queue(&handler("kent"), &mine, after(out.position.unwrap()))
        .await
        .unwrap();
    assert_eq!(claimed.items.len(), 1);
    assert_eq!(claimed.items[0].case_id, task.case_id);
    let out = engine
        .reassign_task(
            &handler("kent"),
            &task.case_id,
            task.instance,
            "pc-202",
            ctx("leave"),
        )
        .await
        .unwrap();
    let now_mine = engine
        .work_queue(&handler("kent"), &mine, after(out.position.unwrap()))
        .await
        .unwrap();
    assert!(now_mine.items.is_empty());
    let unassigned = engine
        .work_queue(
            &handler("kent"),
            &WorkQueueQuery {
                role: Some("handler".into()),
                unassigned_only: true,
                ..Default::default()
            },
            Consistency::Eventual,
        )
        .await
        .unwrap();
    assert_eq!(unassigned.items.len(), 1);

    // Completing the assessment moves the case on: review for supervisors.
    let pc202 = Principal::new(tenant("kent"), "pc-202").with_roles(["handler"]);
    let out = engine
        .execute(
            &pc202,
            "INC-1",
            CaseCommand::Complete {
                item: ItemRef::key("assess"),
                outputs: [("loss".to_string(), json!(300))].into_iter().collect(),
            },
            ctx("assessed"),
        )
        .await
        .unwrap();
    let pos = out.position.unwrap();
    let review = engine
        .work_queue(&supervisor("kent"), &WorkQueueQuery::default(), after(pos))
        .await
        .unwrap();
    assert_eq!(review.items.len(), 1);
    assert_eq!(review.items[0].item.as_str(), "review");

    // Search: by field, range, stage, status and text, sorted and paged.
    let search = |q: SearchQuery| {
        let engine = engine.clone();
        async move {
            engine
                .search_cases(&handler("kent"), &q, after(pos))
                .await
                .unwrap()
        }
    };
    let ids = |p: casebook::projection::query::Page<casebook::projection::query::CaseSummary>| {
        p.items.into_iter().map(|s| s.case_id).collect::<Vec<_>>()
    };
    let base = SearchQuery {
        case_type: Some("incident".into()),
        ..Default::default()
    };
    assert_eq!(ids(search(base.clone()).await), ["INC-2", "INC-1"]);
    let mut q = base.clone();
    q.order = SearchOrder::OpenedAscending;
    assert_eq!(ids(search(q).await), ["INC-1", "INC-2"]);
    let mut q = base.clone();
    q.fields = vec![FieldFilter::equals("ward", json!("north"))];
    assert_eq!(ids(search(q).await), ["INC-1"]);
    let mut q = base.clone();
    q.fields = vec![FieldFilter {
        field: "loss".into(),
        condition: FieldCondition::Between {
            from: Some(json!(100)),
            to: Some(json!(200)),
        },
    }];
    assert_eq!(ids(search(q).await), ["INC-2"]);
    let mut q = base.clone();
    q.stage = Some("followup".into());
    assert_eq!(ids(search(q).await), ["INC-1"]);
    let mut q = base.clone();
    q.text = Some("BICYCLE shed".into());
    assert_eq!(ids(search(q).await), ["INC-1"]);
    let mut q = base.clone();
    q.status = vec![CaseStatus::Closed];
    assert!(ids(search(q).await).is_empty());
    let mut q = base.clone();
    q.opened = Some(TimeRange {
        from: Some(Timestamp(0)),
        to: Some(Timestamp::now()),
    });
    q.page = PageRequest {
        offset: 1,
        limit: 1,
    };
    let page = search(q).await;
    assert_eq!(page.total, Some(2));
    assert_eq!(page.next_offset, None);
    assert_eq!(ids(page), ["INC-1"]);

    // Deadlines: due within a week and a day; overdue against a later "now".
    let week = 8 * 86_400_000_000;
    let dl = engine
        .deadlines(
            &handler("kent"),
            &DeadlineQuery {
                due_before: Timestamp(Timestamp::now().0 + week),
                now: Timestamp(Timestamp::now().0 + week),
                case_type: None,
                page: PageRequest::default(),
            },
            after(pos),
        )
        .await
        .unwrap();
    let keys: Vec<&str> = dl.items.iter().map(|d| d.deadline.as_str()).collect();
    assert_eq!(
        keys.iter().filter(|k| **k == "resolve").count(),
        2,
        "{keys:?}"
    );
    assert_eq!(keys.iter().filter(|k| **k == "assess_within_1h").count(), 1);
    assert!(dl.items.iter().all(|d| d.overdue));
    assert!(dl.items.windows(2).all(|w| w[0].due_at <= w[1].due_at));

    // Timeline: every event with actor, time, provenance and reason.
    let tl = engine
        .timeline(
            &handler("kent"),
            "INC-1",
            PageRequest::first(100),
            after(pos),
        )
        .await
        .unwrap();
    let stream = StreamId::new(tenant("kent"), "case", "INC-1").unwrap();
    let events = engine
        .store(&platform_admin())
        .unwrap()
        .read_stream(&stream, Direction::Forward, StreamVersion::START, 1000)
        .await
        .unwrap();
    assert_eq!(tl.items.len(), events.len());
    for (entry, event) in tl.items.iter().zip(&events) {
        assert_eq!(entry.position, token(&engine, "kent", event.position));
        assert_eq!(entry.actor, event.metadata.actor.0);
        assert_eq!(entry.at, event.recorded);
        assert_eq!(entry.source, "casebook");
    }
    assert!(
        tl.items[0].summary.starts_with("Incident opened"),
        "{}",
        tl.items[0].summary
    );
    assert_eq!(tl.items[0].reason.as_deref(), Some("reported by phone"));
    assert!(!tl.items[0].fields.contains(&"informant".to_string()));
    assert!(tl
        .items
        .iter()
        .any(|e| e.summary == "'Assess the incident' claimed by pc-101"));

    // Status: every built-in projection live, nothing behind (once each
    // has seen the last write; only two were queried above).
    engine
        .projections(&platform_admin())
        .unwrap()
        .wait_all(
            &tenant("kent"),
            engine
                .store(&platform_admin())
                .unwrap()
                .head_position()
                .unwrap(),
            WAIT,
        )
        .await
        .unwrap();
    let status = engine.projection_status(&admin("kent")).await.unwrap();
    assert_eq!(status.len(), 4, "cases, timeline, orchestration, nominals");
    for s in &status {
        assert_eq!(s.state, TenantRunState::Live, "{s:?}");
        assert_eq!(s.pending, 0);
        assert!(!s.position.is_none());
    }
    engine.shutdown().await.unwrap();
}

/// Two tenants: kent with case K-1 (`kent_file`) and a SECRET case
/// K-SECRET, essex with case E-1 (`essex_file`). Returns a consistency that
/// sees all three, once both tenants' views have caught up.
async fn two_tenants(engine: &Engine, kent_file: Value, essex_file: Value) -> Consistency {
    setup(engine, "kent").await;
    setup(engine, "essex").await;
    open_incident(engine, "kent", "K-1", kent_file).await;
    let mut req = OpenCase::new(
        "incident",
        fields(json!({"summary": "covert matter", "ward": "north"})),
    );
    req.case_id = Some("K-SECRET".parse().unwrap());
    req.classification = Some(Classification::Secret);
    let secret_opener = handler("kent").with_clearance(Classification::Secret);
    engine.open_case(&secret_opener, req).await.unwrap();
    open_incident(engine, "essex", "E-1", essex_file).await;
    // Each tenant waits for the log's head with its own token; once both
    // have, an eventual read sees all three cases.
    let head = engine
        .store(&platform_admin())
        .unwrap()
        .head_position()
        .unwrap();
    for t in ["kent", "essex"] {
        engine
            .wait_for_projections(&handler(t), token(engine, t, head), WAIT)
            .await
            .unwrap();
    }
    Consistency::Eventual
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_stays_in_its_tenant_and_clearance() {
    let engine = Engine::in_memory_with(registered()).unwrap();
    engine.start().await.unwrap();
    let c = two_tenants(
        &engine,
        json!({"summary": "kent burglary", "ward": "north", "informant": "alpha bravo"}),
        json!({"summary": "essex burglary", "ward": "north"}),
    )
    .await;
    let kent = handler("kent");
    let essex = handler("essex");
    let secret_opener = handler("kent").with_clearance(Classification::Secret);

    // Case view and timeline: another tenant's case does not exist.
    for (who, id) in [(&essex, "K-1"), (&kent, "E-1"), (&kent, "K-SECRET")] {
        let err = engine.case_view(who, id, c).await.unwrap_err();
        assert!(matches!(err, QueryError::UnknownCase { .. }), "{err}");
        let err = engine
            .timeline(who, id, PageRequest::default(), c)
            .await
            .unwrap_err();
        assert!(matches!(err, QueryError::UnknownCase { .. }), "{err}");
    }
    assert!(engine
        .case_view(&secret_opener, "K-SECRET", c)
        .await
        .is_ok());

    // Search: only the own tenant's cases, only within clearance.
    let all = SearchQuery {
        case_type: Some("incident".into()),
        ..Default::default()
    };
    let ids = |p: casebook::projection::query::Page<casebook::projection::query::CaseSummary>| {
        p.items.into_iter().map(|s| s.case_id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(engine.search_cases(&kent, &all, c).await.unwrap()),
        ["K-1"]
    );
    assert_eq!(
        ids(engine.search_cases(&essex, &all, c).await.unwrap()),
        ["E-1"]
    );
    let mut both = ids(engine.search_cases(&secret_opener, &all, c).await.unwrap());
    both.sort();
    assert_eq!(both, ["K-1", "K-SECRET"]);
    let text = SearchQuery {
        text: Some("burglary".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(engine.search_cases(&essex, &text, c).await.unwrap()),
        ["E-1"]
    );
    // Words of a SECRET field are not searchable below SECRET; filtering on
    // the field is refused outright.
    let words = SearchQuery {
        text: Some("bravo".into()),
        ..Default::default()
    };
    assert!(ids(engine.search_cases(&kent, &words, c).await.unwrap()).is_empty());
    assert_eq!(
        ids(engine
            .search_cases(&supervisor("kent"), &words, c)
            .await
            .unwrap()),
        ["K-1"]
    );
    let mut by_informant = all.clone();
    by_informant.fields = vec![FieldFilter::equals("informant", json!("alpha bravo"))];
    let err = engine
        .search_cases(&kent, &by_informant, c)
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::FieldNotVisible { .. }), "{err}");

    // Work queue and deadlines: own tenant, within clearance.
    let q = WorkQueueQuery {
        role: Some("handler".into()),
        ..Default::default()
    };
    let kq = engine.work_queue(&kent, &q, c).await.unwrap();
    assert_eq!(
        kq.items
            .iter()
            .map(|w| w.case_id.as_str())
            .collect::<Vec<_>>(),
        ["K-1"]
    );
    let eq = engine.work_queue(&essex, &q, c).await.unwrap();
    assert_eq!(
        eq.items
            .iter()
            .map(|w| w.case_id.as_str())
            .collect::<Vec<_>>(),
        ["E-1"]
    );
    assert_eq!(
        engine
            .work_queue(&secret_opener, &q, c)
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    let dq = DeadlineQuery {
        due_before: Timestamp(i64::MAX),
        now: Timestamp::now(),
        case_type: None,
        page: PageRequest::default(),
    };
    let kd = engine.deadlines(&kent, &dq, c).await.unwrap();
    assert!(kd.items.iter().all(|d| d.case_id == "K-1"));
    assert_eq!(kd.items.len(), 2);
    let ed = engine.deadlines(&essex, &dq, c).await.unwrap();
    assert!(ed.items.iter().all(|d| d.case_id == "E-1"));

    // Status and operations: own tenant only; operations need the admin role.
    assert!(engine
        .projection_status(&essex)
        .await
        .unwrap()
        .iter()
        // Counted in essex's own few events, never kent's.
        .all(|s| s.pending < 50));
    let err = engine.rebuild_projection(&kent, "cases").await.unwrap_err();
    assert!(matches!(err, QueryError::Forbidden { .. }), "{err}");
    engine.shutdown().await.unwrap();
}

fn team_query(team: &str) -> WorkQueueQuery {
    WorkQueueQuery {
        team: Some(team.into()),
        ..Default::default()
    }
}

fn queue_ids(
    page: &casebook::projection::query::Page<casebook::projection::query::WorkItem>,
) -> Vec<String> {
    let mut ids: Vec<String> = page
        .items
        .iter()
        .map(|w| format!("{}:{}", w.case_id, w.item))
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_queues_by_team_follow_routing_within_tenant_and_clearance() {
    let engine = Engine::in_memory_with(registered()).unwrap();
    engine.start().await.unwrap();
    let c = two_tenants(
        &engine,
        json!({"summary": "a", "ward": "north"}),
        json!({"summary": "c", "ward": "east"}),
    )
    .await;
    let kent = handler("kent");
    let essex = handler("essex");
    let secret_opener = handler("kent").with_clearance(Classification::Secret);

    // The definition's team: the assessments wait in the response queue,
    // each tenant seeing its own, each reader only within clearance.
    let response = engine
        .work_queue(&kent, &team_query("response"), c)
        .await
        .unwrap();
    assert_eq!(queue_ids(&response), ["K-1:assess"]);
    assert_eq!(response.items[0].team.as_deref(), Some("response"));
    assert_eq!(
        queue_ids(
            &engine
                .work_queue(&secret_opener, &team_query("response"), c)
                .await
                .unwrap()
        ),
        ["K-1:assess", "K-SECRET:assess"]
    );
    assert_eq!(
        queue_ids(
            &engine
                .work_queue(&essex, &team_query("response"), c)
                .await
                .unwrap()
        ),
        ["E-1:assess"]
    );
    assert!(engine
        .work_queue(&kent, &team_query("cid"), c)
        .await
        .unwrap()
        .items
        .is_empty());

    // Claimed, then routed to CID: it leaves the response queue and waits
    // unassigned in CID's; the claim is released.
    let task = response.items[0].clone();
    engine
        .claim_task(&kent, "K-1", task.instance, ctx("mine"))
        .await
        .unwrap();
    let out = engine
        .reassign_task_to_team(
            &supervisor("kent"),
            "K-1",
            task.instance,
            "cid",
            ctx("needs detectives"),
        )
        .await
        .unwrap();
    let c = after(out.position.unwrap());
    assert_eq!(
        queue_ids(
            &engine
                .work_queue(&kent, &team_query("response"), c)
                .await
                .unwrap()
        ),
        Vec::<String>::new()
    );
    let cid = engine
        .work_queue(&kent, &team_query("cid"), c)
        .await
        .unwrap();
    assert_eq!(queue_ids(&cid), ["K-1:assess"]);
    assert_eq!(cid.items[0].team.as_deref(), Some("cid"));
    assert_eq!(cid.items[0].assignee, None);
    let mine = WorkQueueQuery {
        assignee: Some("pc-101".into()),
        ..Default::default()
    };
    assert!(engine
        .work_queue(&kent, &mine, c)
        .await
        .unwrap()
        .items
        .is_empty());
    // Team combines with role and case type; other tenants see nothing of it.
    let by_role = |role: &str| WorkQueueQuery {
        role: Some(role.into()),
        team: Some("cid".into()),
        case_type: Some("incident".into()),
        ..Default::default()
    };
    assert_eq!(
        queue_ids(
            &engine
                .work_queue(&kent, &by_role("handler"), c)
                .await
                .unwrap()
        ),
        ["K-1:assess"]
    );
    assert!(engine
        .work_queue(&kent, &by_role("supervisor"), c)
        .await
        .unwrap()
        .items
        .is_empty());
    // (Kent's position token is not essex's: essex reads eventually.)
    assert!(engine
        .work_queue(&essex, &team_query("cid"), Consistency::Eventual)
        .await
        .unwrap()
        .items
        .is_empty());
    // The case view and the timeline show the routing.
    let view = engine.case_view(&kent, "K-1", c).await.unwrap();
    let assess = view
        .view
        .items
        .iter()
        .find(|i| i.item.as_str() == "assess")
        .unwrap();
    assert_eq!(assess.team.as_deref(), Some("cid"));
    let tl = engine
        .timeline(&kent, "K-1", PageRequest::first(100), c)
        .await
        .unwrap();
    assert!(tl.items.iter().any(|e| e.summary
        == "'Assess the incident' routed to team cid by sgt-7"
        && e.reason.as_deref() == Some("needs detectives")));

    // A task-level team: the supervisor review goes to CID by definition.
    let out = engine
        .execute(
            &kent,
            "K-1",
            CaseCommand::Complete {
                item: ItemRef::key("assess"),
                outputs: CaseFile::new(),
            },
            ctx("assessed"),
        )
        .await
        .unwrap();
    let c = after(out.position.unwrap());
    assert_eq!(
        queue_ids(
            &engine
                .work_queue(&kent, &team_query("cid"), c)
                .await
                .unwrap()
        ),
        ["K-1:review"]
    );

    // Bad team names are refused, in queries and in routing.
    let err = engine
        .work_queue(&kent, &team_query("Major Crime"), c)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, QueryError::Invalid { parameter, .. } if parameter == "team"),
        "{err}"
    );
    let review = engine
        .work_queue(&kent, &team_query("cid"), c)
        .await
        .unwrap()
        .items[0]
        .clone();
    let err = engine
        .reassign_task_to_team(&supervisor("kent"), "K-1", review.instance, "", ctx("x"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("team"), "{err}");
    // Another tenant cannot route kent's task.
    let err = engine
        .reassign_task_to_team(
            &supervisor("essex"),
            "K-1",
            review.instance,
            "cid",
            ctx("x"),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("K-1"), "{err}");
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_search_covers_exactly_the_fields_marked_search_text() {
    let engine = Engine::in_memory_with(registered()).unwrap();
    engine.start().await.unwrap();
    setup(&engine, "kent").await;
    // The same case type without any field marked for text search.
    let plain = INCIDENT
        .replace("key = \"incident\"", "key = \"plain_incident\"")
        .replace("search = \"text\"", "");
    engine
        .deploy(&admin("kent"), &plain, Format::Toml)
        .await
        .unwrap();
    open_incident(
        &engine,
        "kent",
        "K-1",
        json!({"summary": "Shed break-in, bicycle taken", "ward": "north",
               "notes": "zebra crossing nearby", "informant": "alpha bravo"}),
    )
    .await;
    let last = open_incident(
        &engine,
        "kent",
        "K-2",
        json!({"summary": "Graffiti on the bus shelter", "ward": "south", "notes": "bicycle"}),
    )
    .await;
    let c = after(last);
    let kent = handler("kent");
    let ids = |p: casebook::projection::query::Page<casebook::projection::query::CaseSummary>| {
        let mut v: Vec<String> = p.items.into_iter().map(|s| s.case_id).collect();
        v.sort();
        v
    };
    let text = |t: &str| SearchQuery {
        case_type: Some("incident".into()),
        text: Some(t.into()),
        ..Default::default()
    };
    let words_in = |field: &str, t: &str| SearchQuery {
        case_type: Some("incident".into()),
        fields: vec![FieldFilter {
            field: field.into(),
            condition: FieldCondition::Words(t.into()),
        }],
        ..Default::default()
    };

    // Marked fields are word-indexed; the unmarked `notes` is not.
    assert_eq!(
        ids(engine
            .search_cases(&kent, &text("bicycle"), c)
            .await
            .unwrap()),
        ["K-1"]
    );
    assert!(ids(engine.search_cases(&kent, &text("zebra"), c).await.unwrap()).is_empty());
    assert_eq!(
        ids(engine
            .search_cases(&supervisor("kent"), &text("alpha shed"), c)
            .await
            .unwrap()),
        ["K-1"],
        "words may come from different marked fields"
    );
    // Words in one field: `alpha` is in the informant, not the summary.
    assert_eq!(
        ids(engine
            .search_cases(&kent, &words_in("summary", "SHED bicycle"), c)
            .await
            .unwrap()),
        ["K-1"]
    );
    assert!(ids(engine
        .search_cases(&supervisor("kent"), &words_in("summary", "alpha"), c)
        .await
        .unwrap())
    .is_empty());
    assert_eq!(
        ids(engine
            .search_cases(&supervisor("kent"), &words_in("informant", "bravo"), c)
            .await
            .unwrap()),
        ["K-1"]
    );
    let err = engine
        .search_cases(&kent, &words_in("informant", "bravo"), c)
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::FieldNotVisible { .. }), "{err}");

    // Text over a field not marked: a typed error naming the ones that are.
    for field in ["notes", "ward"] {
        let err = engine
            .search_cases(&kent, &words_in(field, "zebra"), c)
            .await
            .unwrap_err();
        match &err {
            QueryError::NotTextSearchable {
                case_type,
                field: f,
                searchable,
            } => {
                assert_eq!(case_type, "incident");
                assert_eq!(f, field);
                assert_eq!(searchable, &["summary", "informant"]);
            }
            other => panic!("expected NotTextSearchable, got {other}"),
        }
        assert!(err.to_string().contains("search = \"text\""), "{err}");
    }
    // Text over a case type that marks no field, and words that are no words.
    let mut q = text("bicycle");
    q.case_type = Some("plain_incident".into());
    let err = engine.search_cases(&kent, &q, c).await.unwrap_err();
    assert!(
        matches!(&err, QueryError::Invalid { parameter, message }
            if parameter == "text" && message.contains("plain_incident")),
        "{err}"
    );
    let err = engine
        .search_cases(&kent, &words_in("summary", " - "), c)
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::Invalid { .. }), "{err}");
    let mut q = words_in("summary", "shed");
    q.case_type = None;
    let err = engine.search_cases(&kent, &q, c).await.unwrap_err();
    assert!(
        matches!(err, QueryError::FieldNeedsCaseType { .. }),
        "{err}"
    );
    engine.shutdown().await.unwrap();
}

/// Polls, with no query, until every running projection of the tenant has
/// reached the log's head; returns the statuses.
async fn running_caught_up(
    engine: &Engine,
    t: &str,
) -> Vec<casebook::projection::ProjectionStatus> {
    let host = engine.projections(&platform_admin()).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let status = host.running_status(&tenant(t));
        let head = engine.store(&platform_admin()).unwrap().head_position();
        if status.len() == 4 && status.iter().all(|s| s.reached >= head) {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "runners did not start or catch up by themselves: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_start_when_the_engine_opens_and_keep_up_with_no_reader() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open_with(dir.path(), registered()).unwrap();
        engine.start().await.unwrap();
        setup(&engine, "kent").await;
        open_incident(
            &engine,
            "kent",
            "K-1",
            json!({"summary": "a", "ward": "north"}),
        )
        .await;
        wait_head(&engine, "kent").await;
        engine.shutdown().await.unwrap();
    }
    let engine = Engine::open_with(dir.path(), registered()).unwrap();
    engine.start().await.unwrap();
    // Nobody has queried or written through this engine: kent's runners
    // were started by opening it.
    let status = engine
        .projections(&platform_admin())
        .unwrap()
        .running_status(&tenant("kent"));
    assert_eq!(status.len(), 4, "{status:?}");
    // Another writer on the same log (this engine sees no call at all):
    // the views follow.
    let writer =
        Engine::with_store(engine.store(&platform_admin()).unwrap(), registered()).unwrap();
    writer.start().await.unwrap();
    open_incident(
        &writer,
        "kent",
        "K-2",
        json!({"summary": "b", "ward": "south"}),
    )
    .await;
    let status = running_caught_up(&engine, "kent").await;
    assert!(
        status.iter().all(|s| s.state == RunState::Live),
        "{status:?}"
    );
    let gen = engine
        .projections(&platform_admin())
        .unwrap()
        .running_status(&tenant("kent"));
    assert!(gen.iter().all(|s| s.position.is_some()));
    // A tenant new to this engine: its first write starts its runners.
    assert!(engine
        .projections(&platform_admin())
        .unwrap()
        .running_status(&tenant("essex"))
        .is_empty());
    setup(&engine, "essex").await;
    running_caught_up(&engine, "essex").await;
    // Only now a query: it finds K-2 without waiting.
    let view = engine
        .case_view(&handler("kent"), "K-2", Consistency::Eventual)
        .await
        .unwrap();
    assert_eq!(view.view.case_file["summary"], json!("b"));
    writer.shutdown().await.unwrap();
    engine.shutdown().await.unwrap();
}

const FOI: &str = include_str!("../examples/definitions/foi-request.toml");

/// Counts, independently of the engine, the working days in `(from, to]`
/// (weekdays that are neither bank holidays nor in `extra`), and whether
/// `to` is itself one.
fn working_days_between(from: Timestamp, to: Timestamp, extra: &[i64]) -> (i64, bool) {
    use casebook::projection::calendar::{day_number, ENGLAND_AND_WALES_BANK_HOLIDAYS};
    let holidays: Vec<i64> = ENGLAND_AND_WALES_BANK_HOLIDAYS
        .iter()
        .map(|&(y, m, d)| {
            day_number(
                casebook::projection::calendar::Date::from_calendar_date(
                    y,
                    m.try_into().unwrap(),
                    d,
                )
                .unwrap(),
            )
        })
        .collect();
    let working =
        |day: i64| (day + 3).rem_euclid(7) < 5 && !holidays.contains(&day) && !extra.contains(&day);
    const DAY: i64 = 86_400_000_000;
    let (a, b) = (from.0.div_euclid(DAY), to.0.div_euclid(DAY));
    assert_eq!(
        from.0.rem_euclid(DAY),
        to.0.rem_euclid(DAY),
        "same time of day"
    );
    (
        (a + 1..=b).filter(|d| working(*d)).count() as i64,
        working(b),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn working_day_deadlines_follow_bank_holidays_and_the_tenants_calendar() {
    use casebook::case::DeadlineDue;
    use casebook::projection::calendar::{date_of, Date, WorkingCalendar};
    let engine = Engine::in_memory_with(registered()).unwrap();
    engine.start().await.unwrap();
    for t in ["kent", "essex"] {
        engine.deploy(&admin(t), FOI, Format::Toml).await.unwrap();
    }
    let foi = |t: &str| Principal::new(tenant(t), "foi-7").with_roles(["foi_officer"]);
    let open = |t: &'static str| {
        let engine = engine.clone();
        async move {
            let mut req = OpenCase::new(
                "foi_request",
                fields(json!({"requester": "P-1", "received_on": "2026-11-02",
                              "request_text": "burglary figures"})),
            );
            req.case_id = Some(format!("FOI-{t}").parse().unwrap());
            engine
                .open_case(&foi(t), req)
                .await
                .unwrap()
                .position
                .unwrap()
        }
    };
    let kent_opened = open("kent").await;
    let essex_opened = open("essex").await;
    let statutory = |t: &'static str, c: Consistency| {
        let engine = engine.clone();
        async move {
            let page = engine
                .deadlines(
                    &foi(t),
                    &DeadlineQuery {
                        due_before: Timestamp(i64::MAX),
                        now: Timestamp::now(),
                        case_type: Some("foi_request".into()),
                        page: PageRequest::default(),
                    },
                    c,
                )
                .await
                .unwrap();
            page.items
                .into_iter()
                .find(|d| d.deadline.as_str() == "statutory_20_working_days")
                .unwrap()
        }
    };
    let before = statutory("kent", after(kent_opened)).await;
    let DeadlineDue::WorkingDays { days: 20, from } = before.due else {
        panic!("a working-day deadline: {:?}", before.due);
    };
    assert_eq!(working_days_between(from, before.due_at, &[]), (20, true));

    // Kent closes for the next 30 calendar days (after the clock started):
    // the running deadline moves past them; Essex's does not.
    const DAY: i64 = 86_400_000_000;
    let first = from.0.div_euclid(DAY) + 1;
    let closed: Vec<i64> = (first..first + 30).collect();
    let dates: Vec<Date> = closed.iter().map(|d| date_of(*d).unwrap()).collect();
    let err = engine
        .set_non_working_days(&foi("kent"), &dates, ctx("closure"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("administrator"), "{err}");
    let at = engine
        .set_non_working_days(&admin("kent"), &dates, ctx("force closure"))
        .await
        .unwrap();
    assert_eq!(
        engine.working_calendar(&admin("kent")).await.unwrap(),
        WorkingCalendar::with_non_working_days(dates.clone())
    );
    assert_eq!(
        engine.working_calendar(&admin("essex")).await.unwrap(),
        WorkingCalendar::default()
    );
    let moved = statutory("kent", after(at)).await;
    assert_eq!(moved.due, before.due, "the runtime's record is unchanged");
    assert!(moved.due_at.0 > before.due_at.0 + 20 * DAY, "{moved:?}");
    assert_eq!(
        working_days_between(from, moved.due_at, &closed),
        (20, true)
    );
    let essex = statutory("essex", after(essex_opened)).await;
    let DeadlineDue::WorkingDays {
        from: essex_from, ..
    } = essex.due
    else {
        panic!("a working-day deadline: {:?}", essex.due);
    };
    assert_eq!(
        working_days_between(essex_from, essex.due_at, &[]),
        (20, true)
    );
    assert!(essex.due_at.0 < moved.due_at.0);
    // A case opened after the change is counted with the calendar too.
    let mut req = OpenCase::new(
        "foi_request",
        fields(json!({"requester": "P-2", "received_on": "2026-11-03",
                      "request_text": "stop and search"})),
    );
    req.case_id = Some("FOI-kent-2".parse().unwrap());
    let p2 = engine
        .open_case(&foi("kent"), req)
        .await
        .unwrap()
        .position
        .unwrap();
    let later = engine
        .deadlines(
            &foi("kent"),
            &DeadlineQuery {
                due_before: Timestamp(i64::MAX),
                now: Timestamp::now(),
                case_type: None,
                page: PageRequest::first(100),
            },
            after(p2),
        )
        .await
        .unwrap();
    let mut counted = 0;
    for d in later.items.iter().filter(|d| d.case_id == "FOI-kent-2") {
        let DeadlineDue::WorkingDays { days, from } = d.due else {
            continue;
        };
        let extra: Vec<i64> = closed.clone();
        assert_eq!(
            working_days_between(from, d.due_at, &extra),
            (i64::from(days), true)
        );
        counted += 1;
    }
    assert_eq!(counted, 2, "both statutory clocks of the new case");
    // The calendar is in the log: a rebuild derives the same times.
    let kept = dump(&engine, "kent", "cases").await;
    rebuild_all(&engine, "kent").await;
    assert_eq!(dump(&engine, "kent", "cases").await, kept);
    // Cleared again: back to bank holidays and weekends only.
    let at = engine
        .set_non_working_days(&admin("kent"), &[], ctx("reopened"))
        .await
        .unwrap();
    assert_eq!(statutory("kent", after(at)).await.due_at, before.due_at);
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queries_get_typed_errors() {
    let engine = Engine::in_memory_with(registered()).unwrap();
    engine.start().await.unwrap();
    setup(&engine, "kent").await;
    let p = open_incident(
        &engine,
        "kent",
        "K-1",
        json!({"summary": "x", "ward": "east"}),
    )
    .await;
    let c = after(p);
    let who = handler("kent");
    let base = SearchQuery {
        case_type: Some("incident".into()),
        ..Default::default()
    };
    let run = |q: SearchQuery| {
        let engine = engine.clone();
        let who = who.clone();
        async move { engine.search_cases(&who, &q, c).await.unwrap_err() }
    };
    let with = |f: FieldFilter| {
        let mut q = base.clone();
        q.fields = vec![f];
        q
    };
    let err = run(with(FieldFilter::equals("colour", json!("red")))).await;
    assert!(
        matches!(&err, QueryError::UnknownField { field, .. } if field == "colour"),
        "{err}"
    );
    let err = run(with(FieldFilter::equals("loss", json!("lots")))).await;
    assert!(
        matches!(&err, QueryError::WrongType { field, .. } if field == "loss"),
        "{err}"
    );
    let err = run(with(FieldFilter::equals("ward", json!("middle")))).await;
    assert!(matches!(err, QueryError::WrongType { .. }), "{err}");
    let err = run(with(FieldFilter::equals("seen_at", json!("yesterday")))).await;
    assert!(matches!(err, QueryError::WrongType { .. }), "{err}");
    let err = run(with(FieldFilter {
        field: "loss".into(),
        condition: FieldCondition::Between {
            from: Some(json!(10)),
            to: Some(json!(1)),
        },
    }))
    .await;
    assert!(matches!(err, QueryError::Invalid { .. }), "{err}");
    let err = run(with(FieldFilter {
        field: "loss".into(),
        condition: FieldCondition::OneOf(vec![]),
    }))
    .await;
    assert!(matches!(err, QueryError::Invalid { .. }), "{err}");
    let mut q = base.clone();
    q.case_type = None;
    q.fields = vec![FieldFilter::equals("ward", json!("east"))];
    assert!(matches!(
        run(q).await,
        QueryError::FieldNeedsCaseType { .. }
    ));
    let mut q = base.clone();
    q.case_type = Some("no_such_type".into());
    assert!(matches!(run(q).await, QueryError::UnknownCaseType { .. }));
    let mut q = base.clone();
    q.stage = Some("nowhere".into());
    assert!(matches!(run(q).await, QueryError::Invalid { .. }));
    let mut q = base.clone();
    q.text = Some("!! ?".into());
    assert!(matches!(run(q).await, QueryError::Invalid { .. }));
    for limit in [0, 1_000_000, usize::MAX] {
        let mut q = base.clone();
        q.page.limit = limit;
        assert!(matches!(run(q).await, QueryError::PageSize { .. }));
        let wq = WorkQueueQuery {
            page: PageRequest { offset: 0, limit },
            ..Default::default()
        };
        let err = engine.work_queue(&who, &wq, c).await.unwrap_err();
        assert!(matches!(err, QueryError::PageSize { .. }), "{err}");
        let err = engine
            .timeline(&who, "K-1", PageRequest { offset: 0, limit }, c)
            .await
            .unwrap_err();
        assert!(matches!(err, QueryError::PageSize { .. }), "{err}");
    }
    let mut q = base.clone();
    q.page.offset = usize::MAX;
    assert!(matches!(run(q).await, QueryError::Offset { .. }));
    // Waiting for a position the log never reaches times out with a clear error.
    let err = engine
        .case_view(
            &who,
            "K-1",
            Consistency::AtLeast {
                position: token(
                    &engine,
                    "kent",
                    GlobalPosition(
                        engine
                            .token_position(&platform_admin(), &tenant("kent"), p)
                            .unwrap()
                            .0
                            + 1000,
                    ),
                ),
                timeout: Duration::from_millis(50),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::Lagging { .. }), "{err}");
    let err = engine
        .rebuild_projection(&admin("kent"), "nope")
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::Projection(_)), "{err}");
    engine.shutdown().await.unwrap();
}

// ------------------------------------------------------------ framework

/// Counts events per stream; `version` 2 counts twice, so tests can tell
/// which generation answers. A per-batch delay makes rebuilds observable.
struct Counter {
    version: u32,
    delay: Duration,
    fail_on: Option<&'static str>,
    batches: Arc<AtomicU64>,
}

/// Counts events per key; shared by [`Counter`] and [`Gated`].
struct CounterHandler {
    rows: Rows,
    step: u64,
    delay: Duration,
    fail_on: Option<&'static str>,
    pending: BTreeMap<String, u64>,
    batches: Arc<AtomicU64>,
    /// While set, `apply` waits.
    hold: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// The key an event counts under.
    key: fn(&RecordedEvent) -> String,
}

impl Projection for Counter {
    fn name(&self) -> &str {
        "counter"
    }
    fn version(&self) -> u32 {
        self.version
    }
    fn handler(&self, rows: Rows) -> Box<dyn Handler> {
        Box::new(CounterHandler {
            rows,
            step: u64::from(self.version),
            delay: self.delay,
            fail_on: self.fail_on,
            pending: BTreeMap::new(),
            batches: Arc::clone(&self.batches),
            hold: None,
            key: |e| e.stream.id().to_string(),
        })
    }
}

#[async_trait]
impl Handler for CounterHandler {
    async fn apply(&mut self, event: &RecordedEvent) -> Result<(), HandlerError> {
        while self
            .hold
            .as_ref()
            .is_some_and(|h| h.load(Ordering::Acquire))
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if Some(&*event.event_type) == self.fail_on {
            return Err(format!("cannot count {}", event.event_type).into());
        }
        let key = (self.key)(event);
        let current = match self.pending.get(&key) {
            Some(n) => *n,
            None => self
                .rows
                .settled()
                .await
                .and_then(|()| self.rows.get(key.as_bytes()))?
                .map_or(0, |v| u64::from_be_bytes(v.as_slice().try_into().unwrap())),
        };
        self.pending.insert(key, current + self.step);
        Ok(())
    }
    fn write(&mut self, changes: &mut Changes) -> Result<(), HandlerError> {
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        self.batches.fetch_add(1, Ordering::Relaxed);
        for (k, v) in &self.pending {
            changes.insert(k.as_bytes(), v.to_be_bytes())?;
        }
        Ok(())
    }
    fn queued(&mut self) {
        self.pending.clear();
    }
    fn discarded(&mut self) {
        self.pending.clear();
    }
}

fn count(gen: &casebook::projection::Generation, stream: &str) -> u64 {
    gen.rows
        .get(stream.as_bytes())
        .unwrap()
        .map_or(0, |v| u64::from_be_bytes(v.as_slice().try_into().unwrap()))
}

async fn append_n(
    store: &MemoryStore,
    t: &str,
    stream: &str,
    n: usize,
    ty: &str,
) -> GlobalPosition {
    let s = StreamId::new(tenant(t), "test", stream).unwrap();
    let meta = Metadata::new(ActorId::new("pc-1"), Source::system("test"));
    let mut last = GlobalPosition(0);
    for chunk in 0..n.div_ceil(100) {
        let k = (n - chunk * 100).min(100);
        let events = (0..k)
            .map(|_| EventData::new(ty, vec![1], meta.clone()))
            .collect();
        last = store
            .append(&s, ExpectedVersion::Any, events)
            .await
            .unwrap()
            .last_position;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_serves_the_old_generation_until_the_new_one_has_caught_up() {
    let store = MemoryStore::new();
    let batches = Arc::new(AtomicU64::new(0));
    let v1: Arc<dyn Projection> = Arc::new(Counter {
        version: 1,
        delay: Duration::ZERO,
        fail_on: None,
        batches: Arc::clone(&batches),
    });
    let host = ProjectionHost::temporary(Arc::new(store.clone()), vec![v1], 10).unwrap();
    let kent = tenant("kent");
    let last = append_n(&store, "kent", "s1", 20_000, "Counted").await;
    let gen = host.read("counter", &kent, fresh(last)).await.unwrap();
    assert_eq!(count(&gen, "s1"), 20_000);

    // Version 2 rebuilds slowly (1,280 events per 10 ms catch-up batch, so
    // some 16 batches) while appends go on.
    let v2: Arc<dyn Projection> = Arc::new(Counter {
        version: 2,
        delay: Duration::from_millis(10),
        fail_on: None,
        batches: Arc::clone(&batches),
    });
    host.rebuild("counter", &kent, Some(v2)).unwrap();
    let mut appended = 20_000u64;
    let mut answers_during = 0;
    loop {
        let p = append_n(&store, "kent", "s1", 10, "Counted").await;
        appended += 10;
        // Read-your-writes holds throughout: the serving generation follows
        // the live log while the new one is built.
        let gen = host.read("counter", &kent, fresh(p)).await.unwrap();
        let n = count(&gen, "s1");
        let status = host.status(&kent).unwrap().remove(0);
        if gen.version == 1 {
            assert_eq!(n, appended, "v1 must answer completely while v2 builds");
            answers_during += 1;
            if status.rebuild.is_some() {
                assert_eq!(status.state, RunState::Rebuilding);
            }
        } else {
            // Swapped: v2 is complete (it counts each event twice).
            assert_eq!(n, 2 * appended);
            assert_eq!(status.version, 2);
            assert!(status.rebuild.is_none());
            break;
        }
        assert!(appended < 100_000, "the rebuild never finished");
    }
    assert!(
        answers_during > 5,
        "queries were answered during the rebuild ({answers_during} answers)"
    );
    host.shutdown().await.unwrap();
}

/// Counts each stream's events `version` times (so tests can tell which
/// version built a generation); while `hold` is set its handler waits before
/// applying anything, so a rebuild can be held mid-way.
struct Gated {
    version: u32,
    hold: Arc<std::sync::atomic::AtomicBool>,
}

impl Projection for Gated {
    fn name(&self) -> &str {
        "gated"
    }
    fn version(&self) -> u32 {
        self.version
    }
    fn handler(&self, rows: Rows) -> Box<dyn Handler> {
        Box::new(CounterHandler {
            rows,
            step: u64::from(self.version),
            delay: Duration::ZERO,
            fail_on: None,
            pending: BTreeMap::new(),
            batches: Arc::new(AtomicU64::new(0)),
            hold: Some(Arc::clone(&self.hold)),
            key: |e| e.stream.to_string(),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_projection_version_rebuilds_across_a_restart_while_the_old_one_serves() {
    let dir = tempfile::tempdir().unwrap();
    let hold = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let config = |version: u32| EngineConfig {
        projections: vec![Arc::new(Gated {
            version,
            hold: Arc::clone(&hold),
        })],
        ..registered()
    };
    let kent = tenant("kent");
    let stream = "kent/case/K-1";
    let events_of = |engine: &Engine| {
        let engine = engine.clone();
        async move {
            let id = StreamId::new(tenant("kent"), "case", "K-1").unwrap();
            engine
                .store(&platform_admin())
                .unwrap()
                .read_stream(&id, Direction::Forward, StreamVersion::START, 1000)
                .await
                .unwrap()
                .len() as u64
        }
    };

    // Version 1 builds and serves.
    let (n, v1_generation) = {
        let engine = Engine::open_with(dir.path(), config(1)).unwrap();
        engine.start().await.unwrap();
        setup(&engine, "kent").await;
        let last = open_incident(
            &engine,
            "kent",
            "K-1",
            json!({"summary": "a", "ward": "north"}),
        )
        .await;
        let gen = engine
            .projections(&platform_admin())
            .unwrap()
            .read(
                "gated",
                &kent,
                fresh(
                    engine
                        .token_position(&platform_admin(), &kent, last)
                        .unwrap(),
                ),
            )
            .await
            .unwrap();
        let n = events_of(&engine).await;
        assert_eq!((gen.version, count(&gen, stream)), (1, n));
        let number = gen.number;
        drop(gen);
        engine.shutdown().await.unwrap();
        (n, number)
    };

    // Reopened with version 2, held: version 1 keeps serving (frozen at
    // its checkpoint) while version 2 rebuilds from position 0 beside it.
    hold.store(true, Ordering::Release);
    let engine = Engine::open_with(dir.path(), config(2)).unwrap();
    engine.start().await.unwrap();
    let host = engine.projections(&platform_admin()).unwrap().clone();
    // (The host's status is what `Engine::projection_status` answers.)
    let gated_status = |engine: &Engine| {
        engine
            .projections(&platform_admin())
            .unwrap()
            .status(&tenant("kent"))
            .unwrap()
            .into_iter()
            .find(|s| s.projection == "gated")
            .unwrap()
    };
    let status = gated_status(&engine);
    assert_eq!(
        (status.version, status.generation),
        (1, v1_generation),
        "{status:?}"
    );
    assert_eq!(status.state, RunState::Rebuilding, "{status:?}");
    assert_eq!(
        status.rebuild.as_ref().map(|r| r.version),
        Some(2),
        "{status:?}"
    );
    let gen = host
        .read("gated", &kent, Freshness::Eventual)
        .await
        .unwrap();
    assert_eq!((gen.version, count(&gen, stream)), (1, n));
    drop(gen);
    // A write meanwhile: the old generation still answers (without it);
    // a read-your-writes wait is for the new version, which is held.
    let out = engine
        .execute(
            &handler("kent"),
            "K-1",
            CaseCommand::AddNote {
                text: "called the victim".into(),
            },
            ctx("update"),
        )
        .await
        .unwrap();
    let p_token = out.position.unwrap();
    let p = engine
        .token_position(&platform_admin(), &kent, p_token)
        .unwrap();
    let err = host
        .wait_for("gated", &kent, p, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::Timeout { .. }), "{err}");
    let gen = host
        .read("gated", &kent, Freshness::Eventual)
        .await
        .unwrap();
    assert_eq!((gen.version, count(&gen, stream)), (1, n));
    drop(gen);
    // The other projections are not held back.
    let view = engine
        .case_view(&handler("kent"), "K-1", after(p_token))
        .await
        .unwrap();
    assert_eq!(view.view.notes.len(), 1);

    // Released: version 2 catches up and swaps in, complete.
    hold.store(false, Ordering::Release);
    let gen = host.read("gated", &kent, fresh(p)).await.unwrap();
    assert_eq!(gen.version, 2);
    assert_eq!(count(&gen, stream), 2 * events_of(&engine).await);
    let v2_generation = gen.number;
    drop(gen);
    let status = gated_status(&engine);
    assert_eq!(status.version, 2);
    assert!(status.rebuild.is_none(), "{status:?}");
    engine.shutdown().await.unwrap();
    drop((host, engine));

    // Opened again with version 2: it serves at once, nothing to rebuild.
    let engine = Engine::open_with(dir.path(), config(2)).unwrap();
    engine.start().await.unwrap();
    let status = gated_status(&engine);
    assert_eq!((status.version, status.generation), (2, v2_generation));
    assert!(status.rebuild.is_none(), "{status:?}");
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulted_projection_stops_alone_and_resumes_on_retry() {
    let store = MemoryStore::new();
    let batches = Arc::new(AtomicU64::new(0));
    let failing: Arc<dyn Projection> = Arc::new(Counter {
        version: 1,
        delay: Duration::ZERO,
        fail_on: Some("Poison"),
        batches: Arc::clone(&batches),
    });
    let host = ProjectionHost::temporary(Arc::new(store.clone()), vec![failing], 512).unwrap();
    let kent = tenant("kent");
    let essex = tenant("essex");
    append_n(&store, "kent", "s1", 10, "Counted").await;
    let poison = append_n(&store, "kent", "s1", 1, "Poison").await;
    append_n(&store, "kent", "s1", 10, "Counted").await;
    let e = append_n(&store, "essex", "s1", 5, "Counted").await;

    // Kent faults at the poison event, after committing the ten before it.
    let err = host.wait_for("counter", &kent, e, WAIT).await.unwrap_err();
    match err {
        QueryError::Faulted { position, .. } => assert_eq!(position, poison),
        other => panic!("expected a fault, got {other}"),
    }
    let status = host.status(&kent).unwrap().remove(0);
    assert!(
        matches!(&status.state, RunState::Faulted { position, error } if *position == poison && error.contains("Poison")),
        "{status:?}"
    );
    assert_eq!(status.position, Some(GlobalPosition(poison.0 - 1)));
    let gen = host
        .read("counter", &kent, Freshness::Eventual)
        .await
        .unwrap();
    assert_eq!(count(&gen, "s1"), 10);
    // Essex goes on.
    let gen = host.read("counter", &essex, fresh(e)).await.unwrap();
    assert_eq!(count(&gen, "s1"), 5);

    // Retrying hits the same event again (the cause is not fixed)...
    host.retry("counter", &kent).unwrap();
    let err = host.wait_for("counter", &kent, e, WAIT).await.unwrap_err();
    assert!(matches!(err, QueryError::Faulted { .. }));
    // ...and a rebuild with a fixed version replaces it.
    let fixed: Arc<dyn Projection> = Arc::new(Counter {
        version: 2,
        delay: Duration::ZERO,
        fail_on: None,
        batches,
    });
    host.rebuild("counter", &kent, Some(fixed)).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let s = host.status(&kent).unwrap().remove(0);
        if s.version == 2 && s.state == RunState::Live {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{s:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let gen = host.read("counter", &kent, fresh(e)).await.unwrap();
    assert_eq!(count(&gen, "s1"), 2 * 21);
    host.shutdown().await.unwrap();
}

/// Counts every event under `n`, deriving the write in deferred work that
/// refuses a batch holding a `BadWrite` event.
struct DeferringCounter;

struct DeferringHandler {
    rows: Rows,
    n: Option<u64>,
    bad: bool,
}

impl Projection for DeferringCounter {
    fn name(&self) -> &str {
        "deferring"
    }
    fn version(&self) -> u32 {
        1
    }
    fn handler(&self, rows: Rows) -> Box<dyn Handler> {
        Box::new(DeferringHandler {
            rows,
            n: None,
            bad: false,
        })
    }
}

#[async_trait]
impl Handler for DeferringHandler {
    async fn apply(&mut self, event: &RecordedEvent) -> Result<(), HandlerError> {
        let n = match self.n {
            Some(n) => n,
            None => self
                .rows
                .settled()
                .await
                .and_then(|()| self.rows.get(b"n"))?
                .map_or(0, |v| u64::from_be_bytes(v.as_slice().try_into().unwrap())),
        };
        self.n = Some(n + 1);
        self.bad |= &*event.event_type == "BadWrite";
        Ok(())
    }
    fn write(&mut self, changes: &mut Changes) -> Result<(), HandlerError> {
        let (n, bad) = (self.n.unwrap_or(0), self.bad);
        changes.defer(move |c| {
            if bad {
                return Err("refusing to write a batch holding BadWrite".into());
            }
            Ok(c.insert(b"n", n.to_be_bytes())?)
        });
        Ok(())
    }
    fn queued(&mut self) {
        self.bad = false;
    }
    fn discarded(&mut self) {
        self.n = None;
        self.bad = false;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_deferred_write_faults_at_its_batch_and_nothing_after_it_lands() {
    let store = MemoryStore::new();
    let first = append_n(&store, "kent", "s1", 1, "Counted").await;
    append_n(&store, "kent", "s1", 1999, "Counted").await;
    let bad = append_n(&store, "kent", "s1", 1, "BadWrite").await;
    let last = append_n(&store, "kent", "s1", 2000, "Counted").await;
    // Batches of 4: catching up commits 512 events at a time, several in
    // flight, so commits after the refused one are already on their way.
    let p: Arc<dyn Projection> = Arc::new(DeferringCounter);
    let host = ProjectionHost::temporary(Arc::new(store.clone()), vec![p], 4).unwrap();
    let kent = tenant("kent");
    let err = host
        .wait_for("deferring", &kent, last, WAIT)
        .await
        .unwrap_err();
    let QueryError::Faulted { position, .. } = err else {
        panic!("expected a fault, got {err}");
    };
    // The fault names the refused commit's first event...
    assert!(position <= bad && bad.0 - position.0 < 512, "{position:?}");
    let status = host.status(&kent).unwrap().remove(0);
    assert!(
        matches!(&status.state, RunState::Faulted { error, .. } if error.contains("refusing")),
        "{status:?}"
    );
    // ...the checkpoint sits just before it, and the tree holds exactly the
    // events before it: no later commit landed.
    assert_eq!(status.position, Some(GlobalPosition(position.0 - 1)));
    let gen = host
        .read("deferring", &kent, Freshness::Eventual)
        .await
        .unwrap();
    assert_eq!(count(&gen, "n"), position.0 - first.0);
    host.shutdown().await.unwrap();
}

// ------------------------------------------------------- property test

#[derive(Debug, Clone)]
enum Step {
    Update(usize, u8, u16),
    Claim(usize),
    Assign(usize, u8),
    CompleteAssess(usize, u16),
    CompleteReview(usize),
    Note(usize),
    /// Links person `P-n` (a second link of the same one is refused).
    Link(usize, u8),
    Suspend(usize),
    Resume(usize),
    Close(usize),
    Reopen(usize),
    Wait,
}

fn step() -> impl Strategy<Value = Step> {
    let case = 0usize..6;
    prop_oneof![
        3 => (case.clone(), 0u8..4, any::<u16>()).prop_map(|(c, w, l)| Step::Update(c, w, l)),
        2 => case.clone().prop_map(Step::Claim),
        1 => (case.clone(), 0u8..3).prop_map(|(c, a)| Step::Assign(c, a)),
        2 => (case.clone(), any::<u16>()).prop_map(|(c, l)| Step::CompleteAssess(c, l)),
        1 => case.clone().prop_map(Step::CompleteReview),
        1 => case.clone().prop_map(Step::Note),
        1 => (case.clone(), 0u8..3).prop_map(|(c, p)| Step::Link(c, p)),
        1 => case.clone().prop_map(Step::Suspend),
        1 => case.clone().prop_map(Step::Resume),
        1 => case.clone().prop_map(Step::Close),
        1 => case.clone().prop_map(Step::Reopen),
        1 => Just(Step::Wait),
    ]
}

async fn run_history(engine: &Engine, t: &str, steps: &[Step]) {
    let wards = ["north", "south", "east", "west"];
    for c in 0..6 {
        open_incident(
            engine,
            t,
            &format!("C-{c}"),
            json!({"summary": format!("case number {c} shed"), "ward": wards[c % 4]}),
        )
        .await;
    }
    let h = handler(t);
    let s = supervisor(t);
    for st in steps {
        let (who, id, cmd) = match st {
            Step::Update(c, w, l) => (
                &h,
                *c,
                CaseCommand::UpdateCaseFile {
                    changes: fields(
                        json!({"ward": wards[*w as usize], "loss": *l, "summary": format!("update {l} van")}),
                    ),
                },
            ),
            Step::Claim(c) => (
                &h,
                *c,
                CaseCommand::Claim {
                    item: ItemRef::key("assess"),
                },
            ),
            Step::Assign(c, a) => (
                &h,
                *c,
                CaseCommand::Assign {
                    item: ItemRef::key("assess"),
                    assignee: format!("pc-{a}"),
                },
            ),
            Step::CompleteAssess(c, l) => (
                &h,
                *c,
                CaseCommand::Complete {
                    item: ItemRef::key("assess"),
                    outputs: [("loss".to_string(), json!(*l))].into_iter().collect(),
                },
            ),
            Step::CompleteReview(c) => (
                &s,
                *c,
                CaseCommand::Complete {
                    item: ItemRef::key("review"),
                    outputs: CaseFile::new(),
                },
            ),
            Step::Note(c) => (
                &h,
                *c,
                CaseCommand::AddNote {
                    text: "called back".into(),
                },
            ),
            Step::Link(c, p) => (
                &h,
                *c,
                CaseCommand::LinkEntity {
                    entity: casebook::case::PoleRef {
                        kind: casebook::case::PoleKind::Person,
                        id: format!("P-{p}"),
                    },
                    role: casebook::case::EntityRole::Witness,
                },
            ),
            Step::Suspend(c) => (&s, *c, CaseCommand::Suspend),
            Step::Resume(c) => (&s, *c, CaseCommand::Resume),
            Step::Close(c) => (
                &s,
                *c,
                CaseCommand::Close {
                    reason: Some("done".into()),
                },
            ),
            Step::Reopen(c) => (&s, *c, CaseCommand::Reopen { reason: None }),
            Step::Wait => {
                wait_head(engine, t).await;
                continue;
            }
        };
        // Rejected commands append nothing; that is part of the history.
        let _ = engine
            .execute(who, &format!("C-{id}"), cmd, ctx("prop"))
            .await;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn a_rebuilt_view_equals_the_incrementally_built_one(steps in prop::collection::vec(step(), 1..40)) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let engine = Engine::in_memory_with(registered()).unwrap();
            engine.start().await.unwrap();
            setup(&engine, "kent").await;
            // Start the runners first, so they build incrementally as the
            // history is written.
            engine.projection_status(&admin("kent")).await.unwrap();
            run_history(&engine, "kent", &steps).await;
            wait_head(&engine, "kent").await;
            let cases_live = dump(&engine, "kent", "cases").await;
            let timeline_live = dump(&engine, "kent", "timeline").await;
            for c in 0..6 {
                let id = format!("C-{c}");
                let projected = engine
                    .case_view(&supervisor("kent"), &id, Consistency::Eventual)
                    .await
                    .unwrap();
                let direct = engine.view(&supervisor("kent"), &id).await.unwrap();
                assert_eq!(projected.view, direct, "{id}");
            }
            rebuild_all(&engine, "kent").await;
            wait_head(&engine, "kent").await;
            assert_eq!(dump(&engine, "kent", "cases").await, cases_live);
            assert_eq!(dump(&engine, "kent", "timeline").await, timeline_live);
            engine.shutdown().await.unwrap();
        });
    }
}

// ---------------------------------------------------------- crash test

const CRASH_ENV: &str = "CASEBOOK_PROJ_CRASH_DIR";
const CRASH_MODE: &str = "CASEBOOK_PROJ_CRASH_MODE";
const CRASH_CASES: usize = 300;

/// Child: `build` writes the log; `catch-up` starts the projections on it;
/// `rebuild` waits until they are live and rebuilds them. It prints its
/// progress until the parent kills it.
#[test]
fn projection_crash_child() {
    let Ok(dir) = std::env::var(CRASH_ENV) else {
        return;
    };
    let mode = std::env::var(CRASH_MODE).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        // Small batches, so that kills land between commits.
        let config = EngineConfig {
            projection_batch: 4,
            ..registered()
        };
        let engine = Engine::open_with(&dir, config).unwrap();
        engine.start().await.unwrap();
        let t = "kent";
        match mode.as_str() {
            "build" => {
                setup(&engine, t).await;
                let mut tasks = Vec::new();
                for w in 0..10 {
                    let engine = engine.clone();
                    tasks.push(tokio::spawn(async move {
                        for c in (w..CRASH_CASES).step_by(10) {
                            let id = format!("C-{c}");
                            open_incident(
                                &engine,
                                t,
                                &id,
                                json!({"summary": format!("crash case {c}"), "ward": "north"}),
                            )
                            .await;
                            for i in 0..6u32 {
                                let cmd = match i % 3 {
                                    0 => CaseCommand::UpdateCaseFile {
                                        changes: fields(json!({"loss": c as u32 * 10 + i})),
                                    },
                                    1 => CaseCommand::AddNote {
                                        text: format!("note {i}"),
                                    },
                                    _ => CaseCommand::Assign {
                                        item: ItemRef::key("assess"),
                                        assignee: format!("pc-{i}"),
                                    },
                                };
                                // Reassigning a task someone holds is a
                                // supervisor's (permissions.supervise).
                                let by = if i % 3 == 2 {
                                    supervisor(t)
                                } else {
                                    handler(t)
                                };
                                engine.execute(&by, &id, cmd, ctx("crash")).await.unwrap();
                            }
                            if c.is_multiple_of(3) {
                                let pc5 = Principal::new(tenant(t), "pc-5").with_roles(["handler"]);
                                engine
                                    .execute(
                                        &pc5,
                                        &id,
                                        CaseCommand::Complete {
                                            item: ItemRef::key("assess"),
                                            outputs: CaseFile::new(),
                                        },
                                        ctx("crash"),
                                    )
                                    .await
                                    .unwrap();
                            }
                        }
                    }));
                }
                for task in tasks {
                    task.await.unwrap();
                }
                engine.shutdown().await.unwrap();
                println!("BUILT");
            }
            "catch-up" | "rebuild" => {
                if mode == "rebuild" {
                    wait_head(&engine, t).await;
                    for name in ["cases", "timeline"] {
                        engine.rebuild_projection(&admin(t), name).await.unwrap();
                    }
                }
                println!("READY");
                loop {
                    // The operator's view: global positions.
                    let status = engine
                        .projections(&platform_admin())
                        .unwrap()
                        .running_status(&tenant(t));
                    let line: Vec<String> = status
                        .iter()
                        .map(|s| {
                            format!(
                                "{}:{}:{}",
                                s.projection,
                                s.position.map_or(0, |p| p.0),
                                s.rebuild
                                    .as_ref()
                                    .and_then(|r| r.position)
                                    .map_or(0, |p| p.0)
                            )
                        })
                        .collect();
                    println!("STATUS {}", line.join(" "));
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            other => panic!("unknown mode {other}"),
        }
    });
}

fn run_child(dir: &std::path::Path, mode: &str, kill_after_ready: Option<Duration>) -> Vec<String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "projection_crash_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_ENV, dir)
        .env(CRASH_MODE, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    match kill_after_ready {
        Some(d) => {
            // Start the clock at READY, so the kill lands while the
            // projections work.
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            while let Ok(line) = rx.recv_timeout(deadline - std::time::Instant::now()) {
                let ready = line.ends_with("READY");
                lines.push(line);
                if ready {
                    break;
                }
            }
            std::thread::sleep(d);
            child.kill().expect("SIGKILL the child");
            assert!(!child.wait().unwrap().success());
        }
        None => assert!(child.wait().unwrap().success(), "{mode} child failed"),
    }
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    lines
}

/// The tree dumps of both projections, and the per-case checks against the log.
async fn check_exact(engine: &Engine) -> (Vec<(Vec<u8>, Vec<u8>)>, Vec<(Vec<u8>, Vec<u8>)>) {
    let t = "kent";
    wait_head(engine, t).await;
    for c in 0..CRASH_CASES {
        let id = format!("C-{c}");
        let projected = engine
            .case_view(&supervisor(t), &id, Consistency::Eventual)
            .await
            .unwrap();
        let direct = engine
            .load_without_snapshot(&supervisor(t), &id)
            .await
            .unwrap();
        assert_eq!(projected.version, direct.version, "{id}");
        assert_eq!(
            projected.view,
            direct
                .state
                .view_for(&direct.definition, &supervisor(t))
                .unwrap(),
            "{id}"
        );
        let tl = engine
            .timeline(
                &supervisor(t),
                &id,
                PageRequest::first(1000),
                Consistency::Eventual,
            )
            .await
            .unwrap();
        let stream = StreamId::new(tenant(t), "case", &id).unwrap();
        let events = engine
            .store(&platform_admin())
            .unwrap()
            .read_stream(&stream, Direction::Forward, StreamVersion::START, 1000)
            .await
            .unwrap();
        let positions: Vec<PositionToken> = tl.items.iter().map(|e| e.position).collect();
        let expected: Vec<PositionToken> = events
            .iter()
            .map(|e| token(engine, t, e.position))
            .collect();
        assert_eq!(
            positions, expected,
            "{id}: timeline entries skipped or doubled"
        );
    }
    (
        dump(engine, t, "cases").await,
        dump(engine, t, "timeline").await,
    )
}

#[test]
fn views_are_exact_after_sigkill_during_catch_up_and_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let lines = run_child(dir.path(), "build", None);
    assert!(lines.iter().any(|l| l.ends_with("BUILT")), "{lines:?}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rng = fastrand::Rng::with_seed(0x9e37 ^ u64::from(std::process::id()));
    let mut killed_mid_way = 0;
    // Six rounds, then (on a loaded machine, where a kill can miss the
    // work) more rebuild rounds with wider delays until one lands mid-way.
    let modes = [
        "catch-up", "catch-up", "catch-up", "rebuild", "rebuild", "rebuild",
    ];
    for round in 0..18 {
        if round >= modes.len() && killed_mid_way > 0 {
            break;
        }
        let mode = &modes.get(round).copied().unwrap_or("rebuild");
        let spread = if round < modes.len() {
            40
        } else {
            10 * round as u64
        };
        let kill_after = Duration::from_millis(rng.u64(0..spread));
        let lines = run_child(dir.path(), mode, Some(kill_after));
        assert!(
            lines.iter().any(|l| l.ends_with("READY")),
            "round {round}: the child never started: {:?}",
            &lines[..lines.len().min(5)]
        );
        // Did the kill land while the child was still applying events?
        let statuses: Vec<&String> = lines.iter().filter(|l| l.starts_with("STATUS")).collect();
        if statuses.len() >= 2 && statuses.first() != statuses.last() {
            killed_mid_way += 1;
        }
        if *mode == "catch-up" && round == 2 {
            // After the catch-up rounds, check the views before the rebuild rounds.
            rt.block_on(async {
                let engine = Engine::open_with(dir.path(), registered()).unwrap();
                engine.start().await.unwrap();
                check_exact(&engine).await;
                engine.shutdown().await.unwrap();
            });
        }
    }
    rt.block_on(async {
        let engine = Engine::open_with(dir.path(), registered()).unwrap();
        engine.start().await.unwrap();
        let (cases, timeline) = check_exact(&engine).await;
        // The reference: a rebuild from scratch in this process.
        rebuild_all(&engine, "kent").await;
        let (cases2, timeline2) = check_exact(&engine).await;
        assert!(cases == cases2, "cases view differs from a clean rebuild");
        assert!(
            timeline == timeline2,
            "timeline differs from a clean rebuild"
        );
        engine.shutdown().await.unwrap();
    });
    assert!(
        killed_mid_way >= 1,
        "no kill landed while the projections were working"
    );
}

#[tokio::test]
async fn broad_searches_walk_their_sort_order_and_page_through_every_match() {
    let engine = Engine::in_memory_with(registered()).unwrap();
    engine.start().await.unwrap();
    let t = "kent";
    setup(&engine, t).await;
    let n = 1_203;
    let mut last = PositionToken::NONE;
    for i in 0..n {
        let ward = ["north", "south", "east"][i % 3];
        let file = json!({"summary": format!("bicycle {i}"), "ward": ward});
        last = open_incident(&engine, t, &format!("INC-{:05}", (i * 7_919) % n), file).await;
    }
    let reader = handler(t);
    // Over a thousand candidates: pages come from walking the order's index.
    for order in [
        SearchOrder::OpenedDescending,
        SearchOrder::OpenedAscending,
        SearchOrder::UpdatedDescending,
        SearchOrder::CaseId,
    ] {
        let mut seen = Vec::new();
        let mut offset = 0;
        loop {
            let q = SearchQuery {
                case_type: Some("incident".into()),
                order,
                page: PageRequest { offset, limit: 100 },
                ..Default::default()
            };
            let page = engine.search_cases(&reader, &q, after(last)).await.unwrap();
            assert_eq!(page.total, None, "{order:?}: a broad search is not counted");
            seen.extend(page.items);
            match page.next_offset {
                Some(next) => offset = next,
                None => break,
            }
        }
        assert_eq!(seen.len(), n, "{order:?}: every case exactly once");
        let mut ids: Vec<&str> = seen.iter().map(|s| s.case_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "{order:?}: no case twice");
        let in_order = seen.windows(2).all(|w| {
            let (a, b) = (&w[0], &w[1]);
            match order {
                SearchOrder::OpenedDescending => {
                    (a.opened_at, &a.case_id) > (b.opened_at, &b.case_id)
                }
                SearchOrder::OpenedAscending => {
                    (a.opened_at, &a.case_id) < (b.opened_at, &b.case_id)
                }
                SearchOrder::UpdatedDescending => {
                    (a.updated_at, &a.case_id) > (b.updated_at, &b.case_id)
                }
                _ => a.case_id < b.case_id,
            }
        });
        assert!(in_order, "{order:?}: pages are in order");
    }
    // A filter with a few hundred matches is counted and sorted in memory.
    let q = SearchQuery {
        case_type: Some("incident".into()),
        fields: vec![FieldFilter::equals("ward", json!("north"))],
        page: PageRequest::first(10),
        ..Default::default()
    };
    let page = engine.search_cases(&reader, &q, after(last)).await.unwrap();
    assert_eq!(page.total, Some(401));
    assert_eq!(page.items.len(), 10);
}

/// Counts events under `n` (reading its rows once per batch); each commit's
/// deferred work takes `commit` (it sleeps, off the runtime), so commits
/// queue up behind one another during a catch-up.
struct SlowCommits {
    commit: Duration,
}

struct SlowCommitsHandler {
    rows: Rows,
    n: Option<u64>,
    commit: Duration,
}

impl Projection for SlowCommits {
    fn name(&self) -> &str {
        "slow"
    }
    fn version(&self) -> u32 {
        1
    }
    fn handler(&self, rows: Rows) -> Box<dyn Handler> {
        Box::new(SlowCommitsHandler {
            rows,
            n: None,
            commit: self.commit,
        })
    }
}

#[async_trait]
impl Handler for SlowCommitsHandler {
    async fn apply(&mut self, _event: &RecordedEvent) -> Result<(), HandlerError> {
        let n = match self.n {
            Some(n) => n,
            None => {
                // Waits for the commits in flight: asynchronously.
                self.rows.settled().await?;
                self.rows
                    .get(b"n")?
                    .map_or(0, |v| u64::from_be_bytes(v.as_slice().try_into().unwrap()))
            }
        };
        self.n = Some(n + 1);
        Ok(())
    }
    fn write(&mut self, changes: &mut Changes) -> Result<(), HandlerError> {
        let (n, commit) = (self.n.unwrap_or(0), self.commit);
        changes.defer(move |c| {
            std::thread::sleep(commit);
            Ok(c.insert(b"n", n.to_be_bytes())?)
        });
        Ok(())
    }
    fn queued(&mut self) {
        // The next batch reads the count back from the tree.
        self.n = None;
    }
    fn discarded(&mut self) {
        self.n = None;
    }
}

/// A catch-up whose commits are slow (three in flight, each waiting for
/// the one before, the handler reading behind them) runs on a runtime of
/// one thread, beside a task that wakes every millisecond: that task keeps
/// waking on time, because nothing of the runner waits by parking the
/// thread.
#[test]
fn a_rebuild_never_blocks_the_runtime_it_runs_on() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = MemoryStore::new();
        let last = append_n(&store, "kent", "s1", 6_000, "Counted").await;
        let commit = Duration::from_millis(60);
        let p: Arc<dyn Projection> = Arc::new(SlowCommits { commit });
        // Batches of 4: catching up commits 512 events at a time, 12 commits.
        let host = ProjectionHost::temporary(Arc::new(store.clone()), vec![p], 4).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ticker = tokio::spawn({
            let stop = Arc::clone(&stop);
            async move {
                let mut ticks = tokio::time::interval(Duration::from_millis(1));
                let mut worst = Duration::ZERO;
                let mut count = 0u32;
                while !stop.load(Ordering::Acquire) {
                    let due = ticks.tick().await;
                    worst = worst.max(due.elapsed());
                    count += 1;
                }
                (worst, count)
            }
        });
        let started = std::time::Instant::now();
        let kent = tenant("kent");
        host.wait_for("slow", &kent, last, WAIT).await.unwrap();
        let took = started.elapsed();
        stop.store(true, Ordering::Release);
        let (worst, count) = ticker.await.unwrap();
        let gen = host.read("slow", &kent, fresh(last)).await.unwrap();
        assert_eq!(count_n(&gen), 6_000);
        assert!(
            took >= commit * 6,
            "the commits were slow ({took:?} for the catch-up)"
        );
        // A commit parked on the runtime's thread would hold the ticker
        // for about a commit's duration.
        assert!(
            worst < commit / 2,
            "the ticker was held up {worst:?} (ticked {count} times in {took:?})"
        );
        host.shutdown().await.unwrap();
    });
}

fn count_n(gen: &casebook::projection::Generation) -> u64 {
    gen.rows
        .get(b"n")
        .unwrap()
        .map_or(0, |v| u64::from_be_bytes(v.as_slice().try_into().unwrap()))
}

/// A work-queue query naming a role, team or case type that no deployed
/// definition declares is refused as invalid, not answered with an empty
/// list; declared names with no open task answer an empty list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_queue_names_no_deployed_definition_declares_are_invalid() {
    let engine = Engine::in_memory_with(registered()).unwrap();
    engine.start().await.unwrap();
    setup(&engine, "kent").await;
    let opened = open_incident(
        &engine,
        "kent",
        "INC-1",
        json!({"summary": "a", "ward": "north"}),
    )
    .await;
    let c = after(opened);
    let reader = supervisor("kent");
    let ok = |q: WorkQueueQuery| {
        let engine = engine.clone();
        let reader = reader.clone();
        async move { engine.work_queue(&reader, &q, c).await }
    };
    let declared = ok(WorkQueueQuery {
        role: Some("handler".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(!declared.items.is_empty());
    let by_type = ok(WorkQueueQuery {
        role: Some("handler".into()),
        case_type: Some("incident".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(by_type.items.len(), declared.items.len());
    for (query, parameter) in [
        (
            WorkQueueQuery {
                role: Some("astronaut".into()),
                ..Default::default()
            },
            "role",
        ),
        (
            WorkQueueQuery {
                team: Some("nowhere".into()),
                ..Default::default()
            },
            "team",
        ),
        (
            WorkQueueQuery {
                role: Some("handler".into()),
                case_type: Some("parking".into()),
                ..Default::default()
            },
            "case_type",
        ),
    ] {
        let err = ok(query).await.unwrap_err();
        assert!(
            matches!(&err, QueryError::Invalid { parameter: p, .. } if p == parameter),
            "{err}"
        );
        // (The facade does not re-export `ErrorKind` yet: compare its text.)
        assert_eq!(
            err.kind().to_string(),
            format!("invalid argument at {parameter}")
        );
    }
    // Another tenant's definitions declare nothing for this one: with
    // nothing deployed there, every name is undeclared.
    let essex = engine
        .work_queue(
            &supervisor("essex"),
            &WorkQueueQuery {
                role: Some("handler".into()),
                ..Default::default()
            },
            Consistency::Eventual,
        )
        .await;
    let err = essex.expect_err("essex has deployed nothing");
    assert!(
        matches!(&err, QueryError::Invalid { parameter, .. } if parameter == "role"),
        "{err}"
    );
}

/// Under load a live runner gathers appends for up to
/// `projection_commit_interval` before it commits (fewer page rewrites); a
/// reader waiting for its own write must not wait that out. With an
/// interval far longer than the reader's timeout, each read-your-writes
/// query right after a command is answered only because the waiting
/// reader hurries the runner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_waiting_for_its_write_does_not_wait_out_the_commit_interval() {
    let engine = Engine::in_memory_with(casebook::engine::EngineConfig {
        projection_commit_interval: Duration::from_secs(600),
        ..registered()
    })
    .unwrap();
    engine.start().await.unwrap();
    setup(&engine, "kent").await;
    let short = |p| Consistency::AtLeast {
        position: p,
        timeout: Duration::from_secs(20),
    };
    for i in 0..5 {
        let id = format!("INC-{i}");
        let p = open_incident(
            &engine,
            "kent",
            &id,
            json!({"summary": "Shed break-in", "ward": "north"}),
        )
        .await;
        let view = engine
            .case_view(&handler("kent"), &id, short(p))
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(view.position, p, "{id}");
    }
    engine.shutdown().await.unwrap();
}
