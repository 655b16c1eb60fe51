//! What the application holds: [`PeerHandle`] to send, call and close; [`Receipt`] and
//! [`PendingRpc`] to learn an outcome; [`Responder`] to answer a request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

use super::gate::GateError;
use super::lane::{NotTaken, Why};
use super::shared::{Command, Reply, RpcCommand, RpcTx, Shared};
use super::{DisconnectReason, DrainReport, PeerId, PeerMetrics};
use crate::error::{JoinError, RespondError, RpcError, SendError, SendTimeoutError, TrySendError};
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
pub struct Responder {
    shared: Arc<Shared>,
    slot: u64,
    deadline: Instant,
    max_payload: usize,
    done: bool,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("peer", &self.shared.remote)
            .field("slot", &self.slot)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Responder {
    pub(crate) fn new(
        shared: Arc<Shared>,
        slot: u64,
        deadline: Instant,
        max_payload: usize,
    ) -> Responder {
        Responder {
            shared,
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
        // Held in order with this thread's later direct sends (see the lane).
        self.shared.lane.hold();
        // The replies channel is unbounded (at most `max_concurrent_inbound_rpcs` replies can
        // be outstanding), so this never waits.
        match self.shared.replies.try_send(reply) {
            Ok(()) => {
                self.done = true;
                Ok(())
            }
            Err(_) => {
                self.shared.lane.cancel_slow();
                Err(RespondError::Disconnected)
            }
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.done {
            let _ = self
                .shared
                .replies
                .try_send(Reply::Dropped { slot: self.slot });
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

    /// Queues a direct send, waiting while its queue is full (until the peer closes).
    ///
    /// A payload that fits one frame (`max_frame_size` less 64 bytes), sent while nothing
    /// accepted earlier waits in the outbox, is encoded on the calling thread straight into the
    /// lane in front of the writer (its queue, `outbox_capacity` messages); on an idle
    /// connection the calling thread also writes it (one non-blocking system call), so no
    /// thread is woken. Otherwise it goes through the outbox to the mux, which streams payloads
    /// too large for one frame. Either way the message keeps its place behind everything this
    /// thread had sent before.
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

    /// Queues a direct send if its queue has room.
    ///
    /// # Errors
    ///
    /// [`TrySendError`] with the payload: full, closed, or too large.
    pub fn try_send(&self, protocol: ProtocolId, data: Bytes) -> Result<(), TrySendError> {
        if !self.check_size(&data) {
            return Err(TrySendError::TooLarge(data));
        }
        self.try_send_inner(protocol, data, None)
    }

    /// The fast path if it takes the message, else the outbox without waiting.
    fn try_send_inner(
        &self,
        protocol: ProtocolId,
        data: Bytes,
        receipt: Option<ReceiptTx>,
    ) -> Result<(), TrySendError> {
        let cmd = match self.fast_or_command(protocol, data, receipt) {
            Route::Taken => return Ok(()),
            Route::Outbox(cmd) => cmd,
            Route::Refused(data, r, why) => {
                detach(r);
                return Err(match why {
                    Why::Full => TrySendError::Full(data),
                    _ => TrySendError::Closed(data),
                });
            }
        };
        let shared = self.shared();
        shared.outbox.try_send(cmd).map_err(|e| {
            shared.lane.cancel_slow();
            match e {
                GateError::Full(c) => TrySendError::Full(refused(c)),
                GateError::Closed(c) | GateError::Timeout(c) => TrySendError::Closed(refused(c)),
            }
        })
    }

    /// Takes the lane's fast path if it can; otherwise announces a command for the outbox,
    /// which the caller must send or cancel, or refuses (closed, or the lane is full) and hands
    /// the message back.
    fn fast_or_command(
        &self,
        protocol: ProtocolId,
        data: Bytes,
        receipt: Option<ReceiptTx>,
    ) -> Route {
        let shared = self.shared();
        match shared.fast_send(protocol, data, receipt) {
            Ok(()) => Route::Taken,
            Err(NotTaken {
                data,
                receipt,
                why: Why::Behind,
            }) if shared.lane.begin_slow() => Route::Outbox(Command::Send {
                protocol,
                data,
                receipt,
            }),
            Err(NotTaken { data, receipt, why }) => {
                let why = if why == Why::Behind { Why::Closed } else { why };
                Route::Refused(data, receipt, why)
            }
        }
    }

    /// Queues a direct send, waiting at most `timeout` for room in its queue.
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
        self.try_send_inner(protocol, data, Some(ReceiptTx(Some(tx))))
            .map(|()| Receipt { rx })
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
        let shared = self.shared();
        let (mut data, mut receipt) = (data, receipt);
        let cmd = loop {
            match self.fast_or_command(protocol, data, receipt) {
                Route::Taken => return Ok(()),
                Route::Outbox(cmd) => break cmd,
                Route::Refused(d, r, Why::Full) => match shared.lane.wait_room(deadline) {
                    Ok(()) => (data, receipt) = (d, r),
                    Err(why) => {
                        detach(r);
                        return Err(if why == Why::Timeout {
                            SendTimeoutError::Timeout(d)
                        } else {
                            SendTimeoutError::Closed(d)
                        });
                    }
                },
                Route::Refused(d, r, _) => {
                    detach(r);
                    return Err(SendTimeoutError::Closed(d));
                }
            }
        };
        shared.outbox.send(cmd, deadline).map_err(|e| {
            shared.lane.cancel_slow();
            match e {
                GateError::Timeout(c) => SendTimeoutError::Timeout(refused(c)),
                GateError::Closed(c) | GateError::Full(c) => SendTimeoutError::Closed(refused(c)),
            }
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
        let shared = self.shared();
        if !shared.lane.begin_slow() {
            return Err(RpcError::Disconnected);
        }
        match shared.outbox.send(cmd, None) {
            Ok(()) => Ok(PendingRpc { rx, cancelled }),
            Err(_) => {
                shared.lane.cancel_slow();
                Err(RpcError::Disconnected)
            }
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
    ///
    /// # Errors
    ///
    /// [`JoinError::OwnThread`] on one of the connection's own threads, as for
    /// [`shutdown`](PeerHandle::shutdown).
    pub fn abort(&self) -> Result<DrainReport, JoinError> {
        self.shared()
            .begin_close(DisconnectReason::RequestedByPeerManager, true);
        self.join()
    }

    /// Blocks until the connection has closed (by whatever cause) and returns the report.
    ///
    /// # Errors
    ///
    /// [`JoinError::OwnThread`] on one of the connection's own threads (inside an inline
    /// handler), where waiting would wait for the thread itself.
    pub fn join(&self) -> Result<DrainReport, JoinError> {
        if super::is_own_thread(&self.inner.shared) {
            return Err(JoinError::OwnThread);
        }
        let report = self.shared().wait_report();
        if let Some(t) = self.inner.mux_thread.lock().take() {
            // The mux thread has published the report and is returning; a panic there was
            // already turned into the report.
            let _ = t.join();
        }
        Ok(report)
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
        let mut m = shared.lane.snapshot(&shared.counters);
        m.outbox_depth += shared.outbox_rx.len() as u64;
        m
    }
}

/// Where a direct send went.
enum Route {
    Taken,
    Outbox(Command),
    Refused(Bytes, Option<ReceiptTx>, Why),
}

/// A message that was not accepted: its receipt must not resolve (as abandoned on drop).
fn detach(receipt: Option<ReceiptTx>) {
    if let Some(mut r) = receipt {
        r.0.take();
    }
}

/// A refused send: hand the payload back; its receipt (if any) must not resolve as abandoned,
/// since the message was never accepted.
fn refused(c: Command) -> Bytes {
    match c {
        Command::Send { data, receipt, .. } => {
            detach(receipt);
            data
        }
        Command::Rpc(rpc) => rpc.data,
    }
}
