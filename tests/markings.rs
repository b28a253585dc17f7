//! Derived markings end to end: what a condition over a restricted field
//! decides is withheld, like the field, from every route a lower-cleared
//! reader has — the view, the events a command returns, the timeline, work
//! queues, search (by stage and by value), deadlines, `load`, commands that
//! name a hidden item, error messages — and a definition that would move a
//! restricted value into a lower-marked field is refused at deploy.
//!
//! The leak oracle at the end is a property test: random definitions with
//! random markings, random commands by principals of random clearances, and
//! every output each principal receives rendered and searched for a
//! restricted value or an item above their clearance.

use std::time::Duration;

use casebook::case::{CaseCommand, CaseFile, ItemRef};
use casebook::definition::{CaseDefinition, Format, ProblemKind};
use casebook::engine::{CommandContext, EngineError, OpenCase};
use casebook::log::{TenantId, Timestamp};
use casebook::projection::query::{
    DeadlineQuery, FieldCondition, FieldFilter, PageRequest, SearchQuery, WorkQueueQuery,
};
use casebook::projection::Consistency;
use casebook::rules::serde_json::{json, Value};
use casebook::security::{Classification, Principal};
use casebook::Engine;
use proptest::prelude::*;

const WAIT: Duration = Duration::from_secs(20);

/// Every key, name and restricted value is a distinctive token, so a leak
/// shows as a substring of any rendered output.
const WELFARE: &str = r#"
key = "welfare"
name = "Welfare check"
version = 1
default_classification = "OFFICIAL"
roles = ["officer", "administrator"]
[retention]
group = "group3"
[permissions]
open = ["officer"]
update_case_file = ["officer"]
add_discretionary = ["officer"]
add_note = ["officer"]
close = ["officer"]

[[fields]]
key = "subject"
type = "text"
search = "text"
[[fields]]
key = "risk"
type = "enumeration"
values = ["lowrisk", "highrisk"]
classification = "SECRET"
[[fields]]
key = "summary"
type = "text"
classification = "SECRET"
[[fields]]
key = "score"
type = "integer"
classification = "SECRET"

[[activities]]
key = "visit"
name = "Visit"
kind = "human_task"
roles = ["officer"]

[[activities]]
key = "zmark"
name = "Zmark flag"
kind = "automatic"
entry = [{ on = [{ completed = "visit" }], if = "risk == 'highrisk'" }]
set = { summary = "'flagged ' + risk" }

[[activities]]
key = "zextra"
name = "Zextra check"
kind = "human_task"
roles = ["officer"]
discretionary = true
applicability = "risk == 'highrisk'"

[[stages]]
key = "zprotect"
name = "Zprotect stage"
entry = [{ on = [{ completed = "visit" }], if = "risk == 'highrisk'" }]

  [[stages.activities]]
  key = "zsafe"
  name = "Zsafe house"
  kind = "human_task"
  roles = ["officer"]

    [[stages.activities.deadlines]]
    key = "zsafe_24h"
    within = "24h"
    escalate = [{ notify = ["officer"] }]
"#;

/// What a reader cleared for OFFICIAL must never see of a high-risk case.
const FORBIDDEN: &[&str] = &[
    "highrisk", "zprotect", "zsafe", "zmark", "zextra", "Zprot", "flagged",
];

fn tenant() -> TenantId {
    TenantId::new("kent").unwrap()
}

/// The engine with this file's tenant registered.
fn new_engine() -> Engine {
    Engine::in_memory_with(casebook::engine::EngineConfig::with_tenants([tenant()])).unwrap()
}

fn admin() -> Principal {
    Principal::new(tenant(), "admin-1")
        .with_roles(["administrator"])
        .with_clearance(Classification::TopSecret)
}

fn officer(clearance: Classification) -> Principal {
    Principal::new(tenant(), format!("pc-{clearance:?}"))
        .with_roles(["officer"])
        .with_clearance(clearance)
}

fn low() -> Principal {
    officer(Classification::Official)
}

fn cleared() -> Principal {
    officer(Classification::Secret)
}

fn assert_clean(what: &str, rendered: &str) {
    for token in FORBIDDEN {
        assert!(
            !rendered.contains(token),
            "{what} shows `{token}` to an OFFICIAL reader: {rendered}"
        );
    }
}

async fn engine_with(def: &str) -> Engine {
    let engine = new_engine();
    engine.start().await.unwrap();
    engine.deploy(&admin(), def, Format::Toml).await.unwrap();
    engine
}

async fn open(engine: &Engine, id: &str, file: Value) {
    let mut req = OpenCase::new("welfare", CaseFile::from_json(file).unwrap());
    req.case_id = Some(id.parse().unwrap());
    engine.open_case(&cleared(), req).await.unwrap();
}

async fn run(engine: &Engine, who: &Principal, id: &str, cmd: CaseCommand) -> String {
    let outcome = engine
        .execute(who, id, cmd, CommandContext::because("test"))
        .await
        .unwrap();
    format!("{:?}", outcome.events)
}

fn complete(key: &str) -> CaseCommand {
    CaseCommand::Complete {
        item: ItemRef::key(key),
        outputs: CaseFile::default(),
    }
}

async fn settle(engine: &Engine) -> Consistency {
    let ops = Principal::platform_administrator("ops");
    let head = engine.store(&ops).unwrap().head_position().unwrap();
    engine
        .wait_for_projections(
            &admin(),
            engine.position_token(&ops, &admin().tenant, head).unwrap(),
            WAIT,
        )
        .await
        .unwrap();
    Consistency::Eventual
}

fn all_deadlines() -> DeadlineQuery {
    DeadlineQuery {
        due_before: Timestamp(i64::MAX),
        now: Timestamp(0),
        case_type: None,
        page: PageRequest::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_decided_by_a_restricted_field_is_withheld_on_every_route() {
    let engine = engine_with(WELFARE).await;
    open(
        &engine,
        "W-1",
        json!({ "subject": "Alice Example", "risk": "highrisk" }),
    )
    .await;

    // The low-cleared officer completes the visit: the cascade enters the
    // SECRET-decided stage, starts its deadline and runs the flagging step.
    let returned = run(&engine, &low(), "W-1", complete("visit")).await;
    assert_clean("the events a command returns", &returned);
    assert!(
        returned.contains("visit"),
        "their own completion: {returned}"
    );
    let theirs = run(
        &engine,
        &cleared(),
        "W-1",
        CaseCommand::AddNote { text: "ok".into() },
    )
    .await;
    assert!(theirs.contains("NoteAdded"));

    let c = settle(&engine).await;
    // The view.
    let view = engine.view(&low(), "W-1").await.unwrap();
    assert_clean("the view", &format!("{view:?}"));
    let full = engine.view(&cleared(), "W-1").await.unwrap();
    let full = format!("{full:?}");
    for token in ["zprotect", "zsafe", "zmark", "zsafe_24h", "highrisk"] {
        assert!(
            full.contains(token),
            "the cleared reader sees {token}: {full}"
        );
    }
    // The projected view.
    let projected = engine.case_view(&low(), "W-1", c).await.unwrap();
    assert_clean("the projected view", &format!("{projected:?}"));
    // The timeline: no entry about the hidden items, no hidden field names.
    let timeline = engine
        .timeline(&low(), "W-1", PageRequest::default(), c)
        .await
        .unwrap();
    let text = format!("{timeline:?}");
    assert_clean("the timeline", &text);
    for entry in &timeline.items {
        assert!(
            !entry.fields.iter().any(|f| f == "summary" || f == "risk"),
            "a hidden field's name: {entry:?}"
        );
        assert_ne!(
            entry.event_type, "CaseFileUpdated",
            "a hidden field changed: {entry:?}"
        );
    }
    let cleared_timeline = engine
        .timeline(&cleared(), "W-1", PageRequest::default(), c)
        .await
        .unwrap();
    assert!(format!("{cleared_timeline:?}").contains("Zsafe house"));
    // The work queue.
    let queue = WorkQueueQuery {
        role: Some("officer".into()),
        ..WorkQueueQuery::default()
    };
    let q = engine.work_queue(&low(), &queue, c).await.unwrap();
    assert_clean("the work queue", &format!("{q:?}"));
    let q = engine.work_queue(&cleared(), &queue, c).await.unwrap();
    assert!(q.items.iter().any(|w| w.item.as_str() == "zsafe"));
    // Search by the hidden stage, and the stages a hit lists.
    let by_stage = SearchQuery {
        stage: Some("zprotect".into()),
        ..SearchQuery::default()
    };
    let hits = engine.search_cases(&low(), &by_stage, c).await.unwrap();
    assert!(hits.items.is_empty(), "search by a hidden stage: {hits:?}");
    let hits = engine.search_cases(&cleared(), &by_stage, c).await.unwrap();
    assert_eq!(hits.items.len(), 1);
    let any = engine
        .search_cases(&low(), &SearchQuery::default(), c)
        .await
        .unwrap();
    assert_eq!(any.items.len(), 1, "the case itself is visible");
    assert_clean("search results", &format!("{any:?}"));
    // Deadlines.
    let due = engine.deadlines(&low(), &all_deadlines(), c).await.unwrap();
    assert!(due.items.is_empty(), "a hidden deadline: {due:?}");
    let due = engine
        .deadlines(&cleared(), &all_deadlines(), c)
        .await
        .unwrap();
    assert_eq!(due.items.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_naming_a_hidden_item_answers_as_for_no_item() {
    let engine = engine_with(WELFARE).await;
    open(
        &engine,
        "W-2",
        json!({ "subject": "Bob", "risk": "highrisk" }),
    )
    .await;
    run(&engine, &cleared(), "W-2", complete("visit")).await;

    let err = |e: EngineError| (e.kind(), e.to_string());
    let claim = |key: &str| CaseCommand::Claim {
        item: ItemRef::key(key),
    };
    let ctx = || CommandContext::because("test");
    let hidden = engine
        .execute(&low(), "W-2", claim("zsafe"), ctx())
        .await
        .unwrap_err();
    let absent = engine
        .execute(&low(), "W-2", claim("nosuch"), ctx())
        .await
        .unwrap_err();
    let (hk, hm) = err(hidden);
    let (ak, am) = err(absent);
    assert_eq!(hk, ak);
    assert_eq!(hm.replace("zsafe", "nosuch"), am);

    // The discretionary item's applicability rule reads the restricted
    // field: asking to plan it is no oracle.
    let plan = |key: &str| CaseCommand::AddDiscretionary {
        item: key.into(),
        stage: None,
    };
    let hidden = engine
        .execute(&low(), "W-2", plan("zextra"), ctx())
        .await
        .unwrap_err();
    let absent = engine
        .execute(&low(), "W-2", plan("nosuch"), ctx())
        .await
        .unwrap_err();
    let (hk, hm) = err(hidden);
    let (ak, am) = err(absent);
    assert_eq!(hk, ak);
    assert_eq!(hm.replace("zextra", "nosuch"), am);
    // The cleared officer plans it.
    engine
        .execute(&cleared(), "W-2", plan("zextra"), ctx())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_answers_only_a_reader_cleared_for_everything() {
    let engine = engine_with(WELFARE).await;
    open(
        &engine,
        "W-3",
        json!({ "subject": "Carol", "risk": "lowrisk" }),
    )
    .await;
    let refused = engine.load(&low(), "W-3").await.unwrap_err();
    let missing = engine.load(&low(), "W-404").await.unwrap_err();
    assert_eq!(refused.kind(), missing.kind());
    assert_eq!(
        refused.to_string().replace("W-3", "W-404"),
        missing.to_string()
    );
    let loaded = engine.load(&cleared(), "W-3").await.unwrap();
    assert_eq!(loaded.state.case_file["risk"], json!("lowrisk"));
    // The view still answers the low reader, without the field.
    let view = engine.view(&low(), "W-3").await.unwrap();
    assert!(!view.case_file.contains_key("risk"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_lowered_later_is_not_found_by_value_on_cases_written_before() {
    let engine = engine_with(WELFARE).await;
    open(
        &engine,
        "W-4",
        json!({ "subject": "Dan", "risk": "highrisk", "score": 9 }),
    )
    .await;
    // Version 2 lowers `risk` to OFFICIAL (and drops what read it).
    let v2 = WELFARE
        .replace("version = 1", "version = 2")
        .replace(
            "values = [\"lowrisk\", \"highrisk\"]\nclassification = \"SECRET\"",
            "values = [\"lowrisk\", \"highrisk\"]",
        )
        .replace("if = \"risk == 'highrisk'\"", "if = \"subject == 'x'\"")
        .replace(
            "set = { summary = \"'flagged ' + risk\" }",
            "set = { summary = \"'flagged'\" }",
        )
        .replace("applicability = \"risk == 'highrisk'\"", "")
        .replace(
            "type = \"integer\"\nclassification = \"SECRET\"",
            "type = \"integer\"",
        );
    engine.deploy(&admin(), &v2, Format::Toml).await.unwrap();
    let mut req = OpenCase::new(
        "welfare",
        CaseFile::from_json(json!({ "subject": "Eve", "risk": "highrisk", "score": 7 })).unwrap(),
    );
    req.case_id = Some("W-5".parse().unwrap());
    engine.open_case(&cleared(), req).await.unwrap();
    let c = settle(&engine).await;

    let by_value = |(field, condition): (&str, FieldCondition)| SearchQuery {
        case_type: Some("welfare".into()),
        fields: vec![FieldFilter {
            field: field.into(),
            condition,
        }],
        ..SearchQuery::default()
    };
    let ids =
        |page: casebook::projection::query::Page<casebook::projection::query::CaseSummary>| {
            page.items
                .into_iter()
                .map(|s| s.case_id)
                .collect::<Vec<_>>()
        };
    for condition in [
        ("risk", FieldCondition::Equals(json!("highrisk"))),
        (
            "risk",
            FieldCondition::OneOf(vec![json!("highrisk"), json!("lowrisk")]),
        ),
        // Ranges would extract a value bit by bit.
        (
            "score",
            FieldCondition::Between {
                from: Some(json!(0)),
                to: Some(json!(100)),
            },
        ),
    ] {
        let low_hits = engine
            .search_cases(&low(), &by_value(condition.clone()), c)
            .await
            .unwrap();
        assert_eq!(
            ids(low_hits),
            ["W-5"],
            "{condition:?}: only the case written at OFFICIAL"
        );
        let all = engine
            .search_cases(&cleared(), &by_value(condition.clone()), c)
            .await
            .unwrap();
        assert_eq!(all.items.len(), 2, "{condition:?}");
    }
}

#[tokio::test]
async fn a_definition_moving_a_restricted_value_down_is_refused_at_deploy() {
    let engine = new_engine();
    let leaky = WELFARE.replace(
        "set = { summary = \"'flagged ' + risk\" }",
        "set = { subject = \"'flagged ' + risk\" }",
    );
    let err = engine
        .deploy(&admin(), &leaky, Format::Toml)
        .await
        .unwrap_err();
    let EngineError::InvalidDefinition(def_err) = &err else {
        panic!("not a definition error: {err:?}");
    };
    let problem = def_err
        .problems
        .iter()
        .find(|p| p.kind == ProblemKind::Downgrade)
        .unwrap_or_else(|| panic!("no downgrade problem: {err}"));
    assert_eq!(problem.path, "activities[1].set.subject");
    assert!(problem.message.contains("SECRET"), "{}", problem.message);
    assert!(!problem.message.contains("highrisk"));

    // A step whose *condition* reads a restricted field writes what it
    // reveals: a constant into a lower field is refused too.
    let constant = WELFARE.replace(
        "set = { summary = \"'flagged ' + risk\" }",
        "set = { subject = \"'flagged'\" }",
    );
    let err = engine
        .deploy(&admin(), &constant, Format::Toml)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("activities[1].set.subject"),
        "{err}"
    );

    // A case ended by a restricted condition shows the value in its status.
    let ending = WELFARE.replace(
        "[retention]",
        "exit = [{ if = \"risk == 'highrisk'\" }]\n[retention]",
    );
    let err = engine
        .deploy(&admin(), &ending, Format::Toml)
        .await
        .unwrap_err();
    let EngineError::InvalidDefinition(def_err) = &err else {
        panic!("not a definition error: {err:?}");
    };
    assert!(
        def_err
            .problems
            .iter()
            .any(|p| p.path == "exit" && p.kind == ProblemKind::Downgrade),
        "{err}"
    );
}

#[test]
fn the_bundled_definitions_hide_what_follows_a_restricted_risk() {
    let load = |name: &str| {
        let path = format!(
            "{}/examples/definitions/{name}.toml",
            env!("CARGO_MANIFEST_DIR")
        );
        CaseDefinition::parse(&std::fs::read_to_string(path).unwrap(), Format::Toml).unwrap()
    };
    // Missing person: the high-risk response is entered on the SECRET
    // vulnerabilities; the case is OFFICIAL-SENSITIVE.
    let mp = load("missing-person");
    let m = mp.markings();
    assert_eq!(m.item("high_risk_response"), Classification::Secret);
    assert_eq!(m.item("notify_control_room"), Classification::Secret);
    assert_eq!(m.item("search"), Classification::Official);
    assert!(m.status() <= mp.default_classification);
    // Domestic abuse: MARAC is entered on the risk level.
    let da = load("domestic-abuse");
    assert_eq!(
        da.markings().item("marac"),
        Classification::OfficialSensitive
    );
}

// ------------------------------------------------------------ leak oracle

/// A random definition: four fields with random markings holding
/// distinctive values, and tasks whose entry conditions read random fields.
#[derive(Debug, Clone)]
struct Spec {
    field_marks: Vec<Classification>,
    /// Per task: the field its entry condition reads (None: no condition),
    /// and the task before it it waits for (None: none).
    tasks: Vec<(Option<usize>, Option<usize>)>,
    /// Commands: (principal's clearance, task to complete or field to set).
    commands: Vec<(Classification, Action)>,
}

#[derive(Debug, Clone)]
enum Action {
    Complete(usize),
    Set(usize),
}

fn mark() -> impl Strategy<Value = Classification> {
    prop_oneof![
        Just(Classification::Official),
        Just(Classification::OfficialSensitive),
        Just(Classification::Secret),
        Just(Classification::TopSecret),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop::collection::vec(mark(), 4),
        prop::collection::vec(
            (prop::option::of(0usize..4), prop::option::of(0usize..5)),
            1..5,
        ),
        prop::collection::vec(
            (
                mark(),
                prop_oneof![
                    (0usize..5).prop_map(Action::Complete),
                    (0usize..4).prop_map(Action::Set)
                ],
            ),
            0..8,
        ),
    )
        .prop_map(|(field_marks, tasks, commands)| {
            // A task waits only for an earlier one.
            let tasks = tasks
                .into_iter()
                .enumerate()
                .map(|(i, (f, w))| (f, w.filter(|w| *w < i)))
                .collect();
            Spec {
                field_marks,
                tasks,
                commands,
            }
        })
}

/// The value a field holds, distinctive per field and write.
fn value(field: usize, n: usize) -> String {
    format!("qv{field}x{n}q")
}

fn toml_of(spec: &Spec) -> String {
    let mut out = String::from(
        "key = \"oracle\"\nname = \"Oracle\"\nversion = 1\nroles = [\"officer\", \"administrator\"]\n\
         [retention]\ngroup = \"group3\"\n[permissions]\nopen = [\"officer\"]\n\
         update_case_file = [\"officer\"]\nadd_note = [\"officer\"]\n",
    );
    for (i, m) in spec.field_marks.iter().enumerate() {
        out.push_str(&format!(
            "[[fields]]\nkey = \"f{i}\"\ntype = \"text\"\nsearch = \"text\"\nclassification = \"{m}\"\n"
        ));
    }
    for (i, (field, wait)) in spec.tasks.iter().enumerate() {
        out.push_str(&format!(
            "[[activities]]\nkey = \"ztask{i}\"\nname = \"Ztask{i} work\"\nkind = \"human_task\"\nroles = [\"officer\"]\n"
        ));
        let on = wait.map(|w| format!("on = [{{ completed = \"ztask{w}\" }}]"));
        let cond = field.map(|f| format!("if = \"f{f}.startsWith('qv')\""));
        let parts: Vec<String> = on.into_iter().chain(cond).collect();
        if !parts.is_empty() {
            out.push_str(&format!("entry = [{{ {} }}]\n", parts.join(", ")));
        }
        out.push_str(&format!(
            "  [[activities.deadlines]]\n  key = \"zdl{i}\"\n  within = \"PT1H\"\n  escalate = [{{ notify = [\"officer\"] }}]\n"
        ));
    }
    out
}

/// Everything `who` can receive, rendered, with the error messages of
/// their refused commands.
async fn render(engine: &Engine, who: &Principal, errors: &str) -> String {
    let c = Consistency::Eventual;
    let mut out = errors.to_string();
    if let Ok(v) = engine.view(who, "O-1").await {
        out += &format!("{v:?}");
    }
    if let Ok(v) = engine.case_view(who, "O-1", c).await {
        out += &format!("{v:?}");
    }
    if let Ok(t) = engine.timeline(who, "O-1", PageRequest::default(), c).await {
        out += &format!("{t:?}");
    }
    if let Ok(l) = engine.load(who, "O-1").await {
        out += &format!("{:?}", l.state);
    }
    let queue = WorkQueueQuery {
        role: Some("officer".into()),
        ..WorkQueueQuery::default()
    };
    out += &format!("{:?}", engine.work_queue(who, &queue, c).await);
    out += &format!("{:?}", engine.deadlines(who, &all_deadlines(), c).await);
    out += &format!(
        "{:?}",
        engine.search_cases(who, &SearchQuery::default(), c).await
    );
    for f in 0..4 {
        for n in 0..9 {
            let q = SearchQuery {
                text: Some(value(f, n)),
                ..SearchQuery::default()
            };
            if let Ok(p) = engine.search_cases(who, &q, c).await {
                if !p.items.is_empty() {
                    out += &format!(" [text hit for {}] ", value(f, n));
                }
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn no_output_carries_what_its_reader_may_not_see(spec in spec()) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let engine = new_engine();
            engine.start().await.unwrap();
            let def = toml_of(&spec);
            engine.deploy(&admin(), &def, Format::Toml).await.unwrap();
            let parsed = CaseDefinition::parse(&def, Format::Toml).unwrap();
            let marks = parsed.markings();
            // Opened by a TOP SECRET officer with every field set.
            let file: casebook::rules::serde_json::Map<String, Value> =
                (0..4).map(|f| (format!("f{f}"), json!(value(f, 0)))).collect();
            let mut req = OpenCase::new("oracle", CaseFile::from_json(Value::Object(file)).unwrap());
            req.case_id = Some("O-1".parse().unwrap());
            engine.open_case(&officer(Classification::TopSecret), req).await.unwrap();
            let levels = [
                Classification::Official,
                Classification::OfficialSensitive,
                Classification::Secret,
                Classification::TopSecret,
            ];
            // What each clearance level was answered: returned events, and
            // the messages of refused commands (which may name the item the
            // caller gave, hidden or not, but no value).
            let mut said: Vec<String> = vec![String::new(); 4];
            let mut refused: Vec<String> = vec![String::new(); 4];
            let mut written: Vec<(usize, String)> = (0..4).map(|f| (f, value(f, 0))).collect();
            for (n, (clearance, action)) in spec.commands.iter().enumerate() {
                let who = officer(*clearance);
                let cmd = match action {
                    Action::Complete(t) => complete(&format!("ztask{t}")),
                    Action::Set(f) => {
                        let v = value(*f, n + 1);
                        written.push((*f, v.clone()));
                        CaseCommand::UpdateCaseFile {
                            changes: CaseFile::from_json(json!({ format!("f{f}"): v })).unwrap(),
                        }
                    }
                };
                let answer = engine
                    .execute(&who, "O-1", cmd, CommandContext::because("oracle"))
                    .await;
                let slot = levels.iter().position(|l| l == clearance).unwrap();
                match answer {
                    Ok(o) => said[slot] += &format!("{:?}", o.events),
                    Err(e) => refused[slot] += &format!("{e} {e:?}"),
                }
            }
            settle(&engine).await;
            for (slot, clearance) in levels.iter().enumerate() {
                let who = officer(*clearance);
                let seen = render(&engine, &who, &said[slot]).await;
                for (f, v) in &written {
                    if spec.field_marks[*f] > *clearance {
                        prop_assert!(!seen.contains(v.as_str()) && !refused[slot].contains(v.as_str()),
                            "{clearance} reader sees f{f}'s value {v}\n{def}\n{seen}");
                    }
                }
                for t in 0..spec.tasks.len() {
                    let key = format!("ztask{t}");
                    if marks.item(&key) > *clearance {
                        // `ztask1` is a prefix of nothing else here (at most 5 tasks).
                        prop_assert!(!seen.contains(&format!("{key}\"")) && !seen.contains(&format!("Ztask{t} ")),
                            "{clearance} reader sees {key} marked {}\n{def}\n{seen}", marks.item(&key));
                        prop_assert!(!seen.contains(&format!("zdl{t}\"")),
                            "{clearance} reader sees deadline zdl{t}\n{def}\n{seen}");
                    }
                }
            }
            engine.shutdown().await.unwrap();
            Ok(())
        })?;
    }
}
