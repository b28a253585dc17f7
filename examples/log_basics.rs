//! Log basics: use the embedded event store directly — record a burglary
//! case's first events, read them back and follow the log live.
//!
//! ```text
//! cargo run --release --example log_basics [DATA_DIR]
//! ```
//!
//! The data directory defaults to `./casebook-log-data`; run it twice and the
//! second run finds the first run's case still there.

use casebook::log::codec::DomainEvent;
use casebook::log::{
    ActorId, CorrelationId, Direction, EventStore, ExpectedVersion, GlobalPosition, LogStore,
    Metadata, Source, StreamId, StreamVersion, SubscriptionStart, TenantId,
};
use casebook::security::Classification;
use serde::{Deserialize, Serialize};

/// The events of a burglary report, as a force's systems would record them.
#[derive(Debug, Serialize, Deserialize)]
enum BurglaryEvent {
    Reported {
        crime_reference: String,
        address: String,
        reported_by: String,
    },
    Graded {
        grade: String,
        attend_within_minutes: u32,
    },
    OfficerAttended {
        collar_number: String,
    },
    ForensicsRequested {
        scene: String,
    },
}

impl DomainEvent for BurglaryEvent {
    const SCHEMA_VERSION: u16 = 1;
    fn event_type(&self) -> &'static str {
        match self {
            BurglaryEvent::Reported { .. } => "BurglaryReported",
            BurglaryEvent::Graded { .. } => "IncidentGraded",
            BurglaryEvent::OfficerAttended { .. } => "OfficerAttended",
            BurglaryEvent::ForensicsRequested { .. } => "ForensicsRequested",
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "casebook-log-data".into());
    let store = LogStore::open(&dir)?;
    let tenant = TenantId::new("west-midlands")?;
    let case_number = format!(
        "BUR-{}",
        casebook::log::Timestamp::now().as_micros() % 1_000_000
    );
    let case = StreamId::new(tenant.clone(), "case", &case_number)?;

    // Follow the tenant's whole log from wherever it ends now.
    let mut live = store
        .subscribe_all(tenant.clone(), SubscriptionStart::End)
        .await?;

    let correlation = CorrelationId::new();
    let call_handler = Metadata::new(
        ActorId::new("ch-0417"),
        Source::with_reference("command-and-control", "CAD-2026-11-23-0042"),
    )
    .with_correlation(correlation)
    .with_reason("999 call: burglary in progress reported");
    let events = [
        BurglaryEvent::Reported {
            crime_reference: format!("CR/{case_number}/26"),
            address: "14 Hagley Road, Birmingham B16 8TT".into(),
            reported_by: "occupier".into(),
        },
        BurglaryEvent::Graded {
            grade: "Immediate".into(),
            attend_within_minutes: 15,
        },
    ]
    .iter()
    .map(|e| e.to_event_data(call_handler.clone()))
    .collect::<Result<Vec<_>, _>>()?;
    let opened = store
        .append(&case, ExpectedVersion::NoStream, events)
        .await?;
    println!(
        "opened {case} at positions {}..={}",
        opened.first_position, opened.last_position
    );

    let officer = Metadata::new(ActorId::new("pc-4521"), Source::system("casebook-mobile"))
        .with_correlation(correlation)
        .with_classification(Classification::OfficialSensitive);
    let more = vec![
        BurglaryEvent::OfficerAttended {
            collar_number: "4521".into(),
        }
        .to_event_data(officer.clone())?,
        BurglaryEvent::ForensicsRequested {
            scene: "rear kitchen window".into(),
        }
        .to_event_data(officer.with_reason("point of entry, glove marks visible"))?,
    ];
    let updated = store
        .append(&case, ExpectedVersion::Exact(opened.version), more)
        .await?;
    println!("case {case} is now at version {}", updated.version);

    println!("\n{case}, oldest first:");
    for e in store
        .read_stream(&case, Direction::Forward, StreamVersion::START, 100)
        .await?
    {
        let event = BurglaryEvent::from_recorded(&e)?;
        let m = &e.metadata;
        println!(
            "  v{} @{} {} by {} [{}] via {}{}{}\n      {:?}",
            e.version,
            e.position,
            e.recorded,
            m.actor,
            m.classification,
            m.source.system,
            m.source
                .reference
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default(),
            m.reason
                .as_deref()
                .map(|r| format!(" because: {r}"))
                .unwrap_or_default(),
            event,
        );
    }

    println!("\nthe same events, as a live subscriber saw them:");
    for _ in 0..4 {
        let e = live.next().await?;
        println!("  @{} {} {}", e.position, e.stream, e.event_type);
    }

    let all = store
        .read_all(&tenant, GlobalPosition::START, 10_000)
        .await?;
    println!(
        "\n{} events for tenant {tenant} in {dir} (run again: they are still there)",
        all.len()
    );
    store.close().await?;
    Ok(())
}
