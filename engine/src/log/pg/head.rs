//! Follows the shared log's head: `LISTEN` as a doorbell, polling as the fallback.
//!
//! A dedicated connection listens on the append channel; each notification
//! carries the head a commit reached. Notifications sent while the
//! connection was down are lost, so every (re)connect starts with a read of
//! the head, and the head is also read every poll interval. The head only
//! moves forwards.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_postgres::{AsyncMessage, NoTls};

use super::{read_head, sql, PgStoreConfig};
use crate::log::error::LogError;
use crate::log::types::GlobalPosition;

/// Longest wait between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Starts the listener task.
pub(crate) fn start(
    config: &PgStoreConfig,
    head: Arc<watch::Sender<Option<GlobalPosition>>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), LogError> {
    let pg = config.pg_config("listener")?;
    let poll = config.poll_interval;
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(50);
        loop {
            if let Ok((client, mut connection)) = pg.connect(NoTls).await {
                // The connection is driven here, and its notifications
                // reduced to the highest position announced.
                let (bell, mut rung) = watch::channel(None::<u64>);
                let driver = tokio::spawn(async move {
                    while let Some(Ok(message)) =
                        std::future::poll_fn(|cx| connection.poll_message(cx)).await
                    {
                        if let AsyncMessage::Notification(n) = message {
                            if let Ok(p) = n.payload().parse::<u64>() {
                                bell.send_if_modified(|b| {
                                    let moved = b.is_none_or(|b| p > b);
                                    if moved {
                                        *b = Some(p);
                                    }
                                    moved
                                });
                            }
                        }
                    }
                });
                let listening = client
                    .batch_execute(&format!("LISTEN {}", sql::CHANNEL))
                    .await
                    .is_ok();
                if listening && advance_from_table(&client, &head).await {
                    backoff = Duration::from_millis(50);
                    loop {
                        tokio::select! {
                            changed = rung.changed() => {
                                if changed.is_err() {
                                    break; // the connection ended
                                }
                                let p = *rung.borrow_and_update();
                                advance(&head, p.map(GlobalPosition));
                            }
                            _ = tokio::time::sleep(poll) => {
                                if !advance_from_table(&client, &head).await {
                                    break;
                                }
                            }
                            _ = stop.changed() => {
                                driver.abort();
                                return;
                            }
                        }
                    }
                }
                driver.abort();
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    });
    Ok(())
}

/// Reads the head from the table; `false` if the read failed.
async fn advance_from_table(
    client: &tokio_postgres::Client,
    head: &watch::Sender<Option<GlobalPosition>>,
) -> bool {
    match read_head(client).await {
        Ok(p) => {
            advance(head, p);
            true
        }
        Err(_) => false,
    }
}

fn advance(head: &watch::Sender<Option<GlobalPosition>>, to: Option<GlobalPosition>) {
    if to.is_none() {
        return;
    }
    head.send_if_modified(|h| {
        if to > *h {
            *h = to;
            true
        } else {
            false
        }
    });
}
