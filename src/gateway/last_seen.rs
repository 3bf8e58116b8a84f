//! `last_seen` bookkeeping, off the connect path: connects drop a note into a bounded channel (never
//! waiting), and one task writes the notes in one transaction per interval, and once more at shutdown.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::Millis;
use crate::domain::{DeviceId, Role};
use crate::store::{SeenNote, Store};

/// Notes beyond this many unflushed ones are dropped: bookkeeping must never slow a connect.
const CHANNEL_CAPACITY: usize = 16_384;

#[derive(Clone, Debug)]
pub struct LastSeen {
    sender: mpsc::Sender<SeenNote>,
}

impl LastSeen {
    /// Starts the flusher; it runs until `shutdown`, then flushes what it has and returns.
    pub fn start(
        store: Store,
        interval: Duration,
        shutdown: CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
    ) -> LastSeen {
        let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        tracker.spawn(flush_loop(store, interval, shutdown, receiver));
        LastSeen { sender }
    }

    pub fn note(&self, device_id: DeviceId, role: Role, token_used: bool, at_ms: Millis) {
        let _ = self.sender.try_send(SeenNote { device_id, role, token_used, at_ms });
    }
}

async fn flush_loop(
    store: Store,
    interval: Duration,
    shutdown: CancellationToken,
    mut receiver: mpsc::Receiver<SeenNote>,
) {
    let mut pending: HashMap<(DeviceId, Role), SeenNote> = HashMap::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            note = receiver.recv() => match note {
                Some(note) => merge(&mut pending, note),
                None => break,
            },
            _ = ticker.tick() => flush(&store, &mut pending).await,
            _ = shutdown.cancelled() => break,
        }
    }
    while let Ok(note) = receiver.try_recv() {
        merge(&mut pending, note);
    }
    flush(&store, &mut pending).await;
}

fn merge(pending: &mut HashMap<(DeviceId, Role), SeenNote>, note: SeenNote) {
    let entry = pending.entry((note.device_id.clone(), note.role)).or_insert_with(|| note.clone());
    entry.at_ms = entry.at_ms.max(note.at_ms);
    entry.token_used |= note.token_used;
}

async fn flush(store: &Store, pending: &mut HashMap<(DeviceId, Role), SeenNote>) {
    if pending.is_empty() {
        return;
    }
    let notes: Vec<SeenNote> = pending.drain().map(|(_, note)| note).collect();
    if let Err(error) = store.record_last_seen(&notes).await {
        tracing::warn!(%error, count = notes.len(), "could not record last-seen times");
    }
}
