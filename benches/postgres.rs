//! `postgres`: the PostgreSQL store and engine nodes on it, against a raw INSERT baseline on the same server.
//!
//! Starts its own durable throwaway server (`TestCluster`, fsync and
//! synchronous commit on) unless `CASEBOOK_TEST_POSTGRES_URL` names one.
//! Each phase runs for a fixed time on a fresh database:
//!
//! - appends of one 200-byte event: 1 writer, then 64 writers on one node
//!   (group commit), with the share of the append call spent waiting for
//!   the append lock as the server measured it;
//! - the baseline: 64 connections each inserting one 200-byte row per
//!   transaction into a plain table;
//! - engine commands (notes and case-file updates on FOI cases) from 16
//!   callers on one node;
//! - catch-up: a second node starting on that database, until its views
//!   have reached the last command; then commit-to-view lag: a command on
//!   node A, its position awaited on node B's views;
//! - 1, 2, 3 and 4 nodes sharing 16 callers.
//!
//! Prints, after criterion's own output:
//!
//! ```text
//! postgres: appends 1 writer <N> ev/s, p50 <a> ms; 64 writers <M> ev/s, p99 <b> ms, <x>x raw single-row INSERT at 64 connections, lock wait <%>
//! postgres: commands 16 callers <K> cmd/s, p99 <c> ms
//! postgres: catch-up into local views <R> ev/s; commit-to-view lag p99 <l> ms on another node
//! postgres: nodes 1/2/3/4 <a>/<b>/<c>/<d> cmd/s on <n> cores
//! ```
//!
//! ```text
//! cargo bench --bench postgres
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use casebook::case::{CaseCommand, CaseFile};
use casebook::definition::Format;
use casebook::engine::{CommandContext, EngineConfig, OpenCase};
use casebook::log::pg::{PgEventStore, PgStoreConfig, TestCluster, TestClusterOptions};
use casebook::log::{
    ActorId, EventData, EventStore, ExpectedVersion, Metadata, Source, StreamId, TenantId,
};
use casebook::projection::Consistency;
use casebook::rules::serde_json::json;
use casebook::security::{PositionToken, Principal};
use casebook::Engine;
use criterion::Criterion;

const PHASE: Duration = Duration::from_secs(8);
const CALLERS: usize = 16;

fn tenant() -> TenantId {
    TenantId::new("kent").unwrap()
}

fn officer() -> Principal {
    Principal::new(tenant(), "foi-7").with_roles(["foi_officer"])
}

fn event() -> EventData {
    let meta = Metadata::new(ActorId::new("pc-4521"), Source::system("bench"));
    EventData::new("BenchEvent", vec![0x5a; 200], meta)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

async fn store(url: &str) -> PgEventStore {
    PgEventStore::connect(PgStoreConfig::new(url))
        .await
        .unwrap()
}

/// `writers` tasks on one node appending one event each time, for `PHASE`.
/// Returns events/s, sorted latencies and the lock-wait share.
async fn appends(url: &str, writers: usize) -> (f64, Vec<Duration>, f64) {
    let node = store(url).await;
    let before = node.append_stats();
    let deadline = Instant::now() + PHASE;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            let s = StreamId::new(tenant(), "bench", &format!("W-{w}")).unwrap();
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                node.append(&s, ExpectedVersion::Any, vec![event()])
                    .await
                    .unwrap();
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = node.append_stats();
    latencies.sort();
    let wait = (after.lock_wait_micros - before.lock_wait_micros) as f64;
    let total = (after.append_micros - before.append_micros).max(1) as f64;
    (latencies.len() as f64 / elapsed, latencies, wait / total)
}

/// 64 connections inserting one 200-byte row per transaction, for `PHASE`.
async fn raw_inserts(url: &str) -> f64 {
    let (setup, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    setup
        .batch_execute("CREATE TABLE raw (id bigserial PRIMARY KEY, payload bytea NOT NULL)")
        .await
        .unwrap();
    let rows = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + PHASE;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let rows = Arc::clone(&rows);
        tasks.push(tokio::spawn(async move {
            let insert = client
                .prepare("INSERT INTO raw (payload) VALUES ($1)")
                .await
                .unwrap();
            let payload = vec![0x5au8; 200];
            while Instant::now() < deadline {
                client.execute(&insert, &[&payload]).await.unwrap();
                rows.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    rows.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

async fn node(url: &str) -> Engine {
    let config = EngineConfig {
        tenants: vec![tenant()],
        ..EngineConfig::default()
    };
    let engine = Engine::on_postgres(PgStoreConfig::new(url), config)
        .await
        .unwrap();
    engine.start().await.unwrap();
    engine
}

/// Deploys the FOI definition and opens one case per caller.
async fn prepare(engine: &Engine, prefix: &str) -> Vec<String> {
    let admin = Principal::new(tenant(), "admin").with_roles(["administrator"]);
    let foi = include_str!("../examples/definitions/foi-request.toml");
    engine.deploy(&admin, foi, Format::Toml).await.unwrap();
    let mut cases = Vec::new();
    for c in 0..CALLERS {
        let id = format!("FOI-{prefix}-{c}");
        let case_file = CaseFile::new()
            .with("requester", "P-1")
            .with("received_on", "2026-11-02")
            .with("request_text", "Number of burglaries in 2025");
        let mut open = OpenCase::new("foi_request", case_file);
        open.case_id = Some(id.parse().unwrap());
        engine.open_case(&officer(), open).await.unwrap();
        cases.push(id);
    }
    cases
}

fn command(i: usize) -> CaseCommand {
    if i.is_multiple_of(2) {
        let changes = CaseFile::new().with("estimated_cost_hours", json!(i as f64 / 2.0));
        CaseCommand::UpdateCaseFile { changes }
    } else {
        CaseCommand::AddNote {
            text: format!("called the requester ({i})"),
        }
    }
}

/// `CALLERS` callers spread over `engines`, each on its own case, for
/// `PHASE`. Returns commands/s, sorted latencies and the last outcome's
/// position token.
async fn commands(engines: &[Engine], cases: &[String]) -> (f64, Vec<Duration>, u64) {
    let deadline = Instant::now() + PHASE;
    let start = Instant::now();
    let last = Arc::new(Mutex::new((0u64, 0u64)));
    let mut tasks = Vec::new();
    for (c, case) in cases.iter().enumerate() {
        let engine = engines[c % engines.len()].clone();
        let (case, last) = (case.clone(), Arc::clone(&last));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline {
                let t = Instant::now();
                let outcome = engine
                    .execute(&officer(), &case, command(i), CommandContext::default())
                    .await
                    .unwrap();
                latencies.push(t.elapsed());
                let mut l = last.lock().unwrap();
                if outcome.version.0 >= l.0 {
                    *l = (outcome.version.0, outcome.position.map_or(0, |p| p.get()));
                }
                i += 1;
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort();
    let position = last.lock().unwrap().1;
    (latencies.len() as f64 / elapsed, latencies, position)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cluster = TestCluster::start(TestClusterOptions {
        durable: true,
        max_connections: 300,
    })
    .expect("a PostgreSQL server for the bench");
    let fresh = || rt.block_on(cluster.new_database()).unwrap();

    let mut criterion = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    let url = fresh();
    let bench_store = rt.block_on(store(&url));
    let s = StreamId::new(tenant(), "bench", "criterion").unwrap();
    criterion.bench_function("postgres/append one event, 1 writer", |b| {
        b.iter(|| {
            rt.block_on(bench_store.append(&s, ExpectedVersion::Any, vec![event()]))
                .unwrap()
        })
    });
    drop(bench_store);

    let (one, one_lat, _) = rt.block_on(appends(&fresh(), 1));
    let (many, many_lat, lock_wait) = rt.block_on(appends(&fresh(), 64));
    let raw = rt.block_on(raw_inserts(&fresh()));
    println!(
        "postgres: appends 1 writer {one:.0} ev/s, p50 {:.2} ms; 64 writers {many:.0} ev/s, p99 {:.2} ms, {:.2}x raw single-row INSERT at 64 connections, lock wait {:.0}%",
        percentile(&one_lat, 0.50),
        percentile(&many_lat, 0.99),
        many / raw,
        lock_wait * 100.0
    );
    println!("postgres: (raw single-row INSERT at 64 connections: {raw:.0} rows/s)");

    // Commands on one node, then a second node catching up and following.
    let url = fresh();
    let (rate, latencies, last) = rt.block_on(async {
        let a = node(&url).await;
        let cases = prepare(&a, "ONE").await;
        let r = commands(std::slice::from_ref(&a), &cases).await;
        a.shutdown().await.unwrap();
        r
    });
    println!(
        "postgres: commands {CALLERS} callers {rate:.0} cmd/s, p99 {:.2} ms",
        percentile(&latencies, 0.99)
    );
    let (catch_up, lag) = rt.block_on(async {
        let head = store(&url).await.head_position().map_or(0, |p| p.0 + 1);
        let start = Instant::now();
        let b = node(&url).await;
        let reader = officer();
        b.case_view(
            &reader,
            &format!("FOI-ONE-{}", 0),
            Consistency::AtLeast {
                position: PositionToken::from_u64(last),
                timeout: Duration::from_secs(600),
            },
        )
        .await
        .unwrap();
        // The views are caught up to the last command's position.
        let catch_up = head as f64 / start.elapsed().as_secs_f64();
        let a = node(&url).await;
        let mut lags = Vec::new();
        for i in 0..200 {
            let case = format!("FOI-ONE-{}", i % CALLERS);
            let outcome = a
                .execute(&officer(), &case, command(i), CommandContext::default())
                .await
                .unwrap();
            let committed = Instant::now();
            b.case_view(
                &reader,
                &case,
                Consistency::AtLeast {
                    position: outcome.position.unwrap_or(PositionToken::NONE),
                    timeout: Duration::from_secs(10),
                },
            )
            .await
            .unwrap();
            lags.push(committed.elapsed());
        }
        lags.sort();
        a.shutdown().await.unwrap();
        b.shutdown().await.unwrap();
        (catch_up, percentile(&lags, 0.99))
    });
    println!(
        "postgres: catch-up into local views {catch_up:.0} ev/s; commit-to-view lag p99 {lag:.2} ms on another node"
    );

    let mut rates = Vec::new();
    for nodes in 1..=4 {
        let url = fresh();
        rates.push(rt.block_on(async {
            let mut engines = Vec::new();
            for _ in 0..nodes {
                engines.push(node(&url).await);
            }
            let cases = prepare(&engines[0], &format!("N{nodes}")).await;
            let (rate, _, _) = commands(&engines, &cases).await;
            for e in engines {
                e.shutdown().await.unwrap();
            }
            rate
        }));
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "postgres: nodes 1/2/3/4 {:.0}/{:.0}/{:.0}/{:.0} cmd/s on {cores} cores",
        rates[0], rates[1], rates[2], rates[3]
    );
    criterion.final_summary();
}
