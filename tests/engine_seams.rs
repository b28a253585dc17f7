//! The engine's seams for servers and dispatchers: idempotent commands
//! (open, execute, deploy — also across a restart), the clock every
//! timestamp comes from, and the explicit lifecycle (start, shutdown,
//! reopening the same directory straight after); the tenant registry,
//! validated principals and the unscoped handles that only a platform
//! administrator gets.

use std::sync::Arc;
use std::time::Duration;

use casebook::case::{CaseCommand, CaseEvent, CaseFile, ItemRef};
use casebook::definition::Format;
use casebook::engine::{
    CommandContext, CommandId, EngineConfig, EngineError, OpenCase, TenantChange, TenantStatus,
};
use casebook::log::{
    ActorId, Direction, EventData, ExpectedVersion, GlobalPosition, Metadata, Source, StreamId,
    StreamVersion, TenantId,
};
use casebook::projection::{Consistency, ProjectionError, QueryError};
use casebook::rules::serde_json::json;
use casebook::security::{AccessError, Classification, PositionToken, Principal};
use casebook::time::{ManualClock, Timestamp};
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

fn admin() -> Principal {
    Principal::new(kent(), "admin-1").with_roles(["administrator"])
}

fn officer() -> Principal {
    Principal::new(kent(), "foi-7").with_roles(["foi_officer"])
}

fn request() -> CaseFile {
    CaseFile::from_json(json!({
        "requester": "P-1001",
        "received_on": "2026-11-02",
        "request_text": "Number of burglaries in Canterbury in 2025",
    }))
    .unwrap()
}

fn log_request() -> CaseCommand {
    CaseCommand::Complete {
        item: ItemRef::key("log_request"),
        outputs: request()
            .with("valid_request", true)
            .with("clarification_needed", false),
    }
}

async fn stream_len(engine: &Engine, case_id: &str) -> usize {
    let stream = StreamId::new(kent(), "case", case_id).unwrap();
    engine
        .store(&platform_admin())
        .unwrap()
        .read_stream(&stream, Direction::Forward, StreamVersion::START, 10_000)
        .await
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_command_applies_once_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let open_id = CommandId::new("open-7f3a").unwrap();
    let log_id = CommandId::random();
    let deploy_id = CommandId::new("deploy-foi-1").unwrap();

    let (case_id, first_open, first_log, events_after) = {
        let engine = Engine::open_with(dir.path(), registered()).unwrap();
        engine.start().await.unwrap();
        let context = CommandContext::because("initial").with_command_id(deploy_id.clone());
        let d1 = engine
            .deploy_with(&admin(), FOI, Format::Toml, context.clone())
            .await
            .unwrap();
        let d2 = engine
            .deploy_with(&admin(), FOI, Format::Toml, context)
            .await
            .unwrap();
        assert_eq!(d1, d2, "the retry reports the first attempt's outcome");
        assert!(d2.newly_deployed);

        // No case id: the id is derived from the command id, so a retry
        // names the same case.
        let open = OpenCase::new("foi_request", request()).with_context(
            CommandContext::because("received by email").with_command_id(open_id.clone()),
        );
        let first_open = engine.open_case(&officer(), open.clone()).await.unwrap();
        let again = engine.open_case(&officer(), open).await.unwrap();
        assert_eq!(again.case_id, first_open.case_id);
        assert_eq!(again.version, first_open.version);
        assert_eq!(again.events, first_open.events);

        let context = CommandContext::because("logged").with_command_id(log_id.clone());
        let case_id = first_open.case_id.clone();
        let first_log = engine
            .execute(&officer(), &case_id, log_request(), context.clone())
            .await
            .unwrap();
        assert!(
            first_log.events.len() > 1,
            "the cascade is part of the outcome"
        );
        let events_after = stream_len(&engine, &case_id).await;
        let retry = engine
            .execute(&officer(), &case_id, log_request(), context)
            .await
            .unwrap();
        assert_eq!(retry.events, first_log.events);
        assert_eq!(retry.version, first_log.version);
        assert_eq!(retry.position, first_log.position);
        assert_eq!(stream_len(&engine, &case_id).await, events_after);
        engine.shutdown().await.unwrap();
        (case_id, first_open, first_log, events_after)
    };

    // After a restart nothing in memory remembers the commands: the log does.
    let engine = Engine::open_with(dir.path(), registered()).unwrap();
    engine.start().await.unwrap();
    let d3 = engine
        .deploy_with(
            &admin(),
            FOI,
            Format::Toml,
            CommandContext::default().with_command_id(deploy_id),
        )
        .await
        .unwrap();
    assert!(d3.newly_deployed, "the original outcome, not a fresh no-op");
    let open = OpenCase::new("foi_request", request())
        .with_context(CommandContext::default().with_command_id(open_id));
    let reopened = engine.open_case(&officer(), open).await.unwrap();
    assert_eq!(reopened.case_id, case_id);
    assert_eq!(reopened.events, first_open.events);
    let retry = engine
        .execute(
            &officer(),
            &case_id,
            log_request(),
            CommandContext::default().with_command_id(log_id),
        )
        .await
        .unwrap();
    assert_eq!(retry.events, first_log.events);
    assert_eq!(retry.version, first_log.version);
    assert_eq!(stream_len(&engine, &case_id).await, events_after);

    // A fresh command id is a new command: here the runtime refuses it
    // (log_request is done), which shows it really was decided again.
    let err = engine
        .execute(
            &officer(),
            &case_id,
            log_request(),
            CommandContext::default().with_command_id(CommandId::random()),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Case(_)), "{err}");
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_attempts_of_one_command_append_once() {
    let engine = Engine::in_memory_with(registered()).unwrap();
    engine.start().await.unwrap();
    engine.deploy(&admin(), FOI, Format::Toml).await.unwrap();
    let mut open = OpenCase::new("foi_request", request());
    open.case_id = Some("FOI-RACE".parse().unwrap());
    engine.open_case(&officer(), open).await.unwrap();
    let before = stream_len(&engine, "FOI-RACE").await;
    let context = CommandContext::default().with_command_id(CommandId::random());
    let attempts: Vec<_> = (0..8)
        .map(|_| {
            let engine = engine.clone();
            let context = context.clone();
            tokio::spawn(async move {
                engine
                    .execute(
                        &officer(),
                        "FOI-RACE",
                        CaseCommand::AddNote {
                            text: "called back".into(),
                        },
                        context,
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for a in attempts {
        outcomes.push(a.await.unwrap());
    }
    assert_eq!(stream_len(&engine, "FOI-RACE").await, before + 1);
    assert!(outcomes.windows(2).all(|w| w[0].events == w[1].events));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_principals_command_id_is_refused() {
    let engine = Engine::in_memory_with(registered()).unwrap();
    engine.deploy(&admin(), FOI, Format::Toml).await.unwrap();
    let command = CommandId::random();
    let open = OpenCase::new("foi_request", request())
        .with_context(CommandContext::default().with_command_id(command.clone()));
    let opened = engine.open_case(&officer(), open).await.unwrap();
    let other = Principal::new(kent(), "foi-8").with_roles(["foi_officer"]);
    let note = CaseCommand::AddNote { text: "x".into() };
    engine
        .execute(
            &officer(),
            &opened.case_id,
            note.clone(),
            CommandContext::default().with_command_id(CommandId::new("n-1").unwrap()),
        )
        .await
        .unwrap();
    let err = engine
        .execute(
            &other,
            &opened.case_id,
            note,
            CommandContext::default().with_command_id(CommandId::new("n-1").unwrap()),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::CommandIdReused { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_timestamp_comes_from_the_configured_clock() {
    let start = Timestamp::from_micros(1_780_000_000_000_000);
    let clock = ManualClock::new(start);
    let engine = Engine::in_memory_with(EngineConfig {
        clock: Arc::new(clock.clone()),
        ..registered()
    })
    .unwrap();
    engine.deploy(&admin(), FOI, Format::Toml).await.unwrap();
    let opened = engine
        .open_case(&officer(), OpenCase::new("foi_request", request()))
        .await
        .unwrap();
    let CaseEvent::CaseOpened { opened_at, .. } = &opened.events[0] else {
        panic!("first event is {:?}", opened.events[0]);
    };
    assert_eq!(*opened_at, start);
    assert_eq!(engine.now(), start);

    clock.advance(Duration::from_secs(3 * 3600));
    engine
        .execute(
            &officer(),
            &opened.case_id,
            CaseCommand::AddNote { text: "n".into() },
            CommandContext::default(),
        )
        .await
        .unwrap();
    let stream = StreamId::new(kent(), "case", &opened.case_id).unwrap();
    let recorded: Vec<Timestamp> = engine
        .store(&platform_admin())
        .unwrap()
        .read_stream(&stream, Direction::Forward, StreamVersion::START, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.recorded)
        .collect();
    assert_eq!(recorded.first(), Some(&start));
    assert_eq!(
        recorded.last(),
        Some(&(start + Duration::from_secs(3 * 3600)))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifecycle_is_explicit_and_shutdown_releases_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut events = 0;
    for round in 0..3 {
        // Straight after the previous round's shutdown: no lock left behind.
        let engine = Engine::open_with(dir.path(), registered()).unwrap();
        let err = engine
            .case_view(&officer(), "FOI-1", Consistency::Eventual)
            .await
            .unwrap_err();
        assert!(
            matches!(err, QueryError::Projection(ProjectionError::NotStarted)),
            "{err}"
        );
        engine.start().await.unwrap();
        engine.start().await.unwrap();
        assert!(engine.is_running());
        if round == 0 {
            engine.deploy(&admin(), FOI, Format::Toml).await.unwrap();
            let mut open = OpenCase::new("foi_request", request());
            open.case_id = Some("FOI-1".parse().unwrap());
            let opened = engine.open_case(&officer(), open).await.unwrap();
            engine
                .case_view(
                    &officer(),
                    "FOI-1",
                    Consistency::at_least(opened.position.unwrap()),
                )
                .await
                .unwrap();
            events = stream_len(&engine, "FOI-1").await;
        }
        assert_eq!(stream_len(&engine, "FOI-1").await, events);
        engine.shutdown().await.unwrap();
        engine.shutdown().await.unwrap();
        assert!(!engine.is_running());
        let err = engine
            .execute(
                &officer(),
                "FOI-1",
                CaseCommand::AddNote {
                    text: "late".into(),
                },
                CommandContext::default(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, EngineError::ShutDown), "{err}");
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(engine.start().await.is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_starts_and_shuts_down_around_the_signal() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open_with(dir.path(), registered()).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = {
        let engine = engine.clone();
        tokio::spawn(async move {
            engine
                .run(async {
                    let _ = stopped.await;
                })
                .await
        })
    };
    while !engine.is_running() {
        tokio::task::yield_now().await;
    }
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    drop(engine);
    let again = Engine::open_with(dir.path(), registered()).unwrap();
    again.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_suspended_tenants_are_refused_and_start_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    engine.start().await.unwrap();
    let surrey = TenantId::new("surrey").unwrap();
    let surrey_admin = Principal::new(surrey.clone(), "admin-1").with_roles(["administrator"]);
    let unknown = |e: &EngineError| {
        assert!(e.kind().is_not_found(), "{e}");
        assert!(
            matches!(e, EngineError::Access(AccessError::UnknownTenant { .. })),
            "{e}"
        );
    };
    // Given an engine that knows no tenant, every call is refused as
    // not found and starts nothing.
    unknown(
        &engine
            .deploy(&surrey_admin, FOI, Format::Toml)
            .await
            .unwrap_err(),
    );
    unknown(
        &engine
            .open_case(
                &surrey_admin,
                OpenCase::new("foi_request", request()).with_id("FOI-1".parse().unwrap()),
            )
            .await
            .unwrap_err(),
    );
    unknown(&engine.view(&surrey_admin, "FOI-1").await.unwrap_err());
    let err = engine
        .search_cases(&surrey_admin, &Default::default(), Consistency::Eventual)
        .await
        .unwrap_err();
    assert!(err.kind().is_not_found(), "{err}");
    assert!(engine.tenant_log(&surrey_admin).await.is_err());
    assert!(
        !engine
            .projections(&platform_admin())
            .unwrap()
            .known_tenants()
            .contains(&surrey),
        "runners started"
    );

    // Only a platform administrator registers: a tenant's own
    // "platform_administrator" role grants nothing.
    let pretender =
        Principal::new(surrey.clone(), "admin-1").with_roles(["platform_administrator"]);
    let err = engine
        .register_tenant(&pretender, &surrey)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    let ops = platform_admin();
    let platform = TenantId::new(casebook::security::PLATFORM_TENANT).unwrap();
    assert!(engine.register_tenant(&ops, &platform).await.is_err());
    assert_eq!(
        engine.register_tenant(&ops, &surrey).await.unwrap(),
        TenantChange::Changed
    );
    assert!(
        engine
            .deploy(&surrey_admin, FOI, Format::Toml)
            .await
            .unwrap()
            .newly_deployed
    );

    // Suspended: refused (not found, saying so) until reactivated.
    assert_eq!(
        engine.suspend_tenant(&ops, &surrey).await.unwrap(),
        TenantChange::Changed
    );
    let err = engine
        .deploy(&surrey_admin, FOI, Format::Toml)
        .await
        .unwrap_err();
    assert!(err.kind().is_not_found(), "{err}");
    assert!(err.to_string().contains("suspended"), "{err}");
    // Registering again does not lift a suspension.
    assert_eq!(
        engine.register_tenant(&ops, &surrey).await.unwrap(),
        TenantChange::Unchanged
    );
    assert!(engine
        .deployments(&surrey_admin, "foi_request")
        .await
        .is_err());
    let listed = engine.tenants(&ops).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].tenant.as_str(), listed[0].status),
        ("surrey", TenantStatus::Suspended)
    );
    assert!(engine.tenants(&surrey_admin).await.is_err());
    let unknown_tenant = TenantId::new("sussex").unwrap();
    assert!(engine.suspend_tenant(&ops, &unknown_tenant).await.is_err());

    // The registry is events: it survives a restart.
    engine.shutdown().await.unwrap();
    drop(engine);
    let engine = Engine::open(dir.path()).unwrap();
    engine.start().await.unwrap();
    let err = engine
        .deployments(&surrey_admin, "foi_request")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("suspended"), "{err}");
    engine.reactivate_tenant(&ops, &surrey).await.unwrap();
    assert_eq!(
        engine
            .deployments(&surrey_admin, "foi_request")
            .await
            .unwrap()
            .len(),
        1
    );
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_with_a_line_break_cannot_forge_timeline_text() {
    let engine = Engine::in_memory_with(registered()).unwrap();
    engine.start().await.unwrap();
    engine.deploy(&admin(), FOI, Format::Toml).await.unwrap();
    let opened = engine
        .open_case(&officer(), OpenCase::new("foi_request", request()))
        .await
        .unwrap();
    let before = stream_len(&engine, &opened.case_id).await;
    // A subject that would print a second, forged line in the timeline.
    let forger = Principal::new(kent(), "foi-7\n2026-11-02 09:00 case closed by supervisor")
        .with_roles(["foi_officer"]);
    let err = engine
        .execute(
            &forger,
            &opened.case_id,
            CaseCommand::AddNote {
                text: "hello".into(),
            },
            CommandContext::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::invalid("principal.subject"), "{err}");
    assert!(!err.to_string().contains('\n'), "{err}");
    assert_eq!(stream_len(&engine, &opened.case_id).await, before);
    // Nor can a role or an assignee carry one.
    let bad_role = Principal::new(kent(), "foi-7").with_roles(["foi_officer\nsupervisor"]);
    assert!(engine.view(&bad_role, &opened.case_id).await.is_err());
    let err = engine
        .execute(
            &officer(),
            &opened.case_id,
            CaseCommand::Assign {
                item: ItemRef::key("log_request"),
                assignee: "foi-8\r\nforged".into(),
            },
            CommandContext::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::InvalidArgument { .. }),
        "{err}"
    );
    assert_eq!(stream_len(&engine, &opened.case_id).await, before);
    // The timeline shows only the officer's real entries.
    let page = engine
        .timeline(
            &officer(),
            &opened.case_id,
            Default::default(),
            Consistency::after(&opened),
        )
        .await
        .unwrap();
    assert!(page
        .items
        .iter()
        .all(|e| !format!("{e:?}").contains("case closed by supervisor")));
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unscoped_store_and_projection_host_need_a_platform_administrator() {
    let engine = Engine::in_memory_with(registered()).unwrap();
    engine.start().await.unwrap();
    engine.deploy(&admin(), FOI, Format::Toml).await.unwrap();
    let opened = engine
        .open_case(&officer(), OpenCase::new("foi_request", request()))
        .await
        .unwrap();
    // A tenant administrator (even TOP SECRET) gets neither handle.
    let top = admin().with_clearance(Classification::TopSecret);
    let Err(err) = engine.store(&top) else {
        panic!("a tenant administrator got the unscoped store")
    };
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    let Err(err) = engine.projections(&top) else {
        panic!("a tenant administrator got the unscoped projection host")
    };
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(engine.store(&platform_admin()).is_ok());
    assert!(engine.projections(&platform_admin()).is_ok());

    // The tenant-scoped log: own tenant only, no raw engine streams without
    // the auditor role, no appends to engine streams or under another actor.
    let case = StreamId::new(kent(), "case", &opened.case_id).unwrap();
    let log = engine.tenant_log(&top).await.unwrap();
    assert!(log
        .read_stream(&case, Direction::Forward, StreamVersion::START, 100)
        .await
        .unwrap()
        .is_empty());
    assert!(log
        .read_all(PositionToken::NONE, 100)
        .await
        .unwrap()
        .events
        .is_empty());
    let auditor = Principal::new(kent(), "aud-1")
        .with_roles(["auditor"])
        .with_clearance(Classification::TopSecret);
    let audit_log = engine.tenant_log(&auditor).await.unwrap();
    assert!(!audit_log
        .read_stream(&case, Direction::Forward, StreamVersion::START, 100)
        .await
        .unwrap()
        .is_empty());
    let essex_stream = StreamId::new(TenantId::new("essex").unwrap(), "case", "X-1").unwrap();
    assert!(audit_log
        .read_stream(&essex_stream, Direction::Forward, StreamVersion::START, 100)
        .await
        .unwrap()
        .is_empty());
    let event = |actor: &str| {
        EventData::new(
            "Forged",
            b"{}".to_vec(),
            Metadata::new(ActorId::new(actor), Source::system("test")),
        )
    };
    let err = log
        .append(&case, ExpectedVersion::Any, vec![event("foi-7")])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    let err = log
        .append(&essex_stream, ExpectedVersion::Any, vec![event("x")])
        .await
        .unwrap_err();
    assert!(err.kind().is_not_found(), "{err}");
    let own = StreamId::new(kent(), "integration", "pnc-1").unwrap();
    log.append(&own, ExpectedVersion::Any, vec![event("someone-else")])
        .await
        .unwrap();
    let written = log
        .read_stream(&own, Direction::Forward, StreamVersion::START, 10)
        .await
        .unwrap();
    assert_eq!(written[0].metadata.actor, ActorId::new("admin-1"));
    // Without the integration or administrator role: no appends.
    let reader = engine.tenant_log(&officer()).await.unwrap();
    assert!(reader
        .append(&own, ExpectedVersion::Any, vec![event("foi-7")])
        .await
        .is_err());
    engine.shutdown().await.unwrap();
}

/// Waits until the orchestration dispatcher holds `timers` timers.
async fn wait_for_timers(engine: &Engine, timers: usize) {
    for _ in 0..200 {
        if engine.orchestration_backlog().timers == timers {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "the dispatcher holds {:?}, not {timers} timers",
        engine.orchestration_backlog()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspending_a_tenant_stops_its_work_until_it_is_reactivated_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ops = platform_admin();
    let essex = TenantId::new("essex").unwrap();
    let essex_admin = Principal::new(essex.clone(), "admin-1").with_roles(["administrator"]);
    let engine = Engine::open_with(dir.path(), registered()).unwrap();
    engine.start().await.unwrap();
    engine.deploy(&admin(), FOI, Format::Toml).await.unwrap();
    engine
        .deploy(&essex_admin, FOI, Format::Toml)
        .await
        .unwrap();
    let open = OpenCase::new("foi_request", request()).with_id("FOI-1".parse().unwrap());
    let opened = engine.open_case(&officer(), open).await.unwrap();
    engine
        .case_view(&officer(), "FOI-1", Consistency::after(&opened))
        .await
        .unwrap();
    // The FOI definition's case-level deadlines run as dispatcher timers
    // (once the orchestration projection, which the case view did not wait
    // for, has seen the case).
    let mut kent_timers = 0;
    for _ in 0..200 {
        kent_timers = engine.orchestration_backlog().timers;
        if kent_timers > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(kent_timers > 0, "the FOI case runs deadlines");
    let host = engine.projections(&ops).unwrap();
    let names = host.names();
    assert_eq!(host.running_status(&kent()).len(), names.len());
    assert_eq!(host.running_status(&essex).len(), names.len());

    assert_eq!(
        engine.suspend_tenant(&ops, &kent()).await.unwrap(),
        TenantChange::Changed
    );
    // Its runners have ended and none starts again; another tenant's run on.
    assert!(host.running_status(&kent()).is_empty());
    assert!(host.is_stopped(&kent()));
    assert!(matches!(
        host.ensure(&kent()),
        Err(ProjectionError::TenantStopped { .. })
    ));
    let err = host.status(&kent()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert_eq!(host.running_status(&essex).len(), names.len());
    // The dispatcher let go of its timers.
    assert_eq!(engine.orchestration_backlog().timers, 0);

    // Events appended meanwhile (by the platform administrator: the
    // tenant's own calls are refused) wait for the tenant's runners.
    let note = CaseEvent::NoteAdded {
        text: "migrated while suspended".into(),
        by: "ops".into(),
        at: engine.now(),
    };
    let stream = StreamId::new(kent(), "case", "FOI-1").unwrap();
    let version = engine
        .store(&ops)
        .unwrap()
        .stream_version(&stream)
        .await
        .unwrap()
        .unwrap();
    let appended = engine
        .store(&ops)
        .unwrap()
        .append(
            &stream,
            ExpectedVersion::Exact(version),
            vec![casebook::log::codec::DomainEvent::to_event_data(
                &note,
                Metadata::new(ActorId::new("ops"), Source::system("migration")),
            )
            .unwrap()],
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(host.running_status(&kent()).is_empty());
    engine.shutdown().await.unwrap();
    // The host handle shares the engine's stores: let go of both.
    drop(host);
    drop(engine);

    // Reopened, the engine starts nothing for the suspended tenant.
    let engine = Engine::open_with(dir.path(), registered()).unwrap();
    engine.start().await.unwrap();
    let host = engine.projections(&ops).unwrap();
    assert!(host.known_tenants().contains(&kent()));
    assert!(host.running_status(&kent()).is_empty());
    assert!(host.is_stopped(&kent()));
    assert_eq!(host.running_status(&essex).len(), names.len());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(engine.orchestration_backlog().timers, 0);

    // Reactivated: the runners resume from their checkpoints and apply
    // what was appended meanwhile; the timers come back.
    assert_eq!(
        engine.reactivate_tenant(&ops, &kent()).await.unwrap(),
        TenantChange::Changed
    );
    assert!(!host.is_stopped(&kent()));
    assert_eq!(host.running_status(&kent()).len(), names.len());
    engine
        .wait_for_projections(
            &officer(),
            engine_position(&engine, &officer(), appended.last_position),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let projected = engine
        .case_view(&officer(), "FOI-1", Consistency::Eventual)
        .await
        .unwrap();
    assert_eq!(projected.version, appended.version);
    wait_for_timers(&engine, kent_timers).await;
    engine.shutdown().await.unwrap();
}

/// The principal's tenant's token for a global position, as a platform
/// administrator hands it on.
fn engine_position(engine: &Engine, principal: &Principal, p: GlobalPosition) -> PositionToken {
    engine
        .position_token(&platform_admin(), &principal.tenant, p)
        .unwrap()
}

/// Appends `n` events to the tenant's own `sensor/<id>` stream.
async fn sensor_readings(engine: &Engine, tenant: &TenantId, id: &str, n: usize) {
    let feed = Principal::new(tenant.clone(), "feed-1").with_roles(["integration"]);
    let log = engine.tenant_log(&feed).await.unwrap();
    let stream = StreamId::new(tenant.clone(), "sensor", id).unwrap();
    for chunk in 0..n.div_ceil(100) {
        let events = (0..100.min(n - chunk * 100))
            .map(|i| {
                EventData::new(
                    "reading",
                    format!("{i}").into_bytes(),
                    Metadata::new(ActorId::new("feed-1"), Source::system("sensor")),
                )
            })
            .collect();
        log.append(&stream, ExpectedVersion::Any, events)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_sees_position_tokens_that_reveal_nothing_of_other_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let ops = platform_admin();
    let essex = TenantId::new("essex").unwrap();
    let essex_admin = Principal::new(essex.clone(), "admin-1").with_roles(["administrator"]);
    let essex_officer = Principal::new(essex.clone(), "foi-1").with_roles(["foi_officer"]);
    let engine = Engine::open_with(dir.path(), registered()).unwrap();
    engine.start().await.unwrap();
    engine
        .deploy(&essex_admin, FOI, Format::Toml)
        .await
        .unwrap();
    let open = |id: &str| OpenCase::new("foi_request", request()).with_id(id.parse().unwrap());
    let first = engine.open_case(&essex_officer, open("E-1")).await.unwrap();
    // Kent writes a thousand events; then essex writes again.
    sensor_readings(&engine, &kent(), "k-1", 1_000).await;
    let second = engine.open_case(&essex_officer, open("E-2")).await.unwrap();
    let (t1, t2) = (first.position.unwrap(), second.position.unwrap());
    // The platform administrator sees the global gap ...
    let (g1, g2) = (
        engine.token_position(&ops, &essex, t1).unwrap(),
        engine.token_position(&ops, &essex, t2).unwrap(),
    );
    assert!(g2.0 - g1.0 > 1_000, "{g1:?} {g2:?}");
    // ... the tenant's tokens do not show it: not ~1000 apart, and not
    // ordered (over a run of commands, some steps go down).
    assert!(t2.get().abs_diff(t1.get()) > 1_000_000, "{t1} {t2}");
    let mut tokens = vec![t2];
    for i in 0..16 {
        let note = CaseCommand::AddNote {
            text: format!("note {i}"),
        };
        let done = engine
            .execute(&essex_officer, "E-2", note, CommandContext::default())
            .await
            .unwrap();
        tokens.push(done.position.unwrap());
    }
    let ups = tokens
        .windows(2)
        .filter(|w| w[1].get() > w[0].get())
        .count();
    assert!(0 < ups && ups < 16, "{ups} of 16 steps go up");
    // Round trip: each token decodes to the event's global position.
    let stream = StreamId::new(essex.clone(), "case", "E-2").unwrap();
    let last = engine
        .store(&ops)
        .unwrap()
        .read_stream(&stream, Direction::Backward, StreamVersion::END, 1)
        .await
        .unwrap();
    assert_eq!(
        engine
            .token_position(&ops, &essex, *tokens.last().unwrap())
            .unwrap(),
        last[0].position
    );
    assert_eq!(
        engine
            .position_token(&ops, &essex, last[0].position)
            .unwrap(),
        *tokens.last().unwrap()
    );
    // Only a platform administrator translates.
    assert!(engine.token_position(&essex_admin, &essex, t1).is_err());

    // Read-your-writes with a token.
    let view = engine
        .case_view(
            &essex_officer,
            "E-2",
            Consistency::at_least(*tokens.last().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(view.version, last[0].version);
    assert_eq!(view.position, *tokens.last().unwrap());

    // Essex's token is not kent's, nor is a made-up one: refused by name.
    let kent_reader = officer();
    let refused = |e: &QueryError| {
        assert!(
            matches!(e, QueryError::Access(AccessError::NotAPositionToken { .. })),
            "{e}"
        );
        assert!(matches!(e.kind(), ErrorKind::InvalidArgument { .. }), "{e}");
        assert!(e
            .to_string()
            .contains("not a position token of this tenant"));
    };
    refused(
        &engine
            .wait_for_projections(&kent_reader, t1, Duration::from_secs(1))
            .await
            .unwrap_err(),
    );
    refused(
        &engine
            .case_view(
                &kent_reader,
                "FOI-1",
                Consistency::at_least(PositionToken::from_u64(0xDEAD_BEEF)),
            )
            .await
            .unwrap_err(),
    );
    let err = engine.read_all(&kent_reader, t1, 10).await.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::InvalidArgument { .. }),
        "{err}"
    );

    // Projection status: the tenant's own view, pending counted in its own
    // events only (kent's thousand are not essex's).
    engine
        .wait_for_projections(
            &essex_officer,
            *tokens.last().unwrap(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    for s in engine.projection_status(&essex_admin).await.unwrap() {
        assert_eq!(s.pending, 0, "{s:?}");
        assert!(!s.position.is_none(), "{s:?}");
    }

    // Resuming a raw subscription after an event's token.
    let feed = Principal::new(essex.clone(), "feed-1").with_roles(["integration"]);
    sensor_readings(&engine, &essex, "e-1", 3).await;
    let (events, next) = engine
        .read_all(&feed, PositionToken::NONE, 1_000)
        .await
        .unwrap();
    let readings: Vec<_> = events
        .iter()
        .filter(|e| e.stream.category() == "sensor")
        .collect();
    assert_eq!(readings.len(), 3);
    let after_first = engine.event_token(&feed, readings[0]).unwrap();
    let mut subscription = engine
        .subscribe_all(&feed, casebook::log::SubscriptionStart::After(after_first))
        .await
        .unwrap();
    let resumed = tokio::time::timeout(Duration::from_secs(5), subscription.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resumed.id, readings[1].id);
    drop(subscription);
    assert!(engine
        .read_all(&feed, next, 1_000)
        .await
        .unwrap()
        .0
        .is_empty());
    // Another tenant's event has no token for this caller.
    assert!(engine.event_token(&officer(), readings[0]).is_err());
    engine.shutdown().await.unwrap();
    drop(engine);

    // The key is kept: tokens stay valid across a restart.
    let engine = Engine::open_with(dir.path(), registered()).unwrap();
    engine.start().await.unwrap();
    assert_eq!(engine.token_position(&ops, &essex, t1).unwrap(), g1);
    engine
        .case_view(&essex_officer, "E-1", Consistency::at_least(t1))
        .await
        .unwrap();
    engine.shutdown().await.unwrap();
}
