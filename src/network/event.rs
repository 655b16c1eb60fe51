//! What the network tells the application: [`NetworkEvent`]s on each subscription from
//! [`Network::events`](super::Network::events), and [`ConnectionInfo`] about a peer's current
//! connection.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::handshake::ProtocolIdSet;
use crate::noise::{PublicKey, Trust};
use crate::peer::{DisconnectReason, DrainReport, PeerId};

/// A change in the set of connected peers, the end of a replaced connection, or a background
/// dial of a kept peer.
///
/// Per peer, `Connected` and `Disconnected` alternate, starting with `Connected`: a connection
/// that arrives while the previous one is still draining waits (invisible) until that one's
/// `Disconnected` has been sent. Every connection the application could send on ends with
/// exactly one `Disconnected` or `Replaced`, carrying its [`DrainReport`], so summing the
/// reports of both accounts for every message the network accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkEvent {
    /// The peer is connected: [`Network::peer`](super::Network::peer) now returns a handle.
    Connected(PeerId),
    /// The peer's connection has closed (all its threads have ended) and no other connection
    /// to it is current.
    Disconnected {
        /// The remote.
        peer_id: PeerId,
        /// Why the connection closed (the first reason given).
        reason: DisconnectReason,
        /// What its close achieved.
        report: DrainReport,
    },
    /// A connection to a peer that stays connected has closed because another connection to
    /// it won a dial collision (reason `StaleConnection`). Its messages were drained like any
    /// graceful close; `report` says what that achieved.
    Replaced {
        /// The remote.
        peer_id: PeerId,
        /// What the replaced connection's close achieved.
        report: DrainReport,
    },
    /// A background dial of a peer named with
    /// [`keep_connected`](super::Network::keep_connected) starts. Success shows as
    /// `Connected` (unless the peer got connected otherwise meanwhile), failure as
    /// `DialFailed`.
    Dialing {
        /// The peer.
        peer_id: PeerId,
        /// The first address tried.
        addr: SocketAddr,
        /// Attempts since the peer was last connected (or named), this one included.
        attempt: u32,
    },
    /// That dial failed; the next starts `retry_in` later.
    DialFailed {
        /// The peer.
        peer_id: PeerId,
        /// The last address tried.
        addr: SocketAddr,
        /// As in `Dialing`.
        attempt: u32,
        /// What went wrong (a [`ConnectError`](super::ConnectError), displayed).
        error: String,
        /// The backoff before the next attempt, jitter included.
        retry_in: Duration,
    },
}

impl NetworkEvent {
    /// The peer the event is about.
    pub fn peer_id(&self) -> PeerId {
        match self {
            NetworkEvent::Connected(p) => *p,
            NetworkEvent::Disconnected { peer_id, .. }
            | NetworkEvent::Replaced { peer_id, .. }
            | NetworkEvent::Dialing { peer_id, .. }
            | NetworkEvent::DialFailed { peer_id, .. } => *peer_id,
        }
    }

    /// The drain report of a `Disconnected` or `Replaced` event.
    pub fn report(&self) -> Option<&DrainReport> {
        match self {
            NetworkEvent::Disconnected { report, .. } | NetworkEvent::Replaced { report, .. } => {
                Some(report)
            }
            _ => None,
        }
    }
}

/// Identifies one connection within a network (a counter from 0; never reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connection {}", self.0)
    }
}

/// Who dialed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnectionOrigin {
    /// The remote dialed us (accepted by a listener).
    Inbound,
    /// We dialed the remote (`connect`).
    Outbound,
}

/// A connection's identity. Both ends of one TCP connection agree on it: one's `local_addr`
/// is the other's `remote_addr`, and the origins are opposite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// This network's id for the connection.
    pub id: ConnectionId,
    /// The remote.
    pub peer_id: PeerId,
    /// Who dialed.
    pub origin: ConnectionOrigin,
    /// Our end's address.
    pub local_addr: SocketAddr,
    /// The remote's end's address.
    pub remote_addr: SocketAddr,
    /// The protocols negotiated in the handshake: those both ends announced. A
    /// [`Link`](super::Link) refuses to send on any other.
    pub protocols: ProtocolIdSet,
    /// How the remote proved who it is.
    pub authentication: Authentication,
}

/// How a connection's remote proved who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Authentication {
    /// Insecure plaintext: the peer id is whatever the remote said, and nothing is encrypted.
    InsecurePlaintext,
    /// Noise IK: the remote proved that it holds `key`, and every byte is encrypted.
    Noise {
        /// The remote's static public key.
        key: PublicKey,
        /// Whether the remote is in the trusted set (on a maybe-mutual listener, strangers
        /// are let in as `Untrusted`).
        trust: Trust,
    },
}
