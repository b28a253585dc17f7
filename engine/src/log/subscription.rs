//! Catch-up-then-live subscriptions, built once on top of [`EventStore`] reads.
//!
//! A subscription is a cursor: it reads a page after the last event it
//! delivered, and when a read comes back empty it waits for the store's head
//! to move. Because it always reads by position, the switch from catch-up to
//! live can neither skip nor repeat an event, and because it reads only when
//! the consumer asks, a slow consumer applies back-pressure to itself alone.
//! While catching up (a read came back full), a subscription of all events
//! reads the next page in the background while the consumer works through
//! the current one: at most one page ahead.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::watch;

use super::error::LogError;
use super::types::{Direction, GlobalPosition, RecordedEvent, StreamId, StreamVersion, TenantId};
use super::EventStore;

/// Default number of events fetched per read.
pub const DEFAULT_PAGE_SIZE: usize = 512;

enum Cursor {
    All {
        tenant: TenantId,
        next: GlobalPosition,
    },
    Stream {
        stream: StreamId,
        next: StreamVersion,
    },
}

/// A live feed of events; call [`Subscription::next`] in a loop.
pub struct Subscription {
    store: Arc<dyn EventStore>,
    cursor: Cursor,
    buffer: VecDeque<RecordedEvent>,
    head: watch::Receiver<Option<GlobalPosition>>,
    page_size: usize,
    /// The next page, being read in the background (all-events cursors).
    ahead: Option<tokio::task::JoinHandle<Result<Vec<RecordedEvent>, LogError>>>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(task) = self.ahead.take() {
            task.abort();
        }
    }
}

impl Subscription {
    pub(crate) fn all(store: Arc<dyn EventStore>, tenant: TenantId, next: GlobalPosition) -> Self {
        Self::new(store, Cursor::All { tenant, next })
    }

    pub(crate) fn stream(
        store: Arc<dyn EventStore>,
        stream: StreamId,
        next: StreamVersion,
    ) -> Self {
        Self::new(store, Cursor::Stream { stream, next })
    }

    fn new(store: Arc<dyn EventStore>, cursor: Cursor) -> Self {
        let head = store.watch_head();
        let page_size = DEFAULT_PAGE_SIZE.min(store.limits().max_read_limit);
        Subscription {
            store,
            cursor,
            buffer: VecDeque::new(),
            head,
            page_size,
            ahead: None,
        }
    }

    /// Sets how many events are fetched per read (at least 1).
    pub fn with_page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size.clamp(1, self.store.limits().max_read_limit);
        self
    }

    /// The next event, waiting for one to be appended if the subscription is
    /// caught up.
    ///
    /// Errors: [`LogError::Closed`] once the store is closed; read errors.
    pub async fn next(&mut self) -> Result<RecordedEvent, LogError> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                return Ok(event);
            }
            // Mark the current head as seen *before* reading, so a commit that
            // lands after the read still wakes us.
            self.head.borrow_and_update();
            if self.fetch().await? {
                continue;
            }
            if self.head.changed().await.is_err() {
                return Err(LogError::Closed);
            }
        }
    }

    /// Returns the next event if one is available without waiting for an
    /// append (it may still read from the store).
    pub async fn try_next(&mut self) -> Result<Option<RecordedEvent>, LogError> {
        if self.buffer.is_empty() {
            self.fetch().await?;
        }
        Ok(self.buffer.pop_front())
    }

    async fn fetch(&mut self) -> Result<bool, LogError> {
        let events = match &mut self.cursor {
            Cursor::All { tenant, next } => {
                let events = match self.ahead.take() {
                    Some(task) => task.await.map_err(|e| {
                        if e.is_cancelled() {
                            LogError::Closed
                        } else {
                            LogError::io("reading ahead", std::io::Error::other(e.to_string()))
                        }
                    })??,
                    None => self.store.read_all(tenant, *next, self.page_size).await?,
                };
                if let Some(last) = events.last() {
                    *next = last.position.next();
                }
                // A full page: more are likely waiting, so read the next one
                // while this one is consumed.
                if events.len() == self.page_size {
                    if let Ok(rt) = tokio::runtime::Handle::try_current() {
                        let (store, tenant, from) =
                            (Arc::clone(&self.store), tenant.clone(), *next);
                        let limit = self.page_size;
                        self.ahead = Some(
                            rt.spawn(async move { store.read_all(&tenant, from, limit).await }),
                        );
                    }
                }
                events
            }
            Cursor::Stream { stream, next } => {
                let events = self
                    .store
                    .read_stream(stream, Direction::Forward, *next, self.page_size)
                    .await?;
                if let Some(last) = events.last() {
                    *next = last.version.next();
                }
                events
            }
        };
        let any = !events.is_empty();
        self.buffer.extend(events);
        Ok(any)
    }
}
