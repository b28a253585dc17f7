//! The PostgreSQL store's global order under racing writers, across nodes and through lost connections.
//!
//! The race: many writers, each a store of its own (a node with one
//! appender connection), pause a random time inside their append
//! transactions while catch-up readers on other nodes follow the log.
//! Every reader must see every acknowledged event exactly once, positions
//! increasing and each stream's versions in order. The same race against
//! the naive order (positions from a sequence, no lock) must be caught
//! skipping events, which proves the check can see the bug.

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use casebook::log::pg::{PgEventStore, PgStoreConfig};
use casebook::log::{
    EventId, EventStore, ExpectedVersion, GlobalPosition, LogError, RecordedEvent, StreamId,
    StreamVersion, SubscriptionStart,
};
use common::*;

/// What one reader saw that it should not have.
#[derive(Debug, Default)]
struct Findings {
    missing: usize,
    duplicated: usize,
    out_of_order: usize,
    /// Events read (printed with the findings).
    #[allow(dead_code)]
    read: usize,
}

async fn node(url: &str, naive: bool, delay_ms: u32) -> PgEventStore {
    let mut config = PgStoreConfig::new(url);
    config.pool_size = 2;
    config.naive_order_for_tests = naive;
    config.append_delay_ms_for_tests = delay_ms;
    // Readers of the naive order learn the head only by polling.
    config.poll_interval = Duration::from_millis(5);
    PgEventStore::connect(config).await.expect("connect node")
}

/// One race at a time: each opens about three connections per writer, and
/// two at once would exceed the test server's `max_connections`.
static RACES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `writers` writers for `run` against the order chosen and returns
/// each of `readers` readers' findings.
async fn race(
    url: &str,
    naive: bool,
    writers: usize,
    readers: usize,
    run: Duration,
) -> Vec<Findings> {
    let _one_at_a_time = RACES.lock().await;
    let t = tenant("met");
    let mut reader_tasks = Vec::new();
    let (done_tx, done_rx) = tokio::sync::watch::channel(None::<GlobalPosition>);
    for _ in 0..readers {
        let store = node(url, naive, 0).await;
        let t = t.clone();
        let mut done = done_rx.clone();
        reader_tasks.push(tokio::spawn(async move {
            let mut sub = store
                .subscribe_all(t, SubscriptionStart::Beginning)
                .await
                .expect("subscribe");
            let mut seen: Vec<RecordedEvent> = Vec::new();
            loop {
                let end = *done.borrow_and_update();
                if let Some(end) = end {
                    if seen.last().is_some_and(|e| e.position >= end) {
                        break;
                    }
                }
                tokio::select! {
                    e = sub.next() => seen.push(e.expect("subscription").detach()),
                    _ = done.changed() => {}
                }
            }
            seen
        }));
    }

    let deadline = Instant::now() + run;
    let mut writer_tasks = Vec::new();
    for w in 0..writers {
        let store = node(url, naive, 3).await;
        writer_tasks.push(tokio::spawn(async move {
            let mut acked: Vec<(EventId, StreamId, StreamVersion)> = Vec::new();
            let mut versions: HashMap<StreamId, Option<StreamVersion>> = HashMap::new();
            let mut k = 0u64;
            while Instant::now() < deadline {
                let s = stream("met", &format!("W{w}-{}", k % 4));
                k += 1;
                let n = 1 + (k % 3) as usize;
                let batch = events(&format!("w{w}-{k}"), n);
                let ids: Vec<EventId> = batch.iter().map(|e| e.id).collect();
                let expected = match versions.get(&s).copied().flatten() {
                    Some(v) => ExpectedVersion::Exact(v),
                    None => ExpectedVersion::NoStream,
                };
                let r = store.append(&s, expected, batch).await.expect("append");
                versions.insert(s.clone(), Some(r.version));
                let first = r.version.0 + 1 - n as u64;
                for (i, id) in ids.into_iter().enumerate() {
                    acked.push((id, s.clone(), StreamVersion(first + i as u64)));
                }
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for task in writer_tasks {
        acked.extend(task.await.expect("writer"));
    }
    // The last position in the table: readers stop once past it.
    let probe = node(url, naive, 0).await;
    let mut last = None;
    let mut from = GlobalPosition::START;
    loop {
        let page = probe.read_all(&t, from, 10_000).await.expect("read");
        let Some(e) = page.last() else { break };
        last = Some(e.position);
        from = e.position.next();
    }
    done_tx.send_replace(last);

    let acked_ids: HashMap<EventId, (StreamId, StreamVersion)> =
        acked.into_iter().map(|(id, s, v)| (id, (s, v))).collect();
    let mut findings = Vec::new();
    for task in reader_tasks {
        let seen = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("reader finished")
            .expect("reader");
        let mut f = Findings {
            read: seen.len(),
            ..Findings::default()
        };
        let mut ids = HashSet::new();
        let mut stream_next: HashMap<StreamId, u64> = HashMap::new();
        for (i, e) in seen.iter().enumerate() {
            if !ids.insert(e.id) {
                f.duplicated += 1;
            }
            if i > 0 && e.position <= seen[i - 1].position {
                f.out_of_order += 1;
            }
            let next = stream_next.entry(e.stream.clone()).or_insert(0);
            if e.version.0 != *next {
                f.out_of_order += 1;
            }
            *next = e.version.0 + 1;
            if let Some((s, v)) = acked_ids.get(&e.id) {
                assert_eq!((&e.stream, e.version), (s, *v), "acked where read");
            }
        }
        f.missing = acked_ids.keys().filter(|id| !ids.contains(id)).count();
        findings.push(f);
    }
    assert!(!acked_ids.is_empty(), "the writers appended nothing");
    findings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_every_acknowledged_event_once_in_order_under_racing_writers() {
    let Some(url) = pg::database().await else {
        return;
    };
    let run = Duration::from_secs(60);
    let findings = race(&url, false, 64, 4, run).await;
    for f in &findings {
        assert_eq!(
            (f.missing, f.duplicated, f.out_of_order),
            (0, 0, 0),
            "a reader of the locked order: {f:?}"
        );
    }
    eprintln!("locked order: {findings:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_race_check_catches_the_naive_order_skipping_late_commits() {
    let Some(url) = pg::database().await else {
        return;
    };
    let findings = race(&url, true, 64, 4, Duration::from_secs(10)).await;
    let skipped: usize = findings.iter().map(|f| f.missing).sum();
    eprintln!("naive order: {findings:?}");
    assert!(
        skipped > 0,
        "the naive order skipped nothing: the race check cannot see the bug ({findings:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refuses_its_conflicting_commands_alone() {
    let Some((store, _)) = pg::store_with(|_| {}).await else {
        return;
    };
    let store = Arc::new(store);
    // Many appends at once: the appender groups them into few transactions.
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let s = stream("kent", &format!("B-{}", i % 50));
            // Every stream gets one NoStream append that wins and three
            // that must be refused, all in flight together.
            store
                .append(&s, ExpectedVersion::NoStream, events(&format!("b{i}"), 2))
                .await
        }));
    }
    let mut appended = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => appended += 1,
            Err(LogError::WrongExpectedVersion { actual, .. }) => {
                assert_eq!(actual, Some(StreamVersion(1)));
                refused += 1;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((appended, refused), (50, 150));
    let stats = store.append_stats();
    assert!(
        stats.transactions < stats.commands,
        "no batching happened: {stats:?}"
    );
    assert_eq!(stats.events, 100);
    // Nothing of a refused command is stored: each stream has exactly two.
    for i in 0..50 {
        let s = stream("kent", &format!("B-{i}"));
        assert_eq!(
            store.stream_version(&s).await.unwrap(),
            Some(StreamVersion(1))
        );
    }
    assert_eq!(store.head_position(), Some(GlobalPosition(99)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_node_sees_commits_live_and_through_a_killed_listener() {
    let Some(url) = pg::database().await else {
        return;
    };
    let a = node(&url, false, 0).await;
    let mut config = PgStoreConfig::new(url.clone());
    // No polling to speak of: only notifications (and the catch-up read
    // after a reconnect) can move this node's head.
    config.poll_interval = Duration::from_secs(3600);
    let b = PgEventStore::connect(config).await.unwrap();
    let t = tenant("kent");
    let mut sub = b
        .subscribe_all(t.clone(), SubscriptionStart::Beginning)
        .await
        .unwrap();
    let s = stream("kent", "L-1");
    a.append(&s, ExpectedVersion::NoStream, events("l", 3))
        .await
        .unwrap();
    for i in 0..3 {
        let e = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("delivered through the notification")
            .unwrap();
        assert_eq!(e.position, GlobalPosition(i));
    }
    // Kill every listener connection, then append while they reconnect.
    let killed = terminate_listeners(&url).await;
    assert!(killed >= 2, "listeners terminated: {killed}");
    a.append(&s, ExpectedVersion::Exact(StreamVersion(2)), events("m", 2))
        .await
        .unwrap();
    for i in 3..5 {
        let e = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("delivered after the listener reconnected")
            .unwrap();
        assert_eq!(e.position, GlobalPosition(i));
    }
    // The node's head learns of the commit made while its listener was
    // down: from the read after reconnecting, or a notification after.
    let mut head = b.watch_head();
    tokio::time::timeout(
        Duration::from_secs(10),
        head.wait_for(|h| *h == Some(GlobalPosition(4))),
    )
    .await
    .expect("the head caught up after the listener reconnected")
    .unwrap();
}

/// Terminates the listener connections of every node on `url`'s database.
async fn terminate_listeners(url: &str) -> u64 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let driver = tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'casebook-listener' AND datname = current_database()",
            &[],
        )
        .await
        .unwrap();
    drop(client);
    let _ = driver.await;
    rows.len() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_a_retryable_error_and_a_bad_url_is_not() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = PgEventStore::connect(PgStoreConfig::new(format!(
        "postgres://casebook@127.0.0.1:{port}/none"
    )))
    .await
    .err()
    .expect("nothing listens there");
    assert!(err.kind().is_retryable(), "{err}");
    let err = PgEventStore::connect(PgStoreConfig::new("postgres://[::1"))
        .await
        .err()
        .expect("malformed");
    assert!(!err.kind().is_retryable(), "{err}");
    assert!(err.to_string().contains("connection string"), "{err}");
}
