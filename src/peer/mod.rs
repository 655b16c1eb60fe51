//! The threads that run one connection, and the public types around them.
//!
//! ```text
//!  app threads ──send (one frame, nothing queued ahead)──────────────────────────────┐
//!       │                                                                            ▼
//!       └─send/rpc──▶ [outbox: bounded, gated] ──▶ ┌──────────┐ ──append──▶ [lane: ordered frames] ──▶ writer ──▶ socket
//!                                                 │   mux    │             (or a direct write
//!  socket ──▶ reader ──▶ [inbound: bounded] ────▶ │ (owns    │              when idle)
//!             │ (mio Poll: READABLE + stop Waker) │ Session) │ ──▶ upstream handlers (requests)
//!             └──▶ upstream handlers (direct)     │          │ ──▶ RPC callers' reply channels
//!  Responder::respond ──▶ [replies: gated] ─────▶ └──────────┘
//! ```
//!
//! The lane (see `lane.rs`) stands where DESIGN.md draws the frames channel: one FIFO of
//! encoded frames, with the close marker last. What it adds is a fast path for direct sends
//! that fit one frame: the sending thread encodes the frame into the lane itself, as long as
//! nothing it sent earlier is still waiting in the outbox (so acceptance order stays wire
//! order), and on an idle connection writes it itself. Everything else goes through the mux.

//! # How a connection closes
//!
//! Whoever starts the close (the application through `shutdown` or by dropping the last
//! handle, the reader on EOF or a read error, the writer on a write error or timeout) does the
//! same two things: it records its reason (the first one wins) together with the drain
//! deadline, `linger` from now, and it closes the outbox gate and the lane's fast path. From
//! then on `send` refuses with the payload handed back; everything accepted before is already
//! in the outbox or in the lane.
//!
//! The mux notices the close when the outbox reports `Disconnected`, which crossbeam does only
//! after every queued command was received: nothing accepted is skipped. It keeps running its
//! event loop, writing what it drained and waiting for in-flight RPCs in both directions, until
//! none is left or the deadline passes; responses to its own requests are waited for only while
//! the reader runs, since after the remote's EOF (or a read error) none can arrive. Then the
//! mux loop ends and the same thread becomes the supervisor: program order stands in for "join
//! the mux thread". It closes the replies gate and handles the replies accepted before that,
//! fails the RPCs still waiting (`RpcError::Disconnected`), reports every message not handed to
//! the lane as abandoned, appends its last frames and closes the lane (`DrainAndClose`). The
//! fast path closed with the gate, so every frame is ahead of the marker: no `select!` can pick
//! the marker first, which is the original's bug.
//!
//! The writer writes every frame ahead of the marker (or, past the deadline, abandons them and
//! counts each message), then half-closes the socket so the remote reads EOF after the last
//! byte. The reader goes on reading and delivering until the remote's EOF or the deadline, so
//! the kernel never resets data the remote has not read. The supervisor joins the writer and
//! the reader, builds the [`DrainReport`] and sends exactly one [`Disconnected`].
//!
//! `abort` is the same sequence with a deadline of now: nothing more is written, every queued
//! message is counted as abandoned and every waiting RPC fails with `RpcError::Cancelled`.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::proto::ProtocolId;

mod builder;
mod gate;
mod handle;
mod lane;
mod metrics;
mod mux;
mod reader;
mod shared;
mod socket;
mod spin;
mod supervisor;
mod writer;

pub use builder::{Handler, HandlerKey, Peer, PeerBuilder};
pub use handle::{Delivery, PeerHandle, PendingRpc, Receipt, Responder};
pub use metrics::PeerMetrics;
pub use socket::Socket;

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

/// What a close achieved. For every message accepted for sending,
/// `messages_accepted == messages_written + messages_abandoned`.
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
    /// From the start of the close to the end of the last thread.
    pub drain_duration: Duration,
}

impl DrainReport {
    /// True if nothing accepted was abandoned.
    pub fn is_clean(&self) -> bool {
        self.messages_abandoned == 0
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
