//! `append`: durable appends of 200-byte events from 1, 16 and 64 concurrent
//! writers (1 and 10 events per append), against two baselines measured in the
//! same run: the disk's own limit (raw 200-byte records appended to a file with
//! one `fdatasync` per 64 records) and raw sled (the same bytes in batches of
//! 256 with one flush per batch).
//!
//! One more baseline is for information: the same records written over a file
//! already filled with zeros and synced (outside the timing), one `fdatasync`
//! per 64. Each sync then has no new size or blocks to journal; it is what
//! the store's zero-ahead (`LogStoreConfig::preallocate`) aims at, while the
//! goal stays measured against the growing file.
//!
//! Besides criterion's own report, it prints a summary with events/s, the ratio
//! to the raw file limit, and p50/p99 acknowledgement latency per append.
//!
//! ```text
//! cargo bench --bench append
//! ```

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use casebook::log::{
    ActorId, EventData, EventStore, ExpectedVersion, LogStore, LogStoreConfig, Metadata, Source,
    StreamId, TenantId,
};
use criterion::{BenchmarkId, Criterion, Throughput};

const PAYLOAD: usize = 200;
const RECORDS_PER_SYNC: usize = 64;
const SLED_BATCH: usize = 256;
/// The pre-zeroed baseline's file is zeroed this much at a time.
const ZERO_CHUNK: usize = 8 << 20;

#[derive(Default)]
struct Tally {
    events: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

type Tallies = Arc<Mutex<BTreeMap<String, Tally>>>;

fn record(tallies: &Tallies, name: &str, events: u64, elapsed: Duration, latencies: Vec<Duration>) {
    let mut t = tallies.lock().unwrap();
    let tally = t.entry(name.to_string()).or_default();
    tally.events += events;
    tally.elapsed += elapsed;
    tally.latencies.extend(latencies);
}

fn event() -> EventData {
    let meta = Metadata::new(ActorId::new("pc-4521"), Source::system("bench"));
    EventData::new("BenchEvent", vec![0x5a; PAYLOAD], meta)
}

fn bench_dir() -> tempfile::TempDir {
    // Under target/ so the bench measures the project's disk, not a tmpfs.
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-tmp");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

/// Times `iters` writes of 64 records of 200 bytes with `write` (which
/// syncs), records them under `name` and returns the time taken.
fn groups_of_64(
    tallies: &Tallies,
    name: &str,
    iters: u64,
    mut write: impl FnMut(&[u8]),
) -> Duration {
    let buf = [0x5au8; PAYLOAD].repeat(RECORDS_PER_SYNC);
    let start = Instant::now();
    let mut latencies = Vec::with_capacity(iters as usize);
    for _ in 0..iters {
        let t = Instant::now();
        write(&buf);
        latencies.push(t.elapsed());
    }
    let elapsed = start.elapsed();
    record(
        tallies,
        name,
        iters * RECORDS_PER_SYNC as u64,
        elapsed,
        latencies,
    );
    elapsed
}

fn raw_file(c: &mut Criterion, tallies: &Tallies) {
    let dir = bench_dir();
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("raw.log"))
        .unwrap();
    let rec = [0x5au8; PAYLOAD];
    let mut group = c.benchmark_group("baseline");
    group.throughput(Throughput::Elements(RECORDS_PER_SYNC as u64));
    group.bench_function("raw_file_fdatasync_per_64", |b| {
        b.iter_custom(|iters| {
            groups_of_64(tallies, "raw file", iters, |buf| {
                file.write_all(buf).unwrap();
                file.sync_data().unwrap();
            })
        })
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("raw_file_fdatasync_per_record", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let mut latencies = Vec::with_capacity(iters as usize);
            for _ in 0..iters {
                let t = Instant::now();
                file.write_all(&rec).unwrap();
                file.sync_data().unwrap();
                latencies.push(t.elapsed());
            }
            let elapsed = start.elapsed();
            record(
                tallies,
                "raw fdatasync (1 record)",
                iters,
                elapsed,
                latencies,
            );
            elapsed
        })
    });
    group.finish();
}

/// 200-byte records written over zeros that were written and synced before
/// the timing, one `fdatasync` per 64 records.
fn raw_file_prezeroed(c: &mut Criterion, tallies: &Tallies) {
    let dir = bench_dir();
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(dir.path().join("raw-prezeroed.log"))
        .unwrap();
    let zeros = vec![0u8; ZERO_CHUNK];
    let mut zeroed = 0u64;
    let mut pos = 0u64;
    let mut group = c.benchmark_group("baseline");
    group.throughput(Throughput::Elements(RECORDS_PER_SYNC as u64));
    group.bench_function("raw_file_prezeroed_fdatasync_per_64", |b| {
        b.iter_custom(|iters| {
            let need = pos + iters * (RECORDS_PER_SYNC * PAYLOAD) as u64;
            while zeroed < need {
                file.write_all_at(&zeros, zeroed).unwrap();
                zeroed += ZERO_CHUNK as u64;
            }
            file.sync_data().unwrap();
            groups_of_64(tallies, "raw file pre-zeroed", iters, |buf| {
                file.write_all_at(buf, pos).unwrap();
                file.sync_data().unwrap();
                pos += buf.len() as u64;
            })
        })
    });
    group.finish();
}

fn raw_sled(c: &mut Criterion, tallies: &Tallies) {
    let dir = bench_dir();
    let db = sled::open(dir.path().join("sled")).unwrap();
    let rec = [0x5au8; PAYLOAD];
    let mut key = 0u64;
    let mut group = c.benchmark_group("baseline");
    group.throughput(Throughput::Elements(SLED_BATCH as u64));
    group.bench_function("raw_sled_batch_256_flush", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let mut latencies = Vec::with_capacity(iters as usize);
            for _ in 0..iters {
                let t = Instant::now();
                let mut batch = sled::Batch::default();
                for _ in 0..SLED_BATCH {
                    batch.insert(&key.to_be_bytes(), &rec[..]);
                    key += 1;
                }
                db.apply_batch(batch).unwrap();
                db.flush().unwrap();
                latencies.push(t.elapsed());
            }
            let elapsed = start.elapsed();
            record(
                tallies,
                "raw sled",
                iters * SLED_BATCH as u64,
                elapsed,
                latencies,
            );
            elapsed
        })
    });
    group.finish();
}

fn log_store(c: &mut Criterion, tallies: &Tallies) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = bench_dir();
    let store = LogStore::open_with(dir.path(), LogStoreConfig::default()).unwrap();
    let tenant = TenantId::new("bench").unwrap();
    let mut group = c.benchmark_group("log_store_append");
    for writers in [1usize, 16, 64] {
        for per_append in [1usize, 10] {
            let appends_per_writer = (256 / writers).max(4);
            let events_per_iter = (writers * appends_per_writer * per_append) as u64;
            group.throughput(Throughput::Elements(events_per_iter));
            let name = format!("{writers} writers x {per_append} per append");
            group.bench_function(
                BenchmarkId::new("writers", format!("{writers}x{per_append}")),
                |b| {
                    b.iter_custom(|iters| {
                        let (elapsed, latencies) = rt.block_on(async {
                            let start = Instant::now();
                            let mut tasks = Vec::with_capacity(writers);
                            for w in 0..writers {
                                let store = store.clone();
                                let stream =
                                    StreamId::new(tenant.clone(), "case", &format!("w{w}"))
                                        .unwrap();
                                tasks.push(tokio::spawn(async move {
                                    let mut latencies = Vec::new();
                                    for _ in 0..iters as usize * appends_per_writer {
                                        let events = (0..per_append).map(|_| event()).collect();
                                        let t = Instant::now();
                                        store
                                            .append(&stream, ExpectedVersion::Any, events)
                                            .await
                                            .unwrap();
                                        latencies.push(t.elapsed());
                                    }
                                    latencies
                                }));
                            }
                            let mut all = Vec::new();
                            for t in tasks {
                                all.extend(t.await.unwrap());
                            }
                            (start.elapsed(), all)
                        });
                        record(tallies, &name, iters * events_per_iter, elapsed, latencies);
                        elapsed
                    })
                },
            );
        }
    }
    group.finish();
    rt.block_on(store.close()).unwrap();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(tallies: &Tallies) {
    let t = tallies.lock().unwrap();
    let rate = |name: &str| {
        t.get(name)
            .map(|x| x.events as f64 / x.elapsed.as_secs_f64())
            .unwrap_or(f64::NAN)
    };
    let raw = rate("raw file");
    let one_sync = t
        .get("raw fdatasync (1 record)")
        .map(|x| {
            let mut l = x.latencies.clone();
            l.sort();
            percentile(&l, 0.5)
        })
        .unwrap_or_default();
    println!("\nappend summary (events/s over all measured iterations; latency per append call)");
    println!(
        "{:<32} {:>12} {:>10} {:>10} {:>10}",
        "case", "events/s", "vs raw", "p50", "p99"
    );
    for (name, x) in t.iter() {
        let mut l = x.latencies.clone();
        l.sort();
        let r = x.events as f64 / x.elapsed.as_secs_f64();
        println!(
            "{:<32} {:>12.0} {:>9.1}% {:>10.1?} {:>10.1?}",
            name,
            r,
            100.0 * r / raw,
            percentile(&l, 0.5),
            percentile(&l, 0.99)
        );
    }
    if let Some(one) = t.get("1 writers x 1 per append") {
        let mut l = one.latencies.clone();
        l.sort();
        let p50 = percentile(&l, 0.5);
        println!(
            "1 writer p50 latency {:?} = {:.2}x one raw fdatasync ({:?})",
            p50,
            p50.as_secs_f64() / one_sync.as_secs_f64(),
            one_sync
        );
    }
    println!(
        "64 writers x 1: {:.1}% of the raw file limit; raw sled is {:.1}% of it",
        100.0 * rate("64 writers x 1 per append") / raw,
        100.0 * rate("raw sled") / raw
    );
    let prezeroed = rate("raw file pre-zeroed");
    println!(
        "for information: a pre-zeroed raw file reaches {:.0} events/s = {:.1}% of the raw file \
         limit; 64 writers x 1 is {:.1}% of that",
        prezeroed,
        100.0 * prezeroed / raw,
        100.0 * rate("64 writers x 1 per append") / prezeroed
    );
}

fn main() {
    let tallies: Tallies = Arc::default();
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    raw_file(&mut c, &tallies);
    raw_file_prezeroed(&mut c, &tallies);
    raw_sled(&mut c, &tallies);
    log_store(&mut c, &tallies);
    c.final_summary();
    summary(&tallies);
}
