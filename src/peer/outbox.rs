//! The outbox: the one queue from the application's threads to the mux. Direct sends, RPC
//! requests, responses and the notices of responders dropped unanswered all travel through it,
//! so what one thread does reaches the mux, and the wire, in the order it was done.
//!
//! It is a crossbeam channel behind a gate. crossbeam has no receiver-side close, so intake is
//! stopped here, in three steps that follow the close sequence:
//!
//! - **open**: everything is accepted;
//! - **replies only** (the close has started): sends and RPCs are refused with their payload
//!   handed back, while responses to requests already delivered are still accepted, since the
//!   drain waits for them;
//! - **closed** (the mux is done): everything is refused.
//!
//! Each step takes the gate's write lock, and every accepted value is sent while the read lock
//! is held: once a step has returned, every value accepted before it is in the channel, ahead of
//! anything later. That is the barrier the mux relies on when it drains: no value can slip in
//! between its last look and the close.
//!
//! # Bound
//!
//! Sends and RPCs are bounded by `outbox_capacity`; a full outbox makes `send` wait (woken
//! when the mux takes commands, when the close starts, or at the caller's deadline) and
//! `try_send` report `Full`. The channel itself is crossbeam's unbounded (list) flavor with the
//! bound kept in a counter here: the bounded flavor preallocates every slot, which for a
//! thousand peers with the default capacity would hold 70 MiB of empty slots, where the list
//! flavor fills blocks of 31 slots as they are needed. Responses and responder notices are not
//! counted against the bound: there is at most one of each per admitted inbound request, and
//! those are bounded by `max_concurrent_inbound_rpcs`, so a response never waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex, RwLock};

use super::call::RpcTx;
use super::metrics::Counters;
use super::receipt::ReceiptTx;
use super::signal::Signal;
use crate::proto::ProtocolId;

/// What an application thread asks the mux to do.
#[derive(Debug)]
pub(crate) enum Command {
    Send {
        protocol: ProtocolId,
        data: Bytes,
        receipt: Option<ReceiptTx>,
    },
    /// Boxed: rarer and larger than a send.
    Rpc(Box<RpcCommand>),
    /// The answer to the inbound request in `slot`, given at `at`.
    Respond { slot: u64, at: Instant, data: Bytes },
    /// The responder of the request in `slot` was dropped unanswered.
    Unanswered { slot: u64 },
}

/// An outbound RPC on its way to the mux.
#[derive(Debug)]
pub(crate) struct RpcCommand {
    pub(crate) protocol: ProtocolId,
    pub(crate) data: Bytes,
    pub(crate) timeout: Duration,
    pub(crate) reply: RpcTx,
}

impl Command {
    /// Counted against `outbox_capacity`.
    pub(crate) fn is_bounded(&self) -> bool {
        matches!(self, Command::Send { .. } | Command::Rpc(_))
    }
}

/// Why a command was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Why {
    /// The close has started (or ended).
    Closed,
    /// `outbox_capacity` sends and RPCs are queued (non-blocking send only).
    Full,
    /// The outbox stayed full until the deadline.
    Timeout,
}

/// A command that was not accepted, handed back.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) why: Why,
    pub(crate) command: Command,
}

fn refuse(why: Why, command: Command) -> Refused {
    Refused { why, command }
}

#[derive(Debug)]
enum Intake {
    Open(Sender<Command>),
    RepliesOnly(Sender<Command>),
    Closed,
}

#[derive(Debug)]
pub(crate) struct Outbox {
    intake: RwLock<Intake>,
    /// False from the start of the close: a cheap check for the waiting senders.
    accepting: AtomicBool,
    capacity: usize,
    /// Sends and RPCs in the channel.
    queued: AtomicUsize,
    /// Senders waiting for room, and where they wait.
    waiting: AtomicUsize,
    room_lock: Mutex<()>,
    room: Condvar,
    counters: Arc<Counters>,
    /// Fires when sends stop being accepted: how the mux learns that the close has started.
    pub(crate) input_closed: Signal,
}

impl Outbox {
    pub(crate) fn new(capacity: usize, counters: Arc<Counters>) -> (Outbox, Receiver<Command>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let outbox = Outbox {
            intake: RwLock::new(Intake::Open(tx)),
            accepting: AtomicBool::new(true),
            capacity,
            queued: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            room_lock: Mutex::new(()),
            room: Condvar::new(),
            counters,
            input_closed: Signal::new(),
        };
        (outbox, rx)
    }

    /// Queues a send or an RPC if the outbox is open and has room. An accepted direct send is
    /// counted here, before the gate's lock is released, so the close's report cannot miss it.
    pub(crate) fn try_send(&self, cmd: Command) -> Result<(), Refused> {
        debug_assert!(cmd.is_bounded());
        let intake = self.intake.read();
        let Intake::Open(tx) = &*intake else {
            return Err(refuse(Why::Closed, cmd));
        };
        let reserved = self
            .queued
            .fetch_update(SeqCst, SeqCst, |q| (q < self.capacity).then_some(q + 1));
        if reserved.is_err() {
            return Err(refuse(Why::Full, cmd));
        }
        let len = match &cmd {
            Command::Send { data, .. } => Some(data.len()),
            _ => None,
        };
        match tx.send(cmd) {
            Ok(()) => {
                if let Some(len) = len {
                    self.counters.accept(len);
                }
                Ok(())
            }
            // The mux has gone (it panicked): nothing more can be sent.
            Err(e) => {
                self.queued.fetch_sub(1, SeqCst);
                Err(refuse(Why::Closed, e.0))
            }
        }
    }

    /// Like [`try_send`](Outbox::try_send), waiting while the outbox is full until `deadline`
    /// (forever if `None`) or until the close starts.
    pub(crate) fn send(&self, mut cmd: Command, deadline: Option<Instant>) -> Result<(), Refused> {
        loop {
            match self.try_send(cmd) {
                Err(Refused {
                    why: Why::Full,
                    command,
                }) => cmd = command,
                other => return other,
            }
            if !self.wait_room(deadline) {
                return Err(refuse(Why::Timeout, cmd));
            }
        }
    }

    /// Waits until the outbox has room or has closed; false if `deadline` passed first.
    fn wait_room(&self, deadline: Option<Instant>) -> bool {
        let mut guard = self.room_lock.lock();
        // Registered before the check below: a mux taking commands after the check sees the
        // waiter and takes the lock to notify, which it cannot do before this thread waits.
        self.waiting.fetch_add(1, SeqCst);
        let has_room = || self.queued.load(SeqCst) < self.capacity || !self.is_accepting();
        let ok = loop {
            if has_room() {
                break true;
            }
            match deadline {
                None => self.room.wait(&mut guard),
                Some(d) => {
                    if self.room.wait_until(&mut guard, d).timed_out() {
                        break has_room();
                    }
                }
            }
        };
        self.waiting.fetch_sub(1, SeqCst);
        ok
    }

    /// Queues a response or a responder's notice: accepted until the mux is done, never
    /// waits. An accepted response is counted here, under the gate's lock.
    pub(crate) fn send_reply(&self, cmd: Command) -> Result<(), Command> {
        debug_assert!(!cmd.is_bounded());
        let intake = self.intake.read();
        let (Intake::Open(tx) | Intake::RepliesOnly(tx)) = &*intake else {
            return Err(cmd);
        };
        let len = match &cmd {
            Command::Respond { data, .. } => Some(data.len()),
            _ => None,
        };
        tx.send(cmd).map_err(|e| e.0)?;
        if let Some(len) = len {
            self.counters.accept(len);
            Counters::add(&self.counters.rpc_responses_accepted, 1);
        }
        Ok(())
    }

    /// The mux took `n` sends and RPCs: makes room for as many. Waiting senders are woken
    /// once half the outbox is free, not at every command taken: each wake-up costs a system
    /// call on both sides, and a sender woken with room for hundreds of messages amortises it.
    /// (No wake-up is lost: a waiter saw the outbox full, and the mux keeps taking until it is
    /// empty, so it crosses the half mark.)
    pub(crate) fn took(&self, n: usize) {
        if n == 0 {
            return;
        }
        let left = self.queued.fetch_sub(n, SeqCst) - n;
        if left <= self.capacity / 2 && self.waiting.load(SeqCst) > 0 {
            let _guard = self.room_lock.lock();
            self.room.notify_all();
        }
    }

    /// Sends and RPCs queued (a gauge).
    pub(crate) fn depth(&self) -> usize {
        self.queued.load(SeqCst)
    }

    pub(crate) fn is_accepting(&self) -> bool {
        self.accepting.load(SeqCst)
    }

    /// Refuses sends and RPCs from now on; responses are still accepted. Fires
    /// [`input_closed`](Outbox::input_closed) once every send accepted before is in the channel.
    pub(crate) fn close_input(&self) {
        {
            let mut intake = self.intake.write();
            *intake = match std::mem::replace(&mut *intake, Intake::Closed) {
                Intake::Open(tx) | Intake::RepliesOnly(tx) => Intake::RepliesOnly(tx),
                Intake::Closed => Intake::Closed,
            };
            self.accepting.store(false, SeqCst);
        }
        self.input_closed.fire();
        self.wake_waiters();
    }

    /// Refuses everything from now on. Once this returns, everything accepted is in the
    /// channel, and the receiver sees `Disconnected` after the last of it.
    pub(crate) fn close(&self) {
        *self.intake.write() = Intake::Closed;
        self.accepting.store(false, SeqCst);
        self.input_closed.fire();
        self.wake_waiters();
    }

    fn wake_waiters(&self) {
        let _guard = self.room_lock.lock();
        self.room.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn send(n: u8) -> Command {
        Command::Send {
            protocol: ProtocolId(n),
            data: Bytes::from_static(b"x"),
            receipt: None,
        }
    }

    fn protocol(c: Command) -> u8 {
        match c {
            Command::Send { protocol, .. } => protocol.0,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn bound_steps_and_barrier() {
        let counters = Arc::new(Counters::default());
        let (outbox, rx) = Outbox::new(2, counters.clone());
        outbox.try_send(send(1)).unwrap();
        outbox.try_send(send(2)).unwrap();
        assert_eq!(outbox.try_send(send(3)).unwrap_err().why, Why::Full);
        let soon = Instant::now() + Duration::from_millis(5);
        assert_eq!(
            outbox.send(send(3), Some(soon)).unwrap_err().why,
            Why::Timeout
        );
        assert_eq!(protocol(rx.try_recv().unwrap()), 1);
        outbox.took(1);
        outbox.try_send(send(3)).unwrap();
        outbox.close_input();
        assert_eq!(outbox.try_send(send(4)).unwrap_err().why, Why::Closed);
        let reply = Command::Unanswered { slot: 7 };
        outbox.send_reply(reply).unwrap();
        outbox.close();
        assert!(outbox.send_reply(Command::Unanswered { slot: 8 }).is_err());
        let rest: Vec<_> = rx.try_iter().collect();
        assert_eq!(rest.len(), 3, "2, 3 and the reply, nothing refused");
        assert!(rx.try_recv().unwrap_err().is_disconnected());
        assert_eq!(counters.snapshot().messages_accepted, 3);
    }

    /// A sender waiting on a full outbox is refused by the close, never accepted after it,
    /// even when room appears at the same moment. (The old gate's waiting send selected over
    /// the room and the close signal, and crossbeam picks at random between ready ones.)
    #[test]
    fn a_waiting_sender_is_refused_by_the_close_even_with_room() {
        for round in 0..200 {
            let counters = Arc::new(Counters::default());
            let (outbox, rx) = Outbox::new(1, counters);
            let outbox = Arc::new(outbox);
            outbox.try_send(send(1)).unwrap();
            let o = outbox.clone();
            let (done_tx, done_rx) = crossbeam_channel::bounded(1);
            std::thread::spawn(move || {
                let r = o.send(send(2), None);
                let _ = done_tx.send(r.map_err(|e| e.why));
            });
            if round % 2 == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
            outbox.close_input();
            // Room, right after the close.
            assert_eq!(protocol(rx.try_recv().unwrap()), 1);
            outbox.took(1);
            assert_eq!(
                done_rx.recv_timeout(Duration::from_secs(20)),
                Ok(Err(Why::Closed)),
                "round {round}"
            );
            assert!(
                rx.try_recv().is_err(),
                "round {round}: nothing after the close"
            );
        }
    }
}
