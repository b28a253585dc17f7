//! The seam between the log and the file system: segment files and their folder.
//!
//! [`OsFs`] is the real thing. Tests put a simulated file system behind the
//! same traits to model a power cut: everything written after the last sync
//! disappears, while synced bytes survive.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One segment file, opened for positional reads and writes.
pub trait SegmentFile: Send + Sync + 'static {
    /// Reads into `buf` from `offset`; returns how many bytes were read
    /// (fewer only at the end of the file).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Puts written data (and the file size) on stable storage: `fdatasync`.
    fn sync_data(&self) -> io::Result<()>;
    /// The file's current length.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Truncates (or extends) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The file's first `len` bytes mapped into memory (read-only), for
    /// reading without copies; `None` if this file system cannot map.
    /// `len` may run past the end of the file; the log only ever looks at
    /// bytes that were synced before the read began (see `segment`).
    fn map(&self, len: u64) -> io::Result<Option<bytes::Bytes>> {
        let _ = len;
        Ok(None)
    }
}

/// The folder of segment files. Segments are numbered from 0.
pub trait LogFs: Send + Sync + 'static {
    /// The numbers of the existing segments, in ascending order.
    fn list(&self) -> io::Result<Vec<u64>>;
    /// Opens an existing segment for reading and writing.
    fn open(&self, segment: u64) -> io::Result<Arc<dyn SegmentFile>>;
    /// Creates a new, empty segment; fails if it exists.
    fn create(&self, segment: u64) -> io::Result<Arc<dyn SegmentFile>>;
    /// Deletes a segment.
    fn remove(&self, segment: u64) -> io::Result<()>;
    /// Makes creations and deletions in the folder durable (fsync of the directory).
    fn sync_dir(&self) -> io::Result<()>;
    /// The segment's path, for error messages.
    fn path(&self, segment: u64) -> PathBuf;
    /// Bytes free for this folder's files (what an unprivileged writer may
    /// still use), or `None` if this file system cannot tell. The writer
    /// refuses appends that would eat into its reserve
    /// (`LogStoreConfig::min_free_bytes`).
    fn available(&self) -> io::Result<Option<u64>> {
        Ok(None)
    }
}

/// Segment files in a real directory: `<dir>/<number, 12 digits>.seg`.
#[derive(Debug, Clone)]
pub struct OsFs {
    dir: PathBuf,
}

impl OsFs {
    /// Uses (and creates, if needed) the directory.
    pub fn new(dir: impl AsRef<Path>) -> io::Result<Self> {
        std::fs::create_dir_all(dir.as_ref())?;
        Ok(OsFs {
            dir: dir.as_ref().to_path_buf(),
        })
    }
}

struct OsFile(File);

impl SegmentFile for OsFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.0.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    // The crate denies unsafe code; mapping a segment is its one exception.
    #[allow(unsafe_code)]
    fn map(&self, len: u64) -> io::Result<Option<bytes::Bytes>> {
        let len = usize::try_from(len).map_err(io::Error::other)?;
        // SAFETY: the mapping is read-only and shared. Casebook alone writes
        // segment files (the data directory's LOCK keeps other stores out),
        // and only ever appends past the synced end; readers look only at
        // bytes that were synced before their read began, which are never
        // written or truncated again while the store is open (a torn tail is
        // cut at open, before any reader; a sealed segment loses only the
        // unused space past its last record). A file changed behind
        // Casebook's back is outside what the log can guard against, as with
        // any memory-mapped store.
        let map = unsafe { memmap2::MmapOptions::new().len(len).map(&self.0)? };
        Ok(Some(bytes::Bytes::from_owner(map)))
    }
}

impl LogFs for OsFs {
    fn list(&self) -> io::Result<Vec<u64>> {
        let mut segments = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(number) = name
                .strip_suffix(".seg")
                .and_then(|n| n.parse::<u64>().ok())
            {
                segments.push(number);
            }
        }
        segments.sort_unstable();
        Ok(segments)
    }

    fn open(&self, segment: u64) -> io::Result<Arc<dyn SegmentFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path(segment))?;
        Ok(Arc::new(OsFile(file)))
    }

    fn create(&self, segment: u64) -> io::Result<Arc<dyn SegmentFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(self.path(segment))?;
        Ok(Arc::new(OsFile(file)))
    }

    fn remove(&self, segment: u64) -> io::Result<()> {
        std::fs::remove_file(self.path(segment))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    fn path(&self, segment: u64) -> PathBuf {
        self.dir.join(format!("{segment:012}.seg"))
    }

    fn available(&self) -> io::Result<Option<u64>> {
        let st = rustix::fs::statvfs(&self.dir)?;
        Ok(Some(st.f_bavail.saturating_mul(st.f_frsize)))
    }
}
