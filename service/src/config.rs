//! The service's configuration: a TOML file, command-line overrides and
//! defaults that start a working development server on an empty directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where the service listens by default (loopback only).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// The data directory by default, relative to the working directory.
pub const DEFAULT_DATA: &str = "casebook-data";
/// The tenant that receives the bundled example definitions by default.
pub const DEFAULT_DEMO_TENANT: &str = "demo";
/// Largest request or response message accepted by default (4 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// The file in the data directory holding the generated development secret.
pub const DEV_SECRET_FILE: &str = "jwt-hs256-secret";

/// Everything `casebook serve` needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The embedded store's directory. On PostgreSQL (`store`), the
    /// node's own files only (the development token secret, the email
    /// outbox); everything that must survive is in the database.
    #[serde(default = "default_data")]
    pub data: PathBuf,
    /// Where the events live: absent for the embedded store in `data`, or
    /// a `postgres://` URL for a database N nodes share (each `casebook
    /// serve` with the same URL is one node; any node serves any case).
    /// `min_free_bytes` and `checkpoints` apply to the embedded store only.
    #[serde(default)]
    pub store: Option<String>,
    /// Connections each node pools for reads on PostgreSQL (the appender
    /// and the listener keep one more each). Default 8.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// The gRPC address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where Prometheus metrics are served over HTTP (`/metrics`); none
    /// when absent.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Largest message accepted or sent; bigger ones are RESOURCE_EXHAUSTED.
    #[serde(default = "default_max_message")]
    pub max_message_bytes: usize,
    /// How bearer tokens are checked.
    #[serde(default)]
    pub auth: AuthConfig,
    /// TLS, when the service terminates it itself.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// The demonstration tenant and its bundled definitions.
    #[serde(default)]
    pub demo: DemoConfig,
    /// Tenants registered at start if they are not registered yet (a
    /// suspended one stays suspended); others are registered by a platform
    /// administrator over the Admin API. The demo tenant is registered
    /// when `demo.deploy_examples` is on.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Free space the data directory's disk must keep: commands that would
    /// append with less free are RESOURCE_EXHAUSTED (nothing written) and
    /// accepted again once space is freed. Default 64 MiB.
    #[serde(default = "default_min_free")]
    pub min_free_bytes: u64,
    /// When the log signs checkpoints of its Merkle tree.
    #[serde(default)]
    pub checkpoints: CheckpointsConfig,
}

/// When the log signs a checkpoint (`[checkpoints]`): after `every_events`
/// events or `every_ms` milliseconds since the last, whichever comes first
/// (and on a clean stop). Events after the latest checkpoint are protected
/// by their checksums only, and proofs cover only signed events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointsConfig {
    /// Default 10,000.
    #[serde(default = "default_checkpoint_events")]
    pub every_events: u64,
    /// Default 1,000 (1 s).
    #[serde(default = "default_checkpoint_ms")]
    pub every_ms: u64,
}

impl Default for CheckpointsConfig {
    fn default() -> Self {
        CheckpointsConfig {
            every_events: default_checkpoint_events(),
            every_ms: default_checkpoint_ms(),
        }
    }
}

impl CheckpointsConfig {
    /// The log's checkpoint settings (the key: the data directory's own).
    ///
    /// Errors: a zero interval, naming its key.
    pub fn engine(&self) -> Result<casebook_engine::log::CheckpointConfig, String> {
        if self.every_events == 0 {
            return Err("checkpoints.every_events must be at least 1".into());
        }
        if self.every_ms == 0 {
            return Err("checkpoints.every_ms must be at least 1".into());
        }
        Ok(casebook_engine::log::CheckpointConfig {
            every_events: self.every_events,
            every: std::time::Duration::from_millis(self.every_ms),
            signer: None,
        })
    }
}

fn default_checkpoint_events() -> u64 {
    casebook_engine::log::CheckpointConfig::default().every_events
}

fn default_checkpoint_ms() -> u64 {
    casebook_engine::log::CheckpointConfig::default()
        .every
        .as_millis() as u64
}

/// Token checking. With neither key configured, a random HS256 secret is
/// generated in the data directory on first start (development use; mint
/// tokens for it with `casebook token`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// A file holding the HS256 shared secret.
    pub hs256_secret_file: Option<PathBuf>,
    /// A PEM file holding the RS256 public key of the identity provider.
    pub rs256_public_key_file: Option<PathBuf>,
    /// The `iss` every token must carry, if set.
    pub issuer: Option<String>,
    /// The `aud` every token must carry, if set.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, seconds (default 30).
    pub leeway_seconds: Option<u64>,
}

/// TLS certificate and key (PEM).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain.
    pub cert_file: PathBuf,
    /// The private key.
    pub key_file: PathBuf,
}

/// The demonstration tenant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    /// Deploy the bundled example definitions at start (a no-op when they
    /// are deployed already).
    #[serde(default = "yes")]
    pub deploy_examples: bool,
    /// The tenant they are deployed to.
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// Run the built-in common services for the demo tenant (`gis.locate`,
    /// `decision.evaluate`, `reference.lookup`, `notify.email`,
    /// `calendar.add_working_days`) and deploy its sample resources
    /// (`examples/resources/`). Off: those services are left to external
    /// job workers.
    #[serde(default = "yes")]
    pub builtin_services: bool,
    /// How the demo tenant's `notify.email` sends.
    #[serde(default)]
    pub email: EmailConfig,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            deploy_examples: true,
            tenant: default_tenant(),
            builtin_services: true,
            email: EmailConfig::default(),
        }
    }
}

/// Where `notify.email` sends: an SMTP relay (no TLS: a relay on this host
/// or network), or, without one, `.eml` files in a folder.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The sender, `Name <address>` (default `Casebook <casebook@localhost>`).
    pub from: Option<String>,
    /// The relay's host; when absent, messages are written to `folder`.
    pub smtp_host: Option<String>,
    /// The relay's port (default 25).
    pub smtp_port: Option<u16>,
    /// Where messages are written without a relay (default
    /// `<data>/outbox`).
    pub folder: Option<PathBuf>,
}

fn default_pool_size() -> usize {
    8
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data: default_data(),
            store: None,
            pool_size: default_pool_size(),
            listen: default_listen(),
            metrics_listen: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            auth: AuthConfig::default(),
            tls: None,
            demo: DemoConfig::default(),
            tenants: Vec::new(),
            min_free_bytes: default_min_free(),
            checkpoints: CheckpointsConfig::default(),
        }
    }
}

/// A configuration that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid configuration.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its line.
        message: String,
    },
}

impl Config {
    /// Reads a TOML configuration file.
    ///
    /// Errors: [`ConfigError::Read`]; [`ConfigError::Invalid`] naming the
    /// unknown or mistyped key.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config
            .checkpoints
            .engine()
            .map_err(|message| ConfigError::Invalid {
                path: path.to_path_buf(),
                message,
            })?;
        Ok(config)
    }
}

fn default_data() -> PathBuf {
    PathBuf::from(DEFAULT_DATA)
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("a valid constant address")
}

fn default_min_free() -> u64 {
    casebook_engine::engine::EngineConfig::default().min_free_bytes
}

fn default_max_message() -> usize {
    DEFAULT_MAX_MESSAGE_BYTES
}

fn default_tenant() -> String {
    DEFAULT_DEMO_TENANT.to_string()
}

fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses_and_unknown_keys_are_refused() {
        let dir = std::env::temp_dir().join(format!("casebook-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("casebook.toml");
        std::fs::write(
            &path,
            r#"
data = "/var/lib/casebook"
listen = "0.0.0.0:50051"
metrics_listen = "127.0.0.1:9464"
[auth]
rs256_public_key_file = "/etc/casebook/idp.pem"
issuer = "https://idp.example.police.uk"
[demo]
deploy_examples = false
[checkpoints]
every_ms = 250
"#,
        )
        .unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.listen.port(), 50051);
        let checkpoints = config.checkpoints.engine().unwrap();
        assert_eq!(checkpoints.every, std::time::Duration::from_millis(250));
        assert_eq!(checkpoints.every_events, 10_000);
        assert!(!config.demo.deploy_examples);
        assert_eq!(config.demo.tenant, "demo");
        std::fs::write(&path, "listen = \"127.0.0.1:1\"\nport = 5\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("port"), "{err}");
        std::fs::write(&path, "[checkpoints]\nevery_events = 0\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("checkpoints.every_events"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
