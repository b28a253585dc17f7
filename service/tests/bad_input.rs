//! Bad input gets a precise status naming what to fix, and the server stays
//! up: malformed values and messages, missing fields, wrong types, unknown
//! ids, invalid definitions, wrong expected versions, oversized messages.

mod support;

use casebook_proto::v1 as pb;
use support::*;
use tonic::Code;
use tonic_types::StatusExt;

fn violations(status: &tonic::Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_precise_statuses_and_the_server_stays_up() {
    let server = start_with(|c| c.max_message_bytes = 64 * 1024).await;
    let handler = token("demo", "ch-1", &["call_handler"], "OFFICIAL");
    let admin = token("demo", "admin-1", &["administrator"], "OFFICIAL");
    let mut cases = server.cases(&handler);

    // A value without a kind.
    let mut report = burglary_report();
    report
        .fields
        .insert("victim".into(), pb::Value { kind: None });
    let err = cases
        .open_case(pb::OpenCaseRequest {
            case_type: "burglary".into(),
            case_file: Some(report),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violations(&err), ["case_file.victim"]);

    // A value of the wrong type for its field.
    let mut report = burglary_report();
    report.fields.insert(
        "victim_vulnerable".into(),
        pb::Value {
            kind: Some(pb::value::Kind::Integer(3)),
        },
    );
    let err = cases
        .open_case(pb::OpenCaseRequest {
            case_type: "burglary".into(),
            case_file: Some(report),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("victim_vulnerable"),
        "{}",
        err.message()
    );

    // Missing required fields and unknown ids.
    let err = cases
        .open_case(pb::OpenCaseRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violations(&err), ["case_type"]);
    let err = cases
        .open_case(pb::OpenCaseRequest {
            case_type: "shoplifting".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = cases
        .execute(pb::ExecuteRequest {
            case_id: "burglary-x".into(),
            context: None,
            command: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violations(&err), ["command"]);
    let err = cases
        .claim_task(pb::TaskRequest {
            case_id: "burglary-missing".into(),
            item: item("record_report"),
            context: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = cases
        .execute(pb::ExecuteRequest {
            case_id: "burglary-x".into(),
            context: Some(pb::CommandContext {
                correlation_id: "not-a-uuid".into(),
                ..Default::default()
            }),
            command: Some(pb::execute_request::Command::Suspend(pb::Empty {})),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["context.correlation_id"]);

    // An invalid definition: every problem as a field violation.
    let err = server
        .cases(&admin)
        .deploy_definition(pb::DeployDefinitionRequest {
            source: "key = \"theft\"\nname = \"Theft\"\nversion = 0\n[[stages]]\nkey = \"s\"\n"
                .into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(!violations(&err).is_empty(), "{err:?}");
    let report = server
        .cases(&admin)
        .validate_definition(pb::ValidateDefinitionRequest {
            source:
                "key = \"theft\"\nname = \"Theft\"\nversion = 0\n[retention]\ngroup = \"group3\"\n"
                    .into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!report.valid);
    assert!(
        report.problems.iter().any(|p| p.path == "version"),
        "{report:?}"
    );

    // A wrong expected version: ABORTED with the actual version.
    let integration = token("demo", "storm-cad", &["integration"], "OFFICIAL");
    let mut events = server.events(&integration);
    let append = |expected: pb::expected_version::Expected| pb::AppendRequest {
        stream: "cad/incident-7".into(),
        expected: Some(pb::ExpectedVersion {
            expected: Some(expected),
        }),
        events: vec![pb::NewEvent {
            event_type: "incident_logged".into(),
            ..Default::default()
        }],
        context: None,
    };
    events
        .append(append(pb::expected_version::Expected::NoStream(
            pb::expected_version::Empty {},
        )))
        .await
        .unwrap();
    let err = events
        .append(append(pb::expected_version::Expected::Exact(5)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    let info = err
        .get_error_details()
        .error_info()
        .cloned()
        .expect("error info");
    assert_eq!(
        info.metadata.get("actual_version").map(String::as_str),
        Some("0")
    );
    let err = events
        .append(pb::AppendRequest {
            stream: "no-slash".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["stream"]);

    // Oversized messages.
    let err = cases
        .execute(pb::ExecuteRequest {
            case_id: "burglary-x".into(),
            context: None,
            command: Some(pb::execute_request::Command::AddNote(pb::AddNote {
                text: "x".repeat(100 * 1024),
            })),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

    // Malformed bytes: a message that is not an OpenCaseRequest.
    let mut raw = tonic::client::Grpc::new(server.channel.clone());
    raw.ready().await.unwrap();
    let mut request = tonic::Request::new(pb::GeoPoint { lat: 1.0, lon: 2.0 });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {handler}").parse().unwrap(),
    );
    let err = raw
        .unary::<_, pb::CaseOutcome, _>(
            request,
            "/casebook.v1.Cases/OpenCase".parse().unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // A worked bank holiday that is not one names its index; a real one is
    // taken.
    let mut admin_client = server.admin(&admin);
    let err = admin_client
        .set_non_working_days(pb::SetNonWorkingDaysRequest {
            days: vec!["2027-01-04".into()],
            working_bank_holidays: vec!["2027-03-29".into(), "2027-03-30".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(violations(&err), ["working_bank_holidays[1]"]);
    assert!(err.message().contains("2027-03-30"), "{err:?}");
    let err = admin_client
        .set_non_working_days(pb::SetNonWorkingDaysRequest {
            days: Vec::new(),
            working_bank_holidays: vec!["29/03/2027".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["working_bank_holidays[0]"]);
    let set = admin_client
        .set_non_working_days(pb::SetNonWorkingDaysRequest {
            days: vec!["2027-01-04".into()],
            working_bank_holidays: vec!["2027-03-29".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(set.position, 0);

    // Still serving.
    let ok = cases
        .open_case(pb::OpenCaseRequest {
            case_type: "burglary".into(),
            case_file: Some(burglary_report()),
            ..Default::default()
        })
        .await;
    assert!(ok.is_ok(), "{ok:?}");
    server.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_tls_file_fails_the_start_and_leaves_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir);
    config.tls = Some(casebook_service::config::TlsConfig {
        cert_file: dir.path().join("missing.pem"),
        key_file: dir.path().join("missing.key"),
    });
    let data = config.data.clone();
    let err = match casebook_service::start(config, std::future::pending()).await {
        Ok(_) => panic!("started without its certificate"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("missing.pem"), "{err}");
    // The data directory is free: nothing holds its lock.
    let engine = casebook_engine::Engine::open(&data).expect("the directory is free");
    engine.shutdown().await.unwrap();
}
