//! The `Engine` end to end on the embedded store: deploying definitions,
//! working a bundled case type from open to close, reopening the store,
//! tenant and clearance isolation, concurrency and snapshots.

use casebook::case::{CaseCommand, CaseError, CaseFile, CaseStatus, ItemRef};
use casebook::definition::Format;
use casebook::engine::{CommandContext, EngineConfig, EngineError, LoadStart, OpenCase};
use casebook::log::{Direction, StreamId, StreamVersion, TenantId};
use casebook::rules::serde_json::{json, Value};
use casebook::security::{Classification, Principal};
use casebook::{Engine, ErrorKind};

/// The tenants these tests use, registered when the engine first needs its
/// tenant registry (calls for any other tenant are refused).
fn registered() -> casebook::engine::EngineConfig {
    casebook::engine::EngineConfig::with_tenants(
        ["kent", "essex"].map(|t| TenantId::new(t).expect("valid tenant")),
    )
}

/// The platform administrator: the only caller of the engine's unscoped
/// store and projection host.
fn platform_admin() -> casebook::security::Principal {
    casebook::security::Principal::platform_administrator("ops")
}

const FOI: &str = include_str!("../examples/definitions/foi-request.toml");

fn kent() -> TenantId {
    TenantId::new("kent").unwrap()
}

fn admin(tenant: TenantId) -> Principal {
    Principal::new(tenant, "admin-1").with_roles(["administrator"])
}

fn foi_officer() -> Principal {
    Principal::new(kent(), "foi-7").with_roles(["foi_officer"])
}

fn manager() -> Principal {
    Principal::new(kent(), "foi-mgr-2").with_roles(["foi_manager"])
}

fn fields(v: Value) -> CaseFile {
    CaseFile::from_json(v).unwrap()
}

fn outputs(v: Value) -> CaseFile {
    CaseFile::from_json(v).unwrap()
}

fn complete(item: &str, out: Value) -> CaseCommand {
    CaseCommand::Complete {
        item: ItemRef::key(item),
        outputs: outputs(out),
    }
}

fn ctx(reason: &str) -> CommandContext {
    CommandContext::because(reason)
}

fn state_of(view: &casebook::case::CaseView, item: &str) -> String {
    view.items
        .iter()
        .rev()
        .find(|i| i.item.as_str() == item)
        .map(|i| format!("{:?}", i.state))
        .unwrap_or_else(|| "absent".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploying_definitions_is_checked_versioned_and_idempotent() {
    let engine = Engine::in_memory_with(registered()).unwrap();
    engine.start().await.unwrap();
    let err = engine
        .deploy(&foi_officer(), FOI, Format::Toml)
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::Case(CaseError::Forbidden { .. })),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);

    let broken = FOI.replace(
        "if = \"information_held != 'not_held'\"",
        "if = \"informaton_held != 'not_held'\"",
    );
    let err = engine
        .deploy(&admin(kent()), &broken, Format::Toml)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("informaton_held"), "{err}");
    assert!(matches!(err, EngineError::InvalidDefinition(_)));
    let err = engine
        .deploy(&admin(kent()), "key = [", Format::Toml)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::InvalidDefinition(_)), "{err}");

    let first = engine
        .deploy(&admin(kent()), FOI, Format::Toml)
        .await
        .unwrap();
    assert!(first.newly_deployed);
    assert_eq!(first.version, 1);
    let again = engine
        .deploy(&admin(kent()), FOI, Format::Toml)
        .await
        .unwrap();
    assert!(!again.newly_deployed);
    assert_eq!(again.fingerprint, first.fingerprint);

    let case_file =
        fields(json!({"requester": "P-1", "received_on": "2026-11-02", "request_text": "x"}));
    let mut on_v1 = OpenCase::new("foi_request", case_file.clone());
    on_v1.case_id = Some("FOI-V1".parse().unwrap());
    engine.open_case(&foi_officer(), on_v1).await.unwrap();

    let changed = FOI.replace("working_days = 20", "working_days = 21");
    let err = engine
        .deploy(&admin(kent()), &changed, Format::Toml)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::DefinitionVersionConflict { version: 1, .. }
        ),
        "{err}"
    );
    let v3 = changed.replacen("version = 1", "version = 3", 1);
    assert_eq!(
        engine
            .deploy(&admin(kent()), &v3, Format::Toml)
            .await
            .unwrap()
            .version,
        3
    );
    let v2 = FOI.replacen("version = 1", "version = 2", 1);
    let err = engine
        .deploy(&admin(kent()), &v2, Format::Toml)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::DefinitionVersionNotIncreasing { latest: 3, .. }
        ),
        "{err}"
    );
    let versions = engine
        .deployments(&foi_officer(), "foi_request")
        .await
        .unwrap();
    assert_eq!(versions.iter().map(|v| v.0).collect::<Vec<_>>(), [1, 3]);
    assert_eq!(
        engine
            .definition(&foi_officer(), "foi_request", None)
            .await
            .unwrap()
            .version,
        3
    );
    // A running case keeps the version it started with; new cases get the latest.
    engine
        .execute(
            &foi_officer(),
            "FOI-V1",
            CaseCommand::AddNote {
                text: "still v1".into(),
            },
            ctx("note"),
        )
        .await
        .unwrap();
    assert_eq!(
        engine
            .load(&foi_officer(), "FOI-V1")
            .await
            .unwrap()
            .definition
            .version,
        1
    );
    let on_latest = engine
        .open_case(&foi_officer(), OpenCase::new("foi_request", case_file))
        .await
        .unwrap();
    assert!(on_latest.case_id.starts_with("foi_request-"));
    assert_eq!(
        engine
            .load(&foi_officer(), &on_latest.case_id)
            .await
            .unwrap()
            .definition
            .version,
        3
    );

    // Definitions are per tenant.
    let essex = TenantId::new("essex").unwrap();
    let err = engine
        .definition(&Principal::new(essex, "x"), "foi_request", None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::UnknownDefinition { .. }),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_foi_request_runs_from_open_to_close_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open_with(dir.path(), registered()).unwrap();
    engine.start().await.unwrap();
    engine
        .deploy(&admin(kent()), FOI, Format::Toml)
        .await
        .unwrap();

    let mut open = OpenCase::new(
        "foi_request",
        fields(
            json!({"requester": "P-1001", "received_on": "2026-11-02", "request_text": "Number of burglaries in Canterbury in 2025"}),
        ),
    );
    open.case_id = Some("FOI-2026-0042".parse().unwrap());
    open.context = ctx("request received by email");
    let opened = engine
        .open_case(&foi_officer(), open.clone())
        .await
        .unwrap();
    assert_eq!(opened.case_id, "FOI-2026-0042");
    let err = engine.open_case(&foi_officer(), open).await.unwrap_err();
    assert!(matches!(err, EngineError::CaseExists { .. }), "{err}");

    let view = engine.view(&foi_officer(), "FOI-2026-0042").await.unwrap();
    assert_eq!(view.status, CaseStatus::Active);
    assert_eq!(state_of(&view, "log_request"), "Active");
    assert!(view
        .deadlines
        .iter()
        .any(|d| d.deadline.as_str() == "statutory_20_working_days"));

    let id = "FOI-2026-0042";
    engine
        .execute(
            &foi_officer(),
            id,
            complete(
                "log_request",
                json!({"requester": "P-1001", "received_on": "2026-11-02", "request_text": "Number of burglaries in Canterbury in 2025", "valid_request": true, "clarification_needed": false}),
            ),
            ctx("logged"),
        )
        .await
        .unwrap();
    // The sentry on log_request's completion fired in the same command.
    let view = engine.view(&foi_officer(), id).await.unwrap();
    assert_eq!(state_of(&view, "search_for_information"), "Active");
    assert_eq!(state_of(&view, "seek_clarification"), "Available");

    // A wrong role is refused and appends nothing.
    let before = engine.load(&foi_officer(), id).await.unwrap().version;
    let err = engine
        .execute(
            &manager(),
            id,
            complete(
                "search_for_information",
                json!({"information_held": "held"}),
            ),
            ctx("x"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::Case(CaseError::Forbidden { .. })),
        "{err}"
    );
    assert_eq!(
        engine.load(&foi_officer(), id).await.unwrap().version,
        before
    );

    engine
        .execute(
            &foi_officer(),
            id,
            complete(
                "search_for_information",
                json!({"information_held": "held", "estimated_cost_hours": 6.5}),
            ),
            ctx("searched"),
        )
        .await
        .unwrap();
    engine
        .execute(
            &foi_officer(),
            id,
            complete(
                "consider_exemptions",
                json!({"exemptions": ["s40_personal_data"]}),
            ),
            ctx("considered"),
        )
        .await
        .unwrap();
    // A discretionary activity, planned because an exemption applies.
    engine
        .execute(
            &foi_officer(),
            id,
            CaseCommand::AddDiscretionary {
                item: "legal_advice".into(),
                stage: None,
            },
            ctx("s40 needs legal advice"),
        )
        .await
        .unwrap();
    let legal = Principal::new(kent(), "legal-3").with_roles(["legal_adviser"]);
    engine
        .execute(
            &legal,
            id,
            complete("legal_advice", json!({})),
            ctx("advised"),
        )
        .await
        .unwrap();
    engine
        .execute(
            &manager(),
            id,
            complete(
                "approve_response",
                json!({"response_type": "partly_disclosed"}),
            ),
            ctx("approved"),
        )
        .await
        .unwrap();
    let sent = engine
        .execute(
            &foi_officer(),
            id,
            complete("send_response", json!({"response_sent_on": "2026-11-20"})),
            ctx("sent"),
        )
        .await
        .unwrap();
    let view = engine.view(&foi_officer(), id).await.unwrap();
    assert!(
        view.reached.iter().any(|m| m.as_str() == "response_sent"),
        "{:?}",
        view.reached
    );
    assert!(sent.position.is_some());
    if view.status != CaseStatus::Completed {
        engine
            .execute(
                &manager(),
                id,
                CaseCommand::Close {
                    reason: Some("responded".into()),
                },
                ctx("closed"),
            )
            .await
            .unwrap();
    }
    let status = engine.view(&foi_officer(), id).await.unwrap().status;
    assert!(
        matches!(status, CaseStatus::Completed | CaseStatus::Closed),
        "{status:?}"
    );

    // Every event carries provenance.
    let stream = StreamId::new(kent(), "case", id).unwrap();
    let events = engine
        .store(&platform_admin())
        .unwrap()
        .read_stream(&stream, Direction::Forward, StreamVersion::START, 1000)
        .await
        .unwrap();
    assert!(events
        .iter()
        .all(|e| e.metadata.source.system == "casebook" && e.metadata.reason.is_some()));
    assert!(events.iter().any(|e| e.metadata.actor.0 == "legal-3"));
    let total = events.len();

    // Durable: a new engine on the same directory sees the same case.
    engine.shutdown().await.unwrap();
    drop(engine);
    let engine = Engine::open_with(dir.path(), registered()).unwrap();
    engine.start().await.unwrap();
    let reloaded = engine.load(&foi_officer(), id).await.unwrap();
    assert_eq!(reloaded.version, StreamVersion(total as u64 - 1));
    assert_eq!(
        engine.view(&foi_officer(), id).await.unwrap().status,
        status
    );
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_and_clearances_are_enforced_by_the_engine() {
    let engine = Engine::in_memory_with(registered()).unwrap();
    engine.start().await.unwrap();
    engine
        .deploy(&admin(kent()), FOI, Format::Toml)
        .await
        .unwrap();
    let essex = TenantId::new("essex").unwrap();
    engine
        .deploy(&admin(essex.clone()), FOI, Format::Toml)
        .await
        .unwrap();
    let mut open = OpenCase::new(
        "foi_request",
        fields(json!({"requester": "P-1", "received_on": "2026-11-02", "request_text": "x"})),
    );
    open.case_id = Some("FOI-1".parse().unwrap());
    open.classification = Some(Classification::OfficialSensitive);
    let officer = foi_officer().with_clearance(Classification::OfficialSensitive);
    engine.open_case(&officer, open).await.unwrap();

    // Another tenant's officer cannot even find it.
    let essex_officer = Principal::new(essex, "foi-9")
        .with_roles(["foi_officer"])
        .with_clearance(Classification::TopSecret);
    let err = engine.view(&essex_officer, "FOI-1").await.unwrap_err();
    assert!(matches!(err, EngineError::UnknownCase { .. }), "{err}");
    let err = engine
        .execute(
            &essex_officer,
            "FOI-1",
            CaseCommand::AddNote { text: "hi".into() },
            ctx("x"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::UnknownCase { .. }), "{err}");

    // Clearance below the case's classification: it reads exactly as a
    // case that does not exist.
    let err = engine.view(&foi_officer(), "FOI-1").await.unwrap_err();
    assert!(matches!(err, EngineError::UnknownCase { .. }), "{err}");
    let missing = engine.view(&foi_officer(), "FOI-9").await.unwrap_err();
    assert_eq!(
        err.to_string().replace("FOI-1", "FOI-9"),
        missing.to_string()
    );
    assert_eq!(err.kind(), missing.kind());
    let err = engine
        .execute(
            &foi_officer(),
            "FOI-1",
            CaseCommand::AddNote { text: "hi".into() },
            ctx("x"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::UnknownCase { .. }), "{err}");
    assert!(engine.view(&officer, "FOI-1").await.is_ok());

    // Unknown cases and bad ids are typed errors.
    let err = engine.view(&officer, "FOI-404").await.unwrap_err();
    assert!(matches!(err, EngineError::UnknownCase { .. }), "{err}");
    let err = engine.view(&officer, "../etc/passwd").await.unwrap_err();
    assert!(matches!(err, EngineError::UnknownCase { .. }), "{err}");
    let err = engine
        .open_case(&officer, OpenCase::new("no_such_type", CaseFile::new()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::UnknownDefinition { .. }),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_on_one_case_all_land_and_snapshots_match_replay() {
    let engine = Engine::with_store(
        std::sync::Arc::new(casebook::log::MemoryStore::new()),
        EngineConfig {
            snapshot_every: 25,
            max_attempts: 64,
            cached_cases: 10_000,
            ..registered()
        },
    )
    .unwrap();
    engine.start().await.unwrap();
    engine
        .deploy(&admin(kent()), FOI, Format::Toml)
        .await
        .unwrap();
    let mut open = OpenCase::new(
        "foi_request",
        fields(json!({"requester": "P-1", "received_on": "2026-11-02", "request_text": "x"})),
    );
    open.case_id = Some("FOI-2".parse().unwrap());
    engine.open_case(&foi_officer(), open).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                engine
                    .execute(
                        &foi_officer(),
                        "FOI-2",
                        CaseCommand::AddNote {
                            text: format!("note {w}-{i}"),
                        },
                        ctx("note"),
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let with = engine.load(&foi_officer(), "FOI-2").await.unwrap();
    let without = engine
        .load_without_snapshot(&foi_officer(), "FOI-2")
        .await
        .unwrap();
    assert_eq!(
        with.start,
        LoadStart::Cache,
        "a case just written loads from the cache"
    );
    assert_eq!(without.start, LoadStart::Log);
    assert_eq!(with.version, without.version);
    let json = |s: &casebook::case::CaseState| casebook::rules::serde_json::to_value(s).unwrap();
    assert_eq!(json(&with.state), json(&without.state));
    assert_eq!(with.state.notes.len(), 80);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_case_loads_from_its_stored_snapshot_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        snapshot_every: 25,
        ..registered()
    };
    let engine = Engine::open_with(dir.path(), config.clone()).unwrap();
    engine.start().await.unwrap();
    engine
        .deploy(&admin(kent()), FOI, Format::Toml)
        .await
        .unwrap();
    let mut open = OpenCase::new(
        "foi_request",
        fields(json!({"requester": "P-1", "received_on": "2026-11-02", "request_text": "x"})),
    );
    open.case_id = Some("FOI-3".parse().unwrap());
    engine.open_case(&foi_officer(), open).await.unwrap();
    for i in 0..60 {
        let text = format!("note {i}");
        engine
            .execute(
                &foi_officer(),
                "FOI-3",
                CaseCommand::AddNote { text },
                ctx("note"),
            )
            .await
            .unwrap();
    }
    engine.shutdown().await.unwrap();
    drop(engine);

    let engine = Engine::open_with(dir.path(), config).unwrap();
    engine.start().await.unwrap();
    let loaded = engine.load(&foi_officer(), "FOI-3").await.unwrap();
    assert_eq!(loaded.start, LoadStart::Snapshot);
    let replayed = engine
        .load_without_snapshot(&foi_officer(), "FOI-3")
        .await
        .unwrap();
    assert_eq!(loaded.version, replayed.version);
    let json = |s: &casebook::case::CaseState| casebook::rules::serde_json::to_value(s).unwrap();
    assert_eq!(json(&loaded.state), json(&replayed.state));
    assert_eq!(loaded.state.notes.len(), 60);
    engine.shutdown().await.unwrap();
}

/// A definition whose one stage holds `tasks` human tasks (every other one
/// waiting for a case-file condition).
fn plan_of(tasks: usize) -> String {
    let mut toml = format!(
        "key = \"plan_{tasks}\"\nname = \"Plan\"\nversion = 1\nroles = [\"officer\"]\n\
         [retention]\ngroup = \"group3\"\n[permissions]\nopen = [\"officer\"]\n\
         update_case_file = [\"officer\"]\n[[fields]]\nkey = \"grade\"\ntype = \"text\"\n\
         [[stages]]\nkey = \"work\"\nname = \"The work\"\n"
    );
    for t in 0..tasks {
        toml.push_str(&format!(
            "[[stages.activities]]\nkey = \"task_{t}\"\nname = \"Task {t}\"\n\
             kind = \"human_task\"\nroles = [\"officer\"]\n"
        ));
        if t % 2 == 1 {
            toml.push_str("entry = [{ if = \"grade == 'urgent'\" }]\n");
        }
    }
    toml
}

#[tokio::test]
async fn a_large_plan_opens_in_one_command_and_one_that_cannot_is_refused_at_deploy() {
    // A store that takes at most 300 events per append: a plan whose opening
    // needs more is refused when deployed, saying why.
    let limits = casebook::log::Limits {
        max_events_per_append: 300,
        ..casebook::log::Limits::default()
    };
    let store = std::sync::Arc::new(casebook::log::MemoryStore::with_limits(limits));
    let engine = Engine::with_store(store, registered()).unwrap();
    engine.start().await.unwrap();
    let err = engine
        .deploy(&admin(kent()), &plan_of(300), Format::Toml)
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::InvalidArgument { .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("opening a case creates at least 301 plan items"),
        "{err}"
    );
    engine
        .deploy(&admin(kent()), &plan_of(298), Format::Toml)
        .await
        .unwrap();
    engine.shutdown().await.unwrap();

    // On the default limits a plan of 1,000 tasks opens in one command;
    // the tasks without a condition start, the others wait.
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open_with(dir.path(), registered()).unwrap();
    engine.start().await.unwrap();
    engine
        .deploy(&admin(kent()), &plan_of(1000), Format::Toml)
        .await
        .unwrap();
    let officer = Principal::new(kent(), "pc-1").with_roles(["officer"]);
    let mut open = OpenCase::new("plan_1000", fields(json!({"grade": "routine"})));
    open.case_id = Some("PLAN-1".parse().unwrap());
    engine.open_case(&officer, open).await.unwrap();
    let view = engine.view(&officer, "PLAN-1").await.unwrap();
    assert_eq!(state_of(&view, "task_0"), "Active");
    assert_eq!(state_of(&view, "task_1"), "Available");
    assert_eq!(state_of(&view, "task_999"), "Available");
    // A case-file change fires the waiting tasks' sentries: 500 start.
    let urgent = CaseCommand::UpdateCaseFile {
        changes: fields(json!({"grade": "urgent"})),
    };
    engine
        .execute(&officer, "PLAN-1", urgent, ctx("escalated"))
        .await
        .unwrap();
    let view = engine.view(&officer, "PLAN-1").await.unwrap();
    assert_eq!(state_of(&view, "task_1"), "Active");
    assert_eq!(state_of(&view, "task_999"), "Active");
    engine.shutdown().await.unwrap();
}

#[test]
fn snapshots_of_a_large_case_come_less_often_so_their_cost_per_event_is_bounded() {
    use casebook::case::{CaseState, Note};
    use casebook::engine::{snapshot_due, SNAPSHOT_BYTES_PER_EVENT};
    let mut state = CaseState::default();
    // A small case: every 100 events.
    assert!(snapshot_due(100, 99, 100, &state));
    assert!(!snapshot_due(100, 100, 150, &state));
    assert!(snapshot_due(100, 150, 201, &state));
    assert!(!snapshot_due(0, 99, 100, &state));
    // 20,000 notes: about 2.3 MiB to encode, so every ~2,300 events.
    for i in 0..20_000 {
        state.notes.push_back(Note {
            text: format!("note {i}"),
            by: "pc-1".into(),
            at: casebook::log::Timestamp(i),
        });
    }
    let interval = 120 * 20_000 / SNAPSHOT_BYTES_PER_EVENT;
    assert!(!snapshot_due(100, 20_000, 20_100, &state));
    let crossing = (20_000 / interval + 1) * interval;
    assert!(snapshot_due(100, crossing - 1, crossing, &state));
    assert!(!snapshot_due(
        100,
        crossing,
        crossing + interval - 1,
        &state
    ));
}

/// A definition with a task that waits for a manual start and
/// discretionary items (one with an applicability rule, one restricted to
/// supervisors as planners).
const ENQUIRIES: &str = r#"
key = "enquiries"
name = "Enquiries"
version = 1
retention = { group = "group3" }
roles = ["officer", "supervisor"]
[permissions]
open = ["officer"]
update_case_file = ["officer"]
add_discretionary = ["officer", "supervisor"]
close = ["supervisor"]

[[fields]]
key = "vehicle_involved"
type = "boolean"

[[activities]]
key = "statement"
name = "Take a statement"
kind = "human_task"
roles = ["officer"]
manual_activation = true
required = true

[[activities]]
key = "anpr_check"
name = "ANPR check"
kind = "human_task"
roles = ["officer"]
discretionary = true
applicability = "vehicle_involved == true"

[[activities]]
key = "house_to_house"
name = "House-to-house enquiries"
kind = "human_task"
roles = ["officer"]
discretionary = true
repeatable = true
max_instances = 2
planners = ["supervisor"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_queues_list_active_work_and_plannable_items_are_listed_for_each_principal() {
    use casebook::projection::query::{TaskStates, WorkQueueQuery};
    use casebook::projection::Consistency;
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open_with(dir.path(), registered()).unwrap();
    engine.start().await.unwrap();
    engine
        .deploy(&admin(kent()), ENQUIRIES, Format::Toml)
        .await
        .unwrap();
    let officer = Principal::new(kent(), "pc-1").with_roles(["officer"]);
    let supervisor = Principal::new(kent(), "ps-2").with_roles(["supervisor"]);
    let mut open = OpenCase::new("enquiries", fields(json!({})));
    open.case_id = Some("ENQ-1".parse().unwrap());
    let opened = engine.open_case(&officer, open).await.unwrap();
    let after = |p: Option<casebook::security::PositionToken>| Consistency::AtLeast {
        position: p.expect("a command's position"),
        timeout: std::time::Duration::from_secs(10),
    };
    let queue = |tasks| WorkQueueQuery {
        role: Some("officer".into()),
        tasks,
        ..Default::default()
    };
    // The statement waits for someone to start it: not work yet.
    let work = engine
        .work_queue(&officer, &queue(TaskStates::Active), after(opened.position))
        .await
        .unwrap();
    assert!(work.items.is_empty(), "{:?}", work.items);
    let startable = engine
        .work_queue(
            &officer,
            &queue(TaskStates::Startable),
            after(opened.position),
        )
        .await
        .unwrap();
    assert_eq!(startable.items.len(), 1);
    assert_eq!(startable.items[0].item.as_str(), "statement");
    let started = engine
        .execute(
            &officer,
            "ENQ-1",
            CaseCommand::Start {
                item: ItemRef::key("statement"),
            },
            ctx("starting the statement"),
        )
        .await
        .unwrap();
    let work = engine
        .work_queue(
            &officer,
            &queue(TaskStates::Active),
            after(started.position),
        )
        .await
        .unwrap();
    assert_eq!(work.items.len(), 1);
    let both = engine
        .work_queue(&officer, &queue(TaskStates::Both), after(started.position))
        .await
        .unwrap();
    assert_eq!(both.items.len(), 1);

    // What each could plan: the officer the ANPR check (not applicable
    // until a vehicle is involved); the supervisor house-to-house too.
    let names = |items: &[casebook::case::PlannableItem]| {
        items
            .iter()
            .map(|p| (p.item.to_string(), p.applicable))
            .collect::<Vec<_>>()
    };
    let mine = engine
        .plannable_items(&officer, "ENQ-1", after(started.position))
        .await
        .unwrap();
    assert_eq!(names(&mine), vec![("anpr_check".to_string(), false)]);
    let theirs = engine
        .plannable_items(&supervisor, "ENQ-1", after(started.position))
        .await
        .unwrap();
    assert_eq!(
        names(&theirs),
        vec![
            ("anpr_check".to_string(), false),
            ("house_to_house".to_string(), true)
        ]
    );
    let updated = engine
        .execute(
            &officer,
            "ENQ-1",
            CaseCommand::UpdateCaseFile {
                changes: fields(json!({ "vehicle_involved": true })),
            },
            ctx("a car was seen"),
        )
        .await
        .unwrap();
    let mine = engine
        .plannable_items(&officer, "ENQ-1", after(updated.position))
        .await
        .unwrap();
    assert_eq!(names(&mine), vec![("anpr_check".to_string(), true)]);
    // Planned twice (its limit), house-to-house is no longer offered;
    // planned once, the ANPR check is not either.
    let mut last = updated.position;
    for (who, item) in [
        (&officer, "anpr_check"),
        (&supervisor, "house_to_house"),
        (&supervisor, "house_to_house"),
    ] {
        last = engine
            .execute(
                who,
                "ENQ-1",
                CaseCommand::AddDiscretionary {
                    item: casebook::definition::ItemKey::new(item),
                    stage: None,
                },
                ctx("planned"),
            )
            .await
            .unwrap()
            .position;
    }
    let theirs = engine
        .plannable_items(&supervisor, "ENQ-1", after(last))
        .await
        .unwrap();
    assert!(theirs.is_empty(), "{theirs:?}");
    // Another tenant's caller learns nothing of the case.
    let essex = Principal::new(TenantId::new("essex").unwrap(), "pc-9").with_roles(["officer"]);
    let err = engine
        .plannable_items(&essex, "ENQ-1", Consistency::Eventual)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}
