//! [`Peer::builder`]: collects the socket, the configuration and the handlers, then spawns the
//! three threads of one connection.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use bytes::Bytes;
use crossbeam_channel::{Sender, TrySendError};
use parking_lot::{Condvar, Mutex};

use super::gate::Gate;
use super::handle::{HandleInner, PeerHandle};
use super::lane::Lane;
use super::metrics::{Counters, RateLimited};
use super::mux::Mux;
use super::reader::Reader;
use super::shared::{Shared, Warnings};
use super::socket::Socket;
use super::writer::Writer;
use super::{Disconnected, Inbound, PeerId};
use crate::config::PeerConfig;
use crate::keyed;
use crate::proto::ProtocolId;

/// Stack size of each connection thread: enough for the loops here, small enough that a
/// process can hold thousands of connections.
const THREAD_STACK: usize = 256 * 1024;

/// Capacity of the reader → mux channel. It carries RPC traffic and malformed frames only,
/// and crossbeam preallocates every slot, so it is kept small: a thousand peers would
/// otherwise hold 70 MiB of empty slots here.
const INBOUND_CAPACITY: usize = 128;

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

/// Handlers indexed by protocol byte: one array look-up per inbound message.
#[derive(Clone, Debug)]
pub(crate) struct Handlers(Arc<[Option<Handler>]>);

impl Handlers {
    pub(crate) fn get(&self, p: ProtocolId) -> Option<&Handler> {
        self.0[usize::from(p.0)].as_ref()
    }
}

/// Entry point: see [`Peer::builder`].
#[derive(Debug)]
pub struct Peer(());

impl Peer {
    /// Starts describing a peer on an established `socket` (a `std::net::TcpStream` or a
    /// `std::os::unix::net::UnixStream`).
    pub fn builder(socket: impl Into<Socket>) -> PeerBuilder {
        PeerBuilder {
            socket: socket.into(),
            config: PeerConfig::default(),
            remote: PeerId::default(),
            handlers: vec![None; 256],
            on_disconnect: None,
        }
    }
}

/// Configures and spawns a peer.
#[derive(Debug)]
pub struct PeerBuilder {
    socket: Socket,
    config: PeerConfig,
    remote: PeerId,
    handlers: Vec<Option<Handler>>,
    on_disconnect: Option<Sender<Disconnected>>,
}

impl PeerBuilder {
    /// Sets the configuration (default: [`PeerConfig::default`]).
    pub fn config(mut self, config: PeerConfig) -> PeerBuilder {
        self.config = config;
        self
    }

    /// Sets the remote's id, used in `Inbound::from`, logs and `Disconnected`.
    pub fn remote_peer_id(mut self, id: PeerId) -> PeerBuilder {
        self.remote = id;
        self
    }

    /// Routes inbound direct sends and RPC requests of `protocol` to `handler`. Messages of a
    /// protocol with no handler are dropped and counted (as the original does).
    pub fn handler(mut self, protocol: ProtocolId, handler: impl Into<Handler>) -> PeerBuilder {
        self.handlers[usize::from(protocol.0)] = Some(handler.into());
        self
    }

    /// Where the one `Disconnected` notice goes when the connection has closed.
    pub fn on_disconnect(mut self, tx: Sender<Disconnected>) -> PeerBuilder {
        self.on_disconnect = Some(tx);
        self
    }

    /// Validates the configuration and starts the reader, mux and writer threads.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for an invalid [`PeerConfig`]; any error from making the socket
    /// non-blocking, duplicating it, creating the polls or spawning the threads.
    pub fn spawn(self) -> io::Result<PeerHandle> {
        self.config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let (read_half, write_half) = self.socket.split()?;
        let write_half = Arc::new(write_half);
        let lane = Lane::new(
            write_half.clone(),
            self.config.max_frame_size,
            self.config.outbox_capacity,
        );
        let reader_poll = mio::Poll::new()?;
        let writer_poll = mio::Poll::new()?;
        let reader_waker = mio::Waker::new(reader_poll.registry(), super::reader::WAKER)?;
        let writer_waker = mio::Waker::new(writer_poll.registry(), super::writer::WAKER)?;

        let (outbox_tx, outbox_rx) = crossbeam_channel::bounded(self.config.outbox_capacity);
        let (replies_tx, replies_rx) = crossbeam_channel::unbounded();
        let (inbound_tx, inbound_rx) = crossbeam_channel::bounded(INBOUND_CAPACITY);
        let (reader_done_tx, reader_done_rx) = crossbeam_channel::bounded::<()>(0);

        let shared = Arc::new(Shared {
            config: self.config,
            remote: self.remote,
            outbox: Gate::new(outbox_tx),
            outbox_rx: outbox_rx.clone(),
            replies: Arc::new(Gate::new(replies_tx)),
            counters: Counters::default(),
            warnings: Warnings {
                unknown_protocol: RateLimited::new("dropped message for unknown protocol"),
                handler_full: RateLimited::new("dropped message, handler full"),
                inbound_rpc_limit: RateLimited::new("dropped rpc request over the limit"),
                malformed: RateLimited::new("malformed frame"),
                stream: RateLimited::new("bad stream frame"),
                remote_error: RateLimited::new("remote reported an error"),
            },
            close: Mutex::new(Default::default()),
            finished: Condvar::new(),
            closing: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
            waiters: Mutex::new(Default::default()),
            lane,
            reader_stop: AtomicBool::new(false),
            reader_waker,
            writer_waker,
        });
        let handlers = Handlers(self.handlers.into());

        let writer = Writer::new(shared.clone(), write_half, writer_poll);
        let own = shared.clone();
        let writer = spawn_named("syncpeer-writer", move || {
            super::mark_own_thread(&own);
            writer.run()
        })?;
        let reader = Reader::new(
            shared.clone(),
            read_half,
            reader_poll,
            handlers.clone(),
            inbound_tx,
            reader_done_tx,
        );
        let own = shared.clone();
        let reader = match spawn_named("syncpeer-reader", move || {
            super::mark_own_thread(&own);
            reader.run()
        }) {
            Ok(r) => r,
            Err(e) => {
                shared.begin_close(super::DisconnectReason::InputOutputError, true);
                shared.lane.close_writer();
                return Err(e);
            }
        };
        let mux = Mux::new(shared.clone(), handlers, outbox_rx, inbound_rx, replies_rx);
        let on_disconnect = self.on_disconnect;
        let mux_shared = shared.clone();
        let mux_thread = spawn_named("syncpeer-mux", move || {
            super::mark_own_thread(&mux.shared);
            mux.run_and_close(writer, reader, reader_done_rx, on_disconnect)
        });
        let mux_thread = match mux_thread {
            Ok(t) => t,
            Err(e) => {
                mux_shared.begin_close(super::DisconnectReason::InputOutputError, true);
                mux_shared.lane.close_writer();
                return Err(e);
            }
        };
        log::debug!("peer {}: spawned", shared.remote);
        Ok(PeerHandle {
            inner: Arc::new(HandleInner {
                shared,
                mux_thread: Mutex::new(Some(mux_thread)),
            }),
        })
    }
}

fn spawn_named<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<std::thread::JoinHandle<T>> {
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(THREAD_STACK)
        .spawn(f)
}
