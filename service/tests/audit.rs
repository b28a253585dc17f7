//! The Audit service over gRPC: reads record entries with the purpose the caller stated (field or header), an auditor queries them by case within their clearance, and no one else can; the audit streams cannot be appended to.

mod support;

use std::time::{Duration, SystemTime};

use casebook_proto::v1 as pb;
use support::*;
use tonic::Code;

fn range() -> (
    Option<prost_types::Timestamp>,
    Option<prost_types::Timestamp>,
) {
    let now = SystemTime::now();
    (
        Some((now - Duration::from_secs(3600)).into()),
        Some((now + Duration::from_secs(3600)).into()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_queries_reads_by_case_and_no_one_else_can() {
    let server = start().await;
    let handler = token("demo", "ch-101", &["call_handler"], "SECRET");
    let opened = server
        .cases(&handler)
        .open_case(pb::OpenCaseRequest {
            case_type: "burglary".into(),
            case_file: Some(burglary_report()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut request = tonic::Request::new(pb::GetCaseRequest {
        case_id: opened.case_id.clone(),
        consistency: after(&opened),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-casebook-purpose", "victim update call".parse().unwrap());
    server.cases(&handler).get_case(request).await.unwrap();

    let (from, to) = range();
    let query = pb::QueryAuditRequest {
        from,
        to,
        case_id: opened.case_id.clone(),
        purpose: "monthly lawfulness check".into(),
        ..Default::default()
    };
    let auditor = token("demo", "aud-1", &["auditor"], "SECRET");
    let found = server
        .audit(&auditor)
        .query_audit(query.clone())
        .await
        .unwrap()
        .into_inner();
    let read = found
        .entries
        .iter()
        .find(|e| e.read == "case_view")
        .unwrap_or_else(|| panic!("no case read recorded: {:?}", found.entries));
    assert_eq!(read.subject, "ch-101");
    assert_eq!(read.case_ids, std::slice::from_ref(&opened.case_id));
    assert_eq!(read.purpose, "victim update call");
    assert_eq!(read.outcome, "answered");
    assert_eq!(
        found
            .entries
            .iter()
            .filter(|e| e.read == "case_view")
            .count(),
        1
    );

    // The auditor's own query is recorded too, with its purpose.
    let again = server
        .audit(&auditor)
        .query_audit(query.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(again
        .entries
        .iter()
        .any(|e| e.read == "audit_query" && e.purpose == "monthly lawfulness check"));

    // No one else: not the reader, not an administrator.
    for other in [
        handler.clone(),
        token("demo", "admin", &["administrator"], "TOP SECRET"),
    ] {
        let refused = server
            .audit(&other)
            .query_audit(query.clone())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    }
    // Bad input says what to fix.
    let bad = server
        .audit(&auditor)
        .query_audit(pb::QueryAuditRequest::default())
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    // The audit is written by the engine only.
    let day = casebook_engine::streams::audit(
        &casebook_engine::log::TenantId::new("demo").unwrap(),
        casebook_engine::time::Timestamp::now(),
    )
    .unwrap();
    let refused = server
        .events(&token("demo", "int", &["administrator"], "TOP SECRET"))
        .append(pb::AppendRequest {
            stream: format!("audit/{}", day.id()),
            events: vec![pb::NewEvent {
                event_type: "ReadsAudited".into(),
                payload: b"forged".to_vec(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    server.running.stop().await.unwrap();
}
