//! Auditor queries: a scan of the day streams a time range covers, filtered by case and user, within the auditor's clearance, paged with a cursor.

use std::fmt;
use std::str::FromStr;

use super::{AuditEntry, AuditError, AuditRecord, SCAN_BUDGET};
use crate::ids::TenantId;
use crate::log::codec::DomainEvent;
use crate::log::{Direction, EventStore, StreamVersion};
use crate::security::Principal;
use crate::streams::{audit_day, day_of};
use crate::time::Timestamp;

/// The largest page of entries.
pub const MAX_PAGE: usize = 1_000;

/// Which entries to list, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Entries at or after this instant.
    pub from: Timestamp,
    /// Entries before this instant.
    pub to: Timestamp,
    /// Only entries naming this case.
    pub case_id: Option<String>,
    /// Only entries of reads by this user (subject).
    pub subject: Option<String>,
    /// The page size, 1 to [`MAX_PAGE`].
    pub limit: usize,
    /// Where the previous page stopped ([`AuditPage::next`]).
    pub after: Option<AuditCursor>,
}

impl AuditQuery {
    /// Every entry in `[from, to)`, 100 a page.
    pub fn between(from: Timestamp, to: Timestamp) -> Self {
        AuditQuery {
            from,
            to,
            case_id: None,
            subject: None,
            limit: 100,
            after: None,
        }
    }

    /// This query narrowed to entries naming `case_id`.
    pub fn for_case(mut self, case_id: impl Into<String>) -> Self {
        self.case_id = Some(case_id.into());
        self
    }

    /// This query narrowed to reads by `subject`.
    pub fn by_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// A readable form, for the entry recording the query itself.
    pub(crate) fn describe(&self) -> String {
        let mut s = format!("audit from {} to {}", self.from, self.to);
        if let Some(c) = &self.case_id {
            s.push_str(&format!(" case {c}"));
        }
        if let Some(u) = &self.subject {
            s.push_str(&format!(" subject {u}"));
        }
        s
    }

    fn check(&self) -> Result<(), AuditError> {
        let invalid = |parameter: &str, message: &str| AuditError::InvalidQuery {
            parameter: parameter.into(),
            message: message.into(),
        };
        if self.limit == 0 || self.limit > MAX_PAGE {
            return Err(invalid("limit", "use a page size of 1 to 1000"));
        }
        if self.to <= self.from {
            return Err(invalid("to", "the range must end after it starts"));
        }
        Ok(())
    }
}

/// Where a page stopped: the day stream, the version of the event and the
/// entry in it to read next. Opaque to callers: it round-trips through its
/// string form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditCursor {
    day: i64,
    version: u64,
    entry: usize,
}

impl fmt::Display for AuditCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.day, self.version, self.entry)
    }
}

impl FromStr for AuditCursor {
    type Err = AuditError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || AuditError::InvalidQuery {
            parameter: "after".into(),
            message: "not a cursor this service returned".into(),
        };
        let mut parts = s.split('.');
        let mut next = || parts.next().ok_or_else(bad);
        let (day, version, entry) = (next()?, next()?, next()?);
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(AuditCursor {
            day: day.parse().map_err(|_| bad())?,
            version: version.parse().map_err(|_| bad())?,
            entry: entry.parse().map_err(|_| bad())?,
        })
    }
}

/// A page of entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPage {
    /// The entries, oldest first.
    pub entries: Vec<AuditEntry>,
    /// Where to continue, if the range may hold more (the page is full, or
    /// the scan reached its budget).
    pub next: Option<AuditCursor>,
}

/// Scans `tenant`'s audit for `query`, showing `auditor` only entries
/// within their clearance.
pub(crate) async fn scan(
    store: &dyn EventStore,
    tenant: &TenantId,
    auditor: &Principal,
    query: &AuditQuery,
) -> Result<AuditPage, AuditError> {
    query.check()?;
    // Entries answered as written become readable once synced: an auditor
    // sees every read answered before the query.
    store
        .sync_written()
        .await
        .map_err(|e| AuditError::Unavailable {
            reason: e.to_string(),
        })?;
    let last_day = day_of(Timestamp::from_micros(query.to.as_micros() - 1));
    let (mut day, mut version, mut skip) = match query.after {
        Some(c) if c.day >= day_of(query.from) => (c.day, c.version, c.entry),
        _ => (day_of(query.from), 0, 0),
    };
    let page = store.limits().max_read_limit.clamp(1, 1_000);
    let mut entries = Vec::new();
    let mut examined = 0usize;
    while day <= last_day {
        let stream = audit_day(tenant, day).map_err(|e| AuditError::InvalidQuery {
            parameter: "from".into(),
            message: e.to_string(),
        })?;
        loop {
            if examined >= SCAN_BUDGET {
                return Ok(AuditPage {
                    entries,
                    next: Some(AuditCursor {
                        day,
                        version,
                        entry: skip,
                    }),
                });
            }
            let events = store
                .read_stream(&stream, Direction::Forward, StreamVersion(version), page)
                .await
                .map_err(|e| AuditError::Unavailable {
                    reason: e.to_string(),
                })?;
            examined += 1;
            for e in &events {
                let record = AuditRecord::decode_payload(&e.event_type, &e.payload)
                    .map_err(|e| AuditError::Corrupt(e.to_string()))?;
                let count = record.entries.len();
                for (i, entry) in record.entries.into_iter().enumerate().skip(skip) {
                    examined += 1;
                    if entry.at < query.from
                        || entry.at >= query.to
                        || !auditor.may_see(entry.marking)
                        || query
                            .case_id
                            .as_ref()
                            .is_some_and(|c| !entry.cases.contains(c))
                        || query.subject.as_ref().is_some_and(|s| &entry.subject != s)
                    {
                        continue;
                    }
                    entries.push(entry);
                    if entries.len() == query.limit {
                        let next = if i + 1 < count {
                            AuditCursor {
                                day,
                                version: e.version.0,
                                entry: i + 1,
                            }
                        } else {
                            AuditCursor {
                                day,
                                version: e.version.0 + 1,
                                entry: 0,
                            }
                        };
                        return Ok(AuditPage {
                            entries,
                            next: Some(next),
                        });
                    }
                }
                skip = 0;
                version = e.version.0 + 1;
            }
            if events.len() < page {
                break;
            }
        }
        day += 1;
        version = 0;
        skip = 0;
    }
    Ok(AuditPage {
        entries,
        next: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = AuditCursor {
            day: 20_000,
            version: 17,
            entry: 3,
        };
        assert_eq!(c.to_string().parse::<AuditCursor>().unwrap(), c);
        for garbage in ["17", "a.b", "1.2", "1.2.x", "1.2.3.4", ""] {
            assert!(garbage.parse::<AuditCursor>().is_err(), "{garbage}");
        }
    }

    #[test]
    fn queries_need_a_range_and_a_page_size() {
        let t = Timestamp::from_micros(1_000);
        assert!(AuditQuery::between(t, t).check().is_err());
        let mut q = AuditQuery::between(t, Timestamp::from_micros(2_000));
        assert!(q.check().is_ok());
        q.limit = MAX_PAGE + 1;
        assert!(q.check().is_err());
    }
}
