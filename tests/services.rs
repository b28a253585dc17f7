//! The common services end to end on the embedded store: a burglary case
//! (the bundled definition) resolves its ward through `gis.locate` over the
//! tenant's GeoJSON wards, gets a suggested grade from the
//! `burglary-grading` decision table, and emails the victim through a real
//! SMTP server on 127.0.0.1; the message arrives with the right content,
//! and the disclosure is on the case and its timeline. Also: resources
//! survive a restart, and one tenant's resources are not another's.

#[path = "common/smtp.rs"]
mod smtp;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use casebook::case::{CaseCommand, CaseEvent, CaseFile, ItemRef};
use casebook::definition::Format;
use casebook::engine::{CommandContext, EngineConfig, EngineError, OpenCase};
use casebook::log::{Direction, StreamId, StreamVersion, TenantId};
use casebook::orchestration::builtin::notify::{EmailConfig, Template};
use casebook::orchestration::builtin::{
    DecisionService, EmailService, EmailSink, GisService, ReferenceService,
};
use casebook::orchestration::ServiceRegistry;
use casebook::projection::query::PageRequest;
use casebook::projection::Consistency;
use casebook::resources::{ResourceError, ResourceKind};
use casebook::rules::serde_json::json;
use casebook::rules::ItemState;
use casebook::security::{Classification, Principal};
use casebook::Engine;

const BURGLARY: &str = include_str!("../examples/definitions/burglary.toml");
const WARDS: &str = include_str!("../examples/resources/wards.geojson");
const GRADING: &str = include_str!("../examples/resources/burglary-grading.toml");
const OFFENCES: &str = include_str!("../examples/resources/offence-codes.toml");

fn kent() -> TenantId {
    TenantId::new("kent").expect("valid tenant")
}

fn essex() -> TenantId {
    TenantId::new("essex").expect("valid tenant")
}

fn admin(tenant: TenantId) -> Principal {
    Principal::new(tenant, "admin")
        .with_roles(["administrator"])
        .with_clearance(Classification::TopSecret)
}

fn call_handler() -> Principal {
    Principal::new(kent(), "ch-101").with_roles(["call_handler"])
}

fn services(smtp_port: u16) -> ServiceRegistry {
    let email = EmailConfig::new(
        "Kent Police <no-reply@kent.police.example>",
        EmailSink::Smtp {
            host: "127.0.0.1".into(),
            port: smtp_port,
        },
    )
    .with_template(
        "burglary_acknowledgement",
        Template::new(
            "Your burglary report {{case_id}}",
            "Your report is graded {{grade}}: we aim to attend within \
             {{attend_within_minutes}} minutes.\nYour local policing ward is {{ward}}.\n",
        ),
    );
    ServiceRegistry::new()
        .with(Arc::new(GisService::new()))
        .with(Arc::new(DecisionService::new()))
        .with(Arc::new(ReferenceService::new()))
        .with_for(
            Arc::new(EmailService::new().with_tenant(kent(), email)),
            [kent()],
        )
}

async fn engine(dir: &std::path::Path, smtp_port: u16) -> Engine {
    let config = EngineConfig {
        services: services(smtp_port),
        ..EngineConfig::with_tenants([kent(), essex()])
    };
    let engine = Engine::open_with(dir, config).expect("open");
    engine.start().await.expect("start");
    engine
}

/// Polls `check` (real time) until it holds, for up to 20 seconds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..2_000 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn case_events(engine: &Engine, case_id: &str) -> Vec<CaseEvent> {
    let stream = StreamId::new(kent(), "case", case_id).expect("stream");
    engine
        .store(&Principal::platform_administrator("ops"))
        .expect("platform admin")
        .read_stream(&stream, Direction::Forward, StreamVersion::START, 10_000)
        .await
        .expect("read")
        .iter()
        .map(|r| {
            use casebook::log::codec::DomainEvent;
            CaseEvent::from_recorded(r).expect("decodes")
        })
        .collect()
}

async fn field(
    engine: &Engine,
    case_id: &str,
    key: &str,
) -> Option<casebook::rules::serde_json::Value> {
    let reader = admin(kent());
    let view = engine.view(&reader, case_id).await.expect("view");
    view.case_file
        .iter()
        .find(|(k, _)| k.as_str() == key)
        .map(|(_, v)| v.clone())
}

async fn state_of(engine: &Engine, case_id: &str, item: &str) -> Option<ItemState> {
    let view = engine.view(&admin(kent()), case_id).await.expect("view");
    view.items
        .iter()
        .rev()
        .find(|i| i.item.as_str() == item)
        .map(|i| i.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burglary_is_located_graded_and_the_victim_emailed_over_real_smtp() {
    let mut smtp = smtp::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = engine(dir.path(), smtp.port).await;
    let kent_admin = admin(kent());
    for (kind, name, source) in [
        (ResourceKind::Boundaries, "wards", WARDS),
        (ResourceKind::DecisionTable, "burglary-grading", GRADING),
        (ResourceKind::ReferenceData, "offence-codes", OFFENCES),
    ] {
        let d = engine
            .deploy_resource(&kent_admin, kind, name, source)
            .await
            .expect("deploy resource");
        assert_eq!((d.version, d.newly_deployed), (1, true));
    }
    engine
        .deploy(&kent_admin, BURGLARY, Format::Toml)
        .await
        .expect("the burglary definition matches the built-in services' contracts");

    let opened = engine
        .open_case(
            &call_handler(),
            OpenCase::new(
                "burglary",
                CaseFile::from_json(json!({
                    "reported_at": "2026-12-07T09:30:00Z",
                    "incident_location": "loc-12-st-dunstans-street",
                    "incident_point": { "lat": 51.2802, "lon": 1.0789 },
                    "premises_type": "dwelling",
                    "victim": "person-4411",
                    "victim_vulnerable": true,
                    "victim_email": "j.smith@example.org",
                }))
                .expect("case file"),
            ),
        )
        .await
        .expect("open");
    let case_id = opened.case_id.to_string();
    engine
        .execute(
            &call_handler(),
            &case_id,
            CaseCommand::Complete {
                item: ItemRef::key("record_report"),
                outputs: CaseFile::from_json(json!({ "offenders_on_scene": false }))
                    .expect("outputs"),
            },
            CommandContext::because("report recorded"),
        )
        .await
        .expect("record the report");

    // GIS and the decision table answer in the background.
    eventually("the ward and the suggested grade are in", || async {
        field(&engine, &case_id, "ward").await.is_some()
            && field(&engine, &case_id, "suggested_grade").await.is_some()
    })
    .await;
    assert_eq!(
        field(&engine, &case_id, "ward").await,
        Some(json!("Westgate"))
    );
    assert_eq!(field(&engine, &case_id, "beat").await, Some(json!("CB-3")));
    assert_eq!(
        field(&engine, &case_id, "suggested_grade").await,
        Some(json!("priority"))
    );
    assert_eq!(
        field(&engine, &case_id, "attend_within_minutes").await,
        Some(json!(60))
    );
    // Nothing is sent before the call handler grades.
    assert!(smtp.messages.try_recv().is_err());

    engine
        .execute(
            &call_handler(),
            &case_id,
            CaseCommand::Complete {
                item: ItemRef::key("grade_incident"),
                outputs: CaseFile::from_json(json!({ "grade": "priority" })).expect("outputs"),
            },
            CommandContext::because("graded as suggested"),
        )
        .await
        .expect("grade");

    let message = tokio::time::timeout(Duration::from_secs(20), smtp.messages.recv())
        .await
        .expect("the message arrives within 20 s")
        .expect("a message");
    assert_eq!(message.from, "no-reply@kent.police.example");
    assert_eq!(message.to, ["j.smith@example.org"]);
    let data = message.data.replace("\r\n", "\n");
    assert!(data.contains("To: j.smith@example.org"), "{data}");
    assert!(
        data.contains(&format!("Subject: Your burglary report {case_id}")),
        "{data}"
    );
    assert!(
        data.contains("Your report is graded priority: we aim to attend within 60 minutes."),
        "{data}"
    );
    assert!(
        data.contains("Your local policing ward is Westgate."),
        "{data}"
    );
    assert!(data.contains("Message-ID: <"), "{data}");

    // The disclosure is on the case, before the answer it came with.
    eventually("the acknowledgement is recorded", || async {
        state_of(&engine, &case_id, "acknowledge_victim").await == Some(ItemState::Completed)
    })
    .await;
    assert_eq!(
        field(&engine, &case_id, "acknowledgement_sent").await,
        Some(json!(1))
    );
    let events = case_events(&engine, &case_id).await;
    let disclosed: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            CaseEvent::DisclosureRecorded {
                disclosure,
                marking,
                ..
            } => Some((disclosure.clone(), *marking)),
            _ => None,
        })
        .collect();
    assert_eq!(disclosed.len(), 1, "{events:?}");
    let (d, marking) = &disclosed[0];
    assert_eq!(d.recipient, "j.smith@example.org");
    assert_eq!(d.channel, "email");
    assert_eq!(
        d.what,
        "email 'burglary_acknowledgement' (fields: case_id, grade, attend_within_minutes, ward)"
    );
    assert!(d.why.starts_with("Victims' Code"), "{}", d.why);
    assert_eq!(*marking, Classification::Official);
    let at = events
        .iter()
        .position(|e| matches!(e, CaseEvent::DisclosureRecorded { .. }))
        .expect("disclosed");
    assert!(matches!(
        events[at + 1],
        CaseEvent::ServiceInvocationCompleted { .. }
    ));

    // And on the timeline an investigator reads.
    let investigator = Principal::new(kent(), "dc-7").with_roles(["investigator"]);
    let mut summary = None;
    for _ in 0..2_000 {
        let page = engine
            .timeline(
                &investigator,
                &case_id,
                PageRequest::first(200),
                Consistency::Eventual,
            )
            .await
            .expect("timeline");
        summary = page
            .items
            .iter()
            .find(|e| e.event_type == "DisclosureRecorded")
            .map(|e| e.summary.clone());
        if summary.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let summary = summary.expect("the timeline shows the disclosure");
    assert!(
        summary.contains("Disclosed by email to j.smith@example.org"),
        "{summary}"
    );
    assert!(summary.contains("why: Victims' Code"), "{summary}");

    // Exactly one message: nothing more arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(smtp.messages.try_recv().is_err());
    engine.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_survive_a_restart_and_stay_within_their_tenant() {
    let smtp = smtp::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let engine = engine(dir.path(), smtp.port).await;
        engine
            .deploy_resource(&admin(kent()), ResourceKind::Boundaries, "wards", WARDS)
            .await
            .expect("deploy");
        // A malformed set is refused with its path, and stores nothing.
        let err = engine
            .deploy_resource(
                &admin(kent()),
                ResourceKind::Boundaries,
                "wards",
                r#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{},"geometry":null}]}"#,
            )
            .await
            .expect_err("invalid");
        assert!(
            matches!(&err, EngineError::Resource(ResourceError::Invalid { problems, .. })
                if problems.iter().any(|p| p.path == "features[0].properties.ward")),
            "{err}"
        );
        // Deploying takes an administrator.
        let err = engine
            .deploy_resource(&call_handler(), ResourceKind::Boundaries, "wards", WARDS)
            .await
            .expect_err("forbidden");
        assert!(err.to_string().contains("administrator"), "{err}");
        engine.shutdown().await.expect("shutdown");
    }
    let engine = engine(dir.path(), smtp.port).await;
    let wards = engine
        .resource(&admin(kent()), ResourceKind::Boundaries, "wards", None)
        .await
        .expect("still there after the restart");
    assert_eq!((wards.version, &*wards.source), (1, WARDS));
    let err = engine
        .resource(&admin(essex()), ResourceKind::Boundaries, "wards", None)
        .await
        .expect_err("Essex has none");
    assert!(matches!(
        err,
        EngineError::Resource(ResourceError::Unknown { .. })
    ));
    // Raw reads of another tenant's resource stream find nothing either.
    let essex_log = engine
        .tenant_log(&admin(essex()))
        .await
        .expect("tenant log");
    let stream = StreamId::new(kent(), "resource", "boundaries.wards").expect("stream");
    assert!(essex_log
        .read_stream(&stream, Direction::Forward, StreamVersion::START, 10)
        .await
        .map(|events| events.is_empty())
        .unwrap_or(true));
    engine.shutdown().await.expect("shutdown");
}

/// A referral whose email task reads an OFFICIAL-SENSITIVE field: the
/// victim's bare address is cleared for OFFICIAL only.
const SENSITIVE_REFERRAL: &str = r#"
key = "referral"
name = "Referral"
version = 1
[retention]
group = "group3"
[permissions]
open = ["call_handler"]

[[fields]]
key = "victim_email"
type = "text"
[[fields]]
key = "circumstances"
type = "text"
classification = "OFFICIAL-SENSITIVE"

[[services]]
name = "notify.email"
[services.inputs]
template = { type = "text", required = true }
why = { type = "text", required = true }
to = { type = "text" }
circumstances = { type = "text" }

[[activities]]
key = "tell_victim"
name = "Tell the victim"
kind = "service_task"
service = "notify.email"
input = { template = "'referral'", why = "'update'", to = "victim_email", circumstances = "circumstances" }
retry = { max_attempts = 1 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_marked_above_a_recipients_clearance_is_emailed_to_them() {
    let mut smtp = smtp::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let email = EmailConfig::new(
        "Kent Police <no-reply@kent.police.example>",
        EmailSink::Smtp {
            host: "127.0.0.1".into(),
            port: smtp.port,
        },
    )
    .with_template("referral", Template::new("Referral", "{{circumstances}}"));
    let config = EngineConfig {
        services: ServiceRegistry::new()
            .with(Arc::new(EmailService::new().with_tenant(kent(), email))),
        ..EngineConfig::with_tenants([kent()])
    };
    let engine = Engine::open_with(dir.path(), config).expect("open");
    engine.start().await.expect("start");
    engine
        .deploy(&admin(kent()), SENSITIVE_REFERRAL, Format::Toml)
        .await
        .expect("deploy");
    let cleared = call_handler().with_clearance(Classification::OfficialSensitive);
    let opened = engine
        .open_case(
            &cleared,
            OpenCase::new(
                "referral",
                CaseFile::from_json(json!({
                    "victim_email": "j.smith@example.org",
                    "circumstances": "details only the investigators may know",
                }))
                .expect("case file"),
            ),
        )
        .await
        .expect("open");
    let case_id = opened.case_id.to_string();
    eventually("the email task fails", || async {
        state_of(&engine, &case_id, "tell_victim").await == Some(ItemState::Failed)
    })
    .await;
    let events = case_events(&engine, &case_id).await;
    let error = events
        .iter()
        .find_map(|e| match e {
            CaseEvent::ServiceInvocationFailed { error, .. } => Some(error.clone()),
            _ => None,
        })
        .expect("an incident");
    assert!(
        error.contains("OFFICIAL-SENSITIVE") && error.contains("cleared for OFFICIAL only"),
        "{error}"
    );
    // The incident names no value of the case.
    assert!(!error.contains("investigators"), "{error}");
    assert!(!events
        .iter()
        .any(|e| matches!(e, CaseEvent::DisclosureRecorded { .. })));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(smtp.messages.try_recv().is_err(), "nothing was sent");
    engine.shutdown().await.expect("shutdown");
}
