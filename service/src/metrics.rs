//! Prometheus metrics over HTTP (`GET /metrics`): gRPC requests by method
//! and status with a latency histogram (a tower layer in front of every
//! service), and, read at scrape time, the log's head position, each
//! projection's lag, the orchestration backlog and what opening the data
//! directory recovered (tail cut, derived stores rebuilt). Counts only: no case
//! data, ids or tenant-identifying values beyond tenant names.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use casebook_engine::engine::Engine;
use casebook_engine::security::Principal;
use http_body_util::Full;
use hyper::body::Bytes;
use tokio::net::TcpListener;

/// Upper bounds of the latency histogram's buckets, seconds.
const BUCKETS: [f64; 12] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default, Clone)]
struct Series {
    count: u64,
    sum: f64,
    buckets: [u64; BUCKETS.len()],
}

/// The request counters, shared by the layer and the exporter.
#[derive(Clone, Default)]
pub struct Metrics {
    series: Arc<Mutex<BTreeMap<(String, &'static str), Series>>>,
}

/// The name of a gRPC status code as Prometheus labels show it.
fn code_name(code: &str) -> &'static str {
    match code.parse::<i32>().map(tonic::Code::from) {
        Ok(tonic::Code::Ok) => "OK",
        Ok(tonic::Code::Cancelled) => "CANCELLED",
        Ok(tonic::Code::InvalidArgument) => "INVALID_ARGUMENT",
        Ok(tonic::Code::DeadlineExceeded) => "DEADLINE_EXCEEDED",
        Ok(tonic::Code::NotFound) => "NOT_FOUND",
        Ok(tonic::Code::AlreadyExists) => "ALREADY_EXISTS",
        Ok(tonic::Code::PermissionDenied) => "PERMISSION_DENIED",
        Ok(tonic::Code::ResourceExhausted) => "RESOURCE_EXHAUSTED",
        Ok(tonic::Code::FailedPrecondition) => "FAILED_PRECONDITION",
        Ok(tonic::Code::Aborted) => "ABORTED",
        Ok(tonic::Code::OutOfRange) => "OUT_OF_RANGE",
        Ok(tonic::Code::Unimplemented) => "UNIMPLEMENTED",
        Ok(tonic::Code::Internal) => "INTERNAL",
        Ok(tonic::Code::Unavailable) => "UNAVAILABLE",
        Ok(tonic::Code::DataLoss) => "DATA_LOSS",
        Ok(tonic::Code::Unauthenticated) => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

impl Metrics {
    fn record(&self, method: String, code: &'static str, seconds: f64) {
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let s = series.entry((method, code)).or_default();
        s.count += 1;
        s.sum += seconds;
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                s.buckets[i] += 1;
            }
        }
    }

    /// The exposition text: request series, then the engine's gauges.
    pub fn render(&self, engine: &Engine) -> String {
        let mut out = String::new();
        let series = self
            .series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        out.push_str("# HELP casebook_grpc_requests_total gRPC requests by method and status.\n");
        out.push_str("# TYPE casebook_grpc_requests_total counter\n");
        for ((method, code), s) in &series {
            let _ = writeln!(
                out,
                "casebook_grpc_requests_total{{method=\"{method}\",code=\"{code}\"}} {}",
                s.count
            );
        }
        out.push_str(
            "# HELP casebook_grpc_request_duration_seconds Time to the response's headers.\n",
        );
        out.push_str("# TYPE casebook_grpc_request_duration_seconds histogram\n");
        for ((method, code), s) in &series {
            let labels = format!("method=\"{method}\",code=\"{code}\"");
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "casebook_grpc_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {}",
                    s.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "casebook_grpc_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "casebook_grpc_request_duration_seconds_sum{{{labels}}} {}",
                s.sum
            );
            let _ = writeln!(
                out,
                "casebook_grpc_request_duration_seconds_count{{{labels}}} {}",
                s.count
            );
        }
        // The metrics endpoint is the operator's: it reads the whole log's
        // head and every tenant's lag as a platform administrator.
        let operator = Principal::platform_administrator("casebook-metrics");
        let Ok(store) = engine.store(&operator) else {
            return out;
        };
        out.push_str(
            "# HELP casebook_log_head_position Global position of the last event appended.\n",
        );
        out.push_str("# TYPE casebook_log_head_position gauge\n");
        let _ = writeln!(
            out,
            "casebook_log_head_position {}",
            store.head_position().map_or(0, |p| p.0)
        );
        if let Ok(host) = engine.projections(&operator) {
            out.push_str("# HELP casebook_projection_lag_events Events of the tenant's log a projection has not applied.\n");
            out.push_str("# TYPE casebook_projection_lag_events gauge\n");
            for tenant in host.known_tenants() {
                for s in host.running_status(&tenant) {
                    let _ = writeln!(
                        out,
                        "casebook_projection_lag_events{{tenant=\"{tenant}\",projection=\"{}\"}} {}",
                        s.projection, s.lag
                    );
                }
            }
        }
        // What opening the data directory had to do (also logged then).
        if let Ok(report) = engine.recovery_report(&operator) {
            out.push_str("# HELP casebook_recovery_tail_bytes_cut Bytes cut from the log's torn tail when it was opened.\n");
            out.push_str("# TYPE casebook_recovery_tail_bytes_cut gauge\n");
            let _ = writeln!(
                out,
                "casebook_recovery_tail_bytes_cut {}",
                report.tail_bytes_cut
            );
            out.push_str("# HELP casebook_recovery_tail_records_cut Records cut from the log's torn tail when it was opened.\n");
            out.push_str("# TYPE casebook_recovery_tail_records_cut gauge\n");
            let _ = writeln!(
                out,
                "casebook_recovery_tail_records_cut {}",
                report.tail_records_cut
            );
            out.push_str("# HELP casebook_derived_store_rebuilt_at_open Derived stores set aside and rebuilt from the log when it was opened (damaged, ahead of the log, or of another log).\n");
            out.push_str("# TYPE casebook_derived_store_rebuilt_at_open gauge\n");
            for store in ["index", "projections", "snapshots"] {
                let rebuilt = report.rebuilt.iter().any(|r| r.store == store);
                let _ = writeln!(
                    out,
                    "casebook_derived_store_rebuilt_at_open{{store=\"{store}\"}} {}",
                    u8::from(rebuilt)
                );
            }
        }
        if let Ok(replaced) = engine.derived_rebuilds(&operator) {
            out.push_str("# HELP casebook_derived_store_replaced_total Derived stores set aside and rebuilt from the log while the engine ran (damage found by a read, a database that stopped taking writes).\n");
            out.push_str("# TYPE casebook_derived_store_replaced_total counter\n");
            for store in ["projections", "snapshots"] {
                let count = replaced.iter().filter(|r| r.store == store).count();
                let _ = writeln!(
                    out,
                    "casebook_derived_store_replaced_total{{store=\"{store}\"}} {count}"
                );
            }
        }
        out.push_str("# HELP casebook_cache_budget_bytes The page-cache budget of each of the engine's sled databases.\n");
        out.push_str("# TYPE casebook_cache_budget_bytes gauge\n");
        for (cache, bytes) in engine.cache_budget().by_name() {
            let _ = writeln!(
                out,
                "casebook_cache_budget_bytes{{cache=\"{cache}\"}} {bytes}"
            );
        }
        let backlog = engine.orchestration_backlog();
        out.push_str("# HELP casebook_orchestration_pending_invocations Service invocations due, waiting to retry or leased.\n");
        out.push_str("# TYPE casebook_orchestration_pending_invocations gauge\n");
        let _ = writeln!(
            out,
            "casebook_orchestration_pending_invocations {}",
            backlog.invocations
        );
        out.push_str("# HELP casebook_orchestration_pending_timers Running SLA timers.\n");
        out.push_str("# TYPE casebook_orchestration_pending_timers gauge\n");
        let _ = writeln!(
            out,
            "casebook_orchestration_pending_timers {}",
            backlog.timers
        );
        out
    }
}

/// The tower layer that counts and times every gRPC request.
#[derive(Clone)]
pub struct MetricsLayer(pub Metrics);

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// [`MetricsLayer`]'s service.
#[derive(Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, B, R> tower::Service<http::Request<B>> for MetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().to_string();
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await;
            if let Ok(r) = &response {
                // A unary call's status is in the headers when it failed
                // before answering; otherwise it follows in the trailers
                // of a 200, counted as OK here.
                let code = match r.headers().get("grpc-status").and_then(|v| v.to_str().ok()) {
                    Some(c) => code_name(c),
                    None if r.status().is_success() => "OK",
                    None => "UNKNOWN",
                };
                metrics.record(method, code, started.elapsed().as_secs_f64());
            }
            response
        })
    }
}

/// Serves `GET /metrics` on `listener` until the process ends.
pub async fn serve(listener: TcpListener, metrics: Metrics, engine: Engine) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors or the like: back off, then go on.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let (metrics, engine) = (metrics.clone(), engine.clone());
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let body = (req.uri().path() == "/metrics").then(|| metrics.render(&engine));
                    async move {
                        match body {
                            Some(text) => http::Response::builder()
                                .header("content-type", "text/plain; version=0.0.4")
                                .body(Full::new(Bytes::from(text))),
                            None => http::Response::builder()
                                .status(404)
                                .body(Full::new(Bytes::from_static(b"only /metrics here\n"))),
                        }
                    }
                });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

/// Binds the metrics address.
///
/// Errors: the OS error.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
