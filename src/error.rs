//! Error types, one per operation. A refused send hands its payload back; `Display` is
//! lowercase without a final period.

use std::fmt;

use bytes::Bytes;

/// Why [`PeerHandle::send`](crate::PeerHandle::send) refused a message. The payload is handed
/// back.
#[derive(Clone, PartialEq, Eq)]
pub enum SendError {
    /// The peer is closing or closed: nothing more is accepted.
    Closed(Bytes),
    /// The payload exceeds [`PeerConfig::max_payload`](crate::PeerConfig::max_payload).
    TooLarge(Bytes),
}

/// Why [`PeerHandle::try_send`](crate::PeerHandle::try_send) refused a message.
#[derive(Clone, PartialEq, Eq)]
pub enum TrySendError {
    /// The outbox is full; try again later.
    Full(Bytes),
    /// The peer is closing or closed.
    Closed(Bytes),
    /// The payload exceeds [`PeerConfig::max_payload`](crate::PeerConfig::max_payload).
    TooLarge(Bytes),
}

/// Why [`PeerHandle::send_timeout`](crate::PeerHandle::send_timeout) refused a message.
#[derive(Clone, PartialEq, Eq)]
pub enum SendTimeoutError {
    /// The outbox stayed full until the timeout.
    Timeout(Bytes),
    /// The peer is closing or closed.
    Closed(Bytes),
    /// The payload exceeds [`PeerConfig::max_payload`](crate::PeerConfig::max_payload).
    TooLarge(Bytes),
}

macro_rules! payload_error {
    ($ty:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        impl $ty {
            /// The refused payload.
            pub fn into_inner(self) -> Bytes {
                match self { $($ty::$variant(b) => b),* }
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Never print payload bytes: only the variant and the length.
                match self {
                    $($ty::$variant(b) => write!(f, "{}::{}({} bytes)", stringify!($ty), stringify!($variant), b.len())),*
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self { $($ty::$variant(_) => f.write_str($text)),* }
            }
        }

        impl std::error::Error for $ty {}
    };
}

payload_error!(SendError {
    Closed => "sending on a closed peer",
    TooLarge => "message exceeds the payload limit",
});
payload_error!(TrySendError {
    Full => "sending on a full outbox",
    Closed => "sending on a closed peer",
    TooLarge => "message exceeds the payload limit",
});
payload_error!(SendTimeoutError {
    Timeout => "timed out sending on a full outbox",
    Closed => "sending on a closed peer",
    TooLarge => "message exceeds the payload limit",
});

/// How an RPC failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RpcError {
    /// No response before the RPC's timeout.
    TimedOut,
    /// `max_concurrent_outbound_rpcs` (the value) were already waiting; nothing was sent.
    TooManyPending(usize),
    /// The connection closed (or was closing) before a response arrived.
    Disconnected,
    /// The peer was aborted while the RPC was queued or waiting for its response.
    Cancelled,
    /// The request exceeds [`PeerConfig::max_payload`](crate::PeerConfig::max_payload); nothing was sent.
    TooLarge,
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RpcError::TimedOut => f.write_str("rpc timed out"),
            RpcError::TooManyPending(n) => write!(f, "too many pending rpcs (limit {n})"),
            RpcError::Disconnected => f.write_str("peer disconnected before the rpc completed"),
            RpcError::Cancelled => f.write_str("rpc cancelled by abort"),
            RpcError::TooLarge => f.write_str("rpc request exceeds the payload limit"),
        }
    }
}

impl std::error::Error for RpcError {}

/// Why [`Responder::respond`](crate::Responder::respond) sent nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RespondError {
    /// The request's `inbound_rpc_timeout` had passed; the remote has given up on it.
    TimedOut,
    /// The connection is closed.
    Disconnected,
}

impl fmt::Display for RespondError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespondError::TimedOut => f.write_str("inbound rpc timed out before the response"),
            RespondError::Disconnected => f.write_str("peer disconnected before the response"),
        }
    }
}

impl std::error::Error for RespondError {}

/// Why [`PeerHandle::join`](crate::PeerHandle::join) (or `shutdown`, `abort`) returned
/// without the [`DrainReport`](crate::DrainReport).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinError {
    /// Called on one of the connection's own threads (from an inline handler): waiting there
    /// would wait for the thread itself. The close was started all the same; its report comes
    /// through the `on_disconnect` channel, or from `join` on another thread.
    OwnThread,
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::OwnThread => {
                f.write_str("cannot wait for a connection's close on one of its own threads")
            }
        }
    }
}

impl std::error::Error for JoinError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_handed_back_and_not_printed() {
        let e = TrySendError::Full(Bytes::from_static(b"secret"));
        assert_eq!(format!("{e:?}"), "TrySendError::Full(6 bytes)");
        assert_eq!(e.to_string(), "sending on a full outbox");
        assert_eq!(e.into_inner(), Bytes::from_static(b"secret"));
    }
}
