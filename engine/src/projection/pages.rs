//! Packed rows: a projection's rows stored in sled as sorted pages of a few KiB.
//!
//! sled spends about as long on a tiny insert as on one of several KiB (each
//! insert clones a leaf, logs it and may split it; on the development VM
//! about 100k inserts/s at best), so a projection that wrote one sled entry
//! per row spent nearly all of a rebuild inside sled. Here a generation's
//! logical rows (key → value, keys ordered bytewise) are kept in **pages**:
//! a page is one sled entry whose key is `0x01` + its *fence* and whose value
//! holds, in key order, the rows from the fence up to the next page's fence
//! (keys prefix-compressed against the previous key). The first page's fence
//! is empty, so every key has exactly one page; that page is never removed.
//! Other pages are removed when they become empty. A page that grows past
//! [`PAGE_BYTES`] is split (left pages packed full when the batch only
//! appended to it, as rebuilds mostly do; evenly otherwise). A page is
//! stored LZ4-compressed when that makes it smaller (typically to a quarter:
//! its values repeat field values, ids and key parts).
//!
//! [`Rows`] reads: point lookups and ranges in either direction. The runner's
//! [`PageWriter`] turns one batch's row changes into page writes that go into
//! the same sled batch as the checkpoint, so a batch stays all or nothing.
//! Only the writer changes pages, so it keeps recently written pages decoded
//! in memory (a bounded cache).
//!
//! Readers are not isolated from a concurrent commit (per-row sled scans were
//! not either): a range may see some of a batch's rows and not others, but
//! never returns a key twice or out of order.

use crate::projection::error::SledResultExt as _;
use std::collections::{BTreeMap, VecDeque};
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use super::committer::Pipeline;
pub use super::error::RowsError;
use super::error::{ProjectionError, QueryError, StoreError};

/// Pages are split when their encoded size passes this (a single larger row
/// gets a page of its own).
pub const PAGE_BYTES: usize = 8192;
/// How much decoded page data a writer keeps in memory.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// The first byte of every page's sled key.
const PAGE_KEY: u8 = 0x01;
/// The first sled key after the pages.
const PAGES_END: [u8; 1] = [PAGE_KEY + 1];
/// The first byte of a page's value: the rows as they are...
const PAGE_FORMAT: u8 = 1;
/// ... or LZ4-compressed (the body's length, 4 bytes little-endian, then an
/// LZ4 block). Pages hold encoded values with much repetition (field names,
/// case ids, key prefixes): compressed, a rebuild hands sled about a quarter
/// of the bytes, and sled's cost grows with the bytes it copies and logs.
const PAGE_LZ4: u8 = 2;
/// LZ4 never expands data more than this much (a bound for a damaged
/// page's claimed size).
const LZ4_MAX_RATIO: usize = 255;

/// Where a generation's tree records its storage layout.
pub(crate) const LAYOUT_KEY: &[u8] = b"\x00layout";
/// The layout this module writes.
pub(crate) const LAYOUT: &[u8] = b"pages 1";

/// One row: key and value.
type Row = (Vec<u8>, Vec<u8>);

impl From<RowsError> for QueryError {
    fn from(e: RowsError) -> Self {
        match e {
            RowsError::Store(e) => QueryError::Projection(ProjectionError::Store(e)),
            e @ RowsError::Corrupt { .. } => QueryError::Damaged {
                what: e.to_string(),
            },
            e @ (RowsError::Unwritten(_) | RowsError::Unsettled) => {
                QueryError::Projection(ProjectionError::Store(StoreError::new(e)))
            }
        }
    }
}

/// Runs a read of `fence`'s pages, turning a panic inside sled (which it
/// does on some damaged pages) into [`RowsError::Corrupt`]: a damaged view
/// answers a typed error, never takes the caller down (issue 19).
fn guarded<T>(fence: &[u8], read: impl FnOnce() -> Result<T, RowsError>) -> Result<T, RowsError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        Err(corrupt(
            fence,
            format!("the storage library panicked reading it ({what}); rebuild the projection"),
        ))
    })
}

fn corrupt(fence: &[u8], why: impl Into<String>) -> RowsError {
    RowsError::Corrupt {
        fence: String::from_utf8_lossy(fence).into_owned(),
        why: why.into(),
    }
}

fn page_key(fence: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(fence.len() + 1);
    k.push(PAGE_KEY);
    k.extend_from_slice(fence);
    k
}

// ------------------------------------------------------------ page format

fn push_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn varint_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

fn take_varint(bytes: &mut &[u8]) -> Option<usize> {
    let mut n = 0usize;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        n |= usize::from(b & 0x7F).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

fn shared_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Walks an encoded page row by row.
struct Cursor<'a> {
    rest: &'a [u8],
    key: Vec<u8>,
}

/// A stored page's rows, uncompressed.
fn body(page: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, String> {
    match page.split_first() {
        Some((&PAGE_FORMAT, rest)) => Ok(std::borrow::Cow::Borrowed(rest)),
        Some((&PAGE_LZ4, rest)) => {
            let claimed = rest
                .get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .ok_or("truncated compressed page")?;
            if claimed > rest.len().saturating_mul(LZ4_MAX_RATIO) {
                return Err(format!(
                    "compressed page claims {claimed} bytes from {}",
                    rest.len()
                ));
            }
            lz4_flex::block::decompress_size_prepended(rest)
                .map(std::borrow::Cow::Owned)
                .map_err(|e| format!("compressed page: {e}"))
        }
        Some((f, _)) => Err(format!("unknown page format {f}")),
        None => Err("empty page".into()),
    }
}

impl<'a> Cursor<'a> {
    /// Walks a page's uncompressed `body` (see [`body`]).
    fn new(body: &'a [u8]) -> Self {
        Cursor {
            rest: body,
            key: Vec::new(),
        }
    }

    /// The next row's value; its key is then `self.key`.
    fn next_value(&mut self) -> Result<Option<&'a [u8]>, String> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let mut r = self.rest;
        let bad = || "truncated or damaged row".to_string();
        let shared = take_varint(&mut r).ok_or_else(bad)?;
        let suffix = take_varint(&mut r).ok_or_else(bad)?;
        if shared > self.key.len() || suffix > r.len() {
            return Err(bad());
        }
        let (s, after) = r.split_at(suffix);
        self.key.truncate(shared);
        self.key.extend_from_slice(s);
        r = after;
        let vlen = take_varint(&mut r).ok_or_else(bad)?;
        if vlen > r.len() {
            return Err(bad());
        }
        let (v, after) = r.split_at(vlen);
        self.rest = after;
        Ok(Some(v))
    }
}

fn decode(fence: &[u8], page: &[u8]) -> Result<Vec<Row>, RowsError> {
    let body = body(page).map_err(|e| corrupt(fence, e))?;
    let mut c = Cursor::new(&body);
    let mut rows: Vec<Row> = Vec::new();
    while let Some(v) = c.next_value().map_err(|e| corrupt(fence, e))? {
        if rows.last().is_some_and(|(k, _)| *k >= c.key) || c.key.as_slice() < fence {
            return Err(corrupt(fence, "rows out of order"));
        }
        rows.push((c.key.clone(), v.to_vec()));
    }
    Ok(rows)
}

// ------------------------------------------------------------------ reads

/// One generation's rows, for reading. Cheap to clone.
///
/// The rows a runner gives its handler follow the runner's commits, which
/// land in the background while the handler applies the next batch: before
/// reading, a handler awaits [`Rows::settled`], which waits (without
/// blocking a thread) for every commit queued so far. A read made while a
/// queued commit has not been waited for fails with [`RowsError::Unsettled`]
/// rather than return rows older than the handler's own writes. Rows of a
/// serving generation (queries) never wait.
#[derive(Clone, Debug)]
pub struct Rows {
    tree: sled::Tree,
    pipeline: Option<Arc<Pipeline>>,
}

impl Rows {
    /// Opens (creating if needed) the tree `name` of `db` as rows, recording
    /// the layout in a new tree. `None` if the tree holds data of another
    /// layout.
    pub(crate) fn open(db: &sled::Db, name: &str) -> Result<Option<Rows>, sled::Error> {
        let tree = db.open_tree(name)?;
        match tree.get(LAYOUT_KEY)? {
            Some(l) if l == LAYOUT => {}
            Some(_) => return Ok(None),
            None if tree.is_empty() => {
                tree.insert(LAYOUT_KEY, LAYOUT)?;
            }
            None => return Ok(None),
        }
        Ok(Some(Rows {
            tree,
            pipeline: None,
        }))
    }

    /// The same rows, following the commits of `pipeline`.
    pub(crate) fn behind(&self, pipeline: Arc<Pipeline>) -> Rows {
        Rows {
            tree: self.tree.clone(),
            pipeline: Some(pipeline),
        }
    }

    /// The same rows, following no commits.
    pub(crate) fn plain(&self) -> Rows {
        Rows {
            tree: self.tree.clone(),
            pipeline: None,
        }
    }

    /// Waits until every commit these rows follow has landed (at once for
    /// rows that follow none). A handler awaits this before reading its
    /// rows; it never blocks a thread.
    ///
    /// Errors: [`RowsError::Unwritten`] if one of those commits failed.
    pub async fn settled(&self) -> Result<(), RowsError> {
        match &self.pipeline {
            Some(p) => p.settle().await,
            None => Ok(()),
        }
    }

    /// Whether a read may go ahead (see [`Rows::settled`]).
    fn check(&self) -> Result<(), RowsError> {
        match &self.pipeline {
            Some(p) => p.check_read(),
            None => Ok(()),
        }
    }

    /// The sled tree under the pages (it also holds the framework's keys).
    pub(crate) fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// The page holding `key`: the one with the greatest fence `<= key`.
    fn page_for(&self, key: &[u8]) -> Result<Option<(sled::IVec, sled::IVec)>, RowsError> {
        self.check()?;
        guarded(key, || {
            Ok(self
                .tree
                .range(vec![PAGE_KEY]..=page_key(key))
                .next_back()
                .transpose()
                .store()?)
        })
    }

    /// The value of `key`, if it has one.
    ///
    /// Errors: [`RowsError`].
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, RowsError> {
        let Some((pk, page)) = self.page_for(key)? else {
            return Ok(None);
        };
        let fence = &pk[1..];
        let body = body(&page).map_err(|e| corrupt(fence, e))?;
        let mut c = Cursor::new(&body);
        while let Some(v) = c.next_value().map_err(|e| corrupt(fence, e))? {
            match c.key.as_slice().cmp(key) {
                std::cmp::Ordering::Less => continue,
                std::cmp::Ordering::Equal => return Ok(Some(v.to_vec())),
                std::cmp::Ordering::Greater => break,
            }
        }
        Ok(None)
    }

    /// The rows in `range`, in key order (see [`RowIter::reversed`]).
    pub fn range<R: RangeBounds<Vec<u8>>>(&self, range: R) -> RowIter {
        RowIter {
            tree: self.tree.clone(),
            rows: self.clone(),
            lo: range.start_bound().cloned(),
            hi: range.end_bound().cloned(),
            reverse: false,
            started: false,
            done: false,
            buffer: VecDeque::new(),
            pages: None,
            last: None,
        }
    }

    /// The rows whose keys start with `prefix`.
    pub fn scan_prefix(&self, prefix: &[u8]) -> RowIter {
        let end = super::keys::prefix_end(prefix);
        self.range(prefix.to_vec()..end)
    }

    /// Every row.
    pub fn iter(&self) -> RowIter {
        self.range::<std::ops::RangeFull>(..)
    }
}

type PageIter = Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + Send>;

/// Rows of a range, read a page at a time.
pub struct RowIter {
    tree: sled::Tree,
    /// The rows read (to check, at the start, that they may be read).
    rows: Rows,
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
    reverse: bool,
    started: bool,
    done: bool,
    /// Rows of the current page still to yield, in yield order.
    buffer: VecDeque<Row>,
    /// The pages after (or, reversed, before) the current one.
    pages: Option<PageIter>,
    /// The last key yielded: later ones must be beyond it.
    last: Option<Vec<u8>>,
}

fn above_lo(lo: &Bound<Vec<u8>>, k: &[u8]) -> bool {
    match lo {
        Bound::Included(l) => k >= l.as_slice(),
        Bound::Excluded(l) => k > l.as_slice(),
        Bound::Unbounded => true,
    }
}

fn below_hi(hi: &Bound<Vec<u8>>, k: &[u8]) -> bool {
    match hi {
        Bound::Included(h) => k <= h.as_slice(),
        Bound::Excluded(h) => k < h.as_slice(),
        Bound::Unbounded => true,
    }
}

impl RowIter {
    /// The same rows, last first. Call before reading any.
    pub fn reversed(mut self) -> Self {
        self.reverse = !self.reverse;
        self
    }

    fn start(&mut self) -> Result<Option<(sled::IVec, sled::IVec)>, RowsError> {
        self.rows.check()?;
        let first = vec![PAGE_KEY];
        let end = PAGES_END.to_vec();
        if !self.reverse {
            let start = match &self.lo {
                Bound::Included(k) | Bound::Excluded(k) => page_key(k),
                Bound::Unbounded => first.clone(),
            };
            let page = self.tree.range(first.clone()..=start).next_back();
            let page = page.transpose().store()?;
            let after = match &page {
                Some((pk, _)) => Bound::Excluded(pk.to_vec()),
                None => Bound::Included(first),
            };
            self.pages = Some(Box::new(self.tree.range((after, Bound::Excluded(end)))));
            Ok(page)
        } else {
            let page = match &self.hi {
                Bound::Included(k) => self.tree.range(first.clone()..=page_key(k)).next_back(),
                Bound::Excluded(k) => self.tree.range(first.clone()..page_key(k)).next_back(),
                Bound::Unbounded => self.tree.range(first.clone()..end).next_back(),
            };
            let page = page.transpose().store()?;
            if let Some((pk, _)) = &page {
                self.pages = Some(Box::new(self.tree.range(first..pk.to_vec()).rev()));
            }
            Ok(page)
        }
    }

    /// Loads the next page's rows into the buffer; false at the end. A
    /// panic inside sled ends the iteration with [`RowsError::Corrupt`].
    fn load(&mut self) -> Result<bool, RowsError> {
        guarded(b"", || self.load_page())
    }

    fn load_page(&mut self) -> Result<bool, RowsError> {
        let page = if !self.started {
            self.started = true;
            self.start()?
        } else {
            match self.pages.as_mut().and_then(Iterator::next) {
                Some(p) => Some(p.store()?),
                None => None,
            }
        };
        let Some((pk, bytes)) = page else {
            return Ok(false);
        };
        let fence = &pk[1..];
        if !self.reverse && !below_hi(&self.hi, fence) {
            return Ok(false);
        }
        let rows = decode(fence, &bytes)?;
        let keep = |k: &[u8]| above_lo(&self.lo, k) && below_hi(&self.hi, k);
        if self.reverse {
            self.buffer
                .extend(rows.into_iter().rev().filter(|(k, _)| keep(k)));
            // Pages before this one hold keys below its fence.
            let before_lo = match &self.lo {
                Bound::Included(l) | Bound::Excluded(l) => fence <= l.as_slice(),
                Bound::Unbounded => false,
            };
            if before_lo {
                self.pages = None;
            }
        } else {
            self.buffer
                .extend(rows.into_iter().filter(|(k, _)| keep(k)));
        }
        Ok(true)
    }
}

impl Iterator for RowIter {
    type Item = Result<Row, RowsError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            if let Some(row) = self.buffer.pop_front() {
                let fresh = self.last.as_ref().is_none_or(|l| {
                    if self.reverse {
                        row.0 < *l
                    } else {
                        row.0 > *l
                    }
                });
                if fresh {
                    self.last = Some(row.0.clone());
                    return Some(Ok(row));
                }
                continue;
            }
            match self.load() {
                Ok(true) => {}
                Ok(false) => self.done = true,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

// ----------------------------------------------------------------- writes

/// A committed page as the writer keeps it: encoded, as sled holds it.
struct Cached {
    /// The next page's fence (`None`: this is the last page).
    upper: Option<Vec<u8>>,
    bytes: sled::IVec,
    /// When the writer last used it.
    used: u64,
}

/// A page change of the batch in progress, taken into the cache on commit.
enum Staged {
    Written(Vec<u8>, Cached),
    Removed(Vec<u8>, Option<Vec<u8>>),
}

/// Turns a batch's row changes into page writes; one per generation, owned
/// by the runner that writes it.
pub(crate) struct PageWriter {
    rows: Rows,
    /// Committed pages by fence.
    cache: BTreeMap<Vec<u8>, Cached>,
    cache_bytes: usize,
    clock: u64,
    staged: Vec<Staged>,
    /// Scratch space for merging a page with its changes.
    merged: Merged,
}

impl PageWriter {
    pub(crate) fn new(rows: Rows) -> Self {
        PageWriter {
            rows,
            cache: BTreeMap::new(),
            cache_bytes: 0,
            clock: 0,
            staged: Vec::new(),
            merged: Merged::default(),
        }
    }

    /// Adds to `batch` the page writes that apply `changes` (sorted by key,
    /// each key once; `None` removes). Until [`PageWriter::committed`] the
    /// cache does not see them; [`PageWriter::discarded`] forgets them.
    ///
    /// Errors: [`RowsError`] (reading or decoding a page).
    pub(crate) fn stage(
        &mut self,
        changes: &super::Sorted,
        batch: &mut sled::Batch,
    ) -> Result<(), RowsError> {
        self.discarded();
        self.clock += 1;
        let mut changes = changes.iter().peekable();
        let mut ops = Vec::new();
        while let Some(&(key, _)) = changes.peek() {
            let (fence, upper, bytes) = self.take_page(key)?;
            ops.clear();
            while let Some(&(k, _)) = changes.peek() {
                if upper.as_deref().is_some_and(|u| k >= u) {
                    break;
                }
                ops.extend(changes.next());
            }
            let appended = self.merged.merge(&fence, bytes.as_deref(), &ops)?;
            self.write(fence, upper, appended, batch);
        }
        Ok(())
    }

    /// The committed page holding `key` (out of the cache, or from sled):
    /// its fence, upper bound and bytes (`None`: no page exists yet).
    #[allow(clippy::type_complexity)]
    fn take_page(
        &mut self,
        key: &[u8],
    ) -> Result<(Vec<u8>, Option<Vec<u8>>, Option<sled::IVec>), RowsError> {
        let cached = self
            .cache
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .filter(|(_, p)| p.upper.as_deref().is_none_or(|u| key < u))
            .map(|(f, _)| f.clone());
        if let Some(fence) = cached {
            if let Some(page) = self.cache.remove(&fence) {
                self.cache_bytes -= page.bytes.len();
                return Ok((fence, page.upper, Some(page.bytes)));
            }
        }
        let Some((pk, bytes)) = self.rows.page_for(key)? else {
            return Ok((Vec::new(), None, None));
        };
        let upper = self
            .rows
            .tree
            .range((
                Bound::Excluded(pk.to_vec()),
                Bound::Excluded(PAGES_END.to_vec()),
            ))
            .next()
            .transpose()
            .store()?
            .map(|(k, _)| k[1..].to_vec());
        Ok((pk[1..].to_vec(), upper, Some(bytes)))
    }

    /// Writes the merged page, split if it grew too big, or removes it if
    /// it is empty (but never the first page).
    fn write(
        &mut self,
        fence: Vec<u8>,
        upper: Option<Vec<u8>>,
        appended: bool,
        batch: &mut sled::Batch,
    ) {
        if self.merged.rows.is_empty() && !fence.is_empty() {
            batch.remove(page_key(&fence));
            self.staged.push(Staged::Removed(fence, upper));
            return;
        }
        let chunks = self.merged.chunks(appended);
        for (i, range) in chunks.iter().enumerate() {
            let m = &self.merged;
            let chunk_fence = if i == 0 {
                fence.clone()
            } else {
                m.key(range.start).to_vec()
            };
            let chunk_upper = match chunks.get(i + 1) {
                Some(next) => Some(m.key(next.start).to_vec()),
                None => upper.clone(),
            };
            let bytes = sled::IVec::from(self.merged.encode(range.clone()));
            batch.insert(page_key(&chunk_fence), bytes.clone());
            let page = Cached {
                upper: chunk_upper,
                bytes,
                used: self.clock,
            };
            self.staged.push(Staged::Written(chunk_fence, page));
        }
    }

    /// The tree the pages are written to.
    pub(crate) fn tree(&self) -> &sled::Tree {
        &self.rows.tree
    }

    /// The batch was committed: its pages join the cache.
    pub(crate) fn committed(&mut self) {
        for s in std::mem::take(&mut self.staged) {
            match s {
                Staged::Written(fence, page) => {
                    self.cache_bytes += page.bytes.len();
                    if let Some(old) = self.cache.insert(fence, page) {
                        self.cache_bytes -= old.bytes.len();
                    }
                }
                Staged::Removed(fence, upper) => {
                    if let Some(old) = self.cache.remove(&fence) {
                        self.cache_bytes -= old.bytes.len();
                    }
                    // The page before now reaches as far as the removed one did.
                    if let Some((_, prev)) = self.cache.range_mut(..fence.clone()).next_back() {
                        if prev.upper.as_ref() == Some(&fence) {
                            prev.upper = upper;
                        }
                    }
                }
            }
        }
        if self.cache_bytes > CACHE_BYTES {
            self.evict();
        }
    }

    /// The batch was thrown away: the pages it took out of the cache are
    /// read again from sled when next needed.
    pub(crate) fn discarded(&mut self) {
        self.staged.clear();
    }

    /// Drops the least recently used half of the cache.
    fn evict(&mut self) {
        let mut stamps: Vec<u64> = self.cache.values().map(|p| p.used).collect();
        let mid = stamps.len() / 2;
        let (_, cut, _) = stamps.select_nth_unstable(mid);
        let cut = *cut;
        self.cache.retain(|_, p| p.used > cut);
        self.cache_bytes = self.cache.values().map(|p| p.bytes.len()).sum();
    }
}

/// A page merged with its changes, rows laid out in one arena.
#[derive(Default)]
struct Merged {
    arena: Vec<u8>,
    /// Per row: key start, key end (= value start), value end in `arena`.
    rows: Vec<(usize, usize, usize)>,
    /// Scratch: each row's encoded size.
    lens: Vec<usize>,
    /// Scratch: a page before compression.
    plain: Vec<u8>,
}

impl Merged {
    fn key(&self, i: usize) -> &[u8] {
        let (a, b, _) = self.rows[i];
        &self.arena[a..b]
    }

    fn value(&self, i: usize) -> &[u8] {
        let (_, b, c) = self.rows[i];
        &self.arena[b..c]
    }

    fn push(&mut self, key: &[u8], value: &[u8]) {
        let a = self.arena.len();
        self.arena.extend_from_slice(key);
        let b = self.arena.len();
        self.arena.extend_from_slice(value);
        self.rows.push((a, b, self.arena.len()));
    }

    /// Merges the encoded page `old` (none: empty) with `ops` (sorted,
    /// distinct keys). Returns whether every op came after the old rows (an
    /// append).
    fn merge(
        &mut self,
        fence: &[u8],
        old: Option<&[u8]>,
        ops: &[(&[u8], Option<&[u8]>)],
    ) -> Result<bool, RowsError> {
        self.arena.clear();
        self.rows.clear();
        let mut ops = ops.iter().copied().peekable();
        let mut appended = true;
        if let Some(old) = old {
            let body = body(old).map_err(|e| corrupt(fence, e))?;
            let mut c = Cursor::new(&body);
            let mut prev: Option<Vec<u8>> = None;
            while let Some(v) = c.next_value().map_err(|e| corrupt(fence, e))? {
                if prev.as_deref().is_some_and(|p| p >= c.key.as_slice())
                    || c.key.as_slice() < fence
                {
                    return Err(corrupt(fence, "rows out of order"));
                }
                while let Some((k, op)) = ops.next_if(|(k, _)| *k < c.key.as_slice()) {
                    appended = false;
                    if let Some(nv) = op {
                        self.push(k, nv);
                    }
                }
                match ops.next_if(|(k, _)| *k == c.key.as_slice()) {
                    Some((_, op)) => {
                        appended = false;
                        if let Some(nv) = op {
                            self.push(&c.key, nv);
                        }
                    }
                    None => self.push(&c.key, v),
                }
                match &mut prev {
                    Some(p) => {
                        p.clear();
                        p.extend_from_slice(&c.key);
                    }
                    None => prev = Some(c.key.clone()),
                }
            }
        }
        for (k, op) in ops {
            if let Some(v) = op {
                self.push(k, v);
            }
        }
        Ok(appended)
    }

    /// The encoded size of row `i` after row `i - 1` (or first in a page).
    fn row_len(&self, i: usize, first: bool) -> usize {
        let key = self.key(i);
        let shared = if first {
            0
        } else {
            shared_len(self.key(i - 1), key)
        };
        let suffix = key.len() - shared;
        let vlen = self.value(i).len();
        varint_len(shared) + varint_len(suffix) + suffix + varint_len(vlen) + vlen
    }

    /// The rows cut into pages: left pages packed nearly full after an
    /// append (more appends will follow), evenly otherwise.
    fn chunks(&mut self, appended: bool) -> Vec<std::ops::Range<usize>> {
        let n = self.rows.len();
        let mut lens = std::mem::take(&mut self.lens);
        lens.clear();
        lens.extend((0..n).map(|i| self.row_len(i, i == 0)));
        let total: usize = 1 + lens.iter().sum::<usize>();
        let mut out = Vec::new();
        if total <= PAGE_BYTES {
            out.push(0..n);
        } else {
            let target = if appended {
                PAGE_BYTES * 15 / 16
            } else {
                total / total.div_ceil(PAGE_BYTES * 3 / 4) + 1
            };
            let mut start = 0;
            let mut size = 0;
            for (i, &len) in lens.iter().enumerate() {
                if i > start && size + len <= target {
                    size += len;
                    continue;
                }
                if i > start {
                    out.push(start..i);
                    start = i;
                }
                size = 1 + self.row_len(i, true);
            }
            out.push(start..n);
        }
        self.lens = lens;
        out
    }

    /// Rows `range` as one page, compressed if that makes it smaller.
    fn encode(&mut self, range: std::ops::Range<usize>) -> Vec<u8> {
        let mut plain = std::mem::take(&mut self.plain);
        self.encode_plain(range, &mut plain);
        let rows = &plain[1..];
        let mut out = vec![0u8; 5 + lz4_flex::block::get_maximum_output_size(rows.len())];
        out[0] = PAGE_LZ4;
        out[1..5].copy_from_slice(&(rows.len() as u32).to_le_bytes());
        let out = match lz4_flex::block::compress_into(rows, &mut out[5..]) {
            Ok(n) if 5 + n < plain.len() => {
                out.truncate(5 + n);
                out
            }
            _ => plain.clone(),
        };
        self.plain = plain;
        out
    }

    /// Rows `range` as one uncompressed page, into `out`.
    fn encode_plain(&self, range: std::ops::Range<usize>, out: &mut Vec<u8>) {
        let span = match (self.rows.get(range.start), range.end.checked_sub(1)) {
            (Some(&(a, _, _)), Some(last)) => self.rows[last].2 - a,
            _ => 0,
        };
        out.clear();
        // Each row adds at most three varints of up to 4 bytes each.
        out.reserve(1 + span + 12 * range.len());
        out.push(PAGE_FORMAT);
        let mut prev: &[u8] = &[];
        for i in range {
            let (k, v) = (self.key(i), self.value(i));
            let shared = shared_len(prev, k);
            push_varint(out, shared);
            push_varint(out, k.len() - shared);
            out.extend_from_slice(&k[shared..]);
            push_varint(out, v.len());
            out.extend_from_slice(v);
            prev = k;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Sorted;
    use super::*;
    use proptest::prelude::*;

    fn encode(rows: &[Row]) -> Vec<u8> {
        let mut m = Merged::default();
        for (k, v) in rows {
            m.push(k, v);
        }
        m.encode(0..rows.len())
    }

    fn temp_rows() -> Rows {
        let db = sled::Config::new().temporary(true).open().unwrap();
        Rows::open(&db, "t").unwrap().unwrap()
    }

    fn commit(w: &mut PageWriter, changes: BTreeMap<Vec<u8>, Option<Vec<u8>>>) {
        let mut batch = sled::Batch::default();
        let writes: Vec<_> = changes.into_iter().collect();
        w.stage(&Sorted::from_sorted(&writes), &mut batch).unwrap();
        w.rows.tree.apply_batch(batch).unwrap();
        w.committed();
    }

    fn all(rows: &Rows) -> Vec<Row> {
        rows.iter().collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn a_panic_inside_the_storage_library_is_a_corrupt_page_not_a_crash() {
        let err = guarded::<()>(b"case/C-1", || panic!("bad frame header")).unwrap_err();
        match err {
            RowsError::Corrupt { fence, why } => {
                assert_eq!(fence, "case/C-1");
                assert!(why.contains("bad frame header"), "{why}");
                assert!(why.contains("rebuild"), "{why}");
            }
            other => panic!("expected a corrupt page, got {other}"),
        }
        assert_eq!(guarded(b"", || Ok(7)).unwrap(), 7);
    }

    #[test]
    fn pages_round_trip_and_reject_damage() {
        let rows: Vec<Row> = vec![
            (b"Iabc1".to_vec(), vec![]),
            (b"Iabc2".to_vec(), b"v".to_vec()),
            (b"Ib".to_vec(), vec![7; 300]),
        ];
        let bytes = encode(&rows);
        assert_eq!(bytes[0], PAGE_LZ4, "a repetitive page is compressed");
        assert!(bytes.len() < 200);
        assert_eq!(decode(b"", &bytes).unwrap(), rows);
        let short = [(b"a".to_vec(), b"b".to_vec())];
        assert_eq!(encode(&short)[0], PAGE_FORMAT, "kept plain: no smaller");
        assert_eq!(decode(b"", &encode(&short)).unwrap(), short);
        for cut in 0..bytes.len() {
            // Every truncation either fails or decodes to a prefix of the rows.
            if let Ok(d) = decode(b"", &bytes[..cut]) {
                assert!(rows.starts_with(&d), "cut at {cut}");
            }
        }
        assert!(decode(b"", &[9, 0, 1, b'a', 0]).is_err(), "unknown format");
        let mut huge = bytes.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = decode(b"", &huge).unwrap_err().to_string();
        assert!(err.contains("claims"), "{err}");
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xFF;
        flipped[6] ^= 0x55;
        assert!(
            decode(b"", &flipped).map_or(true, |d| d != rows),
            "damage is noticed or changes the rows"
        );
        assert!(decode(b"", &[]).is_err(), "empty page");
        let dup = [PAGE_FORMAT, 0, 1, b'a', 0, 1, 0, 0];
        assert!(decode(b"", &dup).is_err(), "a repeated key");
        assert!(
            decode(b"b", &encode(&rows)).is_err(),
            "rows below the fence"
        );
        assert!(
            decode(b"", &[PAGE_FORMAT, 0, 200, 1]).is_err(),
            "suffix past the end"
        );
    }

    #[test]
    fn a_layout_other_than_pages_is_refused() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let old = db.open_tree("old").unwrap();
        old.insert(b"Sabc", b"row").unwrap();
        assert!(Rows::open(&db, "old").unwrap().is_none());
        let fresh = Rows::open(&db, "fresh").unwrap();
        assert!(fresh.is_some());
        assert!(Rows::open(&db, "fresh").unwrap().is_some(), "reopens");
    }

    #[test]
    fn appends_fill_pages_and_splits_keep_every_row() {
        let rows = temp_rows();
        let mut w = PageWriter::new(rows.clone());
        let mut model = BTreeMap::new();
        for batch in 0..50u32 {
            let mut changes = BTreeMap::new();
            for i in 0..200u32 {
                let k = format!("I{:08}", batch * 200 + i).into_bytes();
                let v = vec![b'x'; 20];
                model.insert(k.clone(), v.clone());
                changes.insert(k, Some(v));
            }
            commit(&mut w, changes);
        }
        let got = all(&rows);
        assert_eq!(got, model.into_iter().collect::<Vec<_>>());
        let pages = rows.tree.scan_prefix([PAGE_KEY]).count();
        // 10,000 rows of ~25 bytes: about 250 KB, in pages packed nearly full.
        let full = 250_000 / (PAGE_BYTES * 15 / 16);
        assert!(
            (full * 85 / 100..=full * 125 / 100).contains(&pages),
            "{pages} pages, expected about {full}"
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put(u16, u8),
        Del(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u16..600, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
            1 => (0u16..600).prop_map(Op::Del),
        ]
    }

    fn key(k: u16) -> Vec<u8> {
        // Shared prefixes, varied lengths.
        format!("k{}{}", k % 7, k).into_bytes()
    }

    fn value(k: u16, v: u8) -> Vec<u8> {
        vec![v; usize::from(k % 97) * 3]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Random batches of puts and deletes, some thrown away: reads (get,
        /// ranges both ways) always match a map of the committed rows, and a
        /// fresh writer (cold cache) continues correctly.
        #[test]
        fn rows_match_a_map(batches in prop::collection::vec((prop::collection::vec(op(), 1..120), any::<bool>()), 1..25),
                            lo in 0u16..600, hi in 0u16..600) {
            let rows = temp_rows();
            let mut w = PageWriter::new(rows.clone());
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            for (i, (ops, keep)) in batches.into_iter().enumerate() {
                let mut changes = BTreeMap::new();
                for o in ops {
                    match o {
                        Op::Put(k, v) => { changes.insert(key(k), Some(value(k, v))); }
                        Op::Del(k) => { changes.insert(key(k), None); }
                    }
                }
                if i % 7 == 3 {
                    w = PageWriter::new(rows.clone());
                }
                if keep {
                    for (k, v) in &changes {
                        match v {
                            Some(v) => { model.insert(k.clone(), v.clone()); }
                            None => { model.remove(k); }
                        }
                    }
                    commit(&mut w, changes);
                } else {
                    let mut batch = sled::Batch::default();
                    let writes: Vec<_> = changes.into_iter().collect();
                    w.stage(&Sorted::from_sorted(&writes), &mut batch).unwrap();
                    w.discarded();
                }
            }
            prop_assert_eq!(all(&rows), model.clone().into_iter().collect::<Vec<_>>());
            for k in [lo, hi] {
                prop_assert_eq!(rows.get(&key(k)).unwrap(), model.get(&key(k)).cloned());
            }
            let (a, b) = (key(lo).min(key(hi)), key(lo).max(key(hi)));
            let want: Vec<Row> = model.range(a.clone()..b.clone()).map(|(k, v)| (k.clone(), v.clone())).collect();
            let fwd: Vec<Row> = rows.range(a.clone()..b.clone()).collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(&fwd, &want);
            let mut back: Vec<Row> = rows.range(a.clone()..b.clone()).reversed().collect::<Result<_, _>>().unwrap();
            back.reverse();
            prop_assert_eq!(&back, &want);
            let incl: Vec<Row> = rows.range(a.clone()..=b.clone()).reversed().collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(incl.len(), model.range(a.clone()..=b.clone()).count());
            let pre = b"k3".to_vec();
            let by_prefix: Vec<Row> = rows.scan_prefix(&pre).collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(by_prefix.len(), model.keys().filter(|k| k.starts_with(&pre)).count());
            let all_back: Vec<Row> = rows.iter().reversed().collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(all_back.len(), model.len());
        }
    }

    #[test]
    fn emptied_pages_go_and_their_range_joins_the_page_before() {
        let rows = temp_rows();
        let mut w = PageWriter::new(rows.clone());
        let put = |range: std::ops::Range<u32>| {
            range
                .map(|i| (format!("F{i:06}").into_bytes(), Some(vec![b'v'; 100])))
                .collect::<BTreeMap<_, _>>()
        };
        commit(&mut w, put(0..400));
        let pages = || rows.tree.scan_prefix([PAGE_KEY]).count();
        let before = pages();
        assert!(before > 5, "{before} pages");
        let gone: BTreeMap<_, _> = put(100..300).into_keys().map(|k| (k, None)).collect();
        commit(&mut w, gone);
        assert!(pages() < before, "emptied pages are removed");
        // The same writer (its cache holds the page before the gap) fills
        // the gap again.
        commit(&mut w, put(150..160));
        let keys: Vec<Vec<u8>> = all(&rows).into_iter().map(|(k, _)| k).collect();
        let want: Vec<Vec<u8>> = (0..100)
            .chain(150..160)
            .chain(300..400)
            .map(|i| format!("F{i:06}").into_bytes())
            .collect();
        assert_eq!(keys, want);
        assert_eq!(rows.get(b"F000155").unwrap(), Some(vec![b'v'; 100]));
        assert_eq!(rows.get(b"F000200").unwrap(), None);
    }

    fn changes(writes: &[(&[u8], &[u8])]) -> super::super::Changes {
        let mut c = super::super::Changes::default();
        for (k, v) in writes {
            c.insert(k, v).unwrap();
        }
        c
    }

    #[tokio::test(flavor = "current_thread")]
    async fn reads_behind_a_pipeline_wait_for_its_commits_without_blocking() {
        use super::super::committer::Committer;
        use crate::log::GlobalPosition;
        let rows = temp_rows();
        let mut committer = Committer::start(&rows, 3).unwrap();
        let behind = rows.behind(Arc::clone(committer.pipeline()));
        // Nothing queued: reads go ahead.
        assert_eq!(behind.get(b"Sa").unwrap(), None);
        committer
            .submit(changes(&[(b"Sa", b"1")]), GlobalPosition(0))
            .await
            .unwrap();
        // Queued and not waited for: a read is refused, never stale.
        assert!(matches!(behind.get(b"Sa"), Err(RowsError::Unsettled)));
        assert!(matches!(
            behind.iter().next(),
            Some(Err(RowsError::Unsettled))
        ));
        behind.settled().await.unwrap();
        assert_eq!(behind.get(b"Sa").unwrap(), Some(b"1".to_vec()));
        assert_eq!(behind.iter().count(), 1);
        // Rows not behind the pipeline never wait.
        committer
            .submit(changes(&[(b"Sb", b"2")]), GlobalPosition(1))
            .await
            .unwrap();
        assert!(rows.get(b"Sa").is_ok());
        behind.settled().await.unwrap();
        assert_eq!(rows.get(b"Sb").unwrap(), Some(b"2".to_vec()));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_commit_fails_the_reads_behind_it_and_every_later_commit() {
        use super::super::committer::Committer;
        use crate::log::GlobalPosition;
        let rows = temp_rows();
        let mut committer = Committer::start(&rows, 3).unwrap();
        let behind = rows.behind(Arc::clone(committer.pipeline()));
        let mut bad = super::super::Changes::default();
        bad.defer(|_| Err("refused".into()));
        let first = committer.submit(bad, GlobalPosition(0)).await.unwrap();
        let later = committer
            .submit(changes(&[(b"Sa", b"1")]), GlobalPosition(1))
            .await
            .unwrap();
        let pipeline = Arc::clone(committer.pipeline());
        assert!(pipeline.landed(first).await.is_err());
        assert!(pipeline.landed(later).await.is_err());
        assert!(matches!(
            behind.settled().await,
            Err(RowsError::Unwritten(_))
        ));
        assert!(matches!(behind.get(b"Sa"), Err(RowsError::Unwritten(_))));
        assert_eq!(rows.get(b"Sa").unwrap(), None, "nothing after it landed");
    }

    #[test]
    fn a_damaged_page_is_a_typed_error() {
        let rows = temp_rows();
        let mut w = PageWriter::new(rows.clone());
        let mut changes = BTreeMap::new();
        changes.insert(b"Sa".to_vec(), Some(b"1".to_vec()));
        commit(&mut w, changes);
        rows.tree
            .insert([PAGE_KEY], &[PAGE_FORMAT, 0, 50][..])
            .unwrap();
        assert!(matches!(rows.get(b"Sa"), Err(RowsError::Corrupt { .. })));
        assert!(matches!(
            rows.iter().next(),
            Some(Err(RowsError::Corrupt { .. }))
        ));
        let q: QueryError = rows.get(b"Sa").unwrap_err().into();
        assert!(matches!(q, QueryError::Damaged { .. }));
    }
}
