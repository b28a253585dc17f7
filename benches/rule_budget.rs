//! `rule_budget`: how long a command whose rule is over its budget takes to
//! be refused, and how another tenant's case view answers meanwhile (two
//! callers sending such commands non-stop on a 2-worker runtime), against
//! the same view with nobody else running, in the same run. It also measures
//! what one budget unit costs (a comprehension over a 10,000-item list,
//! divided by the units it was charged), which is what the budget numbers in
//! `rules::budget` rest on.
//!
//! ```text
//! cargo bench --bench rule_budget
//! ```
//!
//! Prints `rule budget: refused in X ms, other tenant view p99 Y ms (alone
//! Z ms); one unit W ns`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use casebook::case::{CaseCommand, CaseFile};
use casebook::definition::Format;
use casebook::engine::{CommandContext, OpenCase};
use casebook::log::TenantId;
use casebook::rules::serde_json::json;
use casebook::rules::{Budget, Condition, Scope, COMMAND_BUDGET};
use casebook::security::Principal;
use casebook::Engine;
use criterion::Criterion;

const FOI: &str = include_str!("../examples/definitions/foi-request.toml");

/// Fifty passes over the list: deployable, over budget on a full list.
fn probes() -> String {
    let literal: Vec<String> = (0..50).map(|i| i.to_string()).collect();
    format!(
        "[{}].exists(i, tags.exists(t, t == -1 - i))",
        literal.join(", ")
    )
}

fn watchlist() -> String {
    format!(
        r#"
key = "watchlist"
name = "Watch list"
version = 1
default_classification = "OFFICIAL"
roles = ["analyst"]

[retention]
group = "group3"

[permissions]
open = ["analyst"]
update_case_file = ["analyst"]

[[fields]]
key = "tags"
type = "list"
element = "integer"

[[stages]]
key = "work"
name = "Work"

  [[stages.activities]]
  key = "flag"
  name = "Flag a match"
  kind = "human_task"
  roles = ["analyst"]
  entry = [{{ if = "{}" }}]
"#,
        probes()
    )
}

fn analyst() -> Principal {
    Principal::new(TenantId::new("kent").unwrap(), "an-1").with_roles(["analyst"])
}

fn reader() -> Principal {
    Principal::new(TenantId::new("essex").unwrap(), "foi-7").with_roles(["foi_officer"])
}

fn tags(n: i64) -> CaseFile {
    CaseFile::from_json(json!({ "tags": (0..n).collect::<Vec<_>>() })).unwrap()
}

fn full_update() -> CaseCommand {
    CaseCommand::UpdateCaseFile {
        changes: tags(10_000),
    }
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let engine = Engine::in_memory_with(casebook::engine::EngineConfig::with_tenants(
        ["kent", "essex"].map(|t| casebook::log::TenantId::new(t).unwrap()),
    ))
    .unwrap();
    let (watch_case, foi_case) = rt.block_on(async {
        engine.start().await.unwrap();
        let kent =
            Principal::new(TenantId::new("kent").unwrap(), "admin").with_roles(["administrator"]);
        let essex =
            Principal::new(TenantId::new("essex").unwrap(), "admin").with_roles(["administrator"]);
        engine
            .deploy(&kent, &watchlist(), Format::Toml)
            .await
            .unwrap();
        engine.deploy(&essex, FOI, Format::Toml).await.unwrap();
        let watch = engine
            .open_case(&analyst(), OpenCase::new("watchlist", tags(10)))
            .await
            .unwrap();
        let foi = engine
            .open_case(
                &reader(),
                OpenCase::new(
                    "foi_request",
                    CaseFile::new()
                        .with("requester", "P-1")
                        .with("received_on", "2026-11-02")
                        .with("request_text", "Number of burglaries in 2025"),
                ),
            )
            .await
            .unwrap();
        (watch.case_id, foi.case_id)
    });

    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut group = c.benchmark_group("rule_budget");

    let refusals: Arc<Mutex<Vec<Duration>>> = Arc::default();
    group.bench_function("refused_command", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let one = Instant::now();
                let err = rt
                    .block_on(engine.execute(
                        &analyst(),
                        &watch_case,
                        full_update(),
                        CommandContext::default(),
                    ))
                    .unwrap_err();
                assert_eq!(err.kind(), casebook::ErrorKind::ResourceExhausted);
                refusals.lock().unwrap().push(one.elapsed());
            }
            start.elapsed()
        })
    });

    let view_latencies = |label: &'static str,
                          group: &mut criterion::BenchmarkGroup<'_, _>,
                          attackers: usize|
     -> Vec<Duration> {
        let samples: Arc<Mutex<Vec<Duration>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..attackers {
            let engine = engine.clone();
            let case = watch_case.clone();
            let stop = stop.clone();
            tasks.push(rt.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let refused = engine
                        .execute(&analyst(), &case, full_update(), CommandContext::default())
                        .await;
                    assert!(refused.is_err());
                }
            }));
        }
        group.bench_function(label, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let one = Instant::now();
                        engine.view(&reader(), &foi_case).await.unwrap();
                        samples.lock().unwrap().push(one.elapsed());
                    }
                    start.elapsed()
                })
            })
        });
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            rt.block_on(t).unwrap();
        }
        let out = samples.lock().unwrap().clone();
        out
    };
    let mut alone = view_latencies("other_tenant_view_alone", &mut group, 0);
    let mut contended = view_latencies("other_tenant_view_while_refusing", &mut group, 2);
    group.finish();

    // What one unit costs: a pass over 10,000 items, timed and charged.
    let file = json!({ "tags": (0..10_000i64).collect::<Vec<_>>() });
    let pass = Condition::compile("tags.exists(t, t == -1)").unwrap();
    let (mut units, mut spent) = (0u64, Duration::ZERO);
    for _ in 0..20 {
        let budget = Budget::new(COMMAND_BUDGET);
        let start = Instant::now();
        assert_eq!(
            pass.evaluate_within(&Scope::case_file(&file), &budget),
            Ok(false)
        );
        spent += start.elapsed();
        units += budget.spent();
    }
    c.final_summary();

    let mut refusals = refusals.lock().unwrap().clone();
    println!(
        "\nrule budget: refused in {:.2} ms, other tenant view p99 {:.3} ms (alone {:.3} ms); one unit {:.1} ns",
        ms(percentile(&mut refusals, 0.5)),
        ms(percentile(&mut contended, 0.99)),
        ms(percentile(&mut alone, 0.99)),
        spent.as_secs_f64() * 1e9 / units as f64,
    );
}
