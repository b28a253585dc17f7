//! A small tmpfs mounted for one test (a real full disk), lazily unmounted
//! when dropped: a failed sled database keeps its files open until the
//! process exits. Mounting needs root; [`Tmpfs::mount`] says `None`
//! otherwise and the test says it was skipped.

use std::path::Path;
use std::process::{Command, Stdio};

pub struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    /// A tmpfs of `size` (as `mount -o size=` takes it), or `None` if this
    /// process may not mount one.
    pub fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(dir))
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Grows (or shrinks) it: space returns.
    pub fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.0.path())
            .status()
            .expect("running mount");
        assert!(status.success(), "remounting {}", self.0.path().display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}
