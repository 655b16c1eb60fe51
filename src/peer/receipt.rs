//! [`Receipt`]: the outcome of one message sent with a receipt, and [`ReceiptTx`], its sending
//! side, which travels with the message from the outbox to the writer.

use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

/// The terminal outcome of one message sent with a receipt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The kernel took the message's last byte.
    Written,
    /// It will never be written (close deadline, I/O error or abort).
    Abandoned,
}

/// The sending side of a [`Receipt`]. Resolves exactly once: explicitly, or as `Abandoned` when
/// dropped unresolved (so no path, a panic included, can forget it).
#[derive(Debug)]
pub(crate) struct ReceiptTx(Option<Sender<Delivery>>);

impl ReceiptTx {
    pub(crate) fn new() -> (ReceiptTx, Receipt) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        (ReceiptTx(Some(tx)), Receipt { rx })
    }

    pub(crate) fn resolve(mut self, outcome: Delivery) {
        if let Some(tx) = self.0.take() {
            // Capacity 1 and a single send: never blocks. A receipt dropped is no error.
            let _ = tx.try_send(outcome);
        }
    }

    /// The message was refused, so it has no outcome: the receipt must not resolve at all.
    pub(crate) fn detach(receipt: Option<ReceiptTx>) {
        if let Some(mut r) = receipt {
            r.0.take();
        }
    }
}

impl Drop for ReceiptTx {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.try_send(Delivery::Abandoned);
        }
    }
}

/// Learns whether a message sent with
/// [`send_with_receipt`](crate::PeerHandle::send_with_receipt) was written or abandoned.
#[derive(Debug)]
pub struct Receipt {
    rx: Receiver<Delivery>,
}

impl Receipt {
    /// Blocks until the outcome is known. Bounded: every accepted message is resolved by the
    /// end of the close, at the latest `linger` (or `write_timeout`) after it starts.
    pub fn wait(&self) -> Delivery {
        self.rx.recv().unwrap_or(Delivery::Abandoned)
    }

    /// Like [`wait`](Receipt::wait), giving up after `timeout` with `None`.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Delivery> {
        match self.rx.recv_timeout(timeout) {
            Ok(d) => Some(d),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => Some(Delivery::Abandoned),
        }
    }

    /// The outcome if already known.
    pub fn try_get(&self) -> Option<Delivery> {
        self.rx.try_recv().ok()
    }
}
