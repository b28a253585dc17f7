//! The service as an attacker with (or without) an account would try it:
//! tokens, roles, clearance, other tenants — rejected precisely, nothing
//! leaked, and "not yours" reads exactly like "does not exist".

mod support;

use std::time::Duration;

use casebook_proto::v1 as pb;
use casebook_service::auth::{mint_hs256, Claims};
use support::*;
use tokio_stream::StreamExt;
use tonic::Code;

fn get(case_id: &str) -> pb::GetCaseRequest {
    pb::GetCaseRequest {
        case_id: case_id.to_string(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_forged_and_expired_tokens_are_unauthenticated() {
    let server = start().await;
    let mut anonymous = casebook_proto::v1::cases_client::CasesClient::with_interceptor(
        server.channel.clone(),
        Bearer(None),
    );
    let err = anonymous.get_case(get("burglary-1")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("authorization"), "{}", err.message());

    let claims = Claims::new("demo", "intruder", Duration::from_secs(600));
    let forged = mint_hs256(b"not-the-secret-not-the-secret-!!", &claims).unwrap();
    let err = server
        .cases(&forged)
        .get_case(get("burglary-1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    let mut expired = Claims::new("demo", "pc-1", Duration::from_secs(600));
    expired.exp = 1_000_000;
    let expired = mint_hs256(SECRET, &expired).unwrap();
    let err = server
        .cases(&expired)
        .get_case(get("burglary-1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("expired"), "{}", err.message());

    let err = server
        .cases("garbage")
        .get_case(get("burglary-1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // Streams and every service are behind the same check.
    let err = server
        .events(&forged)
        .subscribe(pb::SubscribeRequest {
            from_start: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    server.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_clearance_and_tenants_hold_on_every_route() {
    // kent is registered (from the configuration) but has none of demo's data.
    let server = start_with(|c| c.tenants.push("kent".into())).await;
    let handler = token("demo", "ch-1", &["call_handler"], "OFFICIAL");
    let low = token("demo", "dc-low", &["investigator"], "OFFICIAL");
    let high = token("demo", "dc-high", &["investigator"], "SECRET");
    let kent = token(
        "kent",
        "dc-kent",
        &["investigator", "administrator"],
        "TOP SECRET",
    );

    // Wrong role: a response officer may not open a burglary.
    let response = token("demo", "pc-1", &["response_officer"], "SECRET");
    let err = server
        .cases(&response)
        .open_case(pb::OpenCaseRequest {
            case_type: "burglary".into(),
            case_file: Some(burglary_report()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // A domestic abuse case: its victim and risk fields are OFFICIAL-SENSITIVE.
    let opened = server
        .cases(&high)
        .open_case(pb::OpenCaseRequest {
            case_type: "domestic_abuse".into(),
            case_file: Some(file(&[
                ("victim", text("person-77")),
                ("incident_location", text("loc-9-mill-lane")),
                ("children_present", boolean(true)),
                ("relationship", text("ex_partner")),
            ])),
            ..Default::default()
        })
        .await
        .expect("open domestic abuse")
        .into_inner();
    let view = server
        .cases(&low)
        .get_case(pb::GetCaseRequest {
            case_id: opened.case_id.clone(),
            consistency: after(&opened),
            purpose: "safeguarding".into(),
        })
        .await
        .expect("the case is OFFICIAL")
        .into_inner();
    let fields = &view.case_file.unwrap().fields;
    assert!(fields.contains_key("children_present"));
    for hidden in ["victim", "incident_location"] {
        assert!(!fields.contains_key(hidden), "{hidden} leaked to OFFICIAL");
    }

    // A SECRET case is NOT_FOUND to an OFFICIAL reader, exactly like a case
    // that does not exist; another tenant's case likewise.
    let secret = server
        .cases(&high)
        .open_case(pb::OpenCaseRequest {
            case_type: "burglary".into(),
            case_file: Some(burglary_report()),
            classification: pb::Classification::Secret as i32,
            ..Default::default()
        })
        .await
        .expect("open a SECRET case")
        .into_inner();
    let hidden = server
        .cases(&low)
        .get_case(pb::GetCaseRequest {
            case_id: secret.case_id.clone(),
            consistency: after(&secret),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let missing = server
        .cases(&low)
        .get_case(get("burglary-nope"))
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    assert_eq!(
        hidden.message().replace(&secret.case_id, "X"),
        missing.message().replace("burglary-nope", "X")
    );
    let cross = server
        .cases(&kent)
        .get_case(get(&secret.case_id))
        .await
        .unwrap_err();
    assert_eq!(cross.code(), Code::NotFound);
    assert!(!cross.message().contains("demo"), "{}", cross.message());
    // Writes to it fail the same way.
    let note = |case_id: &str| pb::ExecuteRequest {
        case_id: case_id.to_string(),
        context: None,
        command: Some(pb::execute_request::Command::AddNote(pb::AddNote {
            text: "probing".into(),
        })),
    };
    assert_eq!(
        server
            .cases(&low)
            .execute(note(&secret.case_id))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        server
            .cases(&kent)
            .execute(note(&secret.case_id))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    // Nor can it be watched, or found by search.
    assert_eq!(
        server
            .cases(&low)
            .watch_case(pb::WatchCaseRequest {
                case_id: secret.case_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let found = server
        .cases(&low)
        .search_cases(pb::SearchCasesRequest {
            case_type: "burglary".into(),
            consistency: after(&secret),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(found.cases.iter().all(|c| c.case_id != secret.case_id));

    // Raw events: the engine's streams are not readable raw by an
    // investigator (empty, like a stream that does not exist), a
    // subscription never shows them, and another tenant sees nothing.
    let raw = server
        .events(&high)
        .read_stream(pb::ReadStreamRequest {
            stream: format!("case/{}", secret.case_id),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(raw.events.is_empty());
    let auditor = token("demo", "aud-1", &["auditor"], "TOP SECRET");
    let audited = server
        .events(&auditor)
        .read_stream(pb::ReadStreamRequest {
            stream: format!("case/{}", secret.case_id),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        !audited.events.is_empty(),
        "a TOP SECRET auditor reads it raw"
    );
    let integration = token("demo", "storm-cad", &["integration"], "OFFICIAL");
    let err = server
        .events(&integration)
        .append(pb::AppendRequest {
            stream: format!("case/{}", secret.case_id),
            events: vec![pb::NewEvent {
                event_type: "case_closed".into(),
                payload: b"{}".to_vec(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = server
        .events(&handler)
        .append(pb::AppendRequest {
            stream: "cad/incident-1".into(),
            events: vec![pb::NewEvent {
                event_type: "incident_logged".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "append takes the integration role"
    );
    server
        .events(&integration)
        .append(pb::AppendRequest {
            stream: "cad/incident-1".into(),
            events: vec![pb::NewEvent {
                event_type: "incident_logged".into(),
                payload: b"{\"grade\":\"immediate\"}".to_vec(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .expect("integration append");
    let mut sub = server
        .events(&low)
        .subscribe(pb::SubscribeRequest {
            from_start: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("an event")
        .unwrap()
        .unwrap();
    assert_eq!(
        first.stream, "cad/incident-1",
        "engine streams are left out"
    );
    let mut kent_sub = server
        .events(&kent)
        .subscribe(pb::SubscribeRequest {
            from_start: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), kent_sub.next())
            .await
            .is_err(),
        "kent sees nothing of demo's log"
    );

    // Administration takes the administrator role.
    let err = server
        .admin(&low)
        .projection_status(pb::ProjectionStatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    server.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_platform_administrator_registers_tenants_and_unknown_ones_are_not_found() {
    let server = start().await;
    let ops = token(
        "casebook.platform",
        "ops-1",
        &["platform_administrator"],
        "OFFICIAL",
    );
    let demo_admin = token("demo", "admin-1", &["administrator"], "TOP SECRET");
    let essex = token("essex", "dc-1", &["investigator"], "SECRET");
    // An unregistered tenant's call is NOT_FOUND, saying why.
    let err = server
        .cases(&essex)
        .search_cases(pb::SearchCasesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("not registered"), "{err:?}");
    // A tenant's administrator may not register tenants.
    let err = server
        .admin(&demo_admin)
        .register_tenant(pb::TenantRequest {
            tenant: "essex".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // The platform administrator registers essex; demo was registered at start.
    let registered = server
        .admin(&ops)
        .register_tenant(pb::TenantRequest {
            tenant: "essex".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(registered.changed);
    assert_eq!(registered.tenant.unwrap().status, "active");
    let listed = server
        .admin(&ops)
        .list_tenants(pb::ListTenantsRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = listed.tenants.iter().map(|t| t.tenant.as_str()).collect();
    assert_eq!(names, ["demo", "essex"]);
    server
        .cases(&essex)
        .search_cases(pb::SearchCasesRequest::default())
        .await
        .expect("a registered tenant is served");
    // Suspended: NOT_FOUND again until reactivated.
    server
        .admin(&ops)
        .suspend_tenant(pb::TenantRequest {
            tenant: "essex".into(),
        })
        .await
        .unwrap();
    let err = server
        .cases(&essex)
        .search_cases(pb::SearchCasesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("suspended"), "{err:?}");
    // The platform administrator reads no tenant's cases.
    let err = server
        .cases(&ops)
        .search_cases(pb::SearchCasesRequest::default())
        .await
        .unwrap_err();
    assert_ne!(err.code(), Code::Ok);
    server.running.stop().await.unwrap();
}

/// Every position on the wire is the caller's tenant's token: read-your-writes
/// and resuming a subscription work with them, another tenant's or a made-up
/// one is refused, and they do not count other tenants' events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_are_the_callers_tenants_tokens() {
    let server = start_with(|c| c.tenants.push("kent".into())).await;
    let handler = token("demo", "ch-1", &["call_handler"], "OFFICIAL");
    let demo_feed = token("demo", "feed-1", &["integration"], "OFFICIAL");
    let kent_feed = token("kent", "feed-2", &["integration"], "OFFICIAL");
    let open = || pb::OpenCaseRequest {
        case_type: "burglary".into(),
        case_file: Some(burglary_report()),
        ..Default::default()
    };

    // Read-your-writes with the outcome's token.
    let first = server
        .cases(&handler)
        .open_case(open())
        .await
        .unwrap()
        .into_inner();
    let view = server
        .cases(&handler)
        .get_case(pb::GetCaseRequest {
            case_id: first.case_id.clone(),
            consistency: after(&first),
            purpose: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(view.version, first.version);

    // Kent writes 500 events between two of demo's commands: demo's tokens
    // do not say so.
    let append = |stream: &str, n: usize| pb::AppendRequest {
        stream: stream.into(),
        events: (0..n)
            .map(|i| pb::NewEvent {
                event_type: "reading".into(),
                payload: format!("{i}").into_bytes(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    for _ in 0..5 {
        server
            .events(&kent_feed)
            .append(append("sensor/k-1", 100))
            .await
            .unwrap();
    }
    let second = server
        .cases(&handler)
        .open_case(open())
        .await
        .unwrap()
        .into_inner();
    assert_ne!(second.position, 0);
    assert!(
        second.position.abs_diff(first.position) > 1_000_000,
        "{} then {}",
        first.position,
        second.position
    );

    // Another tenant's token, and a made-up one, are refused by name.
    let err = server
        .events(&kent_feed)
        .read_all(pb::ReadAllRequest {
            from_position: second.position,
            limit: 10,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message()
            .contains("not a position token of this tenant"),
        "{err:?}"
    );
    let err = server
        .cases(&handler)
        .get_case(pb::GetCaseRequest {
            case_id: first.case_id.clone(),
            consistency: Some(pb::Consistency {
                min_position: 12_345,
                timeout_ms: 100,
            }),
            purpose: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("consistency.position"), "{err:?}");

    // Resuming a subscription after an event's token.
    server
        .events(&demo_feed)
        .append(append("cad/incident-1", 3))
        .await
        .unwrap();
    let page = server
        .events(&demo_feed)
        .read_all(pb::ReadAllRequest {
            from_position: 0,
            limit: 1000,
        })
        .await
        .unwrap()
        .into_inner();
    let mine: Vec<&pb::RecordedEvent> = page
        .events
        .iter()
        .filter(|e| e.stream == "cad/incident-1")
        .collect();
    assert_eq!(mine.len(), 3);
    let mut resumed = server
        .events(&demo_feed)
        .subscribe(pb::SubscribeRequest {
            after_position: mine[0].position,
            from_start: false,
        })
        .await
        .unwrap()
        .into_inner();
    let next = tokio::time::timeout(Duration::from_secs(5), resumed.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.id, mine[1].id);
    assert_eq!(next.position, mine[1].position);
    // And reading on from a page's `next_position` reads nothing twice.
    let rest = server
        .events(&demo_feed)
        .read_all(pb::ReadAllRequest {
            from_position: page.next_position,
            limit: 1000,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(rest.events.is_empty(), "{:?}", rest.events);

    // Projection status: the tenant's own position and pending count, no head.
    let admin = token("demo", "admin-1", &["administrator"], "OFFICIAL");
    let status = server
        .admin(&admin)
        .projection_status(pb::ProjectionStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!status.projections.is_empty());
    for p in &status.projections {
        assert!(p.pending < 1_000, "{p:?}");
    }
    server.running.stop().await.unwrap();
}
