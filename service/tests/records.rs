//! The Records service over gRPC: a records officer finds a subject named by a case, holds it, is refused a disposal under hold (ABORTED, nothing recorded), releases the hold and reviews; bad input, other tenants, missing roles and tokens get precise statuses; a restricted subject's data is read only with the evidential role and a purpose.

mod support;

use casebook_proto::v1 as pb;
use support::*;
use tonic::Code;

const OFFENCE: &str = r#"
key = "offence"
name = "Offence"
version = 1
roles = ["officer"]

[retention]
group = "group3"

[permissions]
open = ["officer"]

[[fields]]
key = "suspect_ref"
type = "person"

[[fields]]
key = "suspect_dob"
type = "date"

[[fields]]
key = "suspect_name"
type = "text"

[[fields]]
key = "summary"
type = "text"

[[subjects]]
key = "suspect"
id = "suspect_ref"
date_of_birth = "suspect_dob"
fields = ["suspect_name"]
contact = true

[[activities]]
key = "investigate"
name = "Investigate"
kind = "human_task"
roles = ["officer"]
"#;

/// Deploys `OFFENCE` and opens case `case_id` of it as `officer`.
async fn opened(
    server: &Server,
    admin: &str,
    officer: &str,
    case_id: &str,
    fields: &[(&str, pb::Value)],
) -> pb::CaseOutcome {
    server
        .cases(admin)
        .deploy_definition(pb::DeployDefinitionRequest {
            source: OFFENCE.into(),
            format: pb::DefinitionFormat::Toml as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    server
        .cases(officer)
        .open_case(pb::OpenCaseRequest {
            case_type: "offence".into(),
            case_id: case_id.into(),
            case_file: Some(file(fields)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// The subject id of the person with `reference`.
async fn subject_id(records: &mut Records, reference: &str) -> String {
    records
        .get_subject_id(pb::GetSubjectIdRequest {
            reference: reference.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .subject
}

fn violations(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

fn answers(rationale: &str) -> Vec<pb::NracAnswer> {
    [
        "serious_harm",
        "children_or_vulnerable",
        "breach_of_trust",
        "risky_associations",
        "substance_misuse",
        "mental_state",
    ]
    .map(|q| pb::NracAnswer {
        question: q.into(),
        answer: false,
        rationale: rationale.into(),
    })
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_officer_reviews_and_holds_over_grpc_with_precise_statuses() {
    let server = start_with(|c| c.tenants = vec!["essex".into()]).await;
    let admin = token("demo", "admin-1", &["administrator"], "SECRET");
    let officer = token("demo", "pc-1", &["officer"], "OFFICIAL");
    let rm = token("demo", "rm-1", &["records_officer"], "OFFICIAL");
    let essex_rm = token("essex", "rm-2", &["records_officer"], "TOP SECRET");
    let suspect = [
        ("suspect_ref", text("person-77")),
        ("suspect_dob", text("1980-02-03")),
    ];
    opened(&server, &admin, &officer, "OFF-1", &suspect).await;
    let mut records = server.records(&rm);
    let id = subject_id(&mut records, "person-77").await;
    assert!(id.starts_with('n') && !id.contains("person"), "{id}");
    let subject = records
        .get_subject(pb::GetSubjectRequest {
            subject: id.clone(),
            purpose: "MoPI review".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(subject.case_ids, ["OFF-1"]);
    assert_eq!(subject.class, "mopi_group_3");
    assert_eq!(subject.date_of_birth, "1980-02-03");
    assert_eq!(subject.state, "active");

    // Held, a disposal is refused and records nothing.
    let hold = records
        .place_hold(pb::PlaceHoldRequest {
            target: Some(pb::place_hold_request::Target::CaseId("OFF-1".into())),
            kind: "disclosure".into(),
            reason: "CPIA disclosure".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (hold.case_id.as_str(), hold.kind.as_str()),
        ("OFF-1", "disclosure")
    );
    let dispose = pb::ReviewSubjectRequest {
        subject: id.clone(),
        reviewer_role: "reviewing officer".into(),
        nrac: answers("none"),
        decision: "dispose".into(),
        rationale: "no longer necessary".into(),
        ..Default::default()
    };
    let refused = records.review_subject(dispose.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Aborted, "{refused:?}");
    assert!(
        refused.message().contains("under hold"),
        "{}",
        refused.message()
    );
    records
        .release_hold(pb::ReleaseHoldRequest {
            hold: hold.id.clone(),
            reason: "trial concluded".into(),
        })
        .await
        .unwrap();
    let again = records
        .release_hold(pb::ReleaseHoldRequest {
            hold: hold.id.clone(),
            reason: "again".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::Aborted);
    // Wrong version, then a retain decision at the right one.
    let retain = pb::ReviewSubjectRequest {
        decision: "retain".into(),
        next_review: "2099-01-01".into(),
        expected_version: Some(7),
        ..dispose.clone()
    };
    let stale = records.review_subject(retain.clone()).await.unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    let done = records
        .review_subject(pb::ReviewSubjectRequest {
            expected_version: Some(subject.version),
            ..retain
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (done.decision.as_str(), done.next_review.as_str()),
        ("retain", "2099-01-01")
    );
    let due = records
        .review_due(pb::ReviewDueRequest {
            due_by: "2099-01-01".into(),
            class: "mopi_group_3".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(due.items.len(), 1);
    assert_eq!(
        (due.items[0].subject.as_str(), due.items[0].due.as_str()),
        (id.as_str(), "2099-01-01")
    );
    let not_yet = records
        .review_due(pb::ReviewDueRequest {
            due_by: "2098-12-31".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(not_yet.items.is_empty());

    // Bad input.
    let bad = records
        .review_subject(pb::ReviewSubjectRequest {
            decision: "shred".into(),
            ..dispose.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (bad.code(), violations(&bad)),
        (Code::InvalidArgument, vec!["decision".to_string()])
    );
    let bad = records
        .review_subject(pb::ReviewSubjectRequest {
            nrac: Vec::new(),
            decision: "retain".into(),
            next_review: "31/12/2099".into(),
            ..dispose.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&bad), ["next_review"]);
    let bad = records
        .review_subject(pb::ReviewSubjectRequest {
            nrac: Vec::new(),
            decision: "retain".into(),
            next_review: "2099-01-01".into(),
            ..dispose.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&bad), ["nrac"; 6]);
    let bad = records
        .review_due(pb::ReviewDueRequest {
            class: "group_9".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (bad.code(), violations(&bad)),
        (Code::InvalidArgument, vec!["class".to_string()])
    );
    let bad = records
        .get_subject(pb::GetSubjectRequest {
            subject: "person-77".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&bad), ["subject"]);
    let bad = server
        .records(&admin)
        .deploy_retention_policy(pb::DeployRetentionPolicyRequest {
            source: "[[classes]]\nkey = \"x\"\nname = \"X\"\nreview_every = \"soon\"\nat_due = \"review\"\n"
                .into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (bad.code(), violations(&bad)),
        (
            Code::InvalidArgument,
            vec!["classes[0].review_every".to_string()]
        )
    );
    let no_hold = records
        .place_hold(pb::PlaceHoldRequest {
            target: None,
            kind: "inquiry".into(),
            reason: "r".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&no_hold), ["target"]);

    // Another tenant, no role, no token.
    let other = server
        .records(&essex_rm)
        .get_subject(pb::GetSubjectRequest {
            subject: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::NotFound);
    assert_eq!(other.message(), format!("no subject {id} in tenant essex"));
    let denied = server
        .records(&officer)
        .review_due(pb::ReviewDueRequest::default())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = server
        .records(&rm)
        .deploy_retention_policy(pb::DeployRetentionPolicyRequest {
            source: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let anonymous = casebook_proto::v1::records_client::RecordsClient::new(server.channel.clone())
        .review_due(pb::ReviewDueRequest::default())
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);

    // A tenant policy moves the dates.
    let deployed = server
        .records(&admin)
        .deploy_retention_policy(pb::DeployRetentionPolicyRequest {
            source: "[[classes]]\nkey = \"mopi_group_3\"\nname = \"Other\"\nclear_period = \"P6Y\"\nat_due = \"dispose\"\n"
                .into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((deployed.version, deployed.newly_deployed), (1, true));
    let after = records
        .get_subject(pb::GetSubjectRequest {
            subject: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.state, "retained");
    assert_eq!(after.last_decision, "retain");
    assert_eq!(after.due, "2099-01-01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_data_is_read_over_grpc_only_with_the_evidential_role_and_a_purpose() {
    let server = start().await;
    let admin = token("demo", "admin-1", &["administrator"], "SECRET");
    let officer = token("demo", "pc-1", &["officer"], "OFFICIAL");
    let rm = token("demo", "rm-1", &["records_officer"], "OFFICIAL");
    let dc = token(
        "demo",
        "dc-7",
        &["officer", "evidential_reader"],
        "OFFICIAL",
    );
    let case_file = [
        ("suspect_ref", text("person-88")),
        ("suspect_name", text("Zebediah Quint")),
        ("summary", text("shed broken into")),
    ];
    let consistency = after(&opened(&server, &admin, &officer, "OFF-9", &case_file).await);
    let mut records = server.records(&rm);
    let id = subject_id(&mut records, "person-88").await;
    records
        .review_subject(pb::ReviewSubjectRequest {
            subject: id.clone(),
            reviewer_role: "reviewing officer".into(),
            nrac: answers("none"),
            decision: "restrict".into(),
            next_review: "2099-01-01".into(),
            rationale: "erasure requested; kept as evidence".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let fields = |v: &pb::CaseView| {
        let mut keys: Vec<String> = v
            .case_file
            .as_ref()
            .unwrap()
            .fields
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    };
    let ordinary = server
        .cases(&officer)
        .get_case(pb::GetCaseRequest {
            case_id: "OFF-9".into(),
            consistency,
            purpose: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fields(&ordinary), ["summary"]);

    let request = |token: &str, purpose: &str| {
        let mut client = server.records(token);
        let request = pb::GetCaseEvidentialRequest {
            case_id: "OFF-9".into(),
            consistency,
            purpose: purpose.into(),
        };
        async move { client.get_case_evidential(request).await }
    };
    let full = request(&dc, "CPS file, R v Quint")
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fields(&full), ["summary", "suspect_name", "suspect_ref"]);
    assert_eq!(full.version, ordinary.version);
    let refused = request(&dc, "").await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("purpose"),
        "{}",
        refused.message()
    );
    let too_long = request(&dc, &"x".repeat(1001)).await.unwrap_err();
    assert_eq!(too_long.code(), Code::InvalidArgument);
    // Without the role: the ordinary answer, nothing saying more exists.
    let plain = request(&officer, "CPS file").await.unwrap().into_inner();
    assert_eq!(plain, ordinary);
    let unknown = server
        .records(&dc)
        .get_case_evidential(pb::GetCaseEvidentialRequest {
            case_id: "OFF-404".into(),
            purpose: "CPS file".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}
