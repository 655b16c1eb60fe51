//! [`Handler`]: where inbound messages of one protocol go (a crossbeam channel, a keyed queue,
//! or a function run on the connection's own thread), and [`Handlers`], the table of them by
//! protocol byte.

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

/// Where inbound messages of one protocol go: a crossbeam `Sender<Inbound>`, a
/// [`keyed`](crate::keyed) sender keyed by [`HandlerKey`] (fair across peers, with a per-key
/// FIFO, LIFO or KLAST policy), or a function run on the connection's own thread
/// ([`Handler::inline`]).
///
/// Delivery to a channel or queue never blocks: a message the handler cannot take (channel
/// full, FIFO sub-queue full, or an older message evicted by KLAST/LIFO) is dropped, counted in
/// [`PeerMetrics::dropped_handler_full`](crate::PeerMetrics) and logged.
#[derive(Clone)]
pub struct Handler(HandlerKind);

#[derive(Clone)]
enum HandlerKind {
    Channel(Sender<Inbound>),
    Keyed(keyed::Sender<HandlerKey, Inbound>),
    Inline(Arc<dyn Fn(Inbound) + Send + Sync>),
}

impl fmt::Debug for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            HandlerKind::Channel(tx) => f.debug_tuple("Handler::Channel").field(&tx.len()).finish(),
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

    /// Hands over one message without blocking. `Err` gives back a message the handler did not
    /// take; `Ok(Some(older))` means it was taken but pushed out an older one.
    pub(crate) fn deliver(&self, msg: Inbound) -> Result<Option<Inbound>, Inbound> {
        match &self.0 {
            HandlerKind::Channel(tx) => tx.try_send(msg).map(|()| None).map_err(|e| match e {
                TrySendError::Full(m) | TrySendError::Disconnected(m) => m,
            }),
            HandlerKind::Keyed(tx) => {
                let key = match &msg {
                    Inbound::Message { from, protocol, .. }
                    | Inbound::Request { from, protocol, .. } => (*from, *protocol),
                };
                match tx.push(key, msg) {
                    Ok(keyed::Pushed::Queued) => Ok(None),
                    Ok(keyed::Pushed::EvictedOldest(old)) => Ok(Some(old)),
                    Ok(keyed::Pushed::DroppedNew(m)) => Err(m),
                    Err(e) => Err(e.into_inner().1),
                }
            }
            HandlerKind::Inline(f) => {
                let (from, protocol) = match &msg {
                    Inbound::Message { from, protocol, .. }
                    | Inbound::Request { from, protocol, .. } => (*from, *protocol),
                };
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(msg))) {
                    Ok(()) => Ok(None),
                    Err(_) => {
                        log::error!("peer {from}: inline handler for {protocol} panicked");
                        // The message went down with the panic (a request's responder was
                        // dropped, which frees its slot); this stand-in only carries the
                        // protocol to the caller's count.
                        Err(Inbound::Message {
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
}

impl Handlers {
    /// From one optional handler per protocol byte.
    pub(crate) fn new(by_protocol: Vec<Option<Handler>>) -> Handlers {
        let mut index = [0u16; 256];
        let mut handlers = Vec::new();
        for (slot, h) in index.iter_mut().zip(by_protocol) {
            if let Some(h) = h {
                handlers.push(h);
                // At most 256 handlers: the position fits.
                *slot = handlers.len() as u16;
            }
        }
        Handlers(Arc::new(HandlerTable { index, handlers }))
    }

    pub(crate) fn get(&self, p: ProtocolId) -> Option<&Handler> {
        let i = usize::from(self.0.index[usize::from(p.0)]);
        i.checked_sub(1).map(|i| &self.0.handlers[i])
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
}
