//! Erasure by crypto-shredding (issue 22 item 5) on the embedded store: subjects in three tenants carry random canary strings in their personal fields; the log holds none of them in the clear; after views, search and snapshots exist, one subject is erased and a scan of every file under the data directory — raw bytes, and every value of every sled database, LZ4 pages decompressed — finds none of its canaries and every canary of the others (positive control); its fields read as erased with the certificate; bad input (unknown subject, second erasure, a subject under hold, a lost or wrong key file) gives typed errors with nothing done; an erasure cut short after its certificate is finished by erasing again.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use casebook::case::{CaseCommand, CaseFile};
use casebook::definition::Format;
use casebook::engine::{CommandContext, EngineConfig, EngineError, OpenCase};
use casebook::log::TenantId;
use casebook::projection::query::SearchQuery;
use casebook::projection::Consistency;
use casebook::records::sealing::SealError;
use casebook::records::{
    Decision, EraseSubject, ErasureBasis, HoldKind, HoldTarget, RecordsError, SubjectId,
    SubjectState, RECORDS_ROLE,
};
use casebook::rules::serde_json::json;
use casebook::security::{Classification, Principal};
use casebook::Engine;

const TENANTS: [&str; 3] = ["kent", "essex", "sussex"];

/// A burglary naming a suspect and a victim, their words searchable.
const DEFINITION: &str = include_str!("common/subjects.toml");

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

fn officer(t: &str) -> Principal {
    Principal::new(tenant(t), "pc-1")
        .with_roles(["officer"])
        .with_clearance(Classification::Secret)
}

fn records_officer(t: &str) -> Principal {
    Principal::new(tenant(t), "rm-1").with_roles([RECORDS_ROLE])
}

/// A random lower-case word no other value contains.
fn canary() -> String {
    let mut s = String::from("zq");
    for _ in 0..20 {
        s.push(char::from(b'a' + fastrand::u8(0..26)));
    }
    s
}

/// One tenant's canaries: the suspect's (reference, name, address) and
/// the victim's (reference, address).
#[derive(Debug, Clone)]
struct Canaries {
    suspect: [String; 3],
    victim: [String; 2],
}

impl Canaries {
    fn new() -> Self {
        Canaries {
            suspect: [canary(), canary(), canary()],
            victim: [canary(), canary()],
        }
    }

    fn suspect_ref(&self) -> String {
        format!("PNC-{}", self.suspect[0])
    }
}

fn config() -> EngineConfig {
    EngineConfig {
        tenants: TENANTS.iter().map(|t| tenant(t)).collect(),
        // Snapshots after a few events, so there are some to purge.
        snapshot_every: 2,
        ..EngineConfig::default()
    }
}

/// An erasure of `subject` under `basis`.
fn erasure(subject: &SubjectId, basis: ErasureBasis) -> EraseSubject {
    EraseSubject {
        subject: subject.clone(),
        basis,
        review: None,
    }
}

/// Shuts the engine down and drops it, so its databases are closed.
async fn stop(engine: Engine) {
    engine.shutdown().await.unwrap();
    drop(engine);
}

async fn started(dir: &Path) -> Engine {
    let engine = Engine::open_with(dir, config()).unwrap();
    engine.start().await.unwrap();
    engine
}

/// Every tenant with case `B-1` naming its suspect and victim, updated a
/// few times (so it has snapshots), its views caught up.
async fn world(engine: &Engine) -> BTreeMap<&'static str, Canaries> {
    let mut all = BTreeMap::new();
    for t in TENANTS {
        let c = Canaries::new();
        let admin = Principal::new(tenant(t), "admin-1").with_roles(["administrator"]);
        engine
            .deploy(&admin, DEFINITION, Format::Toml)
            .await
            .unwrap();
        let mut open = OpenCase::new(
            "burglary",
            CaseFile::from_json(json!({
                "summary": "shed broken into overnight",
                "suspect_ref": c.suspect_ref(),
                "suspect_name": c.suspect[1],
                "victim_ref": format!("PNC-{}", c.victim[0]),
                "victim_address": c.victim[1],
            }))
            .unwrap(),
        );
        open.case_id = Some("B-1".parse().unwrap());
        engine.open_case(&officer(t), open).await.unwrap();
        let mut last = None;
        for (i, changes) in [
            json!({"suspect_address": c.suspect[2]}),
            json!({"summary": "tools taken"}),
            json!({"summary": "tools taken from the shed"}),
            json!({"summary": "a neighbour saw a van"}),
        ]
        .into_iter()
        .enumerate()
        {
            let outcome = engine
                .execute(
                    &officer(t),
                    "B-1",
                    CaseCommand::UpdateCaseFile {
                        changes: CaseFile::from_json(changes).unwrap(),
                    },
                    CommandContext::because(format!("enquiry {i}")),
                )
                .await
                .unwrap();
            last = outcome.position;
        }
        engine
            .wait_for_projections(&officer(t), last.unwrap(), Duration::from_secs(20))
            .await
            .unwrap();
        all.insert(t, c);
    }
    all
}

/// Updates `B-1` of tenant `t` (a field of no subject) and waits until its
/// views have caught up with it: after an erasure, until they are rebuilt.
async fn settle(engine: &Engine, t: &str) {
    let outcome = engine
        .execute(
            &officer(t),
            "B-1",
            CaseCommand::UpdateCaseFile {
                // A new value each time, so there is always an event.
                changes: CaseFile::from_json(json!({
                    "summary": format!("reviewed {}", fastrand::u64(..))
                }))
                .unwrap(),
            },
            CommandContext::because("review"),
        )
        .await
        .unwrap();
    engine
        .wait_for_projections(
            &officer(t),
            outcome.position.unwrap(),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
}

async fn search(engine: &Engine, t: &str, word: &str) -> Vec<String> {
    let query = SearchQuery {
        text: Some(word.into()),
        ..SearchQuery::default()
    };
    for _ in 0..200 {
        match engine
            .search_cases(&officer(t), &query, Consistency::Eventual)
            .await
        {
            Ok(page) => return page.items.into_iter().map(|c| c.case_id).collect(),
            // Views being rebuilt after an erasure.
            Err(e) if e.to_string().contains("rebuil") => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("search: {e}"),
        }
    }
    panic!("views never rebuilt");
}

/// Whether `needle` occurs in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The tail of a canary: its random part survives even where a key is
/// stored prefix-compressed against its neighbour.
fn needle(canary: &str) -> &[u8] {
    &canary.as_bytes()[canary.len() - 12..]
}

/// Every byte string under `dir` a canary could hide in: each file's raw
/// bytes and, for each sled database (a folder with a `conf` file), every
/// key and value of every tree, each also LZ4-decompressed where it is a
/// compressed projection page. Call with no engine open on `dir`.
fn blobs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut sleds = Vec::new();
    while let Some(d) = stack.pop() {
        if d.join("conf").is_file() && d.join("db").exists() {
            sleds.push(d.clone());
        }
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    for d in sleds {
        let db = open_sled(&d);
        for name in db.tree_names() {
            let tree = db.open_tree(&name).unwrap();
            for kv in tree.iter() {
                let (k, v) = kv.unwrap();
                let at = format!("{} tree {:?}", d.display(), String::from_utf8_lossy(&name));
                out.push((at.clone(), k.to_vec()));
                if let Some(page) = v.get(1..) {
                    if let Ok(plain) = lz4_flex::block::decompress_size_prepended(page) {
                        out.push((format!("{at} (lz4)"), plain));
                    }
                }
                out.push((at, v.to_vec()));
            }
        }
    }
    out
}

/// Opens a sled database as it was made (its recorded segment size),
/// waiting out the lock a database closed a moment ago in this process can
/// still hold (sled #1234).
fn open_sled(dir: &Path) -> sled::Db {
    let conf = std::fs::read(dir.join("conf")).unwrap();
    let segment_size = String::from_utf8_lossy(&conf)
        .lines()
        .find_map(|l| l.strip_prefix("segment_size:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(512 * 1024);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match sled::Config::new()
            .path(dir)
            .segment_size(segment_size)
            .open()
        {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("opening {}: {e}", dir.display()),
        }
    }
}

/// Where each canary is found under `dir`.
fn found(dir: &Path, canaries: &[&String]) -> BTreeMap<String, Vec<String>> {
    let blobs = blobs(dir);
    canaries
        .iter()
        .map(|c| {
            let at = blobs
                .iter()
                .filter(|(_, b)| contains(b, needle(c)))
                .map(|(p, _)| p.clone())
                .collect();
            (c.to_string(), at)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_a_subject_leaves_none_of_its_data_anywhere_and_all_of_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let engine = started(dir.path()).await;
    let world = world(&engine).await;
    let kent = &world["kent"];
    // No search yet: the audit of reads records a search's words, in the
    // clear, in the log (see docs/RETENTION.md); searches come after the
    // last scan.
    stop(engine).await;

    let every: Vec<&String> = world
        .values()
        .flat_map(|c| c.suspect.iter().chain(&c.victim))
        .collect();
    // The log holds no canary in the clear; derived stores hold them all.
    let before = found(dir.path(), &every);
    for (c, at) in &before {
        assert!(
            !at.is_empty(),
            "canary {c} not found before erasure: the scan sees nothing"
        );
        assert!(
            at.iter().all(|p| !p.contains("/log/")),
            "canary {c} in the clear in the log: {at:?}"
        );
    }
    assert!(
        before[&kent.suspect[1]]
            .iter()
            .any(|p| p.contains("snapshots")),
        "no snapshot holds the suspect: the test would not prove they are purged"
    );

    let engine = started(dir.path()).await;
    let subject = engine
        .subject_id(&records_officer("kent"), &kent.suspect_ref())
        .await
        .unwrap();
    let certificate = engine
        .erase_subject(
            &records_officer("kent"),
            erasure(&subject, ErasureBasis::Infringement),
        )
        .await
        .unwrap();
    assert_eq!(certificate.cases, ["B-1"]);
    assert_eq!(certificate.key_ids, [subject.as_str()]);
    for t in TENANTS {
        settle(&engine, t).await;
    }

    // Reads: the suspect's fields are erased, with the certificate; the
    // victim's and other tenants' stay.
    let view = engine.view(&officer("kent"), "B-1").await.unwrap();
    for f in ["suspect_ref", "suspect_name", "suspect_address"] {
        assert!(!view.case_file.contains_key(f), "{f} still readable");
    }
    assert_eq!(view.case_file["victim_address"], json!(kent.victim[1]));
    let mut erased: Vec<_> = view
        .erased
        .iter()
        .map(|e| (e.field.as_str().to_string(), e.certificate.clone()))
        .collect();
    erased.sort();
    assert_eq!(
        erased,
        ["suspect_address", "suspect_name", "suspect_ref"]
            .map(|f| (f.to_string(), certificate.certificate.clone()))
    );
    let record = engine
        .subject(&records_officer("kent"), &subject)
        .await
        .unwrap();
    assert_eq!(record.state, SubjectState::Erased);

    // A second erasure is refused, naming the first certificate.
    let again = engine
        .erase_subject(
            &records_officer("kent"),
            erasure(&subject, ErasureBasis::Infringement),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&again, RecordsError::AlreadyErased { certificate: c, .. } if *c == certificate.certificate),
        "{again}"
    );
    // Nor may it be reviewed again.
    let err = common::review(
        &engine,
        &records_officer("kent"),
        &subject,
        Decision::Retain,
        None,
        "periodic review",
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RecordsError::AlreadyErased { .. }), "{err}");
    // New data about the erased person cannot be sealed under the
    // destroyed key.
    let mut open = OpenCase::new(
        "burglary",
        CaseFile::from_json(json!({"suspect_ref": kent.suspect_ref()})).unwrap(),
    );
    open.case_id = Some("B-2".parse().unwrap());
    let err = engine.open_case(&officer("kent"), open).await.unwrap_err();
    assert!(
        matches!(err, EngineError::Seal(SealError::SubjectErased { .. })),
        "{err}"
    );
    stop(engine).await;

    // None of the erased subject's canaries anywhere; all of the others.
    let after = found(dir.path(), &every);
    for c in &kent.suspect {
        assert!(
            after[c].is_empty(),
            "erased canary {c} found in {:?}",
            after[c]
        );
    }
    for c in every.iter().filter(|c| !kent.suspect.contains(c)) {
        assert!(
            !after[*c].is_empty(),
            "canary {c} of a subject not erased is gone"
        );
    }

    // After a restart the fields still read as erased, and search finds
    // the erased words no more (searched only now: see above).
    let engine = started(dir.path()).await;
    let view = engine.view(&officer("kent"), "B-1").await.unwrap();
    assert!(!view.case_file.contains_key("suspect_name"));
    assert_eq!(view.case_file["victim_address"], json!(kent.victim[1]));
    assert!(search(&engine, "kent", &kent.suspect[1]).await.is_empty());
    assert!(search(&engine, "kent", &kent.suspect[2]).await.is_empty());
    assert_eq!(search(&engine, "kent", &kent.victim[1]).await, ["B-1"]);
    assert_eq!(
        search(&engine, "essex", &world["essex"].suspect[1]).await,
        ["B-1"]
    );
    stop(engine).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_erasures_are_typed_errors_that_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = started(dir.path()).await;
    let world = world(&engine).await;
    let essex = &world["essex"];
    let rm = records_officer("essex");
    let erase = |subject: SubjectId| erasure(&subject, ErasureBasis::LegalObligation);
    let subject = engine.subject_id(&rm, &essex.suspect_ref()).await.unwrap();

    // Unknown subject; another tenant's subject; wrong role; bad review id.
    let unknown = engine.subject_id(&rm, "PNC-nobody").await.unwrap();
    let err = engine.erase_subject(&rm, erase(unknown)).await.unwrap_err();
    assert!(matches!(err, RecordsError::UnknownSubject { .. }), "{err}");
    let err = engine
        .erase_subject(&records_officer("kent"), erase(subject.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, RecordsError::UnknownSubject { .. }), "{err}");
    let err = engine
        .erase_subject(&officer("essex"), erase(subject.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, RecordsError::Forbidden { .. }), "{err}");
    let err = engine
        .erase_subject(
            &rm,
            EraseSubject {
                review: Some("not an id".into()),
                ..erase(subject.clone())
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RecordsError::Invalid { .. }), "{err}");

    // Under hold: refused (restrict instead), and nothing is erased.
    engine
        .place_hold(
            &rm,
            HoldTarget::Subject(subject.to_string()),
            HoldKind::Investigation,
            "operation ongoing",
        )
        .await
        .unwrap();
    let err = engine
        .erase_subject(&rm, erase(subject.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RecordsError::ErasureUnderHold { .. }),
        "{err}"
    );
    let view = engine.view(&officer("essex"), "B-1").await.unwrap();
    assert_eq!(view.case_file["suspect_name"], json!(essex.suspect[1]));
    assert!(view.erased.is_empty());
    let record = engine.subject(&rm, &subject).await.unwrap();
    assert_ne!(record.state, SubjectState::Erased);
    stop(engine).await;

    // A lost data key file is a typed error on read, not "erased" and not
    // a panic; so is a wrong tenant key.
    let keys = dir.path().join("keys").join("t-sussex");
    let sussex = &world["sussex"];
    let engine = started(dir.path()).await;
    let sussex_subject = engine
        .subject_id(&records_officer("sussex"), &sussex.suspect_ref())
        .await
        .unwrap();
    stop(engine).await;
    let dek = keys.join(format!("{}.dek", sussex_subject.as_str()));
    let saved = std::fs::read(&dek).unwrap();
    std::fs::remove_file(&dek).unwrap();
    // Snapshots (derived) would spare the view its replay of the log.
    std::fs::remove_dir_all(dir.path().join("snapshots")).unwrap();
    let engine = Engine::open_with(dir.path(), config()).unwrap();
    let err = engine.view(&officer("sussex"), "B-1").await.unwrap_err();
    assert!(
        matches!(err, EngineError::Seal(SealError::KeyMissing { .. })),
        "{err}"
    );
    stop(engine).await;
    std::fs::write(&dek, saved).unwrap();
    let kek = keys.join("kek");
    let saved = std::fs::read(&kek).unwrap();
    std::fs::write(&kek, [9u8; 32]).unwrap();
    let engine = Engine::open_with(dir.path(), config()).unwrap();
    let err = engine.view(&officer("sussex"), "B-1").await.unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::Seal(SealError::Kms(
                casebook::records::kms::KmsError::Unwrap { .. }
            ))
        ),
        "{err}"
    );
    stop(engine).await;
    std::fs::write(&kek, saved).unwrap();
    let engine = started(dir.path()).await;
    let view = engine.view(&officer("sussex"), "B-1").await.unwrap();
    assert_eq!(view.case_file["suspect_name"], json!(sussex.suspect[1]));
    stop(engine).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_cut_short_after_its_certificate_is_finished_by_erasing_again() {
    let dir = tempfile::tempdir().unwrap();
    let engine = started(dir.path()).await;
    let world = world(&engine).await;
    let kent = &world["kent"];
    let rm = records_officer("kent");
    let subject = engine.subject_id(&rm, &kent.suspect_ref()).await.unwrap();
    let keys = dir.path().join("keys").join("t-kent");
    let dek = keys.join(format!("{}.dek", subject.as_str()));
    let saved = std::fs::read(&dek).unwrap();
    let first = engine
        .erase_subject(&rm, erasure(&subject, ErasureBasis::Infringement))
        .await
        .unwrap();
    stop(engine).await;
    // As if the process died after appending the certificate, before the
    // key was destroyed.
    std::fs::write(&dek, saved).unwrap();
    std::fs::remove_file(keys.join(format!("{}.erased", subject.as_str()))).unwrap();

    let engine = started(dir.path()).await;
    settle(&engine, "kent").await;
    let view = engine.view(&officer("kent"), "B-1").await.unwrap();
    assert_eq!(view.case_file["suspect_name"], json!(kent.suspect[1]));
    let again = engine
        .erase_subject(&rm, erasure(&subject, ErasureBasis::Infringement))
        .await
        .unwrap();
    assert_eq!(again.certificate, first.certificate);
    settle(&engine, "kent").await;
    let view = engine.view(&officer("kent"), "B-1").await.unwrap();
    assert!(!view.case_file.contains_key("suspect_name"));
    assert!(view
        .erased
        .iter()
        .all(|e| e.certificate == first.certificate));
    let err = engine
        .erase_subject(&rm, erasure(&subject, ErasureBasis::Infringement))
        .await
        .unwrap_err();
    assert!(matches!(err, RecordsError::AlreadyErased { .. }), "{err}");
    stop(engine).await;
}
