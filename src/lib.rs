//! syncpeer: one connection to a remote peer, driven by plain OS threads.
//!
//! A thread-based, synchronous rewrite of the Aptos network `Peer` actor. It speaks the same
//! wire format (Aptos messaging v1), offers the same services (direct send, RPC, streaming of
//! large messages, disconnect notification) and fixes the original's shutdown race: **a graceful
//! close delivers every message that was accepted for sending before the connection closes, and
//! whatever cannot be delivered in time is reported, never silently dropped.**
//!
//! # Hello world
//!
//! ```
//! use std::time::Duration;
//! use syncpeer::{Bytes, DisconnectReason, Inbound, Peer, PeerId, ProtocolId};
//!
//! let (a, b) = std::os::unix::net::UnixStream::pair()?;
//! let (tx, inbound) = crossbeam_channel::bounded(16);
//! let server = Peer::builder(b).remote_peer_id(PeerId::from_u64(1)).handler(ProtocolId(0), tx).spawn()?;
//! let client = Peer::builder(a).remote_peer_id(PeerId::from_u64(2)).spawn()?;
//!
//! let call = client.rpc_start(ProtocolId(0), Bytes::from_static(b"ping"), Duration::from_secs(5))?;
//! match inbound.recv_timeout(Duration::from_secs(5))? {
//!     Inbound::Request { data, responder, .. } => responder.respond(data)?,
//!     Inbound::Message { .. } => unreachable!("only an rpc was sent"),
//! }
//! assert_eq!(call.wait()?, Bytes::from_static(b"ping"));
//!
//! client.send(ProtocolId(0), Bytes::from_static(b"bye"))?;
//! let report = client.shutdown(DisconnectReason::RequestedByPeerManager)?;
//! assert_eq!(report.messages_written, 2); // the request and the direct send
//! assert!(report.is_clean());
//! # drop(server);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Threads and channels (per connection)
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
//! Every outgoing message travels application → outbox → mux → frames channel → writer; only
//! the writer writes the socket. The reader waits in `mio::Poll` (and, while a
//! [`Handler::blocking`] channel is full, in a `Select` for room in it), the mux only in a
//! crossbeam `Select`, the writer only on the frames channel (and its own `Poll` when the socket
//! is full). The close joins the mux, then sends `DrainAndClose` through the frames channel, so
//! every frame is ahead of it; how that sequence loses nothing is described in [`peer`].
//!
//! # Non-goals
//!
//! * No handshake on a [`Peer`]: it takes an established socket and, for an encrypted
//!   connection, an established Noise session ([`PeerBuilder::noise`]), as the original's
//!   `Peer` takes an upgraded stream. A [`Network`] runs the Noise IK handshake and the Aptos
//!   handshake v1 before it, as the original does; plaintext connections remain, chosen by
//!   name ([`NetworkBuilder::insecure_plaintext`]), for tests and trusted networks.
//! * No async API, and no runtime: blocking calls, crossbeam channels and `select!`.
//! * `ErrorCode::NotSupported` is defined on the wire but never sent, as in the original.
//!
//! # Modules
//!
//! * [`proto`]: the sans-IO core (messages, codec, streaming, RPC bookkeeping, session).
//! * [`peer`]: the threads of one connection and the public handle.
//! * [`network`]: many connections over TCP: listening and dialing, the Aptos handshake, one
//!   connection per peer, peers kept connected with backoff, broadcast, health checks.
//! * [`keyed`]: fair per-key queues (FIFO, LIFO, KLAST) to use as handler sinks.
//! * [`noise`]: the sans-IO Noise IK layer (handshake and transport) that authenticates and
//!   encrypts a connection as Aptos does: the network runs its handshake, and a peer's writer
//!   and reader threads each own one half of the session.
//! * [`config`], [`error`]: configuration and per-operation errors.
//! * [`sched`]: [`ThreadTuning`], how a connection's threads ask to be scheduled (a short
//!   slice, CPU affinity, `SCHED_FIFO`), for latency on a busy machine.
#![deny(missing_docs)]

pub mod config;
pub mod error;
pub mod keyed;
pub mod network;
pub mod noise;
pub mod peer;
pub mod proto;
pub mod sched;

pub use bytes::Bytes;
pub use config::{ConfigError, PeerConfig};
pub use error::{JoinError, RespondError, RpcError, SendError, SendTimeoutError, TrySendError};
pub use network::{
    ConnectError, HandshakeError, HealthCheckConfig, Link, LinkError, Network, NetworkBuilder,
    NetworkConfig, NetworkEvent,
};
pub use peer::{
    Delivery, DisconnectReason, Disconnected, DrainReport, Handler, HandlerKey, Inbound, Peer,
    PeerBuilder, PeerHandle, PeerId, PeerMetrics, PendingRpc, Receipt, ReceiveDrops, Responder,
    Socket,
};
pub use proto::ProtocolId;
pub use sched::ThreadTuning;

/// The README's Rust examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
