//! The mux thread (`syncpeer-mux`): the event loop and single owner of the connection's
//! [`Session`]. It waits only in a crossbeam `Select` over the outbox, the reader's channel,
//! the replies channel, room in the writer's channel, and the next deadline.
//!
//! On each wake-up it handles one input, then every input already waiting (up to a burst), then
//! moves the session's frames into a [`Batch`] and appends it to the [lane](super::lane). It
//! never blocks on an application: handler channels and RPC reply channels are written with
//! `try_send`. When the lane is full it keeps its batch and stops taking commands from the
//! outbox, which is how backpressure reaches `send`, while inbound traffic and timers keep
//! being served; the writer rings `room_rx` when it takes the lane's content.
//!
//! When the loop ends (drained, drain deadline, or abort) the same thread runs the close
//! sequence described in the `peer` module docs: see `supervisor.rs`.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use crossbeam_channel::{Receiver, Select, TryRecvError};

use super::Inbound;
use super::builder::Handlers;
use super::handle::{ReceiptTx, Responder};
use super::lane::HIGH_WATER;
use super::metrics::Counters;
use super::shared::{Batch, Command, FromReader, Reply, RpcCommand, RpcTx, Shared};
use super::spin;
use crate::error::RpcError;
use crate::proto::{Event, RpcFailure, RpcRefused, Session};

/// Rounds of inputs handled per wake-up before the batch is handed over.
const BURST: usize = 1024;
/// Commands taken from the outbox in a row within one round.
const OUTBOX_RUN: usize = 64;

/// What one wait produced.
enum Input {
    Command(Command),
    OutboxClosed,
    Reader(FromReader),
    ReaderGone,
    Reply(Reply),
    Nothing,
}

pub(crate) struct Mux {
    pub(super) shared: Arc<Shared>,
    handlers: Handlers,
    session: Session<RpcTx, Option<ReceiptTx>>,
    outbox: Receiver<Command>,
    pub(super) inbound: Receiver<FromReader>,
    replies: Receiver<Reply>,
    head: BytesMut,
    out: Batch,
    /// Commands and replies taken (each held the lane's fast path back) whose frames are not
    /// all in the lane yet.
    taken: u64,
    outbox_open: bool,
    inbound_open: bool,
}

impl Mux {
    pub(crate) fn new(
        shared: Arc<Shared>,
        handlers: Handlers,
        outbox: Receiver<Command>,
        inbound: Receiver<FromReader>,
        replies: Receiver<Reply>,
    ) -> Mux {
        Mux {
            session: Session::new(shared.config.session()),
            shared,
            handlers,
            outbox,
            inbound,
            replies,
            head: BytesMut::new(),
            out: Batch::default(),
            taken: 0,
            outbox_open: true,
            inbound_open: true,
        }
    }

    /// Runs until the connection is drained, the drain deadline passes, or an abort.
    pub(super) fn event_loop(&mut self) {
        loop {
            let now = Instant::now();
            if self.shared.is_aborted() {
                return;
            }
            if self.session.poll_timeout().is_some_and(|t| t <= now) {
                self.session.handle_timeout(now);
            }
            self.pump();
            // The outbox disconnects only after the gate closed, i.e. a close started.
            let drain_deadline = if self.outbox_open {
                None
            } else {
                self.shared.deadline()
            };
            if !self.outbox_open && (self.is_drained() || drain_deadline.is_some_and(|d| now >= d))
            {
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
            if self.session.poll_timeout().is_some_and(|t| t <= now) {
                self.session.handle_timeout(now);
            }
            self.handle(input, now);
            self.burst(now);
        }
    }

    /// Nothing left to write and no RPC that can still complete. Outbound RPCs are waited for
    /// only while the reader runs: once it has ended (the remote's EOF or a read error, after
    /// every frame before it was handed over) no response can arrive.
    fn is_drained(&self) -> bool {
        !self.session.has_transmit()
            && self.out.is_empty()
            && (self.session.outbound_rpcs() == 0 || !self.inbound_open)
            && self.session.inbound_rpcs() == 0
    }

    /// Blocks until one input, room in the lane for the batch held back, or `deadline`.
    fn wait(&mut self, deadline: Option<Instant>) -> Input {
        // `pump` has sealed the batch already; sealing again is free and keeps the invariant
        // local: the batch offered below carries every byte its marks count.
        self.out.seal(&mut self.head);
        let mut sel = Select::new();
        let take_commands = self.outbox_open && self.out.len < HIGH_WATER;
        let i_out = take_commands.then(|| sel.recv(&self.outbox));
        let i_in = self.inbound_open.then(|| sel.recv(&self.inbound));
        let i_rep = sel.recv(&self.replies);
        let i_room = (!self.out.is_empty()).then(|| sel.recv(&self.shared.lane.room_rx));
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
            match oper.recv(&self.outbox) {
                Ok(c) => Input::Command(c),
                Err(_) => Input::OutboxClosed,
            }
        } else if i == i_in {
            match oper.recv(&self.inbound) {
                Ok(m) => Input::Reader(m),
                Err(_) => Input::ReaderGone,
            }
        } else if i == Some(i_rep) {
            // The replies gate holds the sender until the loop has ended: never disconnected.
            oper.recv(&self.replies)
                .map_or(Input::Nothing, Input::Reply)
        } else {
            debug_assert_eq!(i, i_room);
            // The lane holds the sender: never disconnected. Only the batch moves now; the
            // session is drained into a new one after the inputs waiting (a small message
            // queued behind a stream goes out before its next fragment).
            let _ = oper.recv(&self.shared.lane.room_rx);
            self.offer();
            Input::Nothing
        }
    }

    /// Handles whatever is already waiting, without blocking.
    fn burst(&mut self, now: Instant) {
        for _ in 0..BURST {
            let mut progressed = false;
            // Commands in runs: under load the outbox is where the messages are, and the
            // other channels are mostly empty, so they are looked at once per run.
            for _ in 0..OUTBOX_RUN {
                if !self.outbox_open || self.out.len >= HIGH_WATER {
                    break;
                }
                match self.outbox.try_recv() {
                    Ok(c) => {
                        self.command(c, now);
                        progressed = true;
                    }
                    Err(TryRecvError::Disconnected) => self.outbox_open = false,
                    Err(TryRecvError::Empty) => break,
                }
            }
            if self.inbound_open {
                match self.inbound.try_recv() {
                    Ok(m) => {
                        self.reader_input(m, now);
                        progressed = true;
                    }
                    Err(TryRecvError::Disconnected) => self.inbound_open = false,
                    Err(TryRecvError::Empty) => {}
                }
            }
            if let Ok(r) = self.replies.try_recv() {
                self.reply(r);
                progressed = true;
            }
            self.fill_batch();
            if !progressed {
                break;
            }
        }
    }

    fn handle(&mut self, input: Input, now: Instant) {
        match input {
            Input::Command(c) => self.command(c, now),
            Input::OutboxClosed => self.outbox_open = false,
            Input::Reader(m) => self.reader_input(m, now),
            Input::ReaderGone => self.inbound_open = false,
            Input::Reply(r) => self.reply(r),
            Input::Nothing => {}
        }
    }

    pub(super) fn command(&mut self, c: Command, now: Instant) {
        self.taken += 1;
        let counters = &self.shared.counters;
        let aborted = self.shared.is_aborted();
        match c {
            Command::Send {
                protocol,
                data,
                receipt,
            } => {
                let len = data.len();
                counters.accept(len);
                Counters::add(&counters.direct_sends_accepted, 1);
                if aborted {
                    return counters.abandon(len, receipt);
                }
                if let Err((_, receipt)) = self.session.send(protocol, data, receipt) {
                    // The handle checked the size against the same limit: unreachable, but
                    // still accounted for.
                    counters.abandon(len, receipt);
                }
            }
            Command::Rpc(rpc) => {
                let RpcCommand {
                    protocol,
                    data,
                    timeout,
                    reply,
                } = *rpc;
                if aborted {
                    Counters::add(&counters.rpcs_failed_at_close, 1);
                    return reply.finish(Err(RpcError::Cancelled));
                }
                if self.session.outbound_rpcs() >= self.shared.config.max_concurrent_outbound_rpcs {
                    // Completions the reader delivered but the mux has not seen yet still hold
                    // slots: take them in first, then drop the RPCs whose callers left.
                    while let Ok(m) = self.inbound.try_recv() {
                        self.reader_input(m, now);
                    }
                    for id in self.session.cancel_rpcs_where(RpcTx::is_cancelled) {
                        self.shared.take_waiter(id);
                        Counters::add(&self.shared.counters.rpcs_cancelled, 1);
                    }
                }
                let counters = &self.shared.counters;
                let len = data.len();
                let caller = reply.tx.clone();
                match self
                    .session
                    .start_rpc(now, protocol, data, timeout, reply, None)
                {
                    Ok(id) => {
                        // Registered before the request can be written, so before any response.
                        self.shared.waiters.lock().insert(id, caller);
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
        }
    }

    pub(super) fn reply(&mut self, r: Reply) {
        let counters = &self.shared.counters;
        match r {
            Reply::Respond { slot, at, data } if !self.shared.is_aborted() => {
                self.taken += 1;
                let len = data.len();
                match self.session.respond(slot, at, data, None) {
                    Ok(()) => {
                        counters.accept(len);
                        Counters::add(&counters.rpc_responses_accepted, 1);
                        Counters::add(&counters.inbound_rpcs_answered, 1);
                    }
                    Err(_) => Counters::add(&counters.inbound_rpcs_unanswered, 1),
                }
            }
            Reply::Respond { slot, .. } => {
                self.taken += 1;
                self.session.abandon_request(slot);
                Counters::add(&counters.inbound_rpcs_unanswered, 1);
            }
            Reply::Dropped { slot } => {
                self.session.abandon_request(slot);
                Counters::add(&counters.inbound_rpcs_unanswered, 1);
            }
        }
    }

    fn reader_input(&mut self, m: FromReader, now: Instant) {
        match m {
            FromReader::Message(m) => self.session.handle_message(now, m),
            FromReader::Malformed(e) => self.session.handle_malformed(&e),
            FromReader::Completed(id) => {
                // `None`: it expired meanwhile, and the deadline found the caller already taken
                // and counted it then.
                if self.session.complete_rpc(id).is_some() {
                    let c = &self.shared.counters;
                    Counters::add(&c.rpcs_succeeded, 1);
                    Counters::add(&c.responses_matched, 1);
                }
            }
        }
    }

    /// Delivers the session's events, fills the batch and appends it to the lane, until the
    /// session is empty or the lane is full.
    fn pump(&mut self) {
        loop {
            self.fill_batch();
            if !self.offer() || !self.session.has_transmit() {
                return;
            }
        }
    }

    /// Appends the batch to the lane; false if the lane is full (the batch stays).
    fn offer(&mut self) -> bool {
        self.out.seal(&mut self.head);
        // Everything taken is in the lane once this batch is, if the session holds nothing
        // more (a stream still sending keeps the fast path back until its last fragment).
        let released = if self.session.has_transmit() {
            0
        } else {
            self.taken
        };
        if self.out.is_empty() && released == 0 {
            return true;
        }
        if !self.shared.append_from_mux(&mut self.out, released, false) {
            return false;
        }
        self.taken -= released;
        true
    }

    /// Delivers events and moves frames from the session into the batch, up to the mark.
    fn fill_batch(&mut self) {
        while let Some(ev) = self.session.poll_event() {
            self.deliver(ev);
        }
        while self.out.len < HIGH_WATER {
            let Some(t) = self.session.poll_transmit() else {
                break;
            };
            log::trace!("peer {}: frame out", self.shared.remote);
            if let Err(e) = self
                .out
                .push(t, self.shared.config.max_frame_size, &mut self.head)
            {
                // Payloads are bounded so that every frame fits: a bug if it happens.
                log::error!("peer {}: frame not sent: {e}", self.shared.remote);
            }
        }
    }

    fn deliver(&mut self, ev: Event<RpcTx>) {
        let shared = &self.shared;
        let counters = &shared.counters;
        match ev {
            Event::Request {
                protocol,
                data,
                slot,
                deadline,
            } => {
                let Some(handler) = self.handlers.get(protocol) else {
                    self.session.abandon_request(slot);
                    Counters::add(&counters.dropped_unknown_protocol, 1);
                    return shared
                        .warnings
                        .unknown_protocol
                        .warn(&shared.remote, &protocol);
                };
                let responder =
                    Responder::new(shared.clone(), slot, deadline, shared.config.max_payload());
                let msg = Inbound::Request {
                    from: shared.remote,
                    protocol,
                    data,
                    responder,
                };
                match handler.deliver(msg) {
                    Ok(evicted) => {
                        Counters::add(&counters.requests_delivered, 1);
                        if shared.is_closing() {
                            Counters::add(&counters.delivered_during_drain, 1);
                        }
                        // An evicted request's responder frees its slot when dropped here.
                        if evicted.is_some() {
                            Counters::add(&counters.dropped_handler_full, 1);
                            shared.warnings.handler_full.warn(&shared.remote, &protocol);
                        }
                    }
                    // Dropping the message drops its responder, which frees the slot.
                    Err(_) => {
                        Counters::add(&counters.dropped_handler_full, 1);
                        shared.warnings.handler_full.warn(&shared.remote, &protocol);
                    }
                }
            }
            Event::Message { protocol, data } => {
                // The reader delivers direct sends itself; a session fed by it never emits this.
                let msg = Inbound::Message {
                    from: shared.remote,
                    protocol,
                    data,
                };
                let delivered = self.handlers.get(protocol).map(|h| h.deliver(msg));
                if !matches!(delivered, Some(Ok(None))) {
                    Counters::add(&counters.dropped_handler_full, 1);
                }
            }
            Event::RequestRefused {
                protocol,
                request_id,
            } => {
                Counters::add(&counters.dropped_inbound_rpc_limit, 1);
                shared.warnings.inbound_rpc_limit.warn(
                    &shared.remote,
                    &format_args!("{protocol}, request {}", request_id.0),
                );
            }
            Event::RpcDone {
                request_id,
                token,
                result,
            } => {
                let Some(caller) = shared.take_waiter(request_id) else {
                    // The reader answered the caller a moment before this deadline.
                    Counters::add(&counters.rpcs_succeeded, 1);
                    Counters::add(&counters.responses_matched, 1);
                    return;
                };
                let outcome = match result {
                    Ok(data) => {
                        let counter = if token.is_cancelled() {
                            &counters.rpcs_cancelled
                        } else {
                            Counters::add(&counters.responses_matched, 1);
                            &counters.rpcs_succeeded
                        };
                        Counters::add(counter, 1);
                        Ok(data)
                    }
                    Err(RpcFailure::TimedOut) => {
                        Counters::add(&counters.rpcs_timed_out, 1);
                        Err(RpcError::TimedOut)
                    }
                    Err(RpcFailure::Closed) => {
                        Counters::add(&counters.rpcs_failed_at_close, 1);
                        Err(RpcError::Disconnected)
                    }
                };
                let _ = caller.try_send(outcome);
            }
            Event::UnknownResponse(id) => {
                Counters::add(&counters.unknown_responses, 1);
                log::trace!(
                    "peer {}: response for unknown request {}",
                    shared.remote,
                    id.0
                );
            }
            Event::RemoteError(e) => {
                Counters::add(&counters.remote_errors, 1);
                shared
                    .warnings
                    .remote_error
                    .warn(&shared.remote, &format_args!("{e:?}"));
            }
            Event::Stream(e) => {
                Counters::add(&counters.stream_errors, 1);
                shared.warnings.stream.warn(&shared.remote, &e);
            }
        }
    }

    /// After the loop: settles everything still held, then queues the close marker behind the
    /// last frame.
    pub(super) fn finish_drain(&mut self) {
        let shared = self.shared.clone();
        let counters = &shared.counters;
        let aborted = self.shared.is_aborted();
        // Replies accepted before the gate closes are handled; `close` waits for any reply
        // being sent right now.
        self.shared.replies.close();
        while let Ok(r) = self.replies.try_recv() {
            self.reply(r);
        }
        // Commands still queued (the loop ended at the deadline or by abort) were accepted:
        // they are settled, not sent. Senders blocked on a full outbox were woken by the gate
        // closing, so this ends as soon as they have returned.
        while let Ok(c) = self.outbox.recv() {
            match c {
                Command::Send { data, receipt, .. } => {
                    counters.accept(data.len());
                    Counters::add(&counters.direct_sends_accepted, 1);
                    counters.abandon(data.len(), receipt);
                }
                Command::Rpc(rpc) => {
                    let reply = rpc.reply;
                    Counters::add(&counters.rpcs_failed_at_close, 1);
                    let e = if aborted {
                        RpcError::Cancelled
                    } else {
                        RpcError::Disconnected
                    };
                    reply.finish(Err(e));
                }
            }
        }
        let mut leftovers = self.session.close();
        for (id, _) in leftovers.rpcs.drain(..) {
            let Some(caller) = shared.take_waiter(id) else {
                // Answered by the reader; the mux had not seen the completion yet.
                Counters::add(&counters.rpcs_succeeded, 1);
                Counters::add(&counters.responses_matched, 1);
                continue;
            };
            Counters::add(&counters.rpcs_failed_at_close, 1);
            let e = if aborted {
                RpcError::Cancelled
            } else {
                RpcError::Disconnected
            };
            let _ = caller.try_send(Err(e));
        }
        for c in leftovers.messages {
            counters.abandon(c.len, c.tag);
        }
        self.fill_batch();
        self.out.seal(&mut self.head);
        // Past the lane's mark if need be: this is the last batch, and the writer abandons it
        // if the deadline has passed.
        shared.append_from_mux(&mut self.out, 0, true);
        shared.lane.close_writer();
    }
}
