//! End to end over real TCP: a bundled burglary case opened and worked by
//! the roles that do it, searched, read, streamed, with health and
//! reflection answering generic tools.

mod support;

use casebook_proto::v1 as pb;
use support::*;
use tokio_stream::StreamExt;

fn geo(lat: f64, lon: f64) -> pb::Value {
    pb::Value {
        kind: Some(pb::value::Kind::GeoPoint(pb::GeoPoint { lat, lon })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundled_burglary_is_worked_end_to_end_over_tcp() {
    let server = start().await;
    let handler = token(
        "demo",
        "ch-101",
        &["call_handler", "dispatcher"],
        "OFFICIAL",
    );
    let response = token("demo", "pc-202", &["response_officer"], "OFFICIAL");
    let investigator = token("demo", "dc-303", &["investigator"], "OFFICIAL");
    let mut cases = server.cases(&handler);

    let mut report = burglary_report();
    report
        .fields
        .insert("incident_point".into(), geo(51.2802, 1.0789));
    let opened = cases
        .open_case(pb::OpenCaseRequest {
            case_type: "burglary".into(),
            case_file: Some(report),
            context: Some(pb::CommandContext {
                reason: "999 call from the victim".into(),
                source_system: "storm-cad".into(),
                source_reference: "CAD-2026-1206-0042".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("open")
        .into_inner();
    assert!(
        opened.case_id.starts_with("burglary-"),
        "{}",
        opened.case_id
    );
    assert!(
        opened.events.iter().any(|e| e.event_type == "CaseOpened"),
        "{:?}",
        opened.events
    );
    let case_id = opened.case_id.clone();

    let claimed = cases
        .claim_task(pb::TaskRequest {
            case_id: case_id.clone(),
            item: item("record_report"),
            context: None,
        })
        .await
        .expect("claim")
        .into_inner();
    assert!(claimed.version > opened.version);
    cases
        .complete_task(pb::CompleteTaskRequest {
            case_id: case_id.clone(),
            item: item("record_report"),
            outputs: Some(file(&[("offenders_on_scene", boolean(false))])),
            context: None,
        })
        .await
        .expect("complete record_report");
    let graded = cases
        .execute(pb::ExecuteRequest {
            case_id: case_id.clone(),
            context: Some(pb::CommandContext {
                reason: "no offenders on scene; victim safe".into(),
                ..Default::default()
            }),
            command: Some(pb::execute_request::Command::Complete(pb::Complete {
                item: item("grade_incident"),
                outputs: Some(file(&[("grade", text("extended"))])),
            })),
        })
        .await
        .expect("grade")
        .into_inner();

    // The response officer finds the attendance in their queue.
    let queue = server
        .cases(&response)
        .get_work_queue(pb::GetWorkQueueRequest {
            role: "response_officer".into(),
            consistency: after(&graded),
            ..Default::default()
        })
        .await
        .expect("work queue")
        .into_inner();
    assert!(
        queue
            .items
            .iter()
            .any(|w| w.case_id == case_id && w.item == "attend_scene" && w.team == "response"),
        "{:?}",
        queue.items
    );

    // The investigator reads the case with typed values.
    let mut inv = server.cases(&investigator);
    let view = inv
        .get_case(pb::GetCaseRequest {
            case_id: case_id.clone(),
            consistency: after(&graded),
            purpose: "investigation".into(),
        })
        .await
        .expect("get case")
        .into_inner();
    assert_eq!(view.status(), pb::CaseStatus::Active);
    assert_eq!(view.case_type, "burglary");
    let fields = &view.case_file.as_ref().unwrap().fields;
    assert_eq!(fields["premises_type"], text("dwelling"));
    assert_eq!(fields["grade"], text("extended"));
    assert_eq!(fields["incident_point"], geo(51.2802, 1.0789));
    assert!(view.items.iter().any(|i| i.item == "record_report"
        && i.state() == pb::ItemState::CompletedItem
        && i.claimed_by == "ch-101"));
    assert!(view.reached_milestones.contains(&"graded".to_string()));

    // What the investigator could plan now: house-to-house enquiries (the
    // premises are a dwelling); the response officer plans nothing.
    let plannable = inv
        .list_plannable(pb::GetCaseRequest {
            case_id: case_id.clone(),
            consistency: after(&graded),
            purpose: "investigation".into(),
        })
        .await
        .expect("list plannable")
        .into_inner();
    let h2h = plannable
        .items
        .iter()
        .find(|p| p.item == "house_to_house")
        .unwrap_or_else(|| panic!("{:?}", plannable.items));
    assert!(h2h.applicable && h2h.repeatable, "{h2h:?}");
    assert_eq!(h2h.stage, "investigation");
    let none = server
        .cases(&response)
        .list_plannable(pb::GetCaseRequest {
            case_id: case_id.clone(),
            consistency: after(&graded),
            purpose: "attendance".into(),
        })
        .await
        .expect("list plannable")
        .into_inner();
    assert!(none.items.is_empty(), "{:?}", none.items);

    // Work and startable tasks together; a value out of range is refused.
    let both = server
        .cases(&response)
        .get_work_queue(pb::GetWorkQueueRequest {
            role: "response_officer".into(),
            tasks: pb::TaskStates::Both as i32,
            consistency: after(&graded),
            ..Default::default()
        })
        .await
        .expect("work queue")
        .into_inner();
    assert!(both.items.iter().any(|w| w.item == "attend_scene"));
    let err = server
        .cases(&response)
        .get_work_queue(pb::GetWorkQueueRequest {
            role: "response_officer".into(),
            tasks: 7,
            ..Default::default()
        })
        .await
        .expect_err("an unknown task state");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // Search finds it by a field and by stage.
    let found = inv
        .search_cases(pb::SearchCasesRequest {
            case_type: "burglary".into(),
            fields: vec![pb::FieldFilter {
                field: "premises_type".into(),
                condition: Some(pb::field_filter::Condition::Equals(text("dwelling"))),
            }],
            stage: "attendance".into(),
            consistency: after(&graded),
            ..Default::default()
        })
        .await
        .expect("search")
        .into_inner();
    assert_eq!(
        found
            .cases
            .iter()
            .map(|c| c.case_id.as_str())
            .collect::<Vec<_>>(),
        [case_id.as_str()]
    );

    // The timeline, and the same entries followed live.
    let timeline = inv
        .get_timeline(pb::GetTimelineRequest {
            case_id: case_id.clone(),
            consistency: after(&graded),
            ..Default::default()
        })
        .await
        .expect("timeline")
        .into_inner();
    assert!(timeline.entries.len() >= 4, "{:?}", timeline.entries);
    assert_eq!(timeline.entries[0].source, "storm-cad");
    let mut watch = inv
        .watch_case(pb::WatchCaseRequest {
            case_id: case_id.clone(),
            from_version: 0,
            purpose: "investigation".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    let mut streamed = Vec::new();
    while streamed.len() < timeline.entries.len() {
        let next = tokio::time::timeout(std::time::Duration::from_secs(10), watch.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of {} entries streamed",
                    streamed.len(),
                    timeline.entries.len()
                )
            });
        streamed.push(next.expect("an entry").expect("ok"));
    }
    assert_eq!(streamed, timeline.entries);
    let noted = inv
        .execute(pb::ExecuteRequest {
            case_id: case_id.clone(),
            context: None,
            command: Some(pb::execute_request::Command::AddNote(pb::AddNote {
                text: "Neighbour at no. 14 has a doorbell camera".into(),
            })),
        })
        .await
        .expect("note")
        .into_inner();
    // The note arrives live, after whatever the case's service tasks
    // (GIS, grading, the victim's email) recorded meanwhile, in order.
    let mut last = streamed.last().map_or(0, |e| e.version);
    let live = loop {
        let next = tokio::time::timeout(std::time::Duration::from_secs(10), watch.next())
            .await
            .expect("the new entry arrives")
            .expect("an entry")
            .expect("ok");
        assert!(next.version > last, "{} after {last}", next.version);
        last = next.version;
        if next.version >= noted.version {
            break next;
        }
    };
    assert_eq!(live.version, noted.version);
    assert_eq!(live.actor, "dc-303");

    // The tenant's deployed case types.
    let listed = inv
        .list_definitions(pb::ListDefinitionsRequest {
            consistency: after(&graded),
        })
        .await
        .expect("list definitions")
        .into_inner();
    let types: Vec<&str> = listed
        .definitions
        .iter()
        .map(|d| d.case_type.as_str())
        .collect();
    assert_eq!(
        types,
        [
            "burglary",
            "domestic_abuse",
            "foi_request",
            "missing_person"
        ]
    );
    assert!(listed.definitions.iter().all(|d| d.latest_version
        == if d.case_type == "burglary" { 2 } else { 1 }
        && !d.name.is_empty()));

    // Generic tools: health and reflection.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel.clone());
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "casebook.v1.Cases".into(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(
        serving.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    let mut reflection =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
            server.channel.clone(),
        );
    let ask = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([ask]))
        .await
        .expect("reflection")
        .into_inner();
    let answer = answers.next().await.expect("an answer").expect("ok");
    let names: Vec<String> = match answer.message_response {
        Some(
            tonic_reflection::pb::v1::server_reflection_response::MessageResponse::ListServicesResponse(l),
        ) => l.service.into_iter().map(|s| s.name).collect(),
        other => panic!("unexpected {other:?}"),
    };
    for s in [
        "casebook.v1.Cases",
        "casebook.v1.Events",
        "casebook.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == s), "{s} in {names:?}");
    }
    server.running.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_command_with_the_same_id_applies_once() {
    let server = start().await;
    let handler = token("demo", "ch-101", &["call_handler"], "OFFICIAL");
    let mut cases = server.cases(&handler);
    let context = Some(pb::CommandContext {
        command_id: "7b0c1f0e-5a7c-4d55-9a1e-0d6f0e5b2c11".into(),
        ..Default::default()
    });
    let open = pb::OpenCaseRequest {
        case_type: "burglary".into(),
        case_file: Some(burglary_report()),
        context: context.clone(),
        ..Default::default()
    };
    let first = cases.open_case(open.clone()).await.unwrap().into_inner();
    let again = cases.open_case(open).await.unwrap().into_inner();
    assert_eq!(first, again, "the retry returns the first outcome");
    let note = pb::ExecuteRequest {
        case_id: first.case_id.clone(),
        context: Some(pb::CommandContext {
            command_id: "note-1".into(),
            ..Default::default()
        }),
        command: Some(pb::execute_request::Command::AddNote(pb::AddNote {
            text: "Victim called back".into(),
        })),
    };
    let a = cases.execute(note.clone()).await.unwrap().into_inner();
    let b = cases.execute(note).await.unwrap().into_inner();
    assert_eq!(a, b);
    assert_eq!(b.version, first.version + 1, "one note appended, not two");
    server.running.stop().await.unwrap();
}

/// Opens a burglary at a point in Canterbury and records its report, so
/// that its GIS lookup is due: the opened case.
async fn reported_burglary(cases: &mut Cases) -> pb::CaseOutcome {
    let mut report = burglary_report();
    report
        .fields
        .insert("incident_point".into(), geo(51.2802, 1.0789));
    let opened = cases
        .open_case(pb::OpenCaseRequest {
            case_type: "burglary".into(),
            case_file: Some(report),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    cases
        .complete_task(pb::CompleteTaskRequest {
            case_id: opened.case_id.clone(),
            item: item("record_report"),
            outputs: Some(file(&[("offenders_on_scene", boolean(false))])),
            context: None,
        })
        .await
        .unwrap();
    opened
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_worker_takes_and_completes_a_service_job() {
    // Without the demo's built-in services, the GIS lookup is a job.
    let server = start_with(|c| c.demo.builtin_services = false).await;
    let handler = token("demo", "ch-101", &["call_handler"], "OFFICIAL");
    let worker = token("demo", "gis-worker-1", &["casebook_worker"], "OFFICIAL");
    let investigator = token("demo", "dc-303", &["investigator"], "OFFICIAL");
    let mut cases = server.cases(&handler);
    let opened = reported_burglary(&mut cases).await;

    // The GIS lookup is implemented outside Casebook: a worker leases it.
    let mut workers = casebook_proto::v1::workers_client::WorkersClient::with_interceptor(
        server.channel.clone(),
        Bearer(Some(worker.clone())),
    );
    let ask = pb::ActivateJobsRequest {
        service: "gis.locate".into(),
        worker: "gis-worker-1".into(),
        max_jobs: 10,
        lease_ms: 30_000,
        wait_ms: 10_000,
    };
    let jobs = workers
        .activate_jobs(ask.clone())
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job = &jobs[0];
    assert_eq!(job.handle.as_ref().unwrap().case_id, opened.case_id);
    assert_eq!(
        job.input.as_ref().unwrap().fields["point"],
        geo(51.2802, 1.0789)
    );
    // A second worker finds nothing while the lease holds.
    let none = workers
        .activate_jobs(pb::ActivateJobsRequest {
            wait_ms: 0,
            ..ask.clone()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert!(none.is_empty());
    // A disclosure with a blank field is refused, naming it.
    let err = workers
        .complete_job(pb::CompleteJobRequest {
            handle: job.handle.clone(),
            output: Some(file(&[("ward", text("Westgate")), ("beat", text("C3"))])),
            disclosures: vec![pb::JobDisclosure {
                recipient: "Kent County Council".into(),
                what: "the incident point".into(),
                why: String::new(),
                channel: "api".into(),
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("disclosures[0].why"), "{err:?}");
    workers
        .complete_job(pb::CompleteJobRequest {
            handle: job.handle.clone(),
            output: Some(file(&[("ward", text("Westgate")), ("beat", text("C3"))])),
            disclosures: vec![pb::JobDisclosure {
                recipient: "Kent County Council".into(),
                what: "the incident point".into(),
                why: "ward lookup".into(),
                channel: "api".into(),
            }],
        })
        .await
        .expect("complete the job");
    // Completing it twice is refused: the lease is spent.
    let again = workers
        .complete_job(pb::CompleteJobRequest {
            handle: job.handle.clone(),
            output: Some(file(&[("ward", text("Elsewhere"))])),
            disclosures: Vec::new(),
        })
        .await;
    assert!(again.is_err());

    let mut inv = server.cases(&investigator);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        // At least as fresh as the opening: the job is handed over without
        // waiting for the views' commit interval, so the case view may not
        // have reached the case yet.
        let view = inv
            .get_case(pb::GetCaseRequest {
                case_id: opened.case_id.clone(),
                consistency: after(&opened),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if let Some(ward) = view.case_file.as_ref().unwrap().fields.get("ward") {
            assert_eq!(ward, &text("Westgate"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the ward never arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Without the worker role, no jobs.
    let err = casebook_proto::v1::workers_client::WorkersClient::with_interceptor(
        server.channel.clone(),
        Bearer(Some(investigator)),
    )
    .activate_jobs(ask)
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    server.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_metrics_count_requests_and_show_lag() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start_with(|c| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let handler = token("demo", "ch-101", &["call_handler"], "OFFICIAL");
    let mut cases = server.cases(&handler);
    let opened = cases
        .open_case(pb::OpenCaseRequest {
            case_type: "burglary".into(),
            case_file: Some(burglary_report()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    cases
        .get_case(pb::GetCaseRequest {
            case_id: opened.case_id.clone(),
            consistency: after(&opened),
            ..Default::default()
        })
        .await
        .unwrap();
    let _ = cases
        .get_case(pb::GetCaseRequest {
            case_id: "burglary-none".into(),
            ..Default::default()
        })
        .await;
    let addr = server.running.metrics_addr.expect("metrics bound");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: casebook\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for line in [
        "casebook_grpc_requests_total{method=\"/casebook.v1.Cases/OpenCase\",code=\"OK\"} 1",
        "casebook_grpc_requests_total{method=\"/casebook.v1.Cases/GetCase\",code=\"OK\"} 1",
        "casebook_grpc_requests_total{method=\"/casebook.v1.Cases/GetCase\",code=\"NOT_FOUND\"} 1",
        "casebook_orchestration_pending_timers ",
        "casebook_recovery_tail_bytes_cut 0",
        "casebook_derived_store_rebuilt_at_open{store=\"projections\"} 0",
        "casebook_cache_budget_bytes{cache=\"projections\"} 67108864",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    assert!(
        text.lines().any(|l| l
            .starts_with("casebook_projection_lag_events{tenant=\"demo\",projection=\"cases\"}")),
        "{text}"
    );
    assert!(!text.contains(&opened.case_id), "no case ids in metrics");
    server.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_are_listed_a_page_at_a_time() {
    // Without the demo's built-in services, the GIS lookup is a job; the
    // worker fails it for good on each case, which opens an incident.
    let server = start_with(|c| c.demo.builtin_services = false).await;
    let handler = token("demo", "ch-101", &["call_handler"], "OFFICIAL");
    let worker = token("demo", "gis-worker-1", &["casebook_worker"], "OFFICIAL");
    let mut cases = server.cases(&handler);
    let mut workers = casebook_proto::v1::workers_client::WorkersClient::with_interceptor(
        server.channel.clone(),
        Bearer(Some(worker)),
    );
    let mut opened = Vec::new();
    for _ in 0..3 {
        let case = reported_burglary(&mut cases).await;
        let jobs = workers
            .activate_jobs(pb::ActivateJobsRequest {
                service: "gis.locate".into(),
                worker: "gis-worker-1".into(),
                max_jobs: 1,
                lease_ms: 30_000,
                wait_ms: 10_000,
            })
            .await
            .unwrap()
            .into_inner()
            .jobs;
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].handle.as_ref().unwrap().case_id, case.case_id);
        workers
            .fail_job(pb::FailJobRequest {
                handle: jobs[0].handle.clone(),
                error: "no such place".into(),
                retryable: false,
            })
            .await
            .unwrap();
        opened.push(case.case_id);
    }
    let mut listed = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let first = loop {
        let page = cases
            .list_incidents(pb::ListIncidentsRequest {
                page: Some(pb::PageRequest {
                    offset: 0,
                    limit: 2,
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if page.next_offset.is_some() {
            break page;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "three incidents never listed: {page:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(first.incidents.len(), 2);
    assert_eq!(first.next_offset, Some(2));
    listed.extend(first.incidents.iter().map(|i| i.case_id.clone()));
    let second = cases
        .list_incidents(pb::ListIncidentsRequest {
            page: Some(pb::PageRequest {
                offset: 2,
                limit: 2,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.incidents.len(), 1);
    assert_eq!(second.next_offset, None);
    listed.extend(second.incidents.iter().map(|i| i.case_id.clone()));
    listed.sort();
    opened.sort();
    assert_eq!(listed, opened);
    assert!(second.incidents[0].error.contains("no such place"));
    // A page too large is INVALID_ARGUMENT.
    let err = cases
        .list_incidents(pb::ListIncidentsRequest {
            page: Some(pb::PageRequest {
                offset: 0,
                limit: 5_000,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    server.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_resources_are_deployed_over_the_admin_api() {
    use tonic_types::StatusExt;
    let server = start().await;
    let admin = token("demo", "admin-1", &["administrator"], "OFFICIAL");
    let handler = token("demo", "ch-101", &["call_handler"], "OFFICIAL");
    let codes = r#"
description = "Offence codes"
columns = ["description"]

[entries."28/1"]
description = "Burglary in a dwelling"
"#;
    let ask = |source: &str| pb::DeployResourceRequest {
        kind: pb::ResourceKind::ReferenceData as i32,
        name: "offence-codes-test".into(),
        source: source.into(),
    };
    let mut a = server.admin(&admin);
    let first = a.deploy_resource(ask(codes)).await.unwrap().into_inner();
    assert_eq!(
        (first.version, first.newly_deployed, first.name.as_str()),
        (1, true, "offence-codes-test")
    );
    assert_eq!(first.kind, pb::ResourceKind::ReferenceData as i32);
    // The same content again: nothing new.
    let again = a.deploy_resource(ask(codes)).await.unwrap().into_inner();
    assert_eq!((again.version, again.newly_deployed), (1, false));
    // Changed: the next version.
    let changed = format!("{codes}\n[entries.\"28/3\"]\ndescription = \"Aggravated burglary\"\n");
    let second = a.deploy_resource(ask(&changed)).await.unwrap().into_inner();
    assert_eq!((second.version, second.newly_deployed), (2, true));

    // Bad input: an invalid document names its problems; a bad name, an
    // unspecified kind; and only administrators deploy.
    let err = a
        .deploy_resource(ask("columns = 3\n[entries.x]\n"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let fields: Vec<String> = err
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default();
    assert!(!fields.is_empty(), "{err:?}");
    let err = a
        .deploy_resource(pb::DeployResourceRequest {
            name: "Not A Name".into(),
            ..ask(codes)
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let err = a
        .deploy_resource(pb::DeployResourceRequest {
            kind: pb::ResourceKind::Unspecified as i32,
            ..ask(codes)
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("kind"), "{err:?}");
    let err = server
        .admin(&handler)
        .deploy_resource(ask(codes))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    server.running.stop().await.unwrap();
}
