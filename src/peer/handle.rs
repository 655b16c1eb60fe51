//! [`PeerHandle`]: what the application holds to send, call and close. Every send, request and
//! response goes into the outbox, in the calling thread's order.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::call::{PendingRpc, RpcTx};
use super::close;
use super::outbox::{Command, Refused, RpcCommand, Why};
use super::receipt::{Receipt, ReceiptTx};
use super::shared::Shared;
use super::{DisconnectReason, DrainReport, PeerId, PeerMetrics};
use crate::error::{JoinError, RpcError, SendError, SendTimeoutError, TrySendError};
use crate::proto::ProtocolId;

/// The part of the handles whose drop closes the connection.
#[derive(Debug)]
pub(crate) struct HandleInner {
    pub(crate) shared: Arc<Shared>,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        close::start(
            &self.shared,
            DisconnectReason::RequestedByPeerManager,
            false,
        );
    }
}

/// The application's handle on a running peer. Cheap to clone, `Send + Sync`. Dropping the
/// last clone starts a graceful close (reason `RequestedByPeerManager`).
#[derive(Clone, Debug)]
pub struct PeerHandle {
    pub(crate) inner: Arc<HandleInner>,
}

/// The payload of a command the outbox refused, to hand back.
fn payload(r: Refused) -> (Why, Bytes) {
    let data = match r.command {
        Command::Send { data, receipt, .. } => {
            // Never accepted, so no outcome: the receipt must not say `Abandoned`.
            ReceiptTx::detach(receipt);
            data
        }
        Command::Rpc(rpc) => rpc.data,
        Command::Respond { data, .. } => data,
        Command::Unanswered { .. } => Bytes::new(),
    };
    (r.why, data)
}

impl PeerHandle {
    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    fn check_size(&self, data: &Bytes) -> bool {
        data.len() <= self.shared().max_payload
    }

    /// Queues a direct send, waiting while the outbox holds `outbox_capacity` sends and RPCs
    /// (until there is room or the peer closes).
    ///
    /// The message keeps its place behind everything this thread sent, requested or answered
    /// before: all of it travels through the one outbox to the mux. A payload larger than a
    /// frame (`max_frame_size` less 64 bytes) is streamed; its fragments interleave with later
    /// small messages, so it does not hold them back for its whole length.
    ///
    /// # Errors
    ///
    /// [`SendError`] with the payload: the peer is closed, or the payload is over
    /// `max_payload`.
    pub fn send(&self, protocol: ProtocolId, data: Bytes) -> Result<(), SendError> {
        self.send_inner(protocol, data, None, None)
            .map_err(|e| match e {
                SendTimeoutError::Closed(b) | SendTimeoutError::Timeout(b) => SendError::Closed(b),
                SendTimeoutError::TooLarge(b) => SendError::TooLarge(b),
            })
    }

    /// Queues a direct send if the outbox has room.
    ///
    /// # Errors
    ///
    /// [`TrySendError`] with the payload: full, closed, or too large.
    pub fn try_send(&self, protocol: ProtocolId, data: Bytes) -> Result<(), TrySendError> {
        self.try_send_inner(protocol, data, None)
    }

    fn try_send_inner(
        &self,
        protocol: ProtocolId,
        data: Bytes,
        receipt: Option<ReceiptTx>,
    ) -> Result<(), TrySendError> {
        if !self.check_size(&data) {
            ReceiptTx::detach(receipt);
            return Err(TrySendError::TooLarge(data));
        }
        let cmd = Command::Send {
            protocol,
            data,
            receipt,
        };
        self.shared()
            .outbox
            .try_send(cmd)
            .map_err(|r| match payload(r) {
                (Why::Full, data) => TrySendError::Full(data),
                (_, data) => TrySendError::Closed(data),
            })
    }

    /// Queues a direct send, waiting at most `timeout` for room in the outbox. A timeout too
    /// long to add to the clock (such as `Duration::MAX`) waits without limit.
    ///
    /// # Errors
    ///
    /// [`SendTimeoutError`] with the payload: timed out, closed, or too large.
    pub fn send_timeout(
        &self,
        protocol: ProtocolId,
        data: Bytes,
        timeout: Duration,
    ) -> Result<(), SendTimeoutError> {
        self.send_inner(protocol, data, None, Some(timeout))
    }

    /// Like [`send`](PeerHandle::send), and returns a [`Receipt`] that resolves to
    /// [`Delivery::Written`](crate::Delivery::Written) or
    /// [`Delivery::Abandoned`](crate::Delivery::Abandoned).
    ///
    /// # Errors
    ///
    /// As [`send`](PeerHandle::send).
    pub fn send_with_receipt(
        &self,
        protocol: ProtocolId,
        data: Bytes,
    ) -> Result<Receipt, SendError> {
        let (tx, receipt) = ReceiptTx::new();
        match self.send_inner(protocol, data, Some(tx), None) {
            Ok(()) => Ok(receipt),
            Err(SendTimeoutError::TooLarge(b)) => Err(SendError::TooLarge(b)),
            Err(SendTimeoutError::Closed(b) | SendTimeoutError::Timeout(b)) => {
                Err(SendError::Closed(b))
            }
        }
    }

    /// Like [`try_send`](PeerHandle::try_send), and returns a [`Receipt`]. Never blocks: meant
    /// for broadcasts that must not wait on one slow peer yet account for every message.
    ///
    /// # Errors
    ///
    /// As [`try_send`](PeerHandle::try_send); a refused message gets no outcome.
    pub fn try_send_with_receipt(
        &self,
        protocol: ProtocolId,
        data: Bytes,
    ) -> Result<Receipt, TrySendError> {
        let (tx, receipt) = ReceiptTx::new();
        self.try_send_inner(protocol, data, Some(tx))
            .map(|()| receipt)
    }

    fn send_inner(
        &self,
        protocol: ProtocolId,
        data: Bytes,
        receipt: Option<ReceiptTx>,
        timeout: Option<Duration>,
    ) -> Result<(), SendTimeoutError> {
        if !self.check_size(&data) {
            ReceiptTx::detach(receipt);
            return Err(SendTimeoutError::TooLarge(data));
        }
        let cmd = Command::Send {
            protocol,
            data,
            receipt,
        };
        let deadline = timeout.map(Shared::after);
        self.shared()
            .outbox
            .send(cmd, deadline)
            .map_err(|r| match payload(r) {
                (Why::Timeout, data) => SendTimeoutError::Timeout(data),
                (_, data) => SendTimeoutError::Closed(data),
            })
    }

    /// Sends a request and blocks until its response, `timeout`, or the close.
    ///
    /// # Errors
    ///
    /// [`RpcError`]: `TimedOut`, `TooManyPending`, `Disconnected`, `Cancelled` (abort) or
    /// `TooLarge`.
    pub fn rpc(
        &self,
        protocol: ProtocolId,
        data: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, RpcError> {
        self.rpc_start(protocol, data, timeout)?.wait()
    }

    /// Sends a request and returns at once with a [`PendingRpc`]. Waits only while the outbox
    /// is full. The timeout starts when the mux admits the request; a timeout too long to add
    /// to the clock (such as `Duration::MAX`) means none.
    ///
    /// # Errors
    ///
    /// [`RpcError::Disconnected`] if the peer is closed, [`RpcError::TooLarge`] over
    /// `max_payload`.
    pub fn rpc_start(
        &self,
        protocol: ProtocolId,
        data: Bytes,
        timeout: Duration,
    ) -> Result<PendingRpc, RpcError> {
        if !self.check_size(&data) {
            return Err(RpcError::TooLarge);
        }
        let (reply, pending) = RpcTx::new();
        let cmd = Command::Rpc(Box::new(RpcCommand {
            protocol,
            data,
            timeout,
            reply,
        }));
        match self.shared().outbox.send(cmd, None) {
            Ok(()) => Ok(pending),
            Err(_) => Err(RpcError::Disconnected),
        }
    }

    /// Closes gracefully: refuses new sends, delivers everything accepted, waits for RPCs in
    /// flight, all within `linger`, then returns the report. If a close is already under way,
    /// waits for it (its reason stands).
    ///
    /// # Errors
    ///
    /// [`JoinError::OwnThread`] when called on one of the connection's own threads (inside an
    /// inline handler): the close is started, but not waited for.
    pub fn shutdown(&self, reason: DisconnectReason) -> Result<DrainReport, JoinError> {
        self.close(reason);
        self.join()
    }

    /// Starts the same graceful close as [`shutdown`](PeerHandle::shutdown) and returns at
    /// once. The report comes later from [`join`](PeerHandle::join) or the `on_disconnect`
    /// channel. Lets one thread close many connections in parallel, or close one without
    /// waiting for its drain. If a close is already under way, its reason stands.
    pub fn close(&self, reason: DisconnectReason) {
        close::start(&self.inner.shared, reason, false);
    }

    /// Closes at once: writes nothing more, fails every waiting RPC, and reports every
    /// accepted message not yet written as abandoned.
    ///
    /// # Errors
    ///
    /// [`JoinError::OwnThread`] on one of the connection's own threads, as for
    /// [`shutdown`](PeerHandle::shutdown).
    pub fn abort(&self) -> Result<DrainReport, JoinError> {
        close::start(
            &self.inner.shared,
            DisconnectReason::RequestedByPeerManager,
            true,
        );
        self.join()
    }

    /// Blocks until the connection has closed (by whatever cause) and all its threads have
    /// ended, and returns the report.
    ///
    /// # Errors
    ///
    /// [`JoinError::OwnThread`] on one of the connection's own threads (inside an inline
    /// handler), where waiting would wait for the thread itself.
    pub fn join(&self) -> Result<DrainReport, JoinError> {
        if super::is_own_thread(&self.inner.shared) {
            return Err(JoinError::OwnThread);
        }
        Ok(self.shared().wait_report())
    }

    /// True once a close has started.
    pub fn is_closed(&self) -> bool {
        self.shared().is_closing()
    }

    /// The remote's id.
    pub fn remote_peer_id(&self) -> PeerId {
        self.shared().remote
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> PeerMetrics {
        let shared = self.shared();
        let mut m = shared.counters.snapshot();
        m.outbox_depth = shared.outbox.depth() as u64;
        m
    }
}
