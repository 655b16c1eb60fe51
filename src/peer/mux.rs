//! The mux thread (`syncpeer-mux`): the event loop and single owner of the connection's
//! [`Session`]. It waits only in a crossbeam `Select` over the outbox, the reader's channel,
//! the close and abort signals, room in the frames channel, and the next deadline.
//!
//! On each wake-up it handles the input, then everything already waiting (up to a burst), then
//! delivers the session's events and moves its frames into a [`Batch`], which it hands to the
//! writer through the frames channel whenever the channel has room: while the writer is busy
//! the batch keeps growing, which is where batching comes from. It never blocks on an
//! application: handler channels and RPC callers are written with `try_send`.
//!
//! Backpressure: once the batch holds [`HIGH_WATER`] bytes and the frames channel is full, the
//! mux stops taking commands from the outbox (so `send` waits or reports `Full`), while the
//! reader's input, the timers and the close go on being served. Input from the reader is always
//! taken, so the reader never stalls on the mux, and two peers flooding each other with
//! requests cannot deadlock; what that input makes this side queue is bounded instead (see
//! [`Mux::admit`] and [`MAX_ERROR_REPLIES`]).
//!
//! Once the close has started, the loop runs until everything accepted has been turned into
//! frames and the RPCs in flight have finished (or the drain deadline, or an abort); then
//! [`Mux::finish`] closes the outbox, settles what is left and the thread ends. The closer,
//! which joins it, sends `DrainAndClose` after the last frame.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use crossbeam_channel::{Receiver, Select, Sender, TryRecvError, TrySendError};

use super::batch::{Batch, Kind, Settled, Tag, ToWriter};
use super::call::RpcTx;
use super::close;
use super::handler::Handlers;
use super::held::Held;
use super::metrics::Counters;
use super::outbox::{Command, RpcCommand};
use super::receipt::ReceiptTx;
use super::shared::{FromReader, Shared};
use super::spin;
use crate::error::RpcError;
use crate::proto::stream::fragment_size;
use crate::proto::{NetworkMessage, ProtocolId, RpcRefused, Session};

mod events;

/// Rounds of inputs handled per wake-up before the batch is handed over.
const BURST: usize = 1024;
/// Inputs taken from one channel in a row within a round.
const RUN: usize = 64;
/// Bytes the mux holds in its batch before it stops moving frames out of the session, and
/// (with the frames channel full) stops taking commands.
pub(crate) const HIGH_WATER: usize = 256 * 1024;
/// `ParsingError` replies queued and not yet written past which further ones are not sent
/// (counted in `error_replies_dropped`): a remote that sends malformed frames and never reads
/// cannot make this side queue more.
pub(crate) const MAX_ERROR_REPLIES: usize = 64;

/// What one wait produced.
enum Input {
    Command(Command),
    Reader(FromReader),
    ReaderGone,
    Closing,
    Aborted,
    Nothing,
}

pub(crate) struct Mux {
    shared: Arc<Shared>,
    handlers: Handlers,
    session: Session<RpcTx, Tag>,
    outbox: Receiver<Command>,
    inbound: Receiver<FromReader>,
    frames: Sender<ToWriter>,
    /// Scratch for small frames, split into the batch's chunks.
    head: BytesMut,
    pending: Batch,
    /// Requests waiting for room in their blocking handler. Each holds an inbound RPC slot, so
    /// they are at most `max_concurrent_inbound_rpcs`.
    held: Held,
    closing: bool,
    aborted: bool,
    reader_open: bool,
    /// Sends and RPCs taken from the outbox and not yet reported to it (room is made once
    /// per run, not once per command).
    taken: usize,
    /// The largest payload that fits one frame.
    single_frame_max: usize,
}

impl Mux {
    pub(crate) fn new(
        shared: Arc<Shared>,
        handlers: Handlers,
        outbox: Receiver<Command>,
        inbound: Receiver<FromReader>,
        frames: Sender<ToWriter>,
    ) -> Mux {
        Mux {
            single_frame_max: fragment_size(shared.config.max_frame_size),
            session: Session::new(shared.config.session()),
            shared,
            handlers,
            outbox,
            inbound,
            frames,
            head: BytesMut::new(),
            pending: Batch::default(),
            held: Held::new(),
            closing: false,
            aborted: false,
            reader_open: true,
            taken: 0,
        }
    }

    /// The thread's body.
    pub(crate) fn run(mut self) {
        self.event_loop();
        log::debug!("peer {}: mux drained, finishing", self.shared.remote);
        self.finish();
        log::debug!("peer {}: mux exits", self.shared.remote);
    }

    /// Runs until the connection is drained, the drain deadline passes, or an abort.
    fn event_loop(&mut self) {
        loop {
            let now = Instant::now();
            self.timers(now);
            self.burst(now);
            self.pump();
            if self.aborted || self.shared.is_aborted() {
                return;
            }
            let drain_deadline = if self.closing {
                self.shared.deadline()
            } else {
                None
            };
            let past = drain_deadline.is_some_and(|d| now >= d);
            if self.closing && (past || self.is_drained()) {
                return;
            }
            let deadline = match (self.session.poll_timeout(), drain_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let input = self.wait(deadline);
            let now = Instant::now();
            // Timers first: an RPC due before this input arrived has timed out, and a slot
            // that expired frees room for the request that may be this input.
            self.timers(now);
            self.handle(input, now);
        }
    }

    fn timers(&mut self, now: Instant) {
        if self.session.poll_timeout().is_some_and(|t| t <= now) {
            self.session.handle_timeout(now);
        }
    }

    /// Takes commands only while the batch has room: this is how backpressure reaches `send`.
    fn takes_commands(&self) -> bool {
        self.pending.len() < HIGH_WATER
    }

    /// Nothing left to write and no RPC that can still complete. Outbound RPCs are waited for
    /// only while the reader runs (after the remote's EOF no response can arrive) and while
    /// the writer works (after a write failure no request or response can be written).
    fn is_drained(&self) -> bool {
        let write_failed = self.shared.write_failed.load(Ordering::Relaxed);
        !self.session.has_transmit()
            && self.pending.is_empty()
            && self.outbox.is_empty()
            && (self.session.inbound_rpcs() == 0 || write_failed)
            && (self.session.outbound_rpcs() == 0 || !self.reader_open || write_failed)
    }

    /// Blocks until one input, room in the frames channel for the batch, or `deadline`.
    fn wait(&mut self, deadline: Option<Instant>) -> Input {
        self.pending.seal(&mut self.head);
        // Room in a blocking handler for a held request.
        let waiting = self.held.waiting(&self.handlers);
        let mut sel = Select::new();
        let i_out = self.takes_commands().then(|| sel.recv(&self.outbox));
        let i_in = self.reader_open.then(|| sel.recv(&self.inbound));
        let i_close = (!self.closing).then(|| sel.recv(self.shared.outbox.input_closed.receiver()));
        let i_abort = sel.recv(self.shared.abort_signal.receiver());
        let i_send = (!self.pending.is_empty()).then(|| sel.send(&self.frames));
        let i_room: Vec<usize> = waiting.iter().map(|(_, tx)| sel.send(tx)).collect();
        let oper = match spin::poll_for(self.shared.config.spin, deadline, || sel.try_select().ok())
        {
            Some(oper) => oper,
            None => match deadline {
                None => sel.select(),
                Some(d) => match sel.select_deadline(d) {
                    Ok(oper) => oper,
                    Err(_) => return Input::Nothing,
                },
            },
        };
        let i = Some(oper.index());
        if i == i_out {
            // The outbox disconnects only when the mux itself closes it.
            oper.recv(&self.outbox)
                .map_or(Input::Nothing, Input::Command)
        } else if i == i_in {
            oper.recv(&self.inbound)
                .map_or(Input::ReaderGone, Input::Reader)
        } else if i == i_close {
            let _ = oper.recv(self.shared.outbox.input_closed.receiver());
            Input::Closing
        } else if i == Some(i_abort) {
            let _ = oper.recv(self.shared.abort_signal.receiver());
            Input::Aborted
        } else if let Some(k) = i_room.iter().position(|&r| Some(r) == i) {
            let (sink, tx) = &waiting[k];
            let flushed = self
                .held
                .send_selected(&self.handlers, oper, *sink, tx, Instant::now());
            self.settle_held(flushed);
            Input::Nothing
        } else {
            debug_assert_eq!(i, i_send);
            let batch = std::mem::take(&mut self.pending);
            if let Err(e) = oper.send(&self.frames, ToWriter::Batch(batch)) {
                self.writer_gone(e.into_inner());
            }
            Input::Nothing
        }
    }

    fn handle(&mut self, input: Input, now: Instant) {
        match input {
            Input::Command(c) => self.command(c, now),
            Input::Reader(m) => self.reader_input(m, now),
            Input::ReaderGone => self.reader_open = false,
            Input::Closing => self.closing = true,
            Input::Aborted => self.aborted = true,
            Input::Nothing => {}
        }
    }

    /// Handles whatever is already waiting, without blocking.
    fn burst(&mut self, now: Instant) {
        for _ in 0..BURST {
            let mut progressed = false;
            // Commands in runs: under load the outbox is where the messages are.
            for _ in 0..RUN {
                if !self.takes_commands() {
                    break;
                }
                let Ok(c) = self.outbox.try_recv() else {
                    break;
                };
                self.command(c, now);
                progressed = true;
            }
            self.release_taken();
            for _ in 0..RUN {
                if !self.reader_open {
                    break;
                }
                match self.inbound.try_recv() {
                    Ok(m) => {
                        self.reader_input(m, now);
                        progressed = true;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => self.reader_open = false,
                }
            }
            if !self.closing && self.shared.outbox.input_closed.is_fired() {
                self.closing = true;
            }
            self.fill();
            self.flush_held(now);
            if !progressed {
                break;
            }
        }
    }

    /// Makes room in the outbox for the sends and RPCs taken.
    fn release_taken(&mut self) {
        self.shared.outbox.took(std::mem::take(&mut self.taken));
    }

    fn command(&mut self, c: Command, now: Instant) {
        let shared = &self.shared;
        let counters = &shared.counters;
        match c {
            Command::Send {
                protocol,
                data,
                receipt,
            } => {
                self.taken += 1;
                let len = data.len();
                if len <= self.single_frame_max && !self.session.has_transmit() {
                    // The common case, straight into the batch: a message that fits one frame,
                    // with nothing queued in the session ahead of it (so the order is the
                    // session's), needs none of its bookkeeping.
                    return self.push_direct(protocol, data, receipt);
                }
                if let Err((_, tag)) = self.session.send(protocol, data, Tag::message(receipt)) {
                    // The handle checked the size against the same limit: unreachable, but the
                    // message was accepted, so it is accounted for.
                    let mut abandoned = Settled::default();
                    abandoned.add(tag.kind, len);
                    shared.count_abandoned(abandoned);
                }
            }
            Command::Rpc(rpc) => {
                self.taken += 1;
                self.start_rpc(*rpc, now);
            }
            Command::Respond { slot, at, data } => {
                let len = data.len();
                match self
                    .session
                    .respond(slot, at, data, Tag::of(Kind::Response))
                {
                    Ok(()) => {
                        shared.responses_unsent.fetch_add(1, Ordering::Relaxed);
                        Counters::add(&counters.inbound_rpcs_answered, 1);
                    }
                    Err(_) => {
                        // Accepted by the outbox, too late for the session (the request expired
                        // while the response was queued): it will never be written.
                        Counters::add(&counters.inbound_rpcs_unanswered, 1);
                        shared.count_abandoned(Settled {
                            messages: 1,
                            bytes: len as u64,
                            ..Settled::default()
                        });
                    }
                }
            }
            Command::Unanswered { slot } => {
                self.session.abandon_request(slot);
                Counters::add(&counters.inbound_rpcs_unanswered, 1);
            }
        }
    }

    /// Encodes a direct send that fits one frame into the batch.
    fn push_direct(&mut self, protocol: ProtocolId, data: Bytes, receipt: Option<ReceiptTx>) {
        let max = self.shared.config.max_frame_size;
        let tag = Tag::message(receipt);
        if let Err(e) = self
            .pending
            .push_direct_send(protocol, data, tag, max, &mut self.head)
        {
            // The payload fits one frame by the check above: a bug if it happens.
            log::error!("peer {}: frame not sent: {e}", self.shared.remote);
        }
    }

    fn start_rpc(&mut self, rpc: RpcCommand, now: Instant) {
        let RpcCommand {
            protocol,
            data,
            timeout,
            reply,
        } = rpc;
        if self.session.outbound_rpcs() >= self.shared.config.max_concurrent_outbound_rpcs {
            // Completions the reader delivered but the mux has not seen yet still hold slots:
            // take them in first, then drop the RPCs whose callers left.
            while let Ok(m) = self.inbound.try_recv() {
                self.reader_input(m, now);
            }
            for id in self.session.cancel_rpcs_where(RpcTx::is_cancelled) {
                self.shared.take_caller(id);
                Counters::add(&self.shared.counters.rpcs_cancelled, 1);
            }
        }
        let counters = &self.shared.counters;
        let len = data.len();
        let caller = reply.tx.clone();
        match self
            .session
            .start_rpc(now, protocol, data, timeout, reply, Tag::message(None))
        {
            Ok(id) => {
                // Registered before the request can be written, so before any response.
                self.shared.callers.lock().insert(id, caller);
                counters.accept(len);
                Counters::add(&counters.rpc_requests_accepted, 1);
                log::trace!("peer {}: rpc {} started", self.shared.remote, id.0);
            }
            Err(RpcRefused::TooManyPending(n, reply)) => {
                Counters::add(&counters.rpcs_refused, 1);
                reply.finish(Err(RpcError::TooManyPending(n)));
            }
            Err(RpcRefused::TooLarge(_, reply)) => reply.finish(Err(RpcError::TooLarge)),
        }
    }

    /// Whether an inbound request can be admitted: the requests the application holds plus
    /// the responses not yet written stay within `max_concurrent_inbound_rpcs`. A remote that
    /// sends requests and never reads the responses therefore makes this side queue at most
    /// that many responses; its further requests are dropped and counted, as at the limit.
    fn admit(&self) -> bool {
        let unsent = self.shared.responses_unsent.load(Ordering::Relaxed);
        self.session.inbound_rpcs() + unsent < self.shared.config.max_concurrent_inbound_rpcs
    }

    fn reader_input(&mut self, m: FromReader, now: Instant) {
        let shared = &self.shared;
        let counters = &shared.counters;
        if m.is_request() {
            shared.requests_taken.fetch_add(1, Ordering::Relaxed);
        }
        match m {
            FromReader::Message(NetworkMessage::RpcRequest(r)) if !self.admit() => {
                Counters::add(&counters.dropped_inbound_rpc_limit, 1);
                shared.warnings.inbound_rpc_limit.warn(
                    &shared.remote,
                    &format_args!("{}, request {}", r.protocol_id, r.request_id.0),
                );
            }
            FromReader::Message(m) => self.session.handle_message(now, m),
            FromReader::Malformed(e) => {
                let unsent = shared.error_replies_unsent.load(Ordering::Relaxed);
                if unsent < MAX_ERROR_REPLIES {
                    shared.error_replies_unsent.fetch_add(1, Ordering::Relaxed);
                    self.session.handle_malformed(&e, Tag::of(Kind::ErrorReply));
                } else {
                    Counters::add(&counters.error_replies_dropped, 1);
                    shared.warnings.error_replies.warn(&shared.remote, &e);
                }
            }
            FromReader::Completed(id) => {
                // `None`: it expired meanwhile, and the timer found the caller already taken
                // and counted it then.
                if self.session.complete_rpc(id).is_some() {
                    Counters::add(&counters.rpcs_succeeded, 1);
                    Counters::add(&counters.responses_matched, 1);
                }
            }
        }
    }

    /// Delivers the session's events and moves its frames into the batch, up to the mark.
    fn fill(&mut self) {
        while let Some(ev) = self.session.poll_event() {
            self.deliver(ev);
        }
        while self.pending.len() < HIGH_WATER {
            let Some(t) = self.session.poll_transmit() else {
                break;
            };
            log::trace!("peer {}: frame out", self.shared.remote);
            if let Err(e) = self
                .pending
                .push(t, self.shared.config.max_frame_size, &mut self.head)
            {
                // Payloads are bounded so that every frame fits: a bug if it happens.
                log::error!("peer {}: frame not sent: {e}", self.shared.remote);
            }
        }
    }

    /// Hands batches to the writer while the frames channel has room and the session has
    /// frames.
    fn pump(&mut self) {
        loop {
            self.fill();
            if self.pending.is_empty() {
                return;
            }
            self.pending.seal(&mut self.head);
            let batch = std::mem::take(&mut self.pending);
            match self.frames.try_send(ToWriter::Batch(batch)) {
                Ok(()) => {}
                Err(TrySendError::Full(ToWriter::Batch(b))) => {
                    self.pending = b;
                    return;
                }
                Err(e) => {
                    self.writer_gone(e.into_inner());
                    return;
                }
            }
        }
    }

    /// The writer has ended (it panicked): what was for it is abandoned.
    fn writer_gone(&mut self, item: ToWriter) {
        if let ToWriter::Batch(b) = item {
            let mut abandoned = Settled::default();
            b.abandon(&mut abandoned);
            self.shared.count_abandoned(abandoned);
        }
    }

    /// After the loop: closes the outbox, settles what is left, and hands the last frames to
    /// the writer. Past the deadline (or on abort) nothing more is sent: it is abandoned.
    fn finish(&mut self) {
        let shared = self.shared.clone();
        let now = Instant::now();
        self.aborted |= shared.is_aborted();
        let past = self.aborted || shared.deadline().is_some_and(|d| now >= d);
        // The barrier: once this returns, every reply accepted is in the channel.
        shared.outbox.close();
        let left: Vec<Command> = self.outbox.try_iter().collect();
        for c in left {
            match c {
                // A request is not started during the close's last step.
                c @ Command::Rpc(_) => close::settle_refused(&shared, std::iter::once(c)),
                c if past => close::settle_refused(&shared, std::iter::once(c)),
                c => self.command(c, now),
            }
        }
        self.taken = 0;
        let mut abandoned = Settled::default();
        if !past {
            // Everything the session holds goes out, waiting for room as the writer drains
            // (bounded: past the deadline it abandons what it is given).
            loop {
                self.fill();
                if self.pending.is_empty() {
                    break;
                }
                self.pending.seal(&mut self.head);
                let batch = std::mem::take(&mut self.pending);
                if let Err(e) = self.frames.send(ToWriter::Batch(batch)) {
                    self.writer_gone(e.into_inner());
                    break;
                }
            }
        }
        // Requests still waiting for room: their remote is waiting for an answer that can no
        // longer be sent (the outbox is closed). Their responders drop here.
        let (expired, rest) = self.held.clear(now);
        Counters::add(&shared.counters.dropped_handler_full, expired);
        Counters::add(&shared.counters.dropped_at_close, rest);
        let leftovers = self.session.close();
        for (id, _) in leftovers.rpcs {
            let Some(caller) = shared.take_caller(id) else {
                // Answered by the reader; the mux had not seen the completion yet.
                Counters::add(&shared.counters.rpcs_succeeded, 1);
                Counters::add(&shared.counters.responses_matched, 1);
                continue;
            };
            Counters::add(&shared.counters.rpcs_failed_at_close, 1);
            let _ = caller.try_send(Err(close::rpc_error(&shared)));
        }
        for c in leftovers.messages {
            abandoned.add(c.tag.kind, c.len);
        }
        self.pending.seal(&mut self.head);
        std::mem::take(&mut self.pending).abandon(&mut abandoned);
        shared.count_abandoned(abandoned);
    }
}
