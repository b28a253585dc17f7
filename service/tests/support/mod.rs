//! Helpers for the service's end-to-end tests: a server on 127.0.0.1:0 over
//! a temp dir, tokens, and authenticated clients.

#![allow(dead_code)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use casebook_proto::v1 as pb;
use casebook_proto::v1::admin_client::AdminClient;
use casebook_proto::v1::audit_client::AuditClient;
use casebook_proto::v1::cases_client::CasesClient;
use casebook_proto::v1::events_client::EventsClient;
use casebook_proto::v1::integrity_client::IntegrityClient;
use casebook_proto::v1::records_client::RecordsClient;
use casebook_service::auth::{mint_hs256, Claims};
use casebook_service::config::{AuthConfig, Config};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Request, Status};

pub const SECRET: &[u8] = b"test-secret-test-secret-test-secret!";

/// A running server and what it needs.
pub struct Server {
    pub running: casebook_service::Running,
    pub dir: TempDir,
    pub channel: Channel,
}

pub fn config(dir: &TempDir) -> Config {
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    Config {
        data: dir.path().join("data"),
        listen: "127.0.0.1:0".parse().unwrap(),
        auth: AuthConfig {
            hs256_secret_file: Some(secret),
            ..AuthConfig::default()
        },
        ..Config::default()
    }
}

pub async fn start() -> Server {
    start_with(|_| {}).await
}

pub async fn start_with(change: impl FnOnce(&mut Config)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir);
    change(&mut config);
    let running = casebook_service::start(config, std::future::pending())
        .await
        .expect("server starts");
    let channel = Channel::from_shared(format!("http://{}", running.addr))
        .unwrap()
        .connect()
        .await
        .expect("connects");
    Server {
        running,
        dir,
        channel,
    }
}

/// A token for `sub` of `tenant` with roles and clearance.
pub fn token(tenant: &str, sub: &str, roles: &[&str], clearance: &str) -> String {
    let mut claims = Claims::new(tenant, sub, Duration::from_secs(600));
    claims.roles = roles.iter().map(|r| r.to_string()).collect();
    claims.clearance = Some(clearance.to_string());
    mint_hs256(SECRET, &claims).unwrap()
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(pub Option<String>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(t) = &self.0 {
            let value: MetadataValue<_> = format!("Bearer {t}").parse().unwrap();
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

pub type Cases = CasesClient<InterceptedService<Channel, Bearer>>;
pub type Events = EventsClient<InterceptedService<Channel, Bearer>>;
pub type Admin = AdminClient<InterceptedService<Channel, Bearer>>;
pub type Audit = AuditClient<InterceptedService<Channel, Bearer>>;
pub type Records = RecordsClient<InterceptedService<Channel, Bearer>>;
pub type Integrity = IntegrityClient<InterceptedService<Channel, Bearer>>;

impl Server {
    pub fn cases(&self, token: &str) -> Cases {
        CasesClient::with_interceptor(self.channel.clone(), Bearer(Some(token.to_string())))
    }

    pub fn events(&self, token: &str) -> Events {
        EventsClient::with_interceptor(self.channel.clone(), Bearer(Some(token.to_string())))
    }

    pub fn admin(&self, token: &str) -> Admin {
        AdminClient::with_interceptor(self.channel.clone(), Bearer(Some(token.to_string())))
    }

    pub fn audit(&self, token: &str) -> Audit {
        AuditClient::with_interceptor(self.channel.clone(), Bearer(Some(token.to_string())))
    }

    pub fn records(&self, token: &str) -> Records {
        RecordsClient::with_interceptor(self.channel.clone(), Bearer(Some(token.to_string())))
    }

    pub fn integrity(&self, token: &str) -> Integrity {
        IntegrityClient::with_interceptor(self.channel.clone(), Bearer(Some(token.to_string())))
    }
}

pub fn text(s: &str) -> pb::Value {
    pb::Value {
        kind: Some(pb::value::Kind::Text(s.to_string())),
    }
}

pub fn boolean(b: bool) -> pb::Value {
    pb::Value {
        kind: Some(pb::value::Kind::Boolean(b)),
    }
}

pub fn file(fields: &[(&str, pb::Value)]) -> pb::CaseFile {
    pb::CaseFile {
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    }
}

/// A burglary report's opening case file.
pub fn burglary_report() -> pb::CaseFile {
    file(&[
        ("reported_at", text("2026-12-06T09:30:00Z")),
        ("incident_location", text("loc-12-high-street")),
        ("premises_type", text("dwelling")),
        ("victim", text("person-4411")),
        ("victim_vulnerable", boolean(false)),
    ])
}

pub fn item(key: &str) -> Option<pb::ItemRef> {
    Some(pb::ItemRef {
        key: key.to_string(),
        instance: 0,
    })
}

pub fn after(outcome: &pb::CaseOutcome) -> Option<pb::Consistency> {
    Some(pb::Consistency {
        min_position: outcome.position,
        timeout_ms: 5000,
    })
}

// ---- the `casebook` binary -----------------------------------------------

pub const BIN: &str = env!("CARGO_BIN_EXE_casebook");

/// Starts `casebook serve` on `data` and returns it with its address.
pub async fn serve(data: &Path) -> (Child, String) {
    serve_with(data, None).await
}

/// [`serve`] with a configuration file (`--data` and `--listen` still
/// override it).
pub async fn serve_with(data: &Path, config: Option<&Path>) -> (Child, String) {
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let mut child = command
        .env("CASEBOOK_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn casebook serve");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("serve starts within a minute")
        .unwrap()
        .expect("a line");
    let addr = line
        .strip_prefix("casebook listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (child, addr)
}

pub async fn token_cli(data: &Path, roles: &[&str]) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(["token", "--tenant", "demo", "--sub", "ch-9"])
        .arg("--data")
        .arg(data);
    for r in roles {
        cmd.args(["--role", r]);
    }
    let out = cmd.output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
