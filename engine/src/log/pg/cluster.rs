//! [`TestCluster`]: a throwaway PostgreSQL server for tests and benchmarks.
//!
//! Uses the server at `CASEBOOK_TEST_POSTGRES_URL` if that is set;
//! otherwise runs `initdb` in a temporary directory and starts `postgres` on
//! a free port of 127.0.0.1 (as the `postgres` user when run as root, since
//! the server refuses to run as root). The server binaries are looked up on
//! `PATH`, then in `/usr/lib/postgresql/*/bin` (Debian and Ubuntu) and
//! `/usr/pgsql-*/bin` (RPM). A watchdog shell stops the server and removes
//! its directory when the process that started it exits, however it exits.
//!
//! Everything here blocks (it runs programs and waits for them): call it
//! before starting a runtime or through `tokio::task::spawn_blocking`.

use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Why a test cluster could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TestClusterError {
    /// No PostgreSQL server binaries were found.
    #[error(
        "PostgreSQL server binaries (initdb, postgres) not found on PATH, in \
         /usr/lib/postgresql/*/bin or /usr/pgsql-*/bin: install the server package \
         (e.g. `apt-get install postgresql`) or set CASEBOOK_TEST_POSTGRES_URL"
    )]
    NoBinaries,
    /// A step failed.
    #[error("starting a throwaway PostgreSQL server: {step}: {detail}")]
    Step {
        /// What was being done.
        step: &'static str,
        /// What went wrong (the program's output, if any).
        detail: String,
    },
}

fn step(step: &'static str) -> impl Fn(io::Error) -> TestClusterError {
    move |e| TestClusterError::Step {
        step,
        detail: e.to_string(),
    }
}

/// Options of a [`TestCluster`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestClusterOptions {
    /// `fsync` and synchronous commit on, as in production (benchmarks);
    /// off makes tests faster and changes nothing they check, as long as
    /// no test cuts the machine's power.
    pub durable: bool,
    /// `max_connections`. Default 300.
    pub max_connections: u32,
}

impl Default for TestClusterOptions {
    fn default() -> Self {
        TestClusterOptions {
            durable: false,
            max_connections: 300,
        }
    }
}

/// A PostgreSQL server for tests: see the module docs.
#[derive(Debug)]
pub struct TestCluster {
    /// host, port and user, as a URL without a database.
    base: String,
    /// The server this process started, if it started one.
    own: Option<OwnServer>,
}

#[derive(Debug)]
struct OwnServer {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
    options: TestClusterOptions,
}

static DATABASES: AtomicU64 = AtomicU64::new(0);

static SHARED: std::sync::OnceLock<Option<TestCluster>> = std::sync::OnceLock::new();

impl TestCluster {
    /// One server for the whole process, started on first use — what a
    /// test binary's tests share (each making its own database). `None`
    /// when this machine has no PostgreSQL server binaries and no URL is
    /// given, outside CI: the caller skips its PostgreSQL tests (a message
    /// says so).
    ///
    /// # Panics
    /// If the server cannot be had under `CI=true` (CI never skips these
    /// tests), or fails to start for any other reason than missing
    /// binaries.
    pub fn shared() -> Option<&'static TestCluster> {
        SHARED
            .get_or_init(|| match TestCluster::start(TestClusterOptions::default()) {
                Ok(cluster) => Some(cluster),
                Err(e @ TestClusterError::NoBinaries)
                    if std::env::var("CI").map_or(true, |v| v != "true") =>
                {
                    eprintln!("PostgreSQL tests skipped: {e}");
                    None
                }
                Err(e) => panic!("{e}"),
            })
            .as_ref()
    }

    /// The server at `CASEBOOK_TEST_POSTGRES_URL`, or a fresh one.
    ///
    /// Errors: [`TestClusterError`] saying what is missing or failed.
    pub fn start(options: TestClusterOptions) -> Result<TestCluster, TestClusterError> {
        if let Ok(url) = std::env::var("CASEBOOK_TEST_POSTGRES_URL") {
            if !url.is_empty() {
                return Ok(TestCluster {
                    base: url.trim_end_matches('/').to_string(),
                    own: None,
                });
            }
        }
        let bin = find_binaries().ok_or(TestClusterError::NoBinaries)?;
        let as_postgres = is_root();
        let root = std::env::temp_dir().join(format!(
            "casebook-pg-{}-{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&root).map_err(step("making its directory"))?;
        if as_postgres {
            chown_to_postgres(&root)?;
        }
        let data = root.join("data");
        run(
            as_postgres,
            Command::new(bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["-U", "casebook", "--auth=trust", "-E", "UTF8", "--no-sync"])
                .arg("--locale=C"),
            "initdb",
        )?;
        let port = free_port()?;
        let server = OwnServer {
            bin,
            data,
            port,
            as_postgres,
            options,
        };
        server.spawn(&root)?;
        server.wait_ready()?;
        Ok(TestCluster {
            base: format!("postgres://casebook@127.0.0.1:{port}"),
            own: Some(server),
        })
    }

    /// The URL of database `name` on this server (an external URL's own
    /// database and query are replaced).
    pub fn url(&self, name: &str) -> String {
        let base = self.base.split('?').next().unwrap_or_default();
        let host_start = base.find("://").map_or(0, |i| i + 3);
        match base[host_start..].find('/') {
            Some(i) => format!("{}/{name}", &base[..host_start + i]),
            None => format!("{base}/{name}"),
        }
    }

    /// Creates a fresh, empty database and returns its URL.
    ///
    /// Errors: [`TestClusterError::Step`] if the server refuses.
    pub async fn new_database(&self) -> Result<String, TestClusterError> {
        let name = format!(
            "cb_{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::Relaxed)
        );
        let admin = self.url("postgres");
        let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .map_err(|e| TestClusterError::Step {
                step: "connecting to create a database",
                detail: e.to_string(),
            })?;
        let driver = tokio::spawn(connection);
        let created = client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await;
        drop(client);
        let _ = driver.await;
        created.map_err(|e| TestClusterError::Step {
            step: "creating a database",
            detail: e.to_string(),
        })?;
        Ok(self.url(&name))
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`, as a crash
    /// would) and starts it again on the same port and data. Only for a
    /// server this process started.
    ///
    /// Errors: [`TestClusterError::Step`].
    pub fn restart_immediate(&self) -> Result<(), TestClusterError> {
        let Some(server) = &self.own else {
            return Err(TestClusterError::Step {
                step: "restarting",
                detail: "the server was given by CASEBOOK_TEST_POSTGRES_URL".into(),
            });
        };
        run(
            server.as_postgres,
            Command::new(server.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&server.data)
                .args(["stop", "-m", "immediate", "-w"]),
            "pg_ctl stop",
        )?;
        // The watchdog sees the server gone and leaves; start a new one.
        let root = server
            .data
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        server.spawn(&root)?;
        server.wait_ready()
    }
}

impl OwnServer {
    /// Starts `postgres` under a watchdog shell that stops it and removes
    /// `root` once this process is gone (seen in `/proc`: as the
    /// `postgres` user it may not signal a process of root's).
    fn spawn(&self, root: &Path) -> Result<(), TestClusterError> {
        let durable = if self.options.durable { "on" } else { "off" };
        let postgres = format!(
            "'{bin}/postgres' -D '{data}' -p {port} -c listen_addresses=127.0.0.1 \
             -c unix_socket_directories='{root}' -c max_connections={max} \
             -c fsync={durable} -c synchronous_commit={durable} -c full_page_writes={durable} \
             -c shared_buffers=128MB",
            bin = self.bin.display(),
            data = self.data.display(),
            port = self.port,
            root = root.display(),
            max = self.options.max_connections,
        );
        let parent = std::process::id();
        let script = format!(
            "{postgres} > '{root}/server.log' 2>&1 & pg=$!\n\
             while [ -e /proc/{parent} ] && kill -0 $pg 2>/dev/null; do sleep 0.5; done\n\
             if kill -0 $pg 2>/dev/null; then kill -INT $pg; wait $pg; rm -rf '{root}'; fi\n",
            root = root.display(),
        );
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "sh", "-c", &script]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &script]);
            c
        };
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(step("starting postgres"))?;
        Ok(())
    }

    fn wait_ready(&self) -> Result<(), TestClusterError> {
        let pid_file = self.data.join("postmaster.pid");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if std::fs::read_to_string(&pid_file).is_ok_and(|s| s.contains("ready")) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = self
            .data
            .parent()
            .map(|r| std::fs::read_to_string(r.join("server.log")).unwrap_or_default())
            .unwrap_or_default();
        Err(TestClusterError::Step {
            step: "waiting for postgres to accept connections",
            detail: format!("not ready after 60 s; server log:\n{log}"),
        })
    }
}

fn run(
    as_postgres: bool,
    command: &mut Command,
    what: &'static str,
) -> Result<(), TestClusterError> {
    let output = if as_postgres {
        let program = command.get_program().to_owned();
        let args: Vec<_> = command.get_args().map(|a| a.to_owned()).collect();
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(program)
            .args(args)
            .output()
    } else {
        command.output()
    }
    .map_err(step(what))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(TestClusterError::Step {
            step: what,
            detail: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        })
    }
}

fn find_binaries() -> Option<PathBuf> {
    let has = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(dir) = std::env::split_paths(&path).find(|d| has(d)) {
            return Some(dir);
        }
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    for (parent, prefix) in [("/usr/lib/postgresql", ""), ("/usr", "pgsql-")] {
        if let Ok(entries) = std::fs::read_dir(parent) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                if name.to_string_lossy().starts_with(prefix) {
                    let bin = entry.path().join("bin");
                    if has(&bin) {
                        candidates.push(bin);
                    }
                }
            }
        }
    }
    // The newest version installed.
    candidates.sort();
    candidates.pop()
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The uid and gid of the `postgres` user, from `/etc/passwd`.
fn postgres_ids() -> Result<(u32, u32), TestClusterError> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(step("reading /etc/passwd"))?;
    passwd
        .lines()
        .find_map(|line| {
            let mut f = line.split(':');
            if f.next()? != "postgres" {
                return None;
            }
            let _password = f.next()?;
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .ok_or(TestClusterError::Step {
            step: "finding the postgres user",
            detail: "running as root needs a `postgres` user to run the server as \
                     (the distribution's package makes one)"
                .into(),
        })
}

fn chown_to_postgres(dir: &Path) -> Result<(), TestClusterError> {
    let (uid, gid) = postgres_ids()?;
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
        .map_err(step("handing its directory to postgres"))
}

fn free_port() -> Result<u16, TestClusterError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(step("finding a free port"))?;
    let port = listener
        .local_addr()
        .map_err(step("finding a free port"))?
        .port();
    Ok(port)
}
