//! `casebook soak`: a sustained mixed load on one embedded engine on a fresh
//! data directory, reporting throughput, latency, memory and disk as it goes
//! (issue 24).
//!
//! The load is the one an operator's engine sees: `writers` tasks (16 by
//! default) each open a burglary case and work it with 2 to 10 commands in
//! all (the report recorded, case-file updates, notes), and now and then add
//! a note to one of a few *shared* cases, each replaced by a fresh case after
//! [`SHARED_CASE_NOTES`] notes so that no case grows without bound;
//! `readers` tasks (2 by default) query the CID work queue and search the
//! burglaries, back to back. The bundled definitions, resources and
//! in-process services are deployed as `serve` deploys them.
//!
//! Every interval (a minute by default) one line is printed: commands and
//! their rate, command p50/p99/max, query p50/p99, errors, anonymous and
//! file-backed resident memory (`RssAnon`/`RssFile` of `/proc/self/status`),
//! the log's size on disk and the derived state's (projections, stream
//! index, snapshots). At the end, [`Summary::line`] prints the line issue 24
//! asks for. "Early" is intervals 3-7 of a 30-interval run and "late" the
//! last 5; a run of another length takes the same fractions of its
//! intervals (see [`Windows`]), and the summary says which it took.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use casebook_engine::case::{CaseCommand, CaseFile, CaseStatus, ItemRef};
use casebook_engine::engine::{CommandContext, Engine, EngineConfig, OpenCase};
use casebook_engine::log::TenantId;
use casebook_engine::projection::query::{PageRequest, SearchQuery, WorkQueueQuery};
use casebook_engine::projection::Consistency;
use casebook_engine::security::Principal;

/// Notes a shared case takes before a writer replaces it with a new one.
pub const SHARED_CASE_NOTES: u64 = 300;
/// Shared cases worked at once.
const SHARED_CASES: usize = 4;
/// One command in this many is a note on a shared case.
const SHARED_NOTE_ONE_IN: u64 = 8;
/// The tenant the load runs in (the demo tenant `serve` deploys to).
const TENANT: &str = "demo";

/// What to run.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// A data directory that does not exist yet or is empty.
    pub data: PathBuf,
    /// How long the load runs.
    pub duration: Duration,
    /// How often a line is printed.
    pub interval: Duration,
    /// Tasks opening and working cases.
    pub writers: usize,
    /// Tasks querying work queues and search.
    pub readers: usize,
}

impl SoakConfig {
    /// The issue's load (16 writers, 2 readers) for `duration` on `data`,
    /// a line a minute (or a tenth of the run, if it is shorter than ten
    /// minutes, at least a second).
    pub fn new(data: impl Into<PathBuf>, duration: Duration) -> Self {
        let interval = if duration >= Duration::from_secs(600) {
            Duration::from_secs(60)
        } else {
            (duration / 10).max(Duration::from_secs(1))
        };
        SoakConfig {
            data: data.into(),
            duration,
            interval,
            writers: 16,
            readers: 2,
        }
    }
}

/// Why a soak did not run.
#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    /// The data directory holds something: a soak only runs on a fresh one.
    #[error("{0}: not empty (a soak needs a fresh data directory)")]
    NotFresh(PathBuf),
    /// The engine failed to open, start, deploy or shut down.
    #[error("{0}")]
    Engine(String),
}

/// Bytes on disk (allocated blocks) of each store in the data directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUse {
    /// `<data>/log`: the segment files, the source of truth.
    pub log: u64,
    /// `<data>/projections`: the read models' sled database.
    pub projections: u64,
    /// `<data>/index`: the log's stream index (sled).
    pub index: u64,
    /// `<data>/snapshots`: case snapshots (sled).
    pub snapshots: u64,
}

impl DiskUse {
    /// Measures `data` (walks the folders: call it on a blocking thread).
    pub fn measure(data: &Path) -> DiskUse {
        DiskUse {
            log: allocated(&data.join("log")),
            projections: allocated(&data.join("projections")),
            index: allocated(&data.join("index")),
            snapshots: allocated(&data.join("snapshots")),
        }
    }

    /// Everything that can be rebuilt from the log.
    pub fn derived(&self) -> u64 {
        self.projections + self.index + self.snapshots
    }

    /// Derived state as a multiple of the log.
    pub fn derived_ratio(&self) -> f64 {
        self.derived() as f64 / self.log.max(1) as f64
    }

    /// The stream index as a multiple of the log.
    pub fn index_ratio(&self) -> f64 {
        self.index as f64 / self.log.max(1) as f64
    }
}

/// Allocated bytes of every file under `dir` (0 if it does not exist).
fn allocated(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            total += allocated(&entry.path());
        } else {
            total += meta.blocks() * 512;
        }
    }
    total
}

/// Resident memory of this process, in bytes: (anonymous, file-backed).
pub fn resident() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map_or(0, |kb| kb * 1024)
    };
    (field("RssAnon:"), field("RssFile:"))
}

/// Latencies in microseconds, in log-linear buckets (64 per power of two,
/// so a percentile is within about 1.6%): fixed size however long the run.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

const SUB_BUCKETS: u64 = 64;
const LINEAR: u64 = 2 * SUB_BUCKETS;
const POWERS: u64 = 40;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; (LINEAR + POWERS * SUB_BUCKETS) as usize],
            total: 0,
            max: 0,
        }
    }
}

impl Histogram {
    fn bucket(micros: u64) -> usize {
        if micros < LINEAR {
            return micros as usize;
        }
        let exp = 63 - u64::from(micros.leading_zeros());
        let shift = exp - 6;
        let mantissa = (micros >> shift) - SUB_BUCKETS;
        ((LINEAR + (shift - 1) * SUB_BUCKETS + mantissa) as usize)
            .min((LINEAR + POWERS * SUB_BUCKETS) as usize - 1)
    }

    /// The highest value that falls in bucket `i`.
    fn value(i: usize) -> u64 {
        let i = i as u64;
        if i < LINEAR {
            return i;
        }
        let shift = (i - LINEAR) / SUB_BUCKETS + 1;
        let mantissa = (i - LINEAR) % SUB_BUCKETS + SUB_BUCKETS;
        ((mantissa + 1) << shift) - 1
    }

    /// Records one latency.
    pub fn record(&mut self, d: Duration) {
        let micros = d.as_micros().min(u128::from(u64::MAX)) as u64;
        self.counts[Self::bucket(micros)] += 1;
        self.total += 1;
        self.max = self.max.max(micros);
    }

    /// Adds `other`'s latencies to these.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The `p` quantile (0..=1) in milliseconds (0 when empty).
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((self.total as f64 * p).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value(i).min(self.max) as f64 / 1000.0;
            }
        }
        self.max as f64 / 1000.0
    }

    /// The largest latency in milliseconds.
    pub fn max_ms(&self) -> f64 {
        self.max as f64 / 1000.0
    }
}

/// What the tasks share: the current interval's latencies and counters.
#[derive(Default)]
struct Tally {
    commands: Mutex<Histogram>,
    queries: Mutex<Histogram>,
    errors: AtomicU64,
}

impl Tally {
    fn take(&self) -> (Histogram, Histogram) {
        let c = std::mem::take(&mut *self.commands.lock().unwrap_or_else(|p| p.into_inner()));
        let q = std::mem::take(&mut *self.queries.lock().unwrap_or_else(|p| p.into_inner()));
        (c, q)
    }
}

/// One interval's figures.
#[derive(Clone)]
pub struct Interval {
    /// The interval's number, from 1.
    pub number: usize,
    /// Its length.
    pub elapsed: Duration,
    /// Command latencies.
    pub commands: Histogram,
    /// Query latencies.
    pub queries: Histogram,
    /// Commands and queries that failed.
    pub errors: u64,
    /// Anonymous resident memory at its end.
    pub rss_anon: u64,
    /// File-backed resident memory at its end.
    pub rss_file: u64,
    /// Disk use at its end.
    pub disk: DiskUse,
}

const MIB: f64 = 1024.0 * 1024.0;

impl Interval {
    /// Commands per second.
    pub fn rate(&self) -> f64 {
        self.commands.count() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The line printed for it.
    pub fn line(&self) -> String {
        let d = &self.disk;
        format!(
            "soak: interval {:>3}: {} commands ({:.0}/s), cmd p50 {:.2} p99 {:.2} max {:.1} ms, \
             query p50 {:.2} p99 {:.2} ms, {} errors, anon {:.0} MiB, file {:.0} MiB, \
             log {:.1} MiB, derived {:.1} MiB (projections {:.1}, index {:.1}, snapshots {:.1})",
            self.number,
            self.commands.count(),
            self.rate(),
            self.commands.percentile_ms(0.5),
            self.commands.percentile_ms(0.99),
            self.commands.max_ms(),
            self.queries.percentile_ms(0.5),
            self.queries.percentile_ms(0.99),
            self.errors,
            self.rss_anon as f64 / MIB,
            self.rss_file as f64 / MIB,
            d.log as f64 / MIB,
            d.derived() as f64 / MIB,
            d.projections as f64 / MIB,
            d.index as f64 / MIB,
            d.snapshots as f64 / MIB,
        )
    }
}

/// Which intervals are "early" and "late": for 30 intervals, 3-7 and the
/// last 5 (issue 24); for `n`, the same fractions of `n`, at least one each.
/// Anonymous memory is compared between the run's middle and its end (the
/// issue's bound is on the last 15 of 30 minutes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// First and last early interval (numbered from 1).
    pub early: (usize, usize),
    /// First and last late interval.
    pub late: (usize, usize),
    /// The interval whose end is the middle of the run.
    pub middle: usize,
}

impl Windows {
    /// The windows of a run of `n` intervals (`n` >= 1).
    pub fn of(n: usize) -> Windows {
        let n = n.max(1);
        let scaled = |k: usize| (n * k + 15) / 30;
        let first = (scaled(3)).clamp(1, n);
        let last = scaled(7).clamp(first, n);
        let late_len = scaled(5).max(1);
        Windows {
            early: (first, last),
            late: (n + 1 - late_len.min(n), n),
            middle: (n / 2).max(1),
        }
    }
}

/// The run's figures.
pub struct Summary {
    /// How long the load was asked to run.
    pub duration: Duration,
    /// Every interval.
    pub intervals: Vec<Interval>,
    /// Disk use after the engine shut down.
    pub disk: DiskUse,
    /// Which intervals the comparisons take.
    pub windows: Windows,
}

impl Summary {
    fn merged(&self, (from, to): (usize, usize)) -> (Histogram, Histogram, f64) {
        let mut c = Histogram::default();
        let mut q = Histogram::default();
        let mut secs = 0.0;
        for i in &self.intervals[from - 1..to] {
            c.merge(&i.commands);
            q.merge(&i.queries);
            secs += i.elapsed.as_secs_f64();
        }
        let rate = c.count() as f64 / f64::max(secs, 1e-9);
        (c, q, rate)
    }

    /// Commands acknowledged over the run.
    pub fn commands(&self) -> u64 {
        self.intervals.iter().map(|i| i.commands.count()).sum()
    }

    /// Commands and queries that failed over the run.
    pub fn errors(&self) -> u64 {
        self.intervals.iter().map(|i| i.errors).sum()
    }

    /// Anonymous resident memory at the middle and at the end of the run.
    pub fn rss_anon(&self) -> (u64, u64) {
        let at = |n: usize| self.intervals.get(n - 1).map_or(0, |i| i.rss_anon);
        (at(self.windows.middle), at(self.intervals.len()))
    }

    /// Early and late: (commands/s, command p99 ms, query p99 ms).
    pub fn early_late(&self) -> ((f64, f64, f64), (f64, f64, f64)) {
        let pick = |w| {
            let (c, q, rate) = self.merged(w);
            (rate, c.percentile_ms(0.99), q.percentile_ms(0.99))
        };
        (pick(self.windows.early), pick(self.windows.late))
    }

    /// Issue 24's summary line.
    pub fn line(&self) -> String {
        // The length asked for (the load runs a few milliseconds longer).
        let minutes = self.duration.as_secs_f64() / 60.0;
        let minutes = if minutes.fract() == 0.0 {
            format!("{minutes:.0}")
        } else {
            format!("{minutes:.2}")
        };
        let (a, b) = self.rss_anon();
        let ((r1, p1, q1), (r2, p2, q2)) = self.early_late();
        format!(
            "soak: {minutes} min, {} commands; derived {:.2} GB = {:.2}x log; index {:.2}x log; \
             anon RSS {:.0} -> {:.0} MiB; cmd/s {:.0} -> {:.0}; cmd p99 {:.1} -> {:.1} ms; \
             query p99 {:.1} -> {:.1} ms",
            self.commands(),
            self.disk.derived() as f64 / 1e9,
            self.disk.derived_ratio(),
            self.disk.index_ratio(),
            a as f64 / MIB,
            b as f64 / MIB,
            r1,
            r2,
            p1,
            p2,
            q1,
            q2,
        )
    }

    /// Which intervals the summary compared, when they are not the issue's
    /// (a run of other than 30 intervals).
    pub fn windows_note(&self) -> Option<String> {
        let w = self.windows;
        (self.intervals.len() != 30).then(|| {
            format!(
                "soak: {} intervals of {:.0} s: early = intervals {}-{}, late = {}-{}, \
                 anon RSS from the end of interval {} (the issue's windows scaled to the run)",
                self.intervals.len(),
                self.intervals
                    .first()
                    .map_or(0.0, |i| i.elapsed.as_secs_f64()),
                w.early.0,
                w.early.1,
                w.late.0,
                w.late.1,
                w.middle
            )
        })
    }
}

/// A small fast generator for the load's choices (no crate needed).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) % n.max(1)
    }
}

fn tenant() -> TenantId {
    TenantId::new(TENANT).expect("a valid tenant id")
}

fn officer(n: usize) -> Principal {
    Principal::new(tenant(), format!("soak-{n}")).with_roles([
        "call_handler",
        "investigator",
        "response_officer",
    ])
}

fn report(rng: &mut Rng) -> CaseFile {
    let premises = ["dwelling", "commercial", "other"][rng.below(3) as usize];
    CaseFile::new()
        .with("reported_at", "2026-12-06T09:30:00Z")
        .with(
            "incident_location",
            format!("loc-{}-high-street", rng.below(500)),
        )
        .with("premises_type", premises)
        .with("victim", format!("person-{}", rng.below(100_000)))
        .with("victim_vulnerable", rng.below(4) == 0)
}

/// The `step`th command (from 1) on a writer's own case.
fn work(step: usize, rng: &mut Rng) -> CaseCommand {
    const WORDS: [&str; 6] = ["window", "door", "garage", "laptop", "bicycle", "jewellery"];
    match step {
        1 => CaseCommand::Complete {
            item: ItemRef::key("record_report"),
            outputs: CaseFile::new().with("offenders_on_scene", rng.below(3) == 0),
        },
        s if s % 3 == 0 => CaseCommand::UpdateCaseFile {
            changes: CaseFile::new()
                .with("estimated_loss", rng.below(5000) as f64)
                .with(
                    "nfa_reason",
                    format!(
                        "{} {} forced",
                        WORDS[rng.below(6) as usize],
                        WORDS[rng.below(6) as usize]
                    ),
                ),
        },
        _ => CaseCommand::AddNote {
            text: format!(
                "house-to-house enquiry {}: no answer at number {}",
                step,
                rng.below(200)
            ),
        },
    }
}

/// The shared cases: each slot's case id and the notes it has taken.
struct Shared {
    slots: Vec<Mutex<(String, u64)>>,
}

async fn open(engine: &Engine, who: &Principal, rng: &mut Rng) -> Result<String, String> {
    let open = OpenCase::new("burglary", report(rng));
    engine
        .open_case(who, open)
        .await
        .map(|o| o.case_id.to_string())
        .map_err(|e| e.to_string())
}

async fn writer(
    engine: Engine,
    n: usize,
    shared: Arc<Shared>,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) {
    let who = officer(n);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (n as u64 + 1).wrapping_mul(0xff51_afd7_ed55_8ccd));
    let record = |t: Instant, ok: bool| {
        if ok {
            tally
                .commands
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .record(t.elapsed());
        } else {
            tally.errors.fetch_add(1, Ordering::Relaxed);
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let commands = 2 + rng.below(9) as usize;
        let t = Instant::now();
        let case = open(&engine, &who, &mut rng).await;
        record(t, case.is_ok());
        let Ok(case) = case else { continue };
        for step in 1..commands {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            if rng.below(SHARED_NOTE_ONE_IN) == 0 {
                let slot = &shared.slots[rng.below(SHARED_CASES as u64) as usize];
                let (id, replace) = {
                    let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
                    s.1 += 1;
                    (s.0.clone(), s.1 == SHARED_CASE_NOTES)
                };
                let t = Instant::now();
                let note = CaseCommand::AddNote {
                    text: format!("shared note from soak-{n}"),
                };
                let ok = engine
                    .execute(&who, &id, note, CommandContext::default())
                    .await
                    .is_ok();
                record(t, ok);
                if replace {
                    let t = Instant::now();
                    let fresh = open(&engine, &who, &mut rng).await;
                    record(t, fresh.is_ok());
                    if let Ok(fresh) = fresh {
                        *slot.lock().unwrap_or_else(|p| p.into_inner()) = (fresh, 0);
                    }
                }
            }
            let t = Instant::now();
            let ok = engine
                .execute(&who, &case, work(step, &mut rng), CommandContext::default())
                .await
                .is_ok();
            record(t, ok);
        }
    }
}

async fn reader(engine: Engine, n: usize, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let who = officer(1000 + n);
    let queue = WorkQueueQuery {
        team: Some("cid".into()),
        page: PageRequest::first(50),
        ..WorkQueueQuery::default()
    };
    let search = SearchQuery {
        case_type: Some("burglary".into()),
        status: vec![CaseStatus::Active],
        page: PageRequest::first(20),
        ..SearchQuery::default()
    };
    let text = SearchQuery {
        case_type: Some("burglary".into()),
        text: Some("garage window".into()),
        page: PageRequest::first(20),
        ..SearchQuery::default()
    };
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let ok = match i % 3 {
            0 => engine
                .work_queue(&who, &queue, Consistency::Eventual)
                .await
                .is_ok(),
            1 => engine
                .search_cases(&who, &search, Consistency::Eventual)
                .await
                .is_ok(),
            _ => engine
                .search_cases(&who, &text, Consistency::Eventual)
                .await
                .is_ok(),
        };
        if ok {
            tally
                .queries
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .record(t.elapsed());
        } else {
            tally.errors.fetch_add(1, Ordering::Relaxed);
        }
        i += 1;
    }
}

async fn measure(data: PathBuf) -> DiskUse {
    tokio::task::spawn_blocking(move || DiskUse::measure(&data))
        .await
        .unwrap_or_default()
}

/// Opens an engine on `config.data` as `serve` would for the demo tenant
/// (built-in services, bundled resources and definitions), runs the load
/// for `config.duration`, giving `out` each interval's line as it ends,
/// shuts the engine down and returns the figures.
///
/// Errors: [`SoakError::NotFresh`] if the directory holds anything;
/// [`SoakError::Engine`] if the engine fails to open, start, deploy or shut
/// down (failed commands and queries are counted, not returned).
pub async fn run(config: SoakConfig, mut out: impl FnMut(&str)) -> Result<Summary, SoakError> {
    let data = config.data.clone();
    if std::fs::read_dir(&data).is_ok_and(|mut d| d.next().is_some()) {
        return Err(SoakError::NotFresh(data));
    }
    let engine_err = |e: &dyn std::fmt::Display| SoakError::Engine(e.to_string());
    let services =
        crate::server::builtin_services(&tenant(), &crate::config::EmailConfig::default(), &data);
    let engine = {
        let data = data.clone();
        let engine_config = EngineConfig {
            tenants: vec![tenant()],
            services,
            ..EngineConfig::default()
        };
        tokio::task::spawn_blocking(move || Engine::open_with(data, engine_config))
            .await
            .map_err(|e| engine_err(&e))?
            .map_err(|e| engine_err(&e))?
    };
    engine.start().await.map_err(|e| engine_err(&e))?;
    crate::server::deploy_bundled_resources(&engine, TENANT)
        .await
        .map_err(|e| engine_err(&e))?;
    crate::server::deploy_bundled(&engine, TENANT)
        .await
        .map_err(|e| engine_err(&e))?;

    let mut rng = Rng(0x5eed);
    let mut slots = Vec::new();
    for _ in 0..SHARED_CASES {
        let id = open(&engine, &officer(0), &mut rng)
            .await
            .map_err(|e| SoakError::Engine(format!("opening a shared case: {e}")))?;
        slots.push(Mutex::new((id, 0)));
    }
    // Readers start once the views hold the deployment and the shared
    // cases: a query naming a case type or team the views do not know yet
    // is refused, and would count as an error of the load.
    let ready = engine
        .open_case(&officer(0), OpenCase::new("burglary", report(&mut rng)))
        .await
        .map_err(|e| SoakError::Engine(format!("opening a case: {e}")))?;
    if let Some(position) = ready.position {
        engine
            .wait_for_projections(&officer(0), position, Duration::from_secs(60))
            .await
            .map_err(|e| SoakError::Engine(format!("waiting for the views: {e}")))?;
    }
    let shared = Arc::new(Shared { slots });
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for n in 0..config.writers {
        tasks.push(tokio::spawn(writer(
            engine.clone(),
            n + 1,
            shared.clone(),
            tally.clone(),
            stop.clone(),
        )));
    }
    for n in 0..config.readers {
        tasks.push(tokio::spawn(reader(
            engine.clone(),
            n + 1,
            tally.clone(),
            stop.clone(),
        )));
    }

    let started = Instant::now();
    let mut intervals = Vec::new();
    let mut last = started;
    let mut errors_before = 0;
    loop {
        let number = intervals.len() + 1;
        let end = started + config.interval * number as u32;
        let end = end.min(started + config.duration);
        tokio::time::sleep_until(end.into()).await;
        let (commands, queries) = tally.take();
        let now = Instant::now();
        let errors = tally.errors.load(Ordering::Relaxed);
        let (rss_anon, rss_file) = resident();
        let interval = Interval {
            number,
            elapsed: now - last,
            commands,
            queries,
            errors: errors - errors_before,
            rss_anon,
            rss_file,
            disk: measure(data.clone()).await,
        };
        errors_before = errors;
        last = now;
        out(&interval.line());
        intervals.push(interval);
        if now >= started + config.duration {
            break;
        }
    }
    let duration = config.duration;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        // A task that panicked counts as an error; the run's figures stand.
        if t.await.is_err() {
            tally.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    engine.shutdown().await.map_err(|e| engine_err(&e))?;
    let disk = measure(data).await;
    let windows = Windows::of(intervals.len());
    Ok(Summary {
        duration,
        intervals,
        disk,
        windows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issues_windows_for_thirty_intervals_and_scaled_ones_otherwise() {
        assert_eq!(
            Windows::of(30),
            Windows {
                early: (3, 7),
                late: (26, 30),
                middle: 15
            }
        );
        assert_eq!(
            Windows::of(10),
            Windows {
                early: (1, 2),
                late: (9, 10),
                middle: 5
            }
        );
        let one = Windows::of(1);
        assert_eq!((one.early, one.late, one.middle), ((1, 1), (1, 1), 1));
    }

    #[test]
    fn percentiles_are_within_two_percent() {
        let mut h = Histogram::default();
        for us in 1..=100_000u64 {
            h.record(Duration::from_micros(us));
        }
        for (p, want) in [(0.5, 50.0), (0.99, 99.0), (1.0, 100.0)] {
            let got = h.percentile_ms(p);
            assert!((got - want).abs() / want < 0.02, "p{p}: {got} vs {want}");
        }
        assert_eq!(h.count(), 100_000);
        assert_eq!(h.max_ms(), 100.0);
        let mut small = Histogram::default();
        small.record(Duration::from_micros(7));
        assert_eq!(small.percentile_ms(0.99), 0.007);
    }

    #[test]
    fn resident_memory_is_read() {
        let (anon, _) = resident();
        assert!(anon > 0);
    }
}
