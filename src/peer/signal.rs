//! [`Signal`]: a one-shot event that any number of threads can wait for, alone or inside a
//! crossbeam `Select`.
//!
//! It is a zero-capacity channel whose only sender is dropped when the signal fires. Nothing
//! is ever sent: every receiver sees `Disconnected` from then on, and crossbeam wakes every
//! thread waiting on it, so a `Select` that includes it cannot miss the event.

use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

#[derive(Debug)]
pub(crate) struct Signal {
    tx: Mutex<Option<Sender<()>>>,
    rx: Receiver<()>,
    fired: AtomicBool,
}

impl Signal {
    pub(crate) fn new() -> Signal {
        let (tx, rx) = crossbeam_channel::bounded(0);
        Signal {
            tx: Mutex::new(Some(tx)),
            rx,
            fired: AtomicBool::new(false),
        }
    }

    /// Fires the signal; true if this call fired it.
    pub(crate) fn fire(&self) -> bool {
        self.fired.store(true, Ordering::SeqCst);
        self.tx.lock().take().is_some()
    }

    pub(crate) fn is_fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    /// Ready (disconnected) once the signal has fired.
    pub(crate) fn receiver(&self) -> &Receiver<()> {
        &self.rx
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn fires_once_and_wakes_a_waiting_select() {
        let s = std::sync::Arc::new(Signal::new());
        let waiter = s.clone();
        let t = std::thread::spawn(move || {
            crossbeam_channel::select! {
                recv(waiter.receiver()) -> r => r.is_err(),
                default(Duration::from_secs(20)) => false,
            }
        });
        std::thread::sleep(Duration::from_millis(10));
        assert!(!s.is_fired());
        assert!(s.fire());
        assert!(!s.fire());
        assert!(s.is_fired());
        assert!(t.join().unwrap(), "woken by the signal, not the bound");
    }
}
