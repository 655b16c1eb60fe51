//! The network's error types, one per operation: building a network ([`BuildError`]), dialing
//! a peer ([`ConnectError`]) and the handshake on either side ([`HandshakeError`], grouped by
//! who is at fault: the remote's bytes, an incompatible remote, or the transport).

use std::fmt;
use std::io;

use crate::config::ConfigError;
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
    /// The network's thread could not be started.
    Spawn(io::Error),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::PeerConfig(e) => write!(f, "invalid peer config: {e}"),
            BuildError::InvalidConfig { field, reason } => write!(f, "invalid {field}: {reason}"),
            BuildError::ReservedProtocol(p) => {
                write!(f, "{p} is reserved for the network's health checks")
            }
            BuildError::Spawn(e) => write!(f, "cannot start the network thread: {e}"),
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

/// Why a handshake was refused or could not complete. On the dialing side it is returned
/// inside [`ConnectError::Handshake`]; on the listening side it is logged (`warn!`) and the
/// socket is closed.
#[derive(Debug)]
pub enum HandshakeError {
    /// The remote's first bytes are not the magic `SYNP`: it does not speak this protocol.
    /// Holds the bytes received in their place (up to 4).
    BadMagic(Vec<u8>),
    /// The remote speaks a messaging version other than V1 (`0`).
    UnsupportedVersion(u8),
    /// The remote announced our own `PeerId`: we dialed ourselves.
    SelfConnection,
    /// The remote supports none of our application protocols.
    NoCommonProtocol,
    /// The remote did not complete its handshake within `handshake_timeout`.
    TimedOut,
    /// The remote closed the connection before completing its handshake.
    Closed,
    /// Reading or writing the socket failed.
    Io(io::Error),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::BadMagic(b) => write!(f, "bad magic {b:02x?}, expected \"SYNP\""),
            HandshakeError::UnsupportedVersion(v) => {
                write!(
                    f,
                    "unsupported messaging version {v} (only 0, V1, is spoken)"
                )
            }
            HandshakeError::SelfConnection => f.write_str("connected to ourselves"),
            HandshakeError::NoCommonProtocol => f.write_str("no application protocol in common"),
            HandshakeError::TimedOut => f.write_str("handshake timed out"),
            HandshakeError::Closed => f.write_str("connection closed during the handshake"),
            HandshakeError::Io(e) => write!(f, "handshake i/o error: {e}"),
        }
    }
}

impl std::error::Error for HandshakeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HandshakeError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Why [`Network::connect`](super::Network::connect) failed.
#[derive(Debug)]
pub enum ConnectError {
    /// The TCP connection could not be established within `dial_timeout` (the error kind is
    /// `TimedOut` then).
    Dial(io::Error),
    /// The handshake was refused or did not complete.
    Handshake(HandshakeError),
    /// The connection's threads could not be started.
    Spawn(io::Error),
    /// The network is shutting down.
    ShuttingDown,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Dial(e) => write!(f, "dial failed: {e}"),
            ConnectError::Handshake(e) => write!(f, "handshake failed: {e}"),
            ConnectError::Spawn(e) => write!(f, "cannot start the connection: {e}"),
            ConnectError::ShuttingDown => f.write_str("network is shutting down"),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Dial(e) | ConnectError::Spawn(e) => Some(e),
            ConnectError::Handshake(e) => Some(e),
            ConnectError::ShuttingDown => None,
        }
    }
}

impl From<HandshakeError> for ConnectError {
    fn from(e: HandshakeError) -> ConnectError {
        ConnectError::Handshake(e)
    }
}
