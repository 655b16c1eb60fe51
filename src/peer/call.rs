//! An outbound RPC seen from its caller: [`PendingRpc`], and [`RpcTx`], the end that delivers
//! the one outcome.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::error::RpcError;

/// Where an outbound RPC's outcome goes.
#[derive(Debug)]
pub(crate) struct RpcTx {
    pub(crate) tx: Sender<Result<Bytes, RpcError>>,
    /// Set when the caller drops its `PendingRpc` without a result: frees the slot early.
    pub(crate) cancelled: Arc<AtomicBool>,
}

impl RpcTx {
    pub(crate) fn new() -> (RpcTx, PendingRpc) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let cancelled = Arc::new(AtomicBool::new(false));
        (
            RpcTx {
                tx,
                cancelled: cancelled.clone(),
            },
            PendingRpc { rx, cancelled },
        )
    }

    pub(crate) fn finish(self, result: Result<Bytes, RpcError>) {
        // Capacity 1 and a single send: never blocks. A caller that left is not an error.
        let _ = self.tx.try_send(result);
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

/// An RPC in flight, from [`rpc_start`](crate::PeerHandle::rpc_start). Dropping it cancels
/// the wait (the request may already be on the wire; a late response is ignored).
#[derive(Debug)]
pub struct PendingRpc {
    rx: Receiver<Result<Bytes, RpcError>>,
    cancelled: Arc<AtomicBool>,
}

impl PendingRpc {
    /// Blocks until the response, the RPC's timeout, or the close.
    ///
    /// # Errors
    ///
    /// [`RpcError`]: timed out, too many pending, disconnected, cancelled or too large.
    pub fn wait(self) -> Result<Bytes, RpcError> {
        self.rx.recv().unwrap_or(Err(RpcError::Disconnected))
    }

    /// Like [`wait`](PendingRpc::wait) but gives up after `timeout`, handing the pending RPC
    /// back.
    ///
    /// # Errors
    ///
    /// `Err(Ok(self))` if nothing came in time; `Err(Err(e))` if the RPC failed.
    #[allow(clippy::result_large_err)]
    pub fn wait_timeout(self, timeout: Duration) -> Result<Bytes, Result<PendingRpc, RpcError>> {
        match self.rx.recv_timeout(timeout) {
            Ok(Ok(b)) => Ok(b),
            Ok(Err(e)) => Err(Err(e)),
            Err(RecvTimeoutError::Timeout) => Err(Ok(self)),
            Err(RecvTimeoutError::Disconnected) => Err(Err(RpcError::Disconnected)),
        }
    }

    /// The channel on which the outcome arrives, for `crossbeam_channel::select!`. Exactly one
    /// value arrives, at the latest at the RPC's timeout.
    pub fn receiver(&self) -> &Receiver<Result<Bytes, RpcError>> {
        &self.rx
    }
}

impl Drop for PendingRpc {
    fn drop(&mut self) {
        if self.rx.is_empty() {
            self.cancelled.store(true, Ordering::Relaxed);
        }
    }
}
