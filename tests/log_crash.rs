//! Crash test that really kills: a child process appends from many tasks and
//! reports each acknowledged append; the parent SIGKILLs it at a random moment,
//! reopens the store and checks that nothing acknowledged was lost.
//!
//! The child is this same test binary, re-run with `CASEBOOK_CRASH_CHILD_DIR`
//! set and filtered to `crash_child`; without that variable `crash_child`
//! returns at once.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use casebook::log::{
    ActorId, CorrelationId, Direction, EventData, EventId, EventStore, ExpectedVersion,
    GlobalPosition, LogStore, LogStoreConfig, Metadata, Source, StreamId, StreamVersion, TenantId,
};
use uuid::Uuid;

const CHILD_ENV: &str = "CASEBOOK_CRASH_CHILD_DIR";
const ROUND_ENV: &str = "CASEBOOK_CRASH_ROUND";
const WRITERS: u64 = 32;

fn config() -> LogStoreConfig {
    LogStoreConfig {
        segment_size: 256 * 1024,
        // Small index tables, so kills land during index flushes and merges.
        index_table_events: 64,
        index_flush_after: std::time::Duration::from_millis(5),
        ..LogStoreConfig::default()
    }
}

fn stream(round: u64, writer: u64) -> StreamId {
    StreamId::new(
        TenantId::new("kent").unwrap(),
        "case",
        &format!("r{round}-w{writer}"),
    )
    .unwrap()
}

/// Every event's content is a function of (round, writer, seq), so the parent
/// can check stored events byte for byte.
fn event(round: u64, writer: u64, seq: u64) -> EventData {
    let id = EventId(Uuid::from_u64_pair(round << 32 | writer, seq));
    let metadata = Metadata::new(
        ActorId::new(format!("writer-{writer}")),
        Source::system("crash-test"),
    )
    .with_correlation(CorrelationId(Uuid::from_u64_pair(round, writer)))
    .with_reason(format!("seq {seq}"));
    let payload = format!("{round}:{writer}:{seq}:").into_bytes().repeat(8);
    EventData {
        id,
        event_type: "CrashTestEvent".into(),
        payload,
        metadata,
    }
}

#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let round: u64 = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = LogStore::open_with(&dir, config()).expect("child opens store");
        println!("READY");
        let mut tasks = Vec::new();
        for writer in 0..WRITERS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let s = stream(round, writer);
                let mut seq = 0u64;
                loop {
                    let count = 1 + (seq + writer) % 3;
                    let events = (seq..seq + count)
                        .map(|q| event(round, writer, q))
                        .collect();
                    let expected = match seq {
                        0 => ExpectedVersion::NoStream,
                        n => ExpectedVersion::Exact(StreamVersion(n - 1)),
                    };
                    let r = store.append(&s, expected, events).await.expect("append");
                    // One write per line keeps lines whole in the pipe.
                    let line = format!(
                        "ACK {writer} {seq} {count} {} {}\n",
                        r.first_position.0, r.version.0
                    );
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

struct Ack {
    writer: u64,
    seq: u64,
    count: u64,
    first_position: u64,
    version: u64,
}

fn run_round(dir: &std::path::Path, round: u64, kill_after: Duration) -> Vec<Ack> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .env(ROUND_ENV, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            if line.ends_with('\n') {
                let l = line.trim_end().to_string();
                if l.ends_with("READY") {
                    let _ = ready_tx.send(());
                }
                lines.push(l);
            }
            line.clear();
        }
        lines
    });
    // The delay is measured from the child's READY (opening the store after
    // the last round's kill may take long on a loaded machine); the READY
    // check below fails the round if it never came.
    let _ = ready_rx.recv_timeout(Duration::from_secs(60));
    std::thread::sleep(kill_after);
    child.kill().expect("SIGKILL the child");
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the child must have been killed, not have exited"
    );
    let lines = reader.join().unwrap();
    assert!(
        lines.iter().any(|l| l.ends_with("READY")),
        "round {round}: the child never opened the store: {:?}",
        &lines[..lines.len().min(5)]
    );
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("ACK "))
        .map(|l| {
            let n: Vec<u64> = l.split(' ').map(|x| x.parse().unwrap()).collect();
            Ack {
                writer: n[0],
                seq: n[1],
                count: n[2],
                first_position: n[3],
                version: n[4],
            }
        })
        .collect()
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let rounds: u64 = if std::env::var("CI").is_ok() { 12 } else { 10 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rng = fastrand::Rng::with_seed(0x5eed ^ std::process::id() as u64);
    let mut total_acked = 0;
    for round in 0..rounds {
        let kill_after = Duration::from_millis(rng.u64(150..700));
        let acks = run_round(dir.path(), round, kill_after);
        total_acked += acks.len();
        rt.block_on(async {
            let store = LogStore::open_with(dir.path(), config()).expect("reopen after SIGKILL");
            let mut by_writer: std::collections::BTreeMap<u64, Vec<&Ack>> = Default::default();
            for ack in &acks {
                by_writer.entry(ack.writer).or_default().push(ack);
            }
            for (writer, acks) in by_writer {
                let s = stream(round, writer);
                let stored = store
                    .read_stream(&s, Direction::Forward, StreamVersion::START, 10_000)
                    .await
                    .unwrap();
                for ack in acks {
                    for i in 0..ack.count {
                        let seq = ack.seq + i;
                        let e = stored.get(seq as usize).unwrap_or_else(|| {
                            panic!("round {round}: acknowledged event {seq} of {s} lost")
                        });
                        assert!(
                            e.same_data(&event(round, writer, seq)),
                            "round {round}: {s} event {seq} differs"
                        );
                        assert_eq!(e.version, StreamVersion(seq));
                        assert_eq!(e.position, GlobalPosition(ack.first_position + i));
                    }
                    assert_eq!(ack.seq + ack.count - 1, ack.version);
                }
            }
            // Positions are gap-free from 0 to the head.
            let tenant = TenantId::new("kent").unwrap();
            let mut expected = 0u64;
            loop {
                let page = store
                    .read_all(&tenant, GlobalPosition(expected), 5000)
                    .await
                    .unwrap();
                if page.is_empty() {
                    break;
                }
                for e in &page {
                    assert_eq!(
                        e.position,
                        GlobalPosition(expected),
                        "round {round}: gap in positions"
                    );
                    expected += 1;
                }
            }
            assert_eq!(
                store.head_position(),
                expected.checked_sub(1).map(GlobalPosition)
            );
            assert_eq!(store.verify().await.unwrap(), expected);
            // New appends work and continue the log.
            let s = StreamId::new(tenant.clone(), "case", &format!("after-{round}")).unwrap();
            let r = store
                .append(&s, ExpectedVersion::NoStream, vec![event(round, 999, 0)])
                .await
                .unwrap();
            assert_eq!(r.first_position, GlobalPosition(expected));
            store.close().await.unwrap();
        });
    }
    assert!(
        total_acked > rounds as usize * 10,
        "the child should acknowledge many appends ({total_acked})"
    );
}
