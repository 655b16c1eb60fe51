//! What a connection's threads and handles share: the configuration, the outbox, atomic
//! counters, the close's state and the routing table of outbound RPC callers. Protocol state is
//! not here: the mux owns the session, the reader the decoder and reassembler, the writer the
//! socket's write side.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};

use super::batch::{Settled, ToWriter};
use super::metrics::{Counters, RateLimited};
use super::outbox::{Command, Outbox};
use super::signal::Signal;
use super::{DisconnectReason, Disconnected, DrainReport, PeerId};
use crate::config::PeerConfig;
use crate::error::RpcError;
use crate::proto::{FrameError, NetworkMessage, RequestId};

/// What the reader hands the mux (direct sends go from the reader to their handler).
#[derive(Debug)]
pub(crate) enum FromReader {
    Message(NetworkMessage),
    Malformed(FrameError),
    /// The reader answered this outbound RPC's caller itself (see `Shared::callers`); the mux
    /// only updates its bookkeeping.
    Completed(RequestId),
}

impl FromReader {
    /// Counts a message that arrived after the mux had ended: a response can complete no call,
    /// a request can no longer be answered (dropped at the close), an error is counted as
    /// received. (A malformed frame was counted when it was read; its reply is moot.)
    pub(crate) fn count_unhandled(&self, counters: &Counters) {
        match self {
            FromReader::Message(NetworkMessage::RpcResponse(_)) => {
                Counters::add(&counters.unknown_responses, 1);
            }
            FromReader::Message(NetworkMessage::RpcRequest(_)) => {
                Counters::add(&counters.dropped_at_close, 1);
            }
            FromReader::Message(NetworkMessage::Error(_)) => {
                Counters::add(&counters.remote_errors, 1);
            }
            // The reader delivers direct sends itself.
            FromReader::Message(NetworkMessage::DirectSendMsg(_))
            | FromReader::Malformed(_)
            | FromReader::Completed(_) => {}
        }
    }

    /// True for an RPC request (counted in `Shared::requests_to_mux`).
    pub(crate) fn is_request(&self) -> bool {
        matches!(self, FromReader::Message(NetworkMessage::RpcRequest(_)))
    }
}

/// Logs that would otherwise flood: one warning a second each.
#[derive(Debug)]
pub(crate) struct Warnings {
    pub(crate) unknown_protocol: RateLimited,
    pub(crate) handler_full: RateLimited,
    pub(crate) inbound_rpc_limit: RateLimited,
    pub(crate) malformed: RateLimited,
    pub(crate) error_replies: RateLimited,
    pub(crate) stream: RateLimited,
    pub(crate) remote_error: RateLimited,
}

impl Default for Warnings {
    fn default() -> Warnings {
        Warnings {
            unknown_protocol: RateLimited::new("dropped message for unknown protocol"),
            handler_full: RateLimited::new("dropped message, handler full"),
            inbound_rpc_limit: RateLimited::new("dropped rpc request over the limit"),
            malformed: RateLimited::new("malformed frame"),
            error_replies: RateLimited::new("error reply not sent, too many unsent"),
            stream: RateLimited::new("bad stream frame"),
            remote_error: RateLimited::new("remote reported an error"),
        }
    }
}

/// The connection's threads and the channel ends the close needs: taken by whoever starts the
/// close, and handed to the closer thread.
#[derive(Debug)]
pub(crate) struct Threads {
    pub(crate) mux: JoinHandle<()>,
    pub(crate) writer: JoinHandle<()>,
    pub(crate) reader: JoinHandle<()>,
    /// Disconnected when the reader thread ends.
    pub(crate) reader_done: Receiver<()>,
    /// The closer's end of the frames channel, for `DrainAndClose`.
    pub(crate) frames: Sender<ToWriter>,
    /// To settle what a mux that panicked left in the outbox.
    pub(crate) outbox: Receiver<Command>,
    pub(crate) on_disconnect: Option<Sender<Disconnected>>,
}

/// Where the close stands.
#[derive(Debug, Default)]
pub(crate) struct CloseState {
    pub(crate) reason: Option<DisconnectReason>,
    pub(crate) started: Option<Instant>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) aborted: bool,
    pub(crate) report: Option<DrainReport>,
    /// Until the close starts (or until they are installed, if it started during the spawn).
    pub(crate) threads: Option<Threads>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: PeerConfig,
    /// `config.max_payload()`, computed once: it is checked on every send.
    pub(crate) max_payload: usize,
    pub(crate) remote: PeerId,
    pub(crate) outbox: Outbox,
    pub(crate) counters: Arc<Counters>,
    pub(crate) warnings: Warnings,
    pub(crate) close: Mutex<CloseState>,
    pub(crate) finished: Condvar,
    /// Fast flags for the hot loops; the authoritative values are in `close`.
    closing: AtomicBool,
    aborted: AtomicBool,
    /// Fires on abort: wakes the mux out of its `Select`.
    pub(crate) abort_signal: Signal,
    /// A connection thread panicked: the report reconciles what it held.
    pub(crate) panicked: AtomicBool,
    /// The writer gave up (write error or timeout): nothing more will be written.
    pub(crate) write_failed: AtomicBool,
    /// Callers of outbound RPCs whose request was admitted, by request id. The reader hands a
    /// response straight to its caller from here, which saves the RPC path one thread hop.
    /// Exactly one outcome per caller: the entry is removed under this lock by whoever
    /// delivers (the reader on a response, the mux on the timeout, a cancellation or the
    /// close), and only the remover sends.
    pub(crate) callers: Mutex<HashMap<RequestId, Sender<Result<Bytes, RpcError>>>>,
    /// Responses and error replies handed to the writer and not yet settled: they bound what a
    /// remote that never reads can make this side queue (see `Mux::admit`).
    pub(crate) responses_unsent: AtomicUsize,
    pub(crate) error_replies_unsent: AtomicUsize,
    /// RPC requests the reader handed to the mux, and those the mux took. Once both threads
    /// have ended, the difference is what was still in the channel when the mux ended: the
    /// closer counts it in `dropped_at_close`.
    pub(crate) requests_to_mux: AtomicU64,
    pub(crate) requests_taken: AtomicU64,
    /// Set to make the reader stop reading; its waker interrupts its `Poll`, and the signal
    /// its wait for room in a blocking handler.
    pub(crate) reader_stop: AtomicBool,
    pub(crate) reader_waker: mio::Waker,
    pub(crate) reader_stop_signal: Signal,
    /// Interrupts the writer's wait for a writable socket (the deadline changed).
    pub(crate) writer_waker: OnceLock<mio::Waker>,
}

impl Shared {
    pub(crate) fn new(
        config: PeerConfig,
        remote: PeerId,
        outbox: Outbox,
        counters: Arc<Counters>,
        reader_waker: mio::Waker,
    ) -> Shared {
        Shared {
            max_payload: config.max_payload(),
            config,
            remote,
            outbox,
            counters,
            warnings: Warnings::default(),
            close: Mutex::new(CloseState::default()),
            finished: Condvar::new(),
            closing: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
            abort_signal: Signal::new(),
            panicked: AtomicBool::new(false),
            write_failed: AtomicBool::new(false),
            callers: Mutex::new(HashMap::new()),
            responses_unsent: AtomicUsize::new(0),
            error_replies_unsent: AtomicUsize::new(0),
            requests_to_mux: AtomicU64::new(0),
            requests_taken: AtomicU64::new(0),
            reader_stop: AtomicBool::new(false),
            reader_waker,
            reader_stop_signal: Signal::new(),
            writer_waker: OnceLock::new(),
        }
    }

    /// Records the start of the close (the first reason wins; `abort` makes a started close an
    /// abort). Returns the threads if this call is the first to find them: the caller must then
    /// have them closed. Nothing else happens here: the effects are `close::start`'s.
    pub(crate) fn record_close(&self, reason: DisconnectReason, abort: bool) -> Option<Threads> {
        let now = Instant::now();
        let mut st = self.close.lock();
        if st.reason.is_none() {
            st.reason = Some(reason);
            st.started = Some(now);
            st.deadline = Some(crate::proto::deadline_after(now, self.config.linger));
            log::debug!("peer {}: close started: {reason}", self.remote);
        }
        if abort && !st.aborted {
            st.aborted = true;
            st.deadline = Some(now);
            self.aborted.store(true, Ordering::SeqCst);
            log::debug!("peer {}: aborted", self.remote);
        }
        self.closing.store(true, Ordering::SeqCst);
        st.threads.take()
    }

    /// Keeps the threads until a close starts; hands them back if it already has.
    pub(crate) fn install_threads(&self, threads: Threads) -> Option<Threads> {
        let mut st = self.close.lock();
        if st.reason.is_some() {
            return Some(threads);
        }
        st.threads = Some(threads);
        None
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    pub(crate) fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Relaxed)
    }

    /// The drain deadline, once the close has started.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.close.lock().deadline
    }

    /// `now + d`, saturated (see `proto::deadline_after`).
    pub(crate) fn after(d: Duration) -> Instant {
        crate::proto::deadline_after(Instant::now(), d)
    }

    /// Takes the caller of RPC `id`, if nobody has delivered its outcome yet.
    pub(crate) fn take_caller(&self, id: RequestId) -> Option<Sender<Result<Bytes, RpcError>>> {
        self.callers.lock().remove(&id)
    }

    /// Tells the reader to stop reading, or waiting for room in a blocking handler.
    pub(crate) fn stop_reader(&self) {
        self.reader_stop.store(true, Ordering::SeqCst);
        self.reader_stop_signal.fire();
        // An error means the poll is gone, i.e. the reader has ended.
        let _ = self.reader_waker.wake();
    }

    /// Counts the requests the reader handed to the mux that the mux never took (they were in
    /// the channel when it ended). Call once, after both threads have ended.
    pub(crate) fn count_requests_left_to_mux(&self) {
        let handed = self.requests_to_mux.load(Ordering::SeqCst);
        let taken = self.requests_taken.load(Ordering::SeqCst);
        Counters::add(
            &self.counters.dropped_at_close,
            handed.saturating_sub(taken),
        );
    }

    /// Counts one write of `wire` bytes to the socket and what it settled.
    pub(crate) fn count_write(&self, wire: usize, s: Settled) {
        let c = &self.counters;
        Counters::add(&c.write_calls, 1);
        Counters::add(&c.wire_bytes_out, wire as u64);
        self.count_written(s);
    }

    /// Adds what the writer (or the mux, at the end) settled as written.
    pub(crate) fn count_written(&self, s: Settled) {
        let c = &self.counters;
        self.settle(s, &c.messages_written, &c.bytes_written);
    }

    /// Adds what was settled as abandoned.
    pub(crate) fn count_abandoned(&self, s: Settled) {
        let c = &self.counters;
        self.settle(s, &c.messages_abandoned, &c.bytes_abandoned);
    }

    /// Counts `s`'s messages and bytes, and releases its responses and error replies from
    /// the bounds on what is unsent.
    fn settle(&self, s: Settled, messages: &AtomicU64, bytes: &AtomicU64) {
        if s == Settled::default() {
            // Nothing settled (a batch written whole has nothing left to abandon): no
            // read-modify-write on lines the other threads use.
            return;
        }
        Counters::add(messages, s.messages);
        Counters::add(bytes, s.bytes);
        self.responses_unsent
            .fetch_sub(s.responses, Ordering::Relaxed);
        self.error_replies_unsent
            .fetch_sub(s.error_replies, Ordering::Relaxed);
    }

    /// Blocks until the closer has published the report.
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
