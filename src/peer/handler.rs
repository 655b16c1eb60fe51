//! [`Handler`]: where inbound messages of one protocol go (a crossbeam channel that drops when
//! full, one that pushes back, a keyed queue, or a function run on the connection's own
//! thread), and [`Handlers`], the table of them by protocol byte.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::{Sender, TrySendError};

use super::{Inbound, PeerId};
use crate::keyed;
use crate::proto::ProtocolId;

/// The key of a [`keyed`](crate::keyed) handler queue: one sub-queue per remote and protocol,
/// served round-robin, as the original's upstream handlers are.
pub type HandlerKey = (PeerId, ProtocolId);

/// Where inbound messages of one protocol go: a crossbeam `Sender<Inbound>` that drops when
/// full (`From<Sender<Inbound>>`, as the original's handlers do), one that pushes back
/// ([`Handler::blocking`]), a [`keyed`](crate::keyed) sender keyed by [`HandlerKey`] (fair
/// across peers, with a per-key FIFO, LIFO or KLAST policy), or a function run on the
/// connection's own thread ([`Handler::inline`]).
///
/// # Dropping or pushing back
///
/// Delivery to a plain channel or a keyed queue never blocks: a message the handler cannot
/// take is dropped, counted in [`PeerMetrics::dropped_handler_full`](crate::PeerMetrics) and
/// logged. Which message goes depends on the handler:
///
/// | Handler | When full | Counted |
/// |---|---|---|
/// | channel (`From<Sender>`) | the new message is dropped | one drop |
/// | keyed FIFO | the new message is dropped | one drop |
/// | keyed KLAST, LIFO | the key's oldest message is evicted, the new one queued | one drop, no delivery |
/// | [`blocking`](Handler::blocking) | the connection waits for room | nothing is dropped |
///
/// An eviction counts as a drop and not as a delivery because the queue holds as many
/// messages as before: so `direct_sends_delivered + requests_delivered` is what was left for
/// the application to take, and every message received is either delivered or dropped, once.
/// (If an eviction pushes out a message of the other kind, a request for a direct send or the
/// reverse, the two delivered counters are each off by one; their sum is exact.) Messages the
/// application itself discards after delivery (a keyed receiver's `clear` or drop, a channel
/// dropped with messages in it) are the application's, and not counted here.
///
/// A blocking handler never drops for lack of room, and that moves the wait upstream: the
/// reader stops reading the socket, TCP flow control stops the remote's writer, and the
/// remote's sends wait (or time out, or are refused as `Full`) under their own bounds. End to
/// end nothing is lost and nothing grows without bound. The price is that **one slow consumer
/// stalls the whole connection**: every protocol on it, and the responses to this side's own
/// RPCs that are behind in the socket, wait for that consumer. This is what ZeroMQ's blocking
/// socket types do, and what the Aptos original never does (its handlers always drop). Use it
/// where losing a message is worse than slowing the sender, and keep the consumer fast.
#[derive(Clone)]
pub struct Handler(HandlerKind);

#[derive(Clone)]
enum HandlerKind {
    Channel(Sender<Inbound>),
    Blocking(Sender<Inbound>),
    Keyed(keyed::Sender<HandlerKey, Inbound>),
    Inline(Arc<dyn Fn(Inbound) + Send + Sync>),
}

/// What became of a message handed to [`Handler::deliver`].
#[derive(Debug)]
pub(crate) enum Delivered {
    /// The handler took it.
    Taken,
    /// The handler took it and evicted this older message: one drop, no delivery.
    Evicted(Inbound),
    /// The handler did not take it (full, gone, or an inline handler panicked).
    Dropped(Inbound),
    /// A blocking handler's channel is full: the message is still the caller's, to hold until
    /// there is room.
    Full(Inbound),
}

impl fmt::Debug for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            HandlerKind::Channel(tx) => f.debug_tuple("Handler::Channel").field(&tx.len()).finish(),
            HandlerKind::Blocking(tx) => {
                f.debug_tuple("Handler::Blocking").field(&tx.len()).finish()
            }
            HandlerKind::Keyed(_) => f.write_str("Handler::Keyed"),
            HandlerKind::Inline(_) => f.write_str("Handler::Inline"),
        }
    }
}

impl From<Sender<Inbound>> for Handler {
    fn from(tx: Sender<Inbound>) -> Handler {
        Handler(HandlerKind::Channel(tx))
    }
}

impl From<keyed::Sender<HandlerKey, Inbound>> for Handler {
    fn from(tx: keyed::Sender<HandlerKey, Inbound>) -> Handler {
        Handler(HandlerKind::Keyed(tx))
    }
}

impl Handler {
    /// A channel that pushes back: when it is full, the connection waits for room instead of
    /// dropping the message. See [Dropping or pushing back](Handler#dropping-or-pushing-back)
    /// for what that costs: one slow consumer stalls the whole connection.
    ///
    /// How the connection waits:
    ///
    /// * **Direct sends** are delivered by the reader thread. When the channel is full the
    ///   reader holds the message, and every later one for the same channel behind it in
    ///   order. It goes on decoding and delivering what it has read, and reading more, while
    ///   it holds less than about 64 KiB: RPC responses to this side's callers and messages
    ///   for other handlers get through meanwhile. Past that, or once the socket has nothing
    ///   more, it stops reading and waits for room, which is when TCP flow control reaches
    ///   the remote. Responses behind in the socket then wait with everything else.
    /// * **RPC requests** are delivered by the mux thread, which must never block on an
    ///   application. A request the channel cannot take waits in the mux, in order, while the
    ///   mux goes on serving everything else. Each waiting request holds one of the
    ///   `max_concurrent_inbound_rpcs` slots, so the remote's requests past that limit are
    ///   dropped (counted in `dropped_inbound_rpc_limit`; each of the remote's callers gets
    ///   its own timeout, so none is lost silently). A request still waiting at its deadline
    ///   is dropped and counted in `dropped_handler_full`: the remote has stopped waiting.
    ///
    /// Either wait ends with the connection: on `abort`, or when a graceful close reaches its
    /// drain deadline, what is still held is counted in `dropped_at_close`. So a close while
    /// the consumer is not reading takes up to `linger`.
    ///
    /// A [`Network`](crate::Network)'s handlers are shared by all its connections: a blocking
    /// one there, while full, stalls every connection that has a message for it.
    ///
    /// Register a channel as one kind: the same channel as blocking for one protocol and
    /// dropping for another would let messages of the second overtake held ones of the first.
    /// The same blocking channel for several protocols is fine: their direct sends keep
    /// their order between them.
    pub fn blocking(tx: Sender<Inbound>) -> Handler {
        Handler(HandlerKind::Blocking(tx))
    }

    /// A function called on the connection's own thread for every message of the protocol:
    /// the reader thread for direct sends, the mux thread for requests. No thread hop and no
    /// wake-up, so the cheapest way in; the price is that the connection waits while it runs.
    ///
    /// It must return quickly and must not block: while it runs, this connection reads
    /// nothing more (the remote is slowed by TCP flow control) and, for requests, serves no
    /// timers. Typical uses are counting, routing by content into the application's own
    /// queues, or answering a request at once with its `Responder`. To send from inside it,
    /// use [`try_send`](crate::PeerHandle::try_send): a blocking `send` on a full outbox would
    /// wait for the very thread it runs on.
    ///
    /// [`shutdown`](crate::PeerHandle::shutdown), [`abort`](crate::PeerHandle::abort) and
    /// [`join`](crate::PeerHandle::join) called from inside it start the close but return
    /// [`JoinError::OwnThread`](crate::JoinError::OwnThread) instead of waiting for it.
    ///
    /// A panic inside it is caught, logged and counted like a message the handler refused
    /// (`dropped_handler_full`); the connection goes on.
    pub fn inline(f: impl Fn(Inbound) + Send + Sync + 'static) -> Handler {
        Handler(HandlerKind::Inline(Arc::new(f)))
    }

    /// The channel of a blocking handler.
    pub(crate) fn blocking_sender(&self) -> Option<&Sender<Inbound>> {
        match &self.0 {
            HandlerKind::Blocking(tx) => Some(tx),
            _ => None,
        }
    }

    /// Hands over one message without blocking.
    pub(crate) fn deliver(&self, msg: Inbound) -> Delivered {
        match &self.0 {
            HandlerKind::Channel(tx) => match tx.try_send(msg) {
                Ok(()) => Delivered::Taken,
                Err(TrySendError::Full(m) | TrySendError::Disconnected(m)) => Delivered::Dropped(m),
            },
            HandlerKind::Blocking(tx) => match tx.try_send(msg) {
                Ok(()) => Delivered::Taken,
                Err(TrySendError::Full(m)) => Delivered::Full(m),
                Err(TrySendError::Disconnected(m)) => Delivered::Dropped(m),
            },
            HandlerKind::Keyed(tx) => {
                let key = match &msg {
                    Inbound::Message { from, protocol, .. }
                    | Inbound::Request { from, protocol, .. } => (*from, *protocol),
                };
                match tx.push(key, msg) {
                    Ok(keyed::Pushed::Queued) => Delivered::Taken,
                    Ok(keyed::Pushed::EvictedOldest(old)) => Delivered::Evicted(old),
                    Ok(keyed::Pushed::DroppedNew(m)) => Delivered::Dropped(m),
                    Err(e) => Delivered::Dropped(e.into_inner().1),
                }
            }
            HandlerKind::Inline(f) => {
                let (from, protocol) = match &msg {
                    Inbound::Message { from, protocol, .. }
                    | Inbound::Request { from, protocol, .. } => (*from, *protocol),
                };
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(msg))) {
                    Ok(()) => Delivered::Taken,
                    Err(_) => {
                        log::error!("peer {from}: inline handler for {protocol} panicked");
                        // The message went down with the panic (a request's responder was
                        // dropped, which frees its slot); this stand-in only carries the
                        // protocol to the caller's count.
                        Delivered::Dropped(Inbound::Message {
                            from,
                            protocol,
                            data: Bytes::new(),
                        })
                    }
                }
            }
        }
    }
}

/// Handlers by protocol byte: an index of 256 entries into the few handlers there are, so a
/// look-up stays one array access while a connection holds about 600 bytes for them rather
/// than a slot per possible protocol (6 KiB a connection, 6 MiB for a thousand).
#[derive(Clone, Debug)]
pub(crate) struct Handlers(Arc<HandlerTable>);

#[derive(Debug)]
struct HandlerTable {
    /// 0: no handler; `i + 1`: `handlers[i]`.
    index: [u16; 256],
    handlers: Vec<Handler>,
    /// Per protocol byte, the sink of its blocking handler: the smallest protocol byte whose
    /// blocking handler is the same channel. Messages held for one sink keep their order.
    sinks: [u8; 256],
}

impl Handlers {
    /// From one optional handler per protocol byte.
    pub(crate) fn new(by_protocol: Vec<Option<Handler>>) -> Handlers {
        let mut index = [0u16; 256];
        let mut sinks = [0u8; 256];
        let mut handlers: Vec<Handler> = Vec::new();
        // (protocol, position) of the blocking handlers seen so far, to find shared channels
        // among the few there are rather than among all 256 protocol bytes.
        let mut blocking: Vec<(u8, usize)> = Vec::new();
        for (p, h) in by_protocol.into_iter().enumerate().take(256) {
            // `p` < 256: the cast is exact.
            let byte = p as u8;
            sinks[p] = byte;
            let Some(h) = h else { continue };
            if let Some(tx) = h.blocking_sender() {
                let same = blocking.iter().find(|(_, i)| {
                    handlers[*i]
                        .blocking_sender()
                        .is_some_and(|other| other.same_channel(tx))
                });
                if let Some(&(first, _)) = same {
                    sinks[p] = first;
                }
                blocking.push((byte, handlers.len()));
            }
            handlers.push(h);
            // At most 256 handlers: the position fits.
            index[p] = handlers.len() as u16;
        }
        Handlers(Arc::new(HandlerTable {
            index,
            handlers,
            sinks,
        }))
    }

    pub(crate) fn get(&self, p: ProtocolId) -> Option<&Handler> {
        let i = usize::from(self.0.index[usize::from(p.0)]);
        i.checked_sub(1).map(|i| &self.0.handlers[i])
    }

    /// The sink of protocol `p`'s blocking handler (see `sinks`).
    pub(crate) fn sink(&self, p: ProtocolId) -> u8 {
        self.0.sinks[usize::from(p.0)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_protocol_byte_finds_its_handler() {
        let all: Vec<_> = (0..256)
            .map(|p| {
                let (tx, _) = crossbeam_channel::bounded::<Inbound>(p + 1);
                Some(Handler::from(tx))
            })
            .collect();
        let table = Handlers::new(all);
        for p in 0..=255u8 {
            let Some(Handler(HandlerKind::Channel(tx))) = table.get(ProtocolId(p)) else {
                panic!("no handler for {p}");
            };
            assert_eq!(tx.capacity(), Some(usize::from(p) + 1), "protocol {p}");
        }
        let sparse = Handlers::new(
            (0..256)
                .map(|p| (p == 7).then(|| Handler::inline(|_| {})))
                .collect(),
        );
        assert!(sparse.get(ProtocolId(7)).is_some());
        assert!(sparse.get(ProtocolId(6)).is_none() && sparse.get(ProtocolId(255)).is_none());
    }

    #[test]
    fn protocols_sharing_a_blocking_channel_share_its_sink() {
        let (shared, _r1) = crossbeam_channel::bounded::<Inbound>(4);
        let (own, _r2) = crossbeam_channel::bounded::<Inbound>(4);
        let table = Handlers::new(
            (0..256)
                .map(|p| match p {
                    3 | 9 => Some(Handler::blocking(shared.clone())),
                    5 => Some(Handler::blocking(own.clone())),
                    _ => None,
                })
                .collect(),
        );
        assert_eq!(table.sink(ProtocolId(3)), 3);
        assert_eq!(table.sink(ProtocolId(9)), 3);
        assert_eq!(table.sink(ProtocolId(5)), 5);
        assert_eq!(table.sink(ProtocolId(200)), 200);
    }
}
