//! Faults that must not lose, lie or crash (issue 19): hostile values
//! (nesting far deeper than a stack, text fields of thousands of words),
//! positions at the end of their range, derived state ahead of or damaged
//! beside the log. Every engine here runs on the embedded store in a temp
//! dir.

use std::time::Duration;

use casebook::case::{CaseCommand, CaseError, CaseFile, MAX_SEARCH_TEXT, MAX_VALUE_DEPTH};
use casebook::definition::Format;
use casebook::engine::{CommandContext, EngineConfig, EngineError, OpenCase};
use casebook::log::TenantId;
use casebook::projection::query::SearchQuery;
use casebook::projection::Consistency;
use casebook::rules::serde_json::{json, Value};
use casebook::security::{Classification, Principal};
use casebook::Engine;

#[path = "common/tmpfs.rs"]
mod tmpfs;
use tmpfs::Tmpfs;

const INCIDENT: &str = include_str!("common/incident.toml");
const WAIT: Duration = Duration::from_secs(30);

fn registered() -> EngineConfig {
    EngineConfig::with_tenants(["kent"].map(|t| TenantId::new(t).expect("valid tenant")))
}

fn admin() -> Principal {
    Principal::new(TenantId::new("kent").unwrap(), "admin-1").with_roles(["administrator"])
}

fn handler() -> Principal {
    Principal::new(TenantId::new("kent").unwrap(), "pc-101")
        .with_roles(["handler"])
        .with_clearance(Classification::Secret)
}

fn ctx() -> CommandContext {
    CommandContext::because("test")
}

/// A value `depth` arrays deep, built (and later dropped by the engine)
/// without recursion.
fn nested(depth: usize) -> Value {
    let mut v = json!("x");
    for _ in 0..depth {
        v = Value::Array(vec![v]);
    }
    v
}

async fn open_incident(engine: &Engine, id: &str, summary: Value) -> Result<(), EngineError> {
    let mut req = OpenCase::new(
        "incident",
        CaseFile::new()
            .with("summary", summary)
            .with("ward", "north"),
    );
    req.case_id = Some(id.parse().unwrap());
    req.context = ctx();
    engine.open_case(&handler(), req).await.map(|_| ())
}

async fn deployed(dir: &std::path::Path) -> Engine {
    let engine = Engine::open_with(dir, registered()).unwrap();
    engine.start().await.unwrap();
    engine
        .deploy(&admin(), INCIDENT, Format::Toml)
        .await
        .unwrap();
    engine
}

fn invalid_field(err: EngineError) -> String {
    match err {
        EngineError::Case(CaseError::InvalidField { field, reason }) => {
            assert!(reason.contains("nested deeper"), "{reason}");
            field
        }
        other => panic!("expected an invalid field, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_nested_deeper_than_a_stack_are_refused_naming_their_field() {
    let dir = tempfile::tempdir().unwrap();
    let engine = deployed(dir.path()).await;
    // 100,000 arrays deep: walked recursively (cloned, compared, encoded,
    // even dropped) this overflows a runtime worker's stack.
    let err = open_incident(&engine, "I-DEEP", nested(100_000))
        .await
        .unwrap_err();
    assert_eq!(invalid_field(err), "summary");
    assert_eq!(
        open_incident(&engine, "I-1", json!("a burglary"))
            .await
            .map_err(|e| e.to_string()),
        Ok(())
    );
    for command in [
        CaseCommand::UpdateCaseFile {
            changes: CaseFile::new().with("notes", nested(100_000)),
        },
        CaseCommand::Complete {
            item: "assess".into(),
            outputs: CaseFile::new().with("loss", nested(MAX_VALUE_DEPTH + 1)),
        },
    ] {
        let err = engine
            .execute(&handler(), "I-1", command, ctx())
            .await
            .unwrap_err();
        let field = invalid_field(err);
        assert!(field == "notes" || field == "loss", "{field}");
    }
    // Nothing was appended: the case is at its opening version.
    let view = engine.view(&handler(), "I-1").await.unwrap();
    assert_eq!(view.case_file.get("notes"), None);
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_word_of_a_long_text_field_is_found_or_the_value_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let engine = deployed(dir.path()).await;
    // 15,000 distinct words (2 to 5 bytes each, within the field's limit).
    let text: Vec<String> = (0..15_000).map(|i| format!("x{i:x}")).collect();
    let text = text.join(" ");
    assert!(text.len() <= MAX_SEARCH_TEXT);
    open_incident(&engine, "I-LONG", json!(text)).await.unwrap();
    // The first, the 2,001st (past the old cap) and the last.
    for word in ["x0", &format!("x{:x}", 2_000), &format!("x{:x}", 14_999)] {
        let q = SearchQuery {
            text: Some(word.into()),
            ..Default::default()
        };
        let found = engine
            .search_cases(&handler(), &q, Consistency::Eventual)
            .await;
        // Eventual: wait until the case is projected.
        let mut found = found.unwrap();
        let deadline = std::time::Instant::now() + WAIT;
        while found.items.is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            found = engine
                .search_cases(&handler(), &q, Consistency::Eventual)
                .await
                .unwrap();
        }
        let ids: Vec<_> = found.items.iter().map(|s| s.case_id.to_string()).collect();
        assert_eq!(ids, ["I-LONG"], "searching {word}");
    }
    // More text than the field can hold is refused, never partly indexed.
    let err = open_incident(&engine, "I-HUGE", json!("ab ".repeat(MAX_SEARCH_TEXT)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::Case(CaseError::InvalidField { field, .. }) if field == "summary"),
        "{err}"
    );
    engine.shutdown().await.unwrap();
}

/// Opens incident `id` and returns the position token of its opening.
async fn open_at(engine: &Engine, id: &str, summary: &str) -> casebook::security::PositionToken {
    let mut req = OpenCase::new(
        "incident",
        CaseFile::new()
            .with("summary", summary)
            .with("ward", "north"),
    );
    req.case_id = Some(id.parse().unwrap());
    req.context = ctx();
    engine
        .open_case(&handler(), req)
        .await
        .unwrap()
        .position
        .unwrap()
}

/// A note on the case (each one an event, so snapshots come due).
async fn note(engine: &Engine, id: &str, text: &str) -> casebook::security::PositionToken {
    engine
        .execute(
            &handler(),
            id,
            CaseCommand::UpdateCaseFile {
                changes: CaseFile::new().with("notes", text),
            },
            ctx(),
        )
        .await
        .unwrap()
        .position
        .unwrap()
}

/// An engine whose cases snapshot after every second event.
fn snapshotting() -> EngineConfig {
    let mut config = registered();
    config.snapshot_every = 2;
    config
}

/// The ids `search` finds for `word` once the projections reach `at`.
async fn found(engine: &Engine, word: &str, at: casebook::security::PositionToken) -> Vec<String> {
    let q = SearchQuery {
        text: Some(word.into()),
        ..Default::default()
    };
    let consistency = Consistency::AtLeast {
        position: at,
        timeout: WAIT,
    };
    let mut ids: Vec<String> = engine
        .search_cases(&handler(), &q, consistency)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| s.case_id.to_string())
        .collect();
    ids.sort();
    ids
}

/// The only segment file of a data directory's log.
fn segment(dir: &std::path::Path) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    assert_eq!(segs.len(), 1, "{segs:?}");
    segs.pop().unwrap()
}

/// Builds a data directory in two sessions: cases I-1 and I-2 (with
/// notes) in the first, more notes and I-3 in the second, so that views and
/// snapshots end past where the first session left the log. Returns the
/// length of the segment after the first session.
async fn two_sessions(dir: &std::path::Path) -> u64 {
    let engine = Engine::open_with(dir, snapshotting()).unwrap();
    engine.start().await.unwrap();
    engine
        .deploy(&admin(), INCIDENT, Format::Toml)
        .await
        .unwrap();
    open_at(&engine, "I-1", "burglary alpha").await;
    open_at(&engine, "I-2", "burglary bravo").await;
    let at = note(&engine, "I-1", "first").await;
    assert_eq!(found(&engine, "burglary", at).await, ["I-1", "I-2"]);
    engine.shutdown().await.unwrap();
    drop(engine);
    let first = std::fs::metadata(segment(dir)).unwrap().len();

    let engine = Engine::open_with(dir, snapshotting()).unwrap();
    engine.start().await.unwrap();
    for i in 0..5 {
        note(&engine, "I-1", &format!("later {i}")).await;
    }
    let at = open_at(&engine, "I-3", "burglary charlie").await;
    assert_eq!(found(&engine, "burglary", at).await, ["I-1", "I-2", "I-3"]);
    engine.shutdown().await.unwrap();
    first
}

/// After the log lost the second session, the views and the case state
/// match the log, and new work is visible.
async fn views_follow_the_shorter_log(dir: &std::path::Path, expect_rebuilt: &[&str]) {
    let engine = Engine::open_with(dir, snapshotting()).unwrap();
    let report = engine
        .recovery_report(&Principal::platform_administrator("ops"))
        .unwrap();
    for store in expect_rebuilt {
        assert!(
            report.rebuilt.iter().any(|r| r.store == *store),
            "{store} not rebuilt: {report}"
        );
    }
    for r in &report.rebuilt {
        if let Some(kept) = &r.set_aside {
            assert!(kept.join("WHY").exists(), "{}", kept.display());
        }
    }
    engine.start().await.unwrap();
    // A read that asks for no position waits for the rebuild (or answers
    // "rebuilding"): it never says that a case in the log does not exist.
    let rebuilt = engine
        .case_view(&handler(), "I-2", Consistency::Eventual)
        .await
        .unwrap();
    assert_eq!(
        rebuilt.view.case_file.get("summary"),
        Some(&json!("burglary bravo"))
    );
    // The case state is the log's, not a snapshot's from the lost session.
    let view = engine.view(&handler(), "I-1").await.unwrap();
    assert_eq!(view.case_file.get("notes"), Some(&json!("first")));
    assert!(engine.view(&handler(), "I-3").await.is_err());
    // New work is applied and visible, on a case and in the views.
    note(&engine, "I-1", "after the restore").await;
    let view = engine.view(&handler(), "I-1").await.unwrap();
    assert_eq!(
        view.case_file.get("notes"),
        Some(&json!("after the restore"))
    );
    let at = open_at(&engine, "I-4", "burglary delta").await;
    assert_eq!(found(&engine, "burglary", at).await, ["I-1", "I-2", "I-4"]);
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_cut_back_below_the_views_is_followed_by_rebuilt_views() {
    let dir = tempfile::tempdir().unwrap();
    let first = two_sessions(dir.path()).await;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(segment(dir.path()))
        .unwrap();
    file.set_len(first).unwrap();
    file.sync_all().unwrap();
    drop(file);
    views_follow_the_shorter_log(dir.path(), &["index", "projections", "snapshots"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_replaced_by_an_older_copy_is_followed_by_rebuilt_views() {
    let dir = tempfile::tempdir().unwrap();
    let copy = tempfile::tempdir().unwrap();
    // The older copy: the log as the first session left it.
    let first = two_sessions(dir.path()).await;
    let seg = segment(dir.path());
    let bytes = std::fs::read(&seg).unwrap();
    std::fs::write(copy.path().join("old.seg"), &bytes[..first as usize]).unwrap();
    std::fs::copy(copy.path().join("old.seg"), &seg).unwrap();
    // The index went with the newer log (a restore copies only the log).
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    views_follow_the_shorter_log(dir.path(), &["projections", "snapshots"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_of_another_log_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    two_sessions(dir.path()).await;
    // Another data directory's log, longer than the views' checkpoints.
    let engine = deployed(other.path()).await;
    for i in 0..40 {
        open_at(&engine, &format!("O-{i}"), "robbery").await;
    }
    engine.shutdown().await.unwrap();
    drop(engine);
    std::fs::remove_dir_all(dir.path().join("log")).unwrap();
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    std::fs::rename(other.path().join("log"), dir.path().join("log")).unwrap();

    let engine = Engine::open_with(dir.path(), snapshotting()).unwrap();
    let report = engine
        .recovery_report(&Principal::platform_administrator("ops"))
        .unwrap();
    let reasons: Vec<_> = report.rebuilt.iter().map(|r| r.reason.as_str()).collect();
    assert!(
        reasons.iter().filter(|r| r.contains("another log")).count() == 2,
        "{report}"
    );
    engine.start().await.unwrap();
    assert!(engine.view(&handler(), "I-1").await.is_err());
    let at = open_at(&engine, "O-new", "robbery").await;
    assert_eq!(found(&engine, "burglary", at).await, Vec::<String>::new());
    assert_eq!(found(&engine, "robbery", at).await.len(), 41);
    engine.shutdown().await.unwrap();
}

/// The metadata of the notes [`forty_notes`] appends.
fn note_meta() -> casebook::log::Metadata {
    casebook::log::Metadata::new(
        casebook::log::ActorId::new("pc-1"),
        casebook::log::Source::system("test"),
    )
}

/// A log in `dir` holding 40 notes on one stream (one record each),
/// closed. Returns the stream.
async fn forty_notes(dir: &std::path::Path) -> casebook::log::StreamId {
    use casebook::log::{EventData, EventStore, ExpectedVersion, LogStore, StreamId};
    let stream = StreamId::new(TenantId::new("kent").unwrap(), "case", "C-1").unwrap();
    let store = LogStore::open(dir).unwrap();
    assert!(store.recovery_report().is_clean());
    for i in 0..40 {
        let e = EventData::new("Noted", format!("note {i}").into_bytes(), note_meta());
        store
            .append(&stream, ExpectedVersion::Any, vec![e])
            .await
            .unwrap();
    }
    store.close().await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_tail_is_reported_with_its_bytes_and_records() {
    use casebook::log::{EventStore, LogStore};
    let dir = tempfile::tempdir().unwrap();
    forty_notes(dir.path()).await;
    // The index gone, and the last record damaged: the store cannot know it
    // was acknowledged, so it cuts it — and says so.
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    let seg = segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();

    let store = LogStore::open(dir.path()).unwrap();
    let report = store.recovery_report().clone();
    assert!(!report.is_clean());
    assert_eq!(report.tail_records_cut, 1, "{report}");
    assert!(
        report.tail_bytes_cut > 0 && report.tail_bytes_cut < 1000,
        "{report}"
    );
    assert!(report.tail_reason.is_some(), "{report}");
    assert_eq!(report.head, Some(casebook::log::GlobalPosition(38)));
    assert_eq!(report.events_reindexed, 39);
    let text = report.to_string();
    assert!(text.contains("cut") && text.contains("1 record"), "{text}");
    assert_eq!(store.head_position(), report.head);
    store.close().await.unwrap();
    // Closed, the segment ends where its log ends: exactly the cut is gone.
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        (n as u64) - report.tail_bytes_cut
    );
}

/// Flips `n` bytes at random offsets (from `seed`) in a sled database's
/// data file (`db`; its `conf` is left alone, or sled refuses at once).
fn flip_bytes(dir: &std::path::Path, n: usize, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    {
        let path = dir.join("db");
        let mut bytes = std::fs::read(&path).unwrap();
        assert!(!bytes.is_empty(), "{}", path.display());
        for _ in 0..n {
            let at = rng.usize(..bytes.len());
            bytes[at] ^= rng.u8(1..);
        }
        std::fs::write(&path, &bytes).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_derived_databases_are_set_aside_and_rebuilt() {
    for seed in [1u64, 2, 3] {
        let dir = tempfile::tempdir().unwrap();
        two_sessions(dir.path()).await;
        for store in ["projections", "snapshots", "index"] {
            flip_bytes(&dir.path().join(store), 32, seed);
        }
        let engine = Engine::open_with(dir.path(), snapshotting()).unwrap();
        let report = engine
            .recovery_report(&Principal::platform_administrator("ops"))
            .unwrap();
        engine.start().await.unwrap();
        let view = engine.view(&handler(), "I-1").await.unwrap();
        assert_eq!(
            view.case_file.get("notes"),
            Some(&json!("later 4")),
            "seed {seed}: {report}"
        );
        let at = open_at(&engine, "I-4", "burglary delta").await;
        assert_eq!(
            found(&engine, "burglary", at).await,
            ["I-1", "I-2", "I-3", "I-4"],
            "seed {seed}: {report}"
        );
        engine.shutdown().await.unwrap();
    }
}

/// An engine keeping `reserve` bytes free.
fn reserving(reserve: u64) -> EngineConfig {
    EngineConfig {
        min_free_bytes: reserve,
        ..registered()
    }
}

/// A disk filled through the engine.
struct Filled {
    disk: Tmpfs,
    dir: std::path::PathBuf,
    engine: Engine,
    /// The cases acknowledged, in order.
    opened: Vec<String>,
    /// The command the full disk refused.
    refusal: EngineError,
}

/// An engine on a tmpfs of `size` keeping `reserve` bytes free, with
/// incidents of long summaries opened until a command is refused. `None`
/// (the test says it was skipped) if this process may not mount a tmpfs.
async fn filled_disk(size: &str, reserve: u64) -> Option<Filled> {
    let Some(disk) = Tmpfs::mount(size) else {
        eprintln!("skipped: this process cannot mount a tmpfs (run as root to include it)");
        return None;
    };
    let dir = disk.path().join("data");
    let engine = Engine::open_with(&dir, reserving(reserve)).unwrap();
    engine.start().await.unwrap();
    engine
        .deploy(&admin(), INCIDENT, Format::Toml)
        .await
        .unwrap();
    let long = "burglary ".repeat(2_000);
    let mut opened = Vec::new();
    let refusal = loop {
        let id = format!("I-{}", opened.len() + 1);
        match open_incident(&engine, &id, json!(long)).await {
            Ok(()) => opened.push(id),
            Err(e) => break e,
        }
        assert!(opened.len() < 100_000, "the disk never filled");
    };
    Some(Filled {
        disk,
        dir,
        engine,
        opened,
        refusal,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_commands_cleanly_and_the_engine_goes_on_once_space_returns() {
    // Open cases with long summaries until the disk is full.
    let reserve = 8 * 1024 * 1024;
    let Some(Filled {
        disk,
        dir,
        engine,
        opened,
        refusal,
    }) = filled_disk("40m", reserve).await
    else {
        return;
    };
    assert_eq!(
        refusal.kind(),
        casebook::ErrorKind::ResourceExhausted,
        "{refusal}"
    );
    assert!(refusal.to_string().contains("full"), "{refusal}");
    assert!(opened.len() > 10);
    // Reads go on; the views caught up with everything acknowledged.
    let last = opened.last().unwrap().clone();
    if let Err(e) = engine.view(&handler(), &last).await {
        panic!("{e}");
    }

    // Space returns: commands are accepted again, without a reopen, and
    // the views keep up.
    disk.resize("120m");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let at = open_at(&engine, "I-after", "burglary after").await;
    assert!(found(&engine, "after", at)
        .await
        .contains(&"I-after".to_string()));
    engine.shutdown().await.unwrap();
    drop(engine);

    // And the engine reopens with every acknowledged case.
    let engine = Engine::open_with(&dir, reserving(reserve)).unwrap();
    engine.start().await.unwrap();
    for id in opened.iter().chain(std::iter::once(&"I-after".to_string())) {
        engine
            .view(&handler(), id)
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
    }
    engine.shutdown().await.unwrap();
}

/// Opens a sled database the engine or store just closed: sled 0.34 lets
/// go of its file lock a moment after the close (its threads are not
/// joined), so the open is retried for a while.
fn reopen_sled(path: std::path::PathBuf, segment_size: usize) -> sled::Db {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match sled::Config::new()
            .path(&path)
            .segment_size(segment_size)
            .open()
        {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("waiting for {}: {e}", path.display());
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
}

/// Overwrites every page of the tenant's `cases` projection with bytes
/// that are no page: sled opens the database and reads them back, and
/// only a query that decodes them finds the damage.
fn damage_case_pages(dir: &std::path::Path) {
    let db = reopen_sled(dir.join("projections"), 4 << 20);
    let mut damaged = 0;
    for name in db.tree_names() {
        if !name.starts_with(b"cases/kent/") {
            continue;
        }
        let tree = db.open_tree(&name).unwrap();
        for key in tree.iter().keys() {
            let key = key.unwrap();
            if key.first() == Some(&0x01) {
                tree.insert(key, &[0xEE, 0xEE, 0xEE][..]).unwrap();
                damaged += 1;
            }
        }
    }
    assert!(damaged > 0, "no page of the cases projection found");
    db.flush().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_found_by_a_read_sets_the_views_aside_and_rebuilds_them() {
    let dir = tempfile::tempdir().unwrap();
    two_sessions(dir.path()).await;
    damage_case_pages(dir.path());

    let engine = Engine::open_with(dir.path(), snapshotting()).unwrap();
    let ops = Principal::platform_administrator("ops");
    assert!(engine.recovery_report(&ops).unwrap().is_clean());
    engine.start().await.unwrap();
    // The first read finds the damage: a retryable answer, not a crash, not
    // "unknown case", not a panic inside sled.
    let first = engine
        .case_view(&handler(), "I-1", Consistency::Eventual)
        .await
        .expect_err("a damaged page read as a view");
    assert_eq!(first.kind(), casebook::ErrorKind::Unavailable, "{first}");
    assert!(first.to_string().contains("rebuilt"), "{first}");
    // Reads then wait or answer "rebuilding" until the views are rebuilt
    // from the log, and never answer that a case does not exist.
    let deadline = std::time::Instant::now() + WAIT;
    let view = loop {
        match engine
            .case_view(&handler(), "I-1", Consistency::Eventual)
            .await
        {
            Ok(view) => break view,
            Err(e) => {
                assert_eq!(e.kind(), casebook::ErrorKind::Unavailable, "{e}");
                assert!(std::time::Instant::now() < deadline, "still: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(view.view.case_file.get("notes"), Some(&json!("later 4")));
    // The damaged database is kept for diagnosis, and the replacement is
    // reported.
    let replaced = engine.derived_rebuilds(&ops).unwrap();
    assert_eq!(replaced.len(), 1, "{replaced:?}");
    assert_eq!(replaced[0].store, "projections");
    assert!(replaced[0].reason.contains("damaged"), "{replaced:?}");
    let kept = replaced[0].set_aside.clone().expect("set aside");
    assert!(kept.join("WHY").exists(), "{}", kept.display());
    assert!(engine.derived_rebuilds(&handler()).is_err());
    // Every view is whole again, and new work is applied.
    let at = open_at(&engine, "I-4", "burglary delta").await;
    assert_eq!(
        found(&engine, "burglary", at).await,
        ["I-1", "I-2", "I-3", "I-4"]
    );
    engine.shutdown().await.unwrap();
    drop(engine);

    // The rebuilt database is the one the next opening uses.
    let engine = Engine::open_with(dir.path(), snapshotting()).unwrap();
    assert!(engine.recovery_report(&ops).unwrap().is_clean());
    engine.start().await.unwrap();
    let view = engine
        .case_view(
            &handler(),
            "I-4",
            Consistency::AtLeast {
                position: at,
                timeout: WAIT,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        view.view.case_file.get("summary"),
        Some(&json!("burglary delta"))
    );
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_reserve_a_full_disk_that_broke_the_views_is_mended_by_a_retry() {
    // With no reserve, the disk fills under the log and the views alike.
    let Some(Filled {
        disk,
        engine,
        opened,
        ..
    }) = filled_disk("24m", 0).await
    else {
        return;
    };
    // Let the views run into the full disk too.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let faulted = |statuses: &[casebook::engine::TenantProjectionStatus]| {
        statuses
            .iter()
            .filter(|s| matches!(s.state, casebook::engine::TenantRunState::Faulted { .. }))
            .map(|s| s.projection.clone())
            .collect::<Vec<_>>()
    };
    let broken = faulted(&engine.projection_status(&admin()).await.unwrap());
    assert!(!broken.is_empty(), "no view ran into the full disk");

    // Space returns. The log takes commands again by itself; the views
    // resume once an administrator retries them, even where sled, having
    // failed a write, would take none until reopened.
    disk.resize("200m");
    let deadline = std::time::Instant::now() + WAIT;
    let at = loop {
        let mut req = OpenCase::new(
            "incident",
            CaseFile::new()
                .with("summary", "burglary after")
                .with("ward", "north"),
        );
        req.case_id = Some("I-after".parse().unwrap());
        req.context = ctx();
        match engine.open_case(&handler(), req).await {
            Ok(done) => break done.position.unwrap(),
            Err(e) => {
                assert!(e.kind().is_retryable(), "{e}");
                assert!(std::time::Instant::now() < deadline, "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    for name in faulted(&engine.projection_status(&admin()).await.unwrap()) {
        engine.retry_projection(&admin(), &name).await.unwrap();
    }
    assert!(found(&engine, "after", at)
        .await
        .contains(&"I-after".to_string()));
    let replaced = engine
        .derived_rebuilds(&Principal::platform_administrator("ops"))
        .unwrap();
    assert!(
        replaced
            .iter()
            .any(|r| r.store == "projections" && r.reason.contains("writes")),
        "{replaced:?}"
    );
    // Every case acknowledged before the disk filled is in the views.
    let last = opened
        .last()
        .expect("cases acknowledged before the disk filled");
    engine
        .case_view(&handler(), last, Consistency::Eventual)
        .await
        .unwrap_or_else(|e| panic!("{last}: {e}"));
    assert_eq!(
        engine
            .projection_status(&admin())
            .await
            .unwrap()
            .iter()
            .filter(|s| matches!(s.state, casebook::engine::TenantRunState::Faulted { .. }))
            .count(),
        0
    );
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_a_read_finds_damaged_is_rebuilt_from_the_log_while_the_store_serves() {
    use casebook::log::{
        Direction, EventData, EventStore, ExpectedVersion, LogStore, StreamVersion,
    };
    let dir = tempfile::tempdir().unwrap();
    let stream = forty_notes(dir.path()).await;
    // Every stream entry of the index overwritten: sled opens it, and the
    // marker says it covers the log, so only a read finds the damage.
    {
        let db = reopen_sled(dir.path().join("index"), 512 << 10);
        let tree = db.open_tree("log").unwrap();
        let mut damaged = 0;
        for key in tree.scan_prefix(b"S").keys() {
            tree.insert(key.unwrap(), &[0xEE, 0xEE][..]).unwrap();
            damaged += 1;
        }
        assert!(damaged > 0, "no stream entry in the index");
        db.flush().unwrap();
    }

    let store = LogStore::open(dir.path()).unwrap();
    assert!(store.recovery_report().is_clean());
    let read = |store: &LogStore| {
        let (store, stream) = (store.clone(), stream.clone());
        async move {
            store
                .read_stream(&stream, Direction::Forward, StreamVersion::START, 100)
                .await
        }
    };
    let first = read(&store)
        .await
        .expect_err("a damaged index entry read as events");
    assert!(first.kind().is_retryable(), "{first}");
    assert!(first.to_string().contains("rebuilt"), "{first}");
    // The writer rebuilds the index from the log; reads then answer whole.
    let deadline = std::time::Instant::now() + WAIT;
    let events = loop {
        match read(&store).await {
            Ok(events) => break events,
            Err(e) => {
                assert!(e.kind().is_retryable(), "{e}");
                assert!(std::time::Instant::now() < deadline, "still: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert_eq!(events.len(), 40);
    assert_eq!(&events[39].payload[..], b"note 39");
    // The damaged index was kept for diagnosis.
    let aside = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("index.aside-"))
        .count();
    assert_eq!(aside, 1);
    // Appends go on and are indexed in the new index.
    let e = EventData::new("Noted", b"after".to_vec(), note_meta());
    store
        .append(&stream, ExpectedVersion::Exact(StreamVersion(39)), vec![e])
        .await
        .unwrap();
    assert_eq!(read(&store).await.unwrap().len(), 41);
    store.close().await.unwrap();
    drop(store);
    let store = LogStore::open(dir.path()).unwrap();
    assert!(
        store.recovery_report().is_clean(),
        "{}",
        store.recovery_report()
    );
    assert_eq!(read(&store).await.unwrap().len(), 41);
    store.close().await.unwrap();
}
