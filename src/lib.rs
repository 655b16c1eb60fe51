//! syncpeer: one connection to a remote peer, driven by plain OS threads.
#![deny(missing_docs)]

pub mod config;
pub mod error;
pub mod keyed;
pub mod network;
pub mod peer;
pub mod proto;

pub use bytes::Bytes;
pub use config::{ConfigError, PeerConfig};
pub use error::{RespondError, RpcError, SendError, SendTimeoutError, TrySendError};
pub use network::{
    ConnectError, HandshakeError, HealthCheckConfig, Network, NetworkBuilder, NetworkConfig,
    NetworkEvent,
};
pub use peer::{
    Delivery, DisconnectReason, Disconnected, DrainReport, Handler, HandlerKey, Inbound, Peer,
    PeerBuilder, PeerHandle, PeerId, PeerMetrics, PendingRpc, Receipt, Responder, Socket,
};
pub use proto::ProtocolId;
