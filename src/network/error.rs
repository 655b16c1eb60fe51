//! The network's error types, one per operation: building a network ([`BuildError`]), dialing
//! a peer ([`ConnectError`], with [`HandshakeError`] grouped by who is at fault: the remote's
//! identity, an incompatible remote, its bytes, or the transport), naming a peer to keep
//! connected ([`KeepError`]), waiting for one ([`WaitError`]) and sending through a
//! [`Link`](super::Link) ([`LinkError`]).

use std::fmt;
use std::io;

use bytes::Bytes;

use super::handshake::{ChainId, NetworkId};
use crate::config::ConfigError;
use crate::peer::PeerId;
use crate::proto::ProtocolId;

/// Why [`NetworkBuilder::build`](super::NetworkBuilder::build) failed.
#[derive(Debug)]
pub enum BuildError {
    /// The [`PeerConfig`](crate::PeerConfig) is out of range.
    PeerConfig(ConfigError),
    /// A [`NetworkConfig`](super::NetworkConfig) field is out of range.
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A handler was registered for the protocol the network reserves for health checks.
    ReservedProtocol(ProtocolId),
    /// One of the network's threads could not be started.
    Spawn(io::Error),
    /// No connection security was chosen: [`noise`](super::NetworkBuilder::noise), or, for
    /// trusted networks and tests,
    /// [`insecure_plaintext`](super::NetworkBuilder::insecure_plaintext).
    NoSecurity,
    /// The Noise configuration announces another peer id than the network's.
    PeerIdMismatch {
        /// The network's.
        network: PeerId,
        /// The Noise configuration's.
        noise: PeerId,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::PeerConfig(e) => write!(f, "invalid peer config: {e}"),
            BuildError::InvalidConfig { field, reason } => write!(f, "invalid {field}: {reason}"),
            BuildError::ReservedProtocol(p) => {
                write!(f, "{p} is reserved for the network's health checks")
            }
            BuildError::Spawn(e) => write!(f, "cannot start a network thread: {e}"),
            BuildError::NoSecurity => {
                f.write_str("no connection security chosen: noise, or insecure plaintext by name")
            }
            BuildError::PeerIdMismatch { network, noise } => write!(
                f,
                "the noise configuration is for peer {noise}, the network for peer {network}"
            ),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::PeerConfig(e) => Some(e),
            BuildError::Spawn(e) => Some(e),
            _ => None,
        }
    }
}

/// Why a connection's upgrade (the identity step, Noise IK or the insecure plain exchange,
/// then the Aptos handshake) was refused or could not complete. On the dialing side it is returned inside [`ConnectError::Handshake`]
/// or reported as [`NetworkEvent::DialFailed`](super::NetworkEvent::DialFailed); on the
/// listening side it is logged and the socket is closed.
#[derive(Debug)]
pub enum HandshakeError {
    /// The remote announced our own `PeerId`: we dialed ourselves.
    SelfConnection,
    /// A dial to a kept peer reached another peer.
    UnexpectedPeer {
        /// The peer the address was given for.
        expected: PeerId,
        /// The peer that answered.
        actual: PeerId,
    },
    /// The remote is on another chain (the original's `InvalidChainId`).
    InvalidChainId {
        /// The remote's.
        theirs: ChainId,
        /// Ours.
        ours: ChainId,
    },
    /// The remote is on another network (the original's `InvalidNetworkId`).
    InvalidNetworkId {
        /// The remote's.
        theirs: NetworkId,
        /// Ours.
        ours: NetworkId,
    },
    /// No messaging version with a protocol in common (the original's `NoCommonProtocols`).
    NoCommonProtocols,
    /// The remote's handshake message is not a valid BCS `HandshakeMsg`.
    Malformed {
        /// What is wrong.
        reason: &'static str,
        /// How many bytes of the message were read when it was found.
        at: usize,
        /// The message's first bytes (at most 16).
        prefix: Vec<u8>,
    },
    /// The remote did not complete the upgrade within `handshake_timeout`.
    TimedOut,
    /// The remote closed the connection before completing the upgrade.
    Closed,
    /// Reading or writing the socket failed.
    Io(io::Error),
    /// The Noise handshake was refused or failed: on the listener, the client is unknown,
    /// untrusted, replayed its timestamp or sent bytes that do not authenticate; on the dialer,
    /// the server does not hold the key dialed. Counted by kind in the node's
    /// [`NoiseStats`](crate::noise::NoiseStats).
    Noise(crate::noise::HandshakeError),
    /// A Noise message of the Aptos handshake was refused (tampered, bad length): counted in
    /// the node's [`NoiseStats`](crate::noise::NoiseStats).
    NoiseMessage(crate::noise::ReadError),
    /// The Noise message that ends the remote's handshake message carries more bytes after
    /// it (a conforming remote flushes its handshake message on its own).
    TrailingBytes {
        /// The bytes after the handshake message.
        len: usize,
    },
    /// A dial over Noise without the remote's peer id and static key.
    MissingKey,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::SelfConnection => f.write_str("connected to ourselves"),
            HandshakeError::UnexpectedPeer { expected, actual } => {
                write!(f, "expected peer {expected}, reached peer {actual}")
            }
            HandshakeError::InvalidChainId { theirs, ours } => {
                write!(f, "the remote is on {theirs}, this node on {ours}")
            }
            HandshakeError::InvalidNetworkId { theirs, ours } => {
                write!(f, "the remote is on the {theirs}, this node on the {ours}")
            }
            HandshakeError::NoCommonProtocols => {
                f.write_str("no messaging version with a protocol in common")
            }
            HandshakeError::Malformed { reason, at, prefix } => {
                write!(
                    f,
                    "malformed handshake message ({reason} after {at} bytes):"
                )?;
                prefix.iter().try_for_each(|b| write!(f, " {b:02x}"))
            }
            HandshakeError::TimedOut => f.write_str("handshake timed out"),
            HandshakeError::Closed => f.write_str("connection closed during the handshake"),
            HandshakeError::Io(e) => write!(f, "handshake i/o error: {e}"),
            HandshakeError::Noise(e) => write!(f, "noise handshake failed: {e}"),
            HandshakeError::NoiseMessage(e) => write!(f, "during the handshake: {e}"),
            HandshakeError::TrailingBytes { len } => write!(
                f,
                "{len} bytes after the handshake message in its noise message"
            ),
            HandshakeError::MissingKey => {
                f.write_str("a dial over noise needs the remote's peer id and static key")
            }
        }
    }
}

impl std::error::Error for HandshakeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HandshakeError::Io(e) => Some(e),
            HandshakeError::Noise(e) => Some(e),
            HandshakeError::NoiseMessage(e) => Some(e),
            _ => None,
        }
    }
}

/// Why [`Network::connect`](super::Network::connect) failed.
#[derive(Debug)]
pub enum ConnectError {
    /// The address did not resolve, or resolved to nothing.
    Resolve(io::Error),
    /// No address could be connected to within `dial_timeout` each (the last address's error;
    /// its kind is `TimedOut` for a timeout).
    Dial(io::Error),
    /// The upgrade was refused or did not complete.
    Handshake(HandshakeError),
    /// The remote (named here) already has a live connection with this node; it was left
    /// alone and the new one closed before its handshake, so the remote never used it.
    AlreadyConnected(PeerId),
    /// The connection's threads could not be started.
    Spawn(io::Error),
    /// The network is shutting down.
    ShuttingDown,
    /// This network runs Noise: a dial must name the peer and the static key it is to prove
    /// ([`connect`](super::Network::connect)).
    KeyRequired,
    /// This network runs insecure plaintext, which cannot check a key: dial with
    /// [`connect_insecure`](super::Network::connect_insecure).
    InsecureNetwork,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Resolve(e) => write!(f, "cannot resolve the address: {e}"),
            ConnectError::Dial(e) => write!(f, "dial failed: {e}"),
            ConnectError::Handshake(e) => write!(f, "handshake failed: {e}"),
            ConnectError::AlreadyConnected(p) => write!(f, "already connected to peer {p}"),
            ConnectError::Spawn(e) => write!(f, "cannot start the connection: {e}"),
            ConnectError::ShuttingDown => f.write_str("network is shutting down"),
            ConnectError::KeyRequired => {
                f.write_str("this network runs noise: dial with the peer's id and key")
            }
            ConnectError::InsecureNetwork => {
                f.write_str("this network runs insecure plaintext: it cannot check a key")
            }
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Resolve(e) | ConnectError::Dial(e) | ConnectError::Spawn(e) => Some(e),
            ConnectError::Handshake(e) => Some(e),
            ConnectError::AlreadyConnected(_)
            | ConnectError::ShuttingDown
            | ConnectError::KeyRequired
            | ConnectError::InsecureNetwork => None,
        }
    }
}

impl From<HandshakeError> for ConnectError {
    fn from(e: HandshakeError) -> ConnectError {
        ConnectError::Handshake(e)
    }
}

/// Why [`Network::keep_connected`](super::Network::keep_connected) refused a peer.
#[derive(Debug)]
pub enum KeepError {
    /// The address did not resolve, or resolved to nothing.
    Resolve(io::Error),
    /// The peer is this node.
    LocalPeer,
    /// The network is shutting down.
    ShuttingDown,
    /// This network runs Noise: name the peer's static key
    /// ([`keep_connected`](super::Network::keep_connected)).
    KeyRequired,
    /// This network runs insecure plaintext, which cannot check a key: use
    /// [`keep_connected_insecure`](super::Network::keep_connected_insecure).
    InsecureNetwork,
}

impl fmt::Display for KeepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepError::Resolve(e) => write!(f, "cannot resolve the address: {e}"),
            KeepError::LocalPeer => f.write_str("the peer is this node"),
            KeepError::ShuttingDown => f.write_str("network is shutting down"),
            KeepError::KeyRequired => f.write_str("this network runs noise: name the peer's key"),
            KeepError::InsecureNetwork => {
                f.write_str("this network runs insecure plaintext: it cannot check a key")
            }
        }
    }
}

impl std::error::Error for KeepError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KeepError::Resolve(e) => Some(e),
            _ => None,
        }
    }
}

/// Why [`Network::wait_for_peer`](super::Network::wait_for_peer) returned without a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitError {
    /// The peer was not connected within the timeout.
    TimedOut,
    /// The network is shutting down.
    ShuttingDown,
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::TimedOut => f.write_str("timed out waiting for the peer"),
            WaitError::ShuttingDown => f.write_str("network is shutting down"),
        }
    }
}

impl std::error::Error for WaitError {}

/// Why an operation through a [`Link`](super::Link) failed: the protocol check the link adds,
/// or the connection's own error `E` ([`SendError`](crate::SendError),
/// [`TrySendError`](crate::TrySendError), [`SendTimeoutError`](crate::SendTimeoutError) or
/// [`RpcError`](crate::RpcError)).
#[derive(Clone, PartialEq, Eq)]
pub enum LinkError<E> {
    /// The protocol is not in the connection's negotiated set (both ends must announce it in
    /// their handshake): nothing was queued, and the payload is handed back.
    NotNegotiated {
        /// The protocol asked for.
        protocol: ProtocolId,
        /// The payload, handed back.
        data: Bytes,
    },
    /// The connection refused it.
    Peer(E),
}

impl<E> From<E> for LinkError<E> {
    fn from(e: E) -> LinkError<E> {
        LinkError::Peer(e)
    }
}

impl<E: fmt::Debug> fmt::Debug for LinkError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print payload bytes: only the protocol and the length.
        match self {
            LinkError::NotNegotiated { protocol, data } => {
                write!(f, "NotNegotiated({protocol:?}, {} bytes)", data.len())
            }
            LinkError::Peer(e) => f.debug_tuple("Peer").field(e).finish(),
        }
    }
}

impl<E: fmt::Display> fmt::Display for LinkError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::NotNegotiated { protocol, .. } => {
                write!(f, "{protocol} was not negotiated with the remote")
            }
            LinkError::Peer(e) => e.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for LinkError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LinkError::NotNegotiated { .. } => None,
            LinkError::Peer(e) => Some(e),
        }
    }
}
