//! State shared by a connection's threads and handles, the messages they pass to each other,
//! and the one entry point that starts a close ([`Shared::begin_close`]).

use std::collections::HashMap;
use std::io::IoSlice;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};

use super::gate::Gate;
use super::handle::{Delivery, ReceiptTx};
use super::lane::Lane;
use super::metrics::{Counters, RateLimited};
use super::socket::Half;
use super::{DisconnectReason, DrainReport, PeerId};
use crate::config::PeerConfig;
use crate::error::RpcError;
use crate::proto::codec::encode_frame_split;
use crate::proto::{FrameError, FrameTooLarge, NetworkMessage, ProtocolId, RequestId, Transmit};

/// What an application thread asks the mux to do.
#[derive(Debug)]
pub(crate) enum Command {
    Send {
        protocol: ProtocolId,
        data: Bytes,
        receipt: Option<ReceiptTx>,
    },
    /// Boxed: the outbox preallocates every slot, and an unboxed RPC would make each slot of
    /// every peer's outbox as large as this rarer command.
    Rpc(Box<RpcCommand>),
}

/// An outbound RPC on its way to the mux.
#[derive(Debug)]
pub(crate) struct RpcCommand {
    pub(crate) protocol: ProtocolId,
    pub(crate) data: Bytes,
    pub(crate) timeout: Duration,
    pub(crate) reply: RpcTx,
}

/// Where an outbound RPC's outcome goes.
#[derive(Debug)]
pub(crate) struct RpcTx {
    pub(crate) tx: Sender<Result<Bytes, RpcError>>,
    /// Set when the caller drops its `PendingRpc` without a result: frees the slot early.
    pub(crate) cancelled: Arc<AtomicBool>,
}

impl RpcTx {
    pub(crate) fn finish(self, result: Result<Bytes, RpcError>) {
        // Capacity 1 and a single send: never blocks. A caller that left is not an error.
        let _ = self.tx.try_send(result);
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

/// What a `Responder` tells the mux. Exactly one per admitted request.
#[derive(Debug)]
pub(crate) enum Reply {
    Respond { slot: u64, at: Instant, data: Bytes },
    Dropped { slot: u64 },
}

/// What the reader hands the mux (direct sends bypass it).
#[derive(Debug)]
pub(crate) enum FromReader {
    Message(NetworkMessage),
    Malformed(FrameError),
    /// The reader answered this outbound RPC's caller itself (see `Shared::waiters`); the mux
    /// only updates its bookkeeping.
    Completed(RequestId),
}

impl FromReader {
    /// Counts a message that arrived after the mux stopped handling them: a response can
    /// complete no call, a request can no longer be answered. (A malformed frame was counted
    /// when it was read; its reply is moot.)
    pub(crate) fn count_unhandled(&self, counters: &Counters) {
        match self {
            FromReader::Message(NetworkMessage::RpcResponse(_)) => {
                Counters::add(&counters.unknown_responses, 1);
            }
            FromReader::Message(_) => Counters::add(&counters.dropped_handler_full, 1),
            // The caller was answered by the reader, and the close counted it as succeeded
            // when it found the waiter gone.
            FromReader::Malformed(_) | FromReader::Completed(_) => {}
        }
    }
}

/// The message whose last byte ends at `end` within its batch.
#[derive(Debug)]
pub(crate) struct Mark {
    pub(crate) end: usize,
    pub(crate) len: usize,
    pub(crate) receipt: Option<ReceiptTx>,
}

/// Encoded frames ready for one vectored write: small frames packed together, large payloads
/// as their own chunks (shared with the sender's buffer, not copied).
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) chunks: Vec<Bytes>,
    pub(crate) marks: Vec<Mark>,
    pub(crate) len: usize,
    /// Bytes already written (a batch can be started by the mux and finished by the writer).
    pub(crate) written: usize,
    /// Marks already resolved as written.
    next_mark: usize,
}

impl Batch {
    /// Appends one frame. `head` is the mux's scratch buffer, split off into chunks.
    pub(crate) fn push(
        &mut self,
        t: Transmit<Option<ReceiptTx>>,
        max_frame_size: usize,
        head: &mut BytesMut,
    ) -> Result<(), FrameTooLarge> {
        let before = head.len();
        if let Some(payload) = encode_frame_split(&t.message, max_frame_size, head)? {
            self.len += head.len() - before + payload.len();
            self.chunks.push(head.split().freeze());
            self.chunks.push(payload);
        } else {
            self.len += head.len() - before;
        }
        if let Some(c) = t.completes {
            self.marks.push(Mark {
                end: self.len,
                len: c.len,
                receipt: c.tag,
            });
        }
        Ok(())
    }

    /// Appends a sealed batch that nothing has been written from.
    pub(crate) fn append(&mut self, mut other: Batch) {
        debug_assert_eq!(other.written, 0);
        let base = self.len;
        self.marks.extend(other.marks.drain(..).map(|m| Mark {
            end: m.end + base,
            ..m
        }));
        self.chunks.append(&mut other.chunks);
        self.len += other.len;
    }

    /// Moves the bytes still in `head` into the batch; call before handing it over.
    pub(crate) fn seal(&mut self, head: &mut BytesMut) {
        if !head.is_empty() {
            self.chunks.push(head.split().freeze());
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn is_written(&self) -> bool {
        self.written == self.len
    }

    /// Appends slices of the bytes not yet written, up to `max` slices in `out`.
    pub(crate) fn unwritten<'a>(&'a self, out: &mut Vec<IoSlice<'a>>, max: usize) {
        let mut skip = self.written;
        for chunk in &self.chunks {
            if out.len() == max {
                return;
            }
            if skip >= chunk.len() {
                skip -= chunk.len();
                continue;
            }
            out.push(IoSlice::new(&chunk[skip..]));
            skip = 0;
        }
    }

    /// Records up to `n` more bytes as written and resolves the messages they complete,
    /// adding them to `done` (messages, payload bytes). Returns the bytes taken from `n`.
    pub(crate) fn advance(&mut self, n: usize, done: &mut (u64, u64)) -> usize {
        let step = n.min(self.len - self.written);
        self.written += step;
        while let Some(mark) = self.marks.get_mut(self.next_mark) {
            if mark.end > self.written {
                break;
            }
            done.0 += 1;
            done.1 += mark.len as u64;
            if let Some(r) = mark.receipt.take() {
                r.resolve(Delivery::Written);
            }
            self.next_mark += 1;
        }
        step
    }

    /// Counts every message of the batch not yet written as abandoned.
    pub(crate) fn abandon(mut self, counters: &Counters) {
        for mark in self.marks.drain(self.next_mark..) {
            counters.abandon(mark.len, mark.receipt);
        }
    }
}

/// Writes as much of `batches` as the socket takes in one vectored call and resolves the
/// messages completed; fully written batches stay for the caller to remove. Never blocks: the
/// socket is non-blocking.
pub(crate) fn write_batches(
    half: &Half,
    batches: &mut [Batch],
    counters: &Counters,
) -> std::io::Result<usize> {
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(MAX_IOV);
    for b in batches.iter() {
        b.unwritten(&mut slices, MAX_IOV);
        if slices.len() == MAX_IOV {
            break;
        }
    }
    let written = half.write_vectored(&slices)?;
    drop(slices);
    Counters::add(&counters.write_calls, 1);
    Counters::add(&counters.wire_bytes_out, written as u64);
    let (mut n, mut done) = (written, (0, 0));
    for b in batches.iter_mut() {
        if n == 0 {
            break;
        }
        n -= b.advance(n, &mut done);
    }
    Counters::add(&counters.messages_written, done.0);
    Counters::add(&counters.bytes_written, done.1);
    Ok(written)
}

/// Most slices handed to one `writev`.
const MAX_IOV: usize = 64;

impl Counters {
    pub(crate) fn abandon(&self, len: usize, receipt: Option<ReceiptTx>) {
        Counters::add(&self.messages_abandoned, 1);
        Counters::add(&self.bytes_abandoned, len as u64);
        if let Some(r) = receipt {
            r.resolve(Delivery::Abandoned);
        }
    }

    pub(crate) fn accept(&self, len: usize) {
        Counters::add(&self.messages_accepted, 1);
        Counters::add(&self.bytes_accepted, len as u64);
    }
}

/// Where the close stands.
#[derive(Debug, Default)]
pub(crate) struct CloseState {
    pub(crate) reason: Option<DisconnectReason>,
    pub(crate) started: Option<Instant>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) aborted: bool,
    pub(crate) report: Option<DrainReport>,
}

/// Logs that would otherwise flood: one warning a second each.
#[derive(Debug)]
pub(crate) struct Warnings {
    pub(crate) unknown_protocol: RateLimited,
    pub(crate) handler_full: RateLimited,
    pub(crate) inbound_rpc_limit: RateLimited,
    pub(crate) malformed: RateLimited,
    pub(crate) stream: RateLimited,
    pub(crate) remote_error: RateLimited,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: PeerConfig,
    pub(crate) remote: PeerId,
    pub(crate) outbox: Gate<Command>,
    /// Kept only to sample the outbox depth.
    pub(crate) outbox_rx: Receiver<Command>,
    pub(crate) replies: Arc<Gate<Reply>>,
    pub(crate) counters: Counters,
    pub(crate) warnings: Warnings,
    pub(crate) close: Mutex<CloseState>,
    pub(crate) finished: Condvar,
    /// Fast flags for the hot loops; the authoritative values are in `close`.
    pub(crate) closing: AtomicBool,
    pub(crate) aborted: AtomicBool,
    /// Callers of outbound RPCs whose request was admitted, by request id. The reader hands a
    /// response straight to its caller from here (no hop through the mux); the mux takes the
    /// entry at the RPC's deadline or at the close. Whoever removes the entry delivers the one
    /// outcome.
    pub(crate) waiters: Mutex<HashMap<RequestId, Sender<Result<Bytes, RpcError>>>>,
    /// The ordered queue of encoded frames in front of the socket (see `lane.rs`).
    pub(crate) lane: Lane,
    /// Set by the supervisor (or an abort) to make the reader stop reading.
    pub(crate) reader_stop: AtomicBool,
    pub(crate) reader_waker: mio::Waker,
    pub(crate) writer_waker: mio::Waker,
}

impl Shared {
    /// Starts the close (or, if started, only makes it an abort). The first reason wins.
    pub(crate) fn begin_close(&self, reason: DisconnectReason, abort: bool) {
        let now = Instant::now();
        {
            let mut st = self.close.lock();
            if st.reason.is_none() {
                st.reason = Some(reason);
                st.started = Some(now);
                st.deadline = Some(now + self.config.linger);
                log::debug!("peer {}: close started: {reason}", self.remote);
            }
            if abort && !st.aborted {
                st.aborted = true;
                st.deadline = Some(now);
                self.aborted.store(true, Ordering::SeqCst);
                self.reader_stop.store(true, Ordering::SeqCst);
                log::debug!("peer {}: aborted", self.remote);
            }
            self.closing.store(true, Ordering::SeqCst);
        }
        self.lane.close_input();
        self.outbox.close();
        // The writer may be waiting on a full socket with an older deadline; the reader must
        // notice an abort. A waker error means the poll is gone, i.e. the thread has ended.
        let _ = self.writer_waker.wake();
        if abort {
            let _ = self.reader_waker.wake();
        }
    }

    /// Takes the caller of RPC `id`, if nobody has delivered its outcome yet.
    pub(crate) fn take_waiter(&self, id: RequestId) -> Option<Sender<Result<Bytes, RpcError>>> {
        self.waiters.lock().remove(&id)
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    pub(crate) fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Relaxed)
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.close.lock().deadline
    }

    /// Blocks until the supervisor has published the report.
    pub(crate) fn wait_report(&self) -> DrainReport {
        let mut st = self.close.lock();
        loop {
            if let Some(report) = &st.report {
                return report.clone();
            }
            self.finished.wait(&mut st);
        }
    }
}
