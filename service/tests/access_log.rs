//! Every consultation of case data over the API is logged with who, which
//! case and the purpose stated — refused attempts too — on the
//! `casebook::access` log target.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use casebook_proto::v1 as pb;
use support::*;

/// Collects log lines in memory.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_reads_and_refused_attempts_are_logged_with_their_purpose() {
    let lines = Lines::default();
    let writer = lines.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("casebook::access=info"))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let server = start().await;
    let handler = token("demo", "ch-101", &["call_handler"], "SECRET");
    let low = token("demo", "dc-low", &["investigator"], "OFFICIAL");
    let secret = server
        .cases(&handler)
        .open_case(pb::OpenCaseRequest {
            case_type: "burglary".into(),
            case_file: Some(burglary_report()),
            classification: pb::Classification::Secret as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    server
        .cases(&handler)
        .get_case(pb::GetCaseRequest {
            case_id: secret.case_id.clone(),
            consistency: after(&secret),
            purpose: "victim update call".into(),
        })
        .await
        .unwrap();
    let mut request = tonic::Request::new(pb::GetCaseRequest {
        case_id: secret.case_id.clone(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-casebook-purpose", "curiosity".parse().unwrap());
    let mut low_cases = server.cases(&low);
    assert!(low_cases.get_case(request).await.is_err());
    server.running.stop().await.unwrap();

    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let read = text
        .lines()
        .find(|l| l.contains("subject=ch-101") && l.contains("what=\"case\""))
        .unwrap_or_else(|| panic!("no read logged:\n{text}"));
    assert!(
        read.contains(&secret.case_id)
            && read.contains("victim update call")
            && read.contains("outcome=Ok"),
        "{read}"
    );
    let refused = text
        .lines()
        .find(|l| l.contains("subject=dc-low"))
        .unwrap_or_else(|| panic!("no refused attempt logged:\n{text}"));
    assert!(
        refused.contains("curiosity") && refused.contains("outcome=NotFound"),
        "{refused}"
    );
}
