//! Live connections: who is connected as which device, forced closes (revocation) and event fan-out.
//! Front ends register their sockets here; the application layer closes and notifies them through it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::domain::DeviceId;

/// Events a socket may have queued before it counts as a slow consumer and is closed with 4008.
pub const EVENT_QUEUE_CAPACITY: usize = 256;
/// How long revocation waits for a socket to confirm it closed before replying anyway. Sockets bound
/// their closing writes well below it, so this only guards against a socket that lost its way.
const CLOSE_ACK_WAIT: Duration = Duration::from_secs(1);

/// An event to fan out; the socket adds its own `seq`.
#[derive(Debug)]
pub struct Event {
    pub name: &'static str,
    pub payload: Value,
}

/// Why a socket is told to close; each front end words it in its own protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disconnect {
    /// The device was removed, or the token it connected with was rotated or revoked.
    DeviceRevoked,
}

/// Tells a socket to close; it acknowledges once it is closed (its close frame sent, or given up on, and
/// its connection dropped).
#[derive(Debug)]
pub struct CloseOrder {
    pub why: Disconnect,
    pub ack: oneshot::Sender<()>,
}

/// What a socket receives when it registers.
pub struct Registration {
    /// One order at most: a socket closes on the first.
    pub close_order: oneshot::Receiver<CloseOrder>,
    /// `Some` for sockets that may see pairing events; `None` from it means "too slow, dropped".
    pub events: Option<mpsc::Receiver<Arc<Event>>>,
    /// Fires when the event queue overflowed (its sender was dropped): the socket learns it at once, even
    /// while it is blocked writing to a client that stopped reading. `None` for sockets without events.
    pub overflowed: Option<oneshot::Receiver<()>>,
}

struct Entry {
    device_id: Option<DeviceId>,
    /// The newest audit event id the handshake's read of the device saw (`Store::device_as_of`); `None`
    /// while that read runs, and for a socket registered without one. A revocation made by another
    /// process closes the sockets whose read came before its audit event, by commit order.
    read_mark: Option<i64>,
    /// A revocation made elsewhere (its audit event id) that arrived while this socket's handshake was
    /// still reading the device: whether it bites depends on what the read saw, so `read` decides.
    pending_revocation: Option<(i64, Disconnect)>,
    /// Taken by the first close order.
    close: Option<oneshot::Sender<CloseOrder>>,
    /// A handshake in progress ([`Registry::claim`]): the receiving end of its close order, kept here
    /// until the socket registers. `None` once registered.
    claimed: Option<oneshot::Receiver<CloseOrder>>,
    events: Option<mpsc::Sender<Arc<Event>>>,
    /// Taken (and fired) when the event queue overflows.
    overflowed: Option<oneshot::Sender<()>>,
}

#[derive(Default)]
struct Inner {
    conns: HashMap<String, Entry>,
    by_device: HashMap<DeviceId, HashSet<String>>,
    /// Event streams outside any socket (the admin page's `/api/v1/events`).
    streams: Vec<mpsc::Sender<Arc<Event>>>,
}

#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("sockets", &self.socket_count()).finish()
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("registry lock")
    }

    /// A handshake claims its device *before* it reads the device's credentials from the store. A
    /// removal, rotation or revocation that commits after that read, while the handshake is still running,
    /// then finds the claim and leaves its close order there: the socket closes with 4001 as soon as it
    /// registers, instead of living on with credentials that were withdrawn. Whatever ends the socket
    /// must [`unregister`](Self::unregister) it, claimed or registered.
    pub fn claim(&self, conn_id: &str, device_id: &DeviceId) {
        let (close, close_order) = oneshot::channel();
        let entry = Entry {
            device_id: Some(device_id.clone()),
            read_mark: None,
            pending_revocation: None,
            close: Some(close),
            claimed: Some(close_order),
            events: None,
            overflowed: None,
        };
        let mut inner = self.lock();
        inner.by_device.entry(device_id.clone()).or_default().insert(conn_id.to_owned());
        if let Some(Entry { device_id: Some(earlier), .. }) = inner.conns.insert(conn_id.to_owned(), entry)
            && earlier != *device_id
        {
            remove_device_conn(&mut inner, &earlier, conn_id);
        }
    }

    /// Notes what the handshake's read of its claimed device saw (see `read_mark`). A revocation made
    /// elsewhere that arrived during the read closes the socket now if the read came before it.
    pub fn read(&self, conn_id: &str, mark: i64) {
        if let Some(entry) = self.lock().conns.get_mut(conn_id) {
            entry.read_mark = Some(mark);
            if let Some((event_id, why)) = entry.pending_revocation.take()
                && mark < event_id
                && let Some(close) = entry.close.take()
            {
                // Nobody waits for this acknowledgement: the revocation was answered where it was made.
                let (ack, _) = oneshot::channel();
                let _ = close.send(CloseOrder { why, ack });
            }
        }
    }

    /// A socket that completed `connect`. Its claim, if its handshake made one for this device, becomes
    /// the registration, with any close order already left for it.
    pub fn register(&self, conn_id: &str, device_id: Option<&DeviceId>, subscribe: bool) -> Registration {
        let (events, events_rx, overflowed, overflowed_rx) = if subscribe {
            let (sender, receiver) = mpsc::channel(EVENT_QUEUE_CAPACITY);
            let (overflowed, overflowed_rx) = oneshot::channel();
            (Some(sender), Some(receiver), Some(overflowed), Some(overflowed_rx))
        } else {
            (None, None, None, None)
        };
        let mut inner = self.lock();
        let claimed = inner.conns.get_mut(conn_id).filter(|entry| entry.device_id.as_ref() == device_id);
        if let Some(entry) = claimed
            && let Some(close_order) = entry.claimed.take()
        {
            entry.events = events;
            entry.overflowed = overflowed;
            return Registration { close_order, events: events_rx, overflowed: overflowed_rx };
        }
        if let Some(Entry { device_id: Some(earlier), .. }) = inner.conns.remove(conn_id) {
            remove_device_conn(&mut inner, &earlier, conn_id);
        }
        if let Some(device_id) = device_id {
            inner.by_device.entry(device_id.clone()).or_default().insert(conn_id.to_owned());
        }
        let (close, close_order) = oneshot::channel();
        let entry = Entry {
            device_id: device_id.cloned(),
            read_mark: None,
            pending_revocation: None,
            close: Some(close),
            claimed: None,
            events,
            overflowed,
        };
        inner.conns.insert(conn_id.to_owned(), entry);
        Registration { close_order, events: events_rx, overflowed: overflowed_rx }
    }

    /// Forgets a socket, registered or only claimed. A close order still waiting in a claim is dropped
    /// with it, which answers whoever waits for its acknowledgement.
    pub fn unregister(&self, conn_id: &str) {
        let mut inner = self.lock();
        if let Some(Entry { device_id: Some(device_id), .. }) = inner.conns.remove(conn_id) {
            remove_device_conn(&mut inner, &device_id, conn_id);
        }
    }

    /// Closes every live socket of the device and waits (briefly) until each has sent its close frame.
    /// The caller's own socket (`except`) is told too, but not waited for: it closes after its reply.
    pub async fn close_device(&self, device_id: &DeviceId, why: Disconnect, except: Option<&str>) -> usize {
        self.close_device_sockets(device_id, why, except, None).await
    }

    /// `close_device` for a revocation made by another process, whose audit event is `event_id`: only the
    /// sockets whose read of the device came before it (a socket that read it since connected with
    /// whatever credentials are left, and stays).
    pub async fn close_device_read_before(&self, device_id: &DeviceId, why: Disconnect, event_id: i64) -> usize {
        self.close_device_sockets(device_id, why, None, Some(event_id)).await
    }

    async fn close_device_sockets(
        &self,
        device_id: &DeviceId,
        why: Disconnect,
        except: Option<&str>,
        before_event: Option<i64>,
    ) -> usize {
        // A socket that was told to close already (its sender taken) is closing: counted, not told twice.
        let (sockets, senders) = {
            let mut guard = self.lock();
            let inner = &mut *guard;
            let mut reading = Vec::new();
            let conn_ids: Vec<String> = inner
                .by_device
                .get(device_id)
                .into_iter()
                .flatten()
                .filter(|conn_id| match (before_event, inner.conns.get(*conn_id)) {
                    // Still reading the device in its handshake: `read` decides once it knows what it saw.
                    (Some(_), Some(entry)) if entry.read_mark.is_none() && entry.claimed.is_some() => {
                        reading.push((*conn_id).clone());
                        false
                    }
                    (Some(event_id), Some(entry)) => entry.read_mark.is_none_or(|mark| mark < event_id),
                    _ => true,
                })
                .cloned()
                .collect();
            for conn_id in reading {
                if let (Some(event_id), Some(entry)) = (before_event, inner.conns.get_mut(&conn_id)) {
                    entry.pending_revocation = Some((event_id, why));
                }
            }
            let senders: Vec<(String, oneshot::Sender<CloseOrder>)> = conn_ids
                .iter()
                .filter_map(|conn_id| Some((conn_id.clone(), inner.conns.get_mut(conn_id)?.close.take()?)))
                .collect();
            (conn_ids.len(), senders)
        };
        let mut acks = Vec::new();
        for (conn_id, sender) in senders {
            let (ack, acked) = oneshot::channel();
            if sender.send(CloseOrder { why, ack }).is_ok() && except != Some(conn_id.as_str()) {
                acks.push(acked);
            }
        }
        if tokio::time::timeout(CLOSE_ACK_WAIT, futures_util::future::join_all(acks)).await.is_err() {
            tracing::warn!(device = %device_id, "a socket did not confirm its close in time; replying anyway");
        }
        sockets
    }

    /// An event stream that is not a socket (the admin page's): it gets every event subscribed sockets get.
    /// The receiver ends (`None` after what was queued) when its reader fell `EVENT_QUEUE_CAPACITY` events
    /// behind; a reader that is gone is forgotten at the next event.
    pub fn subscribe_stream(&self) -> mpsc::Receiver<Arc<Event>> {
        let (sender, receiver) = mpsc::channel(EVENT_QUEUE_CAPACITY);
        self.lock().streams.push(sender);
        receiver
    }

    /// Queues an event for every subscribed socket and stream, never waiting: a socket whose queue is full
    /// is dropped from the subscribers, told so at once, and closes itself with 4008; a stream just ends.
    pub fn broadcast(&self, name: &'static str, payload: Value) {
        let event = Arc::new(Event { name, payload });
        let mut inner = self.lock();
        inner.streams.retain(|stream| stream.try_send(event.clone()).is_ok());
        for entry in inner.conns.values_mut() {
            if let Some(sender) = &entry.events
                && sender.try_send(event.clone()).is_err()
            {
                entry.events = None;
                if let Some(overflowed) = entry.overflowed.take() {
                    let _ = overflowed.send(());
                }
            }
        }
    }

    /// Whether a socket of the device completed `connect` and is still open.
    pub fn is_connected(&self, device_id: &DeviceId) -> bool {
        let inner = self.lock();
        let registered = |conn_id: &String| inner.conns.get(conn_id).is_some_and(|entry| entry.claimed.is_none());
        inner.by_device.get(device_id).is_some_and(|conns| conns.iter().any(registered))
    }

    /// Sockets that completed `connect` and are still open.
    pub fn socket_count(&self) -> usize {
        self.lock().conns.values().filter(|entry| entry.claimed.is_none()).count()
    }
}

fn remove_device_conn(inner: &mut Inner, device_id: &DeviceId, conn_id: &str) {
    if let Some(conns) = inner.by_device.get_mut(device_id) {
        conns.remove(conn_id);
        if conns.is_empty() {
            inner.by_device.remove(device_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> DeviceId {
        DeviceId::try_from("a".repeat(64)).unwrap()
    }

    /// A revocation made by another process, noticed while a handshake runs: it closes the socket whose
    /// read came before its audit event, and spares one whose read saw it.
    #[tokio::test]
    async fn an_offline_revocation_closes_the_sockets_that_read_before_it() {
        let registry = Registry::default();
        registry.claim("stale", &device());
        registry.read("stale", 41);
        registry.claim("fresh", &device());
        registry.read("fresh", 42);
        assert!(!registry.is_connected(&device()), "a claim is not a connected socket");
        assert_eq!(registry.socket_count(), 0);
        let revoked = device();
        let closing = registry.close_device_read_before(&revoked, Disconnect::DeviceRevoked, 42);
        // The order waits in the claim and is there once the socket registers; the socket acknowledges it.
        let (closed, ()) = tokio::join!(closing, async {
            let mut stale = registry.register("stale", Some(&device()), false);
            let order = stale.close_order.try_recv().expect("the order waited in the claim");
            assert_eq!(order.why, Disconnect::DeviceRevoked);
            registry.unregister("stale");
            order.ack.send(()).unwrap();
        });
        assert_eq!(closed, 1);
        let mut fresh = registry.register("fresh", Some(&device()), false);
        assert!(fresh.close_order.try_recv().is_err(), "the socket that read the revocation stays");
    }

    /// A revocation made elsewhere, noticed while a handshake is still reading the device (on PostgreSQL
    /// the fleet tells within milliseconds): what the read saw decides, once it is known. A read from
    /// before the revocation is closed; one that saw it (fresh credentials) stays.
    #[tokio::test]
    async fn a_revocation_noticed_during_the_read_waits_for_what_the_read_saw() {
        let registry = Registry::default();
        registry.claim("stale", &device());
        registry.claim("fresh", &device());
        let closed = registry.close_device_read_before(&device(), Disconnect::DeviceRevoked, 42).await;
        assert_eq!(closed, 0, "nothing is closed before the reads are known");
        registry.read("stale", 41);
        registry.read("fresh", 42);
        let mut stale = registry.register("stale", Some(&device()), false);
        let order = stale.close_order.try_recv().expect("the read came before the revocation: closed");
        assert_eq!(order.why, Disconnect::DeviceRevoked);
        let mut fresh = registry.register("fresh", Some(&device()), false);
        assert!(fresh.close_order.try_recv().is_err(), "the read saw the revocation: it stays");
    }

    #[test]
    fn a_claim_becomes_the_registration_and_unregister_forgets_both() {
        let registry = Registry::default();
        registry.claim("c1", &device());
        let _registration = registry.register("c1", Some(&device()), true);
        assert!(registry.is_connected(&device()));
        assert_eq!(registry.socket_count(), 1);
        registry.unregister("c1");
        assert!(!registry.is_connected(&device()));
        assert_eq!(registry.socket_count(), 0);
        registry.claim("c2", &device());
        registry.unregister("c2");
        assert!(registry.lock().by_device.is_empty() && registry.lock().conns.is_empty());
    }
}
