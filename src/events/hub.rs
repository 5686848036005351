//! The live stream's fan-out: each client of `GET /v1/events` has a
//! bounded buffer; the audit writer hands every committed event to each
//! buffer without waiting, and a client whose buffer is full is cut (its
//! stream ends), so a slow reader costs at most its buffer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc::{self, error::TrySendError};

/// One event on the stream, shared by every client's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEvent {
    /// Its place in the outbox (increasing).
    pub seq: i64,
    /// The event id (`<decision id>:<kind>`).
    pub id: Arc<str>,
    /// `decision` or `call_end`.
    pub kind: Arc<str>,
    /// The event's JSON, on one line.
    pub data: Arc<str>,
    /// The instance it came from when another instance made it (relayed
    /// through the shared store, `crate::cluster`): `seq` is then
    /// meaningless here and the stream sends it without an `id:`, so a
    /// client's `Last-Event-ID` always names one of this instance's.
    pub origin: Option<Arc<str>>,
}

/// A stream client's events: the backlog first, then the live ones.
pub struct EventFeed {
    /// Events after the client's `Last-Event-ID`, oldest first (empty when
    /// it gave none, or the outbox no longer holds it).
    pub backlog: Vec<StreamEvent>,
    /// The live events; ends when the client is cut.
    pub live: mpsc::Receiver<StreamEvent>,
}

/// The stream's clients.
pub struct Hub {
    clients: Mutex<Vec<mpsc::Sender<StreamEvent>>>,
    /// Events each client's buffer holds.
    buffer: usize,
    /// Most clients at once.
    max_clients: usize,
    /// Clients cut for falling behind.
    pub cut: AtomicU64,
}

/// The stream has all the clients it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl Hub {
    pub fn new(buffer: usize, max_clients: usize) -> Hub {
        Hub {
            clients: Mutex::new(Vec::new()),
            buffer: buffer.max(1),
            max_clients,
            cut: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<mpsc::Sender<StreamEvent>>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new client's buffer; clients gone are forgotten first.
    pub fn subscribe(&self) -> Result<mpsc::Receiver<StreamEvent>, Full> {
        let mut clients = self.lock();
        clients.retain(|c| !c.is_closed());
        if clients.len() >= self.max_clients {
            return Err(Full);
        }
        let (tx, rx) = mpsc::channel(self.buffer);
        clients.push(tx);
        Ok(rx)
    }

    /// Clients connected.
    pub fn clients(&self) -> usize {
        self.lock().iter().filter(|c| !c.is_closed()).count()
    }

    /// Hands `events` to every client, never waiting: a client whose
    /// buffer is full is dropped (its stream ends).
    pub fn publish(&self, events: &[StreamEvent]) {
        let mut clients = self.lock();
        if clients.is_empty() {
            return;
        }
        clients.retain(|c| {
            for e in events {
                match c.try_send(e.clone()) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        self.cut.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(buffer = self.buffer, "event stream client too slow: cut");
                        return false;
                    }
                    Err(TrySendError::Closed(_)) => return false,
                }
            }
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: i64) -> StreamEvent {
        StreamEvent {
            seq,
            id: Arc::from(format!("d{seq}:decision")),
            kind: Arc::from("decision"),
            data: Arc::from("{}"),
            origin: None,
        }
    }

    #[test]
    fn a_slow_client_is_cut_and_the_others_keep_their_events() {
        let hub = Hub::new(2, 4);
        let mut slow = hub.subscribe().expect("slow");
        let mut quick = hub.subscribe().expect("quick");
        hub.publish(&[event(1), event(2)]);
        assert_eq!(quick.try_recv().map(|e| e.seq), Ok(1));
        assert_eq!(quick.try_recv().map(|e| e.seq), Ok(2));
        // The slow one's buffer is full: the third event cuts it.
        hub.publish(&[event(3)]);
        assert_eq!(hub.cut.load(Ordering::Relaxed), 1);
        assert_eq!(quick.try_recv().map(|e| e.seq), Ok(3));
        assert_eq!(slow.try_recv().map(|e| e.seq), Ok(1));
        assert_eq!(slow.try_recv().map(|e| e.seq), Ok(2));
        assert!(
            matches!(
                slow.try_recv(),
                Err(mpsc::error::TryRecvError::Disconnected)
            ),
            "its stream ends"
        );
        assert_eq!(hub.clients(), 1);
    }

    #[test]
    fn clients_are_bounded() {
        let hub = Hub::new(1, 1);
        let first = hub.subscribe().expect("first");
        assert_eq!(hub.subscribe().err(), Some(Full));
        drop(first);
        assert!(hub.subscribe().is_ok(), "a gone client frees its place");
    }
}
