//! [`Held`]: inbound messages that a blocking handler had no room for, kept in arrival order
//! until it has. The reader holds direct sends here and the mux holds requests, each in a
//! `Held` of its own; each waits for room in its own way (the reader in a `Select` it makes
//! for that, the mux inside its event loop's), so neither ever blocks on an application while
//! it holds. Order is kept per sink (one blocking channel, whatever protocols it serves): once
//! a sink holds a message, every later one for it is held behind, even if room appears.

use std::collections::VecDeque;
use std::time::Instant;

use crossbeam_channel::{SelectedOperation, Sender, TrySendError};

use super::Inbound;
use super::handler::Handlers;

/// Bytes counted per held message on top of its payload, so that the bound on what is held
/// also bounds the number of empty messages.
const PER_MESSAGE: usize = 64;

/// Messages waiting for room in their blocking handler.
#[derive(Debug)]
pub(crate) struct Held {
    queue: VecDeque<Inbound>,
    /// Messages held per sink.
    per_sink: Box<[u32; 256]>,
    /// Sinks with at least one message held.
    sinks: usize,
    /// Payload bytes held, plus `PER_MESSAGE` each.
    bytes: usize,
}

/// What handing over held messages did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Flushed {
    /// Taken by their handler.
    pub(crate) delivered: u64,
    /// Dropped: the handler's receiver is gone, or a request's deadline passed while it waited.
    pub(crate) dropped: u64,
}

impl Flushed {
    fn add(&mut self, other: Flushed) {
        self.delivered += other.delivered;
        self.dropped += other.dropped;
    }
}

fn size(msg: &Inbound) -> usize {
    msg.data().len() + PER_MESSAGE
}

/// A request whose remote has stopped waiting.
fn is_expired(msg: &Inbound, now: Instant) -> bool {
    matches!(msg, Inbound::Request { responder, .. } if responder.deadline() <= now)
}

/// The channel a held message waits for.
fn sender<'h>(handlers: &'h Handlers, msg: &Inbound) -> &'h Sender<Inbound> {
    handlers
        .get(msg.protocol())
        .and_then(|h| h.blocking_sender())
        .expect("only messages for a blocking handler are held, and handlers do not change")
}

impl Held {
    pub(crate) fn new() -> Held {
        Held {
            queue: VecDeque::new(),
            per_sink: Box::new([0; 256]),
            sinks: 0,
            bytes: 0,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Payload bytes held, plus a small allowance per message.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// True if `sink` holds a message: a new one for it must be held behind.
    pub(crate) fn holds(&self, sink: u8) -> bool {
        self.per_sink[usize::from(sink)] > 0
    }

    /// Holds `msg`, for `sink`, behind everything held.
    pub(crate) fn push(&mut self, sink: u8, msg: Inbound) {
        self.count_in(sink, &msg);
        self.queue.push_back(msg);
    }

    fn count_in(&mut self, sink: u8, msg: &Inbound) {
        let n = &mut self.per_sink[usize::from(sink)];
        if *n == 0 {
            self.sinks += 1;
        }
        *n += 1;
        self.bytes += size(msg);
    }

    /// Takes the message at `i` out of the queue and the bookkeeping.
    fn remove(&mut self, handlers: &Handlers, i: usize) -> Inbound {
        let msg = self.queue.remove(i).expect("the index is within the queue");
        let n = &mut self.per_sink[usize::from(handlers.sink(msg.protocol()))];
        *n -= 1;
        if *n == 0 {
            self.sinks -= 1;
        }
        self.bytes -= size(&msg);
        msg
    }

    /// Hands over, in order, every held message whose channel has room, without blocking. A
    /// sink's first refusal leaves the rest of it held, so it keeps its order. Requests past
    /// their deadline are dropped rather than handed over.
    pub(crate) fn flush(&mut self, handlers: &Handlers, now: Instant) -> Flushed {
        let mut out = Flushed::default();
        let mut full = [false; 256];
        let mut fulls = 0;
        let mut i = 0;
        while i < self.queue.len() && fulls < self.sinks {
            let sink = handlers.sink(self.queue[i].protocol());
            if full[usize::from(sink)] {
                i += 1;
                continue;
            }
            if is_expired(&self.queue[i], now) {
                drop(self.remove(handlers, i));
                out.dropped += 1;
                continue;
            }
            let msg = self.remove(handlers, i);
            let tx = sender(handlers, &msg);
            match tx.try_send(msg) {
                Ok(()) => out.delivered += 1,
                Err(TrySendError::Full(msg)) => {
                    // Back where it was: the first of its sink.
                    self.count_in(sink, &msg);
                    self.queue.insert(i, msg);
                    full[usize::from(sink)] = true;
                    fulls += 1;
                    i += 1;
                }
                Err(TrySendError::Disconnected(_)) => out.dropped += 1,
            }
        }
        out
    }

    /// The channels with a message waiting, one per sink, in the order of their first held
    /// message: what to wait on for room, with the sink to pass back to
    /// [`send_selected`](Held::send_selected).
    pub(crate) fn waiting(&self, handlers: &Handlers) -> Vec<(u8, Sender<Inbound>)> {
        if self.queue.is_empty() {
            // The mux asks before every wait.
            return Vec::new();
        }
        let mut seen = [false; 256];
        let mut out = Vec::new();
        for msg in &self.queue {
            let sink = handlers.sink(msg.protocol());
            if !std::mem::replace(&mut seen[usize::from(sink)], true) {
                out.push((sink, sender(handlers, msg).clone()));
                if out.len() == self.sinks {
                    break;
                }
            }
        }
        out
    }

    /// Completes a `Select` that found room in `tx`, the channel of `sink`: hands it the
    /// sink's first held message, then everything else that now fits.
    pub(crate) fn send_selected(
        &mut self,
        handlers: &Handlers,
        oper: SelectedOperation<'_>,
        sink: u8,
        tx: &Sender<Inbound>,
        now: Instant,
    ) -> Flushed {
        let i = self
            .queue
            .iter()
            .position(|m| handlers.sink(m.protocol()) == sink)
            .expect("a sink is waited on only while it holds a message");
        let msg = self.remove(handlers, i);
        // The operation must be completed: even a request that has just expired goes (its
        // responder will report the lateness).
        let mut out = match oper.send(tx, msg) {
            Ok(()) => Flushed {
                delivered: 1,
                dropped: 0,
            },
            Err(_) => Flushed {
                delivered: 0,
                dropped: 1,
            },
        };
        out.add(self.flush(handlers, now));
        out
    }

    /// Drops everything held. Returns how many were requests past their deadline (for
    /// `dropped_handler_full`) and how many were not (for `dropped_at_close`).
    pub(crate) fn clear(&mut self, now: Instant) -> (u64, u64) {
        let mut expired = 0;
        let mut rest = 0;
        for msg in self.queue.drain(..) {
            if is_expired(&msg, now) {
                expired += 1;
            } else {
                rest += 1;
            }
        }
        *self.per_sink = [0; 256];
        self.sinks = 0;
        self.bytes = 0;
        (expired, rest)
    }
}
