//! `replay`: read all events of a 1M-event store in order — with `read_all`
//! (owned events) and with `read_all_batch` (events visited in place) —
//! against a raw sequential read of the same segment files in the same run.
//!
//! The store is built once under `target/bench-data/replay-1m-v2` and reused by
//! later runs. Prints events/s for each and the ratios.
//!
//! ```text
//! cargo bench --bench replay
//! ```

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use casebook::log::{
    ActorId, EventData, EventStore, ExpectedVersion, GlobalPosition, LogStore, LogStoreConfig,
    Metadata, Source, StreamId, TenantId,
};
use criterion::{Criterion, Throughput};

const EVENTS: u64 = 1_000_000;
const PER_APPEND: usize = 500;
const PAGE: usize = 10_000;

/// (measurement name, events read, time taken) per criterion sample batch.
type Rates = Arc<Mutex<Vec<(&'static str, u64, Duration)>>>;

fn tenant() -> TenantId {
    TenantId::new("west-midlands").unwrap()
}

fn store_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data/replay-1m-v2")
}

fn build(rt: &tokio::runtime::Runtime) -> LogStore {
    let dir = store_dir();
    // No zero-ahead: the raw read below reads the segment files whole, and
    // they should hold the log's bytes and nothing else.
    let config = || LogStoreConfig {
        preallocate: 0,
        ..LogStoreConfig::default()
    };
    if let Ok(store) = LogStore::open_with(&dir, config()) {
        if store.head_position() == Some(GlobalPosition(EVENTS - 1)) {
            return store;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let store = LogStore::open_with(&dir, config()).unwrap();
    let started = Instant::now();
    rt.block_on(async {
        let writers = 8u64;
        let mut tasks = Vec::new();
        for w in 0..writers {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let appends = EVENTS / writers / PER_APPEND as u64;
                for a in 0..appends {
                    let stream =
                        StreamId::new(tenant(), "case", &format!("C-{w}-{}", a % 50)).unwrap();
                    let meta = Metadata::new(
                        ActorId::new("pc-4521"),
                        Source::with_reference("niche-rms", "CR/1/26"),
                    )
                    .with_reason("bench");
                    let events = (0..PER_APPEND)
                        .map(|_| EventData::new("CaseFileUpdated", vec![0x5a; 200], meta.clone()))
                        .collect();
                    store
                        .append(&stream, ExpectedVersion::Any, events)
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    eprintln!("built a {EVENTS}-event store in {:?}", started.elapsed());
    assert_eq!(store.head_position(), Some(GlobalPosition(EVENTS - 1)));
    store
}

fn segment_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(store_dir().join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    files
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = build(&rt);
    let files = segment_files();
    let bytes: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
    let rates: Rates = Arc::default();
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(15))
        .configure_from_args();
    let mut group = c.benchmark_group("replay");
    group.throughput(Throughput::Elements(EVENTS));
    group.bench_function("raw_sequential_read", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let mut buf = vec![0u8; 1 << 20];
            for _ in 0..iters {
                let mut total = 0u64;
                for f in &files {
                    let mut file = std::fs::File::open(f).unwrap();
                    loop {
                        let n = file.read(&mut buf).unwrap();
                        if n == 0 {
                            break;
                        }
                        total += n as u64;
                    }
                }
                assert_eq!(total, bytes);
            }
            let elapsed = start.elapsed();
            rates
                .lock()
                .unwrap()
                .push(("raw sequential read", iters * EVENTS, elapsed));
            elapsed
        })
    });
    group.bench_function("read_all", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let count = rt.block_on(async {
                    let mut from = GlobalPosition::START;
                    let mut count = 0u64;
                    loop {
                        let page = store.read_all(&tenant(), from, PAGE).await.unwrap();
                        let Some(last) = page.last() else { break };
                        from = last.position.next();
                        count += page.len() as u64;
                    }
                    count
                });
                assert_eq!(count, EVENTS);
            }
            let elapsed = start.elapsed();
            rates
                .lock()
                .unwrap()
                .push(("read_all", iters * EVENTS, elapsed));
            elapsed
        })
    });
    group.bench_function("read_all_batch", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let (count, bytes) = rt.block_on(async {
                    let mut from = GlobalPosition::START;
                    let (mut count, mut bytes) = (0u64, 0u64);
                    loop {
                        let batch = store.read_all_batch(&tenant(), from, PAGE).await.unwrap();
                        let Some(last) = batch.last_position() else {
                            break;
                        };
                        // Visit every event: position, type and payload.
                        for event in &batch {
                            count += 1;
                            bytes += event.payload().len() as u64 + event.event_type().len() as u64;
                            std::hint::black_box(event.position());
                        }
                        from = last.next();
                    }
                    (count, bytes)
                });
                assert_eq!(count, EVENTS);
                std::hint::black_box(bytes);
            }
            let elapsed = start.elapsed();
            rates
                .lock()
                .unwrap()
                .push(("read_all_batch", iters * EVENTS, elapsed));
            elapsed
        })
    });
    group.finish();
    c.final_summary();

    let rates = rates.lock().unwrap();
    let rate = |name: &str| {
        let (events, time) = rates
            .iter()
            .filter(|r| r.0 == name)
            .fold((0u64, Duration::ZERO), |(e, t), r| (e + r.1, t + r.2));
        events as f64 / time.as_secs_f64()
    };
    let raw = rate("raw sequential read");
    let ours = rate("read_all");
    println!(
        "\nreplay summary: {EVENTS} events, {:.0} MiB of segments",
        bytes as f64 / (1 << 20) as f64
    );
    println!(
        "raw sequential read: {raw:.0} events/s ({:.0} MiB/s)",
        raw * bytes as f64 / EVENTS as f64 / (1 << 20) as f64
    );
    println!(
        "read_all:            {ours:.0} events/s = {:.1}% of raw (owned RecordedEvents)",
        100.0 * ours / raw
    );
    let batch = rate("read_all_batch");
    println!(
        "read_all_batch:      {batch:.0} events/s = {:.1}% of raw (every event visited as an EventRef)",
        100.0 * batch / raw
    );
}
