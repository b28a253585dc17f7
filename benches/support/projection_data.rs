//! Bench data shared by `projection_rebuild` and `queries`: an embedded store
//! of 100,000 `incident` cases (about ten events each, about 1M events),
//! built once under `target/bench-data/projection-1m` and reused.
//!
//! Histories come from the pure case runtime (`decide`), so every event is
//! one the engine itself would write; each case is one append.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use casebook::case::{decide, CaseCommand, CaseFile, CaseState, ItemRef};
use casebook::definition::Format;
use casebook::log::codec::DomainEvent;
use casebook::log::{
    EventStore, ExpectedVersion, GlobalPosition, Metadata, Source, StreamId, TenantId, Timestamp,
};
use casebook::rules::serde_json::{json, Value};
use casebook::security::{Classification, Principal};
use casebook::Engine;

/// The platform administrator: the only caller of the engine's unscoped
/// store and projection host.
pub fn platform_admin() -> casebook::security::Principal {
    casebook::security::Principal::platform_administrator("ops")
}

/// Cases in the store.
pub const CASES: usize = 100_000;
/// The definition the cases run.
pub const INCIDENT: &str = include_str!("../../tests/common/incident.toml");
/// Wards cases are spread over.
pub const WARDS: [&str; 4] = ["north", "south", "east", "west"];
const WORDS: [&str; 8] = [
    "bicycle",
    "shed",
    "van",
    "window",
    "garage",
    "laptop",
    "jewellery",
    "car",
];

/// The tenant.
pub fn tenant() -> TenantId {
    TenantId::new("west-midlands").unwrap()
}

/// A principal who may do everything the histories need.
pub fn officer(n: usize) -> Principal {
    Principal::new(tenant(), format!("pc-{}", n % 200))
        .with_roles(["handler", "supervisor", "administrator"])
        .with_clearance(Classification::Secret)
}

/// The store's directory.
pub fn store_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data/projection-1m")
}

fn fields(v: Value) -> CaseFile {
    CaseFile::from_json(v).unwrap()
}

const MARKER: &str = "complete";

/// The log's on-disk record format the data is stored in: data written by
/// an earlier format is rebuilt, so reads are measured on today's format.
const LOG_FORMAT: &str = "record body format 2";

/// What the stored data was built from: a store built from another
/// definition, size or log format is rebuilt.
fn fingerprint() -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (INCIDENT, CASES, LOG_FORMAT).hash(&mut h);
    format!("{:016x}", h.finish())
}

/// When the data set's first case was opened (its cases follow a minute
/// apart).
const DATA_EPOCH: Timestamp = Timestamp(1_767_225_600_000_000);

/// The engine on the data set, its clock stopped at the data set's start:
/// none of the cases' deadlines has fallen due, so starting it fires no
/// timer and the log the benches measure stays as built.
fn open_engine(dir: &Path) -> Result<Engine, casebook::engine::EngineError> {
    let clock = Arc::new(casebook::time::ManualClock::new(DATA_EPOCH));
    Engine::open_with(
        dir,
        casebook::engine::EngineConfig {
            clock,
            tenants: vec![tenant()],
            ..casebook::engine::EngineConfig::default()
        },
    )
}

/// Waits until the engine's own projections have caught up, so that they
/// do not run during a measurement.
fn settle(rt: &tokio::runtime::Runtime, engine: &Engine) {
    rt.block_on(engine.start()).unwrap();
    // Started, the engine fires the deadlines that fell due while it was
    // closed (once: a fired timer never fires again). Wait until the log
    // stops growing and the projections have everything.
    loop {
        let at = head(engine);
        let officer = officer(0);
        let token = engine
            .position_token(
                &casebook::security::Principal::platform_administrator("ops"),
                &officer.tenant,
                at,
            )
            .unwrap();
        rt.block_on(engine.wait_for_projections(
            &officer,
            token,
            std::time::Duration::from_secs(3600),
        ))
        .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(500));
        if head(engine) == at {
            return;
        }
    }
}

/// Opens the engine on the bench store, building it first if needed, with
/// its projections caught up.
pub fn open(rt: &tokio::runtime::Runtime) -> Engine {
    let dir = store_dir();
    let built = std::fs::read_to_string(dir.join(MARKER)).ok();
    if built.as_deref() == Some(fingerprint().as_str()) {
        if let Ok(engine) = open_engine(&dir) {
            settle(rt, &engine);
            return engine;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let engine = open_engine(&dir).unwrap();
    let started = Instant::now();
    rt.block_on(async {
        engine
            .deploy(&officer(0), INCIDENT, Format::Toml)
            .await
            .unwrap();
        let def = engine
            .definition(&officer(0), "incident", None)
            .await
            .unwrap();
        let store = engine.store(&platform_admin()).unwrap();
        let writers = 64;
        let mut tasks = Vec::new();
        for w in 0..writers {
            let def = Arc::clone(&def);
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                for c in (w..CASES).step_by(writers) {
                    append_case(&*store, &def, c).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    settle(rt, &engine);
    std::fs::write(dir.join(MARKER), fingerprint()).unwrap();
    eprintln!(
        "built {CASES} cases ({} events) in {:?}",
        engine
            .store(&platform_admin())
            .unwrap()
            .head_position()
            .map_or(0, |p| p.0 + 1),
        started.elapsed()
    );
    engine
}

async fn append_case(store: &dyn EventStore, def: &casebook::definition::CaseDefinition, c: usize) {
    let who = officer(c);
    let at = Timestamp(DATA_EPOCH.0 + c as i64 * 60_000_000);
    let w1 = WORDS[c % WORDS.len()];
    let w2 = WORDS[(c / 8) % WORDS.len()];
    let mut commands = vec![
        CaseCommand::Open {
            case_file: fields(json!({
                "summary": format!("{w1} taken from {w2}, case {c}"),
                "ward": WARDS[c % WARDS.len()],
                "reported_on": "2026-01-01",
            })),
            classification: None,
        },
        CaseCommand::UpdateCaseFile {
            changes: fields(json!({"loss": (c % 5000) as f64 / 2.0})),
        },
        CaseCommand::AddNote {
            text: "victim called back".into(),
        },
    ];
    if c.is_multiple_of(2) {
        commands.push(CaseCommand::Claim {
            item: ItemRef::key("assess"),
        });
    }
    if c.is_multiple_of(4) {
        commands.push(CaseCommand::Complete {
            item: ItemRef::key("assess"),
            outputs: CaseFile::new(),
        });
    }
    let mut state = CaseState::default();
    let mut data = Vec::new();
    for cmd in commands {
        let events = decide(def, &state, &who, cmd, at).unwrap();
        for e in &events {
            state.apply(def, e).unwrap();
            let meta = Metadata::new(who.actor(), Source::system("bench"))
                .with_reason("bench")
                .with_classification(state.classification);
            data.push(e.to_event_data(meta).unwrap());
        }
    }
    let stream = StreamId::new(tenant(), "case", &format!("INC-{c:06}")).unwrap();
    store
        .append(&stream, ExpectedVersion::NoStream, data)
        .await
        .unwrap();
}

/// The log's head.
pub fn head(engine: &Engine) -> GlobalPosition {
    engine
        .store(&platform_admin())
        .unwrap()
        .head_position()
        .unwrap()
}
