//! Recording reads in the audit (see [`crate::audit`]): the one helper every read method ends with, the audited raw event reads, and the auditors' query.

use std::borrow::Cow;

use super::{Engine, EngineError};
use crate::audit::{
    self, AuditEntry, AuditError, AuditOutcome, AuditPage, AuditQuery, ReadContext, ReadKind,
    Subject, MAX_PURPOSE,
};
use crate::definition::CaseDefinition;
use crate::error::ErrorKind;
use crate::log::{
    Direction, GlobalPosition, RecordedEvent, StreamId, StreamVersion, Subscription,
    SubscriptionStart,
};
use crate::security::{Classification, PositionToken, Principal};
use crate::streams::{is_engine_category, CASE};

/// An error with a kind, that an audit failure converts into.
pub(crate) trait ReadError: From<AuditError> {
    fn read_kind(&self) -> ErrorKind;
    /// The damaged projection database the read found, if it found one.
    fn damage(&self) -> Option<&crate::projection::QueryError> {
        None
    }
}

impl ReadError for EngineError {
    fn read_kind(&self) -> ErrorKind {
        self.kind()
    }
}

impl ReadError for crate::projection::QueryError {
    fn read_kind(&self) -> ErrorKind {
        self.kind()
    }
    fn damage(&self) -> Option<&crate::projection::QueryError> {
        matches!(self, crate::projection::QueryError::Damaged { .. }).then_some(self)
    }
}

/// `purpose` cut to [`MAX_PURPOSE`] bytes (at a character boundary).
fn bounded(purpose: &str) -> String {
    let mut end = purpose.len().min(MAX_PURPOSE);
    while !purpose.is_char_boundary(end) {
        end -= 1;
    }
    purpose[..end].to_string()
}

/// The principal a view is rendered for: `reader`'s, capped at the
/// definition's `purpose_required_above` when no purpose was stated.
///
/// Errors: [`AuditError::PurposeRequired`] when the case itself (which the
/// reader may see) is marked above that marking.
pub(crate) fn viewer<'a>(
    reader: &ReadContext<'a>,
    def: &CaseDefinition,
    case_marking: Classification,
    case_id: &str,
) -> Result<Cow<'a, Principal>, AuditError> {
    let p = reader.principal;
    match def.purpose_required_above() {
        Some(above) if !reader.has_purpose() && p.clearance > above => {
            if case_marking > above && p.may_see(case_marking) {
                return Err(AuditError::PurposeRequired {
                    case_id: case_id.to_string(),
                    above,
                });
            }
            Ok(Cow::Owned(p.clone().with_clearance(above)))
        }
        _ => Ok(Cow::Borrowed(p)),
    }
}

/// Whether `reader` may read the engine's own streams raw: an auditor
/// cleared TOP SECRET (a raw case event carries every field).
pub fn reads_engine_streams(reader: &Principal) -> bool {
    audit::is_auditor(reader) && reader.clearance == Classification::TopSecret
}

/// Whether `reader` may see this raw event at all.
pub fn raw_visible(reader: &Principal, e: &RecordedEvent) -> bool {
    &reader.tenant == e.tenant()
        && reader.may_see(e.metadata.classification)
        && (!is_engine_category(e.stream.category()) || reads_engine_streams(reader))
}

/// What raw events disclose: the cases among them and the highest marking.
fn raw_subject(query: String, events: &[RecordedEvent]) -> Subject {
    Subject::query(query, Classification::Official).with_cases(events.iter().map(|e| {
        let case = if e.stream.category() == CASE {
            e.stream.id()
        } else {
            ""
        };
        (case, e.metadata.classification)
    }))
}

impl Engine {
    /// Records one read in the audit, then returns its result — only once
    /// the entry is written to the log (see `crate::audit`). A read that succeeded but could not be
    /// recorded fails with [`AuditError::Unavailable`] (nothing is
    /// disclosed); a refused read keeps its own error.
    pub(crate) async fn audited<T, E: ReadError>(
        &self,
        reader: &ReadContext<'_>,
        read: ReadKind,
        subject: Subject,
        result: Result<T, E>,
    ) -> Result<T, E> {
        if let Some(damage) = result.as_ref().err().and_then(ReadError::damage) {
            self.on_read_error(damage);
        }
        let recorder = &self.inner.audit;
        if !recorder.enabled() {
            return result;
        }
        let p = reader.principal;
        let outcome = match &result {
            Ok(_) => AuditOutcome::Answered,
            Err(e) => AuditOutcome::of(&e.read_kind()),
        };
        let mut cases = subject.cases;
        cases.retain(|c| !c.is_empty());
        let entry = AuditEntry {
            at: self.now(),
            subject: p.subject.clone(),
            roles: p.roles.iter().cloned().collect(),
            clearance: p.clearance,
            read,
            cases,
            query: subject.query,
            purpose: reader.purpose.as_deref().map(bounded),
            correlation: reader.correlation.map(|c| c.0.to_string()),
            outcome,
            marking: subject.marking,
        };
        match (recorder.record(&p.tenant, entry).await, result) {
            (Err(e), Ok(_)) => Err(e.into()),
            (_, result) => result,
        }
    }

    /// Reads events of one of the reader's tenant's streams, raw (audited:
    /// [`ReadKind::RawStream`]). The engine's own streams (cases,
    /// definitions, calendar, audit) read as empty — exactly like a stream
    /// that does not exist — except for an auditor cleared TOP SECRET; other
    /// events above the reader's clearance are left out.
    ///
    /// Errors: [`EngineError::Log`]; [`EngineError::Audit`].
    pub async fn read_stream<'a>(
        &self,
        reader: impl Into<ReadContext<'a>>,
        stream: &StreamId,
        direction: Direction,
        from: StreamVersion,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, EngineError> {
        let reader = reader.into();
        let p = reader.principal;
        // An unknown or suspended tenant, a malformed principal: refused
        // before anything is read (or recorded: there is no tenant to record in).
        self.admit(reader.principal).await?;
        let query = format!("stream {}/{}", stream.category(), stream.id());
        let result = match reader.check() {
            Err(e) => Err(e.into()),
            Ok(()) if stream.tenant() != &p.tenant => Ok(Vec::new()),
            Ok(()) if is_engine_category(stream.category()) && !reads_engine_streams(p) => {
                let subject = Subject::query(query, Classification::Official);
                let refused: Result<Vec<RecordedEvent>, EngineError> =
                    Err(EngineError::forbidden("read the engine's streams raw", &[]));
                // Recorded as refused, answered as a stream that does not exist.
                return match self
                    .audited(&reader, ReadKind::RawStream, subject, refused)
                    .await
                {
                    Err(EngineError::Audit(e)) => Err(e.into()),
                    _ => Ok(Vec::new()),
                };
            }
            Ok(()) => self
                .inner
                .store
                .read_stream(stream, direction, from, limit)
                .await
                .map(|events| events.into_iter().filter(|e| raw_visible(p, e)).collect())
                .map_err(EngineError::from),
        };
        let subject = match &result {
            Ok(events) => raw_subject(query, events),
            Err(_) => Subject::query(query, Classification::Official),
        };
        self.audited(&reader, ReadKind::RawStream, subject, result)
            .await
    }

    /// Reads the reader's tenant's log from `from` — a position token the
    /// engine gave the tenant ([`PositionToken::NONE`]: from the start) —
    /// raw (audited: [`ReadKind::RawLog`]), leaving out what
    /// [`Engine::read_stream`] would. Also returns the token to read from
    /// next (past every event read, shown or not). Each event's own token is
    /// [`Engine::event_token`]; its `position` field is the log's global
    /// position, for in-process code only (a server hands on the token).
    ///
    /// Errors: [`EngineError::Log`]; [`EngineError::Audit`];
    /// [`EngineError::Access`] with [`crate::security::AccessError::NotAPositionToken`] for
    /// another tenant's or a made-up token.
    pub async fn read_all<'a>(
        &self,
        reader: impl Into<ReadContext<'a>>,
        from: PositionToken,
        limit: usize,
    ) -> Result<(Vec<RecordedEvent>, PositionToken), EngineError> {
        let reader = reader.into();
        let p = reader.principal;
        // An unknown or suspended tenant, a malformed principal: refused
        // before anything is read (or recorded: there is no tenant to record in).
        self.admit(reader.principal).await?;
        let positions = self.tenant_positions(&p.tenant);
        let from = positions
            .decode_opt(from, "from_position")?
            .unwrap_or(GlobalPosition::START);
        let query = format!("log from {}", from.0);
        let result = match reader.check() {
            Err(e) => Err(e.into()),
            Ok(()) => self
                .inner
                .store
                .read_all(&p.tenant, from, limit)
                .await
                .map(|events| {
                    let next = events
                        .last()
                        .map_or(from, |e| GlobalPosition(e.position.0 + 1));
                    let shown: Vec<RecordedEvent> =
                        events.into_iter().filter(|e| raw_visible(p, e)).collect();
                    (shown, next)
                })
                .map_err(EngineError::from)
                .and_then(|(shown, next)| Ok((shown, positions.encode(next)?))),
        };
        let subject = match &result {
            Ok((events, _)) => raw_subject(query, events),
            Err(_) => Subject::query(query, Classification::Official),
        };
        self.audited(&reader, ReadKind::RawLog, subject, result)
            .await
    }

    /// Subscribes to the reader's tenant's log (audited once, when it
    /// starts: [`ReadKind::RawSubscription`]), from the start, the end, or
    /// after a position token the engine gave the tenant (to resume after
    /// the last event received: its [`Engine::event_token`]). The caller
    /// must leave out what [`raw_visible`] refuses.
    ///
    /// Errors: [`EngineError::Log`]; [`EngineError::Audit`];
    /// [`EngineError::Access`] with [`crate::security::AccessError::NotAPositionToken`] for
    /// another tenant's or a made-up token.
    pub async fn subscribe_all<'a>(
        &self,
        reader: impl Into<ReadContext<'a>>,
        start: SubscriptionStart<PositionToken>,
    ) -> Result<Subscription, EngineError> {
        let reader = reader.into();
        // An unknown or suspended tenant, a malformed principal: refused
        // before anything is read (or recorded: there is no tenant to record in).
        self.admit(reader.principal).await?;
        let start = match start {
            SubscriptionStart::Beginning => SubscriptionStart::Beginning,
            SubscriptionStart::End => SubscriptionStart::End,
            SubscriptionStart::After(token) => SubscriptionStart::After(
                self.tenant_positions(&reader.principal.tenant)
                    .decode(token, "after_position")?,
            ),
        };
        let query = format!("log subscription from {start:?}");
        let result = match reader.check() {
            Err(e) => Err(e.into()),
            Ok(()) => self
                .inner
                .store
                .subscribe_all(reader.principal.tenant.clone(), start)
                .await
                .map_err(EngineError::from),
        };
        let subject = Subject::query(query, reader.principal.clearance);
        self.audited(&reader, ReadKind::RawSubscription, subject, result)
            .await
    }

    /// The audit entries of the reader's tenant that `query` selects, within
    /// the reader's clearance (audited too: [`ReadKind::AuditQuery`]).
    ///
    /// Errors: [`AuditError::NotAuditor`] without the [`audit::AUDITOR_ROLE`];
    /// [`AuditError::InvalidQuery`]; [`AuditError::Unavailable`].
    pub async fn audit_entries<'a>(
        &self,
        reader: impl Into<ReadContext<'a>>,
        query: &AuditQuery,
    ) -> Result<AuditPage, EngineError> {
        let reader = reader.into();
        let p = reader.principal;
        let result = if let Err(e) = reader.check() {
            Err(e.into())
        } else if !audit::is_auditor(p) {
            Err(EngineError::Audit(AuditError::NotAuditor {
                principal: p.to_string(),
            }))
        } else {
            audit::query::scan(&*self.inner.store, &p.tenant, p, query)
                .await
                .map_err(EngineError::from)
        };
        let marking = match &query.case_id {
            // An auditor's interest in a case is as sensitive as the case.
            Some(_) => p.clearance,
            None => Classification::Official,
        };
        let mut subject = Subject::query(query.describe(), marking);
        if let Some(c) = &query.case_id {
            subject.cases.push(c.clone());
        }
        self.audited(&reader, ReadKind::AuditQuery, subject, result)
            .await
    }
}
