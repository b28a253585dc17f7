//! Zero-ahead: keeps the space just past the end of the log written with
//! zeros and synced, so that group commits overwrite blocks instead of
//! growing the file.
//!
//! An `fdatasync` after a write that grows a file must also journal the new
//! size and block allocation; one after overwriting blocks that were already
//! written and synced only writes the data. So a background thread
//! (`casebook-log-prealloc`, one per store) keeps `[end of log, zeroed_to)` of
//! the active segment zeroed and synced: when that headroom falls below half
//! of [`LogStoreConfig::preallocate`](super::LogStoreConfig::preallocate), it
//! writes the next pieces of zeros at the file's end, `fdatasync`s each, and
//! publishes the new `zeroed_to`, until the headroom is whole again (never
//! past [`zero_limit`] of the segment).
//!
//! **The two threads never write the same bytes.** Before writing a group
//! the writer *claims* it ([`ZeroAhead::claim`]), under the lock: it raises
//! `reserved` to the group's end — a promise to write nothing at or past it
//! before its next claim — and then waits while a zero piece that started
//! before that end is still in flight. The zero thread starts a piece only at
//! or past `reserved`, under the same lock. So no piece in flight ever covers
//! a byte the writer may be writing, and a piece begun later lies past the
//! group. The writer waits only when a group outruns the headroom (a single
//! piece at most); on a segment roll it detaches the old file
//! ([`ZeroAhead::detach`], which waits for a piece in flight) before cutting
//! the file to its used length.
//!
//! Nothing depends on the zeros for correctness: every group commit still
//! ends with its own `fdatasync`, a zero frame reads as the end of the log
//! (see `recovery`), and a failed zero write just stops the zero-ahead for
//! that segment.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::fs::SegmentFile;
use crate::log::error::LogError;

/// The most zeros written (and synced) at a time: a group commit's
/// `fdatasync` that runs meanwhile also flushes them, so pieces stay small.
const MAX_PIECE: u64 = 1 << 20;
/// The fewest zeros written at a time. Pieces are as large as the headroom
/// left (between these bounds): small right after a segment starts, so the
/// first groups soon land on zeros, then larger.
const MIN_PIECE: u64 = 64 * 1024;
/// Pieces end on a multiple of this where they can.
const ALIGN: u64 = 4096;
/// How far past the segment size zeros may reach: room for the group commit
/// that crosses it, after which the segment is sealed.
const MAX_SLACK: u64 = 64 * 1024;

/// The furthest offset the zero-ahead writes to in a segment of
/// `segment_size` bytes.
pub(crate) fn zero_limit(segment_size: u64) -> u64 {
    segment_size.saturating_add(MAX_SLACK.min(segment_size))
}

struct State {
    /// The active segment; `None` while the writer rolls, and after a stop.
    file: Option<Arc<dyn SegmentFile>>,
    /// Changes with `file`: a piece finished after a switch counts for nothing.
    epoch: u64,
    /// The writer writes nothing at or past this offset before claiming
    /// again; no piece starts before it.
    reserved: u64,
    /// Everything before this offset is records or synced zeros.
    zeroed_to: u64,
    /// Zeros stop here ([`zero_limit`]).
    limit: u64,
    /// The headroom kept ahead of `reserved`.
    target: u64,
    /// The piece being written and synced, `[start, end)`.
    in_flight: Option<(u64, u64)>,
    /// Topping the headroom up: goes on until it is whole again.
    refilling: bool,
    /// A zero write failed: no more zeros in this segment.
    failed: bool,
    stop: bool,
}

impl State {
    /// The next piece to zero, if one is due.
    fn next_piece(&mut self) -> Option<(Arc<dyn SegmentFile>, u64, u64)> {
        let file = match &self.file {
            Some(f) if !self.failed => Arc::clone(f),
            _ => {
                self.refilling = false;
                return None;
            }
        };
        let headroom = self.zeroed_to.saturating_sub(self.reserved);
        if !self.refilling && headroom.saturating_mul(2) >= self.target {
            return None;
        }
        let start = self.zeroed_to.max(self.reserved);
        let want = self.reserved.saturating_add(self.target).min(self.limit);
        if start >= want {
            self.refilling = false;
            return None;
        }
        self.refilling = true;
        let mut end = start.saturating_add(headroom.clamp(MIN_PIECE, MAX_PIECE));
        let aligned = end / ALIGN * ALIGN;
        if aligned > start {
            end = aligned;
        }
        Some((file, start, end.min(want)))
    }
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the zero thread: the writer moved on, a segment was attached, or stop.
    work: Condvar,
    /// Wakes the writer: a piece finished.
    done: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The writer's handle on the zero-ahead thread; dropping it stops the
/// thread (after the piece in flight, if any).
pub(crate) struct ZeroAhead {
    shared: Arc<Shared>,
    handle: Option<JoinHandle<()>>,
}

impl ZeroAhead {
    /// Starts the thread on the active segment `file`, whose log ends at
    /// `end` and whose zeros may reach `limit`, keeping `target` bytes of
    /// headroom.
    pub fn start(
        file: Arc<dyn SegmentFile>,
        end: u64,
        limit: u64,
        target: u64,
    ) -> Result<Self, LogError> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                file: Some(file),
                epoch: 0,
                reserved: end,
                zeroed_to: end,
                limit,
                target,
                in_flight: None,
                refilling: false,
                failed: false,
                stop: false,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("casebook-log-prealloc".into())
            .spawn(move || run(&thread_shared))
            .map_err(|e| LogError::io("starting the log's zero-ahead thread", e))?;
        Ok(ZeroAhead {
            shared,
            handle: Some(handle),
        })
    }

    /// Call before writing the active segment up to `end` (exclusive): from
    /// now on no zero piece starts before `end`, and this returns once no
    /// piece in flight does either.
    pub fn claim(&self, end: u64) {
        let mut st = self.shared.lock();
        st.reserved = st.reserved.max(end);
        while st.in_flight.is_some_and(|(start, _)| start < end) {
            st = self.shared.done.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        let headroom = st.zeroed_to.saturating_sub(st.reserved);
        if !st.refilling && !st.failed && headroom.saturating_mul(2) < st.target {
            self.shared.work.notify_one();
        }
    }

    /// Stops zeroing the active segment; returns once no piece is in flight,
    /// so the thread writes nothing more to it.
    pub fn detach(&self) {
        let mut st = self.shared.lock();
        st.file = None;
        st.epoch += 1;
        while st.in_flight.is_some() {
            st = self.shared.done.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Starts zeroing a new active segment whose log ends at `end` (its
    /// length) and whose zeros may reach `limit`.
    pub fn attach(&self, file: Arc<dyn SegmentFile>, end: u64, limit: u64) {
        let mut st = self.shared.lock();
        st.file = Some(file);
        st.epoch += 1;
        st.reserved = end;
        st.zeroed_to = end;
        st.limit = limit;
        st.refilling = false;
        st.failed = false;
        self.shared.work.notify_one();
    }

    /// How far the active segment is zeroed and synced: writes before this
    /// offset overwrite blocks already allocated. 0 while no segment is
    /// attached or after a zero write failed.
    pub fn zeroed_to(&self) -> u64 {
        let st = self.shared.lock();
        match st.file {
            Some(_) => st.zeroed_to,
            None => 0,
        }
    }
}

impl Drop for ZeroAhead {
    fn drop(&mut self) {
        {
            let mut st = self.shared.lock();
            st.stop = true;
            st.file = None;
            st.epoch += 1;
            self.shared.work.notify_one();
        }
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// The zero thread: writes pieces while one is due, else sleeps.
fn run(shared: &Shared) {
    let zeros = vec![0u8; MAX_PIECE as usize];
    let mut st = shared.lock();
    loop {
        if st.stop {
            return;
        }
        let Some((file, start, end)) = st.next_piece() else {
            st = shared.work.wait(st).unwrap_or_else(|p| p.into_inner());
            continue;
        };
        let epoch = st.epoch;
        st.in_flight = Some((start, end));
        drop(st);
        let len = (end - start) as usize;
        let result = file
            .write_all_at(&zeros[..len], start)
            .and_then(|()| file.sync_data());
        drop(file);
        st = shared.lock();
        st.in_flight = None;
        if st.epoch == epoch {
            match result {
                Ok(()) => st.zeroed_to = st.zeroed_to.max(end),
                Err(_) => st.failed = true,
            }
        }
        shared.done.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    /// An in-memory file that checks the zero thread never writes over a
    /// byte the writer wrote, and can make syncs slow or failing.
    #[derive(Default)]
    struct Probe {
        bytes: Mutex<Vec<u8>>,
        /// Per byte: written by the writer (non-zero record bytes).
        owned: Mutex<Vec<bool>>,
        zero_writes: Mutex<Vec<(u64, u64)>>,
        overlaps: AtomicU64,
        slow_sync: AtomicBool,
        fail_sync: AtomicBool,
        syncs: AtomicU64,
    }

    impl Probe {
        fn write_records(&self, at: u64, len: usize, fill: u8) {
            self.write_all_at(&vec![fill; len], at).unwrap();
        }
    }

    impl SegmentFile for Probe {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            let bytes = self.bytes.lock().unwrap();
            let start = (offset as usize).min(bytes.len());
            let n = buf.len().min(bytes.len() - start);
            buf[..n].copy_from_slice(&bytes[start..start + n]);
            Ok(n)
        }

        fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            let zero = buf.iter().all(|&b| b == 0);
            let (start, end) = (offset as usize, offset as usize + buf.len());
            {
                let mut owned = self.owned.lock().unwrap();
                if owned.len() < end {
                    owned.resize(end, false);
                }
                if zero {
                    if owned[start..end].iter().any(|&o| o) {
                        self.overlaps.fetch_add(1, Ordering::SeqCst);
                    }
                    self.zero_writes.lock().unwrap().push((offset, end as u64));
                } else {
                    owned[start..end].iter_mut().for_each(|o| *o = true);
                }
            }
            // Take time over the copy, so that writes of the two threads
            // would interleave if they were allowed to.
            std::thread::yield_now();
            let mut bytes = self.bytes.lock().unwrap();
            if bytes.len() < end {
                bytes.resize(end, 0);
            }
            bytes[start..end].copy_from_slice(buf);
            Ok(())
        }

        fn sync_data(&self) -> io::Result<()> {
            self.syncs.fetch_add(1, Ordering::SeqCst);
            if self.slow_sync.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(2));
            }
            if self.fail_sync.load(Ordering::SeqCst) {
                return Err(io::Error::other("simulated sync failure"));
            }
            Ok(())
        }

        fn len(&self) -> io::Result<u64> {
            Ok(self.bytes.lock().unwrap().len() as u64)
        }

        fn set_len(&self, len: u64) -> io::Result<()> {
            self.bytes.lock().unwrap().resize(len as usize, 0);
            Ok(())
        }
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn the_headroom_is_zeroed_up_to_the_target_and_topped_up_below_half() {
        let probe = Arc::new(Probe::default());
        probe.write_records(0, 32, 7);
        let z = ZeroAhead::start(probe.clone(), 32, 1 << 30, 512 * 1024).unwrap();
        wait_for("the first headroom", || z.zeroed_to() == 32 + 512 * 1024);
        assert_eq!(probe.len().unwrap(), 32 + 512 * 1024);
        let zero_writes = probe.zero_writes.lock().unwrap().len();
        // Less than half used: nothing more is zeroed.
        z.claim(32 + 200 * 1024);
        probe.write_records(32, 200 * 1024, 1);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(probe.zero_writes.lock().unwrap().len(), zero_writes);
        // More than half used: topped up to the whole headroom again.
        z.claim(32 + 300 * 1024);
        probe.write_records(32 + 200 * 1024, 100 * 1024, 2);
        wait_for("the top-up", || z.zeroed_to() == 32 + 812 * 1024);
        assert_eq!(probe.overlaps.load(Ordering::SeqCst), 0);
        // Pieces end on page boundaries, or where the headroom is whole.
        let writes = probe.zero_writes.lock().unwrap().clone();
        for (start, end) in &writes {
            assert!(end > start);
            assert!(end % ALIGN == 0 || end % ALIGN == 32, "{writes:?}");
        }
    }

    #[test]
    fn zeros_never_pass_the_limit() {
        let probe = Arc::new(Probe::default());
        let z = ZeroAhead::start(probe.clone(), 32, 10_000, 8 << 20).unwrap();
        wait_for("zeros up to the limit", || z.zeroed_to() == 10_000);
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!(probe.len().unwrap(), 10_000);
        assert_eq!(zero_limit(4096), 8192);
        assert_eq!(zero_limit(256 << 20), (256 << 20) + MAX_SLACK);
    }

    /// The writer races through slow zero pieces: zeros never land on its
    /// bytes, and whatever it wrote is still there.
    #[test]
    fn the_writer_and_the_zero_thread_never_write_the_same_bytes() {
        let probe = Arc::new(Probe::default());
        probe.slow_sync.store(true, Ordering::SeqCst);
        let z = ZeroAhead::start(probe.clone(), 0, 1 << 30, 256 * 1024).unwrap();
        // On a loaded machine the zero thread may not have run yet: the race
        // starts once it has.
        wait_for("the zero thread at work", || {
            !probe.zero_writes.lock().unwrap().is_empty()
        });
        let mut offset = 0u64;
        let mut expected = Vec::new();
        for i in 0..500u64 {
            let len = 100 + (i * 7919) % 20_000;
            z.claim(offset + len);
            let fill = 1 + (i % 250) as u8;
            probe.write_records(offset, len as usize, fill);
            expected.push((offset, len, fill));
            offset += len;
        }
        drop(z);
        assert_eq!(probe.overlaps.load(Ordering::SeqCst), 0);
        let bytes = probe.bytes.lock().unwrap();
        for (at, len, fill) in expected {
            assert!(
                bytes[at as usize..(at + len) as usize]
                    .iter()
                    .all(|&b| b == fill),
                "record at {at} was overwritten"
            );
        }
        assert!(!probe.zero_writes.lock().unwrap().is_empty());
    }

    #[test]
    fn detach_waits_for_the_piece_in_flight_and_attach_starts_afresh() {
        let old = Arc::new(Probe::default());
        old.slow_sync.store(true, Ordering::SeqCst);
        let z = ZeroAhead::start(old.clone(), 32, 1 << 30, 4 << 20).unwrap();
        wait_for("a zero piece", || old.len().unwrap() > 32);
        z.detach();
        let writes = old.zero_writes.lock().unwrap().len();
        let len = old.len().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(old.zero_writes.lock().unwrap().len(), writes);
        assert_eq!(old.len().unwrap(), len, "nothing written after detach");

        let new = Arc::new(Probe::default());
        new.write_records(0, 32, 9);
        z.attach(new.clone(), 32, 1 << 30);
        wait_for("the new segment's headroom", || {
            z.zeroed_to() == 32 + (4 << 20)
        });
        assert_eq!(old.zero_writes.lock().unwrap().len(), writes);
        drop(z);
        assert_eq!(new.overlaps.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_failed_zero_write_stops_the_zero_ahead_until_the_next_segment() {
        let probe = Arc::new(Probe::default());
        probe.fail_sync.store(true, Ordering::SeqCst);
        let z = ZeroAhead::start(probe.clone(), 32, 1 << 30, 1 << 20).unwrap();
        wait_for("a failed piece", || probe.syncs.load(Ordering::SeqCst) == 1);
        // The writer is never held up by it, and no more pieces come.
        z.claim(10_000);
        probe.write_records(32, 10_000 - 32, 3);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(probe.syncs.load(Ordering::SeqCst), 1);
        assert_eq!(z.zeroed_to(), 32);

        let next = Arc::new(Probe::default());
        z.attach(next.clone(), 32, 1 << 30);
        wait_for("zeros in the next segment", || {
            z.zeroed_to() == 32 + (1 << 20)
        });
    }

    #[test]
    fn stopping_joins_the_thread() {
        let probe = Arc::new(Probe::default());
        probe.slow_sync.store(true, Ordering::SeqCst);
        let z = ZeroAhead::start(probe.clone(), 0, 1 << 30, 64 << 20).unwrap();
        wait_for("a zero piece", || probe.len().unwrap() > 0);
        drop(z);
        let len = probe.len().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(probe.len().unwrap(), len);
        assert_eq!(
            Arc::strong_count(&probe),
            1,
            "the thread let go of the file"
        );
    }
}
