//! Faults of a PostgreSQL deployment: nodes killed with SIGKILL under load, the database restarted.
//!
//! A node here is a child process (this test binary re-run with
//! `CASEBOOK_PG_NODE_URL` set) appending commands of one to three events
//! and printing each acknowledgement. After each kill, every acknowledged
//! command is in the log exactly once, no command is there in part, and
//! the surviving node appends on at once: the dead node's append lock went
//! with its connection.

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use casebook::log::pg::{PgEventStore, PgStoreConfig, TestCluster, TestClusterOptions};
use casebook::log::{EventData, EventStore, ExpectedVersion, GlobalPosition, StreamVersion};
use common::*;

const NODE_ENV: &str = "CASEBOOK_PG_NODE_URL";
const NAME_ENV: &str = "CASEBOOK_PG_NODE_NAME";
const WRITERS: u64 = 8;

/// A command's events: payload `cmd <node> <writer> <seq> <i>/<count>`.
fn command(node: &str, writer: u64, seq: u64, count: u64) -> Vec<EventData> {
    (0..count)
        .map(|i| {
            let mut e = event(&format!("cmd {node} {writer} {seq} {i}/{count}"));
            e.event_type = "FaultTestEvent".into();
            e
        })
        .collect()
}

/// The child node: appends until killed, one ACK line per command.
#[test]
fn pg_node_child() {
    let (Ok(url), Ok(name)) = (std::env::var(NODE_ENV), std::env::var(NAME_ENV)) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = PgEventStore::connect(PgStoreConfig::new(url))
            .await
            .expect("child connects");
        println!("READY");
        let mut tasks = Vec::new();
        for writer in 0..WRITERS {
            let store = store.clone();
            let name = name.clone();
            tasks.push(tokio::spawn(async move {
                let s = stream("met", &format!("{name}-W{writer}"));
                let mut seq = 0u64;
                loop {
                    let count = 1 + (seq + writer) % 3;
                    let expected = match seq {
                        0 => ExpectedVersion::NoStream,
                        n => ExpectedVersion::Exact(StreamVersion(n - 1)),
                    };
                    let r = store
                        .append(&s, expected, command(&name, writer, seq, count))
                        .await
                        .expect("append");
                    let line = format!("ACK {writer} {seq} {count} {}\n", r.first_position.0);
                    std::io::stdout().lock().write_all(line.as_bytes()).unwrap();
                    seq += count;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

/// A child node: the process, the thread collecting its acknowledgements
/// (writer, seq, count), and word of its READY.
type Node = (
    std::process::Child,
    std::thread::JoinHandle<Vec<(u64, u64, u64)>>,
    std::sync::mpsc::Receiver<()>,
);

/// Starts a child node.
fn spawn_node(url: &str, name: &str) -> Node {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "pg_node_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(NODE_ENV, url)
        .env(NAME_ENV, name)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn node");
    let stdout = child.stdout.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            if line.ends_with('\n') {
                if line.trim_end().ends_with("READY") {
                    let _ = ready_tx.send(());
                }
                if let Some(rest) = line.trim_end().strip_prefix("ACK ") {
                    let n: Vec<u64> = rest.split(' ').map(|x| x.parse().unwrap()).collect();
                    acks.push((n[0], n[1], n[2]));
                }
            }
            line.clear();
        }
        acks
    });
    (child, reader, ready_rx)
}

/// Every event of the log, by payload.
async fn payload_counts(store: &PgEventStore) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    let mut from = GlobalPosition::START;
    loop {
        let page = store.read_all(&tenant("met"), from, 10_000).await.unwrap();
        let Some(last) = page.last() else { break };
        from = last.position.next();
        for e in &page {
            *counts
                .entry(String::from_utf8_lossy(&e.payload).into_owned())
                .or_insert(0) += 1;
        }
    }
    counts
}

/// Checks that every command in the log is whole, and every acknowledged
/// one is there once.
fn check_commands(counts: &HashMap<String, usize>, acked: &[(String, u64, u64, u64)]) {
    let mut commands: HashMap<String, (u64, u64)> = HashMap::new();
    for (payload, n) in counts {
        assert_eq!(*n, 1, "stored twice: {payload}");
        // cmd <node> <writer> <seq> <i>/<count>
        let parts: Vec<&str> = payload.split(' ').collect();
        if parts.first() != Some(&"cmd") {
            continue;
        }
        let (_, count) = parts[4].split_once('/').unwrap();
        let key = parts[1..4].join(" ");
        let entry = commands.entry(key).or_insert((0, count.parse().unwrap()));
        entry.0 += 1;
    }
    for (key, (have, count)) in &commands {
        assert_eq!(have, count, "command {key} is in the log in part");
    }
    for (node, writer, seq, count) in acked {
        let key = format!("{node} {writer} {seq}");
        assert_eq!(
            commands.get(&key).map(|c| c.1),
            Some(*count),
            "acknowledged command {key} is missing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_nodes_lose_nothing_acknowledged_leave_no_partial_command_and_free_the_lock() {
    let Some(url) = pg::database().await else {
        return;
    };
    let survivor = PgEventStore::connect(PgStoreConfig::new(url.clone()))
        .await
        .unwrap();
    let rounds: u64 = if std::env::var("CI").is_ok() { 8 } else { 6 };
    let mut acked: Vec<(String, u64, u64, u64)> = Vec::new();
    let survivor_seq = Arc::new(AtomicU64::new(0));
    for round in 0..rounds {
        let name = format!("R{round}");
        let (mut child, reader, ready) = spawn_node(&url, &name);
        tokio::task::spawn_blocking(move || ready.recv_timeout(Duration::from_secs(60)))
            .await
            .unwrap()
            .expect("node ready");
        tokio::time::sleep(Duration::from_millis(200 + 97 * round % 400)).await;
        child.kill().expect("SIGKILL the node");
        let killed_at = Instant::now();
        // The survivor appends at once: the lock is not held by the dead.
        let seq = survivor_seq.fetch_add(1, Ordering::Relaxed);
        let s = stream("met", &format!("survivor-{seq}"));
        tokio::time::timeout(
            Duration::from_secs(2),
            survivor.append(&s, ExpectedVersion::NoStream, command("S", 0, seq, 2)),
        )
        .await
        .expect("the survivor's append waited on a dead node's lock")
        .unwrap();
        acked.push(("S".into(), 0, seq, 2));
        assert!(killed_at.elapsed() < Duration::from_secs(2));
        let status = child.wait().unwrap();
        assert!(!status.success(), "the node must have been killed");
        let acks = reader.join().unwrap();
        assert!(
            !acks.is_empty(),
            "round {round}: the node acknowledged nothing"
        );
        acked.extend(acks.into_iter().map(|(w, s, c)| (name.clone(), w, s, c)));
    }
    check_commands(&payload_counts(&survivor).await, &acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_fails_calls_retryably_and_loses_nothing_acknowledged() {
    if pg::cluster().await.is_none()
        || std::env::var("CASEBOOK_TEST_POSTGRES_URL").is_ok_and(|u| !u.is_empty())
    {
        // No PostgreSQL here, or a given server that is not ours to restart.
        return;
    }
    // A server of its own, so the restart disturbs no other test, and
    // durable: an immediate stop is a crash, and only commits flushed to
    // the WAL survive it.
    let cluster = tokio::task::spawn_blocking(|| {
        TestCluster::start(TestClusterOptions {
            durable: true,
            ..TestClusterOptions::default()
        })
    })
    .await
    .unwrap()
    .expect("a durable server");
    let url = cluster.new_database().await.unwrap();
    let store = PgEventStore::connect(PgStoreConfig::new(url))
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let retried = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for writer in 0..4u64 {
        let (store, stop, retried) = (store.clone(), Arc::clone(&stop), Arc::clone(&retried));
        writers.push(tokio::spawn(async move {
            let s = stream("met", &format!("restart-W{writer}"));
            let mut acked = Vec::new();
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                let events = command("P", writer, seq, 2);
                // The same events until acknowledged: a retry after an
                // unknown outcome returns the original result.
                loop {
                    match store.append(&s, ExpectedVersion::Any, events.clone()).await {
                        Ok(_) => break,
                        Err(e) if e.kind().is_retryable() => {
                            retried.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => panic!("not retryable: {e}"),
                    }
                }
                acked.push(("P".to_string(), writer, seq, 2));
                seq += 1;
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cluster =
        tokio::task::spawn_blocking(move || cluster.restart_immediate().map(|()| cluster))
            .await
            .unwrap()
            .expect("restart the server");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(
            tokio::time::timeout(Duration::from_secs(60), w)
                .await
                .expect("writers recover after the restart")
                .unwrap(),
        );
    }
    assert!(
        retried.load(Ordering::Relaxed) > 0,
        "no call failed while the server was down"
    );
    check_commands(&payload_counts(&store).await, &acked);
    drop(cluster);
}
