//! The case runtime end to end: each bundled definition walked from open to
//! close, with a discretionary activity and sentries firing, replay checked
//! against the incrementally built state. Every command also runs through an
//! `Engine` on the embedded durable store (a temp dir), which must accept and
//! reject the same commands, produce the same events and end in the same
//! state as the pure runtime.

use std::path::PathBuf;

use casebook_engine::case::{
    decide, CaseCommand, CaseError, CaseEvent, CaseFile, CaseState, CaseStatus, DeadlineDue,
    EntityRole, ItemRef, PoleKind, PoleRef, ADMIN_ROLE, SYSTEM_ROLE,
};
use casebook_engine::definition::{CaseDefinition, Format};
use casebook_engine::engine::{CommandContext, EngineError, OpenCase};
use casebook_engine::log::codec::DomainEvent;
use casebook_engine::log::{ActorId, Metadata, Source, TenantId, Timestamp};
use casebook_engine::rules::serde_json::{json, Value};
use casebook_engine::rules::ItemState;
use casebook_engine::security::{Classification, Principal};
use casebook_engine::Engine;

/// The tenants these tests use, registered when the engine first needs its
/// tenant registry (calls for any other tenant are refused).
fn registered() -> casebook_engine::engine::EngineConfig {
    casebook_engine::engine::EngineConfig::with_tenants(
        ["kent", "essex"].map(|t| TenantId::new(t).expect("valid tenant")),
    )
}

const NOW: Timestamp = Timestamp(1_767_603_600_000_000);

fn load(name: &str) -> CaseDefinition {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples/definitions")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("definition file");
    CaseDefinition::from_toml(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn officer(subject: &str, roles: &[&str], clearance: Classification) -> Principal {
    Principal::new(TenantId::new("kent").unwrap(), subject)
        .with_roles(roles.iter().copied())
        .with_clearance(clearance)
}

fn obj(v: Value) -> CaseFile {
    CaseFile::from_json(v).unwrap()
}

fn file(v: Value) -> CaseFile {
    obj(v)
}

/// The same case worked through an `Engine` on the embedded store.
struct Mirror {
    rt: tokio::runtime::Runtime,
    engine: Engine,
    _dir: tempfile::TempDir,
}

const CASE_ID: &str = "CASE-1";

impl Mirror {
    fn new(def: &CaseDefinition) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = Engine::open_with(dir.path(), registered()).expect("open engine");
        rt.block_on(engine.start()).expect("start engine");
        let admin = officer("admin", &["administrator"], Classification::Official);
        // Deployed in its canonical JSON form, so modified copies work too.
        let json = casebook_engine::rules::serde_json::to_string(def).expect("json");
        rt.block_on(engine.deploy(&admin, &json, Format::Json))
            .expect("deploy");
        Mirror {
            rt,
            engine,
            _dir: dir,
        }
    }

    fn run(
        &self,
        def: &CaseDefinition,
        who: &Principal,
        cmd: CaseCommand,
    ) -> Result<Vec<CaseEvent>, EngineError> {
        let context = CommandContext::because("case_runtime walk");
        let outcome = match cmd {
            CaseCommand::Open {
                case_file,
                classification,
            } => {
                let mut open = OpenCase::new(def.key.as_str(), case_file);
                open.version = Some(def.version);
                open.case_id = Some(CASE_ID.parse().expect("case id"));
                open.classification = classification;
                open.context = context;
                self.rt.block_on(self.engine.open_case(who, open))
            }
            cmd => self
                .rt
                .block_on(self.engine.execute(who, CASE_ID, cmd, context)),
        };
        outcome.map(|o| o.events)
    }
}

/// A case being worked: its definition, state and full event log.
struct Case {
    def: CaseDefinition,
    state: CaseState,
    log: Vec<CaseEvent>,
    mirror: Mirror,
}

impl Case {
    fn new(def: CaseDefinition) -> Self {
        Case {
            mirror: Mirror::new(&def),
            def,
            state: CaseState::default(),
            log: Vec::new(),
        }
    }

    fn try_run(&mut self, who: &Principal, cmd: CaseCommand) -> Result<Vec<CaseEvent>, CaseError> {
        let label = format!("{cmd:?}");
        let mirrored = self.mirror.run(&self.def, who, cmd.clone());
        let events = decide(&self.def, &self.state, who, cmd, NOW);
        match (&events, &mirrored) {
            // Timestamps differ (the engine uses the clock), the facts do not.
            (Ok(pure), Ok(engine)) => assert_eq!(
                pure.iter().map(CaseEvent::type_name).collect::<Vec<_>>(),
                engine.iter().map(CaseEvent::type_name).collect::<Vec<_>>(),
                "{label}: the engine appended other events"
            ),
            (Err(_), Err(_)) => {}
            (pure, engine) => panic!("{label}: pure runtime {pure:?}, engine {engine:?}"),
        }
        let events = events?;
        for e in &events {
            self.state.apply(&self.def, e).expect("apply");
        }
        self.log.extend(events.iter().cloned());
        Ok(events)
    }

    #[track_caller]
    fn run(&mut self, who: &Principal, cmd: CaseCommand) -> Vec<CaseEvent> {
        let label = format!("{cmd:?}");
        self.try_run(who, cmd)
            .unwrap_or_else(|e| panic!("{label}: {e}"))
    }

    fn complete(&mut self, who: &Principal, item: &str, outputs: Value) -> Vec<CaseEvent> {
        self.run(
            who,
            CaseCommand::Complete {
                item: ItemRef::key(item),
                outputs: obj(outputs),
            },
        )
    }

    fn state_of(&self, item: &str) -> Option<ItemState> {
        self.state.state_of(item)
    }

    /// Replaying the log reproduces the state, every event survives the
    /// log codec, and the state survives a JSON snapshot.
    fn check_replay(&self) {
        let replayed = CaseState::replay(&self.def, &self.log).expect("replay");
        assert_eq!(replayed, self.state);
        // The engine's durable copy ends in the same plan and status.
        let reader = officer("auditor", &[], Classification::TopSecret);
        let stored = self
            .mirror
            .rt
            .block_on(self.mirror.engine.load(&reader, CASE_ID))
            .expect("load from the embedded store");
        assert_eq!(stored.state.status, self.state.status);
        assert_eq!(stored.state.plan_state(), self.state.plan_state());
        assert_eq!(stored.state.case_file_json(), self.state.case_file_json());
        for e in &self.log {
            let meta = Metadata::new(ActorId::new("test"), Source::system("case_runtime"));
            let data = e.to_event_data(meta).expect("encode");
            let back = CaseEvent::decode_payload(&data.event_type, &data.payload).expect("decode");
            assert_eq!(&back, e);
        }
        let snapshot =
            casebook_engine::rules::serde_json::to_string(&self.state).expect("snapshot");
        let restored: CaseState =
            casebook_engine::rules::serde_json::from_str(&snapshot).expect("restore");
        assert_eq!(restored, self.state);
    }
}

fn reached(events: &[CaseEvent], milestone: &str) -> bool {
    events
        .iter()
        .any(|e| matches!(e, CaseEvent::MilestoneReached { item, .. } if item == milestone))
}

#[test]
fn burglary_from_report_to_closure() {
    let mut case = Case::new(load("burglary.toml"));
    let o = Classification::Official;
    let call_handler = officer("ch-1", &["call_handler", "dispatcher"], o);
    let response = officer("pc-1", &["response_officer"], o);
    let investigator = officer("dc-1", &["investigator"], o);
    let csi = officer("csi-1", &["csi"], o);
    let victim_care = officer("vc-1", &["victim_care"], o);
    let supervisor = officer("ps-1", &["supervisor"], o);
    let system = officer("orchestrator", &[SYSTEM_ROLE, ADMIN_ROLE], o);

    case.run(
        &call_handler,
        CaseCommand::Open {
            case_file: file(json!({
                "reported_at": "2026-01-05T08:50:00Z",
                "incident_location": "L-100",
                "incident_point": { "lat": 51.28, "lon": 1.08 },
                "premises_type": "dwelling",
                "victim": "P-1",
                "victim_vulnerable": false,
            })),
            classification: None,
        },
    );
    assert_eq!(case.state_of("record_report"), Some(ItemState::Active));
    assert_eq!(case.state_of("attendance"), Some(ItemState::Available));
    case.run(
        &call_handler,
        CaseCommand::LinkEntity {
            entity: PoleRef {
                kind: PoleKind::Person,
                id: "P-1".into(),
            },
            role: EntityRole::Victim,
        },
    );

    // Recording the report fires four sentries: the GIS lookup (its
    // condition holds), the grading table's suggestion, the automatic
    // entitlement step and grading.
    case.complete(
        &call_handler,
        "record_report",
        json!({ "offenders_on_scene": false }),
    );
    assert_eq!(case.state_of("locate"), Some(ItemState::Active));
    assert_eq!(
        case.state_of("assess_entitlement"),
        Some(ItemState::Completed)
    );
    assert_eq!(
        case.state.case_file.get("enhanced_service"),
        Some(&json!(false))
    );
    assert_eq!(case.state_of("grade_incident"), Some(ItemState::Active));
    case.complete(
        &system,
        "locate",
        json!({ "ward": "Westgate", "beat": "C3" }),
    );
    assert_eq!(case.state_of("suggest_grade"), Some(ItemState::Active));
    case.complete(
        &system,
        "suggest_grade",
        json!({ "grade": "priority", "attend_within_minutes": 60 }),
    );
    assert_eq!(
        case.state.case_file.get("suggested_grade"),
        Some(&json!("priority"))
    );
    // No email address for the victim: no acknowledgement is sent.
    assert_eq!(
        case.state_of("acknowledge_victim"),
        Some(ItemState::Available)
    );

    let events = case.complete(
        &call_handler,
        "grade_incident",
        json!({ "grade": "priority" }),
    );
    assert!(reached(&events, "graded"));
    assert_eq!(case.state_of("report"), Some(ItemState::Completed));
    assert_eq!(case.state_of("attend_scene"), Some(ItemState::Active));
    // The priority attendance target started with the activity.
    assert!(case
        .state
        .deadlines
        .iter()
        .any(|d| d.deadline == "attend_priority"
            && d.due
                == DeadlineDue::At {
                    due: Timestamp(NOW.0 + 3_600_000_000)
                }));
    assert!(!case
        .state
        .deadlines
        .iter()
        .any(|d| d.deadline == "attend_immediate"));

    case.complete(
        &response,
        "attend_scene",
        json!({
            "attended_at": "2026-01-05T09:40:00Z",
            "entry_method": "forced_window",
            "forensic_opportunity": true,
            "victim_contact": "phone",
        }),
    );
    assert_eq!(case.state_of("attendance"), Some(ItemState::Completed));
    assert_eq!(case.state_of("investigation"), Some(ItemState::Active));
    assert_eq!(case.state_of("record_crime"), Some(ItemState::Active));
    assert_eq!(case.state_of("agree_update_plan"), Some(ItemState::Active));

    // Discretionary work: forensics (its applicability holds) and
    // house-to-house; a response officer may not plan them.
    assert!(matches!(
        case.try_run(
            &response,
            CaseCommand::AddDiscretionary {
                item: "forensic_examination".into(),
                stage: None
            }
        ),
        Err(CaseError::Forbidden { .. })
    ));
    case.run(
        &investigator,
        CaseCommand::AddDiscretionary {
            item: "forensic_examination".into(),
            stage: Some("investigation".into()),
        },
    );
    case.run(
        &investigator,
        CaseCommand::AddDiscretionary {
            item: "house_to_house".into(),
            stage: None,
        },
    );
    assert_eq!(
        case.state_of("forensic_examination"),
        Some(ItemState::Active)
    );

    case.complete(
        &system,
        "record_crime",
        json!({ "crime_number": "CR/0001/26" }),
    );
    let events = case.complete(&investigator, "investigate", json!({ "suspect": "P-9" }));
    assert!(
        reached(&events, "suspect_identified"),
        "a field-change sentry fires"
    );
    case.complete(&csi, "forensic_examination", json!({}));
    case.complete(&response, "house_to_house", json!({}));
    case.complete(&victim_care, "agree_update_plan", json!({}));
    assert_eq!(case.state_of("victim_update"), Some(ItemState::Available));
    assert!(case
        .state
        .instances("victim_update")
        .any(|i| i.state == ItemState::Enabled));

    let events = case.complete(
        &investigator,
        "decide_outcome",
        json!({ "outcome": "charged" }),
    );
    assert!(reached(&events, "charged"));
    assert!(!reached(&events, "no_further_action"));
    assert_eq!(case.state_of("investigation"), Some(ItemState::Completed));
    assert!(case
        .state
        .deadlines
        .iter()
        .any(|d| d.deadline == "victims_code_standard"
            && d.due == DeadlineDue::WorkingDays { days: 5, from: NOW }));

    let events = case.complete(&victim_care, "inform_victim_of_outcome", json!({}));
    assert!(events.contains(&CaseEvent::CaseCompleted {}));
    assert_eq!(case.state.status, CaseStatus::Completed);
    assert!(
        case.state.deadlines.is_empty(),
        "{:?}",
        case.state.deadlines
    );

    case.run(
        &supervisor,
        CaseCommand::Close {
            reason: Some("charged".into()),
        },
    );
    assert_eq!(case.state.status, CaseStatus::Closed);
    assert!(case.state.items.iter().all(|i| i.is_terminal()));
    case.check_replay();
}

#[test]
fn missing_person_high_risk_escalation_to_closure() {
    let mut case = Case::new(load("missing-person.toml"));
    let os = Classification::OfficialSensitive;
    let call_handler = officer("ch-1", &["call_handler"], os);
    let response = officer("pc-1", &["response_officer"], os);
    let supervisor = officer("ps-1", &["supervisor"], Classification::Secret);
    // The high-risk response is entered on the SECRET vulnerabilities, so
    // the inspector who runs it is SC-cleared (see docs/markings.md).
    let inspector = officer("insp-1", &["duty_inspector"], Classification::Secret);
    let system = officer(
        "orchestrator",
        &[SYSTEM_ROLE, ADMIN_ROLE],
        Classification::Secret,
    );

    // The case is OFFICIAL-SENSITIVE: an NPPV1 (OFFICIAL) officer cannot open it.
    let nppv1 = officer("ch-2", &["call_handler"], Classification::Official);
    let opening = CaseCommand::Open {
        case_file: file(json!({
            "missing_person": "P-20",
            "reporting_person": "P-21",
            "last_seen_at": "2026-01-05T07:00:00Z",
            "age": 15,
            "circumstances": "Did not return from school",
        })),
        classification: None,
    };
    assert!(matches!(
        case.try_run(&nppv1, opening.clone()),
        Err(CaseError::InsufficientClearance { .. })
    ));
    case.run(&call_handler, opening);
    assert_eq!(
        case.state_of("high_risk_response"),
        Some(ItemState::Available)
    );

    // Vulnerabilities are SECRET: the response officer may not record them,
    // and does not see them once the supervisor has.
    let vulnerable = CaseCommand::UpdateCaseFile {
        changes: file(json!({ "vulnerabilities": ["child_exploitation"] })),
    };
    assert!(matches!(
        case.try_run(&response, vulnerable.clone()),
        Err(CaseError::InsufficientClearance { .. })
    ));
    // The condition-only entry criterion fires on the case-file change.
    case.run(&supervisor, vulnerable);
    assert_eq!(case.state_of("high_risk_response"), Some(ItemState::Active));
    assert_eq!(
        case.state_of("notify_control_room"),
        Some(ItemState::Active)
    );
    let view = case.state.view_for(&case.def, &response).unwrap();
    assert!(!view.case_file.contains_key("vulnerabilities"));
    // Nor the stage the vulnerabilities started, nor what it holds.
    assert!(view
        .items
        .iter()
        .all(|i| !["high_risk_response", "notify_control_room"].contains(&i.item.as_str())));
    assert!(case
        .state
        .view_for(&case.def, &supervisor)
        .unwrap()
        .case_file
        .contains_key("vulnerabilities"));

    case.complete(&call_handler, "record_report", json!({}));
    let events = case.complete(
        &response,
        "thrive_assessment",
        json!({
            "thrive_threat": "exploitation",
            "thrive_harm": "serious",
            "thrive_vulnerability": "child",
            "thrive_engagement": "none",
            "risk_level": "high",
        }),
    );
    assert!(reached(&events, "risk_assessed"));
    assert_eq!(case.state_of("search"), Some(ItemState::Active));
    assert_eq!(case.state_of("circulate_on_pnc"), Some(ItemState::Active));
    // Repeatable with entry criteria: a fresh instance waits for a change.
    assert_eq!(
        case.state_of("thrive_assessment"),
        Some(ItemState::Available)
    );

    case.run(
        &inspector,
        CaseCommand::AddDiscretionary {
            item: "media_appeal".into(),
            stage: None,
        },
    );
    case.complete(&system, "circulate_on_pnc", json!({}));
    case.complete(&system, "notify_control_room", json!({}));
    case.complete(&inspector, "appoint_search_advisor", json!({}));
    let events = case.complete(&supervisor, "supervisor_review_task", json!({}));
    assert!(reached(&events, "supervisor_review"));
    assert!(events.iter().any(
        |e| matches!(e, CaseEvent::DeadlineMet { deadline, .. } if deadline == "daily_review")
    ));
    case.complete(&inspector, "media_appeal", json!({}));
    assert_eq!(
        case.state_of("high_risk_response"),
        Some(ItemState::Completed)
    );

    // A search, then the person is found: the search stage exits and closure starts.
    case.run(
        &response,
        CaseCommand::Start {
            item: ItemRef::key("search_area"),
        },
    );
    case.complete(&response, "search_area", json!({ "search_areas": ["L-5"] }));
    assert_eq!(case.state_of("search_area"), Some(ItemState::Enabled));
    case.run(
        &response,
        CaseCommand::Start {
            item: ItemRef::key("record_found"),
        },
    );
    let events = case.complete(
        &response,
        "record_found",
        json!({ "found": true, "found_at": "2026-01-05T18:00:00Z", "found_safe": true }),
    );
    assert_eq!(case.state_of("search"), Some(ItemState::Terminated));
    assert_eq!(case.state_of("closure"), Some(ItemState::Active));
    assert!(reached(&events, "found_milestone"));

    let events = case.complete(&response, "prevention_interview", json!({}));
    assert!(events.contains(&CaseEvent::CaseCompleted {}));
    case.run(&inspector, CaseCommand::Close { reason: None });
    assert_eq!(case.state.status, CaseStatus::Closed);
    case.check_replay();
}

#[test]
fn domestic_abuse_high_risk_goes_to_marac() {
    let mut case = Case::new(load("domestic-abuse.toml"));
    let os = Classification::OfficialSensitive;
    let response = officer("pc-1", &["response_officer"], os);
    let supervisor = officer("ps-1", &["supervisor"], os);
    let ppo = officer("ppo-1", &["public_protection_officer"], os);
    let investigator = officer("dc-1", &["investigator"], os);
    let system = officer("orchestrator", &[SYSTEM_ROLE, ADMIN_ROLE], os);

    case.run(
        &response,
        CaseCommand::Open {
            case_file: file(json!({
                "victim": "P-30",
                "incident_location": "L-30",
                "children_present": false,
                "relationship": "partner",
            })),
            classification: None,
        },
    );
    // Victim details are OFFICIAL-SENSITIVE: hidden from an OFFICIAL reader,
    // and so is the plan, which follows the OFFICIAL-SENSITIVE risk grading.
    let official = officer("pcso-1", &["response_officer"], Classification::Official);
    let view = case.state.view_for(&case.def, &official).unwrap();
    assert!(!view.case_file.contains_key("victim"));
    assert!(view.case_file.contains_key("relationship"));
    assert!(view.items.is_empty(), "{:?}", view.items);
    assert_eq!(
        case.state_of("notify_childrens_services"),
        None,
        "its stage is not active"
    );

    case.complete(
        &response,
        "attend_and_secure",
        json!({
            "perpetrator": "P-31",
            "offence_committed": true,
            "perpetrator_arrested": true,
        }),
    );
    // The automatic grading sets the risk from the DASH score.
    case.complete(
        &response,
        "dash_risk_assessment",
        json!({ "dash_score": 16 }),
    );
    assert_eq!(case.state.case_file.get("risk_level"), Some(&json!("high")));
    assert_eq!(case.state_of("grade_risk"), Some(ItemState::Completed));
    let events = case.complete(&supervisor, "supervisor_risk_review", json!({}));
    assert!(reached(&events, "risk_confirmed"));
    assert_eq!(case.state_of("marac"), Some(ItemState::Active));
    assert_eq!(case.state_of("safeguarding"), Some(ItemState::Active));
    assert_eq!(case.state_of("idva_referral"), Some(ItemState::Active));
    assert_eq!(
        case.state_of("notify_childrens_services"),
        Some(ItemState::Available)
    );
    assert_eq!(case.state_of("investigation"), Some(ItemState::Active));
    assert!(case
        .state
        .deadlines
        .iter()
        .any(|d| d.deadline == "marac_referral_1_working_day"));

    case.run(
        &ppo,
        CaseCommand::AddDiscretionary {
            item: "dvpn".into(),
            stage: None,
        },
    );
    case.complete(&supervisor, "dvpn", json!({}));
    case.complete(
        &ppo,
        "safety_plan",
        json!({ "safeguarding_measures": ["dvpn", "idva_referral"] }),
    );
    case.complete(&ppo, "idva_referral", json!({}));
    assert_eq!(case.state_of("safeguarding"), Some(ItemState::Completed));

    // At high risk the supervisors are alerted (alert.raise; here the
    // orchestrator's answer is recorded by hand).
    assert_eq!(case.state_of("alert_supervisor"), Some(ItemState::Active));
    case.complete(&system, "alert_supervisor", json!({}));
    case.complete(
        &system,
        "marac_referral",
        json!({ "conference_date": "2026-01-14" }),
    );
    assert_eq!(
        case.state.case_file.get("marac_date"),
        Some(&json!("2026-01-14"))
    );
    let events = case.complete(&ppo, "attend_marac", json!({}));
    assert!(reached(&events, "marac_heard"));

    case.complete(&investigator, "evidence_led_investigation", json!({}));
    let events = case.complete(
        &investigator,
        "charging_decision",
        json!({ "outcome": "charged" }),
    );
    assert!(reached(&events, "perpetrator_charged"));
    assert!(events.contains(&CaseEvent::CaseCompleted {}));
    case.run(&supervisor, CaseCommand::Close { reason: None });
    case.check_replay();
}

/// Works an FOI request up to the response; returns the case and the
/// events of sending the response.
fn foi_to_response(def: CaseDefinition) -> (Case, Vec<CaseEvent>) {
    let mut case = Case::new(def);
    let o = Classification::Official;
    let officer_ = officer("foi-1", &["foi_officer"], o);
    let manager = officer("foi-m", &["foi_manager"], o);
    let owner = officer("io-1", &["information_owner"], o);
    let legal = officer("la-1", &["legal_adviser"], o);

    let events = case.run(
        &officer_,
        CaseCommand::Open {
            case_file: file(json!({
                "requester": "P-40",
                "received_on": "2026-01-05",
                "request_text": "Number of burglaries in Canterbury in 2025",
            })),
            classification: None,
        },
    );
    assert!(events.iter().any(|e| matches!(e,
        CaseEvent::DeadlineSet { deadline, due: DeadlineDue::WorkingDays { days: 20, .. }, .. }
            if deadline == "statutory_20_working_days")));

    case.complete(
        &officer_,
        "log_request",
        json!({ "valid_request": true, "clarification_needed": false }),
    );
    assert_eq!(
        case.state_of("seek_clarification"),
        Some(ItemState::Available)
    );
    assert_eq!(
        case.state_of("search_for_information"),
        Some(ItemState::Active)
    );
    case.complete(
        &owner,
        "search_for_information",
        json!({ "information_held": "held", "estimated_cost_hours": 4.5 }),
    );
    assert_eq!(
        case.state_of("consider_exemptions"),
        Some(ItemState::Active)
    );

    // Legal advice is applicable only once an exemption is being considered.
    assert!(matches!(
        case.try_run(
            &officer_,
            CaseCommand::AddDiscretionary {
                item: "legal_advice".into(),
                stage: None
            }
        ),
        Err(CaseError::NotApplicable { .. })
    ));
    case.run(
        &manager,
        CaseCommand::UpdateCaseFile {
            changes: file(json!({ "exemptions": ["s40_personal_data"] })),
        },
    );
    case.run(
        &officer_,
        CaseCommand::AddDiscretionary {
            item: "legal_advice".into(),
            stage: None,
        },
    );
    case.complete(&legal, "legal_advice", json!({}));
    case.complete(
        &legal,
        "consider_exemptions",
        json!({ "public_interest_extension": false }),
    );
    case.complete(
        &manager,
        "approve_response",
        json!({ "response_type": "partly_disclosed" }),
    );
    let events = case.complete(
        &officer_,
        "send_response",
        json!({ "response_sent_on": "2026-01-20" }),
    );
    assert!(reached(&events, "response_sent"));
    assert!(events.iter().any(|e| matches!(e,
        CaseEvent::DeadlineMet { deadline, .. } if deadline == "statutory_20_working_days")));
    (case, events)
}

#[test]
fn foi_request_with_legal_advice_to_closure_and_reopening() {
    // With case autocomplete on, the optional review stage, still waiting
    // for a review request, would not block completion (CASE-SEMANTICS.md)
    // and would be terminated.
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/definitions/foi-request.toml"),
    )
    .unwrap()
    .replacen("autocomplete = false", "autocomplete = true", 1);
    let def = CaseDefinition::from_toml(&text).unwrap();
    let (mut case, events) = foi_to_response(def);
    assert!(events.contains(&CaseEvent::CaseCompleted {}));
    assert_eq!(
        case.state_of("internal_review"),
        Some(ItemState::Terminated)
    );
    let officer_ = officer("foi-1", &["foi_officer"], Classification::Official);
    let manager = officer("foi-m", &["foi_manager"], Classification::Official);
    case.run(&officer_, CaseCommand::Close { reason: None });
    case.run(
        &manager,
        CaseCommand::Reopen {
            reason: Some("ICO complaint".into()),
        },
    );
    case.run(
        &officer_,
        CaseCommand::AddNote {
            text: "ICO asked for the file".into(),
        },
    );
    case.run(&officer_, CaseCommand::Close { reason: None });
    assert_eq!(case.state.status, CaseStatus::Closed);
    case.check_replay();
}

#[test]
fn foi_internal_review_runs_after_the_response() {
    // The bundled FOI case does not autocomplete: the waiting review keeps it open.
    let (mut case, events) = foi_to_response(load("foi-request.toml"));
    assert!(!events.contains(&CaseEvent::CaseCompleted {}));
    // The review's on-parts latch (response sent); it waits for the request.
    assert_eq!(case.state_of("internal_review"), Some(ItemState::Available));
    let officer_ = officer("foi-1", &["foi_officer"], Classification::Official);
    let manager = officer("foi-m", &["foi_manager"], Classification::Official);
    let reviewer = officer("rev-1", &["reviewer"], Classification::Official);
    case.run(
        &manager,
        CaseCommand::UpdateCaseFile {
            changes: file(json!({ "review_requested": true })),
        },
    );
    assert_eq!(case.state_of("internal_review"), Some(ItemState::Enabled));
    case.run(
        &manager,
        CaseCommand::Start {
            item: ItemRef::key("internal_review"),
        },
    );
    case.complete(
        &reviewer,
        "conduct_review",
        json!({ "review_outcome": "upheld" }),
    );
    let events = case.complete(&reviewer, "send_review_outcome", json!({}));
    assert!(reached(&events, "review_complete"));
    // Every child is terminal now, so the case completes by itself.
    assert!(events.contains(&CaseEvent::CaseCompleted {}));
    case.run(&officer_, CaseCommand::Close { reason: None });
    case.check_replay();
}

#[test]
fn another_tenant_cannot_touch_or_read_a_case() {
    let mut case = Case::new(load("foi-request.toml"));
    let officer_ = officer("foi-1", &["foi_officer"], Classification::Official);
    case.run(
        &officer_,
        CaseCommand::Open {
            case_file: file(json!({
                "requester": "P-40",
                "received_on": "2026-01-05",
                "request_text": "x",
            })),
            classification: None,
        },
    );
    let essex = Principal::new(TenantId::new("essex").unwrap(), "foi-1")
        .with_roles(["foi_officer", "foi_manager"])
        .with_clearance(Classification::TopSecret);
    let before = case.log.len();
    assert!(matches!(
        case.try_run(&essex, CaseCommand::AddNote { text: "x".into() }),
        Err(CaseError::WrongTenant { .. })
    ));
    assert_eq!(case.log.len(), before);
    assert!(matches!(
        case.state.view_for(&case.def, &essex),
        Err(CaseError::WrongTenant { .. })
    ));
}

#[test]
fn a_referred_burglary_ends_after_grading() {
    let mut case = Case::new(load("burglary.toml"));
    let call_handler = officer("ch-1", &["call_handler"], Classification::Official);
    case.run(
        &call_handler,
        CaseCommand::Open {
            case_file: file(json!({
                "reported_at": "2026-01-05T08:50:00Z",
                "incident_location": "L-100",
                "premises_type": "commercial",
                "victim": "P-1",
                "victim_vulnerable": false,
            })),
            classification: None,
        },
    );
    case.complete(
        &call_handler,
        "record_report",
        json!({ "offenders_on_scene": false }),
    );
    // No map position: the GIS lookup's condition is false, so it waits.
    assert_eq!(case.state_of("locate"), Some(ItemState::Available));
    // The grading table answers (here by hand, as the orchestrator would).
    let system = officer(
        "orchestrator",
        &[SYSTEM_ROLE, ADMIN_ROLE],
        Classification::Official,
    );
    case.complete(
        &system,
        "suggest_grade",
        json!({ "grade": "extended", "attend_within_minutes": 2880 }),
    );
    let events = case.complete(
        &call_handler,
        "grade_incident",
        json!({ "grade": "referred" }),
    );
    // The grade change fires the victim-updates exit criterion; attendance
    // never starts; every required stage is terminal, so the case completes.
    assert_eq!(case.state_of("victim_updates"), Some(ItemState::Terminated));
    assert_eq!(case.state_of("attendance"), Some(ItemState::Terminated));
    assert!(events.contains(&CaseEvent::CaseCompleted {}));
    case.check_replay();
}
