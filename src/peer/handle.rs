//! What the application holds: [`PeerHandle`] to send, call and close; [`Receipt`] and
//! [`PendingRpc`] to learn an outcome; [`Responder`] to answer a request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

use super::gate::{Gate, GateError};
use super::shared::{Command, Reply, RpcCommand, RpcTx, Shared};
use super::{DisconnectReason, DrainReport, PeerId, PeerMetrics};
use crate::error::{RespondError, RpcError, SendError, SendTimeoutError, TrySendError};
use crate::proto::ProtocolId;

/// The terminal outcome of one message sent with a receipt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The kernel took the message's last byte.
    Written,
    /// It will never be written (close deadline, I/O error or abort).
    Abandoned,
}

/// The sending side of a [`Receipt`]. Resolves exactly once: explicitly, or as `Abandoned` when
/// dropped unresolved (so no path can forget it).
#[derive(Debug)]
pub(crate) struct ReceiptTx(Option<Sender<Delivery>>);

impl ReceiptTx {
    pub(crate) fn resolve(mut self, outcome: Delivery) {
        if let Some(tx) = self.0.take() {
            let _ = tx.try_send(outcome);
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
/// [`send_with_receipt`](PeerHandle::send_with_receipt) was written or abandoned.
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

/// An RPC in flight, from [`rpc_start`](PeerHandle::rpc_start). Dropping it cancels the wait
/// (the request may already be on the wire; a late response is ignored).
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
    /// [`RpcError`]: timed out, too many pending, or disconnected.
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

/// Answers one inbound RPC request. Dropping it unanswered sends nothing: the remote times out,
/// as with the original.
#[derive(Debug)]
pub struct Responder {
    replies: Arc<Gate<Reply>>,
    slot: u64,
    deadline: Instant,
    max_payload: usize,
    done: bool,
}

impl Responder {
    pub(crate) fn new(
        replies: Arc<Gate<Reply>>,
        slot: u64,
        deadline: Instant,
        max_payload: usize,
    ) -> Responder {
        Responder {
            replies,
            slot,
            deadline,
            max_payload,
            done: false,
        }
    }

    /// When the remote stops waiting (`inbound_rpc_timeout` after the request arrived).
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Sends the response. Never blocks.
    ///
    /// # Errors
    ///
    /// [`RespondError::TimedOut`] past the deadline, [`RespondError::Disconnected`] once the
    /// connection has closed (or the response exceeds `PeerConfig::max_payload`, which the original
    /// could not send either); nothing is sent then.
    pub fn respond(mut self, data: Bytes) -> Result<(), RespondError> {
        let at = Instant::now();
        if at >= self.deadline {
            return Err(RespondError::TimedOut);
        }
        if data.len() > self.max_payload {
            return Err(RespondError::Disconnected);
        }
        let reply = Reply::Respond {
            slot: self.slot,
            at,
            data,
        };
        // The replies channel is unbounded (at most `max_concurrent_inbound_rpcs` replies can
        // be outstanding), so this never waits.
        match self.replies.try_send(reply) {
            Ok(()) => {
                self.done = true;
                Ok(())
            }
            Err(_) => Err(RespondError::Disconnected),
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.replies.try_send(Reply::Dropped { slot: self.slot });
        }
    }
}

/// The part of the handles whose drop closes the connection.
#[derive(Debug)]
pub(crate) struct HandleInner {
    pub(crate) shared: Arc<Shared>,
    pub(crate) mux_thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        self.shared
            .begin_close(DisconnectReason::RequestedByPeerManager, false);
    }
}

/// The application's handle on a running peer. Cheap to clone, `Send + Sync`. Dropping the
/// last clone starts a graceful close (reason `RequestedByPeerManager`).
#[derive(Clone, Debug)]
pub struct PeerHandle {
    pub(crate) inner: Arc<HandleInner>,
}

impl PeerHandle {
    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    fn check_size(&self, data: &Bytes) -> bool {
        data.len() <= self.shared().config.max_payload()
    }

    /// Queues a direct send, waiting while the outbox is full (until the peer closes).
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
        if !self.check_size(&data) {
            return Err(TrySendError::TooLarge(data));
        }
        let cmd = Command::Send {
            protocol,
            data,
            receipt: None,
        };
        self.shared().outbox.try_send(cmd).map_err(|e| match e {
            GateError::Full(c) => TrySendError::Full(refused(c)),
            GateError::Closed(c) | GateError::Timeout(c) => TrySendError::Closed(refused(c)),
        })
    }

    /// Queues a direct send, waiting at most `timeout` for room in the outbox.
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
        self.send_inner(protocol, data, None, Some(Instant::now() + timeout))
    }

    /// Like [`send`](PeerHandle::send), and returns a [`Receipt`] that resolves to
    /// [`Delivery::Written`] or [`Delivery::Abandoned`].
    ///
    /// # Errors
    ///
    /// As [`send`](PeerHandle::send).
    pub fn send_with_receipt(
        &self,
        protocol: ProtocolId,
        data: Bytes,
    ) -> Result<Receipt, SendError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let receipt = ReceiptTx(Some(tx));
        match self.send_inner(protocol, data, Some(receipt), None) {
            Ok(()) => Ok(Receipt { rx }),
            Err(SendTimeoutError::TooLarge(b)) => Err(SendError::TooLarge(b)),
            Err(SendTimeoutError::Closed(b) | SendTimeoutError::Timeout(b)) => {
                Err(SendError::Closed(b))
            }
        }
    }

    /// Like [`try_send`](PeerHandle::try_send), and returns a [`Receipt`] that resolves to
    /// [`Delivery::Written`] or [`Delivery::Abandoned`]. Never blocks: meant for broadcasts
    /// that must not wait on one slow peer yet account for every message.
    ///
    /// # Errors
    ///
    /// As [`try_send`](PeerHandle::try_send); a refused message gets no outcome.
    pub fn try_send_with_receipt(
        &self,
        protocol: ProtocolId,
        data: Bytes,
    ) -> Result<Receipt, TrySendError> {
        if !self.check_size(&data) {
            return Err(TrySendError::TooLarge(data));
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let cmd = Command::Send {
            protocol,
            data,
            receipt: Some(ReceiptTx(Some(tx))),
        };
        match self.shared().outbox.try_send(cmd) {
            Ok(()) => Ok(Receipt { rx }),
            Err(GateError::Full(c)) => Err(TrySendError::Full(refused(c))),
            Err(GateError::Closed(c) | GateError::Timeout(c)) => {
                Err(TrySendError::Closed(refused(c)))
            }
        }
    }

    fn send_inner(
        &self,
        protocol: ProtocolId,
        data: Bytes,
        receipt: Option<ReceiptTx>,
        deadline: Option<Instant>,
    ) -> Result<(), SendTimeoutError> {
        if !self.check_size(&data) {
            return Err(SendTimeoutError::TooLarge(data));
        }
        let cmd = Command::Send {
            protocol,
            data,
            receipt,
        };
        self.shared()
            .outbox
            .send(cmd, deadline)
            .map_err(|e| match e {
                GateError::Timeout(c) => SendTimeoutError::Timeout(refused(c)),
                GateError::Closed(c) | GateError::Full(c) => SendTimeoutError::Closed(refused(c)),
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
    /// is full. The timeout starts when the mux admits the request.
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
        let (tx, rx) = crossbeam_channel::bounded(1);
        let cancelled = Arc::new(AtomicBool::new(false));
        let cmd = Command::Rpc(Box::new(RpcCommand {
            protocol,
            data,
            timeout,
            reply: RpcTx {
                tx,
                cancelled: cancelled.clone(),
            },
        }));
        match self.shared().outbox.send(cmd, None) {
            Ok(()) => Ok(PendingRpc { rx, cancelled }),
            Err(_) => Err(RpcError::Disconnected),
        }
    }

    /// Closes gracefully: refuses new sends, delivers everything accepted, waits for RPCs in
    /// flight, all within `linger`, then returns the report. If a close is already under way,
    /// waits for it (its reason stands).
    pub fn shutdown(&self, reason: DisconnectReason) -> DrainReport {
        self.shared().begin_close(reason, false);
        self.join()
    }

    /// Starts the same graceful close as [`shutdown`](PeerHandle::shutdown) and returns at
    /// once. The report comes later from [`join`](PeerHandle::join) or the `on_disconnect`
    /// channel. Lets one thread close many connections in parallel, or close one without
    /// waiting for its drain. If a close is already under way, its reason stands.
    pub fn close(&self, reason: DisconnectReason) {
        self.shared().begin_close(reason, false);
    }

    /// Closes at once: writes nothing more, fails every waiting RPC, and reports every
    /// accepted message not yet written as abandoned.
    pub fn abort(&self) -> DrainReport {
        self.shared()
            .begin_close(DisconnectReason::RequestedByPeerManager, true);
        self.join()
    }

    /// Blocks until the connection has closed (by whatever cause) and returns the report.
    pub fn join(&self) -> DrainReport {
        let report = self.shared().wait_report();
        if let Some(t) = self.inner.mux_thread.lock().take() {
            // The mux thread has published the report and is returning; a panic there was
            // already turned into the report.
            let _ = t.join();
        }
        report
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
        let mut m = self.shared().counters.snapshot();
        m.outbox_depth = self.shared().outbox_rx.len() as u64;
        m
    }
}

/// A refused send: hand the payload back; its receipt (if any) must not resolve as abandoned,
/// since the message was never accepted.
fn refused(c: Command) -> Bytes {
    match c {
        Command::Send { data, receipt, .. } => {
            if let Some(mut r) = receipt {
                r.0.take();
            }
            data
        }
        Command::Rpc(rpc) => rpc.data,
    }
}
