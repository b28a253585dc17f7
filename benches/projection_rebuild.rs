//! `projection_rebuild`: rebuild the `cases` projection (case view, search
//! index, work queue, deadlines) from position 0 over about 1M events, against
//! a plain `read_all` of the same events in the same run.
//!
//! The store (100,000 cases) is built once under
//! `target/bench-data/projection-1m` and reused. A rebuild of 1M events takes
//! seconds, so each measurement is a whole pass, timed directly and
//! alternated with the baseline (`PASSES`, default 3) rather than sampled by
//! criterion. Prints events/s for both and the ratio (goal: at least 30%).
//!
//! While each rebuild runs, a probe task on the same runtime (2 workers)
//! wakes every millisecond; the summary reports the p99 of how late it woke
//! (goal: at most 5 ms), showing that the rebuild never holds a runtime
//! thread.
//!
//! ```text
//! cargo bench --bench projection_rebuild
//! ```

#[path = "support/projection_data.rs"]
mod data;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use casebook::definition::CaseDefinition;
use casebook::log::{EventStore, GlobalPosition, TenantId};
use casebook::projection::builtin::{DefinitionResolver, ResolveError};
use casebook::projection::cases::CasesProjection;
use casebook::projection::{Projection, ProjectionHost, DEFAULT_BATCH_SIZE};
use casebook::security::Principal;
use casebook::Engine;

/// The platform administrator: the only caller of the engine's unscoped
/// store and projection host.
fn platform_admin() -> casebook::security::Principal {
    casebook::security::Principal::platform_administrator("ops")
}

struct Definitions(Engine);

#[async_trait]
impl DefinitionResolver for Definitions {
    async fn definition(
        &self,
        tenant: &TenantId,
        key: &str,
        version: u32,
    ) -> Result<Arc<CaseDefinition>, ResolveError> {
        self.0
            .definition(&Principal::new(tenant.clone(), "bench"), key, Some(version))
            .await
            .map_err(|e| ResolveError::new(key, version, e))
    }
}

fn read_all(rt: &tokio::runtime::Runtime, store: &Arc<dyn EventStore>) -> (u64, Duration) {
    let started = Instant::now();
    let count = rt.block_on(async {
        let mut from = GlobalPosition::START;
        let mut count = 0u64;
        loop {
            let page = store.read_all(&data::tenant(), from, 10_000).await.unwrap();
            let Some(last) = page.last() else { break };
            from = last.position.next();
            count += page.len() as u64;
        }
        count
    });
    (count, started.elapsed())
}

/// Wake-up delays of a task that wakes every millisecond on the runtime
/// while `work` runs there: how late each tick ran after it was due.
async fn probed<T>(work: impl std::future::Future<Output = T>) -> (T, Vec<Duration>) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = tokio::spawn({
        let stop = Arc::clone(&stop);
        async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(1));
            let mut delays = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let due = ticks.tick().await;
                delays.push(due.elapsed());
            }
            delays
        }
    });
    let out = work.await;
    stop.store(true, std::sync::atomic::Ordering::Release);
    (out, probe.await.unwrap())
}

/// The `q` quantile (0..=1) of `samples`.
fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let i = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[i]
}

/// One rebuild from position 0: its duration and the probe's wake-up
/// delays while it ran.
fn rebuild(rt: &tokio::runtime::Runtime, engine: &Engine) -> (Duration, Vec<Duration>) {
    let resolver: Arc<dyn DefinitionResolver> = Arc::new(Definitions(engine.clone()));
    let cases: Arc<dyn Projection> = Arc::new(CasesProjection::new(resolver));
    let host = ProjectionHost::temporary_with_cache(
        engine.store(&platform_admin()).unwrap(),
        vec![cases],
        DEFAULT_BATCH_SIZE,
        256 * 1024 * 1024,
    )
    .unwrap();
    let head = data::head(engine);
    rt.block_on(async {
        let started = Instant::now();
        let (elapsed, delays) = probed(async {
            host.ensure(&data::tenant()).unwrap();
            host.wait_for("cases", &data::tenant(), head, Duration::from_secs(3600))
                .await
                .unwrap();
            started.elapsed()
        })
        .await;
        host.shutdown().await.unwrap();
        (elapsed, delays)
    })
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let engine = data::open(&rt);
    let store = engine.store(&platform_admin()).unwrap();
    let mut baseline = Vec::new();
    let mut rebuilds = Vec::new();
    let passes: usize = std::env::var("PASSES")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3);
    // Warm the page cache and the definition cache. The tenant's events
    // are what a rebuild reads and applies (the log also holds the
    // platform's registration of the tenant).
    let (events, _) = read_all(&rt, &store);
    assert!(
        events > data::head(&engine).0 / 2,
        "the data set holds {events} events"
    );
    let mut delays = Vec::new();
    for _ in 0..passes {
        baseline.push(read_all(&rt, &store).1);
        let (took, probe) = rebuild(&rt, &engine);
        rebuilds.push(took);
        delays.extend(probe);
    }
    let rate = |d: &[Duration]| {
        let total: Duration = d.iter().sum();
        events as f64 * d.len() as f64 / total.as_secs_f64()
    };
    let raw = rate(&baseline);
    let ours = rate(&rebuilds);
    println!(
        "\nprojection_rebuild summary: {events} events, {} cases, {passes} passes",
        data::CASES
    );
    println!("read_all:              {raw:.0} events/s ({baseline:?})");
    println!(
        "rebuild cases view+search: {ours:.0} events/s = {:.1}% of read_all ({rebuilds:?})",
        100.0 * ours / raw
    );
    let p50 = quantile(&mut delays, 0.5);
    let p99 = quantile(&mut delays, 0.99);
    let max = quantile(&mut delays, 1.0);
    println!(
        "probe (1 ms ticks during the rebuilds): {} wake-ups, delay p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        delays.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
    );
    println!(
        "projection_rebuild: rebuild {ours:.0} events/s = {:.1}% of read_all ({raw:.0} events/s); probe p99 wake delay {:.2} ms (goal <= 5 ms)",
        100.0 * ours / raw,
        p99.as_secs_f64() * 1e3,
    );
    rt.block_on(engine.shutdown()).unwrap();
}
