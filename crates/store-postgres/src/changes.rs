//! Commits made elsewhere, as they happen: every audit row written on PostgreSQL sends a `NOTIFY` on
//! [`CHANNEL`] (delivered when its transaction commits), and one `LISTEN` connection per process turns
//! them into a version number that a watcher waits on. The audit table stays the record: a notification
//! only says "read it now". Whenever the listening connection is lost, notifications may have been missed,
//! so the version moves on reconnecting too, and a watcher reads the trail again.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The channel every pairgate node listens on.
pub(crate) const CHANNEL: &str = "pairgate_changes";

/// How long to wait before listening again after the connection failed.
const RETRY: Duration = Duration::from_secs(1);

/// The listening task, started by the first subscriber.
#[derive(Clone, Debug, Default)]
pub(crate) struct Changes {
    version: Arc<OnceLock<watch::Sender<u64>>>,
    stop: CancellationToken,
    task: TaskTracker,
}

impl Changes {
    /// A receiver whose version moves at every commit made anywhere (this process's too).
    pub(crate) fn subscribe(&self, pool: &PgPool) -> watch::Receiver<u64> {
        let sender = self.version.get_or_init(|| {
            let (sender, _) = watch::channel(0);
            self.task.spawn(listen(pool.clone(), sender.clone(), self.stop.clone()));
            self.task.close();
            sender
        });
        sender.subscribe()
    }

    /// Stops listening and waits for the task to end.
    pub(crate) async fn stop(&self) {
        self.stop.cancel();
        // Closed here too: a tracker nobody subscribed to was never closed, and `wait` would wait for ever.
        self.task.close();
        self.task.wait().await;
    }
}

async fn listen(pool: PgPool, version: watch::Sender<u64>, stop: CancellationToken) {
    let bump = || version.send_modify(|v| *v += 1);
    loop {
        let listening = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            listening = listening => match listening {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for the fleet's changes; reading the audit trail meanwhile");
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY) => continue,
                        _ = stop.cancelled() => return,
                    }
                }
            },
            _ = stop.cancelled() => return,
        };
        // Listening from now on: whatever committed before is in the audit trail.
        bump();
        loop {
            tokio::select! {
                received = listener.try_recv() => match received {
                    Ok(Some(_)) => bump(),
                    // The connection was lost (the next call listens again): anything may have been missed.
                    Ok(None) => bump(),
                    Err(error) => {
                        tracing::warn!(%error, "lost the connection listening for the fleet's changes");
                        bump();
                        break;
                    }
                },
                _ = stop.cancelled() => return,
            }
        }
    }
}
