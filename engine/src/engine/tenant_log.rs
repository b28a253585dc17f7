//! [`TenantLog`]: the raw event log as one tenant's caller may use it — the
//! tenant-scoped handle that replaces the unscoped [`EventStore`] for
//! everyone but a platform administrator.
//!
//! Every read is of the caller's tenant only (a stream of another tenant
//! reads as empty, like a stream that does not exist); events above the
//! caller's clearance are withheld; the engine's own streams (cases,
//! definitions, calendars) are read raw only by a TOP SECRET
//! [`AUDITOR_ROLE`] (a raw case event carries every field). Appends go to
//! the caller's tenant only, never to an engine stream, under the caller's
//! own actor id and at most at their clearance, by an
//! [`INTEGRATION_ROLE`] or [`super::ADMIN_ROLE`] holder.

use std::sync::Arc;

use super::{Engine, EngineError, ADMIN_ROLE};
use crate::log::{
    AppendResult, Direction, EventData, EventStore, ExpectedVersion, GlobalPosition, LogError,
    RecordedEvent, StreamId, StreamVersion, Subscription, SubscriptionStart, TenantId,
};
use crate::security::{AccessError, Classification, PositionToken, Principal, TenantPositions};
use crate::streams::is_engine_category;

/// The role that, with TOP SECRET clearance, reads the engine's own streams raw.
pub const AUDITOR_ROLE: &str = "auditor";
/// The role that may append to the tenant's own (non-engine) streams,
/// beside administrators.
pub const INTEGRATION_ROLE: &str = "integration";

/// One tenant's raw log, as `principal` may use it
/// ([`Engine::tenant_log`]).
#[derive(Clone)]
pub struct TenantLog {
    store: Arc<dyn EventStore>,
    principal: Principal,
    positions: TenantPositions,
}

/// What [`TenantLog::append`] did: [`AppendResult`] with the tenant's
/// position tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantAppendResult {
    /// The token of the first event appended.
    pub first_position: PositionToken,
    /// The token of the last event appended (for read-your-writes).
    pub last_position: PositionToken,
    /// The stream's version after the append (the last event's version).
    pub version: StreamVersion,
}

/// A page of [`TenantLog::read_all`]: the events the caller may see, and
/// where the next page starts (past withheld events too).
#[derive(Debug, Clone)]
pub struct TenantPage {
    /// The visible events, in log order (each one's token is
    /// [`TenantLog::token`]; their `position` fields are the log's global
    /// positions, for in-process code only).
    pub events: Vec<RecordedEvent>,
    /// The position token to read from next.
    pub next: PositionToken,
}

impl Engine {
    /// The raw log of the principal's tenant, scoped to what they may see
    /// and write (see [`TenantLog`]).
    ///
    /// Errors: [`EngineError::Access`] for a bad principal or an unknown
    /// or suspended tenant.
    pub async fn tenant_log(&self, principal: &Principal) -> Result<TenantLog, EngineError> {
        self.admit(principal).await?;
        Ok(TenantLog {
            store: Arc::clone(&self.inner.store),
            principal: principal.clone(),
            positions: self.tenant_positions(&principal.tenant),
        })
    }
}

impl TenantLog {
    /// The tenant this handle reads and writes.
    pub fn tenant(&self) -> &TenantId {
        &self.principal.tenant
    }

    /// The store's limits (largest read page, event size, …).
    pub fn limits(&self) -> crate::log::Limits {
        self.store.limits()
    }

    /// Whether the caller reads the engine's own streams raw.
    pub fn reads_engine_streams(&self) -> bool {
        self.principal.has_role(AUDITOR_ROLE)
            && self.principal.clearance == Classification::TopSecret
    }

    /// Whether the caller may see `event`: their tenant's, within their
    /// clearance, and not an engine stream's unless they read those.
    pub fn visible(&self, event: &RecordedEvent) -> bool {
        event.tenant() == self.tenant()
            && self.principal.may_see(event.metadata.classification)
            && (!is_engine_category(event.stream.category()) || self.reads_engine_streams())
    }

    fn readable(&self, stream: &StreamId) -> bool {
        stream.tenant() == self.tenant()
            && (!is_engine_category(stream.category()) || self.reads_engine_streams())
    }

    /// Reads a stream of the tenant (see [`EventStore::read_stream`]); a
    /// stream the caller may not read reads as empty.
    ///
    /// Errors: [`EngineError::Log`].
    pub async fn read_stream(
        &self,
        stream: &StreamId,
        direction: Direction,
        from: StreamVersion,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, EngineError> {
        if !self.readable(stream) {
            return Ok(Vec::new());
        }
        let mut events = self
            .store
            .read_stream(stream, direction, from, limit)
            .await?;
        events.retain(|e| self.visible(e));
        Ok(events)
    }

    /// The tenant's position token of one of its events.
    ///
    /// Errors: [`AccessError::UnknownStream`] for another tenant's event;
    /// [`AccessError::PositionOutOfRange`].
    pub fn token(&self, event: &RecordedEvent) -> Result<PositionToken, AccessError> {
        if event.tenant() != self.tenant() {
            return Err(AccessError::UnknownStream {
                stream: event.stream.to_string(),
            });
        }
        self.positions.encode(event.position)
    }

    /// Reads the tenant's log from `from`, a position token the engine
    /// gave the tenant ([`PositionToken::NONE`]: from the start; see
    /// [`EventStore::read_all`]).
    ///
    /// Errors: [`EngineError::Log`]; [`EngineError::Access`] with
    /// [`AccessError::NotAPositionToken`] for another tenant's or a
    /// made-up token.
    pub async fn read_all(
        &self,
        from: PositionToken,
        limit: usize,
    ) -> Result<TenantPage, EngineError> {
        let from = self
            .positions
            .decode_opt(from, "from")?
            .unwrap_or(GlobalPosition::START);
        let mut events = self.store.read_all(self.tenant(), from, limit).await?;
        let next = events.last().map_or(from, |e| e.position.next());
        events.retain(|e| self.visible(e));
        Ok(TenantPage {
            events,
            next: self.positions.encode(next)?,
        })
    }

    /// Follows the tenant's log (after a position token the engine gave
    /// the tenant, to resume); [`TenantSubscription::next`] skips what the
    /// caller may not see.
    ///
    /// Errors: [`EngineError::Log`]; [`EngineError::Access`] with
    /// [`AccessError::NotAPositionToken`].
    pub async fn subscribe_all(
        &self,
        start: SubscriptionStart<PositionToken>,
    ) -> Result<TenantSubscription, EngineError> {
        let start = match start {
            SubscriptionStart::Beginning => SubscriptionStart::Beginning,
            SubscriptionStart::End => SubscriptionStart::End,
            SubscriptionStart::After(t) => {
                SubscriptionStart::After(self.positions.decode(t, "after")?)
            }
        };
        let inner = self
            .store
            .subscribe_all(self.tenant().clone(), start)
            .await?;
        Ok(TenantSubscription {
            inner,
            log: self.clone(),
        })
    }

    /// Follows one stream of the tenant. A stream the caller may not read
    /// is refused as unknown.
    ///
    /// Errors: [`AccessError::UnknownStream`]; [`EngineError::Log`].
    pub async fn subscribe_stream(
        &self,
        stream: StreamId,
        start: SubscriptionStart<StreamVersion>,
    ) -> Result<TenantSubscription, EngineError> {
        if !self.readable(&stream) {
            return Err(AccessError::UnknownStream {
                stream: stream.to_string(),
            }
            .into());
        }
        let inner = self.store.subscribe_stream(stream, start).await?;
        Ok(TenantSubscription {
            inner,
            log: self.clone(),
        })
    }

    /// Appends events to a stream of the tenant that the engine does not
    /// write, each recorded under the caller's actor id.
    ///
    /// Errors: [`EngineError::Case`] (forbidden) without the
    /// [`INTEGRATION_ROLE`] or [`ADMIN_ROLE`];
    /// [`AccessError::EngineStream`] for an engine stream;
    /// [`AccessError::UnknownStream`] for another tenant's;
    /// [`AccessError::AboveClearance`] for an event marked above the
    /// caller's clearance; [`EngineError::Log`] (expected version, limits).
    pub async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        mut events: Vec<EventData>,
    ) -> Result<TenantAppendResult, EngineError> {
        if !self.principal.has_any_role([INTEGRATION_ROLE, ADMIN_ROLE]) {
            return Err(EngineError::forbidden(
                "append events",
                &[INTEGRATION_ROLE, ADMIN_ROLE],
            ));
        }
        if stream.tenant() != self.tenant() {
            return Err(AccessError::UnknownStream {
                stream: stream.to_string(),
            }
            .into());
        }
        if is_engine_category(stream.category()) {
            return Err(AccessError::EngineStream {
                category: stream.category().to_string(),
            }
            .into());
        }
        for (i, e) in events.iter_mut().enumerate() {
            if !self.principal.may_see(e.metadata.classification) {
                return Err(AccessError::AboveClearance { index: i }.into());
            }
            e.metadata.actor = self.principal.actor();
        }
        let result: AppendResult = self.store.append(stream, expected, events).await?;
        Ok(TenantAppendResult {
            first_position: self.positions.encode(result.first_position)?,
            last_position: self.positions.encode(result.last_position)?,
            version: result.version,
        })
    }

    /// The version of a stream of the tenant the caller may read (`None`
    /// for one they may not, as for one that does not exist).
    ///
    /// Errors: [`EngineError::Log`].
    pub async fn stream_version(
        &self,
        stream: &StreamId,
    ) -> Result<Option<StreamVersion>, EngineError> {
        if !self.readable(stream) {
            return Ok(None);
        }
        Ok(self.store.stream_version(stream).await?)
    }
}

/// A subscription of a [`TenantLog`]: only events the caller may see.
pub struct TenantSubscription {
    inner: Subscription,
    log: TenantLog,
}

impl TenantSubscription {
    /// The next event the caller may see (waiting for it).
    ///
    /// Errors: those of [`Subscription::next`].
    pub async fn next(&mut self) -> Result<RecordedEvent, LogError> {
        loop {
            let e = self.inner.next().await?;
            if self.log.visible(&e) {
                return Ok(e);
            }
        }
    }
}

/// When a case changes: the version and position token of each of its
/// events, and nothing of their content ([`Engine::case_changes`]).
pub struct CaseChanges {
    inner: Subscription,
    positions: TenantPositions,
}

impl CaseChanges {
    /// The next event's case version and the tenant's position token for it
    /// (waiting for it).
    ///
    /// Errors: [`EngineError::Log`] with those of [`Subscription::next`];
    /// [`EngineError::Access`] with [`AccessError::PositionOutOfRange`].
    pub async fn next(&mut self) -> Result<(StreamVersion, PositionToken), EngineError> {
        let e = self.inner.next().await?;
        Ok((e.version, self.positions.encode(e.position)?))
    }
}

impl Engine {
    /// Follows a case the principal may see, from its first event: each
    /// change as its version and position only (read what changed through
    /// [`Engine::timeline`] or [`Engine::view`], which filter it).
    ///
    /// Errors: those of [`Engine::view`] (an unknown case, or one the
    /// caller may not see, is [`EngineError::UnknownCase`]);
    /// [`EngineError::Log`].
    pub async fn case_changes(
        &self,
        principal: &Principal,
        case_id: &str,
    ) -> Result<CaseChanges, EngineError> {
        self.view(principal, case_id).await?;
        let stream = self.case_stream(principal, case_id)?;
        let inner = self
            .inner
            .store
            .subscribe_stream(stream, SubscriptionStart::Beginning)
            .await?;
        Ok(CaseChanges {
            inner,
            positions: self.tenant_positions(&principal.tenant),
        })
    }
}
