//! [`PgEventStore`]: the event log on a shared PostgreSQL database, for N stateless engine nodes.
//!
//! Feature `postgres`. The same [`EventStore`] contract as the embedded log
//! (the conformance suite runs against both), on one table `cb_events`.
//!
//! **Order.** Every append transaction first takes one transaction-scoped
//! advisory lock, then reads the head and numbers its events after it. So
//! positions are dense, strictly increasing and in commit order: a reader
//! that has seen position `p` committed has seen every position below it,
//! and asking for "everything after my checkpoint" never skips an event
//! that commits late (the bug of sequence positions, which are taken at
//! insert but become visible at commit). The lock is released when the
//! transaction ends — at once if the node holding it dies, since the server
//! rolls back the transaction of a closed connection.
//!
//! **Group commit.** One appender task per store, on a dedicated
//! connection, drains the queue of waiting appends into one `cb_append`
//! call (one round trip, arrays of events). Expected versions and event ids
//! are checked exactly under the lock, command by command, so a conflicting
//! command is refused alone; the unique constraints on (stream, version) and
//! on the event id stay as backstops (a batch they abort is replayed one
//! command at a time, so only the offending command fails).
//!
//! **Head.** The store's head moves with its own appends and with other
//! nodes' commits, learnt from `LISTEN cb_events` (a doorbell carrying the
//! new head) and from polling as a fallback; after a reconnect the head is
//! read again, so a notification lost while disconnected loses nothing.

mod appender;
mod cluster;
mod head;
mod sql;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, Row};

use super::append::{find_duplicate, Limits};
use super::error::LogError;
use super::types::{
    AppendResult, Direction, EventData, EventId, ExpectedVersion, GlobalPosition, Metadata,
    RecordedEvent, StreamId, StreamVersion, TenantId,
};
use super::EventStore;
use crate::time::{Clock, Timestamp};

pub use cluster::{TestCluster, TestClusterError, TestClusterOptions};

/// Settings of a [`PgEventStore`].
#[derive(Clone)]
pub struct PgStoreConfig {
    /// A libpq-style connection string or `postgres://` URL.
    pub url: String,
    /// Most pooled connections for reads (the appender and the listener
    /// each keep one more, dedicated). Default 8.
    pub pool_size: usize,
    /// Most commands the appender puts in one transaction. Default 256.
    pub max_batch_commands: usize,
    /// Most events the appender puts in one transaction (a single larger
    /// command still goes alone). Default 4,096.
    pub max_batch_events: usize,
    /// How long an append waits for the append lock before failing with a
    /// retryable error. Default 5 s.
    pub lock_timeout: Duration,
    /// Longest any statement may run. Default 30 s.
    pub statement_timeout: Duration,
    /// How often the head is read when no notification arrives — the
    /// fallback should notifications be lost. Default 500 ms.
    pub poll_interval: Duration,
    /// The store's limits.
    pub limits: Limits,
    /// Stamps `recorded` (never earlier than the event before it in the log).
    pub clock: Arc<dyn Clock>,
    /// Test-only: append without the lock, positions from a sequence — the
    /// naive order that skips late commits. The ordering tests run against
    /// it to prove they can see that bug. Never set it otherwise.
    #[doc(hidden)]
    pub naive_order_for_tests: bool,
    /// Test-only: each append transaction pauses a random time up to this
    /// many milliseconds inside the transaction (after the lock).
    #[doc(hidden)]
    pub append_delay_ms_for_tests: u32,
}

impl PgStoreConfig {
    /// Default settings for the database at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        PgStoreConfig {
            url: url.into(),
            pool_size: 8,
            max_batch_commands: 256,
            max_batch_events: 4096,
            lock_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_millis(500),
            limits: Limits::default(),
            clock: crate::time::system_clock(),
            naive_order_for_tests: false,
            append_delay_ms_for_tests: 0,
        }
    }

    /// The connection settings, with keepalives, timeouts and the
    /// application name set; `extra` session settings are sent at connect.
    fn pg_config(&self, role: &str) -> Result<tokio_postgres::Config, LogError> {
        let mut config =
            tokio_postgres::Config::from_str(&self.url).map_err(|e| LogError::Database {
                context: "reading the PostgreSQL connection string".into(),
                reason: format!("{e} (expected e.g. postgres://user@host:5432/casebook)"),
                retryable: false,
            })?;
        config
            .application_name(format!("casebook-{role}"))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(10))
            .options(format!(
                "-c statement_timeout={} -c lock_timeout={} \
                 -c idle_in_transaction_session_timeout=60000",
                self.statement_timeout.as_millis(),
                self.lock_timeout.as_millis()
            ));
        Ok(config)
    }
}

impl std::fmt::Debug for PgStoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("PgStoreConfig")
            .field("pool_size", &self.pool_size)
            .field("max_batch_commands", &self.max_batch_commands)
            .field("max_batch_events", &self.max_batch_events)
            .field("lock_timeout", &self.lock_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("poll_interval", &self.poll_interval)
            .finish_non_exhaustive()
    }
}

/// The event store on PostgreSQL. Cheap to clone; clones share the pool,
/// the appender and the head.
#[derive(Clone)]
pub struct PgEventStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    appender: mpsc::Sender<appender::Request>,
    head: Arc<watch::Sender<Option<GlobalPosition>>>,
    identity: Arc<OnceLock<EventId>>,
    limits: Limits,
    stats: Arc<appender::Stats>,
    /// Tells the background tasks to stop when the last clone is dropped.
    _stop: watch::Sender<bool>,
}

impl PgEventStore {
    /// Connects, applies the schema migrations this build knows and starts
    /// the appender and the head listener on the current tokio runtime.
    ///
    /// Errors: [`LogError::Database`] if the server cannot be reached, the
    /// URL is malformed, a migration fails, or the database's schema is
    /// newer than this build.
    pub async fn connect(config: PgStoreConfig) -> Result<Self, LogError> {
        let pool_config = config.pg_config("reader")?;
        let pool = Pool::builder(Manager::from_config(
            pool_config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        ))
        .max_size(config.pool_size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(config.statement_timeout))
        .create_timeout(Some(Duration::from_secs(10)))
        .build()
        .map_err(|e| LogError::Database {
            context: "building the connection pool".into(),
            reason: e.to_string(),
            retryable: false,
        })?;
        let client = pool
            .get()
            .await
            .map_err(|e| pool_error("connecting to PostgreSQL", e))?;
        migrate(&client).await?;
        let head_now = read_head(&client).await?;
        drop(client);

        let head = Arc::new(watch::channel(head_now).0);
        let identity = Arc::new(OnceLock::new());
        let (stop, stopped) = watch::channel(false);
        let stats = Arc::new(appender::Stats::default());
        let appender = appender::start(
            config.clone(),
            Arc::clone(&head),
            Arc::clone(&stats),
            stopped.clone(),
        )?;
        head::start(&config, Arc::clone(&head), stopped)?;
        let store = PgEventStore {
            inner: Arc::new(Inner {
                pool,
                appender,
                head,
                identity,
                limits: config.limits,
                stats,
                _stop: stop,
            }),
        };
        store.load_identity().await?;
        Ok(store)
    }

    /// Appender figures since the store opened: transactions, commands and
    /// events committed, and time spent in `cb_append` (lock wait included).
    pub fn append_stats(&self) -> AppendStats {
        self.inner.stats.snapshot()
    }

    /// Whether the database answers (for health checks).
    ///
    /// Errors: [`LogError::Database`] if it does not.
    pub async fn ping(&self) -> Result<(), LogError> {
        let client = self.client("checking the database").await?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| db_error("checking the database", &e))?;
        Ok(())
    }

    /// A 32-byte secret every node of the deployment shares, under `name`:
    /// made (random) by the first node that asks, read by the others. For
    /// example the position-token secret of `Engine::node_on_shared_store`.
    ///
    /// Errors: [`LogError::Database`]; a stored value of the wrong length.
    pub async fn shared_secret(&self, name: &str) -> Result<[u8; 32], LogError> {
        let context = "reading a shared secret";
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh).map_err(|e| LogError::Database {
            context: context.into(),
            reason: format!("the random generator failed: {e}"),
            retryable: true,
        })?;
        let mut rows = Vec::new();
        // A node inserting at the same moment commits after this
        // statement's snapshot was taken: the second attempt sees its value.
        for _ in 0..2 {
            rows = self
                .query(context, sql::SHARED_SECRET, &[&name, &fresh.as_slice()])
                .await?;
            if !rows.is_empty() {
                break;
            }
        }
        let stored: &[u8] = rows.first().map(|r| r.get(0)).unwrap_or_default();
        <[u8; 32]>::try_from(stored).map_err(|_| LogError::Database {
            context: context.into(),
            reason: format!(
                "cb_meta holds {} bytes under {name:?}, not 32",
                stored.len()
            ),
            retryable: false,
        })
    }

    async fn client(&self, context: &str) -> Result<deadpool_postgres::Object, LogError> {
        self.inner
            .pool
            .get()
            .await
            .map_err(|e| pool_error(context, e))
    }

    /// Runs one statement on a pooled connection (prepared once per
    /// connection) — for the engine's other tables on this database.
    ///
    /// Errors: [`LogError::Database`].
    pub(crate) async fn query(
        &self,
        context: &str,
        statement: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, LogError> {
        let client = self.client(context).await?;
        let prepared = client
            .prepare_cached(statement)
            .await
            .map_err(|e| db_error(context, &e))?;
        client
            .query(&prepared, params)
            .await
            .map_err(|e| db_error(context, &e))
    }

    async fn load_identity(&self) -> Result<(), LogError> {
        if self.inner.identity.get().is_some() {
            return Ok(());
        }
        let rows = self
            .query("reading the first event", sql::FIRST_EVENT, &[])
            .await?;
        if let Some(row) = rows.first() {
            let id: uuid::Uuid = row.get(0);
            let _ = self.inner.identity.set(EventId(id));
        }
        Ok(())
    }

    async fn read_ids(&self, ids: &[EventId]) -> Result<Vec<RecordedEvent>, LogError> {
        let ids: Vec<uuid::Uuid> = ids.iter().map(|i| i.0).collect();
        let rows = self
            .query("reading events by id", &sql::read_by_ids(), &[&ids])
            .await?;
        decode_rows(&rows)
    }
}

/// Appender figures: see [`PgEventStore::append_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppendStats {
    /// Transactions committed (batches).
    pub transactions: u64,
    /// Commands in them (appended, refused or found to be retries).
    pub commands: u64,
    /// Events appended.
    pub events: u64,
    /// Microseconds spent in `cb_append` calls (round trip included),
    /// lock wait included.
    pub append_micros: u64,
    /// Microseconds of that spent waiting for the append lock (measured
    /// by the server): the cost of serialising appends across nodes.
    pub lock_wait_micros: u64,
}

#[async_trait]
impl EventStore for PgEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, LogError> {
        self.inner.limits.check_append(stream, &events)?;
        let mut metadata: Vec<(Vec<u8>, usize)> = Vec::new();
        for (i, e) in events.iter().enumerate() {
            if i > 0 && events[i - 1].metadata == e.metadata {
                if let Some(run) = metadata.last_mut() {
                    run.1 += 1;
                    continue;
                }
            }
            metadata.push((encode_metadata(&e.metadata)?, 1));
        }
        let (reply, answer) = oneshot::channel();
        self.inner
            .appender
            .send(appender::Request {
                stream: stream.clone(),
                expected,
                events,
                metadata,
                reply,
            })
            .await
            .map_err(|_| LogError::Closed)?;
        let outcome = answer.await.map_err(|_| LogError::Closed)??;
        match outcome {
            appender::Outcome::Appended(result) => {
                if self.inner.identity.get().is_none() {
                    self.load_identity().await?;
                }
                Ok(result)
            }
            appender::Outcome::Conflict(actual) => Err(LogError::WrongExpectedVersion {
                stream: stream.clone(),
                expected,
                actual,
            }),
            appender::Outcome::Stored(events) => {
                // Some ids are stored: a retry (the original result) or a
                // reused id (a conflict), decided as every store decides.
                let ids: Vec<EventId> = events.iter().map(|e| e.id).collect();
                let stored: HashMap<EventId, RecordedEvent> = self
                    .read_ids(&ids)
                    .await?
                    .into_iter()
                    .map(|e| (e.id, e))
                    .collect();
                match find_duplicate(stream, &events, |id| Ok(stored.get(&id).cloned()))? {
                    Some(original) => Ok(original),
                    // Stored a moment ago and gone now cannot happen in an
                    // append-only table; say so rather than guess.
                    None => Err(LogError::Database {
                        context: "checking a retried append".into(),
                        reason: "events reported stored were not found".into(),
                        retryable: true,
                    }),
                }
            }
        }
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        direction: Direction,
        from: StreamVersion,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        self.inner.limits.check_read(limit)?;
        let name = stream.to_string();
        let limit = limit as i64;
        let rows = match direction {
            Direction::Forward => {
                let Ok(from) = i64::try_from(from.0) else {
                    return Ok(Vec::new());
                };
                self.query(
                    "reading a stream",
                    &sql::read_forward(),
                    &[&name, &from, &limit],
                )
                .await?
            }
            Direction::Backward => {
                let from = i64::try_from(from.0).unwrap_or(i64::MAX);
                self.query(
                    "reading a stream backwards",
                    &sql::read_backward(),
                    &[&name, &from, &limit],
                )
                .await?
            }
        };
        decode_rows(&rows)
    }

    async fn read_all(
        &self,
        tenant: &TenantId,
        from: GlobalPosition,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        self.inner.limits.check_read(limit)?;
        let Ok(from) = i64::try_from(from.0) else {
            return Ok(Vec::new());
        };
        let rows = self
            .query(
                "reading the log",
                &sql::read_all(),
                &[&tenant.as_str(), &from, &(limit as i64)],
            )
            .await?;
        decode_rows(&rows)
    }

    async fn read_event(&self, id: EventId) -> Result<Option<RecordedEvent>, LogError> {
        Ok(self.read_ids(&[id]).await?.into_iter().next())
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<StreamVersion>, LogError> {
        let rows = self
            .query(
                "reading a stream's version",
                sql::STREAM_VERSION,
                &[&stream.to_string()],
            )
            .await?;
        let version: Option<i64> = rows.first().and_then(|r| r.get(0));
        Ok(version.map(|v| StreamVersion(v as u64)))
    }

    fn head_position(&self) -> Option<GlobalPosition> {
        *self.inner.head.borrow()
    }

    fn identity(&self) -> Option<EventId> {
        self.inner.identity.get().copied()
    }

    fn watch_head(&self) -> watch::Receiver<Option<GlobalPosition>> {
        self.inner.head.subscribe()
    }

    fn limits(&self) -> Limits {
        self.inner.limits
    }

    fn to_dyn(&self) -> Arc<dyn EventStore> {
        Arc::new(self.clone())
    }
}

/// Applies the migrations the database lacks, under a session advisory
/// lock, each in its own transaction.
async fn migrate(client: &tokio_postgres::Client) -> Result<(), LogError> {
    let context = "applying the schema migrations";
    let fail = |e: tokio_postgres::Error| db_error(context, &e);
    client
        .query("SELECT pg_advisory_lock($1)", &[&sql::MIGRATION_LOCK_KEY])
        .await
        .map_err(fail)?;
    let result = async {
        client
            .batch_execute(sql::CREATE_MIGRATIONS)
            .await
            .map_err(fail)?;
        let applied: i32 = client
            .query_one(sql::APPLIED_VERSION, &[])
            .await
            .map_err(fail)?
            .get(0);
        let known = sql::MIGRATIONS.len() as i32;
        if applied > known {
            return Err(LogError::Database {
                context: context.into(),
                reason: format!(
                    "the database's schema is at version {applied}; this build knows up to \
                     {known} (upgrade Casebook)"
                ),
                retryable: false,
            });
        }
        for (i, (name, script)) in sql::MIGRATIONS.iter().enumerate().skip(applied as usize) {
            let version = i as i32 + 1;
            let script = format!("BEGIN;\n{script}\nCOMMIT;");
            if let Err(e) = client.batch_execute(&script).await {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(LogError::Database {
                    context: format!("applying schema migration {version} ({name})"),
                    reason: e.to_string(),
                    retryable: false,
                });
            }
            client
                .execute(sql::RECORD_MIGRATION, &[&version, name])
                .await
                .map_err(fail)?;
        }
        Ok(())
    }
    .await;
    let unlocked = client
        .query("SELECT pg_advisory_unlock($1)", &[&sql::MIGRATION_LOCK_KEY])
        .await;
    result?;
    unlocked.map_err(fail)?;
    Ok(())
}

async fn read_head(client: &tokio_postgres::Client) -> Result<Option<GlobalPosition>, LogError> {
    let row = client
        .query_one(sql::HEAD, &[])
        .await
        .map_err(|e| db_error("reading the head", &e))?;
    let head: Option<i64> = row.get(0);
    Ok(head.map(|p| GlobalPosition(p as u64)))
}

/// Decodes rows of `sql::COLUMNS`, sharing stream ids, type names and
/// metadata between the events that have them in common.
fn decode_rows(rows: &[Row]) -> Result<Vec<RecordedEvent>, LogError> {
    let mut streams: HashMap<&str, StreamId> = HashMap::new();
    let mut types: HashMap<&str, Arc<str>> = HashMap::new();
    let mut metas: HashMap<&[u8], Arc<Metadata>> = HashMap::new();
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let position: i64 = row.get(0);
        let bad = |reason: String| LogError::Database {
            context: format!("decoding the event at position {position}"),
            reason,
            retryable: false,
        };
        let stream_text: &str = row.get(1);
        let stream = match streams.get(stream_text) {
            Some(s) => s.clone(),
            None => {
                let s = StreamId::from_str(stream_text).map_err(|e| bad(e.to_string()))?;
                streams.insert(stream_text, s.clone());
                s
            }
        };
        let type_text: &str = row.get(4);
        let event_type = Arc::clone(
            types
                .entry(type_text)
                .or_insert_with(|| Arc::from(type_text)),
        );
        let meta_bytes: &[u8] = row.get(6);
        let metadata = match metas.get(meta_bytes) {
            Some(m) => Arc::clone(m),
            None => {
                let m = Arc::new(decode_metadata(meta_bytes).map_err(bad)?);
                metas.insert(meta_bytes, Arc::clone(&m));
                m
            }
        };
        let version: i64 = row.get(2);
        let id: uuid::Uuid = row.get(3);
        let recorded: i64 = row.get(5);
        let payload: &[u8] = row.get(7);
        out.push(RecordedEvent {
            stream,
            version: StreamVersion(version as u64),
            position: GlobalPosition(position as u64),
            recorded: Timestamp(recorded),
            id: EventId(id),
            event_type,
            payload: Bytes::copy_from_slice(payload),
            metadata,
        });
    }
    Ok(out)
}

/// The format byte leading every stored metadata value.
const METADATA_FORMAT: u8 = 1;

fn encode_metadata(metadata: &Metadata) -> Result<Vec<u8>, LogError> {
    let mut out = vec![METADATA_FORMAT];
    rmp_serde::encode::write_named(&mut out, metadata).map_err(|e| LogError::Database {
        context: "encoding event metadata".into(),
        reason: e.to_string(),
        retryable: false,
    })?;
    Ok(out)
}

fn decode_metadata(bytes: &[u8]) -> Result<Metadata, String> {
    match bytes.split_first() {
        Some((&METADATA_FORMAT, rest)) => {
            rmp_serde::from_slice(rest).map_err(|e| format!("metadata: {e}"))
        }
        Some((other, _)) => Err(format!(
            "metadata has format {other}; this build reads {METADATA_FORMAT} (upgrade Casebook)"
        )),
        None => Err("metadata is empty".into()),
    }
}

/// Whether a failed statement is worth retrying as it is: the connection
/// went, the server is shutting down or starting, a timeout, a
/// serialization failure or deadlock.
fn retryable(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        None => true,
        Some(code) => {
            code == &SqlState::LOCK_NOT_AVAILABLE
                || code == &SqlState::QUERY_CANCELED
                || code == &SqlState::ADMIN_SHUTDOWN
                || code == &SqlState::CRASH_SHUTDOWN
                || code == &SqlState::CANNOT_CONNECT_NOW
                || code == &SqlState::T_R_SERIALIZATION_FAILURE
                || code == &SqlState::T_R_DEADLOCK_DETECTED
                || code == &SqlState::TOO_MANY_CONNECTIONS
        }
    }
}

fn db_error(context: &str, e: &tokio_postgres::Error) -> LogError {
    let reason = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    };
    LogError::Database {
        context: context.into(),
        reason,
        retryable: retryable(e),
    }
}

fn pool_error(context: &str, e: deadpool_postgres::PoolError) -> LogError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => db_error(context, &e),
        other => LogError::Database {
            context: context.into(),
            reason: other.to_string(),
            retryable: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::types::{ActorId, Source};

    #[test]
    fn metadata_round_trips_and_unknown_formats_are_named() {
        let m = Metadata::new(ActorId::new("pc-1"), Source::system("test")).with_reason("why");
        let bytes = encode_metadata(&m).unwrap();
        assert_eq!(decode_metadata(&bytes).unwrap(), m);
        let mut newer = bytes.clone();
        newer[0] = 9;
        assert!(decode_metadata(&newer).unwrap_err().contains("format 9"));
        assert!(decode_metadata(&[]).is_err());
    }

    #[test]
    fn a_malformed_url_says_what_is_expected() {
        let err = PgStoreConfig::new("postgres://[::1")
            .pg_config("t")
            .unwrap_err();
        assert!(err.to_string().contains("expected e.g."), "{err}");
        assert!(!err.kind().is_retryable());
    }

    #[test]
    fn the_debug_form_hides_the_url() {
        let c = PgStoreConfig::new("postgres://u:secret@h/db");
        assert!(!format!("{c:?}").contains("secret"));
    }
}
