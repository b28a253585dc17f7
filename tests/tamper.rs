//! Tamper evidence end to end: a real `LogStore` on a temporary directory,
//! its files altered the ways an intruder with the disk could (a flipped
//! byte anywhere, a record removed, segments swapped or spliced in from
//! another store, the tail cut, the whole log rolled back), and
//! `LogStore::verify_integrity` (what `casebook verify` runs) must catch and
//! locate every one without panicking; inclusion and consistency proofs
//! served by the store verify against its signed checkpoints.

use std::path::{Path, PathBuf};
use std::time::Duration;

use casebook::log::checkpoint::{CheckpointError, SignedCheckpoint};
use casebook::log::{
    ActorId, CheckpointConfig, EventData, EventStore, ExpectedVersion, GlobalPosition,
    IntegrityOptions, IntegrityReport, LogError, LogStore, LogStoreConfig, Metadata, Source,
    StreamId, TenantId,
};

const HEADER: u64 = 32;

fn config() -> LogStoreConfig {
    LogStoreConfig {
        // Several segments from a few hundred events.
        segment_size: 8 * 1024,
        preallocate: 0,
        checkpoints: CheckpointConfig {
            every_events: 25,
            every: Duration::from_secs(3600),
            signer: None,
        },
        ..LogStoreConfig::default()
    }
}

fn event(i: u64) -> EventData {
    let meta = Metadata::new(
        ActorId::new(format!("pc-{}", i % 3)),
        Source::system("tamper"),
    )
    .with_reason(format!("reason {i}"));
    EventData::new(
        "Noted",
        format!(
            "{{\"n\":{i},\"text\":\"{}\"}}",
            "x".repeat((i % 40) as usize)
        )
        .into_bytes(),
        meta,
    )
}

/// Appends `appends` appends of one to three events to two tenants' streams,
/// then closes the store (which signs a last checkpoint).
async fn fill(dir: &Path, from: u64, appends: u64) {
    let store = LogStore::open_with(dir, config()).unwrap();
    for a in from..from + appends {
        let tenant = if a % 2 == 0 { "kent" } else { "essex" };
        let stream =
            StreamId::new(TenantId::new(tenant).unwrap(), "case", &format!("C-{a}")).unwrap();
        let events = (0..1 + a % 3).map(|k| event(a * 10 + k)).collect();
        store
            .append(&stream, ExpectedVersion::NoStream, events)
            .await
            .unwrap();
    }
    store.close().await.unwrap();
}

fn verify(dir: &Path) -> IntegrityReport {
    LogStore::verify_integrity(dir, &IntegrityOptions::default(), |_, _| {}).unwrap()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

/// Each record of a segment: (frame offset, frame length, first position).
fn records(bytes: &[u8]) -> Vec<(u64, u64, u64)> {
    let mut out = Vec::new();
    let mut at = HEADER as usize;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        let body = &bytes[at + 8..at + 8 + len];
        let mut p = 1usize;
        for _ in 0..3 {
            p += 1 + body[p] as usize;
        }
        let first = u64::from_le_bytes(body[p + 8..p + 16].try_into().unwrap());
        out.push((at as u64, (8 + len) as u64, first));
        at += 8 + len;
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intact_log_verifies_with_every_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 0, 150).await;
    let report = verify(dir.path());
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.events, 300);
    assert_eq!(report.signed_through, 300, "{report}");
    assert_eq!(report.crc_only(), 0);
    assert!(report.checkpoints >= 300 / 25, "{report}");
    assert!(
        segments(dir.path()).len() >= 4,
        "the test wants several segments"
    );
}

/// One byte flipped at each of hundreds of random offsets of the segment
/// files: every flip is caught and named by its segment, the offset of the
/// record that holds it (0 for a segment header) and that record's position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_flipped_byte_is_caught_and_located() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 0, 150).await;
    let files = segments(dir.path());
    let mut rng = fastrand::Rng::with_seed(23);
    let mut with_id = 0;
    let flips = 400;
    for _ in 0..flips {
        let file = &files[rng.usize(..files.len())];
        let mut bytes = std::fs::read(file).unwrap();
        let at = rng.usize(..bytes.len());
        let record = records(&bytes)
            .into_iter()
            .find(|(o, l, _)| (*o..o + l).contains(&(at as u64)));
        let original = bytes[at];
        bytes[at] ^= rng.u8(1..=255);
        std::fs::write(file, &bytes).unwrap();
        let report = verify(dir.path());
        bytes[at] = original;
        std::fs::write(file, &bytes).unwrap();

        let first = report
            .problems
            .first()
            .unwrap_or_else(|| panic!("flip at {} of {} not caught", at, file.display()));
        assert_eq!(first.segment.as_deref(), Some(file.as_path()), "{first}");
        match record {
            Some((offset, _, position)) => {
                assert_eq!(first.offset, Some(offset), "flip at {at}: {first}");
                assert_eq!(first.position, Some(GlobalPosition(position)), "{first}");
            }
            None => {
                assert!(at < HEADER as usize, "flip at {at} outside any record");
                assert_eq!(first.offset, Some(0), "{first}");
            }
        }
        with_id += usize::from(first.event_id.is_some());
    }
    // Most flips leave the record decodable enough to name its event.
    assert!(with_id > flips / 2, "{with_id} of {flips} named an event");
    assert!(verify(dir.path()).is_ok());
}

/// An intruder who also fixes the checksum is caught by the tree: by the
/// stored leaf, or (the node file deleted too) by the signed checkpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alteration_with_a_fixed_checksum_is_caught_by_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 0, 60).await;
    let file = &segments(dir.path())[1];
    let mut bytes = std::fs::read(file).unwrap();
    let (offset, len, position) = records(&bytes)[2];
    let (o, l) = (offset as usize, len as usize);
    // The last payload byte of the record: a digit or an `x`.
    bytes[o + l - 2] ^= 0x01;
    let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[o..o + 4]), &bytes[o + 8..o + l]);
    bytes[o + 4..o + 8].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(file, &bytes).unwrap();

    let report = verify(dir.path());
    let first = &report.problems[0];
    assert_eq!(first.segment.as_deref(), Some(file.as_path()));
    assert_eq!(first.offset, Some(offset));
    assert!(first.position.unwrap().0 >= position, "{first}");
    assert!(first.event_id.is_some(), "{first}");
    assert!(first.what.contains("altered"), "{first}");

    std::fs::remove_file(dir.path().join("tree").join("nodes")).unwrap();
    let report = verify(dir.path());
    assert!(!report.is_ok());
    assert!(
        report.problems[0].what.contains("does not match the log"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_record_is_caught_where_it_was() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 0, 60).await;
    let file = &segments(dir.path())[1];
    let mut bytes = std::fs::read(file).unwrap();
    let (offset, len, position) = records(&bytes)[1];
    bytes.drain(offset as usize..(offset + len) as usize);
    std::fs::write(file, &bytes).unwrap();
    let report = verify(dir.path());
    let first = &report.problems[0];
    assert_eq!(first.segment.as_deref(), Some(file.as_path()), "{report}");
    assert_eq!(first.offset, Some(offset), "{first}");
    assert_eq!(first.position, Some(GlobalPosition(position)), "{first}");
    assert!(first.what.contains("removed"), "{first}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_and_spliced_segments_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 0, 150).await;
    let files = segments(dir.path());
    let (a, b) = (&files[1], &files[2]);
    let tmp = a.with_extension("tmp");
    std::fs::rename(a, &tmp).unwrap();
    std::fs::rename(b, a).unwrap();
    std::fs::rename(&tmp, b).unwrap();
    let report = verify(dir.path());
    let first = &report.problems[0];
    assert_eq!(first.segment.as_deref(), Some(a.as_path()), "{report}");
    assert_eq!(first.offset, Some(0), "{first}");
    std::fs::rename(a, &tmp).unwrap();
    std::fs::rename(b, a).unwrap();
    std::fs::rename(&tmp, b).unwrap();
    assert!(verify(dir.path()).is_ok());

    // Segment 2 of another store, with other events at the same positions.
    let other = tempfile::tempdir().unwrap();
    fill(other.path(), 1000, 150).await;
    let theirs = &segments(other.path())[2];
    std::fs::copy(theirs, &files[2]).unwrap();
    let report = verify(dir.path());
    let first = &report.problems[0];
    assert_eq!(
        first.segment.as_deref(),
        Some(files[2].as_path()),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_tail_is_caught_against_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 0, 60).await;
    let file = segments(dir.path()).pop().unwrap();
    let bytes = std::fs::read(&file).unwrap();
    let recs = records(&bytes);
    let (offset, _, position) = recs[recs.len() - 1];
    // At a record boundary: what is left is a consistent, shorter log.
    std::fs::write(&file, &bytes[..offset as usize]).unwrap();
    let report = verify(dir.path());
    let first = &report.problems[0];
    assert!(first.what.contains("holds only"), "{report}");
    assert_eq!(first.position, Some(GlobalPosition(position)), "{first}");
    assert_eq!(first.offset, Some(offset), "{first}");
    // Inside a record: a damaged record.
    std::fs::write(&file, &bytes[..offset as usize + 5]).unwrap();
    let report = verify(dir.path());
    assert_eq!(report.problems[0].offset, Some(offset), "{report}");
}

/// A whole data directory rolled back to an older copy is consistent with
/// itself: only a checkpoint kept outside it shows the rollback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_is_caught_only_against_a_held_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let old = tempfile::tempdir().unwrap();
    fill(dir.path(), 0, 40).await;
    copy_dir(dir.path(), old.path());
    fill(dir.path(), 40, 40).await;
    let held = std::fs::read_to_string(dir.path().join("checkpoints").join("latest")).unwrap();
    let options = IntegrityOptions {
        held: Some(held.clone()),
        key: None,
    };
    let report = LogStore::verify_integrity(dir.path(), &options, |_, _| {}).unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.held, Some(report.events));

    std::fs::remove_dir_all(dir.path()).unwrap();
    copy_dir(old.path(), dir.path());
    assert!(verify(dir.path()).is_ok(), "the older copy is consistent");
    let report = LogStore::verify_integrity(dir.path(), &options, |_, _| {}).unwrap();
    assert!(!report.is_ok());
    assert!(
        report.problems[0].what.contains("held checkpoint"),
        "{report}"
    );
    assert!(report.problems[0].what.contains("rolled back"), "{report}");

    // Bad held checkpoints are refused with a typed error, not a panic.
    let altered = held.replacen('\n', "0\n", 2);
    let err = LogStore::verify_integrity(
        dir.path(),
        &IntegrityOptions {
            held: Some(altered),
            key: None,
        },
        |_, _| {},
    )
    .unwrap_err();
    assert!(matches!(err, LogError::Checkpoint(_)), "{err}");
    let err = LogStore::verify_integrity(
        dir.path(),
        &IntegrityOptions {
            held: Some("not a checkpoint".into()),
            key: None,
        },
        |_, _| {},
    )
    .unwrap_err();
    assert!(
        matches!(err, LogError::Checkpoint(CheckpointError::Malformed(_))),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_verify_against_signed_checkpoints_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 0, 40).await;
    let store = LogStore::open_with(dir.path(), config()).unwrap();
    let first = store.latest_checkpoint().expect("a checkpoint at close");
    let verifier = store.checkpoint_verifier();
    let first = first.verify(&verifier).unwrap().clone();
    drop(store);
    fill(dir.path(), 40, 40).await;

    let store = LogStore::open_with(dir.path(), config()).unwrap();
    let note = store.latest_checkpoint().unwrap();
    let last = note.verify(&store.checkpoint_verifier()).unwrap().clone();
    assert!(last.size > first.size);
    assert_eq!(store.tree_root(last.size).await.unwrap(), last.root);
    for position in [0, 1, first.size - 1, first.size, last.size - 1] {
        let proof = store
            .inclusion_proof(GlobalPosition(position), last.size)
            .await
            .unwrap();
        proof.verify(&last.root).unwrap();
        let mut bad = proof.clone();
        bad.leaf[0] ^= 1;
        assert!(bad.verify(&last.root).is_err());
    }
    let consistency = store
        .consistency_proof(first.size, last.size)
        .await
        .unwrap();
    consistency.verify(&first.root, &last.root).unwrap();
    let all = store.checkpoints().await.unwrap();
    assert!(all.len() >= 2);
    for c in &all {
        c.verify(&store.checkpoint_verifier()).unwrap();
    }
    assert_eq!(SignedCheckpoint::parse(&note.note()).unwrap(), note);

    // Sizes beyond the tree and positions beyond the size: typed errors.
    let beyond = last.size + 1;
    assert!(matches!(
        store.inclusion_proof(GlobalPosition(0), beyond).await,
        Err(LogError::Proof(_))
    ));
    assert!(matches!(
        store
            .inclusion_proof(GlobalPosition(last.size), last.size)
            .await,
        Err(LogError::Proof(_))
    ));
    assert!(matches!(
        store.consistency_proof(0, last.size).await,
        Err(LogError::Proof(_))
    ));
    assert!(matches!(
        store.consistency_proof(2, beyond).await,
        Err(LogError::Proof(_))
    ));
    store.close().await.unwrap();
}

/// A log cut back behind its checkpoints still opens (as recovery from an
/// older copy must), but the history it no longer matches is kept and
/// `verify` reports it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_cut_back_log_keeps_the_old_checkpoints_as_evidence() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 0, 60).await;
    let file = segments(dir.path()).pop().unwrap();
    let bytes = std::fs::read(&file).unwrap();
    let (offset, _, _) = records(&bytes)[0];
    std::fs::write(&file, &bytes[..offset as usize]).unwrap();
    let store = LogStore::open_with(dir.path(), config()).unwrap();
    let rebuilt = &store.recovery_report().rebuilt;
    assert!(
        rebuilt
            .iter()
            .any(|r| r.store == "checkpoints" && r.set_aside.is_some()),
        "{}",
        store.recovery_report()
    );
    store.close().await.unwrap();
    drop(store);
    let report = verify(dir.path());
    assert!(!report.is_ok());
    assert!(
        report.problems.iter().any(|p| p.what.contains("set aside")),
        "{report}"
    );
}

/// Through the engine: a tenant gets the proof of its own event under a
/// signed checkpoint; another tenant's event, or one that does not exist,
/// reads as not found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_proves_its_own_events_and_sees_no_others() {
    use casebook::definition::Format;
    use casebook::engine::{EngineConfig, EngineError, OpenCase};
    use casebook::log::{Direction, StreamVersion};
    use casebook::security::Principal;
    use casebook::{Engine, ErrorKind};

    let kent = TenantId::new("kent").unwrap();
    let essex = TenantId::new("essex").unwrap();
    let config = || EngineConfig::with_tenants([kent.clone(), essex.clone()]);
    let officer = Principal::new(kent.clone(), "foi-7").with_roles(["foi_officer"]);
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open_with(dir.path(), config()).unwrap();
    engine.start().await.unwrap();
    let admin = Principal::new(kent.clone(), "admin-1").with_roles(["administrator"]);
    engine
        .deploy(
            &admin,
            include_str!("../examples/definitions/foi-request.toml"),
            Format::Toml,
        )
        .await
        .unwrap();
    let file = casebook::case::CaseFile::from_json(casebook::rules::serde_json::json!({
        "requester": "P-1001", "received_on": "2026-11-02", "request_text": "Burglaries in 2025"
    }))
    .unwrap();
    let opened = engine
        .open_case(&officer, OpenCase::new("foi_request", file))
        .await
        .unwrap();
    let stream = StreamId::new(kent.clone(), "case", opened.case_id.as_ref()).unwrap();
    let events = engine
        .store(&Principal::platform_administrator("ops"))
        .unwrap()
        .read_stream(&stream, Direction::Forward, StreamVersion::START, 10)
        .await
        .unwrap();
    let id = events[0].id;
    // Signed when the engine shuts down at the latest.
    engine.shutdown().await.unwrap();
    drop(engine);

    let engine = Engine::open_with(dir.path(), config()).unwrap();
    let verifier = engine.checkpoint_verifier().unwrap();
    let proof = engine.event_proof(&officer, id).await.unwrap();
    let checkpoint = proof.checkpoint.verify(&verifier).unwrap();
    proof.proof.verify(&checkpoint.root).unwrap();
    assert_eq!(proof.proof.index, events[0].position.0);
    let latest = engine.latest_checkpoint(&officer).await.unwrap().unwrap();
    assert_eq!(latest, proof.checkpoint);

    let other = Principal::new(essex, "foi-9").with_roles(["foi_officer"]);
    let err = engine.event_proof(&other, id).await.unwrap_err();
    assert!(matches!(err, EngineError::UnknownEvent { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let missing = casebook::log::EventId::new();
    let err = engine.event_proof(&officer, missing).await.unwrap_err();
    assert!(matches!(err, EngineError::UnknownEvent { .. }), "{err}");
    let size = checkpoint.size;
    let err = engine
        .consistency_proof(&officer, 1, size + 1)
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::InvalidArgument { .. }),
        "{err}"
    );
    engine.consistency_proof(&officer, 1, size).await.unwrap();
    engine.shutdown().await.unwrap();
}
