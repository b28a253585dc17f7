//! Catch-up-then-live subscriptions, built once on top of [`EventStore`] reads.
//!
//! A subscription is a cursor: it reads a page after the last event it
//! delivered, and when a read comes back empty it waits for the store's head
//! to move. Because it always reads by position, the switch from catch-up to
//! live can neither skip nor repeat an event, and because it reads only when
//! the consumer asks, a slow consumer applies back-pressure to itself alone.
//! While catching up (a read came back full), a subscription of all events
//! reads on in the background while the consumer works: up to
//! [`READ_AHEAD_PAGES`] pages ahead, stopping at the first page that is not
//! full (the live end).

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::watch;

use super::error::LogError;
use super::types::{Direction, GlobalPosition, RecordedEvent, StreamId, StreamVersion, TenantId};
use super::EventStore;

/// Default number of events fetched per read.
pub const DEFAULT_PAGE_SIZE: usize = 512;

/// Pages a catching-up subscription of all events reads ahead.
pub const READ_AHEAD_PAGES: usize = 4;

/// Pages read in the background, in order; the reader stops after an error.
type Ahead = tokio::sync::mpsc::Receiver<Result<Vec<RecordedEvent>, LogError>>;

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
    /// The pages after the cursor, being read in the background
    /// (all-events cursors, while catching up).
    ahead: Option<(Ahead, tokio::task::JoinHandle<()>)>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some((_, task)) = self.ahead.take() {
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
                let ahead = match self.ahead.as_mut() {
                    Some((pages, _)) => pages.recv().await,
                    None => None,
                };
                let events = match ahead {
                    Some(page) => page?,
                    None => {
                        // The reader (if any) stopped at the live end: read here.
                        self.ahead = None;
                        let events = self.store.read_all(tenant, *next, self.page_size).await?;
                        if events.len() == self.page_size {
                            self.ahead = read_ahead(
                                &self.store,
                                tenant,
                                events.last().map(|e| e.position.next()),
                                self.page_size,
                            );
                        }
                        events
                    }
                };
                if let Some(last) = events.last() {
                    *next = last.position.next();
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
        if self.buffer.is_empty() {
            // Takes the page's allocation as it is, without copying.
            self.buffer = VecDeque::from(events);
        } else {
            self.buffer.extend(events);
        }
        Ok(any)
    }
}

/// Starts reading pages from `from` in the background (needs a Tokio
/// runtime; none: no reading ahead).
fn read_ahead(
    store: &Arc<dyn EventStore>,
    tenant: &TenantId,
    from: Option<GlobalPosition>,
    limit: usize,
) -> Option<(Ahead, tokio::task::JoinHandle<()>)> {
    let rt = tokio::runtime::Handle::try_current().ok()?;
    let mut from = from?;
    let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD_PAGES);
    let (store, tenant) = (Arc::clone(store), tenant.clone());
    let task = rt.spawn(async move {
        loop {
            let page = store.read_all(&tenant, from, limit).await;
            let go_on = match &page {
                Ok(events) => match events.last() {
                    Some(last) if events.len() == limit => {
                        from = last.position.next();
                        true
                    }
                    _ => false,
                },
                Err(_) => false,
            };
            let empty = page.as_ref().is_ok_and(|e| e.is_empty());
            if !empty && tx.send(page).await.is_err() {
                return;
            }
            if !go_on {
                return;
            }
        }
    });
    Some((rx, task))
}
