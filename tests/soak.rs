//! The soak of issue 24 (`casebook soak`), short: its mixed load runs on a
//! fresh data directory without errors, reports every interval and the
//! summary line, and keeps the derived state on disk within a regression
//! guard (see [`DERIVED_GUARD`]) — not yet the bounds.

use std::time::Duration;

use casebook_service::soak::{run, SoakConfig};

/// How long the load runs (debug build: about 50,000 commands here).
const LOAD: Duration = Duration::from_secs(20);

/// Derived state (projections, stream index, snapshots) on disk at most
/// this many times the log, plus [`SEGMENT_SLACK`]. Not issue 24's bound
/// (2x the log, and the stream index 0.25x), which 20 seconds cannot show:
/// sled cleans old versions only once segments fill, so a short run is
/// amplified most. Measured in this test on a 2-core VM: 2.45x, 2.70x and
/// 2.53x (index 0.74x, 0.67x, 0.57x); with the index on 512 KiB segments
/// 2.34x (index 0.58x); before the 4 MiB segments and 100 ms commits,
/// a release soak held 5.7x the log after 30 seconds.
const DERIVED_GUARD: f64 = 3.5;
/// sled allocates its files in segments (4 MiB for the projections and
/// snapshots, 512 KiB for the index): a few partly filled ones per database
/// (three databases) whatever the load.
const SEGMENT_SLACK: u64 = 3 * 3 * (4 << 20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_soak_runs_its_mixed_load_and_reports_the_disk_it_took() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut lines = Vec::new();
    let summary = run(SoakConfig::new(&data, LOAD), |l| lines.push(l.to_string()))
        .await
        .unwrap();
    assert_eq!(lines.len(), 10, "a line every tenth of the run: {lines:#?}");
    assert!(lines.iter().all(|l| l.starts_with("soak: interval")));
    assert_eq!(summary.errors(), 0, "{lines:#?}");
    assert!(summary.commands() > 100, "{}", summary.line());
    assert!(summary.intervals.iter().all(|i| i.queries.count() > 0));
    let line = summary.line();
    // Shown with --nocapture: what a failed bound is compared with.
    for l in &lines {
        eprintln!("{l}");
    }
    eprintln!("{line}");
    assert!(line.starts_with("soak: 0.33 min, "), "{line}");
    for part in [
        "derived",
        "x log; index",
        "anon RSS",
        "cmd/s",
        "cmd p99",
        "query p99",
    ] {
        assert!(line.contains(part), "{line}");
    }
    let disk = summary.disk;
    assert!(
        disk.log > 0 && disk.projections > 0 && disk.index > 0,
        "{disk:?}"
    );
    let guard = (disk.log as f64 * DERIVED_GUARD) as u64 + SEGMENT_SLACK;
    assert!(disk.derived() <= guard, "{disk:?} over {guard}: {line}");
    // A soak refuses a directory that holds anything.
    assert!(run(SoakConfig::new(&data, LOAD), |_| {}).await.is_err());
}
