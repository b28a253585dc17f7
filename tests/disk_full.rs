//! A full disk (issue 19): an append that cannot be written or synced is
//! never acknowledged, in either preallocation mode; acknowledged events
//! survive; the store refuses appends with a clear error, keeps serving
//! reads, and accepts appends again once space returns — by itself or
//! through `LogStore::recover` — without being reopened; close and drop
//! never hang.
//!
//! Most of it runs on a simulated segment folder with a byte budget (writes
//! that do not fit fail with ENOSPC after writing what fits, as tmpfs does)
//! and a sync that can be made to fail, so it runs anywhere. The last test
//! fills a real tmpfs, index included, when the test may mount one (root).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use casebook::log::{
    ActorId, EventData, EventId, EventStore, ExpectedVersion, GlobalPosition, LogError, LogFs,
    LogStore, LogStoreConfig, Metadata, RecordedEvent, SegmentFile, Source, StreamId, TenantId,
};
use casebook::ErrorKind;
use uuid::Uuid;

#[path = "common/tmpfs.rs"]
mod tmpfs;
use tmpfs::Tmpfs;

const WAIT: Duration = Duration::from_secs(20);

/// Budgeted in-memory segment files. Clones share state.
#[derive(Clone, Default)]
struct FullFs {
    state: Arc<Mutex<Disk>>,
}

#[derive(Default)]
struct Disk {
    files: BTreeMap<u64, Arc<Mutex<Vec<u8>>>>,
    /// Bytes the files may hold in all.
    budget: u64,
    /// Fail this many syncs from now on.
    failing_syncs: u64,
    /// Report free space (for the reserve) or not.
    reports_space: bool,
}

impl Disk {
    fn used(&self) -> u64 {
        self.files
            .values()
            .map(|f| f.lock().unwrap().len() as u64)
            .sum()
    }
}

impl FullFs {
    fn with_budget(budget: u64) -> Self {
        let fs = FullFs::default();
        fs.state.lock().unwrap().budget = budget;
        fs
    }

    fn set_budget(&self, budget: u64) {
        self.state.lock().unwrap().budget = budget;
    }

    fn fail_syncs(&self, n: u64) {
        self.state.lock().unwrap().failing_syncs = n;
    }

    fn report_space(&self) {
        self.state.lock().unwrap().reports_space = true;
    }

    fn used(&self) -> u64 {
        self.state.lock().unwrap().used()
    }
}

struct FullFile {
    disk: Arc<Mutex<Disk>>,
    data: Arc<Mutex<Vec<u8>>>,
}

fn no_space() -> io::Error {
    io::Error::from_raw_os_error(28)
}

impl SegmentFile for FullFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let data = self.data.lock().unwrap();
        let start = (offset as usize).min(data.len());
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let disk = self.disk.lock().unwrap();
        let used = disk.used();
        let mut data = self.data.lock().unwrap();
        let end = offset as usize + buf.len();
        let grow = end.saturating_sub(data.len()) as u64;
        let room = disk.budget.saturating_sub(used);
        if grow > room {
            // Write what fits, then fail, as a full tmpfs does.
            let fits = (data.len() as u64 + room).saturating_sub(offset) as usize;
            let fits = fits.min(buf.len());
            if fits > 0 {
                if data.len() < offset as usize + fits {
                    data.resize(offset as usize + fits, 0);
                }
                data[offset as usize..offset as usize + fits].copy_from_slice(&buf[..fits]);
            }
            return Err(no_space());
        }
        if data.len() < end {
            data.resize(end, 0);
        }
        data[offset as usize..end].copy_from_slice(buf);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut disk = self.disk.lock().unwrap();
        if disk.failing_syncs > 0 {
            disk.failing_syncs -= 1;
            return Err(io::Error::other("simulated sync failure (EIO)"));
        }
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.data.lock().unwrap().len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let disk = self.disk.lock().unwrap();
        let used = disk.used();
        let mut data = self.data.lock().unwrap();
        let grow = len.saturating_sub(data.len() as u64);
        if grow > disk.budget.saturating_sub(used) {
            return Err(no_space());
        }
        data.resize(len as usize, 0);
        Ok(())
    }
}

impl LogFs for FullFs {
    fn list(&self) -> io::Result<Vec<u64>> {
        Ok(self.state.lock().unwrap().files.keys().copied().collect())
    }

    fn open(&self, segment: u64) -> io::Result<Arc<dyn SegmentFile>> {
        let disk = self.state.lock().unwrap();
        let data = disk
            .files
            .get(&segment)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(Arc::new(FullFile {
            disk: Arc::clone(&self.state),
            data,
        }))
    }

    fn create(&self, segment: u64) -> io::Result<Arc<dyn SegmentFile>> {
        let mut disk = self.state.lock().unwrap();
        if disk.files.contains_key(&segment) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        let data = Arc::new(Mutex::new(Vec::new()));
        disk.files.insert(segment, Arc::clone(&data));
        Ok(Arc::new(FullFile {
            disk: Arc::clone(&self.state),
            data,
        }))
    }

    fn remove(&self, segment: u64) -> io::Result<()> {
        self.state.lock().unwrap().files.remove(&segment);
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        Ok(())
    }

    fn path(&self, segment: u64) -> PathBuf {
        PathBuf::from(format!("/sim/log/{segment:012}.seg"))
    }

    fn available(&self) -> io::Result<Option<u64>> {
        let disk = self.state.lock().unwrap();
        Ok(disk
            .reports_space
            .then(|| disk.budget.saturating_sub(disk.used())))
    }
}

fn kent() -> TenantId {
    TenantId::new("kent").unwrap()
}

fn stream(writer: u64) -> StreamId {
    StreamId::new(kent(), "case", &format!("w{writer}")).unwrap()
}

fn event(writer: u64, seq: u64) -> EventData {
    EventData {
        id: EventId(Uuid::from_u64_pair(writer, seq)),
        event_type: "NoteAdded".into(),
        payload: format!("{writer}:{seq}:").into_bytes().repeat(16),
        metadata: Metadata::new(ActorId::new("pc-1"), Source::system("disk-full-test")),
    }
}

fn config(preallocate: u64, reserve: u64) -> LogStoreConfig {
    LogStoreConfig {
        segment_size: 64 * 1024,
        preallocate,
        min_free_bytes: reserve,
        ..LogStoreConfig::default()
    }
}

type Acked = Arc<Mutex<Vec<(u64, u64)>>>;

/// `writers` tasks append one event at a time until each has seen `errors`
/// refusals; returns the refusals' kinds and messages.
async fn fill(store: &LogStore, writers: u64, from_seq: u64, acked: &Acked) -> Vec<LogError> {
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let acked = Arc::clone(acked);
        tasks.push(tokio::spawn(async move {
            let mut refused = Vec::new();
            for seq in from_seq..from_seq + 100_000 {
                match store
                    .append(&stream(w), ExpectedVersion::Any, vec![event(w, seq)])
                    .await
                {
                    Ok(_) => acked.lock().unwrap().push((w, seq)),
                    Err(e) => {
                        refused.push(e);
                        if refused.len() == 3 {
                            break;
                        }
                    }
                }
            }
            refused
        }));
    }
    let mut refused = Vec::new();
    for t in tasks {
        refused.extend(tokio::time::timeout(WAIT, t).await.unwrap().unwrap());
    }
    refused
}

/// Every event of the tenant, by id.
async fn stored(store: &LogStore) -> HashMap<EventId, RecordedEvent> {
    let mut all = HashMap::new();
    let mut from = GlobalPosition(0);
    loop {
        let page = store.read_all(&kent(), from, 10_000).await.unwrap();
        let Some(last) = page.last() else { break };
        from = GlobalPosition(last.position.0 + 1);
        for (i, e) in page.iter().enumerate() {
            // Positions are dense: nothing in the middle went missing.
            assert_eq!(e.position.0, page[0].position.0 + i as u64);
        }
        all.extend(page.into_iter().map(|e| (e.id, e)));
    }
    all
}

/// Every acknowledged append is stored, byte for byte.
async fn assert_kept(store: &LogStore, acked: &Acked) {
    let stored = stored(store).await;
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty());
    for (w, seq) in acked {
        let want = event(w, seq);
        let got = stored
            .get(&want.id)
            .unwrap_or_else(|| panic!("acknowledged event {w}/{seq} is missing"));
        assert_eq!(&got.payload[..], &want.payload[..], "event {w}/{seq}");
    }
}

/// The Merkle tree followed the log: reopening found its checkpoints
/// matching and set nothing aside.
fn assert_tree_kept(store: &LogStore) {
    let report = store.recovery_report();
    assert!(
        report
            .rebuilt
            .iter()
            .all(|r| r.store != "checkpoints" && r.store != "tree"),
        "{report}"
    );
}

/// The reserve of [`reserving_store`].
const RESERVE: u64 = 100 * 1024;

/// A store on a 400 KiB simulated disk that reports its free space,
/// keeping [`RESERVE`] free; with its index folder and the disk.
fn reserving_store(preallocate: u64) -> (tempfile::TempDir, FullFs, LogStore) {
    let index = tempfile::tempdir().unwrap();
    let fs = FullFs::with_budget(400 * 1024);
    fs.report_space();
    let store = LogStore::open_with_fs(
        Arc::new(fs.clone()),
        index.path(),
        config(preallocate, RESERVE),
    )
    .unwrap();
    (index, fs, store)
}

/// Closes `store`, reopens it on `fs` and checks it holds exactly the
/// acknowledged events.
async fn reopened_keeps(
    store: LogStore,
    fs: &FullFs,
    index: &std::path::Path,
    config: LogStoreConfig,
    acked: &Acked,
) {
    close_within(store).await.unwrap();
    let store = LogStore::open_with_fs(Arc::new(fs.clone()), index, config).unwrap();
    assert_kept(&store, acked).await;
    assert_eq!(stored(&store).await.len(), acked.lock().unwrap().len());
    close_within(store).await.unwrap();
}

async fn close_within(store: LogStore) -> Result<(), LogError> {
    let closed = tokio::time::timeout(WAIT, store.close())
        .await
        .expect("close hung");
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        drop(store);
        let _ = tx.send(());
    });
    tokio::time::timeout(WAIT, rx)
        .await
        .expect("drop hung")
        .unwrap();
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_is_never_acknowledged_and_appends_resume_once_space_returns() {
    for preallocate in [0, 16 * 1024] {
        let index = tempfile::tempdir().unwrap();
        let fs = FullFs::with_budget(300 * 1024);
        let store =
            LogStore::open_with_fs(Arc::new(fs.clone()), index.path(), config(preallocate, 0))
                .unwrap();
        let acked: Acked = Arc::default();
        let refused = fill(&store, 8, 0, &acked).await;
        assert!(!refused.is_empty());
        for e in &refused {
            assert!(matches!(e, LogError::Failed { .. }), "{e}");
            assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
            assert!(e.to_string().contains("No space left"), "{e}");
        }
        // Reads go on while appends are refused.
        assert_kept(&store, &acked).await;

        // Still full: appends stay refused, however often they come.
        let err = store
            .append(&stream(0), ExpectedVersion::Any, vec![event(0, 99_999)])
            .await
            .unwrap_err();
        assert!(matches!(err, LogError::Failed { .. }), "{err}");

        // Space returns: the store recovers without a reopen.
        fs.set_budget(4 * 1024 * 1024);
        store.recover().await.unwrap();
        let more = fill_some(&store, 8, 200_000, 20, &acked).await;
        assert_eq!(more, 8 * 20);
        assert_kept(&store, &acked).await;
        close_within(store).await.unwrap();

        // Reopened: the same events, and the log verifies.
        let store =
            LogStore::open_with_fs(Arc::new(fs.clone()), index.path(), config(preallocate, 0))
                .unwrap();
        assert_tree_kept(&store);
        assert_kept(&store, &acked).await;
        let total = stored(&store).await.len();
        assert_eq!(total, acked.lock().unwrap().len(), "nothing unacknowledged");
        store.verify().await.unwrap();
        close_within(store).await.unwrap();
    }
}

/// `writers` tasks append `n` events each; returns how many were acknowledged.
async fn fill_some(store: &LogStore, writers: u64, from_seq: u64, n: u64, acked: &Acked) -> usize {
    let mut ok = 0;
    for w in 0..writers {
        for seq in from_seq..from_seq + n {
            store
                .append(&stream(w), ExpectedVersion::Any, vec![event(w, seq)])
                .await
                .unwrap();
            acked.lock().unwrap().push((w, seq));
            ok += 1;
        }
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_free_space_reserve_refuses_appends_before_any_write_fails() {
    for preallocate in [0, 16 * 1024] {
        let (index, fs, store) = reserving_store(preallocate);
        let reserve = RESERVE;
        let acked: Acked = Arc::default();
        let refused = fill(&store, 8, 0, &acked).await;
        assert!(!refused.is_empty());
        for e in &refused {
            match e {
                LogError::StorageFull {
                    available,
                    reserve: r,
                    ..
                } => {
                    assert_eq!(*r, reserve);
                    assert!(*available < reserve + 64 * 1024, "{e}");
                }
                other => panic!("expected the reserve to refuse, got {other}"),
            }
            assert_eq!(e.kind(), ErrorKind::ResourceExhausted);
            assert!(e.to_string().contains("free space"), "{e}");
        }
        // Nothing failed half-way: the reserve is (mostly) still free.
        assert!(fs.used() <= 400 * 1024 - reserve + 64 * 1024);
        assert_kept(&store, &acked).await;

        // Space returns: the next append goes through, no recover needed.
        fs.set_budget(4 * 1024 * 1024);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(fill_some(&store, 8, 200_000, 10, &acked).await, 80);
        reopened_keeps(
            store,
            &fs,
            index.path(),
            config(preallocate, reserve),
            &acked,
        )
        .await;
    }
}

/// The audit of reads is appended `Written`: once the reserve refuses
/// commands, other writers on the same disk (the views catching up) may
/// take most of what is left, and reads must still get their audit entry.
/// An append that fits in the zeroed headroom takes no free space and goes
/// through; without zero-ahead it needs half the reserve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn written_appends_on_zeroed_blocks_go_on_when_others_take_the_reserve() {
    for preallocate in [0, 16 * 1024] {
        let (index, fs, store) = reserving_store(preallocate);
        let reserve = RESERVE;
        let acked: Acked = Arc::default();
        assert!(!fill(&store, 4, 0, &acked).await.is_empty());
        // The zero-ahead tops its headroom up; then the rest of the disk
        // but 10 KiB goes to someone else.
        tokio::time::sleep(Duration::from_millis(200)).await;
        fs.set_budget(fs.used() + 10 * 1024);
        tokio::time::sleep(Duration::from_millis(150)).await;

        let audit = store
            .append_written(&stream(99), ExpectedVersion::Any, vec![event(99, 0)])
            .await;
        let command = store
            .append(&stream(98), ExpectedVersion::Any, vec![event(98, 0)])
            .await;
        assert!(
            matches!(command, Err(LogError::StorageFull { .. })),
            "{command:?}"
        );
        if preallocate == 0 {
            assert!(
                matches!(audit, Err(LogError::StorageFull { .. })),
                "{audit:?}"
            );
        } else {
            audit.unwrap();
            store.sync_written().await.unwrap();
            acked.lock().unwrap().push((99, 0));
        }
        reopened_keeps(
            store,
            &fs,
            index.path(),
            config(preallocate, reserve),
            &acked,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_fails_its_group_and_the_writer_repairs_by_itself() {
    for preallocate in [0, 16 * 1024] {
        let index = tempfile::tempdir().unwrap();
        let fs = FullFs::with_budget(64 * 1024 * 1024);
        let store =
            LogStore::open_with_fs(Arc::new(fs.clone()), index.path(), config(preallocate, 0))
                .unwrap();
        let acked: Acked = Arc::default();
        fill_some(&store, 2, 0, 10, &acked).await;
        // Give the zero-ahead thread its syncs first, then fail the next.
        tokio::time::sleep(Duration::from_millis(100)).await;
        fs.fail_syncs(1);
        let lost = event(7, 0);
        let err = store
            .append(&stream(7), ExpectedVersion::Any, vec![lost.clone()])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("sync failure"), "{err}");
        // Refused at once, then accepted again after the repair interval
        // without any call.
        let mut accepted = false;
        for attempt in 0..50u64 {
            match store
                .append(&stream(8), ExpectedVersion::Any, vec![event(8, attempt)])
                .await
            {
                Ok(_) => {
                    acked.lock().unwrap().push((8, attempt));
                    accepted = true;
                    break;
                }
                Err(e) => assert!(matches!(e, LogError::Failed { .. }), "{e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(accepted, "the writer never repaired itself");
        fill_some(&store, 2, 100, 10, &acked).await;
        let now = stored(&store).await;
        assert!(!now.contains_key(&lost.id), "a failed append was stored");
        assert_kept(&store, &acked).await;
        close_within(store).await.unwrap();
        let store =
            LogStore::open_with_fs(Arc::new(fs.clone()), index.path(), config(preallocate, 0))
                .unwrap();
        // The tree was rewound with the log: its checkpoints still match.
        assert_tree_kept(&store);
        let after = stored(&store).await;
        assert!(!after.contains_key(&lost.id), "a failed append came back");
        assert_eq!(after.len(), acked.lock().unwrap().len());
        store.verify().await.unwrap();
        close_within(store).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_full_disk_with_the_index_on_it_loses_nothing_and_reopens_in_process() {
    let Some(disk) = Tmpfs::mount("6m") else {
        eprintln!("skipped: this process cannot mount a tmpfs (run as root to include it)");
        return;
    };
    let data = disk.path().join("data");
    // No reserve: writes really fail, the index's included.
    let store = LogStore::open_with(&data, config(0, 0)).unwrap();
    let acked: Acked = Arc::default();
    let refused = fill(&store, 16, 0, &acked).await;
    assert!(!refused.is_empty());
    assert_kept(&store, &acked).await;
    // close reports the failure and neither it nor the drop hangs.
    let _ = close_within(store).await;

    disk.resize("64m");
    // Reopened in this process (a failed index, left locked by sled, is
    // set aside and rebuilt from the log rather than waited for).
    let store = LogStore::open_with(&data, config(0, 0)).unwrap();
    assert_kept(&store, &acked).await;
    // (An append refused because the index failed after its sync may be
    // stored: a refusal promises only that nothing acknowledged is lost.)
    fill_some(&store, 4, 500_000, 10, &acked).await;
    assert_kept(&store, &acked).await;
    store.verify().await.unwrap();
    close_within(store).await.unwrap();
}
