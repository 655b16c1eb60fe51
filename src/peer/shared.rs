//! State shared by a connection's threads and handles, the messages they pass to each other,
//! and the one entry point that starts a close ([`Shared::begin_close`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};

use super::gate::Gate;
use super::handle::{Delivery, ReceiptTx};
use super::metrics::{Counters, RateLimited};
use super::{DisconnectReason, DrainReport, PeerId};
use crate::config::PeerConfig;
use crate::error::RpcError;
use crate::proto::codec::encode_frame_split;
use crate::proto::{FrameError, FrameTooLarge, NetworkMessage, ProtocolId, Transmit};

/// What an application thread asks the mux to do.
#[derive(Debug)]
pub(crate) enum Command {
    Send {
        protocol: ProtocolId,
        data: Bytes,
        receipt: Option<ReceiptTx>,
    },
    Rpc {
        protocol: ProtocolId,
        data: Bytes,
        timeout: Duration,
        reply: RpcTx,
    },
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
            FromReader::Malformed(_) => {}
        }
    }
}

/// What the writer receives, in order, through one channel.
#[derive(Debug)]
pub(crate) enum WriterCmd {
    Batch(Batch),
    /// Everything sent before this has been sent; write it, then half-close.
    DrainAndClose,
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

    /// Moves the bytes still in `head` into the batch; call before handing it over.
    pub(crate) fn seal(&mut self, head: &mut BytesMut) {
        if !head.is_empty() {
            self.chunks.push(head.split().freeze());
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Counts every message of the batch from `first_mark` on as abandoned.
    pub(crate) fn abandon_from(mut self, first_mark: usize, counters: &Counters) {
        for mark in self.marks.drain(first_mark..) {
            counters.abandon(mark.len, mark.receipt);
        }
    }
}

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
        self.outbox.close();
        // The writer may be waiting on a full socket with an older deadline; the reader must
        // notice an abort. A waker error means the poll is gone, i.e. the thread has ended.
        let _ = self.writer_waker.wake();
        if abort {
            let _ = self.reader_waker.wake();
        }
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
