//! The `casebook` command: `serve` the gRPC API, mint a development `token`,
//! validate `definitions`, `verify` the log's integrity, `backup` and
//! `restore` it, `soak` a fresh engine.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use casebook_engine::definition::Format;
use casebook_service::auth::{hs256_secret, mint_hs256, parse_clearance, Claims};
use casebook_service::config::Config;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "casebook",
    version,
    about = "Casebook: event-sourced case management for public-safety bodies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gRPC API on the embedded store, or on PostgreSQL with
    /// `--store` (bundled definitions are deployed to the demo tenant on
    /// start).
    Serve {
        /// A TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The data directory (overrides the file).
        #[arg(long)]
        data: Option<PathBuf>,
        /// The address to listen on (overrides the file).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// The events on a shared PostgreSQL database instead of the
        /// embedded store: `postgres://user@host:5432/casebook` (overrides
        /// the file). Every node given the same URL serves every case.
        #[arg(long)]
        store: Option<String>,
        /// Serve Prometheus metrics on this address (`GET /metrics`).
        #[arg(long)]
        metrics_listen: Option<std::net::SocketAddr>,
        /// Log lines as JSON instead of text.
        #[arg(long)]
        log_json: bool,
    },
    /// Mint a development token signed with the configured HS256 secret (or
    /// the one `serve` generated in the data directory).
    Token {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data: Option<PathBuf>,
        /// The tenant (force).
        #[arg(long, default_value = "demo")]
        tenant: String,
        /// The subject (the caller's id).
        #[arg(long, default_value = "dev-user")]
        sub: String,
        /// A role; repeat for more (e.g. --role investigator --role supervisor).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// OFFICIAL, OFFICIAL-SENSITIVE, SECRET or TOP-SECRET.
        #[arg(long, default_value = "OFFICIAL")]
        clearance: String,
        /// How long the token is valid, in minutes.
        #[arg(long, default_value_t = 60)]
        ttl_minutes: u64,
        /// Mint a platform administrator's token instead (tenant
        /// `casebook.platform`, role `platform_administrator`): it registers,
        /// suspends and lists tenants, and reads no tenant's cases.
        #[arg(long, conflicts_with_all = ["tenant", "roles"])]
        platform_admin: bool,
    },
    /// Case definitions.
    Definitions {
        #[command(subcommand)]
        command: DefinitionsCommand,
    },
    /// Check the log's integrity: recompute its Merkle tree from the segment
    /// files and check every record's checksum and position and every
    /// signed checkpoint (only reads; safe beside a running server). Exit
    /// status 0: intact; 1: damage or tampering found (the first problem is
    /// located by segment, offset, position and event id); 2: the check
    /// could not be made.
    Verify {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data: Option<PathBuf>,
        /// A checkpoint note kept outside the data directory (for example
        /// a copy of `checkpoints/latest` a force kept): the log must still
        /// hold it, which shows a rollback of the whole log.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// The verifier key (`<name>+<id>+<base64 key>`) to check signatures
        /// with, instead of the data directory's own key file.
        #[arg(long)]
        key: Option<String>,
    },
    /// Back up the log (while a server may be running) into a folder, up
    /// to its latest signed checkpoint; a second backup into the same
    /// folder copies only what is new. Views are not copied: a restore
    /// rebuilds them.
    Backup {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data: Option<PathBuf>,
        /// The backup folder.
        #[arg(long)]
        to: PathBuf,
    },
    /// Restore a backup into a new data directory: the manifest's
    /// signature and every file's hash are checked and the tree recomputed
    /// before anything is written there.
    Restore {
        /// The backup folder.
        #[arg(long)]
        from: PathBuf,
        /// The new data directory (absent or empty).
        #[arg(long)]
        data: PathBuf,
        /// The verifier key (`<name>+<id>+<base64 key>`) to check the
        /// manifest with, instead of the backup's own key.
        #[arg(long)]
        key: Option<String>,
    },
    /// Run a sustained mixed load (16 writers working burglary cases, 2
    /// readers querying) on a fresh engine in `--data`, printing a line per
    /// interval and issue 24's summary line.
    Soak {
        /// A data directory that does not exist or is empty (never a real one).
        #[arg(long)]
        data: PathBuf,
        /// How long to run, in minutes.
        #[arg(long, default_value_t = 30, conflicts_with = "seconds")]
        minutes: u64,
        /// How long to run, in seconds (for short runs).
        #[arg(long)]
        seconds: Option<u64>,
        /// Seconds between lines (default: 60, or a tenth of a run shorter
        /// than ten minutes).
        #[arg(long)]
        interval_seconds: Option<u64>,
        /// Tasks opening and working cases.
        #[arg(long, default_value_t = 16)]
        writers: usize,
        /// Tasks querying work queues and search.
        #[arg(long, default_value_t = 2)]
        readers: usize,
    },
}

#[derive(Subcommand)]
enum DefinitionsCommand {
    /// Validate a definition file: every problem, by path (exit status 1 if
    /// any), as deploy would report them.
    Validate {
        /// The file.
        file: PathBuf,
        /// Its format (default: from the extension).
        #[arg(long, value_enum)]
        format: Option<FormatArg>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Toml,
    Json,
}

fn config(file: Option<&PathBuf>, data: Option<PathBuf>) -> Result<Config, String> {
    let mut config = match file {
        Some(f) => Config::load(f).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(d) = data {
        config.data = d;
    }
    Ok(config)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("casebook: {message}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::Serve {
            config: file,
            data,
            listen,
            store,
            metrics_listen,
            log_json,
        } => {
            let mut config = config(file.as_ref(), data)?;
            if let Some(l) = listen {
                config.listen = l;
            }
            if store.is_some() {
                config.store = store;
            }
            if metrics_listen.is_some() {
                config.metrics_listen = metrics_listen;
            }
            init_logs(log_json);
            runtime()?.block_on(async move {
                let mut running =
                    casebook_service::start(config, casebook_service::server::shutdown_signal())
                        .await
                        .map_err(|e| e.to_string())?;
                println!("casebook listening on {}", running.addr);
                if let Some(m) = running.metrics_addr {
                    println!("metrics on http://{m}/metrics");
                }
                running.wait().await.map_err(|e| e.to_string())?;
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Token {
            config: file,
            data,
            tenant,
            sub,
            roles,
            clearance,
            ttl_minutes,
            platform_admin,
        } => {
            let (tenant, roles) = if platform_admin {
                (
                    casebook_engine::security::PLATFORM_TENANT.to_string(),
                    vec![casebook_engine::security::PLATFORM_ADMIN_ROLE.to_string()],
                )
            } else {
                (tenant, roles)
            };
            let config = config(file.as_ref(), data)?;
            if config.auth.rs256_public_key_file.is_some() {
                return Err(
                    "the service checks RS256 tokens from an identity provider: mint tokens there"
                        .into(),
                );
            }
            if parse_clearance(&clearance).is_none() {
                return Err(format!(
                    "--clearance {clearance}: use OFFICIAL, OFFICIAL-SENSITIVE, SECRET or TOP-SECRET"
                ));
            }
            let secret = hs256_secret(&config.auth, &config.data).map_err(|e| e.to_string())?;
            let mut claims = Claims::new(&tenant, &sub, Duration::from_secs(ttl_minutes * 60));
            claims.roles = roles;
            claims.clearance = Some(clearance);
            claims.iss = config.auth.issuer.clone();
            claims.aud = config.auth.audience.clone();
            println!(
                "{}",
                mint_hs256(&secret, &claims).map_err(|e| e.to_string())?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Definitions {
            command: DefinitionsCommand::Validate { file, format },
        } => {
            let source =
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let format = match format {
                Some(FormatArg::Json) => Format::Json,
                Some(FormatArg::Toml) => Format::Toml,
                None if file.extension().is_some_and(|e| e == "json") => Format::Json,
                None => Format::Toml,
            };
            let report = casebook_service::cases::validate(&source, format);
            if report.valid {
                println!(
                    "{}: valid ({} version {})",
                    file.display(),
                    report.case_type,
                    report.version
                );
                return Ok(ExitCode::SUCCESS);
            }
            for p in &report.problems {
                let at = if p.path.is_empty() {
                    "(document)"
                } else {
                    &p.path
                };
                println!("{}: {at}: {}", file.display(), p.message);
            }
            println!("{} problem(s)", report.problems.len());
            Ok(ExitCode::from(1))
        }
        Command::Soak {
            data,
            minutes,
            seconds,
            interval_seconds,
            writers,
            readers,
        } => {
            let duration = Duration::from_secs(seconds.unwrap_or(minutes * 60));
            soak(data, duration, interval_seconds, writers, readers)
        }
        Command::Verify {
            config: file,
            data,
            checkpoint,
            key,
        } => {
            let config = config(file.as_ref(), data)?;
            let mut options = casebook_engine::log::IntegrityOptions::default();
            let input = (|| -> Result<(), String> {
                if let Some(path) = &checkpoint {
                    options.held = Some(
                        std::fs::read_to_string(path)
                            .map_err(|e| format!("{}: {e}", path.display()))?,
                    );
                }
                if let Some(key) = &key {
                    options.key = Some(
                        casebook_engine::log::checkpoint::CheckpointVerifier::parse(key)
                            .map_err(|e| e.to_string())?,
                    );
                }
                Ok(())
            })();
            if let Err(message) = input {
                eprintln!("casebook: {message}");
                return Ok(ExitCode::from(2));
            }
            // Drawn on stderr when it is a terminal, hidden otherwise.
            let bar = indicatif::ProgressBar::new(0).with_style(
                indicatif::ProgressStyle::with_template(
                    "verifying {bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
                )
                .map_err(|e| e.to_string())?,
            );
            let shown = bar.clone();
            let report = casebook_engine::log::LogStore::verify_integrity(
                &config.data,
                &options,
                move |done, total| {
                    shown.set_length(total);
                    shown.set_position(done);
                },
            );
            bar.finish_and_clear();
            let report = match report {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("casebook: cannot verify {}: {e}", config.data.display());
                    return Ok(ExitCode::from(2));
                }
            };
            println!("{}: {report}", config.data.display());
            if report.is_ok() {
                println!("{}: intact", config.data.display());
                Ok(ExitCode::SUCCESS)
            } else {
                println!(
                    "{}: INTEGRITY CHECK FAILED ({} problem(s)); the first is located above",
                    config.data.display(),
                    report.problems.len()
                );
                Ok(ExitCode::from(1))
            }
        }
        Command::Backup {
            config: file,
            data,
            to,
        } => {
            let config = config(file.as_ref(), data)?;
            let report = casebook_engine::log::LogStore::backup_dir(&config.data, &to)
                .map_err(|e| format!("backing up {}: {e}", config.data.display()))?;
            println!(
                "{}: backed up {} events (root {}) to {}: {} files copied ({} bytes), {} kept from the last backup, in {:.2} s",
                config.data.display(),
                report.events,
                hex(&report.root),
                to.display(),
                report.files_copied,
                report.bytes_copied,
                report.files_kept,
                report.took.as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore { from, data, key } => {
            let key = key
                .map(|k| casebook_engine::log::checkpoint::CheckpointVerifier::parse(&k))
                .transpose()
                .map_err(|e| e.to_string())?;
            let report = casebook_engine::log::LogStore::restore_dir(&from, &data, key.as_ref())
                .map_err(|e| format!("restoring {}: {e}", from.display()))?;
            println!(
                "{}: restored {} events (root {}, {} bytes) into {} in {:.2} s; indexes and views are rebuilt when it is first opened",
                from.display(),
                report.events,
                hex(&report.root),
                report.bytes,
                data.display(),
                report.took.as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn soak(
    data: PathBuf,
    duration: Duration,
    interval: Option<u64>,
    writers: usize,
    readers: usize,
) -> Result<ExitCode, String> {
    let mut config = casebook_service::soak::SoakConfig::new(data, duration);
    if let Some(s) = interval {
        config.interval = Duration::from_secs(s.max(1));
    }
    config.writers = writers;
    config.readers = readers;
    let summary = runtime()?
        .block_on(casebook_service::soak::run(config, |line| {
            println!("{line}")
        }))
        .map_err(|e| e.to_string())?;
    if let Some(note) = summary.windows_note() {
        println!("{note}");
    }
    println!("{}", summary.line());
    Ok(ExitCode::SUCCESS)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn init_logs(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("CASEBOOK_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
