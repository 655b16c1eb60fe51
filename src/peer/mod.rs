//! The threads that run one connection, and the public types around them.
//!
//! ```text
//!  app threads ──send / rpc / respond──▶ [outbox: gated] ──▶ ┌──────────┐ ──▶ [frames: bounded FIFO] ──▶ writer ──▶ socket
//!                                                           │   mux    │      Batch … | DrainAndClose
//!  socket ──▶ reader ──▶ [inbound: bounded] ──────────────▶ │ (owns    │
//!             │ (mio Poll: READABLE + stop Waker)           │ Session) │ ──▶ handlers (RPC requests)
//!             ├──▶ handlers (direct sends)                  └──────────┘ ──▶ RPC callers (timeouts)
//!             └──▶ RPC callers (responses)
//! ```
//!
//! Every outgoing message (direct send, RPC request, response) travels the same path: the
//! application's thread puts it in the outbox, the mux turns it into frames and packs them into
//! batches, the frames channel carries the batches to the writer, and the writer alone writes
//! the socket. One queue at each step, so what one thread does is written in the order it did
//! it. Each thread has one way to wait at a time: the reader in its `mio::Poll` (and, only while
//! a full [`Handler::blocking`] holds it up, in a `Select` for room that leaves the socket
//! unread), the mux in a crossbeam `Select`, the writer on the frames channel (and on its own
//! `Poll` when the socket is full).
//! The reader hands direct sends to their handlers and RPC responses to their callers itself,
//! which keeps one thread hop off those paths; what needs the RPC state goes to the mux.

//! # The one shared table
//!
//! Protocol state has one owner: the mux owns the session (pending RPCs, inbound RPC slots,
//! stream state, timers), the reader its decoder and reassembler, the writer the socket. The
//! one exception is the table of outbound RPC callers by request id (`Shared::callers`): the
//! mux inserts a caller when it admits the request, before the request can be written, and the
//! reader hands a response straight to its caller from there, which saves the RPC path a
//! thread hop (reader → mux → caller) on every call. The one-outcome rule holds because the
//! entry is *removed* under the table's lock by whoever delivers, and only the remover sends:
//! the reader on a response, the mux on the timeout, a cancellation or the close. A response
//! the reader finds no entry for was already settled (timed out, cancelled, failed at close)
//! and is counted as unknown; a timer that finds no entry knows the reader answered first and
//! counts the call as succeeded. The reader then tells the mux (`Completed`) so that the
//! session frees the slot.
//!
//! # How a connection closes
//!
//! Whoever starts the close (the application through `shutdown`, `close` or `abort`, or by
//! dropping the last handle; the reader on EOF or a read error; the writer on a write error or
//! timeout; any connection thread that panics) calls the same function, which records the
//! reason (the first one wins) with the drain deadline, `linger` from now, closes the outbox's
//! input and spawns the closer thread. From then on `send` refuses with the payload handed back;
//! everything accepted before is already in the outbox, ahead of anything later, because the
//! gate's write lock waits for the sends in progress.
//!
//! The mux learns of the close from the same gate. It keeps running its event loop, turning
//! what the outbox holds into frames and waiting for in-flight RPCs in both directions, until
//! none is left or the deadline passes; responses to its own requests are waited for only while
//! the reader runs, since after the remote's EOF none can arrive. Then it closes the outbox for
//! good, settles what is left (past the deadline, abandoned; RPC callers fail with
//! `RpcError::Disconnected`) and ends.
//!
//! The closer joins the mux thread: once the join returns, every frame the connection will ever
//! write is in the frames channel. Only then does it send `DrainAndClose` into that same
//! channel, so the marker is behind every frame by FIFO order: no `select!` can pick it first,
//! which is the original's bug. The writer writes everything ahead of the marker (or, past the
//! deadline, abandons it and counts each message), then half-closes the socket so the remote
//! reads EOF after the last byte. The reader goes on reading and delivering until the remote's
//! EOF or the deadline, so the kernel never resets data the remote has not read. The closer
//! joins the writer and the reader, publishes the [`DrainReport`] and sends exactly one
//! [`Disconnected`], waiting until it is taken or its receiver dropped.
//!
//! `abort` is the same sequence with a deadline of now: nothing more is written, every queued
//! message is counted as abandoned and every waiting RPC fails with `RpcError::Cancelled`.
//!
//! Over Noise ([`PeerBuilder::noise`]) the sequence is the same: the writer seals the frames
//! ahead of the marker into Noise messages and writes them, so `DrainAndClose` still follows
//! the last encrypted frame, and the half-close comes after the last Noise message. A message
//! counts as written once the Noise message holding its last byte is whole on the wire; when
//! the writer gives up part way through a Noise message it writes nothing more, so the remote
//! sees a cut message at the very end, never anything after it.
//!
//! # What the receiving side accounts for
//!
//! Every direct send and RPC request read off the socket as a whole message (a streamed one
//! once its last fragment is in) has exactly one outcome, counted once: delivered to its
//! handler (`direct_sends_delivered`, `requests_delivered`) or dropped, by cause (the fields
//! of [`ReceiveDrops`]). A frame that does not decode is counted as one message dropped
//! (`malformed_frames`), since what it was cannot be known. So once both ends have closed,
//! for the messages one side wrote (direct sends and requests; its responses are matched to
//! the other side's callers, `responses_matched`),
//!
//! ```text
//! sender's direct sends and requests written
//!     == receiver's direct_sends_delivered + requests_delivered + receive_drops().total()
//! ```
//!
//! provided the receiver read to the sender's EOF (a receiver that aborts, or passes its drain
//! deadline, leaves bytes unread in its socket, which are no message of its). Bytes never
//! completed into a message (a stream cut by EOF) count nowhere: only the sender can know the
//! message was never finished.
//!
//! "Delivered" means handed to the handler: put in its channel or queue, or run through its
//! inline function. What the application does afterwards (reading it or not) is its own; a
//! keyed queue's push that evicts an older message counts as one drop and no delivery, since
//! the queue holds as many messages as before (see [`Handler`]).

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::proto::ProtocolId;

mod batch;
mod builder;
mod call;
mod close;
mod handle;
mod handler;
mod held;
mod metrics;
mod mux;
mod outbox;
mod reader;
mod receipt;
mod responder;
mod shared;
mod signal;
mod socket;
mod spin;
mod transport;
mod writer;

pub use builder::{Peer, PeerBuilder};
pub use call::PendingRpc;
pub use handle::PeerHandle;
pub use handler::{Handler, HandlerKey};
pub use metrics::{PeerMetrics, ReceiveDrops};
pub use receipt::{Delivery, Receipt};
pub use responder::Responder;
pub use socket::Socket;

/// Stack size of each connection thread: enough for the loops here, small enough that a
/// process can hold thousands of connections.
const THREAD_STACK: usize = 256 * 1024;

thread_local! {
    /// The connection whose thread this is (the address of its shared state), 0 elsewhere.
    static OWN_CONNECTION: Cell<usize> = const { Cell::new(0) };
}

/// Marks the calling thread as one of `shared`'s connection threads.
fn mark_own_thread(shared: &Arc<shared::Shared>) {
    OWN_CONNECTION.with(|c| c.set(Arc::as_ptr(shared) as usize));
}

/// True on one of `shared`'s connection threads, where waiting for its close would deadlock.
fn is_own_thread(shared: &Arc<shared::Shared>) -> bool {
    OWN_CONNECTION.with(|c| c.get() == Arc::as_ptr(shared) as usize)
}

/// A peer's identity: 32 bytes, shown as the first 4 in hex (as the original's `short_str`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PeerId(pub [u8; 32]);

impl PeerId {
    /// A peer id for tests and examples: `n` big-endian in the last 8 bytes, and its low 32
    /// bits also in the first 4, so that the short `Display` shows it (`from_u64(7)` displays
    /// as `00000007`). Below 2^32, ids order as their `n` do.
    pub fn from_u64(n: u64) -> PeerId {
        let mut id = [0; 32];
        id[..4].copy_from_slice(&(n as u32).to_be_bytes());
        id[24..].copy_from_slice(&n.to_be_bytes());
        PeerId(id)
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0[..4].iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PeerId(")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        f.write_str(")")
    }
}

/// Why a connection closed (the original's variants).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DisconnectReason {
    /// The remote closed its side (EOF at a frame boundary).
    ConnectionClosed,
    /// A read or write failed, a write made no progress for `write_timeout`, the remote sent a
    /// length over `max_frame_size`, or EOF came inside a frame.
    InputOutputError,
    /// Health checks failed (chosen by the caller of `shutdown`).
    NetworkHealthCheckFailure,
    /// The local application asked, or dropped its last handle.
    RequestedByPeerManager,
    /// A newer connection to the same peer replaced this one (chosen by the caller).
    StaleConnection,
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DisconnectReason::ConnectionClosed => "connection closed by the remote",
            DisconnectReason::InputOutputError => "input/output error",
            DisconnectReason::NetworkHealthCheckFailure => "network health check failure",
            DisconnectReason::RequestedByPeerManager => "requested by the peer manager",
            DisconnectReason::StaleConnection => "stale connection",
        })
    }
}

/// What a close achieved, in both directions. For every message accepted for sending,
/// `messages_accepted == messages_written + messages_abandoned`; for every direct send and
/// request received, it was delivered or dropped by a cause of [`ReceiveDrops`] (see the
/// [module docs](self) for the equation across a pair of peers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainReport {
    /// The first reason given.
    pub reason: DisconnectReason,
    /// True if the close was an `abort`.
    pub aborted: bool,
    /// Messages (direct sends, RPC requests and responses) accepted over the connection's life.
    pub messages_accepted: u64,
    /// Their payload bytes.
    pub bytes_accepted: u64,
    /// Messages whose last byte the kernel took.
    pub messages_written: u64,
    /// Their payload bytes.
    pub bytes_written: u64,
    /// Messages that will never be written (deadline passed, I/O error, abort).
    pub messages_abandoned: u64,
    /// Their payload bytes.
    pub bytes_abandoned: u64,
    /// Outbound RPCs still waiting when the close ended (they failed).
    pub rpcs_failed_at_close: u64,
    /// Inbound messages delivered to handlers after the close started.
    pub delivered_during_drain: u64,
    /// Inbound direct sends handed to a handler over the connection's life.
    pub direct_sends_delivered: u64,
    /// Inbound RPC requests handed to a handler over the connection's life.
    pub requests_delivered: u64,
    /// Inbound direct sends and requests received but not delivered, by cause.
    pub receive_drops: ReceiveDrops,
    /// From the start of the close to the end of the last thread.
    pub drain_duration: Duration,
}

impl DrainReport {
    /// True if nothing accepted for sending was abandoned: the sending side's verdict. The
    /// receiving side's is [`receive_drops`](DrainReport::receive_drops) (see
    /// [`is_lossless`](DrainReport::is_lossless)).
    pub fn is_clean(&self) -> bool {
        self.messages_abandoned == 0
    }

    /// True if nothing was lost in either direction: nothing accepted was abandoned, and
    /// nothing received was dropped.
    pub fn is_lossless(&self) -> bool {
        self.is_clean() && self.receive_drops.is_empty()
    }

    /// Inbound direct sends and requests handed to a handler.
    pub fn delivered(&self) -> u64 {
        self.direct_sends_delivered + self.requests_delivered
    }

    /// Inbound direct sends and requests received: delivered or dropped.
    pub fn received(&self) -> u64 {
        self.delivered() + self.receive_drops.total()
    }
}

/// Sent once per connection, after all its threads have stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disconnected {
    /// The remote.
    pub peer_id: PeerId,
    /// Why it closed.
    pub reason: DisconnectReason,
    /// What the close achieved.
    pub report: DrainReport,
}

/// A message from the remote, handed to the handler registered for its protocol.
#[derive(Debug)]
pub enum Inbound {
    /// A direct send.
    Message {
        /// The remote.
        from: PeerId,
        /// The protocol.
        protocol: ProtocolId,
        /// The payload.
        data: Bytes,
    },
    /// An RPC request: answer through `responder` before `inbound_rpc_timeout`.
    Request {
        /// The remote.
        from: PeerId,
        /// The protocol.
        protocol: ProtocolId,
        /// The payload.
        data: Bytes,
        /// Sends the response.
        responder: Responder,
    },
}

impl Inbound {
    /// The protocol the message arrived on.
    pub fn protocol(&self) -> ProtocolId {
        match self {
            Inbound::Message { protocol, .. } | Inbound::Request { protocol, .. } => *protocol,
        }
    }

    /// The payload.
    pub fn data(&self) -> &Bytes {
        match self {
            Inbound::Message { data, .. } | Inbound::Request { data, .. } => data,
        }
    }
}
