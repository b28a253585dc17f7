//! Quickstart: the engine on its embedded store with the bundled example
//! definitions. Deploys every definition in `examples/definitions/` for the
//! tenant `kent`, opens a Freedom of Information request and works it through
//! its sentries, a discretionary activity and a supervisor's approval, then
//! prints the case as an officer sees it, the timeline and the work queue.
//!
//! ```text
//! cargo run --release --example quickstart [DATA_DIR]
//! ```
//!
//! The data directory defaults to `./casebook-data`. Run it again: the
//! definitions are already deployed (deploying is idempotent) and the earlier
//! cases are still there.

use std::time::Duration;

use casebook::case::{CaseCommand, CaseFile, ItemRef};
use casebook::definition::Format;
use casebook::engine::{CommandContext, OpenCase};
use casebook::log::{Source, TenantId};
use casebook::projection::query::{PageRequest, TaskStates, WorkQueueQuery};
use casebook::projection::Consistency;
use casebook::rules::serde_json::{json, Value};
use casebook::security::{Classification, Principal};
use casebook::Engine;

fn case_file(v: Value) -> CaseFile {
    CaseFile::from_json(v).expect("the example's case files are JSON objects")
}

fn because(reason: &str) -> CommandContext {
    CommandContext::because(reason).with_source(Source::system("quickstart"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "casebook-data".into());
    let engine = Engine::open(&dir)?;
    engine.start().await?;
    let kent = TenantId::new("kent")?;
    // 0. A platform administrator registers the tenant (a no-op when it is
    //    registered already); calls for an unregistered tenant are refused.
    let ops = Principal::platform_administrator("ops-1");
    engine.register_tenant(&ops, &kent).await?;

    // 1. Deploy the bundled definitions (a no-op when already deployed).
    let admin = Principal::new(kent.clone(), "admin-1").with_roles(["administrator"]);
    let definitions = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/definitions");
    let mut files: Vec<_> = std::fs::read_dir(&definitions)?.collect::<Result<_, _>>()?;
    files.sort_by_key(|f| f.path());
    for file in files {
        let source = std::fs::read_to_string(file.path())?;
        let d = engine.deploy(&admin, &source, Format::Toml).await?;
        let what = if d.newly_deployed {
            "deployed"
        } else {
            "already deployed"
        };
        println!(
            "{what:>16}: {} v{} ({})",
            d.key,
            d.version,
            &d.fingerprint.to_string()[..12]
        );
    }

    // 2. Open an FOI request and work it.
    let officer = Principal::new(kent.clone(), "foi-7")
        .with_roles(["foi_officer"])
        .with_clearance(Classification::OfficialSensitive);
    let manager = Principal::new(kent.clone(), "foi-mgr-2").with_roles(["foi_manager"]);
    let legal = Principal::new(kent.clone(), "legal-3").with_roles(["legal_adviser"]);
    let request = json!({
        "requester": "P-1001",
        "received_on": "2026-11-02",
        "request_text": "How many burglaries were recorded in Canterbury in 2025?",
    });
    let mut open = OpenCase::new("foi_request", case_file(request.clone()));
    open.context = because("request received by email");
    let opened = engine.open_case(&officer, open).await?;
    let id = opened.case_id.clone();
    println!("\nopened {id}");

    let mut logged = request.clone();
    logged["valid_request"] = json!(true);
    logged["clarification_needed"] = json!(false);
    let steps: Vec<(&Principal, CaseCommand, &str)> = vec![
        (
            &officer,
            complete("log_request", logged),
            "request logged and acknowledged",
        ),
        (
            &officer,
            complete(
                "search_for_information",
                json!({"information_held": "held", "estimated_cost_hours": 6.5}),
            ),
            "records searched",
        ),
        (
            &officer,
            complete(
                "consider_exemptions",
                json!({"exemptions": ["s40_personal_data"]}),
            ),
            "names of victims are personal data",
        ),
        (
            &officer,
            CaseCommand::AddDiscretionary {
                item: "legal_advice".into(),
                stage: None,
            },
            "s40 needs legal advice",
        ),
        (
            &legal,
            complete("legal_advice", json!({})),
            "advice given: redact names",
        ),
        (
            &manager,
            complete(
                "approve_response",
                json!({"response_type": "partly_disclosed"}),
            ),
            "approved with redactions",
        ),
        (
            &officer,
            complete("send_response", json!({"response_sent_on": "2026-11-20"})),
            "response emailed",
        ),
    ];
    let mut last = opened.position;
    for (who, command, reason) in steps {
        let label = format!("{command:?}");
        let done = engine.execute(who, &id, command, because(reason)).await?;
        let label: String = label.chars().take(60).collect();
        println!("  {:<62} -> {} event(s)", label, done.events.len());
        last = done.position.or(last);
    }

    // 3. Read it back: the case view, the timeline and the work queue.
    let view = engine.view(&officer, &id).await?;
    println!(
        "\n{id}: {:?}, classification {}",
        view.status, view.classification
    );
    for item in &view.items {
        println!("  {:<28} {:?}", item.item.as_str(), item.state);
    }
    println!(
        "  milestones reached: {:?}",
        view.reached.iter().map(|m| m.as_str()).collect::<Vec<_>>()
    );

    // A second request, just received: its first task waits in the queue.
    let mut second = OpenCase::new(
        "foi_request",
        case_file(json!({
            "requester": "P-2002",
            "received_on": "2026-11-21",
            "request_text": "Response times to Immediate-graded calls, October 2026",
        })),
    );
    second.context = because("request received by post");
    last = engine.open_case(&officer, second).await?.position.or(last);

    let consistency = match last {
        Some(position) => Consistency::AtLeast {
            position,
            timeout: Duration::from_secs(10),
        },
        None => Consistency::Eventual,
    };
    let timeline = engine
        .timeline(
            &officer,
            &id,
            PageRequest {
                offset: 0,
                limit: 100,
            },
            consistency,
        )
        .await?;
    println!("\ntimeline ({} entries):", timeline.items.len());
    for entry in &timeline.items {
        println!(
            "  {} {:<10} {:<46} {}",
            entry.at,
            entry.actor,
            entry.summary.chars().take(46).collect::<String>(),
            entry.reason.as_deref().unwrap_or("")
        );
    }

    let queue = engine
        .work_queue(
            &officer,
            &WorkQueueQuery {
                role: Some("foi_officer".into()),
                assignee: None,
                team: None,
                case_type: None,
                unassigned_only: false,
                page: PageRequest::default(),
                tasks: TaskStates::Active,
            },
            consistency,
        )
        .await?;
    println!(
        "\nopen tasks for foi_officer across all cases: {}",
        queue.items.len()
    );
    for task in queue.items.iter().take(5) {
        println!(
            "  {} {} ({:?}, team {})",
            task.case_id,
            task.name,
            task.state,
            task.team.as_deref().unwrap_or("-")
        );
    }

    engine.shutdown().await?;
    println!("\ndata in {dir}; run again to add another case");
    Ok(())
}

fn complete(item: &str, out: Value) -> CaseCommand {
    CaseCommand::Complete {
        item: ItemRef::key(item),
        outputs: case_file(out),
    }
}
