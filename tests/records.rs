//! Retention review and legal hold (issue 22 items 1–3) on the embedded store with a controlled clock: due dates at day −1, 0, +1 of each rule, the group-1 age limit, new contact restarting the clear period, no disposal under hold (property test over the log), and bad input refused with typed errors and nothing appended.

mod common;

use std::sync::Arc;

use casebook::calendar::{day_number, format_date, parse_date, Date};
use casebook::case::{CaseCommand, CaseFile};
use casebook::definition::Format;
use casebook::engine::{CommandContext, EngineConfig, EngineError, OpenCase};
use casebook::log::codec::DomainEvent;
use casebook::log::{Direction, StreamVersion, TenantId};
use casebook::projection::query::PageRequest;
use casebook::records::events::GovernanceEvent;
use casebook::records::{
    Decision, HoldKind, HoldTarget, NracAnswer, RecordsError, ReviewDueQuery, ReviewSubject,
    SubjectId, SubjectState, RECORDS_ROLE,
};
use casebook::resources::retention::AtDue;
use casebook::resources::{ResourceError, ResourceKind};
use casebook::rules::serde_json::json;
use casebook::security::{Classification, Principal};
use casebook::time::{ManualClock, Timestamp};
use casebook::{streams, Engine, ErrorKind};
use proptest::prelude::*;

/// Microseconds in a day.
const DAY: i64 = 86_400_000_000;

fn kent() -> TenantId {
    TenantId::new("kent").unwrap()
}

fn essex() -> TenantId {
    TenantId::new("essex").unwrap()
}

fn admin(tenant: TenantId) -> Principal {
    Principal::new(tenant, "admin-1").with_roles(["administrator"])
}

fn officer() -> Principal {
    Principal::new(kent(), "pc-1")
        .with_roles(["officer"])
        .with_clearance(Classification::Secret)
}

fn records_officer() -> Principal {
    Principal::new(kent(), "rm-1").with_roles([RECORDS_ROLE])
}

fn day(s: &str) -> Date {
    parse_date(s).unwrap()
}

/// Noon of `date`, as the clock's time.
fn noon(date: &str) -> Timestamp {
    Timestamp::from_micros(day_number(day(date)) * DAY + DAY / 2)
}

/// A case type of `group` (or tenant `class`) naming a suspect (police
/// contact, with a date of birth) and a victim (not contact).
fn definition(key: &str, group: &str, class: Option<&str>) -> String {
    let class = class.map_or(String::new(), |c| format!("class = \"{c}\"\n"));
    format!(
        r#"
key = "{key}"
name = "Offence {key}"
version = 1
roles = ["officer"]

[retention]
group = "{group}"
{class}
[permissions]
open = ["officer"]
update_case_file = ["officer"]

[[fields]]
key = "summary"
type = "text"

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
key = "victim_ref"
type = "person"

[[subjects]]
key = "suspect"
id = "suspect_ref"
date_of_birth = "suspect_dob"
fields = ["suspect_name"]
contact = true

[[subjects]]
key = "victim"
id = "victim_ref"

[[activities]]
key = "investigate"
name = "Investigate"
kind = "human_task"
roles = ["officer"]
"#
    )
}

struct World {
    engine: Engine,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

async fn world(at: &str) -> World {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(noon(at)));
    let engine = Engine::open_with(
        dir.path(),
        EngineConfig {
            clock: clock.clone(),
            tenants: vec![kent(), essex()],
            ..EngineConfig::default()
        },
    )
    .unwrap();
    engine.start().await.unwrap();
    for (key, group, class) in [
        ("g1", "group1", None),
        ("g2", "group2", None),
        ("g3", "group3", None),
        ("undetected", "group3", Some("undetected")),
    ] {
        for tenant in [kent(), essex()] {
            engine
                .deploy(&admin(tenant), &definition(key, group, class), Format::Toml)
                .await
                .unwrap();
        }
    }
    World {
        engine,
        clock,
        _dir: dir,
    }
}

impl World {
    fn set(&self, date: &str) {
        self.clock.set(noon(date));
    }

    /// Changes the case file of `case_id` as the officer, for `why`.
    async fn update(&self, case_id: &str, changes: casebook::rules::serde_json::Value, why: &str) {
        self.engine
            .execute(
                &officer(),
                case_id,
                CaseCommand::UpdateCaseFile {
                    changes: CaseFile::from_json(changes).unwrap(),
                },
                CommandContext::because(why),
            )
            .await
            .unwrap();
    }

    async fn open(&self, case_type: &str, case_id: &str, file: casebook::rules::serde_json::Value) {
        self.open_as(&officer(), case_type, case_id, file, None)
            .await;
    }

    async fn open_as(
        &self,
        who: &Principal,
        case_type: &str,
        case_id: &str,
        file: casebook::rules::serde_json::Value,
        marking: Option<Classification>,
    ) {
        let mut request = OpenCase::new(case_type, CaseFile::from_json(file).unwrap());
        request.case_id = Some(case_id.parse().unwrap());
        request.classification = marking;
        self.engine.open_case(who, request).await.unwrap();
    }

    async fn id(&self, reference: &str) -> SubjectId {
        self.engine
            .subject_id(&records_officer(), reference)
            .await
            .unwrap()
    }

    /// The subjects due by today, as (subject, due).
    async fn due(&self, class: Option<&str>) -> Vec<(SubjectId, Date)> {
        self.engine
            .review_due(
                &records_officer(),
                &ReviewDueQuery {
                    class: class.map(str::to_string),
                    ..ReviewDueQuery::default()
                },
            )
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|i| (i.subject, i.due))
            .collect()
    }

    async fn review(
        &self,
        subject: &SubjectId,
        decision: Decision,
        next_review: Option<&str>,
    ) -> Result<casebook::records::ReviewOutcome, RecordsError> {
        common::review(
            &self.engine,
            &records_officer(),
            subject,
            decision,
            next_review.map(day),
            "periodic MoPI review",
        )
        .await
    }

    async fn governance_events(&self, stream: casebook::log::StreamId) -> Vec<GovernanceEvent> {
        let store = self
            .engine
            .store(&Principal::platform_administrator("ops"))
            .unwrap();
        store
            .read_stream(&stream, Direction::Forward, StreamVersion::START, 10_000)
            .await
            .unwrap()
            .iter()
            .map(|e| GovernanceEvent::from_recorded(e).unwrap())
            .collect()
    }
}

/// The day before, of and after `date`.
fn around(date: &str) -> [(String, bool); 3] {
    let d = day(date);
    [
        (format_date(d.previous_day().unwrap()), false),
        (format_date(d), true),
        (format_date(d.next_day().unwrap()), true),
    ]
}

async fn assert_due_around(w: &World, subject: &SubjectId, due: &str, class: &str) {
    for (today, listed) in around(due) {
        w.set(&today);
        let found = w.due(Some(class)).await;
        assert_eq!(
            found.iter().any(|(s, _)| s == subject),
            listed,
            "{class} due {due}, today {today}: {found:?}"
        );
        if listed {
            assert!(found.contains(&(subject.clone(), day(due))), "{found:?}");
        }
    }
}

#[tokio::test]
async fn each_rule_falls_due_on_its_day_not_the_day_before() {
    let w = world("2026-03-02").await;
    w.open("g3", "G3-1", json!({"suspect_ref": "P-3"})).await;
    w.open("g2", "G2-1", json!({"suspect_ref": "P-2"})).await;
    w.open(
        "g1",
        "G1-1",
        json!({"suspect_ref": "P-1", "suspect_dob": "1990-01-01"}),
    )
    .await;
    // Shipped defaults: group 3 a 6-year clear period, group 2 10 years,
    // group 1 a review every 10 years from the first record.
    assert_due_around(&w, &w.id("P-3").await, "2032-03-02", "mopi_group_3").await;
    assert_due_around(&w, &w.id("P-2").await, "2036-03-02", "mopi_group_2").await;
    assert_due_around(&w, &w.id("P-1").await, "2036-03-02", "mopi_group_1").await;
    // The undetected class has no figure: it never falls due on its own.
    w.open("undetected", "U-1", json!({"suspect_ref": "P-9"}))
        .await;
    w.set("2126-01-01");
    assert!(w.due(Some("undetected")).await.is_empty());

    // A review's next review date is the next rule.
    w.set("2036-03-02");
    let p1 = w.id("P-1").await;
    let outcome = w.review(&p1, Decision::Retain, None).await.unwrap();
    assert_eq!(outcome.next_review, Some(day("2046-03-02")), "review_every");
    assert_due_around(&w, &p1, "2046-03-02", "mopi_group_1").await;
    w.set("2046-03-02");
    w.review(&p1, Decision::Retain, Some("2049-07-15"))
        .await
        .unwrap();
    assert_due_around(&w, &p1, "2049-07-15", "mopi_group_1").await;
    let record = w.engine.subject(&records_officer(), &p1).await.unwrap();
    assert_eq!(record.state, SubjectState::Retained);
    assert_eq!(record.cases, ["G1-1"]);
    assert_eq!(record.date_of_birth, Some(day("1990-01-01")));
    assert_eq!(record.version, 2);
}

#[tokio::test]
async fn a_group_1_subject_is_not_disposable_before_the_retain_until_age() {
    let w = world("2026-03-02").await;
    w.open(
        "g1",
        "G1-1",
        json!({"suspect_ref": "P-1", "suspect_dob": "1960-05-10"}),
    )
    .await;
    w.open("g1", "G1-2", json!({"suspect_ref": "P-NODOB"}))
        .await;
    let p1 = w.id("P-1").await;
    for today in ["2036-03-02", "2060-05-09"] {
        w.set(today);
        match w.review(&p1, Decision::Dispose, None).await {
            Err(RecordsError::RetainedUntil { age, until, .. }) => {
                assert_eq!((age, until), (100, Some(day("2060-05-10"))), "{today}");
            }
            other => panic!("{today}: {other:?}"),
        }
    }
    // Without a date of birth it is never disposable.
    w.set("2200-01-01");
    let err = w
        .review(&w.id("P-NODOB").await, Decision::Dispose, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RecordsError::RetainedUntil { until: None, .. }),
        "{err}"
    );
    assert!(matches!(err.kind(), ErrorKind::Conflict { .. }));
    w.set("2060-05-10");
    w.review(&p1, Decision::Dispose, None).await.unwrap();
    let record = w.engine.subject(&records_officer(), &p1).await.unwrap();
    assert_eq!(record.state, SubjectState::AwaitingDisposal);
    assert_eq!(record.disposable_from, Some(day("2060-05-10")));
    // Awaiting disposal: no longer listed, no further review.
    assert!(!w.due(None).await.iter().any(|(s, _)| *s == p1));
    assert!(matches!(
        w.review(&p1, Decision::Retain, None).await,
        Err(RecordsError::AwaitingDisposal { .. })
    ));
}

#[tokio::test]
async fn new_police_contact_restarts_the_clear_period() {
    let w = world("2026-03-02").await;
    w.open("g3", "A", json!({"suspect_ref": "P-7"})).await;
    let p7 = w.id("P-7").await;
    w.set("2027-01-01");
    // As a victim: not police contact, the clear period runs on.
    w.open("g3", "B", json!({"victim_ref": "P-7"})).await;
    assert_due_around(&w, &p7, "2032-03-02", "mopi_group_3").await;
    w.set("2029-06-15");
    // Named as a suspect in a later case update: new contact.
    w.open("g3", "C", json!({"summary": "shoplifting"})).await;
    w.update("C", json!({"suspect_ref": "P-7"}), "suspect identified")
        .await;
    assert_due_around(&w, &p7, "2035-06-15", "mopi_group_3").await;
    let record = w.engine.subject(&records_officer(), &p7).await.unwrap();
    assert_eq!(record.clear_period_start, day("2029-06-15"));
    assert_eq!(record.first_recorded, day("2026-03-02"));
    assert_eq!(record.cases, ["A", "B", "C"]);
}

#[tokio::test]
async fn the_policy_is_tenant_data_and_its_figures_drive_the_schedule() {
    let w = world("2026-03-02").await;
    let policy = |years: u32| {
        format!(
            "[[classes]]\nkey = \"mopi_group_3\"\nname = \"Other offences\"\nclear_period = \"P{years}Y\"\n\
             at_due = \"dispose\"\n\n[[nrac]]\nkey = \"serious_harm\"\nquestion = \"Serious harm?\"\n"
        )
    };
    w.open("g3", "A", json!({"suspect_ref": "P-1"})).await;
    let p1 = w.id("P-1").await;
    let deployed = w
        .engine
        .deploy_retention_policy(&admin(kent()), &policy(2))
        .await
        .unwrap();
    assert_eq!(deployed.version, 1);
    assert_due_around(&w, &p1, "2028-03-02", "mopi_group_3").await;
    let item = &w
        .engine
        .review_due(&records_officer(), &ReviewDueQuery::default())
        .await
        .unwrap()
        .items[0];
    assert_eq!(item.action, AtDue::Dispose, "time-based disposal");
    w.engine
        .deploy_retention_policy(&admin(kent()), &policy(3))
        .await
        .unwrap();
    assert_eq!(
        w.engine
            .retention_policy(&records_officer())
            .await
            .unwrap()
            .0,
        2
    );
    assert_due_around(&w, &p1, "2029-03-02", "mopi_group_3").await;
    // Essex still has the shipped defaults.
    let (version, essex_policy) = w
        .engine
        .retention_policy(&Principal::new(essex(), "rm-2").with_roles([RECORDS_ROLE]))
        .await
        .unwrap();
    assert_eq!(version, 0);
    assert_eq!(essex_policy.classes.len(), 4);
    // The class named by the definitions is gone from a new policy: typed.
    w.engine
        .deploy_retention_policy(
            &admin(kent()),
            "[[classes]]\nkey = \"other\"\nname = \"Other\"\nat_due = \"review\"\n",
        )
        .await
        .unwrap();
    let err = w
        .engine
        .review_due(&records_officer(), &ReviewDueQuery::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, RecordsError::ClassNotInPolicy { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn bad_input_gets_typed_errors_and_appends_nothing() {
    let w = world("2026-03-02").await;
    w.open("g3", "A", json!({"suspect_ref": "P-1"})).await;
    w.open_as(
        &officer(),
        "g3",
        "S",
        json!({"suspect_ref": "P-SECRET"}),
        Some(Classification::Secret),
    )
    .await;
    let p1 = w.id("P-1").await;
    let secret = w.id("P-SECRET").await;
    let stream = streams::governance(&kent(), p1.as_str()).unwrap();
    let store = w
        .engine
        .store(&Principal::platform_administrator("ops"))
        .unwrap();
    let kinds = |e: &RecordsError| e.kind();

    // Invalid policy: every problem with its path; a wrong name.
    let err = w
        .engine
        .deploy_retention_policy(
            &admin(kent()),
            "[[classes]]\nkey = \"a\"\nname = \"A\"\nclear_period = \"PT1H\"\nat_due = \"review\"\n\
             [[classes]]\nkey = \"a\"\nname = \"\"\nat_due = \"review\"\n",
        )
        .await
        .unwrap_err();
    let EngineError::Resource(ResourceError::Invalid { problems, .. }) = &err else {
        panic!("{err}");
    };
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "classes[0].clear_period",
            "classes[1].key",
            "classes[1].name"
        ]
    );
    let err = w
        .engine
        .deploy_resource(
            &admin(kent()),
            ResourceKind::Retention,
            "other",
            casebook::resources::retention::DEFAULT_POLICY,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::invalid("name"));
    assert!(matches!(
        w.engine
            .deploy_retention_policy(&records_officer(), "x")
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::PermissionDenied
    ));
    assert_eq!(
        w.engine
            .retention_policy(&records_officer())
            .await
            .unwrap()
            .0,
        0
    );

    // Unknown subject, above clearance, another tenant: the same answer.
    let unknown = SubjectId::parse(&format!("n{}", "0".repeat(32))).unwrap();
    for (who, subject) in [
        (records_officer(), &unknown),
        (records_officer(), &secret),
        (
            Principal::new(essex(), "rm-2").with_roles([RECORDS_ROLE]),
            &p1,
        ),
    ] {
        let err = w.engine.subject(&who, subject).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(
            err.to_string(),
            format!("no subject {subject} in tenant {}", who.tenant)
        );
        let err = w
            .engine
            .place_hold(
                &who,
                HoldTarget::Subject(subject.to_string()),
                HoldKind::Litigation,
                "claim",
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    }
    w.set("2040-01-01");
    let listed: Vec<SubjectId> = w.due(None).await.into_iter().map(|(s, _)| s).collect();
    assert_eq!(
        listed,
        std::slice::from_ref(&p1),
        "the SECRET subject is not listed"
    );
    let cleared = Principal::new(kent(), "rm-3")
        .with_roles([RECORDS_ROLE])
        .with_clearance(Classification::Secret);
    let all = w
        .engine
        .review_due(&cleared, &ReviewDueQuery::default())
        .await
        .unwrap();
    assert_eq!(all.items.len(), 2);
    assert_eq!(all.total, Some(2));
    let page = w
        .engine
        .review_due(
            &cleared,
            &ReviewDueQuery {
                page: PageRequest {
                    offset: 1,
                    limit: 1,
                },
                ..ReviewDueQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((page.items.len(), page.next_offset), (1, None));

    // Malformed id, unknown class, no role.
    assert_eq!(
        SubjectId::parse("P-1").unwrap_err().kind(),
        ErrorKind::invalid("subject")
    );
    let err = w
        .engine
        .review_due(
            &records_officer(),
            &ReviewDueQuery {
                class: Some("group_9".into()),
                ..ReviewDueQuery::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RecordsError::UnknownClass { .. }), "{err}");
    assert_eq!(kinds(&err), ErrorKind::invalid("class"));
    let err = w
        .engine
        .review_due(&officer(), &ReviewDueQuery::default())
        .await
        .unwrap_err();
    assert_eq!(kinds(&err), ErrorKind::PermissionDenied);
    assert!(matches!(
        w.engine.subject_id(&officer(), "P-1").await,
        Err(RecordsError::Forbidden { .. })
    ));

    // A review with every problem listed.
    let err = w
        .engine
        .review_subject(
            &records_officer(),
            ReviewSubject {
                subject: p1.clone(),
                reviewer_role: " ".into(),
                nrac: vec![NracAnswer {
                    question: "astrology".into(),
                    answer: true,
                    rationale: "stars".into(),
                }],
                decision: Decision::Dispose,
                next_review: Some(day("2030-01-01")),
                rationale: String::new(),
                expected_version: None,
            },
        )
        .await
        .unwrap_err();
    let ErrorKind::InvalidArgument { paths } = err.kind() else {
        panic!("{err}");
    };
    assert_eq!(
        paths[..3],
        ["reviewer_role", "rationale", "nrac[0].question"]
    );
    assert_eq!(paths.iter().filter(|p| *p == "nrac").count(), 6);
    assert_eq!(paths.last().map(String::as_str), Some("next_review"));
    // A past next review date.
    let err = w
        .review(&p1, Decision::Retain, Some("2039-12-31"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::invalid("next_review"));

    // Wrong version.
    let mut review = ReviewSubject {
        subject: p1.clone(),
        reviewer_role: "reviewing officer".into(),
        nrac: Vec::new(),
        decision: Decision::Retain,
        next_review: None,
        rationale: "r".into(),
        expected_version: Some(3),
    };
    let (_, policy) = w.engine.retention_policy(&records_officer()).await.unwrap();
    review.nrac = policy
        .nrac
        .iter()
        .map(|q| NracAnswer {
            question: q.key.clone(),
            answer: false,
            rationale: "none".into(),
        })
        .collect();
    review.next_review = Some(day("2041-01-01"));
    let err = w
        .engine
        .review_subject(&records_officer(), review.clone())
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        RecordsError::WrongVersion {
            expected: 3,
            actual: 0,
            ..
        }
    ));
    assert_eq!(
        err.kind(),
        ErrorKind::Conflict {
            actual_version: Some(0)
        }
    );
    // Unknown hold, bad reason.
    assert_eq!(
        w.engine
            .release_hold(&records_officer(), "no-such-hold", "done")
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        w.engine
            .place_hold(
                &records_officer(),
                HoldTarget::Case("A".into()),
                HoldKind::Inquiry,
                ""
            )
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::invalid("reason")
    );
    assert_eq!(
        w.engine
            .place_hold(
                &records_officer(),
                HoldTarget::Case("NOPE".into()),
                HoldKind::Inquiry,
                "inquiry"
            )
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    // Nothing of all that reached the log.
    assert_eq!(store.stream_version(&stream).await.unwrap(), None);
    assert_eq!(
        store
            .stream_version(&streams::case_hold(&kent(), "A").unwrap())
            .await
            .unwrap(),
        None
    );
    // The right version goes through, and is recorded with its answers.
    review.expected_version = Some(0);
    w.engine
        .review_subject(&records_officer(), review)
        .await
        .unwrap();
    let events = w.governance_events(stream).await;
    let [GovernanceEvent::SubjectReviewed {
        reviewer,
        decision,
        nrac,
        next_review,
        ..
    }] = &events[..]
    else {
        panic!("{events:?}");
    };
    assert_eq!(
        (reviewer.as_str(), *decision, nrac.len(), *next_review),
        (
            "rm-1",
            Decision::Retain,
            6,
            Some(day_number(day("2041-01-01")))
        )
    );
}

#[tokio::test]
async fn holds_on_a_case_or_a_subject_block_disposal_until_released() {
    let w = world("2026-03-02").await;
    w.open("g3", "A", json!({"suspect_ref": "P-1"})).await;
    let p1 = w.id("P-1").await;
    w.set("2033-01-01");
    let case_hold = w
        .engine
        .place_hold(
            &records_officer(),
            HoldTarget::Case("A".into()),
            HoldKind::Disclosure,
            "CPIA disclosure in R v X",
        )
        .await
        .unwrap();
    let subject_hold = w
        .engine
        .place_hold(
            &records_officer(),
            HoldTarget::Subject(p1.to_string()),
            HoldKind::Litigation,
            "civil claim",
        )
        .await
        .unwrap();
    let item = &w
        .engine
        .review_due(&records_officer(), &ReviewDueQuery::default())
        .await
        .unwrap()
        .items[0];
    assert!(item.held);
    let err = w.review(&p1, Decision::Dispose, None).await.unwrap_err();
    let RecordsError::UnderHold { holds, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(holds.len(), 2);
    w.engine
        .release_hold(&records_officer(), &subject_hold.id, "claim settled")
        .await
        .unwrap();
    assert!(matches!(
        w.engine
            .release_hold(&records_officer(), &subject_hold.id, "again")
            .await,
        Err(RecordsError::HoldReleased { .. })
    ));
    assert!(matches!(
        w.review(&p1, Decision::Dispose, None).await,
        Err(RecordsError::UnderHold { .. })
    ));
    w.engine
        .release_hold(&records_officer(), &case_hold.id, "trial over")
        .await
        .unwrap();
    w.review(&p1, Decision::Dispose, None).await.unwrap();
    // A hold on a record awaiting disposal restricts it instead.
    w.engine
        .place_hold(
            &records_officer(),
            HoldTarget::Case("A".into()),
            HoldKind::Inquiry,
            "public inquiry moratorium",
        )
        .await
        .unwrap();
    let record = w.engine.subject(&records_officer(), &p1).await.unwrap();
    assert_eq!(record.state, SubjectState::Restricted);
    assert_eq!(record.holds.len(), 1);
}

#[derive(Debug, Clone)]
enum Op {
    HoldSubject,
    HoldCase,
    Release(usize),
    Dispose,
    Retain,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::HoldSubject),
        Just(Op::HoldCase),
        (0usize..4).prop_map(Op::Release),
        Just(Op::Dispose),
        Just(Op::Dispose),
        Just(Op::Retain),
    ]
}

/// Runs `ops`; returns the number of holds in force after each step and
/// whether each dispose attempt was accepted.
async fn run_holds(ops: Vec<Op>) {
    let w = world("2026-03-02").await;
    w.open("g3", "A", json!({"suspect_ref": "P-1"})).await;
    let p1 = w.id("P-1").await;
    w.set("2040-01-01");
    let mut active: Vec<String> = Vec::new();
    for op in ops {
        match op {
            Op::HoldSubject | Op::HoldCase => {
                let target = match op {
                    Op::HoldSubject => HoldTarget::Subject(p1.to_string()),
                    _ => HoldTarget::Case("A".into()),
                };
                let hold = w
                    .engine
                    .place_hold(&records_officer(), target, HoldKind::Investigation, "x")
                    .await
                    .unwrap();
                active.push(hold.id);
            }
            Op::Release(i) if !active.is_empty() => {
                let id = active.remove(i % active.len());
                w.engine
                    .release_hold(&records_officer(), &id, "done")
                    .await
                    .unwrap();
            }
            Op::Release(_) => {}
            Op::Dispose | Op::Retain => {
                let decision = match op {
                    Op::Dispose => Decision::Dispose,
                    _ => Decision::Retain,
                };
                let next = (decision == Decision::Retain).then_some("2045-01-01");
                let state = w
                    .engine
                    .subject(&records_officer(), &p1)
                    .await
                    .unwrap()
                    .state;
                match w.review(&p1, decision, next).await {
                    Ok(_) => assert!(
                        decision != Decision::Dispose || active.is_empty(),
                        "disposed under {active:?}"
                    ),
                    Err(RecordsError::UnderHold { holds, .. }) => {
                        assert_eq!(holds.len(), active.len());
                        assert!(!active.is_empty());
                    }
                    Err(RecordsError::AwaitingDisposal { .. }) => {
                        assert_eq!(state, SubjectState::AwaitingDisposal);
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
        let record = w.engine.subject(&records_officer(), &p1).await.unwrap();
        assert_eq!(record.holds.len(), active.len());
        if !active.is_empty() {
            assert_ne!(record.state, SubjectState::AwaitingDisposal);
        }
    }
    // The log itself: replayed in order, no dispose decision while a hold
    // was in force.
    let store = w
        .engine
        .store(&Principal::platform_administrator("ops"))
        .unwrap();
    let mut events = Vec::new();
    for stream in [
        streams::governance(&kent(), p1.as_str()).unwrap(),
        streams::case_hold(&kent(), "A").unwrap(),
    ] {
        for e in store
            .read_stream(&stream, Direction::Forward, StreamVersion::START, 10_000)
            .await
            .unwrap()
            .iter()
        {
            events.push((e.position, GovernanceEvent::from_recorded(e).unwrap()));
        }
    }
    events.sort_by_key(|(p, _)| *p);
    let mut held = std::collections::BTreeSet::new();
    for (_, e) in events {
        match e {
            GovernanceEvent::HoldPlaced { hold, .. } => {
                held.insert(hold);
            }
            GovernanceEvent::HoldReleased { hold, .. } => {
                held.remove(&hold);
            }
            GovernanceEvent::SubjectReviewed { decision, .. } => {
                assert!(decision != Decision::Dispose || held.is_empty());
            }
            // An erasure under a hold is refused (restriction instead).
            GovernanceEvent::SubjectErased { .. } => assert!(held.is_empty()),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn nothing_is_disposed_while_a_hold_is_in_force(ops in prop::collection::vec(op(), 1..14)) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(run_holds(ops));
    }
}

#[tokio::test]
async fn queries_are_audited() {
    let w = world("2026-03-02").await;
    w.open("g3", "A", json!({"suspect_ref": "P-1"})).await;
    w.due(None).await;
    let p1 = w.id("P-1").await;
    w.engine.subject(&records_officer(), &p1).await.unwrap();
    let auditor = Principal::new(kent(), "aud-1")
        .with_roles([casebook::audit::AUDITOR_ROLE])
        .with_clearance(Classification::TopSecret);
    let page = w
        .engine
        .audit_entries(
            &auditor,
            &casebook::audit::AuditQuery {
                from: noon("2026-03-01"),
                to: noon("2026-03-03"),
                case_id: None,
                subject: Some("rm-1".into()),
                limit: 100,
                after: None,
            },
        )
        .await
        .unwrap();
    let reads: Vec<&str> = page.entries.iter().map(|e| e.read.as_str()).collect();
    assert!(
        reads.contains(&"review_due") && reads.contains(&"subject"),
        "{reads:?}"
    );
}

#[test]
fn retention_md_lists_every_shipped_default_with_its_status_and_its_example_parses() {
    use casebook::resources::retention::RetentionPolicy;
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/RETENTION.md")).unwrap();
    let policy = RetentionPolicy::defaults();
    assert!(!policy.classes.is_empty());
    for class in &policy.classes {
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{}`", class.key)))
            .unwrap_or_else(|| panic!("docs/RETENTION.md has no row for {}", class.key));
        let status = class.status.as_deref().unwrap_or_default();
        assert!(
            row.contains(status),
            "{}: status {status:?} not in {row}",
            class.key
        );
        for (rule, value) in [
            (
                "retain_until_age",
                class.retain_until_age.map(|a| a.to_string()),
            ),
            (
                "review_every",
                class
                    .review_every
                    .as_ref()
                    .map(|p| format!("\"{}\"", p.as_str())),
            ),
            (
                "clear_period",
                class
                    .clear_period
                    .as_ref()
                    .map(|p| format!("\"{}\"", p.as_str())),
            ),
        ] {
            let written = value.map(|v| format!("`{rule} = {v}`"));
            match written {
                Some(w) => assert!(row.contains(&w), "{}: {w} not in {row}", class.key),
                None => assert!(!row.contains(&format!("`{rule}")), "{}: {rule}", class.key),
            }
        }
        assert!(
            row.contains(&format!("`at_due = \"{}\"`", class.at_due.as_str()))
                || class.retain_until_age.is_none()
                    && class.review_every.is_none()
                    && class.clear_period.is_none(),
            "{}: at_due",
            class.key
        );
        assert!(
            status.contains("to be checked against the College of Policing APP review schedule"),
            "{}: every shipped figure is to be checked",
            class.key
        );
    }
    for q in &policy.nrac {
        assert!(
            doc.contains(&format!("`{}`", q.key)),
            "NRAC question {}",
            q.key
        );
    }
    let example = doc
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a TOML example");
    let parsed = RetentionPolicy::parse(example).expect("the example is a valid policy");
    assert_eq!(parsed.classes.len(), 1);
}

#[tokio::test]
async fn a_dispose_decision_landing_after_a_concurrent_case_hold_restricts_instead() {
    use casebook::log::{ActorId, ExpectedVersion, Metadata, Source};
    let w = world("2026-03-02").await;
    w.open("g3", "A", json!({"suspect_ref": "P-1"})).await;
    // The suspect named in A changes: P-1 keeps its appearance.
    w.update("A", json!({"suspect_ref": "P-2"}), "wrong person named")
        .await;
    let p1 = w.id("P-1").await;
    w.set("2040-01-01");
    let store = w
        .engine
        .store(&Principal::platform_administrator("ops"))
        .unwrap();
    let meta = || Metadata::new(ActorId::new("rm-1"), Source::system("casebook"));
    // As two officers deciding at once would leave it: a case hold, then a
    // dispose decision taken before the hold was seen.
    let hold = GovernanceEvent::HoldPlaced {
        hold: "0192f6a0-0000-7000-8000-000000000001".into(),
        target: HoldTarget::Case("A".into()),
        kind: HoldKind::Litigation,
        reason: "claim".into(),
        placed_by: "rm-2".into(),
        day: day_number(day("2040-01-01")),
    };
    store
        .append(
            &streams::case_hold(&kent(), "A").unwrap(),
            ExpectedVersion::Any,
            vec![hold.to_event_data(meta()).unwrap()],
        )
        .await
        .unwrap();
    let dispose = GovernanceEvent::SubjectReviewed {
        reviewer: "rm-1".into(),
        reviewer_role: "reviewing officer".into(),
        day: day_number(day("2040-01-01")),
        class: "mopi_group_3".into(),
        policy_version: 0,
        clear_period_start: day_number(day("2026-03-02")),
        nrac: Vec::new(),
        decision: Decision::Dispose,
        next_review: None,
        holds: Vec::new(),
        rationale: "no longer necessary".into(),
    };
    store
        .append(
            &streams::governance(&kent(), p1.as_str()).unwrap(),
            ExpectedVersion::NoStream,
            vec![dispose.to_event_data(meta()).unwrap()],
        )
        .await
        .unwrap();
    let record = w.engine.subject(&records_officer(), &p1).await.unwrap();
    assert_eq!(record.state, SubjectState::Restricted);
    assert_eq!(record.holds.len(), 1);
    assert_eq!(record.cases, ["A"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_of_subjects_is_rebuilt_from_the_log_unchanged() {
    let w = world("2026-03-02").await;
    w.open(
        "g1",
        "A",
        json!({"suspect_ref": "P-1", "suspect_dob": "1970-01-02"}),
    )
    .await;
    w.open(
        "g3",
        "B",
        json!({"suspect_ref": "P-2", "victim_ref": "P-1"}),
    )
    .await;
    w.set("2033-05-01");
    w.open("g3", "C", json!({"suspect_ref": "P-2"})).await;
    let (p1, p2) = (w.id("P-1").await, w.id("P-2").await);
    w.engine
        .place_hold(
            &records_officer(),
            HoldTarget::Case("B".into()),
            HoldKind::Investigation,
            "operation",
        )
        .await
        .unwrap();
    w.set("2036-03-02");
    w.review(&p1, Decision::Retain, None).await.unwrap();
    w.set("2060-01-01");
    let snapshot = |w: &World| {
        let engine = w.engine.clone();
        let (p1, p2) = (p1.clone(), p2.clone());
        async move {
            let a = engine.subject(&records_officer(), &p1).await.unwrap();
            let b = engine.subject(&records_officer(), &p2).await.unwrap();
            let due = engine
                .review_due(&records_officer(), &ReviewDueQuery::default())
                .await
                .unwrap()
                .items;
            (a, b, due)
        }
    };
    let before = snapshot(&w).await;
    assert_eq!(before.0.cases, ["A", "B"]);
    assert_eq!(before.0.class, "mopi_group_1", "the most serious class");
    assert_eq!(before.1.clear_period_start, day("2033-05-01"));
    assert_eq!(before.2.len(), 2);
    let generation = |w: &World| {
        let engine = w.engine.clone();
        async move {
            engine
                .projection_status(&admin(kent()))
                .await
                .unwrap()
                .into_iter()
                .find(|s| s.projection == "nominals")
                .map(|s| (s.generation, s.rebuild.is_none()))
                .unwrap()
        }
    };
    let (old, _) = generation(&w).await;
    w.engine
        .rebuild_projection(&admin(kent()), "nominals")
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (now, settled) = generation(&w).await;
        if now != old && settled {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rebuild never swapped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(snapshot(&w).await, before);
}
