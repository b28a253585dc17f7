//! Projections: durable read models built from the log, rebuildable without downtime.
//!
//! A [`Projection`] declares a name and a version and, for one tenant, makes a
//! [`Handler`] that folds events into the projection's own sled tree. A runner
//! (one per projection **per tenant**: the log is read per tenant, so a
//! tenant's read models live in their own trees and a fault in one tenant's
//! projection stops nothing else) catches up from its checkpoint, then follows
//! the live subscription.
//!
//! - **Exactly once.** Each batch of events is written as one `sled::Batch`
//!   that carries the projection's changes *and* its checkpoint (the position
//!   of the last event applied), so after any crash the runner resumes from a
//!   checkpoint that matches the data: no event is skipped or applied twice.
//!   sled's flush is not an fsync, so a crash may lose the last writes — data
//!   and checkpoint together — and the runner simply re-applies them.
//! - **Rebuild without downtime.** [`ProjectionHost::rebuild`] builds a new
//!   generation (the same or a new version) from position 0 in a fresh tree
//!   while the current generation keeps serving and following the log; when
//!   the new one has caught up, the host records it as active and swaps it in
//!   for queries in one step, then drops the old tree.
//! - **Status and faults.** [`ProjectionStatus`] reports position, lag,
//!   events/s and state. A handler error faults that runner alone (the good
//!   part of the batch is committed first, so the reported position is the
//!   failing event); [`ProjectionHost::retry`] resumes it from its checkpoint.
//! - **Read-your-writes.** An append returns its global position;
//!   [`ProjectionHost::wait_for`] waits, with a timeout, until a tenant's
//!   projection has reached it (events of other tenants count as passed).
//!
//! Built-in projections (see [`builtin`]): [`cases`] (case view, case search
//! index, work queue, deadlines — one fold of each case feeds all four) and
//! [`timeline`] (each case's history in human terms). [`query`] holds the
//! query types and the typed [`QueryError`]. The working-day calendar
//! deadlines are counted with is [`crate::calendar`].
//!
//! Storage: one sled database (`<data>/projections` for a durable engine, a
//! temporary one in memory otherwise); a `meta` tree records each runner's
//! active generation and any rebuild in progress; each generation is one tree
//! named `<projection>/<tenant>/<generation>`, holding the checkpoint and the
//! projection's rows packed into pages of a few KiB (`pages.rs`: sled's cost
//! is per entry, so a rebuild writes a page, not a row, at a time). A tree of
//! another layout (built by an older Casebook) is dropped and rebuilt.

pub mod builtin;
pub mod cases;
mod committer;
mod error;
mod host;
pub(crate) mod keys;
mod pages;
pub mod query;
mod runner;
pub mod timeline;

use async_trait::async_trait;

use crate::log::RecordedEvent;

/// The working-day calendar lives in [`crate::calendar`]; re-exported here
/// for the paths that knew it under projections.
pub use crate::calendar;
pub use error::{
    BoxError, ChangesError, CommitError, HandlerError, ProjectionError, QueryError, ResolveError,
    RowsError, StoreError,
};
pub use host::{
    Consistency, Freshness, Generation, ProjectionHost, ProjectionStatus, RebuildStatus, RunState,
    DEFAULT_BATCH_SIZE, DEFAULT_COMMIT_INTERVAL,
};
pub use pages::{RowIter, Rows};

/// Keys starting with this byte are the framework's (the checkpoint).
pub const RESERVED_PREFIX: u8 = 0x00;

/// A read model built from the log.
///
/// The name identifies the projection's storage; the version says which
/// storage layout and logic its handlers write.
///
/// **Upgrades.** When a host opens storage built by an older version that
/// this one [can serve](Projection::can_serve) (an upgrade across a
/// restart), the old generation keeps serving queries — frozen at its
/// checkpoint, since only its own version's code could follow the log —
/// while the new version rebuilds from position 0 in a fresh tree; the host
/// swaps when the new one has caught up. Read-your-writes waits are
/// answered by the new generation, once swapped in. Storage of a version it
/// cannot serve (a newer one, after a downgrade, or an incompatible layout)
/// is dropped and rebuilt from position 0 with nothing served meanwhile. At
/// run time, [`ProjectionHost::rebuild`] with a replacement upgrades with
/// the old version following the log throughout.
pub trait Projection: Send + Sync + 'static {
    /// A stable name, e.g. `cases` (letters, digits, `_`, `-`).
    fn name(&self) -> &str;

    /// The version of the projection's logic and storage layout.
    fn version(&self) -> u32;

    /// A handler that writes into `rows` (one generation of one tenant).
    fn handler(&self, rows: Rows) -> Box<dyn Handler>;

    /// Whether this version's queries can read a generation built by
    /// `stored` while its own is being built. Default: any older version.
    fn can_serve(&self, stored: u32) -> bool {
        stored < self.version()
    }
}

impl std::fmt::Debug for dyn Projection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} v{}", self.name(), self.version())
    }
}

/// Folds events into one generation's tree, a batch at a time.
///
/// The runner calls [`Handler::apply`] for each event of a batch, then
/// [`Handler::write`] once, queues the batch's changes with the checkpoint
/// for the lane's committer and calls [`Handler::queued`]; the handler then
/// goes on with the next batch while the commit lands in the background.
/// When a commit has landed in the projection store the runner calls
/// [`Handler::committed`] (once per queued batch, in order, possibly after
/// later batches were applied). If a batch fails before it is queued the
/// runner calls [`Handler::discarded`] instead, and the handler must forget
/// whatever the batch changed in memory; if a queued commit fails to land,
/// the handler is dropped and a new one made from the tree.
///
/// **Reads.** The handler's [`Rows`] follow the queued commits: before
/// reading them in `apply`, await [`Rows::settled`] (it waits for the
/// commits in flight without blocking a thread); a read that has not waited
/// fails with [`RowsError::Unsettled`]. `discarded` and a new handler may
/// read synchronously: nothing is in flight then.
///
/// **Threads.** `apply` runs on the runtime: it must not block (no blocking
/// waits, no long CPU-bound loops); `write` too, so heavy row derivation
/// belongs in deferred work ([`Changes::defer`]), which runs in
/// `spawn_blocking`.
#[async_trait]
pub trait Handler: Send {
    /// Takes one event into the batch in progress. An error faults the
    /// projection at this event.
    async fn apply(&mut self, event: &RecordedEvent) -> Result<(), HandlerError>;

    /// Writes the batch's changes (directly, or by deferring work that
    /// makes them: [`Changes::defer`]).
    fn write(&mut self, changes: &mut Changes) -> Result<(), HandlerError>;

    /// The batch's changes were queued for commit: the next batch follows
    /// them (reads after [`Rows::settled`] see them). Not yet durable.
    fn queued(&mut self) {}

    /// The oldest queued batch has landed: its changes and checkpoint are
    /// written to the projection store (as durable as the store's flush
    /// makes them; after a crash the runner resumes from the checkpoint).
    fn committed(&mut self) {}

    /// The batch was thrown away (an error, or a retry).
    fn discarded(&mut self) {}

    /// The lane has applied, and landed, every event of the tenant up to
    /// the head it read: the rows are as of the log (reads need no
    /// [`Rows::settled`]). Called each time the lane catches up (a lane
    /// falls behind again when a batch fills), never while a generation
    /// replays history it has not caught up with. A handler whose rows
    /// drive work elsewhere (the orchestration projection) hands them
    /// over the first time, so nothing history already finished is
    /// offered again.
    fn caught_up(&mut self) {}
}

/// One row write: the key and its new value (`None`: removed).
#[cfg(test)]
pub(crate) type RowWrite = (Vec<u8>, Option<Vec<u8>>);

/// Work a handler leaves for the runner to finish off its thread (see
/// [`Changes::defer`]).
type Deferred = Box<dyn FnOnce(&mut Changes) -> Result<(), HandlerError> + Send>;

/// One write in an arena: the key at `at`, its value (if any) right after.
#[derive(Debug, Clone, Copy)]
struct Op {
    at: usize,
    key: u32,
    /// The value's length; `None`: the key is removed.
    value: Option<u32>,
}

/// Keys and values of many writes, back to back in one buffer: a batch
/// holds hundreds of thousands of rows, and one allocation per key and
/// value made up much of a rebuild's cost.
#[derive(Debug, Default)]
struct Arena {
    bytes: Vec<u8>,
    ops: Vec<Op>,
}

impl Arena {
    fn push(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), ChangesError> {
        let len = |n: usize| u32::try_from(n).map_err(|_| ChangesError::TooLarge { len: n });
        let op = Op {
            at: self.bytes.len(),
            key: len(key.len())?,
            value: value.map(|v| len(v.len())).transpose()?,
        };
        self.bytes.extend_from_slice(key);
        if let Some(v) = value {
            self.bytes.extend_from_slice(v);
        }
        self.ops.push(op);
        Ok(())
    }

    fn key(&self, op: &Op) -> &[u8] {
        &self.bytes[op.at..op.at + op.key as usize]
    }

    fn value(&self, op: &Op) -> Option<&[u8]> {
        let start = op.at + op.key as usize;
        op.value.map(|n| &self.bytes[start..start + n as usize])
    }
}

/// The row writes of one batch, committed atomically with the checkpoint
/// (the last write of a key wins).
#[derive(Default)]
pub struct Changes {
    arena: Arena,
    deferred: Vec<Deferred>,
}

impl Changes {
    /// Leaves `job` to make more of the batch's writes later, on another
    /// thread, while the handler goes on applying the next batch: deriving
    /// and encoding rows is then off the runner's path. Jobs run in the
    /// order they were deferred, after every write made directly (so their
    /// writes win over those); an error fails the batch like an error from
    /// [`Handler::write`]. A job sees only what it captured, so it must
    /// capture the batch's state (shared, e.g. in an `Arc`, or moved), not
    /// read the handler's.
    pub fn defer<F>(&mut self, job: F)
    where
        F: FnOnce(&mut Changes) -> Result<(), HandlerError> + Send + 'static,
    {
        self.deferred.push(Box::new(job));
    }

    /// Runs the deferred jobs (and any they defer in turn).
    pub(crate) fn run_deferred(&mut self) -> Result<(), HandlerError> {
        while !self.deferred.is_empty() {
            for job in std::mem::take(&mut self.deferred) {
                job(self)?;
            }
        }
        Ok(())
    }

    /// Sets `key` to `value`.
    ///
    /// Errors: an empty key, or one starting with [`RESERVED_PREFIX`] (the
    /// framework's own).
    pub fn insert(&mut self, key: &[u8], value: impl AsRef<[u8]>) -> Result<(), ChangesError> {
        check_key(key)?;
        self.arena.push(key, Some(value.as_ref()))
    }

    /// Removes `key`.
    ///
    /// Errors: as [`Changes::insert`].
    pub fn remove(&mut self, key: &[u8]) -> Result<(), ChangesError> {
        check_key(key)?;
        self.arena.push(key, None)
    }

    /// How many writes the batch holds (deferred jobs' writes count once
    /// they have run).
    pub fn len(&self) -> usize {
        self.arena.ops.len()
    }

    /// Whether the batch holds no writes and no deferred jobs.
    pub fn is_empty(&self) -> bool {
        self.arena.ops.is_empty() && self.deferred.is_empty()
    }

    /// The writes in key order, each key once (its last write).
    pub(crate) fn into_sorted(self) -> Sorted {
        let arena = self.arena;
        let mut order: Vec<(u128, usize)> = (0..arena.ops.len()).map(|i| (0, i)).collect();
        let key = |i: usize| arena.key(&arena.ops[i]);
        sort_keys(&key, &mut order, 0);
        let mut ops: Vec<Op> = Vec::with_capacity(order.len());
        for (_, i) in order {
            let op = arena.ops[i];
            match ops.last_mut() {
                Some(last) if arena.key(last) == arena.key(&op) => *last = op,
                _ => ops.push(op),
            }
        }
        Sorted {
            arena: Arena {
                bytes: arena.bytes,
                ops,
            },
        }
    }
}

/// A batch's writes in key order, each key once.
#[derive(Debug, Default)]
pub(crate) struct Sorted {
    arena: Arena,
}

impl Sorted {
    /// The writes: key and new value (`None`: removed).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> + '_ {
        self.arena
            .ops
            .iter()
            .map(|op| (self.arena.key(op), self.arena.value(op)))
    }

    /// The value written for `key` (`Some(None)`: removed), by binary
    /// search.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        let a = &self.arena;
        a.ops
            .binary_search_by(|op| a.key(op).cmp(key))
            .ok()
            .map(|i| a.value(&a.ops[i]))
    }

    /// Writes already in key order, each key once (no key checks: for
    /// the pages' own tests).
    #[cfg(test)]
    pub(crate) fn from_sorted(writes: &[RowWrite]) -> Sorted {
        let mut arena = Arena::default();
        for (k, v) in writes {
            arena.push(k, v.as_deref()).unwrap();
        }
        Sorted { arena }
    }

    /// The writes as owned pairs.
    #[cfg(test)]
    pub(crate) fn to_vec(&self) -> Vec<RowWrite> {
        self.iter()
            .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
            .collect()
    }
}

/// Sorts `order` (indexes into `ops`) by key from byte `depth` on, then by
/// index: 16 key bytes at a time held inline beside each index, so that
/// comparisons do not chase pointers to the keys.
fn sort_keys<'a>(key: &impl Fn(usize) -> &'a [u8], order: &mut [(u128, usize)], depth: usize) {
    let mut longer = false;
    for e in order.iter_mut() {
        let k = key(e.1);
        let mut b = [0u8; 16];
        if let Some(rest) = k.get(depth..) {
            let n = rest.len().min(16);
            b[..n].copy_from_slice(&rest[..n]);
            longer |= rest.len() > 16;
        }
        e.0 = u128::from_be_bytes(b);
    }
    order.sort_unstable();
    // Runs with the same 16 bytes: longer keys go on to the next 16; keys
    // that end here sort by length (a shorter one is a prefix), then index.
    let mut start = 0;
    while start < order.len() {
        let head = order[start].0;
        let end = start + order[start..].iter().take_while(|e| e.0 == head).count();
        if end - start > 1 {
            let run = &mut order[start..end];
            if longer && run.iter().any(|e| key(e.1).len() > depth + 16) {
                sort_keys(key, run, depth + 16);
            } else {
                run.sort_unstable_by_key(|e| (key(e.1).len(), e.1));
            }
        }
        start = end;
    }
}

fn check_key(key: &[u8]) -> Result<(), ChangesError> {
    match key.first() {
        None => Err(ChangesError::EmptyKey),
        Some(&RESERVED_PREFIX) => Err(ChangesError::ReservedKey),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The inline-head sort agrees with a plain stable sort by key
        /// (last write wins), for keys with long shared prefixes and zeros.
        #[test]
        fn sorted_changes_match_a_stable_sort(
            writes in prop::collection::vec(
                (prop::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(b'a')], 0..40), any::<bool>()),
                0..200,
            )
        ) {
            let mut c = Changes::default();
            let mut model: Vec<RowWrite> = Vec::new();
            for (i, (tail, put)) in writes.into_iter().enumerate() {
                let key = [b"I".as_slice(), &[b'x'; 20], &tail].concat();
                let value = put.then(|| i.to_be_bytes().to_vec());
                match &value {
                    Some(v) => c.insert(&key, v).unwrap(),
                    None => c.remove(&key).unwrap(),
                }
                model.push((key, value));
            }
            model.sort_by(|a, b| a.0.cmp(&b.0));
            let mut want: Vec<RowWrite> = Vec::new();
            for op in model {
                match want.last_mut() {
                    Some(last) if last.0 == op.0 => *last = op,
                    _ => want.push(op),
                }
            }
            prop_assert_eq!(c.into_sorted().to_vec(), want);
        }
    }

    #[test]
    fn deferred_jobs_run_in_order_after_direct_writes_and_can_fail() {
        let mut c = Changes::default();
        c.defer(|c| {
            c.insert(b"a", b"deferred")?;
            c.defer(|c| Ok(c.insert(b"b", b"nested")?));
            Ok(())
        });
        c.insert(b"a", b"direct").unwrap();
        assert!(!c.is_empty());
        assert_eq!(c.len(), 1);
        c.run_deferred().unwrap();
        assert_eq!(
            c.into_sorted().to_vec(),
            vec![
                (b"a".to_vec(), Some(b"deferred".to_vec())),
                (b"b".to_vec(), Some(b"nested".to_vec())),
            ]
        );
        let mut c = Changes::default();
        c.defer(|c| Ok(c.insert(b"\x00x", b"reserved")?));
        assert!(c
            .run_deferred()
            .unwrap_err()
            .to_string()
            .contains("reserved"));
    }

    #[test]
    fn changes_come_out_sorted_with_the_last_write_of_each_key() {
        let mut c = Changes::default();
        c.insert(b"b", b"1").unwrap();
        c.insert(b"a", b"1").unwrap();
        c.remove(b"b").unwrap();
        c.insert(b"c", b"1").unwrap();
        c.insert(b"a", b"2").unwrap();
        assert_eq!(c.len(), 5);
        assert!(c.insert(b"\x00checkpoint", b"x").is_err());
        assert!(c.remove(b"").is_err());
        let sorted = c.into_sorted();
        assert_eq!(sorted.get(b"b"), Some(None));
        assert_eq!(sorted.get(b"a"), Some(Some(b"2".as_slice())));
        assert_eq!(sorted.get(b"d"), None);
        assert_eq!(
            sorted.to_vec(),
            vec![
                (b"a".to_vec(), Some(b"2".to_vec())),
                (b"b".to_vec(), None),
                (b"c".to_vec(), Some(b"1".to_vec())),
            ]
        );
    }
}
