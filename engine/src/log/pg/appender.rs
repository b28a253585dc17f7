//! The per-store appender: group commit of many callers' appends into one `cb_append` call.
//!
//! One task owns one dedicated connection. It takes the first waiting
//! request, then every request already queued (up to the batch limits),
//! sends them as one call and answers each caller with its own outcome.
//! While a call is in flight new requests queue up, so the batch grows
//! with load and a lone caller pays one round trip.
//!
//! A call that fails on the connection (or with an error worth retrying)
//! answers every caller with a retryable [`LogError::Database`]: the
//! outcome may be unknown, and retrying the same events is safe because
//! their ids make a repeated append return the original result. A call that
//! fails on a statement error (a unique constraint backstop) is replayed
//! one command per call, so only the offending command fails.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Statement};

use super::{db_error, sql, AppendStats, PgStoreConfig};
use crate::log::error::LogError;
use crate::log::types::{
    AppendResult, EventData, ExpectedVersion, GlobalPosition, StreamId, StreamVersion,
};

/// One caller's append, waiting for the appender.
pub(crate) struct Request {
    pub(crate) stream: StreamId,
    pub(crate) expected: ExpectedVersion,
    pub(crate) events: Vec<EventData>,
    /// The events' metadata, encoded by the caller (off the appender's
    /// task) as runs: bytes and how many consecutive events share them.
    pub(crate) metadata: Vec<(Vec<u8>, usize)>,
    pub(crate) reply: oneshot::Sender<Result<Outcome, LogError>>,
}

/// What became of one command of a batch.
pub(crate) enum Outcome {
    /// Appended at these positions.
    Appended(AppendResult),
    /// Refused: the stream is at this version.
    Conflict(Option<StreamVersion>),
    /// Some of its event ids are stored already; the events come back so
    /// that the caller can tell a retry from a reused id.
    Stored(Vec<EventData>),
}

/// Counters behind [`super::PgEventStore::append_stats`].
#[derive(Default)]
pub(crate) struct Stats {
    transactions: AtomicU64,
    commands: AtomicU64,
    events: AtomicU64,
    append_micros: AtomicU64,
    lock_wait_micros: AtomicU64,
}

impl Stats {
    pub(crate) fn snapshot(&self) -> AppendStats {
        AppendStats {
            transactions: self.transactions.load(Ordering::Relaxed),
            commands: self.commands.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
            append_micros: self.append_micros.load(Ordering::Relaxed),
            lock_wait_micros: self.lock_wait_micros.load(Ordering::Relaxed),
        }
    }
}

/// Starts the appender task; requests go into the returned sender.
pub(crate) fn start(
    config: PgStoreConfig,
    head: Arc<watch::Sender<Option<GlobalPosition>>>,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) -> Result<mpsc::Sender<Request>, LogError> {
    let pg = config.pg_config("appender")?;
    let (tx, mut rx) = mpsc::channel::<Request>(config.max_batch_commands.max(1) * 4);
    tokio::spawn(async move {
        let mut appender = Appender {
            config,
            pg,
            connection: None,
            head,
            stats,
        };
        let mut pending: Option<Request> = None;
        loop {
            let first = match pending.take() {
                Some(r) => r,
                None => tokio::select! {
                    r = rx.recv() => match r { Some(r) => r, None => break },
                    _ = stop.changed() => break,
                },
            };
            let mut batch = vec![first];
            let mut events = batch[0].events.len();
            while batch.len() < appender.config.max_batch_commands {
                match rx.try_recv() {
                    Ok(r) if events + r.events.len() > appender.config.max_batch_events => {
                        pending = Some(r);
                        break;
                    }
                    Ok(r) => {
                        events += r.events.len();
                        batch.push(r);
                    }
                    Err(_) => break,
                }
            }
            appender.run(batch).await;
        }
    });
    Ok(tx)
}

struct Appender {
    config: PgStoreConfig,
    pg: tokio_postgres::Config,
    connection: Option<(Client, Statement)>,
    head: Arc<watch::Sender<Option<GlobalPosition>>>,
    stats: Arc<Stats>,
}

impl Appender {
    async fn run(&mut self, batch: Vec<Request>) {
        match self.connect().await {
            Ok(()) => {}
            Err(e) => {
                for r in batch {
                    let _ = r.reply.send(Err(e.clone_retryable()));
                }
                return;
            }
        };
        match self.call(&batch).await {
            Ok(outcomes) => self.answer(batch, outcomes),
            Err(e) if e.code().is_none() || super::retryable(&e) => {
                // The connection went or the call timed out: whether it
                // committed is unknown to us.
                let err = outcome_unknown(&e);
                self.drop_connection_if_closed();
                for r in batch {
                    let _ = r.reply.send(Err(err.clone_retryable()));
                }
            }
            Err(_) if batch.len() > 1 => {
                // A backstop aborted the whole batch: replay it one command
                // per call so that only the offender fails.
                for r in batch {
                    match self.call(std::slice::from_ref(&r)).await {
                        Ok(outcomes) => self.answer(vec![r], outcomes),
                        Err(e) => {
                            let err = statement_error(&r, &e);
                            let _ = r.reply.send(Err(err));
                        }
                    }
                }
            }
            Err(e) => {
                for r in batch {
                    let err = statement_error(&r, &e);
                    let _ = r.reply.send(Err(err));
                }
            }
        }
    }

    /// The dedicated connection and its prepared append, connecting if
    /// there is none (or it has closed).
    async fn connect(&mut self) -> Result<(), LogError> {
        if let Some((client, _)) = &self.connection {
            if !client.is_closed() {
                return Ok(());
            }
        }
        self.connection = None;
        let context = "connecting the appender to PostgreSQL";
        let (client, connection) = self
            .pg
            .connect(NoTls)
            .await
            .map_err(|e| db_error(context, &e))?;
        tokio::spawn(async move {
            // Ends when the client is dropped or the server goes.
            let _ = connection.await;
        });
        if self.config.append_delay_ms_for_tests > 0 {
            client
                .batch_execute(&format!(
                    "SET casebook.test_append_delay_ms = '{}'",
                    self.config.append_delay_ms_for_tests
                ))
                .await
                .map_err(|e| db_error(context, &e))?;
        }
        let statement = client
            .prepare(sql::APPEND)
            .await
            .map_err(|e| db_error(context, &e))?;
        self.connection = Some((client, statement));
        Ok(())
    }

    fn drop_connection_if_closed(&mut self) {
        if self
            .connection
            .as_ref()
            .is_some_and(|(client, _)| client.is_closed())
        {
            self.connection = None;
        }
    }

    /// One `cb_append` call for `batch`: one outcome per request, in order.
    /// Only called after [`Appender::connect`] succeeded.
    async fn call(&self, batch: &[Request]) -> Result<Vec<Outcome>, tokio_postgres::Error> {
        let Some((client, statement)) = &self.connection else {
            return Ok(Vec::new());
        };
        let mut streams = Vec::with_capacity(batch.len());
        let mut tenants = Vec::with_capacity(batch.len());
        let mut expected = Vec::with_capacity(batch.len());
        let mut counts = Vec::with_capacity(batch.len());
        let events: usize = batch.iter().map(|r| r.events.len()).sum();
        let mut ids = Vec::with_capacity(events);
        let mut types = Vec::with_capacity(events);
        let mut metadata: Vec<&[u8]> = Vec::with_capacity(events);
        let mut payloads: Vec<&[u8]> = Vec::with_capacity(events);
        for r in batch {
            streams.push(r.stream.to_string());
            tenants.push(r.stream.tenant().as_str());
            expected.push(match r.expected {
                ExpectedVersion::Any => -1i64,
                ExpectedVersion::NoStream => -2,
                ExpectedVersion::StreamExists => -3,
                ExpectedVersion::Exact(v) => i64::try_from(v.0).unwrap_or(i64::MAX),
            });
            counts.push(r.events.len() as i32);
            for (bytes, n) in &r.metadata {
                metadata.extend(std::iter::repeat_n(bytes.as_slice(), *n));
            }
            for e in &r.events {
                ids.push(e.id.0);
                types.push(e.event_type.as_str());
                payloads.push(&e.payload);
            }
        }
        let recorded = self.config.clock.now().as_micros();
        let started = Instant::now();
        let rows = client
            .query(
                statement,
                &[
                    &streams,
                    &tenants,
                    &expected,
                    &counts,
                    &ids,
                    &types,
                    &metadata,
                    &payloads,
                    &recorded,
                    &self.config.naive_order_for_tests,
                ],
            )
            .await?;
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.stats.transactions.fetch_add(1, Ordering::Relaxed);
        self.stats
            .commands
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.stats
            .append_micros
            .fetch_add(micros, Ordering::Relaxed);
        if let Some(row) = rows.first() {
            let waited: i64 = row.get(3);
            self.stats
                .lock_wait_micros
                .fetch_add(u64::try_from(waited).unwrap_or(0), Ordering::Relaxed);
        }
        Ok(rows
            .iter()
            .map(|row| {
                let status: i32 = row.get(0);
                let first: Option<i64> = row.get(1);
                let version: Option<i64> = row.get(2);
                match (status, first, version) {
                    (0, Some(first), Some(version)) => Outcome::Appended(AppendResult {
                        first_position: GlobalPosition(first as u64),
                        last_position: GlobalPosition(0),
                        version: StreamVersion(version as u64),
                    }),
                    (1, _, actual) => Outcome::Conflict(actual.map(|v| StreamVersion(v as u64))),
                    _ => Outcome::Stored(Vec::new()),
                }
            })
            .collect())
    }

    fn answer(&self, batch: Vec<Request>, outcomes: Vec<Outcome>) {
        let mut head = None;
        for (r, outcome) in batch.into_iter().zip(outcomes) {
            let outcome = match outcome {
                Outcome::Appended(mut result) => {
                    let n = r.events.len() as u64;
                    result.last_position = GlobalPosition(result.first_position.0 + n - 1);
                    head = head.max(Some(result.last_position));
                    self.stats.events.fetch_add(n, Ordering::Relaxed);
                    Outcome::Appended(result)
                }
                Outcome::Stored(_) => Outcome::Stored(r.events),
                conflict => conflict,
            };
            let _ = r.reply.send(Ok(outcome));
        }
        if head.is_some() && !self.config.naive_order_for_tests {
            self.head.send_if_modified(|h| {
                if head > *h {
                    *h = head;
                    true
                } else {
                    false
                }
            });
        }
    }
}

fn outcome_unknown(e: &tokio_postgres::Error) -> LogError {
    let mut err = db_error("appending", e);
    if let LogError::Database { reason, .. } = &mut err {
        reason.push_str(
            "; whether the append committed is unknown: retry it with the same events \
             (their ids make a repeat return the original result)",
        );
    }
    err
}

/// A statement error for one command: a unique constraint backstop maps to
/// the error it stands for.
fn statement_error(r: &Request, e: &tokio_postgres::Error) -> LogError {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        let constraint = e.as_db_error().and_then(|d| d.constraint()).unwrap_or("");
        if constraint == "cb_events_stream_version" {
            return LogError::WrongExpectedVersion {
                stream: r.stream.clone(),
                expected: r.expected,
                actual: None,
            };
        }
        if constraint == "cb_events_event_id" {
            if let Some(first) = r.events.first() {
                return LogError::EventIdConflict {
                    event_id: first.id,
                    reason: "an event with this id was stored concurrently".into(),
                };
            }
        }
    }
    db_error("appending", e)
}

impl LogError {
    /// The same error again, for answering several callers: database
    /// errors are copied; anything else is reported as a retryable
    /// database error with its text.
    fn clone_retryable(&self) -> LogError {
        match self {
            LogError::Database {
                context,
                reason,
                retryable,
            } => LogError::Database {
                context: context.clone(),
                reason: reason.clone(),
                retryable: *retryable,
            },
            other => LogError::Database {
                context: "appending".into(),
                reason: other.to_string(),
                retryable: true,
            },
        }
    }
}
