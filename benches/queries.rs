//! `queries`: work-queue and case-search latency (p50 / p99) at 100,000 cases,
//! on the embedded store's projections.
//!
//! Uses the store of `projection_rebuild` (`target/bench-data/projection-1m`,
//! built on first use); the engine's projections under its `projections`
//! directory are built on the first run and reused (caught up from their
//! checkpoint) later. Criterion times each query; the summary prints p50 and
//! p99 over 1,000 runs of each.
//!
//! ```text
//! cargo bench --bench queries
//! ```

#[path = "support/projection_data.rs"]
mod data;

use std::time::{Duration, Instant};

use casebook::case::CaseStatus;
use casebook::log::Timestamp;
use casebook::projection::query::{
    DeadlineQuery, FieldFilter, PageRequest, SearchQuery, WorkQueueQuery,
};
use casebook::projection::Consistency;
use casebook::rules::serde_json::json;
use casebook::security::Principal;
use casebook::Engine;
use criterion::Criterion;

type Query = Box<dyn Fn(&Engine, &Principal) -> usize>;

fn queries(rt: &tokio::runtime::Runtime) -> Vec<(&'static str, Query)> {
    let handle = rt.handle().clone();
    let c = Consistency::Eventual;
    let run = move |f: std::pin::Pin<Box<dyn std::future::Future<Output = usize> + '_>>| {
        handle.block_on(f)
    };
    let run = std::sync::Arc::new(run);
    let mut out: Vec<(&'static str, Query)> = Vec::new();
    let r = run.clone();
    out.push((
        "work_queue_role_page_50",
        Box::new(move |e, p| {
            let q = WorkQueueQuery {
                role: Some("handler".into()),
                page: PageRequest::first(50),
                ..Default::default()
            };
            r(Box::pin(async move {
                e.work_queue(p, &q, c).await.unwrap().items.len()
            }))
        }),
    ));
    let r = run.clone();
    out.push((
        "work_queue_assignee",
        Box::new(move |e, p| {
            let q = WorkQueueQuery {
                assignee: Some("pc-42".into()),
                page: PageRequest::first(50),
                ..Default::default()
            };
            r(Box::pin(async move {
                e.work_queue(p, &q, c).await.unwrap().items.len()
            }))
        }),
    ));
    let r = run.clone();
    out.push((
        "search_text_two_words",
        Box::new(move |e, p| {
            let q = SearchQuery {
                case_type: Some("incident".into()),
                text: Some("laptop garage".into()),
                page: PageRequest::first(20),
                ..Default::default()
            };
            r(Box::pin(async move {
                e.search_cases(p, &q, c).await.unwrap().items.len()
            }))
        }),
    ));
    let r = run.clone();
    out.push((
        "search_ward_loss_range_active",
        Box::new(move |e, p| {
            let q = SearchQuery {
                case_type: Some("incident".into()),
                status: vec![CaseStatus::Active],
                fields: vec![
                    FieldFilter::equals("ward", json!("north")),
                    FieldFilter {
                        field: "loss".into(),
                        condition: casebook::projection::query::FieldCondition::Between {
                            from: Some(json!(100)),
                            to: Some(json!(110)),
                        },
                    },
                ],
                page: PageRequest::first(20),
                ..Default::default()
            };
            r(Box::pin(async move {
                e.search_cases(p, &q, c).await.unwrap().items.len()
            }))
        }),
    ));
    let r = run.clone();
    out.push((
        "search_stage_page_20",
        Box::new(move |e, p| {
            let q = SearchQuery {
                case_type: Some("incident".into()),
                stage: Some("followup".into()),
                // Every fourth case reaches follow-up, all of them in "north".
                fields: vec![FieldFilter::equals("ward", json!("north"))],
                page: PageRequest::first(20),
                ..Default::default()
            };
            r(Box::pin(async move {
                e.search_cases(p, &q, c).await.unwrap().items.len()
            }))
        }),
    ));
    let r = run;
    out.push((
        "deadlines_due_page_50",
        Box::new(move |e, p| {
            let q = DeadlineQuery {
                due_before: Timestamp(i64::MAX),
                now: Timestamp::now(),
                case_type: None,
                page: PageRequest::first(50),
            };
            r(Box::pin(async move {
                e.deadlines(p, &q, c).await.unwrap().items.len()
            }))
        }),
    ));
    out
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let engine = data::open(&rt);
    let who = data::officer(42);
    let head = engine
        .position_token(
            &casebook::security::Principal::platform_administrator("ops"),
            &who.tenant,
            data::head(&engine),
        )
        .unwrap();
    let started = Instant::now();
    rt.block_on(engine.wait_for_projections(&who, head, Duration::from_secs(3600)))
        .unwrap();
    eprintln!("projections caught up in {:?}", started.elapsed());
    let queries = queries(&rt);
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut group = c.benchmark_group("queries");
    for (name, q) in &queries {
        group.bench_function(*name, |b| b.iter(|| q(&engine, &who)));
    }
    group.finish();
    c.final_summary();

    println!(
        "\nqueries summary at {} cases (1,000 runs each):",
        data::CASES
    );
    for (name, q) in &queries {
        let mut times = Vec::with_capacity(1000);
        let mut found = 0;
        for _ in 0..1000 {
            let t = Instant::now();
            found = q(&engine, &who);
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "{name:32} p50 {:>9.3} ms  p99 {:>9.3} ms  ({found} results per page)",
            times[500].as_secs_f64() * 1e3,
            times[990].as_secs_f64() * 1e3
        );
    }
    rt.block_on(engine.shutdown()).unwrap();
}
