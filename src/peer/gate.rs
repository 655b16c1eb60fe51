//! [`Gate`]: the front door of a channel that can be closed from the sending side.
//!
//! crossbeam channels have no receiver-side close, so stopping intake is done here: the gate
//! holds the channel's only long-lived `Sender` and drops it on [`close`](Gate::close). A send
//! either happens entirely before the close (it holds the lock, or a clone of the sender, while
//! it sends) or is refused with its value handed back. Once the gate is closed and the last
//! in-flight send has finished, the receiver sees `Disconnected` *after* it has received every
//! accepted value: that ordering is what lets the mux drain without polling.

use std::time::Instant;

use crossbeam_channel::{Receiver, Select, Sender, TrySendError};
use parking_lot::{Mutex, RwLock};

/// Why a value was not accepted; it is handed back.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum GateError<T> {
    /// The gate is closed.
    Closed(T),
    /// The channel is full (non-blocking send only).
    Full(T),
    /// The channel stayed full until the deadline.
    Timeout(T),
}

#[derive(Debug)]
pub(crate) struct Gate<T> {
    tx: RwLock<Option<Sender<T>>>,
    /// Disconnected when the gate closes, to wake senders blocked on a full channel.
    closed_rx: Receiver<()>,
    closed_tx: Mutex<Option<Sender<()>>>,
}

impl<T> Gate<T> {
    pub(crate) fn new(tx: Sender<T>) -> Gate<T> {
        let (closed_tx, closed_rx) = crossbeam_channel::bounded(0);
        Gate {
            tx: RwLock::new(Some(tx)),
            closed_rx,
            closed_tx: Mutex::new(Some(closed_tx)),
        }
    }

    /// Sends without blocking.
    pub(crate) fn try_send(&self, value: T) -> Result<(), GateError<T>> {
        // The read lock is held across the send, so `close` cannot slip in between the check
        // and the send.
        match &*self.tx.read() {
            None => Err(GateError::Closed(value)),
            Some(tx) => tx.try_send(value).map_err(|e| match e {
                TrySendError::Full(v) => GateError::Full(v),
                TrySendError::Disconnected(v) => GateError::Closed(v),
            }),
        }
    }

    /// Sends, waiting while the channel is full until `deadline` (forever if `None`) or until
    /// the gate closes.
    pub(crate) fn send(&self, value: T, deadline: Option<Instant>) -> Result<(), GateError<T>> {
        let value = match self.try_send(value) {
            Err(GateError::Full(v)) => v,
            other => return other,
        };
        // Slow path: wait on a clone of the sender (so `close` is not blocked by us) and on the
        // close signal.
        let Some(tx) = self.tx.read().clone() else {
            return Err(GateError::Closed(value));
        };
        let mut sel = Select::new();
        let send_index = sel.send(&tx);
        sel.recv(&self.closed_rx);
        let oper = match deadline {
            None => sel.select(),
            Some(d) => match sel.select_deadline(d) {
                Ok(oper) => oper,
                Err(_) => return Err(GateError::Timeout(value)),
            },
        };
        if oper.index() == send_index {
            oper.send(&tx, value).map_err(|e| GateError::Closed(e.0))
        } else {
            // Completes the selected operation; the close signal carries no value.
            let _ = oper.recv(&self.closed_rx);
            Err(GateError::Closed(value))
        }
    }

    /// Refuses every later send. Returns true if this call closed it.
    pub(crate) fn close(&self) -> bool {
        let was_open = self.tx.write().take().is_some();
        self.closed_tx.lock().take();
        was_open
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn close_disconnects_after_accepted_values() {
        let (tx, rx) = crossbeam_channel::bounded(4);
        let gate = Gate::new(tx);
        gate.try_send(1).unwrap();
        gate.send(2, None).unwrap();
        assert!(gate.close());
        assert!(!gate.close());
        assert_eq!(gate.try_send(3), Err(GateError::Closed(3)));
        assert_eq!(rx.recv_timeout(Duration::from_secs(1)), Ok(1));
        assert_eq!(rx.recv_timeout(Duration::from_secs(1)), Ok(2));
        assert!(rx.recv_timeout(Duration::from_secs(1)).is_err());
    }

    #[test]
    fn full_then_timeout_then_woken_by_close() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let gate = std::sync::Arc::new(Gate::new(tx));
        gate.try_send(1).unwrap();
        assert_eq!(gate.try_send(2), Err(GateError::Full(2)));
        let soon = Instant::now() + Duration::from_millis(10);
        assert_eq!(gate.send(2, Some(soon)), Err(GateError::Timeout(2)));
        let g = gate.clone();
        let blocked = std::thread::spawn(move || g.send(3, None));
        std::thread::sleep(Duration::from_millis(20));
        gate.close();
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || done_tx.send(blocked.join().unwrap()));
        assert_eq!(
            done_rx.recv_timeout(Duration::from_secs(5)),
            Ok(Err(GateError::Closed(3)))
        );
        assert_eq!(rx.recv_timeout(Duration::from_secs(1)), Ok(1));
        assert!(rx.recv_timeout(Duration::from_secs(1)).is_err());
    }
}
