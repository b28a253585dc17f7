//! Online backup and restore on a real `LogStore`: a backup taken while
//! writers append restores to a log byte-identical to the source up to the
//! recovery point, with the same root and the same events; a second backup
//! copies only what is new; a damaged or foreign backup is refused with
//! nothing written to the target.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use casebook::log::checkpoint::CheckpointSigner;
use casebook::log::{
    ActorId, CheckpointConfig, EventData, EventStore, ExpectedVersion, GlobalPosition,
    IntegrityOptions, LogError, LogStore, LogStoreConfig, Metadata, Source, StreamId, TenantId,
};

fn config() -> LogStoreConfig {
    LogStoreConfig {
        segment_size: 16 * 1024,
        checkpoints: CheckpointConfig {
            every_events: 40,
            every: Duration::from_millis(20),
            signer: None,
        },
        ..LogStoreConfig::default()
    }
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

/// Writers append until told to stop; returns how many appends they made.
fn writers(store: &LogStore, stop: &Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..4)
        .map(|w| {
            let store = store.clone();
            let stop = Arc::clone(stop);
            tokio::spawn(async move {
                let stream =
                    StreamId::new(TenantId::new("kent").unwrap(), "case", &format!("W-{w}"))
                        .unwrap();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let meta = Metadata::new(ActorId::new("pc-1"), Source::system("backup"));
                    let event =
                        EventData::new("Noted", format!("writer {w} event {n}").into_bytes(), meta);
                    store
                        .append(&stream, ExpectedVersion::Any, vec![event])
                        .await
                        .unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_byte_identical_up_to_its_point() {
    let dir = tempfile::tempdir().unwrap();
    let backups = tempfile::tempdir().unwrap();
    let to = backups.path().join("b");
    let store = LogStore::open_with(dir.path(), config()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let running = writers(&store, &stop);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (data, target) = (dir.path().to_path_buf(), to.clone());
    let first = tokio::task::spawn_blocking(move || LogStore::backup_dir(&data, &target))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The embedder's way, into the same folder: incremental.
    let second = store.backup(&to).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in running {
        w.await.unwrap();
    }
    let head = store.head_position().unwrap().0 + 1;
    store.close().await.unwrap();
    drop(store);

    assert!(first.events > 0 && second.events >= first.events);
    assert!(head > second.events, "writers went on after the backup");
    assert!(
        second.files_kept > 0,
        "the second backup kept sealed segments: {second:?}"
    );

    let restored = backups.path().join("restored");
    let report = LogStore::restore_dir(&to, &restored, None).unwrap();
    assert_eq!(report.events, second.events);
    assert_eq!(report.root, second.root);
    // Byte-identical to the source up to the recovery point.
    let source = segments(dir.path());
    let copies = segments(&restored);
    assert!(!copies.is_empty() && copies.len() <= source.len());
    for (s, c) in source.iter().zip(&copies) {
        let (s, c) = (std::fs::read(s).unwrap(), std::fs::read(c).unwrap());
        assert_eq!(
            &s[..c.len()],
            &c[..],
            "a restored segment differs from the source"
        );
    }
    let check =
        LogStore::verify_integrity(&restored, &IntegrityOptions::default(), |_, _| {}).unwrap();
    assert!(check.is_ok(), "{check}");
    assert_eq!(check.root, second.root);

    // The restored store opens at the point, with the same events.
    let original = LogStore::open_with(dir.path(), config()).unwrap();
    let copy = LogStore::open_with(&restored, config()).unwrap();
    assert_eq!(
        copy.head_position(),
        Some(GlobalPosition(second.events - 1))
    );
    let kent = TenantId::new("kent").unwrap();
    let want = original
        .read_all(&kent, GlobalPosition::START, 10_000)
        .await
        .unwrap();
    let got = copy
        .read_all(&kent, GlobalPosition::START, 10_000)
        .await
        .unwrap();
    let want: Vec<_> = want
        .iter()
        .filter(|e| e.position.0 < second.events)
        .map(|e| (e.id, e.payload.clone()))
        .collect();
    let got: Vec<_> = got.iter().map(|e| (e.id, e.payload.clone())).collect();
    assert_eq!(got, want);
    copy.close().await.unwrap();
    original.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_foreign_backup_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let backups = tempfile::tempdir().unwrap();
    let to = backups.path().join("b");
    let store = LogStore::open_with(dir.path(), config()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let running = writers(&store, &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for w in running {
        w.await.unwrap();
    }
    store.close().await.unwrap();
    drop(store);
    LogStore::backup_dir(dir.path(), &to).unwrap();
    let target = backups.path().join("restored");
    let refused = |from: &Path| {
        let err = LogStore::restore_dir(from, &target, None).unwrap_err();
        assert!(
            !target.exists(),
            "a refused restore wrote {}",
            target.display()
        );
        err
    };

    let segment = segments(&to)[0].clone();
    let bytes = std::fs::read(&segment).unwrap();
    // Altered.
    let mut altered = bytes.clone();
    altered[100] ^= 1;
    std::fs::write(&segment, &altered).unwrap();
    assert!(matches!(refused(&to), LogError::Integrity { .. }));
    // Truncated.
    std::fs::write(&segment, &bytes[..bytes.len() - 1]).unwrap();
    assert!(matches!(refused(&to), LogError::Integrity { .. }));
    // Missing.
    std::fs::remove_file(&segment).unwrap();
    assert!(matches!(refused(&to), LogError::Io { .. }));
    std::fs::write(&segment, &bytes).unwrap();

    // Checked with another log's key, or a manifest that is not one.
    let other = CheckpointSigner::generate("casebook/other")
        .unwrap()
        .verifier();
    let err = LogStore::restore_dir(&to, &target, Some(&other)).unwrap_err();
    assert!(matches!(err, LogError::Checkpoint(_)), "{err}");
    assert!(!target.exists());
    let manifest = to.join("MANIFEST");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replacen("file log/", "file log/x", 1)).unwrap();
    assert!(matches!(refused(&to), LogError::Checkpoint(_)));
    std::fs::write(&manifest, &text).unwrap();

    // A target that is not empty.
    std::fs::create_dir_all(target.join("log")).unwrap();
    let err = LogStore::restore_dir(&to, &target, None).unwrap_err();
    assert!(matches!(err, LogError::Io { .. }), "{err}");
    std::fs::remove_dir_all(&target).unwrap();

    // And intact, it restores.
    LogStore::restore_dir(&to, &target, None).unwrap();
    let check =
        LogStore::verify_integrity(&target, &IntegrityOptions::default(), |_, _| {}).unwrap();
    assert!(check.is_ok(), "{check}");
}
