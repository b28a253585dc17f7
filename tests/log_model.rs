//! Model-based property test of the event stores: random sequences of appends,
//! reads and reopens, each result checked against a simple in-test model.
//!
//! The model is a `Vec` of events plus per-stream versions, and implements the
//! documented append rules directly: idempotent repeats (all ids stored,
//! identically, in order, in this stream) first, then id conflicts, then the
//! expected-version check. The same property runs against `MemoryStore` and
//! `LogStore` (small segments, closed or just dropped and reopened).

mod common;

use std::collections::HashMap;
use std::path::Path;

use casebook::log::{
    AppendResult, Direction, EventData, EventId, EventStore, ExpectedVersion, GlobalPosition,
    LogError, LogStore, LogStoreConfig, MemoryStore, RecordedEvent, StreamId, StreamVersion,
    TenantId, Timestamp,
};
use common::{meta, stream, tenant};
use proptest::prelude::*;
use proptest::test_runner::Config;
use tempfile::TempDir;

const TENANTS: [&str; 2] = ["kent", "avon"];
/// (tenant index, stream id): two streams per tenant, one id shared across tenants.
const STREAMS: [(usize, &str); 4] = [(0, "A"), (0, "B"), (1, "A"), (1, "C")];

fn stream_at(i: usize) -> StreamId {
    let (t, id) = STREAMS[i % STREAMS.len()];
    stream(TENANTS[t], id)
}

// ---------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Expect {
    Any,
    NoStream,
    StreamExists,
    Exact(u64),
    /// The stream's actual version (or `NoStream` if it has none).
    Right,
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        stream: usize,
        count: usize,
        expected: Expect,
    },
    /// Sends an earlier append's events again (whether it succeeded or not),
    /// possibly to another stream or with one new event added.
    Reappend {
        pick: usize,
        expected: Expect,
        other_stream: Option<usize>,
        add_fresh: bool,
    },
    ReadStream {
        stream: usize,
        backward: bool,
        from: Option<u64>,
        limit: usize,
    },
    ReadAll {
        tenant: usize,
        from: u64,
        limit: usize,
    },
    /// LogStore only: drop the store (after `close` or not) and open it again.
    Reopen { close_first: bool },
}

fn expect_strategy() -> impl Strategy<Value = Expect> {
    prop_oneof![
        1 => Just(Expect::Any),
        1 => Just(Expect::NoStream),
        1 => Just(Expect::StreamExists),
        1 => (0u64..6).prop_map(Expect::Exact),
        2 => Just(Expect::Right),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..STREAMS.len(), 1..=4usize, expect_strategy()).prop_map(
            |(stream, count, expected)| Op::Append { stream, count, expected }
        ),
        2 => (
            any::<usize>(),
            expect_strategy(),
            proptest::option::weighted(0.2, 0..STREAMS.len()),
            proptest::bool::weighted(0.2),
        )
            .prop_map(|(pick, expected, other_stream, add_fresh)| Op::Reappend {
                pick,
                expected,
                other_stream,
                add_fresh,
            }),
        2 => (0..STREAMS.len(), any::<bool>(), proptest::option::of(0u64..8), 1..8usize).prop_map(
            |(stream, backward, from, limit)| Op::ReadStream { stream, backward, from, limit }
        ),
        2 => (0..TENANTS.len(), 0u64..40, 1..12usize)
            .prop_map(|(tenant, from, limit)| Op::ReadAll { tenant, from, limit }),
        1 => any::<bool>().prop_map(|close_first| Op::Reopen { close_first }),
    ]
}

// ---------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------

struct ModelEvent {
    stream: StreamId,
    version: StreamVersion,
    data: EventData,
    /// The store's timestamp, learnt from the first read that returned the
    /// event; every later read (also after reopening) must agree.
    recorded: Option<Timestamp>,
}

/// What an append should come to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Appended(AppendResult),
    WrongVersion(Option<StreamVersion>),
    IdConflict(EventId),
}

fn outcome(result: Result<AppendResult, LogError>) -> Outcome {
    match result {
        Ok(r) => Outcome::Appended(r),
        Err(LogError::WrongExpectedVersion { actual, .. }) => Outcome::WrongVersion(actual),
        Err(LogError::EventIdConflict { event_id, .. }) => Outcome::IdConflict(event_id),
        Err(other) => panic!("unexpected append error: {other}"),
    }
}

#[derive(Default)]
struct Model {
    events: Vec<ModelEvent>,
    /// Positions of each stream's events, in version order.
    streams: HashMap<StreamId, Vec<usize>>,
    ids: HashMap<EventId, usize>,
    /// Every append sent so far, for re-appends.
    sent: Vec<(StreamId, Vec<EventData>)>,
}

impl Model {
    fn version(&self, stream: &StreamId) -> Option<StreamVersion> {
        self.streams
            .get(stream)
            .map(|p| StreamVersion(p.len() as u64 - 1))
    }

    fn append(
        &mut self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[EventData],
    ) -> Outcome {
        let found: Vec<Option<usize>> = events
            .iter()
            .map(|e| self.ids.get(&e.id).copied())
            .collect();
        if let Some(first) = found.iter().flatten().next() {
            if found.iter().any(Option::is_none) {
                return Outcome::IdConflict(self.events[*first].data.id);
            }
            let found: Vec<usize> = found.into_iter().flatten().collect();
            for (i, (&p, data)) in found.iter().zip(events).enumerate() {
                let stored = &self.events[p];
                let in_order = i == 0 || stored.version == self.events[found[i - 1]].version.next();
                if &stored.stream != stream || stored.data != *data || !in_order {
                    return Outcome::IdConflict(data.id);
                }
            }
            let (first, last) = (found[0], found[found.len() - 1]);
            return Outcome::Appended(AppendResult {
                first_position: GlobalPosition(first as u64),
                last_position: GlobalPosition(last as u64),
                version: self.events[last].version,
            });
        }
        let actual = self.version(stream);
        if !expected.matches(actual) {
            return Outcome::WrongVersion(actual);
        }
        let first_version = actual.map_or(StreamVersion::START, StreamVersion::next);
        let first_position = self.events.len();
        for (i, data) in events.iter().enumerate() {
            let position = first_position + i;
            self.ids.insert(data.id, position);
            self.streams
                .entry(stream.clone())
                .or_default()
                .push(position);
            self.events.push(ModelEvent {
                stream: stream.clone(),
                version: StreamVersion(first_version.0 + i as u64),
                data: data.clone(),
                recorded: None,
            });
        }
        Outcome::Appended(AppendResult {
            first_position: GlobalPosition(first_position as u64),
            last_position: GlobalPosition((first_position + events.len() - 1) as u64),
            version: StreamVersion(first_version.0 + events.len() as u64 - 1),
        })
    }

    fn read_stream(
        &self,
        stream: &StreamId,
        direction: Direction,
        from: StreamVersion,
        limit: usize,
    ) -> Vec<usize> {
        let positions = self.streams.get(stream).map_or(&[][..], Vec::as_slice);
        match direction {
            Direction::Forward => positions
                .iter()
                .filter(|&&p| self.events[p].version >= from)
                .take(limit)
                .copied()
                .collect(),
            Direction::Backward => positions
                .iter()
                .rev()
                .filter(|&&p| self.events[p].version <= from)
                .take(limit)
                .copied()
                .collect(),
        }
    }

    fn read_all(&self, tenant: &TenantId, from: GlobalPosition, limit: usize) -> Vec<usize> {
        (from.0 as usize..self.events.len())
            .filter(|&p| self.events[p].stream.tenant() == tenant)
            .take(limit)
            .collect()
    }

    /// Checks events read from the store against the model's positions.
    fn check_read(&mut self, read: &[RecordedEvent], expected: &[usize], what: &str) {
        assert_eq!(
            read.iter()
                .map(|e| e.position.0 as usize)
                .collect::<Vec<_>>(),
            expected,
            "{what}: positions"
        );
        for e in read {
            let m = &mut self.events[e.position.0 as usize];
            assert_eq!(e.stream, m.stream, "{what}: stream of {}", e.position);
            assert_eq!(e.version, m.version, "{what}: version of {}", e.position);
            assert!(e.same_data(&m.data), "{what}: content of {}", e.position);
            match m.recorded {
                None => m.recorded = Some(e.recorded),
                Some(t) => assert_eq!(e.recorded, t, "{what}: recorded time of {}", e.position),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Stores under test
// ---------------------------------------------------------------------------

enum Subject {
    Memory(MemoryStore),
    Log {
        store: Option<LogStore>,
        dir: TempDir,
    },
}

fn log_config() -> LogStoreConfig {
    LogStoreConfig {
        segment_size: 4096,
        index_cache_bytes: 4 * 1024 * 1024,
        // Tiny index tables: reads cross memory and sled, and event-id runs
        // are merged, within one case.
        index_table_events: 3,
        index_flush_after: std::time::Duration::from_millis(2),
        ..LogStoreConfig::default()
    }
}

/// Opens a LogStore on `dir` (the store itself waits out sled's lock,
/// which lingers a moment after the previous store on `dir` was dropped).
fn open_log(dir: &Path) -> LogStore {
    LogStore::open_with(dir, log_config()).expect("open the store")
}

impl Subject {
    fn log() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open_log(dir.path());
        Subject::Log {
            store: Some(store),
            dir,
        }
    }

    fn store(&self) -> &dyn EventStore {
        match self {
            Subject::Memory(store) => store,
            Subject::Log { store, .. } => store.as_ref().expect("an open store"),
        }
    }

    /// Drops and reopens a LogStore; a MemoryStore stays as it is.
    async fn reopen(&mut self, close_first: bool) {
        if let Subject::Log { store, dir } = self {
            let old = store.take().expect("an open store");
            if close_first {
                old.close().await.expect("close");
            }
            drop(old);
            *store = Some(open_log(dir.path()));
        }
    }

    async fn verify(&self) -> Option<u64> {
        match self {
            Subject::Memory(_) => None,
            Subject::Log { store, .. } => Some(
                store
                    .as_ref()
                    .expect("open")
                    .verify()
                    .await
                    .expect("verify"),
            ),
        }
    }
}

fn expected_version(expect: Expect, model: &Model, stream: &StreamId) -> ExpectedVersion {
    match expect {
        Expect::Any => ExpectedVersion::Any,
        Expect::NoStream => ExpectedVersion::NoStream,
        Expect::StreamExists => ExpectedVersion::StreamExists,
        Expect::Exact(v) => ExpectedVersion::Exact(StreamVersion(v)),
        Expect::Right => model
            .version(stream)
            .map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact),
    }
}

fn new_event(counter: &mut usize) -> EventData {
    *counter += 1;
    let event_type = if counter.is_multiple_of(3) {
        "Noted"
    } else {
        "Opened"
    };
    let payload = format!("event {counter}: {}", "x".repeat(*counter % 50)).into_bytes();
    EventData::new(
        event_type,
        payload,
        meta().with_reason(format!("r{counter}")),
    )
}

async fn run(mut subject: Subject, ops: Vec<Op>) {
    let mut model = Model::default();
    let mut counter = 0;
    for (step, op) in ops.into_iter().enumerate() {
        let what = format!("step {step}: {op:?}");
        match op {
            Op::Append {
                stream,
                count,
                expected,
            } => {
                let s = stream_at(stream);
                let events: Vec<EventData> = (0..count).map(|_| new_event(&mut counter)).collect();
                let expected = expected_version(expected, &model, &s);
                let got = outcome(subject.store().append(&s, expected, events.clone()).await);
                assert_eq!(got, model.append(&s, expected, &events), "{what}");
                model.sent.push((s, events));
            }
            Op::Reappend {
                pick,
                expected,
                other_stream,
                add_fresh,
            } => {
                if model.sent.is_empty() {
                    continue;
                }
                let (original, mut events) = model.sent[pick % model.sent.len()].clone();
                let s = other_stream.map_or(original, stream_at);
                if add_fresh {
                    events.push(new_event(&mut counter));
                }
                let expected = expected_version(expected, &model, &s);
                let got = outcome(subject.store().append(&s, expected, events.clone()).await);
                assert_eq!(got, model.append(&s, expected, &events), "{what}");
                model.sent.push((s, events));
            }
            Op::ReadStream {
                stream,
                backward,
                from,
                limit,
            } => {
                let s = stream_at(stream);
                let (direction, default) = if backward {
                    (Direction::Backward, StreamVersion::END)
                } else {
                    (Direction::Forward, StreamVersion::START)
                };
                let from = from.map_or(default, StreamVersion);
                let read = subject
                    .store()
                    .read_stream(&s, direction, from, limit)
                    .await
                    .expect("read_stream");
                let expected = model.read_stream(&s, direction, from, limit);
                model.check_read(&read, &expected, &what);
            }
            Op::ReadAll {
                tenant: t,
                from,
                limit,
            } => {
                let t = tenant(TENANTS[t]);
                let read = subject
                    .store()
                    .read_all(&t, GlobalPosition(from), limit)
                    .await
                    .expect("read_all");
                let expected = model.read_all(&t, GlobalPosition(from), limit);
                model.check_read(&read, &expected, &what);
            }
            Op::Reopen { close_first } => subject.reopen(close_first).await,
        }
        let head = model
            .events
            .len()
            .checked_sub(1)
            .map(|p| GlobalPosition(p as u64));
        assert_eq!(subject.store().head_position(), head, "{what}: head");
        for i in 0..STREAMS.len() {
            let s = stream_at(i);
            let v = subject.store().stream_version(&s).await.expect("version");
            assert_eq!(v, model.version(&s), "{what}: version of {s}");
        }
    }

    // Finally the whole log, tenant by tenant, and the scrub.
    for t in TENANTS {
        let t = tenant(t);
        let read = subject
            .store()
            .read_all(&t, GlobalPosition::START, 10_000)
            .await
            .expect("read_all");
        let expected = model.read_all(&t, GlobalPosition::START, 10_000);
        model.check_read(&read, &expected, "final read_all");
    }
    if let Some(count) = subject.verify().await {
        assert_eq!(count, model.events.len() as u64, "verify");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn config() -> Config {
    Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn memory_store_matches_the_model(ops in proptest::collection::vec(op_strategy(), 1..80)) {
        runtime().block_on(run(Subject::Memory(MemoryStore::new()), ops));
    }

    #[test]
    fn log_store_matches_the_model(ops in proptest::collection::vec(op_strategy(), 1..80)) {
        runtime().block_on(run(Subject::log(), ops));
    }
}
