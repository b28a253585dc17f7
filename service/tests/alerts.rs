//! Alerts over gRPC: a definition's service task calls the `alert.raise` service `casebook serve` runs for the demo tenant; the supervisors' work queue shows the alert with its message and priority; a supervisor acknowledges it with Execute and it leaves the queue; an unknown alert number is INVALID_ARGUMENT ("no open alert").

mod support;

use std::time::Duration;

use casebook_proto::v1 as pb;
use support::*;
use tonic::Code;

const FLAGGED: &str = r#"
key = "flagged_report"
name = "Flagged report"
version = 1
[retention]
group = "group3"
[permissions]
open = ["call_handler"]

[[fields]]
key = "reason"
type = "text"

[[services]]
name = "alert.raise"
[services.inputs]
template = { type = "text", required = true }
role = { type = "text" }
priority = { type = "text" }
reason = { type = "text" }

[[activities]]
key = "alert_supervisor"
name = "Alert the supervisor"
kind = "service_task"
service = "alert.raise"
input = { template = "'attention'", role = "'supervisor'", priority = "'high'", reason = "reason" }
retry = { max_attempts = 1 }

[[activities]]
key = "review"
name = "Supervisor review"
kind = "human_task"
roles = ["supervisor"]
required = true
"#;

/// The supervisors' alerts, waiting until `want` of them are listed.
async fn alerts(cases: &mut Cases, want: usize) -> Vec<pb::WorkItem> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let items: Vec<pb::WorkItem> = cases
            .get_work_queue(pb::GetWorkQueueRequest {
                role: "supervisor".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .items
            .into_iter()
            .filter(|w| w.alert.is_some())
            .collect();
        if items.len() == want || std::time::Instant::now() >= deadline {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raised_alert_reaches_the_supervisors_queue_over_grpc_until_acknowledged() {
    let server = start().await;
    let admin = token("demo", "admin-1", &["administrator"], "SECRET");
    let handler = token("demo", "ch-1", &["call_handler"], "OFFICIAL");
    let supervisor = token("demo", "sgt-1", &["supervisor"], "OFFICIAL");
    server
        .cases(&admin)
        .deploy_definition(pb::DeployDefinitionRequest {
            source: FLAGGED.into(),
            format: pb::DefinitionFormat::Toml as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    server
        .cases(&handler)
        .open_case(pb::OpenCaseRequest {
            case_type: "flagged_report".into(),
            case_id: "FR-1".into(),
            case_file: Some(file(&[("reason", text("third call from this address"))])),
            ..Default::default()
        })
        .await
        .unwrap();

    let mut cases = server.cases(&supervisor);
    let listed = alerts(&mut cases, 1).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let alert = listed[0].alert.clone().unwrap();
    assert_eq!(listed[0].case_id, "FR-1");
    assert_eq!(
        alert.message,
        "FR-1 needs attention: third call from this address"
    );
    assert_eq!(alert.priority, "high");

    let acknowledge = |id| pb::ExecuteRequest {
        case_id: "FR-1".into(),
        command: Some(pb::execute_request::Command::AcknowledgeAlert(
            pb::AcknowledgeAlert { id },
        )),
        ..Default::default()
    };
    let unknown = cases
        .execute(acknowledge(alert.id + 100))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument, "{unknown:?}");
    assert!(unknown.message().contains("no open alert"), "{unknown:?}");
    cases.execute(acknowledge(alert.id)).await.unwrap();
    assert!(alerts(&mut cases, 0).await.is_empty());
    server.running.stop().await.unwrap();
}
